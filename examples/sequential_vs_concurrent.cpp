// examples/sequential_vs_concurrent.cpp - the examples of "Event Loop Mechanics" and "Async/Await Syntax"
// in the tutorial "Python Asyncio: Async/Await Complete Guide (2026)", in C++:
// main() sleeping 1 s; fetch_data awaited one after the other (~1.0 s) vs with gather (~0.5 s).
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <map>
#include <string>

using namespace std::chrono_literals;
using data = std::map<std::string, std::string>;

// async def fetch_data(url) -> dict: a coroutine; calling it runs nothing yet.
coro_loop::task<data> fetch_data(std::string url) {
  co_await coro_loop::sleep(500ms);  // simulates network I/O
  co_return data{{"url", url}, {"data", "..."}};
}

void print(const data& result) {
  std::printf("{'url': '%s', 'data': '%s'}", result.at("url").c_str(), result.at("data").c_str());
}

coro_loop::task<> event_loop_main() {
  std::puts("start");
  co_await coro_loop::sleep(1s);  // suspends: the loop could run other tasks meanwhile
  std::puts("end");
}

coro_loop::task<> process() {
  data result = co_await fetch_data("https://api.example.com/data");
  print(result);
  std::puts("");
}

double seconds_since(coro_loop::time_point start) {
  return std::chrono::duration<double>(coro_loop::clock::now() - start).count();
}

coro_loop::task<> sequential() {
  const auto start = coro_loop::clock::now();
  co_await fetch_data("https://api.example.com/1");
  co_await fetch_data("https://api.example.com/2");
  std::printf("Sequential: %.2fs\n", seconds_since(start));
}

coro_loop::task<> concurrent() {
  const auto start = coro_loop::clock::now();
  auto [first, second] = co_await coro_loop::gather(fetch_data("https://api.example.com/1"),
                                                     fetch_data("https://api.example.com/2"));
  std::printf("Concurrent: %.2fs\n", seconds_since(start));
  std::printf("[");
  print(first);
  std::printf(", ");
  print(second);
  std::puts("]");
}

int main() {
  coro_loop::run(event_loop_main());  // asyncio.run(main())
  coro_loop::run(process());
  coro_loop::run(sequential());
  coro_loop::run(concurrent());  // the tutorial's asyncio.run(concurrent())
}
