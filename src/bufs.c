/* bufs.c - a loop's shared I/O buffers and its spare pool (see bufs.h). */
#include "bufs.h"

#include <errno.h>
#include <sys/uio.h>

/* Spare buffers keep at most this much storage in the pool. */
#define POOL_KEEP_CAP (64 * 1024)
/* adopt copies rather than hands over a shared buffer when the pending
 * bytes (plus ADOPT_MIN) use less than 1 / ADOPT_SLACK of it. */
#define ADOPT_SLACK 4
#define ADOPT_MIN 1024

int gev__bufs_init(gev__bufs *b, size_t max_buffer)
{
  /* Both the same size: ringbuffer_move (an echo, a relay) swaps their
   * storage back and forth, and neither should end up the small one. */
  b->in = ringbuffer_new(GEV__SHARED_CAP);
  b->out = ringbuffer_new(GEV__SHARED_CAP);
  b->npool = 0;
  b->trim_armed = false;
  if (!b->in || !b->out) {
    gev__bufs_free(b);
    return -ENOMEM;
  }
  /* The shared buffers carry the connections' cap like the spares: a read
   * into `in` must not take more than max_buffer, and adopt hands these
   * very buffers to connections (uncapped, a frame that never completes
   * would take unbounded memory). */
  ringbuffer_set_limit(b->in, max_buffer);
  ringbuffer_set_limit(b->out, max_buffer);
  return 0;
}

void gev__bufs_free(gev__bufs *b)
{
  ringbuffer_free(b->in);
  ringbuffer_free(b->out);
  b->in = b->out = NULL;
  for (int i = 0; i < b->npool; i++)
    ringbuffer_free(b->pool[i]);
  b->npool = 0;
}

ringbuffer *gev__bufs_get(gev__bufs *b, size_t max_buffer)
{
  ringbuffer *rb = b->npool ? b->pool[--b->npool] : ringbuffer_new(0);

  if (rb)
    ringbuffer_set_limit(rb, max_buffer);
  return rb;
}

void gev__bufs_put(gev__bufs *b, ringbuffer *rb)
{
  int cap = (int)(sizeof(b->pool) / sizeof(b->pool[0]));

  ringbuffer_retrieve_all(rb);
  ringbuffer_shrink(rb, POOL_KEEP_CAP);
  if (b->npool < cap)
    b->pool[b->npool++] = rb;
  else
    ringbuffer_free(rb);
}

/* The shared buffers are large (reads land in them, and handlers may hand
 * their storage over with ringbuffer_move), so when little of one is used
 * the connection gets a copy in a right-sized spare and the loop keeps the
 * large one: a connection holds about what it has pending, not 64 KiB for
 * a few bytes. */
bool gev__bufs_adopt(gev__bufs *b, ringbuffer **shared, ringbuffer **own,
                     size_t max_buffer)
{
  ringbuffer *spare = gev__bufs_get(b, max_buffer);
  size_t len = ringbuffer_len(*shared), fair = ADOPT_SLACK * (len + ADOPT_MIN);

  if (!spare)
    return false;
  if (ringbuffer_cap(*shared) > fair) {
    struct iovec seg[2];

    /* A spare as oversized as the shared buffer is no better: its storage
     * goes, and the copy below allocates what the bytes need. */
    ringbuffer_shrink(spare, fair);
    ringbuffer_peek(*shared, len, seg);
    if (ringbuffer_write(spare, seg[0].iov_base, seg[0].iov_len) == 0 &&
        ringbuffer_write(spare, seg[1].iov_base, seg[1].iov_len) == 0) {
      ringbuffer_retrieve_all(*shared);
      *own = spare;
      return true;
    }
    ringbuffer_retrieve_all(spare); /* fall back to the swap */
  }
  *own = *shared;
  *shared = spare;
  return true;
}

/* A large message leaves its storage in the shared buffers: a read that
 * grew `in`, or a handler that moved a large held input into `out`.
 * Unchecked, every loop would keep the largest message it ever saw, up to
 * max_buffer each. */
static void trim_one(ringbuffer **rb)
{
  ringbuffer *fresh;

  if (ringbuffer_cap(*rb) <= GEV__SHARED_CAP || !ringbuffer_empty(*rb))
    return;
  fresh = ringbuffer_new(GEV__SHARED_CAP);
  if (!fresh)
    return; /* the large one still works; try again at the next growth */
  ringbuffer_set_limit(fresh, ringbuffer_limit(*rb));
  ringbuffer_free(*rb);
  *rb = fresh;
}

void gev__bufs_trim(gev__bufs *b)
{
  b->trim_armed = false;
  trim_one(&b->in);
  trim_one(&b->out);
}
