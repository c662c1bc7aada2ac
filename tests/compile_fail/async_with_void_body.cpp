// async_with with a body that is a plain function.
// first error: async_with(opening, body): body(resource) must return an awaitable
#include "coro_loop.hpp"

struct connection {
  coro_loop::task<void> aclose() { co_return; }
};
coro_loop::task<connection> open_connection() { co_return connection{}; }

coro_loop::task<void> main_task() {
  auto body = [](connection& c) { (void)c; };
  co_await coro_loop::async_with(open_connection(), body);
}
