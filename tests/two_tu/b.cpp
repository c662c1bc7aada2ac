// tests/two_tu/b.cpp - the second translation unit of test_two_translation_units.
#include "coro_loop.hpp"

#include <chrono>
#include <string>

#include "two_tu.hpp"

namespace {

coro_loop::task<int> sum_up_to(int n) {
  int sum = 0;
  for (int i = 1; i <= n; ++i) {
    co_await coro_loop::sleep(std::chrono::milliseconds(0));
    sum += i;
  }
  co_return sum;
}

coro_loop::task<int> add_after_sleep(int a, int b) {  // same name and shape as a.cpp's, also internal
  co_await coro_loop::sleep(std::chrono::milliseconds(1));
  co_return a + b;
}

}  // namespace

namespace two_tu {

int run_in_b(int n) {
  auto body = [n]() -> coro_loop::task<int> {
    auto handle = coro_loop::create_task(sum_up_to(n), "sum");
    int extra = co_await add_after_sleep(0, 0);
    int sum = co_await handle;
    co_return sum + extra;
  };
  return coro_loop::run(body());
}

coro_loop::task<std::string> task_from_b(std::string text) {
  co_await coro_loop::sleep(std::chrono::milliseconds(1));
  co_return "b saw " + text;
}

coro_loop::event_loop* running_loop_from_b() {
  try {
    return &coro_loop::get_running_loop();
  } catch (const coro_loop::invalid_state_error&) {
    return nullptr;
  }
}

}  // namespace two_tu
