// W1s suspended tasks, standalone Asio with C++20 coroutines: 1,000,000 coroutines all
// waiting on one "event". Asio has no event type; its idiom is a steady_timer that never
// expires, whose cancel() releases every async_wait. Prints the RSS growth while all are
// suspended divided by the coroutine count.
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <chrono>
#include <cstdio>

#include "bench/bench_common.h"

namespace {

constexpr long task_count = 1'000'000;

struct shared_state {
  explicit shared_state(asio::io_context& context) : release(context, asio::steady_timer::time_point::max()) {}
  asio::steady_timer release;
  long waiting = 0;
  long finished = 0;
  long rss_before = 0;
  long rss_suspended = 0;
};

asio::awaitable<void> wait_for_release(shared_state& state) {
  ++state.waiting;
  co_await state.release.async_wait(asio::experimental::as_tuple(asio::use_awaitable));  // released by cancel()
  ++state.finished;
}

asio::awaitable<void> suspend_all(shared_state& state) {
  auto executor = co_await asio::this_coro::executor;
  state.rss_before = bench_rss_kib();
  for (long index = 0; index < task_count; ++index) asio::co_spawn(executor, wait_for_release(state), asio::detached);
  // co_spawn starts each coroutine through post: yield until all have run to the wait.
  for (int yields = 0; state.waiting < task_count && yields < 1000; ++yields)
    co_await asio::post(executor, asio::use_awaitable);
  state.rss_suspended = bench_rss_kib();
  state.release.cancel();
}

}  // namespace

int main() {
  // One thread runs the io_context and is the only one to touch its objects: Asio's
  // documented concurrency hint for that case, without the scheduler's and reactor's locks.
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);
  shared_state state(context);
  asio::co_spawn(context, suspend_all(state), asio::detached);
  context.run();
  const bool counts_ok = state.waiting == task_count && state.finished == task_count;
  const long growth = state.rss_suspended - state.rss_before;
  std::printf("RESULT bytes_per_task=%.1f rss_growth_kib=%ld count_ok=%d\n", growth * 1024.0 / task_count, growth,
              counts_ok ? 1 : 0);
  if (!counts_ok) std::fprintf(stderr, "w1s_asio: %ld waiting, %ld finished\n", state.waiting, state.finished);
  return counts_ok ? 0 : 1;
}
