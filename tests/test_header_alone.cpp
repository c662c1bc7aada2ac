// tests/test_header_alone.cpp - coro_loop.hpp is self-contained: it is the
// first include of this file, before any standard header (catch.hpp comes
// after it and must not be what makes it compile).
#include "coro_loop.hpp"
#include "catch.hpp"

TEST_CASE("header alone: coro_loop.hpp compiles first and runs a task", "[header]") {
  auto body = []() -> coro_loop::task<int> {
    auto child = []() -> coro_loop::task<int> {
      co_await coro_loop::sleep(std::chrono::milliseconds(1));
      co_return 40;
    };
    auto handle = coro_loop::create_task(child(), "child");
    std::string name = handle.name();
    int value = co_await handle;
    CHECK(name == "child");
    co_return value + 2;
  };
  CHECK(coro_loop::run(body()) == 42);
  CHECK(std::string(CORO_LOOP_VERSION) == "0.1.0");
}
