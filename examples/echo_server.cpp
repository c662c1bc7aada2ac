// examples/echo_server.cpp - a line echo server on 127.0.0.1 (asyncio.start_server): one task per connection.
// Usage: echo_server [PORT] [--once]   PORT 0 picks a free one; Ctrl+C exits; --once stops after the first client leaves.
#include "coro_loop.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace cl = coro_loop;

// Echoes each line back until the client closes; then tells main it left.
cl::task<void> serve(std::uint16_t port, bool once) {
  cl::event client_left;
  auto handler = [&client_left](cl::stream connection) -> cl::task<void> {
    const std::string peer = connection.peer_address().to_string();
    std::printf("%s connected\n", peer.c_str());
    try {
      for (;;) {
        std::string line = co_await connection.read_line();
        if (line.empty()) break;  // the client closed its side
        connection.write(line);
        co_await connection.drain();
      }
      connection.close();
      co_await connection.wait_closed();
    } catch (const std::exception& error) {
      std::printf("%s: %s\n", peer.c_str(), error.what());
    }
    std::printf("%s disconnected\n", peer.c_str());
    std::fflush(stdout);
    client_left.set();
  };
  cl::server server = co_await cl::start_server(handler, "127.0.0.1", port);
  std::printf("Serving on 127.0.0.1:%u\n", static_cast<unsigned>(server.port()));
  std::fflush(stdout);
  if (once) {
    co_await client_left.wait();
    server.close();
    co_await server.wait_closed();
  } else {
    co_await server.serve_forever();  // until Ctrl+C cancels the main task
  }
}

int main(int argc, char* argv[]) {
  unsigned long port = 8888;
  bool once = false;
  for (int i = 1; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument == "--once") {
      once = true;
      continue;
    }
    char* end = nullptr;
    port = std::strtoul(argv[i], &end, 10);
    if (argument.empty() || *end != '\0' || port > 65535) {
      std::fprintf(stderr, "usage: echo_server [PORT] [--once]\n");
      return 2;
    }
  }
  try {
    cl::run(serve(static_cast<std::uint16_t>(port), once));
  } catch (const cl::keyboard_interrupt&) {
    std::printf("bye\n");  // Ctrl+C: the server and its connections were closed
  } catch (const std::exception& error) {
    std::fprintf(stderr, "echo_server: %s\n", error.what());
    return 1;
  }
  return 0;
}
