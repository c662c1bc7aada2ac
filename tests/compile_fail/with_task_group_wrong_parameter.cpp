// A task group body that does not take the group.
// first error: with_task_group(body): body must be callable as body(group)
#include "coro_loop.hpp"

coro_loop::task<void> main_task() {
  auto body = []() -> coro_loop::task<void> { co_return; };
  co_await coro_loop::with_task_group(body);
}
