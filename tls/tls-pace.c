/* tls-pace.c - at most N server handshake steps per loop pass.
 *
 * A handshake step that answers a ClientHello costs a key exchange and a
 * signature (~0.1 ms for P-256), so 1,000 new connections in one pass
 * would hold established ones up for 100 ms. The count is per thread
 * (a loop runs in one thread, so per thread is per loop); the first step
 * of a pass arms a zero-delay timer on the loop, which runs after this
 * pass's I/O and starts the count over. A deferred step answers
 * GEV_TRANSPORT_WANT_READ without reading: its bytes stay in the kernel,
 * the socket stays readable, and the (level-triggered) poller reports it
 * again at the next pass, which therefore does not sleep.
 *
 * The core offers no "start of pass" hook, hence the timer: a pass whose
 * timers ran before the timer was armed ends its count one pass late,
 * which only defers more, never less. */
#include "tls-internal.h"

#include <time.h>

typedef struct pace {
  gev_loop *loop;    /* the loop this thread's count is for */
  int used;          /* steps in the current pass */
  bool armed;        /* the reset timer is pending */
  uint64_t armed_at; /* when (ms), to recover from a timer that was dropped */
} pace;

static _Thread_local pace tl_pace;

static uint64_t now_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void pace_reset(void *arg)
{
  if (tl_pace.loop == arg) {
    tl_pace.used = 0;
    tl_pace.armed = false;
  }
}

bool gev__tls_pace_take(gev_loop *l, int per_pass)
{
  pace *p = &tl_pace;

  if (per_pass <= 0)
    return true;
  /* Another loop in this thread, or a reset timer freed unrun with its
   * loop (a pass never lasts a second while it admits handshakes). */
  if (p->loop != l || (p->armed && now_ms() - p->armed_at > 1000))
    *p = (pace){.loop = l};
  if (!p->armed) {
    /* Without the timer nothing would reset the count: then no pacing. */
    if (!gev_loop_run_after(l, 0, pace_reset, l))
      return true;
    p->armed = true;
    p->armed_at = now_ms();
  }
  if (p->used >= per_pass)
    return false;
  p->used++;
  return true;
}
