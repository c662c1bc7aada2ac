// examples/debug_mode.cpp - the section "How do I debug asyncio applications?" of the tutorial
// "Python Asyncio: Async/Await Complete Guide (2026)", in C++:
// asyncio.run(main(), debug=True) is run(main, {.debug = true}); PYTHONASYNCIODEBUG=1 is CORO_LOOP_DEBUG=1.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <thread>

namespace cl = coro_loop;
using namespace std::chrono_literals;

cl::task<void> slow_step() {
  std::this_thread::sleep_for(150ms);  // blocking: one step holds the loop for 150 ms
  co_return;
}

cl::task<int> consume(cl::queue<int>& jobs) { co_return co_await jobs.get(); }

cl::task<void> amain() {
  auto task = cl::create_task(slow_step(), "slow_step");
  co_await task;
  co_await cl::sleep(10ms);  // fast steps are not reported

  // What is every task waiting on? print_task_tree() says, with where each task
  // was created (asyncio.print_call_graph); in debug mode SIGQUIT (Ctrl+\ on a
  // terminal) prints the same to stderr, and the program goes on.
  cl::queue<int> jobs;
  auto consumer = cl::create_task(consume(jobs), "consumer");
  co_await cl::sleep(0ms);  // one iteration: the consumer starts and waits on the queue
  cl::print_task_tree(stdout);
  jobs.put_nowait(1);
  co_await consumer;
  std::printf("main() done\n");
}

int main() {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  // Steps longer than slow_callback_duration (100 ms, asyncio's default) are
  // reported on stderr. Setting CORO_LOOP_DEBUG=1 in the environment turns
  // debug mode on the same way, for a plain cl::run(amain()).
  cl::run(amain(), {.debug = true, .slow_callback_duration = 100ms});
}
