// A coroutine sent to a worker thread.
// first error: fn returns an awaitable (a coroutine?); a worker thread runs plain functions
#include "coro_loop.hpp"

coro_loop::task<int> compute() { co_return 42; }

coro_loop::task<void> main_task() {
  auto value = co_await coro_loop::to_thread(compute);
  (void)value;
}
