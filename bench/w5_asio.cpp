// W5 to_thread, standalone Asio: 200,000 calls of a trivial function on an
// asio::thread_pool (its default size), in batches of 1,000, from a coroutine on a
// single-threaded io_context. Each call is an async operation written the way Asio's
// documentation composes one: post the function to the pool, post its result back to
// the caller's associated executor. A batch's 1,000 completions count down and the
// last one cancels the timer the coroutine waits on. Prints calls/s; the sum is checked.
#include <asio.hpp>
#include <asio/experimental/as_tuple.hpp>
#include <chrono>
#include <cstdio>

#include "bench/bench_common.h"

namespace {

constexpr long call_count = 200'000;
constexpr long batch_size = 1'000;

long successor(long value) { return value + 1; }

// Runs successor(value) on `pool`, completes with its result on the handler's executor.
template <class CompletionToken>
auto async_successor_on(asio::thread_pool& pool, long value, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(long)>(
      [&pool, value](auto handler) {
        auto work = asio::make_work_guard(asio::get_associated_executor(handler));
        asio::post(pool, [value, handler = std::move(handler), work = std::move(work)]() mutable {
          const long result = successor(value);
          auto executor = work.get_executor();
          asio::post(executor, [result, handler = std::move(handler), work = std::move(work)]() mutable {
            std::move(handler)(result);
          });
        });
      },
      token);
}

asio::awaitable<void> batches_of_calls(asio::thread_pool& pool, long& sum, double& elapsed) {
  auto executor = co_await asio::this_coro::executor;
  // The pool's threads start with it; one call outside the timing all the same.
  (void)co_await async_successor_on(pool, 0, asio::use_awaitable);
  asio::steady_timer batch_done(executor);
  const double started = bench_now_ns();
  for (long first = 0; first < call_count; first += batch_size) {
    long remaining = batch_size;
    batch_done.expires_at(asio::steady_timer::time_point::max());
    for (long value = first; value < first + batch_size; ++value) {
      async_successor_on(pool, value, asio::bind_executor(executor, [&](long result) {
                           sum += result;
                           if (--remaining == 0) batch_done.cancel();
                         }));
    }
    co_await batch_done.async_wait(asio::experimental::as_tuple(asio::use_awaitable));
  }
  elapsed = bench_now_ns() - started;
}

}  // namespace

int main() {
  asio::io_context context(1);
  asio::thread_pool pool;
  long sum = 0;
  double elapsed = 0;
  asio::co_spawn(context, batches_of_calls(pool, sum, elapsed), [](std::exception_ptr error) {
    if (error) std::rethrow_exception(error);
  });
  context.run();
  pool.join();
  const long expected = call_count * (call_count + 1) / 2;
  std::printf("RESULT calls_per_s=%.0f sum_ok=%d\n", call_count / (elapsed / 1e9), sum == expected ? 1 : 0);
  if (sum != expected) std::fprintf(stderr, "w5_asio: sum %ld, expected %ld\n", sum, expected);
  return sum == expected ? 0 : 1;
}
