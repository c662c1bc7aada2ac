// to_thread's arguments do not fit the function.
// first error: to_thread(fn, args...): fn is not callable with these arguments
#include "coro_loop.hpp"

int square(int x) { return x * x; }

coro_loop::task<void> main_task() {
  auto value = co_await coro_loop::to_thread(square, "seven");
  (void)value;
}
