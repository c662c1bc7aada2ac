// W3 one producer, four consumers, standalone Asio with C++20 coroutines:
// experimental::channel of capacity 1024, 2,000,000 items, then one end marker (-1)
// per consumer, on a single-threaded io_context. Prints items/s and the fairness
// min/max of the items each consumer took; the sum is checked.
#include <algorithm>
#include <array>
#include <asio.hpp>
#include <asio/experimental/channel.hpp>
#include <cstdio>

#include "bench/bench_common.h"

namespace {

constexpr long item_count = 2'000'000;
constexpr int consumer_count = 4;
constexpr long end_marker = -1;
using item_channel = asio::experimental::channel<void(asio::error_code, long)>;

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


struct consumer_tally {
  long items = 0;
  long sum = 0;
};

asio::awaitable<void> produce(item_channel& items) {
  for (long item = 0; item < item_count; ++item) co_await send(items, item);
  for (int consumer = 0; consumer < consumer_count; ++consumer)
    co_await send(items, end_marker);
}

asio::awaitable<void> consume(item_channel& items, consumer_tally& tally) {
  for (;;) {
    const long item = co_await receive(items);
    if (item == end_marker) co_return;
    ++tally.items;
    tally.sum += item;
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
  item_channel items(context, 1024);
  std::array<consumer_tally, consumer_count> tallies{};
  const double started = bench_now_ns();
  asio::co_spawn(context, produce(items), rethrow_if);
  for (consumer_tally& tally : tallies) asio::co_spawn(context, consume(items, tally), rethrow_if);
  context.run();
  const double elapsed = bench_now_ns() - started;
  long taken = 0, sum = 0, fewest = item_count, most = 0;
  for (const consumer_tally& tally : tallies) {
    taken += tally.items;
    sum += tally.sum;
    fewest = std::min(fewest, tally.items);
    most = std::max(most, tally.items);
  }
  const bool sum_ok = taken == item_count && sum == item_count * (item_count - 1) / 2;
  std::printf("RESULT items_per_s=%.0f fairness=%.3f sum_ok=%d\n", item_count / (elapsed / 1e9),
              most > 0 ? static_cast<double>(fewest) / most : 0.0, sum_ok ? 1 : 0);
  if (!sum_ok) std::fprintf(stderr, "w3_asio: %ld items taken, sum %ld\n", taken, sum);
  return sum_ok ? 0 : 1;
}
