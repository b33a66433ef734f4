/* harness.h - scenarios for the failure-injection runner (runner.c).
 *
 * A scenario is one function that builds a small gev world (a server and
 * its clients, a loop and its timers, ...), drives it to the end and
 * checks what the end must look like whatever fault was injected: no
 * corrupted byte, no connection left hanging, on_close exactly once per
 * on_connect, at most one connection hurt by one injected fault, and
 * everything served when the faults were only transient. It runs in a
 * forked child with an alarm (a hang kills it), under ASan/LSan in the
 * sanitizer build (a leak fails the child's exit). Adding one: write
 * `int sc_NAME(fault_run *r)` in a file of its own, add the line to
 * SCENARIOS below and the file to meson.build. */
#ifndef GEV_TEST_FAULT_HARNESS_H
#define GEV_TEST_FAULT_HARNESS_H

#include "fault.h"

#include <gev/gev.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum { RUN_COUNT, RUN_NTH, RUN_RANDOM };

/* What a run is, and what it saw; in shared memory, read by the runner. */
typedef struct fault_run {
  int how;         /* RUN_* */
  fault_kind kind; /* RUN_NTH */
  uint64_t nth;    /* RUN_NTH */
  uint64_t seed;   /* RUN_RANDOM */
  uint64_t hits[FK_COUNT];
  uint64_t injected;
  int gev_error; /* the negative errno a gev call returned, if any */
  int served, closed, logs;
  char why[256]; /* set when the run failed its checks */
} fault_run;

typedef int (*scenario_fn)(fault_run *r);

#define SCENARIOS(X)                                                           \
  X(echo)                                                                      \
  X(client)                                                                    \
  X(reconnect)                                                                 \
  X(timers)                                                                    \
  X(halfclose)                                                                 \
  X(partial)                                                                   \
  X(shutdown)                                                                  \
  X(ws)                                                                        \
  X(udp)                                                                       \
  SCENARIOS_TLS(X)

#ifdef FAULT_SSL
#define SCENARIOS_TLS(X) X(tls)
#else
#define SCENARIOS_TLS(X)
#endif

#define DECLARE(name) int sc_##name(fault_run *r);
SCENARIOS(DECLARE)
#undef DECLARE

/* ---- shared pieces (common.c) ------------------------------------------ */

/* Fails the run: records the reason (printf format) and returns 1. */
int fr_fail(fault_run *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The checks every run ends with, given how many connections of the
 * scenario were served fully (`served`) of `total`: see the file head.
 * `whole_failed` says a gev call that sets up everything (server_new,
 * server_start, loop_new) returned an error: then nothing was served. */
int fr_finish(fault_run *r, int served, int total, bool whole_failed);

/* Counts on_connect / on_close per connection (a context of its own, see
 * fr_track_*) and in total; a second on_close, or one without on_connect,
 * is a violation. A scenario's handler calls these from its callbacks. */
typedef struct fr_track {
  int connects, closes;
  int tag;    /* the stream's first byte, 0 until it came */
  void *user; /* freed with the record */
} fr_track;
fr_track *fr_track_connect(gev_conn *c);
void fr_track_close(gev_conn *c);
extern atomic_int fr_connects, fr_closes, fr_violations;

/* gev_set_logger to a counter (every level up to INFO). */
void fr_logger_install(void);
extern atomic_int fr_log_lines;

/* A server on its own thread. */
typedef struct fr_server {
  gev_server *s;
  pthread_t t;
  int start_rc;
  atomic_bool done;
} fr_server;
int fr_server_open(fr_server *v, const gev_handler *h, gev_options *o);
/* Stops (or shuts down: shutdown_ms > 0), joins, frees; returns
 * gev_server_start's result. */
int fr_server_close(fr_server *v, uint64_t shutdown_ms);

/* A standalone loop on its own thread. */
typedef struct fr_loop {
  gev_loop *l;
  pthread_t t;
  int rc;
} fr_loop;
int fr_loop_open(fr_loop *x);
int fr_loop_close(fr_loop *x);

/* A client stream, on a thread of the test (its calls are never failed):
 * sends `len` bytes (after a 1-byte tag) in random chunks, reads and
 * checks the echo (or, with expect > 0, `expect` bytes of the pattern of
 * `rseed`), half-closes after sending and waits for EOF. */
enum { CL_FULL, CL_CLOSED, CL_BAD, CL_TIMEOUT, CL_NOCONN };
typedef struct fr_client {
  int port;
  char tag;
  size_t len;    /* bytes to send */
  size_t expect; /* bytes to receive; 0 = len (echo) */
  uint32_t seed, rseed;
  int timeout_ms;
  bool no_shutdown; /* keep writing side open until EOF */
  bool slow;        /* reads nothing for 200 ms, a small window: output waits */
  pthread_t t;
  int outcome;
  size_t got;
  atomic_bool finished;
} fr_client;
void fr_client_start(fr_client *c);
int fr_client_join(fr_client *c);
/* Every client of the scenario stops waiting (the server is gone). */
extern atomic_bool fr_abort;
const char *fr_outcome_name(int o);

/* Byte i of the pattern of seed. */
static inline unsigned char fr_pat(uint32_t seed, size_t i)
{
  uint32_t x = seed * 2654435761u + (uint32_t)i * 40503u;
  return (unsigned char)(x ^ (x >> 13) ^ (uint32_t)(i >> 8));
}

/* The echo handler's pieces: the first byte is a tag, the rest echoes. */
void fr_echo_message(gev_conn *c, ringbuffer *in, ringbuffer *out);

#endif
