/*
 * test-ringbuffer.c - unit and randomized tests of the ring buffer.
 *
 * The ring buffer is tested on its own: this file includes only its public
 * header and libc. Environment: RB_SEED fixes the seed of the randomized
 * test (printed on failure), RB_OPS scales its operation count (valgrind).
 */
#include <gev/ringbuffer.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define RB_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define RB_TEST_ASAN 1
#endif
#endif

#ifdef RB_TEST_ASAN
/* The ENOMEM tests need a failing malloc, not an ASan abort. */
const char *__asan_default_options(void);
const char *__asan_default_options(void)
{
  return "allocator_may_return_null=1";
}
#endif

#if defined(__SANITIZE_THREAD__)
#define RB_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RB_TEST_TSAN 1
#endif
#endif

#ifdef RB_TEST_TSAN
/* The same for ThreadSanitizer's allocator. */
const char *__tsan_default_options(void);
const char *__tsan_default_options(void)
{
  return "allocator_may_return_null=1";
}
#endif

/* Below SSIZE_MAX, yet more than any 64-bit address space holds. */
#define HUGE_SIZE (SIZE_MAX / 4)

/* ---- helpers ----------------------------------------------------------- */

/*
 * An assertion for helpers and hot loops: ck_assert records every passing
 * check (the location of the last one), which is slow under valgrind.
 */
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond))                                                               \
      ck_abort_msg("check failed: %s", #cond);                                 \
  } while (0)

static ringbuffer *mk(size_t cap)
{
  ringbuffer *rb = ringbuffer_new(cap);
  CHECK(rb != NULL);
  return rb;
}

/* Deterministic bytes: the value at stream position i. */
static char pat(size_t i)
{
  return (char)((i * 131u + (i >> 8)) % 251u);
}

static void pattern(char *p, size_t n, size_t start)
{
  for (size_t i = 0; i < n; i++)
    p[i] = pat(start + i);
}

static void write_ok(ringbuffer *rb, const void *p, size_t n)
{
  int rc = ringbuffer_write(rb, p, n);
  if (rc != 0)
    ck_abort_msg("ringbuffer_write(%zu) = %d", n, rc);
}

static void write_str(ringbuffer *rb, const char *s)
{
  write_ok(rb, s, strlen(s));
}

/* Write @p n pattern bytes starting at stream position @p start. */
static void write_pat(ringbuffer *rb, size_t start, size_t n)
{
  char *tmp = malloc(n ? n : 1);
  ck_assert_ptr_nonnull(tmp);
  pattern(tmp, n, start);
  write_ok(rb, tmp, n);
  free(tmp);
}

/* Check the stored bytes equal exp[0..n) without consuming them. */
static void expect_contents(const ringbuffer *rb, const void *exp, size_t n)
{
  struct iovec seg[2];
  CHECK(ringbuffer_len(rb) == n);
  CHECK(ringbuffer_peek(rb, n, seg) == n);
  CHECK(seg[0].iov_len + seg[1].iov_len == n);
  CHECK(seg[0].iov_len == 0 ||
        memcmp(seg[0].iov_base, exp, seg[0].iov_len) == 0);
  CHECK(seg[1].iov_len == 0 ||
        memcmp(seg[1].iov_base, (const char *)exp + seg[0].iov_len,
               seg[1].iov_len) == 0);
}

static void expect_str(const ringbuffer *rb, const char *s)
{
  expect_contents(rb, s, strlen(s));
}

/*
 * A buffer of capacity @p cap whose data starts at index @p head and holds
 * @p len bytes copied from @p data (head is 0 when len is 0).
 */
static ringbuffer *mk_at(size_t cap, size_t head, const char *data, size_t len)
{
  ringbuffer *rb = mk(cap);
  char junk[64] = {0};
  CHECK(head <= sizeof(junk));
  if (len == 0)
    return rb;
  write_ok(rb, junk, head);
  write_ok(rb, data, 1);
  ringbuffer_retrieve(rb, head);
  write_ok(rb, data + 1, len - 1);
  CHECK(ringbuffer_cap(rb) == cap);
  expect_contents(rb, data, len);
  return rb;
}

/* cap 16, head 10, "0123456789": "012345" at 10..15, "6789" at 0..3. */
static ringbuffer *mk_wrapped(void)
{
  return mk_at(16, 10, "0123456789", 10);
}

static void nb_socketpair(int sv[2])
{
  ck_assert_int_eq(
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv),
      0);
}

/* Send all of p[0..n) on a non-blocking socket; it must fit. */
static void send_all(int fd, const char *p, size_t n)
{
  while (n > 0) {
    ssize_t r = send(fd, p, n, MSG_NOSIGNAL);
    ck_assert_msg(r > 0, "send: %s", strerror(errno));
    p += r;
    n -= (size_t)r;
  }
}

/* Read what is pending on a non-blocking fd into dst; returns the count. */
static size_t drain_fd(int fd, char *dst, size_t max)
{
  size_t got = 0;
  while (got < max) {
    ssize_t r = read(fd, dst + got, max - got);
    if (r < 0 && errno == EAGAIN)
      break;
    ck_assert_msg(r > 0, "read: %zd %s", r, strerror(errno));
    got += (size_t)r;
  }
  return got;
}

/* ---- basics ------------------------------------------------------------ */

START_TEST(test_new_free_getters)
{
  struct iovec seg[2];
  ringbuffer *rb = mk(0);
  ck_assert_uint_eq(ringbuffer_cap(rb), 0);
  ck_assert_uint_eq(ringbuffer_len(rb), 0);
  ck_assert(ringbuffer_empty(rb));
  ck_assert_uint_eq(ringbuffer_limit(rb), 0);
  memset(seg, 0xab, sizeof(seg));
  ck_assert_uint_eq(ringbuffer_peek(rb, 10, seg), 0);
  ck_assert_ptr_null(seg[0].iov_base);
  ck_assert_uint_eq(seg[0].iov_len, 0);
  ck_assert_ptr_null(seg[1].iov_base);
  ck_assert_uint_eq(seg[1].iov_len, 0);
  ck_assert_ptr_null(ringbuffer_linearize(rb, 0));
  ck_assert_int_eq(ringbuffer_find(rb, "a", 1), -1);
  ck_assert_uint_eq(ringbuffer_read(rb, NULL, 0), 0);
  ringbuffer_retrieve(rb, 5);
  ringbuffer_retrieve_all(rb);
  /* A zero-length write allocates nothing. */
  ck_assert_int_eq(ringbuffer_write(rb, NULL, 0), 0);
  ck_assert_uint_eq(ringbuffer_cap(rb), 0);
  ringbuffer_free(rb);

  rb = mk(100);
  ck_assert_uint_ge(ringbuffer_cap(rb), 100);
  ck_assert(ringbuffer_empty(rb));
  ringbuffer_set_limit(rb, 1234);
  ck_assert_uint_eq(ringbuffer_limit(rb), 1234);
  ringbuffer_set_limit(rb, 0);
  ck_assert_uint_eq(ringbuffer_limit(rb), 0);
  ringbuffer_free(rb);
  ringbuffer_free(NULL);
}
END_TEST

START_TEST(test_write_read)
{
  char out[32];
  ringbuffer *rb = mk(0);
  write_str(rb, "hello world");
  ck_assert_uint_eq(ringbuffer_len(rb), 11);
  ck_assert(!ringbuffer_empty(rb));
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  ck_assert_uint_eq(ringbuffer_read(rb, out, 5), 5);
  ck_assert_mem_eq(out, "hello", 5);
  ck_assert_uint_eq(ringbuffer_len(rb), 6);
  ck_assert_uint_eq(ringbuffer_read(rb, out, sizeof(out)), 6);
  ck_assert_mem_eq(out, " world", 6);
  ck_assert(ringbuffer_empty(rb));
  ck_assert_uint_eq(ringbuffer_read(rb, out, sizeof(out)), 0);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_peek_one_segment)
{
  struct iovec seg[2];
  ringbuffer *rb = mk(32);
  write_str(rb, "abcdefghij");
  memset(seg, 0xab, sizeof(seg));
  ck_assert_uint_eq(ringbuffer_peek(rb, 100, seg), 10);
  ck_assert_uint_eq(seg[0].iov_len, 10);
  ck_assert_mem_eq(seg[0].iov_base, "abcdefghij", 10);
  ck_assert_ptr_null(seg[1].iov_base);
  ck_assert_uint_eq(seg[1].iov_len, 0);
  ck_assert_uint_eq(ringbuffer_peek(rb, 4, seg), 4);
  ck_assert_uint_eq(seg[0].iov_len, 4);
  ck_assert_uint_eq(seg[1].iov_len, 0);
  memset(seg, 0xab, sizeof(seg));
  ck_assert_uint_eq(ringbuffer_peek(rb, 0, seg), 0);
  ck_assert_ptr_null(seg[0].iov_base);
  ck_assert_uint_eq(seg[0].iov_len, 0);
  ck_assert_ptr_null(seg[1].iov_base);
  ck_assert_uint_eq(seg[1].iov_len, 0);
  /* Peeking consumes nothing. */
  expect_str(rb, "abcdefghij");
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_peek_two_segments)
{
  struct iovec seg[2];
  ringbuffer *rb = mk_wrapped();
  ck_assert_uint_eq(ringbuffer_peek(rb, 10, seg), 10);
  ck_assert_uint_eq(seg[0].iov_len, 6);
  ck_assert_mem_eq(seg[0].iov_base, "012345", 6);
  ck_assert_uint_eq(seg[1].iov_len, 4);
  ck_assert_mem_eq(seg[1].iov_base, "6789", 4);
  /* The second segment starts the storage, the first ends it. */
  ck_assert_ptr_eq((char *)seg[0].iov_base + 6, (char *)seg[1].iov_base + 16);
  ck_assert_uint_eq(ringbuffer_peek(rb, 7, seg), 7);
  ck_assert_uint_eq(seg[0].iov_len, 6);
  ck_assert_uint_eq(seg[1].iov_len, 1);
  ck_assert_uint_eq(ringbuffer_peek(rb, 6, seg), 6);
  ck_assert_uint_eq(seg[1].iov_len, 0);
  ck_assert_ptr_null(seg[1].iov_base);
  ck_assert_uint_eq(ringbuffer_len(rb), 10);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_retrieve)
{
  struct iovec seg[2];
  ringbuffer *rb = mk_wrapped();
  ringbuffer_retrieve(rb, 3);
  expect_str(rb, "3456789");
  ringbuffer_retrieve(rb, 4); /* crosses the wrap */
  expect_str(rb, "789");
  ringbuffer_retrieve(rb, 0);
  expect_str(rb, "789");
  ringbuffer_retrieve(rb, 1000);
  ck_assert(ringbuffer_empty(rb));
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  ringbuffer_free(rb);

  /* Exactly to the end of the storage: what is left starts at index 0 and
   * is the first segment, not an empty one before it. */
  rb = mk_wrapped();
  ringbuffer_retrieve(rb, 6);
  ck_assert_uint_eq(ringbuffer_peek(rb, 4, seg), 4);
  ck_assert_uint_eq(seg[0].iov_len, 4);
  ck_assert_uint_eq(seg[1].iov_len, 0);
  expect_str(rb, "6789");

  /* retrieve_all keeps the storage and restarts at its beginning. */
  write_str(rb, "abcdefghijk");
  ringbuffer_retrieve(rb, 8);
  ringbuffer_retrieve_all(rb);
  ck_assert(ringbuffer_empty(rb));
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  write_str(rb, "0123456789abcdef");
  ck_assert_uint_eq(ringbuffer_peek(rb, 16, seg), 16);
  ck_assert_uint_eq(seg[0].iov_len, 16);
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_wraparound)
{
  /* Many cycles through a fixed buffer: no growth, bytes stay in order. */
  char in[64], out[64];
  size_t wpos = 0, rpos = 0;
  ringbuffer *rb = mk(64);
  for (size_t i = 0; i < 5000; i++) {
    size_t w = 1 + (i * 7) % 40;
    size_t backlog = wpos - rpos;
    if (backlog + w > 64)
      w = 64 - backlog;
    pattern(in, w, wpos);
    write_ok(rb, in, w);
    wpos += w;
    size_t r = ringbuffer_read(rb, out, 1 + (i * 5) % 37);
    for (size_t k = 0; k < r; k++)
      CHECK(out[k] == pat(rpos + k));
    rpos += r;
    CHECK(ringbuffer_len(rb) == wpos - rpos);
  }
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  ringbuffer_free(rb);
}
END_TEST

/* ---- growth ------------------------------------------------------------ */

START_TEST(test_growth_policy)
{
  char big[1000] = {0};
  ringbuffer *rb = mk(0);
  write_ok(rb, "x", 1);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64); /* minimum growth */
  write_ok(rb, big, 63);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64); /* exact fit, no growth */
  write_ok(rb, "x", 1);
  ck_assert_uint_eq(ringbuffer_cap(rb), 128); /* doubling */
  write_ok(rb, big, 1000);
  ck_assert_uint_eq(ringbuffer_cap(rb), 1065); /* need beats doubling */
  write_ok(rb, "x", 1);
  ck_assert_uint_eq(ringbuffer_cap(rb), 2130);
  ringbuffer_free(rb);

  rb = mk(10);
  ck_assert_uint_eq(ringbuffer_cap(rb), 10);
  write_ok(rb, big, 11);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_growth_wrapped)
{
  char in[100], exp[110];
  struct iovec seg[2];
  ringbuffer *rb = mk_wrapped();
  pattern(in, sizeof(in), 0);
  write_ok(rb, in, sizeof(in));
  memcpy(exp, "0123456789", 10);
  memcpy(exp + 10, in, sizeof(in));
  ck_assert_uint_eq(ringbuffer_cap(rb), 110);
  expect_contents(rb, exp, sizeof(exp));
  /* Growth moved the data to the start: one segment. */
  ringbuffer_peek(rb, sizeof(exp), seg);
  ck_assert_uint_eq(seg[0].iov_len, sizeof(exp));
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_growth_unwrapped_offset)
{
  /* Data in one segment but not at index 0 (the realloc path). */
  char in[20];
  ringbuffer *rb = mk(16);
  write_str(rb, "abcdefghij");
  ringbuffer_retrieve(rb, 4);
  pattern(in, sizeof(in), 0);
  write_ok(rb, in, sizeof(in));
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  char exp[26];
  memcpy(exp, "efghij", 6);
  memcpy(exp + 6, in, sizeof(in));
  expect_contents(rb, exp, sizeof(exp));
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_no_alloc_when_fits)
{
  /* Filling the free space exactly, across the wrap, keeps the storage. */
  ringbuffer *rb = mk_wrapped();
  struct iovec seg[2];
  ringbuffer_peek(rb, 1, seg);
  char *base = (char *)seg[0].iov_base - 10;
  write_str(rb, "abcdef");
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  expect_str(rb, "0123456789abcdef");
  ringbuffer_peek(rb, 16, seg);
  ck_assert_ptr_eq(seg[1].iov_base, base);
  ringbuffer_free(rb);
}
END_TEST

/* ---- limit and overflow ------------------------------------------------ */

START_TEST(test_limit_exact)
{
  char in[100];
  pattern(in, sizeof(in), 0);
  ringbuffer *rb = mk(0);
  ringbuffer_set_limit(rb, 100);
  ck_assert_uint_eq(ringbuffer_limit(rb), 100);
  write_ok(rb, in, 60);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  write_ok(rb, in + 60, 40); /* len + n == limit succeeds */
  ck_assert_uint_eq(ringbuffer_cap(rb), 100);
  ck_assert_int_eq(ringbuffer_write(rb, "x", 1), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 100);
  expect_contents(rb, in, 100);
  ck_assert_int_eq(ringbuffer_write(rb, "x", 0), 0);
  /* Freed room is usable again, across the wrap. */
  ringbuffer_retrieve(rb, 30);
  write_ok(rb, in, 30);
  ck_assert_int_eq(ringbuffer_write(rb, "x", 1), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 100);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_limit_not_power_of_two)
{
  /* Doubling from the first need, clamped to the limit at the end. */
  static const size_t caps[] = {100, 200, 400, 400,  800,
                                800, 800, 800, 1000, 1000};
  char in[100];
  ringbuffer *rb = mk(0);
  ringbuffer_set_limit(rb, 1000);
  for (size_t i = 0; i < 10; i++) {
    pattern(in, sizeof(in), i * 100);
    write_ok(rb, in, sizeof(in));
    ck_assert_uint_eq(ringbuffer_cap(rb), caps[i]);
  }
  ck_assert_uint_eq(ringbuffer_cap(rb), 1000);
  ck_assert_uint_eq(ringbuffer_len(rb), 1000);
  ck_assert_int_eq(ringbuffer_write(rb, in, 1), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 1000);
  for (size_t i = 0; i < 1000; i++) {
    char c;
    CHECK(ringbuffer_read(rb, &c, 1) == 1);
    CHECK(c == pat(i));
  }
  ringbuffer_free(rb);

  /* A single write past the limit allocates nothing. */
  rb = mk(0);
  ringbuffer_set_limit(rb, 1000);
  char *big = calloc(1, 1001);
  ck_assert_int_eq(ringbuffer_write(rb, big, 1001), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 0);
  ck_assert_uint_eq(ringbuffer_len(rb), 0);
  write_ok(rb, big, 1000);
  ck_assert_uint_eq(ringbuffer_cap(rb), 1000);
  free(big);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_limit_below_len)
{
  char in[500];
  pattern(in, sizeof(in), 0);
  ringbuffer *rb = mk(0);
  write_ok(rb, in, sizeof(in));
  size_t cap = ringbuffer_cap(rb);
  ringbuffer_set_limit(rb, 100);
  /* No byte is dropped, but every write fails. */
  expect_contents(rb, in, sizeof(in));
  ck_assert_int_eq(ringbuffer_write(rb, "x", 1), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), cap);
  expect_contents(rb, in, sizeof(in));
  /* Once reads bring len under the limit, writes up to it succeed. */
  ringbuffer_retrieve(rb, 450);
  write_ok(rb, in, 50);
  ck_assert_int_eq(ringbuffer_write(rb, "x", 1), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), cap); /* no shrink either */
  ringbuffer_set_limit(rb, 0);
  write_ok(rb, in, sizeof(in));
  ck_assert_uint_eq(ringbuffer_len(rb), 600);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_size_overflow)
{
  char dummy[1] = {0};
  ringbuffer *rb = mk_wrapped();
  /* These sizes are rejected before the source would be read. */
  ck_assert_int_eq(ringbuffer_write(rb, dummy, SIZE_MAX), -ENOBUFS);
  ck_assert_int_eq(ringbuffer_write(rb, dummy, SIZE_MAX - 9), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  expect_str(rb, "0123456789");
  ringbuffer_set_limit(rb, 100);
  ck_assert_int_eq(ringbuffer_write(rb, dummy, SIZE_MAX), -ENOBUFS);
  ck_assert_int_eq(ringbuffer_write(rb, dummy, SIZE_MAX - 9), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  expect_str(rb, "0123456789");
  ringbuffer_free(rb);

  /* Even when empty: sizes past SSIZE_MAX are never attempted. */
  rb = mk(0);
  ck_assert_int_eq(ringbuffer_write(rb, dummy, SIZE_MAX), -ENOBUFS);
  ck_assert_int_eq(ringbuffer_write(rb, dummy, (size_t)SSIZE_MAX + 1),
                   -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 0);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_enomem)
{
  char dummy[1] = {0};
  ck_assert_ptr_null(ringbuffer_new(HUGE_SIZE));

  /* Wrapped data: the malloc + copy path fails cleanly. */
  ringbuffer *rb = mk_wrapped();
  ck_assert_int_eq(ringbuffer_write(rb, dummy, HUGE_SIZE), -ENOMEM);
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  expect_str(rb, "0123456789");
  write_str(rb, "abcdef");
  expect_str(rb, "0123456789abcdef");
  ringbuffer_free(rb);

  /* One segment: the realloc path fails cleanly. */
  rb = mk(16);
  write_str(rb, "abcdef");
  ringbuffer_retrieve(rb, 2);
  ck_assert_int_eq(ringbuffer_write(rb, dummy, HUGE_SIZE), -ENOMEM);
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  expect_str(rb, "cdef");
  ringbuffer_free(rb);
}
END_TEST

/* ---- linearize --------------------------------------------------------- */

START_TEST(test_linearize_basic)
{
  ringbuffer *rb = mk(32);
  write_str(rb, "abcdefghij");
  char *p = ringbuffer_linearize(rb, 10);
  ck_assert_ptr_nonnull(p);
  ck_assert_mem_eq(p, "abcdefghij", 10);
  ck_assert_ptr_nonnull(ringbuffer_linearize(rb, 0));
  ck_assert_ptr_null(ringbuffer_linearize(rb, 11));
  expect_str(rb, "abcdefghij");
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_linearize_wrap)
{
  struct iovec seg[2];
  /* Small first segment: moved through the free gap. */
  ringbuffer *rb = mk_at(16, 12, "abcdefgh", 8);
  char *p = ringbuffer_linearize(rb, 8);
  ck_assert_mem_eq(p, "abcdefgh", 8);
  ringbuffer_peek(rb, 8, seg);
  ck_assert_ptr_eq(seg[0].iov_base, p);
  ck_assert_uint_eq(seg[0].iov_len, 8);
  write_str(rb, "12345678");
  expect_str(rb, "abcdefgh12345678");
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  ringbuffer_free(rb);

  /* Nearly full: rotated in place, no growth. */
  rb = mk_at(16, 5, "ABCDEFGHIJKLMNO", 15);
  p = ringbuffer_linearize(rb, 13);
  ck_assert_mem_eq(p, "ABCDEFGHIJKLMNO", 15);
  ck_assert_uint_eq(ringbuffer_cap(rb), 16);
  write_str(rb, "P");
  expect_str(rb, "ABCDEFGHIJKLMNOP");
  ringbuffer_free(rb);

  /* A prefix that does not cross the wrap needs no move. */
  rb = mk_wrapped();
  ringbuffer_peek(rb, 1, seg);
  p = ringbuffer_linearize(rb, 6);
  ck_assert_ptr_eq(p, seg[0].iov_base);
  expect_str(rb, "0123456789");
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_linearize_every_layout)
{
  /* Every head and length in a capacity that is not a power of two. */
  enum { C = 13 };
  char data[C];
  pattern(data, C, 7);
  for (size_t head = 0; head < C; head++) {
    for (size_t len = 1; len <= C; len++) {
      for (size_t n = 0; n <= len; n++) {
        ringbuffer *rb = mk_at(C, head, data, len);
        char *p = ringbuffer_linearize(rb, n);
        CHECK(p != NULL);
        CHECK(n == 0 || memcmp(p, data, n) == 0);
        CHECK(ringbuffer_cap(rb) == C);
        expect_contents(rb, data, len);
        ringbuffer_free(rb);
      }
    }
  }
}
END_TEST

/* ---- find -------------------------------------------------------------- */

START_TEST(test_find_basic)
{
  ringbuffer *rb = mk(0);
  write_str(rb, "GET / HTTP/1.1\r\nHost: x\r\n\r\nbody");
  ck_assert_int_eq(ringbuffer_find(rb, "\r\n\r\n", 4), 23);
  ck_assert_int_eq(ringbuffer_find(rb, "\r\n", 2), 14);
  ck_assert_int_eq(ringbuffer_find(rb, "GET", 3), 0);
  ck_assert_int_eq(ringbuffer_find(rb, "body", 4), 27);
  ck_assert_int_eq(ringbuffer_find(rb, "xyz", 3), -1);
  ck_assert_int_eq(ringbuffer_find(rb, "GET", 0), -1);
  ringbuffer_free(rb);

  rb = mk(0);
  write_str(rb, "abc");
  ck_assert_int_eq(ringbuffer_find(rb, "abcd", 4), -1); /* longer than len */
  ck_assert_int_eq(ringbuffer_find(rb, "abc", 3), 0);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_find_split_by_wrap)
{
  /* "012345" | "6789": needles inside, across and after the wrap. */
  ringbuffer *rb = mk_wrapped();
  ck_assert_int_eq(ringbuffer_find(rb, "123", 3), 1);
  ck_assert_int_eq(ringbuffer_find(rb, "56", 2), 5);
  ck_assert_int_eq(ringbuffer_find(rb, "3456789", 7), 3);
  ck_assert_int_eq(ringbuffer_find(rb, "0123456789", 10), 0);
  ck_assert_int_eq(ringbuffer_find(rb, "789", 3), 7);
  ck_assert_int_eq(ringbuffer_find(rb, "57", 2), -1);
  ck_assert_int_eq(ringbuffer_find(rb, "89x", 3), -1);
  ck_assert_int_eq(ringbuffer_find(rb, "0123456789x", 11), -1);
  ringbuffer_free(rb);

  /* A split match must not run past the stored bytes. */
  rb = mk_at(8, 6, "xyab", 4);
  ck_assert_int_eq(ringbuffer_find(rb, "abc", 3), -1);
  ck_assert_int_eq(ringbuffer_find(rb, "yab", 3), 1);
  /* Index 2, just past the data, holds a stale 0 byte from mk_at. */
  ck_assert_int_eq(ringbuffer_find(rb, "yab\0", 4), -1);
  ck_assert_int_eq(ringbuffer_find(rb, "ab\0", 3), -1);
  ringbuffer_free(rb);

  /* Offsets come in order: a split match beats a later one. */
  rb = mk_at(8, 5, "zabzab", 6); /* "zab" | "zab" */
  ck_assert_int_eq(ringbuffer_find(rb, "bz", 2), 2);
  ck_assert_int_eq(ringbuffer_find(rb, "ab", 2), 1);
  ringbuffer_free(rb);
  rb = mk_at(8, 6, "xabzab", 6); /* "xa" | "bzab" */
  ck_assert_int_eq(ringbuffer_find(rb, "ab", 2), 1);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_find_every_layout)
{
  /* Every needle in every layout, against memmem on a flat copy. */
  enum { C = 13 };
  char data[C];
  unsigned x = 12345;
  for (size_t head = 0; head < C; head++) {
    for (size_t i = 0; i < C; i++) {
      x = x * 1103515245u + 12345u;
      data[i] = (char)('a' + (x >> 16) % 3);
    }
    ringbuffer *rb = mk_at(C, head, data, C);
    for (size_t s = 0; s < C; s++) {
      for (size_t m = 1; s + m <= C; m++) {
        const char *hit = memmem(data, C, data + s, m);
        CHECK(ringbuffer_find(rb, data + s, m) == hit - data);
      }
    }
    ck_assert_int_eq(ringbuffer_find(rb, "ccccccccccccccc", 14), -1);
    ringbuffer_free(rb);
  }
}
END_TEST

START_TEST(test_find_from_every_layout)
{
  /* Every needle from every offset in every layout, against memmem on a
   * flat copy from that offset. */
  enum { C = 13 };
  char data[C];
  unsigned x = 777;
  for (size_t head = 0; head < C; head++) {
    for (size_t i = 0; i < C; i++) {
      x = x * 1103515245u + 12345u;
      data[i] = (char)('a' + (x >> 16) % 2);
    }
    ringbuffer *rb = mk_at(C, head, data, C);
    for (size_t from = 0; from <= C; from++) {
      for (size_t s = 0; s < C; s++) {
        for (size_t m = 1; s + m <= C; m++) {
          const char *hit = memmem(data + from, C - from, data + s, m);
          CHECK(ringbuffer_find_from(rb, from, data + s, m) ==
                (hit ? hit - data : -1));
        }
      }
    }
    ck_assert_int_eq(ringbuffer_find_from(rb, C + 1, "a", 1), -1);
    ck_assert_int_eq(ringbuffer_find_from(rb, 0, "a", 0), -1);
    ringbuffer_free(rb);
  }
}
END_TEST

START_TEST(test_find_from_resumes)
{
  /* A line parser's use: look on from where the last call stopped. */
  ringbuffer *rb = ringbuffer_new(8);
  size_t scanned = 0;
  const char *parts[] = {"GET / HT", "TP/1.1\r", "\nHost"};
  ssize_t at = -1;

  for (int i = 0; i < 3 && at < 0; i++) {
    ck_assert_int_eq(ringbuffer_write(rb, parts[i], strlen(parts[i])), 0);
    at = ringbuffer_find_from(rb, scanned, "\r\n", 2);
    if (at < 0)
      scanned = ringbuffer_len(rb) - 1;
  }
  ck_assert_int_eq(at, 14);
  ck_assert_uint_eq(scanned, 14); /* only the CR is looked at again */
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_reserve)
{
  ringbuffer *rb = ringbuffer_new(0);
  size_t cap;

  ck_assert_int_eq(ringbuffer_reserve(rb, 100), 0);
  ck_assert_uint_ge(ringbuffer_cap(rb), 100);
  ck_assert_uint_eq(ringbuffer_len(rb), 0);
  cap = ringbuffer_cap(rb);
  ck_assert_int_eq(ringbuffer_write(rb, "0123456789", 10), 0);
  ck_assert_int_eq(ringbuffer_reserve(rb, cap - 10), 0);
  ck_assert_uint_eq(ringbuffer_cap(rb), cap); /* it fitted: no growth */
  ringbuffer_set_limit(rb, 50);
  ck_assert_int_eq(ringbuffer_reserve(rb, 41), -ENOBUFS);
  ck_assert_uint_eq(ringbuffer_len(rb), 10); /* nothing changed */
  ck_assert_int_eq(ringbuffer_reserve(rb, 40), 0);
  ck_assert_int_eq(ringbuffer_reserve(rb, SIZE_MAX), -ENOBUFS);
  ringbuffer_free(rb);
}
END_TEST

/* ---- read_fd ----------------------------------------------------------- */

START_TEST(test_read_fd_basic)
{
  int sv[2], err = 0;
  nb_socketpair(sv);
  ringbuffer *rb = mk(0);
  send_all(sv[1], "hello", 5);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), 5);
  expect_str(rb, "hello");
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, EAGAIN);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], NULL), -1);
  send_all(sv[1], " world", 6);
  close(sv[1]);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), 6);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), 0); /* EOF */
  expect_str(rb, "hello world");
  close(sv[0]);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, EBADF);
  expect_str(rb, "hello world");
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_read_fd_two_free_segments)
{
  /* Data in the middle: the free space is [40, 64) then [0, 30). */
  char in[54];
  int sv[2], err = 0;
  nb_socketpair(sv);
  ringbuffer *rb = mk(64);
  write_pat(rb, 0, 40);
  ringbuffer_retrieve(rb, 30);
  pattern(in, sizeof(in), 40);
  send_all(sv[1], in, sizeof(in));
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), 54);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  char exp[64];
  pattern(exp, 64, 30);
  expect_contents(rb, exp, 64);
  close(sv[0]);
  close(sv[1]);
  ringbuffer_free(rb);
}
END_TEST

/* `total` pattern bytes streamed through a socketpair into a ring buffer:
 * as much as the socket takes is sent at once, the rest while reading. */
typedef struct stream {
  char *in, *out;
  size_t total, sent, got;
  int sv[2];
} stream;

static void stream_open(stream *st, size_t total, size_t start)
{
  *st = (stream){.in = malloc(total), .out = malloc(total), .total = total};
  ck_assert(st->in && st->out);
  nb_socketpair(st->sv);
  pattern(st->in, total, start);
  while (st->sent < total) {
    ssize_t r =
        send(st->sv[1], st->in + st->sent, total - st->sent, MSG_NOSIGNAL);
    if (r < 0 && errno == EAGAIN)
      break;
    ck_assert_int_gt(r, 0);
    st->sent += (size_t)r;
  }
}

/* Reads the rest through rb, checks every byte, closes and frees. With
 * fixed_cap > 0, rb's capacity must stay at it throughout. */
static void stream_finish(stream *st, ringbuffer *rb, size_t fixed_cap)
{
  int err = 0;

  for (;;) {
    st->got += ringbuffer_read(rb, st->out + st->got, st->total - st->got);
    if (st->sent < st->total) {
      ssize_t r = send(st->sv[1], st->in + st->sent, st->total - st->sent,
                       MSG_NOSIGNAL);
      if (r > 0)
        st->sent += (size_t)r;
    }
    ssize_t r = ringbuffer_read_fd(rb, st->sv[0], &err);
    if (fixed_cap)
      ck_assert_uint_eq(ringbuffer_cap(rb), fixed_cap);
    if (r < 0) {
      ck_assert_int_eq(err, EAGAIN);
      if (st->sent == st->total)
        break;
    }
  }
  st->got += ringbuffer_read(rb, st->out + st->got, st->total - st->got);
  ck_assert_uint_eq(st->got, st->total);
  ck_assert_mem_eq(st->out, st->in, st->total);
  close(st->sv[0]);
  close(st->sv[1]);
  free(st->in);
  free(st->out);
}

START_TEST(test_read_fd_spill)
{
  /* 100 KiB pending, 16 bytes free: one call takes more through the spill. */
  stream st;
  int err = 0;
  stream_open(&st, 100 * 1024, 0);
  ringbuffer *rb = mk(16);
  ck_assert_uint_gt(st.sent, 16 + 1024);
  ssize_t first = ringbuffer_read_fd(rb, st.sv[0], &err);
  ck_assert_int_gt(first, 16);
  ck_assert_uint_eq(ringbuffer_len(rb), (size_t)first);
  stream_finish(&st, rb, 0);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_read_fd_large_room_no_spill)
{
  /* 64 KiB of contiguous room and more pending: one plain read fills the
   * room and nothing more, so the buffer does not grow (the spill area is
   * only for buffers with less room than it has). */
  stream st;
  int err = 0;
  stream_open(&st, 150 * 1024, 5);
  ringbuffer *rb = mk(64 * 1024);
  size_t cap = ringbuffer_cap(rb);
  ck_assert_uint_gt(st.sent, cap);
  ck_assert_int_eq(ringbuffer_read_fd(rb, st.sv[0], &err), (ssize_t)cap);
  ck_assert_uint_eq(ringbuffer_cap(rb), cap);
  stream_finish(&st, rb, cap);
  ringbuffer_free(rb);
}
END_TEST

/* Pull @p total bytes through read_fd with the given limit; check both. */
static void read_fd_under_limit(size_t limit, size_t initial_cap, size_t total)
{
  char *in = malloc(total), *out = malloc(total);
  int sv[2], err = 0;
  size_t got = 0;
  bool hit_limit = false;
  nb_socketpair(sv);
  pattern(in, total, 3);
  send_all(sv[1], in, total);
  ringbuffer *rb = mk(initial_cap);
  ringbuffer_set_limit(rb, limit);
  for (;;) {
    ssize_t r = ringbuffer_read_fd(rb, sv[0], &err);
    ck_assert_uint_le(ringbuffer_len(rb), limit);
    ck_assert_uint_le(ringbuffer_cap(rb), limit);
    if (r > 0)
      continue;
    ck_assert_int_eq(r, -1);
    if (err == EAGAIN)
      break;
    /* At the limit: nothing was read, so drain some and go on. */
    ck_assert_int_eq(err, ENOBUFS);
    ck_assert_uint_eq(ringbuffer_len(rb), limit);
    hit_limit = true;
    got += ringbuffer_read(rb, out + got, limit / 3 + 1);
  }
  got += ringbuffer_read(rb, out + got, total - got);
  ck_assert(hit_limit);
  ck_assert_uint_eq(got, total);
  ck_assert_mem_eq(out, in, total);
  close(sv[0]);
  close(sv[1]);
  free(in);
  free(out);
  ringbuffer_free(rb);
}

START_TEST(test_read_fd_limit)
{
  /* 10 KiB pending, limit 4 KiB: never stored past it, nothing dropped. */
  enum { TOTAL = 10 * 1024, LIMIT = 4 * 1024 };
  char *in = malloc(TOTAL), *out = malloc(TOTAL);
  int sv[2], err = 0;
  nb_socketpair(sv);
  pattern(in, TOTAL, 0);
  send_all(sv[1], in, TOTAL);
  ringbuffer *rb = mk(0);
  ringbuffer_set_limit(rb, LIMIT);
  ssize_t r = ringbuffer_read_fd(rb, sv[0], &err);
  ck_assert_int_gt(r, 0);
  ck_assert_int_le(r, LIMIT);
  while (ringbuffer_len(rb) < LIMIT)
    ck_assert_int_gt(ringbuffer_read_fd(rb, sv[0], &err), 0);
  ck_assert_uint_eq(ringbuffer_len(rb), LIMIT);
  ck_assert_uint_eq(ringbuffer_cap(rb), LIMIT);
  /* Full: ENOBUFS without reading, the rest still waits in the socket. */
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, ENOBUFS);
  ck_assert_uint_eq(ringbuffer_read(rb, out, TOTAL), LIMIT);
  ck_assert_uint_eq(drain_fd(sv[0], out + LIMIT, TOTAL - LIMIT), TOTAL - LIMIT);
  ck_assert_mem_eq(out, in, TOTAL);
  close(sv[0]);
  close(sv[1]);
  free(in);
  free(out);
  ringbuffer_free(rb);

  /* The same through the ring, with limits that are not powers of two. */
  read_fd_under_limit(LIMIT, 0, TOTAL);
  read_fd_under_limit(1000, 0, TOTAL);
  read_fd_under_limit(777, 100, TOTAL);
}
END_TEST

START_TEST(test_read_fd_at_limit)
{
  int sv[2], err = 0;
  char c = 0;
  nb_socketpair(sv);
  ringbuffer *rb = mk(0);
  ringbuffer_set_limit(rb, 8);
  write_str(rb, "12345678");
  send_all(sv[1], "z", 1);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, ENOBUFS);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], NULL), -1);
  expect_str(rb, "12345678");
  ck_assert_int_eq(recv(sv[0], &c, 1, 0), 1); /* the byte was not taken */
  ck_assert_int_eq(c, 'z');
  close(sv[0]);
  close(sv[1]);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_read_fd_limit_below_cap)
{
  /* Storage larger than the limit: the free iovecs are cut to the limit. */
  char in[100], out[100];
  int sv[2], err = 0;
  nb_socketpair(sv);
  pattern(in, sizeof(in), 40);
  send_all(sv[1], in, sizeof(in));
  ringbuffer *rb = mk(64);
  write_pat(rb, 0, 40);
  ringbuffer_retrieve(rb, 30); /* free: [40, 64) and [0, 30) */
  ringbuffer_set_limit(rb, 20);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), 10); /* 1st only */
  ringbuffer_set_limit(rb, 50);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), 30); /* both */
  ck_assert_uint_eq(ringbuffer_len(rb), 50);
  ck_assert_int_eq(ringbuffer_read_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, ENOBUFS);
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  ringbuffer_retrieve(rb, 10);
  ck_assert_uint_eq(ringbuffer_read(rb, out, 40), 40);
  ck_assert_uint_eq(drain_fd(sv[0], out + 40, 60), 60);
  ck_assert_mem_eq(out, in, sizeof(in));
  close(sv[0]);
  close(sv[1]);
  ringbuffer_free(rb);
}
END_TEST

/* ---- write_fd ---------------------------------------------------------- */

START_TEST(test_write_fd_basic)
{
  int sv[2], err = 0;
  char out[32];
  nb_socketpair(sv);
  ringbuffer *rb = mk_wrapped(); /* two segments, one sendmsg */
  ck_assert_int_eq(ringbuffer_write_fd(rb, sv[0], &err), 10);
  ck_assert(ringbuffer_empty(rb));
  ck_assert_int_eq(read(sv[1], out, sizeof(out)), 10);
  ck_assert_mem_eq(out, "0123456789", 10);
  ck_assert_int_eq(ringbuffer_write_fd(rb, sv[0], &err), 0); /* empty */
  ck_assert_int_eq(ringbuffer_write_fd(rb, -1, &err), 0);
  write_str(rb, "x");
  ck_assert_int_eq(ringbuffer_write_fd(rb, -1, &err), -1);
  ck_assert_int_eq(err, EBADF);
  expect_str(rb, "x");
  close(sv[0]);
  close(sv[1]);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_write_fd_partial)
{
  /* 1 MiB, wrapped: fill the peer until EAGAIN, consuming what went out. */
  enum { TOTAL = 1024 * 1024, SHIFT = 1000 };
  char *want = malloc(TOTAL), *out = malloc(TOTAL);
  int sv[2], err = 0;
  size_t written = 0, got = 0;
  struct iovec seg[2];
  nb_socketpair(sv);
  /* Storage of exactly TOTAL bytes holding stream bytes SHIFT..TOTAL+SHIFT,
   * the last SHIFT of them wrapped to the start: two segments. */
  ringbuffer *rb = mk(0);
  write_pat(rb, 0, TOTAL);
  ck_assert_uint_eq(ringbuffer_cap(rb), TOTAL);
  ringbuffer_retrieve(rb, SHIFT);
  write_pat(rb, TOTAL, SHIFT);
  ck_assert_uint_eq(ringbuffer_cap(rb), TOTAL);
  ck_assert_uint_eq(ringbuffer_peek(rb, TOTAL, seg), TOTAL);
  ck_assert_uint_eq(seg[1].iov_len, SHIFT);
  pattern(want, TOTAL, SHIFT);
  for (;;) {
    size_t before = ringbuffer_len(rb);
    ssize_t r = ringbuffer_write_fd(rb, sv[0], &err);
    if (r < 0) {
      ck_assert_int_eq(err, EAGAIN);
      ck_assert_uint_eq(ringbuffer_len(rb), before);
      break;
    }
    ck_assert_int_gt(r, 0);
    ck_assert_uint_eq(ringbuffer_len(rb), before - (size_t)r);
    written += (size_t)r;
  }
  ck_assert_uint_gt(written, 0);
  ck_assert_uint_lt(written, TOTAL); /* the peer filled up before the end */
  /* Exactly the unwritten suffix stays, and the peer got the prefix. */
  expect_contents(rb, want + written, TOTAL - written);
  got = drain_fd(sv[1], out, TOTAL);
  ck_assert_uint_eq(got, written);
  /* Alternate until everything went through, in order. */
  while (!ringbuffer_empty(rb)) {
    ssize_t r = ringbuffer_write_fd(rb, sv[0], &err);
    ck_assert(r > 0 || err == EAGAIN);
    got += drain_fd(sv[1], out + got, TOTAL - got);
  }
  got += drain_fd(sv[1], out + got, TOTAL - got);
  ck_assert_uint_eq(got, TOTAL);
  ck_assert_mem_eq(out, want, TOTAL);
  close(sv[0]);
  close(sv[1]);
  free(want);
  free(out);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_write_fd_pipe)
{
  /* A pipe is not a socket: sendmsg fails with ENOTSOCK, writev is used. */
  int p[2], err = 0;
  char out[32];
  ck_assert_int_eq(pipe2(p, O_NONBLOCK | O_CLOEXEC), 0);
  ringbuffer *rb = mk_wrapped();
  ck_assert_int_eq(ringbuffer_write_fd(rb, p[1], &err), 10);
  ck_assert(ringbuffer_empty(rb));
  ck_assert_int_eq(read(p[0], out, sizeof(out)), 10);
  ck_assert_mem_eq(out, "0123456789", 10);
  /* Fill the pipe: the writev error comes back as EAGAIN. */
  char *big = calloc(1, 256 * 1024);
  write_ok(rb, big, 256 * 1024);
  ssize_t r;
  while ((r = ringbuffer_write_fd(rb, p[1], &err)) > 0)
    ;
  ck_assert_int_eq(r, -1);
  ck_assert_int_eq(err, EAGAIN);
  ck_assert(!ringbuffer_empty(rb));
  free(big);
  close(p[0]);
  close(p[1]);
  ringbuffer_free(rb);
}
END_TEST

START_TEST(test_write_fd_epipe)
{
  /* SIGPIPE keeps its default action: it would kill this test. */
  int sv[2], err = 0;
  signal(SIGPIPE, SIG_DFL);
  nb_socketpair(sv);
  close(sv[1]);
  ringbuffer *rb = mk_wrapped();
  ck_assert_int_eq(ringbuffer_write_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, EPIPE);
  ck_assert_int_eq(ringbuffer_write_fd(rb, sv[0], NULL), -1);
  expect_str(rb, "0123456789");
  ringbuffer_free(rb);
  /* One segment goes out through send(), which needs the flag too. */
  rb = mk(0);
  write_str(rb, "abc");
  err = 0;
  ck_assert_int_eq(ringbuffer_write_fd(rb, sv[0], &err), -1);
  ck_assert_int_eq(err, EPIPE);
  expect_str(rb, "abc");
  close(sv[0]);
  ringbuffer_free(rb);
}
END_TEST

/* ---- shrink ------------------------------------------------------------ */

START_TEST(test_shrink)
{
  struct iovec seg[2];
  ringbuffer *rb = mk(0);
  ck_assert_uint_eq(ringbuffer_shrink(rb, 0), 0);
  write_pat(rb, 0, 100);
  ck_assert_uint_eq(ringbuffer_shrink(rb, 0), 100); /* not empty: kept */
  ringbuffer_retrieve(rb, 100);
  ck_assert_uint_eq(ringbuffer_shrink(rb, 100), 100); /* within keep */
  ck_assert_uint_eq(ringbuffer_shrink(rb, 1000), 100);
  ck_assert_uint_eq(ringbuffer_shrink(rb, 99), 0);
  ck_assert_uint_eq(ringbuffer_cap(rb), 0);
  ck_assert_uint_eq(ringbuffer_peek(rb, 10, seg), 0);
  ck_assert_ptr_null(ringbuffer_linearize(rb, 0));
  write_str(rb, "again");
  expect_str(rb, "again");
  ck_assert_uint_eq(ringbuffer_cap(rb), 64);
  ringbuffer_free(rb);
}
END_TEST

/* ---- move -------------------------------------------------------------- */

START_TEST(test_move_swaps_into_empty)
{
  ringbuffer *src = mk_wrapped(), *dst = mk(100);

  /* All of src into an empty dst: the storage changes hands, no copy. */
  ck_assert_int_eq(ringbuffer_move(dst, src, SIZE_MAX), 10);
  expect_str(dst, "0123456789");
  ck_assert_uint_eq(ringbuffer_cap(dst), 16);
  ck_assert(ringbuffer_empty(src));
  ck_assert_uint_eq(ringbuffer_cap(src), 100);
  /* Both go on working: src from its new storage, dst across the wrap. */
  write_str(src, "next");
  expect_str(src, "next");
  write_str(dst, "abcdef");
  expect_str(dst, "0123456789abcdef");
  ck_assert_uint_eq(ringbuffer_cap(dst), 16);
  /* An unallocated dst (cap 0) hands src no storage: writes allocate. */
  ringbuffer_free(src);
  src = mk(0);
  ck_assert_int_eq(ringbuffer_move(src, dst, 16), 16);
  ck_assert_uint_eq(ringbuffer_cap(dst), 0);
  write_str(dst, "x");
  expect_str(dst, "x");
  expect_str(src, "0123456789abcdef");
  ringbuffer_free(src);
  ringbuffer_free(dst);
}
END_TEST

START_TEST(test_move_copies_otherwise)
{
  ringbuffer *src = mk_wrapped(), *dst = mk(4);

  /* dst holds data: appended by copy, across src's wrap, dst grows. */
  write_str(dst, "ab");
  ck_assert_int_eq(ringbuffer_move(dst, src, 7), 7);
  expect_str(dst, "ab0123456");
  ck_assert_uint_eq(ringbuffer_cap(dst), 64);
  expect_str(src, "789");
  ck_assert_uint_eq(ringbuffer_cap(src), 16);
  /* Part of src into an empty dst: copied, src keeps the rest. */
  ringbuffer_retrieve_all(dst);
  ck_assert_int_eq(ringbuffer_move(dst, src, 2), 2);
  expect_str(dst, "78");
  expect_str(src, "9");
  ck_assert_uint_eq(ringbuffer_cap(src), 16);
  /* n = 0 and an empty src move nothing. */
  ck_assert_int_eq(ringbuffer_move(dst, src, 0), 0);
  ringbuffer_retrieve_all(src);
  ck_assert_int_eq(ringbuffer_move(dst, src, 5), 0);
  expect_str(dst, "78");
  ck_assert_int_eq(ringbuffer_move(dst, dst, 1), -EINVAL);
  expect_str(dst, "78");
  ringbuffer_free(src);
  ringbuffer_free(dst);
}
END_TEST

START_TEST(test_move_limits)
{
  ringbuffer *src = mk_wrapped(), *dst = mk(0);

  /* Past dst's limit: refused, both unchanged. */
  ringbuffer_set_limit(dst, 12);
  write_str(dst, "abc");
  ck_assert_int_eq(ringbuffer_move(dst, src, 10), -ENOBUFS);
  expect_str(dst, "abc");
  expect_str(src, "0123456789");
  ck_assert_int_eq(ringbuffer_move(dst, src, 9), 9);
  expect_str(dst, "abc012345678");
  ck_assert_uint_eq(ringbuffer_cap(dst), 12);
  /* An empty dst whose limit is below src's capacity copies: it must not
   * receive storage larger than it may grow. */
  ringbuffer_retrieve_all(dst);
  ringbuffer_set_limit(dst, 8);
  ck_assert_int_eq(ringbuffer_move(dst, src, 1), 1);
  expect_str(dst, "9");
  ck_assert_uint_eq(ringbuffer_cap(dst), 12);
  ck_assert_uint_eq(ringbuffer_cap(src), 16);
  ringbuffer_free(dst);
  /* Nor may src: a dst with more storage than src's limit copies. */
  dst = mk(64);
  write_str(src, "xyz");
  ringbuffer_set_limit(src, 32);
  ck_assert_int_eq(ringbuffer_move(dst, src, 3), 3);
  expect_str(dst, "xyz");
  ck_assert_uint_eq(ringbuffer_cap(dst), 64);
  ck_assert_uint_eq(ringbuffer_cap(src), 16);
  ringbuffer_free(src);
  ringbuffer_free(dst);
}
END_TEST

/* ---- randomized test against a reference FIFO -------------------------- */

enum { REF_MAX = 8192 };

struct model {
  ringbuffer *rb;
  char ref[REF_MAX]; /* the reference FIFO: a plain array */
  size_t len;
  uint64_t rng;
  unsigned long long seed;
  unsigned long op;
};

static uint64_t rnd(struct model *m)
{
  /* xorshift64*: small, fast, good enough for picking operations. */
  m->rng ^= m->rng >> 12;
  m->rng ^= m->rng << 25;
  m->rng ^= m->rng >> 27;
  return m->rng * 2685821657736338717ull;
}

static size_t rnd_upto(struct model *m, size_t max)
{
  return (size_t)(rnd(m) % (max + 1));
}

/* Plain if: ck_assert records every passing check, too slow at this scale. */
#define MCHECK(m, cond)                                                        \
  do {                                                                         \
    if (!(cond))                                                               \
      ck_abort_msg("RB_SEED=%llu op %lu: %s", (m)->seed, (m)->op, #cond);      \
  } while (0)

static void model_check(struct model *m)
{
  struct iovec seg[2];
  MCHECK(m, ringbuffer_len(m->rb) == m->len);
  MCHECK(m, ringbuffer_empty(m->rb) == (m->len == 0));
  MCHECK(m, ringbuffer_cap(m->rb) >= m->len);
  MCHECK(m, ringbuffer_peek(m->rb, SIZE_MAX, seg) == m->len);
  MCHECK(m, seg[0].iov_len + seg[1].iov_len == m->len);
  MCHECK(m, seg[0].iov_len == 0 ||
                memcmp(seg[0].iov_base, m->ref, seg[0].iov_len) == 0);
  MCHECK(m,
         seg[1].iov_len == 0 || memcmp(seg[1].iov_base, m->ref + seg[0].iov_len,
                                       seg[1].iov_len) == 0);
  MCHECK(m, seg[1].iov_len == 0 || seg[1].iov_base != NULL);
}

static void ref_consume(struct model *m, size_t n)
{
  memmove(m->ref, m->ref + n, m->len - n);
  m->len -= n;
}

/* Sizes that fill the free space often, so the data wraps often. */
static size_t write_size(struct model *m)
{
  size_t cap = ringbuffer_cap(m->rb);
  size_t room = cap > m->len ? cap - m->len : 0;
  switch (rnd(m) % 8) {
  case 0: return rnd_upto(m, 1024); /* large: growth */
  case 1:
  case 2:
  case 3: return rnd_upto(m, room + 8); /* up to full, sometimes just past */
  default: return rnd_upto(m, 64);
  }
}

/* Capacity after growing from @p cap to hold @p need bytes under @p limit. */
static size_t grown(size_t cap, size_t need, size_t limit)
{
  size_t c = need > 2 * cap ? need : 2 * cap;
  c = c > 64 ? c : 64;
  return limit != 0 && c > limit ? limit : c;
}

static void op_write(struct model *m)
{
  static char in[REF_MAX];
  size_t n = write_size(m);
  size_t limit = ringbuffer_limit(m->rb), cap = ringbuffer_cap(m->rb);
  bool fits = limit == 0 || m->len + n <= limit;
  if (m->len + n > REF_MAX)
    return; /* keep the model bounded */
  for (size_t i = 0; i < n; i++)
    in[i] = (char)('a' + rnd(m) % 4); /* small alphabet: repeats for find */
  int rc = ringbuffer_write(m->rb, in, n);
  MCHECK(m, rc == (fits ? 0 : -ENOBUFS));
  if (rc != 0) {
    MCHECK(m, ringbuffer_cap(m->rb) == cap); /* failed: nothing changed */
    return;
  }
  memcpy(m->ref + m->len, in, n);
  m->len += n;
  if (m->len <= cap)
    MCHECK(m, ringbuffer_cap(m->rb) == cap); /* fits: no allocation */
  else
    MCHECK(m, ringbuffer_cap(m->rb) == grown(cap, m->len, limit));
}

static void op_read(struct model *m)
{
  char out[REF_MAX];
  size_t n = rnd_upto(m, m->len + 10);
  size_t got = ringbuffer_read(m->rb, out, n);
  MCHECK(m, got == (n < m->len ? n : m->len));
  MCHECK(m, memcmp(out, m->ref, got) == 0);
  ref_consume(m, got);
}

static void op_peek(struct model *m)
{
  struct iovec seg[2];
  size_t n = rnd_upto(m, m->len + 10), want = n < m->len ? n : m->len;
  MCHECK(m, ringbuffer_peek(m->rb, n, seg) == want);
  MCHECK(m, seg[0].iov_len + seg[1].iov_len == want);
  MCHECK(m, seg[1].iov_len == 0 || seg[0].iov_len > 0);
  MCHECK(m, seg[1].iov_len != 0 || seg[1].iov_base == NULL);
}

static void op_retrieve(struct model *m)
{
  size_t n = rnd_upto(m, m->len + 10);
  ringbuffer_retrieve(m->rb, n);
  ref_consume(m, n < m->len ? n : m->len);
}

static void op_linearize(struct model *m)
{
  size_t n = rnd_upto(m, m->len + 2), cap = ringbuffer_cap(m->rb);
  char *p = ringbuffer_linearize(m->rb, n);
  if (n > m->len || cap == 0) {
    MCHECK(m, p == NULL);
    return;
  }
  MCHECK(m, p != NULL);
  MCHECK(m, n == 0 || memcmp(p, m->ref, n) == 0);
  MCHECK(m, ringbuffer_cap(m->rb) == cap); /* in place, no allocation */
}

static void op_find(struct model *m)
{
  char nd[16];
  size_t len, r = rnd(m) % 8;
  if (m->len > 0 && r < 5) { /* a substring of the contents */
    size_t s = rnd_upto(m, m->len - 1);
    len = 1 + rnd_upto(m, (m->len - s < 12 ? m->len - s : 12) - 1);
    memcpy(nd, m->ref + s, len);
  } else if (m->len > 0 && r < 7) { /* a suffix and one byte more */
    len = 1 + rnd_upto(m, m->len < 11 ? m->len - 1 : 10);
    memcpy(nd, m->ref + m->len - len, len);
    nd[len++] = (char)('a' + rnd(m) % 4);
  } else { /* random, probably absent, sometimes empty */
    len = rnd_upto(m, 12);
    for (size_t i = 0; i < len; i++)
      nd[i] = (char)('a' + rnd(m) % 5);
  }
  const char *hit = len ? memmem(m->ref, m->len, nd, len) : NULL;
  ssize_t want = hit ? hit - m->ref : -1;
  MCHECK(m, ringbuffer_find(m->rb, nd, len) == want);
}

static void op_set_limit(struct model *m)
{
  size_t r = rnd(m) % 4;
  /* Mostly no limit; else around the length, sometimes below it. */
  size_t lim = r < 2 ? 0 : m->len / 2 + rnd_upto(m, m->len + 3000);
  ringbuffer_set_limit(m->rb, lim);
  MCHECK(m, ringbuffer_limit(m->rb) == lim);
}

/* Moves a random amount from one model's buffer to the other's. The
 * storage changes hands exactly when the documented conditions hold. */
static void op_move(struct model *from, struct model *to)
{
  size_t n = rnd_upto(from, from->len + 10);
  size_t want = n < from->len ? n : from->len;
  size_t limf = ringbuffer_limit(from->rb), limt = ringbuffer_limit(to->rb);
  size_t capf = ringbuffer_cap(from->rb), capt = ringbuffer_cap(to->rb);
  bool fits = limt == 0 || to->len + want <= limt;
  bool swap = to->len == 0 && want == from->len && want > 0 &&
              (limt == 0 || capf <= limt) && (limf == 0 || capt <= limf);
  ssize_t rc;

  if (to->len + want > REF_MAX)
    return; /* keep the model bounded */
  rc = ringbuffer_move(to->rb, from->rb, n);
  MCHECK(from, rc == (fits ? (ssize_t)want : -ENOBUFS));
  if (rc <= 0) {
    MCHECK(from, ringbuffer_cap(from->rb) == capf);
    MCHECK(from, ringbuffer_cap(to->rb) == capt);
    return;
  }
  if (swap) {
    MCHECK(from, ringbuffer_cap(to->rb) == capf);
    MCHECK(from, ringbuffer_cap(from->rb) == capt);
  } else {
    MCHECK(from, ringbuffer_cap(from->rb) == capf);
    MCHECK(from,
           ringbuffer_cap(to->rb) == (to->len + want <= capt
                                          ? capt
                                          : grown(capt, to->len + want, limt)));
  }
  memcpy(to->ref + to->len, from->ref, want);
  to->len += want;
  ref_consume(from, want);
}

static unsigned long long pick_seed(void)
{
  const char *env = getenv("RB_SEED");
  if (env && *env)
    return strtoull(env, NULL, 0);
  return (unsigned long long)time(NULL) ^ ((unsigned long long)getpid() << 32);
}

static unsigned long pick_ops(void)
{
  const char *env = getenv("RB_OPS");
  if (env && *env)
    return strtoul(env, NULL, 0);
  return 100000;
}

START_TEST(test_random_vs_reference)
{
  /* Two buffers, each with its reference, so that moves between them are
   * checked too; every other operation acts on one picked at random. */
  static struct model models[2]; /* large: keep them off the stack */
  unsigned long ops = pick_ops();
  unsigned long long seed = pick_seed();
  memset(models, 0, sizeof(models));
  for (int i = 0; i < 2; i++) {
    struct model *x = &models[i];
    x->seed = seed;
    x->rng = (seed + (unsigned long long)i) * 0x9e3779b97f4a7c15ull + 1;
    if (x->rng == 0)
      x->rng = 1; /* xorshift never leaves 0 */
    x->rb = mk(rnd(x) % 2 ? 0 : 1 + rnd_upto(x, 100));
  }
  for (unsigned long op = 0; op < ops; op++) {
    struct model *m = &models[op % 7 < 4 ? 0 : 1];
    unsigned r = (unsigned)(rnd(m) % 100);
    models[0].op = models[1].op = op;
    if (r < 5)
      op_move(m, &models[m == &models[0]]);
    else if (r < 30)
      op_write(m);
    else if (r < 50)
      op_read(m);
    else if (r < 60)
      op_peek(m);
    else if (r < 72)
      op_retrieve(m);
    else if (r < 80)
      op_linearize(m);
    else if (r < 95)
      op_find(m);
    else if (r < 98)
      op_set_limit(m);
    else if (r < 99) {
      ringbuffer_retrieve_all(m->rb);
      m->len = 0;
    } else {
      size_t keep = rnd_upto(m, 256), cap = ringbuffer_shrink(m->rb, keep);
      MCHECK(m, cap == ringbuffer_cap(m->rb));
      MCHECK(m, m->len > 0 || cap <= keep);
    }
    model_check(&models[0]);
    model_check(&models[1]);
  }
  ringbuffer_free(models[0].rb);
  ringbuffer_free(models[1].rb);
}
END_TEST

/* ---- suite ------------------------------------------------------------- */

struct named_test {
  const char *name;
  const TTest *test;
};

static Suite *ringbuffer_suite(void)
{
  /* Not static: the TTest pointers are variables, not constants. */
  const struct named_test tests[] = {
      {"new_free_getters", test_new_free_getters},
      {"write_read", test_write_read},
      {"peek_one_segment", test_peek_one_segment},
      {"peek_two_segments", test_peek_two_segments},
      {"retrieve", test_retrieve},
      {"wraparound", test_wraparound},
      {"growth_policy", test_growth_policy},
      {"growth_wrapped", test_growth_wrapped},
      {"growth_unwrapped_offset", test_growth_unwrapped_offset},
      {"no_alloc_when_fits", test_no_alloc_when_fits},
      {"limit_exact", test_limit_exact},
      {"limit_not_power_of_two", test_limit_not_power_of_two},
      {"limit_below_len", test_limit_below_len},
      {"size_overflow", test_size_overflow},
      {"enomem", test_enomem},
      {"linearize_basic", test_linearize_basic},
      {"linearize_wrap", test_linearize_wrap},
      {"linearize_every_layout", test_linearize_every_layout},
      {"find_basic", test_find_basic},
      {"find_split_by_wrap", test_find_split_by_wrap},
      {"find_every_layout", test_find_every_layout},
      {"find_from_every_layout", test_find_from_every_layout},
      {"find_from_resumes", test_find_from_resumes},
      {"reserve", test_reserve},
      {"read_fd_basic", test_read_fd_basic},
      {"read_fd_two_free_segments", test_read_fd_two_free_segments},
      {"read_fd_spill", test_read_fd_spill},
      {"read_fd_large_room_no_spill", test_read_fd_large_room_no_spill},
      {"read_fd_limit", test_read_fd_limit},
      {"read_fd_at_limit", test_read_fd_at_limit},
      {"read_fd_limit_below_cap", test_read_fd_limit_below_cap},
      {"write_fd_basic", test_write_fd_basic},
      {"write_fd_partial", test_write_fd_partial},
      {"write_fd_pipe", test_write_fd_pipe},
      {"write_fd_epipe", test_write_fd_epipe},
      {"shrink", test_shrink},
      {"move_swaps_into_empty", test_move_swaps_into_empty},
      {"move_copies_otherwise", test_move_copies_otherwise},
      {"move_limits", test_move_limits},
      {"random_vs_reference", test_random_vs_reference},
  };
  Suite *s = suite_create("ringbuffer");
  for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
    TCase *tc = tcase_create(tests[i].name);
    tcase_add_test(tc, tests[i].test);
    suite_add_tcase(s, tc);
  }
  return s;
}

int main(void)
{
  SRunner *sr = srunner_create(ringbuffer_suite());
  srunner_run_all(sr, CK_ENV);
  int failures = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failures ? 1 : 0;
}
