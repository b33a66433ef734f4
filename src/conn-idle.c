/* conn-idle.c - the idle timeouts: reader-idle (nothing received),
 * writer-idle (nothing sent) and all-idle (neither), per connection.
 *
 * Cheap on the hot path: a read or write only stores the pass's cached
 * clock in the connection (conn.c's touch_read / touch_write). Every
 * worker loop with watched connections runs one periodic sweep, every
 * quarter of the shortest timeout set on it, that compares the stamps:
 * a connection is found idle between 1 and 1.25 times its timeout after
 * its last activity. The sweep walks the watched connections, all of
 * them: the timeouts differ per connection and per kind, so no single
 * order lets it stop early; a few compares per connection four times a
 * timeout are far below the cost of touching a timer per message.
 * While connections are watched the period only shortens (to the
 * shortest timeout among those seen): a sweep that runs too often costs
 * little, one that runs too rarely closes late. Once none is left the
 * sweep stops, so an idle loop sleeps. */
#include "conn-internal.h"

#include <errno.h>

void gev__conn_idle_defaults(gev_conn *c, const gev_options *o)
{
  c->idle_ms[GEV_IDLE_READER] =
      (uint32_t)(o->reader_idle_ms > 0 ? o->reader_idle_ms : 0);
  c->idle_ms[GEV_IDLE_WRITER] =
      (uint32_t)(o->writer_idle_ms > 0 ? o->writer_idle_ms : 0);
  c->idle_ms[GEV_IDLE_ALL] =
      (uint32_t)(o->idle_timeout_ms > 0 ? o->idle_timeout_ms : 0);
}

/* The stamp a kind's period runs from: the last activity it counts, or
 * on_idle's last call, whichever is later. */
static uint64_t since(const gev_conn *c, int kind)
{
  uint64_t t = kind == GEV_IDLE_READER        ? c->last_read
               : kind == GEV_IDLE_WRITER      ? c->last_write
               : c->last_read > c->last_write ? c->last_read
                                              : c->last_write;

  return t > c->idle_mark[kind] ? t : c->idle_mark[kind];
}

static void sweep(void *arg)
{
  gev_loop *l = arg;
  gev__list todo;

  gev__assert_in_loop(l);
  /* Each connection goes back to the loop's list before anything is
   * done with it: callbacks may then change any connection's timeouts
   * (which moves it on or off a list) or close it, and the walk, always
   * taking the head of `todo`, never follows a stale link. */
  gev__list_move_all(&todo, &l->active);
  while (!gev__list_empty(&todo)) {
    gev_conn *c = gev__container_of(todo.next, gev_conn, active);

    gev__list_remove(&c->active);
    gev__list_append(&l->active, &c->active);
    if (gev__conn_state(c) == GEV__CS_DETACHING)
      continue; /* leaving whole: nothing is closed under it */
    /* One action per connection and sweep: after an on_idle the next
     * kind waits for the next sweep, which sees what the handler did. */
    for (int k = 0; k < GEV__IDLE_KINDS; k++) {
      if (c->idle_ms[k] && l->now_ms - since(c, k) >= c->idle_ms[k]) {
        /* conn.c acts: on_idle, or the close the timeout always was. */
        c->handle.ops->expire(&c->handle, k);
        break;
      }
    }
  }
  /* Nobody left to watch: the loop sleeps again until a connection with
   * a timeout comes (whose watch re-arms the sweep, at its own period). */
  if (gev__list_empty(&l->active) && l->sweep_timer) {
    gev_loop_cancel(l, l->sweep_timer);
    l->sweep_timer = 0;
    l->sweep_ms = 0;
  }
}

void gev__conn_idle_watch(gev_conn *c)
{
  gev_loop *l = c->loop;
  uint64_t shortest = 0, every;

  gev__assert_in_loop(l);
  for (int k = 0; k < GEV__IDLE_KINDS; k++)
    if (c->idle_ms[k] && (!shortest || c->idle_ms[k] < shortest))
      shortest = c->idle_ms[k];
  if (!shortest) {
    gev__list_remove(&c->active);
    return;
  }
  if (!gev__list_linked(&c->active))
    gev__list_append(&l->active, &c->active);
  every = shortest / 4 ? shortest / 4 : 1;
  if (l->sweep_timer && l->sweep_ms <= every)
    return;
  if (l->sweep_timer)
    gev_loop_cancel(l, l->sweep_timer);
  l->sweep_timer = gev_loop_run_every(l, every, sweep, l);
  /* No timer (out of memory, the loop stopping): the timeouts wait for
   * the next watch to try again; the connections still close with the
   * loop. */
  l->sweep_ms = l->sweep_timer ? every : 0;
}

int gev_conn_set_idle_timeout(gev_conn *c, gev_idle_kind kind, int ms)
{
  if (!c || (unsigned)kind >= GEV__IDLE_KINDS || ms < 0 ||
      !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return -ENOTCONN;
  c->idle_ms[kind] = (uint32_t)ms;
  /* The period starts now: a timeout set on a long-quiet connection does
   * not close it at the next sweep. */
  c->idle_mark[kind] = c->loop->now_ms;
  gev__conn_idle_watch(c);
  return 0;
}
