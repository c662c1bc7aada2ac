// A queue of references.
// first error: queue<T>: T must be an object type, not a reference
#include "coro_loop.hpp"

void make_queue() {
  coro_loop::queue<int&> items;
  (void)items;
}
