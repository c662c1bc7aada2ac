// examples/producer_consumer.cpp - the section "asyncio.Queue for Producer-Consumer" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// A bounded queue feeding 3 workers: stopped by sentinels (None -> std::nullopt), then by join() and shutdown().
//
// Python:                                   C++ (coro_loop):
//   queue = asyncio.Queue(maxsize=10)         cl::queue<std::optional<int>> queue(10);
//   await queue.put(item)                     co_await queue.put(item);
//   item = await queue.get()                  std::optional<int> item = co_await queue.get();
//   queue.task_done() / await queue.join()    queue.task_done(); / co_await queue.join();
//   queue.shutdown()   (Python 3.13)          queue.shutdown();   get() then throws cl::queue_shut_down
//   asyncio.gather(*workers)                  co_await cl::gather(workers);
#include "coro_loop.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <random>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;

namespace {

// random.randint with a fixed seed, so every run produces the same items.
// (std::mt19937's output is fixed by the standard; a distribution's is not.)
std::mt19937 random_engine;
int randint(int low, int high) {
  return low + static_cast<int>(random_engine() % static_cast<std::uint32_t>(high - low + 1));
}

constexpr int worker_count = 3;

// --- 1. The tutorial's program: None sentinels stop the workers ---

cl::task<void> producer(cl::queue<std::optional<int>>& queue, int n_items) {
  for (int i = 0; i < n_items; ++i) {
    int item = randint(1, 100);
    co_await queue.put(item);
    std::printf("Produced: %d\n", item);
    co_await cl::sleep(50ms);
  }
  // Signal workers to stop
  for (int i = 0; i < worker_count; ++i) co_await queue.put(std::nullopt);
}

cl::task<void> worker(int worker_id, cl::queue<std::optional<int>>& queue) {
  while (true) {
    std::optional<int> item = co_await queue.get();
    if (!item) break;
    co_await cl::sleep(100ms);  // simulate processing
    std::printf("Worker %d processed: %d\n", worker_id, *item);
    queue.task_done();
  }
}

cl::task<void> main_with_sentinels() {
  cl::queue<std::optional<int>> queue(10);
  std::vector<cl::task_handle<void>> workers;
  for (int i = 0; i < worker_count; ++i) workers.push_back(cl::create_task(worker(i, queue)));
  co_await producer(queue, 15);
  co_await cl::gather(workers);
}

// --- 2. Python 3.13 style: join() waits for the work, shutdown() stops the workers ---

cl::task<void> producer_without_sentinels(cl::queue<int>& queue, int n_items) {
  for (int i = 0; i < n_items; ++i) {
    int item = randint(1, 100);
    co_await queue.put(item);
    std::printf("Produced: %d\n", item);
    co_await cl::sleep(50ms);
  }
}

cl::task<void> worker_until_shutdown(int worker_id, cl::queue<int>& queue) {
  while (true) {
    std::optional<int> item;
    try {
      item = co_await queue.get();
    } catch (const cl::queue_shut_down&) {
      break;  // shut down and drained: nothing more will come
    }
    co_await cl::sleep(100ms);  // simulate processing
    std::printf("Worker %d processed: %d\n", worker_id, *item);
    queue.task_done();
  }
}

cl::task<void> main_with_join_and_shutdown() {
  cl::queue<int> queue(10);
  std::vector<cl::task_handle<void>> workers;
  for (int i = 0; i < worker_count; ++i) workers.push_back(cl::create_task(worker_until_shutdown(i, queue)));
  co_await producer_without_sentinels(queue, 15);
  co_await queue.join();  // every item produced has been processed
  std::printf("All items processed; shutting the queue down\n");
  queue.shutdown();  // the idle workers' get() throws queue_shut_down
  co_await cl::gather(workers);
}

}  // namespace

int main() {
  random_engine.seed(42);
  cl::run(main_with_sentinels());

  std::printf("\n-- with join() and shutdown() --\n");
  random_engine.seed(42);  // the same 15 items again
  cl::run(main_with_join_and_shutdown());
}
