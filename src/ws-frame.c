/* ws-frame.c - see ws-frame.h. Nothing here allocates or keeps state
 * beyond what the caller passes in. */
#include "ws-frame.h"

#include <string.h>
#include <sys/uio.h>

static bool opcode_known(unsigned op)
{
  return op <= 2 || (op >= 8 && op <= 10);
}

int gev__ws_parse_header(const unsigned char *p, size_t n, gev__ws_header *h)
{
  size_t need = 2;
  unsigned len7;

  if (n < 2)
    return 0;
  h->fin = p[0] & 0x80;
  h->opcode = p[0] & 0x0f;
  h->masked = p[1] & 0x80;
  len7 = p[1] & 0x7f;
  if ((p[0] & 0x70) || !opcode_known(h->opcode))
    return -1002; /* no extension was negotiated: RSV bits must be 0 */
  if (h->opcode >= 8 && (!h->fin || len7 > GEV__WS_MAX_CONTROL))
    return -1002;
  need += len7 == 126 ? 2 : len7 == 127 ? 8 : 0;
  need += h->masked ? 4 : 0;
  if (n < need)
    return 0;
  if (len7 == 126) {
    h->len = (uint64_t)p[2] << 8 | p[3];
    if (h->len < 126)
      return -1002; /* 5.2: the minimal number of bytes must be used */
  } else if (len7 == 127) {
    if (p[2] & 0x80)
      return -1002; /* 5.2: the most significant bit must be 0 */
    h->len = 0;
    for (int i = 0; i < 8; i++)
      h->len = h->len << 8 | p[2 + i];
    if (h->len <= 0xffff)
      return -1002; /* not minimal: 126 would have done */
  } else {
    h->len = len7;
  }
  if (h->masked)
    memcpy(h->mask, p + need - 4, 4);
  h->size = need;
  return (int)need;
}

size_t gev__ws_build_header(unsigned char *out, unsigned opcode, bool fin,
                            uint64_t len, const unsigned char *mask)
{
  size_t k = 2;

  out[0] = (unsigned char)((fin ? 0x80 : 0) | (opcode & 0x0f));
  if (len < 126) {
    out[1] = (unsigned char)len;
  } else if (len <= 0xffff) {
    out[1] = 126;
    out[2] = (unsigned char)(len >> 8);
    out[3] = (unsigned char)len;
    k = 4;
  } else {
    out[1] = 127;
    for (int i = 0; i < 8; i++)
      out[2 + i] = (unsigned char)(len >> (56 - 8 * i));
    k = 10;
  }
  if (mask) {
    out[1] |= 0x80;
    memcpy(out + k, mask, 4);
    k += 4;
  }
  return k;
}

/* Sixteen bytes as one value (GCC and clang vector extension). */
typedef uint64_t vec16 __attribute__((vector_size(16)));

void gev__ws_unmask(unsigned char *p, size_t n, const unsigned char mask[4],
                    size_t offset)
{
  unsigned char m[12];
  size_t i = 0;
  uint64_t w;

  /* The key three times over: the 8 bytes from the offset are the key
   * rotated, and they repeat every 8 as well. */
  memcpy(m, mask, 4);
  memcpy(m + 4, mask, 4);
  memcpy(m + 8, mask, 4);
  memcpy(&w, m + (offset & 3), 8);
  /* 32 bytes a round in two 16-byte vectors (SSE2 on x86-64, NEON on
   * arm64, plain words elsewhere: the compiler's generic vectors), then
   * eight at a time, then the tail byte by byte. */
  if (n >= 32) {
    vec16 wv = {w, w};

    for (; i + 32 <= n; i += 32) {
      vec16 a, b;

      memcpy(&a, p + i, 16);
      memcpy(&b, p + i + 16, 16);
      a ^= wv;
      b ^= wv;
      memcpy(p + i, &a, 16);
      memcpy(p + i + 16, &b, 16);
    }
  }
  for (; i + 8 <= n; i += 8) {
    uint64_t v;

    memcpy(&v, p + i, 8);
    v ^= w;
    memcpy(p + i, &v, 8);
  }
  for (; i < n; i++)
    p[i] ^= m[(offset + i) & 3];
}

/* The lead byte decides how many continuation bytes follow and, for the
 * ones that could start an overlong form, a surrogate or a code point
 * past U+10FFFF, narrows the range of the first continuation byte. */
static bool lead(gev__utf8 *u, unsigned char b)
{
  u->lo = 0x80;
  u->hi = 0xbf;
  if (b >= 0xc2 && b <= 0xdf)
    u->need = 1;
  else if (b >= 0xe0 && b <= 0xef)
    u->need = 2;
  else if (b >= 0xf0 && b <= 0xf4)
    u->need = 3;
  else
    return false;
  if (b == 0xe0)
    u->lo = 0xa0;
  else if (b == 0xed)
    u->hi = 0x9f;
  else if (b == 0xf0)
    u->lo = 0x90;
  else if (b == 0xf4)
    u->hi = 0x8f;
  return true;
}

bool gev__utf8_feed(gev__utf8 *u, const unsigned char *p, size_t n)
{
  size_t i = 0;

  while (i < n) {
    if (u->need == 0) {
      /* ASCII runs, eight bytes at a time. */
      while (i + 8 <= n) {
        uint64_t v;

        memcpy(&v, p + i, 8);
        if (v & 0x8080808080808080ull)
          break;
        i += 8;
      }
      if (i == n)
        break;
      if (p[i] < 0x80) {
        i++;
        continue;
      }
      if (!lead(u, p[i++]))
        return false;
      continue;
    }
    if (p[i] < u->lo || p[i] > u->hi)
      return false;
    u->lo = 0x80;
    u->hi = 0xbf;
    u->need--;
    i++;
  }
  return true;
}

bool gev__utf8_valid(const void *p, size_t n)
{
  gev__utf8 u = {0};

  return gev__utf8_feed(&u, p, n) && gev__utf8_complete(&u);
}

bool gev__ws_close_code_ok(unsigned code)
{
  if (code >= 3000 && code <= 4999)
    return true; /* registered (3xxx) and private (4xxx) use */
  switch (code) {
  case 1000:
  case 1001:
  case 1002:
  case 1003:
  case 1007:
  case 1008:
  case 1009:
  case 1010:
  case 1011:
  case 1012:
  case 1013:
  case 1014: return true;
  default:
    return false; /* 1004-1006 and 1015 are never sent; the rest reserved */
  }
}

int gev__ws_peek_header(ringbuffer *in, gev__ws_header *fh,
                        unsigned char **front, size_t *front_len)
{
  unsigned char hb[GEV__WS_MAX_HEADER];
  const unsigned char *hp;
  struct iovec seg[2];
  size_t got = ringbuffer_peek(in, ringbuffer_len(in), seg);
  size_t avail = got < sizeof(hb) ? got : sizeof(hb);

  /* Parsed where it lies unless the ring wraps inside it. */
  hp = seg[0].iov_base;
  if (avail > seg[0].iov_len) {
    memcpy(hb, seg[0].iov_base, seg[0].iov_len);
    memcpy(hb + seg[0].iov_len, seg[1].iov_base, avail - seg[0].iov_len);
    hp = hb;
  }
  if (front) {
    *front = seg[0].iov_base;
    *front_len = seg[0].iov_len;
  }
  /* Anything but the usual frame goes through the parser's every check. */
  if (avail >= 6 && gev__ws_short_masked(hp)) {
    fh->fin = true;
    fh->opcode = hp[0] & 0x0f;
    fh->masked = true;
    fh->len = hp[1] & 0x7f;
    memcpy(fh->mask, hp + 2, 4);
    fh->size = 6;
    return 6;
  }
  return gev__ws_parse_header(hp, avail, fh);
}
