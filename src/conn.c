/* conn.c - a connection's life: its state machine, the read path, the write
 * path, closing.
 *
 * The state machine. A connection is in exactly one state (conn-internal.h)
 * and moves only through transition(), which looks the move up in this
 * table. A missing row for a caller's request (closing twice, say) is
 * -ENOTCONN; a missing row for an internal event is a bug (asserted).
 *
 *   state          event             next           action
 *   OPEN           PEER_EOF          DRAINING       -
 *   OPEN           PEER_EOF_KEEP     HALF_OPEN      call on_peer_eof
 *   OPEN           CLOSE             CLOSING        wake the loop
 *   OPEN           SHUTDOWN_WRITE    SHUTTING_DOWN  wake the loop
 *   OPEN           CLOSE_LINGERING   LINGERING      wake the loop
 *   HALF_OPEN      CLOSE, SHUTDOWN_WRITE,
 *                  CLOSE_LINGERING   FLUSHING       wake the loop
 *   DRAINING       the same three    FLUSHING       wake the loop
 *   DRAINING       FLUSHED           CLOSED         close
 *   SHUTTING_DOWN  FLUSHED           SHUT_WR        send FIN
 *   SHUTTING_DOWN  PEER_EOF          FLUSHING       -
 *   SHUTTING_DOWN  PEER_EOF_KEEP     FLUSHING       call on_peer_eof
 *   SHUTTING_DOWN  CLOSE             CLOSING        wake the loop
 *   SHUTTING_DOWN  CLOSE_LINGERING   LINGERING      wake the loop
 *   SHUT_WR        PEER_EOF(_KEEP)   FLUSHING       -
 *   SHUT_WR        CLOSE             CLOSING        wake the loop
 *   SHUT_WR        CLOSE_LINGERING   LINGER_FIN     wake the loop
 *   LINGERING      FLUSHED           LINGER_FIN     send FIN
 *   LINGERING      PEER_EOF(_KEEP)   FLUSHING       -
 *   LINGERING      CLOSE             CLOSING        wake the loop
 *   LINGER_FIN     PEER_EOF(_KEEP)   FLUSHING       -
 *   LINGER_FIN     CLOSE             CLOSING        wake the loop
 *   CLOSING        PEER_EOF(_KEEP)   FLUSHING       -
 *   CLOSING        FLUSHED           CLOSED         close
 *   FLUSHING       FLUSHED           CLOSED         close
 *   HANDSHAKE      READY             OPEN           start: result, on_connect
 *   HANDSHAKE      CLOSE             CLOSING        wake the loop (a timeout)
 *   OPEN, HALF_OPEN,
 *   DRAINING       DETACH            DETACHING      wake the loop
 *   DETACHING      DETACHED          CLOSED         hand the fd back
 *   any but CLOSED DEADLINE, ERROR   CLOSED         close (output dropped)
 *   any but CLOSED LOOP_STOP         CLOSED         one last write, close
 *   any but CLOSED,
 *   DETACHING,
 *   ABORTING       ABORT             ABORTING       drop output, after pass
 *   ABORTING       RESET, DEADLINE,
 *                  ERROR, LOOP_STOP  CLOSED         RST (SO_LINGER 0), close
 *
 * A connection starts in HANDSHAKE instead of OPEN when its transport has
 * a handshake; closed from there, it never reached the handler.
 *
 * DETACHING does nothing with the socket: its events are ignored and the
 * buffers are left as they are, so that what they hold goes back to the
 * caller whole. DETACHED is raised after the pass once no send accepted
 * from another thread is on its way (those still arrive into the output);
 * it ends in CLOSED like a close, but the fd stays open and on_close is
 * not called.
 *
 * ABORT (gev_conn_abort) closes at once for the handler (nothing more is
 * shown, sent or accepted), but the close itself waits for the end of the
 * pass (RESET): closing inside the caller's callback would run on_close
 * within it.
 *
 * READABLE and WRITABLE change no state; what they do depends on the
 * state's row in `rules` below (is input read, shown to the handler, are
 * replies sent). FLUSHED is raised by settle() once the output and every
 * send accepted from another thread are out, in the states that wait for
 * that. CLOSE and SHUTDOWN_WRITE may come from any thread (a CAS on the
 * state; the loop is woken to act); every other event comes from the loop.
 *
 * Lifetime. The loop holds one reference from gev__conn_start until the
 * end of the pass in which the connection closed (its after_pass then
 * drops it), tasks from other threads hold one each, users may hold more;
 * the memory goes with the last one (conn-ref.c), never inside a dispatch
 * that still uses it.
 *
 * Cross-thread sends. A send from another thread reserves its size in
 * `reserved` before it is queued, so the cap applies at once. The decision
 * to stop sending (FIN or close) swaps `reserved` from 0 to
 * GEV__RESERVE_CLOSED, atomic with the sends themselves: every send that
 * got 0 is delivered, every later one gets -ENOTCONN. */
#include "conn-internal.h"
#include "log-internal.h"
#include "transport-plain.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A shared buffer grown past GEV__SHARED_CAP gets fresh storage this long
 * after the growth was seen: not at once, so that a run of large messages
 * does not reallocate for each one. */
#define TRIM_DELAY_MS 1000

/* ---- the table -------------------------------------------------------- */

enum {
  A_NONE = 0,
  A_WAKE,
  A_PEER_EOF,
  A_FIN,
  A_CLOSE,
  A_STOP,
  A_START,
  A_DETACH,
  A_ABORT,
  A_RESET
};

typedef struct edge {
  unsigned char ok, to, action;
} edge;

#define E(from, ev, next, act)                                                 \
  [GEV__CS_##from][GEV__CE_##ev] = {1, GEV__CS_##next, A_##act}
#define ENDS(from)                                                             \
  E(from, DEADLINE, CLOSED, CLOSE), E(from, ERROR, CLOSED, CLOSE),             \
      E(from, LOOP_STOP, CLOSED, STOP), E(from, ABORT, ABORTING, ABORT)

static const edge table[GEV__CS_COUNT][GEV__CE_COUNT] = {
    E(OPEN, PEER_EOF, DRAINING, NONE),
    E(OPEN, PEER_EOF_KEEP, HALF_OPEN, PEER_EOF),
    E(OPEN, CLOSE, CLOSING, WAKE),
    E(OPEN, SHUTDOWN_WRITE, SHUTTING_DOWN, WAKE),
    E(OPEN, CLOSE_LINGERING, LINGERING, WAKE),
    ENDS(OPEN),
    E(HALF_OPEN, CLOSE, FLUSHING, WAKE),
    E(HALF_OPEN, SHUTDOWN_WRITE, FLUSHING, WAKE),
    E(HALF_OPEN, CLOSE_LINGERING, FLUSHING, WAKE),
    ENDS(HALF_OPEN),
    E(DRAINING, CLOSE, FLUSHING, WAKE),
    E(DRAINING, SHUTDOWN_WRITE, FLUSHING, WAKE),
    E(DRAINING, CLOSE_LINGERING, FLUSHING, WAKE),
    E(DRAINING, FLUSHED, CLOSED, CLOSE),
    ENDS(DRAINING),
    E(SHUTTING_DOWN, FLUSHED, SHUT_WR, FIN),
    E(SHUTTING_DOWN, PEER_EOF, FLUSHING, NONE),
    E(SHUTTING_DOWN, PEER_EOF_KEEP, FLUSHING, PEER_EOF),
    E(SHUTTING_DOWN, CLOSE, CLOSING, WAKE),
    E(SHUTTING_DOWN, CLOSE_LINGERING, LINGERING, WAKE),
    ENDS(SHUTTING_DOWN),
    E(SHUT_WR, PEER_EOF, FLUSHING, NONE),
    E(SHUT_WR, PEER_EOF_KEEP, FLUSHING, NONE),
    E(SHUT_WR, CLOSE, CLOSING, WAKE),
    E(SHUT_WR, CLOSE_LINGERING, LINGER_FIN, WAKE),
    ENDS(SHUT_WR),
    E(LINGERING, FLUSHED, LINGER_FIN, FIN),
    E(LINGERING, PEER_EOF, FLUSHING, NONE),
    E(LINGERING, PEER_EOF_KEEP, FLUSHING, NONE),
    E(LINGERING, CLOSE, CLOSING, WAKE),
    ENDS(LINGERING),
    E(LINGER_FIN, PEER_EOF, FLUSHING, NONE),
    E(LINGER_FIN, PEER_EOF_KEEP, FLUSHING, NONE),
    E(LINGER_FIN, CLOSE, CLOSING, WAKE),
    ENDS(LINGER_FIN),
    E(CLOSING, PEER_EOF, FLUSHING, NONE),
    E(CLOSING, PEER_EOF_KEEP, FLUSHING, NONE),
    E(CLOSING, FLUSHED, CLOSED, CLOSE),
    ENDS(CLOSING),
    E(FLUSHING, FLUSHED, CLOSED, CLOSE),
    ENDS(FLUSHING),
    E(HANDSHAKE, READY, OPEN, START),
    E(HANDSHAKE, CLOSE, CLOSING, WAKE),
    ENDS(HANDSHAKE),
    E(OPEN, DETACH, DETACHING, WAKE),
    E(HALF_OPEN, DETACH, DETACHING, WAKE),
    E(DRAINING, DETACH, DETACHING, WAKE),
    E(DETACHING, DETACHED, CLOSED, DETACH),
    /* Not ENDS: an abort would take the fd the caller is waiting for. */
    E(DETACHING, DEADLINE, CLOSED, CLOSE),
    E(DETACHING, ERROR, CLOSED, CLOSE),
    E(DETACHING, LOOP_STOP, CLOSED, STOP),
    E(ABORTING, RESET, CLOSED, RESET),
    E(ABORTING, DEADLINE, CLOSED, RESET),
    E(ABORTING, ERROR, CLOSED, RESET),
    E(ABORTING, LOOP_STOP, CLOSED, RESET),
};

/* What each state does with the socket. READ: input is read; SHOW: the
 * handler sees it (else it is dropped unseen); REPLY: what the handler
 * appends to `out` is sent (else dropped: after our FIN it could not be);
 * SEND: gev_conn_send is accepted; FLUSH: FLUSHED is due once the output
 * is out; UP: gev_conn_connected; DROP: what is queued is dropped, even
 * the replies of the callback that aborted. One byte a state: one load
 * answers every question the hot path asks. */
enum {
  READ = 1,
  SHOW = 2,
  REPLY = 4,
  SEND = 8,
  FLUSH = 16,
  UP = 32,
  DROP = 64
};

static const unsigned char rules[GEV__CS_COUNT] = {
    [GEV__CS_OPEN] = READ | SHOW | REPLY | SEND | UP,
    [GEV__CS_HALF_OPEN] = SHOW | REPLY | SEND | UP,
    [GEV__CS_DRAINING] = SHOW | REPLY | SEND | FLUSH | UP,
    [GEV__CS_SHUTTING_DOWN] = READ | SHOW | FLUSH | UP,
    [GEV__CS_SHUT_WR] = READ | SHOW | UP,
    [GEV__CS_LINGERING] = READ | FLUSH,
    [GEV__CS_LINGER_FIN] = READ,
    [GEV__CS_CLOSING] = READ | FLUSH,
    [GEV__CS_FLUSHING] = FLUSH,
    [GEV__CS_CLOSED] = 0,
    [GEV__CS_HANDSHAKE] = 0,
    [GEV__CS_DETACHING] = 0,
    [GEV__CS_ABORTING] = DROP,
};

static bool has(int st, unsigned what)
{
  return (rules[st] & what) != 0;
}

bool gev__conn_state_sends(int state)
{
  return has(state, SEND);
}

bool gev__conn_state_connected(int state)
{
  return has(state, UP);
}

bool gev__conn_state_drops(int state)
{
  return has(state, DROP);
}

static void act(gev_conn *c, int action);

static bool closed(const gev_conn *c)
{
  return gev__conn_state(c) == GEV__CS_CLOSED;
}

/* The one place a state changes. A CAS, because gev_conn_close and
 * gev_conn_shutdown_write move the state from other threads. */
static int transition(gev_conn *c, int ev)
{
  int from = atomic_load(&c->state);
  const edge *e;

  do {
    e = &table[from][ev];
    if (!e->ok) {
      /* Closing twice is normal; any other missing internal row is not. */
      assert(from == GEV__CS_CLOSED || ev == GEV__CE_CLOSE ||
             ev == GEV__CE_SHUTDOWN_WRITE || ev == GEV__CE_CLOSE_LINGERING ||
             ev == GEV__CE_DETACH || ev == GEV__CE_ABORT);
      return -ENOTCONN;
    }
  } while (!atomic_compare_exchange_weak(&c->state, &from, e->to));
  act(c, e->action);
  return 0;
}

/* The reason a closing event gives, unless the close began earlier (a
 * FLUSHED close keeps the reason of what started it: the handler's
 * request, LOCAL, or the peer's EOF, PEER). */
static void note_why(gev_conn *c, int ev)
{
  if (ev == GEV__CE_ERROR && c->why != GEV__WHY_CAP)
    c->why = GEV__WHY_ERROR;
  else if (ev == GEV__CE_LOOP_STOP)
    c->why = GEV__WHY_STOP;
  else if (ev == GEV__CE_DEADLINE && c->why != GEV__WHY_IDLE)
    c->why = GEV__WHY_LOCAL; /* the linger deadline the handler set */
}

int gev__conn_event(gev_conn *c, int ev)
{
  if (ev != GEV__CE_CLOSE && ev != GEV__CE_SHUTDOWN_WRITE) {
    gev__assert_in_loop(c->loop);
    note_why(c, ev); /* acts on the closing events only */
  }
  return transition(c, ev);
}

/* ---- small helpers ---------------------------------------------------- */

/* Activity for the idle timeouts: one store of the pass's cached clock;
 * the coarse sweep (conn-idle.c) compares the stamps, so no timer moves
 * per message. */
static inline void touch_read(gev_conn *c)
{
  c->last_read = c->loop->now_ms;
}

static inline void touch_write(gev_conn *c)
{
  c->last_write = c->loop->now_ms;
}

void gev__conn_schedule(gev_conn *c)
{
  gev__assert_in_loop(c->loop);
  if (gev__conn_state(c) != GEV__CS_CLOSED)
    gev__handle_schedule(&c->handle);
}

static int wake_op(gev_conn *c, gev__conn_op *op)
{
  (void)op;
  gev__conn_schedule(c);
  return 0;
}

/* The transport is called through its table, but the default one
 * directly (transport-plain.h says why). */
static ssize_t tp_read(gev_conn *c, ringbuffer *in)
{
  if (c->tp == &gev__plain)
    return gev__plain_read(c->io.fd, in);
  return c->tp->read(c->tp_state, c->io.fd, in);
}

/* A write tried again is no longer waiting for input, whatever made it
 * go on (a readable event, or a read that took the input it waited for):
 * a flag left over would keep write interest off for good. The plaintext
 * transport never waits so. */
static ssize_t tp_write(gev_conn *c, ringbuffer *out)
{
  if (c->tp == &gev__plain)
    return gev__plain_write(c->io.fd, out);
  c->flags &= ~GEV__CF_WRITE_WANTS_READ;
  return c->tp->write(c->tp_state, c->io.fd, out);
}

static ssize_t tp_send(gev_conn *c, const void *p, size_t n)
{
  if (c->tp == &gev__plain)
    return gev__plain_send(c->io.fd, p, n);
  return c->tp->send(c->tp_state, c->io.fd, p, n);
}

#define WAITS (GEV__CF_READ_WANTS_WRITE | GEV__CF_WRITE_WANTS_READ)

/* A transport waiting on the other direction turns the interest around:
 * a read that must write first waits for writability only (readable
 * events would find it blocked again and spin), a write that must read
 * first waits for readability. */
static unsigned waiting_interest(gev_conn *c, bool read, unsigned f)
{
  unsigned ev = 0;

  if ((read && !(f & GEV__CF_READ_WANTS_WRITE)) ||
      (f & GEV__CF_WRITE_WANTS_READ))
    ev |= GEV__EV_READ;
  if (((c->out || (f & GEV__CF_FIN_PENDING)) &&
       !(f & GEV__CF_WRITE_WANTS_READ)) ||
      (f & GEV__CF_READ_WANTS_WRITE))
    ev |= GEV__EV_WRITE;
  return ev;
}

/* Read while the state reads and nothing pauses it; write while output
 * (or a FIN the transport must retry) waits. */
static inline void update_interest(gev_conn *c, int st)
{
  unsigned f = c->flags, ev;
  bool read = has(st, READ) && !(f & (GEV__CF_PAUSED | GEV__CF_USER_PAUSED));

  if (f & (WAITS | GEV__CF_FIN_PENDING))
    ev = waiting_interest(c, read, f);
  else
    ev = (read ? GEV__EV_READ : 0) | (c->out ? GEV__EV_WRITE : 0);
  if (ev != c->io.interest && gev__loop_io_set(c->loop, &c->io, ev) < 0)
    gev__conn_event(c, GEV__CE_ERROR);
}

static void trim_shared(void *loop)
{
  gev_loop *l = loop;

  gev__bufs_trim(&l->bufs);
}

/* A large message grew a shared buffer: shrink it a while later. Fails
 * only when the loop is stopping or out of memory; the next growth tries
 * again, or the loop's end frees the buffers anyway. */
static void watch_shared(gev_loop *l)
{
  if (!l->bufs.trim_armed &&
      gev_loop_run_after(l, TRIM_DELAY_MS, trim_shared, l))
    l->bufs.trim_armed = true;
}

/* One write attempt. 0, or -errno for a broken connection. */
static int write_out(gev_conn *c, ringbuffer *out)
{
  ssize_t n = tp_write(c, out);

  if (n > 0) {
    c->loop->st.v[GEV__S_BYTES_WRITTEN] += (uint64_t)n;
    touch_write(c);
    return 0;
  }
  if (n == GEV_TRANSPORT_WANT_READ)
    c->flags |= GEV__CF_WRITE_WANTS_READ;
  else if (n < 0 && n != -EAGAIN)
    return (int)n;
  return 0;
}

ssize_t gev__conn_write_direct(gev_conn *c, const void *p, size_t n)
{
  ssize_t w;

  gev__assert_in_loop(c->loop);
  w = tp_send(c, p, n);
  if (w > 0) {
    c->loop->st.v[GEV__S_BYTES_WRITTEN] += (uint64_t)w;
    touch_write(c);
  } else if (w == GEV_TRANSPORT_WANT_READ || w == -EAGAIN)
    w = 0; /* the queued rest is written (and waits) like any output */
  return w;
}

/* ---- the actions ------------------------------------------------------ */

/* Sending has ended for good once no send is in flight: claim `reserved`
 * so none can start. */
static bool sends_drained(gev_conn *c)
{
  size_t zero = 0;

  if (atomic_load(&c->reserved) == GEV__RESERVE_CLOSED)
    return true;
  return atomic_compare_exchange_strong(&c->reserved, &zero,
                                        GEV__RESERVE_CLOSED);
}

/* FIN through the transport, which may have to wait for the socket. */
static void send_fin(gev_conn *c)
{
  int r = c->tp->shutdown(c->tp_state, c->io.fd);

  c->flags &= ~(GEV__CF_FIN_PENDING | GEV__CF_WRITE_WANTS_READ);
  if (r == 0)
    return;
  if (r == GEV_TRANSPORT_WANT_READ)
    c->flags |= GEV__CF_FIN_PENDING | GEV__CF_WRITE_WANTS_READ;
  else if (r == -EAGAIN || r == GEV_TRANSPORT_WANT_WRITE)
    c->flags |= GEV__CF_FIN_PENDING;
  else
    gev__conn_event(c, GEV__CE_ERROR);
}

static const char *const why_names[GEV__WHY_COUNT] = {
    "by the handler", "by the peer", "idle timeout",
    "input cap",      "error",       "loop stopped",
};

/* Closed in its handshake: an outgoing connection reports why. */
static void never_started(gev_conn *c)
{
  if (c->tp->handshake) {
    c->loop->st.v[GEV__S_HANDSHAKE_FAILED]++;
    gev__log(GEV_LOG_INFO, c->loop, c, "handshake failed: %s",
             gev_strerror(c->error ? c->error : -ECONNABORTED));
  }
  if (c->result)
    c->result(NULL, c->error ? c->error : -ECONNABORTED, c->result_arg);
  c->result = NULL;
}

/* Everything but the memory goes: the handler hears of it, the fd closes,
 * the buffers return to the pool. The loop's reference drops after the
 * pass (after_pass), so callers up the stack may still look at c. */
static void close_now(gev_conn *c)
{
  gev_loop *l = c->loop;

  atomic_store(&c->reserved, GEV__RESERVE_CLOSED);
  l->st.v[GEV__S_CLOSED_LOCAL + c->why]++;
  if (gev__log_on(GEV_LOG_DEBUG))
    gev__log(GEV_LOG_DEBUG, l, c, "closed (%s)", why_names[c->why]);
  gev__handle_unregister(&c->handle);
  gev__list_remove(&c->active);
  if (c->linger_timer) /* its callback must never see c closed */
    gev_loop_cancel(l, c->linger_timer);
  c->linger_timer = 0;
  /* Counted out before on_close, so that whoever sees on_close (or counts
   * them) never sees this connection still counted. */
  atomic_fetch_sub(&l->nconns, 1);
  if (c->server && !(c->flags & GEV__CF_OUTGOING))
    gev__server_uncount(c->server); /* frees a max_connections slot */
  if (!(c->flags & GEV__CF_STARTED))
    never_started(c);
  else if (c->owner)
    c->owner->closing(c, c->owner_arg);
  if (c->flags & GEV__CF_CONNECTED) {
    c->flags &= ~GEV__CF_CONNECTED;
    if (c->h->on_close)
      c->h->on_close(c);
  }
  if (c->owner && (c->flags & GEV__CF_STARTED))
    c->owner->closed(c, c->owner_arg);
  if (c->tp->close)
    c->tp->close(c->tp_state);
  /* -1 first: another thread's gev_conn_fd must not see the number once
   * it is closed (and possibly reused by an unrelated open). Off the
   * poller before the close (poller.h says why); events already fetched
   * for it in this pass see the closed state and are ignored. */
  atomic_store_explicit(&c->fd, -1, memory_order_relaxed);
  gev__loop_io_del(l, &c->io);
  close(c->io.fd);
  c->io.fd = -1;
  if (c->in)
    gev__bufs_put(&l->bufs, c->in);
  if (c->out)
    gev__bufs_put(&l->bufs, c->out);
  c->in = c->out = NULL;
  gev__conn_publish_out(c);
  gev__handle_schedule(&c->handle);
}

/* Ends c like close_now, but the fd and what the buffers hold go to the
 * caller of gev_conn_detach instead of on_close; the buffers' bytes are
 * valid during its callback. An owner (a gev_client) hears of it as of a
 * close, and dials again. */
static void hand_over(gev_conn *c)
{
  gev_loop *l = c->loop;
  gev_detach_fn fn = c->detach_fn;
  bool owned = c->owner && (c->flags & GEV__CF_STARTED);
  gev_detached d = {.fd = c->io.fd};

  l->st.v[GEV__S_CLOSED_LOCAL]++; /* it left, by the handler's doing */
  gev__handle_unregister(&c->handle);
  gev__list_remove(&c->active);
  atomic_fetch_sub(&l->nconns, 1);
  if (c->server && !(c->flags & GEV__CF_OUTGOING))
    gev__server_uncount(c->server);
  if (owned)
    c->owner->closing(c, c->owner_arg);
  c->flags &= ~GEV__CF_CONNECTED; /* no on_close */
  atomic_store_explicit(&c->fd, -1, memory_order_relaxed);
  gev__loop_io_del(l, &c->io);
  c->io.fd = -1;
  d.in_len = gev__buf_len(c->in);
  d.in = d.in_len ? ringbuffer_linearize(c->in, d.in_len) : NULL;
  d.out_len = gev__buf_len(c->out);
  d.out = d.out_len ? ringbuffer_linearize(c->out, d.out_len) : NULL;
  c->detach_fn = NULL;
  fn(c, &d, c->detach_arg);
  if (owned)
    c->owner->closed(c, c->owner_arg);
  if (c->in)
    gev__bufs_put(&l->bufs, c->in);
  if (c->out)
    gev__bufs_put(&l->bufs, c->out);
  c->in = c->out = NULL;
  gev__conn_publish_out(c);
  gev__handle_schedule(&c->handle); /* the loop's reference goes next */
}

/* The handler's abort: nothing more goes out, not even what is queued
 * (sends accepted from other threads are dropped when they arrive); the
 * close waits for the end of the pass. */
static void abort_now(gev_conn *c)
{
  atomic_store(&c->reserved, GEV__RESERVE_CLOSED);
  c->why = GEV__WHY_LOCAL;
  c->flags &= ~(GEV__CF_FIN_PENDING | GEV__CF_REDELIVER | GEV__CF_WAKE);
  if (c->out)
    ringbuffer_retrieve_all(c->out);
  gev__conn_schedule(c);
}

/* SO_LINGER with a zero timeout makes close() reset a TCP connection
 * (RST, unsent bytes discarded) instead of sending FIN after them. */
static void reset_now(gev_conn *c)
{
  struct linger lg = {.l_onoff = 1, .l_linger = 0};

  if (c->out)
    ringbuffer_retrieve_all(c->out);
  setsockopt(c->io.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  close_now(c);
}

static void begin(gev_conn *c);

static void act(gev_conn *c, int action)
{
  switch (action) {
  case A_WAKE:
    /* The loop acts on the new state after the pass. */
    if (gev_loop_in_thread(c->loop))
      gev__conn_schedule(c);
    else if (gev__handle_schedule_remote(&c->handle) < 0)
      /* Not registered (not begun yet, or ended): a task. The state
       * changed already and the caller was told so, so the loop must
       * hear of it without an allocation that could fail - the remote
       * schedule - wherever it can. A failed post here means the loop
       * stops, which closes c itself. */
      gev__conn_call(c, wake_op, 0);
    break;
  case A_PEER_EOF: c->h->on_peer_eof(c); break;
  case A_FIN: send_fin(c); break;
  case A_STOP:
    if (c->out)
      write_out(c, c->out); /* the loop is stopping: one last attempt */
    close_now(c);
    break;
  case A_CLOSE: close_now(c); break;
  case A_START: begin(c); break;
  case A_DETACH: hand_over(c); break;
  case A_ABORT: abort_now(c); break;
  case A_RESET: reset_now(c); break;
  default: break;
  }
}

/* ---- settling after any event ----------------------------------------- */

/* Buffers go back to the pool as soon as they are empty; input a state
 * does not show is dropped. */
static void release_empty(gev_conn *c, int st)
{
  gev__bufs *b = &c->loop->bufs;

  if (c->in && !has(st, SHOW))
    ringbuffer_retrieve_all(c->in);
  if (c->out && ringbuffer_empty(c->out)) {
    gev__bufs_put(b, c->out);
    c->out = NULL;
  }
  if (c->in && ringbuffer_empty(c->in)) {
    gev__bufs_put(b, c->in);
    c->in = NULL;
  }
  gev__conn_publish_out(c);
}

/* The output is out in a state that waits for that: raise FLUSHED, unless
 * held input is still owed to the handler (DRAINING) or a send accepted
 * from another thread is on its way. true when c closed. */
static bool flushed(gev_conn *c, int st)
{
  if (st == GEV__CS_DRAINING && c->in) {
    /* Paused by the user with input held: resume shows it again, so
     * wait for that (redelivering now would find it paused every pass, a
     * busy loop; closing would drop what it paused to keep). */
    if (c->flags & GEV__CF_USER_PAUSED)
      return false;
    /* Held back only for lack of output room: show it again; the close
     * follows once the handler consumed it or stopped consuming with an
     * empty output (STALLED). */
    if (!(c->flags & GEV__CF_STALLED)) {
      c->flags |= GEV__CF_REDELIVER;
      gev__conn_schedule(c);
      return false;
    }
  }
  if (!sends_drained(c))
    return false;
  gev__conn_event(c, GEV__CE_FLUSHED);
  return gev__conn_state(c) == GEV__CS_CLOSED;
}

/* Backpressure: the output is full enough that reading waits. */
static void pause_reading(gev_conn *c)
{
  if (!(c->flags & GEV__CF_PAUSED))
    c->loop->st.v[GEV__S_PAUSES]++;
  c->flags |= GEV__CF_PAUSED;
}

/* A graceful shutdown closes a connection whose handler has no
 * on_shutdown as soon as nothing is left in either direction (the output
 * is out, no input is held, no send is on its way). */
static void close_if_idle(gev_conn *c, int st)
{
  if (!c->in && !gev__conn_reserved(c) && has(st, SEND) && !c->h->on_shutdown)
    gev__conn_event(c, GEV__CE_CLOSE); /* closes after the pass */
}

/* Backpressure ends once the output is below half the cap: held input is
 * shown again. It starts only in show(), where the handler holds input
 * back: an output that is high by itself (the user's own sends, a stream
 * pushed at a peer) does not stop reading. If it did, two peers streaming
 * at each other would each wait for the other to read. */
static void apply_backpressure(gev_conn *c)
{
  size_t half = c->max_buffer / 2;

  if (gev__buf_len(c->out) >= half && half > 0)
    return;
  if (c->flags & GEV__CF_PAUSED) {
    c->flags &= ~GEV__CF_PAUSED;
    if (c->in) {
      c->flags |= GEV__CF_REDELIVER;
      gev__conn_schedule(c);
    }
  }
}

/* After anything happened to c: release empty buffers, carry out what
 * waited for the output to drain, apply backpressure, and register the
 * interest that follows. */
static void settle(gev_conn *c)
{
  int st = gev__conn_state(c);

  if (st == GEV__CS_CLOSED || st == GEV__CS_DETACHING)
    return; /* a detaching one keeps its buffers as they are */
  release_empty(c, st);
  if (!c->out && ((c->flags & (GEV__CF_FIN_PENDING | GEV__CF_DRAINING)) ||
                  has(st, FLUSH))) {
    if ((c->flags & GEV__CF_FIN_PENDING) && (send_fin(c), closed(c)))
      return;
    if (has(st, FLUSH) && flushed(c, st))
      return;
    if (c->flags & GEV__CF_DRAINING)
      close_if_idle(c, st);
    st = gev__conn_state(c); /* FLUSHED may have sent a FIN */
  }
  apply_backpressure(c);
  update_interest(c, st);
  if (c->drain_fn && !closed(c) &&
      gev__buf_len(c->out) + gev__conn_reserved(c) <= c->low_water) {
    void (*fn)(gev_conn *, void *) = c->drain_fn;

    c->drain_fn = NULL; /* one-shot: fn may set it again */
    fn(c, c->drain_arg);
  }
}

/* The socket is writable (or the transport's write waited for input). */
static void handle_write(gev_conn *c)
{
  int err = c->out ? write_out(c, c->out) : 0;

  if (err < 0)
    gev__conn_event(c, GEV__CE_ERROR);
  else
    settle(c);
}

/* After the pass: write what was queued unless a writable event will. */
static void flush(gev_conn *c)
{
  gev__assert_in_loop(c->loop);
  if (c->out && !(c->io.interest & GEV__EV_WRITE))
    handle_write(c);
  else
    settle(c);
}

/* ---- the read path ---------------------------------------------------- */

/* Shows `in` to the handler with `out` for its replies. */
static void show(gev_conn *c, int st, ringbuffer *in, ringbuffer *out)
{
  size_t max = c->max_buffer, reserved = gev__conn_reserved(c);
  size_t before = ringbuffer_len(in);
  bool empty_out = ringbuffer_empty(out);

  /* Shown even with no room left: a handler that only consumes needs none,
   * and one that replies holds its input, which pauses reading below.
   * Sends already accepted from other threads keep their room. */
  ringbuffer_set_limit(out, max > reserved ? max - reserved : 0);
  c->cur_in = in;
  c->cur_out = out;
  c->loop->st.v[GEV__S_MESSAGES]++;
  if (c->h->on_message)
    c->h->on_message(c, in, out);
  else
    ringbuffer_retrieve_all(in);
  c->cur_in = c->cur_out = NULL;
  max = c->max_buffer; /* the handler may have changed it */
  ringbuffer_set_limit(out, max);
  if (!has(st, REPLY) || has(gev__conn_state(c), DROP))
    ringbuffer_retrieve_all(out); /* after our FIN, or aborted */
  if (empty_out && ringbuffer_len(in) >= before)
    c->flags |= GEV__CF_STALLED;
  else
    c->flags &= ~GEV__CF_STALLED;
  /* The handler held input back while its output filled up (to at least
   * half the cap, counting sends in flight): it may be waiting for room.
   * Paused from the level the handler left, not the one after the write
   * that follows: when the kernel takes the whole output at once, settle
   * would never see it above half, never show the held input again, and
   * a peer waiting for its replies would wait forever. */
  if (has(st, REPLY) && !ringbuffer_empty(in) && max / 2 > 0 &&
      ringbuffer_len(out) + reserved >= max / 2)
    pause_reading(c);
}

/* After show: what the handler left in the shared buffers moves to c, the
 * replies are written, and c settles. */
static void keep(gev_conn *c, ringbuffer *in, ringbuffer *out, bool shared_out)
{
  gev_loop *l = c->loop;
  gev__bufs *b = &l->bufs;
  size_t olen = ringbuffer_len(out);
  int err = 0;

  /* Large storage reaches the shared output by a large reply, by a move
   * from a large shared input (seen at its read), or by a move from a
   * connection's own input: its capacity is asked only then. */
  if (shared_out && (olen > GEV__SHARED_CAP || in != b->in) &&
      ringbuffer_cap(out) > GEV__SHARED_CAP)
    watch_shared(l);
  if (in == b->in && !ringbuffer_empty(in) &&
      !gev__bufs_adopt(b, &b->in, &c->in, c->max_buffer))
    err = -ENOMEM;
  if (!err && olen && !(c->io.interest & GEV__EV_WRITE))
    err = write_out(c, out);
  if (!err && shared_out && !ringbuffer_empty(out) &&
      !gev__bufs_adopt(b, &b->out, &c->out, c->max_buffer))
    err = -ENOMEM;
  if (err) {
    ringbuffer_retrieve_all(b->out);
    ringbuffer_retrieve_all(b->in);
    gev__conn_event(c, GEV__CE_ERROR);
    return;
  }
  settle(c);
}

/* Shows `in` to the handler and sends what it replied; input a state does
 * not show is dropped unseen. */
static void deliver(gev_conn *c, ringbuffer *in)
{
  gev__bufs *b = &c->loop->bufs;
  int st = gev__conn_state(c);
  bool shared_out = !has(st, REPLY) || c->out == NULL;
  ringbuffer *out = shared_out ? b->out : c->out;

  if (!has(st, SHOW)) {
    ringbuffer_retrieve_all(in);
    settle(c);
    return;
  }
  show(c, st, in, out);
  keep(c, in, out, shared_out);
}

/* The peer sent FIN. What the handler held back is shown once more, now
 * that no more bytes will come; then the table decides: close once flushed,
 * or stay half-open for a handler with on_peer_eof. */
static void on_peer_eof(gev_conn *c)
{
  if (gev__conn_state(c) == GEV__CS_OPEN)
    c->why = GEV__WHY_PEER; /* it ends first: a later close is its doing */
  if (c->in && has(gev__conn_state(c), SHOW))
    deliver(c, c->in);
  /* The state first: if c closed above, its on_close may have freed the
   * handler. */
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return;
  gev__conn_event(c,
                  c->h->on_peer_eof ? GEV__CE_PEER_EOF_KEEP : GEV__CE_PEER_EOF);
  settle(c);
}

/* The input is at max_buffer. A read can come before the handler was shown
 * the input again after output drained, so give it that chance first; if
 * it still consumes nothing while output has room, it never will (a frame
 * larger than the cap): by policy, close. */
static void on_input_full(gev_conn *c, ringbuffer *in)
{
  size_t before = ringbuffer_len(in);

  deliver(c, in);
  /* Not when the handler paused reading in that call: it waits for
   * something else (room downstream) and sees the input again on resume. */
  if (gev__conn_state(c) != GEV__CS_CLOSED &&
      !(c->flags & (GEV__CF_PAUSED | GEV__CF_USER_PAUSED)) &&
      gev__buf_len(c->in) >= before) {
    c->why = GEV__WHY_CAP;
    gev__log(GEV_LOG_WARN, c->loop, c,
             "closed: %zu bytes of input that the handler does not take "
             "reached max_buffer",
             before);
    gev__conn_event(c, GEV__CE_ERROR);
  }
}

/* Inlined into io_cb, whose plaintext path is the hot one (io_waiting
 * calls it too). */
static inline __attribute__((always_inline)) void handle_read(gev_conn *c,
                                                              unsigned events)
{
  gev__bufs *b = &c->loop->bufs;
  ringbuffer *in = c->in ? c->in : b->in;
  ssize_t n;

  if (in == b->in) /* outgoing connections may have their own cap */
    ringbuffer_set_limit(in, c->max_buffer);
  n = tp_read(c, in);
  if (n > 0) {
    c->loop->st.v[GEV__S_BYTES_READ] += (uint64_t)n;
    touch_read(c);
    if (in == b->in && n > GEV__SHARED_CAP)
      watch_shared(c->loop);
    deliver(c, in);
  } else if (n == 0) {
    on_peer_eof(c);
  } else if (n == -EAGAIN) {
    if (events & GEV__EV_ERROR) /* an error readiness read cannot explain */
      gev__conn_event(c, GEV__CE_ERROR);
  } else if (n == GEV_TRANSPORT_WANT_WRITE) {
    c->flags |= GEV__CF_READ_WANTS_WRITE;
    settle(c); /* the interest turns to writability */
  } else if (n == -ENOBUFS) {
    on_input_full(c, in);
  } else {
    gev__conn_event(c, GEV__CE_ERROR); /* reset or another socket error */
  }
}

static void step_handshake(gev_conn *c);

/* The transport waits on the other direction (a TLS handshake, say): the
 * readiness it waited for lets the blocked operation go on. Off the
 * plaintext path, which never waits so. */
static void io_waiting(gev_conn *c, unsigned events)
{
  unsigned f = c->flags;
  bool write = events & GEV__EV_WRITE;
  bool read = events & (GEV__EV_READ | GEV__EV_ERROR);

  if (gev__conn_state(c) == GEV__CS_HANDSHAKE) {
    step_handshake(c);
    return;
  }
  if ((f & GEV__CF_WRITE_WANTS_READ) && (events & GEV__EV_READ)) {
    c->flags &= ~GEV__CF_WRITE_WANTS_READ;
    write = true;
  }
  if ((f & GEV__CF_READ_WANTS_WRITE) && (events & GEV__EV_WRITE)) {
    c->flags &= ~GEV__CF_READ_WANTS_WRITE;
    read = true;
  }
  if (write) {
    handle_write(c);
    if (closed(c))
      return;
  }
  if (read && !(c->flags & (WAITS | GEV__CF_PAUSED | GEV__CF_USER_PAUSED)) &&
      has(gev__conn_state(c), READ))
    handle_read(c, events);
  else if (events & GEV__EV_ERROR)
    gev__conn_event(c, GEV__CE_ERROR);
}

static void io_cb(gev__io *io, unsigned events)
{
  gev_conn *c = (gev_conn *)io;
  int st = gev__conn_state(c);

  if (st == GEV__CS_CLOSED || st == GEV__CS_DETACHING)
    return; /* closed earlier in this pass, or leaving whole */
  if (c->flags & WAITS) {
    io_waiting(c, events);
    return;
  }
  if (events & GEV__EV_WRITE) {
    handle_write(c);
    if (closed(c))
      return;
  }
  /* USER_PAUSED is checked besides the interest: gev_conn_pause_read
   * changes the interest only after the pass, so a pause from another
   * connection's callback (a proxy pausing its feeder) would otherwise let
   * a read event already fetched in this pass through to on_message. */
  if ((io->interest & GEV__EV_READ) && !(c->flags & GEV__CF_USER_PAUSED)) {
    if (events & (GEV__EV_READ | GEV__EV_ERROR))
      handle_read(c, events);
  } else if (events & GEV__EV_ERROR) {
    /* Not reading (paused or after EOF) and the socket reports an error or
     * a hang-up in both directions: nothing more can be delivered. */
    gev__conn_event(c, GEV__CE_ERROR);
  }
}

/* ---- the loop's calls ------------------------------------------------- */

static void after_pass(gev__handle *h)
{
  gev_conn *c = gev__container_of(h, gev_conn, handle);
  int st = gev__conn_state(c);

  if (st == GEV__CS_CLOSED) {
    gev_conn_unref(c); /* the loop's reference: closed in this pass */
    return;
  }
  if (st == GEV__CS_DETACHING) {
    /* Sends accepted from other threads arrive first (each schedules c
     * again); then none can start. */
    if (sends_drained(c))
      gev__conn_event(c, GEV__CE_DETACHED);
    return;
  }
  if (st == GEV__CS_ABORTING) {
    gev__conn_event(c, GEV__CE_RESET);
    return;
  }
  if ((c->flags & (GEV__CF_REDELIVER | GEV__CF_WAKE)) &&
      !(c->flags & GEV__CF_USER_PAUSED)) {
    bool wake = c->flags & GEV__CF_WAKE;

    c->flags &= ~(GEV__CF_REDELIVER | GEV__CF_WAKE);
    if ((c->in || wake) && has(st, SHOW)) {
      deliver(c, c->in ? c->in : c->loop->bufs.in); /* woken: maybe empty */
      return;
    }
  }
  flush(c);
}

static void stop(gev__handle *h)
{
  gev__conn_event(gev__container_of(h, gev_conn, handle), GEV__CE_LOOP_STOP);
}

/* The server shuts down: the handler hears of it once (on_shutdown) and
 * ends the connection itself, or the connection closes once idle. Only
 * the server's own connections: outgoing ones end with the loop. */
static void drain(gev__handle *h)
{
  gev_conn *c = gev__container_of(h, gev_conn, handle);
  int st = gev__conn_state(c);

  if (st == GEV__CS_CLOSED || st == GEV__CS_DETACHING ||
      st == GEV__CS_ABORTING ||
      (c->flags & (GEV__CF_DRAINING | GEV__CF_OUTGOING)))
    return;
  c->flags |= GEV__CF_DRAINING;
  if (st == GEV__CS_HANDSHAKE)
    gev__conn_event(c, GEV__CE_CLOSE); /* never shown: nothing to finish */
  else if (c->h->on_shutdown)
    c->h->on_shutdown(c);
  else
    gev__conn_schedule(c); /* settle closes it once idle */
}

/* An idle timeout ran out (conn-idle.c's sweep found it). A handler with
 * on_idle decides (the period starts again); otherwise,
 * and for a connection the handler never saw or that is closing already
 * (a flush its peer does not read: the timeout bounds it), it closes as
 * the idle timeout always did (output dropped). */
static void expire(gev__handle *h, int kind)
{
  gev_conn *c = gev__container_of(h, gev_conn, handle);
  gev_loop *l = c->loop;

  if (c->h->on_idle && (c->flags & GEV__CF_CONNECTED) &&
      has(gev__conn_state(c), UP)) {
    c->idle_mark[kind] = l->now_ms;
    c->h->on_idle(c, (gev_idle_kind)kind);
    return;
  }
  c->why = GEV__WHY_IDLE;
  gev__conn_event(c, GEV__CE_DEADLINE); /* leaves the list */
}

static const gev__handle_ops conn_ops = {"conn", after_pass, stop, drain,
                                         expire};

gev_conn *gev__conn_of_handle(gev__handle *h)
{
  return h->ops == &conn_ops ? gev__container_of(h, gev_conn, handle) : NULL;
}

/* ---- lingering and pausing (the loop halves of conn-api.c) ------------ */

#define LINGER_DEFAULT_MS 5000

static void linger_expired(void *arg)
{
  gev_conn *c = arg; /* alive: closing cancels this timer */

  c->linger_timer = 0;
  gev__conn_event(c, GEV__CE_DEADLINE);
}

int gev__conn_linger(gev_conn *c, uint64_t ms)
{
  int st;

  gev__assert_in_loop(c->loop);
  if (gev__conn_event(c, GEV__CE_CLOSE_LINGERING) < 0)
    return -ENOTCONN; /* closing, closed, or lingering already */
  st = gev__conn_state(c);
  if (st != GEV__CS_LINGERING && st != GEV__CS_LINGER_FIN)
    return 0; /* the peer had closed: a plain close after the output */
  /* Reading resumes if the user had paused it: the peer's EOF must be
   * seen. A missing timer leaves a close that waits on the peer. */
  c->flags &= ~GEV__CF_USER_PAUSED;
  c->linger_timer = gev_loop_run_after(c->loop, ms ? ms : LINGER_DEFAULT_MS,
                                       linger_expired, c);
  if (!c->linger_timer)
    gev__conn_event(c, GEV__CE_CLOSE);
  return 0;
}

void gev__conn_set_paused(gev_conn *c, bool pause)
{
  gev__assert_in_loop(c->loop);
  if (pause) {
    c->flags |= GEV__CF_USER_PAUSED;
  } else {
    c->flags &= ~GEV__CF_USER_PAUSED;
    if (c->in)
      c->flags |= GEV__CF_REDELIVER; /* held input: show it again */
  }
  gev__conn_schedule(c); /* the interest changes after the pass */
}

void gev__conn_wake(gev_conn *c)
{
  gev__assert_in_loop(c->loop);
  c->flags |= GEV__CF_WAKE; /* a paused connection waits for its resume */
  gev__conn_schedule(c);
}

/* ---- creation --------------------------------------------------------- */

/* One allocation: the struct, the peer address and, when asked, a copy of
 * the handler table. */
gev_conn *gev__conn_new(gev_loop *l, const gev_handler *h, bool copy_h,
                        size_t max_buffer, int fd, const struct sockaddr *sa,
                        socklen_t len)
{
  char peer[GEV__ADDR_STRLEN];
  size_t plen, hoff;
  gev_conn *c;

  gev__addr_format(sa, len, peer, sizeof(peer));
  plen = strlen(peer) + 1;
  hoff = (sizeof(*c) + plen + _Alignof(gev_handler) - 1) &
         ~(_Alignof(gev_handler) - 1);
  c = calloc(1, copy_h ? hoff + sizeof(gev_handler) : sizeof(*c) + plen);
  if (!c)
    return NULL;
  memcpy(c->peer, peer, plen);
  c->h = h;
  if (copy_h) {
    gev_handler *own = (gev_handler *)(void *)((char *)c + hoff);
    *own = *h;
    c->h = own;
  }
  c->io = (gev__io){.fd = fd, .cb = io_cb};
  gev__handle_init(&c->handle, l, &conn_ops);
  gev__list_init(&c->active);
  c->loop = l;
  c->server = l->server;
  c->max_buffer = max_buffer;
  if (l->server) /* outgoing ones too, unless their options say otherwise */
    gev__conn_idle_defaults(c, &l->server->opt);
  c->listener = -1;
  c->tp = &gev__plain;
  atomic_init(&c->refs, 1); /* the loop's */
  atomic_init(&c->state, GEV__CS_OPEN);
  atomic_init(&c->fd, fd);
  atomic_init(&c->out_seen, 0);
  atomic_init(&c->reserved, 0);
  atomic_init(&c->local, NULL);
  atomic_init(&c->wake_posted, false);
  return c;
}

void gev__conn_free_unstarted(gev_conn *c)
{
  if (c->io.registered) /* an outgoing one whose start failed */
    gev__loop_io_del(c->loop, &c->io);
  if (c->in) /* an adopted one's bytes (loop thread then) */
    gev__bufs_put(&c->loop->bufs, c->in);
  if (c->out)
    gev__bufs_put(&c->loop->bufs, c->out);
  close(c->io.fd);
  free(c);
}

/* The transport, then the poller: c's fd reads from here on. An outgoing
 * connection is registered already (for its connect). */
static int open_io(gev_conn *c, const gev_transport *tp, void *tp_arg)
{
  int err;

  if (tp) {
    c->tp = tp;
    if (tp->open && (err = tp->open(c, tp_arg, &c->tp_state)) < 0) {
      if (tp->close)
        tp->close(c->tp_state);
      return err;
    }
  }
  c->io.cb = io_cb;
  err = c->io.registered ? gev__loop_io_set(c->loop, &c->io, GEV__EV_READ)
                         : gev__loop_io_add(c->loop, &c->io, GEV__EV_READ);
  if (err < 0 && c->tp->close)
    c->tp->close(c->tp_state);
  return err;
}

/* The handler meets the connection: the connect result, the owner, then
 * on_connect. */
static void begin(gev_conn *c)
{
  gev_connect_fn result = c->result;

  c->result = NULL;
  c->flags |= GEV__CF_CONNECTED | GEV__CF_STARTED;
  if (result)
    result(c, 0, c->result_arg);
  if (c->owner && !c->owner->opened(c, c->owner_arg)) {
    c->flags &= ~GEV__CF_CONNECTED; /* never shown: no on_close either */
    gev__conn_event(c, GEV__CE_CLOSE);
  } else if (c->h->on_connect) {
    c->h->on_connect(c);
  }
  if (c->loop->draining && !closed(c))
    drain(&c->handle); /* arrived while the server shuts down */
  if (gev__conn_state(c) != GEV__CS_OPEN || c->out)
    gev__conn_schedule(c);
}

/* One step of the transport's handshake; on completion the connection
 * opens and reads once: the transport may hold bytes that came with the
 * handshake's last flight, which no readiness will announce. */
static void step_handshake(gev_conn *c)
{
  int r = c->tp->handshake(c->tp_state, c->io.fd);

  c->flags &= ~WAITS;
  if (r == 0) {
    gev__conn_event(c, GEV__CE_READY);
    if (!closed(c) && has(gev__conn_state(c), READ) &&
        !(c->flags & (GEV__CF_USER_PAUSED | GEV__CF_PAUSED)))
      handle_read(c, 0);
    settle(c);
    return;
  }
  if (r == -EAGAIN || r == GEV_TRANSPORT_WANT_READ) {
    c->flags |= GEV__CF_WRITE_WANTS_READ; /* wait for readability */
  } else if (r == GEV_TRANSPORT_WANT_WRITE) {
    c->flags |= GEV__CF_READ_WANTS_WRITE; /* wait for writability */
  } else {
    c->error = r;
    gev__conn_event(c, GEV__CE_ERROR);
    return;
  }
  update_interest(c, GEV__CS_HANDSHAKE);
}

int gev__conn_start(gev_conn *c, const gev_transport *tp, void *tp_arg,
                    gev_connect_fn result, void *arg)
{
  gev_loop *l = c->loop;
  int err = l->finishing ? -ECANCELED : open_io(c, tp, tp_arg);

  gev__assert_in_loop(l);
  if (err < 0) {
    gev__conn_free_unstarted(c);
    return err;
  }
  c->last_read = c->last_write = l->now_ms;
  l->st.v[GEV__S_OPENED]++;
  gev__handle_register(&c->handle);
  gev__conn_idle_watch(c);
  c->result = result;
  c->result_arg = arg;
  if (c->tp->handshake) {
    atomic_store(&c->state, GEV__CS_HANDSHAKE); /* born there: no handler */
    /* Started after its loop began to drain (its hand-over was queued
     * behind the drain): closed unseen, as the drain closes those that
     * were in their handshake already. */
    if (l->draining)
      drain(&c->handle);
    if (gev__conn_state(c) == GEV__CS_HANDSHAKE)
      step_handshake(c);
  } else {
    begin(c);
  }
  return 0;
}
