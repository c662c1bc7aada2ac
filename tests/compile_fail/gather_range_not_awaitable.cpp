// A range of plain values passed to gather.
// first error: gather(range): the range's elements must be awaitable
#include "coro_loop.hpp"

#include <vector>

coro_loop::task<void> main_task() {
  std::vector<int> numbers{1, 2, 3};
  auto values = co_await coro_loop::gather(numbers);
  (void)values;
}
