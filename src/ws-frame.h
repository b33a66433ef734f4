/* ws-frame.h - internal: the RFC 6455 wire format with no connection
 * attached: frame headers (parse and build, also from a ring buffer),
 * masking, incremental UTF-8 validation and close-code rules. Pure
 * functions, so the fuzz target and the unit tests reach them without a
 * socket. */
#ifndef GEV_SRC_WS_FRAME_H
#define GEV_SRC_WS_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <gev/ringbuffer.h>

/* The longest header: 2 bytes, an 8-byte length, a 4-byte mask. */
#define GEV__WS_MAX_HEADER 14
/* Control frames carry at most this much (RFC 6455 5.5). */
#define GEV__WS_MAX_CONTROL 125

typedef struct gev__ws_header {
  bool fin;
  bool masked;
  unsigned opcode;
  unsigned char mask[4];
  uint64_t len; /* payload bytes; never above 2^63 - 1 */
  size_t size;  /* bytes of the header itself */
} gev__ws_header;

/* Parses the header at p[0..n). Returns its size (> 0) when complete, 0
 * when more bytes are needed (never reading past n), or the negative close
 * code that fails the connection: -1002 for reserved bits, an unknown
 * opcode, a fragmented or long control frame, a length with its top
 * bit set or in more bytes than needed (5.2: 126 for a length below 126,
 * 127 for one below 65536). Masking rules depend on the side: the caller checks
 * them. */
int gev__ws_parse_header(const unsigned char *p, size_t n, gev__ws_header *h);

/* The usual frame of a client's echo traffic, in a 6-byte header: FIN,
 * no RSV bit, text or binary, masked, a length below 126 (h[0..2) is
 * read). The receive path takes such frames without the parser, so this
 * must accept only headers the parser accepts alike (fuzz-ws checks). */
static inline bool gev__ws_short_masked(const unsigned char *h)
{
  return (h[0] == 0x81 || h[0] == 0x82) && h[1] >= 0x80 && h[1] < 0x80 + 126;
}

/* As gev__ws_parse_header for the header at the front of @p in, also
 * when the ring wraps inside it (at most GEV__WS_MAX_HEADER bytes are
 * copied then); gev__ws_short_masked frames by a shortcut. *front (when
 * not NULL) gets the start of the ring's first contiguous segment and
 * *front_len its length (every byte in `in` up to the wrap), so a frame
 * lying there whole needs no ringbuffer_linearize. */
int gev__ws_peek_header(ringbuffer *in, gev__ws_header *fh,
                        unsigned char **front, size_t *front_len);

/* Writes a header for a frame of len bytes to out (room for
 * GEV__WS_MAX_HEADER); mask NULL for an unmasked frame. Returns its size. */
size_t gev__ws_build_header(unsigned char *out, unsigned opcode, bool fin,
                            uint64_t len, const unsigned char *mask);

/* XORs p[0..n) with the mask, starting at mask byte `offset` (the payload
 * position mod 4, for payloads unmasked piece by piece). */
void gev__ws_unmask(unsigned char *p, size_t n, const unsigned char mask[4],
                    size_t offset);

/* Incremental UTF-8 validation (RFC 3629: no overlongs, no surrogates,
 * nothing above U+10FFFF). Zero-initialize; feed the bytes in any pieces. */
typedef struct gev__utf8 {
  unsigned char need;   /* continuation bytes still due */
  unsigned char lo, hi; /* the allowed range of the next one */
} gev__utf8;

/* false at the first byte that cannot be part of valid UTF-8 (so a
 * message fails as soon as that byte arrives). */
bool gev__utf8_feed(gev__utf8 *u, const unsigned char *p, size_t n);
/* true when the bytes so far end on a character boundary. */
static inline bool gev__utf8_complete(const gev__utf8 *u)
{
  return u->need == 0;
}
/* The whole of p[0..n) is valid UTF-8. */
bool gev__utf8_valid(const void *p, size_t n);

/* true for a close code a peer may send (RFC 6455 7.4, IANA registry). */
bool gev__ws_close_code_ok(unsigned code);

#endif
