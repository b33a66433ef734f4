/* test-stats.c - the counters (gev_loop_stats, gev_server_stats), each
 * moved by the event it counts; the Prometheus exposition; the logging
 * hook, silent by default. */
#include "helpers.h"

#include "loop-internal.h" /* the poller's fd, to make it fail */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static gev_stats stats_of(th_server *srv)
{
  gev_stats st = {0};

  ck_assert_int_eq(gev_server_stats(srv->s, &st), 0);
  return st;
}

/* Polls the server's figures until pred holds (bounded). */
typedef bool (*stats_pred)(const gev_stats *st, uint64_t want);

static bool wait_stats(th_server *srv, stats_pred pred, uint64_t want)
{
  for (int i = 0; i < 500; i++) {
    gev_stats st = stats_of(srv);
    if (pred(&st, want))
      return true;
    usleep(10 * 1000);
  }
  return false;
}

static bool closed_at_least(const gev_stats *st, uint64_t n)
{
  return st->conns_closed >= n;
}

/* ---- traffic ------------------------------------------------------------ */

START_TEST(counters_follow_traffic)
{
  gev_options opt = {.num_loops = 2};
  th_server *srv;
  gev_stats st;
  int fds[6];

  th_reset_counters();
  srv = th_start(&th_echo_handler, &opt);
  for (int i = 0; i < 6; i++) {
    fds[i] = th_connect(srv->port);
    ck_assert(th_echo_roundtrip(fds[i], 10000, (uint32_t)i));
  }
  st = stats_of(srv);
  ck_assert_uint_eq(st.conns_accepted, 6);
  ck_assert_uint_eq(st.conns_open, 6);
  ck_assert_uint_eq(st.conns_closed, 0);
  ck_assert_uint_ge(st.bytes_read, 60000);
  ck_assert_uint_ge(st.bytes_written, 60000);
  ck_assert_uint_ge(st.messages, 6);
  ck_assert_uint_gt(st.loop_passes, 0);
  ck_assert_uint_gt(st.tasks_run, 0); /* the acceptor's hand-offs */
  for (int i = 0; i < 6; i++)
    close(fds[i]);
  ck_assert(wait_stats(srv, closed_at_least, 6));
  st = stats_of(srv);
  ck_assert_uint_eq(st.conns_open, 0);
  ck_assert_uint_eq(st.closed_peer, 6);
  ck_assert_uint_eq(st.bytes_read, st.bytes_written); /* an echo */
  th_stop(srv);
}
END_TEST

/* ---- one test per close reason ---------------------------------------- */

static void close_at_once(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  ringbuffer_move(out, in, ringbuffer_len(in));
  gev_conn_close(c);
}

static void take_nothing(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)in;
  (void)out;
}

/* A reason, the handler and options that produce it, and what the client
 * does. */
typedef struct reason_case {
  gev_handler h;
  gev_options opt;
  size_t send;   /* bytes the client sends */
  bool reset;    /* the client resets instead of closing */
  bool shutdown; /* the server shuts down with a short deadline */
} reason_case;

static gev_stats run_reason(const reason_case *rc)
{
  static char data[8192];
  reason_case r = *rc;
  th_server *srv;
  gev_stats st;
  int fd;

  th_reset_counters();
  srv = th_start(&r.h, &r.opt);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  if (r.send)
    ck_assert(th_write_all(fd, data, r.send));
  if (r.reset) {
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
    fd = -1;
  }
  if (r.shutdown) {
    usleep(50 * 1000);
    ck_assert_int_eq(gev_server_shutdown(srv->s, 300), 0);
  }
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  st = stats_of(srv);
  if (fd >= 0)
    close(fd);
  th_stop(srv);
  ck_assert_uint_eq(st.conns_closed, 1);
  return st;
}

START_TEST(close_reasons_counted)
{
  gev_handler echo = th_echo_handler;
  gev_handler closer = {th_count_connect, close_at_once, th_count_close};
  gev_handler holder = {th_count_connect, take_nothing, th_count_close};
  reason_case local = {.h = closer, .opt = {.num_loops = 1}, .send = 10};
  reason_case idle = {.h = echo,
                      .opt = {.num_loops = 1, .idle_timeout_ms = 200}};
  reason_case cap = {
      .h = holder, .opt = {.num_loops = 1, .max_buffer = 4096}, .send = 8192};
  reason_case err = {.h = echo, .opt = {.num_loops = 1}, .reset = true};
  reason_case stop = {
      .h = holder, .opt = {.num_loops = 1}, .send = 10, .shutdown = true};
  gev_stats st;

  st = run_reason(&local);
  ck_assert_uint_eq(st.closed_local, 1);
  st = run_reason(&idle);
  ck_assert_uint_eq(st.closed_idle, 1);
  st = run_reason(&cap);
  ck_assert_uint_eq(st.closed_cap, 1);
  st = run_reason(&err);
  ck_assert_uint_eq(st.closed_error, 1);
  st = run_reason(&stop);
  ck_assert_uint_eq(st.closed_shutdown, 1);
}
END_TEST

/* A connection the shutdown deadline ends is closed while its loop winds
 * down (after its last pass); a reader that sees on_close must still see
 * it counted. The handler lingers in on_close, past the moment the loop
 * stops running passes, so a reader that does not wait for the loop's final
 * figures reads the ones from before the close. */
static void close_slowly(gev_conn *c)
{
  (void)c;
  th_inc(&th_closes);
  usleep(20 * 1000);
}

START_TEST(closed_while_winding_down_counted)
{
  gev_handler h = {th_count_connect, take_nothing, close_slowly};
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  gev_stats st;
  int fd;

  th_reset_counters();
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  ck_assert(th_write_all(fd, "x", 1));
  ck_assert_int_eq(gev_server_shutdown(srv->s, 50), 0);
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  st = stats_of(srv);
  ck_assert_uint_eq(st.conns_closed, 1);
  ck_assert_uint_eq(st.closed_shutdown, 1);
  close(fd);
  th_stop(srv);
}
END_TEST

START_TEST(refused_by_max_connections)
{
  gev_options opt = {.num_loops = 1, .max_connections = 1};
  th_server *srv;
  gev_stats st;
  int a, b;

  th_reset_counters();
  srv = th_start(&th_echo_handler, &opt);
  a = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  b = th_connect(srv->port);
  ck_assert(th_wait_eof(b, 5000));
  st = stats_of(srv);
  ck_assert_uint_eq(st.conns_refused, 1);
  ck_assert_uint_eq(st.conns_accepted, 1);
  close(a);
  close(b);
  th_stop(srv);
}
END_TEST

/* ---- tasks, timers, cross-thread sends, backpressure, lag --------------- */

static gev_conn *kept;

static void keep_connect(gev_conn *c)
{
  gev_conn_ref(c);
  kept = c;
  th_inc(&th_connects);
}

/* Busy, not asleep: the loop falls behind its next timer, and its thread
 * spends CPU time. */
static uint64_t thread_cpu_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Spins until this thread has used 120 ms of CPU (at least as much wall
 * time, however loaded the machine). */
static void slow_timer(void *arg)
{
  uint64_t until = thread_cpu_ms() + 120;

  (void)arg;
  while (thread_cpu_ms() < until)
    ;
}

static void noop_timer(void *arg)
{
  (void)arg;
}

/* Both timers are armed in one task of the loop: armed from the test's
 * thread, the second could be armed while the first already runs (a
 * scheduler, or valgrind running one thread at a time, may hold the test
 * thread between the calls), and its lag would be shorter. */
static int late_armed;

static void arm_late_timer(void *loop)
{
  gev_loop *l = loop;
  bool ok = gev_loop_run_after(l, 1, slow_timer, NULL) != 0;

  ok = gev_loop_run_after(l, 20, noop_timer, NULL) != 0 && ok;
  th_st(&late_armed, ok ? 1 : -1);
}

START_TEST(work_counters)
{
  gev_handler h = {keep_connect, th_echo_msg, th_count_close};
  gev_options opt = {.num_loops = 1, .max_buffer = 64 * 1024};
  static char big[256 * 1024];
  gev_stats st = {0};
  th_server *srv;
  gev_loop *l;
  int fd;

  th_reset_counters();
  srv = th_start(&h, &opt);
  l = gev_server_worker_loop(srv->s, 0);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  for (int i = 0; i < 10; i++)
    ck_assert_int_eq(gev_conn_send(kept, "x", 1), 0);
  th_st(&late_armed, 0);
  ck_assert_int_eq(gev_loop_post(l, arm_late_timer, l), 0);
  ck_assert(th_wait_int(&late_armed, 1, 5000));
  /* Fill the output: the client sends for a while and reads nothing, so
   * the echo's output outgrows the kernel's buffers and half the cap. */
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  for (uint64_t end = th_now_ms() + 400; th_now_ms() < end;)
    if (write(fd, big, sizeof(big)) < 0)
      usleep(1000);
  /* A reader waits only briefly for a busy loop's figures (its own
   * publication may come later on a loaded machine): read until they show
   * the work, within a bound. */
  for (uint64_t end = th_now_ms() + 5000; th_now_ms() < end;) {
    ck_assert_int_eq(gev_loop_stats(l, &st), 0);
    if (st.cross_thread_sends == 10 && st.timers_fired >= 2 &&
        st.backpressure_pauses >= 1 && st.lag_max_ms >= 80 &&
        st.busy_us > 100 * 1000 && st.wait_us > 0)
      break;
    usleep(10 * 1000);
  }
  ck_assert_uint_eq(st.cross_thread_sends, 10);
  ck_assert_uint_ge(st.timers_fired, 2);
  ck_assert_uint_ge(st.backpressure_pauses, 1);
  ck_assert_uint_ge(st.lag_max_ms, 80); /* the 20 ms timer, 100 ms late */
  ck_assert_uint_gt(st.busy_us, 100 * 1000);
  ck_assert_uint_gt(st.wait_us, 0);
  ck_assert_int_eq(gev_loop_stats(NULL, &st), -EINVAL);
  ck_assert_int_eq(gev_server_stats(srv->s, NULL), -EINVAL);
  close(fd);
  th_stop(srv);
  gev_conn_unref(kept);
}
END_TEST

/* ---- readers on other threads while the loops run ----------------------- */

typedef struct reader {
  gev_server *s;
  int stop, bad, reads;
} reader;

static void *read_main(void *arg)
{
  reader *r = arg;
  gev_stats prev = {0}, st;

  while (!th_ld(&r->stop)) {
    gev_server_stats(r->s, &st);
    if (st.bytes_read < prev.bytes_read || st.messages < prev.messages ||
        st.conns_accepted < prev.conns_accepted ||
        st.loop_passes < prev.loop_passes)
      th_inc(&r->bad);
    prev = st;
    th_inc(&r->reads);
  }
  return NULL;
}

START_TEST(concurrent_readers_see_monotone_counters)
{
  gev_options opt = {.num_loops = 2};
  reader r = {0};
  pthread_t t[2];
  th_server *srv;

  th_reset_counters();
  srv = th_start(&th_echo_handler, &opt);
  r.s = srv->s;
  for (int i = 0; i < 2; i++)
    ck_assert_int_eq(pthread_create(&t[i], NULL, read_main, &r), 0);
  for (int k = 0; k < 20; k++) {
    int fd = th_connect(srv->port);
    ck_assert(th_echo_roundtrip(fd, 20000, (uint32_t)k));
    close(fd);
  }
  th_st(&r.stop, 1);
  for (int i = 0; i < 2; i++)
    th_join(t[i], 20);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&r.bad), 0);
  ck_assert_int_gt(th_ld(&r.reads), 0);
}
END_TEST

/* ---- the Prometheus exposition ------------------------------------------ */

START_TEST(metrics_exposition)
{
  gev_options opt = {.num_loops = 2};
  char small[16], *buf;
  th_server *srv;
  int n, m, fd;

  srv = th_start(&th_echo_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_echo_roundtrip(fd, 1000, 1));
  n = gev_server_metrics(srv->s, small, sizeof(small));
  ck_assert_int_gt(n, (int)sizeof(small));
  buf = malloc((size_t)n + 1);
  m = gev_server_metrics(srv->s, buf, (size_t)n + 1);
  ck_assert_int_eq(m, n);
  ck_assert_int_eq((int)strlen(buf), n);
  ck_assert_ptr_nonnull(strstr(buf, "# TYPE gev_bytes_read_total counter\n"));
  ck_assert_ptr_nonnull(strstr(buf, "gev_connections_open{loop=\"0\"} "));
  ck_assert_ptr_nonnull(strstr(buf, "gev_connections_open{loop=\"1\"} "));
  ck_assert_ptr_nonnull(strstr(buf, "gev_connections_accepted_total{loop="));
  ck_assert_ptr_nonnull(strstr(buf, "gev_bytes_written_total{loop="));
  ck_assert_ptr_nonnull(strstr(buf, "gev_messages_total{loop="));
  ck_assert_ptr_nonnull(strstr(buf, "{loop=\"acceptor\"}"));
  ck_assert_int_eq(gev_server_metrics(NULL, buf, 10), -EINVAL);
  /* promtool, when installed (Debian package prometheus), must accept it;
   * .ci/run installs it. */
  if (system("command -v promtool >/dev/null 2>&1") == 0) {
    char path[] = "/tmp/gev-metrics-XXXXXX", cmd[128];
    int tfd = mkstemp(path);
    ck_assert_int_ge(tfd, 0);
    ck_assert_int_eq(write(tfd, buf, (size_t)n), n);
    close(tfd);
    snprintf(cmd, sizeof(cmd), "promtool check metrics < %s", path);
    ck_assert_int_eq(system(cmd), 0);
    unlink(path);
  }
  free(buf);
  close(fd);
  th_stop(srv);
}
END_TEST

/* ---- the logger --------------------------------------------------------- */

static char log_lines[8][512];
static int log_count, log_levels[8];

static void logger(gev_log_level level, const char *msg, void *arg)
{
  int i = __atomic_fetch_add(&log_count, 1, __ATOMIC_SEQ_CST);

  (void)arg;
  if (i < 8) {
    snprintf(log_lines[i], sizeof(log_lines[i]), "%s", msg);
    log_levels[i] = (int)level;
  }
}

static int acceptor_go;

static void hold_acceptor(void *arg)
{
  (void)arg;
  for (int i = 0; i < 20000 && !th_ld(&acceptor_go); i++)
    usleep(1000);
}

/* True when one of the fds reads EOF within timeout_ms. */
static bool any_eof(const int *fds, int n, int timeout_ms)
{
  struct pollfd p[8];
  uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

  for (int i = 0; i < n; i++)
    p[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
  while (th_now_ms() < end) {
    if (poll(p, (nfds_t)n, 100) > 0)
      for (int i = 0; i < n; i++) {
        char b;
        if ((p[i].revents & POLLIN) && read(p[i].fd, &b, 1) == 0)
          return true;
      }
  }
  return false;
}

static void *run_server(void *s)
{
  gev_server_start(s);
  return NULL;
}

/* In a child with a low fd limit: a server whose acceptor runs out of fds
 * while clients connect. Returns what went to stdout and stderr. */
static void exhaust_fds(int logger_level, char *output, size_t n)
{
  int pipefd[2], st;
  pid_t pid;

  ck_assert_int_eq(pipe(pipefd), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    gev_options opt = {.address = "127.0.0.1:0", .num_loops = 1};
    static int fill[32768];
    int fds[8], nfill = 0;
    gev_server *s;
    pthread_t t;

    dup2(pipefd[1], 1);
    dup2(pipefd[1], 2);
    if (logger_level >= 0)
      gev_set_logger(logger, (gev_log_level)logger_level, NULL);
    if (gev_server_new(&s, &th_echo_handler, &opt) < 0)
      _exit(10);
    /* The acceptor waits until the clients are connected: otherwise it
     * races them for the last fds (and the reserve fd's slot). */
    gev_loop_post(gev_server_loop(s), hold_acceptor, NULL);
    pthread_create(&t, NULL, run_server, s);
    /* Every fd taken (whatever the limit, also under valgrind, which
     * keeps its own above it), then 8 given back to 8 clients: the
     * server's accepts find none. */
    while (nfill < 32768 && (fill[nfill] = open("/dev/null", O_RDONLY)) >= 0)
      nfill++;
    for (int i = 0; i < 8 && nfill > 0; i++)
      close(fill[--nfill]);
    for (int i = 0; i < 8; i++)
      fds[i] = th_connect(gev_server_port(s));
    th_st(&acceptor_go, 1);
    /* The reserve fd accepts and closes a client (the first ones may still
     * have been accepted): an EOF says the exhaustion was met (bounded;
     * slow under valgrind). */
    if (!any_eof(fds, 8, 10000))
      _exit(11);
    gev_server_stop(s);
    pthread_join(t, NULL);
    gev_server_free(s);
    for (int i = 0; i < 8; i++)
      if (fds[i] >= 0)
        close(fds[i]);
    while (nfill > 0)
      close(fill[--nfill]);
    if (logger_level >= 0) {
      printf("%d messages\n", log_count);
      for (int i = 0; i < log_count && i < 8; i++)
        printf("%d %s\n", log_levels[i], log_lines[i]);
    }
    fflush(stdout);
    _exit(0);
  }
  close(pipefd[1]);
  size_t got = 0;
  ssize_t r;
  while (got + 1 < n && (r = read(pipefd[0], output + got, n - 1 - got)) > 0)
    got += (size_t)r;
  output[got] = '\0';
  close(pipefd[0]);
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  /* 10 and 11 are the child's own failures; valgrind's errors exit 3. */
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "child exit %d signal %d, it wrote: %.400s",
                WIFEXITED(st) ? WEXITSTATUS(st) : -1,
                WIFSIGNALED(st) ? WTERMSIG(st) : 0, output);
}

START_TEST(logger_silent_by_default_and_filtered)
{
  static char out[16384];

  exhaust_fds(-1, out, sizeof(out));
  ck_assert_msg(out[0] == '\0', "the library wrote: %s", out);
  exhaust_fds(GEV_LOG_WARN, out, sizeof(out));
  ck_assert_msg(strstr(out, "accept: Too many open files") != NULL, "%s", out);
  ck_assert_msg(strstr(out, "acceptor: ") != NULL, "no loop named: %s", out);
  exhaust_fds(GEV_LOG_ERROR, out, sizeof(out));
  ck_assert_msg(strncmp(out, "0 messages", 10) == 0, "not filtered: %s", out);
}
END_TEST

static void break_poller(void *arg)
{
  gev_loop *l = arg;
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  dup2(fd, l->poller.epfd);
  close(fd);
}

START_TEST(poller_failure_logged)
{
  th_loop_thread lt;

  log_count = 0;
  gev_set_logger(logger, GEV_LOG_ERROR, NULL);
  th_lt_start(&lt);
  ck_assert_int_eq(gev_loop_post(lt.l, break_poller, lt.l), 0);
  th_join(lt.t, 10);
  gev_set_logger(NULL, GEV_LOG_ERROR, NULL);
  ck_assert_int_eq(lt.rc, -EINVAL);
  ck_assert_int_eq(log_count, 1);
  ck_assert_int_eq(log_levels[0], GEV_LOG_ERROR);
  ck_assert_ptr_nonnull(strstr(log_lines[0], "poller failed"));
  gev_loop_free(lt.l);
}
END_TEST

static Suite *stats_suite(void)
{
  const th_case cases[] = {
      {"counters_follow_traffic", counters_follow_traffic, 30},
      {"close_reasons_counted", close_reasons_counted, 60},
      {"closed_while_winding_down_counted", closed_while_winding_down_counted,
       30},
      {"refused_by_max_connections", refused_by_max_connections, 30},
      {"work_counters", work_counters, 30},
      {"concurrent_readers_see_monotone_counters",
       concurrent_readers_see_monotone_counters, 60},
      {"metrics_exposition", metrics_exposition, 30},
      {"logger_silent_by_default_and_filtered",
       logger_silent_by_default_and_filtered, 60},
      {"poller_failure_logged", poller_failure_logged, 30},
  };

  return th_suite("stats", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(stats_suite());
}
