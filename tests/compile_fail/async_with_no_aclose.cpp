// async_with over a resource without aclose().
// first error: async_with(opening, body): the resource needs a member aclose()
#include "coro_loop.hpp"

struct connection {
  int id = 0;
};
coro_loop::task<connection> open_connection() { co_return connection{}; }

coro_loop::task<void> main_task() {
  auto body = [](connection& c) -> coro_loop::task<int> { co_return c.id; };
  auto id = co_await coro_loop::async_with(open_connection(), body);
  (void)id;
}
