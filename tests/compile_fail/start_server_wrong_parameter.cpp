// A connection handler that does not take a stream.
// first error: start_server(handler, ...): handler must be callable as handler(stream)
#include "coro_loop.hpp"

coro_loop::task<void> handle(int connection) {
  (void)connection;
  co_return;
}

coro_loop::task<void> main_task() {
  auto server = co_await coro_loop::start_server(handle, "127.0.0.1", 0);
  server.close();
}
