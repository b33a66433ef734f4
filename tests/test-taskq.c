/* test-taskq.c - the loop's task queue gives back the storage of a flood:
 * the queue on its own (taskq.h), then a real loop measured with
 * mallinfo2, then a server's loops after a gev_conn_send flood. */
#include <check.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "loop-internal.h" /* the queues' capacity, in every build */
#include "taskq.h"

/* mallinfo2 reports glibc's heap; an ASan build allocates elsewhere, and
 * so does a program run under valgrind. */
#if defined(__SANITIZE_ADDRESS__)
#define TQ_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TQ_ASAN 1
#endif
#endif
#ifndef TQ_ASAN
#define TQ_ASAN 0
#endif

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

enum { FLOOD = 4000000 };

static size_t ran;

static void count_task(void *arg)
{
  (void)arg;
  ran++;
}

/* ---- the queue on its own --------------------------------------------- */

/* The loop's pair: q[p] is pending, q[!p] running; a pass swaps them and
 * runs the batch. `reallocs` counts capacity changes, which is what a
 * realloc is here (push doubles, trim shrinks). Loops of pushes count
 * failures and assert once: each ck_assert in a forked test is a write to
 * Check's pipe, which would make millions of pushes take minutes. */
typedef struct pair {
  gev__taskq q[2];
  int p;
  size_t reallocs;
} pair;

static void post(pair *x, size_t n)
{
  gev__taskq *q = &x->q[x->p];
  size_t failed = 0;

  for (size_t i = 0; i < n; i++) {
    size_t cap = q->cap;

    failed += gev__taskq_push(q, count_task, NULL, NULL) != 0;
    x->reallocs += q->cap != cap;
  }
  ck_assert_uint_eq(failed, 0);
}

static void pass(pair *x)
{
  x->p = !x->p;
  gev__taskq_run(&x->q[!x->p]);
}

/* The loop's timer: both queues trimmed. */
static void trim(pair *x)
{
  for (int i = 0; i < 2; i++) {
    size_t cap = x->q[i].cap;

    gev__taskq_trim(&x->q[i]);
    x->reallocs += x->q[i].cap != cap;
  }
}

static size_t caps(const pair *x)
{
  return x->q[0].cap + x->q[1].cap;
}

static void pair_free(pair *x)
{
  gev__taskq_drop(&x->q[0]);
  gev__taskq_drop(&x->q[1]);
}

/* 4 million tasks in one batch: the run keeps the storage (the load may go
 * on), the trim after the flood's interval keeps it too, and the trim after
 * an interval without tasks frees it. */
START_TEST(test_flood_then_idle)
{
  gev__taskq q = {0};
  size_t failed = 0;

  ran = 0;
  for (size_t i = 0; i < FLOOD; i++)
    failed += gev__taskq_push(&q, count_task, NULL, NULL) != 0;
  ck_assert_uint_eq(failed, 0);
  ck_assert_uint_ge(q.cap, FLOOD);
  gev__taskq_run(&q);
  ck_assert_uint_eq(ran, FLOOD);
  ck_assert_uint_eq(q.n, 0);
  ck_assert(gev__taskq_holds(&q));
  gev__taskq_trim(&q);
  ck_assert_uint_ge(q.cap, FLOOD);
  gev__taskq_trim(&q);
  ck_assert_uint_eq(q.cap, 0);
  ck_assert_ptr_null(q.v);
  ck_assert(!gev__taskq_holds(&q));
  /* Still usable. */
  ck_assert_int_eq(gev__taskq_push(&q, count_task, NULL, NULL), 0);
  gev__taskq_run(&q);
  ck_assert_uint_eq(ran, FLOOD + 1);
  gev__taskq_drop(&q);
}
END_TEST

/* A flood through the swapped pair, batches of 1,000,000 then 100,000 with
 * a trim every 10 passes: the trims follow the load down, and once the
 * tasks stop two trims give back both storages, wherever the last batches
 * left them. */
START_TEST(test_flood_through_pair)
{
  pair x = {0};

  ran = 0;
  for (int i = 0; i < FLOOD / 100000; i++) {
    post(&x, i < 5 ? 1000000 : 100000); /* a first burst grows both */
    pass(&x);
    if (i % 10 == 9)
      trim(&x);
  }
  pass(&x);
  ck_assert_uint_eq(ran, 5 * 1000000 + (FLOOD / 100000 - 5) * 100000);
  /* The trims fitted the 100,000-task batches after the burst. */
  ck_assert_uint_eq(caps(&x), 2 * 131072);
  trim(&x);
  trim(&x);
  ck_assert_uint_eq(caps(&x), 0);
  pair_free(&x);
}
END_TEST

/* 5,000 to 12,000 tasks a pass for 2,000 passes, with a trim every 20
 * passes: the storage settles at the doubling that holds the largest batch
 * and no push or trim reallocates after the first passes. */
START_TEST(test_steady_load_no_realloc)
{
  pair x = {0};
  size_t warm, cap;

  srand(11);
  for (int i = 0; i < 4; i++) {
    post(&x, 12000);
    pass(&x);
  }
  warm = x.reallocs;
  cap = caps(&x);
  ck_assert_uint_eq(cap, 2 * 16384);
  for (int i = 0; i < 2000; i++) {
    post(&x, 5000 + (size_t)(rand() % 7001));
    pass(&x);
    if (i % 20 == 19)
      trim(&x);
  }
  ck_assert_uint_eq(x.reallocs, warm);
  ck_assert_uint_eq(caps(&x), cap);
  pair_free(&x);
}
END_TEST

/* A load that drops is fitted within two trims, and no further. */
START_TEST(test_load_drops)
{
  pair x = {0};

  for (int i = 0; i < 10; i++) {
    post(&x, 10000);
    pass(&x);
  }
  for (int round = 0; round < 3; round++) {
    for (int i = 0; i < 10; i++) {
      post(&x, 100);
      pass(&x);
    }
    trim(&x);
  }
  ck_assert_uint_eq(x.q[0].cap, 128);
  ck_assert_uint_eq(x.q[1].cap, 128);
  pair_free(&x);
}
END_TEST

/* A trim keeps what is queued, and may shrink around it. */
START_TEST(test_trim_keeps_queued)
{
  gev__taskq q = {0};

  ran = 0;
  for (int i = 0; i < 1000; i++)
    gev__taskq_push(&q, count_task, NULL, NULL);
  gev__taskq_trim(&q); /* 1000 queued: 1024 stays */
  ck_assert_uint_eq(q.cap, 1024);
  gev__taskq_run(&q);
  for (int i = 0; i < 10; i++)
    gev__taskq_push(&q, count_task, NULL, NULL);
  gev__taskq_trim(&q); /* the batch of 1000 counts */
  ck_assert_uint_eq(q.cap, 1024);
  gev__taskq_trim(&q); /* only the 10 queued now */
  ck_assert_uint_eq(q.cap, 64);
  ck_assert_uint_eq(q.n, 10);
  gev__taskq_run(&q);
  ck_assert_uint_eq(ran, 1010);
  gev__taskq_drop(&q);
}
END_TEST

static int order[8], norder;

static void record(void *arg)
{
  order[norder++] = (int)(intptr_t)arg;
}

static void must_not_run(void *arg)
{
  (void)arg;
  ck_abort_msg("a dropped task ran");
}

/* drop releases every unrun task's arg, in order, runs none, and leaves
 * the queue empty and reusable. */
START_TEST(test_drop)
{
  gev__taskq q = {0};

  norder = 0;
  gev__taskq_push(&q, must_not_run, (void *)1, record);
  gev__taskq_push(&q, must_not_run, (void *)2, NULL);
  gev__taskq_push(&q, must_not_run, (void *)3, record);
  gev__taskq_drop(&q);
  ck_assert_int_eq(norder, 2);
  ck_assert_int_eq(order[0], 1);
  ck_assert_int_eq(order[1], 3);
  ck_assert_ptr_null(q.v);
  ck_assert_uint_eq(q.n + q.cap, 0);
  gev__taskq_push(&q, record, (void *)4, NULL);
  gev__taskq_run(&q);
  ck_assert_int_eq(order[2], 4);
  gev__taskq_drop(&q);
}
END_TEST

/* ---- a real loop ------------------------------------------------------ */

/* Bytes malloc has handed out and not had back: the heaps' (all arenas)
 * plus mmapped chunks, where a large queue lives. */
static size_t in_use(void)
{
  struct mallinfo2 m = mallinfo2();

  return m.uordblks + m.hblkhd;
}

/* Whether mallinfo2 describes this process's allocations; says why not. */
static bool heap_measurable(void)
{
  if (TQ_ASAN)
    fprintf(stderr, "taskq: ASan build, its allocator bypasses mallinfo2: "
                    "memory not checked\n");
  else if (RUNNING_ON_VALGRIND)
    fprintf(stderr, "taskq: under valgrind, whose allocator bypasses "
                    "mallinfo2: memory not checked\n");
  return !TQ_ASAN && !RUNNING_ON_VALGRIND;
}

#define MB (1024.0 * 1024.0)
enum { SLACK = 8 << 20, SETTLE_MS = 3 * GEV__TASKQ_TRIM_MS + 2000 };

static bool settled_below(size_t limit, int timeout_ms)
{
  uint64_t end = th_now_ms() + (uint64_t)timeout_ms;

  do {
    if (in_use() < limit)
      return true;
    usleep(10000);
  } while (th_now_ms() < end);
  return false;
}

typedef struct caps_probe {
  gev_loop *l;
  size_t caps;
} caps_probe;

/* In the loop's thread: running is its own, pending is under its lock. */
static void read_caps(void *arg)
{
  caps_probe *p = arg;

  pthread_mutex_lock(&p->l->mu);
  p->caps = p->l->pending.cap;
  pthread_mutex_unlock(&p->l->mu);
  p->caps += p->l->running.cap;
}

/* Both queues' capacity in tasks, as the loop sees it. */
static size_t loop_caps(gev_loop *l)
{
  caps_probe p = {l, 0};

  th_run_in_loop(l, read_caps, &p);
  return p.caps;
}

/* Waits until no loop of ls[0..n) keeps more than the first allocation of
 * each queue (the probe itself is a task). Measured this way rather than
 * with mallinfo2, it holds under ASan and valgrind too. */
static bool queues_trimmed(gev_loop **ls, int n, size_t *caps)
{
  uint64_t end = th_now_ms() + SETTLE_MS;
  bool all;

  do {
    all = true;
    *caps = 0;
    for (int i = 0; i < n; i++) {
      size_t c = loop_caps(ls[i]);

      *caps += c;
      all = all && c <= 2 * GEV__TASKQ_MIN;
    }
    if (all)
      return true;
    usleep(20000);
  } while (th_now_ms() < end);
  return false;
}

static atomic_size_t loop_ran;
static atomic_bool gate_open;

/* Holds its loop (bounded) until the test opens the gate, so what is posted
 * meanwhile piles up in the queue as it does behind a busy loop. */
static void gate_task(void *arg)
{
  uint64_t end = th_now_ms() + 30000;

  (void)arg;
  while (!atomic_load(&gate_open) && th_now_ms() < end)
    usleep(1000);
}

static void loop_count(void *arg)
{
  (void)arg;
  atomic_fetch_add_explicit(&loop_ran, 1, memory_order_relaxed);
}

static bool all_ran(void *arg)
{
  (void)arg;
  return atomic_load(&loop_ran) == FLOOD;
}

/* 4 million no-op tasks from this thread to a busy loop that then has
 * nothing more to do: within a few trim periods the heap is back near where
 * it was (the queue alone had held about 100 MB). */
START_TEST(test_loop_flood_returns_memory)
{
  th_loop_thread lt;
  size_t before, peak, after, failed = 0, caps;
  bool measurable = heap_measurable(), trimmed, back;

  atomic_store(&loop_ran, 0);
  atomic_store(&gate_open, false);
  th_lt_start(&lt);
  th_run_in_loop(lt.l, th_noop, NULL); /* the loop is up and has run */
  before = in_use();
  ck_assert_int_eq(gev_loop_post(lt.l, gate_task, NULL), 0);
  for (size_t i = 0; i < FLOOD; i++)
    failed += gev_loop_post(lt.l, loop_count, NULL) != 0;
  atomic_store(&gate_open, true);
  ck_assert_uint_eq(failed, 0);
  ck_assert_msg(th_wait_until(all_ran, NULL, 60000), "tasks did not run");
  peak = in_use();
  trimmed = queues_trimmed(&lt.l, 1, &caps);
  back = settled_below(before + SLACK, measurable ? 1000 : 0);
  after = in_use();
  fprintf(stderr,
          "taskq: loop flood: in use %.1f MB before, %.1f MB once run, "
          "%.1f MB after; queues' capacity %zu tasks\n",
          before / MB, peak / MB, after / MB, caps);
  ck_assert_msg(trimmed, "the queues still hold %zu tasks' storage", caps);
  if (measurable)
    ck_assert_msg(back, "%.1f MB still in use (%.1f MB before the flood)",
                  after / MB, before / MB);
  ck_assert_int_eq(th_lt_stop(&lt), 0);
  gev_loop_free(lt.l);
}
END_TEST

/* ---- a server's loops after a gev_conn_send flood ---------------------- */

enum { BC_LOOPS = 4, BC_CONNS = 64, BC_SENDS = 2000000, BC_MSG = 16 };

static gev_conn *bc_conns[BC_CONNS];
static int bc_n;
static pthread_mutex_t bc_mu = PTHREAD_MUTEX_INITIALIZER;

static void bc_connect(gev_conn *c)
{
  pthread_mutex_lock(&bc_mu);
  if (bc_n < BC_CONNS) {
    gev_conn_ref(c);
    bc_conns[bc_n++] = c;
  }
  pthread_mutex_unlock(&bc_mu);
}

static const gev_handler bc_handler = {.on_connect = bc_connect};

static int bc_count(void)
{
  pthread_mutex_lock(&bc_mu);
  int n = bc_n;
  pthread_mutex_unlock(&bc_mu);
  return n;
}

static bool bc_all_connected(void *arg)
{
  (void)arg;
  return bc_count() == BC_CONNS;
}

static bool bc_all_closed(void *arg)
{
  return gev_server_conn_count(arg) == 0;
}

/* Clients that never read, and enough max_buffer that no send is refused:
 * every message becomes a task on one of the four loops, which are busy
 * meanwhile (so the tasks pile up). Then every connection closes. */
START_TEST(test_broadcast_flood_returns_memory)
{
  gev_options opt = {.num_loops = BC_LOOPS, .max_buffer = 4 << 20};
  char msg[BC_MSG] = "0123456789abcde";
  int fds[BC_CONNS];
  size_t before, peak, after, failed = 0, caps;
  bool measurable = heap_measurable(), trimmed, back;
  gev_loop *ls[BC_LOOPS];
  th_server *t;

  bc_n = 0;
  atomic_store(&gate_open, false);
  t = th_start(&bc_handler, &opt);
  for (int i = 0; i < BC_CONNS; i++)
    ck_assert_int_ge(fds[i] = th_connect(t->port), 0);
  ck_assert(th_wait_until(bc_all_connected, NULL, 10000));
  for (int i = 0; i < BC_LOOPS; i++)
    th_run_in_loop(ls[i] = gev_server_worker_loop(t->s, i), th_noop, NULL);
  before = in_use();
  for (int i = 0; i < BC_LOOPS; i++)
    gev_loop_post(ls[i], gate_task, NULL);
  for (int i = 0; i < BC_SENDS; i++)
    failed += gev_conn_send(bc_conns[i % BC_CONNS], msg, BC_MSG) != 0;
  atomic_store(&gate_open, true);
  ck_assert_uint_eq(failed, 0);
  /* Tasks from one thread run in order: these fence the sends. */
  for (int i = 0; i < BC_LOOPS; i++)
    th_run_in_loop(ls[i], th_noop, NULL);
  for (int i = 0; i < BC_CONNS; i++) {
    gev_conn_close(bc_conns[i]);
    gev_conn_unref(bc_conns[i]);
    close(fds[i]);
  }
  ck_assert(th_wait_until(bc_all_closed, t->s, 10000));
  peak = in_use();
  trimmed = queues_trimmed(ls, BC_LOOPS, &caps);
  back = settled_below(before + SLACK, measurable ? 1000 : 0);
  after = in_use();
  fprintf(stderr,
          "taskq: broadcast flood: in use %.1f MB before, %.1f MB once "
          "closed, %.1f MB after; queues' capacity %zu tasks\n",
          before / MB, peak / MB, after / MB, caps);
  ck_assert_msg(trimmed, "the queues still hold %zu tasks' storage", caps);
  if (measurable)
    ck_assert_msg(back, "%.1f MB still in use (%.1f MB before the flood)",
                  after / MB, before / MB);
  th_stop(t);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"flood_then_idle", test_flood_then_idle, 60},
      {"flood_through_pair", test_flood_through_pair, 60},
      {"steady_load", test_steady_load_no_realloc, 60},
      {"load_drops", test_load_drops, 30},
      {"trim_keeps_queued", test_trim_keeps_queued, 30},
      {"drop", test_drop, 30},
      {"loop_flood", test_loop_flood_returns_memory, 120},
      {"broadcast_flood", test_broadcast_flood_returns_memory, 120},
  };

  return th_run(th_suite("taskq", cases, sizeof(cases) / sizeof(cases[0])));
}
