/* stats-internal.h - internal: not installed. A loop's counters.
 *
 * Each counter is written by its own loop's thread only, as a plain
 * increment on the hot path (no atomic, no shared cache line written by
 * two threads). Other threads read a published copy: the loop publishes
 * it under a sequence lock when asked (a reader's request wakes it) and
 * when it finishes, so a snapshot is consistent per loop and costs the
 * hot path nothing but the increments. */
#ifndef GEV_SRC_STATS_INTERNAL_H
#define GEV_SRC_STATS_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

/* Why a connection closed; GEV__S_CLOSED_PEER + why is its counter. */
enum {
  GEV__WHY_LOCAL = 0, /* the handler ended it (close, shutdown, linger) */
  GEV__WHY_PEER,      /* the peer's EOF came first */
  GEV__WHY_IDLE,      /* idle_timeout_ms */
  GEV__WHY_CAP,       /* max_buffer: input the handler could never take */
  GEV__WHY_ERROR,     /* reset, socket error, out of memory, handshake */
  GEV__WHY_STOP,      /* the loop stopped (a shutdown's deadline, a stop) */
  GEV__WHY_COUNT
};

enum {
  GEV__S_BYTES_READ = 0,
  GEV__S_BYTES_WRITTEN,
  GEV__S_MESSAGES,
  GEV__S_PASSES,
  GEV__S_OPENED,   /* connections started here, incoming and outgoing */
  GEV__S_ACCEPTED, /* accepted by a listener of this loop */
  GEV__S_REFUSED,  /* refused by max_connections there */
  GEV__S_CLOSED_LOCAL,
  GEV__S_CLOSED_PEER,
  GEV__S_CLOSED_IDLE,
  GEV__S_CLOSED_CAP,
  GEV__S_CLOSED_ERROR,
  GEV__S_CLOSED_STOP,
  GEV__S_HANDSHAKE_FAILED,
  GEV__S_TASKS_RUN,
  GEV__S_TIMERS_FIRED,
  GEV__S_SENDS_IN,  /* sends that came from other threads */
  GEV__S_PAUSES,    /* reading paused for backpressure */
  GEV__S_LAG_MS,    /* worst timer lateness in the current second */
  GEV__S_LAG_PREV,  /* ... and in the one before */
  GEV__S_LAG_SEC,   /* which second LAG_MS is about */
  GEV__S_BUSY_US,   /* the loop thread's CPU time, at publication */
  GEV__S_WALL_US,   /* time since the loop started, at publication */
  GEV__S_DGRAMS_IN, /* datagrams received by the loop's UDP sockets */
  GEV__S_DGRAMS_OUT,
  GEV__S_DGRAM_BYTES_IN,
  GEV__S_DGRAM_BYTES_OUT,
  GEV__S_DGRAMS_DROPPED,   /* accepted for sending, never sent */
  GEV__S_DGRAMS_TRUNCATED, /* received cut short */
  GEV__S_COUNT
};

typedef struct gev__stats {
  uint64_t v[GEV__S_COUNT]; /* the loop's thread only */
  atomic_uint seq;          /* odd while a publication is being written */
  _Atomic uint64_t pub[GEV__S_COUNT];
  atomic_bool wanted; /* a reader asked for a publication */
  uint64_t start_us;  /* monotonic, when the loop started running */
} gev__stats;

#endif
