/* tick.c - gev_loop_tick: a timer whose callback says when it runs next.
 *
 * A tick is a handle of its loop, so that a loop that finishes (or is
 * freed before running the start task) frees it: a plain timer left armed
 * would leak what it carries. Everything but creation runs in the loop's
 * thread. */
#include "loop-internal.h"

#include <errno.h>
#include <stdlib.h>

typedef struct tick {
  gev__handle handle; /* first */
  gev_tick_fn fn;
  void *arg;
  uint64_t delay;
  gev_timer_id timer;
} tick;

static void tick_end(tick *t)
{
  gev__handle_unregister(&t->handle);
  free(t);
}

static void tick_fire(void *arg)
{
  tick *t = arg;
  uint64_t next;

  t->timer = 0;
  next = t->fn(t->arg);
  if (next == 0 || t->handle.loop->finishing ||
      !(t->timer = gev_loop_run_after(t->handle.loop, next, tick_fire, t)))
    tick_end(t); /* stopped by its callback, or no timer: it ends */
}

static void tick_start(void *arg)
{
  tick *t = arg;

  if (t->handle.loop->finishing) {
    free(t);
    return;
  }
  gev__handle_register(&t->handle);
  t->timer = gev_loop_run_after(t->handle.loop, t->delay, tick_fire, t);
  if (!t->timer)
    tick_end(t);
}

static void tick_stop(gev__handle *h)
{
  tick *t = (tick *)h;

  if (t->timer)
    gev_loop_cancel(h->loop, t->timer);
  free(t); /* the loop took it off its registry */
}

static void tick_none(gev__handle *h)
{
  (void)h; /* a tick never schedules itself */
}

static const gev__handle_ops tick_ops = {"tick", tick_none, tick_stop, NULL};

int gev_loop_tick(gev_loop *l, uint64_t delay_ms, gev_tick_fn fn, void *arg)
{
  tick *t;
  int err;

  if (!l || !fn)
    return -EINVAL;
  if (!(t = calloc(1, sizeof(*t))))
    return -ENOMEM;
  gev__handle_init(&t->handle, l, &tick_ops);
  t->fn = fn;
  t->arg = arg;
  t->delay = delay_ms;
  if ((err = gev__loop_call(l, tick_start, t, free)) < 0)
    free(t);
  return err;
}

int gev_server_tick(gev_server *s, uint64_t delay_ms, gev_tick_fn fn, void *arg)
{
  return s ? gev_loop_tick(gev_server_loop(s), delay_ms, fn, arg) : -EINVAL;
}
