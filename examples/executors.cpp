// examples/executors.cpp - the section "Running Sync Code in Executors" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++.
// Blocking I/O on the default thread pool (run_in_executor(nullptr, ...)), CPU work on a pool of 4 workers.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

namespace cl = coro_loop;

// Simulate CPU work. (The sum, 333332833333500000, fits in 64 bits.)
unsigned long long cpu_bound(unsigned long long n) {
  unsigned long long sum = 0;
  for (unsigned long long i = 0; i < n; ++i) sum += i * i;
  return sum;
}

std::string blocking_io(const std::string& path) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // simulate blocking I/O
  return "read " + path;
}

cl::task<void> amain() {
  cl::event_loop& loop = cl::get_running_loop();

  // Thread pool for blocking I/O (default executor)
  const std::string result = co_await loop.run_in_executor(nullptr, blocking_io, "file.txt");
  std::printf("%s\n", result.c_str());

  // Python needs a ProcessPoolExecutor here, because the GIL lets only one
  // thread run Python code at a time. C++ has no GIL: threads run in parallel
  // on every core, so a pool of 4 worker threads does the same job.
  {
    cl::thread_pool pool(4);
    const unsigned long long sum = co_await loop.run_in_executor(&pool, cpu_bound, 1'000'000ULL);
    std::printf("Sum: %llu\n", sum);
  }  // like leaving `with ProcessPoolExecutor(...)`: the pool shuts down and joins
}

int main() { cl::run(amain()); }
