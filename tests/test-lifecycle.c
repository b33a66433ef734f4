/* test-lifecycle.c - a connection's life as the connection layer defines
 * it: the handler switch, the context's destructor, its addresses, the
 * order of freeing clients and loops, and a loop whose poller fails. */
#include "helpers.h"

#include "loop-internal.h" /* the poller's fd, to make it fail */

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <gev/transport.h>
#include <sys/socket.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ---- gev_conn_set_handler --------------------------------------------- */

/* The first handler answers "A:" lines until it reads "UP\n"; then it
 * hands the connection to the second, which answers "B:" and gets the
 * bytes that came in the same read as "UP\n". */
static int sw_first_closes, sw_second_closes, sw_second_connects;

static void second_connect(gev_conn *c)
{
  (void)c;
  th_inc(&sw_second_connects); /* must never run: no on_connect on a switch */
}

static void second_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  char buf[256];
  size_t n = ringbuffer_read(in, buf, sizeof(buf));

  (void)c;
  ringbuffer_write(out, "B:", 2);
  ringbuffer_write(out, buf, n);
}

static void second_close(gev_conn *c)
{
  (void)c;
  th_inc(&sw_second_closes);
}

static const gev_handler second = {second_connect, second_msg, second_close};

static void first_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  ssize_t at = ringbuffer_find(in, "UP\n", 3);

  if (at < 0) {
    char buf[256];
    size_t n = ringbuffer_read(in, buf, sizeof(buf));
    ringbuffer_write(out, "A:", 2);
    ringbuffer_write(out, buf, n);
    return;
  }
  ringbuffer_retrieve(in, (size_t)at + 3);
  ck_assert_int_eq(gev_conn_set_handler(c, &second), 0);
  ringbuffer_write(out, "OK\n", 3); /* this call's reply still goes out */
}

static void first_close(gev_conn *c)
{
  (void)c;
  th_inc(&sw_first_closes);
}

START_TEST(set_handler_hands_over_with_leftover_input)
{
  gev_handler first = {th_count_connect, first_msg, first_close};
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  char got[32];
  int fd;

  th_reset_counters();
  srv = th_start(&first, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_write_all(fd, "x", 1));
  ck_assert(th_read_exact(fd, got, 3));
  ck_assert(memcmp(got, "A:x", 3) == 0);
  /* "UP" and the bytes behind it in one write: the second handler must be
   * shown "tail" without any further input. */
  ck_assert(th_write_all(fd, "UP\ntail", 7));
  ck_assert(th_read_exact(fd, got, 3 + 6));
  ck_assert_msg(memcmp(got, "OK\nB:tail", 9) == 0, "got %.9s", got);
  ck_assert(th_write_all(fd, "y", 1));
  ck_assert(th_read_exact(fd, got, 3));
  ck_assert(memcmp(got, "B:y", 3) == 0);
  close(fd);
  ck_assert(th_wait_int(&sw_second_closes, 1, 5000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&sw_first_closes), 0);
  ck_assert_int_eq(th_ld(&sw_second_closes), 1);
  ck_assert_int_eq(th_ld(&sw_second_connects), 0);
  ck_assert_int_eq(th_ld(&th_connects), 1);
}
END_TEST

static int sh_rc[3];

static void sh_connect(gev_conn *c)
{
  th_st(&sh_rc[0], gev_conn_set_handler(c, NULL));
  th_inc(&th_connects);
}

static gev_conn *sh_conn;

static void sh_keep(gev_conn *c)
{
  gev_conn_ref(c);
  sh_conn = c;
  th_inc(&th_connects);
}

static void sh_from_thread(void *arg)
{
  (void)arg;
}

START_TEST(set_handler_refuses_misuse)
{
  gev_handler h = {sh_connect, th_echo_msg, th_count_close};
  gev_handler k = {sh_keep, th_echo_msg, th_count_close};
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  int fd;

  th_reset_counters();
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  close(fd);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&sh_rc[0]), -EINVAL);

  /* From a thread that is not the loop's; and once closed. */
  th_reset_counters();
  srv = th_start(&k, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  ck_assert_int_eq(gev_conn_set_handler(sh_conn, &h), -EINVAL);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  th_run_in_loop(gev_conn_loop(sh_conn), sh_from_thread, NULL);
  th_stop(srv);
  gev_conn_unref(sh_conn);
}
END_TEST

/* ---- the context's destructor ----------------------------------------- */

static int ctx_freed, ctx_freed_after_close;
static gev_conn *ctx_conn;

static void ctx_free_fn(void *ctx)
{
  /* After on_close, and with the very pointer that was set. */
  if (th_ld(&th_closes) >= 1)
    th_inc(&ctx_freed_after_close);
  free(ctx);
  th_inc(&ctx_freed);
}

static void ctx_connect(gev_conn *c)
{
  gev_conn_set_context(c, strdup("state"));
  gev_conn_set_context_free(c, ctx_free_fn);
  th_inc(&th_connects);
}

static void ctx_connect_ref(gev_conn *c)
{
  ctx_connect(c);
  gev_conn_ref(c);
  ctx_conn = c;
}

START_TEST(context_free_runs_at_last_reference)
{
  gev_handler h = {ctx_connect, th_echo_msg, th_count_close};
  gev_handler r = {ctx_connect_ref, th_echo_msg, th_count_close};
  gev_options opt = {.num_loops = 1};
  th_server *srv;
  int fd;

  /* No user reference: freed with the loop's, after on_close. */
  th_reset_counters();
  th_st(&ctx_freed, 0);
  th_st(&ctx_freed_after_close, 0);
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_echo_roundtrip(fd, 100, 1));
  close(fd);
  ck_assert(th_wait_int(&ctx_freed, 1, 5000));
  ck_assert_int_eq(th_ld(&ctx_freed_after_close), 1);

  /* A reference held past on_close, and past the server: freed by the
   * last unref, in this thread. */
  th_stop(srv);
  th_reset_counters();
  th_st(&ctx_freed, 0);
  srv = th_start(&r, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_echo_roundtrip(fd, 100, 2));
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&ctx_freed), 0);
  ck_assert(!gev_conn_connected(ctx_conn));
  ck_assert_int_eq(gev_conn_send(ctx_conn, "x", 1), -ENOTCONN);
  ck_assert_int_eq(gev_conn_close(ctx_conn), -ENOTCONN);
  gev_conn_unref(ctx_conn);
  ck_assert_int_eq(th_ld(&ctx_freed), 1);
}
END_TEST

/* ---- addresses ---------------------------------------------------------- */

static char la_local[128], la_peer[128];
static int la_listener = -2;

static void la_connect(gev_conn *c)
{
  snprintf(la_local, sizeof(la_local), "%s", gev_conn_local_addr(c));
  snprintf(la_peer, sizeof(la_peer), "%s", gev_conn_peer_addr(c));
  th_st(&la_listener, gev_conn_listener(c));
  th_inc(&th_connects);
}

START_TEST(local_addr_and_listener)
{
  gev_handler h = {la_connect, th_echo_msg, th_count_close};
  gev_options opt = {.num_loops = 1};
  char want[64];
  th_server *srv;
  int fd;

  th_reset_counters();
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  snprintf(want, sizeof(want), "127.0.0.1:%d", srv->port);
  ck_assert_str_eq(la_local, want);
  ck_assert_str_ne(la_peer, la_local); /* the client's ephemeral port */
  ck_assert_int_eq(th_ld(&la_listener), 0);
  ck_assert_int_eq(gev_conn_listener(NULL), -1);
  close(fd);
  th_stop(srv);
}
END_TEST

/* ---- freeing a client after its loop ------------------------------------ */

/* The rule in client.h: gev_client_free after gev_loop_free is safe, both
 * when the loop ran (and finished) and when it never ran. Under ASan or
 * valgrind the old code read the freed loop here. */
START_TEST(client_free_after_loop_free)
{
  gev_client_options co = {.connect = {.address = "127.0.0.1:1"}};
  th_loop_thread lt;
  gev_client *cl;
  gev_loop *l;

  ck_assert_int_eq(gev_loop_new(&l), 0);
  ck_assert_int_eq(gev_client_new(&cl, l, &th_echo_handler, &co), 0);
  gev_loop_free(l); /* never ran: the client's start task is dropped */
  gev_client_free(cl);

  th_lt_start(&lt);
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &th_echo_handler, &co), 0);
  th_run_in_loop(lt.l, th_noop, NULL);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  gev_client_free(cl);
}
END_TEST

/* ---- a failing poller ---------------------------------------------------- */

/* Turns the loop's epoll fd into a plain file: epoll_wait then fails with
 * EINVAL on every call. The loop must stop with that error rather than
 * spin (the old loop ignored it and spun). */
static void break_poller(void *arg)
{
  gev_loop *l = arg;
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);

  ck_assert_int_ge(fd, 0);
  ck_assert_int_ge(dup2(fd, l->poller.epfd), 0);
  close(fd);
}

START_TEST(poller_error_stops_loop)
{
  th_loop_thread lt;
  uint64_t cpu;

  th_lt_start(&lt);
  cpu = th_cpu_ms();
  ck_assert_int_eq(gev_loop_post(lt.l, break_poller, lt.l), 0);
  /* Bounded: join fails the test after its limit if the loop spins. */
  th_join(lt.t, 10);
  ck_assert_int_eq(lt.rc, -EINVAL);
  ck_assert_uint_lt(th_cpu_ms() - cpu, 2000);
  gev_loop_free(lt.l);
}
END_TEST

static void break_worker(void *arg)
{
  break_poller(arg);
}

START_TEST(poller_error_in_worker_stops_server)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 2};
  gev_server *s;
  int rc;

  ck_assert_int_eq(gev_server_new(&s, &th_echo_handler, &opt), 0);
  /* Queued before start: runs in worker 1 once it runs. */
  ck_assert_int_eq(gev_loop_post(gev_server_worker_loop(s, 1), break_worker,
                                 gev_server_worker_loop(s, 1)),
                   0);
  rc = gev_server_start(s); /* returns: the failed worker stopped it */
  ck_assert_int_eq(rc, -EINVAL);
  gev_server_free(s);
}
END_TEST

/* ---- a transport with a handshake -------------------------------------- */

/* A toy handshake: the side that accepted waits for "HI\n" (with the first
 * step asking for writability, to exercise that wait too); anything else
 * fails it. It reads greedily, so bytes the peer sent right after the
 * greeting end up inside the transport, as TLS records do: its read hands
 * them out first, and the library must ask for them without a readiness
 * event. */
typedef struct hs {
  int steps;
  size_t got, left;
  char buf[64];
} hs;

static int hs_opens, hs_closes;

static int hs_open(gev_conn *c, void *arg, void **state)
{
  (void)c;
  (void)arg;
  *state = calloc(1, sizeof(hs));
  th_inc(&hs_opens);
  return *state ? 0 : -ENOMEM;
}

static void hs_close(void *state)
{
  free(state);
  th_inc(&hs_closes);
}

static int hs_handshake(void *state, int fd)
{
  hs *h = state;
  ssize_t n;

  if (h->steps++ == 0)
    return GEV_TRANSPORT_WANT_WRITE;
  n = recv(fd, h->buf + h->got, sizeof(h->buf) - h->got, MSG_DONTWAIT);
  if (n == 0)
    return -ECONNRESET;
  if (n < 0)
    return errno == EAGAIN ? GEV_TRANSPORT_WANT_READ : -errno;
  h->got += (size_t)n;
  if (h->got < 3)
    return GEV_TRANSPORT_WANT_READ;
  if (memcmp(h->buf, "HI\n", 3) != 0)
    return -EPROTO;
  h->left = h->got - 3;
  memmove(h->buf, h->buf + 3, h->left);
  return 0;
}

static ssize_t hs_read(void *state, int fd, ringbuffer *in)
{
  hs *h = state;

  if (h->left) {
    size_t n = h->left;
    if (ringbuffer_write(in, h->buf, n) < 0)
      return -ENOBUFS;
    h->left = 0;
    return (ssize_t)n;
  }
  return gev_transport_plain()->read(NULL, fd, in);
}

static ssize_t hs_write(void *state, int fd, ringbuffer *out)
{
  (void)state;
  return gev_transport_plain()->write(NULL, fd, out);
}

static ssize_t hs_send(void *state, int fd, const void *p, size_t n)
{
  (void)state;
  return gev_transport_plain()->send(NULL, fd, p, n);
}

static int hs_shutdown(void *state, int fd)
{
  (void)state;
  return gev_transport_plain()->shutdown(NULL, fd);
}

static const gev_transport hs_transport = {
    .open = hs_open,
    .read = hs_read,
    .write = hs_write,
    .send = hs_send,
    .shutdown = hs_shutdown,
    .close = hs_close,
    .handshake = hs_handshake,
};

START_TEST(handshake_before_on_connect)
{
  gev_options opt = {.num_loops = 1, .transport = &hs_transport};
  th_server *srv;
  char got[8];
  int fd, bad;

  th_reset_counters();
  th_st(&hs_opens, 0);
  th_st(&hs_closes, 0);
  srv = th_start(&th_echo_handler, &opt);
  fd = th_connect(srv->port);
  ck_assert_int_ge(fd, 0);
  ck_assert(th_wait_int(&hs_opens, 1, 5000));
  usleep(100 * 1000);
  ck_assert_int_eq(th_ld(&th_connects), 0); /* the handshake waits */
  /* The greeting and the first bytes in one segment: "hello" sits inside
   * the transport when the handshake completes. */
  ck_assert(th_write_all(fd, "HI\nhello", 8));
  ck_assert(th_read_exact(fd, got, 5));
  ck_assert(memcmp(got, "hello", 5) == 0);
  ck_assert_int_eq(th_ld(&th_connects), 1);
  ck_assert(th_echo_roundtrip(fd, 5000, 7));

  /* A failed handshake: closed, unseen by the handler. */
  bad = th_connect(srv->port);
  ck_assert(th_write_all(bad, "NO\n", 3));
  ck_assert(th_wait_eof(bad, 5000));
  close(bad);
  ck_assert(th_wait_int(&hs_closes, 1, 5000));
  ck_assert_int_eq(th_ld(&th_connects), 1);
  ck_assert_int_eq(th_ld(&th_closes), 0);
  close(fd);
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  th_stop(srv);
  ck_assert_int_eq(th_ld(&hs_opens), th_ld(&hs_closes));
}
END_TEST

static int hs_results[2], hs_errs[2];

static void hs_result(gev_conn *c, int err, void *arg)
{
  int i = (int)(intptr_t)arg;

  th_st(&hs_errs[i], err);
  if (c)
    gev_conn_close(c);
  th_inc(&hs_results[i]);
}

/* An outgoing connection reports its result once the handshake is over:
 * success, or the handshake's error. */
START_TEST(handshake_result_outgoing)
{
  const char *say[2] = {"HI\n", "NO\n"};
  th_loop_thread lt;

  th_lt_start(&lt);
  for (int i = 0; i < 2; i++) {
    char addr[64];
    int port, lfd = th_listen_plain(8, &port), fd;
    gev_connect_options co = {.address = addr,
                              .on_result = hs_result,
                              .arg = (void *)(intptr_t)i,
                              .transport = &hs_transport};

    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    ck_assert_int_eq(gev_loop_connect(lt.l, &th_echo_handler, &co), 0);
    fd = th_accept(lfd);
    usleep(50 * 1000);
    ck_assert_int_eq(th_ld(&hs_results[i]), 0); /* not before the greeting */
    ck_assert(th_write_all(fd, say[i], 3));
    ck_assert(th_wait_int(&hs_results[i], 1, 5000));
    close(fd);
    close(lfd);
  }
  ck_assert_int_eq(th_ld(&hs_errs[0]), 0);
  ck_assert_int_eq(th_ld(&hs_errs[1]), -EPROTO);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- a closed fd a forked child still holds ----------------------------- */

static void echo_then_close(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  ringbuffer_move(out, in, ringbuffer_len(in));
  gev_conn_close(c);
}

/* epoll watches the open file, not the fd: while a forked child that has
 * not exec'ed yet holds a copy, closing the server's fd leaves the file
 * registered, and its events would name the freed connection (ASan: a use
 * after free in run_pass; without ASan a loop spinning on the event). The
 * connection leaves the poller before its close. Found by CI's ASan run
 * of the TLS tests, which fork openssl and curl. */
START_TEST(close_while_forked_child_holds_fd)
{
  gev_handler h = {th_count_connect, echo_then_close, th_count_close};
  gev_options opt = {.num_loops = 1};
  uint64_t cpu;
  th_server *srv;
  char got[1];
  pid_t pid;
  int fd, st;

  th_reset_counters();
  srv = th_start(&h, &opt);
  fd = th_connect(srv->port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  pid = fork(); /* holds a copy of every fd, the server's socket too */
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    _exit(0);
  }
  ck_assert(th_write_all(fd, "x", 1));
  ck_assert(th_read_exact(fd, got, 1));
  ck_assert(th_wait_int(&th_closes, 1, 5000));
  /* The server's fd is closed; the file lives on in the child, so these
   * bytes make it readable. */
  cpu = th_cpu_ms();
  for (int i = 0; i < 20; i++) {
    ck_assert(th_write_all(fd, "more", 4));
    usleep(20 * 1000);
  }
  ck_assert_uint_lt(th_cpu_ms() - cpu, 300); /* the loop did not spin */
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  close(fd);
  th_stop(srv);
  ck_assert_int_eq(th_ld(&th_closes), 1);
}
END_TEST

static Suite *lifecycle_suite(void)
{
  const th_case cases[] = {
      {"set_handler_hands_over_with_leftover_input",
       set_handler_hands_over_with_leftover_input, 30},
      {"set_handler_refuses_misuse", set_handler_refuses_misuse, 30},
      {"context_free_runs_at_last_reference",
       context_free_runs_at_last_reference, 30},
      {"local_addr_and_listener", local_addr_and_listener, 30},
      {"client_free_after_loop_free", client_free_after_loop_free, 30},
      {"poller_error_stops_loop", poller_error_stops_loop, 30},
      {"poller_error_in_worker_stops_server",
       poller_error_in_worker_stops_server, 30},
      {"handshake_before_on_connect", handshake_before_on_connect, 30},
      {"handshake_result_outgoing", handshake_result_outgoing, 30},
      {"close_while_forked_child_holds_fd", close_while_forked_child_holds_fd,
       30},
  };

  return th_suite("lifecycle", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(lifecycle_suite());
}
