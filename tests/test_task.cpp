// tests/test_task.cpp - task<T>, create_task and task handles [task].
//
// Covers: task<T> for int, void, T& and move-only T; exceptions through
// co_await and through task_handle; the two 1,000,000-step chains that pin the
// symmetric-transfer depth limit (GCC at -O0 and sanitizers, Clang 14, do not
// make symmetric transfer a tail call); the handle's API (done, cancelled,
// result, exception, name, set_name, add_done_callback, cancelling,
// uncancel); misuse errors; capture lifetime with create_task(callable, ...);
// current_task(), all_tasks(); the "Task exception was never retrieved" report.
#include "coro_loop.hpp"
#include "catch.hpp"

#include "task_helpers.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <atomic>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {

using test_support::stderr_capture;

cl::task<int> immediate(int value) { co_return value; }

cl::task<void> set_flag(bool& flag) {
  flag = true;
  co_return;
}

[[noreturn]] void fail_with(const char* message) { throw std::runtime_error(message); }

cl::task<int> throws_now(const char* message) {
  fail_with(message);
  co_return 0;  // unreachable; makes this a task<int> coroutine
}

cl::task<int> throws_after_sleep(const char* message) {
  co_await cl::sleep(1ms);
  fail_with(message);
  co_return 0;
}

int global_value = 10;
cl::task<int&> global_reference() { co_return global_value; }

cl::task<std::unique_ptr<int>> make_unique_later(int value) {
  co_await cl::sleep(0ms);
  co_return std::make_unique<int>(value);
}

// Each level awaits the next: 1 + 1 + ... The bottom yields once through the
// loop, so the chain is built in one step and unwound in another.
cl::task<std::int64_t> chain(int depth) {
  if (depth == 0) {
    co_await cl::sleep(0ms);
    co_return 0;
  }
  std::int64_t below = co_await chain(depth - 1);
  co_return below + 1;
}

cl::task<int> throwing_chain(int depth) {
  if (depth == 0) fail_with("bottom of the chain");
  int below = co_await throwing_chain(depth - 1);
  co_return below + 1;
}

bool is_default_task_name(const std::string& name) {
  if (name.rfind("Task-", 0) != 0 || name.size() == 5) return false;
  for (std::size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return true;
}

}  // namespace

// --- task<T> result types ---

TEST_CASE("task: task<int> returns its value through co_await", "[task]") {
  auto body = []() -> cl::task<int> {
    int a = co_await immediate(20);
    int b = co_await value_after(1ms, 22);
    co_return a + b;
  };
  REQUIRE(cl::run(body()) == 42);
}

TEST_CASE("task: task<void> runs its body when awaited and not before", "[task]") {
  bool ran = false;
  bool ran_before_await = true;
  auto body = [&]() -> cl::task<void> {
    cl::task<void> lazy = set_flag(ran);
    ran_before_await = ran;
    co_await lazy;
  };
  cl::run(body());
  CHECK_FALSE(ran_before_await);
  CHECK(ran);
}

TEST_CASE("task: task<T&> returns a reference to the same object", "[task]") {
  global_value = 10;
  auto body = []() -> cl::task<int*> {
    int& ref = co_await global_reference();
    ref = 11;
    co_return &ref;
  };
  int* address = cl::run(body());
  CHECK(address == &global_value);
  CHECK(global_value == 11);

  // run() of a task<T&> returns the reference too, and so does a handle.
  int& direct = cl::run(global_reference());
  CHECK(&direct == &global_value);
  auto via_handle = []() -> cl::task<int*> {
    auto handle = cl::create_task(global_reference());
    int& awaited = co_await handle;
    int& stored = handle.result();
    CHECK(&stored == &awaited);
    co_return &awaited;
  };
  CHECK(cl::run(via_handle()) == &global_value);
}

TEST_CASE("task: a move-only result (std::unique_ptr) moves through co_await, handles and run()", "[task]") {
  auto body = []() -> cl::task<int> {
    std::unique_ptr<int> direct = co_await make_unique_later(5);
    REQUIRE(direct != nullptr);

    auto handle = cl::create_task(make_unique_later(7));
    std::unique_ptr<int> awaited = co_await handle;  // moved out: a move-only result is awaited once
    REQUIRE(awaited != nullptr);

    auto other = cl::create_task(make_unique_later(9));
    while (!other.done()) co_await cl::sleep(0ms);
    std::unique_ptr<int>& stored = other.result();  // a reference into the task
    REQUIRE(stored != nullptr);
    co_return *direct + *awaited + *stored;
  };
  CHECK(cl::run(body()) == 21);
  std::unique_ptr<int> from_run = cl::run(make_unique_later(3));
  REQUIRE(from_run != nullptr);
  CHECK(*from_run == 3);
}

// --- exceptions ---

TEST_CASE("task: an exception propagates through nested co_awaits with its type and message", "[task]") {
  auto middle = []() -> cl::task<int> {
    int value = co_await throws_after_sleep("deep failure");
    co_return value + 1;
  };
  auto top = [&]() -> cl::task<std::string> {
    try {
      cl::task<int> inner = middle();
      (void)co_await inner;
    } catch (const std::runtime_error& error) {
      co_return std::string(error.what());
    }
    co_return std::string("no exception");
  };
  CHECK(cl::run(top()) == "deep failure");
  // Not caught anywhere: run() rethrows it.
  REQUIRE_THROWS_WITH(cl::run(throws_now("escaped")), "escaped");
  REQUIRE_THROWS_AS(cl::run(throws_now("escaped")), std::runtime_error);
}

TEST_CASE("task: an exception propagates through a task_handle: co_await, result() and exception()", "[task]") {
  auto body = []() -> cl::task<int> {
    auto handle = cl::create_task(throws_after_sleep("handle failure"));
    int caught = 0;
    try {
      (void)co_await handle;
    } catch (const std::runtime_error& error) {
      CHECK(std::string(error.what()) == "handle failure");
      ++caught;
    }
    CHECK(handle.done());
    CHECK_FALSE(handle.cancelled());
    std::exception_ptr stored = handle.exception();
    REQUIRE(stored != nullptr);
    try {
      std::rethrow_exception(stored);
    } catch (const std::runtime_error& error) {
      CHECK(std::string(error.what()) == "handle failure");
      ++caught;
    }
    CHECK_THROWS_WITH(handle.result(), "handle failure");
    // A handle can be awaited again: it rethrows each time.
    try {
      (void)co_await handle;
    } catch (const std::runtime_error&) {
      ++caught;
    }
    co_return caught;
  };
  CHECK(cl::run(body()) == 3);
}

TEST_CASE("task: an exception thrown at the bottom of a 10,000-deep chain reaches the top", "[task]") {
  auto body = []() -> cl::task<std::string> {
    try {
      (void)co_await throwing_chain(10'000);
    } catch (const std::runtime_error& error) {
      co_return std::string(error.what());
    }
    co_return std::string("no exception");
  };
  CHECK(cl::run(body()) == "bottom of the chain");
}

// --- the symmetric-transfer depth limit ---

TEST_CASE("task: 1,000,000 sequential awaits of synchronously completing tasks do not overflow the stack",
          "[task][slow]") {
  constexpr int count = 1'000'000;
  auto body = []() -> cl::task<std::int64_t> {
    std::int64_t sum = 0;
    for (int i = 0; i < count; ++i) sum += co_await immediate(i);
    co_return sum;
  };
  CHECK(cl::run(body()) == std::int64_t{count} * (count - 1) / 2);
}

TEST_CASE("task: a 1,000,000-deep recursive await chain does not overflow the stack", "[task][slow]") {
  constexpr int depth = 1'000'000;
  CHECK(cl::run(chain(depth)) == depth);
}

// --- create_task and the handle ---

TEST_CASE("task: create_task starts the task on a later iteration and its handle reports the outcome", "[task]") {
  auto body = []() -> cl::task<void> {
    bool started = false;
    auto worker = [&]() -> cl::task<int> {
      started = true;
      co_await cl::sleep(5ms);
      co_return 7;
    };
    auto handle = cl::create_task(worker);
    CHECK_FALSE(started);  // scheduled, not run inline
    CHECK_FALSE(handle.done());
    CHECK_FALSE(handle.cancelled());
    CHECK_THROWS_AS(handle.result(), cl::invalid_state_error);
    CHECK_THROWS_AS(handle.exception(), cl::invalid_state_error);
    co_await cl::sleep(0ms);
    CHECK(started);
    CHECK_FALSE(handle.done());
    int value = co_await handle;
    CHECK(value == 7);
    CHECK(handle.done());
    CHECK_FALSE(handle.cancelled());
    CHECK(handle.result() == 7);
    CHECK(handle.exception() == nullptr);
    // Copies of the handle see the same task; awaiting again gives the value again.
    cl::task_handle<int> copy = handle;
    CHECK(copy == handle);
    int again = co_await copy;
    CHECK(again == 7);
  };
  cl::run(body());
}

TEST_CASE("task: a task runs to completion even when every handle to it was dropped", "[task]") {
  bool finished = false;
  auto body = [&]() -> cl::task<void> {
    auto worker = [&]() -> cl::task<void> {
      co_await cl::sleep(2ms);
      finished = true;
    };
    (void)cl::create_task(worker);
    for (int i = 0; i < 5000 && !finished; ++i) co_await cl::sleep(1ms);
    CHECK(finished);
  };
  cl::run(body());
  CHECK(finished);
}

TEST_CASE("task: names are Task-N by default, or the given name, and set_name renames", "[task]") {
  auto body = []() -> cl::task<void> {
    std::string main_name = cl::current_task().name();
    CHECK(is_default_task_name(main_name));
    auto first = cl::create_task(immediate(1));
    auto second = cl::create_task(immediate(2));
    auto named = cl::create_task(immediate(3), "worker");
    CHECK(is_default_task_name(first.name()));
    CHECK(is_default_task_name(second.name()));
    CHECK(first.name() != second.name());
    CHECK(first.name() != main_name);
    CHECK(std::stoll(second.name().substr(5)) > std::stoll(first.name().substr(5)));
    CHECK(named.name() == "worker");
    named.set_name("renamed");
    CHECK(named.name() == "renamed");
    first.set_name("first");
    CHECK(first.name() == "first");
    (void)co_await first;
    (void)co_await second;
    (void)co_await named;
    CHECK(named.name() == "renamed");  // the name outlives the task's body
  };
  cl::run(body());
}

TEST_CASE("task: add_done_callback runs later, never synchronously, and receives the task", "[task]") {
  auto body = []() -> cl::task<void> {
    auto handle = cl::create_task(value_after(2ms, 5));
    int calls = 0;
    cl::task_ref seen;
    handle.add_done_callback([&](cl::task_ref done) {
      ++calls;
      CHECK(done.done());
      seen = done;
    });
    CHECK(calls == 0);
    int value = co_await handle;
    CHECK(value == 5);
    // Registered before this task awaited, so it ran before this task resumed (asyncio order).
    CHECK(calls == 1);
    CHECK(seen == handle);

    // On a task already done: scheduled for the next iteration, not run inside the call.
    bool late = false;
    handle.add_done_callback([&] { late = true; });
    CHECK_FALSE(late);
    co_await cl::sleep(0ms);
    CHECK(late);
    CHECK(calls == 1);

    // Several callbacks run in the order they were added; failures and cancellations count as done.
    std::vector<int> order;
    auto failing = cl::create_task(throws_after_sleep("expected"));
    failing.add_done_callback([&] { order.push_back(1); });
    failing.add_done_callback([&](cl::task_ref) { order.push_back(2); });
    auto cancelled = cl::create_task(value_after(1h, 0));
    cancelled.add_done_callback([&](cl::task_ref t) { order.push_back(t.cancelled() ? 3 : -3); });
    cancelled.cancel();
    while (!failing.done() || !cancelled.done()) co_await cl::sleep(1ms);
    co_await cl::sleep(0ms);
    CHECK(order.size() == 3);
    CHECK(std::count(order.begin(), order.end(), 3) == 1);
    std::vector<int> failing_order;
    for (int x : order) {
      if (x != 3) failing_order.push_back(x);
    }
    CHECK(failing_order == std::vector<int>{1, 2});
    CHECK(failing.exception() != nullptr);  // retrieved: no report
  };
  cl::run(body());
}

TEST_CASE("task: cancelling() counts cancel requests and uncancel() takes one back", "[task]") {
  auto body = []() -> cl::task<void> {
    auto handle = cl::create_task(value_after(1h, 0));
    co_await cl::sleep(0ms);
    CHECK(handle.cancelling() == 0);
    CHECK(handle.uncancel() == 0);  // never below zero
    CHECK(handle.cancel());
    CHECK(handle.cancelling() == 1);
    CHECK(handle.uncancel() == 0);
    CHECK(handle.cancelling() == 0);
    // The sleep was already interrupted: the task still ends cancelled.
    bool cancelled = false;
    try {
      (void)co_await handle;
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    }
    CHECK(cancelled);
    CHECK(handle.cancelled());
  };
  cl::run(body());
}

// --- misuse ---

TEST_CASE("task: result() and exception() before the task is done throw invalid_state_error", "[task]") {
  auto body = []() -> cl::task<void> {
    auto handle = cl::create_task(value_after(5ms, 1));
    CHECK_THROWS_AS(handle.result(), cl::invalid_state_error);
    CHECK_THROWS_AS(handle.exception(), cl::invalid_state_error);
    co_await cl::sleep(0ms);
    CHECK_THROWS_AS(handle.result(), cl::invalid_state_error);
    (void)co_await handle;
    CHECK(handle.result() == 1);
  };
  cl::run(body());
}

TEST_CASE("task: an empty task_handle answers the queries and throws invalid_state_error for the rest", "[task]") {
  cl::task_handle<int> empty;
  CHECK_FALSE(empty);
  CHECK_FALSE(empty.done());
  CHECK_FALSE(empty.cancelled());
  CHECK_FALSE(empty.cancel());
  CHECK(empty.cancelling() == 0);
  CHECK(empty.uncancel() == 0);
  CHECK_THROWS_AS(empty.name(), cl::invalid_state_error);
  CHECK_THROWS_AS(empty.set_name("x"), cl::invalid_state_error);
  CHECK_THROWS_AS(empty.result(), cl::invalid_state_error);
  CHECK_THROWS_AS(empty.exception(), cl::invalid_state_error);
  auto body = [&]() -> cl::task<void> {
    CHECK_THROWS_AS(empty.add_done_callback([] {}), cl::invalid_state_error);
    co_return;
  };
  cl::run(body());
}

TEST_CASE("task: awaiting a task<T> twice, or a moved-from task<T>, throws invalid_state_error", "[task]") {
  auto body = []() -> cl::task<int> {
    int errors = 0;
    cl::task<int> once = immediate(3);
    int first = co_await once;
    CHECK(first == 3);
    try {
      (void)co_await once;
    } catch (const cl::invalid_state_error&) {
      ++errors;
    }
    cl::task<int> source = immediate(4);
    cl::task<int> target = std::move(source);
    CHECK_FALSE(source.valid());  // NOLINT(bugprone-use-after-move): testing the moved-from state
    try {
      (void)co_await source;
    } catch (const cl::invalid_state_error&) {
      ++errors;
    }
    int moved = co_await target;
    CHECK(moved == 4);
    // A task<T> already awaited cannot become a scheduled task either.
    CHECK_THROWS_AS(cl::create_task(std::move(once)), cl::invalid_state_error);
    co_return errors;
  };
  CHECK(cl::run(body()) == 2);
}

TEST_CASE("task: create_task and current_task without a running loop", "[task]") {
  CHECK_THROWS_AS(cl::create_task(immediate(1)), cl::invalid_state_error);
  CHECK_FALSE(cl::current_task());
  CHECK_THROWS_AS(cl::all_tasks(), cl::invalid_state_error);
}

// --- lifetimes ---

TEST_CASE("task: create_task(callable, args...) keeps lambda captures and arguments alive past a suspension",
          "[task]") {
  auto body = []() -> cl::task<void> {
    auto shared = std::make_shared<int>(41);
    std::weak_ptr<int> watch = shared;
    auto handle = cl::create_task(
        [shared](std::string label, const std::string& by_reference) -> cl::task<std::string> {
          co_await cl::sleep(5ms);
          // Only the capture in the task's frame still owns the int.
          co_return label + by_reference + std::to_string(*shared + 1) + "/" + std::to_string(shared.use_count());
        },
        std::string("answer="), std::string(""));
    shared.reset();  // drop the outside copy before the task first suspends
    CHECK_FALSE(watch.expired());
    std::string result = co_await handle;
    CHECK(result == "answer=42/1");
    CHECK(watch.expired() == false);  // the task's frame (with its capture) lives while a handle does
  };
  cl::run(body());
}

TEST_CASE("task: the callable given to create_task is destroyed once the task is done and released", "[task]") {
  auto watch_slot = std::make_shared<std::weak_ptr<int>>();
  auto body = [watch_slot]() -> cl::task<void> {
    auto shared = std::make_shared<int>(1);
    *watch_slot = shared;
    {
      auto handle = cl::create_task([shared]() -> cl::task<void> { co_await cl::sleep(1ms); });
      shared.reset();
      co_await handle;
      CHECK_FALSE(watch_slot->expired());
    }
    CHECK(watch_slot->expired());  // last handle gone, task done: frame and capture freed
  };
  cl::run(body());
  CHECK(watch_slot->expired());
}

// --- current_task and all_tasks ---

TEST_CASE("task: current_task() is the running task's handle, and empty in a plain callback", "[task]") {
  auto body = []() -> cl::task<void> {
    cl::task_ref seen_inside;
    auto worker = [&]() -> cl::task<void> {
      seen_inside = cl::current_task();
      co_await cl::sleep(0ms);
      CHECK(cl::current_task() == seen_inside);  // still the same after a suspension
    };
    auto handle = cl::create_task(worker);
    cl::task_ref main_task = cl::current_task();
    CHECK(main_task);
    co_await handle;
    CHECK(seen_inside == handle);
    CHECK_FALSE(seen_inside == main_task);
    CHECK(cl::current_task() == main_task);

    bool callback_ran = false;
    bool empty_in_callback = false;
    cl::get_running_loop().call_soon([&] {
      callback_ran = true;
      empty_in_callback = !cl::current_task();
    });
    co_await cl::sleep(0ms);
    CHECK(callback_ran);
    CHECK(empty_in_callback);
  };
  cl::run(body());
}

TEST_CASE("task: all_tasks() lists the pending tasks only", "[task]") {
  auto body = []() -> cl::task<void> {
    auto sleeper = cl::create_task(value_after(1h, 0), "sleeper");
    auto quick = cl::create_task(immediate(1), "quick");
    (void)co_await quick;
    CHECK(quick.done());
    std::vector<cl::task_ref> tasks = cl::all_tasks();
    CHECK(tasks.size() == 2);
    CHECK(std::count(tasks.begin(), tasks.end(), cl::current_task()) == 1);
    CHECK(std::count(tasks.begin(), tasks.end(), cl::task_ref(sleeper)) == 1);
    CHECK(std::count(tasks.begin(), tasks.end(), cl::task_ref(quick)) == 0);
    CHECK(cl::get_running_loop().pending_task_count() == 2);
    sleeper.cancel();
    co_await cl::sleep(0ms);
    CHECK(sleeper.done());
    tasks = cl::all_tasks();
    REQUIRE(tasks.size() == 1);
    CHECK(tasks[0] == cl::current_task());
  };
  cl::run(body());
}

// --- unretrieved exceptions ---

TEST_CASE("task: a task whose exception is never retrieved is reported on stderr when destroyed", "[task]") {
  auto body = []() -> cl::task<void> {
    // The report comes when the last reference goes: here, this handle, when
    // the main task ends; a handle dropped at once would report when the task ends.
    auto handle = cl::create_task(throws_after_sleep("nobody looked at me"), "forgotten");
    while (!handle.done()) co_await cl::sleep(1ms);
    (void)cl::create_task(throws_after_sleep("dropped handle"), "dropped");
    for (int i = 0; i < 5000 && cl::all_tasks().size() > 1; ++i) co_await cl::sleep(1ms);
  };
  std::string output;
  {
    stderr_capture capture;
    cl::run(body());
    output = capture.text();
  }
  INFO("stderr: " << output);
  CHECK_THAT(output, Catch::Matchers::ContainsSubstring("Task exception was never retrieved"));
  CHECK_THAT(output, Catch::Matchers::ContainsSubstring("nobody looked at me"));
  CHECK_THAT(output, Catch::Matchers::ContainsSubstring("forgotten"));
  CHECK_THAT(output, Catch::Matchers::ContainsSubstring("dropped handle"));
}

TEST_CASE("task: no report when the exception was retrieved, or when the task was cancelled", "[task]") {
  auto body = []() -> cl::task<void> {
    auto awaited = cl::create_task(throws_after_sleep("awaited"));
    try {
      (void)co_await awaited;
    } catch (const std::runtime_error&) {
    }
    auto via_result = cl::create_task(throws_after_sleep("via result"));
    auto via_exception = cl::create_task(throws_after_sleep("via exception"));
    auto cancelled = cl::create_task(value_after(1h, 0));
    cancelled.cancel();
    while (!via_result.done() || !via_exception.done() || !cancelled.done()) co_await cl::sleep(1ms);
    CHECK_THROWS_AS(via_result.result(), std::runtime_error);
    CHECK(via_exception.exception() != nullptr);
  };
  std::string output;
  {
    stderr_capture capture;
    cl::run(body());
    output = capture.text();
  }
  INFO("stderr: " << output);
  CHECK(output.find("never retrieved") == std::string::npos);
}

// --- misuse from the wrong thread, or after the loop closed ---

TEST_CASE("task: a task_handle used from a thread that does not run its loop throws invalid_state_error",
          "[task]") {
  // The loop runs on a background thread; the handle is used (not copied)
  // from this one. Without the check cancel() raced the loop (TSan) and was
  // delivered only when the loop next woke.
  cl::event_loop loop;
  cl::task_handle<void> handle;
  std::atomic<bool> started{false};
  std::atomic<bool> checked{false};
  std::thread runner([&] {
    auto body = [&]() -> cl::task<void> {
      handle = cl::create_task(cl::sleep(1h));
      co_await cl::sleep(0ms);
      started.store(true);
      for (int i = 0; i < 60'000 && !checked.load(); ++i) co_await cl::sleep(1ms);
      handle.cancel();
      try {
        co_await handle;
      } catch (const cl::cancelled_error&) {
      }
    };
    loop.run_until_complete(body());
  });
  for (int i = 0; i < 60'000 && !started.load(); ++i) std::this_thread::sleep_for(1ms);
  REQUIRE(started.load());
  std::string message;
  try {
    handle.cancel();
  } catch (const cl::invalid_state_error& error) {
    message = error.what();
  }
  CHECK(message.find("task_handle::cancel") != std::string::npos);
  CHECK(message.find("call_soon_threadsafe") != std::string::npos);
  CHECK_THROWS_AS(handle.uncancel(), cl::invalid_state_error);
  CHECK_THROWS_AS(handle.set_name("other"), cl::invalid_state_error);
  // A thread running a loop of its own is refused the same way.
  auto from_other_loop = [&]() -> cl::task<bool> {
    try {
      handle.cancel();
    } catch (const cl::invalid_state_error&) {
      co_return true;
    }
    co_return false;
  };
  CHECK(cl::run(from_other_loop()));
  checked.store(true);
  runner.join();
  CHECK(handle.cancelled());
  CHECK_FALSE(handle.cancel());  // done: no loop is touched, any thread may ask
  loop.close();
}

TEST_CASE("task: a task_handle whose loop closed without the task throws invalid_state_error instead of writing "
          "into the freed loop",
          "[task]") {
  // close() (without run()) gives up on a task that swallows cancellation;
  // the frame is left behind (reachable, not freed) and the handle refuses.
  auto stubborn = []() -> cl::task<void> {
    for (int i = 0; i < 100; ++i) {
      try {
        co_await cl::sleep(10s);
      } catch (const cl::cancelled_error&) {
      }
    }
  };
  cl::task_handle<void> handle;
  {
    cl::event_loop loop;
    auto start = [&]() -> cl::task<void> {
      handle = cl::create_task(stubborn());
      co_await cl::sleep(0ms);
    };
    loop.run_until_complete(start());
    stderr_capture capture;
    loop.close();
    CHECK(capture.text().find("was still pending when its loop closed") != std::string::npos);
  }
  std::string message;
  try {
    handle.cancel();
  } catch (const cl::invalid_state_error& error) {
    message = error.what();
  }
  CHECK(message.find("event loop is closed") != std::string::npos);
  CHECK_THROWS_AS(handle.set_name("late"), cl::invalid_state_error);
  CHECK_THROWS_AS(handle.uncancel(), cl::invalid_state_error);
  CHECK_FALSE(handle.done());
}
