// A plain function given to create_task: it must return an awaitable.
// first error: create_task(fn, args...): fn(args...) returns void
#include "coro_loop.hpp"

coro_loop::task<void> main_task() {
  auto handle = coro_loop::create_task([] {});
  co_await handle;
}
