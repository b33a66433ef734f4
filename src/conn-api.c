/* conn-api.c - the public connection functions: sends, close and half-close,
 * references, accessors and flow control.
 *
 * Each any-thread function acts directly when called from the owning loop's
 * thread and otherwise posts a task that holds a reference to the
 * connection; the parts that run in the loop are named *_in_loop or
 * *_task_run. conn.c has the I/O and the lifecycle they drive. */
#include "conn-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- sending ---------------------------------------------------------- */

static int send_in_loop(gev_conn *c, const void *p, size_t n)
{
  size_t used;
  int r;

  if (atomic_load(&c->state) != GEV__CONN_OPEN)
    return -ENOTCONN;
  if (c->cur_out) /* inside this connection's on_message: after its replies */
    return ringbuffer_write(c->cur_out, p, n);
  used = gev__buf_len(c->out) + gev__conn_reserved(c);
  if (n > c->max_buffer || used > c->max_buffer - n)
    return -ENOBUFS;
  /* Written at once when nothing is queued and the kernel is not known to
   * be full: a send from another connection's callback or a timer (a
   * proxy, a push) then leaves within this pass, straight from the
   * caller's bytes, and only what the kernel refuses is copied. Errors are
   * left for the end of the pass, which writes again and closes; closing
   * here would run on_close inside the caller's callback. */
  if (used == 0 && n > 0 && !(c->io.interest & GEV__EV_WRITE)) {
    ssize_t w = gev__conn_write_direct(c, p, n);

    if (w == (ssize_t)n) {
      /* Settle after the pass only if something waits on the output. */
      if (c->drain_fn || (c->flags & GEV__CONN_PAUSED))
        gev__conn_schedule(c);
      return 0;
    }
    if (w > 0) {
      p = (const char *)p + w;
      n -= (size_t)w;
    }
  }
  if (!c->out && !(c->out = gev__conn_pool_get(c)))
    return -ENOMEM;
  r = ringbuffer_write(c->out, p, n);
  if (r == 0) {
    gev__conn_publish_out(c);
    gev__conn_schedule(c); /* the kernel is full, or there was a queue */
  }
  return r;
}

typedef struct send_task {
  gev_conn *c;
  size_t n;
  char data[];
} send_task;

static void send_task_run(void *arg)
{
  send_task *t = arg;
  gev_conn *c = t->c;
  int r = 0;

  if (atomic_load(&c->state) != GEV__CONN_CLOSED) {
    if (!c->out && !(c->out = gev__conn_pool_get(c)))
      r = -ENOMEM;
    if (r == 0) {
      /* Accepted against the cap when it was sent; it must fit now. */
      ringbuffer_set_limit(c->out, 0);
      r = ringbuffer_write(c->out, t->data, t->n);
      ringbuffer_set_limit(c->out, c->max_buffer);
    }
    if (r < 0) {
      gev__conn_close_now(
          c); /* out of memory: better closed than silently short */
    } else {
      gev__conn_publish_out(c);
      gev__conn_schedule(c);
    }
    size_t rv = atomic_load(&c->reserved);
    while (rv != GEV__RESERVE_CLOSED &&
           !atomic_compare_exchange_weak(&c->reserved, &rv, rv - t->n))
      ;
  }
  free(t);
  gev_conn_unref(c);
}

static void send_task_drop(void *arg)
{
  send_task *t = arg;

  gev_conn_unref(t->c);
  free(t);
}

static int reserve(gev_conn *c, size_t n)
{
  size_t max = c->max_buffer, r = atomic_load(&c->reserved);

  do {
    size_t seen = atomic_load_explicit(&c->out_seen, memory_order_relaxed);
    if (r == GEV__RESERVE_CLOSED)
      return -ENOTCONN;
    if (n > max || seen > max - n || r > max - n - seen)
      return -ENOBUFS;
  } while (!atomic_compare_exchange_weak(&c->reserved, &r, r + n));
  return 0;
}

static void unreserve(gev_conn *c, size_t n)
{
  size_t r = atomic_load(&c->reserved);

  while (r != GEV__RESERVE_CLOSED &&
         !atomic_compare_exchange_weak(&c->reserved, &r, r - n))
    ;
}

int gev_conn_send(gev_conn *c, const void *p, size_t n)
{
  send_task *t;
  int r;

  if (!c || (!p && n))
    return -EINVAL;
  if (gev_loop_in_thread(c->loop))
    return send_in_loop(c, p, n);
  if (atomic_load(&c->state) != GEV__CONN_OPEN)
    return -ENOTCONN;
  if (n == 0)
    return 0;
  if ((r = reserve(c, n)) < 0)
    return r;
  t = malloc(sizeof(*t) + n);
  if (!t) {
    unreserve(c, n);
    return -ENOMEM;
  }
  t->c = c;
  t->n = n;
  memcpy(t->data, p, n);
  gev_conn_ref(c);
  if (gev__loop_post_owned(c->loop, send_task_run, t, send_task_drop) < 0) {
    unreserve(c, n);
    free(t);
    gev_conn_unref(c);
    return -ENOTCONN;
  }
  return 0;
}

static void schedule_task_run(void *arg)
{
  gev_conn *c = arg;

  if (atomic_load(&c->state) != GEV__CONN_CLOSED)
    gev__conn_schedule(c);
  gev_conn_unref(c);
}

/* Moves c from OPEN (or SHUTWR) to `to` and lets the loop act on it. */
static int transition(gev_conn *c, int to)
{
  int st = atomic_load(&c->state);

  do {
    if (st != GEV__CONN_OPEN &&
        !(st == GEV__CONN_SHUTWR && to == GEV__CONN_CLOSING))
      return -ENOTCONN;
  } while (!atomic_compare_exchange_weak(&c->state, &st, to));
  if (gev_loop_in_thread(c->loop)) {
    gev__conn_schedule(c);
    return 0;
  }
  gev_conn_ref(c);
  if (gev_loop_post(c->loop, schedule_task_run, c) < 0)
    gev_conn_unref(c); /* the loop is stopping and closes c itself */
  return 0;
}

int gev_conn_close(gev_conn *c)
{
  if (!c)
    return -EINVAL;
  return transition(c, GEV__CONN_CLOSING);
}

int gev_conn_shutdown_write(gev_conn *c)
{
  if (!c)
    return -EINVAL;
  return transition(c, GEV__CONN_SHUTWR);
}

/* ---- lingering close -------------------------------------------------- */

#define LINGER_DEFAULT_MS 5000

typedef struct linger_task {
  gev_conn *c;
  uint64_t ms;
} linger_task;

static void linger_expired(void *arg)
{
  gev_conn *c = arg; /* alive: closing cancels this timer */

  c->linger_timer = 0;
  gev__conn_close_now(c);
}

/* In c's loop: FIN after the output (the SHUTWR machinery), input dropped
 * from now on, and a deadline. The peer's EOF then closes c as it closes
 * any shut-down connection; the deadline closes it otherwise. */
static int linger_in_loop(gev_conn *c, uint64_t ms)
{
  if (c->flags & GEV__CONN_DISCARD)
    return -ENOTCONN; /* lingering already */
  /* From OPEN; SHUTWR (shut down before) lingers as it is. Fails when
   * another thread closed c meanwhile, which the state then shows. */
  (void)transition(c, GEV__CONN_SHUTWR);
  if (atomic_load(&c->state) != GEV__CONN_SHUTWR)
    return -ENOTCONN;
  /* Held input (also what the on_message calling this leaves) is dropped
   * after the pass, and reading resumes if the user had paused it: the
   * peer's EOF must be seen. */
  c->flags |= GEV__CONN_DISCARD | GEV__CONN_REDELIVER;
  c->flags &= ~GEV__CONN_USER_PAUSED;
  c->linger_timer = gev_loop_run_after(c->loop, ms ? ms : LINGER_DEFAULT_MS,
                                       linger_expired, c);
  if (!c->linger_timer)
    return transition(c, GEV__CONN_CLOSING); /* no timer: a plain close */
  gev__conn_schedule(c);
  return 0;
}

static void linger_task_run(void *arg)
{
  linger_task *t = arg;

  if (atomic_load(&t->c->state) != GEV__CONN_CLOSED)
    linger_in_loop(t->c, t->ms);
  gev_conn_unref(t->c);
  free(t);
}

static void linger_task_drop(void *arg)
{
  linger_task *t = arg;

  gev_conn_unref(t->c);
  free(t);
}

int gev_conn_close_lingering(gev_conn *c, uint64_t timeout_ms)
{
  linger_task *t;
  int st;

  if (!c)
    return -EINVAL;
  if (gev_loop_in_thread(c->loop))
    return linger_in_loop(c, timeout_ms);
  st = atomic_load(&c->state);
  if (st != GEV__CONN_OPEN && st != GEV__CONN_SHUTWR)
    return -ENOTCONN;
  if (!(t = malloc(sizeof(*t))))
    return -ENOMEM;
  t->c = c;
  t->ms = timeout_ms;
  gev_conn_ref(c);
  if (gev__loop_post_owned(c->loop, linger_task_run, t, linger_task_drop) < 0) {
    linger_task_drop(t);
    return -ENOTCONN;
  }
  return 0;
}

void gev_conn_ref(gev_conn *c)
{
  atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
}

void gev_conn_unref(gev_conn *c)
{
  if (atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1)
    free(c); /* buffers and fd went at close */
}

bool gev_conn_connected(const gev_conn *c)
{
  int st = atomic_load(&((gev_conn *)c)->state);
  return st == GEV__CONN_OPEN || st == GEV__CONN_SHUTWR;
}

void gev_conn_set_context(gev_conn *c, void *ctx)
{
  c->ctx = ctx;
}

void *gev_conn_context(const gev_conn *c)
{
  return c->ctx;
}

const char *gev_conn_peer_addr(const gev_conn *c)
{
  return c->peer;
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

static void pause_in_loop(gev_conn *c, bool pause)
{
  if (atomic_load(&c->state) == GEV__CONN_CLOSED)
    return;
  if (pause) {
    c->flags |= GEV__CONN_USER_PAUSED;
  } else {
    c->flags &= ~GEV__CONN_USER_PAUSED;
    if (gev__buf_len(c->in) > 0)
      c->flags |= GEV__CONN_REDELIVER; /* held input: show it again */
  }
  gev__conn_schedule(c); /* the interest changes after the pass */
}

static void pause_task_run(void *arg)
{
  gev_conn *c = (gev_conn *)((uintptr_t)arg & ~(uintptr_t)1);

  pause_in_loop(c, (uintptr_t)arg & 1);
  gev_conn_unref(c);
}

static int set_paused(gev_conn *c, bool pause)
{
  if (!c)
    return -EINVAL;
  if (atomic_load(&c->state) == GEV__CONN_CLOSED)
    return -ENOTCONN;
  if (gev_loop_in_thread(c->loop)) {
    pause_in_loop(c, pause);
    return 0;
  }
  /* The flag rides in the pointer's low bit (a gev_conn is aligned). */
  gev_conn_ref(c);
  if (gev_loop_post(c->loop, pause_task_run,
                    (void *)((uintptr_t)c | (uintptr_t)pause)) < 0) {
    gev_conn_unref(c);
    return -ENOTCONN;
  }
  return 0;
}

int gev_conn_pause_read(gev_conn *c)
{
  return set_paused(c, true);
}

int gev_conn_resume_read(gev_conn *c)
{
  return set_paused(c, false);
}

int gev_conn_notify_drain(gev_conn *c, size_t low_water,
                          void (*fn)(gev_conn *c, void *arg), void *arg)
{
  if (!c || !gev_loop_in_thread(c->loop))
    return -EINVAL;
  if (atomic_load(&c->state) == GEV__CONN_CLOSED)
    return -ENOTCONN;
  c->drain_fn = fn;
  c->drain_arg = arg;
  c->low_water = low_water;
  if (fn)
    gev__conn_schedule(c); /* already below: fires after the pass */
  return 0;
}
