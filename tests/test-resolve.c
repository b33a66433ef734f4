/*
 * test-resolve.c - outgoing connections to names: the lookup runs off the
 * loop thread, every address is tried in turn (IPv6 first, then IPv4),
 * a name that does not resolve reports -ENXIO, a lookup slower than the
 * connect timeout reports -ETIMEDOUT without holding the loop, and a
 * gev_client looks its name up again for every reconnect.
 *
 * Names come from a private /etc/hosts (and nsswitch.conf, resolv.conf):
 * each case runs in Check's forked child, which enters a mount namespace
 * of its own and bind-mounts its files over the system's, so nothing
 * outside the test is touched and no DNS server is asked. That needs
 * CAP_SYS_ADMIN (CI runs as root); without it the cases say so and pass.
 * Only loopback addresses.
 */

#include "helpers.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/socket.h>
#include <unistd.h>

static char dir[64];
static bool ns_ready;

/* Writes dir/name in place (a bind mount shows the same inode). */
static void put_file(const char *name, const char *text)
{
  char path[128];
  int fd;

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
}

static void set_hosts(const char *text)
{
  put_file("hosts", text);
}

static void bind_over(const char *name, const char *target)
{
  char path[128];

  snprintf(path, sizeof(path), "%s/%s", dir, name);
  ck_assert_msg(mount(path, target, "none", MS_BIND, NULL) == 0, "bind %s: %s",
                target, strerror(errno));
}

static void remove_dir(void)
{
  char cmd[96];

  snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
  if (system(cmd) != 0)
    printf("test-resolve: could not remove %s\n", dir);
}

/* Our own name service files, in a mount namespace of this process (made
 * once: with CK_FORK=no every case runs in one process, which may have
 * threads by the second case, and unshare wants it single-threaded);
 * false (with the reason printed) when the process may not have one. */
static bool private_names(const char *hosts, const char *nss,
                          const char *resolv)
{
  if (!ns_ready) {
    if (unshare(CLONE_NEWNS) < 0) {
      printf("test-resolve: no mount namespace (%s): needs CAP_SYS_ADMIN; "
             "case skipped\n",
             strerror(errno));
      return false;
    }
    ck_assert_int_eq(mount("none", "/", "none", MS_REC | MS_PRIVATE, NULL), 0);
    snprintf(dir, sizeof(dir), "/tmp/gev-resolve-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    put_file("hosts", "");
    put_file("nsswitch.conf", "");
    put_file("resolv.conf", "");
    bind_over("hosts", "/etc/hosts");
    bind_over("nsswitch.conf", "/etc/nsswitch.conf");
    bind_over("resolv.conf", "/etc/resolv.conf");
    atexit(remove_dir);
    ns_ready = true;
  }
  put_file("hosts", hosts);
  put_file("nsswitch.conf", nss);
  put_file("resolv.conf", resolv ? resolv : "");
  return true;
}

static void cleanup_dir(void)
{
  /* The files stay for the next case (CK_FORK=no); atexit removes them. */
}

#define FILES_ONLY "hosts: files\n"
#define LOCALHOST_BOTH "::1 localhost\n127.0.0.1 localhost\n"

/* ---- one connect and its outcome -------------------------------------- */

typedef struct outcome {
  int done, err;
  char peer[64];
  uint64_t at;
} outcome;

static void on_result(gev_conn *c, int err, void *arg)
{
  outcome *o = arg;

  o->err = err;
  if (c) {
    snprintf(o->peer, sizeof(o->peer), "%s", gev_conn_peer_addr(c));
    gev_conn_close(c);
  }
  o->at = th_now_ms();
  th_st(&o->done, 1);
}

static const gev_handler quiet = {0};

/* gev_loop_connect(address) on a loop thread, waited for (bounded). */
static void connect_once(th_loop_thread *lt, const char *address,
                         uint64_t timeout_ms, outcome *o)
{
  gev_connect_options co = {.address = address,
                            .timeout_ms = timeout_ms,
                            .on_result = on_result,
                            .arg = o};

  memset(o, 0, sizeof(*o));
  ck_assert_int_eq(gev_loop_connect(lt->l, &quiet, &co), 0);
  ck_assert_msg(th_wait_int(&o->done, 1, 15000), "%s: no result", address);
}

/* A plain IPv6 socket on [::1]:port: listening, or only bound (then a
 * connect there is refused, and nobody else can take the port). */
static int v6_socket(int port, bool listening)
{
  struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                           .sin6_port = htons((uint16_t)port),
                           .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int one = 1, fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);

  ck_assert_int_ge(fd, 0);
  setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
  ck_assert_msg(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0,
                "bind [::1]:%d: %s", port, strerror(errno));
  if (listening)
    ck_assert_int_eq(listen(fd, 8), 0);
  return fd;
}

/* "localhost" is ::1 and 127.0.0.1, in that order. With ::1 listening the
 * connect lands there; with ::1 refusing it falls back to 127.0.0.1. */
START_TEST(localhost_v6_then_v4)
{
  th_loop_thread lt;
  th_server *srv;
  outcome o;
  char addr[64], want[64];
  int v6;

  if (!private_names(LOCALHOST_BOTH, FILES_ONLY, NULL))
    return;
  srv = th_start(&th_echo_handler, &(gev_options){.num_loops = 1});
  snprintf(addr, sizeof(addr), "localhost:%d", srv->port);
  th_lt_start(&lt);

  v6 = v6_socket(srv->port, true);
  connect_once(&lt, addr, 5000, &o);
  ck_assert_msg(o.err == 0, "%s", gev_strerror(o.err));
  snprintf(want, sizeof(want), "[::1]:%d", srv->port);
  ck_assert_str_eq(o.peer, want);
  close(v6);

  v6 = v6_socket(srv->port, false); /* refuses */
  connect_once(&lt, addr, 5000, &o);
  ck_assert_msg(o.err == 0, "%s", gev_strerror(o.err));
  snprintf(want, sizeof(want), "127.0.0.1:%d", srv->port);
  ck_assert_str_eq(o.peer, want);
  close(v6);

  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  th_stop(srv);
  cleanup_dir();
}
END_TEST

/* [::1]:port where connects hang: a listener whose accept queue is full
 * (listen backlog 0, never accepted) drops new SYNs, so one more connect
 * stays in progress. The fds go to fds[] (closed by the caller); the
 * count is returned. */
#define HANG_MAX 16
static int v6_hanging(int port, int fds[HANG_MAX])
{
  struct sockaddr_in6 a = {.sin6_family = AF_INET6,
                           .sin6_port = htons((uint16_t)port),
                           .sin6_addr = IN6ADDR_LOOPBACK_INIT};
  int n = 0;

  fds[n++] = v6_socket(port, false);
  ck_assert_int_eq(listen(fds[0], 0), 0);
  while (n < HANG_MAX) {
    struct pollfd p;
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

    ck_assert_int_ge(fd, 0);
    fds[n++] = fd;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
      continue;
    ck_assert_int_eq(errno, EINPROGRESS);
    p = (struct pollfd){.fd = fd, .events = POLLOUT};
    if (poll(&p, 1, 200) == 0)
      return n; /* this one hangs: so will the library's */
  }
  ck_abort_msg("no connect to [::1]:%d stayed in progress", port);
  return n;
}

/* ::1 never answers (not refused: silent), and there is no connect
 * timeout at all: the attempt to 127.0.0.1 starts beside it after the
 * stagger delay and wins, rather than waiting for the kernel to give up
 * on ::1 (about two minutes). */
START_TEST(localhost_v6_silent_staggers_to_v4)
{
  th_loop_thread lt;
  th_server *srv;
  outcome o;
  char addr[64], want[64];
  int fds[HANG_MAX], n;

  if (!private_names(LOCALHOST_BOTH, FILES_ONLY, NULL))
    return;
  srv = th_start(&th_echo_handler, &(gev_options){.num_loops = 1});
  n = v6_hanging(srv->port, fds);
  snprintf(addr, sizeof(addr), "localhost:%d", srv->port);
  th_lt_start(&lt);
  connect_once(&lt, addr, 0, &o);
  ck_assert_msg(o.err == 0, "%s", gev_strerror(o.err));
  snprintf(want, sizeof(want), "127.0.0.1:%d", srv->port);
  ck_assert_str_eq(o.peer, want);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  for (int i = 0; i < n; i++)
    close(fds[i]);
  th_stop(srv);
  cleanup_dir();
}
END_TEST

/* Both refuse: the last attempt's error, not a hang. */
START_TEST(localhost_both_refuse)
{
  th_loop_thread lt;
  outcome o;
  char addr[64];
  int port = th_free_port(), v6;

  if (!private_names(LOCALHOST_BOTH, FILES_ONLY, NULL))
    return;
  v6 = v6_socket(port, false);
  snprintf(addr, sizeof(addr), "localhost:%d", port);
  th_lt_start(&lt);
  connect_once(&lt, addr, 5000, &o);
  ck_assert_int_eq(o.err, -ECONNREFUSED);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  close(v6);
  cleanup_dir();
}
END_TEST

/* A name nobody knows: -ENXIO through on_result, the call itself works. */
START_TEST(unknown_name)
{
  th_loop_thread lt;
  outcome o;

  if (!private_names(LOCALHOST_BOTH, FILES_ONLY, NULL))
    return;
  th_lt_start(&lt);
  connect_once(&lt, "no-such-host.invalid:80", 5000, &o);
  ck_assert_msg(o.err == -ENXIO, "%d %s", o.err, gev_strerror(o.err));
  connect_once(&lt, "no-such-host.invalid:80", 0, &o); /* no timeout */
  ck_assert_int_eq(o.err, -ENXIO);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  cleanup_dir();
}
END_TEST

/* Malformed names fail the call; nothing is looked up. */
START_TEST(bad_names)
{
  static const char *const bad[] = {"localhost:",    "localhost:99999",
                                    "localhost:8o",  "localhost",
                                    "local host:-1", ":",
                                    "[localhost]:80"};
  char longname[300];
  th_loop_thread lt;
  gev_connect_options co = {0};

  th_lt_start(&lt);
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    co.address = bad[i];
    ck_assert_msg(gev_loop_connect(lt.l, &quiet, &co) == -EINVAL, "%s", bad[i]);
  }
  memset(longname, 'a', sizeof(longname));
  memcpy(longname + sizeof(longname) - 4, ":80", 4);
  co.address = longname;
  ck_assert_int_eq(gev_loop_connect(lt.l, &quiet, &co), -EINVAL);
  co.address = "localhost:80";
  ck_assert_int_eq(gev_loop_connect(NULL, &quiet, &co), -EINVAL);
  ck_assert_int_eq(gev_loop_connect(lt.l, NULL, &co), -EINVAL);
  th_lt_stop(&lt);
  ck_assert_int_eq(gev_loop_connect(lt.l, &quiet, &co), -ESHUTDOWN);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- a lookup that never answers -------------------------------------- */

/* A DNS server on 127.0.0.1:53 that reads and never answers. */
static int silent_dns(void)
{
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons(53),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);

  ck_assert_int_ge(fd, 0);
  if (bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
    printf("test-resolve: 127.0.0.1:53 not bindable (%s)\n", strerror(errno));
    close(fd);
    return -1;
  }
  return fd;
}

static int ticks;
static void tick(void *arg)
{
  (void)arg;
  th_inc(&ticks);
}

/* The lookup takes its resolver's full timeout (2 s), the connect's is
 * 300 ms: -ETIMEDOUT at about 300 ms, the loop ran its timers meanwhile
 * (it was never blocked), and stopping the loop while another lookup is
 * under way reports -ECANCELED at once. */
START_TEST(slow_lookup_times_out)
{
  th_loop_thread lt;
  outcome o, o2;
  gev_connect_options co = {
      .address = "slow.example:80", .on_result = on_result, .arg = &o2};
  uint64_t t0;
  int dns, threads;

  if (!private_names("", "hosts: files dns\n",
                     "nameserver 127.0.0.1\noptions timeout:2 attempts:1\n"))
    return;
  if ((dns = silent_dns()) < 0)
    return;
  th_st(&ticks, 0);
  threads = th_count_threads();
  th_lt_start(&lt);
  ck_assert_uint_ne(gev_loop_run_every(lt.l, 10, tick, NULL), 0);
  t0 = th_now_ms();
  connect_once(&lt, "slow.example:80", 300, &o);
  ck_assert_int_eq(o.err, -ETIMEDOUT);
  ck_assert_uint_lt(o.at - t0, 1900); /* not the lookup's 2 s */
  ck_assert_int_ge(th_ld(&ticks), 5);

  memset(&o2, 0, sizeof(o2));
  ck_assert_int_eq(gev_loop_connect(lt.l, &quiet, &co), 0);
  usleep(50 * 1000);
  t0 = th_now_ms();
  th_lt_stop(&lt);
  ck_assert(th_wait_int(&o2.done, 1, 1000));
  ck_assert_int_eq(o2.err, -ECANCELED);
  ck_assert_uint_lt(o2.at - t0, 1000);
  gev_loop_free(lt.l); /* the lookups still run, and are dropped */
  ck_assert(th_wait_threads(threads, 10000));
  close(dns);
  cleanup_dir();
}
END_TEST

typedef struct tally {
  int done, eagain, timedout, other;
} tally;

static void count_result(gev_conn *c, int err, void *arg)
{
  tally *t = arg;

  (void)c;
  if (err == -EAGAIN)
    th_inc(&t->eagain);
  else if (err == -ETIMEDOUT)
    th_inc(&t->timedout);
  else
    th_inc(&t->other);
  th_inc(&t->done);
}

/* 70 lookups at once against a silent DNS server: 64 run (and time out
 * their connects), the 6 past the cap fail at once with -EAGAIN. The
 * lookups last 8 s, so that all 70 start while the first ones still run
 * even where making a thread is slow (TSan on a loaded machine). */
START_TEST(lookups_are_capped)
{
  th_loop_thread lt;
  tally t = {0};
  gev_connect_options co = {.address = "slow.example:80",
                            .timeout_ms = 500,
                            .on_result = count_result,
                            .arg = &t};
  int dns, threads;

  if (!private_names("", "hosts: files dns\n",
                     "nameserver 127.0.0.1\noptions timeout:8 attempts:1\n"))
    return;
  if ((dns = silent_dns()) < 0)
    return;
  /* The cap is process-wide: a lookup an earlier case left running (its
   * answer dropped) would take a slot, so none may be left. */
  ck_assert(th_wait_threads_named("gev-resolve", 0, 30000));
  threads = th_count_threads();
  th_lt_start(&lt);
  for (int i = 0; i < 70; i++)
    ck_assert_int_eq(gev_loop_connect(lt.l, &quiet, &co), 0);
  ck_assert(th_wait_int(&t.done, 70, 10000));
  ck_assert_msg(th_ld(&t.eagain) == 6 && th_ld(&t.timedout) == 64,
                "%d refused, %d timed out, %d other; %d lookup threads",
                th_ld(&t.eagain), th_ld(&t.timedout), th_ld(&t.other),
                th_count_threads_named("gev-resolve"));
  /* The 64 are still looking up, each on a thread that says whose it is. */
  for (int i = 0; i < 500 && th_count_threads_named("gev-resolve") < 64; i++)
    usleep(10 * 1000);
  ck_assert_int_eq(th_count_threads_named("gev-resolve"), 64);
  ck_assert_int_eq(th_ld(&t.timedout), 64);
  ck_assert_int_eq(th_ld(&t.other), 0);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  ck_assert(th_wait_threads(threads, 30000));
  close(dns);
  cleanup_dir();
}
END_TEST

/* ---- gev_client looks the name up again ------------------------------- */

static int closes_on_connect;
static void close_at_once(gev_conn *c)
{
  th_inc(&closes_on_connect);
  gev_conn_close(c);
}

typedef struct peers {
  int n;
  char seen[4][64];
  char want[64];
} peers;

/* The client's latest connection went to p->want. */
static bool landed(void *arg)
{
  peers *p = arg;
  int n = th_ld(&p->n);

  return n > 0 && strcmp(p->seen[n - 1], p->want) == 0;
}

static void client_result(gev_conn *c, int err, void *arg)
{
  peers *p = arg;
  int i = th_ld(&p->n);

  if (err || !c || i >= 4)
    return;
  snprintf(p->seen[i], sizeof(p->seen[i]), "%s", gev_conn_peer_addr(c));
  th_st(&p->n, i + 1);
}

static void client_free_task(void *arg)
{
  gev_client_free(arg);
}

/* svc.test moves from 127.0.0.1 to 127.0.0.2 between two connections:
 * the reconnect follows it. */
START_TEST(client_reresolves)
{
  static const gev_handler closer = {.on_connect = close_at_once};
  gev_options o1 = {.num_loops = 1, .address = "127.0.0.1:0"};
  gev_options o2 = {.num_loops = 1};
  th_server *a, *b;
  th_loop_thread lt;
  gev_client *cl;
  peers p = {0};
  char hosts[64], addr[64], want[64];
  gev_client_options co = {.retry_min_ms = 50, .retry_max_ms = 50};

  if (!private_names("127.0.0.1 svc.test\n", FILES_ONLY, NULL))
    return;
  th_st(&closes_on_connect, 0);
  a = th_start(&closer, &o1);
  snprintf(addr, sizeof(addr), "127.0.0.2:%d", a->port);
  o2.address = addr;
  b = th_start(&th_echo_handler, &o2);
  snprintf(addr, sizeof(addr), "svc.test:%d", a->port);
  co.connect.address = addr;
  co.connect.on_result = client_result;
  co.connect.arg = &p;
  th_lt_start(&lt);
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &quiet, &co), 0);
  ck_assert(th_wait_int(&p.n, 1, 10000));
  snprintf(hosts, sizeof(hosts), "127.0.0.2 svc.test\n");
  set_hosts(hosts);
  snprintf(want, sizeof(want), "127.0.0.1:%d", a->port);
  ck_assert_str_eq(p.seen[0], want);
  /* The next attempt, or the one after (it may race the rewrite), goes
   * to the new address and stays (b echoes). */
  snprintf(p.want, sizeof(p.want), "127.0.0.2:%d", a->port);
  ck_assert(th_wait_until(landed, &p, 10000));
  ck_assert_int_le(th_ld(&p.n), 3);
  th_run_in_loop(lt.l, client_free_task, cl);
  th_lt_stop(&lt);
  gev_loop_free(lt.l);
  th_stop(a);
  th_stop(b);
  cleanup_dir();
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"localhost_v6_then_v4", localhost_v6_then_v4, 30},
      {"localhost_v6_silent_staggers_to_v4", localhost_v6_silent_staggers_to_v4,
       30},
      {"localhost_both_refuse", localhost_both_refuse, 30},
      {"unknown_name", unknown_name, 30},
      {"bad_names", bad_names, 30},
      {"slow_lookup_times_out", slow_lookup_times_out, 30},
      {"lookups_are_capped", lookups_are_capped, 90},
      {"client_reresolves", client_reresolves, 30},
  };
  return th_run(th_suite("resolve", cases, sizeof(cases) / sizeof(cases[0])));
}
