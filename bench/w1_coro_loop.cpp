// W1 spawn+gather, coro_loop: 1,000,000 tasks each returning its index, all handed to
// gather(range) (which schedules each as a task, as asyncio.gather does with coroutines),
// the sum of the results checked. Prints ns per task (creation to the gathered vector)
// and the peak RSS (VmHWM).
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long task_count = 1'000'000;

coro_loop::task<long> return_index(long index) { co_return index; }

coro_loop::task<int> spawn_and_gather() {
  const double started = bench_now_ns();
  std::vector<coro_loop::task<long>> tasks;
  tasks.reserve(task_count);
  for (long index = 0; index < task_count; ++index) tasks.push_back(return_index(index));
  std::vector<long> results = co_await coro_loop::gather(std::move(tasks));
  const double elapsed = bench_now_ns() - started;
  long sum = 0;
  for (long value : results) sum += value;
  const long expected = task_count * (task_count - 1) / 2;
  const bool sum_ok = sum == expected && static_cast<long>(results.size()) == task_count;
  std::printf("RESULT ns_per_task=%.1f peak_rss_kib=%ld sum_ok=%d\n", elapsed / task_count, bench_peak_rss_kib(),
              sum_ok ? 1 : 0);
  if (!sum_ok) std::fprintf(stderr, "w1_coro_loop: sum %ld, expected %ld\n", sum, expected);
  co_return sum_ok ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(spawn_and_gather()); }
