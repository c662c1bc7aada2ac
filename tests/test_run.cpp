// tests/test_run.cpp - run() (asyncio.run) and sleep [run].
//
// run() returns the value or rethrows, cancels and awaits what is still
// pending when the main task ends, closes its loop, refuses to nest; sleep
// orders by deadline, sleep(0) yields exactly one loop iteration.
#include "coro_loop.hpp"
#include "catch.hpp"

#include "test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;

namespace {

cl::task<int> answer() {
  co_await cl::sleep(1ms);
  co_return 42;
}

cl::task<std::string> greeting(std::string name) {
  co_await cl::sleep(0ms);
  co_return "hello " + name;
}

struct coded_error : std::runtime_error {
  int code;
  explicit coded_error(int c) : std::runtime_error("custom error"), code(c) {}
};

cl::task<int> fails() {
  co_await cl::sleep(1ms);
  throw coded_error(17);
}

cl::task<void> nothing() { co_await cl::sleep(0ms); }

}  // namespace

// --- value and exception ---

TEST_CASE("run: run() returns the main task's value", "[run]") {
  CHECK(cl::run(answer()) == 42);
  CHECK(cl::run(greeting("world")) == "hello world");
  REQUIRE_NOTHROW(cl::run(nothing()));
  // Any awaitable: a bare sleep.
  REQUIRE_NOTHROW(cl::run(cl::sleep(1ms)));
}

TEST_CASE("run: run() rethrows the main task's exception with its type", "[run]") {
  bool caught = false;
  try {
    cl::run(fails());
  } catch (const coded_error& error) {
    caught = true;
    CHECK(error.code == 17);
  }
  CHECK(caught);
  // Cancellation of the main task comes out as cancelled_error.
  auto self_cancel = []() -> cl::task<int> {
    cl::current_task().cancel();
    co_await cl::sleep(0ms);
    co_return 0;
  };
  CHECK_THROWS_AS(cl::run(self_cancel()), cl::cancelled_error);
}

TEST_CASE("run: run() closes its loop: no running loop afterwards, and run() works again", "[run]") {
  CHECK_THROWS_AS(cl::get_running_loop(), cl::invalid_state_error);
  cl::event_loop* inside = nullptr;
  auto body = [&]() -> cl::task<int> {
    inside = &cl::get_running_loop();
    CHECK(inside->is_running());
    co_await cl::sleep(0ms);
    co_return 1;
  };
  CHECK(cl::run(body()) == 1);
  CHECK(inside != nullptr);
  CHECK_THROWS_AS(cl::get_running_loop(), cl::invalid_state_error);
  CHECK(cl::run(body()) == 1);
  CHECK_THROWS_WITH(cl::run(fails()), "custom error");
  CHECK_THROWS_AS(cl::get_running_loop(), cl::invalid_state_error);  // also after an exception
}

// --- leftover tasks ---

TEST_CASE("run: run() cancels and awaits the tasks still pending when the main task returns", "[run]") {
  std::vector<std::string> log;
  auto worker = [&](std::string name) -> cl::task<void> {
    bool cancelled = false;
    try {
      co_await cl::sleep(1h);
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    }
    if (cancelled) {
      co_await cl::sleep(2ms);  // cleanup may await
      log.push_back(name + " cleaned up");
      throw cl::cancelled_error{};
    }
    log.push_back(name + " finished normally");
  };
  auto never_started_ran = std::make_shared<bool>(false);
  auto body = [&]() -> cl::task<int> {
    (void)cl::create_task(worker, std::string("a"));
    (void)cl::create_task(worker, std::string("b"));
    co_await cl::sleep(0ms);  // both are sleeping now
    // Created on the last step: cancelled before its first step, its body never runs.
    (void)cl::create_task([never_started_ran]() -> cl::task<void> {
      *never_started_ran = true;
      co_return;
    });
    co_return 7;
  };
  auto start = cl::clock::now();
  CHECK(cl::run(body()) == 7);
  CHECK(cl::clock::now() - start < 30s);
  CHECK(log.size() == 2);
  CHECK(std::count(log.begin(), log.end(), "a cleaned up") == 1);
  CHECK(std::count(log.begin(), log.end(), "b cleaned up") == 1);
  CHECK_FALSE(*never_started_ran);
}

TEST_CASE("run: leftover tasks are cancelled and awaited also when the main task throws", "[run]") {
  bool cleaned = false;
  auto worker = [&]() -> cl::task<void> {
    try {
      co_await cl::sleep(1h);
    } catch (const cl::cancelled_error&) {
      cleaned = true;
      throw;
    }
  };
  auto body = [&]() -> cl::task<int> {
    (void)cl::create_task(worker);
    co_await cl::sleep(0ms);
    throw coded_error(3);
  };
  CHECK_THROWS_AS(cl::run(body()), coded_error);
  CHECK(cleaned);
}

TEST_CASE("run: a leftover task that swallows the cancellation is still awaited to its end", "[run]") {
  std::vector<std::string> log;
  auto stubborn = [&]() -> cl::task<void> {
    try {
      co_await cl::sleep(1h);
    } catch (const cl::cancelled_error&) {
      log.push_back("swallowed");
    }
    co_await cl::sleep(5ms);
    log.push_back("finished");
  };
  auto body = [&]() -> cl::task<void> {
    (void)cl::create_task(stubborn);
    co_await cl::sleep(0ms);
  };
  cl::run(body());
  CHECK(log == std::vector<std::string>{"swallowed", "finished"});
}

TEST_CASE("run: a nested run() inside a running loop throws invalid_state_error and keeps nothing",
          "[run]") {
  // The nested run's awaitable owns `witness` (a coroutine parameter lives in
  // its frame): after the refusal nothing may hold it any more.
  auto witness = std::make_shared<int>(5);
  std::weak_ptr<int> watch = witness;
  auto holder = [](std::shared_ptr<int> owned) -> cl::task<int> {
    co_await cl::sleep(1ms);
    co_return *owned;
  };
  auto body = [&]() -> cl::task<std::string> {
    try {
      (void)cl::run(holder(std::move(witness)));
    } catch (const cl::invalid_state_error& error) {
      co_return std::string(error.what());
    }
    co_return std::string("no error");
  };
  std::string message = cl::run(body());
  CHECK(message != "no error");
  CHECK(watch.expired());
  // ... and so does one from a plain callback of a running loop.
  cl::event_loop loop;
  bool threw = false;
  loop.call_soon([&] {
    try {
      cl::run(nothing());
    } catch (const cl::invalid_state_error&) {
      threw = true;
    }
    loop.stop();
  });
  loop.run_forever();
  CHECK(threw);
}

TEST_CASE("run: run() of a lambda task started through create_task(callable)", "[run]") {
  auto body = []() -> cl::task<int> {
    auto base = std::make_shared<int>(40);
    auto handle = cl::create_task(
        [base](int extra) -> cl::task<int> {
          co_await cl::sleep(1ms);
          co_return *base + extra;
        },
        2);
    base.reset();
    int value = co_await handle;
    co_return value;
  };
  CHECK(cl::run(body()) == 42);
}

// --- sleep ---

TEST_CASE("run: sleep(d) takes at least d and not absurdly longer", "[run]") {
  auto body = []() -> cl::task<cl::duration> {
    auto start = cl::clock::now();
    co_await cl::sleep(50ms);
    co_return cl::clock::now() - start;
  };
  cl::duration took = cl::run(body());
  CHECK(took >= 50ms);
  CHECK(took < 2s);
  auto until = []() -> cl::task<bool> {
    cl::time_point deadline = cl::get_running_loop().time() + 20ms;
    co_await cl::sleep_until(deadline);
    co_return cl::clock::now() >= deadline;
  };
  CHECK(cl::run(until()));
}

TEST_CASE("run: sleeping tasks wake in the order of their deadlines", "[run]") {
  auto body = []() -> cl::task<std::vector<int>> {
    std::vector<int> order;
    auto sleeper = [&](int ms) -> cl::task<void> {
      co_await cl::sleep(std::chrono::milliseconds(ms));
      order.push_back(ms);
    };
    std::vector<cl::task_handle<void>> handles;
    for (int ms : {210, 10, 110, 160, 60}) handles.push_back(cl::create_task(sleeper, ms));
    for (auto& handle : handles) co_await handle;
    co_return order;
  };
  CHECK(cl::run(body()) == std::vector<int>{10, 60, 110, 160, 210});
}

TEST_CASE("run: sleep(0) yields for exactly one loop iteration", "[run]") {
  SECTION("two tasks alternating with sleep(0) interleave strictly") {
    auto body = []() -> cl::task<std::string> {
      std::string trace;
      auto worker = [&](char name) -> cl::task<void> {
        for (int i = 0; i < 5; ++i) {
          trace += name;
          co_await cl::sleep(0ms);
        }
      };
      auto a = cl::create_task(worker, 'A');
      auto b = cl::create_task(worker, 'B');
      co_await a;
      co_await b;
      co_return trace;
    };
    CHECK(cl::run(body()) == "ABABABABAB");
  }
  SECTION("against a callback that counts iterations") {
    auto body = []() -> cl::task<std::vector<long>> {
      cl::event_loop& loop = cl::get_running_loop();
      long iterations = 0;
      bool stop = false;
      // Re-posts itself: runs once per iteration.
      struct counter {
        cl::event_loop* loop;
        long* iterations;
        bool* stop;
        void operator()() const {
          ++*iterations;
          if (!*stop) loop->call_soon(*this);
        }
      };
      loop.call_soon(counter{&loop, &iterations, &stop});
      co_await cl::sleep(0ms);
      std::vector<long> deltas;
      for (int i = 0; i < 5; ++i) {
        long before = iterations;
        co_await cl::sleep(0ms);
        deltas.push_back(iterations - before);
      }
      stop = true;
      co_await cl::sleep(0ms);
      co_return deltas;
    };
    CHECK(cl::run(body()) == std::vector<long>(5, 1));
  }
  SECTION("negative delays behave as sleep(0)") {
    auto body = []() -> cl::task<std::string> {
      std::string trace;
      auto worker = [&](char name) -> cl::task<void> {
        for (int i = 0; i < 3; ++i) {
          trace += name;
          co_await cl::sleep(-1ms);
        }
      };
      auto a = cl::create_task(worker, 'x');
      auto b = cl::create_task(worker, 'y');
      co_await a;
      co_await b;
      co_return trace;
    };
    CHECK(cl::run(body()) == "xyxyxy");
  }
}

TEST_CASE("run: sleep awaited outside a task throws invalid_state_error", "[run]") {
  cl::event_loop loop;
  bool threw = false;
  // In a plain callback, driving a coroutine by hand: no current task.
  loop.call_soon([&] {
    try {
      auto awaiter = cl::sleep(1ms);
      (void)awaiter.await_suspend(std::noop_coroutine());
    } catch (const cl::invalid_state_error&) {
      threw = true;
    }
    loop.stop();
  });
  loop.run_forever();
  CHECK(threw);
}

// --- shutdown: every task is asked to stop, however late it started ---

namespace {

// Sleeps; when cancelled, starts `spawn_left` more tasks like itself (named
// "straggler") from its cleanup, then ends cancelled.
cl::task<void> spawning_cleanup(int spawn_left) {
  try {
    co_await cl::sleep(1h);
  } catch (const cl::cancelled_error&) {
    if (spawn_left > 0) {
      cl::create_task(spawning_cleanup(spawn_left - 1), "straggler");
      cl::create_task(cl::sleep(1h), "straggler");
    }
    throw;
  }
}

}  // namespace

TEST_CASE("run: tasks started by a cancelled task's cleanup during shutdown are cancelled too, round after round",
          "[run]") {
  // asyncio.run cancels the tasks it finds once; a task started by their
  // cleanup would keep run() waiting (here for an hour).
  auto body = []() -> cl::task<void> {
    cl::create_task(spawning_cleanup(3));
    co_await cl::sleep(0ms);  // it sleeps now
  };
  const cl::time_point start = cl::clock::now();
  cl::run(body());
  CHECK(cl::clock::now() - start < 30s);
}

TEST_CASE("run: in debug mode each task started during shutdown is reported by name", "[run]") {
  auto body = []() -> cl::task<void> {
    cl::create_task(spawning_cleanup(1));
    co_await cl::sleep(0ms);
  };
  test_support::stderr_capture capture;
  cl::run(body(), {.debug = true});
  const std::string text = capture.text();
  INFO(text);
  CHECK(text.find("'straggler'") != std::string::npos);
  CHECK(text.find("shutting down") != std::string::npos);
}

TEST_CASE("run: a coroutine another thread submits while run() shuts down is cancelled and its future ends",
          "[run]") {
  cl::concurrent_future<void> submitted;
  auto body = [&]() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    auto leftover = [&submitted, &loop]() -> cl::task<void> {
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
      }
      // The cleanup waits for another thread, which submits a long sleep to this loop.
      auto submit = [&submitted, &loop] { submitted = cl::run_coroutine_threadsafe(cl::sleep(1h), loop); };
      co_await cl::to_thread(submit);
      throw cl::cancelled_error{};
    };
    cl::create_task(leftover);
    co_await cl::sleep(0ms);
  };
  const cl::time_point start = cl::clock::now();
  cl::run(body());
  CHECK(cl::clock::now() - start < 30s);
  const bool done = submitted.wait_for(5s);
  REQUIRE(done);
  CHECK_THROWS_AS(submitted.get(), cl::cancelled_error);
}
