// tests/test_timeout.cpp - timeout, timeout_at, wait_for, timeout_scope [timeout].
//
// Reference: asyncio.timeout / timeout_at / wait_for / Timeout (3.11-3.13). On
// expiry the inner work is cancelled and awaited (its cleanup runs) and the
// caller gets timeout_error; an outer cancellation is never turned into a
// timeout: requests are counted (cancelling()/uncancel()), and the "same loop
// iteration" races below are built deterministically from timers with equal
// deadlines and from tasks that observe the scope's state.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "task_helpers.hpp"

#include <chrono>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {

// How an awaited piece of work ended, as one word.
enum class ending { value, timeout, cancelled, other_error };

template <class Awaitable>
cl::task<ending> ending_of(Awaitable awaitable) {
  ending result = ending::value;
  try {
    co_await std::move(awaitable);
  } catch (const cl::timeout_error&) {
    result = ending::timeout;
  } catch (const cl::cancelled_error&) {
    result = ending::cancelled;
  } catch (...) {
    result = ending::other_error;
  }
  co_return result;
}

const char* name_of(ending e) {
  switch (e) {
    case ending::value:
      return "value";
    case ending::timeout:
      return "timeout_error";
    case ending::cancelled:
      return "cancelled_error";
    case ending::other_error:
      return "another error";
  }
  return "?";
}

}  // namespace

// --- success and expiry ---

TEST_CASE("timeout: work that finishes in time returns its value and leaves no timer armed", "[timeout]") {
  int value = 0;
  bool void_ran = false;
  std::size_t timers_before = 99;
  std::size_t timers_after = 0;
  auto body = [&]() -> cl::task<void> {
    timers_before = timers_now();
    value = co_await cl::timeout(5s, value_after(2ms, 7));
    auto void_work = [&]() -> cl::task<void> {
      co_await cl::sleep(1ms);
      void_ran = true;
    };
    co_await cl::timeout(5s, void_work());
    timers_after = timers_now();
  };
  cl::run(body());
  CHECK(value == 7);
  CHECK(void_ran);
  CHECK(timers_before == 0);
  CHECK(timers_after == 0);
}

TEST_CASE("timeout: expiry cancels the inner work, waits for its cleanup, and raises timeout_error", "[timeout]") {
  probe inner;
  bool timed_out = false;
  bool cleanup_done_when_raised = false;
  std::size_t timers_after = 99;
  cl::duration elapsed{};
  auto body = [&]() -> cl::task<void> {
    const auto start = cl::clock::now();
    try {
      (void)co_await cl::timeout(20ms, guarded(inner, forever, 1));
    } catch (const cl::timeout_error& e) {
      timed_out = true;
      cleanup_done_when_raised = inner.cleaned_up;
      CHECK(std::string(e.what()).find("deadline") != std::string::npos);
    }
    elapsed = cl::clock::now() - start;
    timers_after = timers_now();
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(timed_out);
  CHECK(inner.cancelled);
  CHECK(cleanup_done_when_raised);
  CHECK_FALSE(inner.finished);
  CHECK(timers_after == 0);
  CHECK(elapsed >= 20ms);
  CHECK(elapsed < 2s);
}

TEST_CASE("timeout: timeout_error is a std::exception, cancelled_error is not", "[timeout]") {
  // catch (const std::exception&) sees a timeout but never swallows a cancellation.
  std::string caught;
  auto body = [&]() -> cl::task<void> {
    try {
      (void)co_await cl::timeout(1ms, value_after(forever, 1));
    } catch (const std::exception& e) {
      caught = e.what();
    }
  };
  cl::run(body());
  CHECK_FALSE(caught.empty());
}

TEST_CASE("timeout_at: a deadline on the loop's clock, in time and expired", "[timeout]") {
  int value = 0;
  ending expired = ending::value;
  probe inner;
  auto body = [&]() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    value = co_await cl::timeout_at(loop.time() + 5s, value_after(1ms, 3));
    expired = co_await ending_of(cl::timeout_at(loop.time() + 10ms, guarded(inner, forever, 0)));
    CHECK(timers_now() == 0);
    // A deadline already in the past still lets work that never suspends finish...
    auto immediate = []() -> cl::task<int> { co_return 5; };
    const int immediate_value = co_await cl::timeout_at(loop.time() - 1s, immediate());
    CHECK(immediate_value == 5);
    // ...and cancels work that does, at its first suspension.
    const ending past = co_await ending_of(cl::timeout_at(loop.time() - 1s, value_after(forever, 1)));
    CHECK(past == ending::timeout);
  };
  cl::run(body());
  CHECK(value == 3);
  CHECK(expired == ending::timeout);
  CHECK(inner.cleaned_up);
}

TEST_CASE("wait_for: returns the value in time and raises timeout_error on expiry", "[timeout]") {
  int value = 0;
  ending expired = ending::value;
  probe inner;
  auto body = [&]() -> cl::task<void> {
    value = co_await cl::wait_for(value_after(1ms, 4), 5s);
    expired = co_await ending_of(cl::wait_for(guarded(inner, forever, 0), 10ms));
    CHECK(timers_now() == 0);
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(value == 4);
  CHECK(expired == ending::timeout);
  CHECK(inner.cleaned_up);
}

TEST_CASE("timeout: a task_handle under a timeout is cancelled on expiry; sleep works as the awaitable", "[timeout]") {
  ending on_handle = ending::value;
  ending on_sleep = ending::value;
  bool handle_cancelled = false;
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(value_after(forever, 1));
    on_handle = co_await ending_of(cl::timeout(10ms, handle));
    handle_cancelled = handle.cancelled();
    on_sleep = co_await ending_of(cl::timeout(10ms, cl::sleep(forever)));
    co_await cl::timeout(5s, cl::sleep(1ms));  // and in time: returns normally
  };
  cl::run(body());
  CHECK(on_handle == ending::timeout);
  CHECK(handle_cancelled);
  CHECK(on_sleep == ending::timeout);
}

TEST_CASE("timeout: an inner error propagates unchanged, before or after the deadline", "[timeout]") {
  std::string before_deadline;
  std::string during_cleanup;
  auto failing = []() -> cl::task<int> {
    co_await cl::sleep(1ms);
    throw std::runtime_error("inner failure");
  };
  // Fails while handling the timeout's cancellation: that error, not a timeout.
  auto failing_cleanup = []() -> cl::task<int> {
    bool cancelled = false;
    try {
      co_await cl::sleep(forever);
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    }
    co_await cl::sleep(0ms);
    throw std::logic_error(cancelled ? "cleanup failure" : "not cancelled");
  };
  auto body = [&]() -> cl::task<void> {
    try {
      (void)co_await cl::timeout(5s, failing());
    } catch (const std::runtime_error& e) {
      before_deadline = e.what();
    }
    CHECK(timers_now() == 0);
    try {
      (void)co_await cl::timeout(5ms, failing_cleanup());
    } catch (const cl::timeout_error&) {
      during_cleanup = "timeout_error";
    } catch (const std::logic_error& e) {
      during_cleanup = e.what();
    }
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(before_deadline == "inner failure");
  CHECK(during_cleanup == "cleanup failure");
}

TEST_CASE("timeout: inner work that swallows the cancellation returns its value", "[timeout]") {
  int value = 0;
  bool swallowed = false;
  auto stubborn = [&]() -> cl::task<int> {
    try {
      co_await cl::sleep(forever);
    } catch (const cl::cancelled_error&) {
      swallowed = true;
    }
    co_return 42;
  };
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope scope(10ms);
    value = co_await scope.run(stubborn());
    CHECK(scope.expired());
    CHECK(cancelling_now() == 0);
    co_await cl::sleep(1ms);  // no cancellation is left over
  };
  cl::run(body());
  CHECK(swallowed);
  CHECK(value == 42);
}

// --- outer cancellation racing the deadline ---

TEST_CASE("timeout: an outer cancel before the deadline is cancelled_error and disarms the timer", "[timeout]") {
  probe inner;
  ending result = ending::value;
  std::size_t timers_after = 99;
  auto body = [&]() -> cl::task<void> {
    auto worker = [&]() -> cl::task<void> {
      result = co_await ending_of(cl::timeout(forever, guarded(inner, forever, 0)));
      timers_after = timers_now();
      if (result == ending::cancelled) throw cl::cancelled_error{};
    };
    auto handle = cl::create_task(worker());
    co_await until([&] { return inner.started; });
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelled());
  };
  cl::run(body());
  INFO("the timeout ended with " << name_of(result));
  CHECK(result == ending::cancelled);
  CHECK(inner.cleaned_up);
  CHECK(timers_after == 0);
}

TEST_CASE("timeout: an outer cancel firing just before the deadline in the same iteration stays cancelled_error",
          "[timeout]") {
  // Both timers have the same deadline; the outer cancel's was armed first, so
  // it runs first in the iteration where both fire.
  ending result = ending::value;
  int cancelling_after = -1;
  auto body = [&]() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const cl::time_point deadline = loop.time() + 300ms;
    cl::task_handle<void> handle;
    auto outer_cancel = loop.call_at(deadline, [&] { handle.cancel(); });
    auto worker = [&]() -> cl::task<void> {
      result = co_await ending_of(cl::timeout_at(deadline, cl::sleep(forever)));
      cancelling_after = cancelling_now();
    };
    handle = cl::create_task(worker());
    co_await finished(handle);
  };
  cl::run(body());
  INFO("the timeout ended with " << name_of(result));
  CHECK(result == ending::cancelled);
  CHECK(cancelling_after == 1);  // the outer request stands; the timeout's was taken back
}

TEST_CASE("timeout: an outer cancel arriving after the deadline fired, before the task resumed, stays "
          "cancelled_error",
          "[timeout]") {
  // The canceller polls with sleep(0), so in the iteration where the deadline
  // fires it runs before the timed task resumes: it sees expired() and cancels.
  ending result = ending::value;
  bool cancelled_while_expiring = false;
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope* scope_seen = nullptr;
    bool worker_done = false;
    auto worker = [&]() -> cl::task<void> {
      cl::timeout_scope scope(20ms);
      scope_seen = &scope;
      result = co_await ending_of(scope.run(cl::sleep(forever)));
      scope_seen = nullptr;
      worker_done = true;
    };
    auto handle = cl::create_task(worker());
    while (!worker_done && (scope_seen == nullptr || !scope_seen->expired())) co_await cl::sleep(0ms);
    if (!worker_done) {
      cancelled_while_expiring = true;
      handle.cancel();
    }
    co_await finished(handle);
  };
  cl::run(body());
  REQUIRE(cancelled_while_expiring);
  INFO("the timeout ended with " << name_of(result));
  CHECK(result == ending::cancelled);
}

TEST_CASE("timeout: an outer cancel timed for the same instant as the deadline, armed after it, stays "
          "cancelled_error",
          "[timeout]") {
  // asyncio: both TimerHandles run in the same iteration before the task
  // resumes, so the task sees cancelling() == 2 and the timeout re-raises the
  // CancelledError, whichever handle ran first.
  ending result = ending::value;
  auto body = [&]() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const cl::time_point deadline = loop.time() + 300ms;
    bool entered = false;
    auto worker = [&]() -> cl::task<void> {
      entered = true;
      result = co_await ending_of(cl::timeout_at(deadline, cl::sleep(forever)));
    };
    auto handle = cl::create_task(worker());
    co_await until([&] { return entered; });  // the timeout's timer is armed now
    auto outer_cancel = loop.call_at(deadline, [&] { handle.cancel(); });
    co_await finished(handle);
  };
  cl::run(body());
  INFO("the timeout ended with " << name_of(result));
  CHECK(result == ending::cancelled);
}

TEST_CASE("timeout: after an outer cancel raced the deadline, the task receives exactly one cancelled_error",
          "[timeout]") {
  // asyncio delivers one CancelledError for the two requests (the outer one
  // and the timeout's); a task that catches it may go on awaiting.
  ending first = ending::value;
  ending second = ending::value;
  auto body = [&]() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const cl::time_point deadline = loop.time() + 300ms;
    cl::task_handle<void> handle;
    auto outer_cancel = loop.call_at(deadline, [&] { handle.cancel(); });
    auto worker = [&]() -> cl::task<void> {
      first = co_await ending_of(cl::timeout_at(deadline, cl::sleep(forever)));
      second = co_await ending_of(cl::sleep(1ms));
    };
    handle = cl::create_task(worker());
    co_await finished(handle);
  };
  cl::run(body());
  INFO("first: " << name_of(first) << ", second: " << name_of(second));
  CHECK(first == ending::cancelled);
  CHECK(second == ending::value);
}

// --- nesting ---

TEST_CASE("timeout: nested, the inner expiry raises timeout_error inside and the outer continues", "[timeout]") {
  ending inner_result = ending::value;
  int value = 0;
  auto body = [&]() -> cl::task<void> {
    auto work = [&]() -> cl::task<int> {
      inner_result = co_await ending_of(cl::timeout(10ms, cl::sleep(forever)));
      co_await cl::sleep(1ms);  // the outer scope is still active, uncancelled
      co_return 9;
    };
    value = co_await cl::timeout(5s, work());
    CHECK(cancelling_now() == 0);
    CHECK(timers_now() == 0);
  };
  cl::run(body());
  CHECK(inner_result == ending::timeout);
  CHECK(value == 9);
}

TEST_CASE("timeout: nested, the outer expiry while the inner is active raises timeout_error from the outer only",
          "[timeout]") {
  ending inner_result = ending::value;
  ending outer_result = ending::value;
  auto body = [&]() -> cl::task<void> {
    auto work = [&]() -> cl::task<void> {
      inner_result = co_await ending_of(cl::timeout(5s, cl::sleep(forever)));
      if (inner_result == ending::cancelled) throw cl::cancelled_error{};
    };
    outer_result = co_await ending_of(cl::timeout(10ms, work()));
    CHECK(cancelling_now() == 0);
    CHECK(timers_now() == 0);
  };
  cl::run(body());
  CHECK(inner_result == ending::cancelled);  // the inner scope did not expire: not its timeout
  CHECK(outer_result == ending::timeout);
}

TEST_CASE("timeout: nested deadlines at the same instant: the outer one reports the expiry", "[timeout]") {
  ending inner_result = ending::value;
  ending outer_result = ending::value;
  auto body = [&]() -> cl::task<void> {
    const cl::time_point deadline = cl::get_running_loop().time() + 10ms;
    auto work = [&]() -> cl::task<void> {
      inner_result = co_await ending_of(cl::timeout_at(deadline, cl::sleep(forever)));
      if (inner_result == ending::cancelled) throw cl::cancelled_error{};
    };
    outer_result = co_await ending_of(cl::timeout_at(deadline, work()));
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(inner_result == ending::cancelled);
  CHECK(outer_result == ending::timeout);
}

// --- timeout_scope: reading and moving the deadline ---

TEST_CASE("timeout_scope: when() reads the deadline and reschedule() extends it", "[timeout]") {
  int value = 0;
  bool expired = true;
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope scope(20ms);
    REQUIRE(scope.when().has_value());
    const cl::time_point first_deadline = *scope.when();
    auto work = [&]() -> cl::task<int> {
      scope.reschedule(*scope.when() + 5s);  // runs inline right after the scope is entered
      co_await cl::sleep(40ms);              // past the first deadline
      co_return 1;
    };
    value = co_await scope.run(work());
    REQUIRE(scope.when().has_value());
    CHECK(*scope.when() == first_deadline + 5s);
    expired = scope.expired();
    CHECK(timers_now() == 0);
  };
  cl::run(body());
  CHECK(value == 1);
  CHECK_FALSE(expired);
}

TEST_CASE("timeout_scope: reschedule() can shorten the deadline", "[timeout]") {
  ending result = ending::value;
  cl::duration elapsed{};
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope scope(forever);
    auto work = [&]() -> cl::task<void> {
      scope.reschedule(10ms);  // a duration from now
      co_await cl::sleep(forever);
    };
    const auto start = cl::clock::now();
    result = co_await ending_of(scope.run(work()));
    elapsed = cl::clock::now() - start;
    CHECK(scope.expired());
  };
  cl::run(body());
  CHECK(result == ending::timeout);
  CHECK(elapsed >= 10ms);
  CHECK(elapsed < 4s);
}

TEST_CASE("timeout_scope: a reschedule in the iteration where the deadline passes, before the expiry acted, still "
          "moves it",
          "[timeout]") {
  // asyncio: reschedule() cancels the timeout's handle even when it is already
  // due in the ready queue, so the new deadline wins. The poller re-queues
  // itself every iteration, so it runs ahead of whatever the deadline queued.
  int value = 0;
  bool expired = true;
  bool moved = false;
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope scope(20ms);
    const cl::time_point first_deadline = *scope.when();
    bool work_done = false;
    auto poller = [&]() -> cl::task<void> {
      while (!work_done && cl::clock::now() < first_deadline) co_await cl::sleep(0ms);
      if (!work_done && !scope.expired()) {
        scope.reschedule(5s);
        moved = true;
      }
    };
    auto poll_task = cl::create_task(poller());
    value = co_await scope.run(value_after(60ms, 6));
    work_done = true;
    expired = scope.expired();
    co_await poll_task;
    CHECK(timers_now() == 0);
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  REQUIRE(moved);
  CHECK(value == 6);
  CHECK_FALSE(expired);
}

TEST_CASE("timeout_scope: reschedule(std::nullopt) removes the deadline; a scope without one never expires",
          "[timeout]") {
  int value = 0;
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope scope(10ms);
    auto work = [&]() -> cl::task<int> {
      scope.reschedule(std::nullopt);
      CHECK(timers_now() == 0);  // the timer left with the deadline
      co_await cl::sleep(30ms);
      co_return 2;
    };
    value = co_await scope.run(work());
    CHECK_FALSE(scope.when().has_value());
    CHECK_FALSE(scope.expired());

    cl::timeout_scope unbounded(std::nullopt);
    const int later = co_await unbounded.run(value_after(15ms, 3));
    CHECK(later == 3);
    CHECK_FALSE(unbounded.expired());

    // A scope made without a deadline can be given one while it runs.
    cl::timeout_scope given_later(std::nullopt);
    auto bounded_later = [&]() -> cl::task<void> {
      given_later.reschedule(5ms);
      co_await cl::sleep(forever);
    };
    const ending ended = co_await ending_of(given_later.run(bounded_later()));
    CHECK(ended == ending::timeout);
  };
  cl::run(body());
  CHECK(value == 2);
}

TEST_CASE("timeout_scope: reschedule after expiry throws invalid_state_error, and expired() says so",
          "[timeout]") {
  bool threw_while_expiring = false;
  bool threw_after_expiry = false;
  bool threw_after_finish = false;
  bool expired = false;
  auto body = [&]() -> cl::task<void> {
    cl::timeout_scope scope(5ms);
    auto work = [&]() -> cl::task<void> {
      bool cancelled = false;
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
        cancelled = true;
      }
      CHECK(scope.expired());
      try {
        scope.reschedule(5s);  // asyncio: "Cannot change state of expiring Timeout"
      } catch (const cl::invalid_state_error&) {
        threw_while_expiring = true;
      }
      if (cancelled) throw cl::cancelled_error{};
    };
    const ending ended = co_await ending_of(scope.run(work()));
    CHECK(ended == ending::timeout);
    expired = scope.expired();
    try {
      scope.reschedule(5s);
    } catch (const cl::invalid_state_error&) {
      threw_after_expiry = true;
    }

    cl::timeout_scope finished(5s);
    (void)co_await finished.run(value_after(1ms, 1));
    CHECK_FALSE(finished.expired());
    try {
      finished.reschedule(std::nullopt);
    } catch (const cl::invalid_state_error&) {
      threw_after_finish = true;
    }
    CHECK(timers_now() == 0);
  };
  cl::run(body());
  CHECK(threw_while_expiring);
  CHECK(threw_after_expiry);
  CHECK(expired);
  CHECK(threw_after_finish);
}

// --- the cancel request count ---

TEST_CASE("timeout: cancelling() is back to its entry value after each timeout", "[timeout]") {
  std::vector<int> counts;
  std::vector<ending> endings;
  auto body = [&]() -> cl::task<void> {
    counts.push_back(cancelling_now());
    (void)co_await cl::timeout(5s, value_after(1ms, 1));
    counts.push_back(cancelling_now());
    endings.push_back(co_await ending_of(cl::timeout(5ms, cl::sleep(forever))));
    counts.push_back(cancelling_now());

    // Swallow one real cancellation without uncancel(): the count stays at 1,
    // and a timeout entered now still reports its own expiry (asyncio compares
    // with the count at entry).
    cl::task_ref self = cl::current_task();
    auto canceller = [&]() -> cl::task<void> {
      co_await cl::sleep(1ms);
      self.cancel();
    };
    auto cancel_task = cl::create_task(canceller());
    endings.push_back(co_await ending_of(cl::sleep(forever)));
    counts.push_back(cancelling_now());
    endings.push_back(co_await ending_of(cl::timeout(5ms, cl::sleep(forever))));
    counts.push_back(cancelling_now());
    (void)co_await cl::timeout(5s, value_after(1ms, 1));
    counts.push_back(cancelling_now());
    co_await cancel_task;
    self.uncancel();
  };
  cl::run(body());
  CHECK(counts == std::vector<int>{0, 0, 0, 1, 1, 1});
  REQUIRE(endings.size() == 3);
  CHECK(endings[0] == ending::timeout);
  CHECK(endings[1] == ending::cancelled);
  CHECK(endings[2] == ending::timeout);
}

TEST_CASE("timeout: a timeout around a gather cancels every child, awaits their cleanup, and raises timeout_error",
          "[timeout]") {
  probe first;
  probe second;
  ending result = ending::value;
  ending scoped_result = ending::value;
  bool cleanup_done_when_raised = false;
  auto body = [&]() -> cl::task<void> {
    auto a = cl::create_task(value_after(forever, 1));
    auto b = cl::create_task(value_after(forever, 2));
    result = co_await ending_of(cl::timeout(10ms, cl::gather(a, b)));
    CHECK(a.cancelled());
    CHECK(b.cancelled());

    // The deadline is set once both children run, so their cleanup is sure to
    // be exercised however slow the machine (a child cancelled before its
    // first step never runs its body).
    cl::timeout_scope scope(std::nullopt);
    auto set_deadline = cl::create_task(expire_when(scope, [&] { return first.started && second.started; }));
    scoped_result = co_await ending_of(scope.run(cl::gather(guarded(first, forever, 1), guarded(second, forever, 2))));
    cleanup_done_when_raised = first.cleaned_up && second.cleaned_up;
    co_await set_deadline;
    CHECK(cl::all_tasks().size() == 1);
    CHECK(timers_now() == 0);
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(result == ending::timeout);
  CHECK(scoped_result == ending::timeout);
  CHECK(cleanup_done_when_raised);
}

// --- deadlines that saturate, deadlines already passed ---

TEST_CASE("timeout: duration::max() means forever: the work runs on, other tasks are not starved", "[timeout]") {
  // now + duration::max() would overflow (signed overflow: undefined, and in
  // practice a deadline in the past or a loop frozen in one long poll).
  auto body = []() -> cl::task<void> {
    constexpr cl::duration forever_delay = cl::duration::max();
    int ticks = 0;
    auto ticker = [&]() -> cl::task<void> {
      for (int i = 0; i < 5; ++i) {
        co_await cl::sleep(2ms);
        ++ticks;
      }
    };
    auto sleeper = cl::create_task(cl::sleep(forever_delay));
    auto under_timeout = cl::create_task(cl::timeout(forever_delay, value_after(5ms, 7)));
    auto under_wait_for = cl::create_task(cl::wait_for(value_after(5ms, 8), forever_delay));
    bool called_later = false;
    cl::callback_handle later = cl::get_running_loop().call_later(forever_delay, [&] { called_later = true; });
    cl::timeout_scope scope(forever_delay);
    const cl::time_point start = cl::clock::now();
    co_await cl::create_task(ticker);
    CHECK(ticks == 5);
    CHECK(cl::clock::now() - start < 10s);
    CHECK(co_await under_timeout == 7);
    CHECK(co_await under_wait_for == 8);
    CHECK_FALSE(sleeper.done());
    CHECK_FALSE(called_later);
    REQUIRE(scope.when().has_value());
    CHECK(*scope.when() == cl::time_point::max());
    scope.reschedule(forever_delay);
    CHECK(*scope.when() == cl::time_point::max());
    sleeper.cancel();
    later.cancel();
    ending e = co_await ending_of(sleeper);
    CHECK(name_of(e) == std::string("cancelled_error"));
  };
  cl::run(body());
}

TEST_CASE("timeout: a sleep of duration::max() does not hold the loop past the next real deadline", "[timeout]") {
  auto body = []() -> cl::task<void> {
    auto sleeper = cl::create_task(cl::sleep(cl::duration::max()));
    co_await cl::sleep(0ms);  // the long sleep's timer is armed, and is the only one
    const cl::time_point start = cl::clock::now();
    co_await cl::sleep(20ms);
    CHECK(cl::clock::now() - start < 10s);
    const cl::time_point later = cl::clock::now();
    bool called = false;
    cl::get_running_loop().call_later(5ms, [&] { called = true; });
    co_await until([&] { return called; });
    CHECK(cl::clock::now() - later < 10s);
    sleeper.cancel();
    co_await finished(sleeper);
  };
  cl::run(body());
}

TEST_CASE("timeout: a negative delay as large as it gets is a deadline in the past, not an overflow", "[timeout]") {
  auto body = []() -> cl::task<void> {
    ending e = co_await ending_of(cl::timeout(cl::duration::min(), value_after(10ms, 1)));
    CHECK(name_of(e) == std::string("timeout_error"));
    co_await cl::sleep(cl::duration::min());  // a yield, as any sleep(d <= 0)
  };
  cl::run(body());
}

TEST_CASE("timeout: a deadline already passed fires before the work's next step (asyncio)", "[timeout]") {
  SECTION("timeout(0ms, sleep(0ms))") {
    auto body = []() -> cl::task<ending> { co_return co_await ending_of(cl::timeout(0ms, cl::sleep(0ms))); };
    CHECK(name_of(cl::run(body())) == std::string("timeout_error"));
  }
  SECTION("timeout_at(time() - 1s, sleep(0ms))") {
    auto body = []() -> cl::task<ending> {
      co_return co_await ending_of(cl::timeout_at(cl::get_running_loop().time() - 1s, cl::sleep(0ms)));
    };
    CHECK(name_of(cl::run(body())) == std::string("timeout_error"));
  }
  SECTION("wait_for(sleep(0ms), 0ms)") {
    auto body = []() -> cl::task<ending> { co_return co_await ending_of(cl::wait_for(cl::sleep(0ms), 0ms)); };
    CHECK(name_of(cl::run(body())) == std::string("timeout_error"));
  }
  SECTION("wait_for on a task_handle that is not done") {
    auto body = []() -> cl::task<ending> {
      auto handle = cl::create_task(value_after(1ms, 3));
      ending e = co_await ending_of(cl::wait_for(handle, 0ms));
      CHECK(handle.cancelled());
      co_return e;
    };
    CHECK(name_of(cl::run(body())) == std::string("timeout_error"));
  }
  SECTION("work that completes without suspending still returns its value") {
    auto body = []() -> cl::task<int> {
      auto ready = []() -> cl::task<int> { co_return 5; };
      int value = co_await cl::timeout(0ms, ready());
      CHECK(timers_now() == 0);
      co_return value;
    };
    CHECK(cl::run(body()) == 5);
  }
  SECTION("a reschedule to the past fires before the work's next step") {
    auto body = []() -> cl::task<ending> {
      cl::timeout_scope scope(forever);
      auto work = [&]() -> cl::task<void> {
        scope.reschedule(cl::get_running_loop().time() - 1ms);
        co_await cl::sleep(0ms);
      };
      co_return co_await ending_of(scope.run(work()));
    };
    CHECK(name_of(cl::run(body())) == std::string("timeout_error"));
  }
}
