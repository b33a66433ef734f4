/*
 * ringbuffer.c - a growable byte FIFO over one wrapping allocation.
 *
 * The stored bytes start at buf[head] and run for len bytes, wrapping from
 * buf[cap - 1] to buf[0]. Invariants: head < cap (or head == 0 when cap is
 * 0), len <= cap, and head == 0 whenever len == 0, so a buffer that drains
 * completely starts contiguous again.
 *
 * Depends on libc only (memmem needs _GNU_SOURCE, set by the build).
 */
#include <gev/ringbuffer.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

/* The libc wrappers of readv and sendmsg are pthread cancellation points:
 * in a multi-threaded process each call turns asynchronous cancellation on
 * and off around the system call, some 30 instructions each way, which was
 * a tenth of gev's user-space work per echoed message. Made through
 * syscall() they are plain system calls (not cancellation points, as the
 * header says), with the same results and errno. Under ThreadSanitizer the
 * wrappers stay: it learns the ordering that data passing through a
 * descriptor implies from the calls it intercepts. */
#if defined(__SANITIZE_THREAD__)
#define RB_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define RB_TSAN 1
#endif
#endif

static ssize_t sys_readv(int fd, const struct iovec *iov, int cnt)
{
#ifdef RB_TSAN
  return readv(fd, iov, cnt);
#else
  return (ssize_t)syscall(SYS_readv, fd, iov, cnt);
#endif
}

static ssize_t sys_read(int fd, void *p, size_t n)
{
#ifdef RB_TSAN
  return read(fd, p, n);
#else
  return (ssize_t)syscall(SYS_read, fd, p, n);
#endif
}

static ssize_t sys_send(int fd, const void *p, size_t n, int flags)
{
#ifdef RB_TSAN
  return send(fd, p, n, flags);
#else
  return (ssize_t)syscall(SYS_sendto, fd, p, n, flags, NULL, 0);
#endif
}

static ssize_t sys_sendmsg(int fd, const struct msghdr *msg, int flags)
{
#ifdef RB_TSAN
  return sendmsg(fd, msg, flags);
#else
  return (ssize_t)syscall(SYS_sendmsg, fd, msg, flags);
#endif
}

/* Smallest allocation made by growth: avoids a string of tiny reallocs. */
#define RB_MIN_GROW 64

/* Stack area that lets one read_fd take more than the free space. */
#define RB_SPILL (64 * 1024)

struct ringbuffer {
  char *buf;    /* storage, NULL while cap is 0 */
  size_t cap;   /* bytes allocated */
  size_t head;  /* index of the first stored byte */
  size_t len;   /* bytes stored */
  size_t limit; /* maximum capacity, 0 for none */
};

static size_t min_size(size_t a, size_t b)
{
  return a < b ? a : b;
}

static size_t max_size(size_t a, size_t b)
{
  return a > b ? a : b;
}

/* Index of the first free byte, i.e. one past the last stored byte. */
static size_t tail_index(const ringbuffer *rb)
{
  /* head < cap and len <= cap <= SSIZE_MAX: the sum cannot overflow. */
  size_t t = rb->head + rb->len;
  return t >= rb->cap ? t - rb->cap : t;
}

/* True when the stored bytes wrap, i.e. form two segments. */
static bool is_wrapped(const ringbuffer *rb)
{
  return rb->len > rb->cap - rb->head;
}

/*
 * Most bytes the buffer may hold: the limit, and never more than SSIZE_MAX
 * because find and read_fd report sizes as ssize_t (malloc refuses larger
 * blocks anyway). This also keeps cap * 2 and head + len from overflowing.
 */
static size_t max_len(const ringbuffer *rb)
{
  return rb->limit != 0 && rb->limit < SSIZE_MAX ? rb->limit : SSIZE_MAX;
}

/* Bytes that may still be stored (0 when at or past the limit). */
static size_t room_to_limit(const ringbuffer *rb)
{
  size_t max = max_len(rb);
  return max > rb->len ? max - rb->len : 0;
}

/*
 * True when storing @p n more bytes would pass the limit. Written without
 * len + n, which could wrap around for a huge n.
 */
static bool exceeds_limit(const ringbuffer *rb, size_t n)
{
  size_t max = max_len(rb);
  return n > max || rb->len > max - n;
}

ringbuffer *ringbuffer_new(size_t initial_capacity)
{
  ringbuffer *rb = calloc(1, sizeof(*rb));
  if (!rb)
    return NULL;
  if (initial_capacity > 0) {
    rb->buf = malloc(initial_capacity);
    if (!rb->buf) {
      free(rb);
      return NULL;
    }
    rb->cap = initial_capacity;
  }
  return rb;
}

void ringbuffer_free(ringbuffer *rb)
{
  if (!rb)
    return;
  free(rb->buf);
  free(rb);
}

size_t ringbuffer_len(const ringbuffer *rb)
{
  return rb->len;
}

size_t ringbuffer_cap(const ringbuffer *rb)
{
  return rb->cap;
}

bool ringbuffer_empty(const ringbuffer *rb)
{
  return rb->len == 0;
}

void ringbuffer_set_limit(ringbuffer *rb, size_t max_cap)
{
  /* Only future growth is affected: shrinking here could drop bytes. */
  rb->limit = max_cap;
}

size_t ringbuffer_limit(const ringbuffer *rb)
{
  return rb->limit;
}

/* The capacity growth picks for @p need bytes: doubling amortizes copies. */
static size_t grown_cap(const ringbuffer *rb, size_t need)
{
  size_t c = max_size(need, max_size(rb->cap * 2, RB_MIN_GROW));
  /* The caller checked need <= max_len, so clamping keeps c >= need. */
  return min_size(c, max_len(rb));
}

/*
 * Move the storage to a new allocation of @p newcap bytes with the data at
 * its start. Nothing changes on failure, which keeps writes all or nothing.
 */
static int realloc_storage(ringbuffer *rb, size_t newcap)
{
  char *nb;
  if (!is_wrapped(rb)) {
    /* One segment: realloc may extend in place and avoid the copy. */
    nb = realloc(rb->buf, newcap);
    if (!nb)
      return -ENOMEM;
    if (rb->head != 0)
      memmove(nb, nb + rb->head, rb->len);
  } else {
    /* Two segments: realloc would copy the wrap as is, so copy by hand. */
    size_t first = rb->cap - rb->head;
    nb = malloc(newcap);
    if (!nb)
      return -ENOMEM;
    memcpy(nb, rb->buf + rb->head, first);
    memcpy(nb + first, rb->buf, rb->len - first);
    free(rb->buf);
  }
  rb->buf = nb;
  rb->cap = newcap;
  rb->head = 0;
  return 0;
}

/* Make room for @p need stored bytes in total; need <= limit is checked. */
static int grow(ringbuffer *rb, size_t need)
{
  size_t newcap = grown_cap(rb, need);
  int rc = realloc_storage(rb, newcap);
  /* Doubling is a preference: under memory pressure settle for the need. */
  if (rc != 0 && newcap > need)
    rc = realloc_storage(rb, need);
  return rc;
}

/* Copy @p n bytes (known to fit) after the stored ones. */
static void copy_in(ringbuffer *rb, const char *p, size_t n)
{
  size_t tail = tail_index(rb);
  size_t first = min_size(n, rb->cap - tail);
  memcpy(rb->buf + tail, p, first);
  if (n > first)
    memcpy(rb->buf, p + first, n - first);
  rb->len += n;
}

int ringbuffer_write(ringbuffer *rb, const void *p, size_t n)
{
  /* Checked first: a zero-length write past a lowered limit fails too. */
  if (exceeds_limit(rb, n))
    return -ENOBUFS;
  if (n == 0)
    return 0;
  if (rb->len + n > rb->cap) {
    int rc = grow(rb, rb->len + n);
    if (rc != 0)
      return rc;
  }
  copy_in(rb, p, n);
  return 0;
}

size_t ringbuffer_peek(const ringbuffer *rb, size_t n, struct iovec seg[2])
{
  size_t first;
  memset(seg, 0, 2 * sizeof(seg[0]));
  n = min_size(n, rb->len);
  if (n == 0)
    return 0; /* buf may be NULL: do no arithmetic on it */
  first = min_size(n, rb->cap - rb->head);
  seg[0].iov_base = rb->buf + rb->head;
  seg[0].iov_len = first;
  if (n > first) {
    seg[1].iov_base = rb->buf;
    seg[1].iov_len = n - first;
  }
  return n;
}

void ringbuffer_retrieve(ringbuffer *rb, size_t n)
{
  if (n >= rb->len) {
    ringbuffer_retrieve_all(rb);
    return;
  }
  rb->head += n;
  if (rb->head >= rb->cap)
    rb->head -= rb->cap;
  rb->len -= n;
}

void ringbuffer_retrieve_all(ringbuffer *rb)
{
  /* Restarting at 0 keeps the next writes in one segment. */
  rb->head = 0;
  rb->len = 0;
}

size_t ringbuffer_read(ringbuffer *rb, void *dst, size_t n)
{
  struct iovec seg[2];
  n = ringbuffer_peek(rb, n, seg);
  if (n == 0)
    return 0;
  memcpy(dst, seg[0].iov_base, seg[0].iov_len);
  if (seg[1].iov_len > 0)
    memcpy((char *)dst + seg[0].iov_len, seg[1].iov_base, seg[1].iov_len);
  ringbuffer_retrieve(rb, n);
  return n;
}

/* Exchange the storage (not the limits) of two buffers. */
static void swap_storage(ringbuffer *a, ringbuffer *b)
{
  ringbuffer t = *a;
  a->buf = b->buf;
  a->cap = b->cap;
  a->head = b->head;
  a->len = b->len;
  b->buf = t.buf;
  b->cap = t.cap;
  b->head = t.head;
  b->len = t.len;
}

/* The copying half of ringbuffer_move, out of line: the swap path of an
 * echo then needs no stack frame or saved registers. */
__attribute__((noinline)) static ssize_t move_copy(ringbuffer *dst,
                                                   ringbuffer *src, size_t n)
{
  struct iovec seg[2];
  int rc;

  if (dst->len + n > dst->cap && (rc = grow(dst, dst->len + n)) != 0)
    return rc;
  ringbuffer_peek(src, n, seg);
  copy_in(dst, seg[0].iov_base, seg[0].iov_len);
  if (seg[1].iov_len > 0)
    copy_in(dst, seg[1].iov_base, seg[1].iov_len);
  ringbuffer_retrieve(src, n);
  return (ssize_t)n;
}

ssize_t ringbuffer_move(ringbuffer *dst, ringbuffer *src, size_t n)
{
  if (dst == src)
    return -EINVAL;
  n = min_size(n, src->len);
  if (exceeds_limit(dst, n))
    return -ENOBUFS;
  if (n == 0)
    return 0;
  /* All of src into an empty dst: hand over the allocation instead of
   * copying, when each side's capacity fits the other's limit (so neither
   * ends up holding more than it may grow to). src keeps dst's old,
   * empty storage for its next bytes. */
  if (dst->len == 0 && n == src->len && src->cap <= max_len(dst) &&
      dst->cap <= max_len(src)) {
    swap_storage(dst, src); /* dst was empty, so src now is, with head 0 */
    return (ssize_t)n;
  }
  return move_copy(dst, src, n);
}

static void reverse(char *p, size_t n)
{
  size_t i = 0, j = n;
  while (i + 1 < j) {
    char t = p[i];
    p[i++] = p[--j];
    p[j] = t;
  }
}

/* Rotate p[0..n) left by k bytes in place (three reversals, no memory). */
static void rotate_left(char *p, size_t n, size_t k)
{
  reverse(p, k);
  reverse(p + k, n - k);
  reverse(p, n);
}

/*
 * Bring wrapped data to the start of the storage. The layout is
 * [second | free | first]; the result is [first | second | free].
 */
static void unwrap(ringbuffer *rb)
{
  size_t first = rb->cap - rb->head;
  size_t second = rb->len - first;
  size_t gap = rb->cap - rb->len;
  if (first <= gap) {
    /* The free gap takes the shifted second segment: two plain copies. */
    memmove(rb->buf + first, rb->buf, second);
    memcpy(rb->buf, rb->buf + rb->head, first);
  } else {
    /* Too little free space: close the gap, then rotate the data only. */
    memmove(rb->buf + second, rb->buf + rb->head, first);
    rotate_left(rb->buf, rb->len, second);
  }
  rb->head = 0;
}

void *ringbuffer_linearize(ringbuffer *rb, size_t n)
{
  if (n > rb->len || !rb->buf)
    return NULL;
  /* Only move bytes when the requested prefix actually crosses the wrap. */
  if (n > rb->cap - rb->head)
    unwrap(rb);
  return rb->buf + rb->head;
}

/*
 * The first match of the @p m bytes at @p nd that begins in @p a (of length
 * @p alen) at index @p from or later and continues into @p b (of length
 * @p blen), or -1. Such matches begin in the last m - 1 bytes of a.
 */
static ssize_t find_split(const char *a, size_t alen, const char *b,
                          size_t blen, const char *nd, size_t m, size_t from)
{
  size_t i = alen >= m ? alen - m + 1 : 0;

  for (i = i > from ? i : from; i < alen; i++) {
    size_t in_a = alen - i;
    if (m - in_a > blen)
      continue; /* the match would run past the stored bytes */
    if (memcmp(a + i, nd, in_a) == 0 && memcmp(b, nd + in_a, m - in_a) == 0)
      return (ssize_t)i;
  }
  return -1;
}

ssize_t ringbuffer_find_from(const ringbuffer *rb, size_t from,
                             const void *needle, size_t m)
{
  struct iovec seg[2];
  const char *a, *b, *hit;
  size_t alen, blen;
  ssize_t off;

  if (m == 0 || from > rb->len || m > rb->len - from)
    return -1;
  ringbuffer_peek(rb, rb->len, seg);
  a = seg[0].iov_base;
  alen = seg[0].iov_len;
  b = seg[1].iov_base;
  blen = seg[1].iov_len;

  /* Candidates in increasing offset: first segment, the wrap, second. */
  if (from < alen) {
    hit = memmem(a + from, alen - from, needle, m);
    if (hit)
      return hit - a;
    if (blen == 0)
      return -1;
    off = find_split(a, alen, b, blen, needle, m, from);
    if (off >= 0)
      return off;
    from = alen;
  }
  hit = memmem(b + (from - alen), blen - (from - alen), needle, m);
  return hit ? (ssize_t)alen + (hit - b) : -1;
}

ssize_t ringbuffer_find(const ringbuffer *rb, const void *needle, size_t m)
{
  return ringbuffer_find_from(rb, 0, needle, m);
}

/* Room is made the way a write makes it, so a later write of up to n
 * bytes neither fails nor allocates. */
int ringbuffer_reserve(ringbuffer *rb, size_t n)
{
  if (exceeds_limit(rb, n))
    return -ENOBUFS;
  if (rb->len + n > rb->cap)
    return grow(rb, rb->len + n);
  return 0;
}

static ssize_t fail(int *saved_errno, int err)
{
  if (saved_errno)
    *saved_errno = err;
  return -1;
}

/*
 * Describe the free space, at most @p max bytes, as up to two iovecs in the
 * order the ring fills it. @return the number of iovecs used.
 */
static int free_segments(const ringbuffer *rb, size_t max, struct iovec *iov)
{
  size_t tail = tail_index(rb);
  size_t n1, n2;
  int cnt = 0;

  if (rb->len == rb->cap)
    return 0;
  if (tail < rb->head) { /* one gap between the tail and the head */
    n1 = rb->head - tail;
    n2 = 0;
  } else { /* the tail runs to the end, then wraps up to the head */
    n1 = rb->cap - tail;
    n2 = rb->head;
  }
  n1 = min_size(n1, max);
  n2 = min_size(n2, max - n1);
  if (n1 > 0) {
    iov[cnt].iov_base = rb->buf + tail;
    iov[cnt++].iov_len = n1;
  }
  if (n2 > 0) {
    iov[cnt].iov_base = rb->buf;
    iov[cnt++].iov_len = n2;
  }
  return cnt;
}

/*
 * About ENOMEM and the spill area: bytes that readv put in the spill area
 * are already consumed from the descriptor, so the growth that stores them
 * must not fail. read_fd therefore grows before reading when the buffer is
 * full (or has no storage), which is cheap because that growth would happen
 * anyway, and growth falls back to the exact size when doubling fails. If
 * even that allocation fails, the spilled bytes cannot be kept: read_fd
 * then stores the bytes that fit, returns -1 with ENOMEM, and the stream is
 * broken (the caller must close it). This only happens when memory is
 * exhausted; the limit never causes a loss because reads are clamped to it.
 */
ssize_t ringbuffer_read_fd(ringbuffer *rb, int fd, int *saved_errno)
{
  char spill[RB_SPILL];
  struct iovec iov[3];
  size_t room = room_to_limit(rb), in_buf = 0;
  ssize_t n;
  int cnt, i;

  if (room == 0)
    return fail(saved_errno, ENOBUFS);
  if (rb->len == rb->cap && grow(rb, rb->len + 1) != 0)
    return fail(saved_errno, ENOMEM);

  cnt = free_segments(rb, room, iov);
  for (i = 0; i < cnt; i++)
    in_buf += iov[i].iov_len;
  /* The spill area only when the buffer offers less than it does: with
   * that much room already, one plain read into the buffer is as good,
   * and a single-segment read() costs the kernel less than readv(). */
  if (room > in_buf && in_buf < sizeof(spill)) {
    iov[cnt].iov_base = spill;
    iov[cnt++].iov_len = min_size(room - in_buf, sizeof(spill));
  }

  n = cnt == 1 ? sys_read(fd, iov[0].iov_base, iov[0].iov_len)
               : sys_readv(fd, iov, cnt);
  if (n < 0)
    return fail(saved_errno, errno);
  if ((size_t)n <= in_buf) {
    rb->len += (size_t)n;
    return n;
  }
  rb->len += in_buf;
  if (ringbuffer_write(rb, spill, (size_t)n - in_buf) != 0)
    return fail(saved_errno, ENOMEM); /* see the comment above */
  return n;
}

ssize_t ringbuffer_write_fd(ringbuffer *rb, int fd, int *saved_errno)
{
  struct iovec seg[2];
  int cnt;
  ssize_t n;

  if (rb->len == 0)
    return 0;
  ringbuffer_peek(rb, rb->len, seg);
  cnt = seg[1].iov_len > 0 ? 2 : 1;

  /* send() for one segment, which the kernel handles more cheaply;
   * sendmsg() for two, the only call that takes MSG_NOSIGNAL and an
   * iovec. */
  if (cnt == 1) {
    n = sys_send(fd, seg[0].iov_base, seg[0].iov_len, MSG_NOSIGNAL);
  } else {
    struct msghdr msg = {.msg_iov = seg, .msg_iovlen = 2};
    n = sys_sendmsg(fd, &msg, MSG_NOSIGNAL);
  }
  if (n < 0 && errno == ENOTSOCK)
    n = writev(fd, seg, cnt);
  if (n < 0)
    return fail(saved_errno, errno);
  ringbuffer_retrieve(rb, (size_t)n);
  return n;
}

size_t ringbuffer_shrink(ringbuffer *rb, size_t keep)
{
  if (rb->len == 0 && rb->cap > keep) {
    free(rb->buf);
    rb->buf = NULL;
    rb->cap = 0;
    rb->head = 0;
  }
  return rb->cap;
}
