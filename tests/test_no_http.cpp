// tests/test_no_http.cpp - CORO_LOOP_NO_HTTP leaves the HTTP client (section 10)
// out of a translation unit, and everything else still compiles and runs.
#define CORO_LOOP_NO_HTTP
#include "coro_loop.hpp"
#include "catch.hpp"

#include <string>

// Had section 10 been compiled in, this would redefine http::client.
namespace coro_loop::http {
struct client {
  static constexpr bool from_this_test = true;
};
}  // namespace coro_loop::http
static_assert(coro_loop::http::client::from_this_test);

TEST_CASE("no http: the loop, tasks and streams work without section 10", "[header]") {
  auto echo_once = []() -> coro_loop::task<std::string> {
    auto echo_line = [](coro_loop::stream peer) -> coro_loop::task<> {
      peer.write(co_await peer.read_line());
      co_await peer.drain();
    };
    coro_loop::server listener = co_await coro_loop::start_server(echo_line, "127.0.0.1", 0);
    coro_loop::stream connection = co_await coro_loop::open_connection("127.0.0.1", listener.port());
    connection.write("ping\n");
    std::string reply = co_await connection.read_line();
    listener.close();
    co_await listener.wait_closed();
    co_return reply;
  };
  CHECK(coro_loop::run(echo_once()) == "ping\n");
}
