/* stats.c - reading a loop's counters from any thread (gev_loop_stats) and
 * adding up a server's (gev_server_stats). The writer's half, the
 * publication under a sequence lock, is in loop.c. */
#include "server-internal.h"

#include <errno.h>
#include <string.h>
#include <time.h>

/* How long a reader outside any loop waits for a busy loop to publish. */
#define WAIT_MAX_US 50000
#define WAIT_STEP_US 100

/* Waits until the loop published after `seq` (bounded). */
static void wait_publication(const gev__stats *st, unsigned seq)
{
  struct timespec step = {0, WAIT_STEP_US * 1000};

  for (int i = 0; i < WAIT_MAX_US / WAIT_STEP_US; i++) {
    if (atomic_load_explicit(&st->seq, memory_order_acquire) != seq)
      return;
    nanosleep(&step, NULL);
  }
}

/* The last publication, retried while the loop is writing it. */
static void read_published(const gev__stats *st, uint64_t *v)
{
  for (int tries = 0; tries < 1000; tries++) {
    unsigned a = atomic_load_explicit(&st->seq, memory_order_acquire), b;

    /* Acquire loads keep the second look at the sequence after them. */
    for (int i = 0; i < GEV__S_COUNT; i++)
      v[i] = atomic_load_explicit(&st->pub[i], memory_order_acquire);
    b = atomic_load_explicit(&st->seq, memory_order_relaxed);
    if (a == b && !(a & 1))
      return;
  }
}

static void fill(gev_stats *o, const uint64_t *v)
{
  uint64_t closed = 0;

  for (int i = GEV__S_CLOSED_LOCAL; i <= GEV__S_CLOSED_STOP; i++)
    closed += v[i];
  o->conns_open = v[GEV__S_OPENED] - closed;
  o->conns_accepted = v[GEV__S_ACCEPTED];
  o->conns_closed = closed;
  o->conns_refused = v[GEV__S_REFUSED];
  o->bytes_read = v[GEV__S_BYTES_READ];
  o->bytes_written = v[GEV__S_BYTES_WRITTEN];
  o->messages = v[GEV__S_MESSAGES];
  o->loop_passes = v[GEV__S_PASSES];
  o->closed_local = v[GEV__S_CLOSED_LOCAL];
  o->closed_peer = v[GEV__S_CLOSED_PEER];
  o->closed_idle = v[GEV__S_CLOSED_IDLE];
  o->closed_cap = v[GEV__S_CLOSED_CAP];
  o->closed_error = v[GEV__S_CLOSED_ERROR];
  o->closed_shutdown = v[GEV__S_CLOSED_STOP];
  o->handshake_failures = v[GEV__S_HANDSHAKE_FAILED];
  o->tasks_run = v[GEV__S_TASKS_RUN];
  o->timers_fired = v[GEV__S_TIMERS_FIRED];
  o->cross_thread_sends = v[GEV__S_SENDS_IN];
  o->backpressure_pauses = v[GEV__S_PAUSES];
  o->busy_us = v[GEV__S_BUSY_US];
  o->wait_us = v[GEV__S_WALL_US] > v[GEV__S_BUSY_US]
                   ? v[GEV__S_WALL_US] - v[GEV__S_BUSY_US]
                   : 0;
  o->lag_max_ms = v[GEV__S_LAG_MS] > v[GEV__S_LAG_PREV] ? v[GEV__S_LAG_MS]
                                                        : v[GEV__S_LAG_PREV];
  o->datagrams_in = v[GEV__S_DGRAMS_IN];
  o->datagrams_out = v[GEV__S_DGRAMS_OUT];
  o->datagram_bytes_in = v[GEV__S_DGRAM_BYTES_IN];
  o->datagram_bytes_out = v[GEV__S_DGRAM_BYTES_OUT];
  o->datagrams_dropped = v[GEV__S_DGRAMS_DROPPED];
  o->datagrams_truncated = v[GEV__S_DGRAMS_TRUNCATED];
}

int gev_loop_stats(const gev_loop *cl, gev_stats *out)
{
  gev_loop *l = (gev_loop *)cl;
  uint64_t v[GEV__S_COUNT];
  unsigned seq;

  if (!l || !out)
    return -EINVAL;
  seq = atomic_load_explicit(&l->st.seq, memory_order_acquire);
  /* A loop's thread never waits for another loop: two loops reading each
   * other would stall both. */
  if (gev__loop_stats_request(l) && !gev__in_a_loop())
    wait_publication(&l->st, seq);
  read_published(&l->st, v);
  memset(out, 0, sizeof(*out));
  fill(out, v);
  pthread_mutex_lock(&l->mu);
  out->tasks_pending = l->pending.n;
  out->timers_pending = gev__timers_count(&l->timers);
  pthread_mutex_unlock(&l->mu);
  return 0;
}

static void add(gev_stats *sum, const gev_stats *x)
{
  uint64_t *d = (uint64_t *)sum;
  const uint64_t *a = (const uint64_t *)x;
  uint64_t lag =
      sum->lag_max_ms > x->lag_max_ms ? sum->lag_max_ms : x->lag_max_ms;

  for (size_t i = 0; i < sizeof(*sum) / sizeof(uint64_t); i++)
    d[i] += a[i];
  sum->lag_max_ms = lag; /* the worst, not a sum */
}

int gev_server_stats(const gev_server *s, gev_stats *out)
{
  gev_stats one;

  if (!s || !out)
    return -EINVAL;
  gev_loop_stats(s->acceptor, out);
  for (int i = 0; i < s->nloops; i++) {
    gev_loop_stats(s->workers[i].loop, &one);
    add(out, &one);
  }
  return 0;
}
