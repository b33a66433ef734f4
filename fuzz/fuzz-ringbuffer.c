/* fuzz-ringbuffer.c - libFuzzer target: the input is a program of ring
 * buffer operations, run against a plain array as the reference FIFO.
 * A second buffer (with its own reference) takes part in moves. Any
 * difference, crash or sanitizer report is a finding. */
#include <gev/ringbuffer.h>

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MODEL_MAX (1u << 20)

typedef struct model {
  unsigned char *v;
  size_t len;
  size_t limit;
} model;

static void check_same(const ringbuffer *rb, const model *m, size_t cap0)
{
  struct iovec seg[2];
  size_t n = ringbuffer_peek(rb, m->len, seg);

  if (ringbuffer_len(rb) != m->len || n != m->len ||
      ringbuffer_empty(rb) != (m->len == 0))
    abort();
  if (memcmp(seg[0].iov_base ? seg[0].iov_base : "", m->v, seg[0].iov_len) ||
      memcmp(seg[1].iov_base ? seg[1].iov_base : "", m->v + seg[0].iov_len,
             seg[1].iov_len))
    abort();
  /* Growth stops at the limit (a lower limit does not shrink it). */
  if (m->limit && ringbuffer_cap(rb) > cap0 && ringbuffer_cap(rb) > m->limit)
    abort();
}

static size_t take(const uint8_t **p, size_t *n, size_t bytes)
{
  size_t v = 0;

  for (size_t i = 0; i < bytes && *n; i++, (*p)++, (*n)--)
    v = v << 8 | **p;
  return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  static unsigned char scratch[1 << 16], fill[1 << 16];
  static unsigned char *store, *store2; /* model buffers for every run */
  model m = {.v = store ? store : (store = malloc(MODEL_MAX))};
  model m2 = {.v = store2 ? store2 : (store2 = malloc(MODEL_MAX))};
  ringbuffer *rb = ringbuffer_new(take(&data, &size, 1));
  ringbuffer *side = ringbuffer_new(0);

  if (!rb || !side || !m.v || !m2.v)
    abort();
  for (size_t i = 0; i < sizeof(fill); i++)
    fill[i] = (unsigned char)(i * 7 + 3);
  while (size > 0) {
    size_t cap0 = ringbuffer_cap(rb), cap2 = ringbuffer_cap(side);
    unsigned op = (unsigned)take(&data, &size, 1) % 9;
    size_t arg = take(&data, &size, 2);
    switch (op) {
    case 0: /* write, twice as likely as the others */
    case 1: {
      size_t w = arg % 20000;
      int r = ringbuffer_write(rb, fill, w);
      bool fits = !m.limit || m.len + w <= m.limit;
      if (m.len + w > MODEL_MAX) {
        if (r == 0)
          goto out; /* the model is full: stop here */
        break;
      }
      if ((r == 0) != fits)
        abort();
      if (r == 0) {
        memcpy(m.v + m.len, fill, w);
        m.len += w;
      }
      break;
    }
    case 2: { /* read */
      size_t n = ringbuffer_read(rb, scratch, arg);
      size_t want = arg < m.len ? arg : m.len;
      if (n != want || memcmp(scratch, m.v, n))
        abort();
      memmove(m.v, m.v + n, m.len - n);
      m.len -= n;
      break;
    }
    case 3: { /* retrieve */
      size_t n = arg < m.len ? arg : m.len;
      ringbuffer_retrieve(rb, n);
      memmove(m.v, m.v + n, m.len - n);
      m.len -= n;
      break;
    }
    case 4: { /* linearize */
      size_t n = m.len ? arg % (m.len + 1) : 0;
      unsigned char *p = ringbuffer_linearize(rb, n);
      if (n && (!p || memcmp(p, m.v, n)))
        abort();
      break;
    }
    case 5: { /* find a piece of the content, or a byte string */
      size_t len = (arg >> 8) % 8 + 1;
      ssize_t got;
      if (m.len >= len) {
        size_t at = (arg & 0xff) % (m.len - len + 1);
        unsigned char needle[8];
        memcpy(needle, m.v + at, len);
        got = ringbuffer_find(rb, needle, len);
        ssize_t want = -1;
        for (size_t i = 0; i + len <= m.len; i++)
          if (!memcmp(m.v + i, needle, len)) {
            want = (ssize_t)i;
            break;
          }
        if (got != want)
          abort();
      }
      break;
    }
    case 6: /* limit */
      m.limit = arg % 4 == 0 ? 0 : arg * 4;
      ringbuffer_set_limit(rb, m.limit);
      break;
    case 7: /* shrink */ ringbuffer_shrink(rb, arg); break;
    case 8: { /* move between rb and side, either way; side's limit too */
      bool back = arg & 1, fits;
      ringbuffer *to = back ? rb : side, *from = back ? side : rb;
      model *mt = back ? &m : &m2, *mf = back ? &m2 : &m;
      size_t n = arg >> 1, want = n < mf->len ? n : mf->len;
      ssize_t r;
      if (arg % 7 == 0) {
        m2.limit = arg % 3 ? arg * 2 : 0;
        ringbuffer_set_limit(side, m2.limit);
      }
      fits = !mt->limit || mt->len + want <= mt->limit;
      if (mt->len + want > MODEL_MAX)
        goto out;
      r = ringbuffer_move(to, from, n);
      if (r != (fits ? (ssize_t)want : -ENOBUFS))
        abort();
      if (r > 0) {
        memcpy(mt->v + mt->len, mf->v, want);
        mt->len += want;
        memmove(mf->v, mf->v + want, mf->len - want);
        mf->len -= want;
      }
      /* A move may exchange storage; check_same below still holds each
       * buffer to its limit: neither may receive more capacity than that. */
      break;
    }
    }
    check_same(rb, &m, cap0);
    check_same(side, &m2, cap2);
  }
out:
  ringbuffer_free(rb);
  ringbuffer_free(side);
  return 0;
}
