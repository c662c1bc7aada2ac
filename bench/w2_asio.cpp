// W2 ping-pong, standalone Asio with C++20 coroutines: two coroutines, two
// experimental::channel of capacity 1, 1,000,000 round trips on a single-threaded
// io_context. Prints ns per round trip; every reply is checked.
#include <asio.hpp>
#include <asio/experimental/channel.hpp>
#include <cstdio>

#include "bench/bench_common.h"

namespace {

constexpr long round_trips = 1'000'000;
using number_channel = asio::experimental::channel<void(asio::error_code, long)>;

// Asio's channels complete an operation that need not wait through the handler
// machinery all the same; try_send / try_receive take the fast path first, as a tuned
// program does, and only wait when they must.
template <class Channel>
asio::awaitable<void> send(Channel& channel, long value) {
  if (!channel.try_send(asio::error_code{}, value)) co_await channel.async_send(asio::error_code{}, value, asio::use_awaitable);
}

template <class Channel>
asio::awaitable<long> receive(Channel& channel) {
  long value = 0;
  if (channel.try_receive([&value](asio::error_code, long received) { value = received; })) co_return value;
  co_return co_await channel.async_receive(asio::use_awaitable);
}


asio::awaitable<void> ping(number_channel& requests, number_channel& replies, long& wrong_replies) {
  for (long n = 0; n < round_trips; ++n) {
    co_await send(requests, n);
    if (co_await receive(replies) != n + 1) ++wrong_replies;
  }
}

asio::awaitable<void> pong(number_channel& requests, number_channel& replies) {
  for (long n = 0; n < round_trips; ++n) {
    const long request = co_await receive(requests);
    co_await send(replies, request + 1);
  }
}

void rethrow_if(std::exception_ptr error) {
  if (error) std::rethrow_exception(error);
}

}  // namespace

int main() {
  // One thread runs the io_context and is the only one to touch its objects: Asio's
  // documented concurrency hint for that case, without the scheduler's and reactor's locks.
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);
  number_channel requests(context, 1);
  number_channel replies(context, 1);
  long wrong_replies = 0;
  const double started = bench_now_ns();
  asio::co_spawn(context, ping(requests, replies, wrong_replies), rethrow_if);
  asio::co_spawn(context, pong(requests, replies), rethrow_if);
  context.run();
  const double elapsed = bench_now_ns() - started;
  std::printf("RESULT ns_per_round_trip=%.1f replies_ok=%d\n", elapsed / round_trips, wrong_replies == 0 ? 1 : 0);
  if (wrong_replies != 0) std::fprintf(stderr, "w2_asio: %ld wrong replies\n", wrong_replies);
  return wrong_replies == 0 ? 0 : 1;
}
