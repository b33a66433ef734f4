/* conn.c - connections: reading, calling the handler, writing, closing.
 *
 * Buffers. A connection owns a read and a write ring buffer only while it
 * holds bytes in them. A connection with nothing pending reads into its
 * loop's shared input buffer and its handler writes replies into the loop's
 * shared output buffer; what the handler leaves in the input, or what the
 * kernel does not take from the output, moves to the connection by swapping
 * buffer pointers with a spare from the loop's pool (no copy). An idle
 * connection therefore holds no buffer memory, and the steady-state echo
 * path allocates nothing.
 *
 * Lifetime. The loop holds one reference from attach until the end of the
 * pass in which the connection closed (the "zombie" list), tasks from other
 * threads hold one each, and users may hold more. The memory is freed when
 * the last reference goes, never inside a dispatch that still uses it.
 *
 * Cross-thread sends. A send from another thread reserves its size in
 * `reserved` before it is queued, so the cap applies at once. A graceful
 * close or FIN swaps `reserved` from 0 to GEV__RESERVE_CLOSED, which makes the
 * decision to stop accepting sends atomic with the sends themselves: every
 * send that got 0 is delivered, every later one gets -ENOTCONN.
 */
#include "conn-internal.h"
#include "sys.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Spare buffers keep at most this much storage in the pool. */
#define POOL_KEEP_CAP (64 * 1024)
/* The loop's shared read and reply buffers: one read takes up to this. */
#define SHARED_CAP (64 * 1024)
/* adopt() copies rather than hands over a shared buffer when the pending
 * bytes (plus ADOPT_MIN) use less than 1 / ADOPT_SLACK of it. */
#define ADOPT_SLACK 4
#define ADOPT_MIN 1024
/* A shared buffer grown past SHARED_CAP gets fresh SHARED_CAP storage this
 * long after the growth was seen: not at once, so a run of large messages
 * does not reallocate for each one. */
#define TRIM_DELAY_MS 1000

static void settle(gev_conn *c);

/* One-shot: cleared before the call, so the callback may set it again. */
static void fire_drain(gev_conn *c)
{
  void (*fn)(gev_conn *, void *) = c->drain_fn;

  c->drain_fn = NULL;
  fn(c, c->drain_arg);
}

/* ---- small helpers ---------------------------------------------------- */

ringbuffer *gev__conn_pool_get(gev_conn *c)
{
  gev__conn_state *cs = &c->loop->cs;
  ringbuffer *rb = cs->npool ? cs->pool[--cs->npool] : ringbuffer_new(0);

  if (rb)
    ringbuffer_set_limit(rb, c->max_buffer);
  return rb;
}

static void pool_put(gev_loop *l, ringbuffer *rb)
{
  gev__conn_state *cs = &l->cs;
  int cap = (int)(sizeof(cs->pool) / sizeof(cs->pool[0]));

  ringbuffer_retrieve_all(rb);
  ringbuffer_shrink(rb, POOL_KEEP_CAP);
  if (cs->npool < cap)
    cs->pool[cs->npool++] = rb;
  else
    ringbuffer_free(rb);
}

/* Marks activity for the idle timeout: the open list stays ordered by last
 * activity, so the sweep only ever looks at its head. */
static void touch(gev_conn *c)
{
  gev__conn_state *cs = &c->loop->cs;

  c->last_active = c->loop->now_ms;
  if (cs->tail == c || cs->idle_ms == 0)
    return;
  /* unlink */
  if (c->prev)
    c->prev->next = c->next;
  else
    cs->head = c->next;
  c->next->prev = c->prev;
  /* append */
  c->prev = cs->tail;
  c->next = NULL;
  cs->tail->next = c;
  cs->tail = c;
}

static void list_append(gev__conn_state *cs, gev_conn *c)
{
  c->prev = cs->tail;
  c->next = NULL;
  if (cs->tail)
    cs->tail->next = c;
  else
    cs->head = c;
  cs->tail = c;
}

static void list_remove(gev__conn_state *cs, gev_conn *c)
{
  if (c->prev)
    c->prev->next = c->next;
  else
    cs->head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  else
    cs->tail = c->prev;
  c->prev = c->next = NULL;
}

/* Queues c for the end of the pass, where its output is written, a pending
 * close or FIN is carried out, or held input is shown to the handler again.
 * The loop's own reference keeps c alive until then. */
void gev__conn_schedule(gev_conn *c)
{
  gev__conn_state *cs = &c->loop->cs;

  if (c->flags & GEV__CONN_SCHEDULED)
    return;
  c->flags |= GEV__CONN_SCHEDULED;
  c->next_flush = cs->flush;
  cs->flush = c;
}

static void update_interest(gev_conn *c)
{
  unsigned ev = 0;

  if (!(c->flags &
        (GEV__CONN_PEER_EOF | GEV__CONN_PAUSED | GEV__CONN_USER_PAUSED)))
    ev |= GEV__EV_READ;
  if (gev__buf_len(c->out) > 0)
    ev |= GEV__EV_WRITE;
  if (gev__loop_io_set(c->loop, &c->io, ev) < 0)
    gev__conn_close_now(c);
}

/* One write attempt. 0, or -errno for a broken connection. */
static int write_out(gev_conn *c, ringbuffer *out)
{
  int err = 0;
  ssize_t n = ringbuffer_write_fd(out, c->io.fd, &err);

  if (n > 0) {
    touch(c);
    return 0;
  }
  if (n == 0 || err == EAGAIN || err == EINTR)
    return 0;
  return -err;
}

ssize_t gev__conn_write_direct(gev_conn *c, const void *p, size_t n)
{
  ssize_t w = gev__sys_send(c->io.fd, p, n, MSG_NOSIGNAL);

  if (w > 0) {
    touch(c);
    return w;
  }
  if (w < 0 && errno != EAGAIN && errno != EINTR)
    return -errno;
  return 0;
}

/* ---- closing ---------------------------------------------------------- */

/* Closes at once, dropping what is queued. Runs on_close, then closes the
 * fd. Safe to call twice. The memory stays until the end of the pass. */
void gev__conn_close_now(gev_conn *c)
{
  gev_loop *l = c->loop;

  if (atomic_load(&c->state) == GEV__CONN_CLOSED)
    return;
  atomic_store(&c->state, GEV__CONN_CLOSED);
  atomic_store(&c->reserved, GEV__RESERVE_CLOSED);
  list_remove(&l->cs, c);
  if (c->linger_timer) { /* its callback must never see c closed */
    gev_loop_cancel(l, c->linger_timer);
    c->linger_timer = 0;
  }
  /* Counted out before on_close, so that whoever sees on_close (or counts
   * them) never sees this connection still counted. */
  atomic_fetch_sub(&l->nconns, 1);
  if (c->server && !(c->flags & GEV__CONN_OUTGOING))
    atomic_fetch_sub(&c->server->nconns, 1); /* frees a max_connections slot */
  if (c->flags & GEV__CONN_CONNECTED) {
    c->flags &= ~GEV__CONN_CONNECTED;
    if (c->h->on_close)
      c->h->on_close(c);
  }
  /* The fd leaves epoll with close(): no epoll_ctl needed. Events already
   * fetched for it in this pass see the closed state and are ignored. */
  /* -1 first: another thread's gev_conn_fd must not see the number once
   * it is closed (and possibly reused by an unrelated open). */
  atomic_store_explicit(&c->fd, -1, memory_order_relaxed);
  close(c->io.fd);
  c->io.fd = -1;
  if (c->in)
    pool_put(l, c->in);
  if (c->out)
    pool_put(l, c->out);
  c->in = c->out = NULL;
  gev__conn_publish_out(c);
  c->next_zombie = l->cs.zombies;
  l->cs.zombies = c;
}

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

/* The output has drained and a close, a FIN or the peer's EOF was waiting
 * for that: carry it out. true when c is closed now. */
static bool act_on_drained(gev_conn *c, int st)
{
  if (st == GEV__CONN_SHUTWR && !(c->flags & GEV__CONN_PEER_EOF)) {
    if (!(c->flags & GEV__CONN_FIN_SENT) && sends_drained(c)) {
      shutdown(c->io.fd, SHUT_WR);
      c->flags |= GEV__CONN_FIN_SENT;
    }
    return false;
  }
  if (st != GEV__CONN_CLOSING && gev__buf_len(c->in) > 0) {
    /* The handler paused reading with input held after the peer's EOF:
     * gev_conn_resume_read shows it again, so wait for that. Redelivering
     * now would find it paused and come straight back here every pass (a
     * busy loop), and closing would drop the input it paused to keep. */
    if (c->flags & GEV__CONN_USER_PAUSED)
      return false;
    /* Input held back only for lack of output room (the output drained
     * within this very pass): closing now would drop it. Show it again;
     * the close follows once the handler consumed it, or stopped consuming
     * with an empty output (STALLED). */
    if (!(c->flags & GEV__CONN_STALLED)) {
      c->flags |= GEV__CONN_REDELIVER;
      gev__conn_schedule(c);
      return false;
    }
  }
  if (st == GEV__CONN_OPEN && c->h->on_peer_eof)
    return false; /* half-open: the handler ends it, with shutdown or close */
  if (!sends_drained(c))
    return false; /* a send accepted from another thread is on its way */
  gev__conn_close_now(c);
  return true;
}

/* After anything happened to c: release empty buffers, carry out a pending
 * close or FIN once output has drained, apply backpressure, and register
 * the interest that follows. */
static void settle(gev_conn *c)
{
  gev_loop *l = c->loop;
  int st = atomic_load(&c->state);
  size_t half = c->max_buffer / 2;

  if (st == GEV__CONN_CLOSED)
    return;
  if (c->out && ringbuffer_empty(c->out)) {
    pool_put(l, c->out);
    c->out = NULL;
  }
  if (c->in && ringbuffer_empty(c->in)) {
    pool_put(l, c->in);
    c->in = NULL;
  }
  gev__conn_publish_out(c);
  if (!c->out &&
      (st == GEV__CONN_CLOSING || st == GEV__CONN_SHUTWR ||
       (c->flags & GEV__CONN_PEER_EOF)) &&
      act_on_drained(c, st))
    return;
  if (gev__buf_len(c->out) >= half && half > 0) {
    c->flags |= GEV__CONN_PAUSED;
  } else if (c->flags & GEV__CONN_PAUSED) {
    c->flags &= ~GEV__CONN_PAUSED;
    if (gev__buf_len(c->in) > 0) {
      c->flags |= GEV__CONN_REDELIVER;
      gev__conn_schedule(c);
    }
  }
  update_interest(c);
  if (c->drain_fn && atomic_load(&c->state) != GEV__CONN_CLOSED &&
      gev__buf_len(c->out) + gev__conn_reserved(c) <= c->low_water)
    fire_drain(c);
}

/* ---- the read path ---------------------------------------------------- */

/* Moves the contents of a loop-shared buffer to c. Usually by swapping in
 * a spare: no copy. But the shared buffers are large (reads land in them,
 * and handlers may hand their storage over with ringbuffer_move), so when
 * little of one is used, c gets a copy in a right-sized spare instead and
 * the loop keeps the large one: a connection holds about what it has
 * pending, not 64 KiB for a few bytes. false on ENOMEM (the caller closes
 * c). */
static bool adopt(gev_conn *c, ringbuffer **shared, ringbuffer **own)
{
  ringbuffer *spare = gev__conn_pool_get(c);
  size_t len = ringbuffer_len(*shared), fair = ADOPT_SLACK * (len + ADOPT_MIN);

  if (!spare)
    return false;
  if (ringbuffer_cap(*shared) > fair) {
    struct iovec seg[2];

    /* A spare as oversized as the shared buffer is no better: its storage
     * goes, and the copy below allocates what the bytes need. */
    ringbuffer_shrink(spare, fair);
    ringbuffer_peek(*shared, len, seg);
    if (ringbuffer_write(spare, seg[0].iov_base, seg[0].iov_len) == 0 &&
        ringbuffer_write(spare, seg[1].iov_base, seg[1].iov_len) == 0) {
      ringbuffer_retrieve_all(*shared);
      *own = spare;
      return true;
    }
    ringbuffer_retrieve_all(spare); /* fall back to the swap */
  }
  *own = *shared;
  *shared = spare;
  return true;
}

/* Shows `in` to the handler and sends what it replied. */
static void deliver(gev_conn *c, ringbuffer *in)
{
  gev_loop *l = c->loop;
  gev__conn_state *cs = &l->cs;
  int st = atomic_load(&c->state);

  /* Closing, or lingering (gev_conn_close_lingering): the input is read
   * only to be dropped, unseen by the handler. */
  if (st == GEV__CONN_CLOSING || (c->flags & GEV__CONN_DISCARD)) {
    ringbuffer_retrieve_all(in);
    settle(c);
    return;
  }

  /* After gev_conn_shutdown_write nothing more is sent: sends fail with
   * -ENOTCONN, and replies a later on_message appends to `out` go to a
   * scratch buffer and are dropped. Written after the FIN they would fail
   * with EPIPE and close the connection, whose read side must stay open
   * until the peer closes. (Replies of the call that shuts down are still
   * sent: the state is read before the call.) */
  bool shut = st == GEV__CONN_SHUTWR;
  bool shared_out = shut || c->out == NULL;
  ringbuffer *out = shared_out ? cs->shared_out : c->out;
  size_t max = c->max_buffer, reserved = gev__conn_reserved(c);
  int err = 0;

  if (ringbuffer_len(out) + reserved < max) {
    size_t before = ringbuffer_len(in);
    bool empty_out = ringbuffer_empty(out);
    /* Sends already accepted from other threads keep their room. */
    ringbuffer_set_limit(out, max - reserved);
    c->cur_in = in;
    c->cur_out = out;
    if (c->h->on_message)
      c->h->on_message(c, in, out);
    else
      ringbuffer_retrieve_all(in);
    c->cur_in = c->cur_out = NULL;
    ringbuffer_set_limit(out, max);
    if (shut)
      ringbuffer_retrieve_all(out);
    if (empty_out && ringbuffer_len(in) >= before)
      c->flags |= GEV__CONN_STALLED;
    else
      c->flags &= ~GEV__CONN_STALLED;
    /* The handler held input back while its output filled up (to at least
     * half the cap, counting sends in flight): it may be waiting for room.
     * Mark the connection paused now, from the level the handler left,
     * not the one after write_out below: when the kernel takes the whole
     * output at once, settle() would otherwise never see the output above
     * half, never show the held input again, and a peer that waits for
     * its replies would wait forever. */
    if (!shut && !ringbuffer_empty(in) && max / 2 > 0 &&
        ringbuffer_len(out) + reserved >= max / 2)
      c->flags |= GEV__CONN_PAUSED;
  } else {
    c->flags |= GEV__CONN_PAUSED; /* no room: wait until output drains */
  }
  if (in == cs->shared_in && !ringbuffer_empty(in) &&
      !adopt(c, &cs->shared_in, &c->in))
    err = -ENOMEM;
  if (!err && !ringbuffer_empty(out) && !(c->io.interest & GEV__EV_WRITE))
    err = write_out(c, out);
  if (!err && shared_out && !ringbuffer_empty(out) &&
      !adopt(c, &cs->shared_out, &c->out))
    err = -ENOMEM;
  if (err) {
    if (shared_out)
      ringbuffer_retrieve_all(cs->shared_out);
    ringbuffer_retrieve_all(cs->shared_in);
    gev__conn_close_now(c);
    return;
  }
  settle(c);
}

/* The peer sent FIN. The state stays as it is, so replies and sends still
 * work until the output has drained; settle() then closes, unless the
 * handler keeps the connection half-open (on_peer_eof). */
static void on_peer_eof(gev_conn *c)
{
  int st;

  c->flags |= GEV__CONN_PEER_EOF;
  /* What the handler held back is shown once more, now that no more
   * bytes will come. */
  if (gev__buf_len(c->in) > 0 && atomic_load(&c->state) != GEV__CONN_CLOSING)
    deliver(c, c->in);
  else
    settle(c);
  /* Reading has stopped for good (PEER_EOF keeps it off), so this runs
   * once. A close or shutdown it asks for is scheduled like any other.
   * The state first: if the connection closed above, its on_close may
   * have freed the handler (a gev_client's lives in the client). */
  st = atomic_load(&c->state);
  if ((st == GEV__CONN_OPEN || st == GEV__CONN_SHUTWR) &&
      !(c->flags & GEV__CONN_DISCARD) && c->h->on_peer_eof)
    c->h->on_peer_eof(c);
}

static void handle_read(gev_conn *c, unsigned events)
{
  gev__conn_state *cs = &c->loop->cs;
  ringbuffer *in = c->in ? c->in : cs->shared_in;
  int err = 0;
  ssize_t n;

  if (in == cs->shared_in) /* outgoing connections may have their own cap */
    ringbuffer_set_limit(in, c->max_buffer);
  n = ringbuffer_read_fd(in, c->io.fd, &err);

  if (n > 0) {
    touch(c);
    deliver(c, in);
  } else if (n == 0) {
    on_peer_eof(c);
  } else if (err == EAGAIN || err == EINTR) {
    if (events & GEV__EV_ERROR)
      gev__conn_close_now(c); /* an error readiness that read cannot explain */
  } else if (err == ENOBUFS) {
    /* The input is at max_buffer. A read can come before the handler was
     * shown the input again after output drained, so give it that chance
     * first; if it still consumes nothing while output has room, it never
     * will (a frame larger than the cap): by policy, close. */
    size_t before = ringbuffer_len(in);
    deliver(c, in);
    /* Not when the handler paused reading in that call: it waits for
     * something else (room downstream) and sees the input again on
     * resume, it is not stuck on a frame larger than the cap. */
    if (atomic_load(&c->state) != GEV__CONN_CLOSED &&
        !(c->flags & (GEV__CONN_PAUSED | GEV__CONN_USER_PAUSED)) &&
        gev__buf_len(c->in) >= before)
      gev__conn_close_now(c);
  } else {
    gev__conn_close_now(c); /* reset or another socket error */
  }
}

static void handle_write(gev_conn *c)
{
  int err;

  if (!c->out) {
    update_interest(c);
    return;
  }
  err = write_out(c, c->out);
  if (err < 0) {
    gev__conn_close_now(c);
    return;
  }
  settle(c);
}

static void io_cb(gev__io *io, unsigned events)
{
  gev_conn *c = (gev_conn *)io;

  if (atomic_load(&c->state) == GEV__CONN_CLOSED)
    return; /* closed earlier in this pass */
  if (events & GEV__EV_WRITE) {
    handle_write(c);
    if (atomic_load(&c->state) == GEV__CONN_CLOSED)
      return;
  }
  /* USER_PAUSED is checked besides the interest: gev_conn_pause_read
   * changes the interest only after the pass, so a pause from another
   * connection's callback (a proxy pausing its feeder) would otherwise let
   * a read event already fetched in this pass through to on_message. */
  if ((io->interest & GEV__EV_READ) && !(c->flags & GEV__CONN_USER_PAUSED)) {
    if (events & (GEV__EV_READ | GEV__EV_ERROR))
      handle_read(c, events);
  } else if (events & GEV__EV_ERROR) {
    /* Not reading (paused or after EOF) and the socket reports an error or
     * a hang-up in both directions: nothing more can be delivered. */
    gev__conn_close_now(c);
  }
}

/* ---- the loop's per-pass work ----------------------------------------- */

static void process_scheduled(gev_conn *c)
{
  int err;

  c->flags &= ~GEV__CONN_SCHEDULED;
  if (atomic_load(&c->state) == GEV__CONN_CLOSED)
    return;
  if ((c->flags & GEV__CONN_REDELIVER) && !(c->flags & GEV__CONN_USER_PAUSED)) {
    c->flags &= ~GEV__CONN_REDELIVER;
    if (gev__buf_len(c->in) > 0 &&
        atomic_load(&c->state) != GEV__CONN_CLOSING) {
      deliver(c, c->in);
      return;
    }
  }
  if (c->out && !(c->io.interest & GEV__EV_WRITE)) {
    err = write_out(c, c->out);
    if (err < 0) {
      gev__conn_close_now(c);
      return;
    }
  }
  settle(c);
}

/* ---- the shared buffers' size ----------------------------------------- */

/* A large message leaves its storage in the loop's shared buffers: a read
 * that grew shared_in, or a handler that moved a large held input into
 * shared_out (ringbuffer_move hands storage over). Unchecked, every loop
 * would keep the largest message it ever saw, up to max_buffer each. */
static void trim_one(ringbuffer **rb)
{
  ringbuffer *fresh;

  if (ringbuffer_cap(*rb) <= SHARED_CAP || !ringbuffer_empty(*rb))
    return;
  fresh = ringbuffer_new(SHARED_CAP);
  if (!fresh)
    return; /* the large one still works; try again at the next growth */
  ringbuffer_set_limit(fresh, ringbuffer_limit(*rb));
  ringbuffer_free(*rb);
  *rb = fresh;
}

static void trim_shared(void *arg)
{
  gev_loop *l = arg;

  l->cs.trim_armed = false;
  trim_one(&l->cs.shared_in);
  trim_one(&l->cs.shared_out);
}

/* Once per pass: two size reads (8 instructions), and a timer only after
 * a growth. */
static void watch_shared(gev_loop *l)
{
  gev__conn_state *cs = &l->cs;

  if (cs->trim_armed || (ringbuffer_cap(cs->shared_in) <= SHARED_CAP &&
                         ringbuffer_cap(cs->shared_out) <= SHARED_CAP))
    return;
  /* Fails only when the loop is stopping or out of memory: then the next
   * pass tries again, or the loop's end frees the buffers anyway. */
  if (gev_loop_run_after(l, TRIM_DELAY_MS, trim_shared, l))
    cs->trim_armed = true;
}

void gev__conn_after_pass(gev_loop *l)
{
  gev__conn_state *cs = &l->cs;
  gev_conn *c, *next;

  /* A snapshot: work scheduled while processing waits for the next pass
   * (which then polls without sleeping). */
  c = cs->flush;
  cs->flush = NULL;
  for (; c; c = next) {
    next = c->next_flush;
    process_scheduled(c);
  }
  c = cs->zombies;
  cs->zombies = NULL;
  for (; c; c = next) {
    next = c->next_zombie;
    if (c->flags & GEV__CONN_SCHEDULED) {
      /* Scheduled and then closed while the snapshot above was processed
       * (a redelivery whose on_message paused or closed): c is on the next
       * pass's flush list, which must still find it. Dropping the loop's
       * reference now freed it under that list (a use after free in the
       * next pass). Keep it a zombie until then. */
      c->next_zombie = cs->zombies;
      cs->zombies = c;
      continue;
    }
    gev_conn_unref(c);
  }
  watch_shared(l);
}

void gev__conn_close_all(gev_loop *l)
{
  gev_conn *c;

  gev__connect_cancel_all(l);
  /* Stopping: one last write attempt each, then close. */
  while ((c = l->cs.head)) {
    if (c->out)
      write_out(c, c->out);
    gev__conn_close_now(c);
  }
  gev__client_cancel_all(l); /* after the closes: they may schedule retries */
  gev__conn_after_pass(l);
}

void gev__conn_idle_sweep(void *arg)
{
  gev_loop *l = arg;
  uint64_t idle = l->cs.idle_ms;
  gev_conn *c;

  while ((c = l->cs.head) && l->now_ms - c->last_active >= idle)
    gev__conn_close_now(c);
}

int gev__conn_state_init(gev_loop *l)
{
  gev__conn_state *cs = &l->cs;

  /* Both the same size: ringbuffer_move (an echo, a relay) swaps their
   * storage back and forth, and neither should end up the small one. */
  cs->shared_in = ringbuffer_new(SHARED_CAP);
  cs->shared_out = ringbuffer_new(SHARED_CAP);
  if (!cs->shared_in || !cs->shared_out) {
    ringbuffer_free(cs->shared_in);
    ringbuffer_free(cs->shared_out);
    return -ENOMEM;
  }
  /* The shared buffers carry the connections' cap like the pool's spares:
   * a read into shared_in must not take more than max_buffer, and adopt()
   * hands these very buffers to connections. Without the limit the first
   * connection to keep input got an uncapped `in` (unbounded memory for a
   * frame that never completes, and on_message saw more than the cap). */
  if (l->server) {
    ringbuffer_set_limit(cs->shared_in, l->server->max_buffer);
    ringbuffer_set_limit(cs->shared_out, l->server->max_buffer);
    cs->idle_ms = (uint64_t)l->server->opt.idle_timeout_ms;
  }
  return 0;
}

void gev__conn_state_free(gev_loop *l)
{
  gev__conn_state *cs = &l->cs;

  ringbuffer_free(cs->shared_in);
  ringbuffer_free(cs->shared_out);
  for (int i = 0; i < cs->npool; i++)
    ringbuffer_free(cs->pool[i]);
  cs->npool = 0;
}

/* ---- creation --------------------------------------------------------- */

/* One allocation: the struct, the peer address and, for an outgoing
 * connection, its own copy of the handler table. */
static gev_conn *alloc_conn(gev_loop *l, int fd, const struct sockaddr *sa,
                            socklen_t len, const gev_handler *own_h)
{
  char peer[GEV__ADDR_STRLEN];
  size_t plen, hoff;
  gev_conn *c;

  gev__addr_format(sa, len, peer, sizeof(peer));
  plen = strlen(peer) + 1;
  hoff = (sizeof(*c) + plen + _Alignof(gev_handler) - 1) &
         ~(_Alignof(gev_handler) - 1);
  c = calloc(1, own_h ? hoff + sizeof(gev_handler) : sizeof(*c) + plen);
  if (!c)
    return NULL;
  memcpy(c->peer, peer, plen);
  if (own_h) {
    gev_handler *h = (gev_handler *)((char *)c + hoff);
    *h = *own_h;
    c->h = h;
  }
  c->io = (gev__io){.fd = fd, .cb = io_cb};
  c->loop = l;
  c->server = l->server;
  atomic_init(&c->refs, 1); /* the loop's */
  atomic_init(&c->state, GEV__CONN_OPEN);
  atomic_init(&c->fd, fd);
  atomic_init(&c->out_seen, 0);
  atomic_init(&c->reserved, 0);
  return c;
}

gev_conn *gev__conn_new(gev_server *s, gev_loop *l, int fd,
                        const struct sockaddr *sa, socklen_t len)
{
  gev_conn *c = alloc_conn(l, fd, sa, len, NULL);

  if (c) {
    c->h = &s->h;
    c->max_buffer = s->max_buffer;
  }
  return c;
}

gev_conn *gev__conn_new_outgoing(gev_loop *l, const gev_handler *h, bool copy_h,
                                 size_t max_buffer, int fd,
                                 const struct sockaddr *sa, socklen_t len)
{
  gev_conn *c = alloc_conn(l, fd, sa, len, copy_h ? h : NULL);

  if (c) {
    if (!copy_h)
      c->h = h;
    c->max_buffer = max_buffer;
    c->flags = GEV__CONN_OUTGOING;
  }
  return c;
}

void gev__conn_free_unattached(gev_conn *c)
{
  free(c);
}

void gev__conn_discard(gev_conn *c)
{
  close(c->io.fd);
  atomic_fetch_sub(&c->loop->nconns, 1);
  atomic_fetch_sub(&c->server->nconns, 1);
  free(c);
}

/* The connection is registered with the poller: make it live and tell the
 * handler. Shared by accepted and outgoing connections (which report their
 * connect result first, once the connection is a full member of the loop). */
void gev__conn_established(gev_conn *c, gev_connect_fn result, void *arg)
{
  gev_loop *l = c->loop;

  c->io.cb = io_cb;
  c->last_active = l->now_ms;
  list_append(&l->cs, c);
  c->flags |= GEV__CONN_CONNECTED;
  if (result)
    result(c, 0, arg);
  if (c->h->on_connect)
    c->h->on_connect(c);
  if (atomic_load(&c->state) != GEV__CONN_OPEN || c->out)
    gev__conn_schedule(c);
}

void gev__conn_attach(gev_conn *c)
{
  gev_loop *l = c->loop;

  gev__assert_in_loop(l);
  if (l->finishing || gev__loop_io_add(l, &c->io, GEV__EV_READ) < 0) {
    gev__conn_discard(c);
    return;
  }
  gev__conn_established(c, NULL, NULL);
}
