/* timer-heap.c - 4-ary min-heap of timers with generation-checked ids.
 *
 * A 4-ary heap is shallower than a binary one and its four children share a
 * cache line or two, which makes pops cheaper at large sizes. */
#include "timer-heap.h"

#include <errno.h>
#include <stdlib.h>

enum { SLOT_FREE = 0, SLOT_ARMED, SLOT_RUNNING, SLOT_CANCELLED };

struct gev__timer_slot {
  gev_task_fn fn;
  void *arg;
  uint64_t interval;
  uint64_t deadline; /* of the current or last run: periods stay aligned */
  uint32_t heap_idx; /* position in the heap while armed; next free else */
  uint32_t gen;
  uint8_t state;
};

#define ARITY 4

static gev_timer_id make_id(uint32_t slot, uint32_t gen)
{
  return ((uint64_t)gen << 32) | (uint64_t)(slot + 1);
}

/* NULL for an id that is not a live slot of this generation. */
static gev__timer_slot *lookup(const gev__timers *t, gev_timer_id id,
                               uint32_t *slot_out)
{
  uint32_t lo = (uint32_t)id;

  if (lo == 0 || lo > t->nslots)
    return NULL;
  gev__timer_slot *s = &t->slots[lo - 1];
  if (s->state == SLOT_FREE || s->gen != (uint32_t)(id >> 32))
    return NULL;
  *slot_out = lo - 1;
  return s;
}

static bool less(const gev__heap_ent *a, const gev__heap_ent *b)
{
  return a->deadline < b->deadline ||
         (a->deadline == b->deadline && a->seq < b->seq);
}

static void place(gev__timers *t, uint32_t i, gev__heap_ent e)
{
  t->heap[i] = e;
  t->slots[e.slot].heap_idx = i;
}

static void sift_up(gev__timers *t, uint32_t i)
{
  gev__heap_ent e = t->heap[i];

  while (i > 0) {
    uint32_t parent = (i - 1) / ARITY;
    if (!less(&e, &t->heap[parent]))
      break;
    place(t, i, t->heap[parent]);
    i = parent;
  }
  place(t, i, e);
}

static void sift_down(gev__timers *t, uint32_t i)
{
  gev__heap_ent e = t->heap[i];

  for (;;) {
    uint32_t first = i * ARITY + 1, best = i;
    const gev__heap_ent *bestp = &e;

    for (uint32_t c = first; c < first + ARITY && c < t->n; c++) {
      if (less(&t->heap[c], bestp)) {
        best = c;
        bestp = &t->heap[c];
      }
    }
    if (best == i)
      break;
    place(t, i, t->heap[best]);
    i = best;
  }
  place(t, i, e);
}

static void heap_remove(gev__timers *t, uint32_t i)
{
  t->n--;
  if (i == t->n)
    return;
  place(t, i, t->heap[t->n]);
  if (i > 0 && less(&t->heap[i], &t->heap[(i - 1) / ARITY]))
    sift_up(t, i);
  else
    sift_down(t, i);
}

static void slot_release(gev__timers *t, uint32_t slot)
{
  gev__timer_slot *s = &t->slots[slot];

  s->state = SLOT_FREE;
  s->gen++; /* old ids stop matching */
  if (s->gen == 0)
    s->gen = 1;
  s->heap_idx = t->free_head;
  t->free_head = slot + 1;
}

static int grow(void **p, uint32_t *cap, size_t elem)
{
  uint32_t ncap = *cap ? *cap * 2 : 16;

  if (ncap <= *cap)
    return -ENOMEM;
  void *np = realloc(*p, (size_t)ncap * elem);
  if (!np)
    return -ENOMEM;
  *p = np;
  *cap = ncap;
  return 0;
}

static int slot_alloc(gev__timers *t, uint32_t *out)
{
  if (t->free_head) {
    *out = t->free_head - 1;
    t->free_head = t->slots[*out].heap_idx;
    return 0;
  }
  if (t->nslots == UINT32_MAX - 1)
    return -ENOMEM;
  if (t->nslots == t->slots_cap &&
      grow((void **)&t->slots, &t->slots_cap, sizeof(*t->slots)) < 0)
    return -ENOMEM;
  *out = t->nslots++;
  t->slots[*out].gen = 1;
  return 0;
}

static void heap_push(gev__timers *t, uint32_t slot, uint64_t deadline)
{
  t->heap[t->n] = (gev__heap_ent){deadline, t->seq++, slot};
  t->slots[slot].heap_idx = t->n;
  t->slots[slot].deadline = deadline;
  sift_up(t, t->n++);
}

void gev__timers_init(gev__timers *t)
{
  *t = (gev__timers){0};
}

void gev__timers_free(gev__timers *t)
{
  free(t->heap);
  free(t->slots);
  *t = (gev__timers){0};
}

gev_timer_id gev__timers_add(gev__timers *t, uint64_t deadline,
                             uint64_t interval, gev_task_fn fn, void *arg)
{
  uint32_t slot;

  /* Grow the heap first: a slot taken and then refused would leak. */
  if (t->n == t->heap_cap &&
      grow((void **)&t->heap, &t->heap_cap, sizeof(*t->heap)) < 0)
    return 0;
  if (slot_alloc(t, &slot) < 0)
    return 0;
  gev__timer_slot *s = &t->slots[slot];
  s->fn = fn;
  s->arg = arg;
  s->interval = interval;
  s->state = SLOT_ARMED;
  heap_push(t, slot, deadline);
  return make_id(slot, s->gen);
}

int gev__timers_cancel(gev__timers *t, gev_timer_id id)
{
  uint32_t slot;
  gev__timer_slot *s = lookup(t, id, &slot);

  if (!s)
    return -ENOENT;
  switch (s->state) {
  case SLOT_ARMED:
    heap_remove(t, s->heap_idx);
    slot_release(t, slot);
    return 0;
  case SLOT_RUNNING:
    if (s->interval == 0)
      return -ENOENT; /* a one-shot that is firing has fired */
    s->state = SLOT_CANCELLED;
    return 0;
  default: return -ENOENT;
  }
}

bool gev__timers_next(const gev__timers *t, uint64_t *deadline)
{
  if (t->n == 0)
    return false;
  *deadline = t->heap[0].deadline;
  return true;
}

bool gev__timers_pop_due(gev__timers *t, uint64_t now, uint64_t cutoff,
                         gev__timer_fire *out)
{
  if (t->n == 0 || t->heap[0].deadline > now || t->heap[0].seq >= cutoff)
    return false;
  uint32_t slot = t->heap[0].slot;
  gev__timer_slot *s = &t->slots[slot];

  heap_remove(t, 0);
  s->state = SLOT_RUNNING;
  out->id = make_id(slot, s->gen);
  out->fn = s->fn;
  out->arg = s->arg;
  return true;
}

void gev__timers_done(gev__timers *t, gev_timer_id id, uint64_t now)
{
  uint32_t slot;
  gev__timer_slot *s = lookup(t, id, &slot);

  if (!s)
    return;
  if (s->state != SLOT_RUNNING || s->interval == 0) {
    slot_release(t, slot);
    return;
  }
  /* The heap cannot be full here: this timer's own entry was popped. Periods
   * stay aligned to the first deadline; missed ones are skipped rather than
   * run in a burst. */
  uint64_t next = s->deadline + s->interval;
  if (next < s->deadline)
    next = UINT64_MAX;
  else if (next <= now)
    next = now + s->interval < now ? UINT64_MAX : now + s->interval;
  s->state = SLOT_ARMED;
  heap_push(t, slot, next);
}

uint32_t gev__timers_count(const gev__timers *t)
{
  return t->n;
}
