/* test-frame.c - <gev/frame.h>: the length and delimiter framers against
 * simple reference parsers over a flat copy of the same bytes, with the
 * stream fed in two pieces split at every byte (headers and delimiters
 * too) and one byte at a time, in ring buffers whose contents wrap; the
 * encoders against a reference encoder; the limits. */
#include "helpers.h"

#include <gev/frame.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static uint32_t rng = 1;

/* Rounds of the randomized tests: fewer under valgrind (its test setup
 * sets the timeout multiplier). */
static int rounds(int n)
{
  return getenv("CK_TIMEOUT_MULTIPLIER") ? n / 5 : n;
}

static uint32_t rnd(uint32_t n)
{
  rng ^= rng << 13;
  rng ^= rng >> 17;
  rng ^= rng << 5;
  return n ? rng % n : 0;
}

/* ---- the references --------------------------------------------------- */

typedef struct verdict {
  int st; /* as the framers return */
  size_t header, payload, size;
} verdict;

static verdict ref_length(const unsigned char *p, size_t n,
                          const gev_frame_length *sp)
{
  size_t hdr = sp->offset + sp->size;
  unsigned long long v = 0;
  verdict r = {0, 0, 0, 0};

  if (n < hdr)
    return r;
  for (unsigned i = 0; i < sp->size; i++) {
    unsigned idx = sp->little_endian ? sp->size - 1 - i : i;
    v = v * 256 + p[sp->offset + idx];
  }
  if (sp->includes_header && v < hdr)
    return (verdict){-EPROTO, 0, 0, 0};
  if (sp->includes_header)
    v -= hdr;
  if (v > SIZE_MAX - hdr || (sp->max_frame && hdr + v > sp->max_frame))
    return (verdict){-EMSGSIZE, 0, 0, 0};
  r.size = hdr + (size_t)v;
  if (n < r.size)
    return r;
  return (verdict){1, hdr, (size_t)v, r.size};
}

static verdict ref_delim(const unsigned char *p, size_t n,
                         const gev_frame_delim *sp)
{
  size_t m = sp->delim_len;

  for (size_t i = 0; i + m <= n; i++) {
    if (memcmp(p + i, sp->delim, m) == 0) {
      if (sp->max_frame && i + m > sp->max_frame)
        return (verdict){-EMSGSIZE, 0, 0, 0};
      return (verdict){1, 0, i, i + m};
    }
  }
  if (sp->max_frame && n >= sp->max_frame)
    return (verdict){-EMSGSIZE, 0, 0, 0};
  return (verdict){0, 0, 0, 0};
}

/* Checks in the hot loops that cost nothing while they pass (Check's own
 * asserts message the parent process each time). */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      ck_abort_msg("check failed: %s", #cond);                                 \
  } while (0)
#define EQ(a, b) CHECK((a) == (b))

/* ---- the harness ------------------------------------------------------ */

typedef struct spec {
  bool delim;
  gev_frame_length len;
  gev_frame_delim del;
} spec;

static verdict framer(const ringbuffer *rb, const spec *s, gev_frame *f)
{
  int st = s->delim ? gev_frame_delim_next(rb, &s->del, f)
                    : gev_frame_length_next(rb, &s->len, f);
  verdict v = {st, 0, 0, 0};

  if (st == 1)
    v = (verdict){1, f->header, f->payload, f->size};
  else if (st == 0 && !s->delim)
    v.size = f->size;
  return v;
}

/* The frames and the first error found in a stream fed in pieces. */
typedef struct result {
  size_t nframes;
  size_t off[64], len[64]; /* payloads, as offsets into the stream */
  int error;
} result;

/* Every frame the buffer holds now, each verdict checked against the
 * reference on a flat copy; false once an error was reported. */
static bool pump(ringbuffer *rb, const spec *s, gev_frame *keep, size_t *pos,
                 result *res)
{
  for (;;) {
    unsigned char flat[4096];
    size_t n = ringbuffer_len(rb);
    gev_frame fresh = {0}, *f = keep ? keep : &fresh;
    verdict want, got;

    CHECK(n <= sizeof(flat));
    {
      struct iovec seg[2];
      ringbuffer_peek(rb, n, seg);
      if (seg[0].iov_len)
        memcpy(flat, seg[0].iov_base, seg[0].iov_len);
      if (seg[1].iov_len)
        memcpy(flat + seg[0].iov_len, seg[1].iov_base, seg[1].iov_len);
    }
    want =
        s->delim ? ref_delim(flat, n, &s->del) : ref_length(flat, n, &s->len);
    got = framer(rb, s, f);
    EQ(got.st, want.st);
    EQ(got.size, want.size);
    if (got.st < 0) {
      res->error = got.st;
      return false;
    }
    if (got.st == 0)
      return true;
    EQ(got.header, want.header);
    EQ(got.payload, want.payload);
    /* The segments hold exactly the payload's bytes. */
    EQ(f->seg[0].iov_len + f->seg[1].iov_len, got.payload);
    if (f->seg[0].iov_len)
      CHECK(memcmp(f->seg[0].iov_base, flat + got.header, f->seg[0].iov_len) ==
            0);
    if (f->seg[1].iov_len)
      CHECK(memcmp(f->seg[1].iov_base, flat + got.header + f->seg[0].iov_len,
                   f->seg[1].iov_len) == 0);
    CHECK(res->nframes < 64);
    res->off[res->nframes] = *pos + got.header;
    res->len[res->nframes++] = got.payload;
    if (rnd(2)) { /* linearizing gives the same bytes, contiguous */
      unsigned char *p = gev_frame_linearize(rb, f);
      CHECK(NULL != p);
      CHECK(got.payload == 0 || memcmp(p, flat + got.header, got.payload) == 0);
      EQ(f->seg[1].iov_len, 0);
    }
    gev_frame_consume(rb, f);
    *pos += got.size;
  }
}

/* A buffer of small capacity whose head sits at `skew`, so that contents
 * wrap early and often. */
static ringbuffer *skewed(size_t skew)
{
  static const unsigned char pad[16];
  ringbuffer *rb = ringbuffer_new(16);

  CHECK(NULL != rb);
  EQ(ringbuffer_write(rb, pad, skew % 16), 0);
  ringbuffer_retrieve(rb, skew % 16);
  return rb;
}

/* Feeds stream[0..n) in the given cuts; every verdict on the way is
 * checked; the frames and error are returned. */
static void feed(const unsigned char *p, size_t n, const size_t *cuts,
                 size_t ncuts, const spec *s, bool keep, result *res)
{
  ringbuffer *rb = skewed(rnd(16));
  gev_frame kept = {0};
  size_t at = 0, pos = 0;

  memset(res, 0, sizeof(*res));
  for (size_t i = 0; i <= ncuts; i++) {
    size_t end = i < ncuts ? cuts[i] : n;
    EQ(ringbuffer_write(rb, p + at, end - at), 0);
    at = end;
    if (!pump(rb, s, keep ? &kept : NULL, &pos, res))
      break;
  }
  ringbuffer_free(rb);
}

static void same_result(const result *a, const result *b)
{
  EQ(a->nframes, b->nframes);
  EQ(a->error, b->error);
  for (size_t i = 0; i < a->nframes; i++) {
    EQ(a->off[i], b->off[i]);
    EQ(a->len[i], b->len[i]);
  }
}

/* The stream whole, split at every byte, and a byte at a time: the same
 * frames each time. */
static void every_split(const unsigned char *p, size_t n, const spec *s,
                        result *whole)
{
  size_t *bytes = malloc((n ? n : 1) * sizeof(*bytes));
  result r;

  CHECK(NULL != bytes);
  feed(p, n, NULL, 0, s, false, whole);
  for (size_t k = 0; k <= n; k++) {
    feed(p, n, &k, 1, s, k % 2, &r);
    same_result(&r, whole);
  }
  for (size_t i = 0; i < n; i++)
    bytes[i] = i + 1;
  feed(p, n, bytes, n ? n - 1 : 0, s, true, &r);
  same_result(&r, whole);
  feed(p, n, bytes, n ? n - 1 : 0, s, false, &r);
  same_result(&r, whole);
  free(bytes);
}

/* ---- the length framer ------------------------------------------------ */

/* The reference encoder: byte by byte. */
static size_t ref_put_length(unsigned char *o, const gev_frame_length *sp,
                             const unsigned char *pay, size_t n)
{
  size_t hdr = sp->offset + sp->size, k = 0;
  unsigned long long v = sp->includes_header ? hdr + n : n;

  for (size_t i = 0; i < sp->offset; i++)
    o[k++] = (unsigned char)(0xa0 + i);
  for (unsigned i = 0; i < sp->size; i++) {
    unsigned byte = sp->little_endian ? i : sp->size - 1 - i;
    o[k++] = (unsigned char)(v >> (8 * byte));
  }
  memcpy(o + k, pay, n);
  return k + n;
}

static void random_length_spec(spec *s)
{
  static const unsigned sizes[] = {1, 2, 4, 8};

  memset(s, 0, sizeof(*s));
  s->len.offset = rnd(4);
  s->len.size = sizes[rnd(4)];
  s->len.little_endian = rnd(2);
  s->len.includes_header = rnd(2);
  s->len.max_frame = rnd(3) == 0 ? 10 + rnd(40) : 0;
}

START_TEST(test_length_random)
{
  rng = 0x1234567u;
  for (int round = 0; round < rounds(150); round++) {
    unsigned char stream[1024], pay[64], prefix[4] = {0xa0, 0xa1, 0xa2, 0xa3};
    size_t n = 0, nf = 1 + rnd(8), want_off[16], want_len[16];
    ringbuffer *enc = ringbuffer_new(0);
    result whole;
    spec s;

    random_length_spec(&s);
    for (size_t i = 0; i < nf; i++) {
      size_t len = rnd(s.len.size == 1 ? 40 : 60);
      if (s.len.size == 1 && s.len.includes_header)
        len = rnd(40);
      for (size_t j = 0; j < len; j++)
        pay[j] = (unsigned char)rnd(256);
      want_off[i] = n + s.len.offset + s.len.size;
      want_len[i] = len;
      n += ref_put_length(stream + n, &s.len, pay, len);
      /* The library's encoder writes the same bytes, unless the frame
       * is over the maximum (then nothing). */
      {
        gev_frame_length nomax = s.len;
        nomax.max_frame = 0;
        ck_assert_int_eq(gev_frame_length_put(enc, &nomax, prefix, pay, len),
                         0);
      }
    }
    {
      unsigned char got[1024];
      ck_assert_uint_eq(ringbuffer_len(enc), n);
      ringbuffer_read(enc, got, n);
      ck_assert(memcmp(got, stream, n) == 0);
    }
    ringbuffer_free(enc);
    every_split(stream, n, &s, &whole);
    /* Without a maximum, every frame comes out as encoded. */
    if (!s.len.max_frame) {
      ck_assert_int_eq(whole.error, 0);
      ck_assert_uint_eq(whole.nframes, nf);
      for (size_t i = 0; i < nf; i++) {
        ck_assert_uint_eq(whole.off[i], want_off[i]);
        ck_assert_uint_eq(whole.len[i], want_len[i]);
      }
    }
  }
}
END_TEST

/* Random bytes: headers that announce anything (malformed, huge). */
START_TEST(test_length_garbage)
{
  rng = 0xdeadbeefu;
  for (int round = 0; round < rounds(200); round++) {
    unsigned char stream[64];
    size_t n = rnd(sizeof(stream));
    result whole;
    spec s;

    random_length_spec(&s);
    for (size_t i = 0; i < n; i++)
      stream[i] = (unsigned char)(rnd(4) ? rnd(8) : rnd(256));
    every_split(stream, n, &s, &whole);
  }
}
END_TEST

START_TEST(test_length_limits)
{
  gev_frame_length be4 = {.size = 4, .max_frame = 4 + 100};
  gev_frame_length le8 = {.size = 8, .little_endian = true};
  gev_frame_length incl = {.size = 2, .includes_header = true};
  ringbuffer *rb = ringbuffer_new(0);
  unsigned char hdr8[8];
  gev_frame f;

  /* Exactly the maximum passes, one more is refused as soon as the header
   * is in, before any payload. */
  ck_assert_int_eq(ringbuffer_write(rb, "\0\0\0\x64", 4), 0);
  ck_assert_int_eq(gev_frame_length_next(rb, &be4, &f), 0);
  ck_assert_uint_eq(f.size, 104);
  ringbuffer_retrieve_all(rb);
  ck_assert_int_eq(ringbuffer_write(rb, "\0\0\0\x65", 4), 0);
  ck_assert_int_eq(gev_frame_length_next(rb, &be4, &f), -EMSGSIZE);
  ringbuffer_retrieve_all(rb);
  /* A 64-bit length past SIZE_MAX. */
  memset(hdr8, 0xff, 8);
  ck_assert_int_eq(ringbuffer_write(rb, hdr8, 8), 0);
  ck_assert_int_eq(gev_frame_length_next(rb, &le8, &f), -EMSGSIZE);
  ringbuffer_retrieve_all(rb);
  /* A length that includes the header but is smaller than it. */
  ck_assert_int_eq(ringbuffer_write(rb, "\0\x01", 2), 0);
  ck_assert_int_eq(gev_frame_length_next(rb, &incl, &f), -EPROTO);
  ringbuffer_retrieve_all(rb);
  ck_assert_int_eq(ringbuffer_write(rb, "\0\x02", 2), 0);
  ck_assert_int_eq(gev_frame_length_next(rb, &incl, &f), 1);
  ck_assert_uint_eq(f.payload, 0);
  ringbuffer_retrieve_all(rb);
  /* Bad specs and arguments. */
  be4.size = 3;
  ck_assert_int_eq(gev_frame_length_next(rb, &be4, &f), -EINVAL);
  ck_assert_int_eq(gev_frame_length_put(rb, &be4, NULL, "x", 1), -EINVAL);
  ck_assert_int_eq(gev_frame_length_next(NULL, &le8, &f), -EINVAL);
  /* The encoder: a length the field cannot hold, the maximum, the
   * buffer's limit; all leave the buffer as it was. */
  {
    gev_frame_length one = {.size = 1}, lim = {.size = 2, .max_frame = 10};
    static unsigned char big[300];
    ck_assert_int_eq(gev_frame_length_put(rb, &one, NULL, big, 255), 0);
    ck_assert_uint_eq(ringbuffer_len(rb), 256);
    ringbuffer_retrieve_all(rb);
    ck_assert_int_eq(gev_frame_length_put(rb, &one, NULL, big, 256), -EMSGSIZE);
    ck_assert_int_eq(gev_frame_length_put(rb, &lim, NULL, big, 9), -EMSGSIZE);
    ck_assert_int_eq(gev_frame_length_put(rb, &lim, NULL, big, 8), 0);
    ck_assert_uint_eq(ringbuffer_len(rb), 10);
    ringbuffer_set_limit(rb, 19);
    ck_assert_int_eq(gev_frame_length_put(rb, &lim, NULL, big, 8), -ENOBUFS);
    ck_assert_uint_eq(ringbuffer_len(rb), 10);
    /* Zeros before the field without a prefix. */
    {
      gev_frame_length off = {.offset = 3, .size = 1};
      unsigned char got[5];
      ringbuffer_set_limit(rb, 0);
      ringbuffer_retrieve_all(rb);
      ck_assert_int_eq(gev_frame_length_put(rb, &off, NULL, "z", 1), 0);
      ck_assert_uint_eq(ringbuffer_read(rb, got, 5), 5);
      ck_assert(memcmp(got, "\0\0\0\x01z", 5) == 0);
    }
  }
  ringbuffer_free(rb);
}
END_TEST

/* ---- the delimiter framer --------------------------------------------- */

START_TEST(test_delim_random)
{
  static const char *const delims[] = {"\r\n", "\n", "\r\n\r\n", "aba",
                                       "aa",   "b",  "abab"};
  rng = 0x7777u;
  for (int round = 0; round < rounds(200); round++) {
    unsigned char stream[512];
    const char *d = delims[rnd(7)];
    size_t n = 0, nf = 1 + rnd(8);
    ringbuffer *enc = ringbuffer_new(0);
    result whole;
    spec s = {.delim = true};

    s.del.delim = d;
    s.del.delim_len = strlen(d);
    s.del.max_frame = rnd(3) == 0 ? 4 + rnd(30) : 0;
    /* Payloads over a small alphabet, which makes partial and
     * overlapping delimiters common; a payload may even hold a whole
     * one, which the reference splits the same way. */
    for (size_t i = 0; i < nf; i++) {
      unsigned char pay[40];
      size_t len = rnd(sizeof(pay));
      for (size_t j = 0; j < len; j++)
        pay[j] = (unsigned char)"ab\r\nx"[rnd(5)];
      ck_assert_int_eq(gev_frame_delim_put(
                           enc, &(gev_frame_delim){d, strlen(d), 0}, pay, len),
                       0);
      memcpy(stream + n, pay, len);
      memcpy(stream + n + len, d, strlen(d));
      n += len + strlen(d);
    }
    if (rnd(2)) /* a partial frame at the end */
      stream[n++] = 'x';
    else
      ck_assert_int_eq(ringbuffer_len(enc), n);
    {
      unsigned char got[512];
      size_t m = ringbuffer_read(enc, got, sizeof(got));
      ck_assert(memcmp(got, stream, m) == 0);
    }
    ringbuffer_free(enc);
    every_split(stream, n, &s, &whole);
  }
}
END_TEST

START_TEST(test_delim_limits)
{
  gev_frame_delim crlf = {"\r\n", 2, 8};
  ringbuffer *rb = ringbuffer_new(0);
  gev_frame f = {0};

  /* A frame of exactly the maximum (6 + 2) passes. */
  ck_assert_int_eq(ringbuffer_write(rb, "123456\r\n", 8), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), 1);
  ck_assert_uint_eq(f.payload, 6);
  gev_frame_consume(rb, &f);
  /* Eight bytes without a delimiter: refused before more arrive. */
  ck_assert_int_eq(ringbuffer_write(rb, "1234567", 7), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), 0);
  ck_assert_int_eq(ringbuffer_write(rb, "\r", 1), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), -EMSGSIZE);
  ringbuffer_retrieve_all(rb);
  /* A delimiter past the maximum, all in one read. */
  memset(&f, 0, sizeof(f));
  ck_assert_int_eq(ringbuffer_write(rb, "1234567\r\n", 9), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), -EMSGSIZE);
  ringbuffer_retrieve_all(rb);
  /* The kept place forgets itself when the buffer got shorter. */
  memset(&f, 0, sizeof(f));
  crlf.max_frame = 0;
  ck_assert_int_eq(ringbuffer_write(rb, "abcdef", 6), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), 0);
  ringbuffer_retrieve_all(rb);
  ck_assert_int_eq(ringbuffer_write(rb, "\r\n", 2), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), 1);
  ck_assert_uint_eq(f.payload, 0);
  /* The encoder: the maximum, and the buffer's limit. */
  ringbuffer_retrieve_all(rb);
  crlf.max_frame = 4;
  ck_assert_int_eq(gev_frame_delim_put(rb, &crlf, "abc", 3), -EMSGSIZE);
  ck_assert_int_eq(gev_frame_delim_put(rb, &crlf, "ab", 2), 0);
  ringbuffer_set_limit(rb, 5);
  ck_assert_int_eq(gev_frame_delim_put(rb, &crlf, "a", 1), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_len(rb), 4);
  crlf.delim_len = 0;
  ck_assert_int_eq(gev_frame_delim_next(rb, &crlf, &f), -EINVAL);
  ck_assert_int_eq(gev_frame_delim_put(rb, &crlf, "a", 1), -EINVAL);
  ringbuffer_free(rb);
}
END_TEST

/* The kept place makes the search linear: a long line in one-byte pieces
 * looks at each byte a bounded number of times. Counted through
 * ringbuffer_find_from's own arguments: the place only moves forward. */
START_TEST(test_delim_resumes)
{
  gev_frame_delim nl = {"\n", 1, 0};
  ringbuffer *rb = ringbuffer_new(0);
  gev_frame f = {0};

  for (int i = 0; i < 1000; i++) {
    ck_assert_int_eq(ringbuffer_write(rb, "x", 1), 0);
    ck_assert_int_eq(gev_frame_delim_next(rb, &nl, &f), 0);
    ck_assert_uint_eq(f.scanned_, (size_t)i + 1);
  }
  ck_assert_int_eq(ringbuffer_write(rb, "\n", 1), 0);
  ck_assert_int_eq(gev_frame_delim_next(rb, &nl, &f), 1);
  ck_assert_uint_eq(f.payload, 1000);
  ck_assert_uint_eq(f.scanned_, 0);
  ringbuffer_free(rb);
}
END_TEST

int main(void)
{
  const th_case cases[] = {
      {"length_random", test_length_random, 120},
      {"length_garbage", test_length_garbage, 120},
      {"length_limits", test_length_limits, 30},
      {"delim_random", test_delim_random, 120},
      {"delim_limits", test_delim_limits, 30},
      {"delim_resumes", test_delim_resumes, 30},
  };

  return th_run(th_suite("frame", cases, sizeof(cases) / sizeof(cases[0])));
}
