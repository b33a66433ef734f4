/* connect.c - outgoing connections: a non-blocking connect, watched for
 * writability, bounded by a loop timer; on success the connection joins
 * its loop like an accepted one.
 *
 * The address is parsed (and resolved) in the caller's thread, so a bad
 * address fails the call itself; everything after that happens in the
 * loop's thread and ends in exactly one on_result. */
#include "conn-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DEFAULT_MAX_BUFFER ((size_t)64 * 1024 * 1024)

/* A connect under way. Owned by the loop's list until it ends. */
struct gev__connecting {
  gev_conn *c;
  gev__connecting *prev, *next;
  gev_timer_id timer;
  gev_connect_fn on_result;
  void *arg;
};

typedef struct connect_req {
  gev_loop *l;
  gev_handler h;
  const gev_handler *shared_h; /* if set, used instead of a copy of h */
  gev__addr addr;
  uint64_t timeout_ms;
  size_t max_buffer;
  void *context;
  gev_connect_fn on_result;
  void *arg;
} connect_req;

static void report(gev_connect_fn fn, void *arg, gev_conn *c, int err)
{
  if (fn)
    fn(c, err, arg);
}

static void unlink_connecting(gev_loop *l, gev__connecting *cx)
{
  if (cx->prev)
    cx->prev->next = cx->next;
  else
    l->cs.connecting = cx->next;
  if (cx->next)
    cx->next->prev = cx->prev;
  if (cx->timer)
    gev_loop_cancel(l, cx->timer);
}

/* Ends a connect that failed: the fd goes (and with it the epoll
 * registration), the connection was never visible to anyone. */
static void fail(gev_conn *c, int err)
{
  gev__connecting *cx = c->connecting;
  gev_connect_fn fn = cx->on_result;
  void *arg = cx->arg;

  unlink_connecting(c->loop, cx);
  free(cx);
  close(c->io.fd);
  gev__conn_free_unattached(c);
  report(fn, arg, NULL, err);
}

static void succeed(gev_conn *c)
{
  gev__connecting *cx = c->connecting;
  gev_connect_fn fn = cx->on_result;
  void *arg = cx->arg;

  if (gev__loop_io_set(c->loop, &c->io, GEV__EV_READ) < 0) {
    fail(c, -ENOMEM);
    return;
  }
  unlink_connecting(c->loop, cx);
  free(cx);
  c->connecting = NULL;
  atomic_fetch_add(&c->loop->nconns, 1);
  gev__conn_established(c, fn, arg);
}

static void connecting_cb(gev__io *io, unsigned events)
{
  gev_conn *c = (gev_conn *)io;
  int err = 0;
  socklen_t len = sizeof(err);

  if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err == 0 && (events & GEV__EV_WRITE))
    succeed(c);
  else
    fail(c, err ? -err : -ECONNREFUSED);
}

static void on_timeout(void *arg)
{
  gev__connecting *cx = arg;

  cx->timer = 0; /* it is running: nothing to cancel */
  fail(cx->c, -ETIMEDOUT);
}

void gev__connect_cancel_all(gev_loop *l)
{
  while (l->cs.connecting)
    fail(l->cs.connecting->c, -ECANCELED);
}

static int open_socket(const gev__addr *a)
{
  int one = 1;
  int fd =
      socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

  if (fd < 0)
    return -errno;
  if (a->ss.ss_family != AF_UNIX)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return fd;
}

/* In the loop's thread. */
static void start(connect_req *r)
{
  gev_loop *l = r->l;
  gev__connecting *cx;
  gev_conn *c;
  int fd;

  if (l->finishing) {
    report(r->on_result, r->arg, NULL, -ECANCELED);
    return;
  }
  if ((fd = open_socket(&r->addr)) < 0) {
    report(r->on_result, r->arg, NULL, fd);
    return;
  }
  c = gev__conn_new_outgoing(l, r->shared_h ? r->shared_h : &r->h,
                             r->shared_h == NULL, r->max_buffer, fd,
                             (const struct sockaddr *)&r->addr.ss, r->addr.len);
  cx = calloc(1, sizeof(*cx));
  if (!c || !cx) {
    free(cx);
    if (c)
      gev__conn_free_unattached(c);
    close(fd);
    report(r->on_result, r->arg, NULL, -ENOMEM);
    return;
  }
  *cx = (gev__connecting){.c = c, .on_result = r->on_result, .arg = r->arg};
  c->connecting = cx;
  c->ctx = r->context;
  cx->next = l->cs.connecting;
  if (cx->next)
    cx->next->prev = cx;
  l->cs.connecting = cx;
  c->io.cb = connecting_cb;
  if (connect(fd, (const struct sockaddr *)&r->addr.ss, r->addr.len) < 0 &&
      errno != EINPROGRESS) {
    fail(c, -errno); /* refused at once, no such unix socket, ... */
    return;
  }
  /* Connected at once (unix sockets) or under way: writability tells. */
  if (gev__loop_io_add(l, &c->io, GEV__EV_WRITE) < 0) {
    fail(c, -ENOMEM);
    return;
  }
  if (r->timeout_ms) {
    cx->timer = gev_loop_run_after(l, r->timeout_ms, on_timeout, cx);
    if (!cx->timer)
      fail(c, -ENOMEM);
  }
}

static void start_task(void *arg)
{
  start(arg);
  free(arg);
}

static int submit(connect_req *r, gev_loop *l, const gev_connect_options *opt)
{
  int err;

  r->l = l;
  r->timeout_ms = opt->timeout_ms;
  r->max_buffer = opt->max_buffer ? opt->max_buffer : DEFAULT_MAX_BUFFER;
  r->context = opt->context;
  r->on_result = opt->on_result;
  r->arg = opt->arg;
  /* Always through the queue, also from the loop's own thread: on_result
   * then never runs inside the caller's callback. If the loop is freed
   * before it ever runs, the request is freed and on_result does not run. */
  if ((err = gev__loop_post_owned(l, start_task, r, free)) < 0) {
    free(r);
    return err;
  }
  return 0;
}

int gev__connect_shared(gev_loop *l, const gev_handler *h,
                        const gev__addr *addr, const gev_connect_options *opt)
{
  connect_req *r = calloc(1, sizeof(*r));

  if (!r)
    return -ENOMEM;
  r->shared_h = h;
  r->addr = *addr;
  return submit(r, l, opt);
}

int gev_loop_connect(gev_loop *l, const gev_handler *h,
                     const gev_connect_options *opt)
{
  connect_req *r;
  int err;

  if (!l || !h || !opt || !opt->address)
    return -EINVAL;
  r = calloc(1, sizeof(*r));
  if (!r)
    return -ENOMEM;
  if ((err = gev__addr_parse(opt->address, &r->addr)) < 0) {
    free(r);
    return err;
  }
  r->h = *h;
  return submit(r, l, opt);
}
