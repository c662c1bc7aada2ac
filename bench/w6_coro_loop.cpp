// W6 cancellation, coro_loop: 100,000 tasks sleeping 10 s; once all are asleep each
// is cancelled and awaited (cancelled_error thrown at the sleep, unwinding the task,
// caught by the awaiter). Prints ns per cancel (first cancel to last await); every
// task must end cancelled.
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long task_count = 100'000;

coro_loop::task<> sleep_long(long& asleep) {
  ++asleep;
  co_await coro_loop::sleep(std::chrono::seconds(10));
}

coro_loop::task<int> cancel_all() {
  long asleep = 0;
  std::vector<coro_loop::task_handle<void>> sleepers;
  sleepers.reserve(task_count);
  for (long index = 0; index < task_count; ++index) sleepers.push_back(coro_loop::create_task(sleep_long(asleep)));
  for (int yields = 0; asleep < task_count && yields < 1000; ++yields)
    co_await coro_loop::sleep(std::chrono::seconds(0));
  const double started = bench_now_ns();
  for (auto& sleeper : sleepers) sleeper.cancel();
  long cancelled = 0;
  for (auto& sleeper : sleepers) {
    try {
      co_await sleeper;
    } catch (const coro_loop::cancelled_error&) {
      ++cancelled;
    }
  }
  const double elapsed = bench_now_ns() - started;
  const bool counts_ok = asleep == task_count && cancelled == task_count;
  std::printf("RESULT ns_per_cancel=%.1f count_ok=%d\n", elapsed / task_count, counts_ok ? 1 : 0);
  if (!counts_ok) std::fprintf(stderr, "w6_coro_loop: %ld asleep, %ld cancelled\n", asleep, cancelled);
  co_return counts_ok ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(cancel_all()); }
