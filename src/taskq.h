/* taskq.h - internal: not installed. The loop's task queue.
 *
 * A growable array of posted tasks. The loop keeps two and swaps them each
 * pass (loop.c's run_tasks): other threads append to `pending` under the
 * loop's mutex while the loop runs `running` outside it. Both storages
 * therefore take turns holding the largest batch of a flood.
 *
 * Storage comes back by a trim a while after growth, not by shrinking after
 * each run: a queue remembers the largest batch it ran since its last trim
 * (`high`), and a trim shrinks it to what that batch needed. Under a steady
 * load a trim is then a no-op (no realloc per pass, nor per trim); once a
 * load drops, the next trim fits the smaller one, and once the queue saw no
 * batch at all since the last trim, its storage is freed. The loop calls
 * gev__taskq_trim every GEV__TASKQ_TRIM_MS while gev__taskq_holds says a
 * queue has grown, so storage returns within two periods of a flood's end
 * even when no task is posted again. (A shrink right after a run cannot
 * tell a flood's last batch from one more batch of a steady load: it would
 * either keep the flood's storage or realloc every pass.)
 *
 * Not thread-safe: whoever owns a queue (the loop's mutex, or the loop's
 * thread) serializes the calls. A leaf: libc only. */
#ifndef GEV_SRC_TASKQ_H
#define GEV_SRC_TASKQ_H

#include <stdbool.h>
#include <stddef.h>

#include <gev/loop.h>

/* The first allocation, in tasks; a queue that never holds more than this
 * many needs no trim. */
#define GEV__TASKQ_MIN 64
/* How often the loop trims a queue that has grown past GEV__TASKQ_MIN. */
#define GEV__TASKQ_TRIM_MS 1000

typedef struct gev__task {
  gev_task_fn fn;
  void *arg;
  gev_task_fn drop; /* releases arg when the task is freed unrun; or NULL */
} gev__task;

typedef struct gev__taskq {
  gev__task *v;
  size_t n, cap;
  size_t high; /* the largest batch run since the last trim */
} gev__taskq;

/* Appends a task, doubling the storage when full. 0 or -ENOMEM (then
 * nothing was queued). */
int gev__taskq_push(gev__taskq *q, gev_task_fn fn, void *arg, gev_task_fn drop);
/* Runs v[0..n) in order, empties q and notes the batch in q->high for the
 * next trim. A task must not touch q itself. */
void gev__taskq_run(gev__taskq *q);
/* Calls drop(arg) of every task not run (in order) and frees the storage;
 * q is left empty and reusable. */
void gev__taskq_drop(gev__taskq *q);
/* true when q has storage beyond GEV__TASKQ_MIN: a trim may give some
 * back. */
bool gev__taskq_holds(const gev__taskq *q);
/* Shrinks the storage to the smallest doubling of GEV__TASKQ_MIN that
 * holds both the queued tasks and q->high, or frees it when both are 0;
 * then starts a new interval (high = 0). Queued tasks are kept. */
void gev__taskq_trim(gev__taskq *q);

#endif
