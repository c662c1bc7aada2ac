// W4 many timers, standalone Asio with C++20 coroutines: 100,000 coroutines each
// sleeping a pseudo-random 0-100 ms (bench_next_delay_ms, fixed seed) on its own
// steady_timer, single-threaded io_context. Prints the time to arm them all, the wall
// time past 100 ms until the last one woke, and the peak RSS.
#include <asio.hpp>
#include <chrono>
#include <cstdio>

#include "bench/bench_common.h"

namespace {

constexpr long task_count = 100'000;

struct shared_state {
  long armed = 0;
  long woken = 0;
  long early = 0;
  double started = 0;
  double all_armed = 0;
  double finished = 0;
};

asio::awaitable<void> sleep_for(shared_state& state, unsigned delay_ms) {
  const double started = bench_now_ns();
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::milliseconds(delay_ms));
  ++state.armed;
  co_await timer.async_wait(asio::use_awaitable);
  if (bench_now_ns() - started < delay_ms * 1e6) ++state.early;
  if (++state.woken == task_count) state.finished = bench_now_ns();
}

asio::awaitable<void> many_timers(shared_state& state) {
  auto executor = co_await asio::this_coro::executor;
  uint64_t random_state = BENCH_DELAY_SEED;
  state.started = bench_now_ns();
  for (long index = 0; index < task_count; ++index)
    asio::co_spawn(executor, sleep_for(state, bench_next_delay_ms(&random_state)), asio::detached);
  for (int yields = 0; state.armed < task_count && yields < 1000; ++yields)
    co_await asio::post(executor, asio::use_awaitable);
  state.all_armed = bench_now_ns();
}

}  // namespace

int main() {
  // One thread runs the io_context and is the only one to touch its objects: Asio's
  // documented concurrency hint for that case, without the scheduler's and reactor's locks.
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);
  shared_state state;
  asio::co_spawn(context, many_timers(state), asio::detached);
  context.run();
  const bool counts_ok = state.armed == task_count && state.woken == task_count && state.early == 0;
  std::printf("RESULT arm_ms=%.2f late_ms=%.2f peak_rss_kib=%ld count_ok=%d\n", (state.all_armed - state.started) / 1e6,
              (state.finished - state.started) / 1e6 - 100.0, bench_peak_rss_kib(), counts_ok ? 1 : 0);
  if (!counts_ok)
    std::fprintf(stderr, "w4_asio: %ld armed, %ld woken, %ld early\n", state.armed, state.woken, state.early);
  return counts_ok ? 0 : 1;
}
