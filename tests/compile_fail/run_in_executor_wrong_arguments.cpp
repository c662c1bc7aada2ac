// run_in_executor's arguments do not fit the function.
// first error: run_in_executor(pool, fn, args...) / to_thread(fn, args...): fn is not callable
#include "coro_loop.hpp"

int add(int a, int b) { return a + b; }

coro_loop::task<void> main_task(coro_loop::thread_pool& pool) {
  auto value = co_await coro_loop::run_in_executor(pool, add, 1);
  (void)value;
}
