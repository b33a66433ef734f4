/*
 * test-reconnect.c - gev_client: a connection a loop keeps open. Retries
 * with exponential backoff (growth, cap, reset after a success), reconnect
 * after the peer closes, an end-to-end echo through a gev server that
 * restarts on a unix socket, gev_client_free from another thread and from
 * inside each of the client's callbacks, abandoning a connect under way,
 * the loop stopping under a waiting client, a loop that never ran, and bad
 * arguments. Memory is checked by the sanitizer and valgrind runs.
 *
 * Only loopback and unix sockets. Every wait is bounded. Time is checked
 * only as lower bounds (a retry never comes before its delay) and as upper
 * bounds with a wide margin below the value the bug would give.
 */
#include "helpers.h"

#include <check.h>
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- a recording client handler --------------------------------------- */

#define MAX_RESULTS 64

/* What the client's callbacks saw. Written in the loop's thread, each
 * count last (th_inc), so a reader that saw a count sees what it covers. */
typedef struct rec {
  int results;
  int errs[MAX_RESULTS];
  uint64_t at[MAX_RESULTS];
  int connects, closes, bad_thread, bad_conn;
  int got;
  char rx[256];
  /* Set by the test. */
  gev_loop *loop;
  const char *hello; /* sent from on_connect */
  int free_in;       /* FREE_IN_*: call gev_client_free from there */
} rec;

enum { FREE_IN_NONE, FREE_IN_RESULT, FREE_IN_CONNECT, FREE_IN_CLOSE };

static rec g;
static gev_client *g_cl;  /* for frees from inside the callbacks */
static unsigned g_jitter; /* jitter_pct for client_start */

static void rec_reset(gev_loop *l)
{
  g_jitter = 0;
  memset(&g, 0, sizeof(g));
  g.loop = l;
  g_cl = NULL;
}

static void check_thread(void)
{
  if (!gev_loop_in_thread(g.loop))
    th_inc(&g.bad_thread);
}

static void on_result(gev_conn *c, int err, void *arg)
{
  int i = th_ld(&g.results);

  check_thread();
  if (arg != &g || (c == NULL) != (err != 0))
    th_inc(&g.bad_conn);
  if (i < MAX_RESULTS) {
    g.errs[i] = err;
    g.at[i] = th_now_ms();
  }
  th_inc(&g.results);
  if (g.free_in == FREE_IN_RESULT)
    gev_client_free(g_cl);
}

static void on_connect(gev_conn *c)
{
  check_thread();
  if (g_cl && gev_client_conn(g_cl) != c)
    th_inc(&g.bad_conn);
  if (g.hello && gev_conn_send(c, g.hello, strlen(g.hello)) != 0)
    th_inc(&g.bad_conn);
  th_inc(&g.connects);
  if (g.free_in == FREE_IN_CONNECT)
    gev_client_free(g_cl);
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  int got = th_ld(&g.got);
  size_t n = ringbuffer_len(in);

  (void)c;
  (void)out;
  check_thread();
  if (n > sizeof(g.rx) - 1 - (size_t)got)
    n = sizeof(g.rx) - 1 - (size_t)got;
  ringbuffer_read(in, g.rx + got, n);
  ringbuffer_retrieve_all(in);
  th_st(&g.got, got + (int)n);
}

static void on_close(gev_conn *c)
{
  check_thread();
  if (g_cl && gev_client_conn(g_cl) != NULL)
    th_inc(&g.bad_conn); /* no longer the client's connection */
  (void)c;
  th_inc(&g.closes);
  if (g.free_in == FREE_IN_CLOSE)
    gev_client_free(g_cl);
}

static const gev_handler rec_handler = {on_connect, on_message, on_close};

static gev_client *client_start(gev_loop *l, const char *addr, uint64_t min,
                                uint64_t max)
{
  gev_client_options o = {0};
  int r;

  o.jitter_pct = g_jitter;

  o.connect.address = addr;
  o.connect.on_result = on_result;
  o.connect.arg = &g;
  o.connect.timeout_ms = 5000;
  o.retry_min_ms = min;
  o.retry_max_ms = max;
  /* Straight into g_cl: a callback may free the client (free_in) before
   * this thread could copy it; the library stores it before any callback. */
  r = gev_client_new(&g_cl, l, &rec_handler, &o);
  ck_assert_msg(r == 0, "gev_client_new(%s): %s", addr, gev_strerror(r));
  return g.free_in ? NULL : g_cl; /* not ours to use then */
}

static const char *loopback(int port)
{
  static char buf[32];
  snprintf(buf, sizeof(buf), "127.0.0.1:%d", port);
  return buf;
}

/* True when nobody connects to lfd within ms. */
static bool no_connect_for(int lfd, int ms)
{
  struct pollfd p = {.fd = lfd, .events = POLLIN};
  return poll(&p, 1, ms) == 0;
}

static void assert_clean(void)
{
  ck_assert_int_eq(th_ld(&g.bad_thread), 0);
  ck_assert_int_eq(th_ld(&g.bad_conn), 0);
}

/* ---- backoff ------------------------------------------------------------ */

START_TEST(retry_backoff_grows_and_caps)
{
  th_loop_thread lt;
  int port = th_free_port(), lfd, fd;
  gev_client *cl;

  th_lt_start(&lt);
  rec_reset(lt.l);
  /* Delays 10, 20, 40, 40, ...: uncapped, the 9th gap would be 1280 ms. */
  cl = client_start(lt.l, loopback(port), 10, 40);
  ck_assert_ptr_eq(gev_client_loop(cl), lt.l);
  ck_assert(th_wait_int(&g.results, 9, 10000));
  for (int i = 0; i < 9; i++)
    ck_assert_int_eq(g.errs[i], -ECONNREFUSED);
  for (int i = 1; i < 9; i++) {
    uint64_t want = i == 1 ? 10 : i == 2 ? 20 : 40;
    uint64_t gap = g.at[i] - g.at[i - 1];
    /* The loop's clock is read once per pass: allow it 2 ms of age. */
    ck_assert_msg(gap + 2 >= want, "retry %d after %llu ms, before its %llu", i,
                  (unsigned long long)gap, (unsigned long long)want);
  }
  ck_assert_msg(g.at[8] - g.at[7] < 1000, "the delay is not capped: %llu ms",
                (unsigned long long)(g.at[8] - g.at[7]));
  ck_assert_int_eq(th_ld(&g.connects), 0);

  /* Something listens now: the next retry connects. */
  lfd = th_listen_port(port, 8);
  ck_assert_msg(lfd >= 0, "port %d was taken meanwhile", port);
  fd = th_accept(lfd);
  ck_assert(th_wait_int(&g.connects, 1, 10000));
  ck_assert_int_eq(g.errs[th_ld(&g.results) - 1], 0);

  gev_client_free(cl);
  ck_assert(th_wait_eof(fd, 10000));
  ck_assert(th_wait_int(&g.closes, 1, 10000));
  ck_assert(no_connect_for(lfd, 200)); /* freed: no reconnect */
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  ck_assert_int_eq(th_ld(&g.connects), 1);
  ck_assert_int_eq(th_ld(&g.closes), 1);
  assert_clean();
  close(fd);
  close(lfd);
}
END_TEST

/* Jitter shortens waits, never lengthens them: with min = max = 100 ms and
 * 80 %, every gap is at least 20 ms, and some gap is clearly under 100 ms
 * (here: under 80), which exact delays never give (a timer does not fire
 * early). Each cut is uniform in 0..80 ms; that all eleven stay under 20
 * (room for 20 ms of slowness per attempt, say under valgrind) has a
 * chance of (21/81)^11, below 1e-6. */
START_TEST(retry_jitter_shortens)
{
  th_loop_thread lt;
  int port = th_free_port();
  bool shorter = false;
  gev_client *cl;

  th_lt_start(&lt);
  rec_reset(lt.l);
  g_jitter = 80;
  cl = client_start(lt.l, loopback(port), 100, 100);
  ck_assert(th_wait_int(&g.results, 12, 10000));
  for (int i = 1; i < 12; i++) {
    uint64_t gap = g.at[i] - g.at[i - 1];
    ck_assert_msg(gap + 2 >= 20, "retry %d after %llu ms, under 100 - 80 %%", i,
                  (unsigned long long)gap);
    if (gap < 80)
      shorter = true;
  }
  ck_assert_msg(shorter, "no wait was shortened by the jitter");
  gev_client_free(cl);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  assert_clean();
}
END_TEST

START_TEST(backoff_resets_after_connect)
{
  th_loop_thread lt;
  int port = th_free_port(), lfd, fd;
  uint64_t t0, dt;
  gev_client *cl;

  th_lt_start(&lt);
  rec_reset(lt.l);
  /* 10, 20, ..., 1280: the 9th attempt, 1280 ms after the 8th failure,
   * connects; unreset, the delay after it would be 2560. */
  cl = client_start(lt.l, loopback(port), 10, 60000);
  ck_assert(th_wait_int(&g.results, 8, 10000));
  lfd = th_listen_port(port, 8);
  ck_assert_msg(lfd >= 0, "port %d was taken meanwhile", port);
  fd = th_accept(lfd);
  ck_assert(th_wait_int(&g.connects, 1, 10000));

  /* The peer closes: the reconnect comes after the minimum (10 ms), not
   * after the 2560 ms that the unreset delay would give. */
  t0 = th_now_ms();
  close(fd);
  fd = th_accept(lfd);
  dt = th_now_ms() - t0;
  ck_assert_msg(dt < 2000, "reconnect took %llu ms", (unsigned long long)dt);
  ck_assert(th_wait_int(&g.connects, 2, 10000));
  ck_assert_int_eq(th_ld(&g.closes), 1);

  gev_client_free(cl);
  ck_assert(th_wait_int(&g.closes, 2, 10000));
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  assert_clean();
  close(fd);
  close(lfd);
}
END_TEST

/* ---- reconnect, end to end ---------------------------------------------- */

/* Waits until rx holds want (the echo of the hello), then clears it. */
static void expect_echo(const char *want)
{
  int n = (int)strlen(want);

  ck_assert_msg(th_wait_int(&g.got, n, 10000), "echo incomplete: %d of %d",
                th_ld(&g.got), n);
  ck_assert_int_eq(th_ld(&g.got), n);
  ck_assert(memcmp(g.rx, want, (size_t)n) == 0);
  th_st(&g.got, 0);
}

START_TEST(reconnects_to_restarted_server)
{
  char path[64], addr[80];
  gev_options so = {0};
  th_loop_thread lt;
  th_server *srv;
  gev_client *cl;
  int fails;

  snprintf(path, sizeof(path), "/tmp/gev-reconnect-%d.sock", (int)getpid());
  snprintf(addr, sizeof(addr), "unix:%s", path);
  unlink(path);
  so.address = addr;
  so.num_loops = 1;
  srv = th_start(&th_echo_handler, &so);

  th_lt_start(&lt);
  rec_reset(lt.l);
  g.hello = "ping\n";
  cl = client_start(lt.l, addr, 20, 100);
  ck_assert(th_wait_int(&g.connects, 1, 10000));
  expect_echo("ping\n");

  /* The server goes away: on_close, then failed retries. */
  th_stop(srv);
  ck_assert(th_wait_int(&g.closes, 1, 10000));
  fails = th_ld(&g.results) + 2;
  ck_assert(th_wait_int(&g.results, fails, 10000));
  for (int i = 1; i < fails && i < MAX_RESULTS; i++)
    ck_assert_msg(g.errs[i] == -ECONNREFUSED || g.errs[i] == -ENOENT,
                  "attempt %d: %s", i, gev_strerror(g.errs[i]));
  ck_assert_int_eq(th_ld(&g.connects), 1);

  /* It comes back at the same path: the client reconnects and talks. */
  so.address = addr;
  srv = th_start(&th_echo_handler, &so);
  ck_assert(th_wait_int(&g.connects, 2, 10000));
  expect_echo("ping\n");

  gev_client_free(cl);
  ck_assert(th_wait_int(&g.closes, 2, 10000));
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  th_stop(srv);
  unlink(path);
  ck_assert_int_eq(th_ld(&g.connects), 2);
  assert_clean();
}
END_TEST

static void close_client_conn(void *arg)
{
  gev_conn *c = gev_client_conn(arg);

  if (!c || gev_conn_close(c) != 0)
    th_inc(&g.bad_conn);
}

START_TEST(conn_close_reconnects)
{
  th_loop_thread lt;
  int port, lfd = th_listen_plain(8, &port), fd1, fd2;
  gev_client *cl;

  th_lt_start(&lt);
  rec_reset(lt.l);
  cl = client_start(lt.l, loopback(port), 10, 100);
  fd1 = th_accept(lfd);
  ck_assert(th_wait_int(&g.connects, 1, 10000));
  /* gev_conn_close on the client's connection: a new one replaces it. */
  th_run_in_loop(lt.l, close_client_conn, cl);
  ck_assert(th_wait_eof(fd1, 10000));
  fd2 = th_accept(lfd);
  ck_assert(th_wait_int(&g.connects, 2, 10000));
  ck_assert_int_eq(th_ld(&g.closes), 1);
  gev_client_free(cl);
  ck_assert(th_wait_eof(fd2, 10000));
  ck_assert(th_wait_int(&g.closes, 2, 10000));
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  close(fd1);
  close(fd2);
  close(lfd);
  assert_clean();
}
END_TEST

/* ---- freeing ------------------------------------------------------------ */

START_TEST(free_from_other_thread_while_waiting)
{
  th_loop_thread lt;
  int port = th_free_port(), lfd, r1;
  gev_client *cl;

  th_lt_start(&lt);
  rec_reset(lt.l);
  cl = client_start(lt.l, loopback(port), 300, 300);
  ck_assert(th_wait_int(&g.results, 1, 10000));
  gev_client_free(cl); /* cancels the pending retry */
  th_run_in_loop(lt.l, th_noop, NULL);
  /* A retry may have run (and been refused) before the free if this
   * thread stalled; none may run after it. */
  r1 = th_ld(&g.results);
  lfd = th_listen_port(port, 8);
  ck_assert_msg(lfd >= 0, "port %d was taken meanwhile", port);
  ck_assert(no_connect_for(lfd, 600)); /* past the 300 ms retry */
  ck_assert_int_eq(th_ld(&g.results), r1);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  close(lfd);
  assert_clean();
}
END_TEST

/* gev_client_free from inside on_result (a failure), on_connect and
 * on_close: nothing of the client runs afterwards but the on_close that
 * is owed, and nothing leaks. */
START_TEST(free_inside_callbacks)
{
  static const int modes[] = {FREE_IN_RESULT, FREE_IN_CONNECT, FREE_IN_CLOSE};

  for (size_t m = 0; m < sizeof(modes) / sizeof(modes[0]); m++) {
    th_loop_thread lt;
    int port, lfd = -1, fd = -1;

    th_lt_start(&lt);
    rec_reset(lt.l);
    g.free_in = modes[m];
    if (modes[m] == FREE_IN_RESULT) {
      port = th_free_port();
      client_start(lt.l, loopback(port), 10, 10);
      ck_assert(th_wait_int(&g.results, 1, 10000));
      lfd = th_listen_port(port, 8);
      ck_assert_msg(lfd >= 0, "port %d was taken meanwhile", port);
      ck_assert(no_connect_for(lfd, 200)); /* no retry after 10 ms */
      ck_assert_int_eq(th_ld(&g.results), 1);
    } else {
      lfd = th_listen_plain(8, &port);
      client_start(lt.l, loopback(port), 10, 10);
      fd = th_accept(lfd);
      ck_assert(th_wait_int(&g.connects, 1, 10000));
      if (modes[m] == FREE_IN_CLOSE)
        close(fd); /* the peer closes; on_close frees */
      else
        ck_assert(th_wait_eof(fd, 10000)); /* freed: closed gracefully */
      ck_assert(th_wait_int(&g.closes, 1, 10000));
      ck_assert(no_connect_for(lfd, 200)); /* no reconnect */
      ck_assert_int_eq(th_ld(&g.connects), 1);
      ck_assert_int_eq(th_ld(&g.closes), 1);
    }
    ck_assert_int_eq(th_lt_stop(&lt), 0);
    gev_loop_free(lt.l);
    if (fd >= 0 && modes[m] != FREE_IN_CLOSE)
      close(fd);
    close(lfd);
    assert_clean();
  }
}
END_TEST

/* Freed in the loop's thread before its start task ran, and while its
 * connect is under way: the user's callbacks never run. */
typedef struct early_free {
  const char *addr;
  bool after_start; /* free from a task that runs after the start task */
} early_free;

static void free_task(void *arg)
{
  gev_client_free(arg);
}

static void new_and_free(void *arg)
{
  early_free *e = arg;
  gev_client_options o = {0};
  gev_client *cl = NULL;

  o.connect.address = e->addr;
  o.connect.on_result = on_result;
  o.connect.arg = &g;
  if (gev_client_new(&cl, g.loop, &rec_handler, &o) != 0) {
    th_inc(&g.bad_conn);
    return;
  }
  if (e->after_start)
    gev_loop_post(g.loop, free_task, cl); /* after the start task */
  else
    gev_client_free(cl);
}

START_TEST(free_before_and_during_connect)
{
  for (int after = 0; after < 2; after++) {
    th_loop_thread lt;
    int port, lfd = th_listen_plain(8, &port), fd;
    early_free e = {loopback(port), after == 1};

    th_lt_start(&lt);
    rec_reset(lt.l);
    th_run_in_loop(lt.l, new_and_free, &e);
    if (after) {
      /* The connect was under way: it completes, and is closed at once. */
      fd = th_accept(lfd);
      ck_assert(th_wait_eof(fd, 10000));
      close(fd);
    } else {
      ck_assert(no_connect_for(lfd, 200)); /* never even tried */
    }
    th_run_in_loop(lt.l, th_noop, NULL);
    ck_assert_int_eq(th_ld(&g.results), 0);
    ck_assert_int_eq(th_ld(&g.connects), 0);
    ck_assert_int_eq(th_ld(&g.closes), 0);
    ck_assert_int_eq(th_lt_stop(&lt), 0);
    gev_loop_free(lt.l);
    close(lfd);
    assert_clean();
  }
}
END_TEST

/* ---- the loop goes first ------------------------------------------------- */

START_TEST(loop_stops_under_client)
{
  for (int connected = 0; connected < 2; connected++) {
    th_loop_thread lt;
    int port, lfd = -1, fd = -1;
    gev_client *cl;

    th_lt_start(&lt);
    rec_reset(lt.l);
    if (connected) {
      lfd = th_listen_plain(8, &port);
      cl = client_start(lt.l, loopback(port), 10, 10);
      fd = th_accept(lfd);
      ck_assert(th_wait_int(&g.connects, 1, 10000));
    } else {
      port = th_free_port();
      cl = client_start(lt.l, loopback(port), 60000, 60000);
      ck_assert(th_wait_int(&g.results, 1, 10000)); /* now waiting 60 s */
    }
    /* The loop stops: the connection closes, the retry is dropped; the
     * client is freed afterwards, then the loop. */
    ck_assert_int_eq(th_lt_stop(&lt), 0);
    ck_assert_int_eq(th_ld(&g.closes), connected);
    if (connected) {
      ck_assert(th_wait_eof(fd, 10000));
      ck_assert(no_connect_for(lfd, 100));
    }
    gev_client_free(cl);
    gev_loop_free(lt.l);
    if (fd >= 0)
      close(fd);
    if (lfd >= 0)
      close(lfd);
    assert_clean();
  }
}
END_TEST

START_TEST(loop_never_runs)
{
  gev_client_options o = {0};
  gev_client *cl = NULL;
  gev_loop *l;

  rec_reset(NULL);
  ck_assert_int_eq(gev_loop_new(&l), 0);
  o.connect.address = "127.0.0.1:9";
  o.connect.on_result = on_result;
  ck_assert_int_eq(gev_client_new(&cl, l, &rec_handler, &o), 0);
  gev_client_free(cl); /* queued: dropped with the loop */
  gev_loop_free(l);
  ck_assert_int_eq(th_ld(&g.results), 0);
}
END_TEST

START_TEST(bad_arguments)
{
  gev_client_options o = {0};
  th_loop_thread lt;
  gev_client *cl = NULL;

  th_lt_start(&lt);
  rec_reset(lt.l);
  o.connect.address = "127.0.0.1:9";
  ck_assert_int_eq(gev_client_new(NULL, lt.l, &rec_handler, &o), -EINVAL);
  ck_assert_int_eq(gev_client_new(&cl, NULL, &rec_handler, &o), -EINVAL);
  ck_assert_int_eq(gev_client_new(&cl, lt.l, NULL, &o), -EINVAL);
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, NULL), -EINVAL);
  o.connect.address = NULL;
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, &o), -EINVAL);
  o.connect.address = "no port here";
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, &o), -EINVAL);
  o.connect.address = "127.0.0.1:9";
  o.jitter_pct = 101;
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, &o), -EINVAL);
  o.jitter_pct = 100;
  o.retry_min_ms = 100;
  o.retry_max_ms = 50;
  cl = (gev_client *)&o; /* overwritten with NULL on error */
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, &o), -EINVAL);
  ck_assert_ptr_null(cl);
  gev_client_free(NULL);
  ck_assert_ptr_null(gev_client_conn(NULL));
  ck_assert_ptr_null(gev_client_loop(NULL));
  /* A minimum above the default maximum raises the maximum with it. */
  o.retry_min_ms = 60000;
  o.retry_max_ms = 0;
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, &o), 0);
  gev_client_free(cl);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  /* A stopped loop refuses. */
  cl = NULL;
  ck_assert_int_eq(gev_client_new(&cl, lt.l, &rec_handler, &o), -ESHUTDOWN);
  ck_assert_ptr_null(cl);
  gev_loop_free(lt.l);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"retry_backoff_grows_and_caps", retry_backoff_grows_and_caps, 60},
      {"retry_jitter_shortens", retry_jitter_shortens, 60},
      {"backoff_resets_after_connect", backoff_resets_after_connect, 60},
      {"reconnects_to_restarted_server", reconnects_to_restarted_server, 60},
      {"conn_close_reconnects", conn_close_reconnects, 60},
      {"free_from_other_thread_while_waiting",
       free_from_other_thread_while_waiting, 60},
      {"free_inside_callbacks", free_inside_callbacks, 60},
      {"free_before_and_during_connect", free_before_and_during_connect, 60},
      {"loop_stops_under_client", loop_stops_under_client, 60},
      {"loop_never_runs", loop_never_runs, 60},
      {"bad_arguments", bad_arguments, 60},
  };

  return th_run(th_suite("reconnect", cases, sizeof(cases) / sizeof(cases[0])));
}
