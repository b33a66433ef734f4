/* http - an HTTP/1.1 server answering "Hello, World!", in the style of the
 * TechEmpower plaintext test.
 *
 * on_message parses every complete request at the front of `in` (so
 * pipelined requests are all answered in one call) and leaves a partial one
 * for later. Request bodies with a Content-Length are skipped, also when
 * they arrive later than their head; chunked bodies are refused (501).
 * Malformed requests get 400, heads over 8 KiB 431. Those, like
 * "Connection: close" and HTTP/1.0 without keep-alive, close the
 * connection after the reply, gently (see linger()).
 *
 * Graceful shutdown (SIGTERM): on_shutdown closes a keep-alive connection
 * that is between requests, and marks a busy one draining: the requests
 * it still receives are answered with "Connection: close", and it closes
 * after that reply, so a client learns from the response itself that it
 * must reconnect (elsewhere) for the next one.
 *
 * The fast path allocates nothing: the head is parsed where it lies in the
 * ring buffer (linearized only when it straddles the wrap) and the common
 * response is one prebuilt block, copied into `out` with one write. */
#include "../common/example.h"
#include "http-parser.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BODY "Hello, World!"

/* The Date header. Every worker loop keeps its own copy, made in its own
 * thread when the loop starts (gev_options.on_loop_start) and attached to
 * the loop (gev_loop_set_data), so the only thread that reads or writes a
 * copy is its owner: no lock, no atomics, no torn reads, and no
 * thread-local storage. A request compares the second the copy was made
 * for with time() (a vDSO read, no syscall) and formats again only when
 * the second has changed. A once-a-second timer would be cheaper still but
 * is not correct: its phase is arbitrary, so the header could lag the
 * clock by up to a second, and two loops could disagree. The copy also
 * holds the complete common response, so the fast path is one memcpy. */
typedef struct loop_cache {
  char date[32];
  time_t date_sec;
  char ok_resp[160];
  size_t ok_len;
} loop_cache;

static void loop_start(gev_loop *l)
{
  loop_cache *lc = calloc(1, sizeof(*lc));

  if (lc)
    lc->date_sec = (time_t)-1;
  gev_loop_set_data(l, lc); /* NULL: its connections are closed */
}

static void loop_stop(gev_loop *l)
{
  free(gev_loop_data(l));
  gev_loop_set_data(l, NULL);
}

static loop_cache *cache(gev_conn *c)
{
  return gev_loop_data(gev_conn_loop(c));
}

/* Only connections that skip a body or close get one, so plain keep-alive
 * GETs allocate nothing per connection either. */
typedef struct http_conn {
  uint64_t skip;    /* body bytes still to discard */
  bool close_after; /* linger once they are discarded */
  bool draining;    /* the server shuts down: answer, then close */
} http_conn;

/* How long a half-closed connection waits for the peer to close. */
#define LINGER_MS 2000

static void refresh_date(loop_cache *lc, time_t t)
{
  static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed",
                                  "Thu", "Fri", "Sat"};
  static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  struct tm tm;
  int n;

  lc->date_sec = t;
  gmtime_r(&t, &tm);
  /* IMF-fixdate (RFC 7231, 7.1.1.1); names by hand, not by locale. */
  snprintf(lc->date, sizeof(lc->date), "%s, %02d %s %04d %02d:%02d:%02d GMT",
           days[tm.tm_wday % 7], tm.tm_mday % 100, months[tm.tm_mon % 12],
           (tm.tm_year + 1900) % 10000, tm.tm_hour % 100, tm.tm_min % 100,
           tm.tm_sec % 100);
  n = snprintf(lc->ok_resp, sizeof(lc->ok_resp),
               "HTTP/1.1 200 OK\r\nServer: gev\r\nContent-Type: text/plain"
               "\r\nContent-Length: %zu\r\nDate: %s\r\n\r\n" BODY,
               strlen(BODY), lc->date);
  lc->ok_len = n > 0 && (size_t)n < sizeof(lc->ok_resp) ? (size_t)n : 0;
}

static const char *reason(int status)
{
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 431: return "Request Header Fields Too Large";
  case 501: return "Not Implemented";
  case 505: return "HTTP Version Not Supported";
  default: return "Internal Server Error";
  }
}

/* Any response, with its own status, body and connection header. */
static int respond(gev_conn *c, ringbuffer *out, int status, bool head,
                   bool keep, int minor)
{
  const char *date = cache(c)->date;
  char buf[512], body[64];
  const char *conn = "";
  int n;

  if (status == 200)
    snprintf(body, sizeof(body), "%s", BODY);
  else
    snprintf(body, sizeof(body), "%s\n", reason(status));
  if (!keep)
    conn = "Connection: close\r\n";
  else if (minor == 0)
    conn = "Connection: keep-alive\r\n"; /* 1.0 closes unless told */
  n = snprintf(buf, sizeof(buf),
               "HTTP/1.1 %d %s\r\nServer: gev\r\nContent-Type: text/plain\r\n"
               "Content-Length: %zu\r\nDate: %s\r\n%s%s\r\n%s",
               status, reason(status), strlen(body), date,
               status == 405 ? "Allow: GET, HEAD\r\n" : "", conn,
               head ? "" : body);
  return ringbuffer_write(out, buf, (size_t)n);
}

static bool is(const char *p, size_t n, const char *lit)
{
  return strlen(lit) == n && memcmp(p, lit, n) == 0;
}

static int route(const http_request *r)
{
  if (!is(r->path, r->path_len, "/") &&
      !is(r->path, r->path_len, "/plaintext") &&
      !is(r->path, r->path_len, "/metrics"))
    return 404;
  if (!is(r->method, r->method_len, "GET") &&
      !is(r->method, r->method_len, "HEAD"))
    return 405;
  return 200;
}

/* GET /metrics: the server's figures in the Prometheus text format 0.0.4
 * (gev_server_metrics). This runs on a worker loop, so the other loops'
 * series are the figures they last published, a pass behind at most (see
 * gev_loop_stats). Not the fast path: it allocates. The head and the body
 * go into `out` with one write, all or nothing, as respond() does. */
static int metrics(gev_conn *c, ringbuffer *out, bool head, bool keep,
                   int minor)
{
  gev_server *s = gev_conn_server(c);
  char hdr[256], *buf;
  size_t cap;
  int n = s ? gev_server_metrics(s, NULL, 0) : -EINVAL, hl, err;

  if (n < 0)
    return respond(c, out, 500, head, keep, minor);
  /* The figures can grow a few digits between the two calls. */
  cap = (size_t)n + 1024;
  if (!(buf = malloc(sizeof(hdr) + cap)))
    return respond(c, out, 500, head, keep, minor);
  n = gev_server_metrics(s, buf + sizeof(hdr), cap);
  if (n < 0 || (size_t)n >= cap) {
    free(buf);
    return respond(c, out, 500, head, keep, minor);
  }
  hl = snprintf(hdr, sizeof(hdr),
                "HTTP/1.1 200 OK\r\nServer: gev\r\n"
                "Content-Type: text/plain; version=0.0.4\r\n"
                "Content-Length: %d\r\nDate: %s\r\n%s\r\n",
                n, cache(c)->date,
                !keep        ? "Connection: close\r\n"
                : minor == 0 ? "Connection: keep-alive\r\n"
                             : "");
  memcpy(buf + sizeof(hdr) - (size_t)hl, hdr, (size_t)hl);
  err = ringbuffer_write(out, buf + sizeof(hdr) - (size_t)hl,
                         (size_t)hl + (head ? 0 : (size_t)n));
  free(buf);
  return err;
}

static http_conn *state(gev_conn *c)
{
  http_conn *hc = gev_conn_context(c);

  if (!hc && (hc = calloc(1, sizeof(*hc))))
    gev_conn_set_context(c, hc);
  return hc;
}

/* Closes after the replies in `out`, lingering (gev_conn_close_lingering):
 * a socket closed while the peer's bytes are still arriving (the rest of
 * an oversized head, a body, pipelined requests) makes the kernel send
 * RST, and the peer may then lose the reply we just queued. */
static void linger(gev_conn *c, ringbuffer *in)
{
  ringbuffer_retrieve_all(in);
  gev_conn_close_lingering(c, LINGER_MS);
}

/* Answers a request we will not read further, then closes. */
static void refuse(gev_conn *c, ringbuffer *in, ringbuffer *out, int status)
{
  respond(c, out, status, false, false, 1); /* best effort: we close anyway */
  linger(c, in);
}

/* Discards body bytes; false while more of the body is still to come. */
static bool skip_body(gev_conn *c, ringbuffer *in, uint64_t len)
{
  size_t have = ringbuffer_len(in);
  http_conn *hc;

  if (len <= have) {
    ringbuffer_retrieve(in, (size_t)len);
    return true;
  }
  ringbuffer_retrieve_all(in);
  if (!(hc = state(c)))
    gev_conn_close(c);
  else
    hc->skip = len - have;
  return false;
}

static void on_message(gev_conn *c, ringbuffer *in, ringbuffer *out)
{
  http_conn *hc = gev_conn_context(c);
  loop_cache *lc = cache(c);
  time_t now = time(NULL);
  bool draining = hc && hc->draining;

  if (!lc) { /* the loop could not make its cache */
    ringbuffer_retrieve_all(in);
    gev_conn_close(c);
    return;
  }
  if (now != lc->date_sec)
    refresh_date(lc, now);

  if (hc && hc->skip) {
    size_t have = ringbuffer_len(in);
    size_t k = hc->skip < have ? (size_t)hc->skip : have;
    ringbuffer_retrieve(in, k);
    if ((hc->skip -= k) > 0)
      return;
    if (hc->close_after) {
      linger(c, in);
      return;
    }
  }
  while (!ringbuffer_empty(in)) {
    size_t n = ringbuffer_len(in);
    struct iovec seg[2];
    http_request r;
    const char *p;
    int status, err;
    bool head, keep;

    if (n > HTTP_MAX_HEAD)
      n = HTTP_MAX_HEAD;
    ringbuffer_peek(in, n, seg);
    p = seg[1].iov_len ? ringbuffer_linearize(in, n) : seg[0].iov_base;
    switch (http_parse(p, n, &r)) {
    case HTTP_INCOMPLETE: return;
    case HTTP_ERROR: refuse(c, in, out, r.error); return;
    case HTTP_OK: break;
    }
    if (r.transfer_encoding) {
      refuse(c, in, out, 501); /* we do not decode chunked bodies */
      return;
    }
    status = route(&r);
    head = is(r.method, r.method_len, "HEAD");
    keep = r.keep_alive && !draining;
    if (status == 200 && is(r.path, r.path_len, "/metrics"))
      err = metrics(c, out, head, keep, r.minor);
    else if (status == 200 && !head && keep && r.minor == 1 && lc->ok_len)
      err = ringbuffer_write(out, lc->ok_resp, lc->ok_len);
    else
      err = respond(c, out, status, head, keep, r.minor);
    if (err < 0)
      return; /* `out` is full: the request waits in `in` until it drains */
    ringbuffer_retrieve(in, r.head_len);
    if (!skip_body(c, in, r.content_length)) {
      if ((hc = gev_conn_context(c)))
        hc->close_after = !keep;
      return;
    }
    if (!keep) {
      linger(c, in);
      return;
    }
  }
}

static void on_close(gev_conn *c)
{
  free(gev_conn_context(c));
}

/* Between requests (nothing received, nothing unsent, no body being
 * skipped): closed now, lingering so that a request already on its way
 * does not turn into a reset. Otherwise the request under way is
 * answered with "Connection: close" and the connection closes after it;
 * the drain's deadline bounds a client that never finishes its request. */
static void on_shutdown(gev_conn *c)
{
  http_conn *hc = state(c);

  if (!hc) {
    gev_conn_close(c);
    return;
  }
  hc->draining = true;
  if (!hc->skip && gev_conn_read_buffer_len(c) == 0 &&
      gev_conn_write_buffer_len(c) == 0)
    gev_conn_close_lingering(c, LINGER_MS);
}

int main(int argc, char **argv)
{
  gev_handler h = {.on_message = on_message,
                   .on_close = on_close,
                   .on_shutdown = on_shutdown};
  gev_options opt = {0};
  ex_args a;

  ex_parse(argc, argv, &a, NULL, 0);
  opt.idle_timeout_ms = 60000; /* the keep-alive timeout */
  opt.on_loop_start = loop_start;
  opt.on_loop_stop = loop_stop;
  return ex_run(&h, &opt, &a, NULL);
}
