// W1s suspended tasks, coro_loop: 1,000,000 tasks all waiting on one event, then the
// event is set and every task finishes. Prints the RSS growth while they are all
// suspended divided by the task count (the memory one live, parked task costs: its
// frame, its task state and its place in the event's waiter list).
#include <cstdio>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long task_count = 1'000'000;

struct shared_state {
  coro_loop::event release;
  coro_loop::event all_finished;
  long waiting = 0;
  long finished = 0;
};

coro_loop::task<> wait_for_release(shared_state& state) {
  ++state.waiting;
  co_await state.release.wait();
  if (++state.finished == task_count) state.all_finished.set();
}

coro_loop::task<int> suspend_all() {
  shared_state state;
  const long rss_before = bench_rss_kib();
  for (long index = 0; index < task_count; ++index) coro_loop::create_task(wait_for_release(state));
  // The tasks run their first step (up to the event) on the next iterations.
  for (int yields = 0; state.waiting < task_count && yields < 1000; ++yields)
    co_await coro_loop::sleep(std::chrono::seconds(0));
  const long rss_suspended = bench_rss_kib();
  state.release.set();
  co_await state.all_finished.wait();
  const bool counts_ok = state.waiting == task_count && state.finished == task_count;
  std::printf("RESULT bytes_per_task=%.1f rss_growth_kib=%ld count_ok=%d\n",
              (rss_suspended - rss_before) * 1024.0 / task_count, rss_suspended - rss_before, counts_ok ? 1 : 0);
  if (!counts_ok) std::fprintf(stderr, "w1s_coro_loop: %ld waiting, %ld finished\n", state.waiting, state.finished);
  co_return counts_ok ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(suspend_all()); }
