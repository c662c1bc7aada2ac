// bench/e1_coro_loop.cpp - E1 echo with coro_loop's start_server and open_connection
// (see e1_common.hpp): the server echoes whatever arrives; each client connection
// writes 64 bytes, reads exactly 64 back and compares them, 10,000 times.
// bench/e1_coro_loop_uring.cpp is this program on the io_uring backend.
#include "../coro_loop.hpp"
#include "e1_common.hpp"

namespace cl = coro_loop;

int serve(const bench_echo::port_announcer& announcer) {
  return cl::run([&]() -> cl::task<int> {
    std::size_t finished = 0;
    cl::event all_finished;
    auto echo = [&](cl::stream connection) -> cl::task<void> {
      for (;;) {
        const std::string data = co_await connection.read(64 * 1024);
        if (data.empty()) break;
        connection.write(data);
        co_await connection.drain();
      }
      if (++finished == bench_echo::connections) all_finished.set();
    };
    cl::server server = co_await cl::start_server(echo, "127.0.0.1", 0);
    announcer.announce(server.port());
    co_await cl::timeout(std::chrono::seconds(100), all_finished.wait());
    server.close();
    co_await server.wait_closed();
    co_return 0;
  }());
}

std::size_t run_clients(std::uint16_t port) {
  return cl::run([port]() -> cl::task<std::size_t> {
#if defined(CORO_LOOP_BACKEND_IO_URING)
    // A figure for io_uring must not come from its epoll fallback.
    if (std::string_view(cl::get_running_loop().backend_name()) != "io_uring") {
      std::fprintf(stderr, "e1: the kernel refused io_uring; the loop runs on %s\n",
                   cl::get_running_loop().backend_name());
      co_return 0;
    }
#endif
    const std::string message = bench_echo::message();
    auto client = [&]() -> cl::task<std::size_t> {
      cl::stream connection = co_await cl::open_connection("127.0.0.1", port);
      std::size_t good = 0;
      for (std::size_t i = 0; i < bench_echo::round_trips_per_connection; ++i) {
        connection.write(message);
        co_await connection.drain();
        const std::string echoed = co_await connection.read_exactly(bench_echo::message_size);
        if (echoed == message) ++good;
      }
      connection.close();
      co_await connection.wait_closed();
      co_return good;
    };
    std::vector<cl::task<std::size_t>> clients;
    for (std::size_t i = 0; i < bench_echo::connections; ++i) clients.push_back(client());
    std::size_t good = 0;
    for (std::size_t each : co_await cl::gather(std::move(clients))) good += each;
    co_return good;
  }());
}

int main() { return bench_echo::run_benchmark(serve, run_clients); }
