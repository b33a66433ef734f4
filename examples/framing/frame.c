/* frame.c - see frame.h. */
#include "frame.h"

void frame_put_header(uint8_t hdr[FRAME_HEADER], uint32_t len)
{
  hdr[0] = (uint8_t)(len >> 24);
  hdr[1] = (uint8_t)(len >> 16);
  hdr[2] = (uint8_t)(len >> 8);
  hdr[3] = (uint8_t)len;
}

uint32_t frame_get_header(const uint8_t hdr[FRAME_HEADER])
{
  return (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 |
         (uint32_t)hdr[2] << 8 | hdr[3];
}

void frame_reverse(uint8_t *p, size_t n)
{
  for (size_t i = 0, j = n; i + 1 < j; i++, j--) {
    uint8_t t = p[i];
    p[i] = p[j - 1];
    p[j - 1] = t;
  }
}
