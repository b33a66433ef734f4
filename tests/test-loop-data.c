/* test-loop-data.c - per-loop user data and the worker loops' thread
 * hooks (gev_options.on_loop_start / on_loop_stop), and gev_loop_now_ms. */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

enum { LOOPS = 3, CONNS = 12 };

/* One per worker loop, made by on_loop_start in that loop's thread. */
typedef struct per_loop {
  pthread_t thread;
  int opened, closed;    /* touched by the loop's thread only: no lock */
  int stopped_with_open; /* connections still open when on_loop_stop ran */
} per_loop;

static atomic_int entered, starts, stops, bad_thread, missing_data,
    acceptor_hooked;
static pthread_t test_thread;
static per_loop *finished[LOOPS]; /* handed over by on_loop_stop */
static atomic_int nfinished;
static gev_loop *started_loops[LOOPS + 1]; /* which loops got the hook */

/* Check runs every case in one process without fork (valgrind): each
 * starts from zero. */
static void reset(void)
{
  atomic_store(&entered, 0);
  atomic_store(&starts, 0);
  atomic_store(&stops, 0);
  atomic_store(&bad_thread, 0);
  atomic_store(&missing_data, 0);
  atomic_store(&acceptor_hooked, 0);
  atomic_store(&nfinished, 0);
}

static void loop_start(gev_loop *l)
{
  per_loop *pl = calloc(1, sizeof(*pl));

  if (!gev_loop_in_thread(l) || pthread_equal(pthread_self(), test_thread))
    atomic_fetch_add(&bad_thread, 1);
  if (gev_loop_data(l) != NULL) /* nothing before: the library sets none */
    atomic_fetch_add(&missing_data, 1);
  pl->thread = pthread_self();
  gev_loop_set_data(l, pl);
  started_loops[atomic_fetch_add(&entered, 1) % (LOOPS + 1)] = l;
  atomic_fetch_add(&starts, 1); /* after the store: the test reads both */
}

static void loop_stop(gev_loop *l)
{
  per_loop *pl = gev_loop_data(l);

  if (!pl || !gev_loop_in_thread(l) ||
      !pthread_equal(pl->thread, pthread_self()))
    atomic_fetch_add(&bad_thread, 1);
  if (pl) {
    pl->stopped_with_open = pl->opened - pl->closed;
    finished[atomic_fetch_add(&nfinished, 1) % LOOPS] = pl;
  }
  gev_loop_set_data(l, NULL);
  atomic_fetch_add(&stops, 1);
}

static per_loop *mine(gev_conn *c)
{
  per_loop *pl = gev_loop_data(gev_conn_loop(c));

  if (!pl || !pthread_equal(pl->thread, pthread_self()))
    atomic_fetch_add(&missing_data, 1);
  return pl;
}

static void on_connect(gev_conn *c)
{
  per_loop *pl = mine(c);

  if (pl)
    pl->opened++;
}

static void on_close(gev_conn *c)
{
  per_loop *pl = mine(c);

  if (pl)
    pl->closed++;
}

static const gev_handler hooks_handler = {on_connect, th_echo_msg, on_close,
                                          NULL, NULL};

/* Every worker loop gets on_loop_start once, in its own thread, before
 * its first connection; the acceptor gets none; on_loop_stop runs once per
 * worker, in the same thread, after its last on_close (connections still
 * open when the server stops). */
START_TEST(test_hooks)
{
  reset();
  gev_options opt = {.num_loops = LOOPS,
                     .on_loop_start = loop_start,
                     .on_loop_stop = loop_stop};
  int fds[CONNS], total = 0;
  th_server *t;

  test_thread = pthread_self();
  t = th_start(&hooks_handler, &opt);
  for (int i = 0; i < CONNS; i++) {
    fds[i] = th_connect(t->port);
    ck_assert_int_ge(fds[i], 0);
    ck_assert(th_echo_roundtrip(fds[i], 100, (uint32_t)i));
  }
  ck_assert_int_eq(atomic_load(&starts), LOOPS);
  ck_assert_int_eq(atomic_load(&stops), 0);
  /* The hooked loops are the workers, not the acceptor (read after the
   * workers have started: th_start returned before). */
  for (int i = 0; i < LOOPS; i++) {
    bool worker = false;
    for (int j = 0; j < LOOPS; j++)
      worker |= started_loops[i] == gev_server_worker_loop(t->s, j);
    if (!worker || started_loops[i] == gev_server_loop(t->s))
      atomic_fetch_add(&acceptor_hooked, 1);
  }
  th_stop(t); /* the connections are still open: the stop closes them */
  for (int i = 0; i < CONNS; i++)
    close(fds[i]);
  ck_assert_int_eq(atomic_load(&starts), LOOPS);
  ck_assert_int_eq(atomic_load(&stops), LOOPS);
  ck_assert_int_eq(atomic_load(&bad_thread), 0);
  ck_assert_int_eq(atomic_load(&missing_data), 0);
  ck_assert_int_eq(atomic_load(&acceptor_hooked), 0);
  ck_assert_int_eq(atomic_load(&nfinished), LOOPS);
  for (int i = 0; i < LOOPS; i++) {
    ck_assert_int_eq(finished[i]->stopped_with_open, 0);
    total += finished[i]->opened;
    free(finished[i]);
  }
  ck_assert_int_eq(total, CONNS);
}
END_TEST

/* A server that never starts runs no hook. */
START_TEST(test_hooks_not_started)
{
  reset();
  gev_options opt = {.address = "127.0.0.1:0",
                     .num_loops = 2,
                     .on_loop_start = loop_start,
                     .on_loop_stop = loop_stop};
  gev_server *s;

  ck_assert_int_eq(gev_server_new(&s, &th_echo_handler, &opt), 0);
  gev_server_free(s);
  ck_assert_int_eq(atomic_load(&starts), 0);
  ck_assert_int_eq(atomic_load(&stops), 0);
}
END_TEST

/* ---- data from any thread --------------------------------------------- */

typedef struct seen {
  gev_loop *l;
  void *got;
  int value; /* written before the pointer was set */
} seen;

static void read_data(void *arg)
{
  seen *s = arg;
  int *p = gev_loop_data(s->l);

  s->got = p;
  s->value = p ? *p : -1;
}

START_TEST(test_data_any_thread)
{
  reset();
  th_loop_thread lt = {0};
  int *v = malloc(sizeof(*v));
  seen s = {0};

  th_lt_start(&lt);
  ck_assert_ptr_null(gev_loop_data(lt.l));
  *v = 42;
  gev_loop_set_data(lt.l, v); /* from this thread, the loop running */
  s.l = lt.l;
  th_run_in_loop(lt.l, read_data, &s);
  ck_assert_ptr_eq(s.got, v);
  ck_assert_int_eq(s.value, 42);
  ck_assert_ptr_eq(gev_loop_data(lt.l), v);
  gev_loop_set_data(lt.l, NULL);
  ck_assert_ptr_null(gev_loop_data(lt.l));
  ck_assert_ptr_null(gev_loop_data(NULL));
  gev_loop_set_data(NULL, v); /* ignored */
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
  free(v);
}
END_TEST

/* ---- gev_loop_now_ms --------------------------------------------------- */

typedef struct times {
  gev_loop *l;
  uint64_t before, a, b, after;
} times;

/* In the loop: the cached time, the same for two reads in one callback
 * however long it takes, and within the clock around it. */
static void read_now(void *arg)
{
  times *t = arg;

  t->a = gev_loop_now_ms(t->l);
  usleep(20000);
  t->b = gev_loop_now_ms(t->l);
}

START_TEST(test_now_ms)
{
  reset();
  th_loop_thread lt = {0};
  times t = {0};
  uint64_t other;

  th_lt_start(&lt);
  t.l = lt.l;
  t.before = th_now_ms();
  th_run_in_loop(lt.l, read_now, &t);
  t.after = th_now_ms();
  ck_assert_uint_eq(t.a, t.b); /* cached: one value per pass */
  ck_assert_uint_le(t.a, t.after);
  ck_assert_uint_ge(t.a + 1, t.before); /* woken after the post */
  /* Another thread reads the clock itself. */
  other = gev_loop_now_ms(lt.l);
  ck_assert_uint_ge(other, t.after);
  ck_assert_uint_le(other, th_now_ms());
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"hooks", test_hooks, 60},
      {"hooks_not_started", test_hooks_not_started, 30},
      {"data_any_thread", test_data_any_thread, 30},
      {"now_ms", test_now_ms, 30},
  };

  return th_run(th_suite("loop-data", cases, sizeof(cases) / sizeof(cases[0])));
}
