/* ws.c - a WebSocket connection's life: its state table, the receive path
 * (frames to whole messages), sending, the close handshake and keepalive.
 *
 * The state machine. Every change of state goes through gev__ws_event,
 * which looks the move up in this table, under the connection's mutex (the
 * senders read the state under it too, so no frame leaves after our Close):
 *
 *   state       event        next        action
 *   HANDSHAKE   OPENED       OPEN        on_open, start keepalive
 *   HANDSHAKE   FAIL         CLOSING     close TCP after the queued answer
 *   HANDSHAKE   TIMEOUT      CLOSING     close TCP (a client: -ETIMEDOUT)
 *   OPEN        LOCAL_CLOSE  CLOSE_SENT  send Close, arm the close timer
 *   OPEN        PEER_CLOSE   CLOSING     echo the Close, end TCP after it
 *   OPEN        FAIL         CLOSING     send Close(code), close TCP
 *   OPEN        TIMEOUT      CLOSING     close TCP (no pong came)
 *   CLOSE_SENT  PEER_CLOSE   CLOSING     end TCP
 *   CLOSE_SENT  FAIL         CLOSING     close TCP
 *   CLOSE_SENT  TIMEOUT      CLOSING     close TCP
 *   CLOSING     TIMEOUT      CLOSING     a client stops waiting: close TCP
 *   any but GONE TCP_CLOSED  GONE        on_close (or on_fail), timers off
 *
 * "End TCP", after a clean close handshake (both Closes), is a close for
 * a server, but a client waits for the server's (RFC 6455 7.1.1: the
 * server closes first, so TIME_WAIT stays on its side), at most the close
 * timeout (the one armed with our Close, else a new one); then it closes
 * itself. A failed connection is closed at once on either side.
 *
 * "Close TCP" is a lingering close: the queued output (our Close) goes
 * out, then FIN, and the peer's last bytes are read and dropped, so the
 * kernel does not answer them with a reset that could destroy the Close.
 *
 * Lifetime. The gev_ws is the gev_conn's context, freed by its context
 * free function with the connection's last reference: gev_ws_ref is
 * gev_conn_ref. Each armed timer holds one reference. */
#include "conn-internal.h"
#include "ws-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#define DEFAULT_MAX_MESSAGE (16u << 20)
#define DEFAULT_CLOSE_TIMEOUT_MS 5000
/* Frames up to this size are built on the stack. */
#define STACK_FRAME 16384

enum {
  A_NONE = 0,
  A_OPEN,
  A_ABORT,
  A_SEND_CLOSE,
  A_ECHO_CLOSE,
  A_FAIL,
  A_LINGER,
  A_END,
  A_WAITED,
  A_HS_TIMEOUT,
  A_GONE
};

typedef struct edge {
  unsigned char ok, to, action;
} edge;

#define E(from, ev, next, act)                                                 \
  [GEV__WS_##from][GEV__WE_##ev] = {1, GEV__WS_##next, A_##act}

static const edge table[GEV__WS_COUNT][GEV__WE_COUNT] = {
    E(HANDSHAKE, OPENED, OPEN, OPEN),
    E(HANDSHAKE, FAIL, CLOSING, LINGER),
    E(HANDSHAKE, TIMEOUT, CLOSING, HS_TIMEOUT),
    E(HANDSHAKE, TCP_CLOSED, GONE, GONE),
    E(OPEN, LOCAL_CLOSE, CLOSE_SENT, SEND_CLOSE),
    E(OPEN, PEER_CLOSE, CLOSING, ECHO_CLOSE),
    E(OPEN, FAIL, CLOSING, FAIL),
    E(OPEN, TIMEOUT, CLOSING, ABORT),
    E(OPEN, TCP_CLOSED, GONE, GONE),
    E(CLOSE_SENT, PEER_CLOSE, CLOSING, END),
    E(CLOSE_SENT, FAIL, CLOSING, LINGER),
    E(CLOSE_SENT, TIMEOUT, CLOSING, ABORT),
    E(CLOSE_SENT, TCP_CLOSED, GONE, GONE),
    E(CLOSING, TIMEOUT, CLOSING, WAITED),
    E(CLOSING, TCP_CLOSED, GONE, GONE),
};

/* ---- creation and teardown ------------------------------------------- */

gev_ws *gev__ws_new(const gev_ws_handler *h, const gev_ws_options *wo,
                    void *ctx, bool client)
{
  gev_ws *ws = calloc(1, sizeof(*ws));

  if (!ws)
    return NULL;
  ws->h = *h;
  if (wo)
    ws->o = *wo;
  if (!ws->o.close_timeout_ms)
    ws->o.close_timeout_ms = DEFAULT_CLOSE_TIMEOUT_MS;
  if (ws->o.ping_interval_ms && !ws->o.pong_timeout_ms)
    ws->o.pong_timeout_ms = ws->o.ping_interval_ms;
  ws->max_message = ws->o.max_message ? ws->o.max_message : DEFAULT_MAX_MESSAGE;
  ws->ctx = ctx;
  ws->client = client;
  ws->code = GEV_WS_CLOSE_ABNORMAL;
  pthread_mutex_init(&ws->mu, NULL);
  return ws;
}

void gev__ws_free(void *p)
{
  gev_ws *ws = p;

  if (!ws)
    return;
  pthread_mutex_destroy(&ws->mu);
  free(ws->msg);
  free(ws->path);
  free(ws->protocol);
  free(ws->request);
  free(ws);
}

void gev__ws_attach(gev_ws *ws, gev_conn *c)
{
  ws->c = c;
  gev_conn_set_context(c, ws);
  gev_conn_set_context_free(c, gev__ws_free);
  /* A message may not outgrow what the connection may buffer. */
  if (ws->max_message > c->max_buffer)
    ws->max_message = c->max_buffer;
}

/* ---- timers ----------------------------------------------------------- */

void gev__ws_arm(gev_ws *ws, gev_timer_id *slot, uint64_t ms, gev_task_fn fn)
{
  gev_conn_ref(ws->c);
  *slot = gev_loop_run_after(gev_conn_loop(ws->c), ms, fn, ws);
  if (!*slot)
    gev_conn_unref(ws->c); /* fn never runs; the deadline is lost */
}

/* A fired one-shot timer: forget its id (under mu) and say whether the
 * connection still cares. */
static bool fired(gev_ws *ws, gev_timer_id *slot)
{
  bool live;

  pthread_mutex_lock(&ws->mu);
  *slot = 0;
  live = ws->state != GEV__WS_GONE;
  pthread_mutex_unlock(&ws->mu);
  return live;
}

void gev__ws_on_timeout(void *arg)
{
  gev_ws *ws = arg;
  gev_conn *c = ws->c;

  if (fired(ws, &ws->close_timer))
    gev__ws_event(ws, GEV__WE_TIMEOUT, 0, NULL);
  gev_conn_unref(c);
}

static void on_pong_deadline(void *arg)
{
  gev_ws *ws = arg;
  gev_conn *c = ws->c;

  if (fired(ws, &ws->pong_timer))
    gev__ws_event(ws, GEV__WE_TIMEOUT, 0, NULL);
  gev_conn_unref(c);
}

static int send_frame_locked(gev_ws *ws, unsigned op, const void *p, size_t n);

/* Keepalive: a ping every interval, and a deadline for its pong. A ping
 * is not sent while the last one is unanswered. */
static void on_ping_tick(void *arg)
{
  gev_ws *ws = arg;

  pthread_mutex_lock(&ws->mu);
  if (ws->state == GEV__WS_OPEN && !ws->pong_timer &&
      send_frame_locked(ws, GEV_WS_PING, "gev", 3) == 0)
    gev__ws_arm(ws, &ws->pong_timer, ws->o.pong_timeout_ms, on_pong_deadline);
  pthread_mutex_unlock(&ws->mu);
}

static void cancel(gev_ws *ws, gev_timer_id *slot)
{
  if (*slot && gev_loop_cancel(gev_conn_loop(ws->c), *slot) == 0)
    gev_conn_unref(ws->c); /* the reference the timer held */
  *slot = 0;
}

/* ---- sending ---------------------------------------------------------- */

/* A per-thread xorshift generator, seeded from getrandom, for the mask of
 * every client frame: unpredictable enough that a page's script cannot
 * choose the bytes on the wire (RFC 6455 10.3), without a syscall per
 * frame. */
static void mask_key(unsigned char key[4])
{
  static _Thread_local uint64_t s;
  uint32_t v;

  while (s == 0)
    if (getrandom(&s, sizeof(s), 0) != (ssize_t)sizeof(s))
      s = (uint64_t)(uintptr_t)&s ^ 0x9E3779B97F4A7C15ull;
  s ^= s << 13;
  s ^= s >> 7;
  s ^= s << 17;
  v = (uint32_t)(s >> 16);
  memcpy(key, &v, 4);
}

/* Frames up to this size are queued with one ringbuffer_write. */
#define SMALL_FRAME 256

/* Inside the connection's own on_message a server frame goes straight into
 * `out`, header and payload, without building it first: the room is
 * checked before, so it is queued whole or not at all. */
static int send_into_out(gev_ws *ws, unsigned op, const void *p, size_t n)
{
  ringbuffer *out = ws->c->cur_out;
  unsigned char hb[GEV__WS_MAX_HEADER + SMALL_FRAME];
  size_t hl, lim, used;

  if (!gev__conn_state_sends(gev__conn_state(ws->c)))
    return -ENOTCONN;
  if (n < 126) {
    /* The echo's usual frame: one all-or-nothing write, whose own check
     * of the limit (-ENOBUFS) is the only one needed. */
    hb[0] = (unsigned char)(0x80 | op);
    hb[1] = (unsigned char)n;
    if (n)
      memcpy(hb + 2, p, n);
    return ringbuffer_write(out, hb, 2 + n);
  }
  hl = gev__ws_build_header(hb, op, true, n, NULL);
  lim = ringbuffer_limit(out);
  used = ringbuffer_len(out);
  if (lim && (used > lim || lim - used < hl || lim - used - hl < n))
    return -ENOBUFS;
  if (n <= SMALL_FRAME) {
    /* One write for a small frame: a second costs more than the copy. */
    if (n)
      memcpy(hb + hl, p, n);
    return ringbuffer_write(out, hb, hl + n) < 0 ? -ENOMEM : 0;
  }
  if (ringbuffer_write(out, hb, hl) < 0)
    return -ENOMEM;
  if (ringbuffer_write(out, p, n) < 0) {
    /* Out of memory with half a frame queued: the stream is broken. */
    gev__conn_event(ws->c, GEV__CE_ERROR);
    return -ENOMEM;
  }
  return 0;
}

/* One frame, whole, in one gev_conn_send: a frame from another thread must
 * not interleave with one from this. Under mu. */
static int send_frame_locked(gev_ws *ws, unsigned op, const void *p, size_t n)
{
  unsigned char stack[STACK_FRAME], key[4], *buf = stack;
  size_t hl, total;
  int r;

  if (!ws->client && gev_loop_in_thread(ws->c->loop) && ws->c->cur_out)
    return send_into_out(ws, op, p, n);
  if (ws->client)
    mask_key(key);
  if (n > SIZE_MAX - GEV__WS_MAX_HEADER)
    return -ENOBUFS;
  total = n + GEV__WS_MAX_HEADER;
  if (total > sizeof(stack) && !(buf = malloc(total)))
    return -ENOMEM;
  hl = gev__ws_build_header(buf, op, true, n, ws->client ? key : NULL);
  if (n)
    memcpy(buf + hl, p, n);
  if (ws->client)
    gev__ws_unmask(buf + hl, n, key, 0);
  r = gev_conn_send(ws->c, buf, hl + n);
  if (buf != stack)
    free(buf);
  return r;
}

int gev_ws_send(gev_ws *ws, int opcode, const void *p, size_t n)
{
  int r;

  if (!ws || (!p && n))
    return -EINVAL;
  if (opcode != GEV_WS_TEXT && opcode != GEV_WS_BINARY &&
      opcode != GEV_WS_PING && opcode != GEV_WS_PONG)
    return -EINVAL;
  if (opcode >= GEV_WS_PING && n > GEV__WS_MAX_CONTROL)
    return -EINVAL;
  if (opcode == GEV_WS_TEXT && !gev__utf8_valid(p, n))
    return -EINVAL;
  /* A server's reply from inside its own on_message goes straight into
   * `out` without mu: mu orders this frame against our Close, and a Close
   * started here is this thread's own doing, while one started by another
   * thread is queued behind `out` by its task (and published its state
   * with release, read here with acquire). cur_out is the loop's: read
   * only in its thread. */
  if (!ws->client && gev_loop_in_thread(ws->c->loop) && ws->c->cur_out) {
    r = __atomic_load_n(&ws->state, __ATOMIC_ACQUIRE) == GEV__WS_OPEN
            ? send_into_out(ws, (unsigned)opcode, p, n)
            : -ENOTCONN;
    ws->sent_here += r == 0;
    return r;
  }
  pthread_mutex_lock(&ws->mu);
  r = ws->state == GEV__WS_OPEN ? send_frame_locked(ws, (unsigned)opcode, p, n)
                                : -ENOTCONN;
  pthread_mutex_unlock(&ws->mu);
  if (r == 0 && gev_loop_in_thread(ws->c->loop))
    ws->sent_here++; /* read by the receive path, in this thread only */
  return r;
}

/* A Close frame's payload: the code (none for 0) and the reason. */
static size_t close_payload(unsigned char *out, int code, const char *reason)
{
  size_t rl = reason ? strlen(reason) : 0;

  if (code == 0)
    return 0;
  out[0] = (unsigned char)(code >> 8);
  out[1] = (unsigned char)code;
  if (rl)
    memcpy(out + 2, reason, rl);
  return 2 + rl;
}

typedef struct close_task {
  gev_ws *ws;
  size_t n;
  unsigned char p[GEV__WS_MAX_CONTROL];
} close_task;

static void linger(gev_ws *ws)
{
  gev_conn_close_lingering(ws->c, ws->o.close_timeout_ms);
}

/* Both Closes are through: see "end TCP" at the head. Under mu. */
static void end_tcp_locked(gev_ws *ws)
{
  if (!ws->client)
    linger(ws);
  else if (!ws->close_timer)
    gev__ws_arm(ws, &ws->close_timer, ws->o.close_timeout_ms,
                gev__ws_on_timeout);
}

/* What follows our Close frame. */
enum { THEN_NOTHING = 0, THEN_END, THEN_LINGER };

static void after_close_locked(gev_ws *ws, int then)
{
  if (then == THEN_END)
    end_tcp_locked(ws);
  else if (then == THEN_LINGER)
    linger(ws);
}

/* End or close TCP, but never before our Close is out: while its task
 * waits, a lingering close now would refuse the frame (the peer would see
 * FIN and no Close), so the task does it. The stronger of two wins. */
static void finish_locked(gev_ws *ws, int then)
{
  if (!ws->close_queued)
    after_close_locked(ws, then);
  else if (then > ws->then_deferred)
    ws->then_deferred = then;
}

static void close_task_run(void *arg)
{
  close_task *t = arg;
  gev_ws *ws = t->ws;

  pthread_mutex_lock(&ws->mu);
  send_frame_locked(ws, GEV_WS_CLOSE, t->p, t->n);
  ws->close_queued = false;
  after_close_locked(ws, ws->then_deferred);
  ws->then_deferred = THEN_NOTHING;
  pthread_mutex_unlock(&ws->mu);
  gev_conn_unref(ws->c);
  free(t);
}

/* Our Close, after every frame accepted before it. Frames sent from other
 * threads travel in tasks of the loop: while some are on their way
 * (reserved), a Close written now from the loop's thread would overtake
 * them, so it takes the same road. Under mu; the linger runs after it. */
static void emit_close(gev_ws *ws, int code, const char *reason, int then)
{
  close_task *t;

  if (!gev_loop_in_thread(gev_conn_loop(ws->c)) ||
      gev__conn_reserved(ws->c) == 0 || !(t = malloc(sizeof(*t)))) {
    unsigned char p[GEV__WS_MAX_CONTROL];

    send_frame_locked(ws, GEV_WS_CLOSE, p, close_payload(p, code, reason));
    finish_locked(ws, then);
    return;
  }
  t->ws = ws;
  t->n = close_payload(t->p, code, reason);
  gev_conn_ref(ws->c);
  if (gev_loop_post(gev_conn_loop(ws->c), close_task_run, t) < 0) {
    gev_conn_unref(ws->c);
    free(t);
    linger(ws);
    return;
  }
  ws->close_queued = true; /* what follows the Close waits with it */
  ws->then_deferred = then;
}

int gev_ws_close(gev_ws *ws, int code, const char *reason)
{
  size_t rl = reason ? strlen(reason) : 0;

  if (!ws || (code != 0 && !gev__ws_close_code_ok((unsigned)code)))
    return -EINVAL;
  if (rl > GEV__WS_MAX_CONTROL - 2 || (code == 0 && rl) ||
      !gev__utf8_valid(reason ? reason : "", rl))
    return -EINVAL;
  return gev__ws_event(ws, GEV__WE_LOCAL_CLOSE, code ? code : -1, reason) < 0
             ? -ENOTCONN
             : 0;
}

/* ---- the table's actions --------------------------------------------- */

static const char *local_reason(int code)
{
  switch (code) {
  case GEV_WS_CLOSE_PROTOCOL_ERROR: return "protocol error";
  case GEV_WS_CLOSE_INVALID_DATA: return "invalid UTF-8";
  case GEV_WS_CLOSE_TOO_BIG: return "message too big";
  default: return "";
  }
}

/* The actions that send run under mu (a sender must not slip a frame in
 * after the Close), and so do those that end TCP (they wait for a Close
 * still queued); the rest run after it. */
static void act_locked(gev_ws *ws, int action, int code, const char *reason)
{
  switch (action) {
  case A_SEND_CLOSE:
    emit_close(ws, code < 0 ? 0 : code, reason, THEN_NOTHING);
    gev__ws_arm(ws, &ws->close_timer, ws->o.close_timeout_ms,
                gev__ws_on_timeout);
    break;
  case A_ECHO_CLOSE:
    emit_close(ws, ws->code == GEV_WS_CLOSE_NO_STATUS ? 0 : ws->code, NULL,
               THEN_END);
    break;
  case A_END: finish_locked(ws, THEN_END); break;
  case A_LINGER: finish_locked(ws, THEN_LINGER); break;
  case A_FAIL:
    ws->code = code;
    emit_close(ws, code, local_reason(code), THEN_LINGER);
    break;
  }
}

static void act_gone(gev_ws *ws)
{
  cancel(ws, &ws->close_timer);
  cancel(ws, &ws->ping_timer);
  cancel(ws, &ws->pong_timer);
  free(ws->msg);
  ws->msg = NULL;
  ws->msg_cap = ws->msg_len = 0;
  if (ws->opened && ws->h.on_close)
    ws->h.on_close(ws, ws->code, ws->reason);
  else if (!ws->opened && ws->client && ws->h.on_fail)
    ws->h.on_fail(ws->ctx, ws->hs_err ? ws->hs_err : -ECONNRESET);
}

static void act_unlocked(gev_ws *ws, int action)
{
  switch (action) {
  case A_OPEN:
    ws->opened = true;
    cancel(ws, &ws->close_timer); /* the handshake's deadline */
    if (ws->o.ping_interval_ms) {
      gev_conn_ref(ws->c);
      ws->ping_timer = gev_loop_run_every(
          gev_conn_loop(ws->c), ws->o.ping_interval_ms, on_ping_tick, ws);
      if (!ws->ping_timer)
        gev_conn_unref(ws->c);
    }
    if (ws->h.on_open)
      ws->h.on_open(ws);
    break;
  case A_ABORT: gev_conn_close(ws->c); break;
  case A_HS_TIMEOUT:
    if (!ws->hs_err)
      ws->hs_err = -ETIMEDOUT; /* a client's on_fail says so */
    gev_conn_close(ws->c);
    break;
  case A_WAITED:
    if (ws->client)
      gev_conn_close(ws->c); /* the server did not close in time */
    break;
  case A_GONE: act_gone(ws); break;
  }
}

/* The one place the state changes. @p code, @p reason: the close code for
 * FAIL and LOCAL_CLOSE (-1: a Close without one) and LOCAL_CLOSE's reason.
 * Returns the action taken, or -1 when the table has no such move (gev_ws_close
 * twice: -ENOTCONN). */
int gev__ws_event(gev_ws *ws, int ev, int code, const char *reason)
{
  edge e;

  pthread_mutex_lock(&ws->mu);
  e = table[ws->state][ev];
  if (!e.ok) {
    pthread_mutex_unlock(&ws->mu);
    return -1;
  }
  __atomic_store_n(&ws->state, e.to,
                   __ATOMIC_RELEASE); /* ws-rx.c reads it unlocked */
  act_locked(ws, e.action, code, reason);
  pthread_mutex_unlock(&ws->mu);
  act_unlocked(ws, e.action);
  return e.action;
}

/* ---- accessors -------------------------------------------------------- */

gev_conn *gev_ws_conn(gev_ws *ws)
{
  return ws ? ws->c : NULL;
}

void gev_ws_set_context(gev_ws *ws, void *ctx)
{
  if (ws)
    ws->ctx = ctx;
}

void *gev_ws_context(const gev_ws *ws)
{
  return ws ? ws->ctx : NULL;
}

void *gev_ws_arg(const gev_ws *ws)
{
  return ws ? ws->o.arg : NULL;
}

const char *gev_ws_path(const gev_ws *ws)
{
  return ws && ws->path ? ws->path : "";
}

const char *gev_ws_protocol(const gev_ws *ws)
{
  return ws && ws->protocol ? ws->protocol : "";
}

void gev_ws_ref(gev_ws *ws)
{
  if (ws)
    gev_conn_ref(ws->c);
}

void gev_ws_unref(gev_ws *ws)
{
  if (ws)
    gev_conn_unref(ws->c);
}
