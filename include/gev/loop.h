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

/** A tick callback: returns the delay in milliseconds until its next run,
 *  or 0 to stop. */
typedef uint64_t (*gev_tick_fn)(void *arg);

/**
 * A timer that sets its own pace: fn(arg) runs in @p l's thread after
 * @p delay_ms, then again after each delay it returns, until it returns 0
 * (the tick is then gone) or the loop stops (then it is dropped unrun).
 * As a one-shot timer re-armed from its callback, with the bookkeeping
 * done: nothing leaks when the loop ends first. Delays count from the end
 * of the run that returned them. Any thread.
 * @param l the loop
 * @param delay_ms the delay before the first run (0: the next pass)
 * @param fn the callback
 * @param arg passed to @p fn
 * @return 0; -EINVAL for NULL l or fn; -ESHUTDOWN when the loop has
 *         stopped; -ENOMEM. On error fn never runs.
 */
GEV_EXPORT int gev_loop_tick(gev_loop *l, uint64_t delay_ms, gev_tick_fn fn,
                             void *arg);

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

/* ---- per-loop data and time --------------------------------------------- */

/**
 * Attach a user pointer to @p l (NULL initially), for state kept per
 * thread without locks: a worker loop's cache, parser pool or formatted
 * date, set in gev_options.on_loop_start and found again in every handler
 * callback through gev_loop_data(gev_conn_loop(c)). The library never
 * touches it: free what it points to in on_loop_stop. Any thread; the
 * pointer is published with release/acquire ordering, so what was written
 * before the set is visible to a thread that reads the pointer, but later
 * changes to the pointed-to data need synchronization of your own unless
 * only the loop's thread makes and reads them.
 * @param l the loop; NULL is ignored
 * @param data the pointer (NULL clears it)
 */
GEV_EXPORT void gev_loop_set_data(gev_loop *l, void *data);

/**
 * @param l the loop
 * @return the pointer set with gev_loop_set_data, NULL when none (or for
 *         NULL). Any thread.
 */
GEV_EXPORT void *gev_loop_data(const gev_loop *l);

/**
 * The loop's notion of now: milliseconds of CLOCK_MONOTONIC (the clock of
 * its timers; unrelated to wall time). In @p l's own thread it is the
 * time cached once per pass, right after the loop woke up, so it costs no
 * system call and is the same for every callback of one pass; it lags the
 * clock by the time the pass has run so far (usually microseconds, more
 * while handlers compute) and has 1 ms resolution. From any other thread
 * it reads the clock.
 * @param l the loop
 * @return milliseconds on the monotonic clock.
 */
GEV_EXPORT uint64_t gev_loop_now_ms(const gev_loop *l);

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
