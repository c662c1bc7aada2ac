// bench/e1_asio.cpp - E1 echo with standalone Asio and C++20 coroutines (see
// e1_common.hpp): an acceptor coroutine spawning one echo coroutine per connection
// (async_read_some into a 64 KiB buffer, async_write back), and one client coroutine
// per connection writing 64 bytes, reading exactly 64 back and comparing them.
// bench/e1_asio_uring.cpp is this program on Asio's io_uring backend.
//
// Each side bounds its run() with a 100 s deadline timer that stops the io_context,
// cancelled once the work is done, rather than with run_for: in Asio 1.22 (Debian 12)
// the io_uring backend submits the IORING_OP_TIMEOUT_REMOVE of run_for's timed wait
// without setting its user_data, so that completion (res 0) goes to whichever operation
// last used the SQE slot: a pending receive then completes with 0 bytes, i.e. eof.
#include "e1_common.hpp"

#include <asio.hpp>

#include <array>
#include <chrono>

using asio::ip::tcp;

/// Stops `context` 100 s after construction unless cancel()ed first.
class deadline {
 public:
  explicit deadline(asio::io_context& context) : timer_(context, std::chrono::seconds(100)) {
    timer_.async_wait([&context](asio::error_code error) {
      if (!error) context.stop();
    });
  }
  void cancel() { timer_.cancel(); }

 private:
  asio::steady_timer timer_;
};

int serve(const bench_echo::port_announcer& announcer) {
  // One thread runs the io_context and is the only one to touch its objects (each side
  // is its own process): Asio's documented concurrency hint for that case, without locks.
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);
  tcp::acceptor acceptor(context, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  std::size_t finished = 0;
  deadline deadline(context);

  auto echo = [&](tcp::socket connection) -> asio::awaitable<void> {
    connection.set_option(tcp::no_delay(true));
    std::array<char, 64 * 1024> buffer;
    for (;;) {
      asio::error_code error;
      const std::size_t received =
          co_await connection.async_read_some(asio::buffer(buffer), asio::redirect_error(asio::use_awaitable, error));
      if (error) break;  // asio::error::eof once the client closed
      co_await asio::async_write(connection, asio::buffer(buffer.data(), received), asio::use_awaitable);
    }
    if (++finished == bench_echo::connections) {
      acceptor.close();
      deadline.cancel();
    }
  };
  auto accept_loop = [&]() -> asio::awaitable<void> {
    for (std::size_t accepted = 0; accepted < bench_echo::connections; ++accepted) {
      tcp::socket connection = co_await acceptor.async_accept(asio::use_awaitable);
      asio::co_spawn(context, echo(std::move(connection)), asio::detached);
    }
  };
  asio::co_spawn(context, accept_loop(), asio::detached);
  announcer.announce(acceptor.local_endpoint().port());
  context.run();  // until every connection ended, or the deadline
  return finished == bench_echo::connections ? 0 : 1;
}

std::size_t run_clients(std::uint16_t port) {
  asio::io_context context(ASIO_CONCURRENCY_HINT_UNSAFE);  // as the server's
  const tcp::endpoint server(asio::ip::make_address("127.0.0.1"), port);
  const std::string message = bench_echo::message();
  std::size_t good = 0;
  std::size_t finished = 0;
  deadline deadline(context);

  auto client = [&]() -> asio::awaitable<void> {
    tcp::socket connection(context);
    co_await connection.async_connect(server, asio::use_awaitable);
    connection.set_option(tcp::no_delay(true));
    std::array<char, bench_echo::message_size> echoed;
    for (std::size_t i = 0; i < bench_echo::round_trips_per_connection; ++i) {
      co_await asio::async_write(connection, asio::buffer(message), asio::use_awaitable);
      co_await asio::async_read(connection, asio::buffer(echoed), asio::use_awaitable);
      if (std::string_view(echoed.data(), echoed.size()) == message) ++good;
    }
    connection.shutdown(tcp::socket::shutdown_both);
    connection.close();
    if (++finished == bench_echo::connections) deadline.cancel();
  };
  for (std::size_t i = 0; i < bench_echo::connections; ++i) {
    asio::co_spawn(context, client(), [](std::exception_ptr error) {
      if (error) std::rethrow_exception(error);
    });
  }
  context.run();  // until every client finished, or the deadline
  return good;
}

int main() { return bench_echo::run_benchmark(serve, run_clients); }
