/*
 * test-client.c - outgoing connections and flow control: gev_loop_connect
 * from a standalone loop and from a server's worker loop, its failures
 * (refused, timeout, malformed address, stopped loop, cancelled by stop,
 * missing unix socket), unix sockets, pause/resume reading, the one-shot
 * drain notification, and max_buffer on an outgoing connection.
 *
 * Only loopback and unix sockets. Every wait is bounded; the only time
 * spans are "nothing happens for a while" windows and "does not hang"
 * bounds. Globals are reset at the start of each test so the suite also
 * runs with CK_FORK=no (valgrind).
 */
#include "helpers.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define KIB ((size_t)1024)
#define MIB ((size_t)1 << 20)

/* ---- shared scaffolding ----------------------------------------------- */

/* Keeps a loop busy in a task until block_release: what arrives meanwhile
 * is seen by the next pass, in one batch. Released by the test, not after
 * a fixed time, so a stalled test thread cannot let the loop go early. */
typedef struct blocker {
  int entered;
  int release;
} blocker;

static void block_task(void *arg)
{
  blocker *b = arg;
  th_st(&b->entered, 1);
  for (int i = 0; i < 10000 && !th_ld(&b->release); i++)
    usleep(1000); /* at most ~10 s: a test that forgets to release fails */
}

static void block_loop(gev_loop *l, blocker *b)
{
  *b = (blocker){0, 0};
  ck_assert_int_eq(gev_loop_post(l, block_task, b), 0);
  ck_assert(th_wait_int(&b->entered, 1, 10000));
}

static void block_release(blocker *b)
{
  th_st(&b->release, 1);
}

/* True when nothing (no byte, no EOF) arrives on fd within ms. */
static bool quiet_for(int fd, int ms)
{
  struct pollfd p = {.fd = fd, .events = POLLIN};
  return poll(&p, 1, ms) == 0;
}

/* A listener whose accept queue is full and stays full: listen(fd, 0),
 * never accepted, then non-blocking connects until one does not complete
 * (Linux drops the SYN while the accept queue is full, so that connect and
 * every later one stay in progress). Returns the number of client fds in
 * cfd (all to be closed by the caller). */
#define FILL_MAX 64

static int fill_listener(int *lfd, int *port, int cfd[FILL_MAX])
{
  struct sockaddr_in sin = {.sin_family = AF_INET};
  int n = 0;

  *lfd = th_listen_plain(0, port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  sin.sin_port = htons((uint16_t)*port);
  while (n < FILL_MAX) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    struct pollfd p = {.fd = fd, .events = POLLOUT};

    ck_assert_int_ge(fd, 0);
    cfd[n++] = fd;
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0)
      continue;
    ck_assert_int_eq(errno, EINPROGRESS);
    if (poll(&p, 1, 200) == 0)
      return n; /* stays in progress: the queue is full */
  }
  ck_abort_msg("the kernel completed %d handshakes on a listen(fd, 0) socket "
               "that never accepts",
               FILL_MAX);
  return n;
}

static void close_all(int *fds, int n)
{
  for (int i = 0; i < n; i++)
    close(fds[i]);
}

/* ---- a server-side echo handler --------------------------------------- */

/* Greets each client, then echoes. */
static void greet_connect(gev_conn *c)
{
  if (gev_conn_send(c, "hi\n", 3) != 0)
    th_inc(&th_violations);
  th_inc(&th_connects);
}

static const gev_handler greet_handler = {greet_connect, th_echo_msg,
                                          th_count_close};

/* ---- the client-side probe -------------------------------------------- *
 * One probe per outgoing connection, given as both opt.context and
 * opt.arg. It records every callback and checks order and thread. */

#define PROBE_MAGIC 0x9e0c11e7u

typedef struct probe {
  unsigned magic;
  gev_loop *loop;          /* the loop the connection lives on */
  gev_server *want_server; /* what gev_conn_server must return */
  /* Set by the test before connecting. */
  const void *hello; /* sent from on_connect */
  size_t hello_len;
  size_t close_at; /* close from on_message once this much came */
  /* Recorded. */
  int results, result_err, result_conn;
  int connects, closes, msgs;
  int bad_order, bad_thread, bad_server;
  int send_rc, close_rc1, close_rc2;
  gev_conn *c; /* from on_result, with a reference */
  char peer[128];
  int got;
  unsigned char rx[4096];
} probe;

static int g_bad_ctx; /* a callback without its probe */

static void probe_init(probe *p, gev_loop *l)
{
  memset(p, 0, sizeof(*p));
  p->magic = PROBE_MAGIC;
  p->loop = l;
  p->send_rc = p->close_rc1 = p->close_rc2 = 1;
  th_st(&g_bad_ctx, 0);
}

static probe *probe_of(gev_conn *c)
{
  probe *p = gev_conn_context(c);

  if (!p || p->magic != PROBE_MAGIC) {
    th_inc(&g_bad_ctx);
    return NULL;
  }
  if (!gev_loop_in_thread(gev_conn_loop(c)) || gev_conn_loop(c) != p->loop)
    th_inc(&p->bad_thread);
  return p;
}

static void p_result(gev_conn *c, int err, void *arg)
{
  probe *p = arg;

  if (!p || p->magic != PROBE_MAGIC) {
    th_inc(&g_bad_ctx);
    return;
  }
  if (!gev_loop_in_thread(p->loop))
    th_inc(&p->bad_thread);
  if (th_ld(&p->results) != 0 || th_ld(&p->connects) != 0 ||
      (c == NULL) != (err != 0))
    th_inc(&p->bad_order);
  p->result_err = err;
  p->result_conn = c != NULL;
  if (c) {
    gev_conn_ref(c); /* for the test thread */
    p->c = c;
  }
  th_inc(&p->results); /* last: publishes the fields above */
}

static void p_connect(gev_conn *c)
{
  probe *p = probe_of(c);

  if (!p)
    return;
  if (th_ld(&p->results) != 1 || p->c != c || th_ld(&p->connects) != 0)
    th_inc(&p->bad_order);
  if (gev_conn_server(c) != p->want_server)
    th_inc(&p->bad_server);
  snprintf(p->peer, sizeof(p->peer), "%s", gev_conn_peer_addr(c));
  if (p->hello_len)
    p->send_rc = gev_conn_send(c, p->hello, p->hello_len);
  th_inc(&p->connects);
}

static void p_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  probe *p = probe_of(c);
  size_t n = ringbuffer_len(in), got;

  (void)out;
  if (!p) {
    ringbuffer_retrieve_all(in);
    return;
  }
  if (th_ld(&p->connects) != 1 || th_ld(&p->closes) != 0)
    th_inc(&p->bad_order);
  got = (size_t)th_ld(&p->got);
  if (n > sizeof(p->rx) - got)
    n = sizeof(p->rx) - got; /* more than expected: the test sees the count */
  ringbuffer_read(in, p->rx + got, n);
  ringbuffer_retrieve_all(in);
  th_inc(&p->msgs);
  if (p->close_at && got < p->close_at && got + n >= p->close_at) {
    p->close_rc1 = gev_conn_close(c);
    p->close_rc2 = gev_conn_close(c);
  }
  th_st(&p->got, (int)(got + n)); /* last: publishes rx */
}

static void p_close(gev_conn *c)
{
  probe *p = probe_of(c);

  if (!p)
    return;
  if (th_ld(&p->connects) != 1 || th_ld(&p->closes) != 0)
    th_inc(&p->bad_order);
  th_inc(&p->closes);
}

static const gev_handler probe_handler = {p_connect, p_message, p_close};

static void probe_connect(probe *p, gev_loop *l, const char *addr,
                          uint64_t timeout_ms, size_t max_buffer)
{
  gev_connect_options o = {.address = addr,
                           .timeout_ms = timeout_ms,
                           .max_buffer = max_buffer,
                           .context = p,
                           .on_result = p_result,
                           .arg = p};
  int r = gev_loop_connect(l, &probe_handler, &o);

  ck_assert_msg(r == 0, "gev_loop_connect(%s): %s", addr, gev_strerror(r));
}

/* A probe connection with handler h (and max_buffer, 0 = default) from a
 * new standalone loop (lt, started here) to a plain listener (*lfd):
 * returns the accepted fd once on_connect has run. */
static int probe_accepted(th_loop_thread *lt, probe *p, const gev_handler *h,
                          size_t max_buffer, int *lfd)
{
  gev_connect_options o;
  char addr[64];
  int port, fd;

  *lfd = th_listen_plain(8, &port);
  th_lt_start(lt);
  probe_init(p, lt->l);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  o = (gev_connect_options){.address = addr,
                            .max_buffer = max_buffer,
                            .context = p,
                            .on_result = p_result,
                            .arg = p};
  ck_assert_int_eq(gev_loop_connect(lt->l, h, &o), 0);
  fd = th_accept(*lfd);
  ck_assert(th_wait_int(&p->connects, 1, 10000));
  return fd;
}

/* Ends a probe test on a standalone loop: no order or thread violation,
 * the loop stopped cleanly; drops the probe's reference and the loop. */
static void probe_end(th_loop_thread *lt, probe *p)
{
  ck_assert_int_eq(th_ld(&p->bad_order), 0);
  ck_assert_int_eq(th_ld(&p->bad_thread), 0);
  ck_assert_int_eq(th_lt_stop(lt), 0);
  gev_conn_unref(p->c);
  gev_loop_free(lt->l);
}

/* No on_connect, no stray on_result, no order or thread violation. */
static void assert_failed_once(probe *p, int want_err)
{
  ck_assert_int_eq(th_ld(&p->results), 1);
  ck_assert_msg(p->result_err == want_err, "on_result got %d (%s), want %s",
                p->result_err, gev_strerror(p->result_err),
                gev_strerror(want_err));
  ck_assert_int_eq(p->result_conn, 0);
  ck_assert_int_eq(th_ld(&p->connects), 0);
  ck_assert_int_eq(th_ld(&p->closes), 0);
  ck_assert_int_eq(th_ld(&p->bad_order), 0);
  ck_assert_int_eq(th_ld(&p->bad_thread), 0);
  ck_assert_int_eq(th_ld(&g_bad_ctx), 0);
}

/* ---- 1. a standalone loop connects, echoes, closes, stops ------------- */

START_TEST(standalone_loop_echo)
{
  static const char hello[] = "hello from a standalone gev loop";
  const size_t n = sizeof(hello) - 1;
  gev_options so = {.num_loops = 1};
  gev_handler h = probe_handler;
  gev_connect_options o;
  char addr[64], want_peer[64];
  int fds0, threads0;
  th_loop_thread lt;
  th_server *srv;
  probe p, q;

  th_reset_counters();
  fds0 = th_count_fds();
  threads0 = th_count_threads();
  srv = th_start(&th_echo_handler, &so);
  th_lt_start(&lt);
  probe_init(&p, lt.l);
  p.hello = hello;
  p.hello_len = n;
  p.close_at = n;
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv->port);
  snprintf(want_peer, sizeof(want_peer), "127.0.0.1:%d", srv->port);
  o = (gev_connect_options){
      .address = addr, .context = &p, .on_result = p_result, .arg = &p};
  ck_assert_int_eq(gev_loop_connect(lt.l, &h, &o), 0);
  /* Both are copied: neither may be used after the call. */
  memset(addr, 'x', sizeof(addr) - 1);
  memset(&h, 0, sizeof(h));
  memset(&o, 0, sizeof(o));

  ck_assert_msg(th_wait_int(&p.closes, 1, 10000),
                "no on_close: results %d connects %d got %d", th_ld(&p.results),
                th_ld(&p.connects), th_ld(&p.got));
  ck_assert_int_eq(th_ld(&p.results), 1);
  ck_assert_int_eq(p.result_err, 0);
  ck_assert_int_eq(p.result_conn, 1);
  ck_assert_int_eq(th_ld(&p.connects), 1);
  ck_assert_int_eq(p.send_rc, 0);
  ck_assert_int_eq(th_ld(&p.got), (int)n);
  ck_assert(memcmp(p.rx, hello, n) == 0);
  ck_assert_int_eq(p.close_rc1, 0);
  ck_assert_int_eq(p.close_rc2, -ENOTCONN);
  ck_assert_str_eq(p.peer, want_peer);
  ck_assert_int_eq(th_ld(&p.bad_server), 0); /* gev_conn_server: NULL */
  ck_assert_int_eq(th_ld(&p.bad_order), 0);
  ck_assert_int_eq(th_ld(&p.bad_thread), 0);
  ck_assert_int_eq(th_ld(&g_bad_ctx), 0);
  ck_assert(!gev_conn_connected(p.c));
  ck_assert_int_eq(gev_conn_fd(p.c), -1);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  usleep(50000);
  ck_assert_int_eq(th_ld(&p.closes), 1); /* once */

  /* A second one with a connect timeout, left open: the timer went with
   * the connect (no late on_result, no close), and the stop closes it. */
  probe_init(&q, lt.l);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv->port);
  probe_connect(&q, lt.l, addr, 100, 0);
  ck_assert(th_wait_int(&q.connects, 1, 10000));
  usleep(300000);
  ck_assert_int_eq(th_ld(&q.results), 1);
  ck_assert_int_eq(th_ld(&q.closes), 0);
  ck_assert(gev_conn_connected(q.c));

  ck_assert_int_eq(th_lt_stop(&lt), 0);
  ck_assert_int_eq(gev_loop_run(lt.l), -EALREADY);
  ck_assert_int_eq(th_ld(&p.closes), 1);
  ck_assert_int_eq(th_ld(&q.closes), 1);
  ck_assert_int_eq(th_ld(&q.bad_order), 0);
  ck_assert_int_eq(th_ld(&q.bad_thread), 0);
  ck_assert_int_eq(th_ld(&g_bad_ctx), 0);
  gev_conn_unref(p.c);
  gev_conn_unref(q.c);
  gev_loop_free(lt.l);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  ck_assert_int_eq(th_count_fds(), fds0);
  ck_assert_msg(th_wait_threads(threads0, 5000), "%d threads, %d before",
                th_count_threads(), threads0);
}
END_TEST

/* ---- 2. refused ------------------------------------------------------- */

START_TEST(connect_refused)
{
  char addr[64];
  int fds0 = th_count_fds();
  th_loop_thread lt;
  probe p;

  th_lt_start(&lt);
  probe_init(&p, lt.l);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", th_free_port());
  probe_connect(&p, lt.l, addr, 0, 0);
  ck_assert(th_wait_int(&p.results, 1, 10000));
  usleep(100000); /* a second on_result or an on_connect would show now */
  assert_failed_once(&p, -ECONNREFUSED);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  assert_failed_once(&p, -ECONNREFUSED);
  gev_loop_free(lt.l);
  ck_assert_int_eq(th_count_fds(), fds0);
}
END_TEST

/* A loop freed without ever running drops the queued connect: on_result
 * never runs, and nothing leaks (the ASan and valgrind runs check that). */
START_TEST(connect_on_unrun_loop_freed)
{
  gev_loop *l;
  probe p;

  ck_assert_int_eq(gev_loop_new(&l), 0);
  probe_init(&p, l);
  probe_connect(&p, l, "127.0.0.1:9", 0, 0);
  gev_loop_free(l);
  ck_assert_int_eq(p.results, 0);
}
END_TEST

/* ---- 3. timeout ------------------------------------------------------- */

START_TEST(connect_timeout)
{
  int lfd, port, cfd[FILL_MAX], ncfd, fds0 = th_count_fds();
  char addr[64];
  th_loop_thread lt;
  probe p;

  ncfd = fill_listener(&lfd, &port, cfd);
  th_lt_start(&lt);
  probe_init(&p, lt.l);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
  probe_connect(&p, lt.l, addr, 200, 0);
  ck_assert_msg(th_wait_int(&p.results, 1, 10000),
                "a 200 ms connect timeout did not fire within 10 s");
  usleep(100000);
  assert_failed_once(&p, -ETIMEDOUT);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  assert_failed_once(&p, -ETIMEDOUT);
  gev_loop_free(lt.l);
  close_all(cfd, ncfd);
  close(lfd);
  ck_assert_int_eq(th_count_fds(), fds0);
}
END_TEST

/* ---- 4. bad arguments, stopped loop ----------------------------------- */

START_TEST(connect_bad_arguments)
{
  /* None of these may reach a resolver: all fail in the parser. */
  static const char *const bad[] = {
      "",
      "nonsense",
      "127.0.0.1",
      "127.0.0.1:",
      "127.0.0.1:65536",
      "127.0.0.1:-1",
      "127.0.0.1:80x",
      "1.2.3.4.5:80",
      "256.1.1.1:80",
      "[::1:80",
      "[::1]80",
      "[::1]:",
      "::1:80",
      "unix:",
      "[nothex]:80",
  };
  char longpath[200];
  gev_connect_options o = {.on_result = p_result};
  th_loop_thread lt;
  probe p;

  th_lt_start(&lt);
  probe_init(&p, lt.l);
  o.arg = o.context = &p;
  for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
    o.address = bad[i];
    int r = gev_loop_connect(lt.l, &probe_handler, &o);
    ck_assert_msg(r == -EINVAL, "\"%s\": %d (%s), want -EINVAL", bad[i], r,
                  gev_strerror(r));
  }
  memset(longpath, 'a', sizeof(longpath) - 1);
  longpath[sizeof(longpath) - 1] = '\0';
  memcpy(longpath, "unix:/tmp/", 10);
  o.address = longpath;
  ck_assert_int_eq(gev_loop_connect(lt.l, &probe_handler, &o), -ENAMETOOLONG);

  o.address = "127.0.0.1:9";
  ck_assert_int_eq(gev_loop_connect(NULL, &probe_handler, &o), -EINVAL);
  ck_assert_int_eq(gev_loop_connect(lt.l, NULL, &o), -EINVAL);
  ck_assert_int_eq(gev_loop_connect(lt.l, &probe_handler, NULL), -EINVAL);
  o.address = NULL;
  ck_assert_int_eq(gev_loop_connect(lt.l, &probe_handler, &o), -EINVAL);

  /* Anything posted by the calls above has run once this has. */
  th_run_in_loop(lt.l, th_noop, NULL);
  usleep(50000);
  ck_assert_int_eq(th_ld(&p.results), 0);

  ck_assert_int_eq(th_lt_stop(&lt), 0);
  o.address = "127.0.0.1:9";
  ck_assert_int_eq(gev_loop_connect(lt.l, &probe_handler, &o), -ESHUTDOWN);
  ck_assert_int_eq(th_ld(&p.results), 0);
  ck_assert_int_eq(th_ld(&g_bad_ctx), 0);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- 5. unix sockets -------------------------------------------------- */

START_TEST(connect_unix)
{
  static const char ping[] = "ping over a unix socket";
  const size_t n = sizeof(ping) - 1;
  char path[108], addr[120], missing[120], deaf[108], deaf_addr[120];
  struct sockaddr_un sun = {.sun_family = AF_UNIX};
  gev_options so = {.num_loops = 1, .address = addr};
  int fds0 = th_count_fds(), dfd;
  th_loop_thread lt;
  th_server *srv;
  probe p;

  th_reset_counters();
  snprintf(path, sizeof(path), "/tmp/gev-client-%d.sock", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", path);
  unlink(path);
  srv = th_start(&greet_handler, &so);
  th_lt_start(&lt);

  /* Both ways: the server's greeting, then the echo of what we sent. */
  probe_init(&p, lt.l);
  p.hello = ping;
  p.hello_len = n;
  p.close_at = 3 + n;
  probe_connect(&p, lt.l, addr, 1000, 0);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  ck_assert_int_eq(p.result_err, 0);
  ck_assert_int_eq(th_ld(&p.got), (int)(3 + n));
  ck_assert(memcmp(p.rx, "hi\n", 3) == 0);
  ck_assert(memcmp(p.rx + 3, ping, n) == 0);
  ck_assert_str_eq(p.peer, path);
  ck_assert_int_eq(th_ld(&p.bad_order), 0);
  ck_assert_int_eq(th_ld(&p.bad_thread), 0);
  ck_assert(th_wait_int(&th_closes, 1, 10000));
  gev_conn_unref(p.c);

  /* No socket file at all: connect(2) says ENOENT at once. */
  probe_init(&p, lt.l);
  snprintf(missing, sizeof(missing), "unix:/tmp/gev-client-%d-missing.sock",
           (int)getpid());
  probe_connect(&p, lt.l, missing, 0, 0);
  ck_assert(th_wait_int(&p.results, 1, 10000));
  assert_failed_once(&p, -ENOENT);

  /* A socket file nobody listens on: ECONNREFUSED. */
  snprintf(deaf, sizeof(deaf), "/tmp/gev-client-%d-deaf.sock", (int)getpid());
  snprintf(deaf_addr, sizeof(deaf_addr), "unix:%s", deaf);
  unlink(deaf);
  snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", deaf);
  dfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(dfd, 0);
  ck_assert_int_eq(bind(dfd, (struct sockaddr *)&sun, sizeof(sun)), 0);
  probe_init(&p, lt.l);
  probe_connect(&p, lt.l, deaf_addr, 0, 0);
  ck_assert(th_wait_int(&p.results, 1, 10000));
  assert_failed_once(&p, -ECONNREFUSED);
  close(dfd);
  unlink(deaf);

  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  th_stop(srv);
  ck_assert_int_eq(access(path, F_OK), -1); /* gev_server_free removed it */
  ck_assert_int_eq(th_ld(&th_violations), 0);
  ck_assert_int_eq(th_count_fds(), fds0);
}
END_TEST

/* ---- 6. the loop stops with a connect under way ----------------------- */

START_TEST(stop_cancels_connect)
{
  int lfd, port, cfd[FILL_MAX], ncfd, fds0 = th_count_fds();
  char addr[64];
  th_loop_thread lt;
  gev_loop *l;
  probe p;

  ncfd = fill_listener(&lfd, &port, cfd);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);

  /* Under way on a running loop. */
  th_lt_start(&lt);
  probe_init(&p, lt.l);
  probe_connect(&p, lt.l, addr, 0, 0);
  th_run_in_loop(lt.l, th_noop, NULL); /* the connect has started */
  usleep(50000);
  ck_assert_int_eq(th_ld(&p.results), 0);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  assert_failed_once(&p, -ECANCELED);
  gev_loop_free(lt.l);

  /* Posted to a loop that was told to stop before it ran: its one pass
   * starts the connect, and the stop cancels it. */
  ck_assert_int_eq(gev_loop_new(&l), 0);
  probe_init(&p, l);
  gev_loop_stop(l);
  probe_connect(&p, l, addr, 0, 0);
  ck_assert_int_eq(gev_loop_run(l), 0); /* in this thread */
  assert_failed_once(&p, -ECANCELED);
  gev_loop_free(l);

  close_all(cfd, ncfd);
  close(lfd);
  ck_assert_int_eq(th_count_fds(), fds0);
}
END_TEST

/* ---- 7. from another thread onto a server's worker loop --------------- */

static int g_s1_connects, g_s1_closes;

static void s1_connect(gev_conn *c)
{
  (void)c;
  th_inc(&g_s1_connects);
}

static void s1_close(gev_conn *c)
{
  (void)c;
  th_inc(&g_s1_closes);
}

static const gev_handler s1_handler = {s1_connect, th_echo_msg, s1_close};

static bool roundtrip(int fd, const char *msg)
{
  char buf[256];
  size_t n = strlen(msg);

  return n <= sizeof(buf) && th_write_all(fd, msg, n) &&
         th_read_exact(fd, buf, n) && memcmp(buf, msg, n) == 0;
}

START_TEST(connect_on_server_worker_loop)
{
  static const char hello[] = "outgoing from a worker loop";
  gev_options to = {.num_loops = 1};
  gev_options so = {.num_loops = 1, .max_connections = 1};
  th_server *target, *s1;
  char addr[64];
  gev_loop *wl;
  probe p, q;
  int in1, in2, in3;

  th_reset_counters();
  th_st(&g_s1_connects, 0);
  th_st(&g_s1_closes, 0);
  target = th_start(&th_echo_handler, &to);
  s1 = th_start(&s1_handler, &so);
  wl = gev_server_worker_loop(s1->s, 0);
  ck_assert_ptr_nonnull(wl);
  ck_assert_int_eq(gev_loop_run(wl), -EINVAL); /* a server's loop */
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", target->port);

  probe_init(&p, wl);
  p.want_server = s1->s;
  p.hello = hello;
  p.hello_len = sizeof(hello) - 1;
  probe_connect(&p, wl, addr, 5000, 0); /* from the test thread */
  ck_assert(th_wait_int(&p.got, (int)p.hello_len, 10000));
  ck_assert(memcmp(p.rx, hello, p.hello_len) == 0);
  ck_assert_int_eq(p.result_err, 0);
  ck_assert_int_eq(gev_server_conn_count(s1->s), 0);

  /* max_connections = 1 still admits one inbound client... */
  in1 = th_connect(s1->port);
  ck_assert_int_ge(in1, 0);
  ck_assert(roundtrip(in1, "inbound one"));
  ck_assert_int_eq(th_ld(&g_s1_connects), 1);
  ck_assert_int_eq(gev_server_conn_count(s1->s), 1);
  /* ...and only one. */
  in2 = th_connect(s1->port);
  ck_assert_int_ge(in2, 0);
  ck_assert(th_wait_eof(in2, 10000));
  ck_assert_int_eq(th_ld(&g_s1_connects), 1);

  /* Closing the outgoing one frees no inbound slot. */
  ck_assert_int_eq(gev_conn_close(p.c), 0);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  ck_assert_int_eq(gev_server_conn_count(s1->s), 1);
  in3 = th_connect(s1->port);
  ck_assert_int_ge(in3, 0);
  ck_assert(th_wait_eof(in3, 10000));
  ck_assert_int_eq(th_ld(&g_s1_connects), 1);
  ck_assert(roundtrip(in1, "inbound one, still"));

  /* A second outgoing connection, left open: the stop closes it. */
  probe_init(&q, wl);
  q.want_server = s1->s;
  probe_connect(&q, wl, addr, 0, 0);
  ck_assert(th_wait_int(&q.connects, 1, 10000));
  ck_assert_int_eq(gev_server_conn_count(s1->s), 1);
  th_stop(s1);
  ck_assert_int_eq(th_ld(&q.closes), 1);
  ck_assert_int_eq(th_ld(&g_s1_closes), 1);
  ck_assert(th_wait_eof(in1, 10000));
  ck_assert(th_wait_int(&th_closes, 2, 10000)); /* the target saw both */

  for (probe *x = &p; x; x = x == &p ? &q : NULL) {
    ck_assert_int_eq(th_ld(&x->results), 1);
    ck_assert_int_eq(th_ld(&x->connects), 1);
    ck_assert_int_eq(th_ld(&x->closes), 1);
    ck_assert_int_eq(th_ld(&x->bad_order), 0);
    ck_assert_int_eq(th_ld(&x->bad_thread), 0);
    ck_assert_int_eq(th_ld(&x->bad_server), 0); /* gev_conn_server: s1 */
    gev_conn_unref(x->c);
  }
  ck_assert_int_eq(th_ld(&g_bad_ctx), 0);
  th_stop(target);
  close(in1);
  close(in2);
  close(in3);
}
END_TEST

/* ---- 8. pause and resume reading -------------------------------------- *
 * A server handler that pauses in on_connect; '|' in the input makes it
 * pause again, leaving the rest in `in`. */

/* The server-side connection of the pause tests (8, 8c), paused from
 * on_connect; each test brings its own on_message. */
static struct {
  gev_conn *c; /* with a reference */
  int connects, closes, msgs, pauses, got, bad;
  int keep; /* 8c: the EOF call (the second) consumes nothing */
  char rx[4096];
} pz;

/* Before the server starts (no loop thread touches pz then). */
static void pz_reset(int keep)
{
  memset(&pz, 0, sizeof(pz));
  pz.keep = keep;
}

static void pz_connect(gev_conn *c)
{
  if (gev_conn_pause_read(c) != 0)
    th_inc(&pz.bad);
  gev_conn_ref(c);
  pz.c = c;
  th_inc(&pz.connects);
}

static void pz_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  int got = th_ld(&pz.got);
  char ch;

  (void)out;
  th_inc(&pz.msgs);
  while (ringbuffer_read(in, &ch, 1) == 1) {
    if (ch == '|') {
      if (gev_conn_pause_read(c) != 0)
        th_inc(&pz.bad);
      th_inc(&pz.pauses);
      break;
    }
    if (got < (int)sizeof(pz.rx))
      pz.rx[got++] = ch;
  }
  th_st(&pz.got, got);
}

static void pz_close(gev_conn *c)
{
  (void)c;
  th_inc(&pz.closes);
}

static const gev_handler pz_handler = {pz_connect, pz_message, pz_close};

/* Nothing more reaches on_message for 200 ms. */
static void assert_no_message(int msgs, int got)
{
  usleep(200000);
  ck_assert_int_eq(th_ld(&pz.msgs), msgs);
  ck_assert_int_eq(th_ld(&pz.got), got);
}

START_TEST(pause_resume_read)
{
  gev_options so = {.num_loops = 1};
  char a[1000];
  th_server *srv;
  int fd, msgs;

  pz_reset(0);
  srv = th_start(&pz_handler, &so);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&pz.connects, 1, 10000));

  /* Paused from on_connect: the data waits. */
  memset(a, 'A', sizeof(a));
  ck_assert(th_write_all(fd, a, sizeof(a)));
  assert_no_message(0, 0);
  ck_assert_int_eq(gev_conn_resume_read(pz.c), 0); /* another thread */
  ck_assert(th_wait_int(&pz.got, 1000, 10000));
  ck_assert(memcmp(pz.rx, a, sizeof(a)) == 0);

  /* Paused mid-stream, input held back; more arrives while paused. */
  ck_assert(th_write_all(fd, "xxxx|yyyy", 9));
  ck_assert(th_wait_int(&pz.pauses, 1, 10000));
  ck_assert_int_eq(th_ld(&pz.got), 1004);
  ck_assert(th_write_all(fd, "zzzz", 4));
  msgs = th_ld(&pz.msgs);
  assert_no_message(msgs, 1004);
  ck_assert_int_eq(gev_conn_resume_read(pz.c), 0);
  ck_assert(th_wait_int(&pz.got, 1012, 10000));
  ck_assert(memcmp(pz.rx + 1000, "xxxxyyyyzzzz", 12) == 0);

  /* Held input is shown again after resume without any new bytes. */
  ck_assert(th_write_all(fd, "1111|2222", 9));
  ck_assert(th_wait_int(&pz.pauses, 2, 10000));
  msgs = th_ld(&pz.msgs);
  assert_no_message(msgs, 1016);
  ck_assert_int_eq(gev_conn_resume_read(pz.c), 0);
  ck_assert(th_wait_int(&pz.got, 1020, 10000));
  ck_assert(memcmp(pz.rx + 1012, "11112222", 8) == 0);

  /* Paused from another thread. */
  ck_assert_int_eq(gev_conn_pause_read(pz.c), 0);
  th_run_in_loop(gev_server_worker_loop(srv->s, 0), th_noop, NULL);
  ck_assert(th_write_all(fd, "5555", 4));
  msgs = th_ld(&pz.msgs);
  assert_no_message(msgs, 1020);
  ck_assert_int_eq(gev_conn_resume_read(pz.c), 0);
  ck_assert(th_wait_int(&pz.got, 1024, 10000));
  ck_assert(memcmp(pz.rx + 1020, "5555", 4) == 0);

  /* Closed: -ENOTCONN, with our reference keeping c valid. */
  close(fd);
  ck_assert(th_wait_int(&pz.closes, 1, 10000));
  ck_assert_int_eq(gev_conn_pause_read(pz.c), -ENOTCONN);
  ck_assert_int_eq(gev_conn_resume_read(pz.c), -ENOTCONN);
  ck_assert_int_eq(gev_conn_pause_read(NULL), -EINVAL);
  ck_assert_int_eq(gev_conn_resume_read(NULL), -EINVAL);
  ck_assert_int_eq(th_ld(&pz.bad), 0);
  gev_conn_unref(pz.c);
  th_stop(srv);
}
END_TEST

/* ---- 8b. a pause from another connection's callback ------------------- *
 * Connection A's on_message pauses connection B (what a proxy does) while
 * B's input is ready in the same pass: B must not see it. */

static gev_conn *g_xp[2];
static int g_xp_n, g_xp_a_msgs, g_xp_b_msgs, g_xp_b_got, g_xp_bad;

static void xp_connect(gev_conn *c)
{
  int i = th_ld(&g_xp_n);

  if (i < 2) {
    gev_conn_ref(c);
    g_xp[i] = c;
  }
  th_inc(&g_xp_n);
}

static void xp_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)out;
  if (c == g_xp[0]) {
    if (ringbuffer_find(in, "p", 1) >= 0 && gev_conn_pause_read(g_xp[1]) != 0)
      th_inc(&g_xp_bad);
    ringbuffer_retrieve_all(in);
    th_inc(&g_xp_a_msgs);
  } else {
    int n = (int)ringbuffer_len(in);
    ringbuffer_retrieve_all(in);
    th_inc(&g_xp_b_msgs);
    __atomic_fetch_add(&g_xp_b_got, n, __ATOMIC_SEQ_CST);
  }
}

static const gev_handler xp_handler = {xp_connect, xp_message, NULL};

START_TEST(pause_from_other_connection)
{
  gev_options so = {.num_loops = 1};
  th_server *srv;
  blocker b;
  int fa, fb;

  g_xp[0] = g_xp[1] = NULL;
  th_st(&g_xp_n, 0);
  th_st(&g_xp_a_msgs, 0);
  th_st(&g_xp_b_msgs, 0);
  th_st(&g_xp_b_got, 0);
  th_st(&g_xp_bad, 0);
  srv = th_start(&xp_handler, &so);
  fa = th_connect(srv->port);
  ck_assert_int_ge(fa, 0);
  ck_assert(th_wait_int(&g_xp_n, 1, 10000));
  fb = th_connect(srv->port);
  ck_assert_int_ge(fb, 0);
  ck_assert(th_wait_int(&g_xp_n, 2, 10000));

  /* Both inputs become ready while the loop is busy: its next pass
   * dispatches A (readable first), then B. */
  block_loop(gev_server_worker_loop(srv->s, 0), &b);
  ck_assert(th_write_all(fa, "p", 1));
  ck_assert(th_write_all(fb, "data", 4));
  usleep(20000); /* both on the wire before the loop looks */
  block_release(&b);
  ck_assert(th_wait_int(&g_xp_a_msgs, 1, 10000));
  usleep(200000);
  ck_assert_msg(th_ld(&g_xp_b_msgs) == 0,
                "B got on_message after A paused it in the same pass");
  ck_assert_int_eq(gev_conn_resume_read(g_xp[1]), 0);
  ck_assert(th_wait_int(&g_xp_b_got, 4, 10000));
  ck_assert_int_eq(th_ld(&g_xp_bad), 0);
  close(fa);
  close(fb);
  th_stop(srv);
  gev_conn_unref(g_xp[0]);
  gev_conn_unref(g_xp[1]);
}
END_TEST

/* ---- 8c. paused with held input after the peer's EOF ------------------ *
 * The handler takes one byte per call and pauses from its second call on,
 * which comes with the peer's EOF: the held input must wait for resume
 * without the loop spinning, and then all of it arrives before the close. */

static void ep_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  int got = th_ld(&pz.got);

  (void)out;
  if (th_ld(&pz.keep) && th_ld(&pz.msgs) == 1)
    ; /* takes nothing this time */
  else if (got < (int)sizeof(pz.rx) && ringbuffer_read(in, pz.rx + got, 1) == 1)
    th_st(&pz.got, got + 1);
  if (th_ld(&pz.msgs) >= 1 && gev_conn_pause_read(c) != 0)
    th_inc(&pz.bad);
  th_inc(&pz.msgs);
}

static const gev_handler ep_handler = {pz_connect, ep_message, pz_close};

/* Up to call 2 (the one with the EOF); returns the server and the fd. */
static th_server *ep_begin(int keep, int *fd)
{
  gev_options so = {.num_loops = 1};
  th_server *srv;

  pz_reset(keep);
  srv = th_start(&ep_handler, &so);
  *fd = th_connect(srv->port);
  ck_assert_int_ge(*fd, 0);
  ck_assert(th_wait_int(&pz.connects, 1, 10000));
  ck_assert(th_write_all(*fd, "abcdef", 6));
  ck_assert_int_eq(shutdown(*fd, SHUT_WR), 0);
  usleep(50000);
  ck_assert_int_eq(gev_conn_resume_read(pz.c), 0);
  /* Call 1 takes 'a'; call 2, with the EOF, takes 'b' (or, with keep,
   * nothing) and pauses. */
  ck_assert(th_wait_int(&pz.msgs, 2, 10000));
  return srv;
}

/* Each resume shows the held input again, one byte per call, until all
 * of it is in; then the connection closes. */
static void ep_finish(th_server *srv, int fd)
{
  for (int i = 0; i < 10 && th_ld(&pz.closes) == 0; i++) {
    int calls = th_ld(&pz.msgs);
    ck_assert_int_eq(gev_conn_resume_read(pz.c), 0);
    for (int w = 0;
         w < 10000 && th_ld(&pz.msgs) == calls && th_ld(&pz.closes) == 0; w++)
      usleep(1000);
  }
  ck_assert(th_wait_int(&pz.closes, 1, 10000));
  ck_assert_int_eq(th_ld(&pz.got), 6);
  ck_assert(memcmp(pz.rx, "abcdef", 6) == 0);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert_int_eq(th_ld(&pz.bad), 0);
  gev_conn_unref(pz.c);
  close(fd);
  th_stop(srv);
}

START_TEST(paused_after_peer_eof_no_spin)
{
  uint64_t cpu0, cpu1;
  th_server *srv;
  int fd;

  srv = ep_begin(0, &fd);
  cpu0 = th_cpu_ms();
  usleep(500000);
  cpu1 = th_cpu_ms();
  ck_assert_int_eq(th_ld(&pz.msgs), 2);
  ck_assert_int_eq(th_ld(&pz.closes), 0);
  ck_assert_msg(cpu1 - cpu0 < 100,
                "%llu ms of CPU in 500 ms while paused: the loop spins",
                (unsigned long long)(cpu1 - cpu0));
  ep_finish(srv, fd);
}
END_TEST

/* The same, but the EOF call consumes nothing before pausing: the held
 * input is not dropped by a close. */
START_TEST(paused_after_peer_eof_keeps_input)
{
  th_server *srv;
  int fd;

  srv = ep_begin(1, &fd);
  usleep(200000);
  ck_assert_int_eq(th_ld(&pz.msgs), 2);
  ck_assert_msg(th_ld(&pz.closes) == 0,
                "closed with input held by a paused handler");
  ck_assert_int_eq(th_ld(&pz.got), 1);
  ep_finish(srv, fd);
}
END_TEST

/* ---- 8e. closed by the handler during a redelivery -------------------- *
 * Held input shown again after resume runs at the end of a pass; the
 * handler closes there. Nobody but the loop holds a reference, so the
 * loop must not touch the connection after its own reference went (under
 * ASan or valgrind a use after free shows). */

static gev_conn *g_rc; /* no reference: valid until on_close */
static int g_rc_connects, g_rc_calls, g_rc_closes, g_rc_bad;

static void rc_connect(gev_conn *c)
{
  g_rc = c;
  th_inc(&g_rc_connects);
}

static void rc_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)out;
  if (th_ld(&g_rc_calls) == 0) {
    if (gev_conn_pause_read(c) != 0) /* keeps the input */
      th_inc(&g_rc_bad);
  } else {
    ringbuffer_retrieve_all(in);
    if (gev_conn_close(c) != 0)
      th_inc(&g_rc_bad);
  }
  th_inc(&g_rc_calls);
}

static void rc_close(gev_conn *c)
{
  (void)c;
  th_inc(&g_rc_closes);
}

static const gev_handler rc_handler = {rc_connect, rc_message, rc_close};

static void rc_resume(void *arg)
{
  (void)arg;
  if (gev_conn_resume_read(g_rc) != 0)
    th_inc(&g_rc_bad);
}

START_TEST(close_during_redelivery)
{
  gev_options so = {.num_loops = 1};
  th_server *srv;
  gev_loop *wl;
  int fd;

  g_rc = NULL;
  th_st(&g_rc_connects, 0);
  th_st(&g_rc_calls, 0);
  th_st(&g_rc_closes, 0);
  th_st(&g_rc_bad, 0);
  srv = th_start(&rc_handler, &so);
  wl = gev_server_worker_loop(srv->s, 0);
  for (int i = 0; i < 20; i++) {
    int calls = th_ld(&g_rc_calls), closes = th_ld(&g_rc_closes);

    fd = th_connect(srv->port);
    ck_assert_int_ge(fd, 0);
    ck_assert(th_wait_int(&g_rc_connects, i + 1, 10000));
    ck_assert(th_write_all(fd, "held", 4));
    ck_assert(th_wait_int(&g_rc_calls, calls + 1, 10000));
    /* In the loop's thread: the connection is open (paused, input held). */
    th_run_in_loop(wl, rc_resume, NULL);
    ck_assert(th_wait_int(&g_rc_closes, closes + 1, 10000));
    ck_assert(th_wait_eof(fd, 10000));
    ck_assert_int_eq(th_ld(&g_rc_calls), calls + 2);
    close(fd);
    th_st(&g_rc_calls, 0);
  }
  th_run_in_loop(wl, th_noop, NULL); /* a few more passes over the zombies */
  th_run_in_loop(wl, th_noop, NULL);
  ck_assert_int_eq(th_ld(&g_rc_bad), 0);
  th_stop(srv);
}
END_TEST

/* ---- 8d. paused by the handler with the input at max_buffer ----------- *
 * An outgoing connection with a 4 KiB cap; the peer sends 8 KiB. Call 1
 * (4 KiB, the cap) consumes nothing; the read after it finds the input
 * full and shows it again: call 2 pauses, still consuming nothing. That is
 * waiting, not a frame too large for the cap: no close. */

static int g_fc_calls, g_fc_got, g_fc_bad;

static void fc_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  int calls = th_ld(&g_fc_calls);

  (void)out;
  if (calls == 1 && gev_conn_pause_read(c) != 0)
    th_inc(&g_fc_bad);
  if (calls >= 2) {
    __atomic_fetch_add(&g_fc_got, (int)ringbuffer_len(in), __ATOMIC_SEQ_CST);
    ringbuffer_retrieve_all(in);
  }
  th_inc(&g_fc_calls);
}

START_TEST(paused_at_input_cap_not_closed)
{
  gev_handler h = {p_connect, fc_message, p_close};
  static char data[8 * KIB];
  th_loop_thread lt;
  int lfd, fd;
  probe p;

  th_st(&g_fc_calls, 0);
  th_st(&g_fc_got, 0);
  th_st(&g_fc_bad, 0);
  memset(data, 'c', sizeof(data));
  fd = probe_accepted(&lt, &p, &h, 4 * KIB, &lfd);
  ck_assert(th_write_all(fd, data, sizeof(data)));
  ck_assert(th_wait_int(&g_fc_calls, 2, 10000));
  usleep(200000);
  ck_assert_int_eq(th_ld(&g_fc_calls), 2);
  ck_assert_msg(th_ld(&p.closes) == 0, "closed while paused at the input cap");
  ck_assert_int_eq(gev_conn_resume_read(p.c), 0);
  ck_assert(th_wait_int(&g_fc_got, (int)sizeof(data), 10000));
  ck_assert_int_eq(th_ld(&p.closes), 0);
  ck_assert_int_eq(th_ld(&g_fc_bad), 0);
  close(fd);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  probe_end(&lt, &p);
  close(lfd);
}
END_TEST

/* ---- 9. the drain notification ---------------------------------------- */

static int g_in_call; /* inside gev_conn_notify_drain (loop thread) */
static int g_dr_fired, g_dr_inside, g_dr_bad, g_dr_rearm, g_dr_other;
static size_t g_dr_wlen; /* output length when it fired */
static int g_dr_marker;

static void dr_reset(void)
{
  th_st(&g_in_call, 0);
  th_st(&g_dr_fired, 0);
  th_st(&g_dr_inside, 0);
  th_st(&g_dr_bad, 0);
  th_st(&g_dr_rearm, 0);
  th_st(&g_dr_other, 0);
  g_dr_wlen = 0;
}

static void dr_fn(gev_conn *c, void *arg)
{
  if (th_ld(&g_in_call))
    th_inc(&g_dr_inside);
  if (arg != &g_dr_marker || !gev_loop_in_thread(gev_conn_loop(c)))
    th_inc(&g_dr_bad);
  g_dr_wlen = gev_conn_write_buffer_len(c);
  if (th_ld(&g_dr_rearm) > 0) {
    __atomic_fetch_sub(&g_dr_rearm, 1, __ATOMIC_SEQ_CST);
    if (gev_conn_notify_drain(c, 0, dr_fn, arg) != 0)
      th_inc(&g_dr_bad);
  }
  th_inc(&g_dr_fired); /* last: publishes g_dr_wlen */
}

static void dr_other_fn(gev_conn *c, void *arg)
{
  (void)c;
  (void)arg;
  th_inc(&g_dr_other); /* must never run */
}

/* Sets the notification, flagging the call so dr_fn can tell. */
static int notify(gev_conn *c, size_t low, void (*fn)(gev_conn *, void *),
                  void *arg)
{
  int r;

  th_st(&g_in_call, 1);
  r = gev_conn_notify_drain(c, low, fn, arg);
  th_st(&g_in_call, 0);
  return r;
}

/* On an open connection with empty output, in the loop's thread. */
typedef struct dr_step {
  gev_conn *c;
  int which;
  int rc1, rc2;
} dr_step;

static void dr_step_run(void *arg)
{
  dr_step *s = arg;

  switch (s->which) {
  case 0: /* replaced, then fires once */
    s->rc1 = notify(s->c, 0, dr_other_fn, &g_dr_marker);
    s->rc2 = notify(s->c, 0, dr_fn, &g_dr_marker);
    break;
  case 1: /* cancelled */
    s->rc1 = notify(s->c, 0, dr_other_fn, &g_dr_marker);
    s->rc2 = notify(s->c, 0, NULL, NULL);
    break;
  case 2: /* re-armed once from fn */
    th_st(&g_dr_rearm, 1);
    s->rc1 = notify(s->c, 0, dr_fn, &g_dr_marker);
    s->rc2 = 0;
    break;
  case 3: /* set, then closed in the same callback */
    s->rc1 = notify(s->c, 1 << 20, dr_other_fn, &g_dr_marker);
    s->rc2 = gev_conn_close(s->c);
    break;
  }
}

static void dr_step_do(gev_loop *l, gev_conn *c, int which)
{
  dr_step s = {c, which, 1, 1};

  th_run_in_loop(l, dr_step_run, &s);
  ck_assert_int_eq(s.rc1, 0);
  ck_assert_int_eq(s.rc2, 0);
}

static int g_dr_close_rc;

static void drc_close(gev_conn *c)
{
  g_dr_close_rc = gev_conn_notify_drain(c, 0, dr_other_fn, NULL);
  p_close(c);
}

START_TEST(drain_when_already_low)
{
  static const char hello[] = "ping";
  gev_options so = {.num_loops = 1};
  gev_handler h = {p_connect, p_message, drc_close};
  gev_connect_options o = {0};
  th_server *srv;
  th_loop_thread lt;
  char addr[64];
  probe p;

  th_reset_counters();
  dr_reset();
  g_dr_close_rc = 1;
  srv = th_start(&th_echo_handler, &so);
  th_lt_start(&lt);
  probe_init(&p, lt.l);
  p.hello = hello;
  p.hello_len = 4;
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv->port);
  o = (gev_connect_options){
      .address = addr, .context = &p, .on_result = p_result, .arg = &p};
  ck_assert_int_eq(gev_loop_connect(lt.l, &h, &o), 0);
  ck_assert(th_wait_int(&p.got, 4, 10000)); /* output is empty again */

  /* Fires after the pass, never inside the call; the later call replaced
   * the earlier one. */
  dr_step_do(lt.l, p.c, 0);
  ck_assert(th_wait_int(&g_dr_fired, 1, 10000));
  ck_assert_int_eq(th_ld(&g_dr_inside), 0);
  ck_assert_int_eq(g_dr_wlen, 0);

  /* One-shot: more traffic (every write settles the connection again)
   * does not fire it again. */
  ck_assert_int_eq(gev_conn_send(p.c, "pong", 4), 0);
  ck_assert(th_wait_int(&p.got, 8, 10000));
  usleep(100000);
  ck_assert_int_eq(th_ld(&g_dr_fired), 1);

  /* fn NULL cancels. */
  dr_step_do(lt.l, p.c, 1);
  th_run_in_loop(lt.l, th_noop, NULL);
  ck_assert_int_eq(gev_conn_send(p.c, "more", 4), 0);
  ck_assert(th_wait_int(&p.got, 12, 10000));
  usleep(100000);

  /* Set again from fn: fires once more, then stops. */
  dr_step_do(lt.l, p.c, 2);
  ck_assert(th_wait_int(&g_dr_fired, 3, 10000));
  usleep(100000);
  ck_assert_int_eq(th_ld(&g_dr_fired), 3);
  ck_assert_int_eq(th_ld(&g_dr_inside), 0);

  /* Owning loop's thread only. */
  ck_assert_int_eq(gev_conn_notify_drain(p.c, 0, dr_fn, &g_dr_marker), -EINVAL);
  ck_assert_int_eq(gev_conn_notify_drain(NULL, 0, dr_fn, NULL), -EINVAL);

  /* Closed before it could fire: never fires; and not settable from
   * on_close. */
  dr_step_do(lt.l, p.c, 3);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  usleep(100000);
  ck_assert_int_eq(g_dr_close_rc, -ENOTCONN);

  ck_assert_int_eq(th_ld(&g_dr_other), 0);
  ck_assert_int_eq(th_ld(&g_dr_fired), 3);
  ck_assert_int_eq(th_ld(&g_dr_bad), 0);
  probe_end(&lt, &p);
  th_stop(srv);
}
END_TEST

/* A big send from on_connect of an outgoing connection to a peer that
 * reads late; the notification is set right after it. */
#define BIG (16 * MIB)
#define LOW (256 * KIB)

static unsigned char *g_big;
static int g_big_rc;

static void big_connect(gev_conn *c)
{
  g_big_rc = gev_conn_send(c, g_big, BIG);
  if (notify(c, LOW, dr_fn, &g_dr_marker) != 0)
    th_inc(&g_dr_bad);
  p_connect(c); /* last: publishes g_big_rc */
}

typedef struct wlen_q {
  gev_conn *c;
  size_t n;
} wlen_q;

static void wlen_task(void *arg)
{
  wlen_q *q = arg;
  q->n = gev_conn_write_buffer_len(q->c);
}

static size_t out_len(gev_loop *l, gev_conn *c)
{
  wlen_q q = {c, 0};
  th_run_in_loop(l, wlen_task, &q);
  return q.n;
}

START_TEST(drain_when_output_drains)
{
  gev_handler h = {big_connect, p_message, p_close};
  unsigned char *rx;
  th_loop_thread lt;
  int lfd, fd;
  probe p;

  dr_reset();
  g_big = malloc(BIG);
  rx = malloc(BIG);
  ck_assert(g_big && rx);
  th_fill(g_big, BIG, 7);
  g_big_rc = 1;
  fd = probe_accepted(&lt, &p, &h, 0, &lfd);
  ck_assert_int_eq(g_big_rc, 0);

  /* The peer does not read: the output stays high, no notification. */
  usleep(300000);
  ck_assert_int_eq(th_ld(&g_dr_fired), 0);
  ck_assert_uint_gt(out_len(lt.l, p.c), LOW);
  ck_assert_int_eq(th_ld(&g_dr_fired), 0);

  /* It reads: the notification comes once the output is down to LOW. */
  ck_assert(th_read_exact(fd, rx, BIG));
  ck_assert(memcmp(rx, g_big, BIG) == 0);
  ck_assert(th_wait_int(&g_dr_fired, 1, 10000));
  ck_assert_uint_le(g_dr_wlen, LOW);
  usleep(100000);
  ck_assert_int_eq(th_ld(&g_dr_fired), 1);
  ck_assert_int_eq(th_ld(&g_dr_inside), 0);
  ck_assert_int_eq(th_ld(&g_dr_bad), 0);

  close(fd);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  probe_end(&lt, &p);
  close(lfd);
  free(rx);
  free(g_big);
  g_big = NULL;
}
END_TEST

START_TEST(drain_never_after_close)
{
  gev_handler h = {big_connect, p_message, drc_close};
  struct linger lg = {1, 0};
  th_loop_thread lt;
  int lfd, fd;
  probe p;

  dr_reset();
  g_dr_close_rc = 1;
  g_big = malloc(BIG);
  ck_assert_ptr_nonnull(g_big);
  memset(g_big, 'b', BIG);
  fd = probe_accepted(&lt, &p, &h, 0, &lfd);
  ck_assert_uint_gt(out_len(lt.l, p.c), LOW);

  /* The peer resets with most of the output unsent. */
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(fd);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  th_run_in_loop(lt.l, th_noop, NULL);
  usleep(100000);
  ck_assert_int_eq(th_ld(&g_dr_fired), 0);
  ck_assert_int_eq(g_dr_close_rc, -ENOTCONN);
  ck_assert_int_eq(th_ld(&g_dr_bad), 0);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  ck_assert_int_eq(th_ld(&g_dr_fired), 0);
  gev_conn_unref(p.c);
  gev_loop_free(lt.l);
  close(lfd);
  free(g_big);
  g_big = NULL;
}
END_TEST

/* ---- 10. max_buffer on an outgoing connection ------------------------- */

#define CAP (64 * KIB)

static int g_mb_rc[4];
static size_t g_mb_wlen, g_mb_sent;
static unsigned char g_mb_a[CAP + 1];

/* A send that finds nothing queued is written at once, so the cap fills
 * only once the kernel's buffers are full (the peer is not reading yet):
 * send whole caps until one is refused. */
static void mb_connect(gev_conn *c)
{
  int r = 0;

  g_mb_rc[0] = gev_conn_send(c, g_mb_a, CAP + 1); /* past the cap */
  for (int i = 0; i < 4000 && r == 0; i++) {
    r = gev_conn_send(c, g_mb_a, CAP); /* exactly the cap */
    if (r == 0)
      g_mb_sent += CAP;
  }
  g_mb_rc[1] = g_mb_sent >= CAP ? 0 : -1;
  g_mb_rc[2] = r; /* the cap, finally full */
  g_mb_wlen = gev_conn_write_buffer_len(c);
  p_connect(c); /* last: publishes the above */
}

START_TEST(outgoing_max_buffer_enobufs)
{
  gev_handler h = {mb_connect, p_message, p_close};
  static unsigned char b40[40 * KIB], rx[CAP + 40 * KIB];
  th_loop_thread lt;
  int lfd, fd;
  blocker blk;
  probe p;

  memset(g_mb_rc, 1, sizeof(g_mb_rc));
  g_mb_sent = 0;
  th_fill(g_mb_a, sizeof(g_mb_a), 3);
  memset(b40, 'B', sizeof(b40));
  fd = probe_accepted(&lt, &p, &h, CAP, &lfd);
  ck_assert_int_eq(g_mb_rc[0], -ENOBUFS);
  ck_assert_int_eq(g_mb_rc[1], 0);
  ck_assert_int_eq(g_mb_rc[2], -ENOBUFS);
  ck_assert_uint_gt(g_mb_wlen, 0);
  ck_assert_uint_le(g_mb_wlen, CAP);

  /* Everything accepted arrives; then the output is empty. */
  for (size_t got = 0; got < g_mb_sent; got += CAP) {
    ck_assert(th_read_exact(fd, rx, CAP));
    ck_assert(memcmp(rx, g_mb_a, CAP) == 0);
  }
  for (int i = 0; i < 1000 && out_len(lt.l, p.c) > 0; i++)
    usleep(1000);
  ck_assert_uint_eq(out_len(lt.l, p.c), 0);

  /* From another thread, while the loop cannot take anything: the cap
   * counts what is in flight. */
  block_loop(lt.l, &blk);
  ck_assert_int_eq(gev_conn_send(p.c, g_mb_a, CAP + 1), -ENOBUFS);
  ck_assert_int_eq(gev_conn_send(p.c, b40, sizeof(b40)), 0);
  ck_assert_int_eq(gev_conn_send(p.c, b40, sizeof(b40)), -ENOBUFS);
  block_release(&blk);
  ck_assert(th_read_exact(fd, rx, sizeof(b40)));
  ck_assert(memcmp(rx, b40, sizeof(b40)) == 0);
  ck_assert(quiet_for(fd, 200)); /* refused sends never arrive */

  close(fd);
  ck_assert(th_wait_int(&p.closes, 1, 10000));
  probe_end(&lt, &p);
  close(lfd);
}
END_TEST

/* ---- 11. two gev peers streaming at each other ------------------------ *
 * A gev client pushes a stream into a gev echo server and reads the echo
 * back, both with small caps and small socket buffers. The client's output
 * is full of its own sends, not of replies to its input: reading must go
 * on, or the server's output fills, the server stops reading, the client's
 * output never drains, and both wait for ever. */

#define FD_TOTAL ((size_t)8 << 20)
#define FD_CHUNK (16 * KIB)

typedef struct fd_state {
  size_t sent, got;
  int bad, done;
} fd_state;

static fd_state g_fd;

static unsigned char fd_byte(size_t off)
{
  return (unsigned char)(off ^ (off >> 11) * 7);
}

static void fd_pump(gev_conn *c, void *arg)
{
  unsigned char buf[FD_CHUNK];

  (void)arg;
  while (g_fd.sent < FD_TOTAL) {
    size_t n =
        FD_TOTAL - g_fd.sent < FD_CHUNK ? FD_TOTAL - g_fd.sent : FD_CHUNK;
    int r;

    for (size_t i = 0; i < n; i++)
      buf[i] = fd_byte(g_fd.sent + i);
    r = gev_conn_send(c, buf, n);
    if (r == -ENOBUFS) {
      if (gev_conn_notify_drain(c, 8 * KIB, fd_pump, NULL) != 0)
        th_inc(&g_fd.bad);
      return;
    }
    if (r != 0) {
      th_inc(&g_fd.bad);
      return;
    }
    g_fd.sent += n;
  }
}

static void fd_connect(gev_conn *c)
{
  fd_pump(c, NULL);
}

static void fd_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  unsigned char buf[4096];
  size_t n;

  (void)out;
  while ((n = ringbuffer_read(in, buf, sizeof(buf))) > 0) {
    for (size_t i = 0; i < n; i++)
      if (buf[i] != fd_byte(g_fd.got + i))
        th_inc(&g_fd.bad);
    g_fd.got += n;
  }
  if (g_fd.got == FD_TOTAL) {
    gev_conn_close(c);
    th_st(&g_fd.done, 1);
  }
}

START_TEST(full_duplex_gev_peers)
{
  gev_options so = {.num_loops = 1,
                    .max_buffer = 64 * KIB,
                    .rcvbuf = 16 * KIB,
                    .sndbuf = 16 * KIB};
  gev_handler h = {fd_connect, fd_message, NULL};
  char addr[64];
  th_loop_thread lt;
  th_server *srv;

  memset(&g_fd, 0, sizeof(g_fd));
  th_reset_counters();
  srv = th_start(&th_echo_handler, &so);
  snprintf(addr, sizeof(addr), "127.0.0.1:%d", srv->port);
  gev_connect_options o = {.address = addr,
                           .max_buffer = 64 * KIB,
                           .rcvbuf = 16 * KIB,
                           .sndbuf = 16 * KIB};
  th_lt_start(&lt);
  ck_assert_int_eq(gev_loop_connect(lt.l, &h, &o), 0);
  ck_assert_msg(th_wait_int(&g_fd.done, 1, 30000),
                "stalled: %zu of %zu sent, %zu echoed back", g_fd.sent,
                FD_TOTAL, g_fd.got);
  ck_assert_int_eq(th_ld(&g_fd.bad), 0);
  ck_assert_int_eq(th_ld(&th_violations), 0);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  th_stop(srv);
}
END_TEST

/* ---- the suite -------------------------------------------------------- */

static Suite *client_suite(void)
{
  const th_case cases[] = {
      {"standalone_loop_echo", standalone_loop_echo, 60},
      {"connect_refused", connect_refused, 60},
      {"connect_on_unrun_loop_freed", connect_on_unrun_loop_freed, 60},
      {"connect_timeout", connect_timeout, 60},
      {"connect_bad_arguments", connect_bad_arguments, 60},
      {"connect_unix", connect_unix, 60},
      {"stop_cancels_connect", stop_cancels_connect, 60},
      {"connect_on_server_worker_loop", connect_on_server_worker_loop, 60},
      {"pause_resume_read", pause_resume_read, 60},
      {"pause_from_other_connection", pause_from_other_connection, 60},
      {"paused_after_peer_eof_no_spin", paused_after_peer_eof_no_spin, 60},
      {"paused_after_peer_eof_keeps_input", paused_after_peer_eof_keeps_input,
       60},
      {"paused_at_input_cap_not_closed", paused_at_input_cap_not_closed, 60},
      {"close_during_redelivery", close_during_redelivery, 60},
      {"drain_when_already_low", drain_when_already_low, 60},
      {"drain_when_output_drains", drain_when_output_drains, 60},
      {"drain_never_after_close", drain_never_after_close, 60},
      {"outgoing_max_buffer_enobufs", outgoing_max_buffer_enobufs, 60},
      {"full_duplex_gev_peers", full_duplex_gev_peers, 60},
  };

  return th_suite("client", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(client_suite());
}
