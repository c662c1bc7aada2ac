// examples/echo_client.cpp - a line echo client (asyncio.open_connection): sends lines, prints each echo.
// Usage: echo_client [PORT [LINE...]]   with no PORT (or 0) it starts its own echo server and talks to that.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;

cl::task<void> talk(std::uint16_t port, std::vector<std::string> lines) {
  cl::stream connection = co_await cl::timeout(10s, cl::open_connection("127.0.0.1", port));
  for (const std::string& line : lines) {
    connection.write(line + "\n");
    co_await connection.drain();
    std::string echoed = co_await cl::timeout(10s, connection.read_line());
    if (echoed.empty()) throw std::runtime_error("the server closed the connection");
    std::printf("echoed: %s", echoed.c_str());
  }
  connection.close();
  co_await connection.wait_closed();
}

// The same echo as examples/echo_server.cpp, in this program.
cl::task<void> echo(cl::stream connection) {
  for (;;) {
    std::string line = co_await connection.read_line();
    if (line.empty()) break;
    connection.write(line);
    co_await connection.drain();
  }
  connection.close();
  co_await connection.wait_closed();
}

cl::task<void> talk_to_own_server(std::vector<std::string> lines) {
  cl::server server = co_await cl::start_server(&echo, "127.0.0.1", 0);
  std::printf("Started an echo server on 127.0.0.1:%u\n", static_cast<unsigned>(server.port()));
  co_await talk(server.port(), std::move(lines));
  server.close();
  co_await server.wait_closed();
}

int main(int argc, char* argv[]) {
  std::vector<std::string> lines;
  unsigned long port = 0;
  if (argc > 1) {
    char* end = nullptr;
    port = std::strtoul(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || port > 65535) {
      std::fprintf(stderr, "usage: echo_client [PORT [LINE...]]\n");
      return 2;
    }
    lines.assign(argv + 2, argv + argc);
  }
  if (lines.empty()) lines = {"hello", "world"};
  try {
    if (port == 0) {
      cl::run(talk_to_own_server(std::move(lines)));
    } else {
      cl::run(talk(static_cast<std::uint16_t>(port), std::move(lines)));
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "echo_client: %s\n", error.what());
    return 1;
  }
  return 0;
}
