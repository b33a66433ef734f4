/* ws-rx.c - the receive path: the gev_conn handler of every WebSocket
 * connection, which turns the bytes of `in` into whole messages.
 *
 * Nothing is trusted before it is checked: a frame's header is parsed
 * from a copy of at most 14 bytes (so any split of the stream works, down
 * to one byte per read), its length is compared with the message limit
 * before a byte of the payload is stored, and text is validated as each
 * piece arrives, failing at the first bad byte.
 *
 * Two paths. A whole unfragmented data frame already in `in` is unmasked
 * in place and shown to the handler from the ring buffer itself (no copy:
 * the common case of small messages). Anything else (a frame still
 * arriving, fragments) streams into the connection's message buffer,
 * frame header first, then payload pieces as they come. Control frames
 * (at most 125 bytes) wait in `in` until they are whole. */
#include "conn-internal.h"
#include "ws-internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Message buffers above this are freed after their message, not kept. */
#define KEEP_MSG_BUFFER (64u << 10)

/* Read once per frame: an acquire load, not mu (two locked atomics per
 * message on the echo path). gev__ws_event stores it with release under
 * mu, so what a change published is seen with it; a change racing with
 * the read is as unordered as it was under the lock. */
static int state_of(gev_ws *ws)
{
  return __atomic_load_n(&ws->state, __ATOMIC_ACQUIRE);
}

static void fail(gev_ws *ws, int code)
{
  if (!ws->got_close)
    ws->code = code;
  gev__ws_event(ws, GEV__WE_FAIL, code, NULL);
}

/* Shows a message, and notes whether the handler answered it: only a
 * handler that answers has its delivery held while the output is high. */
static void deliver(gev_ws *ws, unsigned op, const void *p, size_t n)
{
  unsigned before = ws->sent_here;

  if (ws->h.on_message)
    ws->h.on_message(ws, (int)op, n ? p : "", n);
  if (op < 8)
    ws->answers = ws->sent_here != before;
}

/* Replies, then output and sends in flight, at half the cap: let the
 * connection drain before the next message (conn.c shows the held input
 * again once it has). Only for a handler that answered its last message:
 * one that only consumes (a client pushing a stream with gev_ws_send and
 * reading what comes back) would otherwise wait for a peer that waits for
 * it to read. */
static bool output_high(gev_ws *ws, ringbuffer *out)
{
  size_t max = ws->c->max_buffer;

  return ringbuffer_len(out) + gev__conn_reserved(ws->c) >= max / 2;
}

static int on_close_frame(gev_ws *ws, const unsigned char *p, size_t n)
{
  unsigned code = GEV_WS_CLOSE_NO_STATUS;

  if (n == 1)
    return -GEV_WS_CLOSE_PROTOCOL_ERROR;
  if (n >= 2) {
    code = (unsigned)p[0] << 8 | p[1];
    if (!gev__ws_close_code_ok(code))
      return -GEV_WS_CLOSE_PROTOCOL_ERROR;
    if (!gev__utf8_valid(p + 2, n - 2))
      return -GEV_WS_CLOSE_INVALID_DATA;
    memcpy(ws->reason, p + 2, n - 2);
    ws->reason[n - 2] = '\0';
  }
  ws->got_close = true;
  ws->code = (int)code;
  gev__ws_event(ws, GEV__WE_PEER_CLOSE, 0, NULL);
  return 0;
}

/* A whole control frame (fh parsed, the frame in `in`). */
static int on_control(gev_ws *ws, const gev__ws_header *fh, ringbuffer *in)
{
  unsigned char p[GEV__WS_MAX_CONTROL];
  size_t n = (size_t)fh->len;

  ringbuffer_retrieve(in, fh->size);
  ringbuffer_read(in, p, n);
  if (fh->masked)
    gev__ws_unmask(p, n, fh->mask, 0);
  if (fh->opcode == GEV_WS_CLOSE)
    return on_close_frame(ws, p, n);
  if (fh->opcode == GEV_WS_PING)
    gev_ws_send(ws, GEV_WS_PONG, p, n); /* -ENOTCONN once closing: fine */
  if (fh->opcode == GEV_WS_PONG) {
    pthread_mutex_lock(&ws->mu);
    gev_timer_id t = ws->pong_timer;
    pthread_mutex_unlock(&ws->mu);
    if (t && gev_loop_cancel(gev_conn_loop(ws->c), t) == 0) {
      pthread_mutex_lock(&ws->mu);
      ws->pong_timer = 0;
      pthread_mutex_unlock(&ws->mu);
      gev_conn_unref(ws->c);
    }
  }
  if (ws->o.control_messages)
    deliver(ws, fh->opcode, p, n);
  return 1;
}

/* The end of a message: check, show, forget. */
static int finish_message(gev_ws *ws)
{
  unsigned op = ws->msg_op;

  if (op == GEV_WS_TEXT && !gev__utf8_complete(&ws->utf8))
    return -GEV_WS_CLOSE_INVALID_DATA; /* ends inside a character */
  ws->msg_op = 0;
  deliver(ws, op, ws->msg, ws->msg_len);
  ws->msg_len = 0;
  if (ws->msg_cap > KEEP_MSG_BUFFER) {
    free(ws->msg);
    ws->msg = NULL;
    ws->msg_cap = 0;
  }
  return 1;
}

/* Grows the message buffer for @p more bytes, which the limit allows. */
static int reserve(gev_ws *ws, size_t more)
{
  size_t want = ws->msg_len + more, cap = ws->msg_cap ? ws->msg_cap : 256;
  unsigned char *p;

  if (want <= ws->msg_cap)
    return 0;
  while (cap < want)
    cap = cap > SIZE_MAX / 2 ? want : cap * 2;
  if (!(p = realloc(ws->msg, cap)))
    return -GEV_WS_CLOSE_INTERNAL;
  ws->msg = p;
  ws->msg_cap = cap;
  return 0;
}

/* Payload of the frame under way, as much as `in` has. */
static int on_payload(gev_ws *ws, ringbuffer *in)
{
  size_t avail = ringbuffer_len(in), take;
  unsigned char *dst;
  int r;

  take = ws->frame_left < avail ? (size_t)ws->frame_left : avail;
  if (take == 0 && ws->frame_left > 0)
    return 0;
  if (take > 0) {
    if ((r = reserve(ws, take)) < 0)
      return r;
    dst = ws->msg + ws->msg_len;
    ringbuffer_read(in, dst, take);
    if (ws->fh.masked)
      gev__ws_unmask(dst, take, ws->fh.mask, (size_t)(ws->frame_off & 3));
    if (ws->msg_op == GEV_WS_TEXT && !gev__utf8_feed(&ws->utf8, dst, take))
      return -GEV_WS_CLOSE_INVALID_DATA;
  }
  ws->msg_len += take;
  ws->frame_left -= take;
  ws->frame_off += take;
  if (ws->frame_left > 0)
    return 0;
  ws->in_frame = false;
  return ws->fh.fin ? finish_message(ws) : 1;
}

/* A whole unfragmented message in `in`: unmasked where it lies, @p front
 * when the ring does not wrap inside it (front_len covers it). */
static int on_whole(gev_ws *ws, const gev__ws_header *fh, ringbuffer *in,
                    unsigned char *front, size_t front_len)
{
  size_t n = (size_t)fh->len;
  unsigned char *p = front_len >= fh->size + n
                         ? front
                         : ringbuffer_linearize(in, fh->size + n);

  if (!p)
    return -GEV_WS_CLOSE_INTERNAL;
  p += fh->size;
  if (fh->masked)
    gev__ws_unmask(p, n, fh->mask, 0);
  if (fh->opcode == GEV_WS_TEXT && !gev__utf8_valid(p, n))
    return -GEV_WS_CLOSE_INVALID_DATA;
  deliver(ws, fh->opcode, p, n);
  ringbuffer_retrieve(in, fh->size + n);
  return 1;
}

/* The sequence rules of 5.4 and the size limit, before any payload. */
static int check_data(gev_ws *ws, const gev__ws_header *fh)
{
  if (fh->opcode == 0 && ws->msg_op == 0)
    return -GEV_WS_CLOSE_PROTOCOL_ERROR; /* a continuation of nothing */
  if (fh->opcode != 0 && ws->msg_op != 0)
    return -GEV_WS_CLOSE_PROTOCOL_ERROR; /* a new message inside one */
  if (fh->len > ws->max_message - ws->msg_len)
    return -GEV_WS_CLOSE_TOO_BIG;
  return 0;
}

/* One step: a header, a control frame, a whole message or a piece of
 * payload. > 0 after progress, 0 when waiting for bytes, or a negative
 * close code. */
static int rx_step(gev_ws *ws, ringbuffer *in)
{
  size_t have = ringbuffer_len(in), front_len;
  unsigned char *front;
  gev__ws_header fh;
  int r;

  if (ws->in_frame)
    return on_payload(ws, in);
  if ((r = gev__ws_peek_header(in, &fh, &front, &front_len)) <= 0)
    return r;
  if (fh.masked == ws->client)
    return -GEV_WS_CLOSE_PROTOCOL_ERROR; /* 5.1: clients mask, servers not */
  if (fh.opcode >= 8)
    return have >= fh.size + fh.len ? on_control(ws, &fh, in) : 0;
  if ((r = check_data(ws, &fh)) < 0)
    return r;
  if (fh.opcode != 0 && fh.fin && have - fh.size >= fh.len)
    return on_whole(ws, &fh, in, front, front_len);
  ringbuffer_retrieve(in, fh.size);
  ws->fh = fh;
  ws->in_frame = true;
  ws->frame_left = fh.len;
  ws->frame_off = 0;
  if (fh.opcode != 0) {
    ws->msg_op = fh.opcode;
    ws->utf8 = (gev__utf8){0};
  }
  return fh.len == 0 ? on_payload(ws, in) : 1; /* nothing more will come */
}

static bool receiving(int st)
{
  return st == GEV__WS_OPEN || st == GEV__WS_CLOSE_SENT;
}

/* The echo's usual frames (FIN, text or binary, masked, under 126 bytes),
 * whole and one after another in the ring's first segment, shown in one
 * sweep and consumed with one retrieve: per frame no call into the ring.
 * Anything else (a server's frame, a fragment, a control frame, a frame
 * over the wrap), a state change or a high output ends the sweep, and
 * rx_step goes on with every check. The frames shown, or a negative close
 * code. */
static int rx_burst(gev_ws *ws, ringbuffer *in, ringbuffer *out)
{
  struct iovec seg[2];
  unsigned char *p;
  size_t n0, off = 0;
  int shown = 0, r = 0;

  if (ws->client || ws->in_frame || ws->msg_op)
    return 0;
  ringbuffer_peek(in, ringbuffer_len(in), seg);
  p = seg[0].iov_base;
  n0 = seg[0].iov_len;
  while (n0 - off >= 6) {
    unsigned char *h = p + off;
    size_t n = h[1] & 0x7f;

    if (!gev__ws_short_masked(h) || n0 - off - 6 < n || n > ws->max_message)
      break;
    if (shown && ws->answers && output_high(ws, out))
      break;
    gev__ws_unmask(h + 6, n, h + 2, 0);
    if (h[0] == 0x81 && !gev__utf8_valid(h + 6, n)) {
      r = -GEV_WS_CLOSE_INVALID_DATA;
      break;
    }
    deliver(ws, h[0] & 0x0f, h + 6, n);
    off += 6 + n;
    shown++;
    if (state_of(ws) != GEV__WS_OPEN)
      break;
  }
  ringbuffer_retrieve(in, off);
  return r < 0 ? r : shown;
}

static int handshake(gev_ws *ws, ringbuffer *in, ringbuffer *out)
{
  int r = ws->client ? gev__ws_client_handshake(ws, in)
                     : gev__ws_server_handshake(ws, in, out);

  if (r > 0)
    gev__ws_event(ws, GEV__WE_OPENED, 0, NULL);
  else if (r < 0)
    gev__ws_event(ws, GEV__WE_FAIL, 0, NULL);
  return r;
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  gev_ws *ws = gev_conn_context(c);
  int st = state_of(ws), r = 1;

  if (st == GEV__WS_HANDSHAKE && handshake(ws, in, out) <= 0) {
    if (state_of(ws) != GEV__WS_HANDSHAKE)
      ringbuffer_retrieve_all(in);
    return;
  }
  while (r > 0 && receiving(state_of(ws)) && !ringbuffer_empty(in)) {
    if (ws->answers && output_high(ws, out))
      return; /* shown again once the output has drained */
    if ((r = rx_burst(ws, in, out)) == 0)
      r = rx_step(ws, in);
  }
  if (r < 0)
    fail(ws, -r);
  if (!receiving(state_of(ws)))
    ringbuffer_retrieve_all(in); /* nothing is read after the Close */
}

static void on_close(gev_conn *c)
{
  gev_ws *ws = gev_conn_context(c);

  if (ws)
    gev__ws_event(ws, GEV__WE_TCP_CLOSED, 0, NULL);
}

static void on_shutdown(gev_conn *c)
{
  gev_ws *ws = gev_conn_context(c);
  int st = state_of(ws);

  if (st == GEV__WS_HANDSHAKE)
    gev_conn_close(c);
  else if (st == GEV__WS_OPEN && ws->h.on_shutdown)
    ws->h.on_shutdown(ws);
  else if (st == GEV__WS_OPEN)
    gev_ws_close(ws, GEV_WS_CLOSE_GOING_AWAY, "server shutting down");
}

const gev_handler gev__ws_conn_handler = {
    .on_message = on_message,
    .on_close = on_close,
    .on_shutdown = on_shutdown,
};
