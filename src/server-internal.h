/* server-internal.h - internal: not installed. */
#ifndef GEV_SRC_SERVER_INTERNAL_H
#define GEV_SRC_SERVER_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>

#include "addr.h"
#include "listener.h"
#include "loop-internal.h"
#include "sockopt.h"

/* max_buffer when the options give 0. */
#define GEV__DEFAULT_MAX_BUFFER ((size_t)64 * 1024 * 1024)

typedef struct gev__worker {
  gev_loop *loop;
  pthread_t thread;
  bool running;
  int error; /* the loop stopped with this (a poller failure) */
} gev__worker;

struct gev_server {
  /* Fixed after gev_server_new; read from any thread. */
  gev_handler h;
  gev_options opt;         /* address(es) NULL: the copies are in addrs */
  gev__listen_addr *addrs; /* one per address, in the options' order */
  int naddrs;
  gev__sockopts so; /* keepalive_s, rcvbuf, sndbuf */
  size_t max_buffer;
  int nloops;
  gev_loop *acceptor;
  gev__worker *workers;

  /* Any thread. */
  atomic_int nconns; /* accepted and not yet closed */
  atomic_bool started;
  atomic_bool shutdown;      /* gev_server_shutdown was called */
  atomic_bool draining;      /* the acceptor began it: the last close ends it */
  _Atomic uint64_t drain_ms; /* its deadline, from the call */
  atomic_int loops_up;       /* workers past their first pass (serving.c) */
  /* What a graceful shutdown waits for besides connections: each worker's
   * drain task until it ran, and handles that wind down on their own
   * (a UDP socket flushing its send queue). */
  atomic_int holds;

  /* Each owned by the loop it is registered with (listener.c). */
  gev__listener *ls;
  int nls;

  /* Acceptor thread only. */
  unsigned rr_next;
  int *lb_conns; /* pick_loop's snapshot of the loops' counts, or NULL */
};

/* An accepted connection leaves the count (closed, or never started); the
 * last one out during a graceful shutdown ends it. Any thread. */
static inline void gev__server_uncount(gev_server *s)
{
  if (atomic_fetch_sub(&s->nconns, 1) == 1 && atomic_load(&s->draining) &&
      atomic_load(&s->holds) == 0)
    gev__loop_stop(s->acceptor);
}

/* A graceful shutdown is to wait for the caller (any thread), until
 * gev__server_release; the last one out, with no connection left, ends
 * it. Both counters are sequentially consistent: of a release and a
 * connection's uncount that race, at least one sees the other's. */
static inline void gev__server_hold(gev_server *s)
{
  atomic_fetch_add(&s->holds, 1);
}

static inline void gev__server_release(gev_server *s)
{
  if (atomic_fetch_sub(&s->holds, 1) == 1 && atomic_load(&s->draining) &&
      atomic_load(&s->nconns) == 0)
    gev__loop_stop(s->acceptor);
}

/* Counts an accepted fd against max_connections and gives it to a loop
 * (hand-off through a task, or directly when already in the owner loop).
 * Takes ownership of fd in every case. */
void gev__server_accepted(gev__listener *ls, int fd, const struct sockaddr *sa,
                          socklen_t len);

/* serving.c: on_serving is called once every worker has run a pass;
 * called by each worker's thread just before its loop runs. */
void gev__serving_watch(gev_server *s, gev_loop *worker);

#endif
