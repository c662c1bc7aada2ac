// A task group's create_task given a plain function.
// first error: create_task(fn, args...): fn(args...) returns void
#include "coro_loop.hpp"

coro_loop::task<void> body(coro_loop::task_group& group) {
  group.create_task([](int) {}, 1);
  co_return;
}
