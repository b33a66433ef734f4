/*
 * loop.h - posting tasks and timers to an event loop.
 *
 * Loops are created and run by a gev_server (the acceptor loop and the worker
 * loops). Every function here is safe to call from any thread: a call from
 * another thread takes the loop's short internal lock and, when the loop may
 * be sleeping, wakes it through its eventfd; a call from the loop's own
 * thread never writes to the eventfd.
 */
#ifndef GEV_LOOP_H
#define GEV_LOOP_H

#include <gev/common.h>

#ifdef __cplusplus
extern "C" {
#endif

/** A task or timer callback. It runs in the loop's thread. */
typedef void (*gev_task_fn)(void *arg);

/** Identifies a timer for gev_loop_cancel. 0 means "failed". Ids are never
 *  reused within a loop's lifetime (they carry a generation). */
typedef uint64_t gev_timer_id;

/**
 * Run fn(arg) once in @p l's thread, after the current dispatch pass.
 * Tasks posted from one thread run in the order they were posted.
 * @param l the loop
 * @param fn the callback; it runs in the loop's thread
 * @param arg passed to @p fn
 * @return 0; -EINVAL when l or fn is NULL; -ESHUTDOWN when the loop has
 *         stopped; -ENOMEM. On error fn never runs and arg is untouched
 *         (the caller still owns it).
 */
GEV_EXPORT int gev_loop_post(gev_loop *l, gev_task_fn fn, void *arg);

/**
 * Run fn(arg) once in @p l's thread after @p delay_ms milliseconds
 * (monotonic clock; 0 runs it on the next pass).
 * @param l the loop
 * @param delay_ms the delay in milliseconds
 * @param fn the callback; it runs in the loop's thread
 * @param arg passed to @p fn
 * @return the timer id, or 0 on failure (NULL argument, stopped loop, out of
 *         memory), in which case fn never runs.
 */
GEV_EXPORT gev_timer_id gev_loop_run_after(gev_loop *l, uint64_t delay_ms,
                                           gev_task_fn fn, void *arg);

/**
 * Run fn(arg) in @p l's thread every @p interval_ms milliseconds (at least 1)
 * until cancelled. When the loop falls behind, missed runs are skipped rather
 * than run in a burst.
 * @param l the loop
 * @param interval_ms the period in milliseconds
 * @param fn the callback; it runs in the loop's thread
 * @param arg passed to @p fn
 * @return the timer id, or 0 on failure (fn never runs).
 */
GEV_EXPORT gev_timer_id gev_loop_run_every(gev_loop *l, uint64_t interval_ms,
                                           gev_task_fn fn, void *arg);

/**
 * Cancel a timer. A timer cancelled before it fires never runs, also when
 * another timer's callback cancels it in the same pass. Cancelling a
 * periodic timer from its own callback stops further runs. Cancelling from
 * another thread while the callback runs lets that run finish.
 * @param l the loop
 * @param id a timer id returned by gev_loop_run_after or gev_loop_run_every
 * @return 0; -ENOENT when the id is unknown, already fired (one-shot) or
 *         already cancelled; -EINVAL when l is NULL.
 */
GEV_EXPORT int gev_loop_cancel(gev_loop *l, gev_timer_id id);

/**
 * @param l the loop
 * @return true when called from @p l's own thread.
 */
GEV_EXPORT bool gev_loop_in_thread(const gev_loop *l);

/* ---- standalone loops (clients without a server) ----------------------- */

/**
 * Create a loop that belongs to no server, for outgoing connections
 * (gev_loop_connect), tasks and timers. Run it with gev_loop_run.
 * @param out receives the loop, owned by the caller (gev_loop_free).
 * @return 0; -EINVAL for NULL; -ENOMEM; the errno of epoll_create1/eventfd.
 */
GEV_EXPORT int gev_loop_new(gev_loop **out);

/**
 * Run @p l in the calling thread until gev_loop_stop. Before returning it
 * closes every connection of the loop (on_close runs for each), fails
 * connects under way with -ECANCELED, and runs the tasks already queued.
 * A loop runs once.
 * @param l the loop
 * @return 0; -EINVAL for NULL or a server's loop; -EALREADY when it ran.
 */
GEV_EXPORT int gev_loop_run(gev_loop *l);

/**
 * Ask @p l to stop. Async-signal-safe; any thread; also before run.
 * @param l the loop
 */
GEV_EXPORT void gev_loop_stop(gev_loop *l);

/**
 * Free a standalone loop after gev_loop_run returned (or instead of it):
 * queued tasks are dropped unrun. Server loops are freed by gev_server_free
 * and are ignored here. NULL is accepted.
 * @param l the loop; NULL is accepted
 */
GEV_EXPORT void gev_loop_free(gev_loop *l);

#ifdef __cplusplus
}
#endif

#endif /* GEV_LOOP_H */
