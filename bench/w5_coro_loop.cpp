// W5 to_thread, coro_loop: 200,000 calls of a trivial function on the default thread
// pool (min(32, cores + 4) workers, as Python's), in batches of 1,000 gathered at once.
// Prints calls/s; the sum of the results is checked.
#include <cstdio>
#include <vector>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long call_count = 200'000;
constexpr long batch_size = 1'000;

long successor(long value) { return value + 1; }

coro_loop::task<long> call_on_thread(long value) { co_return co_await coro_loop::to_thread(successor, value); }

coro_loop::task<int> batches_of_calls() {
  // The pool's threads start on first use: one call outside the timing.
  (void)co_await coro_loop::to_thread(successor, 0L);
  long sum = 0;
  const double started = bench_now_ns();
  for (long first = 0; first < call_count; first += batch_size) {
    std::vector<coro_loop::task<long>> batch;
    batch.reserve(batch_size);
    for (long value = first; value < first + batch_size; ++value) batch.push_back(call_on_thread(value));
    for (long result : co_await coro_loop::gather(std::move(batch))) sum += result;
  }
  const double elapsed = bench_now_ns() - started;
  const long expected = call_count * (call_count + 1) / 2;
  std::printf("RESULT calls_per_s=%.0f sum_ok=%d\n", call_count / (elapsed / 1e9), sum == expected ? 1 : 0);
  if (sum != expected) std::fprintf(stderr, "w5_coro_loop: sum %ld, expected %ld\n", sum, expected);
  co_return sum == expected ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(batches_of_calls()); }
