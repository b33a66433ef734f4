/* connect.c - outgoing connections: a non-blocking connect, watched for
 * writability, bounded by a loop timer; on success the connection starts
 * like an accepted one.
 *
 * The address is parsed (and resolved) in the caller's thread, so a bad
 * address fails the call itself; everything after that happens in the
 * loop's thread and ends in exactly one on_result. A connect under way is
 * a handle of its loop: when the loop finishes, it fails with -ECANCELED. */
#include "conn-internal.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A connect under way; the fd is registered through io until it ends. */
typedef struct connecting {
  gev__io io; /* first: the poller hands back &io */
  gev__handle handle;
  gev_conn *c;
  gev_timer_id timer;
  gev_connect_fn on_result;
  void *arg;
  const gev_transport *tp;
  void *tp_arg;
} connecting;

typedef struct connect_req {
  gev_loop *l;
  gev_handler h;
  const gev_handler *shared_h; /* if set, used instead of a copy of h */
  const gev__conn_owner *owner;
  void *owner_arg;
  gev__addr addr;
  gev_connect_options opt; /* address not kept: parsed into addr */
} connect_req;

static void report(gev_connect_fn fn, void *arg, gev_conn *c, int err)
{
  if (fn)
    fn(c, err, arg);
}

/* Ends the connect: off the registry, its timer cancelled, freed. */
static void end(connecting *cx)
{
  gev__handle_unregister(&cx->handle);
  if (cx->timer)
    gev_loop_cancel(cx->handle.loop, cx->timer);
  free(cx);
}

/* A connect that failed: the fd goes, off the poller first; the
 * connection was never visible to anyone. */
static void fail(connecting *cx, int err)
{
  gev_connect_fn fn = cx->on_result;
  void *arg = cx->arg;

  gev__loop_io_del(cx->handle.loop, &cx->io); /* before the fd closes */
  gev__conn_free_unstarted(cx->c);
  end(cx);
  report(fn, arg, NULL, err);
}

static void succeed(connecting *cx)
{
  gev_conn *c = cx->c;
  gev_loop *l = cx->handle.loop;
  gev_connect_fn fn = cx->on_result;
  const gev_transport *tp = cx->tp;
  void *arg = cx->arg, *tp_arg = cx->tp_arg;
  int err;

  /* The fd's registration passes from the connect to the connection. */
  c->io.interest = cx->io.interest;
  c->io.registered = cx->io.registered;
  end(cx);
  atomic_fetch_add(&l->nconns, 1);
  if ((err = gev__conn_start(c, tp, tp_arg, fn, arg)) < 0) {
    atomic_fetch_sub(&l->nconns, 1);
    report(fn, arg, NULL, err);
  }
}

static void connecting_cb(gev__io *io, unsigned events)
{
  connecting *cx = (connecting *)io;
  int err = 0;
  socklen_t len = sizeof(err);

  if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err == 0 && (events & GEV__EV_WRITE))
    succeed(cx);
  else
    fail(cx, err ? -err : -ECONNREFUSED);
}

static void on_timeout(void *arg)
{
  connecting *cx = arg;

  cx->timer = 0; /* it is running: nothing to cancel */
  fail(cx, -ETIMEDOUT);
}

static void stop(gev__handle *h)
{
  fail(gev__container_of(h, connecting, handle), -ECANCELED);
}

static void no_after_pass(gev__handle *h)
{
  (void)h; /* a connect never schedules itself */
}

static const gev__handle_ops connecting_ops = {"connect", no_after_pass, stop,
                                               NULL};

static gev__sockopts sockopts(const gev_connect_options *o)
{
  return (gev__sockopts){o->keepalive_s, o->rcvbuf, o->sndbuf};
}

int gev__connect_check(const gev_connect_options *opt)
{
  gev__sockopts so = sockopts(opt);

  return gev__sockopts_check(&so);
}

/* The options before connect: the buffer sizes must be in place for the
 * handshake (the window scale), and the rest carries over. */
static int open_socket(const gev__addr *a, const gev_connect_options *o)
{
  gev__sockopts so = sockopts(o);
  int fd =
      socket(a->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int err;

  if (fd < 0)
    return -errno;
  if ((err = gev__sockopts_conn(fd, a->ss.ss_family, &so)) < 0) {
    close(fd);
    return err;
  }
  return fd;
}

/* The connection and its connect record, or -errno (fd closed). */
static int prepare(connect_req *r, int fd, connecting **out)
{
  const gev_connect_options *o = &r->opt;
  size_t max = o->max_buffer ? o->max_buffer : GEV__DEFAULT_MAX_BUFFER;
  gev_conn *c = gev__conn_new(
      r->l, r->shared_h ? r->shared_h : &r->h, r->shared_h == NULL, max, fd,
      (const struct sockaddr *)&r->addr.ss, r->addr.len);
  connecting *cx = calloc(1, sizeof(*cx));

  if (!c || !cx) {
    free(cx);
    if (c)
      gev__conn_free_unstarted(c);
    else
      close(fd);
    return -ENOMEM;
  }
  c->flags |= GEV__CF_OUTGOING;
  c->ctx = o->context;
  c->owner = r->owner;
  c->owner_arg = r->owner_arg;
  *cx = (connecting){.io = {.fd = fd, .cb = connecting_cb},
                     .c = c,
                     .on_result = o->on_result,
                     .arg = o->arg,
                     .tp = o->transport,
                     .tp_arg = o->transport_arg};
  gev__handle_init(&cx->handle, r->l, &connecting_ops);
  *out = cx;
  return 0;
}

/* In the loop's thread. */
static void start(connect_req *r)
{
  gev_loop *l = r->l;
  connecting *cx;
  int fd, err;

  gev__assert_in_loop(l);
  if (l->finishing) {
    report(r->opt.on_result, r->opt.arg, NULL, -ECANCELED);
    return;
  }
  if ((fd = open_socket(&r->addr, &r->opt)) < 0 ||
      (err = prepare(r, fd, &cx)) < 0) {
    report(r->opt.on_result, r->opt.arg, NULL, fd < 0 ? fd : err);
    return;
  }
  gev__handle_register(&cx->handle);
  if (connect(fd, (const struct sockaddr *)&r->addr.ss, r->addr.len) < 0 &&
      errno != EINPROGRESS) {
    fail(cx, -errno); /* refused at once, no such unix socket, ... */
    return;
  }
  /* Connected at once (unix sockets) or under way: writability tells. */
  if ((err = gev__loop_io_add(l, &cx->io, GEV__EV_WRITE)) < 0) {
    fail(cx, err);
    return;
  }
  if (r->opt.timeout_ms &&
      !(cx->timer = gev_loop_run_after(l, r->opt.timeout_ms, on_timeout, cx)))
    fail(cx, -ENOMEM);
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
  r->opt = *opt;
  r->opt.address = NULL;
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
                        const gev__addr *addr, const gev_connect_options *opt,
                        const gev__conn_owner *owner, void *owner_arg)
{
  connect_req *r = calloc(1, sizeof(*r));

  if (!r)
    return -ENOMEM;
  r->shared_h = h;
  r->owner = owner;
  r->owner_arg = owner_arg;
  r->addr = *addr;
  return submit(r, l, opt);
}

int gev_loop_connect(gev_loop *l, const gev_handler *h,
                     const gev_connect_options *opt)
{
  connect_req *r;
  int err;

  if (!l || !h || !opt || !opt->address || gev__connect_check(opt) < 0)
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
