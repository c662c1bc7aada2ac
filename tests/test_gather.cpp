// tests/test_gather.cpp - gather, gather_settled, wait, as_completed, shield [gather].
//
// Reference: asyncio 3.11-3.13, with DESIGN.md's difference for gather: when a
// child fails, the siblings are cancelled and awaited before the error
// propagates. Every behaviour is checked on its success, failure and
// cancellation paths; ordering is asserted, time only as generous bounds.
// Tasks wait for each other by polling a flag with sleep(0) (deterministic),
// never by guessing how long a step takes.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "task_helpers.hpp"

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <variant>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {

cl::task<void> void_after(cl::duration delay, bool& ran) {
  co_await cl::sleep(delay);
  ran = true;
}

cl::task<std::unique_ptr<int>> unique_after(cl::duration delay, int value) {
  co_await cl::sleep(delay);
  co_return std::make_unique<int>(value);
}

bool is_cancelled_error(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const cl::cancelled_error&) {
    return true;
  } catch (...) {
    return false;
  }
}

// A vector of handles, built outside the coroutine: GCC 12 rejects a braced
// list inside a co_await's full expression ("array used as initializer").
template <class Handle, class... More>
std::vector<Handle> handles(Handle first, More... more) {
  return std::vector<Handle>{std::move(first), std::move(more)...};
}

}  // namespace

// --- gather: values ---

TEST_CASE("gather: the tuple form returns each child's value in the order of the arguments", "[gather]") {
  std::tuple<int, int, int> values{};
  auto body = [&]() -> cl::task<void> {
    // Finish in the order 3, 2, 1; the tuple keeps the order of the arguments.
    values = co_await cl::gather(value_after(30ms, 1), value_after(15ms, 2), value_after(1ms, 3));
  };
  cl::run(body());
  CHECK(std::get<0>(values) == 1);
  CHECK(std::get<1>(values) == 2);
  CHECK(std::get<2>(values) == 3);
}

TEST_CASE("gather: children start in the order of the arguments, as asyncio schedules them", "[gather]") {
  // asyncio.gather wraps its arguments into tasks left to right, so their first
  // steps run in that order (and "Task-<n>" numbers follow it).
  std::vector<int> started;
  auto child = [&](int n) -> cl::task<int> {
    started.push_back(n);
    co_return n;
  };
  auto body = [&]() -> cl::task<void> {
    auto values = co_await cl::gather(child(1), child(2), child(3));
    CHECK(values == std::make_tuple(1, 2, 3));
    auto settled = co_await cl::gather_settled(child(4), child(5), child(6));
    CHECK(std::get<0>(settled).value() == 4);
  };
  cl::run(body());
  CHECK(started == std::vector<int>{1, 2, 3, 4, 5, 6});
}

TEST_CASE("gather: a void child yields std::monostate", "[gather]") {
  bool ran_first = false;
  bool ran_second = false;
  auto body = [&]() -> cl::task<void> {
    auto values = co_await cl::gather(void_after(2ms, ran_first), value_after(1ms, 9), void_after(1ms, ran_second));
    static_assert(std::is_same_v<decltype(values), std::tuple<std::monostate, int, std::monostate>>);
    CHECK(std::get<1>(values) == 9);

    std::vector<cl::task<void>> range;
    range.push_back(void_after(1ms, ran_second));
    auto from_range = co_await cl::gather(std::move(range));
    static_assert(std::is_same_v<decltype(from_range), std::vector<std::monostate>>);
    CHECK(from_range.size() == 1);
  };
  cl::run(body());
  CHECK(ran_first);
  CHECK(ran_second);
}

TEST_CASE("gather: task_handles and plain awaitables such as sleep are accepted as children", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(value_after(2ms, 5));
    auto values = co_await cl::gather(handle, cl::sleep(1ms), value_after(1ms, 7));
    static_assert(std::is_same_v<decltype(values), std::tuple<int, std::monostate, int>>);
    CHECK(std::get<0>(values) == 5);
    CHECK(std::get<2>(values) == 7);
    // The caller's handle is left intact: its value was copied, not taken.
    CHECK(handle.done());
    CHECK(handle.result() == 5);
    const int handle_value = co_await handle;
    CHECK(handle_value == 5);

    // A range of handles.
    std::vector<cl::task_handle<int>> range_of_handles{cl::create_task(value_after(2ms, 1)),
                                                       cl::create_task(value_after(1ms, 2))};
    auto from_handles = co_await cl::gather(range_of_handles);
    CHECK(from_handles == std::vector<int>{1, 2});
    CHECK(range_of_handles[0].result() == 1);
  };
  cl::run(body());
}

TEST_CASE("gather: move-only results are moved out of the children", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto [first, second] = co_await cl::gather(unique_after(2ms, 1), unique_after(1ms, 2));
    REQUIRE(first != nullptr);
    REQUIRE(second != nullptr);
    CHECK(*first == 1);
    CHECK(*second == 2);

    std::vector<cl::task<std::unique_ptr<int>>> range;
    for (int i = 0; i < 3; ++i) range.push_back(unique_after(1ms * (3 - i), i));
    std::vector<std::unique_ptr<int>> values = co_await cl::gather(std::move(range));
    REQUIRE(values.size() == 3);
    for (int i = 0; i < 3; ++i) {
      REQUIRE(values[static_cast<std::size_t>(i)] != nullptr);
      CHECK(*values[static_cast<std::size_t>(i)] == i);
    }
  };
  cl::run(body());
}

TEST_CASE("gather: the range form returns a vector in the range's order, not the completion order", "[gather]") {
  std::vector<int> values;
  auto body = [&]() -> cl::task<void> {
    std::vector<cl::task<int>> tasks;
    for (int i = 0; i < 5; ++i) tasks.push_back(value_after(1ms * (5 - i) * 3, i));
    values = co_await cl::gather(std::move(tasks));
  };
  cl::run(body());
  CHECK(values == std::vector<int>{0, 1, 2, 3, 4});
}

TEST_CASE("gather: an empty gather returns at once", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    std::tuple<> nothing = co_await cl::gather();
    (void)nothing;
    std::vector<int> none = co_await cl::gather(std::vector<cl::task<int>>{});
    CHECK(none.empty());
    std::tuple<> settled = co_await cl::gather_settled();
    (void)settled;
    auto settled_none = co_await cl::gather_settled(std::vector<cl::task<int>>{});
    CHECK(settled_none.empty());
    CHECK(cl::all_tasks().size() == 1);  // no child was made
  };
  cl::run(body());
}

// --- gather: failure ---

TEST_CASE("gather: a failing child cancels its siblings and they are finished before the error propagates",
          "[gather]") {
  probe slow;
  probe slower;
  std::string error;
  bool siblings_finished_when_caught = false;
  std::size_t timers_before = 0;
  std::size_t timers_after = 0;
  auto body = [&]() -> cl::task<void> {
    timers_before = timers_now();
    try {
      co_await cl::gather(guarded(slow, forever, 1), fail_after(5ms, "child failed"), guarded(slower, forever, 3));
    } catch (const std::runtime_error& e) {
      error = e.what();
      siblings_finished_when_caught = slow.cleaned_up && slower.cleaned_up;
    }
    timers_after = timers_now();
    CHECK(cl::all_tasks().size() == 1);  // every child is done
  };
  cl::run(body());
  CHECK(error == "child failed");
  CHECK(slow.cancelled);
  CHECK(slower.cancelled);
  CHECK(siblings_finished_when_caught);
  CHECK_FALSE(slow.finished);
  CHECK(timers_after == timers_before);
}

TEST_CASE("gather: a failing child cancels sibling task_handles too, which end cancelled", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto sibling = cl::create_task(value_after(forever, 1));
    auto failing = cl::create_task(fail_after(2ms, "boom"));
    bool caught = false;
    try {
      co_await cl::gather(sibling, failing);
    } catch (const std::runtime_error& e) {
      caught = std::string(e.what()) == "boom";
      CHECK(sibling.done());  // finished before the error reached us
    }
    CHECK(caught);
    CHECK(sibling.cancelled());
    CHECK(failing.done());
    CHECK_FALSE(failing.cancelled());
  };
  cl::run(body());
}

TEST_CASE("gather: when two children fail, the first to fail in completion order propagates", "[gather]") {
  // The later child fails during its own cancellation cleanup; the earlier
  // failure (second in the argument list) is the one the caller sees.
  auto late_failure = []() -> cl::task<int> {
    bool cancelled = false;
    try {
      co_await cl::sleep(forever);
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    }
    co_await cl::sleep(1ms);
    throw std::runtime_error(cancelled ? "late failure during cleanup" : "late failure");
  };
  std::string error;
  std::string late_error;
  auto body = [&]() -> cl::task<void> {
    auto late = cl::create_task(late_failure());
    try {
      co_await cl::gather(late, fail_after(3ms, "early failure"));
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
    REQUIRE(late.done());
    late_error = message_of(late.exception());
  };
  cl::run(body());
  CHECK(error == "early failure");
  CHECK(late_error == "late failure during cleanup");
}

TEST_CASE("gather: a child cancelled from outside makes the gather raise cancelled_error", "[gather]") {
  // asyncio: a cancelled child counts as raising CancelledError (the gather
  // itself is not cancelled). Here the siblings are cancelled and awaited too.
  bool caught_cancelled = false;
  bool caller_cancelled_after = true;
  probe sibling;
  auto body = [&]() -> cl::task<void> {
    auto victim = cl::create_task(value_after(forever, 1));
    auto canceller = [&]() -> cl::task<void> {
      co_await until([&] { return sibling.started; });
      victim.cancel();
    };
    auto cancel_task = cl::create_task(canceller());
    try {
      co_await cl::gather(victim, guarded(sibling, forever, 2));
    } catch (const cl::cancelled_error&) {
      caught_cancelled = true;
    }
    co_await cancel_task;
    caller_cancelled_after = cl::current_task().cancelling() != 0;
    co_await cl::sleep(0ms);  // the caller itself was not cancelled: this does not throw
  };
  cl::run(body());
  CHECK(caught_cancelled);
  CHECK(sibling.cleaned_up);
  CHECK_FALSE(caller_cancelled_after);
}

TEST_CASE("gather: children already done when gathered are taken at once, values and failures alike",
          "[gather]") {
  std::string error;
  bool sibling_cancelled = false;
  auto body = [&]() -> cl::task<void> {
    auto a = cl::create_task(value_after(0ms, 1));
    auto b = cl::create_task(value_after(0ms, 2));
    auto failed = cl::create_task(fail_after(0ms, "failed before the gather"));
    co_await cl::wait(handles(a, b, failed));
    auto values = co_await cl::gather(a, b);  // nothing to wait for
    CHECK(values == std::make_tuple(1, 2));

    auto pending = cl::create_task(value_after(forever, 3));
    try {
      co_await cl::gather(pending, failed);
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
    sibling_cancelled = pending.cancelled();
  };
  cl::run(body());
  CHECK(error == "failed before the gather");
  CHECK(sibling_cancelled);
}

// --- gather: cancellation ---

TEST_CASE("gather: cancelling the gather's task cancels every child, awaits them, and raises cancelled_error",
          "[gather]") {
  probe first;
  probe second;
  bool children_done_when_raised = false;
  bool ended_cancelled = false;
  auto gathering = [&]() -> cl::task<void> {
    try {
      co_await cl::gather(guarded(first, forever, 1), guarded(second, forever, 2));
    } catch (const cl::cancelled_error&) {
      children_done_when_raised = first.cleaned_up && second.cleaned_up;
      throw;
    }
  };
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(gathering());
    co_await until([&] { return first.started && second.started; });
    CHECK(handle.cancel());
    try {
      co_await handle;
    } catch (const cl::cancelled_error&) {
      ended_cancelled = true;
    }
    CHECK(handle.cancelled());
    CHECK(cl::all_tasks().size() == 1);
  };
  cl::run(body());
  CHECK(first.cancelled);
  CHECK(second.cancelled);
  CHECK(children_done_when_raised);
  CHECK(ended_cancelled);
}

TEST_CASE("gather: a cancel requested before the gather suspends cancels the children before they start",
          "[gather]") {
  bool child_body_ran = false;
  auto child = [&]() -> cl::task<int> {
    child_body_ran = true;
    co_return 1;
  };
  bool raised = false;
  auto body = [&]() -> cl::task<void> {
    cl::current_task().cancel();  // delivered at the next suspension point: the gather's
    auto handle = cl::create_task(child());
    try {
      co_await cl::gather(handle);
    } catch (const cl::cancelled_error&) {
      raised = true;
    }
    CHECK(handle.cancelled());
    cl::current_task().uncancel();
  };
  cl::run(body());
  CHECK(raised);
  CHECK_FALSE(child_body_ran);
}

TEST_CASE("gather: a child that swallows the cancellation still leaves the cancelled caller with cancelled_error",
          "[gather]") {
  bool entered = false;
  bool swallowed = false;
  auto stubborn = [&]() -> cl::task<int> {
    entered = true;
    try {
      co_await cl::sleep(forever);
    } catch (const cl::cancelled_error&) {
      swallowed = true;
    }
    co_return 42;
  };
  bool raised = false;
  auto body = [&]() -> cl::task<void> {
    auto gathering = [&]() -> cl::task<void> { co_await cl::gather(stubborn()); };
    auto handle = cl::create_task(gathering());
    co_await until([&] { return entered; });
    handle.cancel();
    try {
      co_await handle;
    } catch (const cl::cancelled_error&) {
      raised = true;
    }
  };
  cl::run(body());
  CHECK(swallowed);
  CHECK(raised);
}

TEST_CASE("gather: a second cancel arriving after the children finished, before the caller resumed, is merged "
          "into the one cancelled_error",
          "[gather]") {
  // asyncio delivers one CancelledError for both requests (the second finds
  // the gather already done and is consumed by the CancelledError thrown in);
  // the caller may catch it and go on awaiting.
  probe child_probe;
  int deliveries = 0;
  bool went_on = false;
  auto body = [&]() -> cl::task<void> {
    auto child = cl::create_task(guarded(child_probe, forever, 1));
    auto gathering = [&]() -> cl::task<void> {
      try {
        co_await cl::gather(child);
      } catch (const cl::cancelled_error&) {
        ++deliveries;
      }
      try {
        co_await cl::sleep(1ms);
        went_on = true;
      } catch (const cl::cancelled_error&) {
        ++deliveries;
      }
    };
    auto handle = cl::create_task(gathering());
    co_await until([&] { return child_probe.started; });
    handle.cancel();
    // The child ends (after its cleanup) and wakes the gathering task; this
    // task re-queues itself every iteration, so it runs first and cancels again.
    co_await until([&] { return child.done(); });
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelling() == 2);
  };
  cl::run(body());
  CHECK(deliveries == 1);
  CHECK(went_on);
}

// --- gather_settled ---

TEST_CASE("gather_settled: returns values and exceptions, never throws for a child, and fails no sibling",
          "[gather]") {
  bool void_ran = false;
  auto body = [&]() -> cl::task<void> {
    auto cancelled_child = cl::create_task(value_after(forever, 0));
    auto canceller = [&]() -> cl::task<void> {
      co_await cl::sleep(1ms);
      cancelled_child.cancel();
    };
    auto cancel_task = cl::create_task(canceller());
    auto [ok, failed, nothing, cancelled, slow] = co_await cl::gather_settled(
        value_after(1ms, 1), fail_after(1ms, "settled failure"), void_after(1ms, void_ran), cancelled_child,
        value_after(20ms, 5));
    co_await cancel_task;

    CHECK(ok.has_value());
    CHECK(ok.value() == 1);
    CHECK_FALSE(ok.error());

    CHECK_FALSE(failed.has_value());
    CHECK_FALSE(static_cast<bool>(failed));
    REQUIRE(failed.error() != nullptr);
    CHECK(message_of(failed.error()) == "settled failure");
    CHECK_THROWS_AS(failed.value(), std::runtime_error);

    CHECK(nothing.has_value());
    static_assert(std::is_same_v<std::remove_cvref_t<decltype(nothing.value())>, std::monostate>);

    CHECK_FALSE(cancelled.has_value());
    CHECK(is_cancelled_error(cancelled.error()));

    // The failure did not cancel the slow sibling (return_exceptions=True).
    CHECK(slow.has_value());
    CHECK(slow.value() == 5);
  };
  cl::run(body());
  CHECK(void_ran);
}

TEST_CASE("gather_settled: the range form returns outcomes in the range's order", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    std::vector<cl::task<int>> tasks;
    tasks.push_back(value_after(6ms, 0));
    tasks.push_back(fail_after(3ms, "one failed"));
    tasks.push_back(value_after(1ms, 2));
    auto outcomes = co_await cl::gather_settled(std::move(tasks));
    REQUIRE(outcomes.size() == 3);
    CHECK(outcomes[0].value() == 0);
    CHECK(message_of(outcomes[1].error()) == "one failed");
    CHECK(std::move(outcomes[2]).value() == 2);
  };
  cl::run(body());
}

TEST_CASE("gather_settled: cancelling its task cancels and awaits every child, then raises cancelled_error",
          "[gather]") {
  probe first;
  probe second;
  bool children_done_when_raised = false;
  auto settling = [&]() -> cl::task<void> {
    try {
      co_await cl::gather_settled(guarded(first, forever, 1), guarded(second, forever, 2));
    } catch (const cl::cancelled_error&) {
      children_done_when_raised = first.cleaned_up && second.cleaned_up;
      throw;
    }
  };
  bool raised = false;
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(settling());
    co_await until([&] { return first.started && second.started; });
    handle.cancel();
    try {
      co_await handle;
    } catch (const cl::cancelled_error&) {
      raised = true;
    }
  };
  cl::run(body());
  CHECK(raised);
  CHECK(children_done_when_raised);
}

// --- wait ---

TEST_CASE("wait: first_completed returns as soon as one task is done; the others stay pending and running",
          "[gather]") {
  auto body = [&]() -> cl::task<void> {
    const std::size_t timers_before = timers_now();
    auto fast = cl::create_task(value_after(1ms, 1));
    auto slow = cl::create_task(value_after(200ms, 2));
    auto result = co_await cl::wait(handles(slow, fast), cl::return_when::first_completed, 5s);
    REQUIRE(result.done.size() == 1);
    REQUIRE(result.pending.size() == 1);
    CHECK(result.done[0] == fast);
    CHECK(result.pending[0] == slow);
    CHECK_FALSE(slow.done());
    CHECK(timers_now() == timers_before + 1);  // slow's sleep only: wait's own 5 s timer is gone
    const int slow_value = co_await slow;  // not cancelled: it finishes normally
    CHECK(slow_value == 2);
  };
  cl::run(body());
}

TEST_CASE("wait: first_exception returns at the first failure; without one it waits for every task", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    {
      auto quick = cl::create_task(value_after(0ms, 1));
      auto failing = cl::create_task(fail_after(5ms, "first exception"));
      auto slow = cl::create_task(value_after(forever, 3));
      auto result = co_await cl::wait(handles(quick, failing, slow), cl::return_when::first_exception);
      REQUIRE(result.done.size() == 2);
      CHECK(result.done[0] == quick);
      CHECK(result.done[1] == failing);
      REQUIRE(result.pending.size() == 1);
      CHECK(result.pending[0] == slow);
      CHECK(message_of(failing.exception()) == "first exception");
      CHECK_FALSE(slow.cancelled());
      slow.cancel();
      co_await cl::wait(handles(slow));
      CHECK(slow.cancelled());
    }
    {
      // A cancelled task is not an exception here (asyncio checks not f.cancelled()).
      auto cancelled = cl::create_task(value_after(forever, 1));
      auto a = cl::create_task(value_after(2ms, 2));
      auto b = cl::create_task(value_after(6ms, 3));
      cancelled.cancel();
      auto result = co_await cl::wait(handles(cancelled, a, b), cl::return_when::first_exception);
      CHECK(result.done.size() == 3);
      CHECK(result.pending.empty());
      CHECK(b.result() == 3);
    }
  };
  cl::run(body());
}

TEST_CASE("wait: all_completed returns every task in done, in the order given, failures included", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto a = cl::create_task(value_after(8ms, 1));
    auto b = cl::create_task(fail_after(1ms, "b failed"));
    auto c = cl::create_task(value_after(4ms, 3));
    auto result = co_await cl::wait(handles(a, b, c));  // all_completed is the default
    REQUIRE(result.done.size() == 3);
    CHECK(result.pending.empty());
    CHECK(result.done[0] == a);
    CHECK(result.done[1] == b);
    CHECK(result.done[2] == c);
    CHECK(a.result() == 1);
    CHECK_THROWS_AS(b.result(), std::runtime_error);  // wait() never raises a task's error
  };
  cl::run(body());
}

TEST_CASE("wait: a timeout returns the split without cancelling the pending tasks", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto fast = cl::create_task(value_after(1ms, 1));
    auto slow = cl::create_task(value_after(forever, 2));
    const auto start = cl::clock::now();
    auto result = co_await cl::wait(handles(fast, slow), cl::return_when::all_completed, 20ms);
    const auto elapsed = cl::clock::now() - start;
    CHECK(elapsed >= 20ms);
    CHECK(elapsed < 2s);
    REQUIRE(result.done.size() == 1);
    CHECK(result.done[0] == fast);
    REQUIRE(result.pending.size() == 1);
    CHECK(result.pending[0] == slow);
    co_await cl::sleep(1ms);
    CHECK_FALSE(slow.done());  // still running: the timeout did not cancel it
    slow.cancel();
  };
  cl::run(body());
}

TEST_CASE("wait: an empty list of tasks throws std::invalid_argument", "[gather]") {
  bool threw = false;
  auto body = [&]() -> cl::task<void> {
    try {
      co_await cl::wait(std::vector<cl::task_handle<int>>{});
    } catch (const std::invalid_argument&) {
      threw = true;
    }
  };
  cl::run(body());
  CHECK(threw);
}

TEST_CASE("wait: cancelling a task blocked in wait() raises cancelled_error and leaves the awaited tasks running",
          "[gather]") {
  bool waiter_cancelled = false;
  auto body = [&]() -> cl::task<void> {
    auto a = cl::create_task(value_after(200ms, 1));
    auto b = cl::create_task(value_after(200ms, 2));
    bool waiting = false;
    auto waiter = [&]() -> cl::task<void> {
      waiting = true;
      try {
        co_await cl::wait(handles(a, b));
      } catch (const cl::cancelled_error&) {
        waiter_cancelled = true;
        throw;
      }
    };
    auto handle = cl::create_task(waiter());
    co_await until([&] { return waiting; });
    co_await cl::sleep(0ms);
    handle.cancel();
    co_await cl::wait(handles(handle));
    CHECK(handle.cancelled());
    CHECK_FALSE(a.done());
    CHECK_FALSE(b.done());
    const int a_value = co_await a;
    CHECK(a_value == 1);
    const int b_value = co_await b;
    CHECK(b_value == 2);
  };
  cl::run(body());
  CHECK(waiter_cancelled);
}

// --- as_completed ---

TEST_CASE("as_completed: yields the tasks in the order they finish", "[gather]") {
  std::vector<int> order;
  auto body = [&]() -> cl::task<void> {
    std::vector<cl::task_handle<int>> tasks{cl::create_task(value_after(30ms, 30)),
                                            cl::create_task(value_after(10ms, 10)),
                                            cl::create_task(fail_after(20ms, "twenty")),
                                            cl::create_task(value_after(0ms, 0))};
    cl::as_completed next_done(tasks);
    CHECK(next_done.size() == 4);
    while (!next_done.empty()) {
      cl::task_handle<int> handle = co_await next_done.next();
      CHECK(handle.done());
      try {
        order.push_back(co_await handle);
      } catch (const std::runtime_error&) {
        order.push_back(20);
      }
    }
  };
  cl::run(body());
  CHECK(order == std::vector<int>{0, 10, 20, 30});
}

TEST_CASE("as_completed: next() past the deadline throws timeout_error and does not cancel the tasks", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto fast = cl::create_task(value_after(1ms, 1));
    auto slow = cl::create_task(value_after(forever, 2));
    cl::as_completed next_done(handles(fast, slow), 20ms);
    auto first = co_await next_done.next();
    CHECK(first == fast);
    bool timed_out = false;
    const auto start = cl::clock::now();
    try {
      (void)co_await next_done.next();
    } catch (const cl::timeout_error&) {
      timed_out = true;
    }
    CHECK(timed_out);
    CHECK(cl::clock::now() - start < 2s);
    co_await cl::sleep(1ms);
    CHECK_FALSE(slow.done());  // still running: the deadline did not cancel it
    slow.cancel();
  };
  cl::run(body());
}

TEST_CASE("as_completed: once the deadline passed, next() keeps throwing timeout_error, as asyncio does",
          "[gather]") {
  // asyncio.as_completed's timeout drops every task not yet done: each later
  // next() raises TimeoutError (one per task), even for a task that finishes
  // afterwards.
  std::vector<std::string> results;
  auto body = [&]() -> cl::task<void> {
    auto first = cl::create_task(value_after(40ms, 1));
    auto second = cl::create_task(value_after(40ms, 2));
    cl::as_completed next_done(handles(first, second), 5ms);
    for (int round = 0; round < 2; ++round) {
      try {
        auto handle = co_await next_done.next();
        results.push_back("task " + std::to_string(handle.result()));
      } catch (const cl::timeout_error&) {
        results.push_back("timeout");
      }
      // Both tasks finish (they are not cancelled) before the second next().
      co_await cl::wait(handles(first, second));
    }
  };
  cl::run(body());
  CHECK(results == std::vector<std::string>{"timeout", "timeout"});
}

TEST_CASE("as_completed: a task done before the deadline is still handed out after it; each other one times out "
          "once",
          "[gather]") {
  // asyncio queues the finished tasks ahead of the timeout's sentinels: with
  // the deadline past, as_completed([a, b]) yields a, then one TimeoutError,
  // and the iteration ends (checked against CPython 3.11).
  std::vector<std::string> results;
  bool slow_cancelled = true;
  auto body = [&]() -> cl::task<void> {
    auto quick = cl::create_task(value_after(0ms, 1));
    auto slow = cl::create_task(value_after(forever, 2));
    cl::as_completed next_done(handles(quick, slow), 200ms);
    co_await cl::wait(handles(quick));  // done well before the deadline
    co_await cl::sleep(300ms);          // ask only once the deadline has passed
    for (int round = 0; round < 4 && !next_done.empty(); ++round) {
      try {
        auto handle = co_await next_done.next();
        results.push_back("task " + std::to_string(handle.result()));
      } catch (const cl::timeout_error&) {
        results.push_back("timeout");
      }
    }
    slow_cancelled = slow.cancelled();
    slow.cancel();
  };
  cl::run(body());
  CHECK(results == std::vector<std::string>{"task 1", "timeout"});
  CHECK_FALSE(slow_cancelled);
}


TEST_CASE("as_completed: next() after every task was handed out throws invalid_state_error", "[gather]") {
  bool threw = false;
  auto body = [&]() -> cl::task<void> {
    cl::as_completed next_done(handles(cl::create_task(value_after(1ms, 1))));
    auto only = co_await next_done.next();
    CHECK(only.result() == 1);
    CHECK(next_done.empty());
    try {
      (void)co_await next_done.next();
    } catch (const cl::invalid_state_error&) {
      threw = true;
    }
  };
  cl::run(body());
  CHECK(threw);
}

TEST_CASE("as_completed: a second task awaiting next() while one waits gets invalid_state_error; the first is "
          "still served",
          "[gather]") {
  bool second_refused = false;
  int first_got = 0;
  auto body = [&]() -> cl::task<void> {
    auto slow = cl::create_task(value_after(50ms, 7));
    cl::as_completed next_done(handles(slow));
    auto first = cl::create_task([&]() -> cl::task<void> {
      cl::task_handle<int> handle = co_await next_done.next();
      first_got = co_await handle;
    });
    auto second = cl::create_task([&]() -> cl::task<void> {
      co_await cl::sleep(0ms);  // the first waits now
      try {
        (void)co_await next_done.next();
      } catch (const cl::invalid_state_error&) {
        second_refused = true;
      }
    });
    co_await cl::gather(std::move(first), std::move(second));
  };
  cl::run(body());
  CHECK(second_refused);
  CHECK(first_got == 7);
}

TEST_CASE("as_completed: cancelling the task waiting in next() raises cancelled_error; the tasks run on",
          "[gather]") {
  bool raised = false;
  auto body = [&]() -> cl::task<void> {
    auto slow = cl::create_task(value_after(200ms, 7));
    bool waiting = false;
    auto consumer = [&]() -> cl::task<void> {
      cl::as_completed next_done(handles(slow));
      waiting = true;
      try {
        (void)co_await next_done.next();
      } catch (const cl::cancelled_error&) {
        raised = true;
        throw;
      }
    };
    auto handle = cl::create_task(consumer());
    co_await until([&] { return waiting; });
    co_await cl::sleep(0ms);
    handle.cancel();
    co_await cl::wait(handles(handle));
    CHECK(handle.cancelled());
    CHECK_FALSE(slow.done());
    const int slow_value = co_await slow;
    CHECK(slow_value == 7);
  };
  cl::run(body());
  CHECK(raised);
}

// --- shield ---

TEST_CASE("shield: a cancelled caller gets cancelled_error at once while the inner work runs on and finishes",
          "[gather]") {
  probe inner;
  bool caller_raised = false;
  bool inner_finished_when_raised = true;
  auto caller = [&]() -> cl::task<int> {
    try {
      co_return co_await cl::shield(guarded(inner, 200ms, 11));
    } catch (const cl::cancelled_error&) {
      caller_raised = true;
      inner_finished_when_raised = inner.finished;
      throw;
    }
  };
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(caller());
    co_await until([&] { return inner.started; });
    handle.cancel();
    co_await cl::wait(handles(handle));
    CHECK(handle.cancelled());
    CHECK_FALSE(inner.finished);  // still running after the caller left
    co_await until([&] { return inner.finished; });
  };
  cl::run(body());
  CHECK(caller_raised);
  CHECK_FALSE(inner_finished_when_raised);
  CHECK_FALSE(inner.cancelled);
  CHECK(inner.finished);
}

TEST_CASE("shield: a shielded task_handle survives the caller's cancel and its value stays readable", "[gather]") {
  auto body = [&]() -> cl::task<void> {
    auto inner = cl::create_task(value_after(200ms, 3));
    auto caller = cl::create_task(cl::shield(inner));
    co_await cl::sleep(2ms);
    caller.cancel();
    co_await cl::wait(handles(caller));
    CHECK(caller.cancelled());
    CHECK_FALSE(inner.done());
    const int inner_value = co_await inner;
    CHECK(inner_value == 3);
  };
  cl::run(body());
}

TEST_CASE("shield: a cancel of the inner task itself reaches the shield's caller as cancelled_error", "[gather]") {
  bool raised = false;
  auto body = [&]() -> cl::task<void> {
    auto inner = cl::create_task(value_after(forever, 1));
    auto caller = [&]() -> cl::task<void> {
      try {
        (void)co_await cl::shield(inner);
      } catch (const cl::cancelled_error&) {
        raised = true;
        throw;
      }
    };
    auto handle = cl::create_task(caller());
    co_await cl::sleep(0ms);
    inner.cancel();
    co_await cl::wait(handles(handle));
    CHECK(inner.cancelled());
    CHECK(handle.cancelled());
  };
  cl::run(body());
  CHECK(raised);
}

TEST_CASE("shield: without a cancel it returns the inner value and propagates the inner error", "[gather]") {
  std::string error;
  bool ran = false;
  auto body = [&]() -> cl::task<void> {
    const int shielded_value = co_await cl::shield(value_after(1ms, 8));
    CHECK(shielded_value == 8);
    co_await cl::shield(void_after(1ms, ran));
    try {
      (void)co_await cl::shield(fail_after(1ms, "shielded failure"));
    } catch (const std::runtime_error& e) {
      error = e.what();
    }
  };
  cl::run(body());
  CHECK(ran);
  CHECK(error == "shielded failure");
}
