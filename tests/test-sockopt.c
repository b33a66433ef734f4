/*
 * test-sockopt.c - socket options: keepalive_s, rcvbuf and sndbuf of a
 * server (on its listeners and accepted connections) and of outgoing
 * connections, TCP_NODELAY on by default, gev_conn_set_nodelay and
 * gev_conn_set_keepalive, and the backlog as `ss -ltn` reports it. Every
 * value is read back from the socket with getsockopt.
 *
 * Linux reports SO_RCVBUF and SO_SNDBUF as twice the value set (the
 * kernel's bookkeeping overhead, socket(7)); the sizes used here are below
 * the default rmem_max and wmem_max, so they are not capped.
 *
 * Every wait is bounded. Globals are reset at the start of each test so the
 * suite also runs with CK_FORK=no (valgrind).
 */
#include "helpers.h"
#include "server-internal.h" /* the listening sockets */

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define RCVBUF 32768
#define SNDBUF 49152

/* What getsockopt said of one connection's socket. */
typedef struct opts_seen {
  int nodelay, keepalive, idle, rcvbuf, sndbuf, family;
} opts_seen;

static int get(int fd, int level, int name)
{
  int v = -1;
  socklen_t len = sizeof(v);

  if (getsockopt(fd, level, name, &v, &len) < 0)
    return -errno;
  return v;
}

static opts_seen read_opts(int fd)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  opts_seen o;

  getsockname(fd, (struct sockaddr *)&ss, &len);
  o.family = ss.ss_family;
  o.nodelay = get(fd, IPPROTO_TCP, TCP_NODELAY);
  o.keepalive = get(fd, SOL_SOCKET, SO_KEEPALIVE);
  o.idle = get(fd, IPPROTO_TCP, TCP_KEEPIDLE);
  o.rcvbuf = get(fd, SOL_SOCKET, SO_RCVBUF);
  o.sndbuf = get(fd, SOL_SOCKET, SO_SNDBUF);
  return o;
}

/* ---- what on_connect saw ---------------------------------------------- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static opts_seen seen[8];
static int nseen;

/* The setters' results and what they left on the socket, from inside
 * on_connect (the owning thread). */
static struct {
  int off, off_v, on, on_v, ka, ka_v, ka_idle, ka_intvl, ka_cnt, ka_off,
      ka_off_v, bad_idle, bad_intvl, bad_cnt, in_close_nd, in_close_ka;
} set;

static gev_conn *held; /* a reference, for calls from the test thread */

static void record_connect(gev_conn *c)
{
  pthread_mutex_lock(&mu);
  if (nseen < 8)
    seen[nseen++] = read_opts(gev_conn_fd(c));
  pthread_mutex_unlock(&mu);
  th_count_connect(c);
}

static void setters_connect(gev_conn *c)
{
  int fd = gev_conn_fd(c);

  set.off = gev_conn_set_nodelay(c, false);
  set.off_v = get(fd, IPPROTO_TCP, TCP_NODELAY);
  set.on = gev_conn_set_nodelay(c, true);
  set.on_v = get(fd, IPPROTO_TCP, TCP_NODELAY);
  set.ka = gev_conn_set_keepalive(c, 11, 3, 4);
  set.ka_v = get(fd, SOL_SOCKET, SO_KEEPALIVE);
  set.ka_idle = get(fd, IPPROTO_TCP, TCP_KEEPIDLE);
  set.ka_intvl = get(fd, IPPROTO_TCP, TCP_KEEPINTVL);
  set.ka_cnt = get(fd, IPPROTO_TCP, TCP_KEEPCNT);
  set.bad_idle = gev_conn_set_keepalive(c, -1, 0, 0);
  set.bad_intvl = gev_conn_set_keepalive(c, 5, -1, 0);
  set.bad_cnt = gev_conn_set_keepalive(c, 5, 0, -1);
  set.ka_off = gev_conn_set_keepalive(c, 0, 0, 0);
  set.ka_off_v = get(fd, SOL_SOCKET, SO_KEEPALIVE);
  gev_conn_ref(c);
  held = c;
  th_count_connect(c);
}

static void setters_close(gev_conn *c)
{
  set.in_close_nd = gev_conn_set_nodelay(c, true);
  set.in_close_ka = gev_conn_set_keepalive(c, 5, 0, 0);
  th_count_close(c);
}

static const gev_handler record_handler = {.on_connect = record_connect,
                                           .on_message = th_echo_msg,
                                           .on_close = th_count_close};
static const gev_handler setters_handler = {.on_connect = setters_connect,
                                            .on_message = th_echo_msg,
                                            .on_close = setters_close};

static void reset(void)
{
  th_reset_counters();
  pthread_mutex_lock(&mu);
  nseen = 0;
  pthread_mutex_unlock(&mu);
  memset(&set, 0, sizeof(set));
  held = NULL;
}

static opts_seen seen_at(int i)
{
  opts_seen o;

  pthread_mutex_lock(&mu);
  ck_assert_int_gt(nseen, i);
  o = seen[i];
  pthread_mutex_unlock(&mu);
  return o;
}

static void connect_and_wait(const char *addr, int want_connects)
{
  int fd = th_connect_addr(addr);

  ck_assert_int_ge(fd, 0);
  ck_assert(th_echo_roundtrip(fd, 100, 1));
  ck_assert(th_wait_int(&th_connects, want_connects, 5000));
  close(fd);
}

/* ---- servers ------------------------------------------------------------ */

START_TEST(server_options_applied)
{
  char dir[] = "/tmp/gev-sockopt-XXXXXX", unix_addr[96], tcp[64];
  const char *addrs[3] = {"127.0.0.1:0", unix_addr, NULL};
  gev_options opt = {.num_loops = 1,
                     .addresses = addrs,
                     .keepalive_s = 7,
                     .rcvbuf = RCVBUF,
                     .sndbuf = SNDBUF};
  th_server *srv;
  opts_seen o;

  reset();
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(unix_addr, sizeof(unix_addr), "unix:%s/s", dir);
  srv = th_start(&record_handler, &opt);
  /* The listener has the buffers before listen (TCP's window scale). */
  ck_assert_int_eq(get(srv->s->ls[0].io.fd, SOL_SOCKET, SO_RCVBUF), 2 * RCVBUF);
  ck_assert_int_eq(get(srv->s->ls[0].io.fd, SOL_SOCKET, SO_SNDBUF), 2 * SNDBUF);
  snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", srv->port);
  connect_and_wait(tcp, 1);
  o = seen_at(0);
  ck_assert_int_eq(o.family, AF_INET);
  ck_assert_int_eq(o.nodelay, 1);
  ck_assert_int_eq(o.keepalive, 1);
  ck_assert_int_eq(o.idle, 7);
  ck_assert_int_eq(o.rcvbuf, 2 * RCVBUF);
  ck_assert_int_eq(o.sndbuf, 2 * SNDBUF);
  connect_and_wait(unix_addr, 2);
  o = seen_at(1);
  ck_assert_int_eq(o.family, AF_UNIX);
  ck_assert_int_eq(o.keepalive, 0); /* TCP only */
  ck_assert_int_eq(o.rcvbuf, 2 * RCVBUF);
  ck_assert_int_eq(o.sndbuf, 2 * SNDBUF);
  th_stop(srv);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

START_TEST(server_defaults)
{
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  char tcp[64];
  opts_seen o;

  reset();
  srv = th_start(&record_handler, &opt);
  snprintf(tcp, sizeof(tcp), "127.0.0.1:%d", srv->port);
  connect_and_wait(tcp, 1);
  o = seen_at(0);
  ck_assert_int_eq(o.nodelay, 1); /* on by default */
  ck_assert_int_eq(o.keepalive, 0);
  ck_assert_int_ne(o.rcvbuf, 2 * RCVBUF);
  th_stop(srv);
}
END_TEST

START_TEST(conn_setters)
{
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  int fd;

  reset();
  srv = th_start(&setters_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  ck_assert_int_eq(set.off, 0);
  ck_assert_int_eq(set.off_v, 0);
  ck_assert_int_eq(set.on, 0);
  ck_assert_int_eq(set.on_v, 1);
  ck_assert_int_eq(set.ka, 0);
  ck_assert_int_eq(set.ka_v, 1);
  ck_assert_int_eq(set.ka_idle, 11);
  ck_assert_int_eq(set.ka_intvl, 3);
  ck_assert_int_eq(set.ka_cnt, 4);
  ck_assert_int_eq(set.bad_idle, -EINVAL);
  ck_assert_int_eq(set.bad_intvl, -EINVAL);
  ck_assert_int_eq(set.bad_cnt, -EINVAL);
  ck_assert_int_eq(set.ka_off, 0);
  ck_assert_int_eq(set.ka_off_v, 0);
  /* Not the owning thread. */
  ck_assert_int_eq(gev_conn_set_nodelay(held, false), -EINVAL);
  ck_assert_int_eq(gev_conn_set_keepalive(held, 5, 0, 0), -EINVAL);
  ck_assert_int_eq(gev_conn_set_nodelay(NULL, false), -EINVAL);
  ck_assert_int_eq(gev_conn_set_keepalive(NULL, 5, 0, 0), -EINVAL);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  ck_assert_int_eq(set.in_close_nd, -ENOTCONN);
  ck_assert_int_eq(set.in_close_ka, -ENOTCONN);
  gev_conn_unref(held);
  th_stop(srv);
}
END_TEST

/* On a unix connection there is nothing TCP to set. */
static int unix_nd = 1, unix_ka = 1;

static void unix_connect(gev_conn *c)
{
  th_st(&unix_nd, gev_conn_set_nodelay(c, true));
  th_st(&unix_ka, gev_conn_set_keepalive(c, 5, 0, 0));
  th_count_connect(c);
}

START_TEST(conn_setters_on_unix)
{
  char dir[] = "/tmp/gev-sockopt-XXXXXX", addr[96];
  gev_handler h = {.on_connect = unix_connect, .on_close = th_count_close};
  gev_options opt = {.num_loops = 1, .address = addr};
  th_server *srv;
  int fd;

  reset();
  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(addr, sizeof(addr), "unix:%s/s", dir);
  srv = th_start(&h, &opt);
  fd = th_connect_addr(addr);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  ck_assert_int_eq(th_ld(&unix_nd), -EOPNOTSUPP);
  ck_assert_int_eq(th_ld(&unix_ka), -EOPNOTSUPP);
  close(fd);
  th_stop(srv);
  ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

/* ---- outgoing connections ---------------------------------------------- */

static int out_result = 1, out_listener = 0;

static void on_result(gev_conn *c, int err, void *arg)
{
  (void)arg;
  if (c)
    th_st(&out_listener, gev_conn_listener(c));
  th_st(&out_result, err);
}

START_TEST(outgoing_options)
{
  th_loop_thread lt = {0};
  gev_connect_options co = {.keepalive_s = 9,
                            .rcvbuf = RCVBUF,
                            .sndbuf = SNDBUF,
                            .on_result = on_result,
                            .timeout_ms = 5000};
  gev_client_options clo = {0};
  gev_client *cl = (gev_client *)1;
  char addr[64];
  int port, lfd = th_listen_plain(4, &port), a, b;
  opts_seen o, peer;

  reset();
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  co.address = addr;
  th_lt_start(&lt);
  ck_assert_int_eq(gev_loop_connect(lt.l, &record_handler, &co), 0);
  a = th_accept(lfd);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  ck_assert_int_eq(th_ld(&out_result), 0);
  ck_assert_int_eq(th_ld(&out_listener), -1);
  o = seen_at(0);
  ck_assert_int_eq(o.nodelay, 1);
  ck_assert_int_eq(o.keepalive, 1);
  ck_assert_int_eq(o.idle, 9);
  ck_assert_int_eq(o.rcvbuf, 2 * RCVBUF);
  ck_assert_int_eq(o.sndbuf, 2 * SNDBUF);
  peer = read_opts(a); /* the plain side keeps the kernel's defaults */
  ck_assert_int_eq(peer.keepalive, 0);

  /* Without options: only TCP_NODELAY. */
  co = (gev_connect_options){.address = addr, .on_result = on_result};
  ck_assert_int_eq(gev_loop_connect(lt.l, &record_handler, &co), 0);
  b = th_accept(lfd);
  ck_assert(th_wait_int(&th_connects, 2, 5000));
  o = seen_at(1);
  ck_assert_int_eq(o.nodelay, 1);
  ck_assert_int_eq(o.keepalive, 0);

  /* Negative options. */
  co.keepalive_s = -1;
  ck_assert_int_eq(gev_loop_connect(lt.l, &record_handler, &co), -EINVAL);
  co.keepalive_s = 0;
  co.rcvbuf = -1;
  ck_assert_int_eq(gev_loop_connect(lt.l, &record_handler, &co), -EINVAL);
  co.rcvbuf = 0;
  co.sndbuf = -1;
  ck_assert_int_eq(gev_loop_connect(lt.l, &record_handler, &co), -EINVAL);
  clo.connect = co;
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &record_handler, &clo), -EINVAL);
  ck_assert_ptr_null(cl);

  close(a);
  close(b);
  ck_assert(th_wait_int(&th_closes, 2, 5000));
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  close(lfd);
}
END_TEST

/* ---- the backlog, as ss reports it --------------------------------------- */

/* Send-Q of the listening TCP sockets on port, from `ss -ltnH`: the
 * backlog the socket was given (capped at net.core.somaxconn). Fills up
 * to n values; returns how many sockets there were. */
static int ss_backlogs(int port, int *q, int n)
{
  char cmd[128], line[512];
  int k = 0;
  FILE *f;

  snprintf(cmd, sizeof(cmd), "ss -ltnH 'sport = :%d' 2>/dev/null", port);
  f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  while (fgets(line, sizeof(line), f)) {
    char state[32];
    int recvq, sendq;
    if (sscanf(line, "%31s %d %d", state, &recvq, &sendq) == 3 && k < n)
      q[k++] = sendq;
  }
  ck_assert_int_eq(pclose(f), 0);
  return k;
}

static int somaxconn(void)
{
  FILE *f = fopen("/proc/sys/net/core/somaxconn", "r");
  int v = -1;

  ck_assert_ptr_nonnull(f);
  ck_assert_int_eq(fscanf(f, "%d", &v), 1);
  fclose(f);
  return v < SOMAXCONN ? v : SOMAXCONN;
}

START_TEST(backlog_ss)
{
  const char *addrs[3] = {"127.0.0.1:0", "[::1]:0", NULL};
  gev_options opt = {.num_loops = 2, .addresses = addrs, .backlog = 7};
  char adopt[32];
  const char *one[2] = {adopt, NULL};
  int q[8], port, lfd;
  gev_server *s;

  ck_assert_int_eq(gev_server_new(&s, &record_handler, &opt), 0);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(ss_backlogs(gev_server_listener_port(s, i), q, 8), 1);
    ck_assert_int_eq(q[0], 7);
  }
  gev_server_free(s);

  /* reuse_port: every worker's own socket has it. */
  opt.reuse_port = true;
  opt.addresses = NULL;
  opt.address = "127.0.0.1:0";
  ck_assert_int_eq(gev_server_new(&s, &record_handler, &opt), 0);
  ck_assert_int_eq(ss_backlogs(gev_server_port(s), q, 8), 2);
  ck_assert_int_eq(q[0], 7);
  ck_assert_int_eq(q[1], 7);
  gev_server_free(s);

  /* 0 is SOMAXCONN, as the kernel caps it. */
  opt = (gev_options){.num_loops = 1, .address = "127.0.0.1:0"};
  ck_assert_int_eq(gev_server_new(&s, &record_handler, &opt), 0);
  ck_assert_int_eq(ss_backlogs(gev_server_port(s), q, 8), 1);
  ck_assert_int_eq(q[0], somaxconn());
  gev_server_free(s);

  /* An adopted socket keeps the backlog it was created with. */
  lfd = th_listen_plain(5, &port);
  snprintf(adopt, sizeof(adopt), "fd:%d", lfd);
  opt = (gev_options){.num_loops = 1, .addresses = one, .backlog = 7};
  ck_assert_int_eq(gev_server_new(&s, &record_handler, &opt), 0);
  ck_assert_int_eq(ss_backlogs(port, q, 8), 1);
  ck_assert_int_eq(q[0], 5);
  gev_server_free(s);
}
END_TEST

int main(void)
{
  th_case cases[] = {
      {"server_options_applied", server_options_applied, 30},
      {"server_defaults", server_defaults, 30},
      {"conn_setters", conn_setters, 30},
      {"conn_setters_on_unix", conn_setters_on_unix, 30},
      {"outgoing_options", outgoing_options, 30},
      {"backlog_ss", backlog_ss, 30},
  };
  size_t n = sizeof(cases) / sizeof(cases[0]);

  /* ss comes with iproute2, which CI installs; elsewhere say what is not
   * run rather than fail for a missing tool. */
  if (system("ss -V >/dev/null 2>&1") != 0) {
    printf("SKIP backlog_ss: ss (Debian package iproute2) is not installed\n");
    n--;
  }
  return th_run(th_suite("sockopt", cases, n));
}
