/* loop-internal.h - internal: not installed.
 *
 * The event loop: one thread, one epoll, one eventfd, one timer heap, and a
 * task queue that other threads append to under a short mutex. */
#ifndef GEV_SRC_LOOP_INTERNAL_H
#define GEV_SRC_LOOP_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <gev/gev.h>

#include "bufs.h"
#include "list.h"
#include "poller.h"
#include "stats-internal.h"
#include "taskq.h"
#include "timer-heap.h"

/* Something registered with the poller. The callback runs in the loop's
 * thread with the GEV__EV_* bits that fired. */
typedef struct gev__io gev__io;
typedef void (*gev__io_cb)(gev__io *io, unsigned events);
struct gev__io {
  int fd;
  unsigned interest; /* GEV__EV_* currently registered */
  bool registered;   /* with the poller (interest may be 0) */
  gev__io_cb cb;
};

/* Something the loop owns beyond an fd: a connection, a pending connect, a
 * persistent client. The loop knows handles, not their types: it keeps a
 * registry of them (to stop them when it finishes) and a queue of those
 * that asked for work after the pass. */
typedef struct gev__handle gev__handle;
typedef struct gev__handle_ops {
  const char *name; /* for debugging: "conn", "connect", "client" */
  /* After the pass in which gev__handle_schedule asked for it. */
  void (*after_pass)(gev__handle *h);
  /* The loop is finishing: end what h has under way (close, cancel). The
   * loop has taken h off its registry before the call. */
  void (*stop)(gev__handle *h);
  /* Optional. The loop drains (a graceful shutdown): wind down. */
  void (*drain)(gev__handle *h);
  /* Optional. A timeout of h's ran out (`what` is the handle's own: for a
   * connection, the idle kind), found by a sweep that knows when, not
   * what to do about it. */
  void (*expire)(gev__handle *h, int what);
} gev__handle_ops;

struct gev__handle {
  const gev__handle_ops *ops;
  gev_loop *loop;
  gev__list link; /* in loop->handles while registered */
  gev__list due;  /* in loop->due while scheduled */
  /* Under loop->mu: in loop->remote while another thread's schedule
   * waits for the loop. remote_ok: whether one may (from register to
   * unregister); set without the lock at register (no other thread knows
   * h yet), read and cleared under it. */
  gev__list remote;
  atomic_bool remote_ok;
};

struct gev_loop {
  /* Fixed after creation; read from any thread. */
  gev_server *server;
  int index; /* worker index, -1 for the acceptor */
  int wakefd;
  gev__poller poller;

  /* Worker loops: the server's on_loop_start / on_loop_stop (NULL
   * elsewhere). Fixed after creation. */
  void (*on_start)(gev_loop *l);
  void (*on_stop)(gev_loop *l);

  /* Any thread, lock-free. */
  _Atomic(void *) data; /* gev_loop_set_data */
  atomic_bool started;  /* standalone loops: gev_loop_run ran */
  atomic_bool stop;     /* set by gev__loop_stop, also from signal handlers */
  atomic_bool async;    /* gev__loop_async: call async_fn on the next pass */
  atomic_bool live;     /* from the first pass to the final figures */
  atomic_int nconns;    /* open connections, for least-connections */
  /* The earliest timer deadline (UINT64_MAX: none), written under mu
   * whenever the heap changes, so that a pass with no timer due reads one
   * atomic instead of taking the lock. */
  _Atomic uint64_t next_deadline;

  /* Guarded by mu, which is only ever held for a few instructions. */
  pthread_mutex_t mu;
  gev__taskq pending;
  gev__list remote;  /* handles other threads scheduled (gev__handle) */
  bool wake_pending; /* an eventfd write is on its way: skip another */
  bool closed;       /* no longer accepts tasks or timers */
  gev__timers timers;

  /* The loop's thread only. */
  gev__io wake_io;
  gev__taskq running;
  /* A trim of the task queues is due (loop.c's timer, taskq.h). */
  bool tasks_trim_armed;
  bool local_tasks;     /* tasks posted from the loop's own thread */
  bool finishing;       /* gev__loop_finish runs: attach nothing new */
  int error;            /* the poller failed: the loop stopped with this */
  bool draining;        /* gev__loop_drain ran: handles wind down */
  bool hooked;          /* on_start ran: on_stop is owed */
  gev_task_fn async_fn; /* set before the loop runs */
  void *async_arg;
  uint64_t now_ms; /* cached once per pass */
  gev__fired *fired;
  gev__list handles; /* every registered gev__handle */
  gev__list due;     /* handles to call after the pass */
  gev__bufs bufs;    /* shared I/O buffers and spares (bufs.h) */
  gev__stats st;     /* counters; st.v the loop's thread only */
  /* Open connections with an idle timeout, and the periodic sweep that
   * checks them (conn-idle.c; the loop only initializes them). */
  gev__list active;
  uint64_t sweep_ms;        /* the sweep's period; 0 while none runs */
  gev_timer_id sweep_timer; /* the sweep, or 0 */
};

/* 0 or -errno; *out owned by the caller (gev__loop_free). */
int gev__loop_new(gev_loop **out, gev_server *s, int index);
/* Frees the loop; queued tasks are dropped unrun. */
void gev__loop_free(gev_loop *l);
/* Runs passes in the calling thread until gev__loop_stop; at least one.
 * 0, or the negative errno of a poller failure that stopped the loop. */
int gev__loop_run(gev_loop *l);
/* Async-signal-safe: an atomic store and an eventfd write. */
void gev__loop_stop(gev_loop *l);
/* In the loop's thread after run returned: stop every handle, refuse new
 * tasks and timers, run the tasks already queued (so their references are
 * dropped), finish deferred frees. */
void gev__loop_finish(gev_loop *l);
/* gev_loop_post for the library's own tasks: drop(arg) runs instead of
 * fn(arg) if the loop is freed before running the task, so what the task
 * owns is released (gev_loop_post's user tasks are simply not run). */
int gev__loop_post_owned(gev_loop *l, gev_task_fn fn, void *arg,
                         gev_task_fn drop);
/* fn(arg) at once in l's own thread, else posted as gev__loop_post_owned
 * does. 0 or its error (then neither fn nor drop ran). */
int gev__loop_call(gev_loop *l, gev_task_fn fn, void *arg, gev_task_fn drop);
/* Async-signal-safe: l runs its async_fn once, soon, in its own thread
 * (an atomic store and an eventfd write). Set async_fn before l runs. */
void gev__loop_async(gev_loop *l);
/* Loop thread: every registered handle with a drain operation gets it,
 * and the loop remembers that it drains (for handles that start later). */
void gev__loop_drain(gev_loop *l);
/* For a reader of l's counters (stats.c): publishes them at once in l's
 * own thread (false), or asks the running loop to (true: a publication is
 * on its way); false when l does not run. */
bool gev__loop_stats_request(gev_loop *l);
/* Whether the calling thread runs a gev loop (any). */
bool gev__in_a_loop(void);
/* Write the eventfd (async-signal-safe). */
void gev__loop_wake(gev_loop *l);

int gev__loop_io_add(gev_loop *l, gev__io *io, unsigned events);
int gev__loop_io_set(gev_loop *l, gev__io *io, unsigned events);
/* Loop thread, before closing io->fd (poller.h says why); a no-op for an
 * io never added. */
int gev__loop_io_del(gev_loop *l, gev__io *io);

/* Monotonic milliseconds. */
uint64_t gev__now_ms(void);

#ifdef NDEBUG
#define gev__assert_in_loop(l) ((void)(l))
#else
#include <assert.h>
#define gev__assert_in_loop(l) assert(gev_loop_in_thread(l))
#endif

/* ---- handles (the loop's thread only) ---------------------------------- */

static inline void gev__handle_init(gev__handle *h, gev_loop *l,
                                    const gev__handle_ops *ops)
{
  h->ops = ops;
  h->loop = l;
  gev__list_init(&h->link);
  gev__list_init(&h->due);
  gev__list_init(&h->remote);
  atomic_init(&h->remote_ok, false);
}

/* h joins the registry: the loop stops it when it finishes. From here on
 * other threads may schedule it (gev__handle_schedule_remote). */
void gev__handle_register(gev__handle *h);

/* h leaves the registry (idempotent) and the after-pass work, and no
 * other thread's schedule refers to it any longer: its memory may go.
 * (To have after_pass run once more, schedule h after this.) */
void gev__handle_unregister(gev__handle *h);

/* after_pass(h) runs at the end of this pass (or, when called while the
 * loop runs after-pass work, of the next one, which then does not sleep).
 * Whoever schedules h keeps it alive until then. */
static inline void gev__handle_schedule(gev__handle *h)
{
  gev__assert_in_loop(h->loop);
  if (!gev__list_linked(&h->due))
    gev__list_append(&h->loop->due, &h->due);
}

/* gev__loop_call(l, fn, arg, drop), and when its post fails for want of
 * memory, h is scheduled instead (h's after_pass then does fn's work, from
 * state the caller set first). Returns gev__loop_call's result. */
int gev__loop_call_or_schedule(gev_loop *l, gev_task_fn fn, void *arg,
                               gev_task_fn drop, gev__handle *h);

/* From any thread: after_pass(h) runs in a pass of h's loop soon (the
 * loop is woken). It allocates nothing, so it cannot fail for want of
 * memory, and a state change another thread made can always be handed to
 * the loop this way (a posted task could be refused). The caller keeps h
 * alive during the call; after it, the loop does (h is registered). 0, or
 * -ESHUTDOWN when h is not registered (it ended, or has not started) or
 * the loop no longer runs. */
int gev__handle_schedule_remote(gev__handle *h);

#endif
