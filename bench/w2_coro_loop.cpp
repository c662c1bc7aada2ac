// W2 ping-pong, coro_loop: two tasks, two queues of maxsize 1, 1,000,000 round trips
// (ping puts n on one queue, pong takes it and puts n + 1 on the other, ping takes that).
// Prints ns per round trip; every reply is checked.
#include <cstdio>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr long round_trips = 1'000'000;

coro_loop::task<long> ping(coro_loop::queue<long>& requests, coro_loop::queue<long>& replies) {
  long wrong_replies = 0;
  for (long n = 0; n < round_trips; ++n) {
    co_await requests.put(n);
    if (co_await replies.get() != n + 1) ++wrong_replies;
  }
  co_return wrong_replies;
}

coro_loop::task<long> pong(coro_loop::queue<long>& requests, coro_loop::queue<long>& replies) {
  for (long n = 0; n < round_trips; ++n) co_await replies.put(co_await requests.get() + 1);
  co_return 0;
}

coro_loop::task<int> ping_pong() {
  coro_loop::queue<long> requests(1);
  coro_loop::queue<long> replies(1);
  const double started = bench_now_ns();
  auto [wrong_replies, unused] = co_await coro_loop::gather(ping(requests, replies), pong(requests, replies));
  const double elapsed = bench_now_ns() - started;
  (void)unused;
  std::printf("RESULT ns_per_round_trip=%.1f replies_ok=%d\n", elapsed / round_trips, wrong_replies == 0 ? 1 : 0);
  if (wrong_replies != 0) std::fprintf(stderr, "w2_coro_loop: %ld wrong replies\n", wrong_replies);
  co_return wrong_replies == 0 ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(ping_pong()); }
