/* test-loop.c - tasks and timers on a server's loops, from any thread. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static gev_handler no_handler;

static th_server *start_server(int loops)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = loops};
  return th_start(&no_handler, &opt);
}

/* ---- post ------------------------------------------------------------- */

enum { POSTERS = 8, PER_POSTER = 20000 };

typedef struct post_rec {
  gev_loop *loop;
  int next[POSTERS]; /* next sequence expected from each poster */
  atomic_int ran;
  atomic_int errors;
} post_rec;

typedef struct post_arg {
  post_rec *rec;
  int poster;
  int seq;
} post_arg;

static void post_task(void *arg)
{
  post_arg *a = arg;
  post_rec *r = a->rec;

  if (!gev_loop_in_thread(r->loop) || r->next[a->poster] != a->seq)
    atomic_fetch_add(&r->errors, 1);
  r->next[a->poster] = a->seq + 1;
  atomic_fetch_add(&r->ran, 1);
}

typedef struct poster {
  post_rec *rec;
  post_arg *args;
  int id;
  int failures;
} poster;

static void *poster_main(void *arg)
{
  poster *p = arg;

  for (int i = 0; i < PER_POSTER; i++) {
    p->args[i] = (post_arg){p->rec, p->id, i};
    if (gev_loop_post(p->rec->loop, post_task, &p->args[i]) != 0)
      p->failures++;
  }
  return NULL;
}

START_TEST(test_post_fifo_per_thread)
{
  th_server *t = start_server(1);
  post_rec rec = {.loop = gev_server_worker_loop(t->s, 0)};
  poster p[POSTERS];
  pthread_t th[POSTERS];

  ck_assert_ptr_nonnull(rec.loop);
  ck_assert(!gev_loop_in_thread(rec.loop));
  for (int i = 0; i < POSTERS; i++) {
    p[i] = (poster){&rec, calloc(PER_POSTER, sizeof(post_arg)), i, 0};
    pthread_create(&th[i], NULL, poster_main, &p[i]);
  }
  for (int i = 0; i < POSTERS; i++) {
    pthread_join(th[i], NULL);
    ck_assert_int_eq(p[i].failures, 0);
  }
  ck_assert(th_wait_int((volatile int *)&rec.ran, POSTERS * PER_POSTER, 20000));
  usleep(20000); /* a task run twice would show up as an error or count */
  ck_assert_int_eq(atomic_load(&rec.ran), POSTERS * PER_POSTER);
  ck_assert_int_eq(atomic_load(&rec.errors), 0);
  for (int i = 0; i < POSTERS; i++)
    ck_assert_int_eq(rec.next[i], PER_POSTER);
  th_stop(t);
  for (int i = 0; i < POSTERS; i++)
    free(p[i].args);
}
END_TEST

START_TEST(test_post_bad_arguments)
{
  th_server *t = start_server(1);

  ck_assert_int_eq(gev_loop_post(NULL, post_task, NULL), -EINVAL);
  ck_assert_int_eq(gev_loop_post(gev_server_loop(t->s), NULL, NULL), -EINVAL);
  ck_assert(gev_loop_run_after(NULL, 1, post_task, NULL) == 0);
  ck_assert(gev_loop_run_every(gev_server_loop(t->s), 0, post_task, NULL) == 0);
  ck_assert_int_eq(gev_loop_cancel(NULL, 1), -EINVAL);
  ck_assert(!gev_loop_in_thread(NULL));
  th_stop(t);
}
END_TEST

/* A task that re-posts itself forever must not starve timers or I/O. */
typedef struct spinner {
  gev_loop *loop;
  atomic_int reposts;
  atomic_int stop;
  atomic_int timer_ran;
} spinner;

static void spin_task(void *arg)
{
  spinner *s = arg;

  atomic_fetch_add(&s->reposts, 1);
  if (!atomic_load(&s->stop))
    gev_loop_post(s->loop, spin_task, s);
}

static void mark_timer(void *arg)
{
  atomic_store(&((spinner *)arg)->timer_ran, 1);
}

START_TEST(test_reposting_task_does_not_starve_timers)
{
  th_server *t = start_server(1);
  spinner s = {.loop = gev_server_worker_loop(t->s, 0)};

  ck_assert_int_eq(gev_loop_post(s.loop, spin_task, &s), 0);
  /* Spinning for sure before the timer is armed (a slow thread start
   * could otherwise run the timer in the very first pass). */
  ck_assert(th_wait_int((volatile int *)&s.reposts, 100, 10000));
  ck_assert(gev_loop_run_after(s.loop, 20, mark_timer, &s) != 0);
  ck_assert(th_wait_int((volatile int *)&s.timer_ran, 1, 10000));
  atomic_store(&s.stop, 1);
  th_stop(t);
}
END_TEST

/* ---- timers ----------------------------------------------------------- */

typedef struct tick {
  gev_loop *loop;
  atomic_int count;
  atomic_int wrong_thread;
  uint64_t start;
  _Atomic uint64_t first_at;
  _Atomic gev_timer_id self; /* written after run_every returns */
  int stop_after;
} tick;

static void tick_fn(void *arg)
{
  tick *k = arg;

  if (!gev_loop_in_thread(k->loop))
    atomic_fetch_add(&k->wrong_thread, 1);
  if (atomic_fetch_add(&k->count, 1) == 0)
    k->first_at = th_now_ms();
  if (k->stop_after && atomic_load(&k->count) == k->stop_after)
    ck_assert_int_eq(gev_loop_cancel(k->loop, k->self), 0);
}

START_TEST(test_run_after_fires_once_not_early)
{
  th_server *t = start_server(1);
  tick k = {.loop = gev_server_worker_loop(t->s, 0), .start = th_now_ms()};
  gev_timer_id id = gev_loop_run_after(k.loop, 50, tick_fn, &k);

  ck_assert(id != 0);
  ck_assert(th_wait_int((volatile int *)&k.count, 1, 5000));
  ck_assert_uint_ge(k.first_at - k.start, 50);
  usleep(100000);
  ck_assert_int_eq(atomic_load(&k.count), 1);
  ck_assert_int_eq(atomic_load(&k.wrong_thread), 0);
  /* Fired: cancelling now finds nothing. */
  ck_assert_int_eq(gev_loop_cancel(k.loop, id), -ENOENT);
  th_stop(t);
}
END_TEST

START_TEST(test_run_every_and_cancel)
{
  th_server *t = start_server(1);
  tick k = {.loop = gev_server_worker_loop(t->s, 0)};
  gev_timer_id id = gev_loop_run_every(k.loop, 5, tick_fn, &k);
  int n;

  ck_assert(id != 0);
  ck_assert(th_wait_int((volatile int *)&k.count, 5, 5000));
  ck_assert_int_eq(gev_loop_cancel(k.loop, id), 0);
  ck_assert_int_eq(gev_loop_cancel(k.loop, id), -ENOENT);
  /* A run already under way may finish: timers run before tasks in a
   * pass, so once a task ran, no run of the cancelled timer is left. */
  th_run_in_loop(k.loop, th_noop, NULL);
  n = atomic_load(&k.count);
  usleep(50000);
  ck_assert_int_eq(atomic_load(&k.count), n);
  ck_assert_int_eq(atomic_load(&k.wrong_thread), 0);
  th_stop(t);
}
END_TEST

START_TEST(test_periodic_cancels_itself)
{
  th_server *t = start_server(1);
  tick k = {.loop = gev_server_worker_loop(t->s, 0), .stop_after = 3};

  /* The callback reads k.self; set it before the first run can happen. */
  k.self = gev_loop_run_every(k.loop, 30, tick_fn, &k);
  ck_assert(k.self != 0);
  ck_assert(th_wait_int((volatile int *)&k.count, 3, 5000));
  usleep(150000);
  ck_assert_int_eq(atomic_load(&k.count), 3);
  ck_assert_int_eq(gev_loop_cancel(k.loop, k.self), -ENOENT);
  th_stop(t);
}
END_TEST

/* Two timers due in the same pass: the first cancels the second. */
typedef struct pair {
  gev_loop *loop;
  gev_timer_id victim;
  atomic_int cancel_result;
  atomic_int victim_ran;
  atomic_int killer_ran;
} pair;

static void killer(void *arg)
{
  pair *p = arg;
  atomic_store(&p->cancel_result, gev_loop_cancel(p->loop, p->victim));
  atomic_store(&p->killer_ran, 1);
}

static void victim(void *arg)
{
  atomic_store(&((pair *)arg)->victim_ran, 1);
}

static void arm_pair(void *arg)
{
  pair *p = arg;

  /* Same delay, armed in order: both are due in the same pass and the
   * killer runs first (FIFO among equal deadlines). */
  gev_loop_run_after(p->loop, 10, killer, p);
  p->victim = gev_loop_run_after(p->loop, 10, victim, p);
}

START_TEST(test_cancel_from_timer_in_same_tick)
{
  th_server *t = start_server(1);
  pair p = {.loop = gev_server_worker_loop(t->s, 0)};

  atomic_store(&p.cancel_result, 1);
  ck_assert_int_eq(gev_loop_post(p.loop, arm_pair, &p), 0);
  ck_assert(th_wait_int((volatile int *)&p.killer_ran, 1, 5000));
  usleep(50000);
  ck_assert_int_eq(atomic_load(&p.cancel_result), 0);
  ck_assert_int_eq(atomic_load(&p.victim_ran), 0);
  th_stop(t);
}
END_TEST

enum { MANY = 100000 };

typedef struct many {
  gev_loop *loop;
  unsigned char *fired;
  atomic_int count;
  atomic_int dup;
} many;

typedef struct many_arg {
  many *m;
  int i;
} many_arg;

static void many_fn(void *arg)
{
  many_arg *a = arg;

  if (a->m->fired[a->i]++)
    atomic_fetch_add(&a->m->dup, 1);
  atomic_fetch_add(&a->m->count, 1);
}

START_TEST(test_hundred_thousand_timers)
{
  th_server *t = start_server(1);
  many m = {.loop = gev_server_worker_loop(t->s, 0)};
  many_arg *args = calloc(MANY, sizeof(*args));
  gev_timer_id *ids = calloc(MANY, sizeof(*ids));
  int cancelled = 0;

  m.fired = calloc(MANY, 1);
  srand(12345);
  for (int i = 0; i < MANY; i++) {
    args[i] = (many_arg){&m, i};
    ids[i] =
        gev_loop_run_after(m.loop, (uint64_t)(rand() % 300), many_fn, &args[i]);
    ck_assert(ids[i] != 0);
  }
  /* Cancel every 10th while they fire: each either fired or cancelled. */
  for (int i = 0; i < MANY; i += 10)
    if (gev_loop_cancel(m.loop, ids[i]) == 0)
      cancelled++;
  ck_assert(th_wait_int((volatile int *)&m.count, MANY - cancelled, 20000));
  usleep(50000);
  ck_assert_int_eq(atomic_load(&m.count), MANY - cancelled);
  ck_assert_int_eq(atomic_load(&m.dup), 0);
  for (int i = 0; i < MANY; i += 10)
    ck_assert_int_eq(gev_loop_cancel(m.loop, ids[i]), -ENOENT);
  th_stop(t);
  free(m.fired);
  free(args);
  free(ids);
}
END_TEST

/* ---- lifecycle -------------------------------------------------------- */

static void count_task(void *arg)
{
  atomic_fetch_add((atomic_int *)arg, 1);
}

static void *start_main(void *s)
{
  gev_server_start(s);
  return NULL;
}

START_TEST(test_posted_before_start_run_at_start)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 1};
  gev_server *s;
  atomic_int ran = 0;
  pthread_t th;

  /* A task alone, with no timer whose arming would wake the loop: the
   * post itself must. */
  ck_assert_int_eq(gev_server_new(&s, &no_handler, &opt), 0);
  ck_assert_int_eq(gev_loop_post(gev_server_loop(s), count_task, &ran), 0);
  pthread_create(&th, NULL, start_main, s);
  ck_assert_msg(th_wait_int((volatile int *)&ran, 1, 5000),
                "a task posted before start did not run");
  gev_server_stop(s);
  pthread_join(th, NULL);
  gev_server_free(s);
  atomic_store(&ran, 0);

  ck_assert_int_eq(gev_server_new(&s, &no_handler, &opt), 0);
  ck_assert_int_eq(gev_loop_post(gev_server_loop(s), count_task, &ran), 0);
  ck_assert(gev_server_run_after(s, 1, count_task, &ran) != 0);
  usleep(20000);
  ck_assert_int_eq(atomic_load(&ran), 0);
  pthread_create(&th, NULL, start_main, s);
  ck_assert(th_wait_int((volatile int *)&ran, 2, 5000));
  gev_server_stop(s);
  pthread_join(th, NULL);
  /* Stopped: posting fails cleanly, and stop stays harmless. */
  ck_assert_int_eq(gev_loop_post(gev_server_loop(s), count_task, &ran),
                   -ESHUTDOWN);
  ck_assert_int_eq(
      gev_loop_post(gev_server_worker_loop(s, 0), count_task, &ran),
      -ESHUTDOWN);
  ck_assert(gev_server_run_after(s, 1, count_task, &ran) == 0);
  gev_server_stop(s);
  ck_assert_int_eq(gev_server_start(s), -EALREADY);
  gev_server_free(s);
}
END_TEST

START_TEST(test_free_without_start_drops_tasks)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 2};
  gev_server *s;
  atomic_int ran = 0;
  int fds = th_count_fds(), threads = th_count_threads();

  ck_assert_int_eq(gev_server_new(&s, &no_handler, &opt), 0);
  ck_assert_int_eq(gev_server_num_loops(s), 2);
  ck_assert_int_eq(
      gev_loop_post(gev_server_worker_loop(s, 1), count_task, &ran), 0);
  ck_assert(gev_server_run_every(s, 1, count_task, &ran) != 0);
  gev_server_free(s);
  ck_assert_int_eq(atomic_load(&ran), 0);
  ck_assert_int_eq(th_count_fds(), fds);
  ck_assert_msg(th_wait_threads(threads, 5000), "%d threads, %d before",
                th_count_threads(), threads);
}
END_TEST

START_TEST(test_stop_before_start_returns)
{
  gev_options opt = {.address = "127.0.0.1:0", .num_loops = 2};
  gev_server *s;
  int threads = th_count_threads();

  ck_assert_int_eq(gev_server_new(&s, &no_handler, &opt), 0);
  gev_server_stop(s);
  gev_server_stop(s);
  ck_assert_int_eq(gev_server_start(s), 0);
  ck_assert_msg(th_wait_threads(threads, 5000), "%d threads, %d before",
                th_count_threads(), threads);
  gev_server_free(s);
}
END_TEST

START_TEST(test_default_loops_is_cpu_count)
{
  gev_options opt = {.address = "127.0.0.1:0"};
  gev_server *s;

  ck_assert_int_eq(gev_server_new(&s, &no_handler, &opt), 0);
  ck_assert_int_eq(gev_server_num_loops(s), (int)sysconf(_SC_NPROCESSORS_ONLN));
  ck_assert_ptr_null(gev_server_worker_loop(s, -1));
  ck_assert_ptr_null(gev_server_worker_loop(s, gev_server_num_loops(s)));
  gev_server_free(s);
}
END_TEST

START_TEST(test_strerror)
{
  ck_assert_str_eq(gev_strerror(0), "Success");
  ck_assert_ptr_nonnull(strstr(gev_strerror(-ENOTCONN), "not connected"));
  ck_assert_str_eq(gev_strerror(-ENOENT), gev_strerror(ENOENT));
  ck_assert_ptr_nonnull(gev_strerror(-123456));
}
END_TEST

static Suite *loop_suite(void)
{
  Suite *s = suite_create("loop");
  TCase *tc;

#define ADD(name, fn)                                                          \
  tc = tcase_create(name);                                                     \
  tcase_add_test(tc, fn);                                                      \
  suite_add_tcase(s, tc)
  ADD("post_fifo", test_post_fifo_per_thread);
  ADD("post_args", test_post_bad_arguments);
  ADD("no_starvation", test_reposting_task_does_not_starve_timers);
  ADD("run_after", test_run_after_fires_once_not_early);
  ADD("run_every", test_run_every_and_cancel);
  ADD("self_cancel", test_periodic_cancels_itself);
  ADD("same_tick_cancel", test_cancel_from_timer_in_same_tick);
  ADD("many_timers", test_hundred_thousand_timers);
  ADD("before_start", test_posted_before_start_run_at_start);
  ADD("free_unstarted", test_free_without_start_drops_tasks);
  ADD("stop_first", test_stop_before_start_returns);
  ADD("default_loops", test_default_loops_is_cpu_count);
  ADD("strerror", test_strerror);
#undef ADD
  return s;
}

int main(void)
{
  return th_run(loop_suite());
}
