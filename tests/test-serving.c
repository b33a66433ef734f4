/* test-serving.c - gev_options.on_serving (once, on the acceptor, when
 * every worker runs, with the bound addresses) and ticks (gev_loop_tick,
 * gev_server_tick: the callback sets the next delay, 0 stops). */
#include <check.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

enum { LOOPS = 3 };

static atomic_int starts, servings, bad;
static char seen_addr[128], seen_last[128];
static int seen_n;

static atomic_int entered;

/* Check runs every case in one process without fork (valgrind): each
 * starts from zero. */
static void reset(void)
{
  atomic_store(&entered, 0);
  atomic_store(&starts, 0);
  atomic_store(&servings, 0);
  atomic_store(&bad, 0);
  seen_addr[0] = seen_last[0] = '\0';
  seen_n = 0;
}

/* Starts that take longer and longer: serving waits for the slowest. */
static void loop_start(gev_loop *l)
{
  (void)l;
  usleep(60000 * (useconds_t)atomic_fetch_add(&entered, 1));
  atomic_fetch_add(&starts, 1);
}

static void on_serving(gev_server *s, const char *const *addrs, int n)
{
  if (!gev_loop_in_thread(gev_server_loop(s)) ||
      atomic_load(&starts) != gev_server_num_loops(s) || addrs[n] != NULL)
    atomic_fetch_add(&bad, 1);
  snprintf(seen_addr, sizeof(seen_addr), "%s", n > 0 ? addrs[0] : "");
  snprintf(seen_last, sizeof(seen_last), "%s", n > 0 ? addrs[n - 1] : "");
  seen_n = n;
  atomic_fetch_add(&servings, 1);
}

static void serve_and_check(bool reuse_port)
{
  gev_options opt = {.num_loops = LOOPS,
                     .reuse_port = reuse_port,
                     .on_loop_start = loop_start,
                     .on_serving = on_serving};
  char want[64];
  th_server *t = th_start(&th_echo_handler, &opt);
  int fd;

  ck_assert(th_wait_int((const volatile int *)&servings, 1, 10000));
  usleep(50000); /* once only */
  ck_assert_int_eq(atomic_load(&servings), 1);
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_eq(seen_n, 1);
  snprintf(want, sizeof(want), "127.0.0.1:%d", t->port);
  ck_assert_str_eq(seen_addr, want);
  fd = th_connect(t->port);
  ck_assert(th_echo_roundtrip(fd, 1000, 3));
  close(fd);
  th_stop(t);
}

START_TEST(test_serving)
{
  reset();
  serve_and_check(false);
}
END_TEST

START_TEST(test_serving_reuse_port)
{
  reset();
  serve_and_check(true);
}
END_TEST

START_TEST(test_serving_unix)
{
  reset();
  char path[64], want[80];
  gev_options opt = {.num_loops = 1, .on_serving = on_serving};
  th_server *t;

  snprintf(path, sizeof(path), "unix:/tmp/gev-serving-%d.sock", getpid());
  opt.address = path;
  t = th_start(&th_echo_handler, &opt);
  ck_assert(th_wait_int((const volatile int *)&servings, 1, 10000));
  snprintf(want, sizeof(want), "%s", path);
  ck_assert_str_eq(seen_addr, want);
  th_stop(t);
}
END_TEST

/* Several addresses: one string each, in the options' order, each as
 * bound (the port the kernel picked). */
START_TEST(test_serving_several_addresses)
{
  reset();
  char path[64], want[80];
  const char *addrs[4] = {"127.0.0.1:0", path, "127.0.0.1:0", NULL};
  gev_options opt = {
      .num_loops = 2, .on_loop_start = loop_start, .on_serving = on_serving};
  th_server *t;

  snprintf(path, sizeof(path), "unix:/tmp/gev-serving-m%d.sock", getpid());
  opt.addresses = addrs;
  t = th_start(&th_echo_handler, &opt);
  ck_assert(th_wait_int((const volatile int *)&servings, 1, 10000));
  ck_assert_int_eq(atomic_load(&bad), 0);
  ck_assert_int_eq(seen_n, 3);
  snprintf(want, sizeof(want), "127.0.0.1:%d", t->port);
  ck_assert_str_eq(seen_addr, want);
  snprintf(want, sizeof(want), "127.0.0.1:%d",
           gev_server_listener_port(t->s, 2));
  ck_assert_str_eq(seen_last, want);
  ck_assert_int_ne(gev_server_listener_port(t->s, 2), t->port);
  th_stop(t);
}
END_TEST

/* Stopped before it serves: never called. */
START_TEST(test_serving_not_when_stopped)
{
  reset();
  gev_options opt = {
      .address = "127.0.0.1:0", .num_loops = 2, .on_serving = on_serving};
  gev_server *s;

  ck_assert_int_eq(gev_server_new(&s, &th_echo_handler, &opt), 0);
  gev_server_stop(s);
  ck_assert_int_eq(gev_server_start(s), 0);
  gev_server_free(s);
  ck_assert_int_eq(atomic_load(&servings), 0);
}
END_TEST

/* ---- ticks ------------------------------------------------------------ */

typedef struct ticker {
  gev_loop *l;
  int runs, stop_after;
  uint64_t at[16];
  atomic_int done;
} ticker;

static uint64_t tick_cb(void *arg)
{
  ticker *k = arg;

  if (!gev_loop_in_thread(k->l))
    atomic_fetch_add(&bad, 1);
  k->at[th_ld(&k->runs) % 16] = th_now_ms();
  th_inc(&k->runs); /* the test thread waits on it */
  if (th_ld(&k->runs) == k->stop_after) {
    atomic_store(&k->done, 1);
    return 0;
  }
  return (uint64_t)(10 * th_ld(&k->runs)); /* 10, 20, 30 ms... */
}

START_TEST(test_tick_paces_itself)
{
  reset();
  th_loop_thread lt = {0};
  ticker k = {.stop_after = 5};

  th_lt_start(&lt);
  k.l = lt.l;
  ck_assert_int_eq(gev_loop_tick(lt.l, 5, tick_cb, &k), 0);
  ck_assert(th_wait_int((const volatile int *)&k.done, 1, 10000));
  usleep(100000); /* returned 0: no more runs */
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  ck_assert_int_eq(k.runs, 5);
  /* Each wait at least the delay the previous run asked for. */
  for (int i = 1; i < 5; i++)
    ck_assert_uint_ge(k.at[i] - k.at[i - 1], (uint64_t)(10 * i));
  ck_assert_int_eq(atomic_load(&bad), 0);
  gev_loop_free(lt.l);
}
END_TEST

/* A tick still armed when the loop stops is dropped (no leak: valgrind
 * and ASan check), as is one on a loop that never runs. */
START_TEST(test_tick_dropped_with_loop)
{
  reset();
  ticker k = {.stop_after = 1000};
  gev_options opt = {.num_loops = 1};
  th_server *t = th_start(&th_echo_handler, &opt);
  gev_loop *never;

  k.l = gev_server_loop(t->s);
  ck_assert_int_eq(gev_server_tick(t->s, 0, tick_cb, &k), 0);
  ck_assert(th_wait_int((const volatile int *)&k.runs, 2, 10000));
  th_stop(t);
  ck_assert_int_lt(k.runs, 1000);
  ck_assert_int_eq(gev_loop_new(&never), 0);
  ck_assert_int_eq(gev_loop_tick(never, 1, tick_cb, &k), 0);
  gev_loop_free(never);
  ck_assert_int_eq(gev_loop_tick(NULL, 1, tick_cb, &k), -EINVAL);
  ck_assert_int_eq(gev_server_tick(NULL, 1, tick_cb, &k), -EINVAL);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"serving", test_serving, 30},
      {"serving_reuse_port", test_serving_reuse_port, 30},
      {"serving_unix", test_serving_unix, 30},
      {"serving_several_addresses", test_serving_several_addresses, 30},
      {"serving_not_when_stopped", test_serving_not_when_stopped, 30},
      {"tick_paces_itself", test_tick_paces_itself, 30},
      {"tick_dropped_with_loop", test_tick_dropped_with_loop, 30},
  };

  return th_run(th_suite("serving", cases, sizeof(cases) / sizeof(cases[0])));
}
