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

#include "poller.h"
#include "timer-heap.h"

/* Something registered with the poller. The callback runs in the loop's
 * thread with the GEV__EV_* bits that fired. */
typedef struct gev__io gev__io;
typedef void (*gev__io_cb)(gev__io *io, unsigned events);
struct gev__io {
  int fd;
  unsigned interest; /* GEV__EV_* currently registered */
  gev__io_cb cb;
};

/* An outgoing connect under way (connect.c). */
typedef struct gev__connecting gev__connecting;

typedef struct gev__task {
  gev_task_fn fn;
  void *arg;
  gev_task_fn drop; /* releases arg when the task is freed unrun; or NULL */
} gev__task;

typedef struct gev__taskvec {
  gev__task *v;
  size_t n, cap;
} gev__taskvec;

/* Per-loop connection state, owned by conn.c, touched only in the loop's
 * thread (except nconns). */
typedef struct gev__conn_state {
  gev_conn *head, *tail; /* open connections, least recently active first */
  gev_conn *flush;       /* connections with work left for after the pass */
  gev_conn *zombies;     /* closed; the loop's reference drops after the pass */
  ringbuffer *shared_in; /* read target for connections without pending input */
  ringbuffer
      *shared_out;      /* reply target for connections without queued output */
  ringbuffer *pool[16]; /* spare buffers for connections that need their own */
  int npool;
  bool trim_armed;             /* a shared buffer is due to shrink */
  uint64_t idle_ms;            /* the server's idle timeout; 0 = none */
  gev__connecting *connecting; /* outgoing connects under way */
  gev_client *clients;         /* gev_clients started on this loop */
} gev__conn_state;

struct gev_loop {
  /* Fixed after creation; read from any thread. */
  gev_server *server;
  int index; /* worker index, -1 for the acceptor */
  int wakefd;
  gev__poller poller;

  /* Any thread, lock-free. */
  atomic_bool started; /* standalone loops: gev_loop_run ran */
  atomic_bool stop;    /* set by gev__loop_stop, also from signal handlers */
  atomic_int nconns;   /* open connections, for least-connections */
  /* The earliest timer deadline (UINT64_MAX: none), written under mu
   * whenever the heap changes, so that a pass with no timer due reads one
   * atomic instead of taking the lock. */
  _Atomic uint64_t next_deadline;

  /* Guarded by mu, which is only ever held for a few instructions. */
  pthread_mutex_t mu;
  gev__taskvec pending;
  bool wake_pending; /* an eventfd write is on its way: skip another */
  bool closed;       /* no longer accepts tasks or timers */
  gev__timers timers;

  /* The loop's thread only. */
  gev__io wake_io;
  gev__taskvec running;
  bool local_tasks; /* tasks posted from the loop's own thread */
  bool finishing;   /* gev__loop_finish runs: attach nothing new */
  uint64_t now_ms;  /* cached once per pass */
  gev__fired *fired;
  gev__conn_state cs;
};

/* 0 or -errno; *out owned by the caller (gev__loop_free). */
int gev__loop_new(gev_loop **out, gev_server *s, int index);
/* Frees the loop; queued tasks are dropped unrun. */
void gev__loop_free(gev_loop *l);
/* Runs passes in the calling thread until gev__loop_stop; at least one. */
void gev__loop_run(gev_loop *l);
/* Async-signal-safe: an atomic store and an eventfd write. */
void gev__loop_stop(gev_loop *l);
/* In the loop's thread after run returned: refuse new tasks and timers, run
 * the tasks already queued (so their references are dropped), finish
 * deferred frees. */
void gev__loop_finish(gev_loop *l);
/* gev_loop_post for the library's own tasks: drop(arg) runs instead of
 * fn(arg) if the loop is freed before running the task, so what the task
 * owns is released (gev_loop_post's user tasks are simply not run). */
int gev__loop_post_owned(gev_loop *l, gev_task_fn fn, void *arg,
                         gev_task_fn drop);
/* Write the eventfd (async-signal-safe). */
void gev__loop_wake(gev_loop *l);

int gev__loop_io_add(gev_loop *l, gev__io *io, unsigned events);
int gev__loop_io_set(gev_loop *l, gev__io *io, unsigned events);
int gev__loop_io_del(gev_loop *l, gev__io *io);

/* Monotonic milliseconds. */
uint64_t gev__now_ms(void);

/* conn.c hooks the loop calls in its own thread. */
int gev__conn_state_init(gev_loop *l);
void gev__conn_state_free(gev_loop *l);
void gev__conn_after_pass(gev_loop *l);
void gev__conn_close_all(gev_loop *l);
/* connect.c: fails the connects under way with -ECANCELED. */
void gev__connect_cancel_all(gev_loop *l);
/* client.c: the loop is finishing: clients waiting to retry stop. */
void gev__client_cancel_all(gev_loop *l);

#ifdef NDEBUG
#define gev__assert_in_loop(l) ((void)(l))
#else
#include <assert.h>
#define gev__assert_in_loop(l) assert(gev_loop_in_thread(l))
#endif

#endif
