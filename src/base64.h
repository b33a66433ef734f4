/* base64.h - internal: base64 (RFC 4648 section 4, with padding), for the
 * WebSocket handshake's key and accept values. */
#ifndef GEV_SRC_BASE64_H
#define GEV_SRC_BASE64_H

#include <stddef.h>

/* Bytes needed to encode n bytes, with the terminating NUL. */
#define GEV__B64_ENCODED_LEN(n) (((n) + 2) / 3 * 4 + 1)

/* Writes the encoding of p[0..n) and a NUL to out; returns its length. */
size_t gev__b64_encode(const void *p, size_t n, char *out);

/* Decodes s[0..len) (padding required, no whitespace) into out, which has
 * room for cap bytes; returns the decoded length, or -1 when s is not
 * canonical base64 or does not fit. */
long gev__b64_decode(const char *s, size_t len, unsigned char *out, size_t cap);

#endif
