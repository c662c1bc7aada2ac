// A coroutine function passed to gather without being called.
// first error: gather(a, b, ...): every argument must be awaitable
#include "coro_loop.hpp"

coro_loop::task<int> work() { co_return 1; }

coro_loop::task<void> main_task() {
  auto values = co_await coro_loop::gather(work(), work);
  (void)values;
}
