/*
 * bench-timers.c - timer heap micro-benchmark bodies (see bench.h).
 *
 * Each body keeps the heap (src/timer-heap.h, the loop's timer store) at
 * about `n` armed timers and times only the operation named: setup and the
 * work that restores the size between timed batches are not counted
 * (manual timing). Deadlines are random within a 2^20 ms window after a
 * clock that moves forward with what is popped, as timers in a loop do.
 * A batch is n/8 operations, so the heap size stays within [n, 1.125 n].
 */
#include "bench.h"

#include "timer-heap.h"

#include <stdlib.h>
#include <time.h>

#define WINDOW_MS (1u << 20)

typedef struct heap_fixture {
  gev__timers t;
  uint64_t rng, clock;
  gev_timer_id *live; /* ids of the armed timers (cancel only) */
  size_t nlive;
  gev_timer_id *batch;
} heap_fixture;

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng_next(uint64_t *s) /* xorshift64* */
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * 0x2545F4914F6CDD1Dull;
}

static void noop(void *arg)
{
  (void)arg;
}

static size_t batch_size(size_t n)
{
  return n >= 8 ? n / 8 : 1;
}

static gev_timer_id add_random(heap_fixture *f)
{
  uint64_t d = f->clock + 1 + rng_next(&f->rng) % WINDOW_MS;
  return gev__timers_add(&f->t, d, 0, noop, NULL);
}

static void fixture_fini(heap_fixture *f)
{
  gev__timers_free(&f->t);
  free(f->live);
  free(f->batch);
}

/* n armed timers; their ids kept in f->live when track_live. */
static int fixture_init(heap_fixture *f, size_t n, int track_live)
{
  size_t b = batch_size(n);

  gev__timers_init(&f->t);
  f->rng = 0x9E3779B97F4A7C15ull;
  f->clock = 1000;
  f->nlive = 0;
  f->live = track_live ? malloc((n + b) * sizeof(*f->live)) : NULL;
  f->batch = malloc(b * sizeof(*f->batch));
  if ((track_live && !f->live) || !f->batch) {
    fixture_fini(f);
    return -1;
  }
  for (size_t i = 0; i < n; i++) {
    gev_timer_id id = add_random(f);
    if (!id) {
      fixture_fini(f);
      return -1;
    }
    if (track_live)
      f->live[f->nlive++] = id;
  }
  return 0;
}

/* Pops the earliest timer and releases it, as the loop does for a due
 * one-shot; advances the clock to its deadline. */
static int pop_one(heap_fixture *f)
{
  gev__timer_fire fire;
  uint64_t deadline;

  if (!gev__timers_next(&f->t, &deadline) ||
      !gev__timers_pop_due(&f->t, deadline, UINT64_MAX, &fire))
    return -1;
  gev__timers_done(&f->t, fire.id, deadline);
  f->clock = deadline;
  return 0;
}

double gev_bench_timer_insert(size_t n, uint64_t iters)
{
  heap_fixture f;
  size_t b = batch_size(n);
  double total = 0;

  if (fixture_init(&f, n, 0) != 0)
    return -1;
  for (uint64_t done = 0; done < iters;) {
    size_t k = iters - done < b ? (size_t)(iters - done) : b;
    double t0 = now_s();
    for (size_t i = 0; i < k; i++)
      f.batch[i] = add_random(&f);
    total += now_s() - t0;
    for (size_t i = 0; i < k; i++) /* back to n (untimed) */
      if (!f.batch[i] || gev__timers_cancel(&f.t, f.batch[i]) != 0) {
        fixture_fini(&f);
        return -1;
      }
    done += k;
  }
  fixture_fini(&f);
  return total;
}

double gev_bench_timer_pop(size_t n, uint64_t iters)
{
  heap_fixture f;
  size_t b = batch_size(n);
  double total = 0;

  if (fixture_init(&f, n + b, 0) != 0)
    return -1;
  for (uint64_t done = 0; done < iters;) {
    size_t k = iters - done < b ? (size_t)(iters - done) : b;
    int rc = 0;
    double t0 = now_s();
    for (size_t i = 0; i < k; i++)
      rc |= pop_one(&f);
    total += now_s() - t0;
    for (size_t i = 0; i < k; i++) /* back to n + b (untimed) */
      rc |= add_random(&f) ? 0 : -1;
    if (rc != 0) {
      fixture_fini(&f);
      return -1;
    }
    done += k;
  }
  fixture_fini(&f);
  return total;
}

double gev_bench_timer_cancel(size_t n, uint64_t iters)
{
  heap_fixture f;
  size_t b = batch_size(n);
  double total = 0;

  if (fixture_init(&f, n + b, 1) != 0)
    return -1;
  for (uint64_t done = 0; done < iters;) {
    size_t k = iters - done < b ? (size_t)(iters - done) : b;
    int rc = 0;
    /* Pick k random armed timers (untimed). */
    for (size_t i = 0; i < k; i++) {
      size_t j = (size_t)(rng_next(&f.rng) % f.nlive);
      f.batch[i] = f.live[j];
      f.live[j] = f.live[--f.nlive];
    }
    double t0 = now_s();
    for (size_t i = 0; i < k; i++)
      rc |= gev__timers_cancel(&f.t, f.batch[i]);
    total += now_s() - t0;
    for (size_t i = 0; i < k; i++) { /* back to n + b (untimed) */
      gev_timer_id id = add_random(&f);
      rc |= id ? 0 : -1;
      f.live[f.nlive++] = id;
    }
    if (rc != 0) {
      fixture_fini(&f);
      return -1;
    }
    done += k;
  }
  fixture_fini(&f);
  return total;
}
