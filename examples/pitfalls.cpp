// examples/pitfalls.cpp - the section "Common Pitfalls" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// 1. blocking code in a coroutine (debug mode names it), 2. forgetting co_await, 3. fire-and-forget tasks.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>

namespace cl = coro_loop;
using namespace std::chrono_literals;

// --- 1. Calling blocking code in a coroutine ---

// BAD: blocks the entire event loop for every task (Python's time.sleep(5)).
cl::task<void> bad() {
  std::this_thread::sleep_for(200ms);  // debug mode reports this step
  co_return;
}

std::string read_big_file() {
  std::this_thread::sleep_for(200ms);  // stands for open("big.txt").read()
  return "big.txt contents";
}

// GOOD: run the blocking code in a thread pool (loop.run_in_executor(None, ...)).
cl::task<void> good() {
  const std::string data = co_await cl::to_thread(read_big_file);
  std::printf("good(): got \"%s\" from a worker thread\n", data.c_str());
}

cl::task<void> ticker() {  // shows that the loop keeps running meanwhile
  for (int i = 1; i <= 3; ++i) {
    std::printf("tick %d\n", i);
    co_await cl::sleep(50ms);
  }
}

// --- 2. Forgetting to await a coroutine ---

cl::task<std::string> fetch_data(std::string url) {
  co_await cl::sleep(10ms);
  co_return "data from " + url;
}

cl::task<void> forgetting() {
  // BAD: `fetch_data("http://example.com");` creates a task that never runs.
  // task<T> is [[nodiscard]], so the compiler warns (g++: "ignoring returned
  // value of type 'coro_loop::task<...>', declared with attribute 'nodiscard'"),
  // as Python's "coroutine was never awaited"; with -Werror it does not build.
  // A task stored and then dropped escapes the compiler; debug mode reports it:
  {
    cl::task<std::string> forgotten = fetch_data("http://example.com");
    (void)forgotten;
  }
  // GOOD
  const std::string result = co_await fetch_data("http://example.com");
  std::printf("result: %s\n", result.c_str());
}

// --- 3. Creating tasks but not awaiting them ---

cl::task<void> work() {
  co_await cl::sleep(10ms);
  throw std::runtime_error("work() failed");
}

cl::task<void> fire_and_forget() {
  // BAD: nobody looks at the error; it is only reported when the task is
  // released ("Task exception was never retrieved").
  cl::create_task(work(), "work");
  co_await cl::sleep(50ms);
}

cl::task<void> keep_and_await() {
  // GOOD: keep a handle and await it (or use a task_group).
  auto task = cl::create_task(work(), "work");
  try {
    co_await task;
  } catch (const std::exception& error) {
    std::printf("caught: %s\n", error.what());
  }
}

cl::task<void> amain() {
  std::printf("== 1. Blocking call in a coroutine: bad()\n");
  auto blocking = cl::create_task(bad(), "bad");
  co_await blocking;
  std::printf("== 1. The same work through to_thread: good()\n");
  co_await cl::gather(good(), ticker());

  std::printf("== 2. Forgetting to await\n");
  co_await forgetting();

  std::printf("== 3. Fire and forget\n");
  co_await fire_and_forget();
  std::printf("== 3. Keeping the handle and awaiting it\n");
  co_await keep_and_await();
}

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // keep our lines in order with the library's stderr
  cl::run(amain(), {.debug = true});
}
