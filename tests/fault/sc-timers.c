/* sc-timers.c - a standalone loop: one-shot timers and tasks added from
 * another thread and from the loop, a periodic timer cancelled midway.
 * Each one-shot whose add succeeded runs exactly once; a failed add
 * (id 0, or an errno) never runs; a cancelled timer stops. */
#include "harness.h"

#include <time.h>

enum { ONESHOTS = 24, TASKS = 24 };

static atomic_int ran[ONESHOTS + TASKS + 1], ticks, ticks_after;
static atomic_bool cancelled;
static gev_loop *loop;

static void once(void *arg)
{
  atomic_fetch_add(&ran[(intptr_t)arg], 1);
}

static void tick(void *arg)
{
  (void)arg;
  atomic_fetch_add(atomic_load(&cancelled) ? &ticks_after : &ticks, 1);
}

/* In the loop: a timer added from a task takes the same path as one added
 * by a timer callback (the loop's own thread). */
static void add_from_loop(void *arg)
{
  intptr_t i = (intptr_t)arg;

  if (!gev_loop_run_after(loop, (uint64_t)(i % 7), once, (void *)i))
    atomic_store(&ran[i], -1000); /* failed: must stay negative */
}

static bool all_ran(const bool *ok)
{
  for (int i = 0; i < ONESHOTS + TASKS; i++)
    if (ok[i] && atomic_load(&ran[i]) < 1 && atomic_load(&ran[i]) > -1000 + 0)
      return false;
  return true;
}

int sc_timers(fault_run *r)
{
  fr_loop lp;
  bool ok[ONESHOTS + TASKS] = {0};
  gev_timer_id every;
  int err, bad = 0, failed = 0;

  fr_logger_install();
  if ((err = fr_loop_open(&lp)) < 0) {
    r->gev_error = err;
    return fr_finish(r, 0, 1, true);
  }
  loop = lp.l;
  every = gev_loop_run_every(loop, 2, tick, NULL);
  for (intptr_t i = 0; i < ONESHOTS; i++) {
    if (i % 2)
      ok[i] = gev_loop_run_after(loop, (uint64_t)(i % 5), once, (void *)i);
    else
      ok[i] = gev_loop_post(loop, add_from_loop, (void *)i) == 0;
  }
  for (intptr_t i = ONESHOTS; i < ONESHOTS + TASKS; i++)
    ok[i] = gev_loop_post(loop, once, (void *)i) == 0;
  for (int i = 0; i < 3000 && !all_ran(ok); i++)
    nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
  if (every) {
    for (int i = 0; i < 2000 && atomic_load(&ticks) < 3; i++)
      nanosleep(&(struct timespec){.tv_nsec = 1000000}, NULL);
    if (gev_loop_cancel(loop, every) == 0)
      atomic_store(&cancelled, true);
    nanosleep(&(struct timespec){.tv_nsec = 20000000}, NULL);
  }
  err = fr_loop_close(&lp);
  for (int i = 0; i < ONESHOTS + TASKS; i++) {
    int n = atomic_load(&ran[i]);
    failed += !ok[i] || n == -1000;
    if (ok[i] && n != 1 && n != -1000)
      bad++;
    if (!ok[i] && n != 0)
      bad++;
  }
  if (bad)
    return fr_fail(r, "%d timers or tasks ran a wrong number of times", bad);
  if (every && atomic_load(&ticks) < 3)
    return fr_fail(r, "the periodic timer ticked %d times",
                   atomic_load(&ticks));
  /* A tick may be running while cancel is called: at most that one. */
  if (atomic_load(&ticks_after) > 1)
    return fr_fail(r, "%d ticks after the cancel", atomic_load(&ticks_after));
  if (err < 0)
    r->gev_error = err;
  if (!every)
    failed++;
  return fr_finish(r, failed ? 0 : 1, 1, false);
}
