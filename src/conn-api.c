/* conn-api.c - the public connection functions: sends, close and
 * half-close, the handler switch, accessors and flow control.
 *
 * Each any-thread function is a thin shell: it acts directly in the owning
 * loop's thread and otherwise posts its loop half (named *_in_loop or
 * *_op) with gev__conn_post / gev__conn_call, which hold a reference to
 * the connection on the way. conn.c has the state machine they drive. */
#include "conn-internal.h"
#include "transport-plain.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- sending ---------------------------------------------------------- */

/* Written at once when nothing is queued and the kernel is not known to be
 * full: a send from another connection's callback or a timer (a proxy, a
 * push) then leaves within this pass, straight from the caller's bytes,
 * and only what the kernel refuses is copied. Errors are left for the end
 * of the pass, which writes again and closes; closing here would run
 * on_close inside the caller's callback. */
static int send_in_loop(gev_conn *c, const void *p, size_t n)
{
  size_t used;
  int r;

  if (!gev__conn_state_sends(gev__conn_state(c)))
    return -ENOTCONN;
  if (c->cur_out) /* inside this connection's on_message: after its replies */
    return ringbuffer_write(c->cur_out, p, n);
  used = gev__buf_len(c->out) + gev__conn_reserved(c);
  if (n > c->max_buffer || used > c->max_buffer - n)
    return -ENOBUFS;
  if (used == 0 && n > 0 && !(c->io.interest & GEV__EV_WRITE)) {
    ssize_t w = gev__conn_write_direct(c, p, n);

    if (w == (ssize_t)n) {
      /* Settle after the pass only if something waits on the output. */
      if (c->drain_fn || (c->flags & GEV__CF_PAUSED))
        gev__conn_schedule(c);
      return 0;
    }
    if (w > 0) {
      p = (const char *)p + w;
      n -= (size_t)w;
    }
  }
  if (!c->out && !(c->out = gev__bufs_get(&c->loop->bufs, c->max_buffer)))
    return -ENOMEM;
  r = ringbuffer_write(c->out, p, n);
  if (r == 0) {
    gev__conn_publish_out(c);
    gev__conn_schedule(c); /* the kernel is full, or there was a queue */
  }
  return r;
}

typedef struct send_op {
  gev__conn_op op; /* first */
  size_t n;
  char data[];
} send_op;

static void unreserve(gev_conn *c, size_t n)
{
  size_t r = atomic_load(&c->reserved);

  while (r != GEV__RESERVE_CLOSED &&
         !atomic_compare_exchange_weak(&c->reserved, &r, r - n))
    ;
}

/* In the loop: the bytes join the output. They were accepted against the
 * cap when sent, so they must fit now. */
static int send_op_run(gev_conn *c, gev__conn_op *op)
{
  send_op *t = (send_op *)op;
  int r = 0;

  if (gev__conn_state_drops(gev__conn_state(c))) {
    unreserve(c, t->n); /* aborted after it was accepted: dropped */
    return 0;
  }
  if (!c->out && !(c->out = gev__bufs_get(&c->loop->bufs, c->max_buffer)))
    r = -ENOMEM;
  if (r == 0) {
    ringbuffer_set_limit(c->out, 0);
    r = ringbuffer_write(c->out, t->data, t->n);
    ringbuffer_set_limit(c->out, c->max_buffer);
  }
  unreserve(c, t->n);
  c->loop->st.v[GEV__S_SENDS_IN]++;
  if (r < 0) {
    gev__conn_event(c, GEV__CE_ERROR); /* better closed than silently short */
    return r;
  }
  gev__conn_publish_out(c);
  gev__conn_schedule(c);
  return 0;
}

static int reserve(gev_conn *c, size_t n)
{
  size_t max = __atomic_load_n(&c->max_buffer, __ATOMIC_RELAXED);
  size_t r = atomic_load(&c->reserved);

  do {
    size_t seen = atomic_load_explicit(&c->out_seen, memory_order_relaxed);
    if (r == GEV__RESERVE_CLOSED)
      return -ENOTCONN;
    if (n > max || seen > max - n || r > max - n - seen)
      return -ENOBUFS;
  } while (!atomic_compare_exchange_weak(&c->reserved, &r, r + n));
  return 0;
}

int gev_conn_send(gev_conn *c, const void *p, size_t n)
{
  send_op *t;
  int r;

  if (!c || (!p && n))
    return -EINVAL;
  if (gev_loop_in_thread(c->loop))
    return send_in_loop(c, p, n);
  if (!gev__conn_state_sends(gev__conn_state(c)))
    return -ENOTCONN;
  if (n == 0)
    return 0;
  if ((r = reserve(c, n)) < 0)
    return r;
  if (!(t = malloc(sizeof(*t) + n))) {
    unreserve(c, n);
    return -ENOMEM;
  }
  t->op.fn = send_op_run;
  t->n = n;
  memcpy(t->data, p, n);
  if ((r = gev__conn_post(c, &t->op)) < 0)
    unreserve(c, n); /* refused: never delivered */
  return r;
}

/* ---- ending ----------------------------------------------------------- */

int gev_conn_close(gev_conn *c)
{
  return c ? gev__conn_event(c, GEV__CE_CLOSE) : -EINVAL;
}

int gev_conn_shutdown_write(gev_conn *c)
{
  return c ? gev__conn_event(c, GEV__CE_SHUTDOWN_WRITE) : -EINVAL;
}

static int linger_op(gev_conn *c, gev__conn_op *op)
{
  return gev__conn_linger(c, op->arg);
}

int gev_conn_close_lingering(gev_conn *c, uint64_t timeout_ms)
{
  int st;

  if (!c)
    return -EINVAL;
  st = gev__conn_state(c);
  if (!gev_loop_in_thread(c->loop) && !gev__conn_state_connected(st))
    return -ENOTCONN; /* closing already: nothing to post */
  return gev__conn_call(c, linger_op, timeout_ms);
}

static int abort_op(gev_conn *c, gev__conn_op *op)
{
  (void)op;
  return gev__conn_event(c, GEV__CE_ABORT);
}

int gev_conn_abort(gev_conn *c)
{
  int st;

  if (!c)
    return -EINVAL;
  st = gev__conn_state(c);
  if (st == GEV__CS_CLOSED || st == GEV__CS_ABORTING)
    return -ENOTCONN;
  return gev__conn_call(c, abort_op, 0);
}

/* ---- waking ----------------------------------------------------------- */

static int wake_op(gev_conn *c, gev__conn_op *op)
{
  (void)op;
  /* Cleared before on_message runs: a wake sent while it runs posts
   * again, so the state that wake announces is seen by a later run. */
  atomic_store(&c->wake_posted, false);
  gev__conn_wake(c);
  return 0;
}

int gev_conn_wake(gev_conn *c)
{
  int r;

  if (!c)
    return -EINVAL;
  if (!gev__conn_state_connected(gev__conn_state(c)))
    return -ENOTCONN;
  if (gev_loop_in_thread(c->loop)) {
    gev__conn_wake(c);
    return 0;
  }
  if (atomic_exchange(&c->wake_posted, true))
    return 0; /* one is queued and has not started: it covers this one */
  if ((r = gev__conn_call(c, wake_op, 0)) < 0)
    atomic_store(&c->wake_posted, false);
  return r;
}

/* ---- the handler ------------------------------------------------------ */

int gev_conn_set_handler(gev_conn *c, const gev_handler *h)
{
  if (!c || !h || !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return -ENOTCONN;
  if (!c->h_own && !(c->h_own = malloc(sizeof(*c->h_own))))
    return -ENOMEM;
  /* The old table may be the one running now: it is replaced, not freed,
   * and read again only for the next callback. */
  *c->h_own = *h;
  c->h = c->h_own;
  c->flags |= GEV__CF_REDELIVER; /* held input goes to h after the call */
  gev__conn_schedule(c);
  return 0;
}

/* ---- detaching -------------------------------------------------------- */

int gev_conn_detach(gev_conn *c, gev_detach_fn fn, void *arg)
{
  if (!c || !fn || !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (c->tp != &gev__plain)
    return -EOPNOTSUPP;
  if (gev__conn_state(c) == GEV__CS_DETACHING)
    return -EALREADY;
  if (gev__conn_event(c, GEV__CE_DETACH) < 0)
    return -ENOTCONN;
  /* The hand-over comes after the pass: set before it can run. */
  c->detach_fn = fn;
  c->detach_arg = arg;
  return 0;
}

/* ---- limits ----------------------------------------------------------- */

/* Other threads read max_buffer in their sends' cap check (reserve), so
 * it is stored atomically; the loop's own reads need not be. */
int gev_conn_set_max_buffer(gev_conn *c, size_t max_buffer)
{
  size_t max = max_buffer ? max_buffer : GEV__DEFAULT_MAX_BUFFER;

  if (!c || !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return -ENOTCONN;
  __atomic_store_n(&c->max_buffer, max, __ATOMIC_RELAXED);
  if (c->in)
    ringbuffer_set_limit(c->in, max);
  if (c->out && !c->cur_out)
    ringbuffer_set_limit(c->out, max);
  gev__conn_schedule(c); /* backpressure is judged again after the pass */
  return 0;
}

/* ---- accessors -------------------------------------------------------- */

bool gev_conn_connected(const gev_conn *c)
{
  return gev__conn_state_connected(gev__conn_state(c));
}

void gev_conn_set_context(gev_conn *c, void *ctx)
{
  c->ctx = ctx;
}

void gev_conn_set_context_free(gev_conn *c, void (*free_fn)(void *ctx))
{
  c->ctx_free = free_fn;
}

void *gev_conn_context(const gev_conn *c)
{
  return c->ctx;
}

const char *gev_conn_peer_addr(const gev_conn *c)
{
  return c->peer;
}

/* Formatted on first use (most servers never ask), once: a racing second
 * caller frees its copy and returns the first. */
const char *gev_conn_local_addr(const gev_conn *c)
{
  gev_conn *m = (gev_conn *)c;
  char *s = atomic_load_explicit(&m->local, memory_order_acquire), *mine;
  char *none = NULL;
  struct sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  int fd = gev_conn_fd(c);

  if (s)
    return s;
  if (fd < 0 || getsockname(fd, (struct sockaddr *)&ss, &len) < 0 ||
      !(mine = malloc(GEV__ADDR_STRLEN)))
    return "";
  gev__addr_format((struct sockaddr *)&ss, len, mine, GEV__ADDR_STRLEN);
  if (atomic_compare_exchange_strong(&m->local, &none, mine))
    return mine;
  free(mine);
  return none;
}

const gev_transport *gev_conn_transport(const gev_conn *c)
{
  return c ? c->tp : NULL;
}

void *gev_conn_transport_state(const gev_conn *c)
{
  return c ? c->tp_state : NULL;
}

int gev_conn_listener(const gev_conn *c)
{
  return c ? c->listener : -1;
}

int gev_conn_fd(const gev_conn *c)
{
  return atomic_load_explicit(&((gev_conn *)c)->fd, memory_order_relaxed);
}

gev_loop *gev_conn_loop(gev_conn *c)
{
  return c->loop;
}

gev_server *gev_conn_server(gev_conn *c)
{
  return c->server;
}

size_t gev_conn_read_buffer_len(const gev_conn *c)
{
  return gev__buf_len(c->cur_in ? c->cur_in : c->in);
}

size_t gev_conn_write_buffer_len(const gev_conn *c)
{
  return gev__buf_len(c->cur_out ? c->cur_out : c->out);
}

/* ---- flow control ----------------------------------------------------- */

static int pause_op(gev_conn *c, gev__conn_op *op)
{
  gev__conn_set_paused(c, op->arg != 0);
  return 0;
}

int gev_conn_pause_read(gev_conn *c)
{
  if (!c)
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return -ENOTCONN;
  return gev__conn_call(c, pause_op, 1);
}

int gev_conn_resume_read(gev_conn *c)
{
  if (!c)
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return -ENOTCONN;
  return gev__conn_call(c, pause_op, 0);
}

int gev_conn_notify_drain(gev_conn *c, size_t low_water,
                          void (*fn)(gev_conn *c, void *arg), void *arg)
{
  if (!c || !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (gev__conn_state(c) == GEV__CS_CLOSED)
    return -ENOTCONN;
  c->drain_fn = fn;
  c->drain_arg = arg;
  c->low_water = low_water;
  if (fn)
    gev__conn_schedule(c); /* already below: fires after the pass */
  return 0;
}
