/* frame.c - the framers and encoders of <gev/frame.h>.
 *
 * Only the ring buffer's public functions are used, so the file also
 * builds alone with ringbuffer.c (the fuzz target does that). */
#include <gev/frame.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>

static bool field_size_ok(unsigned size)
{
  return size == 1 || size == 2 || size == 4 || size == 8;
}

/* Segments of n stored bytes from offset off (off + n <= len). */
static void segments_at(const ringbuffer *in, size_t off, size_t n,
                        struct iovec seg[2])
{
  struct iovec all[2];
  size_t a;

  seg[1] = (struct iovec){NULL, 0};
  if (n == 0) {
    seg[0] = seg[1];
    return;
  }
  ringbuffer_peek(in, off + n, all);
  a = all[0].iov_len;
  if (off >= a) {
    seg[0] = (struct iovec){(char *)all[1].iov_base + (off - a), n};
  } else if (off + n <= a) {
    seg[0] = (struct iovec){(char *)all[0].iov_base + off, n};
  } else {
    seg[0] = (struct iovec){(char *)all[0].iov_base + off, a - off};
    seg[1] = (struct iovec){all[1].iov_base, n - (a - off)};
  }
}

/* The length field (known to be stored), whichever way it wraps. */
static uint64_t read_field(const ringbuffer *in, const gev_frame_length *sp)
{
  unsigned char b[8];
  struct iovec seg[2];
  uint64_t v = 0;

  segments_at(in, sp->offset, sp->size, seg);
  memcpy(b, seg[0].iov_base, seg[0].iov_len);
  if (seg[1].iov_len)
    memcpy(b + seg[0].iov_len, seg[1].iov_base, seg[1].iov_len);
  for (unsigned i = 0; i < sp->size; i++)
    v = v << 8 | b[sp->little_endian ? sp->size - 1 - i : i];
  return v;
}

static void found(const ringbuffer *in, gev_frame *f, size_t header,
                  size_t payload, size_t size)
{
  f->header = header;
  f->payload = payload;
  f->size = size;
  segments_at(in, header, payload, f->seg);
  f->scanned_ = f->seen_ = 0;
}

int gev_frame_length_next(const ringbuffer *in, const gev_frame_length *sp,
                          gev_frame *f)
{
  size_t hdr, len;
  uint64_t v, payload;

  if (!in || !sp || !f || !field_size_ok(sp->size) || sp->offset > SIZE_MAX - 8)
    return -EINVAL;
  f->size = 0;
  hdr = sp->offset + sp->size;
  len = ringbuffer_len(in);
  if (len < hdr)
    return 0;
  v = read_field(in, sp);
  if (sp->includes_header && v < hdr)
    return -EPROTO;
  payload = sp->includes_header ? v - hdr : v;
  if (payload > SIZE_MAX - hdr)
    return -EMSGSIZE;
  if (sp->max_frame && hdr + payload > sp->max_frame)
    return -EMSGSIZE;
  f->size = hdr + (size_t)payload;
  if (len < f->size)
    return 0;
  found(in, f, hdr, (size_t)payload, f->size);
  return 1;
}

/* Where the search resumes: the place f remembers, unless the buffer got
 * shorter since (bytes left it some other way). */
static size_t resume_at(const gev_frame *f, size_t len)
{
  return f->seen_ <= len && f->scanned_ <= len ? f->scanned_ : 0;
}

int gev_frame_delim_next(const ringbuffer *in, const gev_frame_delim *sp,
                         gev_frame *f)
{
  size_t m, len, from;
  ssize_t at;

  if (!in || !sp || !f || !sp->delim || sp->delim_len == 0)
    return -EINVAL;
  m = sp->delim_len;
  len = ringbuffer_len(in);
  from = resume_at(f, len);
  f->size = 0;
  at = ringbuffer_find_from(in, from, sp->delim, m);
  if (at < 0) {
    /* A delimiter may begin in the last m - 1 bytes searched. */
    f->scanned_ = len >= m ? len - (m - 1) : 0;
    f->seen_ = len;
    return sp->max_frame && len >= sp->max_frame ? -EMSGSIZE : 0;
  }
  if (sp->max_frame && (sp->max_frame < m || (size_t)at > sp->max_frame - m))
    return -EMSGSIZE;
  found(in, f, 0, (size_t)at, (size_t)at + m);
  return 1;
}

void *gev_frame_linearize(ringbuffer *in, gev_frame *f)
{
  char *p;

  if (!in || !f || f->size == 0 || f->size > ringbuffer_len(in))
    return NULL;
  p = ringbuffer_linearize(in, f->size);
  f->seg[0] = (struct iovec){p + f->header, f->payload};
  f->seg[1] = (struct iovec){NULL, 0};
  return p + f->header;
}

void gev_frame_consume(ringbuffer *in, const gev_frame *f)
{
  if (in && f)
    ringbuffer_retrieve(in, f->size);
}

/* The length field's value for an n-byte payload, or -EMSGSIZE. */
static int field_value(const gev_frame_length *sp, size_t n, uint64_t *v)
{
  size_t hdr = sp->offset + sp->size;
  uint64_t max = sp->size == 8 ? UINT64_MAX : (1ull << (8 * sp->size)) - 1;

  if (n > SIZE_MAX - hdr || (sp->max_frame && hdr + n > sp->max_frame))
    return -EMSGSIZE;
  *v = sp->includes_header ? (uint64_t)(hdr + n) : (uint64_t)n;
  return *v > max ? -EMSGSIZE : 0;
}

static void put_zeros(ringbuffer *out, size_t n)
{
  static const unsigned char zeros[64];

  for (; n > sizeof(zeros); n -= sizeof(zeros))
    ringbuffer_write(out, zeros, sizeof(zeros));
  ringbuffer_write(out, zeros, n);
}

int gev_frame_length_put(ringbuffer *out, const gev_frame_length *sp,
                         const void *prefix, const void *payload, size_t n)
{
  unsigned char b[8];
  uint64_t v;
  int err;

  if (!out || !sp || !field_size_ok(sp->size) || (!payload && n) ||
      sp->offset > SIZE_MAX - 8)
    return -EINVAL;
  if ((err = field_value(sp, n, &v)) < 0)
    return err;
  /* Room first: the pieces below then cannot fail one by one. */
  if ((err = ringbuffer_reserve(out, sp->offset + sp->size + n)) < 0)
    return err;
  for (unsigned i = 0; i < sp->size; i++) {
    unsigned shift = 8 * (sp->little_endian ? i : sp->size - 1 - i);
    b[i] = (unsigned char)(v >> shift);
  }
  if (prefix)
    ringbuffer_write(out, prefix, sp->offset);
  else
    put_zeros(out, sp->offset);
  ringbuffer_write(out, b, sp->size);
  ringbuffer_write(out, payload, n);
  return 0;
}

int gev_frame_delim_put(ringbuffer *out, const gev_frame_delim *sp,
                        const void *payload, size_t n)
{
  size_t m;
  int err;

  if (!out || !sp || !sp->delim || sp->delim_len == 0 || (!payload && n))
    return -EINVAL;
  m = sp->delim_len;
  if (n > SIZE_MAX - m || (sp->max_frame && n + m > sp->max_frame))
    return -EMSGSIZE;
  if ((err = ringbuffer_reserve(out, n + m)) < 0)
    return err;
  ringbuffer_write(out, payload, n);
  ringbuffer_write(out, sp->delim, m);
  return 0;
}
