// shim.cc - registers the C benchmark bodies of bench.h with Google Benchmark.
//
// The bodies own their loop: each run hands one body the whole iteration
// count Google Benchmark chose, so only C code is timed and the fixture
// setup is paid once per run. To add a benchmark, declare the body in
// bench.h and add a row to kBodies (or kTimedBodies for a body that times
// itself and returns seconds: reported as manual time).
#include <benchmark/benchmark.h>

#include <cstdint>
#include <initializer_list>

#include "bench.h"

namespace {

struct Body {
  const char *name;
  gev_bench_fn fn;
  std::initializer_list<int64_t> args;  // one run per arg (chunk size)
};

const Body kBodies[] = {
    // Ring buffer: copies through the buffer vs one plain memcpy.
    {"memcpy", gev_bench_memcpy, {64, 4096}},
    {"rb_write_read", gev_bench_rb_write_read, {64, 4096}},
    {"rb_write_read_wrapped", gev_bench_rb_write_read_wrapped, {64, 4096}},
    {"rb_peek", gev_bench_rb_peek, {64, 4096}},
    // Ring buffer I/O vs plain write(2) + read(2) on a socket pair.
    {"fd_write_read", gev_bench_fd_write_read, {64, 4096}},
    {"rb_read_fd", gev_bench_rb_read_fd, {64, 4096}},
    {"rb_write_fd", gev_bench_rb_write_fd, {64, 4096}},
};

struct TimedBody {
  const char *name;
  gev_bench_timed_fn fn;
  std::initializer_list<int64_t> args;  // one run per arg
};

const TimedBody kTimedBodies[] = {
    // Timer heap at 1k .. 1M armed timers: one operation per iteration.
    {"timer_insert", gev_bench_timer_insert, {1000, 10000, 100000, 1000000}},
    {"timer_pop", gev_bench_timer_pop, {1000, 10000, 100000, 1000000}},
    {"timer_cancel", gev_bench_timer_cancel, {1000, 10000, 100000, 1000000}},
    // gev_loop_post to a running worker loop from 1 and 2 producer threads:
    // one task per iteration (items_per_second = tasks/s).
    {"loop_post", gev_bench_loop_post, {1, 2}},
};

void RunBody(benchmark::State &state, gev_bench_fn fn) {
  const auto arg = state.range(0);
  // One batch of max_iterations: the loop runs exactly once.
  while (state.KeepRunningBatch(state.max_iterations)) {
    if (fn(static_cast<size_t>(arg),
           static_cast<uint64_t>(state.max_iterations)) != 0) {
      state.SkipWithError("benchmark body failed");
      break;
    }
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * arg);
}

void RunTimedBody(benchmark::State &state, gev_bench_timed_fn fn) {
  const auto arg = state.range(0);
  while (state.KeepRunningBatch(state.max_iterations)) {
    const double secs = fn(static_cast<size_t>(arg),
                           static_cast<uint64_t>(state.max_iterations));
    if (secs < 0) {
      state.SkipWithError("benchmark body failed");
      break;
    }
    state.SetIterationTime(secs);  // the whole batch's measured time
  }
  state.SetItemsProcessed(state.iterations());
}

bool RegisterAll() {
  for (const Body &b : kBodies) {
    gev_bench_fn fn = b.fn;
    auto *bm = benchmark::RegisterBenchmark(
        b.name, [fn](benchmark::State &st) { RunBody(st, fn); });
    for (int64_t a : b.args) bm->Arg(a);
  }
  for (const TimedBody &b : kTimedBodies) {
    gev_bench_timed_fn fn = b.fn;
    auto *bm = benchmark::RegisterBenchmark(
        b.name, [fn](benchmark::State &st) { RunTimedBody(st, fn); });
    bm->UseManualTime();
    for (int64_t a : b.args) bm->Arg(a);
  }
  return true;
}

// Registered before main, like the BENCHMARK() macros do.
const bool kRegistered = RegisterAll();

}  // namespace

BENCHMARK_MAIN();
