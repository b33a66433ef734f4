/* frame.h - length-prefixed frames: a 4-byte big-endian payload length,
 * then the payload.
 *
 * Pure functions over a ring buffer or bytes: no I/O, no allocation, so a
 * fuzzer can drive them directly and the client shares them with the
 * server. */
#ifndef GEV_EX_FRAME_H
#define GEV_EX_FRAME_H

#include <gev/ringbuffer.h>

#include <stddef.h>
#include <stdint.h>

#define FRAME_HEADER 4

typedef enum {
  FRAME_INCOMPLETE = 0, /* wait for more bytes */
  FRAME_READY = 1,      /* header plus payload are all in the buffer */
  FRAME_TOO_BIG = -1    /* the header announces more than the maximum */
} frame_status;

/* Looks at the frame at the front of @p in without consuming anything.
 * *len receives the payload length as soon as the header is complete,
 * also with FRAME_INCOMPLETE and FRAME_TOO_BIG. The header may straddle
 * the ring buffer's wrap. */
frame_status frame_next(const ringbuffer *in, size_t max, uint32_t *len);

/* Encodes @p len as a frame header. */
void frame_put_header(uint8_t hdr[FRAME_HEADER], uint32_t len);

/* Decodes a frame header. */
uint32_t frame_get_header(const uint8_t hdr[FRAME_HEADER]);

/* Reverses n bytes in place: the reply payload is the request payload
 * reversed, which proves the server saw the right frame boundaries. */
void frame_reverse(uint8_t *p, size_t n);

#endif
