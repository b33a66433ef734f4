/*
 * test-server.c - the server: stopping with live connections, addresses
 * (TCP, IPv6, unix, malformed, in use, rebinding), load balancing,
 * max_connections, the acceptor loop's tasks and timers, start/stop
 * ordering, and the idle timeout.
 *
 * Every wait is bounded. Globals are reset at the start of each test so the
 * suite also runs with CK_FORK=no (valgrind).
 */
#include "helpers.h"
#include "server-internal.h" /* reuse_port: the workers' own listeners */

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* ---- shared test scaffolding ------------------------------------------ */

/* Which worker loop each connection landed on, in on_connect order. */
#define LB_MAX 128
static struct {
  pthread_mutex_t mu;
  int idx[LB_MAX];
  int n;
  int open[16]; /* open connections per worker loop, by the callbacks */
  char peer[LB_MAX][128];
} lb = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void lb_reset(void)
{
  pthread_mutex_lock(&lb.mu);
  lb.n = 0;
  memset(lb.open, 0, sizeof(lb.open));
  pthread_mutex_unlock(&lb.mu);
}

static int loop_index(gev_conn *c)
{
  gev_server *s = gev_conn_server(c);

  for (int i = 0; i < gev_server_num_loops(s); i++)
    if (gev_server_worker_loop(s, i) == gev_conn_loop(c))
      return i;
  return -1;
}

static void on_connect(gev_conn *c)
{
  int i = loop_index(c);

  if (i < 0 || i >= 16 || !gev_loop_in_thread(gev_conn_loop(c)))
    th_inc(&th_violations);
  pthread_mutex_lock(&lb.mu);
  if (lb.n < LB_MAX) {
    snprintf(lb.peer[lb.n], sizeof(lb.peer[0]), "%s", gev_conn_peer_addr(c));
    lb.idx[lb.n++] = i;
  }
  if (i >= 0 && i < 16)
    lb.open[i]++;
  pthread_mutex_unlock(&lb.mu);
  th_inc(&th_connects);
}

static void on_close(gev_conn *c)
{
  int i = loop_index(c);

  pthread_mutex_lock(&lb.mu);
  if (i >= 0 && i < 16)
    lb.open[i]--;
  pthread_mutex_unlock(&lb.mu);
  th_inc(&th_closes);
}

static void echo_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  if (th_echo_move(in, out))
    th_inc(&th_violations);
}

static const gev_handler echo_handler = {
    .on_connect = on_connect,
    .on_message = echo_msg,
    .on_close = on_close,
};

/* A server started by hand (tasks can be posted between new and start). */
typedef struct runner {
  gev_server *s;
  pthread_t thread;
  pthread_t tid; /* the thread running gev_server_start */
  int result;
  int returned;
} runner;

static void *runner_main(void *arg)
{
  runner *r = arg;
  r->tid = pthread_self();
  r->result = gev_server_start(r->s);
  __atomic_store_n(&r->returned, 1, __ATOMIC_SEQ_CST);
  return NULL;
}

static void runner_start(runner *r, gev_server *s)
{
  r->s = s;
  r->result = -1;
  r->returned = 0;
  ck_assert_int_eq(pthread_create(&r->thread, NULL, runner_main, r), 0);
}

static void runner_join(runner *r)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  ts.tv_sec += 20;
  ck_assert_msg(pthread_timedjoin_np(r->thread, NULL, &ts) == 0,
                "gev_server_start did not return within 20 s");
  ck_assert_int_eq(r->result, 0);
}

static void *nothing(void *arg)
{
  return arg;
}

/* The thread count before a test creates anything. One thread is created
 * and joined first: a runtime that starts a helper thread with the first
 * pthread_create (TSan does) has it by then. */
static int thread_baseline(void)
{
  pthread_t t;

  ck_assert_int_eq(pthread_create(&t, NULL, nothing, NULL), 0);
  ck_assert_int_eq(pthread_join(t, NULL), 0);
  return th_count_threads();
}

/* Threads exit a moment after pthread_join returns (the kernel reaps them
 * after waking the joiner), so thread counts are awaited, bounded. */
static void assert_threads_back(int baseline)
{
  ck_assert_msg(th_wait_threads(baseline, 5000), "%d threads, %d before",
                th_count_threads(), baseline);
}

/* ---- 8. stop with 1,000 live connections ------------------------------- */

START_TEST(stop_with_many_connections)
{
  enum { N = 1000 };
  gev_options opt = {.num_loops = 2};
  struct rlimit rl;
  int fds[N], fd0, th0;
  th_server *srv;

  ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &rl), 0);
  if (rl.rlim_cur < 4 * N && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &rl), 0);
  }
  ck_assert_msg(rl.rlim_cur >= 2 * N + 64, "RLIMIT_NOFILE %lu is too low",
                (unsigned long)rl.rlim_cur);
  th_reset_counters();
  lb_reset();
  fd0 = th_count_fds();
  th0 = thread_baseline();
  srv = th_start(&echo_handler, &opt);
  for (int i = 0; i < N; i++) {
    fds[i] = th_connect(srv->port);
    ck_assert_msg(fds[i] >= 0, "connect %d failed", i);
  }
  ck_assert_msg(th_wait_int(&th_connects, N, 20000), "%d of %d connected",
                th_ld(&th_connects), N);
  /* Some of them with data in flight. */
  for (int i = 0; i < N; i += 10)
    ck_assert(th_write_all(fds[i], "ping", 4));
  ck_assert_int_eq(gev_server_conn_count(srv->s), N);
  th_stop(srv); /* returns after every on_close */
  ck_assert_int_eq(th_ld(&th_closes), N);
  ck_assert_int_eq(th_ld(&th_connects), N);
  /* The server closed its side: every client sees EOF (after any echo). */
  for (int i = 0; i < N; i++) {
    ck_assert(th_wait_eof(fds[i], 5000));
    close(fds[i]);
  }
  ck_assert_int_eq(th_count_fds(), fd0);
  assert_threads_back(th0);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* ---- 9. addresses ------------------------------------------------------- */

static int unix_connect(const char *path, const char *bind_path)
{
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  struct timeval tv = {10, 0};
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

  ck_assert_int_ge(fd, 0);
  if (bind_path) {
    struct sockaddr_un b = {.sun_family = AF_UNIX};
    snprintf(b.sun_path, sizeof(b.sun_path), "%s", bind_path);
    unlink(bind_path);
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&b, sizeof(b)), 0);
  }
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  return fd;
}

START_TEST(unix_socket_echo)
{
  char path[64], cpath[64], addr[80];
  gev_options opt = {.num_loops = 2};
  struct stat st;
  th_server *srv;
  int a, b;

  th_reset_counters();
  lb_reset();
  snprintf(path, sizeof(path), "/tmp/gev-test-%d.sock", (int)getpid());
  snprintf(cpath, sizeof(cpath), "/tmp/gev-test-%d-c.sock", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", path);
  unlink(path);
  opt.address = addr;
  srv = th_start(&echo_handler, &opt);
  ck_assert_int_eq(srv->port, 0);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));

  a = th_connect_addr(addr); /* unnamed client */
  ck_assert_int_ge(a, 0);
  ck_assert(th_echo_roundtrip(a, 200000, 1));
  b = unix_connect(path, cpath); /* a client bound to a path */
  ck_assert(th_echo_roundtrip(b, 1000, 2));
  ck_assert_int_eq(th_ld(&th_connects), 2);
  ck_assert_str_eq(lb.peer[0], "");
  ck_assert_str_eq(lb.peer[1], cpath);

  /* The path is in use while the server runs. */
  {
    gev_server *s2 = (gev_server *)1;
    ck_assert_int_eq(gev_server_new(&s2, &echo_handler, &opt), -EADDRINUSE);
    ck_assert_ptr_null(s2);
  }
  close(a);
  close(b);
  unlink(cpath);
  ck_assert(th_wait_int(&th_closes, 2, 10000));
  th_stop(srv);
  ck_assert_msg(stat(path, &st) < 0 && errno == ENOENT,
                "socket file left after gev_server_free");
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* A socket file nobody accepts on (a crashed server's) is replaced. */
START_TEST(unix_socket_stale_file)
{
  char path[64], addr[80];
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  struct stat st;
  int fd;

  th_reset_counters();
  lb_reset();
  snprintf(path, sizeof(path), "/tmp/gev-test-%d-stale.sock", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", path);
  unlink(path);
  fd = socket(AF_UNIX, SOCK_STREAM, 0);
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  close(fd); /* the file stays, nobody listens */
  ck_assert_int_eq(stat(path, &st), 0);
  opt.address = addr;
  srv = th_start(&echo_handler, &opt);
  fd = th_connect_addr(addr);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 5000, 3));
  close(fd);
  th_stop(srv);
  ck_assert_int_ne(stat(path, &st), 0);
}
END_TEST

/* "unix:@name": the Linux abstract namespace, no file at all. */
START_TEST(unix_abstract_socket)
{
  char addr[80], name[64];
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  gev_options opt = {.num_loops = 1};
  struct timeval tv = {10, 0};
  th_server *srv;
  socklen_t len;
  int fd;

  th_reset_counters();
  lb_reset();
  snprintf(name, sizeof(name), "gev-test-%d-abstract", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:@%s", name);
  opt.address = addr;
  srv = th_start(&echo_handler, &opt);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  memcpy(sun.sun_path + 1, name, strlen(name));
  len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name));
  ck_assert_int_eq(connect(fd, (struct sockaddr *)&sun, len), 0);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  ck_assert(th_echo_roundtrip(fd, 50000, 11));
  ck_assert_str_eq(lb.peer[0], "");
  close(fd);
  th_stop(srv);
}
END_TEST

START_TEST(ipv6_echo)
{
  gev_options opt = {.num_loops = 2, .address = "[::1]:0"};
  struct sockaddr_in6 local;
  socklen_t len = sizeof(local);
  char addr[64], want[64];
  th_server *srv;
  int fd = socket(AF_INET6, SOCK_STREAM, 0);

  if (fd < 0) {
    printf("ipv6_echo: skipped, socket(AF_INET6): %s\n", strerror(errno));
    return;
  }
  close(fd);
  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  ck_assert_int_gt(srv->port, 0);
  snprintf(addr, sizeof(addr), "[::1]:%d", srv->port);
  fd = th_connect_addr(addr);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 300000, 4));
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
  snprintf(want, sizeof(want), "[::1]:%u", ntohs(local.sin6_port));
  ck_assert_str_eq(lb.peer[0], want);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

START_TEST(ipv4_peer_addr)
{
  gev_options opt = {.num_loops = 1};
  struct sockaddr_in local;
  socklen_t len = sizeof(local);
  char want[64];
  th_server *srv;
  int fd;

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 10, 5));
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&local, &len), 0);
  snprintf(want, sizeof(want), "127.0.0.1:%u", ntohs(local.sin_port));
  ck_assert_str_eq(lb.peer[0], want);
  close(fd);
  th_stop(srv);
}
END_TEST

START_TEST(bad_addresses)
{
  static const char *const bad[] = {
      "",
      "nohost",
      "127.0.0.1",
      "127.0.0.1:99999",
      "[::1",
      "1.2.3.4.5:80",
      "unix:",
      ":",
      "127.0.0.1:",
      "127.0.0.1:-1",
      "127.0.0.1:8x",
      "[::1]:",
      "[::1]80",
      "[]:80",
      "::1:80",
      "[127.0.0.1]:80",
      "[::1]:65536",
      "1.2.3:80x",
  };
  gev_options opt = {.num_loops = 1};
  gev_server *s;
  char longpath[300];

  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    s = (gev_server *)1;
    opt.address = bad[i];
    int r = gev_server_new(&s, &echo_handler, &opt);
    ck_assert_msg(r == -EINVAL, "\"%s\": %d (%s), want -EINVAL", bad[i], r,
                  gev_strerror(r));
    ck_assert_ptr_null(s);
  }
  memset(longpath, 'a', sizeof(longpath));
  memcpy(longpath, "unix:/tmp/", 10);
  longpath[sizeof(longpath) - 1] = '\0';
  opt.address = longpath;
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), -ENAMETOOLONG);

  /* Other invalid arguments. */
  opt.address = "127.0.0.1:0";
  ck_assert_int_eq(gev_server_new(NULL, &echo_handler, &opt), -EINVAL);
  ck_assert_int_eq(gev_server_new(&s, NULL, &opt), -EINVAL);
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, NULL), -EINVAL);
  opt.address = NULL;
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), -EINVAL);
  opt.address = "127.0.0.1:0";
  opt.max_connections = -1;
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), -EINVAL);
  opt.max_connections = 0;
  opt.idle_timeout_ms = -1;
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), -EINVAL);
  opt.idle_timeout_ms = 0;
  ck_assert_int_eq(gev_server_start(NULL), -EINVAL);
  gev_server_stop(NULL);
  gev_server_free(NULL);
}
END_TEST

static int listen_plain(int *port)
{
  struct sockaddr_in sin = {.sin_family = AF_INET};
  socklen_t len = sizeof(sin);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  ck_assert_int_ge(fd, 0);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  ck_assert_int_eq(listen(fd, 16), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  *port = ntohs(sin.sin_port);
  return fd;
}

START_TEST(address_in_use)
{
  gev_options opt = {.num_loops = 2};
  char addr[64];
  gev_server *s;
  int port, fd = listen_plain(&port), fd0;

  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  opt.address = addr;
  fd0 = th_count_fds();
  s = (gev_server *)1;
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), -EADDRINUSE);
  ck_assert_ptr_null(s);
  opt.reuse_port = true;
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), -EADDRINUSE);
  ck_assert_ptr_null(s);
  /* Failing left nothing open. */
  ck_assert_int_eq(th_count_fds(), fd0);
  close(fd);
}
END_TEST

/* A stopped and freed server's port (with the server side of a connection
 * in TIME_WAIT) can be bound again at once. */
START_TEST(rebind_after_free)
{
  gev_options opt = {.num_loops = 2};
  char addr[64];
  th_server *srv;
  int fd, port;

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  port = srv->port;
  fd = th_connect(port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 1000, 6));
  th_stop(srv); /* the server closes first: its side goes to TIME_WAIT */
  ck_assert(th_wait_eof(fd, 5000));
  close(fd);

  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  opt.address = addr;
  srv = th_start(&echo_handler, &opt);
  ck_assert_int_eq(srv->port, port);
  fd = th_connect(port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 1000, 7));
  close(fd);
  th_stop(srv);
}
END_TEST

/* ---- 10. ports, reuse_port, load balancing, max_connections ------------- */

START_TEST(port_zero_picks_a_port)
{
  static const char *const addrs[] = {":0", "127.0.0.1:0"};

  for (int i = 0; i < 2; i++) {
    gev_options opt = {.num_loops = 1, .address = addrs[i]};
    th_server *srv;
    int fd;

    th_reset_counters();
    lb_reset();
    srv = th_start(&echo_handler, &opt);
    ck_assert_msg(gev_server_port(srv->s) > 0, "%s: port %d", addrs[i],
                  gev_server_port(srv->s));
    ck_assert_int_eq(srv->port, gev_server_port(srv->s));
    fd = th_connect(srv->port);
    ck_assert_int_ge(fd, 0);
    ck_assert(th_echo_roundtrip(fd, 100, 8));
    close(fd);
    th_stop(srv);
  }
}
END_TEST

START_TEST(reuse_port_echo)
{
  enum { N = 64 };
  gev_options opt = {.num_loops = 2, .reuse_port = true};
  int fds[N], per_loop[2] = {0, 0};
  th_server *srv;

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  ck_assert_int_gt(srv->port, 0);
  /* Each worker has its own listener on the one port; no acceptor one. */
  ck_assert_int_eq(srv->s->nls, 2);
  for (int i = 0; i < 2; i++) {
    int lfd = srv->s->ls[i].io.fd;
    struct sockaddr_in sin;
    ck_assert_ptr_eq(srv->s->ls[i].loop, srv->s->workers[i].loop);
    socklen_t len = sizeof(sin);
    ck_assert_int_ge(lfd, 0);
    ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&sin, &len), 0);
    ck_assert_int_eq(ntohs(sin.sin_port), srv->port);
  }
  for (int i = 0; i < N; i++) {
    fds[i] = th_connect(srv->port);
    ck_assert_int_ge(fds[i], 0);
    ck_assert(th_echo_roundtrip(fds[i], 1 + (size_t)i * 997, (uint32_t)i));
  }
  ck_assert_int_eq(th_ld(&th_connects), N);
  for (int i = 0; i < N; i++) {
    ck_assert(lb.idx[i] == 0 || lb.idx[i] == 1);
    per_loop[lb.idx[i]]++;
  }
  /* The kernel spreads connections by hash: with 64 of them both loops get
   * some (all on one would happen with probability 2^-63). */
  ck_assert_int_gt(per_loop[0], 0);
  ck_assert_int_gt(per_loop[1], 0);
  for (int i = 0; i < N; i++)
    close(fds[i]);
  ck_assert(th_wait_int(&th_closes, N, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

START_TEST(round_robin_rotation)
{
  enum { LOOPS = 3, N = 12 };
  gev_options opt = {.num_loops = LOOPS, .load_balance = GEV_LB_ROUND_ROBIN};
  th_server *srv;
  int fds[N];

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  for (int i = 0; i < N; i++) {
    fds[i] = th_connect(srv->port);
    ck_assert_int_ge(fds[i], 0);
    /* The echo proves on_connect ran before the next connection. */
    ck_assert(th_echo_roundtrip(fds[i], 10, (uint32_t)i));
    if (i == 4)
      close(fds[i]); /* closing does not disturb the rotation */
  }
  ck_assert_int_eq(lb.n, N);
  for (int i = 0; i < N; i++)
    ck_assert_msg(lb.idx[i] == (lb.idx[0] + i) % LOOPS,
                  "connection %d went to loop %d, want %d", i, lb.idx[i],
                  (lb.idx[0] + i) % LOOPS);
  for (int i = 0; i < N; i++)
    if (i != 4)
      close(fds[i]);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

typedef struct count_arg {
  gev_server *s;
  int want;
} count_arg;

static bool conn_count_is(void *arg)
{
  count_arg *a = arg;
  return gev_server_conn_count(a->s) == a->want;
}

/* Opens one connection, confirmed by an echo, and checks that it went to a
 * loop that had the fewest open connections just before. */
static int lc_open(th_server *srv, int *loop_out)
{
  int before[16], fd, min = 1 << 30, n;

  pthread_mutex_lock(&lb.mu);
  memcpy(before, lb.open, sizeof(before));
  n = lb.n;
  pthread_mutex_unlock(&lb.mu);
  for (int i = 0; i < gev_server_num_loops(srv->s); i++)
    if (before[i] < min)
      min = before[i];
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 10, 9));
  ck_assert_int_eq(lb.n, n + 1);
  *loop_out = lb.idx[n];
  ck_assert_msg(before[*loop_out] == min,
                "new connection went to loop %d with %d open; fewest was %d",
                *loop_out, before[*loop_out], min);
  return fd;
}

/* on_close has run and the slot is free (the count drops right after). */
static void wait_conn_count(th_server *srv, int want)
{
  count_arg a = {srv->s, want};
  ck_assert_msg(th_wait_until(conn_count_is, &a, 10000),
                "open connections: %d, want %d", gev_server_conn_count(srv->s),
                want);
}

START_TEST(least_connections_picks_fewest)
{
  gev_options opt = {.num_loops = 2, .load_balance = GEV_LB_LEAST_CONNECTIONS};
  int fds[8], loops[8], on0[8], n0 = 0, other = -1;
  th_server *srv;

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  /* Four connections: two per loop. */
  for (int i = 0; i < 4; i++)
    fds[i] = lc_open(srv, &loops[i]);
  pthread_mutex_lock(&lb.mu);
  ck_assert_int_eq(lb.open[0], 2);
  ck_assert_int_eq(lb.open[1], 2);
  pthread_mutex_unlock(&lb.mu);
  /* Close both of loop 0's: 0 versus 2. */
  for (int i = 0; i < 4; i++) {
    if (loops[i] == 0) {
      on0[n0++] = i;
      close(fds[i]);
    }
  }
  ck_assert_int_eq(n0, 2);
  wait_conn_count(srv, 2);
  /* The next two must both go to loop 0 (round-robin would alternate). */
  fds[4] = lc_open(srv, &loops[4]);
  fds[5] = lc_open(srv, &loops[5]);
  ck_assert_int_eq(loops[4], 0);
  ck_assert_int_eq(loops[5], 0);
  /* 2 versus 2: close one on loop 1, and the next goes there. */
  for (int i = 0; i < 4; i++)
    if (loops[i] == 1 && other < 0)
      other = i;
  close(fds[other]);
  wait_conn_count(srv, 3);
  fds[6] = lc_open(srv, &loops[6]);
  ck_assert_int_eq(loops[6], 1);
  for (int i = 0; i < 7; i++)
    if (i != other && i != on0[0] && i != on0[1])
      close(fds[i]);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_connects), th_ld(&th_closes));
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

START_TEST(max_connections_refuses)
{
  gev_options opt = {.num_loops = 2, .max_connections = 3};
  int fds[3], extra, again;
  th_server *srv;

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  for (int i = 0; i < 3; i++) {
    fds[i] = th_connect(srv->port);
    ck_assert_int_ge(fds[i], 0);
    ck_assert(th_echo_roundtrip(fds[i], 100, (uint32_t)i));
  }
  /* Past the limit: accepted and closed at once, no callbacks. */
  extra = th_connect(srv->port);
  ck_assert_int_ge(extra, 0);
  ck_assert_msg(th_wait_eof(extra, 10000), "refused connection not closed");
  close(extra);
  ck_assert_int_eq(th_ld(&th_connects), 3);
  ck_assert_int_eq(th_ld(&th_closes), 0);
  /* The others keep working. */
  for (int i = 0; i < 3; i++)
    ck_assert(th_echo_roundtrip(fds[i], 70000, (uint32_t)i + 10));
  /* A slot frees after on_close. */
  close(fds[0]);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  wait_conn_count(srv, 2);
  again = th_connect(srv->port);
  ck_assert_int_ge(again, 0);
  ck_assert(th_echo_roundtrip(again, 100, 20));
  ck_assert_int_eq(th_ld(&th_connects), 4);
  /* Full again. */
  extra = th_connect(srv->port);
  ck_assert_int_ge(extra, 0);
  ck_assert(th_wait_eof(extra, 10000));
  close(extra);
  ck_assert_int_eq(th_ld(&th_connects), 4);
  close(fds[1]);
  close(fds[2]);
  close(again);
  ck_assert(th_wait_int(&th_closes, 4, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_closes), 4);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* ---- 11. the acceptor loop, start and stop ------------------------------ */

static struct {
  gev_server *s;
  pthread_t start_tid;
  int task_ran, task_wrong_thread;
  int after_ran, every_runs, cancelled_ran;
  gev_timer_id every_id;
} ac;

static void ac_task(void *arg)
{
  (void)arg;
  if (!gev_loop_in_thread(gev_server_loop(ac.s)))
    th_inc(&ac.task_wrong_thread);
  th_inc(&ac.task_ran);
}

static void ac_after(void *arg)
{
  (void)arg;
  if (!gev_loop_in_thread(gev_server_loop(ac.s)))
    th_inc(&ac.task_wrong_thread);
  th_inc(&ac.after_ran);
}

static void ac_every(void *arg)
{
  (void)arg;
  if (__atomic_add_fetch(&ac.every_runs, 1, __ATOMIC_SEQ_CST) == 3 &&
      gev_server_cancel(ac.s, ac.every_id) != 0)
    th_inc(&ac.task_wrong_thread);
}

static void ac_never(void *arg)
{
  (void)arg;
  th_inc(&ac.cancelled_ran);
}

START_TEST(acceptor_tasks_before_start)
{
  gev_options opt = {.num_loops = 2, .address = "127.0.0.1:0"};
  gev_timer_id cancelled;
  runner r;

  memset(&ac, 0, sizeof(ac));
  th_reset_counters();
  ck_assert_int_eq(gev_server_new(&ac.s, &echo_handler, &opt), 0);
  ck_assert_ptr_nonnull(gev_server_loop(ac.s));
  ck_assert_int_eq(gev_loop_post(gev_server_loop(ac.s), ac_task, NULL), 0);
  ck_assert_uint_ne(gev_server_run_after(ac.s, 1, ac_after, NULL), 0);
  ck_assert_uint_ne(
      gev_loop_run_after(gev_server_loop(ac.s), 0, ac_after, NULL), 0);
  ac.every_id = gev_server_run_every(ac.s, 2, ac_every, NULL);
  ck_assert_uint_ne(ac.every_id, 0);
  cancelled = gev_server_run_after(ac.s, 1, ac_never, NULL);
  ck_assert_uint_ne(cancelled, 0);
  ck_assert_int_eq(gev_server_cancel(ac.s, cancelled), 0);
  ck_assert_int_eq(gev_server_cancel(ac.s, cancelled), -ENOENT);
  usleep(20000); /* nothing runs before start */
  ck_assert_int_eq(th_ld(&ac.task_ran), 0);
  ck_assert_int_eq(th_ld(&ac.after_ran), 0);

  runner_start(&r, ac.s);
  ck_assert(th_wait_int(&ac.task_ran, 1, 10000));
  ck_assert(th_wait_int(&ac.after_ran, 2, 10000));
  ck_assert(th_wait_int(&ac.every_runs, 3, 10000));
  gev_server_stop(ac.s);
  runner_join(&r);
  ck_assert_int_eq(th_ld(&ac.task_ran), 1);
  ck_assert_int_eq(th_ld(&ac.after_ran), 2);
  ck_assert_int_eq(th_ld(&ac.every_runs), 3); /* cancelled in its 3rd run */
  ck_assert_int_eq(th_ld(&ac.cancelled_ran), 0);
  ck_assert_int_eq(th_ld(&ac.task_wrong_thread), 0);
  gev_server_free(ac.s);
}
END_TEST

static void must_not_run(void *arg)
{
  th_inc((int *)arg);
}

/* An echo server with 2 worker loops running on a runner thread, with one
 * client that has made a round trip through it; returns the client's fd. */
static int running_echo(gev_server **s, runner *r)
{
  gev_options opt = {.num_loops = 2, .address = "127.0.0.1:0"};
  int fd;

  th_reset_counters();
  lb_reset();
  ck_assert_int_eq(gev_server_new(s, &echo_handler, &opt), 0);
  runner_start(r, *s);
  fd = th_connect(gev_server_port(*s));
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 10, 1));
  return fd;
}

START_TEST(post_after_stop_fails_cleanly)
{
  gev_server *s;
  int ran = 0, fd;
  runner r;

  fd = running_echo(&s, &r);
  gev_server_stop(s);
  runner_join(&r);
  /* Stopped, not freed: every loop refuses work, nothing crashes. */
  ck_assert_int_lt(gev_loop_post(gev_server_loop(s), must_not_run, &ran), 0);
  for (int i = 0; i < 2; i++)
    ck_assert_int_lt(
        gev_loop_post(gev_server_worker_loop(s, i), must_not_run, &ran), 0);
  ck_assert_uint_eq(gev_server_run_after(s, 0, must_not_run, &ran), 0);
  ck_assert_uint_eq(gev_server_run_every(s, 1, must_not_run, &ran), 0);
  ck_assert_uint_eq(
      gev_loop_run_after(gev_server_worker_loop(s, 0), 0, must_not_run, &ran),
      0);
  ck_assert_int_eq(gev_server_cancel(s, 12345), -ENOENT);
  ck_assert_int_eq(gev_server_start(s), -EALREADY);
  gev_server_stop(s); /* harmless after start returned */
  ck_assert_int_eq(gev_server_conn_count(s), 0);
  ck_assert(th_wait_eof(fd, 5000));
  close(fd);
  gev_server_free(s);
  ck_assert_int_eq(ran, 0);
  ck_assert_int_eq(th_ld(&th_connects), 1);
  ck_assert_int_eq(th_ld(&th_closes), 1);
}
END_TEST

START_TEST(stop_before_start)
{
  gev_options opt = {.num_loops = 2, .address = "127.0.0.1:0"};
  int fd0 = th_count_fds(), th0 = thread_baseline();
  gev_server *s;
  runner r;

  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), 0);
  gev_server_stop(s);
  runner_start(&r, s);
  runner_join(&r); /* returns promptly: bounded by the join */
  gev_server_free(s);
  ck_assert_int_eq(th_count_fds(), fd0);
  assert_threads_back(th0);

  /* Freed without ever starting: nothing left either. */
  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), 0);
  ck_assert_int_eq(gev_loop_post(gev_server_loop(s), must_not_run, NULL), 0);
  gev_server_free(s); /* the queued task is dropped unrun */
  ck_assert_int_eq(th_count_fds(), fd0);
  assert_threads_back(th0);
}
END_TEST

START_TEST(stop_twice_is_harmless)
{
  int fd0 = th_count_fds(), th0 = thread_baseline(), fd;
  gev_server *s;
  runner r;

  int p[2];

  fd = running_echo(&s, &r);
  gev_server_stop(s);
  gev_server_stop(s);
  runner_join(&r);
  gev_server_stop(s);
  /* Opened after the server closed its sockets, so they likely get those
   * numbers: gev_server_free must not close them a second time. */
  ck_assert_int_eq(pipe(p), 0);
  gev_server_free(s);
  ck_assert_msg(fcntl(p[0], F_GETFD) >= 0 && fcntl(p[1], F_GETFD) >= 0,
                "gev_server_free closed an fd it had closed already");
  close(p[0]);
  close(p[1]);
  close(fd);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  ck_assert_int_eq(th_count_fds(), fd0);
  assert_threads_back(th0);
}
END_TEST

static gev_server *sig_server;

static void on_sigusr1(int sig)
{
  (void)sig;
  gev_server_stop(sig_server);
}

START_TEST(stop_from_signal_handler)
{
  gev_options opt = {.num_loops = 2, .address = "127.0.0.1:0"};
  struct sigaction sa = {.sa_handler = on_sigusr1}, old;
  runner r;
  int fd;

  th_reset_counters();
  lb_reset();
  ck_assert_int_eq(gev_server_new(&sig_server, &echo_handler, &opt), 0);
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, &old), 0);
  runner_start(&r, sig_server);
  fd = th_connect(gev_server_port(sig_server));
  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 10, 1));
  /* Delivered to the thread running the acceptor loop. */
  ck_assert_int_eq(pthread_kill(r.thread, SIGUSR1), 0);
  runner_join(&r);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  gev_server_free(sig_server);
  close(fd);
  sigaction(SIGUSR1, &old, NULL);
}
END_TEST

/* ---- the idle timeout ------------------------------------------------------
 */

START_TEST(idle_connections_closed)
{
  enum { N = 5 };
  /* 1.5 s: each connection waits unused through up to 8 round trips of
   * the others, and a stall of the test or the loop (a loaded machine)
   * must not make that look like idleness. */
  gev_options opt = {.num_loops = 2, .idle_timeout_ms = 1500};
  th_server *srv;
  int fds[N];

  th_reset_counters();
  lb_reset();
  srv = th_start(&echo_handler, &opt);
  for (int i = 0; i < N; i++) {
    fds[i] = th_connect(srv->port);
    ck_assert_int_ge(fds[i], 0);
  }
  /* Activity in shifting order reorders the loops' idle lists. */
  for (int round = 0; round < 3; round++)
    for (int i = 0; i < N; i++)
      ck_assert(th_echo_roundtrip(fds[(i * 3 + round) % N], 10, (uint32_t)i));
  /* One connection stays busy for twice the timeout: activity keeps it
   * open while the others go idle and close. */
  for (uint64_t end = th_now_ms() + 3000; th_now_ms() < end;) {
    ck_assert_msg(th_echo_roundtrip(fds[0], 10, 99),
                  "a connection in use was closed as idle");
    usleep(100 * 1000);
  }
  for (int i = 1; i < N; i++) {
    ck_assert_msg(th_wait_eof(fds[i], 10000), "connection %d not closed", i);
    close(fds[i]);
    fds[i] = -1;
  }
  ck_assert_int_eq(th_ld(&th_closes), N - 1);
  /* Then silence: every connection is closed by the server. */
  for (int i = 0; i < N; i++) {
    if (fds[i] < 0)
      continue;
    ck_assert_msg(th_wait_eof(fds[i], 10000), "connection %d not closed", i);
    close(fds[i]);
  }
  ck_assert(th_wait_int(&th_closes, N, 10000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_connects), N);
  ck_assert_int_eq(th_ld(&th_closes), N);
}
END_TEST

START_TEST(accessors)
{
  int marker;
  gev_options opt = {
      .num_loops = 3, .address = "127.0.0.1:0", .user_data = &marker};
  gev_server *s;

  ck_assert_int_eq(gev_server_new(&s, &echo_handler, &opt), 0);
  ck_assert_ptr_eq(gev_server_user_data(s), &marker);
  ck_assert_int_eq(gev_server_num_loops(s), 3);
  for (int i = 0; i < 3; i++) {
    ck_assert_ptr_nonnull(gev_server_worker_loop(s, i));
    ck_assert_ptr_ne(gev_server_worker_loop(s, i), gev_server_loop(s));
    ck_assert(!gev_loop_in_thread(gev_server_worker_loop(s, i)));
  }
  ck_assert_ptr_null(gev_server_worker_loop(s, 3));
  ck_assert_ptr_null(gev_server_worker_loop(s, -1));
  ck_assert_int_eq(gev_server_conn_count(s), 0);
  gev_server_free(s);
}
END_TEST

/* Regression (CI, session 2): a connection was counted out only after its
 * on_close returned, so a test that saw every on_close could still read a
 * count of 1. Now it leaves the count before on_close runs. */
static int count_in_close = -1;

static void record_count_on_close(gev_conn *c)
{
  th_st(&count_in_close, gev_server_conn_count(gev_conn_server(c)));
  th_count_close(c);
}

START_TEST(count_excludes_connection_in_on_close)
{
  const gev_handler h = {.on_connect = th_count_connect,
                         .on_message = th_echo_msg,
                         .on_close = record_count_on_close};
  gev_options opt = {.num_loops = 1};
  th_server *t;
  int fd;

  th_reset_counters();
  t = th_start(&h, &opt);
  fd = th_connect(t->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 10000));
  ck_assert_int_eq(gev_server_conn_count(t->s), 1);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  ck_assert_int_eq(th_ld(&count_in_close), 0);
  ck_assert_int_eq(gev_server_conn_count(t->s), 0);
  th_stop(t);
}
END_TEST

/* ---- the suite -------------------------------------------------------------
 */

static Suite *server_suite(void)
{
  const th_case cases[] = {
      {"stop_with_many_connections", stop_with_many_connections, 60},
      {"unix_socket_echo", unix_socket_echo, 60},
      {"unix_socket_stale_file", unix_socket_stale_file, 60},
      {"unix_abstract_socket", unix_abstract_socket, 60},
      {"ipv6_echo", ipv6_echo, 60},
      {"ipv4_peer_addr", ipv4_peer_addr, 60},
      {"bad_addresses", bad_addresses, 60},
      {"address_in_use", address_in_use, 60},
      {"rebind_after_free", rebind_after_free, 60},
      {"port_zero_picks_a_port", port_zero_picks_a_port, 60},
      {"reuse_port_echo", reuse_port_echo, 60},
      {"round_robin_rotation", round_robin_rotation, 60},
      {"least_connections_picks_fewest", least_connections_picks_fewest, 60},
      {"max_connections_refuses", max_connections_refuses, 60},
      {"acceptor_tasks_before_start", acceptor_tasks_before_start, 60},
      {"post_after_stop_fails_cleanly", post_after_stop_fails_cleanly, 60},
      {"stop_before_start", stop_before_start, 60},
      {"stop_twice_is_harmless", stop_twice_is_harmless, 60},
      {"stop_from_signal_handler", stop_from_signal_handler, 60},
      {"idle_connections_closed", idle_connections_closed, 60},
      {"accessors", accessors, 60},
      {"count_excludes_connection_in_on_close",
       count_excludes_connection_in_on_close, 60},
  };

  return th_suite("server", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(server_suite());
}
