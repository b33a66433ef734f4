/* fuzz-frame.c - libFuzzer target for <gev/frame.h>: the input picks a
 * framer and its spec, where the ring buffer wraps and how the rest of the
 * bytes arrive (in pieces of the sizes it names); every verdict is checked
 * against a plain reference parser over a flat copy, and every frame's
 * segments against the bytes. */
#include <gev/frame.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct verdict {
  int st;
  size_t header, payload, size;
} verdict;

static verdict ref_length(const uint8_t *p, size_t n,
                          const gev_frame_length *sp)
{
  size_t hdr = sp->offset + sp->size;
  unsigned long long v = 0;

  if (n < hdr)
    return (verdict){0, 0, 0, 0};
  for (unsigned i = 0; i < sp->size; i++)
    v = v * 256 + p[sp->offset + (sp->little_endian ? sp->size - 1 - i : i)];
  if (sp->includes_header && v < hdr)
    return (verdict){-EPROTO, 0, 0, 0};
  if (sp->includes_header)
    v -= hdr;
  if (v > SIZE_MAX - hdr || (sp->max_frame && hdr + v > sp->max_frame))
    return (verdict){-EMSGSIZE, 0, 0, 0};
  if (n < hdr + v)
    return (verdict){0, 0, 0, hdr + (size_t)v};
  return (verdict){1, hdr, (size_t)v, hdr + (size_t)v};
}

static verdict ref_delim(const uint8_t *p, size_t n, const gev_frame_delim *sp)
{
  size_t m = sp->delim_len;

  for (size_t i = 0; i + m <= n; i++)
    if (memcmp(p + i, sp->delim, m) == 0) {
      if (sp->max_frame && i + m > sp->max_frame)
        return (verdict){-EMSGSIZE, 0, 0, 0};
      return (verdict){1, 0, i, i + m};
    }
  if (sp->max_frame && n >= sp->max_frame)
    return (verdict){-EMSGSIZE, 0, 0, 0};
  return (verdict){0, 0, 0, 0};
}

static void check(bool ok)
{
  if (!ok)
    abort();
}

/* Takes every whole frame out of rb, checking each verdict; false after
 * an error verdict. */
static bool drain(ringbuffer *rb, bool delim, const gev_frame_length *ls,
                  const gev_frame_delim *ds, gev_frame *kept, uint8_t *flat)
{
  for (;;) {
    struct iovec seg[2];
    size_t n = ringbuffer_peek(rb, ringbuffer_len(rb), seg);
    verdict want;
    int st;

    if (seg[0].iov_len)
      memcpy(flat, seg[0].iov_base, seg[0].iov_len);
    if (seg[1].iov_len)
      memcpy(flat + seg[0].iov_len, seg[1].iov_base, seg[1].iov_len);
    want = delim ? ref_delim(flat, n, ds) : ref_length(flat, n, ls);
    st = delim ? gev_frame_delim_next(rb, ds, kept)
               : gev_frame_length_next(rb, ls, kept);
    check(st == want.st);
    if (st < 0)
      return false;
    if (!delim)
      check(kept->size == want.size);
    if (st == 0)
      return true;
    check(kept->header == want.header && kept->payload == want.payload &&
          kept->size == want.size);
    check(kept->seg[0].iov_len + kept->seg[1].iov_len == want.payload);
    check(!kept->seg[0].iov_len ||
          !memcmp(kept->seg[0].iov_base, flat + want.header,
                  kept->seg[0].iov_len));
    check(!kept->seg[1].iov_len ||
          !memcmp(kept->seg[1].iov_base,
                  flat + want.header + kept->seg[0].iov_len,
                  kept->seg[1].iov_len));
    gev_frame_consume(rb, kept);
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static const unsigned sizes[] = {1, 2, 4, 8};
  static const uint8_t pad[64];
  gev_frame_length ls = {0};
  gev_frame_delim ds = {0};
  gev_frame kept = {0};
  uint8_t *flat;
  ringbuffer *rb;
  bool delim;

  if (size < 8)
    return 0;
  delim = data[0] & 1;
  ls.size = sizes[(data[0] >> 1) & 3];
  ls.little_endian = data[0] & 8;
  ls.includes_header = data[0] & 16;
  ls.offset = data[1] % 4;
  ls.max_frame = data[2] & 1 ? 0 : (size_t)data[2] * 4;
  ds.delim = data + 4;
  ds.delim_len = 1 + data[3] % 3;
  ds.max_frame = ls.max_frame;
  rb = ringbuffer_new(64);
  flat = malloc(size);
  if (!rb || !flat)
    abort();
  /* Move the head so that the contents wrap. */
  ringbuffer_write(rb, pad, data[3] % 64);
  ringbuffer_retrieve(rb, data[3] % 64);
  data += 4 + ds.delim_len;
  size -= 4 + ds.delim_len;
  /* Each piece: one length byte (1..16), then that many bytes. */
  while (size > 0) {
    size_t n = 1 + data[0] % 16;
    data++, size--;
    if (n > size)
      n = size;
    if (ringbuffer_write(rb, data, n) < 0)
      abort();
    data += n, size -= n;
    if (!drain(rb, delim, &ls, &ds, &kept, flat))
      break;
  }
  ringbuffer_free(rb);
  free(flat);
  return 0;
}
