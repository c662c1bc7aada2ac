// P1 spawn+wait, coro_loop: 2,000 runs of /bin/true one after the other, each started
// with create_subprocess_exec (posix_spawn, a pidfd) and awaited with wait(). Prints
// spawns/s; every exit status is checked.
#include <cstdio>

#include "bench/bench_common.h"
#include "coro_loop.hpp"

namespace {

constexpr int spawn_count = 2000;

coro_loop::task<int> spawn_and_wait() {
  int failures = 0;
  // The first run loads what a spawn needs (the registry, the program's pages): untimed.
  coro_loop::process warm_up = co_await coro_loop::create_subprocess_exec("/bin/true");
  failures += co_await warm_up.wait() != 0;
  const double started = bench_now_ns();
  for (int index = 0; index < spawn_count; ++index) {
    coro_loop::process child = co_await coro_loop::create_subprocess_exec("/bin/true");
    failures += co_await child.wait() != 0;
  }
  const double elapsed = bench_now_ns() - started;
  std::printf("RESULT spawns_per_s=%.1f us_per_spawn=%.2f count_ok=%d\n", spawn_count / (elapsed / 1e9),
              elapsed / 1e3 / spawn_count, failures == 0 ? 1 : 0);
  if (failures != 0) std::fprintf(stderr, "p1_coro_loop: %d runs did not exit with 0\n", failures);
  co_return failures == 0 ? 0 : 1;
}

}  // namespace

int main() { return coro_loop::run(spawn_and_wait()); }
