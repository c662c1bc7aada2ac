// Something neither awaitable nor callable given to create_task.
// first error: create_task(fn, args...): fn is neither an awaitable (a task<T>) nor callable
#include "coro_loop.hpp"

coro_loop::task<void> main_task() {
  auto handle = coro_loop::create_task(42);
  co_await handle;
}
