// A queue of items that cannot be moved.
// first error: queue<T>: T must be move-constructible
#include "coro_loop.hpp"

#include <mutex>

void make_queue() {
  coro_loop::queue<std::mutex> items;
  (void)items;
}
