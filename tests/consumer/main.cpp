// tests/consumer/main.cpp - a program that uses coro_loop the way a user's project
// does; tests/consumer/run.sh builds it with a plain compiler command, as a meson
// subproject, with CMake (find_package and add_subdirectory) and with pkg-config.
#include <chrono>
#include <cstdio>

#include "coro_loop.hpp"

using namespace std::chrono_literals;

coro_loop::task<int> after(std::chrono::milliseconds delay, int value) {
  co_await coro_loop::sleep(delay);
  co_return value;
}

coro_loop::task<int> sum() {
  auto [a, b, c] = co_await coro_loop::gather(after(30ms, 1), after(10ms, 2), after(20ms, 3));
  co_return a + b + c;
}

int main() {
  const int total = coro_loop::run(sum());
  std::printf("consumer: gather gave %d (coro_loop %s)\n", total, CORO_LOOP_VERSION);
  return total == 6 ? 0 : 1;
}
