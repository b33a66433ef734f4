/* frame.h - the framing example's wire format, for its verifying client:
 * a 4-byte big-endian payload length, then the payload. The server reads
 * and writes frames with the library's framer (<gev/frame.h>); the client
 * keeps this byte-level code of its own, so that the two sides check each
 * other instead of sharing a mistake. */
#ifndef GEV_EX_FRAME_H
#define GEV_EX_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4

/* Encodes @p len as a frame header. */
void frame_put_header(uint8_t hdr[FRAME_HEADER], uint32_t len);

/* Decodes a frame header. */
uint32_t frame_get_header(const uint8_t hdr[FRAME_HEADER]);

/* Reverses n bytes in place: the reply payload is the request payload
 * reversed, which proves the server saw the right frame boundaries. */
void frame_reverse(uint8_t *p, size_t n);

#endif
