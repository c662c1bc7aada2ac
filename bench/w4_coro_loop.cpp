// W4 many timers, coro_loop: 100,000 tasks each sleeping a pseudo-random 0-100 ms
// (bench_next_delay_ms, fixed seed). Prints the time to arm them all (creating the
// tasks until every one has started its sleep), the wall time past 100 ms until the
// last one woke, and the peak RSS. Every task's wake-up is counted and none may come
// before its deadline.
#include <chrono>
#include <cstdio>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long task_count = 100'000;

struct shared_state {
  coro_loop::event all_woken;
  long armed = 0;
  long woken = 0;
  long early = 0;
};

coro_loop::task<> sleep_for(shared_state& state, unsigned delay_ms) {
  const double started = bench_now_ns();
  ++state.armed;
  co_await coro_loop::sleep(std::chrono::milliseconds(delay_ms));
  if (bench_now_ns() - started < delay_ms * 1e6) ++state.early;
  if (++state.woken == task_count) state.all_woken.set();
}

coro_loop::task<int> many_timers() {
  shared_state state;
  uint64_t random_state = BENCH_DELAY_SEED;
  const double started = bench_now_ns();
  for (long index = 0; index < task_count; ++index)
    coro_loop::create_task(sleep_for(state, bench_next_delay_ms(&random_state)));
  // The tasks arm their timers in their first step, on the next iteration.
  for (int yields = 0; state.armed < task_count && yields < 1000; ++yields)
    co_await coro_loop::sleep(std::chrono::seconds(0));
  const double armed = bench_now_ns();
  co_await state.all_woken.wait();
  const double finished = bench_now_ns();
  const bool counts_ok = state.armed == task_count && state.woken == task_count && state.early == 0;
  std::printf("RESULT arm_ms=%.2f late_ms=%.2f peak_rss_kib=%ld count_ok=%d\n", (armed - started) / 1e6,
              (finished - started) / 1e6 - 100.0, bench_peak_rss_kib(), counts_ok ? 1 : 0);
  if (!counts_ok)
    std::fprintf(stderr, "w4_coro_loop: %ld armed, %ld woken, %ld early\n", state.armed, state.woken, state.early);
  co_return counts_ok ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(many_timers()); }
