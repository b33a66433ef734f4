/* test-shutdown.c - gev_server_shutdown: listeners close at once, what was
 * accepted for sending is delivered, idle connections close, on_shutdown
 * runs once, the deadline bounds it all, and gev_server_start returns as
 * soon as the last connection is gone. */
#include "helpers.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB ((size_t)1 << 20)

/* A server whose gev_server_start runs on a thread we can time. */
typedef struct runner {
  gev_server *s;
  pthread_t t;
  int rc;
  int returned; /* th_inc'ed when gev_server_start returned */
  uint64_t returned_at;
} runner;

static void *run_main(void *arg)
{
  runner *r = arg;

  r->rc = gev_server_start(r->s);
  r->returned_at = th_now_ms();
  th_inc(&r->returned);
  return NULL;
}

static int start_runner(runner *r, const gev_handler *h, gev_options *opt)
{
  if (!opt->address)
    opt->address = "127.0.0.1:0";
  memset(r, 0, sizeof(*r));
  ck_assert_int_eq(gev_server_new(&r->s, h, opt), 0);
  r->rc = 1;
  ck_assert_int_eq(pthread_create(&r->t, NULL, run_main, r), 0);
  return gev_server_port(r->s);
}

static void finish_runner(runner *r)
{
  th_join(r->t, 20);
  ck_assert_int_eq(r->rc, 0);
  gev_server_free(r->s);
}

/* ---- output accepted before the shutdown is delivered ------------------- */

static unsigned char *big;
#define BIG (16 * MIB)

static void big_connect(gev_conn *c)
{
  /* Far more than the kernel takes: most of it waits in the output. */
  ck_assert_int_eq(gev_conn_send(c, big, BIG), 0);
  th_inc(&th_connects);
}

START_TEST(shutdown_delivers_queued_output)
{
  gev_handler h = {big_connect, th_echo_msg, th_count_close};
  gev_options opt = {.num_loops = 2};
  unsigned char *got = malloc(BIG);
  runner r;
  int fd, port;

  th_reset_counters();
  big = malloc(BIG);
  ck_assert_ptr_nonnull(big);
  ck_assert_ptr_nonnull(got);
  th_fill(big, BIG, 11);
  port = start_runner(&r, &h, &opt);
  fd = th_connect(port);
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  usleep(50 * 1000); /* the kernel's buffers fill; the client reads nothing */
  ck_assert_int_eq(gev_server_shutdown(r.s, 20000), 0);
  usleep(100 * 1000);
  ck_assert_int_eq(th_ld(&r.returned), 0); /* still delivering */
  ck_assert_int_lt(th_connect(port), 0);   /* but refusing */
  ck_assert(th_read_exact(fd, got, BIG));
  ck_assert(memcmp(got, big, BIG) == 0);
  ck_assert(th_wait_eof(fd, 5000)); /* then closed, gracefully */
  ck_assert(th_wait_int(&r.returned, 1, 5000));
  ck_assert_int_eq(th_ld(&th_closes), 1);
  close(fd);
  finish_runner(&r);
  free(got);
  free(big);
}
END_TEST

/* ---- idle connections close, and start returns at once ------------------ */

START_TEST(shutdown_closes_idle_connections_promptly)
{
  gev_options opt = {.num_loops = 2};
  uint64_t t0;
  runner r;
  int fds[8], port;

  th_reset_counters();
  port = start_runner(&r, &th_echo_handler, &opt);
  for (int i = 0; i < 8; i++) {
    fds[i] = th_connect(port);
    ck_assert(th_echo_roundtrip(fds[i], 1000, (uint32_t)i));
  }
  t0 = th_now_ms();
  ck_assert_int_eq(gev_server_shutdown(r.s, 30000), 0);
  for (int i = 0; i < 8; i++)
    ck_assert(th_wait_eof(fds[i], 5000));
  ck_assert(th_wait_int(&r.returned, 1, 5000));
  /* Long before the 30 s deadline. */
  ck_assert_uint_lt(r.returned_at - t0, 5000);
  ck_assert_int_eq(th_ld(&th_closes), 8);
  for (int i = 0; i < 8; i++)
    close(fds[i]);
  finish_runner(&r);
}
END_TEST

/* ---- held input keeps a connection until the deadline ------------------- */

/* Consumes nothing: a partial request that never completes. */
static void hold_msg(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)c;
  (void)in;
  (void)out;
}

START_TEST(shutdown_deadline_bounds_it)
{
  gev_handler h = {th_count_connect, hold_msg, th_count_close};
  gev_options opt = {.num_loops = 1};
  uint64_t t0, took;
  runner r;
  int fd, port;

  th_reset_counters();
  port = start_runner(&r, &h, &opt);
  fd = th_connect(port);
  ck_assert(th_write_all(fd, "partial", 7));
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  usleep(50 * 1000);
  t0 = th_now_ms();
  ck_assert_int_eq(gev_server_shutdown(r.s, 600), 0);
  ck_assert(th_wait_int(&r.returned, 1, 10000));
  took = r.returned_at - t0;
  ck_assert_msg(took >= 550 && took < 5000, "returned after %llu ms",
                (unsigned long long)took);
  ck_assert_int_eq(th_ld(&th_closes), 1);
  close(fd);
  finish_runner(&r);
}
END_TEST

/* ---- on_shutdown: once per connection, and the handler ends it ---------- */

static int shut_calls, shut_bad_thread;

static void on_shut(gev_conn *c)
{
  if (!gev_loop_in_thread(gev_conn_loop(c)))
    th_inc(&shut_bad_thread);
  th_inc(&shut_calls);
  gev_conn_send(c, "bye\n", 4);
  gev_conn_close(c);
}

START_TEST(on_shutdown_runs_once_and_handler_ends)
{
  gev_handler h = {.on_connect = th_count_connect,
                   .on_message = th_echo_msg,
                   .on_close = th_count_close,
                   .on_shutdown = on_shut};
  gev_options opt = {.num_loops = 2};
  char got[4];
  runner r;
  int fds[4], port;

  th_reset_counters();
  th_st(&shut_calls, 0);
  th_st(&shut_bad_thread, 0);
  port = start_runner(&r, &h, &opt);
  for (int i = 0; i < 4; i++) {
    fds[i] = th_connect(port);
    ck_assert(th_echo_roundtrip(fds[i], 100, (uint32_t)i));
  }
  ck_assert_int_eq(gev_server_shutdown(r.s, 30000), 0);
  ck_assert_int_eq(gev_server_shutdown(r.s, 30000), -EALREADY);
  for (int i = 0; i < 4; i++) {
    ck_assert(th_read_exact(fds[i], got, 4));
    ck_assert(memcmp(got, "bye\n", 4) == 0);
    ck_assert(th_wait_eof(fds[i], 5000));
    close(fds[i]);
  }
  ck_assert(th_wait_int(&r.returned, 1, 5000));
  ck_assert_int_eq(th_ld(&shut_calls), 4);
  ck_assert_int_eq(th_ld(&shut_bad_thread), 0);
  ck_assert_int_eq(gev_server_shutdown(NULL, 1), -EINVAL);
  finish_runner(&r);
}
END_TEST

/* ---- from a signal handler, with reuse_port, and before start ---------- */

static gev_server *sig_server;

static void on_sigusr1(int sig)
{
  (void)sig;
  gev_server_shutdown(sig_server, 5000); /* async-signal-safe */
}

/* A connection holding input keeps the server draining while the test
 * checks that every worker's own listener refuses. */
START_TEST(shutdown_from_signal_handler_reuse_port)
{
  struct sigaction sa = {.sa_handler = on_sigusr1};
  gev_handler h = {th_count_connect, hold_msg, th_count_close};
  gev_options opt = {.num_loops = 2, .reuse_port = true};
  runner r;
  int fd, port;

  th_reset_counters();
  port = start_runner(&r, &h, &opt);
  sig_server = r.s;
  sigemptyset(&sa.sa_mask);
  ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
  fd = th_connect(port);
  ck_assert(th_write_all(fd, "held", 4));
  ck_assert(th_wait_int(&th_connects, 1, 5000));
  ck_assert_int_eq(kill(getpid(), SIGUSR1), 0);
  usleep(200 * 1000);
  ck_assert_int_eq(th_ld(&r.returned), 0);
  for (int i = 0; i < 16; i++) /* spread over both listeners */
    ck_assert_int_lt(th_connect(port), 0);
  close(fd); /* its EOF ends the last connection, and the shutdown */
  ck_assert(th_wait_int(&r.returned, 1, 5000));
  finish_runner(&r);
  signal(SIGUSR1, SIG_DFL);
}
END_TEST

START_TEST(shutdown_before_start_returns_at_once)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 2};
  gev_server *s;

  ck_assert_int_eq(gev_server_new(&s, &th_echo_handler, &opt), 0);
  ck_assert_int_eq(gev_server_shutdown(s, 60000), 0);
  ck_assert_int_eq(gev_server_start(s), 0); /* nothing to wait for */
  gev_server_free(s);
}
END_TEST

static Suite *shutdown_suite(void)
{
  const th_case cases[] = {
      {"shutdown_delivers_queued_output", shutdown_delivers_queued_output, 60},
      {"shutdown_closes_idle_connections_promptly",
       shutdown_closes_idle_connections_promptly, 30},
      {"shutdown_deadline_bounds_it", shutdown_deadline_bounds_it, 30},
      {"on_shutdown_runs_once_and_handler_ends",
       on_shutdown_runs_once_and_handler_ends, 30},
      {"shutdown_from_signal_handler_reuse_port",
       shutdown_from_signal_handler_reuse_port, 30},
      {"shutdown_before_start_returns_at_once",
       shutdown_before_start_returns_at_once, 30},
  };

  return th_suite("shutdown", cases, sizeof(cases) / sizeof(cases[0]));
}

int main(void)
{
  return th_run(shutdown_suite());
}
