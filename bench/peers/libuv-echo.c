/* libuv-echo - the echo server on libuv: a uv_tcp_t per connection reading
 * into the connection's own buffer. Each chunk read is written back with
 * uv_try_write; if the kernel takes only part, the rest goes out with
 * uv_write from a copy, and reading pauses until that write completes (the
 * buffer is reused). A uv_async_t stops the loop from the main thread by
 * closing every handle. */
#include "peer.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

typedef struct conn {
  uv_tcp_t tcp; /* first: the handle pointer is the connection */
  char buf[PEER_BUF_SIZE];
} conn;

typedef struct loop {
  uv_loop_t uv;
  uv_tcp_t server;
  uv_async_t stop;
} loop;

typedef struct write_req {
  uv_write_t req;
  char data[];
} write_req;

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_conn_closed(uv_handle_t *h)
{
  free(h); /* the conn */
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  conn *c = (conn *)h;
  (void)suggested;
  *buf = uv_buf_init(c->buf, sizeof(c->buf));
}

static void on_write(uv_write_t *req, int status)
{
  uv_stream_t *s = req->handle;

  free(req);
  if (status < 0) {
    if (!uv_is_closing((uv_handle_t *)s))
      uv_close((uv_handle_t *)s, on_conn_closed);
    return;
  }
  uv_read_start(s, alloc_cb, on_read);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  if (nread < 0) { /* UV_EOF or an error */
    uv_close((uv_handle_t *)s, on_conn_closed);
    return;
  }
  if (nread == 0)
    return;
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)nread);
  int n = uv_try_write(s, &b, 1);
  if (n == nread)
    return;
  if (n < 0 && n != UV_EAGAIN) {
    uv_close((uv_handle_t *)s, on_conn_closed);
    return;
  }
  size_t done = n > 0 ? (size_t)n : 0, rest = (size_t)nread - done;
  write_req *w = malloc(sizeof(*w) + rest);
  if (!w) {
    uv_close((uv_handle_t *)s, on_conn_closed);
    return;
  }
  memcpy(w->data, buf->base + done, rest);
  b = uv_buf_init(w->data, (unsigned)rest);
  uv_read_stop(s);
  if (uv_write(&w->req, s, &b, 1, on_write) < 0) {
    free(w);
    uv_close((uv_handle_t *)s, on_conn_closed);
  }
}

static void on_connection(uv_stream_t *server, int status)
{
  conn *c;

  if (status < 0 || !(c = malloc(sizeof(*c))))
    return;
  uv_tcp_init(server->loop, &c->tcp);
  if (uv_accept(server, (uv_stream_t *)&c->tcp) < 0) {
    uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, on_read);
}

static void close_any(uv_handle_t *h, void *arg)
{
  loop *l = arg;
  if (uv_is_closing(h))
    return;
  /* Connections are malloc'ed; the loop's own handles live in `loop`. */
  bool own = h == (uv_handle_t *)&l->server || h == (uv_handle_t *)&l->stop;
  uv_close(h, own ? NULL : on_conn_closed);
}

static void stop_cb(uv_async_t *a)
{
  loop *l = a->data;
  uv_walk(&l->uv, close_any, l); /* uv_run returns once all are closed */
}

static void *create(int index, int lfd)
{
  loop *l = calloc(1, sizeof(*l));

  (void)index;
  if (!l || uv_loop_init(&l->uv) < 0) {
    free(l);
    return NULL;
  }
  /* libuv 1.44 has no reuse-port flag: open the listening socket peer.c
   * made with SO_REUSEPORT. */
  if (uv_tcp_init(&l->uv, &l->server) < 0 || uv_tcp_open(&l->server, lfd) < 0 ||
      uv_listen((uv_stream_t *)&l->server, SOMAXCONN, on_connection) < 0 ||
      uv_async_init(&l->uv, &l->stop, stop_cb) < 0)
    return NULL;
  l->stop.data = l;
  return l;
}

static void run(void *arg)
{
  loop *l = arg;
  uv_run(&l->uv, UV_RUN_DEFAULT);
}

static void stop(void *arg)
{
  loop *l = arg;
  uv_async_send(&l->stop);
}

static void destroy(void *arg)
{
  loop *l = arg;
  uv_loop_close(&l->uv);
  free(l);
}

int main(int argc, char **argv)
{
  static const peer_ops ops = {create, run, stop, destroy};
  return peer_main(argc, argv, &ops);
}
