// A task group body that is a plain function.
// first error: with_task_group(body): body(group) must return an awaitable
#include "coro_loop.hpp"

coro_loop::task<void> main_task() {
  auto body = [](coro_loop::task_group& group) { (void)group; };
  co_await coro_loop::with_task_group(body);
}
