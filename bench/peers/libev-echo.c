/* libev-echo - the echo server on libev: one ev_io watcher per connection.
 *
 * The watcher reads into the connection's buffer and writes it straight
 * back; when the kernel takes only part, the watcher switches to EV_WRITE
 * until the rest is out. An ev_async stops the loop from the main thread. */
#include "peer.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>

typedef struct conn {
  ev_io io; /* first: the watcher pointer is the connection */
  size_t off, len;
  char buf[PEER_BUF_SIZE];
} conn;

typedef struct loop {
  struct ev_loop *ev;
  ev_io accept_io;
  ev_async stop;
} loop;

static void conn_close(struct ev_loop *ev, conn *c)
{
  ev_io_stop(ev, &c->io);
  close(c->io.fd);
  free(c);
}

static void conn_cb(struct ev_loop *ev, ev_io *w, int revents)
{
  conn *c = (conn *)w;

  if (revents & EV_READ) {
    ssize_t n = read(w->fd, c->buf, sizeof(c->buf));
    if (n <= 0) {
      if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
      conn_close(ev, c);
      return;
    }
    c->off = 0;
    c->len = (size_t)n;
  }
  ssize_t n = send(w->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
  if (n < 0 && errno != EAGAIN && errno != EINTR) {
    conn_close(ev, c);
    return;
  }
  if (n > 0)
    c->off += (size_t)n;
  int want = c->off == c->len ? EV_READ : EV_WRITE;
  if (want != (w->events & (EV_READ | EV_WRITE))) {
    ev_io_stop(ev, w);
    ev_io_set(w, w->fd, want);
    ev_io_start(ev, w);
  }
}

static void accept_cb(struct ev_loop *ev, ev_io *w, int revents)
{
  (void)revents;
  for (;;) {
    int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED)
        continue;
      return;
    }
    peer_nodelay(fd);
    conn *c = malloc(sizeof(*c));
    if (!c) {
      close(fd);
      continue;
    }
    c->off = c->len = 0;
    ev_io_init(&c->io, conn_cb, fd, EV_READ);
    ev_io_start(ev, &c->io);
  }
}

static void stop_cb(struct ev_loop *ev, ev_async *w, int revents)
{
  (void)w;
  (void)revents;
  ev_break(ev, EVBREAK_ALL);
}

static void *create(int index, int lfd)
{
  loop *l = calloc(1, sizeof(*l));

  (void)index;
  if (!l || !(l->ev = ev_loop_new(EVFLAG_AUTO))) {
    free(l);
    return NULL;
  }
  ev_io_init(&l->accept_io, accept_cb, lfd, EV_READ);
  ev_io_start(l->ev, &l->accept_io);
  ev_async_init(&l->stop, stop_cb);
  ev_async_start(l->ev, &l->stop);
  return l;
}

static void run(void *arg)
{
  loop *l = arg;
  ev_run(l->ev, 0);
}

static void stop(void *arg)
{
  loop *l = arg;
  ev_async_send(l->ev, &l->stop);
}

static void destroy(void *arg)
{
  loop *l = arg;
  /* Open connections go with the process: nothing tracks them here. */
  close(l->accept_io.fd);
  ev_loop_destroy(l->ev);
  free(l);
}

int main(int argc, char **argv)
{
  static const peer_ops ops = {create, run, stop, destroy};
  return peer_main(argc, argv, &ops);
}
