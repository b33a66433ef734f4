/*
 * bench-ringbuffer.c - ring buffer micro-benchmark bodies (see bench.h).
 *
 * Copy throughput is compared with one plain memcpy of the same chunk, the
 * floor for anything that copies data through a buffer (write + read copy
 * twice). The descriptor bodies are compared with plain write + read on the
 * same kind of socket pair, so the difference is the ring buffer's share.
 */
#include "bench.h"

#include <gev/ringbuffer.h>

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* What a body may need; fixture_fini releases whatever was set up. */
struct fixture {
  char *src; /* chunk bytes to store or send */
  char *dst; /* chunk bytes read back */
  ringbuffer *rb;
  int sv[2]; /* AF_UNIX stream pair, blocking: every chunk is drained */
};

enum { WITH_RB = 1, WITH_PAIR = 2 };

static void fixture_fini(struct fixture *f)
{
  free(f->src);
  free(f->dst);
  ringbuffer_free(f->rb);
  if (f->sv[0] >= 0) {
    close(f->sv[0]);
    close(f->sv[1]);
  }
}

static int fixture_init(struct fixture *f, size_t chunk, int what,
                        size_t rb_cap)
{
  f->src = malloc(chunk);
  f->dst = malloc(chunk);
  f->rb = what & WITH_RB ? ringbuffer_new(rb_cap) : NULL;
  f->sv[0] = f->sv[1] = -1;
  if ((what & WITH_PAIR) &&
      socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, f->sv) != 0)
    f->sv[0] = f->sv[1] = -1;
  if (!f->src || !f->dst || ((what & WITH_RB) && !f->rb) ||
      ((what & WITH_PAIR) && f->sv[0] < 0)) {
    fixture_fini(f);
    return -1;
  }
  memset(f->src, 'x', chunk);
  memset(f->dst, 0, chunk);
  return 0;
}

int gev_bench_memcpy(size_t chunk, uint64_t iters)
{
  struct fixture f;
  if (fixture_init(&f, chunk, 0, 0) != 0)
    return -1;
  for (uint64_t i = 0; i < iters; i++) {
    gev_bench_escape(f.src); /* the source may change: copy every time */
    memcpy(f.dst, f.src, chunk);
    gev_bench_escape(f.dst);
  }
  fixture_fini(&f);
  return 0;
}

/* The loop shared by the write + read bodies. */
static int write_read_loop(struct fixture *f, size_t chunk, uint64_t iters)
{
  for (uint64_t i = 0; i < iters; i++) {
    gev_bench_escape(f->src);
    if (ringbuffer_write(f->rb, f->src, chunk) != 0 ||
        ringbuffer_read(f->rb, f->dst, chunk) != chunk)
      return -1;
    gev_bench_escape(f->dst);
  }
  return 0;
}

/* Write then read one chunk; the buffer drains each time (head resets). */
int gev_bench_rb_write_read(size_t chunk, uint64_t iters)
{
  struct fixture f;
  int rc;
  if (fixture_init(&f, chunk, WITH_RB, 0) != 0)
    return -1;
  rc = write_read_loop(&f, chunk, iters);
  fixture_fini(&f);
  return rc;
}

/*
 * Same with a standing backlog in a capacity that is not a multiple of the
 * chunk: the data keeps moving round the ring and some chunks are split.
 */
int gev_bench_rb_write_read_wrapped(size_t chunk, uint64_t iters)
{
  struct fixture f;
  int rc;
  if (fixture_init(&f, chunk, WITH_RB, 4 * chunk + 31) != 0)
    return -1;
  rc = ringbuffer_write(f.rb, f.src, chunk);
  if (rc == 0)
    rc = ringbuffer_write(f.rb, f.src, chunk / 2 + 13);
  if (rc == 0)
    rc = write_read_loop(&f, chunk, iters);
  fixture_fini(&f);
  return rc;
}

/* Describe the first chunk of a buffer whose data wraps mid-chunk. */
int gev_bench_rb_peek(size_t chunk, uint64_t iters)
{
  struct fixture f;
  struct iovec seg[2];
  int rc;
  if (fixture_init(&f, chunk, WITH_RB, 2 * chunk) != 0)
    return -1;
  rc = ringbuffer_write(f.rb, f.src, chunk);
  if (rc == 0)
    rc = ringbuffer_write(f.rb, f.src, chunk);
  ringbuffer_retrieve(f.rb, chunk + chunk / 2);
  if (rc == 0)
    rc = ringbuffer_write(f.rb, f.src, chunk);
  for (uint64_t i = 0; rc == 0 && i < iters; i++) {
    gev_bench_escape(f.rb);
    if (ringbuffer_peek(f.rb, chunk, seg) != chunk)
      rc = -1;
    gev_bench_escape(seg);
  }
  fixture_fini(&f);
  return rc;
}

/* Reference for the descriptor bodies: write(2) then read(2) of a chunk. */
int gev_bench_fd_write_read(size_t chunk, uint64_t iters)
{
  struct fixture f;
  int rc = 0;
  if (fixture_init(&f, chunk, WITH_PAIR, 0) != 0)
    return -1;
  for (uint64_t i = 0; rc == 0 && i < iters; i++) {
    if (write(f.sv[1], f.src, chunk) != (ssize_t)chunk ||
        read(f.sv[0], f.dst, chunk) != (ssize_t)chunk)
      rc = -1;
    gev_bench_escape(f.dst);
  }
  fixture_fini(&f);
  return rc;
}

/* write(2) a chunk, ringbuffer_read_fd it, consume it. */
int gev_bench_rb_read_fd(size_t chunk, uint64_t iters)
{
  struct fixture f;
  int rc = 0, err;
  if (fixture_init(&f, chunk, WITH_RB | WITH_PAIR, 0) != 0)
    return -1;
  for (uint64_t i = 0; rc == 0 && i < iters; i++) {
    if (write(f.sv[1], f.src, chunk) != (ssize_t)chunk ||
        ringbuffer_read_fd(f.rb, f.sv[0], &err) != (ssize_t)chunk)
      rc = -1;
    ringbuffer_retrieve_all(f.rb);
  }
  fixture_fini(&f);
  return rc;
}

/* Store a chunk, ringbuffer_write_fd it, read(2) it at the peer. */
int gev_bench_rb_write_fd(size_t chunk, uint64_t iters)
{
  struct fixture f;
  int rc = 0, err;
  if (fixture_init(&f, chunk, WITH_RB | WITH_PAIR, 0) != 0)
    return -1;
  for (uint64_t i = 0; rc == 0 && i < iters; i++) {
    if (ringbuffer_write(f.rb, f.src, chunk) != 0 ||
        ringbuffer_write_fd(f.rb, f.sv[0], &err) != (ssize_t)chunk ||
        read(f.sv[1], f.dst, chunk) != (ssize_t)chunk)
      rc = -1;
    gev_bench_escape(f.dst);
  }
  fixture_fini(&f);
  return rc;
}
