/* base64.c - RFC 4648 base64. The decoder is strict (canonical padding,
 * zero pad bits): the handshake key is 16 bytes exactly or it is refused. */
#include "base64.h"

#include <stdbool.h>

static const char alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t gev__b64_encode(const void *p, size_t n, char *out)
{
  const unsigned char *q = p;
  size_t o = 0;

  for (size_t i = 0; i < n; i += 3) {
    unsigned long v = (unsigned long)q[i] << 16;
    size_t left = n - i;

    if (left > 1)
      v |= (unsigned long)q[i + 1] << 8;
    if (left > 2)
      v |= q[i + 2];
    out[o++] = alphabet[(v >> 18) & 63];
    out[o++] = alphabet[(v >> 12) & 63];
    out[o++] = left > 1 ? alphabet[(v >> 6) & 63] : '=';
    out[o++] = left > 2 ? alphabet[v & 63] : '=';
  }
  out[o] = '\0';
  return o;
}

static int value(char c)
{
  if (c >= 'A' && c <= 'Z')
    return c - 'A';
  if (c >= 'a' && c <= 'z')
    return c - 'a' + 26;
  if (c >= '0' && c <= '9')
    return c - '0' + 52;
  if (c == '+')
    return 62;
  if (c == '/')
    return 63;
  return -1;
}

/* One group of four characters; pads are only allowed in the last group. */
static int group(const char *s, bool last, unsigned char b[3], size_t *nb)
{
  int v[4], pads = 0;

  for (int i = 0; i < 4; i++) {
    v[i] = value(s[i]);
    if (v[i] < 0) {
      if (s[i] != '=' || !last || i < 2)
        return -1;
      pads++;
      v[i] = 0;
    } else if (pads) {
      return -1; /* data after a pad */
    }
  }
  unsigned long x = (unsigned long)v[0] << 18 | (unsigned long)v[1] << 12 |
                    (unsigned long)v[2] << 6 | (unsigned long)v[3];
  if ((pads == 1 && (x & 0xff)) || (pads == 2 && (x & 0xffff)))
    return -1; /* non-zero pad bits: not canonical */
  b[0] = (unsigned char)(x >> 16);
  b[1] = (unsigned char)(x >> 8);
  b[2] = (unsigned char)x;
  *nb = 3 - (size_t)pads;
  return 0;
}

long gev__b64_decode(const char *s, size_t len, unsigned char *out, size_t cap)
{
  size_t o = 0;

  if (len % 4)
    return -1;
  for (size_t i = 0; i < len; i += 4) {
    unsigned char b[3];
    size_t nb;

    if (group(s + i, i + 4 == len, b, &nb) < 0 || o + nb > cap)
      return -1;
    for (size_t k = 0; k < nb; k++)
      out[o++] = b[k];
  }
  return (long)o;
}
