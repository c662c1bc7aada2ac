// A task<T> variable given to gather without std::move.
// first error: gather(a, b, ...): an argument cannot be copied (a task<T> is move-only)
#include "coro_loop.hpp"

coro_loop::task<int> work() { co_return 1; }

coro_loop::task<void> main_task() {
  auto first = work();
  auto values = co_await coro_loop::gather(first, work());
  (void)values;
}
