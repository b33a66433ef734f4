/*
 * test-listen.c - a server's listeners: several addresses mixed (IPv4,
 * IPv6, dual stack, unix paths and abstract names), with and without
 * reuse_port; binding all or nothing; adopting inherited sockets (fd:N,
 * and fd:NAME through systemd's LISTEN_FDS protocol); the bad inputs; and
 * a restart that hands the listening socket to a new process (fork and
 * exec of this binary) without dropping a connection.
 *
 * Every wait is bounded. Globals are reset at the start of each test so the
 * suite also runs with CK_FORK=no (valgrind).
 */
#include "helpers.h"
#include "server-internal.h" /* the listeners behind the addresses */

#include <gev/transport.h>

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---- scaffolding ------------------------------------------------------- */

/* What on_connect saw, per connection in order. */
#define SEEN_MAX 64
static struct {
  pthread_mutex_t mu;
  int n;
  int listener[SEEN_MAX];
  int loop[SEEN_MAX];
  char local[SEEN_MAX][GEV__ADDR_STRLEN];
} seen = {.mu = PTHREAD_MUTEX_INITIALIZER};

static void seen_reset(void)
{
  pthread_mutex_lock(&seen.mu);
  seen.n = 0;
  pthread_mutex_unlock(&seen.mu);
  th_reset_counters();
}

static int loop_index(gev_conn *c)
{
  gev_server *s = gev_conn_server(c);

  for (int i = 0; i < gev_server_num_loops(s); i++)
    if (gev_server_worker_loop(s, i) == gev_conn_loop(c))
      return i;
  return -1;
}

static void note_connect(gev_conn *c)
{
  pthread_mutex_lock(&seen.mu);
  if (seen.n < SEEN_MAX) {
    seen.listener[seen.n] = gev_conn_listener(c);
    seen.loop[seen.n] = loop_index(c);
    snprintf(seen.local[seen.n], sizeof(seen.local[0]), "%s",
             gev_conn_local_addr(c));
    seen.n++;
  }
  pthread_mutex_unlock(&seen.mu);
  th_count_connect(c);
}

static const gev_handler seen_handler = {.on_connect = note_connect,
                                         .on_message = th_echo_msg,
                                         .on_close = th_count_close};

/* The last connection's record, once it is in. */
static int last_listener(char *local, size_t n)
{
  int r;

  pthread_mutex_lock(&seen.mu);
  ck_assert_int_gt(seen.n, 0);
  r = seen.listener[seen.n - 1];
  snprintf(local, n, "%s", seen.local[seen.n - 1]);
  pthread_mutex_unlock(&seen.mu);
  return r;
}

/* A fresh directory for unix socket files, removed by the test. */
static void scratch_dir(char *dir, size_t n)
{
  snprintf(dir, n, "/tmp/gev-listen-XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(dir));
}

/* Connects to addr, checks one round trip and which listener took it. */
static void expect_served(const char *addr, int want_listener,
                          const char *want_local)
{
  char local[GEV__ADDR_STRLEN];
  int before = th_ld(&th_connects), fd = th_connect_addr(addr);

  ck_assert_msg(fd >= 0, "connect %s: %s", addr, strerror(errno));
  ck_assert_msg(th_echo_roundtrip(fd, 3000, (uint32_t)want_listener),
                "no echo through %s", addr);
  ck_assert(th_wait_int(&th_connects, before + 1, 5000));
  ck_assert_int_eq(last_listener(local, sizeof(local)), want_listener);
  if (want_local)
    ck_assert_str_eq(local, want_local);
  close(fd);
}

static bool path_exists(const char *p)
{
  struct stat st;
  return stat(p, &st) == 0;
}

/* A TCP socket on 127.0.0.1, listening (or not), for fd: tests. */
static int tcp_socket(bool listening, int backlog, int *port)
{
  struct sockaddr_in sin = {.sin_family = AF_INET};
  socklen_t len = sizeof(sin);
  int fd = socket(AF_INET, SOCK_STREAM, 0);

  ck_assert_int_ge(fd, 0);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
  if (listening)
    ck_assert_int_eq(listen(fd, backlog), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
  if (port)
    *port = ntohs(sin.sin_port);
  return fd;
}

static int new_server(const char *const *addresses, gev_server **s)
{
  gev_options opt = {.num_loops = 1, .addresses = addresses};
  *s = (gev_server *)1;
  return gev_server_new(s, &seen_handler, &opt);
}

/* ---- several addresses ------------------------------------------------- */

START_TEST(mixed_addresses)
{
  char dir[64], path[96], unix_addr[128], abstract[64], addr[160], want[160];
  const char *addrs[5];
  gev_options opt = {.num_loops = 2};
  th_server *srv;
  int p4, p6;

  seen_reset();
  scratch_dir(dir, sizeof(dir));
  snprintf(path, sizeof(path), "%s/s", dir);
  snprintf(unix_addr, sizeof(unix_addr), "unix:%s", path);
  snprintf(abstract, sizeof(abstract), "unix:@gev-test-listen-%d", getpid());
  addrs[0] = "127.0.0.1:0";
  addrs[1] = "[::1]:0";
  addrs[2] = unix_addr;
  addrs[3] = abstract;
  addrs[4] = NULL;
  opt.addresses = addrs;
  opt.address = "127.0.0.2:1"; /* ignored: addresses wins */
  srv = th_start(&seen_handler, &opt);
  ck_assert_int_eq(gev_server_num_listeners(srv->s), 4);
  p4 = gev_server_listener_port(srv->s, 0);
  p6 = gev_server_listener_port(srv->s, 1);
  ck_assert_int_gt(p4, 0);
  ck_assert_int_gt(p6, 0);
  ck_assert_int_eq(gev_server_port(srv->s), p4);
  ck_assert_int_eq(gev_server_listener_port(srv->s, 2), 0);
  ck_assert_int_eq(gev_server_listener_port(srv->s, 3), 0);
  ck_assert_int_eq(gev_server_listener_port(srv->s, 4), -EINVAL);
  ck_assert_int_eq(gev_server_listener_port(srv->s, -1), -EINVAL);
  ck_assert_int_eq(gev_server_listener_port(NULL, 0), -EINVAL);
  ck_assert_int_eq(gev_server_num_listeners(NULL), 0);
  /* One acceptor listener per address, none on the workers. */
  ck_assert_int_eq(srv->s->nls, 4);
  for (int i = 0; i < 4; i++)
    ck_assert_ptr_eq(srv->s->ls[i].loop, gev_server_loop(srv->s));

  for (int round = 0; round < 2; round++) { /* both workers get some */
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", p4);
    expect_served(addr, 0, addr);
    snprintf(addr, sizeof(addr), "[::1]:%d", p6);
    expect_served(addr, 1, addr);
    expect_served(unix_addr, 2, path);
    snprintf(want, sizeof(want), "%s", abstract + 5);
    expect_served(abstract, 3, want);
  }
  pthread_mutex_lock(&seen.mu);
  ck_assert_int_eq(seen.n, 8);
  for (int i = 0; i < 8; i++) /* round-robin over one set of loops */
    ck_assert_int_eq(seen.loop[i], i % 2);
  pthread_mutex_unlock(&seen.mu);
  th_stop(srv);
  ck_assert(!path_exists(path)); /* the file the server created is gone */
  ck_assert_int_eq(rmdir(dir), 0);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

/* "[::]" takes IPv4 connections too (as v4-mapped addresses). */
START_TEST(dual_stack)
{
  const char *addrs[] = {"[::]:0", NULL};
  gev_options opt = {.num_loops = 1, .addresses = addrs};
  char addr[64], want[64];
  th_server *srv;
  int port;

  seen_reset();
  srv = th_start(&seen_handler, &opt);
  port = gev_server_listener_port(srv->s, 0);
  ck_assert_int_gt(port, 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  snprintf(want, sizeof(want), "[::ffff:127.0.0.1]:%d", port);
  expect_served(addr, 0, want);
  snprintf(addr, sizeof(addr), "[::1]:%d", port);
  expect_served(addr, 0, addr);
  th_stop(srv);
}
END_TEST

/* reuse_port: each worker loop has its own listener for every TCP address
 * and keeps what it accepts; the unix address goes through the acceptor. */
START_TEST(reuse_port_several_addresses)
{
  enum { N = 48 };
  char dir[64], unix_addr[128], addr[64];
  const char *addrs[4];
  gev_options opt = {.num_loops = 2, .reuse_port = true};
  int per[2][2] = {{0, 0}, {0, 0}}, port[2];
  th_server *srv;

  seen_reset();
  scratch_dir(dir, sizeof(dir));
  snprintf(unix_addr, sizeof(unix_addr), "unix:%s/s", dir);
  addrs[0] = "127.0.0.1:0";
  addrs[1] = "[::1]:0";
  addrs[2] = unix_addr;
  addrs[3] = NULL;
  opt.addresses = addrs;
  srv = th_start(&seen_handler, &opt);
  ck_assert_int_eq(srv->s->nls, 2 + 2 + 1);
  for (int k = 0; k < srv->s->nls; k++) {
    gev__listener *ls = &srv->s->ls[k];
    if (ls->index == 2) {
      ck_assert_ptr_eq(ls->loop, gev_server_loop(srv->s));
      continue;
    }
    ck_assert(ls->loop == srv->s->workers[0].loop ||
              ls->loop == srv->s->workers[1].loop);
    ck_assert_int_eq(gev__addr_local_port(ls->io.fd),
                     gev_server_listener_port(srv->s, ls->index));
  }
  port[0] = gev_server_listener_port(srv->s, 0);
  port[1] = gev_server_listener_port(srv->s, 1);
  ck_assert_int_eq(gev_server_listener_fd(srv->s, 0), -EOPNOTSUPP);
  for (int i = 0; i < N; i++) {
    int a = i % 2;
    if (a == 0)
      snprintf(addr, sizeof(addr), "127.0.0.1:%d", port[0]);
    else
      snprintf(addr, sizeof(addr), "[::1]:%d", port[1]);
    expect_served(addr, a, NULL);
  }
  expect_served(unix_addr, 2, NULL);
  pthread_mutex_lock(&seen.mu);
  for (int i = 0; i < N; i++)
    per[seen.listener[i]][seen.loop[i]]++;
  pthread_mutex_unlock(&seen.mu);
  /* The kernel spreads by hash: 24 connections per address all on one of
   * two loops has probability 2^-23. */
  for (int a = 0; a < 2; a++)
    for (int l = 0; l < 2; l++)
      ck_assert_msg(per[a][l] > 0, "address %d never reached loop %d", a, l);
  th_stop(srv);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* The third of three addresses is taken: gev_server_new fails and the
 * first two are free again (bound anew by plain sockets: a listening
 * socket would refuse that even with SO_REUSEADDR), the unix file it
 * created is gone, and no fd is left open. With and without reuse_port. */
static void bind_conflict_on_third(bool reuse_port)
{
  char dir[64], path[96], unix_addr[128], a0[64], a2[64];
  const char *addrs[4];
  gev_options opt = {.num_loops = 2, .reuse_port = reuse_port};
  int busy_port, busy = th_listen_plain(4, &busy_port), p0, fds, again;
  gev_server *s = (gev_server *)1;

  scratch_dir(dir, sizeof(dir));
  snprintf(path, sizeof(path), "%s/s", dir);
  snprintf(unix_addr, sizeof(unix_addr), "unix:%s", path);
  p0 = th_free_port();
  snprintf(a0, sizeof(a0), "127.0.0.1:%d", p0);
  snprintf(a2, sizeof(a2), "127.0.0.1:%d", busy_port);
  addrs[0] = a0;
  addrs[1] = unix_addr;
  addrs[2] = a2;
  addrs[3] = NULL;
  opt.addresses = addrs;
  fds = th_count_fds();
  ck_assert_int_eq(gev_server_new(&s, &seen_handler, &opt), -EADDRINUSE);
  ck_assert_ptr_null(s);
  ck_assert_int_eq(th_count_fds(), fds);
  ck_assert(!path_exists(path));
  again = th_listen_port(p0, 4);
  ck_assert_msg(again >= 0, "port %d still bound", p0);
  close(again);
  /* And the same addresses bind once the third is free. */
  close(busy);
  ck_assert_int_eq(gev_server_new(&s, &seen_handler, &opt), 0);
  ck_assert(path_exists(path));
  gev_server_free(s);
  ck_assert(!path_exists(path));
  ck_assert_int_eq(th_count_fds(), fds - 1); /* busy is closed */
  ck_assert_int_eq(rmdir(dir), 0);
}

START_TEST(bind_conflict_releases_all)
{
  bind_conflict_on_third(false);
}
END_TEST

START_TEST(bind_conflict_releases_all_reuse_port)
{
  bind_conflict_on_third(true);
}
END_TEST

/* ---- inherited sockets ------------------------------------------------- */

/* fd:N with a listening socket; the server owns it from then on. */
START_TEST(adopt_fd)
{
  char a[32], addr[64];
  const char *addrs[3] = {a, "127.0.0.1:0", NULL};
  gev_options opt = {.num_loops = 1, .addresses = addrs};
  int port, lfd = tcp_socket(true, 8, &port);
  th_server *srv;

  seen_reset();
  snprintf(a, sizeof(a), "fd:%d", lfd);
  ck_assert_int_eq(fcntl(lfd, F_GETFL) & O_NONBLOCK, 0);
  srv = th_start(&seen_handler, &opt);
  ck_assert_int_eq(gev_server_listener_port(srv->s, 0), port);
  ck_assert_int_eq(gev_server_listener_fd(srv->s, 0), lfd);
  ck_assert_int_ne(fcntl(lfd, F_GETFL) & O_NONBLOCK, 0);
  ck_assert_int_ne(fcntl(lfd, F_GETFD) & FD_CLOEXEC, 0);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  expect_served(addr, 0, addr);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d",
           gev_server_listener_port(srv->s, 1));
  expect_served(addr, 1, addr);
  th_stop(srv);
  ck_assert_int_lt(fcntl(lfd, F_GETFD), 0); /* closed with the server */
}
END_TEST

/* A unix listener whose fd was given out (to a successor) keeps its
 * file at free: the other process serves that path now. */
START_TEST(listener_fd_keeps_unix_path)
{
  char dir[64], path[96], addr[128];
  const char *addrs[2] = {addr, NULL};
  gev_server *s;

  scratch_dir(dir, sizeof(dir));
  snprintf(path, sizeof(path), "%s/s", dir);
  snprintf(addr, sizeof(addr), "unix:%s", path);
  ck_assert_int_eq(new_server(addrs, &s), 0);
  gev_server_free(s);
  ck_assert(!path_exists(path)); /* removed as usual */
  ck_assert_int_eq(new_server(addrs, &s), 0);
  ck_assert_int_ge(gev_server_listener_fd(s, 0), 0);
  ck_assert_int_eq(gev_server_listener_fd(s, 1), -EINVAL);
  ck_assert_int_eq(gev_server_listener_fd(s, -1), -EINVAL);
  gev_server_free(s);
  ck_assert(path_exists(path)); /* handed on: kept */
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* A failed gev_server_new hands an adopted fd back as it came: open,
 * listening, blocking, registered nowhere. */
START_TEST(adopt_fd_survives_failure)
{
  char a[32], busy_addr[64];
  const char *addrs[3] = {a, busy_addr, NULL};
  int port, lfd = tcp_socket(true, 8, &port), busy_port,
            busy = th_listen_plain(4, &busy_port), c, s;
  gev_server *srv;

  snprintf(a, sizeof(a), "fd:%d", lfd);
  snprintf(busy_addr, sizeof(busy_addr), "127.0.0.1:%d", busy_port);
  ck_assert_int_eq(new_server(addrs, &srv), -EADDRINUSE);
  ck_assert_int_eq(fcntl(lfd, F_GETFL) & O_NONBLOCK, 0);
  ck_assert_int_eq(fcntl(lfd, F_GETFD) & FD_CLOEXEC, 0);
  c = th_connect(port);
  ck_assert_int_ge(c, 0);
  s = th_accept(lfd); /* still a working listener */
  ck_assert(th_write_all(c, "x", 1));
  ck_assert(th_read_exact(s, a, 1));
  close(s);
  close(c);
  close(lfd);
  close(busy);
}
END_TEST

/* fd:NAME in a child process (it moves fds 3 and 4): systemd's variables
 * name them; LISTEN_PID of another process hides them. Exit status 0 when
 * every check passed, else the number of the failed one. */
static int fdname_child(int s3, int s4, int port3, int port4)
{
  const char *both[] = {"fd:api", "fd:web", NULL}, *none[] = {"fd:x", NULL};
  const char *web[] = {"fd:web", NULL};
  gev_server *s;
  char pid[32];

  if (dup2(s3, 3) != 3 || dup2(s4, 4) != 4)
    return 1;
  snprintf(pid, sizeof(pid), "%d", getpid());
  setenv("LISTEN_FDS", "2", 1);
  setenv("LISTEN_FDNAMES", "web:api", 1);
  setenv("LISTEN_PID", "1", 1); /* not ours */
  if (new_server(web, &s) != -ENOENT)
    return 2;
  setenv("LISTEN_PID", pid, 1);
  if (new_server(none, &s) != -ENOENT)
    return 3;
  if (new_server(both, &s) != 0)
    return 4;
  if (gev_server_listener_port(s, 0) != port4 ||
      gev_server_listener_port(s, 1) != port3)
    return 5;
  gev_server_free(s);
  if (fcntl(3, F_GETFD) >= 0 || fcntl(4, F_GETFD) >= 0)
    return 6;                   /* the server owned them */
  setenv("LISTEN_FDS", "1", 1); /* "api" is fd 4: beyond the count */
  if (dup2(s4, 4) != 4 || new_server(both, &s) != -ENOENT)
    return 7;
  unsetenv("LISTEN_FDS");
  if (new_server(web, &s) != -ENOENT)
    return 8;
  return 0;
}

START_TEST(adopt_fd_by_name)
{
  int p3, p4, s3 = tcp_socket(true, 4, &p3), s4 = tcp_socket(true, 4, &p4);
  int st = -1;
  pid_t pid = fork();

  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(fdname_child(s3, s4, p3, p4));
  for (int i = 0; i < 1000 && waitpid(pid, &st, WNOHANG) == 0; i++)
    usleep(10000);
  if (st == -1)
    kill(pid, SIGKILL);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child: check %d failed",
                WEXITSTATUS(st));
  close(s3);
  close(s4);
}
END_TEST

/* ---- bad inputs -------------------------------------------------------- */

START_TEST(bad_inputs)
{
  static const char *const bad_schemes[] = {
      "tcp://127.0.0.1:0", "udp:127.0.0.1:0", "http://[::1]:80", "fd:",
      "sctp:80x",
  };
  gev_options opt = {.num_loops = 1};
  const char *empty[] = {NULL};
  const char *two[3] = {"127.0.0.1:0", NULL, NULL};
  char a[32];
  int port, fd, fds = th_count_fds();
  gev_server *s;

  for (size_t i = 0; i < sizeof(bad_schemes) / sizeof(bad_schemes[0]); i++) {
    two[1] = bad_schemes[i];
    int r = new_server(two, &s);
    ck_assert_msg(r == -EINVAL, "\"%s\": %s, want -EINVAL", bad_schemes[i],
                  gev_strerror(r));
    ck_assert_ptr_null(s);
  }
  ck_assert_int_eq(new_server(empty, &s), -EINVAL);
  /* A name, not a number, and systemd passed nothing here. */
  ck_assert_int_eq(new_server((const char *[]){"fd:-1", NULL}, &s), -ENOENT);

  /* fd: of a closed fd, a file, a socket not listening, a datagram
   * socket, a socket named twice. */
  fd = open("/dev/null", O_RDONLY);
  close(fd);
  snprintf(a, sizeof(a), "fd:%d", fd);
  two[1] = a;
  ck_assert_int_eq(new_server(two, &s), -EBADF);
  ck_assert_int_eq(new_server((const char *[]){"fd:99999999999", NULL}, &s),
                   -EBADF);
  fd = open("/dev/null", O_RDONLY);
  snprintf(a, sizeof(a), "fd:%d", fd);
  ck_assert_int_eq(new_server(two, &s), -ENOTSOCK);
  close(fd);
  fd = tcp_socket(false, 0, &port);
  snprintf(a, sizeof(a), "fd:%d", fd);
  ck_assert_int_eq(new_server(two, &s), -EINVAL);
  close(fd);
  fd = socket(AF_INET, SOCK_DGRAM, 0);
  snprintf(a, sizeof(a), "fd:%d", fd);
  ck_assert_int_eq(new_server(two, &s), -ESOCKTNOSUPPORT);
  close(fd);
  fd = tcp_socket(true, 4, &port);
  snprintf(a, sizeof(a), "fd:%d", fd);
  ck_assert_int_eq(new_server((const char *[]){a, a, NULL}, &s), -EINVAL);
  ck_assert_int_eq(fcntl(fd, F_GETFL) & O_NONBLOCK, 0); /* untouched */
  close(fd);
  two[1] = NULL;

  /* Negative options. */
  opt.address = "127.0.0.1:0";
  opt.keepalive_s = -1;
  ck_assert_int_eq(gev_server_new(&s, &seen_handler, &opt), -EINVAL);
  opt.keepalive_s = 0;
  opt.rcvbuf = -1;
  ck_assert_int_eq(gev_server_new(&s, &seen_handler, &opt), -EINVAL);
  opt.rcvbuf = 0;
  opt.sndbuf = -4096;
  ck_assert_int_eq(gev_server_new(&s, &seen_handler, &opt), -EINVAL);
  opt.sndbuf = 0;
  opt.backlog = -1;
  ck_assert_int_eq(gev_server_new(&s, &seen_handler, &opt), -EINVAL);
  ck_assert_int_eq(gev_server_listener_fd(NULL, 0), -EINVAL);
  ck_assert_int_eq(th_count_fds(), fds);
}
END_TEST

/* ---- a transport per listener ------------------------------------------ */

/* A transport that only tags its connections (its state is its arg) and
 * moves the bytes as plaintext does. */
static int tag_open(gev_conn *c, void *arg, void **state)
{
  (void)c;
  *state = arg;
  return 0;
}

static ssize_t tag_read(void *st, int fd, ringbuffer *in)
{
  (void)st;
  return gev_transport_plain()->read(NULL, fd, in);
}

static ssize_t tag_write(void *st, int fd, ringbuffer *out)
{
  (void)st;
  return gev_transport_plain()->write(NULL, fd, out);
}

static ssize_t tag_send(void *st, int fd, const void *p, size_t n)
{
  (void)st;
  return gev_transport_plain()->send(NULL, fd, p, n);
}

static int tag_shutdown(void *st, int fd)
{
  (void)st;
  return gev_transport_plain()->shutdown(NULL, fd);
}

static const gev_transport tag_tp = {.open = tag_open,
                                     .read = tag_read,
                                     .write = tag_write,
                                     .send = tag_send,
                                     .shutdown = tag_shutdown};

static const gev_transport *tp_seen[3];
static void *tp_state_seen[3];

static void tp_connect(gev_conn *c)
{
  int i = gev_conn_listener(c);

  if (i >= 0 && i < 3) {
    tp_seen[i] = gev_conn_transport(c);
    tp_state_seen[i] = gev_conn_transport_state(c);
  }
  th_count_connect(c);
}

START_TEST(per_listener_transport)
{
  static int server_tag, own_tag;
  const char *addrs[] = {"127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", NULL};
  gev_listener_options lo[3] = {
      {0}, /* the server's */
      {.transport = &tag_tp, .transport_arg = &own_tag},
      {.transport = gev_transport_plain()}};
  gev_handler h = {.on_connect = tp_connect,
                   .on_message = th_echo_msg,
                   .on_close = th_count_close};
  gev_options opt = {.num_loops = 1,
                     .addresses = addrs,
                     .transport = &tag_tp,
                     .transport_arg = &server_tag,
                     .listener_options = lo};
  th_server *srv;

  th_reset_counters();
  memset(tp_seen, 0, sizeof(tp_seen));
  srv = th_start(&h, &opt);
  memset(lo, 0xff, sizeof(lo)); /* copied by gev_server_new */
  for (int i = 0; i < 3; i++) {
    int fd = th_connect(gev_server_listener_port(srv->s, i));
    ck_assert_int_ge(fd, 0);
    ck_assert(th_echo_roundtrip(fd, 5000, (uint32_t)i));
    ck_assert(th_wait_int(&th_connects, i + 1, 5000));
    close(fd);
  }
  th_stop(srv);
  ck_assert_ptr_eq(tp_seen[0], &tag_tp);
  ck_assert_ptr_eq(tp_state_seen[0], &server_tag);
  ck_assert_ptr_eq(tp_seen[1], &tag_tp);
  ck_assert_ptr_eq(tp_state_seen[1], &own_tag);
  ck_assert_ptr_eq(tp_seen[2], gev_transport_plain());
}
END_TEST

/* ---- a restart through an inherited socket ----------------------------- */

/* The old server's handler as a real one would be: one line in, the same
 * line out; on shutdown a connection closes once its line is answered,
 * at once when it has been. (Without on_shutdown a connection accepted
 * but whose line has not arrived yet is idle, and closes: a drop no
 * socket hand-over could prevent.) */
typedef struct line_conn {
  int served;
  bool closing;
} line_conn;

static void line_connect(gev_conn *c)
{
  gev_conn_set_context(c, calloc(1, sizeof(line_conn)));
  gev_conn_set_context_free(c, free);
  th_count_connect(c);
}

static void line_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  line_conn *lc = gev_conn_context(c);
  ssize_t nl;

  while ((nl = ringbuffer_find(in, "\n", 1)) >= 0) {
    char *p = ringbuffer_linearize(in, (size_t)nl + 1);
    if (ringbuffer_write(out, p, (size_t)nl + 1) < 0) /* no ck_ here: */
      th_inc(&th_violations); /* it also runs in the exec'ed child */
    ringbuffer_retrieve(in, (size_t)nl + 1);
    lc->served++;
  }
  if (lc->closing && lc->served && ringbuffer_empty(in))
    gev_conn_close(c);
}

static void line_shutdown(gev_conn *c)
{
  line_conn *lc = gev_conn_context(c);

  lc->closing = true;
  if (lc->served)
    gev_conn_close(c);
}

static const gev_handler line_handler = {.on_connect = line_connect,
                                         .on_message = line_message,
                                         .on_close = th_count_close,
                                         .on_shutdown = line_shutdown};

/* The new process (this binary, exec'ed with "serve-fd ADDR"). */
static gev_server *child_server;

static void child_term(int sig)
{
  (void)sig;
  gev_server_shutdown(child_server, 5000);
}

static int serve_child(const char *address)
{
  gev_options opt = {.num_loops = 1, .address = address};
  struct sigaction sa = {.sa_handler = child_term};
  int r;

  if ((r = gev_server_new(&child_server, &line_handler, &opt)) < 0) {
    fprintf(stderr, "serve-fd %s: %s\n", address, gev_strerror(r));
    return 3;
  }
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, NULL);
  if (write(1, "ready\n", 6) != 6)
    return 4;
  r = gev_server_start(child_server);
  gev_server_free(child_server);
  return r < 0 ? 5 : 0;
}

/* A client that opens a connection, sends a line, reads it back and
 * closes, over and over, until told to stop. */
static struct {
  int port, ok, failed, phase, ok_in_phase[3], stop;
} rc;

static void *restart_client(void *arg)
{
  (void)arg;
  for (int i = 0; i < 100000 && !th_ld(&rc.stop); i++) {
    char line[32], back[32];
    int n = snprintf(line, sizeof(line), "line %d\n", i);
    int phase = th_ld(&rc.phase), fd = th_connect(rc.port);
    bool ok = fd >= 0 && th_write_all(fd, line, (size_t)n) &&
              th_read_exact(fd, back, (size_t)n) &&
              memcmp(line, back, (size_t)n) == 0;
    if (fd >= 0)
      close(fd);
    if (!ok) {
      th_inc(&rc.failed);
      continue;
    }
    th_inc(&rc.ok);
    th_inc(&rc.ok_in_phase[phase]);
  }
  return NULL;
}

static void *run_server(void *s)
{
  return (void *)(intptr_t)gev_server_start(s);
}

/* Starts this binary as the new server on fd 3; returns its pid after its
 * "ready" line. */
static pid_t spawn_child(int lfd)
{
  char self[PATH_MAX], ready[8] = {0};
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  struct pollfd p;
  int out[2];
  pid_t pid;

  ck_assert_int_gt(n, 0);
  self[n] = '\0';
  ck_assert_int_eq(pipe(out), 0);
  pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    /* dup2 leaves the copy without close-on-exec: it survives the exec. */
    if (dup2(lfd, 3) != 3 || dup2(out[1], 1) != 1)
      _exit(126);
    execl(self, self, "serve-fd", "fd:3", (char *)NULL);
    _exit(127);
  }
  close(out[1]);
  p = (struct pollfd){.fd = out[0], .events = POLLIN};
  ck_assert_msg(poll(&p, 1, 20000) == 1, "the new server never got ready");
  ck_assert_int_eq(read(out[0], ready, 6), 6);
  ck_assert_str_eq(ready, "ready\n");
  close(out[0]);
  return pid;
}

START_TEST(restart_through_inherited_fd)
{
  gev_options opt = {.num_loops = 1};
  pthread_t client, server;
  gev_server *s;
  void *res;
  int st = -1, lfd;
  pid_t pid;

  th_reset_counters();
  memset(&rc, 0, sizeof(rc));
  opt.address = "127.0.0.1:0";
  ck_assert_int_eq(gev_server_new(&s, &line_handler, &opt), 0);
  rc.port = gev_server_port(s);
  lfd = gev_server_listener_fd(s, 0);
  ck_assert_int_ge(lfd, 0);
  ck_assert_int_eq(pthread_create(&server, NULL, run_server, s), 0);
  ck_assert_int_eq(pthread_create(&client, NULL, restart_client, NULL), 0);
  ck_assert(th_wait_int(&rc.ok_in_phase[0], 20, 20000));

  /* Both serve the one queue, then the old one shuts down. */
  pid = spawn_child(lfd);
  th_st(&rc.phase, 1);
  ck_assert(th_wait_int(&rc.ok_in_phase[1], 20, 20000));
  ck_assert_int_eq(gev_server_shutdown(s, 10000), 0);
  res = th_join(server, 30);
  ck_assert_int_eq((int)(intptr_t)res, 0);
  gev_server_free(s);
  th_st(&rc.phase, 2);
  ck_assert(th_wait_int(&rc.ok_in_phase[2], 20, 20000));
  th_st(&rc.stop, 1);
  th_join(client, 30);

  ck_assert_int_eq(th_ld(&rc.failed), 0);
  ck_assert_int_gt(th_ld(&th_connects), 0); /* the old one served some */
  ck_assert_int_eq(kill(pid, SIGTERM), 0);
  for (int i = 0; i < 1000 && waitpid(pid, &st, WNOHANG) == 0; i++)
    usleep(10000);
  if (st == -1)
    kill(pid, SIGKILL);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "the new server exited with %d", st);
  ck_assert_int_eq(th_ld(&th_violations), 0);
}
END_TEST

int main(int argc, char **argv)
{
  const th_case cases[] = {
      {"mixed_addresses", mixed_addresses, 60},
      {"dual_stack", dual_stack, 30},
      {"reuse_port_several_addresses", reuse_port_several_addresses, 60},
      {"bind_conflict_releases_all", bind_conflict_releases_all, 30},
      {"bind_conflict_releases_all_reuse_port",
       bind_conflict_releases_all_reuse_port, 30},
      {"adopt_fd", adopt_fd, 30},
      {"adopt_fd_survives_failure", adopt_fd_survives_failure, 30},
      {"listener_fd_keeps_unix_path", listener_fd_keeps_unix_path, 30},
      {"adopt_fd_by_name", adopt_fd_by_name, 30},
      {"bad_inputs", bad_inputs, 30},
      {"per_listener_transport", per_listener_transport, 30},
      {"restart_through_inherited_fd", restart_through_inherited_fd, 120},
  };

  signal(SIGPIPE, SIG_IGN);
  if (argc == 3 && strcmp(argv[1], "serve-fd") == 0)
    return serve_child(argv[2]);
  return th_run(th_suite("listen", cases, sizeof(cases) / sizeof(cases[0])));
}
