// W6 cancellation, standalone Asio with C++20 coroutines: 100,000 coroutines each
// sleeping 10 s on a steady_timer, each co_spawn'ed bound to its own cancellation_signal.
// Once all are asleep every signal emits terminal cancellation: the wait fails with
// operation_aborted, use_awaitable throws it, the coroutine unwinds and its completion
// handler receives the exception. Prints ns per cancel (first emit to last completion).
#include <asio.hpp>
#include <chrono>
#include <cstdio>
#include <vector>

#include "bench/bench_common.h"

namespace {

constexpr long task_count = 100'000;

struct shared_state {
  long asleep = 0;
  long cancelled = 0;
  double started = 0;
};

asio::awaitable<void> sleep_long(shared_state& state) {
  asio::steady_timer timer(co_await asio::this_coro::executor, std::chrono::seconds(10));
  ++state.asleep;
  co_await timer.async_wait(asio::use_awaitable);
}

asio::awaitable<void> cancel_all(shared_state& state, std::vector<asio::cancellation_signal>& signals) {
  auto executor = co_await asio::this_coro::executor;
  for (asio::cancellation_signal& signal : signals) {
    asio::co_spawn(executor, sleep_long(state), asio::bind_cancellation_slot(signal.slot(), [&state](std::exception_ptr error) {
                     try {
                       if (error) std::rethrow_exception(error);
                     } catch (const asio::system_error& failure) {
                       if (failure.code() == asio::error::operation_aborted) ++state.cancelled;
                     }
                   }));
  }
  for (int yields = 0; state.asleep < task_count && yields < 1000; ++yields)
    co_await asio::post(executor, asio::use_awaitable);
  state.started = bench_now_ns();
  for (asio::cancellation_signal& signal : signals) signal.emit(asio::cancellation_type::terminal);
}

}  // namespace

int main() {
  // One thread runs the io_context and is the only one to touch its objects: Asio's
  // documented concurrency hint for that case, without the scheduler's and reactor's locks.
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);
  shared_state state;
  std::vector<asio::cancellation_signal> signals(task_count);
  asio::co_spawn(context, cancel_all(state, signals), asio::detached);
  context.run();
  const double elapsed = bench_now_ns() - state.started;
  const bool counts_ok = state.asleep == task_count && state.cancelled == task_count;
  std::printf("RESULT ns_per_cancel=%.1f count_ok=%d\n", elapsed / task_count, counts_ok ? 1 : 0);
  if (!counts_ok) std::fprintf(stderr, "w6_asio: %ld asleep, %ld cancelled\n", state.asleep, state.cancelled);
  return counts_ok ? 0 : 1;
}
