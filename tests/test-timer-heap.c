/* test-timer-heap.c - the timer heap against a reference model. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "helpers.h"
#include "timer-heap.h"

static void nop(void *arg)
{
  (void)arg;
}

START_TEST(test_fifo_among_equal_deadlines)
{
  gev__timers t;
  gev__timer_fire f;
  gev_timer_id ids[10];

  gev__timers_init(&t);
  for (int i = 0; i < 10; i++)
    ids[i] = gev__timers_add(&t, 100, 0, nop, (void *)(intptr_t)i);
  ck_assert(!gev__timers_pop_due(&t, 99, UINT64_MAX, &f));
  for (int i = 0; i < 10; i++) {
    ck_assert(gev__timers_pop_due(&t, 100, UINT64_MAX, &f));
    ck_assert_int_eq((intptr_t)f.arg, i);
    ck_assert(f.id == ids[i]);
    gev__timers_done(&t, f.id, 100);
  }
  ck_assert(!gev__timers_pop_due(&t, 1000, UINT64_MAX, &f));
  gev__timers_free(&t);
}
END_TEST

START_TEST(test_cancel_and_stale_ids)
{
  gev__timers t;
  gev__timer_fire f;

  gev__timers_init(&t);
  gev_timer_id a = gev__timers_add(&t, 10, 0, nop, NULL);
  ck_assert(a != 0);
  ck_assert_int_eq(gev__timers_cancel(&t, a), 0);
  ck_assert_int_eq(gev__timers_cancel(&t, a), -ENOENT);
  /* The slot is reused with a new generation: the old id stays dead. */
  gev_timer_id b = gev__timers_add(&t, 10, 0, nop, NULL);
  ck_assert(b != a);
  ck_assert_int_eq(gev__timers_cancel(&t, a), -ENOENT);
  ck_assert_int_eq(gev__timers_cancel(&t, 0), -ENOENT);
  ck_assert_int_eq(gev__timers_cancel(&t, 0xdeadbeef00000007ull), -ENOENT);
  /* A fired one-shot is gone. */
  ck_assert(gev__timers_pop_due(&t, 10, UINT64_MAX, &f));
  ck_assert_int_eq(gev__timers_cancel(&t, b), -ENOENT); /* firing */
  gev__timers_done(&t, f.id, 10);
  ck_assert_int_eq(gev__timers_cancel(&t, b), -ENOENT);
  gev__timers_free(&t);
}
END_TEST

START_TEST(test_periodic_rearm_and_cancel_while_running)
{
  gev__timers t;
  gev__timer_fire f;
  uint64_t next;

  gev__timers_init(&t);
  gev_timer_id id = gev__timers_add(&t, 10, 10, nop, NULL);
  ck_assert(gev__timers_pop_due(&t, 10, UINT64_MAX, &f));
  gev__timers_done(&t, f.id, 10);
  ck_assert(gev__timers_next(&t, &next));
  ck_assert_uint_eq(next, 20);
  /* Late by several periods: skip the missed ones, no burst. */
  ck_assert(gev__timers_pop_due(&t, 55, UINT64_MAX, &f));
  gev__timers_done(&t, f.id, 55);
  ck_assert(gev__timers_next(&t, &next));
  ck_assert_uint_eq(next, 65);
  /* Cancelled from its own callback: not re-armed. */
  ck_assert(gev__timers_pop_due(&t, 65, UINT64_MAX, &f));
  ck_assert_int_eq(gev__timers_cancel(&t, id), 0);
  ck_assert_int_eq(gev__timers_cancel(&t, id), -ENOENT);
  gev__timers_done(&t, f.id, 65);
  ck_assert_uint_eq(gev__timers_count(&t), 0);
  ck_assert(!gev__timers_next(&t, &next));
  gev__timers_free(&t);
}
END_TEST

START_TEST(test_cutoff_defers_new_timers)
{
  gev__timers t;
  gev__timer_fire f;
  uint64_t cutoff;

  gev__timers_init(&t);
  gev__timers_add(&t, 5, 0, nop, NULL);
  cutoff = t.seq;
  gev__timers_add(&t, 5, 0, nop, NULL); /* added "during the pass" */
  ck_assert(gev__timers_pop_due(&t, 5, cutoff, &f));
  gev__timers_done(&t, f.id, 5);
  ck_assert(!gev__timers_pop_due(&t, 5, cutoff, &f));
  ck_assert(gev__timers_pop_due(&t, 5, t.seq, &f));
  gev__timers_done(&t, f.id, 5);
  gev__timers_free(&t);
}
END_TEST

/* Random adds, cancels and pops against a plain array, checking that pops
 * come out in (deadline, insertion) order and cancels take effect. */
typedef struct ref_timer {
  gev_timer_id id;
  uint64_t deadline, order;
  int live;
} ref_timer;

START_TEST(test_random_against_model)
{
  enum { OPS = 200000, MAXT = 512 };
  unsigned seed = getenv("TH_SEED") ? (unsigned)atoi(getenv("TH_SEED"))
                                    : (unsigned)time(NULL);
  ref_timer *ref = calloc(MAXT * 8, sizeof(*ref));
  size_t nref = 0, live = 0;
  uint64_t now = 0, order = 0;
  gev__timers t;
  gev__timer_fire f;

  srand(seed);
  gev__timers_init(&t);
  for (int op = 0; op < OPS; op++) {
    int r = rand() % 100;
    if (r < 45 && live < MAXT && nref < (size_t)MAXT * 8) {
      uint64_t d = now + (uint64_t)(rand() % 50);
      gev_timer_id id = gev__timers_add(&t, d, 0, nop, NULL);
      ck_assert_msg(id != 0, "seed %u", seed);
      ref[nref++] = (ref_timer){id, d, order++, 1};
      live++;
    } else if (r < 65 && nref > 0) {
      ref_timer *x = &ref[(size_t)rand() % nref];
      int want = x->live ? 0 : -ENOENT;
      ck_assert_msg(gev__timers_cancel(&t, x->id) == want, "seed %u op %d",
                    seed, op);
      if (x->live) {
        x->live = 0;
        live--;
      }
    } else {
      now += (uint64_t)(rand() % 5);
      while (gev__timers_pop_due(&t, now, UINT64_MAX, &f)) {
        ref_timer *best = NULL;
        for (size_t i = 0; i < nref; i++) {
          ref_timer *x = &ref[i];
          if (x->live && x->deadline <= now &&
              (!best || x->deadline < best->deadline ||
               (x->deadline == best->deadline && x->order < best->order)))
            best = x;
        }
        ck_assert_msg(best && best->id == f.id, "seed %u op %d: wrong timer",
                      seed, op);
        best->live = 0;
        live--;
        gev__timers_done(&t, f.id, now);
      }
      ck_assert_msg(gev__timers_count(&t) == live, "seed %u", seed);
      /* Compact the reference now and then to keep the scan short. */
      if (nref > 4 * MAXT) {
        size_t k = 0;
        for (size_t i = 0; i < nref; i++)
          if (ref[i].live || rand() % 8 == 0)
            ref[k++] = ref[i];
        nref = k;
      }
    }
  }
  gev__timers_free(&t);
  free(ref);
}
END_TEST

static Suite *timer_heap_suite(void)
{
  Suite *s = suite_create("timer-heap");
  TCase *tc;

#define ADD(name, fn)                                                          \
  tc = tcase_create(name);                                                     \
  tcase_add_test(tc, fn);                                                      \
  suite_add_tcase(s, tc)
  ADD("fifo", test_fifo_among_equal_deadlines);
  ADD("cancel", test_cancel_and_stale_ids);
  ADD("periodic", test_periodic_rearm_and_cancel_while_running);
  ADD("cutoff", test_cutoff_defers_new_timers);
  ADD("random", test_random_against_model);
  tcase_set_timeout(tc, 120);
#undef ADD
  return s;
}

int main(void)
{
  return th_run(timer_heap_suite());
}
