// examples/timeout_and_cancellation.cpp - the section "asyncio.timeout and Cancellation" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// Shows timeout() raising timeout_error after cancelling slow work, and cancelling a task by hand.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <string>

namespace cl = coro_loop;
using namespace std::chrono_literals;

cl::task<std::string> slow_operation() {
  co_await cl::sleep(10s);
  co_return "done";
}

// async with asyncio.timeout(2.0): the slow operation is cancelled and awaited,
// then timeout_error (Python's TimeoutError) reaches us.
cl::task<void> with_timeout() {
  try {
    std::string result = co_await cl::timeout(2s, slow_operation());
    std::printf("%s\n", result.c_str());
  } catch (const cl::timeout_error&) {
    std::printf("Operation timed out after 2 seconds\n");
  }
}

// Cancelling a task by hand: awaiting it afterwards raises cancelled_error.
cl::task<void> cancelable() {
  auto task = cl::create_task(slow_operation());
  co_await cl::sleep(1s);
  task.cancel();
  try {
    (void)co_await task;
  } catch (const cl::cancelled_error&) {
    std::printf("Task was cancelled cleanly\n");
  }
}

// The tutorial's asyncio.run runs only with_timeout(); this runs both, in order.
int main() {
  cl::run(with_timeout());
  cl::run(cancelable());
}
