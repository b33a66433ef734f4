/* ws-handshake.c - the opening handshake (RFC 6455 section 4): the
 * server's reading and answering of the upgrade request, the client's
 * request and its check of the answer.
 *
 * A head is at most HEAD_MAX bytes and is parsed where it lies in `in`
 * (linearized), into pointers; nothing of it is kept but the path and the
 * subprotocol, copied. */
#include "ws-internal.h"

#include "base64.h"
#include "sha1.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#define HEAD_MAX 8192
#define HEADERS_MAX 64
#define PROTOCOLS_MAX 16

static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

typedef struct span {
  const char *p;
  size_t n;
} span;

typedef struct head {
  span first[3]; /* request line: method, target, version; status line:
                    version, code, reason */
  span name[HEADERS_MAX], value[HEADERS_MAX];
  size_t count;
} head;

void gev__ws_accept_key(const char *key, size_t len, char out[29])
{
  unsigned char digest[GEV__SHA1_LEN];
  gev__sha1 s;

  gev__sha1_init(&s);
  gev__sha1_update(&s, key, len);
  gev__sha1_update(&s, guid, sizeof(guid) - 1);
  gev__sha1_final(&s, digest);
  gev__b64_encode(digest, sizeof(digest), out);
}

/* ---- parsing a head --------------------------------------------------- */

/* The length of the head at the front of `in` with its blank line; 0
 * while incomplete; -1 when it cannot fit in HEAD_MAX. */
static long head_len(ringbuffer *in)
{
  ssize_t off = ringbuffer_find(in, "\r\n\r\n", 4);

  if (off < 0)
    return ringbuffer_len(in) >= HEAD_MAX ? -1 : 0;
  return off + 4 > HEAD_MAX ? -1 : (long)off + 4;
}

static span trim(const char *p, const char *end)
{
  while (p < end && (*p == ' ' || *p == '\t'))
    p++;
  while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
    end--;
  return (span){p, (size_t)(end - p)};
}

static bool token_char(char c)
{
  return c > 32 && c < 127 && !strchr("\"(),/:;<=>?@[\\]{}", c);
}

/* The first line: three parts split at the first two spaces. */
static int first_line(const char *p, const char *eol, head *h)
{
  for (int i = 0; i < 2; i++) {
    const char *sp = memchr(p, ' ', (size_t)(eol - p));

    if (!sp || sp == p)
      return -1;
    h->first[i] = (span){p, (size_t)(sp - p)};
    p = sp + 1;
  }
  h->first[2] = (span){p, (size_t)(eol - p)};
  return 0;
}

/* Header lines "name: value"; no obsolete line folding. */
static int header_line(const char *p, const char *eol, head *h)
{
  const char *colon = memchr(p, ':', (size_t)(eol - p));

  if (!colon || colon == p || h->count == HEADERS_MAX)
    return -1;
  for (const char *q = p; q < colon; q++)
    if (!token_char(*q))
      return -1;
  h->name[h->count] = (span){p, (size_t)(colon - p)};
  h->value[h->count] = trim(colon + 1, eol);
  h->count++;
  return 0;
}

/* No control character in a line but HTAB (RFC 7230 3.2): a bare LF
 * would otherwise stay inside a value, and a value the server echoes
 * (the subprotocol) could then carry a header line of the peer's own. */
static bool line_chars_ok(const char *p, const char *eol)
{
  for (; p < eol; p++)
    if (((unsigned char)*p < 32 && *p != '\t') || *p == 127)
      return false;
  return true;
}

static int parse_head(const char *p, size_t n, head *h)
{
  const char *end = p + n - 2; /* the blank line's CRLF */
  bool first = true;

  h->count = 0;
  while (p < end) {
    const char *eol = memchr(p, '\r', (size_t)(end - p));

    if (!eol || eol[1] != '\n' || !line_chars_ok(p, eol))
      return -1;
    if (first ? first_line(p, eol, h) : header_line(p, eol, h))
      return -1;
    first = false;
    p = eol + 2;
  }
  return first ? -1 : 0;
}

static bool span_is(span s, const char *lit)
{
  return s.n == strlen(lit) && strncasecmp(s.p, lit, s.n) == 0;
}

/* Case matters: the method, the HTTP version and base64 values. */
static bool span_eq(span s, const char *lit)
{
  return s.n == strlen(lit) && memcmp(s.p, lit, s.n) == 0;
}

/* The index of header @p name from @p from on, or -1. */
static int find(const head *h, const char *name, size_t from)
{
  for (size_t i = from; i < h->count; i++)
    if (span_is(h->name[i], name))
      return (int)i;
  return -1;
}

static int count(const head *h, const char *name)
{
  int n = 0;

  for (int i = find(h, name, 0); i >= 0; i = find(h, name, (size_t)i + 1))
    n++;
  return n;
}

/* Calls fn on each comma-separated, trimmed element of every @p name
 * header; stops at fn's first true. */
static bool each_token(const head *h, const char *name,
                       bool (*fn)(span t, void *arg), void *arg)
{
  for (int i = find(h, name, 0); i >= 0; i = find(h, name, (size_t)i + 1)) {
    const char *p = h->value[i].p, *end = p + h->value[i].n;

    while (p <= end) {
      const char *comma = memchr(p, ',', (size_t)(end - p));
      const char *stop = comma ? comma : end;
      span t = trim(p, stop);

      if (t.n && fn(t, arg))
        return true;
      p = stop + 1;
    }
  }
  return false;
}

static bool token_is(span t, void *arg)
{
  return span_is(t, arg);
}

static bool has_token(const head *h, const char *name, const char *tok)
{
  return each_token(h, name, token_is, (void *)tok);
}

/* ---- the server ------------------------------------------------------- */

typedef struct offers {
  char buf[512];
  size_t used;
  const char *list[PROTOCOLS_MAX];
  size_t n;
} offers;

static bool add_offer(span t, void *arg)
{
  offers *o = arg;

  if (o->n == PROTOCOLS_MAX || o->used + t.n + 1 > sizeof(o->buf))
    return true; /* the rest are not offered */
  for (size_t i = 0; i < t.n; i++)
    if (!token_char(t.p[i]))
      return false; /* not a token (4.1): not offered */
  memcpy(o->buf + o->used, t.p, t.n);
  o->buf[o->used + t.n] = '\0';
  o->list[o->n++] = o->buf + o->used;
  o->used += t.n + 1;
  return false;
}

/* The subprotocol the handler picks; "" for none, NULL on ENOMEM. */
static char *pick_protocol(gev_ws *ws, const head *h)
{
  offers o = {.n = 0};
  const char *pick = NULL;

  if (ws->o.select_protocol) {
    each_token(h, "Sec-WebSocket-Protocol", add_offer, &o);
    if (o.n)
      pick = ws->o.select_protocol(o.list, o.n, ws->o.arg);
    for (size_t i = 0; pick && i < o.n; i++)
      if (strcmp(pick, o.list[i]) == 0)
        return strdup(pick);
  }
  return strdup(""); /* none offered, or the handler's pick was not */
}

static char *origin_of(const head *h)
{
  int i = find(h, "Origin", 0);

  return i < 0 ? NULL : strndup(h->value[i].p, h->value[i].n);
}

/* 101 when the request is a valid version-13 upgrade; else the status to
 * answer. Fills the accept value. */
static int check_request(gev_ws *ws, const head *h, char accept[29])
{
  unsigned char key[20];
  int k = find(h, "Sec-WebSocket-Key", 0), v;

  if (!span_eq(h->first[0], "GET"))
    return 400;
  if (h->first[2].n != 8 || strncmp(h->first[2].p, "HTTP/1.", 7) ||
      h->first[2].p[7] < '1' || h->first[2].p[7] > '9')
    return 400; /* 4.1: HTTP/1.1 or later */
  if (count(h, "Host") != 1)
    return 400;
  if (!has_token(h, "Upgrade", "websocket") ||
      !has_token(h, "Connection", "upgrade"))
    return 426;
  v = find(h, "Sec-WebSocket-Version", 0);
  if (v < 0 || count(h, "Sec-WebSocket-Version") != 1 ||
      !span_is(h->value[v], "13"))
    return 426;
  if (k < 0 || count(h, "Sec-WebSocket-Key") != 1 ||
      gev__b64_decode(h->value[k].p, h->value[k].n, key, sizeof(key)) != 16)
    return 400;
  if (ws->o.check_origin) {
    char *origin = origin_of(h);
    bool ok = ws->o.check_origin(origin, ws->o.arg);

    free(origin);
    if (!ok)
      return 403;
  }
  gev__ws_accept_key(h->value[k].p, h->value[k].n, accept);
  return 101;
}

static void refuse(ringbuffer *out, int status)
{
  char buf[256];
  const char *why = status == 426   ? "Upgrade Required"
                    : status == 403 ? "Forbidden"
                    : status == 500 ? "Internal Server Error"
                                    : "Bad Request";
  int n = snprintf(buf, sizeof(buf),
                   "HTTP/1.1 %d %s\r\n%sConnection: close\r\n"
                   "Content-Length: 0\r\n\r\n",
                   status, why,
                   status == 426 ? "Upgrade: websocket\r\n"
                                   "Sec-WebSocket-Version: 13\r\n"
                                 : "");

  ringbuffer_write(out, buf, (size_t)n); /* -ENOBUFS: closed all the same */
}

static int accept_request(gev_ws *ws, const head *h, const char *accept,
                          ringbuffer *out)
{
  char buf[512];
  int n;

  ws->path = strndup(h->first[1].p, h->first[1].n);
  ws->protocol = pick_protocol(ws, h);
  if (!ws->path || !ws->protocol)
    return 500;
  n = snprintf(buf, sizeof(buf),
               "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\n"
               "%s%s%s\r\n",
               accept, *ws->protocol ? "Sec-WebSocket-Protocol: " : "",
               ws->protocol, *ws->protocol ? "\r\n" : "");
  if (n < 0 || (size_t)n >= sizeof(buf) ||
      ringbuffer_write(out, buf, (size_t)n) < 0)
    return 500;
  return 101;
}

int gev__ws_server_handshake(gev_ws *ws, ringbuffer *in, ringbuffer *out)
{
  long n = head_len(in);
  char accept[29];
  head h;
  int status;

  if (n == 0)
    return 0;
  if (n < 0) {
    refuse(out, 400);
    return -1;
  }
  const char *p = ringbuffer_linearize(in, (size_t)n);
  status = !p || parse_head(p, (size_t)n, &h) < 0
               ? 400
               : check_request(ws, &h, accept);
  if (status == 101)
    status = accept_request(ws, &h, accept, out);
  ringbuffer_retrieve(in, (size_t)n);
  if (status != 101) {
    refuse(out, status);
    return -1;
  }
  return 1;
}

/* ---- the client ------------------------------------------------------- */

int gev__ws_client_request(gev_ws *ws, const char *hostport, const char *path)
{
  unsigned char raw[16];
  char key[GEV__B64_ENCODED_LEN(16)];
  const char *proto = ws->o.protocols, *origin = ws->o.origin;
  size_t cap;

  if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
    return -EIO;
  gev__b64_encode(raw, sizeof(raw), key);
  gev__ws_accept_key(key, strlen(key), ws->accept);
  cap = strlen(hostport) + strlen(path) + (proto ? strlen(proto) : 0) +
        (origin ? strlen(origin) : 0) + 256;
  if (!(ws->request = malloc(cap)) || !(ws->path = strdup(path)))
    return -ENOMEM;
  snprintf(ws->request, cap,
           "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
           "Sec-WebSocket-Version: 13\r\n%s%s%s%s%s%s\r\n",
           path, hostport, key, proto ? "Sec-WebSocket-Protocol: " : "",
           proto ? proto : "", proto ? "\r\n" : "", origin ? "Origin: " : "",
           origin ? origin : "", origin ? "\r\n" : "");
  return 0;
}

static bool offered(span t, void *arg)
{
  return span_is(t, arg);
}

/* 4.1's checks of the server's answer; the agreed subprotocol copied. */
static bool check_answer(gev_ws *ws, const head *h)
{
  int a = find(h, "Sec-WebSocket-Accept", 0), p;
  char pick[256];

  if (!span_eq(h->first[0], "HTTP/1.1") || !span_eq(h->first[1], "101"))
    return false;
  if (!has_token(h, "Upgrade", "websocket") ||
      !has_token(h, "Connection", "upgrade"))
    return false;
  if (a < 0 || !span_eq(h->value[a], ws->accept))
    return false;
  if (find(h, "Sec-WebSocket-Extensions", 0) >= 0)
    return false; /* none was offered */
  p = find(h, "Sec-WebSocket-Protocol", 0);
  if (p >= 0) {
    head offer = {.count = 1};

    if (!ws->o.protocols || h->value[p].n >= sizeof(pick))
      return false;
    memcpy(pick, h->value[p].p, h->value[p].n);
    pick[h->value[p].n] = '\0';
    offer.name[0] = (span){"p", 1};
    offer.value[0] = (span){ws->o.protocols, strlen(ws->o.protocols)};
    if (!each_token(&offer, "p", offered, pick))
      return false; /* not one we asked for */
  }
  ws->protocol = strdup(p >= 0 ? pick : "");
  return ws->protocol != NULL;
}

int gev__ws_client_handshake(gev_ws *ws, ringbuffer *in)
{
  long n = head_len(in);
  const char *p;
  head h;
  bool ok;

  if (n == 0)
    return 0;
  p = n > 0 ? ringbuffer_linearize(in, (size_t)n) : NULL;
  ok = p && parse_head(p, (size_t)n, &h) == 0 && check_answer(ws, &h);
  if (n > 0)
    ringbuffer_retrieve(in, (size_t)n);
  if (!ok) {
    ws->hs_err = -EPROTO;
    return -1;
  }
  return 1;
}
