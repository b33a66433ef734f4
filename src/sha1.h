/* sha1.h - internal: SHA-1 (RFC 3174), only for the WebSocket handshake's
 * Sec-WebSocket-Accept, where it is a checksum, not a security measure. */
#ifndef GEV_SRC_SHA1_H
#define GEV_SRC_SHA1_H

#include <stddef.h>
#include <stdint.h>

#define GEV__SHA1_LEN 20

typedef struct gev__sha1 {
  uint32_t h[5];
  uint64_t total; /* bytes hashed so far */
  unsigned char block[64];
  size_t used; /* bytes waiting in block */
} gev__sha1;

void gev__sha1_init(gev__sha1 *s);
void gev__sha1_update(gev__sha1 *s, const void *p, size_t n);
void gev__sha1_final(gev__sha1 *s, unsigned char out[GEV__SHA1_LEN]);

#endif
