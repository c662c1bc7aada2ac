// tests/two_tu/a.cpp - the header in two translation units (with b.cpp).
// Both include coro_loop.hpp and instantiate the same templates, so a
// function defined in the header without `inline` shows up at link time as a
// duplicate symbol, and a per-TU static shows up as a wrong answer below.
#include "coro_loop.hpp"
#include "catch.hpp"

#include <chrono>
#include <string>

#include "two_tu.hpp"

namespace {

coro_loop::task<int> add_after_sleep(int a, int b) {
  co_await coro_loop::sleep(std::chrono::milliseconds(1));
  co_return a + b;
}

}  // namespace

TEST_CASE("two translation units: both use the header and link into one program", "[two_tu]") {
  // This TU's own coroutine, through the same run<task<int>> as b.cpp's.
  CHECK(coro_loop::run(add_after_sleep(2, 3)) == 5);
  // b.cpp's coroutine, run by b.cpp.
  CHECK(two_tu::run_in_b(10) == 55);
  // b.cpp's task, awaited from a task of this TU: one loop, one current task.
  auto body = []() -> coro_loop::task<std::string> {
    coro_loop::task_ref main_task = coro_loop::current_task();
    auto handle = coro_loop::create_task(two_tu::task_from_b("a"));
    std::string from_b = co_await handle;
    CHECK(coro_loop::current_task() == main_task);
    co_return from_b;
  };
  CHECK(coro_loop::run(body()) == "b saw a");
  // A loop made here is the running loop seen from b.cpp.
  coro_loop::event_loop loop;
  bool same_loop = false;
  loop.call_soon([&] {
    same_loop = two_tu::running_loop_from_b() == &loop;
    loop.stop();
  });
  loop.run_forever();
  CHECK(same_loop);
}
