/* server.c - listeners, the acceptor loop, worker threads, start and stop.
 *
 * Threads: the caller of gev_server_start runs the acceptor loop; each
 * worker loop runs in its own thread. The acceptor accepts until EAGAIN and
 * posts each new connection to a worker (one eventfd write per batch at
 * most). With reuse_port each worker accepts on its own listener and keeps
 * what it accepts. */
#include "conn-internal.h"
#include "log-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>
#include <unistd.h>

/* Accepts per readiness event: bounded so timers and tasks keep running
 * under a connection storm. */
#define ACCEPT_BATCH 256
/* How long accepting pauses when fds are exhausted and the reserve fd could
 * not be reopened. */
#define EXHAUSTED_RETRY_MS 100

/* ---- accepting -------------------------------------------------------- */

static gev_loop *pick_loop(gev_server *s)
{
  if (s->opt.load_balance == GEV_LB_LEAST_CONNECTIONS) {
    int best = 0, best_n = atomic_load(&s->workers[0].loop->nconns);
    for (int i = 1; i < s->nloops; i++) {
      int n = atomic_load(&s->workers[i].loop->nconns);
      if (n < best_n) {
        best = i;
        best_n = n;
      }
    }
    return s->workers[best].loop;
  }
  return s->workers[s->rr_next++ % (unsigned)s->nloops].loop;
}

/* Counts a connection against max_connections. */
static bool admit(gev_server *s)
{
  int max = s->opt.max_connections, n = atomic_load(&s->nconns);

  do {
    if (max > 0 && n >= max)
      return false;
  } while (!atomic_compare_exchange_weak(&s->nconns, &n, n + 1));
  return true;
}

/* A connection that will not start: out of the counts it was admitted to. */
static void uncount(gev_server *s, gev_loop *l)
{
  atomic_fetch_sub(&l->nconns, 1);
  gev__server_uncount(s);
}

/* In the connection's loop: it starts (on_connect) or, when the loop is
 * finishing or out of resources, goes (freed with its fd). */
static void start_task(void *arg)
{
  gev_conn *c = arg;
  gev_server *s = c->server;
  gev_loop *l = c->loop;

  /* A failed start frees c: what uncount needs is read before. */
  if (gev__conn_start(c, s->opt.transport, s->opt.transport_arg, NULL, NULL) <
      0)
    uncount(s, l);
}

/* The loop was freed before it ran the hand-off. */
static void drop_task(void *arg)
{
  gev_conn *c = arg;

  uncount(c->server, c->loop);
  gev__conn_free_unstarted(c);
}

void gev__server_accepted(gev__listener *ls, int fd, const struct sockaddr *sa,
                          socklen_t len)
{
  gev_server *s = ls->server;
  gev_loop *l;
  gev_conn *c;
  int one = 1;

  gev__assert_in_loop(ls->loop);
  if (!admit(s)) {
    close(fd); /* past max_connections: refused */
    ls->loop->st.v[GEV__S_REFUSED]++;
    return;
  }
  ls->loop->st.v[GEV__S_ACCEPTED]++;
  if (sa->sa_family != AF_UNIX)
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  l = ls->hand_off ? pick_loop(s) : ls->loop;
  atomic_fetch_add(&l->nconns, 1); /* counted now, for least-connections */
  c = gev__conn_new(l, &s->h, false, s->max_buffer, fd, sa, len);
  if (!c) {
    close(fd);
    uncount(s, l);
    return;
  }
  c->listener = 0;
  if (!ls->hand_off)
    start_task(c);
  else if (gev__loop_post_owned(l, start_task, c, drop_task) < 0)
    drop_task(c);
}

static void resume_accepting(void *arg)
{
  gev__listener *ls = arg;

  ls->retry = 0;
  if (ls->reserve_fd < 0)
    ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  gev__loop_io_set(ls->loop, &ls->io, GEV__EV_READ);
}

/* Out of fds, the pending connection cannot be taken and the listener stays
 * readable: without care the loop would spin. Spend the reserve fd to
 * accept and close one connection (the peer sees a close, not a hang), then
 * take the reserve back. If even that fails, stop listening for a while. */
static void on_exhausted(gev__listener *ls, int err)
{
  int fd;

  if (ls->reserve_fd >= 0) {
    close(ls->reserve_fd);
    fd = accept4(ls->io.fd, NULL, NULL, SOCK_CLOEXEC);
    if (fd >= 0)
      close(fd);
    ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    gev__log(GEV_LOG_WARN, ls->loop, NULL, "accept: %s; the reserve fd %s%s",
             gev_strerror(-err),
             fd >= 0 ? "took and closed one connection"
                     : "was taken by another open meanwhile",
             ls->reserve_fd >= 0 ? "" : ", and could not be reopened");
    if (ls->reserve_fd >= 0)
      return;
  }
  if (ls->retry)
    return;
  gev__log(GEV_LOG_WARN, ls->loop, NULL, "accept: %s; not accepting for %d ms",
           gev_strerror(-err), EXHAUSTED_RETRY_MS);
  gev__loop_io_set(ls->loop, &ls->io, 0);
  ls->retry =
      gev_loop_run_after(ls->loop, EXHAUSTED_RETRY_MS, resume_accepting, ls);
  if (!ls->retry)
    gev__loop_io_set(ls->loop, &ls->io, GEV__EV_READ);
}

static void listener_cb(gev__io *io, unsigned events)
{
  gev__listener *ls = (gev__listener *)io;

  (void)events;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    int fd = accept4(io->fd, (struct sockaddr *)&ss, &len,
                     SOCK_NONBLOCK | SOCK_CLOEXEC);

    if (fd >= 0) {
      gev__server_accepted(ls, fd, (struct sockaddr *)&ss, len);
      continue;
    }
    switch (errno) {
    case EINTR:
    case ECONNABORTED: /* the peer gave up while queued */
    case EPROTO:
    case EPERM: /* firewall */ continue;
    case EMFILE:
    case ENFILE:
    case ENOBUFS:
    case ENOMEM: on_exhausted(ls, errno); return;
    case EAGAIN: return; /* drained: wait for readiness */
    default:             /* unexpected: wait for readiness, say why */
      gev__log(GEV_LOG_WARN, ls->loop, NULL, "accept: %s",
               gev_strerror(-errno));
      return;
    }
  }
}

static int listener_open(gev_server *s, gev__listener *ls, gev_loop *l,
                         bool hand_off, bool reuse_port)
{
  int err;

  ls->server = s;
  ls->loop = l;
  ls->hand_off = hand_off;
  ls->io = (gev__io){.fd = -1, .cb = listener_cb};
  ls->reserve_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  err = gev__addr_listen(&s->addr, s->opt.backlog, reuse_port, &ls->io.fd);
  if (!err)
    err = gev__loop_io_add(l, &ls->io, GEV__EV_READ);
  return err;
}

/* Closes the listening socket; the loop it was registered with may be gone
 * already, so it does not touch the loop. */
static void listener_close(gev__listener *ls)
{
  if (ls->io.fd >= 0)
    close(ls->io.fd);
  if (ls->reserve_fd >= 0)
    close(ls->reserve_fd);
  ls->io.fd = ls->reserve_fd = -1;
}

/* ---- creation --------------------------------------------------------- */

static int online_cpus(void)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int check_options(const gev_handler *h, const gev_options *opt)
{
  if (!h || !opt || !opt->address)
    return -EINVAL;
  if (opt->idle_timeout_ms < 0 || opt->max_connections < 0 ||
      opt->backlog < 0 || opt->num_loops > 4096)
    return -EINVAL;
  if (opt->load_balance != GEV_LB_ROUND_ROBIN &&
      opt->load_balance != GEV_LB_LEAST_CONNECTIONS)
    return -EINVAL;
  return 0;
}

static void begin_shutdown(void *arg);

static int create_loops(gev_server *s)
{
  int err = gev__loop_new(&s->acceptor, s, -1);

  if (err)
    return err;
  s->acceptor->async_fn = begin_shutdown; /* gev_server_shutdown's wake-up */
  s->acceptor->async_arg = s;
  s->workers = calloc((size_t)s->nloops, sizeof(*s->workers));
  if (!s->workers)
    return -ENOMEM;
  for (int i = 0; i < s->nloops; i++) {
    s->workers[i].listener.io.fd = -1;
    s->workers[i].listener.reserve_fd = -1;
  }
  for (int i = 0; i < s->nloops; i++) {
    gev_loop *l;
    if ((err = gev__loop_new(&l, s, i)) < 0)
      return err;
    s->workers[i].loop = l;
    if (s->opt.idle_timeout_ms > 0) {
      uint64_t every = (uint64_t)s->opt.idle_timeout_ms / 4;
      if (!gev_loop_run_every(l, every ? every : 1, gev__conn_idle_sweep, l))
        return -ENOMEM;
    }
  }
  return 0;
}

/* Port 0 with reuse_port: the first listener picks the port, the others
 * bind to the same one. */
static int open_listeners(gev_server *s)
{
  bool per_worker = s->opt.reuse_port && s->addr.ss.ss_family != AF_UNIX;
  int err;

  s->listener.io.fd = -1;
  s->listener.reserve_fd = -1;
  if (!per_worker) {
    err = listener_open(s, &s->listener, s->acceptor, true, false);
    if (!err) {
      s->port = gev__addr_local_port(s->listener.io.fd);
      s->own_path = s->addr.ss.ss_family == AF_UNIX;
    }
    return err;
  }
  for (int i = 0; i < s->nloops; i++) {
    gev__worker *w = &s->workers[i];
    if ((err = listener_open(s, &w->listener, w->loop, false, true)) < 0)
      return err;
    if (i == 0) {
      s->port = gev__addr_local_port(w->listener.io.fd);
      if (s->addr.ss.ss_family == AF_INET)
        ((struct sockaddr_in *)&s->addr.ss)->sin_port = htons(s->port);
      else
        ((struct sockaddr_in6 *)&s->addr.ss)->sin6_port = htons(s->port);
    }
  }
  return 0;
}

int gev_server_new(gev_server **out, const gev_handler *h,
                   const gev_options *opt)
{
  gev_server *s;
  int err;

  if (!out)
    return -EINVAL;
  *out = NULL;
  if ((err = check_options(h, opt)) < 0)
    return err;
  s = calloc(1, sizeof(*s));
  if (!s)
    return -ENOMEM;
  s->h = *h;
  s->opt = *opt;
  s->addr_text = strdup(opt->address);
  if (!s->addr_text) {
    free(s);
    return -ENOMEM;
  }
  s->opt.address = s->addr_text;
  s->max_buffer = opt->max_buffer ? opt->max_buffer : GEV__DEFAULT_MAX_BUFFER;
  s->nloops = opt->num_loops > 0 ? opt->num_loops : online_cpus();
  if (s->opt.backlog == 0)
    s->opt.backlog = SOMAXCONN;
  atomic_init(&s->nconns, 0);
  atomic_init(&s->started, false);
  atomic_init(&s->shutdown, false);
  atomic_init(&s->draining, false);
  atomic_init(&s->drain_ms, 0);
  atomic_init(&s->loops_up, 0);
  s->listener.io.fd = s->listener.reserve_fd = -1;
  if ((err = gev__addr_parse(opt->address, &s->addr)) < 0 ||
      (err = create_loops(s)) < 0 || (err = open_listeners(s)) < 0) {
    gev_server_free(s);
    return err;
  }
  *out = s;
  return 0;
}

/* ---- graceful shutdown ------------------------------------------------ */

/* In a worker: its own listener (reuse_port) closes, its connections
 * wind down. */
/* In the listener's loop, while it runs: off the poller, then closed. */
static void listener_end(gev__listener *ls)
{
  if (ls->io.fd >= 0)
    gev__loop_io_del(ls->loop, &ls->io);
  listener_close(ls);
}

static void drain_worker(void *arg)
{
  gev__worker *w = arg;

  listener_end(&w->listener);
  gev__loop_drain(w->loop);
}

static void drain_deadline(void *arg)
{
  gev_server *s = arg;

  gev__loop_stop(s->acceptor); /* the workers close what is left */
}

/* In the acceptor, woken by gev_server_shutdown: refuse new connections,
 * tell every worker, and end at the last close or at the deadline. */
static void begin_shutdown(void *arg)
{
  gev_server *s = arg;
  uint64_t ms = atomic_load(&s->drain_ms);

  listener_end(&s->listener);
  atomic_store(&s->draining, true);
  for (int i = 0; i < s->nloops; i++)
    if (gev_loop_post(s->workers[i].loop, drain_worker, &s->workers[i]) < 0)
      gev__loop_stop(s->acceptor); /* a worker has stopped: stop it all */
  if (!gev_loop_run_after(s->acceptor, ms, drain_deadline, s))
    gev__loop_stop(s->acceptor); /* no timer: no deadline to wait for */
  /* After `draining` is visible: a close that came before it found the
   * flag unset, and this sees its count. */
  if (atomic_load(&s->nconns) == 0)
    gev__loop_stop(s->acceptor);
}

int gev_server_shutdown(gev_server *s, uint64_t timeout_ms)
{
  bool expected = false;
  int saved = errno; /* may run in a signal handler */

  if (!s)
    return -EINVAL;
  if (!atomic_compare_exchange_strong(&s->shutdown, &expected, true))
    return -EALREADY;
  atomic_store(&s->drain_ms, timeout_ms);
  gev__loop_async(s->acceptor);
  errno = saved;
  return 0;
}

/* ---- running ---------------------------------------------------------- */

/* A worker whose loop failed stops the whole server: gev_server_start
 * then returns the error rather than serving with a loop missing. */
static void *worker_main(void *arg)
{
  gev__worker *w = arg;
  char name[16];

  snprintf(name, sizeof(name), "gev-loop-%d", w->loop->index);
  pthread_setname_np(pthread_self(), name);
  gev__serving_watch(w->loop->server, w->loop);
  w->error = gev__loop_run(w->loop);
  if (w->error)
    gev__loop_stop(w->loop->server->acceptor);
  gev__loop_finish(w->loop);
  return NULL;
}

/* Joins the workers; the first error a worker loop stopped with, or 0. */
static int stop_workers(gev_server *s)
{
  int err = 0;

  for (int i = 0; i < s->nloops; i++)
    if (s->workers[i].running)
      gev__loop_stop(s->workers[i].loop);
  for (int i = 0; i < s->nloops; i++) {
    gev__worker *w = &s->workers[i];
    if (!w->running)
      continue;
    pthread_join(w->thread, NULL);
    w->running = false;
    listener_close(&w->listener);
    if (!err)
      err = w->error;
  }
  return err;
}

/* Workers start with every signal blocked, so that signals (SIGINT and its
 * handler calling gev_server_stop, say) go to the application's threads.
 * This changes masks of the library's own threads only, never dispositions. */
static int start_workers(gev_server *s)
{
  sigset_t all, old;
  int err = 0;

  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 0; i < s->nloops && !err; i++) {
    gev__worker *w = &s->workers[i];
    err = -pthread_create(&w->thread, NULL, worker_main, w);
    w->running = err == 0;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return err;
}

int gev_server_start(gev_server *s)
{
  bool expected = false;
  int err, werr;

  if (!s)
    return -EINVAL;
  if (!atomic_compare_exchange_strong(&s->started, &expected, true))
    return -EALREADY;
  if ((err = start_workers(s)) < 0) {
    stop_workers(s);
    return err;
  }
  err = gev__loop_run(s->acceptor);
  /* Stop taking connections first, so the port can be bound again at once
   * and nothing is handed to a worker that is stopping. */
  listener_close(&s->listener);
  werr = stop_workers(s);
  gev__loop_finish(s->acceptor);
  return err ? err : werr;
}

void gev_server_stop(gev_server *s)
{
  int saved = errno; /* may run in a signal handler */

  if (s)
    gev__loop_stop(s->acceptor);
  errno = saved;
}

void gev_server_free(gev_server *s)
{
  if (!s)
    return;
  listener_close(&s->listener);
  if (s->workers) {
    for (int i = 0; i < s->nloops; i++) {
      listener_close(&s->workers[i].listener);
      gev__loop_free(s->workers[i].loop);
    }
  }
  gev__loop_free(s->acceptor);
  if (s->own_path && ((struct sockaddr_un *)&s->addr.ss)->sun_path[0])
    unlink(((struct sockaddr_un *)&s->addr.ss)->sun_path);
  free(s->workers);
  free(s->addr_text);
  free(s);
}

/* ---- accessors -------------------------------------------------------- */

int gev_server_port(const gev_server *s)
{
  return s ? s->port : 0;
}

void *gev_server_user_data(const gev_server *s)
{
  return s ? s->opt.user_data : NULL;
}

gev_loop *gev_server_loop(gev_server *s)
{
  return s ? s->acceptor : NULL;
}

int gev_server_num_loops(const gev_server *s)
{
  return s ? s->nloops : 0;
}

gev_loop *gev_server_worker_loop(gev_server *s, int i)
{
  if (!s || i < 0 || i >= s->nloops)
    return NULL;
  return s->workers[i].loop;
}

int gev_server_conn_count(const gev_server *s)
{
  return s ? atomic_load(&((gev_server *)s)->nconns) : 0;
}

gev_timer_id gev_server_run_after(gev_server *s, uint64_t delay_ms,
                                  gev_task_fn fn, void *arg)
{
  return s ? gev_loop_run_after(s->acceptor, delay_ms, fn, arg) : 0;
}

gev_timer_id gev_server_run_every(gev_server *s, uint64_t interval_ms,
                                  gev_task_fn fn, void *arg)
{
  return s ? gev_loop_run_every(s->acceptor, interval_ms, fn, arg) : 0;
}

int gev_server_cancel(gev_server *s, gev_timer_id id)
{
  return s ? gev_loop_cancel(s->acceptor, id) : -EINVAL;
}
