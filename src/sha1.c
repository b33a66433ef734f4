/* sha1.c - SHA-1 as RFC 3174 section 6 describes it (method 1: the 80-word
 * schedule). Written for the handshake only: a few dozen bytes per
 * connection, so clarity wins over speed. */
#include "sha1.h"

#include <string.h>

static uint32_t rol(uint32_t x, unsigned n)
{
  return (x << n) | (x >> (32 - n));
}

static uint32_t be32(const unsigned char *p)
{
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 |
         p[3];
}

/* f(t; B, C, D) and K(t) of RFC 3174 section 5, by round group. */
static uint32_t mix(unsigned t, uint32_t b, uint32_t c, uint32_t d, uint32_t *k)
{
  if (t < 20) {
    *k = 0x5A827999u;
    return (b & c) | (~b & d);
  }
  if (t < 40) {
    *k = 0x6ED9EBA1u;
    return b ^ c ^ d;
  }
  if (t < 60) {
    *k = 0x8F1BBCDCu;
    return (b & c) | (b & d) | (c & d);
  }
  *k = 0xCA62C1D6u;
  return b ^ c ^ d;
}

static void compress(uint32_t h[5], const unsigned char block[64])
{
  uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];

  for (unsigned t = 0; t < 16; t++)
    w[t] = be32(block + 4 * t);
  for (unsigned t = 16; t < 80; t++)
    w[t] = rol(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);
  for (unsigned t = 0; t < 80; t++) {
    uint32_t k, f = mix(t, b, c, d, &k);
    uint32_t tmp = rol(a, 5) + f + e + w[t] + k;

    e = d;
    d = c;
    c = rol(b, 30);
    b = a;
    a = tmp;
  }
  h[0] += a;
  h[1] += b;
  h[2] += c;
  h[3] += d;
  h[4] += e;
}

void gev__sha1_init(gev__sha1 *s)
{
  static const uint32_t iv[5] = {0x67452301u, 0xEFCDAB89u, 0x98BADCFEu,
                                 0x10325476u, 0xC3D2E1F0u};

  memcpy(s->h, iv, sizeof(iv));
  s->total = 0;
  s->used = 0;
}

void gev__sha1_update(gev__sha1 *s, const void *p, size_t n)
{
  const unsigned char *q = p;

  s->total += n;
  while (n > 0) {
    size_t take = 64 - s->used < n ? 64 - s->used : n;

    memcpy(s->block + s->used, q, take);
    s->used += take;
    q += take;
    n -= take;
    if (s->used == 64) {
      compress(s->h, s->block);
      s->used = 0;
    }
  }
}

/* Padding: a 1 bit, zeros up to 56 mod 64, the length in bits (64-bit big
 * endian). */
void gev__sha1_final(gev__sha1 *s, unsigned char out[GEV__SHA1_LEN])
{
  uint64_t bits = s->total * 8;
  unsigned char len[8], one = 0x80, zero = 0;

  for (int i = 0; i < 8; i++)
    len[i] = (unsigned char)(bits >> (56 - 8 * i));
  gev__sha1_update(s, &one, 1);
  while (s->used != 56)
    gev__sha1_update(s, &zero, 1);
  gev__sha1_update(s, len, 8);
  for (int i = 0; i < 5; i++) {
    out[4 * i] = (unsigned char)(s->h[i] >> 24);
    out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
    out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
    out[4 * i + 3] = (unsigned char)s->h[i];
  }
}
