/*
 * bench.h - micro-benchmark bodies written in C, run by Google Benchmark.
 *
 * Each body is a plain C function that sets up its own fixture, performs
 * @p iters operations on @p arg (a size in bytes unless said otherwise),
 * tears the fixture down and returns 0, or -1 when the setup failed. The
 * thin C++ shim (shim.cc) registers every body with Google Benchmark and
 * hands it the whole iteration count at once, so the C loop is what gets
 * timed and the setup is amortized over it.
 *
 * Bodies whose setup or refill between batches would swamp the operation
 * (the timer heap, cross-thread posting) time themselves instead: they
 * have the gev_bench_timed_fn signature and return the seconds spent in
 * the measured part (the shim reports it as manual time).
 *
 * To add benchmarks: write the bodies in a new bench-*.c file, declare them
 * here, list them in the table of shim.cc and add the file to meson.build.
 */
#ifndef GEV_BENCH_MICRO_H
#define GEV_BENCH_MICRO_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The signature of a body timed as a whole. */
typedef int (*gev_bench_fn)(size_t arg, uint64_t iters);

/** The signature of a body that times itself: it returns the seconds the
 *  @p iters measured operations took, or a negative value on failure. */
typedef double (*gev_bench_timed_fn)(size_t arg, uint64_t iters);

/**
 * Make the optimizer assume @p p is read and any memory is written, so the
 * work that produced *p cannot be dropped or hoisted out of the loop.
 */
static inline void gev_bench_escape(const void *p)
{
  __asm__ __volatile__("" : : "r"(p) : "memory");
}

/* Ring buffer (bench-ringbuffer.c); arg is the chunk size. */
int gev_bench_memcpy(size_t chunk, uint64_t iters);
int gev_bench_rb_write_read(size_t chunk, uint64_t iters);
int gev_bench_rb_write_read_wrapped(size_t chunk, uint64_t iters);
int gev_bench_rb_peek(size_t chunk, uint64_t iters);
int gev_bench_fd_write_read(size_t chunk, uint64_t iters);
int gev_bench_rb_read_fd(size_t chunk, uint64_t iters);
int gev_bench_rb_write_fd(size_t chunk, uint64_t iters);

/* Timer heap (bench-timers.c); arg is the number of armed timers kept.
 * insert: gev__timers_add; pop: gev__timers_pop_due + gev__timers_done of
 * the earliest timer; cancel: gev__timers_cancel of a random armed one. */
double gev_bench_timer_insert(size_t n, uint64_t iters);
double gev_bench_timer_pop(size_t n, uint64_t iters);
double gev_bench_timer_cancel(size_t n, uint64_t iters);

/* Cross-thread posting (bench-post.c); arg is the number of producer
 * threads posting to one running worker loop; iters is the task count. */
double gev_bench_loop_post(size_t producers, uint64_t iters);

#ifdef __cplusplus
}
#endif

#endif /* GEV_BENCH_MICRO_H */
