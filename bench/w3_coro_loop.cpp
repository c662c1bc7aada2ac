// W3 one producer, four consumers, coro_loop: queue<long>(1024), 2,000,000 items, then
// one end marker (-1) per consumer. Prints items/s and the fairness min/max of the
// items each consumer took; the sum of all items taken is checked.
#include <algorithm>
#include <array>
#include <cstdio>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long item_count = 2'000'000;
constexpr int consumer_count = 4;
constexpr long end_marker = -1;

struct consumer_tally {
  long items = 0;
  long sum = 0;
};

coro_loop::task<> produce(coro_loop::queue<long>& items) {
  for (long item = 0; item < item_count; ++item) co_await items.put(item);
  for (int consumer = 0; consumer < consumer_count; ++consumer) co_await items.put(end_marker);
}

coro_loop::task<> consume(coro_loop::queue<long>& items, consumer_tally& tally) {
  for (;;) {
    const long item = co_await items.get();
    if (item == end_marker) co_return;
    ++tally.items;
    tally.sum += item;
  }
}

coro_loop::task<int> producer_consumers() {
  coro_loop::queue<long> items(1024);
  std::array<consumer_tally, consumer_count> tallies{};
  const double started = bench_now_ns();
  co_await coro_loop::gather(produce(items), consume(items, tallies[0]), consume(items, tallies[1]),
                             consume(items, tallies[2]), consume(items, tallies[3]));
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
  if (!sum_ok) std::fprintf(stderr, "w3_coro_loop: %ld items taken, sum %ld\n", taken, sum);
  co_return sum_ok ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(producer_consumers()); }
