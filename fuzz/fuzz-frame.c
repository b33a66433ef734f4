/* fuzz-frame.c - libFuzzer target for the framing example: frames are
 * read out of a ring buffer whose contents straddle the wrap. Checks every
 * verdict against the bytes. */
#include "framing/frame.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  ringbuffer *rb;
  size_t max, skew;
  uint32_t len;

  if (size < 3)
    return 0;
  max = (size_t)data[0] * 16;
  skew = data[1] % 64; /* where the wrap falls */
  data += 2;
  size -= 2;
  rb = ringbuffer_new(64);
  if (!rb)
    abort();
  /* Move the head so that the data wraps. */
  static const uint8_t pad[64];
  ringbuffer_write(rb, pad, skew);
  ringbuffer_retrieve(rb, skew);
  ringbuffer_write(rb, data, size);
  while (ringbuffer_len(rb) > 0) {
    frame_status st = frame_next(rb, max, &len);
    size_t have = ringbuffer_len(rb);
    if (st == FRAME_INCOMPLETE) {
      if (have >= FRAME_HEADER && (len > max || have >= FRAME_HEADER + len))
        abort();
      break;
    }
    if (st == FRAME_TOO_BIG) {
      if (have < FRAME_HEADER || len <= max)
        abort();
      break;
    }
    if (len > max || have < FRAME_HEADER + (size_t)len)
      abort();
    uint8_t hdr[FRAME_HEADER];
    ringbuffer_read(rb, hdr, FRAME_HEADER);
    if (frame_get_header(hdr) != len)
      abort();
    ringbuffer_retrieve(rb, len);
  }
  ringbuffer_free(rb);
  return 0;
}
