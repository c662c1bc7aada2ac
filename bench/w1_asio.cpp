// W1 spawn+gather, standalone Asio with C++20 coroutines: 1,000,000 awaitables each
// returning its index, co_spawn'ed on a single-threaded io_context; each completion
// handler stores its value by index and run() returns when all are done, which is the
// gather. The sum is checked. Prints ns per task and the peak RSS (VmHWM).
//
// The tasks are spawned by a coroutine already running on the io_context, as an Asio
// program spawns its work: only inside a running thread of the io_context do the
// coroutine frames and the handlers of the spawns come from Asio's per-thread recycling
// allocator. Spawned from main() before run(), every one of them goes to malloc instead,
// which more than doubles Asio's time per task.
#include <asio.hpp>
#include <cstdio>
#include <exception>
#include <vector>

#include "bench/bench_common.h"

namespace {

constexpr long task_count = 1'000'000;

asio::awaitable<long> return_index(long index) { co_return index; }

asio::awaitable<void> spawn_all(std::vector<long>& results, long& completed) {
  auto executor = co_await asio::this_coro::executor;
  for (long index = 0; index < task_count; ++index) {
    asio::co_spawn(executor, return_index(index), [&results, &completed, index](std::exception_ptr error, long value) {
      if (error) std::rethrow_exception(error);
      results[index] = value;
      ++completed;
    });
  }
}

}  // namespace

int main() {
  // One thread runs the io_context and is the only one to touch its objects: Asio's
  // documented concurrency hint for that case, without the scheduler's and reactor's locks.
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);
  std::vector<long> results(task_count, -1);
  long completed = 0;
  const double started = bench_now_ns();
  asio::co_spawn(context, spawn_all(results, completed), asio::detached);
  context.run();
  const double elapsed = bench_now_ns() - started;
  long sum = 0;
  for (long value : results) sum += value;
  const long expected = task_count * (task_count - 1) / 2;
  const bool sum_ok = sum == expected && completed == task_count;
  std::printf("RESULT ns_per_task=%.1f peak_rss_kib=%ld sum_ok=%d\n", elapsed / task_count, bench_peak_rss_kib(),
              sum_ok ? 1 : 0);
  if (!sum_ok) std::fprintf(stderr, "w1_asio: sum %ld, expected %ld\n", sum, expected);
  return sum_ok ? 0 : 1;
}
