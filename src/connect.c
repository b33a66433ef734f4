/* connect.c - outgoing connections: a name resolved off the loop thread
 * (resolve.c), then non-blocking connects to its addresses, staggered,
 * watched for writability, all bounded by one deadline; on success the
 * connection starts like an accepted one.
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
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One connect to one address; its fd is registered through io until it
 * ends. */
typedef struct attempt {
  gev__io io; /* first: the poller hands back &io */
  struct connecting *cx;
  gev_conn *c; /* its connection; NULL when not under way */
} attempt;

/* A connect under way, from the request to its one on_result: the name's
 * lookup (resolve.c), then attempts to its addresses in order, a new one
 * every STAGGER_MS while the earlier ones have not answered (or at once
 * when one fails): the first to connect wins and the others are dropped
 * (happy eyeballs, RFC 8305, without its family interleaving: the
 * resolver's order already puts IPv6 first where it is usable). */
typedef struct connecting {
  gev__handle handle;
  gev_loop *l;
  attempt att[GEV__RESOLVE_MAX]; /* att[i] tries target.addrs[i] */
  int running;                   /* attempts under way */
  gev_timer_id timer;            /* the whole connect's deadline, or 0 */
  gev_timer_id stagger;          /* the next attempt's start, or 0 */
  gev__resolve *resolving;       /* the lookup under way, or NULL */
  int next;                      /* the address the next attempt tries */
  int last_err;                  /* of the last attempt that failed */
  gev_handler h;
  const gev_handler *shared_h; /* if set, used instead of a copy of h */
  const gev__conn_owner *owner;
  void *owner_arg;
  gev_connect_options opt; /* address not kept: parsed into target */
  gev__target target;
  void (*drop_context)(void *context); /* the loop was freed unrun */
} connecting;

/* How long an attempt has to itself before the next address is tried
 * beside it (RFC 8305's Connection Attempt Delay). */
#define STAGGER_MS 250

static void report(gev_connect_fn fn, void *arg, gev_conn *c, int err)
{
  if (fn)
    fn(c, err, arg);
}

/* The attempt's fd and connection go, off the poller first; the
 * connection was never visible to anyone. */
static void drop_attempt(attempt *at)
{
  if (!at->c)
    return;
  gev__loop_io_del(at->cx->l, &at->io); /* before the fd closes */
  gev__conn_free_unstarted(at->c);
  at->c = NULL;
  at->cx->running--;
}

static void cancel_timer(gev_loop *l, gev_timer_id *t)
{
  if (*t)
    gev_loop_cancel(l, *t);
  *t = 0;
}

/* Ends the connect: off the registry, nothing left under way, freed. */
static void end(connecting *cx)
{
  gev__handle_unregister(&cx->handle);
  if (cx->resolving)
    gev__resolve_cancel(cx->resolving);
  for (int i = 0; i < cx->next; i++)
    drop_attempt(&cx->att[i]);
  cancel_timer(cx->l, &cx->timer);
  cancel_timer(cx->l, &cx->stagger);
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

static void succeed(attempt *at)
{
  connecting *cx = at->cx;
  gev_conn *c = at->c;
  gev_loop *l = cx->l;
  gev_connect_fn fn = cx->opt.on_result;
  const gev_transport *tp = cx->opt.transport;
  void *arg = cx->opt.arg, *tp_arg = cx->opt.transport_arg;
  int err;

  /* The fd's registration passes from the attempt to the connection. */
  c->io.interest = at->io.interest;
  c->io.registered = at->io.registered;
  at->c = NULL;
  cx->running--;
  end(cx); /* the other attempts go */
  atomic_fetch_add(&l->nconns, 1);
  if ((err = gev__conn_start(c, tp, tp_arg, fn, arg)) < 0) {
    atomic_fetch_sub(&l->nconns, 1);
    report(fn, arg, NULL, err);
  }
}

static void try_next(connecting *cx);

/* One address failed: the next one is tried at once; the last error ends
 * the connect once nothing is left to try or to wait for. */
static void attempt_failed(attempt *at, int err)
{
  connecting *cx = at->cx;

  drop_attempt(at);
  cx->last_err = err;
  if (cx->next < cx->target.n) {
    cancel_timer(cx->l, &cx->stagger);
    try_next(cx);
  } else if (cx->running == 0) {
    fail(cx, err);
  }
}

static void connecting_cb(gev__io *io, unsigned events)
{
  attempt *at = (attempt *)io;
  int err = 0;
  socklen_t len = sizeof(err);

  if (getsockopt(io->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
    err = errno;
  if (err == 0 && (events & GEV__EV_WRITE))
    succeed(at);
  else
    attempt_failed(at, err ? -err : -ECONNREFUSED);
}

static void on_deadline(void *arg)
{
  connecting *cx = arg;

  cx->timer = 0; /* it is running: nothing to cancel */
  fail(cx, -ETIMEDOUT);
}

/* The attempts under way have had their time alone: the next address
 * joins them. */
static void on_stagger(void *arg)
{
  connecting *cx = arg;

  cx->stagger = 0;
  try_next(cx);
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

  if (opt->idle_timeout_ms < 0 || opt->reader_idle_ms < 0 ||
      opt->writer_idle_ms < 0)
    return -EINVAL;
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

/* The attempt's connection, or -errno (fd closed). */
static int prepare(attempt *at, const gev__addr *a, int fd)
{
  connecting *cx = at->cx;
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
  at->c = c;
  at->io = (gev__io){.fd = fd, .cb = connecting_cb};
  cx->running++;
  return 0;
}

/* Starts a connect to one address: 0 when under way, else -errno. */
static int attempt_start(attempt *at, const gev__addr *a)
{
  int fd, err;

  if ((fd = open_socket(a, &at->cx->opt)) < 0 || (err = prepare(at, a, fd)) < 0)
    return fd < 0 ? fd : err;
  if (connect(fd, (const struct sockaddr *)&a->ss, a->len) < 0 &&
      errno != EINPROGRESS)
    return -errno; /* refused at once, no such unix socket, ... */
  /* Connected at once (unix sockets) or under way: writability tells. */
  return gev__loop_io_add(at->cx->l, &at->io, GEV__EV_WRITE);
}

/* Starts the next address that can be started (one refused at once makes
 * way for the following one), and the stagger timer for the one after.
 * With nothing under way and nothing left, the last error ends it. */
static void try_next(connecting *cx)
{
  int err = cx->last_err ? cx->last_err : -ENXIO;

  while (cx->next < cx->target.n) {
    attempt *at = &cx->att[cx->next];

    at->cx = cx;
    if ((err = attempt_start(at, &cx->target.addrs[cx->next++])) == 0)
      break;
    drop_attempt(at);
    cx->last_err = err;
  }
  if (cx->running == 0) {
    fail(cx, err);
    return;
  }
  /* No timer: the attempts under way go on alone. */
  if (cx->next < cx->target.n && !cx->stagger)
    cx->stagger = gev_loop_run_after(cx->l, STAGGER_MS, on_stagger, cx);
}

static void resolved(void *arg, int err)
{
  connecting *cx = arg;

  cx->resolving = NULL; /* gone with this call */
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
  /* One deadline for it all, the lookup included. */
  if (cx->opt.timeout_ms && !(cx->timer = gev_loop_run_after(
                                  l, cx->opt.timeout_ms, on_deadline, cx))) {
    fail(cx, -ENOMEM);
    return;
  }
  if (!cx->target.host[0]) {
    try_next(cx);
    return;
  }
  if ((err = gev__resolve_start(l, &cx->target, resolved, cx, &cx->resolving)) <
      0)
    fail(cx, err);
}

/* The loop was freed with the start task unrun. */
static void drop_unstarted(void *arg)
{
  connecting *cx = arg;

  if (cx->drop_context)
    cx->drop_context(cx->opt.context);
  free(cx);
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
  if ((err = gev__loop_post_owned(l, start_task, cx, drop_unstarted)) < 0) {
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

int gev__loop_connect_owned(gev_loop *l, const gev_handler *h,
                            const gev_connect_options *opt,
                            void (*drop_context)(void *context))
{
  connecting *cx;
  int err;

  if (!l || !h || !opt || !opt->address || gev__connect_check(opt) < 0)
    return -EINVAL;
  cx = calloc(1, sizeof(*cx));
  if (!cx)
    return -ENOMEM;
  if ((err = gev__target_parse(opt->address, &cx->target)) < 0) {
    free(cx);
    return err;
  }
  cx->h = *h;
  cx->drop_context = drop_context;
  return submit(cx, l, opt);
}

int gev_loop_connect(gev_loop *l, const gev_handler *h,
                     const gev_connect_options *opt)
{
  return gev__loop_connect_owned(l, h, opt, NULL);
}
