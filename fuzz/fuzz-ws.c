/* fuzz-ws.c - libFuzzer target for the WebSocket wire format (src/ws-frame.c)
 * and the opening handshake parsers (src/ws-handshake.c). The first byte
 * picks the mode:
 *   0: a stream of frames. Each header is parsed from every prefix too (a
 *      prefix must ask for more, never misparse: byte-by-byte safety) and
 *      from a ring buffer that wraps inside it (gev__ws_peek_header, whose
 *      shortcut for the common frame must agree with the parser), the
 *      length is checked against what is left before anything is taken,
 *      payloads are unmasked in two pieces and compared with one pass, and
 *      text is UTF-8-checked piecewise and whole, which must agree;
 *   1: the rest is a client's request to a server;
 *   2: the rest is a server's answer to a client.
 * The handshake input sits in a ring buffer whose contents wrap. */
#include "ws-internal.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The header at p, read from a ring whose first segment ends `at` bytes
 * into it, must parse as it does in one piece (r, h). */
static void peek_agrees(const uint8_t *p, size_t n, size_t at, int r,
                        const gev__ws_header *h)
{
  static const uint8_t pad[128];
  size_t take = n < GEV__WS_MAX_HEADER ? n : GEV__WS_MAX_HEADER;
  ringbuffer *rb = ringbuffer_new(64);
  gev__ws_header hr;

  if (!rb)
    abort();
  size_t cap = ringbuffer_cap(rb);
  if (cap > sizeof(pad))
    abort();
  at %= take + 1;
  /* The front at cap - at: the header's first `at` bytes end the ring
   * (one filler byte stays until it is in: an empty ring rewinds). */
  if (ringbuffer_write(rb, pad, cap - at) != 0)
    abort();
  ringbuffer_retrieve(rb, cap - at - 1);
  if (ringbuffer_write(rb, p, take) != 0)
    abort();
  ringbuffer_retrieve(rb, 1);
  if (ringbuffer_cap(rb) != cap)
    abort(); /* it grew instead of wrapping: the case tests nothing */
  int rr = gev__ws_peek_header(rb, &hr, NULL, NULL);
  if (rr != r)
    abort();
  if (r > 0 &&
      (hr.fin != h->fin || hr.masked != h->masked || hr.opcode != h->opcode ||
       hr.len != h->len || hr.size != h->size ||
       (h->masked && memcmp(hr.mask, h->mask, 4) != 0)))
    abort();
  ringbuffer_free(rb);
}

static void frames(const uint8_t *p, size_t n)
{
  while (n > 0) {
    gev__ws_header h, hp;
    int r = gev__ws_parse_header(p, n, &h);

    peek_agrees(p, n, n > 1 ? p[n - 1] : 0, r, &h);

    for (size_t k = 0; k < n && k < (r > 0 ? (size_t)r : GEV__WS_MAX_HEADER);
         k++) {
      int rp = gev__ws_parse_header(p, k, &hp);
      if (rp > 0 || (r < 0 && rp < 0 && rp != r))
        abort(); /* a prefix decided, or decided differently */
    }
    if (r <= 0)
      return;
    if (h.size != (size_t)r || h.len > INT64_MAX ||
        (h.opcode >= 8 && (h.len > GEV__WS_MAX_CONTROL || !h.fin)))
      abort();
    p += r;
    n -= (size_t)r;
    if (h.len > n)
      return; /* would wait for more: never trust the length */
    size_t len = (size_t)h.len, cut = len ? p[0] % (len + 1) : 0;
    unsigned char *a = malloc(len + 1), *b = malloc(len + 1);
    if (!a || !b)
      abort();
    memcpy(a, p, len);
    memcpy(b, p, len);
    gev__ws_unmask(a, len, h.mask, 0);
    gev__ws_unmask(b, cut, h.mask, 0);
    gev__ws_unmask(b + cut, len - cut, h.mask, cut & 3);
    if (memcmp(a, b, len) != 0)
      abort();
    gev__utf8 u = {0};
    bool piecewise = gev__utf8_feed(&u, a, cut) &&
                     gev__utf8_feed(&u, a + cut, len - cut) &&
                     gev__utf8_complete(&u);
    if (piecewise != gev__utf8_valid(a, len))
      abort();
    if (len >= 2)
      (void)gev__ws_close_code_ok((unsigned)a[0] << 8 | a[1]);
    unsigned char hb[GEV__WS_MAX_HEADER];
    size_t hl = gev__ws_build_header(hb, h.opcode, h.fin, h.len,
                                     h.masked ? h.mask : NULL);
    if (gev__ws_parse_header(hb, hl, &hp) != (int)hl || hp.len != h.len)
      abort(); /* what we build, we parse back */
    free(a);
    free(b);
    p += len;
    n -= len;
  }
}

static const char *pick(const char *const *offered, size_t n, void *arg)
{
  (void)arg;
  return offered[n - 1];
}

static bool origin(const char *o, void *arg)
{
  (void)arg;
  return !o || o[0] != 'x';
}

static void handshake(const uint8_t *p, size_t n, bool client)
{
  gev_ws ws;
  ringbuffer *in = ringbuffer_new(64), *out = ringbuffer_new(64);
  static const uint8_t pad[61];

  if (!in || !out)
    abort();
  memset(&ws, 0, sizeof(ws));
  ws.client = client;
  ws.o.select_protocol = pick;
  ws.o.check_origin = origin;
  ws.o.protocols = "chat, superchat";
  memcpy(ws.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", 29);
  ringbuffer_write(in, pad, sizeof(pad)); /* the head will wrap */
  ringbuffer_retrieve(in, sizeof(pad));
  ringbuffer_write(in, p, n);
  if (client)
    gev__ws_client_handshake(&ws, in);
  else
    gev__ws_server_handshake(&ws, in, out);
  free(ws.path);
  free(ws.protocol);
  ringbuffer_free(in);
  ringbuffer_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  if (size < 1)
    return 0;
  switch (data[0] % 3) {
  case 0: frames(data + 1, size - 1); break;
  case 1: handshake(data + 1, size - 1, false); break;
  default: handshake(data + 1, size - 1, true); break;
  }
  return 0;
}
