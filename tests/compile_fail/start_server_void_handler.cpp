// A connection handler that is a plain function returning void.
// first error: start_server(handler, ...): handler(stream) must return an awaitable
#include "coro_loop.hpp"

void handle(coro_loop::stream connection) { (void)connection; }

coro_loop::task<void> main_task() {
  auto server = co_await coro_loop::start_server(handle, "127.0.0.1", 0);
  server.close();
}
