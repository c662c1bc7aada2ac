// examples/gather_vs_create_task.cpp - the section "asyncio.gather vs asyncio.create_task" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// Shows gather (results in argument order), gather_settled (return_exceptions=True), named create_task, task_group.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <exception>
#include <stdexcept>
#include <string>
#include <vector>

namespace cl = coro_loop;

// async def work(n): await asyncio.sleep(n * 0.1); return f"result-{n}"
cl::task<std::string> work(int n) {
  co_await cl::sleep(std::chrono::milliseconds(100 * n));
  co_return "result-" + std::to_string(n);
}

// gather: waits for all and returns the results in order.
cl::task<void> use_gather() {
  auto [r1, r2, r3] = co_await cl::gather(work(1), work(2), work(3));
  std::printf("['%s', '%s', '%s']\n", r1.c_str(), r2.c_str(), r3.c_str());  // ['result-1', 'result-2', 'result-3']
}

// The tutorial's use_gather_safe never fails; here work 2 fails, so the
// "Task failed: ..." line shows and the other two results still arrive.
cl::task<std::string> work_or_fail(int n) {
  if (n == 2) {
    co_await cl::sleep(std::chrono::milliseconds(100 * n));
    throw std::runtime_error("work 2 failed");
  }
  co_return co_await work(n);
}

// gather_settled (return_exceptions=True): one failure does not cancel the others.
cl::task<void> use_gather_safe() {
  std::vector<cl::task<std::string>> works;
  for (int n = 1; n <= 3; ++n) works.push_back(work_or_fail(n));
  auto results = co_await cl::gather_settled(std::move(works));
  for (auto& r : results) {
    if (r.has_value()) {
      std::printf("%s\n", r.value().c_str());
      continue;
    }
    try {
      std::rethrow_exception(r.error());
    } catch (const std::exception& e) {
      std::printf("Task failed: %s\n", e.what());
    }
  }
}

// create_task: the tasks start running at once; other work can happen before awaiting them.
cl::task<void> use_create_task() {
  auto task1 = cl::create_task(work(1), "task-1");
  auto task2 = cl::create_task(work(2), "task-2");

  // Tasks are already running while we do other work here.
  co_await cl::sleep(std::chrono::seconds(0));

  std::string result1 = co_await task1;
  std::string result2 = co_await task2;
  std::printf("%s %s\n", result1.c_str(), result2.c_str());
}

// task_group: structured concurrency; if any child fails, its siblings are cancelled.
cl::task<void> use_task_group() {
  cl::task_handle<std::string> t1;
  cl::task_handle<std::string> t2;
  auto body = [&](cl::task_group& tg) -> cl::task<void> {
    t1 = tg.create_task(work(1));
    t2 = tg.create_task(work(2));
    co_return;
  };
  co_await cl::with_task_group(body);
  // Both tasks are done here.
  std::printf("%s %s\n", t1.result().c_str(), t2.result().c_str());
}

// The tutorial's asyncio.run(...) runs only use_task_group; this runs all four, in order.
cl::task<void> main_task() {
  co_await use_gather();
  co_await use_gather_safe();
  co_await use_create_task();
  co_await use_task_group();
}

int main() { cl::run(main_task()); }
