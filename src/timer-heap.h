/* timer-heap.h - internal: not installed.
 *
 * A 4-ary min-heap of timers keyed by (deadline, sequence), with a slot table
 * so that a timer id finds its heap position in O(1) and cancel is
 * O(log n). Ids carry a generation, so a stale id never cancels a newer
 * timer that reuses the slot. Not thread-safe: the loop guards it. */
#ifndef GEV_SRC_TIMER_HEAP_H
#define GEV_SRC_TIMER_HEAP_H

#include <stdbool.h>
#include <stdint.h>

#include <gev/loop.h>

typedef struct gev__heap_ent {
  uint64_t deadline; /* ms, monotonic */
  uint64_t seq;      /* FIFO among equal deadlines; also the pass cutoff */
  uint32_t slot;
} gev__heap_ent;

typedef struct gev__timer_slot gev__timer_slot;

typedef struct gev__timers {
  gev__heap_ent *heap;
  uint32_t n, heap_cap;
  gev__timer_slot *slots;
  uint32_t nslots, slots_cap;
  uint32_t free_head; /* index + 1 of the first free slot, 0 = none */
  uint64_t seq;       /* next sequence number */
} gev__timers;

/* What the loop needs to run a due timer outside the lock. */
typedef struct gev__timer_fire {
  gev_timer_id id;
  gev_task_fn fn;
  void *arg;
} gev__timer_fire;

void gev__timers_init(gev__timers *t);
void gev__timers_free(gev__timers *t);
/* interval 0: one-shot. Returns the id, or 0 when out of memory. */
gev_timer_id gev__timers_add(gev__timers *t, uint64_t deadline,
                             uint64_t interval, gev_task_fn fn, void *arg);
/* 0, or -ENOENT for an unknown, fired or already cancelled id. */
int gev__timers_cancel(gev__timers *t, gev_timer_id id);
/* Earliest deadline; false when no timer is armed. */
bool gev__timers_next(const gev__timers *t, uint64_t *deadline);
/* Pops the earliest timer when its deadline <= now and its seq < cutoff
 * (timers added or re-armed during this pass wait for the next one). The
 * timer is marked running until gev__timers_done. */
bool gev__timers_pop_due(gev__timers *t, uint64_t now, uint64_t cutoff,
                         gev__timer_fire *out);
/* After the callback: re-arm a periodic timer (unless it was cancelled
 * meanwhile) at the next interval after now, or release the slot. */
void gev__timers_done(gev__timers *t, gev_timer_id id, uint64_t now);
/* Number of armed timers. */
uint32_t gev__timers_count(const gev__timers *t);

#endif
