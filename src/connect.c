/* connect.c - outgoing connections: a name resolved off the loop thread
 * (resolve.c), then a non-blocking connect to each of its addresses in
 * turn, watched for writability, all bounded by one deadline; on success
 * the connection starts like an accepted one.
 *
 * The address is parsed (without any lookup) in the caller's thread, so a
 * malformed one fails the call itself; everything after that happens in
 * the loop's thread and ends in exactly one on_result. A connect under way
 * is a handle of its loop: when the loop finishes, it fails with
 * -ECANCELED. */
#include "conn-internal.h"
#include "resolve.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A connect under way, from the request to its one on_result: the name's
 * lookup (resolve.c), then one attempt per address until one connects.
 * The current attempt's fd is registered through io until it ends. */
typedef struct connecting {
  gev__io io; /* first: the poller hands back &io */
  gev__handle handle;
  gev_loop *l;
  gev_conn *c;             /* the attempt's connection; NULL between them */
  gev_timer_id timer;      /* the attempt's (or the lookup's) deadline */
  gev__resolve *resolving; /* the lookup under way, or NULL */
  uint64_t deadline;       /* of the whole connect; 0: none */
  int next;                /* the address the next attempt tries */
  int last_err;            /* of the last attempt that failed */
  gev_handler h;
  const gev_handler *shared_h; /* if set, used instead of a copy of h */
  const gev__conn_owner *owner;
  void *owner_arg;
  gev_connect_options opt; /* address not kept: parsed into target */
  gev__target target;
} connecting;

/* The shortest slice an attempt gets while more addresses wait. */
#define MIN_ATTEMPT_MS 100

static void report(gev_connect_fn fn, void *arg, gev_conn *c, int err)
{
  if (fn)
    fn(c, err, arg);
}

/* The attempt's fd and connection go, off the poller first; the
 * connection was never visible to anyone. */
static void drop_attempt(connecting *cx)
{
  if (cx->timer)
    gev_loop_cancel(cx->l, cx->timer);
  cx->timer = 0;
  if (!cx->c)
    return;
  gev__loop_io_del(cx->l, &cx->io); /* before the fd closes */
  gev__conn_free_unstarted(cx->c);
  cx->c = NULL;
}

/* Ends the connect: off the registry, nothing left under way, freed. */
static void end(connecting *cx)
{
  gev__handle_unregister(&cx->handle);
  if (cx->resolving)
    gev__resolve_cancel(cx->resolving);
  drop_attempt(cx);
  free(cx);
}

/* The connect failed for good: on_result hears err. */
static void fail(connecting *cx, int err)
{
  gev_connect_fn fn = cx->opt.on_result;
  void *arg = cx->opt.arg;

  end(cx);
  report(fn, arg, NULL, err);
}

static void succeed(connecting *cx)
{
  gev_conn *c = cx->c;
  gev_loop *l = cx->l;
  gev_connect_fn fn = cx->opt.on_result;
  const gev_transport *tp = cx->opt.transport;
  void *arg = cx->opt.arg, *tp_arg = cx->opt.transport_arg;
  int err;

  /* The fd's registration passes from the connect to the connection. */
  c->io.interest = cx->io.interest;
  c->io.registered = cx->io.registered;
  cx->c = NULL;
  end(cx);
  atomic_fetch_add(&l->nconns, 1);
  if ((err = gev__conn_start(c, tp, tp_arg, fn, arg)) < 0) {
    atomic_fetch_sub(&l->nconns, 1);
    report(fn, arg, NULL, err);
  }
}

static void try_next(connecting *cx);

/* One address failed: the next one is tried, within the deadline. */
static void attempt_failed(connecting *cx, int err)
{
  drop_attempt(cx);
  cx->last_err = err;
  if (cx->deadline && cx->l->now_ms >= cx->deadline)
    err = -ETIMEDOUT;
  if (cx->next >= cx->target.n || err == -ETIMEDOUT)
    fail(cx, err);
  else
    try_next(cx);
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
    attempt_failed(cx, err ? -err : -ECONNREFUSED);
}

/* The attempt's slice (or the lookup's deadline) is over. */
static void on_timeout(void *arg)
{
  connecting *cx = arg;

  cx->timer = 0; /* it is running: nothing to cancel */
  if (cx->resolving || cx->l->now_ms >= cx->deadline)
    fail(cx, -ETIMEDOUT);
  else
    attempt_failed(cx, -ETIMEDOUT); /* the next address gets the rest */
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

/* The attempt's connection, or -errno (fd closed). */
static int prepare(connecting *cx, const gev__addr *a, int fd)
{
  const gev_connect_options *o = &cx->opt;
  size_t max = o->max_buffer ? o->max_buffer : GEV__DEFAULT_MAX_BUFFER;
  gev_conn *c = gev__conn_new(cx->l, cx->shared_h ? cx->shared_h : &cx->h,
                              cx->shared_h == NULL, max, fd,
                              (const struct sockaddr *)&a->ss, a->len);

  if (!c) {
    close(fd);
    return -ENOMEM;
  }
  c->flags |= GEV__CF_OUTGOING;
  if (o->idle_timeout_ms || o->reader_idle_ms || o->writer_idle_ms)
    gev__conn_idle_defaults(
        c, &(gev_options){.idle_timeout_ms = o->idle_timeout_ms,
                          .reader_idle_ms = o->reader_idle_ms,
                          .writer_idle_ms = o->writer_idle_ms});
  c->ctx = o->context;
  c->owner = cx->owner;
  c->owner_arg = cx->owner_arg;
  cx->c = c;
  cx->io = (gev__io){.fd = fd, .cb = connecting_cb};
  return 0;
}

/* The attempt's deadline: what is left of the connect's, shared with the
 * addresses still waiting, so that one that never answers (a dropped
 * IPv6 route, say) leaves time for the others. */
static uint64_t slice(const connecting *cx)
{
  uint64_t left = cx->deadline - cx->l->now_ms;
  uint64_t waiting = (uint64_t)(cx->target.n - cx->next) + 1;
  uint64_t part = left / waiting;

  if (waiting == 1 || left <= MIN_ATTEMPT_MS)
    return left;
  return part < MIN_ATTEMPT_MS ? MIN_ATTEMPT_MS : part;
}

/* Starts a connect to one address: 0 when under way, else -errno. */
static int attempt(connecting *cx, const gev__addr *a)
{
  int fd, err;

  if ((fd = open_socket(a)) < 0 || (err = prepare(cx, a, fd)) < 0)
    return fd < 0 ? fd : err;
  if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 &&
      errno != EINPROGRESS)
    return -errno; /* refused at once, no such unix socket, ... */
  /* Connected at once (unix sockets) or under way: writability tells. */
  if ((err = gev__loop_io_add(cx->l, &cx->io, GEV__EV_WRITE)) < 0)
    return err;
  if (cx->deadline &&
      !(cx->timer = gev_loop_run_after(cx->l, slice(cx), on_timeout, cx)))
    return -ENOMEM;
  return 0;
}

/* The addresses in the resolver's order (IPv6 first where usable), one at
 * a time, until one is under way; the last one's error ends the connect. */
static void try_next(connecting *cx)
{
  int err = cx->last_err ? cx->last_err : -ENXIO;

  while (cx->next < cx->target.n) {
    if ((err = attempt(cx, &cx->target.addrs[cx->next++])) == 0)
      return;
    drop_attempt(cx);
    cx->last_err = err;
  }
  fail(cx, err);
}

static void resolved(void *arg, int err)
{
  connecting *cx = arg;

  cx->resolving = NULL; /* gone with this call */
  if (cx->timer)
    gev_loop_cancel(cx->l, cx->timer);
  cx->timer = 0;
  if (err < 0)
    fail(cx, err);
  else
    try_next(cx);
}

/* In the loop's thread: the lookup, if a name needs one, then the
 * attempts. */
static void start_task(void *arg)
{
  connecting *cx = arg;
  gev_loop *l = cx->l;
  int err;

  gev__assert_in_loop(l);
  if (l->finishing) {
    report(cx->opt.on_result, cx->opt.arg, NULL, -ECANCELED);
    free(cx);
    return;
  }
  gev__handle_init(&cx->handle, l, &connecting_ops);
  gev__handle_register(&cx->handle);
  if (cx->opt.timeout_ms)
    cx->deadline = l->now_ms + cx->opt.timeout_ms;
  if (!cx->target.host[0]) {
    try_next(cx);
    return;
  }
  if ((err = gev__resolve_start(l, &cx->target, resolved, cx, &cx->resolving)) <
      0) {
    fail(cx, err);
    return;
  }
  if (cx->deadline &&
      !(cx->timer = gev_loop_run_after(l, cx->opt.timeout_ms, on_timeout, cx)))
    fail(cx, -ENOMEM);
}

static int submit(connecting *cx, gev_loop *l, const gev_connect_options *opt)
{
  int err;

  cx->l = l;
  cx->opt = *opt;
  cx->opt.address = NULL;
  /* Always through the queue, also from the loop's own thread: on_result
   * then never runs inside the caller's callback. If the loop is freed
   * before it ever runs, the request is freed and on_result does not run. */
  if ((err = gev__loop_post_owned(l, start_task, cx, free)) < 0) {
    free(cx);
    return err;
  }
  return 0;
}

int gev__connect_shared(gev_loop *l, const gev_handler *h,
                        const gev__target *target,
                        const gev_connect_options *opt,
                        const gev__conn_owner *owner, void *owner_arg)
{
  connecting *cx = calloc(1, sizeof(*cx));

  if (!cx)
    return -ENOMEM;
  cx->shared_h = h;
  cx->owner = owner;
  cx->owner_arg = owner_arg;
  cx->target = *target;
  return submit(cx, l, opt);
}

int gev_loop_connect(gev_loop *l, const gev_handler *h,
                     const gev_connect_options *opt)
{
  connecting *cx;
  int err;

  if (!l || !h || !opt || !opt->address || opt->idle_timeout_ms < 0 ||
      opt->reader_idle_ms < 0 || opt->writer_idle_ms < 0)
    return -EINVAL;
  cx = calloc(1, sizeof(*cx));
  if (!cx)
    return -ENOMEM;
  if ((err = gev__target_parse(opt->address, &cx->target)) < 0) {
    free(cx);
    return err;
  }
  cx->h = *h;
  return submit(cx, l, opt);
}
