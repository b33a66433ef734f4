/* proxy - a TCP proxy: each accepted client gets its own upstream
 * connection, opened from the same worker loop (gev_loop_connect on
 * gev_conn_loop), so both ends of a pair live in one thread and talk to
 * each other without locks or cross-thread tasks.
 *
 * Backpressure: bytes move from one end's input to the other end's output
 * with gev_conn_send. When the other end's output passes HIGH_WATER (its
 * peer reads slowly), this end stops reading (gev_conn_pause_read), and a
 * one-shot drain notification (gev_conn_notify_drain) resumes it once that
 * output is down to LOW_WATER. Memory per pair stays bounded whatever the
 * speeds of the two peers.
 *
 * Half-close: when one end's peer sends FIN (on_peer_eof keeps that end
 * open), the FIN is passed on to the other end's peer with
 * gev_conn_shutdown_write once everything before it has been forwarded; the
 * answer still flows back. A connection closes once both directions are
 * done. When either end closes for good (reset, error, both FINs), the
 * other is closed after what is queued for it has been flushed.
 *
 * Graceful shutdown (SIGTERM): a pair is not cut while bytes still move.
 * A TCP proxy cannot tell where one exchange ends, so on_shutdown lets
 * both directions go on and gives the client's end an all-idle timeout
 * of QUIET_MS (gev_conn_set_idle_timeout); once neither end has moved a
 * byte for that long and nothing is queued for either peer, both close
 * gracefully (the client's end lingering, so that bytes it still sends
 * cannot turn into a reset). A request half-sent when the signal came is
 * still forwarded and answered; what a slow peer has not read yet keeps
 * the pair open until the drain's deadline. */
#include "../common/example.h"

#include <stdio.h>
#include <stdlib.h>

#define HIGH_WATER (1024 * 1024)
#define LOW_WATER (256 * 1024)
#define CHUNK (64 * 1024)
/* During a shutdown: a pair this quiet is done. */
#define QUIET_MS 1000
#define LINGER_MS 2000

/* One client (DOWN) and its upstream (UP). Both ends run in the same loop
 * thread. */
enum { DOWN, UP };
typedef struct pair {
  gev_conn *end[2]; /* NULL once closed (or not connected yet) */
  bool fin[2];      /* that end's peer sent FIN: pass it on */
  bool connecting;
  bool draining; /* the server shuts down: close once quiet */
} pair;

static const char *upstream = "127.0.0.1:7000";

static void maybe_free(pair *p)
{
  if (!p->end[DOWN] && !p->end[UP] && !p->connecting)
    free(p);
}

static int side(pair *p, gev_conn *c)
{
  return c == p->end[DOWN] ? DOWN : UP;
}

static gev_conn *other_end(pair *p, gev_conn *c)
{
  return p->end[!side(p, c)];
}

static void resume_other(gev_conn *drained, void *arg)
{
  gev_conn *o = other_end(arg, drained);

  if (o)
    gev_conn_resume_read(o);
}

/* Moves what `to` can take from `in`; pauses `from` when `to` is full.
 * Once `from`'s peer has sent FIN and all it sent is forwarded, sends the
 * FIN on. */
static void forward(pair *p, gev_conn *from, ringbuffer *in)
{
  gev_conn *to = other_end(p, from);
  struct iovec seg[2];

  if (!to)
    return; /* upstream not connected yet: the input waits */
  while (!ringbuffer_empty(in)) {
    ringbuffer_peek(in, CHUNK, seg);
    if (gev_conn_send(to, seg[0].iov_base, seg[0].iov_len) < 0)
      break; /* -ENOBUFS: full; -ENOTCONN: closing, its on_close follows */
    ringbuffer_retrieve(in, seg[0].iov_len);
  }
  if (ringbuffer_empty(in) && p->fin[side(p, from)])
    gev_conn_shutdown_write(to); /* after what is queued for it */
  else if (gev_conn_write_buffer_len(to) >= HIGH_WATER ||
           !ringbuffer_empty(in)) {
    gev_conn_pause_read(from);
    gev_conn_notify_drain(to, LOW_WATER, resume_other, p);
  }
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  (void)out;
  forward(gev_conn_context(c), c, in);
}

/* c's peer sent FIN. What it sent before has been through on_message; if
 * some of it still waits for room, forward() passes the FIN on when it
 * has moved the rest. */
static void on_peer_eof(gev_conn *c)
{
  pair *p = gev_conn_context(c);
  gev_conn *o = other_end(p, c);

  p->fin[side(p, c)] = true;
  if (o && gev_conn_read_buffer_len(c) == 0)
    gev_conn_shutdown_write(o);
}

static void on_close(gev_conn *c)
{
  pair *p = gev_conn_context(c);
  gev_conn *o = other_end(p, c);

  p->end[side(p, c)] = NULL;
  if (o)
    gev_conn_close(o); /* after flushing what it still has to send */
  maybe_free(p);
}

/* Both ends of a draining pair have been quiet for QUIET_MS: close them
 * when nothing is queued for either peer (else wait: a slow reader still
 * gets what is its, within the drain's deadline). */
static void on_idle(gev_conn *c, gev_idle_kind kind)
{
  pair *p = gev_conn_context(c);
  gev_conn *o = other_end(p, c);

  (void)kind;
  if (!p->draining || p->connecting || gev_conn_write_buffer_len(c) ||
      (o && gev_conn_write_buffer_len(o)))
    return;
  if (o)
    gev_conn_close(o);
  gev_conn_close_lingering(c, LINGER_MS);
}

static void on_shutdown(gev_conn *c)
{
  pair *p = gev_conn_context(c);

  if (!p) {
    gev_conn_close(c);
    return;
  }
  p->draining = true;
  gev_conn_set_idle_timeout(c, GEV_IDLE_ALL, QUIET_MS);
}

static const gev_handler up_handler = {
    .on_message = on_message, .on_close = on_close, .on_peer_eof = on_peer_eof};

static void on_upstream(gev_conn *up, int err, void *arg)
{
  pair *p = arg;

  p->connecting = false;
  if (err < 0) {
    fprintf(stderr, "proxy: upstream %s: %s\n", upstream, gev_strerror(err));
    if (p->end[DOWN])
      gev_conn_close(p->end[DOWN]);
    maybe_free(p);
    return;
  }
  p->end[UP] = up;
  if (!p->end[DOWN])
    gev_conn_close(up); /* the client left while we connected */
  else
    gev_conn_resume_read(p->end[DOWN]); /* shows what the client already sent */
}

static void on_connect(gev_conn *c)
{
  pair *p = calloc(1, sizeof(*p));
  gev_connect_options o = {
      .address = upstream, .timeout_ms = 5000, .max_buffer = 4 * HIGH_WATER};

  if (!p) {
    gev_conn_close(c);
    return;
  }
  p->end[DOWN] = c;
  p->connecting = true;
  gev_conn_set_context(c, p);
  gev_conn_pause_read(c); /* until the upstream is there */
  o.context = p;
  o.on_result = on_upstream;
  o.arg = p;
  if (gev_loop_connect(gev_conn_loop(c), &up_handler, &o) < 0) {
    p->connecting = false;
    gev_conn_close(c);
  }
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_connect = on_connect,
                   .on_message = on_message,
                   .on_close = on_close,
                   .on_peer_eof = on_peer_eof,
                   .on_shutdown = on_shutdown,
                   .on_idle = on_idle};
  gev_options opt = {.max_buffer = 4 * HIGH_WATER};
  ex_opt extra[] = {{"upstream", 'u', "HOST:PORT to forward to", &upstream}};
  ex_args a;

  ex_parse(argc, argv, &a, extra, 1);
  return ex_run(&h, &opt, &a, NULL);
}
