/* libuv-udp-echo - the UDP echo server on libuv (uv_udp_t): one loop per
 * thread, each with its own SO_REUSEPORT socket opened with uv_udp_open.
 * Receiving uses libuv's recvmmsg path (uv_udp_init_ex with
 * UV_UDP_RECVMMSG, libuv >= 1.40): the buffer from alloc_cb holds 32
 * datagram slots of 64 KiB. Each reply goes out with uv_udp_try_send; a
 * reply the kernel refuses now is copied and queued with uv_udp_send. A
 * uv_async_t stops the loop. */
#include "udp-peer.h"

#include <stdlib.h>
#include <string.h>

#include <uv.h>

#define SLOTS 32
#define SLOT (64 * 1024)

typedef struct loop {
  uv_loop_t uv;
  uv_udp_t udp;
  uv_async_t stop;
  int fd;
  char *buf;
} loop;

typedef struct send_req {
  uv_udp_send_t req;
  char data[];
} send_req;

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  loop *l = h->data;
  (void)suggested;
  *buf = uv_buf_init(l->buf, SLOTS * SLOT);
}

static void sent_cb(uv_udp_send_t *req, int status)
{
  (void)status;
  free(req);
}

static void recv_cb(uv_udp_t *u, ssize_t n, const uv_buf_t *buf,
                    const struct sockaddr *from, unsigned flags)
{
  (void)flags;
  if (n < 0 || !from)
    return; /* an error, or the end of a recvmmsg batch (n 0, no addr) */
  uv_buf_t b = uv_buf_init(buf->base, (unsigned)n);
  if (uv_udp_try_send(u, &b, 1, from) == n)
    return;
  send_req *r = malloc(sizeof(*r) + (size_t)n);
  if (!r)
    return;
  memcpy(r->data, buf->base, (size_t)n);
  b = uv_buf_init(r->data, (unsigned)n);
  if (uv_udp_send(&r->req, u, &b, 1, from, sent_cb) < 0)
    free(r);
}

static void on_stop(uv_async_t *a)
{
  loop *l = a->data;
  uv_close((uv_handle_t *)&l->udp, NULL);
  uv_close((uv_handle_t *)&l->stop, NULL);
}

static void *create(int index, int fd)
{
  loop *l = calloc(1, sizeof(*l));

  (void)index;
  l->fd = fd;
  l->buf = malloc((size_t)SLOTS * SLOT);
  if (!l->buf || uv_loop_init(&l->uv) < 0 ||
      uv_udp_init_ex(&l->uv, &l->udp, AF_UNSPEC | UV_UDP_RECVMMSG) < 0 ||
      uv_udp_open(&l->udp, fd) < 0 ||
      uv_async_init(&l->uv, &l->stop, on_stop) < 0)
    return NULL;
  l->udp.data = l;
  l->stop.data = l;
  if (uv_udp_recv_start(&l->udp, alloc_cb, recv_cb) < 0)
    return NULL;
  return l;
}

static void run(void *arg)
{
  loop *l = arg;
  uv_run(&l->uv, UV_RUN_DEFAULT);
}

static void stop(void *arg)
{
  uv_async_send(&((loop *)arg)->stop);
}

static void destroy(void *arg)
{
  loop *l = arg;
  uv_loop_close(&l->uv);
  free(l->buf);
  free(l);
}

int main(int argc, char **argv)
{
  static const udp_peer_ops ops = {create, run, stop, destroy};
  return udp_peer_main(argc, argv, &ops);
}
