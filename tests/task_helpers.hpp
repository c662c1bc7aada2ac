// tests/task_helpers.hpp - the small tasks and waits shared by the tests of tasks,
// gather, timeouts, task groups, cancellation, queues, the synchronisation primitives
// and the backend: a value or an error after a delay; a child that records how its
// cancellation went (probe, guarded); waiting, one loop iteration at a time, until a
// condition holds or a handle is done; how an awaited operation ended
// (ends_cancelled, outcome_of); settle() for a crowd of handles.
// Included after catch.hpp and coro_loop.hpp; everything is inline. A test file names
// what it uses: `using task_test::value_after;`.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace task_test {

namespace cl = coro_loop;
using namespace std::chrono_literals;

inline constexpr auto forever = 5s;  // "never finishes" within a test: always cancelled first

// --- children --------------------------------------------------------------------

inline cl::task<int> value_after(cl::duration delay, int value) {
  co_await cl::sleep(delay);
  co_return value;
}

inline cl::task<int> fail_after(cl::duration delay, const char* message) {
  co_await cl::sleep(delay);
  throw std::runtime_error(message);
}

// What a child went through; its cleanup awaits, as real cleanup does.
struct probe {
  bool started = false;
  bool cancelled = false;
  bool cleaned_up = false;
  bool finished = false;
};

// Sleeps `delay`, then returns `value`; cancelled meanwhile, it cleans up for
// `cleanup` (asynchronously) and ends cancelled. `p` records each step.
inline cl::task<int> guarded(probe& p, cl::duration delay, int value, cl::duration cleanup = 2ms) {
  p.started = true;
  bool cancelled = false;
  try {
    co_await cl::sleep(delay);
  } catch (const cl::cancelled_error&) {
    cancelled = true;
  }
  if (cancelled) {
    p.cancelled = true;
    co_await cl::sleep(cleanup);  // asynchronous cleanup
    p.cleaned_up = true;
    throw cl::cancelled_error{};
  }
  p.finished = true;
  co_return value;
}

// --- waiting on the loop ---------------------------------------------------------

// Lets the loop run `iterations` times (sleep(0) yields exactly one iteration).
inline cl::task<void> yield(int iterations = 1) {
  for (int i = 0; i < iterations; ++i) co_await cl::sleep(0ms);
}

// Suspends (one loop iteration at a time) until `condition()` holds.
template <class Condition>
cl::task<void> until(Condition condition) {
  while (!condition()) co_await cl::sleep(0ms);
}

// Waits until `handle` is done, whatever its outcome.
template <class T>
cl::task<void> finished(cl::task_handle<T> handle) {
  while (!handle.done()) co_await cl::sleep(0ms);
}

// Gives `scope` a deadline 1 ms away once `condition()` holds: a test that
// needs the children's cleanup to run sets its deadline only once they run (a
// child cancelled before its first step never runs its body).
template <class Condition>
cl::task<void> expire_when(cl::timeout_scope& scope, Condition condition) {
  co_await until(condition);
  scope.reschedule(1ms);
}

// Waits (polling the clock, never a fixed sleep) until every handle is done
// or `limit` passed; then cancels and awaits whatever still runs, so a lost
// wake-up fails the test instead of hanging it. Returns how many finished
// on their own.
template <class T>
cl::task<std::size_t> settle(std::vector<cl::task_handle<T>>& handles, cl::duration limit) {
  const cl::time_point deadline = cl::clock::now() + limit;
  auto count_done = [&handles] {
    std::size_t done = 0;
    for (const auto& handle : handles) done += handle.done() ? 1 : 0;
    return done;
  };
  while (count_done() < handles.size() && cl::clock::now() < deadline) co_await cl::sleep(1ms);
  const std::size_t finished = count_done();
  for (auto& handle : handles) handle.cancel();
  for (auto& handle : handles) {
    try {
      (void)co_await handle;
    } catch (...) {
    }
  }
  co_return finished;
}

// --- how it ended ----------------------------------------------------------------

// Awaits `handle`; true when that threw cancelled_error.
template <class T>
cl::task<bool> ends_cancelled(cl::task_handle<T> handle) {
  bool cancelled = false;
  try {
    (void)co_await handle;
  } catch (const cl::cancelled_error&) {
    cancelled = true;
  }
  co_return cancelled;
}

// How an awaited operation ended: "ok", the name of what it threw ("cancelled",
// "timeout", "queue_shut_down", "broken" for broken_barrier_error,
// "invalid_state"), or another exception's what().
template <class Awaitable>
cl::task<std::string> outcome_of(Awaitable awaitable) {
  std::string outcome = "ok";
  try {
    (void)co_await std::move(awaitable);
  } catch (const cl::cancelled_error&) {
    outcome = "cancelled";
  } catch (const cl::timeout_error&) {
    outcome = "timeout";
  } catch (const cl::queue_shut_down&) {
    outcome = "queue_shut_down";
  } catch (const cl::broken_barrier_error&) {
    outcome = "broken";
  } catch (const cl::invalid_state_error&) {
    outcome = "invalid_state";
  } catch (const std::exception& error) {
    outcome = error.what();
  }
  co_return outcome;
}

// An error's what(), or "cancelled" for cancelled_error.
inline std::string message_of(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const std::exception& e) {
    return e.what();
  } catch (const cl::cancelled_error&) {
    return "cancelled";
  }
}

// One item from `items`, as a task of its own.
inline cl::task<int> get_one(cl::queue<int>& items) { co_return co_await items.get(); }

// --- the loop and the current task -----------------------------------------------

inline std::size_t timers_now() { return cl::get_running_loop().timer_count(); }
inline int cancelling_now() { return cl::current_task().cancelling(); }

}  // namespace task_test
