/* fuzz-ringbuffer.c - libFuzzer target: the input is a program of ring
 * buffer operations, run against a plain array as the reference FIFO.
 * Any difference, crash or sanitizer report is a finding. */
#include <gev/ringbuffer.h>

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
  static unsigned char *store; /* one model buffer for every run */
  model m = {.v = store ? store : (store = malloc(MODEL_MAX))};
  ringbuffer *rb = ringbuffer_new(take(&data, &size, 1));

  if (!rb || !m.v)
    abort();
  for (size_t i = 0; i < sizeof(fill); i++)
    fill[i] = (unsigned char)(i * 7 + 3);
  while (size > 0) {
    size_t cap0 = ringbuffer_cap(rb);
    unsigned op = (unsigned)take(&data, &size, 1) % 8;
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
    }
    check_same(rb, &m, cap0);
  }
out:
  ringbuffer_free(rb);
  return 0;
}
