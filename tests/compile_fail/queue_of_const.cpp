// A queue of const items.
// first error: queue<T>: T must not be const or volatile
#include "coro_loop.hpp"

void make_queue() {
  coro_loop::queue<const int> items;
  (void)items;
}
