/* server.c - the acceptor loop's hand-off, worker threads, start, stop and
 * shutdown. The listening sockets are listener.c's.
 *
 * Threads: the caller of gev_server_start runs the acceptor loop; each
 * worker loop runs in its own thread. The acceptor accepts until EAGAIN and
 * posts each new connection to a worker (one eventfd write per batch at
 * most). With reuse_port each worker accepts on its own listeners and keeps
 * what it accepts. */
#include "conn-internal.h"
#include "log-internal.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- accepting -------------------------------------------------------- */

/* The user's balancer, shown each loop's open connections. -1 when it
 * gives no loop (or the snapshot cannot be taken): round-robin then. */
static int pick_custom(gev_server *s, const struct sockaddr *sa, socklen_t len)
{
  int i;

  if (!s->lb_conns &&
      !(s->lb_conns = calloc((size_t)s->nloops, sizeof(*s->lb_conns))))
    return -1;
  for (i = 0; i < s->nloops; i++)
    s->lb_conns[i] = atomic_load(&s->workers[i].loop->nconns);
  i = s->opt.pick_loop(sa, len, s->lb_conns, s->nloops, s->opt.pick_loop_arg);
  return i >= 0 && i < s->nloops ? i : -1;
}

static gev_loop *pick_loop(gev_server *s, const struct sockaddr *sa,
                           socklen_t len)
{
  int pick;

  if (s->opt.pick_loop && (pick = pick_custom(s, sa, len)) >= 0)
    return s->workers[pick].loop;
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
  const gev__listen_addr *a = &s->addrs[c->listener];

  /* A failed start frees c: what uncount needs is read before. */
  if (gev__conn_start(c, a->tp, a->tp_arg, NULL, NULL) < 0)
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

  gev__assert_in_loop(ls->loop);
  if (!admit(s)) {
    close(fd); /* past max_connections: refused */
    ls->loop->st.v[GEV__S_REFUSED]++;
    return;
  }
  ls->loop->st.v[GEV__S_ACCEPTED]++;
  (void)gev__sockopts_conn(fd, sa->sa_family, &s->so); /* best effort */
  l = ls->hand_off ? pick_loop(s, sa, len) : ls->loop;
  atomic_fetch_add(&l->nconns, 1); /* counted now, for least-connections */
  c = gev__conn_new(l, &s->h, false, s->max_buffer, fd, sa, len);
  if (!c) {
    close(fd);
    uncount(s, l);
    return;
  }
  c->listener = ls->index;
  if (!ls->hand_off)
    start_task(c);
  else if (gev__loop_post_owned(l, start_task, c, drop_task) < 0)
    drop_task(c);
}

/* ---- creation --------------------------------------------------------- */

static int online_cpus(void)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (int)n : 1;
}

static int check_options(const gev_handler *h, const gev_options *opt)
{
  if (!h || !opt || (!opt->address && !opt->addresses))
    return -EINVAL;
  if (opt->idle_timeout_ms < 0 || opt->reader_idle_ms < 0 ||
      opt->writer_idle_ms < 0 || opt->max_connections < 0 || opt->backlog < 0 ||
      opt->num_loops > 4096 || opt->keepalive_s < 0 || opt->rcvbuf < 0 ||
      opt->sndbuf < 0)
    return -EINVAL;
  if (opt->load_balance != GEV_LB_ROUND_ROBIN &&
      opt->load_balance != GEV_LB_LEAST_CONNECTIONS)
    return -EINVAL;
  return 0;
}

static void begin_shutdown(void *arg);
static void drain_worker(void *arg);

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
    gev_loop *l;
    if ((err = gev__loop_new(&l, s, i)) < 0)
      return err;
    s->workers[i].loop = l;
    /* The shutdown's word to the worker: an atomic flag and the eventfd,
     * which no lack of memory can refuse (a task could be). */
    l->async_fn = drain_worker;
    l->async_arg = &s->workers[i];
  }
  return 0;
}

int gev_server_new(gev_server **out, const gev_handler *h,
                   const gev_options *opt)
{
  const char *one[2] = {opt ? opt->address : NULL, NULL};
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
  s->opt.address = NULL; /* copied into addrs */
  s->opt.addresses = NULL;
  s->so = (gev__sockopts){opt->keepalive_s, opt->rcvbuf, opt->sndbuf};
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
  atomic_init(&s->holds, 0);
  /* The addresses first: "fd:N" must name the caller's fd, not one the
   * loops open. */
  if ((err = gev__listeners_parse(s, opt->addresses ? opt->addresses : one)) <
          0 ||
      (err = create_loops(s)) < 0 ||
      (err = gev__listeners_open(s, gev__server_accepted)) < 0) {
    gev_server_free(s);
    return err;
  }
  *out = s;
  return 0;
}

/* ---- graceful shutdown ------------------------------------------------ */

/* In a worker: its own listeners (reuse_port) close, its connections
 * wind down. */
static void drain_worker(void *arg)
{
  gev__worker *w = arg;

  gev__listeners_end(w->loop->server, w->loop);
  gev__loop_drain(w->loop); /* handles that wind down on their own hold */
  gev__server_release(w->loop->server);
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

  gev__listeners_end(s, s->acceptor);
  /* Each worker's drain is waited for: it may start handles' own winding
   * down (which holds the shutdown) after this returns. */
  atomic_fetch_add(&s->holds, s->nloops);
  atomic_store(&s->draining, true);
  for (int i = 0; i < s->nloops; i++)
    gev__loop_async(s->workers[i].loop); /* drain_worker, in its thread */
  if (!gev_loop_run_after(s->acceptor, ms, drain_deadline, s))
    gev__loop_stop(s->acceptor); /* no timer: no deadline to wait for */
  /* After `draining` is visible: a close that came before it found the
   * flag unset, and this sees its count. */
  if (atomic_load(&s->nconns) == 0 && atomic_load(&s->holds) == 0)
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
    gev__listeners_close(s, w->loop);
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
  gev__listeners_close(s, s->acceptor);
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
  gev__listeners_free(s);
  if (s->workers)
    for (int i = 0; i < s->nloops; i++)
      gev__loop_free(s->workers[i].loop);
  gev__loop_free(s->acceptor);
  free(s->workers);
  free(s->lb_conns);
  free(s);
}

/* ---- accessors -------------------------------------------------------- */

int gev_server_port(const gev_server *s)
{
  return s ? s->addrs[0].port : 0;
}

int gev_server_num_listeners(const gev_server *s)
{
  return s ? s->naddrs : 0;
}

int gev_server_listener_port(const gev_server *s, int i)
{
  if (!s || i < 0 || i >= s->naddrs)
    return -EINVAL;
  return s->addrs[i].port;
}

int gev_server_listener_fd(gev_server *s, int i)
{
  if (!s || i < 0 || i >= s->naddrs)
    return -EINVAL;
  if (s->addrs[i].per_worker)
    return -EOPNOTSUPP;
  atomic_store(&s->addrs[i].keep_path, true);
  return s->addrs[i].fd;
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
