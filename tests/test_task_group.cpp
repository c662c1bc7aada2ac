// tests/test_task_group.cpp - task_group, with_task_group and async_with [task_group].
//
// Reference: asyncio.TaskGroup (3.11-3.13). The first child to fail with an
// error other than cancellation cancels the other children and the group's
// body; the join raises every error in one exception_group; cancelling the
// parent cancels the children and the join re-raises cancelled_error; an
// outer cancellation is never swallowed (3.13: after the exception_group the
// parent's next suspension raises cancelled_error). 3.15's cancel() ends the
// group without an error of its own, yet lets an outer cancel or a timeout's
// expiry through (gh-155433).
#include "catch.hpp"
#include "coro_loop.hpp"

#include "task_helpers.hpp"
#include "test_support.hpp"

#include <chrono>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;
using test_support::contains;

namespace {

cl::task<int> fail_at(cl::time_point when, const char* message) {
  co_await cl::sleep_until(when);
  throw std::runtime_error(message);
}

std::vector<std::string> messages_of(const cl::exception_group& group) {
  std::vector<std::string> messages;
  for (const std::exception_ptr& error : group.exceptions()) messages.push_back(message_of(error));
  return messages;
}

// True when one more suspension of the current task raises cancelled_error.
cl::task<bool> next_suspension_cancels() {
  try {
    co_await cl::sleep(0ms);
  } catch (const cl::cancelled_error&) {
    co_return true;
  }
  co_return false;
}

}  // namespace

// --- success ---

TEST_CASE("task_group: with_task_group waits for every child and returns the body's value", "[task_group]") {
  int body_value = 0;
  int first = 0;
  int second = 0;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> a;
    cl::task_handle<int> b;
    auto group_body = [&](cl::task_group& g) -> cl::task<int> {
      a = g.create_task(value_after(10ms, 1));
      b = g.create_task(value_after(1ms, 2));
      CHECK(g.size() == 2);
      co_return 100;  // returns before the children are done: the join waits
    };
    body_value = co_await cl::with_task_group(group_body);
    REQUIRE(a.done());
    REQUIRE(b.done());
    first = a.result();
    second = b.result();
    CHECK(cl::all_tasks().size() == 1);
  };
  cl::run(body());
  CHECK(body_value == 100);
  CHECK(first == 1);
  CHECK(second == 2);
}

TEST_CASE("task_group: an empty group joins at once; a void body works too", "[task_group]") {
  int value = 0;
  bool void_body_ran = false;
  auto body = [&]() -> cl::task<void> {
    auto empty_body = [](cl::task_group&) -> cl::task<int> { co_return 5; };
    value = co_await cl::with_task_group(empty_body);
    auto void_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(value_after(1ms, 0));
      void_body_ran = true;
      co_return;
    };
    co_await cl::with_task_group(void_body);
  };
  cl::run(body());
  CHECK(value == 5);
  CHECK(void_body_ran);
}

TEST_CASE("task_group: the explicit form: task_group g; g.create_task(...); co_await g.join()", "[task_group]") {
  int sum = 0;
  bool joined_twice_threw = false;
  auto body = [&]() -> cl::task<void> {
    cl::task_group g;
    auto a = g.create_task(value_after(3ms, 1));
    auto b = g.create_task(value_after(1ms, 2));
    co_await g.join();
    CHECK(g.size() == 0);
    sum = a.result() + b.result();
    try {
      co_await g.join();
    } catch (const cl::invalid_state_error&) {
      joined_twice_threw = true;
    }
  };
  cl::run(body());
  CHECK(sum == 3);
  CHECK(joined_twice_threw);
}

TEST_CASE("task_group: the explicit form passes the body's error to join, which cancels the children",
          "[task_group]") {
  probe child;
  std::vector<std::string> errors;
  bool child_done_when_raised = false;
  auto body = [&]() -> cl::task<void> {
    cl::task_group g;
    std::exception_ptr body_error;
    try {
      g.create_task(guarded(child, forever, 1));
      co_await cl::sleep(1ms);
      throw std::logic_error("body failed");
    } catch (...) {
      body_error = std::current_exception();
    }
    try {
      co_await g.join(body_error);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
      child_done_when_raised = child.cleaned_up;
    }
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"body failed"});
  CHECK(child.cancelled);
  CHECK(child_done_when_raised);
}

TEST_CASE("task_group: 100 children run concurrently and all finish", "[task_group]") {
  long sum = 0;
  std::size_t peak = 0;
  auto body = [&]() -> cl::task<void> {
    std::vector<cl::task_handle<int>> children;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      for (int i = 0; i < 100; ++i) children.push_back(g.create_task(value_after(5ms, i)));
      peak = g.size();
      co_return;
    };
    co_await cl::with_task_group(group_body);
    for (auto& child : children) sum += child.result();
  };
  cl::run(body());
  CHECK(peak == 100);
  CHECK(sum == 99 * 100 / 2);
}

TEST_CASE("task_group: of 100 children one fails: the other 99 are cancelled and one error is raised",
          "[task_group]") {
  std::size_t cancelled = 0;
  std::vector<std::string> errors;
  auto body = [&]() -> cl::task<void> {
    std::vector<cl::task_handle<int>> children;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      for (int i = 0; i < 100; ++i) {
        if (i == 50) {
          children.push_back(g.create_task(fail_after(3ms, "child 50 failed")));
        } else {
          children.push_back(g.create_task(value_after(forever, i)));
        }
      }
      co_return;
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
    for (auto& child : children) cancelled += child.cancelled() ? 1 : 0;
    CHECK(cl::all_tasks().size() == 1);
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"child 50 failed"});
  CHECK(cancelled == 99);
}

TEST_CASE("task_group: children carry the names given to create_task, or Task-<n>", "[task_group]") {
  std::string named;
  std::string seen_inside;
  std::string unnamed;
  std::string renamed;
  auto body = [&]() -> cl::task<void> {
    auto report_name = [&]() -> cl::task<void> {
      seen_inside = cl::current_task().name();
      co_return;
    };
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      auto a = g.create_task(report_name(), "worker-1");
      auto b = g.create_task(value_after(1ms, 2));
      auto c = g.create_task([](int x) -> cl::task<int> { co_return x; }, 3);
      c.set_name("callable-3");
      named = a.name();
      unnamed = b.name();
      renamed = c.name();
      co_return;
    };
    co_await cl::with_task_group(group_body);
  };
  cl::run(body());
  CHECK(named == "worker-1");
  CHECK(seen_inside == "worker-1");
  CHECK(unnamed.rfind("Task-", 0) == 0);
  CHECK(unnamed.size() > 5);
  CHECK(renamed == "callable-3");
}

TEST_CASE("task_group: create_task(callable, args...) keeps the callable's captures alive for the child's life",
          "[task_group]") {
  std::string result;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<std::string> child;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      child = g.create_task(
          [prefix = std::string("captured and still alive: ")](int n) -> cl::task<std::string> {
            co_await cl::sleep(2ms);
            co_return prefix + std::to_string(n);
          },
          7);
      co_return;
    };
    co_await cl::with_task_group(group_body);
    result = child.result();
  };
  cl::run(body());
  CHECK(result == "captured and still alive: 7");
}

TEST_CASE("task_group: children may add children while the group is joining", "[task_group]") {
  int grandchild_value = 0;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> grandchild;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      auto spawner = [&]() -> cl::task<void> {
        co_await cl::sleep(2ms);  // the body has returned: the group is joining
        grandchild = g.create_task(value_after(2ms, 5));
      };
      g.create_task(spawner);  // the callable form: the lambda dies with the body's frame
      co_return;
    };
    co_await cl::with_task_group(group_body);
    REQUIRE(grandchild.done());
    grandchild_value = grandchild.result();
  };
  cl::run(body());
  CHECK(grandchild_value == 5);
}

// --- failure ---

TEST_CASE("task_group: the first failing child cancels the other children and the body", "[task_group]") {
  probe other;
  bool body_cancelled = false;
  bool body_ran_on = false;
  std::vector<std::string> errors;
  bool others_done_when_raised = false;
  int cancelling_after = -1;
  bool cancelled_later = true;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(other, forever, 1));
      g.create_task(fail_after(5ms, "child failed"));
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
        body_cancelled = true;
        throw;
      }
      body_ran_on = true;
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
      others_done_when_raised = other.cleaned_up;
    }
    // The group took its own cancel of the body back: nothing is left pending.
    cancelling_after = cancelling_now();
    cancelled_later = co_await next_suspension_cancels();
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"child failed"});
  CHECK(other.cancelled);
  CHECK(others_done_when_raised);
  CHECK(body_cancelled);
  CHECK_FALSE(body_ran_on);
  CHECK(cancelling_after == 0);
  CHECK_FALSE(cancelled_later);
}

TEST_CASE("task_group: a child failing while the body is inside co_await cancels the body, and only the child's "
          "error is raised",
          "[task_group]") {
  std::vector<std::string> errors;
  bool body_cancelled_in_nested_await = false;
  bool cancelled_later = true;
  auto body = [&]() -> cl::task<void> {
    auto nested = [&]() -> cl::task<int> {
      try {
        co_return co_await value_after(forever, 1);
      } catch (const cl::cancelled_error&) {
        body_cancelled_in_nested_await = true;
        throw;
      }
    };
    auto group_body = [&](cl::task_group& g) -> cl::task<int> {
      g.create_task(fail_after(3ms, "failed during the body's await"));
      const int value = co_await nested();
      co_return value;
    };
    try {
      (void)co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);  // the body's cancelled_error is not among them
    }
    cancelled_later = co_await next_suspension_cancels();
  };
  cl::run(body());
  CHECK(body_cancelled_in_nested_await);
  CHECK(errors == std::vector<std::string>{"failed during the body's await"});
  CHECK_FALSE(cancelled_later);
}

TEST_CASE("task_group: a body that swallows the group's cancellation runs on; the join still raises the error",
          "[task_group]") {
  std::vector<std::string> errors;
  bool body_finished = false;
  bool second_await_cancelled = true;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(fail_after(2ms, "child failed"));
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
      }
      second_await_cancelled = co_await next_suspension_cancels();  // exactly one delivery
      body_finished = true;
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
  };
  cl::run(body());
  CHECK(body_finished);
  CHECK_FALSE(second_await_cancelled);
  CHECK(errors == std::vector<std::string>{"child failed"});
}

TEST_CASE("task_group: two children failing at once both land in one exception_group with a readable what()",
          "[task_group]") {
  std::vector<std::string> errors;
  std::string what;
  auto body = [&]() -> cl::task<void> {
    const cl::time_point when = cl::get_running_loop().time() + 10ms;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(fail_at(when, "first child failed"));
      g.create_task(fail_at(when, "second child failed"));
      co_await cl::sleep(forever);
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
      what = e.what();
    }
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"first child failed", "second child failed"});
  INFO(what);
  CHECK(contains(what, "2 sub-exceptions"));
  CHECK(contains(what, "first child failed"));
  CHECK(contains(what, "second child failed"));
}

TEST_CASE("task_group: two children that fail in the same loop iteration after sleep(0) both land in the group",
          "[task_group]") {
  // asyncio runs the group's done-callbacks on a later iteration, so a
  // sibling already resumed in this iteration fails too before it could be
  // cancelled: ExceptionGroup of 2 (checked against CPython 3.11).
  std::vector<std::string> errors;
  auto fail_after_yield = [](const char* message) -> cl::task<int> {
    co_await cl::sleep(0ms);
    throw std::runtime_error(message);
  };
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(fail_after_yield("first"));
      g.create_task(fail_after_yield("second"));
      co_return;
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"first", "second"});
}

TEST_CASE("task_group: the body's own error cancels the children and comes last in the exception_group",
          "[task_group]") {
  probe slow;
  std::vector<std::string> errors;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(slow, forever, 1));
      g.create_task(fail_after(2ms, "child failed"));
      bool cancelled = false;
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
        cancelled = true;
      }
      // The body answers the group's cancellation with an error of its own.
      throw std::logic_error(cancelled ? "body failed while cancelled" : "body failed");
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"child failed", "body failed while cancelled"});
  CHECK(slow.cleaned_up);
}

TEST_CASE("task_group: a child that swallows the group's cancellation finishes with its value; the failure is "
          "still raised",
          "[task_group]") {
  std::vector<std::string> errors;
  int stubborn_value = 0;
  auto stubborn = []() -> cl::task<int> {
    try {
      co_await cl::sleep(forever);
    } catch (const cl::cancelled_error&) {
    }
    co_return 9;
  };
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> kept;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      kept = g.create_task(stubborn());
      g.create_task(fail_after(2ms, "child failed"));
      co_return;
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
    CHECK_FALSE(kept.cancelled());
    stubborn_value = kept.result();
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"child failed"});
  CHECK(stubborn_value == 9);
}

TEST_CASE("task_group: a child cancelled from outside is not an error for the group", "[task_group]") {
  bool raised = false;
  int other_value = 0;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> victim;
    cl::task_handle<int> other;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      victim = g.create_task(value_after(forever, 1));
      other = g.create_task(value_after(5ms, 2));
      co_await cl::sleep(1ms);
      victim.cancel();
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (...) {
      raised = true;
    }
    CHECK(victim.cancelled());
    other_value = other.result();
  };
  cl::run(body());
  CHECK_FALSE(raised);
  CHECK(other_value == 2);
}

TEST_CASE("task_group: create_task after join throws invalid_state_error", "[task_group]") {
  bool threw = false;
  std::string message;
  auto body = [&]() -> cl::task<void> {
    cl::task_group g;
    g.create_task(value_after(1ms, 1));
    co_await g.join();
    try {
      g.create_task(value_after(1ms, 2));
    } catch (const cl::invalid_state_error& e) {
      threw = true;
      message = e.what();
    }
    CHECK(cl::all_tasks().size() == 1);  // nothing was started
  };
  cl::run(body());
  CHECK(threw);
  CHECK(contains(message, "task_group"));
}

TEST_CASE("task_group: create_task while the group is shutting down throws invalid_state_error", "[task_group]") {
  bool body_refused = false;
  bool child_refused = false;
  std::vector<std::string> errors;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      auto cleaner = [&]() -> cl::task<void> {
        bool cancelled = false;
        try {
          co_await cl::sleep(forever);
        } catch (const cl::cancelled_error&) {
          cancelled = true;
        }
        if (cancelled) {
          try {
            g.create_task(value_after(1ms, 0));
          } catch (const cl::invalid_state_error&) {
            child_refused = true;
          }
          throw cl::cancelled_error{};
        }
      };
      g.create_task(cleaner);
      g.create_task(fail_after(2ms, "child failed"));
      bool cancelled = false;
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
        cancelled = true;
      }
      if (cancelled) {
        try {
          g.create_task(value_after(1ms, 0));
        } catch (const cl::invalid_state_error&) {
          body_refused = true;
        }
        throw cl::cancelled_error{};
      }
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
  };
  cl::run(body());
  CHECK(body_refused);
  CHECK(child_refused);
  CHECK(errors == std::vector<std::string>{"child failed"});
}

// --- cancellation ---

TEST_CASE("task_group: cancelling the parent task cancels the children and the join re-raises cancelled_error",
          "[task_group]") {
  probe a;
  probe b;
  bool body_cancelled = false;
  bool raised = false;
  bool children_done_when_raised = false;
  auto parent = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(a, forever, 1));
      g.create_task(guarded(b, forever, 2, 10ms));
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
        body_cancelled = true;
        throw;
      }
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::cancelled_error&) {
      raised = true;
      children_done_when_raised = a.cleaned_up && b.cleaned_up;
      throw;
    }
  };
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(parent());
    co_await until([&] { return a.started && b.started; });
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelled());
  };
  cl::run(body());
  CHECK(body_cancelled);
  CHECK(raised);
  CHECK(a.cancelled);
  CHECK(b.cancelled);
  CHECK(children_done_when_raised);
}

TEST_CASE("task_group: cancelling the parent while the join waits cancels the children and re-raises "
          "cancelled_error",
          "[task_group]") {
  probe a;
  bool body_returned = false;
  bool raised = false;
  auto parent = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(a, forever, 1));
      body_returned = true;
      co_return;
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::cancelled_error&) {
      raised = true;
      throw;
    }
  };
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(parent());
    co_await until([&] { return a.started && body_returned; });
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelled());
    CHECK(handle.cancelling() == 1);
  };
  cl::run(body());
  CHECK(raised);
  CHECK(a.cleaned_up);
}

TEST_CASE("task_group: a child answering the parent's cancellation with an error: the exception_group is raised "
          "and the cancellation still follows",
          "[task_group]") {
  // asyncio: errors take priority over the propagated CancelledError, and
  // (3.13) the parent stays cancelled: its next suspension raises it.
  probe quiet;
  std::vector<std::string> errors;
  bool cancelled_at_next_suspension = false;
  auto parent = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      auto noisy = []() -> cl::task<void> {
        bool cancelled = false;
        try {
          co_await cl::sleep(forever);
        } catch (const cl::cancelled_error&) {
          cancelled = true;
        }
        if (cancelled) throw std::runtime_error("cleanup failed");
      };
      g.create_task(noisy);
      g.create_task(guarded(quiet, forever, 1));
      co_await cl::sleep(forever);
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
    cancelled_at_next_suspension = co_await next_suspension_cancels();
    if (cancelled_at_next_suspension) throw cl::cancelled_error{};
  };
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(parent());
    co_await until([&] { return quiet.started; });
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelled());
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"cleanup failed"});
  CHECK(quiet.cleaned_up);
  CHECK(cancelled_at_next_suspension);
}

TEST_CASE("task_group: a cancellation arriving while the group is already cancelling its children is not "
          "swallowed",
          "[task_group]") {
  probe slow;
  std::vector<std::string> errors;
  bool slow_done_when_raised = false;
  int cancelling_at_catch = -1;
  bool cancelled_at_next_suspension = false;
  auto parent = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(slow, forever, 1, 300ms));  // a long cleanup
      g.create_task(fail_after(2ms, "child failed"));
      co_await cl::sleep(forever);
    };
    try {
      co_await cl::with_task_group(group_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
      slow_done_when_raised = slow.cleaned_up;
      cancelling_at_catch = cancelling_now();
    }
    cancelled_at_next_suspension = co_await next_suspension_cancels();
    if (cancelled_at_next_suspension) throw cl::cancelled_error{};
  };
  auto body = [&]() -> cl::task<void> {
    auto handle = cl::create_task(parent());
    co_await until([&] { return slow.cancelled; });  // the group is cancelling its children
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelled());
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"child failed"});
  CHECK(slow_done_when_raised);
  CHECK(cancelling_at_catch == 1);
  CHECK(cancelled_at_next_suspension);
}

TEST_CASE("task_group: the outer cancellation is not swallowed when a child fails at the same time (asyncio 3.13)",
          "[task_group]") {
  // The child cancels the parent and fails in the same step. The join raises
  // the exception_group; the outer cancel stays requested and the parent's
  // next suspension raises cancelled_error.
  std::vector<std::string> errors;
  int cancelling_at_catch = -1;
  bool cancelled_at_next_suspension = false;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<void> parent_handle;
    auto parent = [&]() -> cl::task<void> {
      auto group_body = [&](cl::task_group& g) -> cl::task<void> {
        auto failing = [&]() -> cl::task<void> {
          co_await cl::sleep(2ms);
          parent_handle.cancel();
          throw std::runtime_error("child failed");
        };
        g.create_task(failing);
        co_await cl::sleep(forever);
      };
      try {
        co_await cl::with_task_group(group_body);
      } catch (const cl::exception_group& e) {
        errors = messages_of(e);
        cancelling_at_catch = cancelling_now();
      }
      cancelled_at_next_suspension = co_await next_suspension_cancels();
      if (cancelled_at_next_suspension) throw cl::cancelled_error{};
    };
    parent_handle = cl::create_task(parent());
    co_await finished(parent_handle);
    CHECK(parent_handle.cancelled());
  };
  cl::run(body());
  CHECK(errors == std::vector<std::string>{"child failed"});
  CHECK(cancelling_at_catch == 1);
  CHECK(cancelled_at_next_suspension);
}

TEST_CASE("task_group: a second cancel arriving after the children finished, before the join resumed, is merged "
          "into the one cancelled_error",
          "[task_group]") {
  // asyncio: the second request finds the join's wait already done and is
  // consumed by the CancelledError thrown in; the group raises one
  // CancelledError and the parent may catch it and go on awaiting.
  probe child_probe;
  int deliveries = 0;
  bool went_on = false;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> child;
    auto parent = [&]() -> cl::task<void> {
      auto group_body = [&](cl::task_group& g) -> cl::task<void> {
        child = g.create_task(guarded(child_probe, forever, 1));
        co_return;
      };
      try {
        co_await cl::with_task_group(group_body);
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
    auto handle = cl::create_task(parent());
    co_await until([&] { return child_probe.started; });
    handle.cancel();  // the join is waiting: the group cancels the child
    co_await until([&] { return child.done(); });
    // The group handles the child's end through the ready queue and wakes
    // the join; one yield later the parent is queued but has not run yet.
    co_await cl::sleep(0ms);
    CHECK(deliveries == 0);
    handle.cancel();
    co_await finished(handle);
    CHECK(handle.cancelling() == 2);
  };
  cl::run(body());
  CHECK(deliveries == 1);
  CHECK(went_on);
}

// --- with timeouts ---

TEST_CASE("task_group: a timeout around a task_group raises timeout_error and the children are cancelled",
          "[task_group]") {
  bool raised_timeout = false;
  bool children_cancelled = false;
  probe a;
  probe b;
  bool raised_with_cleanup = false;
  probe c;
  bool raised_while_joining = false;
  auto body = [&]() -> cl::task<void> {
    // timeout() around with_task_group: the deadline passes while the body is inside co_await.
    cl::task_handle<int> first;
    cl::task_handle<int> second;
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      first = g.create_task(value_after(forever, 1));
      second = g.create_task(value_after(forever, 2));
      co_await cl::sleep(forever);
    };
    try {
      co_await cl::timeout(10ms, cl::with_task_group(group_body));
    } catch (const cl::timeout_error&) {
      raised_timeout = true;
      children_cancelled = first.cancelled() && second.cancelled();
    }
    CHECK(cancelling_now() == 0);
    CHECK(cl::get_running_loop().timer_count() == 0);

    // The same with the children running (and cleaning up) when the deadline passes.
    auto cleaning_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(a, forever, 1));
      g.create_task(guarded(b, forever, 2));
      co_await cl::sleep(forever);
    };
    cl::timeout_scope scope(std::nullopt);
    auto set_deadline = cl::create_task(expire_when(scope, [&] { return a.started && b.started; }));
    try {
      co_await scope.run(cl::with_task_group(cleaning_body));
    } catch (const cl::timeout_error&) {
      raised_with_cleanup = a.cleaned_up && b.cleaned_up;
    }
    co_await set_deadline;
    CHECK(cancelling_now() == 0);

    // The deadline passes while the join waits for the children (the body has returned).
    auto returning_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(c, forever, 3));
      co_return;
    };
    cl::timeout_scope join_scope(std::nullopt);
    auto set_join_deadline = cl::create_task(expire_when(join_scope, [&] { return c.started; }));
    try {
      co_await join_scope.run(cl::with_task_group(returning_body));
    } catch (const cl::timeout_error&) {
      raised_while_joining = c.cleaned_up;
    }
    co_await set_join_deadline;
    CHECK(cancelling_now() == 0);
    CHECK(cl::get_running_loop().timer_count() == 0);
  };
  cl::run(body());
  CHECK(raised_timeout);
  CHECK(children_cancelled);
  CHECK(raised_with_cleanup);
  CHECK(raised_while_joining);
}

TEST_CASE("task_group: a task_group inside a timeout inside a task_group: the inner expiry stays inside",
          "[task_group]") {
  probe inner_child;
  bool inner_timed_out = false;
  bool inner_child_done_when_raised = false;
  int outer_child_value = 0;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> outer_child;
    auto inner_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(inner_child, forever, 1));
      co_await cl::sleep(forever);
    };
    auto outer_body = [&](cl::task_group& g) -> cl::task<void> {
      outer_child = g.create_task(value_after(30ms, 7));
      cl::timeout_scope scope(std::nullopt);
      auto set_deadline = cl::create_task(expire_when(scope, [&] { return inner_child.started; }));
      try {
        co_await scope.run(cl::with_task_group(inner_body));
      } catch (const cl::timeout_error&) {
        inner_timed_out = true;
        inner_child_done_when_raised = inner_child.cleaned_up;
      }
      co_await set_deadline;
      CHECK(cancelling_now() == 0);
    };
    co_await cl::with_task_group(outer_body);
    outer_child_value = outer_child.result();  // the outer group's child was never cancelled
  };
  cl::run(body());
  CHECK(inner_timed_out);
  CHECK(inner_child_done_when_raised);
  CHECK(outer_child_value == 7);
}

TEST_CASE("task_group: a task_group inside a timeout inside a task_group: the outer group's cancel passes the "
          "timeout as a cancellation",
          "[task_group]") {
  // The outer group's child fails while its body waits inside the timeout: the
  // timeout must not turn the group's cancel into timeout_error, and the outer
  // group raises only the child's error.
  probe inner_child;
  std::string inner_ending;
  std::vector<std::string> errors;
  auto body = [&]() -> cl::task<void> {
    auto inner_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(inner_child, forever, 1));
      co_await cl::sleep(forever);
    };
    auto fail_once_inner_child_runs = [&]() -> cl::task<void> {
      co_await until([&] { return inner_child.started; });
      throw std::runtime_error("outer child failed");
    };
    auto outer_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(fail_once_inner_child_runs);
      inner_ending = "value";
      try {
        co_await cl::timeout(forever, cl::with_task_group(inner_body));
      } catch (const cl::timeout_error&) {
        inner_ending = "timeout_error";
      } catch (const cl::cancelled_error&) {
        inner_ending = "cancelled_error";
        throw;
      }
    };
    try {
      co_await cl::with_task_group(outer_body);
    } catch (const cl::exception_group& e) {
      errors = messages_of(e);
    }
    CHECK(cancelling_now() == 0);
    CHECK(cl::get_running_loop().timer_count() == 0);
  };
  cl::run(body());
  CHECK(inner_ending == "cancelled_error");
  CHECK(inner_child.cleaned_up);
  CHECK(errors == std::vector<std::string>{"outer child failed"});
}

// --- cancel(): ending the group early (asyncio 3.15) ---

TEST_CASE("task_group: cancel() from the body ends the group without an error and cancels the running children",
          "[task_group]") {
  probe a;
  probe b;
  bool body_cancelled = false;
  bool refused_after_cancel = false;
  bool returned = false;
  bool children_done_when_returned = false;
  int cancelling_after = -1;
  bool cancelled_later = true;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(a, forever, 1));
      g.create_task(guarded(b, forever, 2, 10ms));
      auto both_started = [&] { return a.started && b.started; };
      co_await until(both_started);
      g.cancel();
      try {
        g.create_task(value_after(1ms, 0));
      } catch (const cl::invalid_state_error&) {
        refused_after_cancel = true;
      }
      try {
        co_await cl::sleep(forever);  // the body is cancelled too, as in asyncio
      } catch (const cl::cancelled_error&) {
        body_cancelled = true;
        throw;
      }
    };
    co_await cl::with_task_group(group_body);
    returned = true;
    children_done_when_returned = a.cleaned_up && b.cleaned_up;
    cancelling_after = cancelling_now();
    cancelled_later = co_await next_suspension_cancels();
    CHECK(cl::all_tasks().size() == 1);
  };
  cl::run(body());
  CHECK(body_cancelled);
  CHECK(refused_after_cancel);
  CHECK(returned);
  CHECK(a.cancelled);
  CHECK(b.cancelled);
  CHECK_FALSE(a.finished);
  CHECK(children_done_when_returned);
  CHECK(cancelling_after == 0);
  CHECK_FALSE(cancelled_later);
}

TEST_CASE("task_group: cancel() as the body's last act: the body's value comes back and the children are cancelled",
          "[task_group]") {
  probe child;
  int value = 0;
  bool child_done_when_returned = false;
  int cancelling_after = -1;
  bool cancelled_later = true;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<int> {
      g.create_task(guarded(child, forever, 1));
      co_await cl::sleep(1ms);
      g.cancel();
      co_return 42;  // no suspension after cancel(): the body finishes with its value
    };
    value = co_await cl::with_task_group(group_body);
    child_done_when_returned = child.cleaned_up;
    cancelling_after = cancelling_now();
    cancelled_later = co_await next_suspension_cancels();
  };
  cl::run(body());
  CHECK(value == 42);
  CHECK(child.cancelled);
  CHECK(child_done_when_returned);
  CHECK(cancelling_after == 0);
  CHECK_FALSE(cancelled_later);
}

TEST_CASE("task_group: cancel() from a child cancels the body inside co_await and its siblings; the group ends "
          "without an error",
          "[task_group]") {
  probe sibling;
  bool body_cancelled_in_nested_await = false;
  bool returned = false;
  bool sibling_done_when_returned = false;
  bool cancelled_later = true;
  auto body = [&]() -> cl::task<void> {
    auto nested = [&]() -> cl::task<int> {
      try {
        co_return co_await value_after(forever, 1);
      } catch (const cl::cancelled_error&) {
        body_cancelled_in_nested_await = true;
        throw;
      }
    };
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(sibling, forever, 1));
      auto canceller = [&]() -> cl::task<void> {
        auto sibling_started = [&] { return sibling.started; };
        co_await until(sibling_started);
        g.cancel();
      };
      g.create_task(canceller);
      (void)co_await nested();
    };
    co_await cl::with_task_group(group_body);
    returned = true;
    sibling_done_when_returned = sibling.cleaned_up;
    CHECK(cancelling_now() == 0);
    cancelled_later = co_await next_suspension_cancels();
  };
  cl::run(body());
  CHECK(body_cancelled_in_nested_await);
  CHECK(returned);
  CHECK(sibling.cancelled);
  CHECK(sibling_done_when_returned);
  CHECK_FALSE(cancelled_later);
}

TEST_CASE("task_group: cancel() while the body waits in the join: the join waits for the cancelled children and "
          "returns",
          "[task_group]") {
  probe a;
  probe b;
  int value = 0;
  bool children_done_when_returned = false;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<void> canceller_handle;
    auto group_body = [&](cl::task_group& g) -> cl::task<int> {
      g.create_task(guarded(a, forever, 1));
      g.create_task(guarded(b, forever, 2, 10ms));
      auto canceller = [&]() -> cl::task<void> {
        co_await cl::sleep(2ms);  // the body has returned: the group is joining
        g.cancel();
      };
      canceller_handle = g.create_task(canceller);
      co_return 5;
    };
    value = co_await cl::with_task_group(group_body);
    children_done_when_returned = a.cleaned_up && b.cleaned_up;
    CHECK(canceller_handle.done());
    CHECK(cancelling_now() == 0);
    CHECK_FALSE(co_await next_suspension_cancels());
  };
  cl::run(body());
  CHECK(value == 5);
  CHECK(a.cancelled);
  CHECK(b.cancelled);
  CHECK(children_done_when_returned);
}

TEST_CASE("task_group: with_task_group after cancel() ended the body early: std::nullopt for a std::optional body, "
          "invalid_state_error for another type",
          "[task_group]") {
  std::optional<int> optional_result = 1;
  bool optional_returned = false;
  std::string message;
  bool children_done_when_thrown = false;
  probe child;
  auto body = [&]() -> cl::task<void> {
    auto optional_body = [&](cl::task_group& g) -> cl::task<std::optional<int>> {
      g.create_task(value_after(forever, 1));
      co_await cl::sleep(1ms);
      g.cancel();
      co_await cl::sleep(forever);
      co_return 2;
    };
    optional_result = co_await cl::with_task_group(optional_body);
    optional_returned = true;

    auto int_body = [&](cl::task_group& g) -> cl::task<int> {
      g.create_task(guarded(child, forever, 1));
      co_await cl::sleep(1ms);
      g.cancel();
      co_await cl::sleep(forever);
      co_return 2;
    };
    try {
      (void)co_await cl::with_task_group(int_body);
    } catch (const cl::invalid_state_error& e) {
      message = e.what();
      children_done_when_thrown = child.cleaned_up;
    }
    CHECK(cancelling_now() == 0);
    CHECK_FALSE(co_await next_suspension_cancels());
  };
  cl::run(body());
  CHECK(optional_returned);
  CHECK_FALSE(optional_result.has_value());
  INFO(message);
  CHECK(contains(message, "with_task_group"));
  CHECK(contains(message, "std::optional"));
  CHECK(children_done_when_thrown);
}

TEST_CASE("task_group: the explicit form: join(body_error) with the body's cancellation from cancel() returns",
          "[task_group]") {
  probe child;
  bool body_cancelled = false;
  bool joined = false;
  auto body = [&]() -> cl::task<void> {
    cl::task_group g;
    std::exception_ptr body_error;
    try {
      g.create_task(guarded(child, forever, 1));
      co_await cl::sleep(1ms);
      g.cancel();
      co_await cl::sleep(forever);
    } catch (const cl::cancelled_error&) {
      body_cancelled = true;
      body_error = std::current_exception();
    }
    co_await g.join(body_error);
    joined = true;
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(body_cancelled);
  CHECK(joined);
  CHECK(child.cleaned_up);
}

TEST_CASE("task_group: a child that failed before cancel(), or fails answering it, still raises the "
          "exception_group",
          "[task_group]") {
  std::vector<std::string> failed_before;
  std::vector<std::string> failed_answering;
  probe quiet;
  auto body = [&]() -> cl::task<void> {
    cl::task_handle<int> failing;
    auto fail_first = [&](cl::task_group& g) -> cl::task<void> {
      failing = g.create_task(fail_after(2ms, "failed before cancel()"));
      g.create_task(value_after(forever, 1));
      auto failing_done = [&] { return failing.done(); };
      co_await until(failing_done);
      g.cancel();  // the group has not handled the failure yet: its error still counts
      co_await cl::sleep(forever);
    };
    try {
      co_await cl::with_task_group(fail_first);
    } catch (const cl::exception_group& e) {
      failed_before = messages_of(e);
    }
    CHECK(cancelling_now() == 0);

    auto fail_answering = [&](cl::task_group& g) -> cl::task<void> {
      auto noisy = []() -> cl::task<void> {
        bool cancelled = false;
        try {
          co_await cl::sleep(forever);
        } catch (const cl::cancelled_error&) {
          cancelled = true;
        }
        if (cancelled) throw std::runtime_error("cleanup failed");
      };
      g.create_task(noisy);
      g.create_task(guarded(quiet, forever, 1));
      co_await cl::sleep(1ms);
      g.cancel();
      co_await cl::sleep(forever);
    };
    try {
      co_await cl::with_task_group(fail_answering);
    } catch (const cl::exception_group& e) {
      failed_answering = messages_of(e);
    }
    CHECK(cancelling_now() == 0);
    CHECK_FALSE(co_await next_suspension_cancels());
  };
  cl::run(body());
  CHECK(failed_before == std::vector<std::string>{"failed before cancel()"});
  CHECK(failed_answering == std::vector<std::string>{"cleanup failed"});
  CHECK(quiet.cleaned_up);
}

TEST_CASE("task_group: cancel() inside a timeout whose deadline passes meanwhile: timeout_error still reaches the "
          "caller (gh-155433)",
          "[task_group]") {
  // asyncio 3.15 swallowed the expiry: the join, already shutting down,
  // absorbed the timeout's cancel, then took its own request back and found
  // one left. Three moments: the deadline passes while a child cleans up
  // after cancel(), just before cancel(), and just after it.
  enum class moment { during_cleanup, before_cancel, after_cancel };
  for (const moment when : {moment::during_cleanup, moment::before_cancel, moment::after_cancel}) {
    INFO("moment " << static_cast<int>(when));
    probe other;
    bool cleaned_up = false;
    bool raised_timeout = false;
    bool cleaned_up_when_raised = false;
    bool returned = false;
    auto body = [&]() -> cl::task<void> {
      cl::timeout_scope scope(std::nullopt);
      auto group_body = [&](cl::task_group& g) -> cl::task<void> {
        auto slow_cleanup = [&]() -> cl::task<void> {
          bool cancelled = false;
          try {
            co_await cl::sleep(forever);
          } catch (const cl::cancelled_error&) {
            cancelled = true;
          }
          if (!cancelled) co_return;
          if (when == moment::during_cleanup) scope.reschedule(0ms);  // expires now
          co_await cl::sleep(5ms);
          cleaned_up = true;
          throw cl::cancelled_error{};
        };
        g.create_task(slow_cleanup);
        g.create_task(guarded(other, forever, 1));
        auto started = [&] { return other.started; };
        co_await until(started);
        if (when == moment::before_cancel) scope.reschedule(0ms);
        g.cancel();
        if (when == moment::after_cancel) {
          scope.reschedule(0ms);
          co_await cl::sleep(forever);
        }
      };
      auto work = cl::with_task_group(group_body);
      try {
        co_await scope.run(std::move(work));
        returned = true;
      } catch (const cl::timeout_error&) {
        raised_timeout = true;
        cleaned_up_when_raised = cleaned_up && other.cleaned_up;
      }
      CHECK(scope.expired());
      CHECK(cancelling_now() == 0);
      CHECK_FALSE(co_await next_suspension_cancels());
      CHECK(cl::get_running_loop().timer_count() == 0);
    };
    cl::run(body());
    CHECK(raised_timeout);
    CHECK_FALSE(returned);
    CHECK(cleaned_up_when_raised);
  }
}

TEST_CASE("task_group: an outer cancel of the task running the group together with cancel(): cancelled_error "
          "still propagates",
          "[task_group]") {
  // Three orders: the outer cancel arrives while the join waits for a child
  // cleaning up after cancel(); in the same step just after cancel(); just
  // before it (cancel() then finds the group shutting down). Each with the
  // body waiting (cancelled with the group) and with the body returned (the
  // group joining when cancel() comes).
  enum class order { during_cleanup, cancel_then_outer, outer_then_cancel };
  for (const bool body_waits : {true, false}) {
    for (const order sequence : {order::during_cleanup, order::cancel_then_outer, order::outer_then_cancel}) {
      INFO("body waits " << body_waits << ", order " << static_cast<int>(sequence));
      probe slow;
      bool raised = false;
      bool returned = false;
      bool children_done_when_raised = false;
      auto body = [&]() -> cl::task<void> {
        cl::task_handle<void> parent_handle;
        auto parent = [&]() -> cl::task<void> {
          auto group_body = [&](cl::task_group& g) -> cl::task<void> {
            g.create_task(guarded(slow, forever, 1, 20ms));
            auto canceller = [&]() -> cl::task<void> {
              auto started = [&] { return slow.started; };
              co_await until(started);
              if (sequence == order::outer_then_cancel) parent_handle.cancel();
              g.cancel();
              if (sequence == order::cancel_then_outer) parent_handle.cancel();
            };
            g.create_task(canceller);
            if (body_waits) co_await cl::sleep(forever);
          };
          try {
            co_await cl::with_task_group(group_body);
            returned = true;
          } catch (const cl::cancelled_error&) {
            raised = true;
            children_done_when_raised = slow.cleaned_up;
            throw;
          }
        };
        parent_handle = cl::create_task(parent());
        if (sequence == order::during_cleanup) {
          auto cleaning_up = [&] { return slow.cancelled; };
          co_await until(cleaning_up);
          CHECK_FALSE(slow.cleaned_up);
          parent_handle.cancel();
        }
        co_await finished(parent_handle);
        CHECK(parent_handle.cancelled());
        CHECK(parent_handle.cancelling() == 1);  // the group took back its own request only
      };
      cl::run(body());
      CHECK(raised);
      CHECK_FALSE(returned);
      CHECK(children_done_when_raised);
    }
  }
}

TEST_CASE("task_group: after cancel() the task's cancelling() is back to its value when the group began",
          "[task_group]") {
  // A task that caught a cancel without uncancel() (cleanup after a
  // cancellation) runs a group and cancels it: the request left over from
  // before is not an outer cancel of the group, as timeout_scope counts.
  int before = -1;
  int after = -1;
  bool returned = false;
  bool cancelled_later = true;
  int fresh_before = -1;
  int fresh_after = -1;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(value_after(forever, 1));
      co_await cl::sleep(1ms);
      g.cancel();
      co_await cl::sleep(forever);
    };
    fresh_before = cancelling_now();
    co_await cl::with_task_group(group_body);
    fresh_after = cancelling_now();

    cl::current_task().cancel();
    try {
      co_await cl::sleep(0ms);
    } catch (const cl::cancelled_error&) {
    }
    before = cancelling_now();
    co_await cl::with_task_group(group_body);
    returned = true;
    after = cancelling_now();
    cancelled_later = co_await next_suspension_cancels();
    cl::current_task().uncancel();
  };
  cl::run(body());
  CHECK(fresh_before == 0);
  CHECK(fresh_after == 0);
  CHECK(before == 1);
  CHECK(returned);
  CHECK(after == 1);
  CHECK_FALSE(cancelled_later);
}

TEST_CASE("task_group: cancel() twice, from the body and from a child, is one cancellation", "[task_group]") {
  probe child;
  int body_deliveries = 0;
  bool second_await_cancelled = true;
  bool returned = false;
  auto body = [&]() -> cl::task<void> {
    auto group_body = [&](cl::task_group& g) -> cl::task<void> {
      g.create_task(guarded(child, forever, 1));
      auto canceller = [&]() -> cl::task<void> {
        co_await cl::sleep(1ms);
        g.cancel();
        g.cancel();
      };
      g.create_task(canceller);
      try {
        co_await cl::sleep(forever);
      } catch (const cl::cancelled_error&) {
        ++body_deliveries;
      }
      g.cancel();  // the group is already shutting down
      second_await_cancelled = co_await next_suspension_cancels();
    };
    co_await cl::with_task_group(group_body);
    returned = true;
    CHECK(cancelling_now() == 0);
  };
  cl::run(body());
  CHECK(body_deliveries == 1);
  CHECK_FALSE(second_await_cancelled);
  CHECK(returned);
  CHECK(child.cleaned_up);
}

TEST_CASE("task_group: cancel() after the join is a no-op", "[task_group]") {
  int value = 0;
  std::string message;
  bool cancelled_later = true;
  bool after_error_cancelled_later = true;
  auto body = [&]() -> cl::task<void> {
    cl::task_group g;
    auto child = g.create_task(value_after(1ms, 3));
    co_await g.join();
    g.cancel();
    value = child.result();
    CHECK_FALSE(child.cancelled());
    CHECK(cancelling_now() == 0);
    cancelled_later = co_await next_suspension_cancels();
    try {
      g.create_task(value_after(1ms, 0));
    } catch (const cl::invalid_state_error& e) {
      message = e.what();
    }

    cl::task_group failed;
    failed.create_task(fail_after(1ms, "child failed"));
    try {
      co_await failed.join();
    } catch (const cl::exception_group&) {
    }
    failed.cancel();
    CHECK(cancelling_now() == 0);
    after_error_cancelled_later = co_await next_suspension_cancels();
  };
  cl::run(body());
  CHECK(value == 3);
  CHECK_FALSE(cancelled_later);
  CHECK(contains(message, "after join"));
  CHECK_FALSE(after_error_cancelled_later);
}

// --- async_with: `async with` for a resource whose cleanup awaits ---

namespace {

// A resource that records what happened to it; aclose() awaits, as real
// cleanup does, and can be told to fail.
struct recorded_resource {
  std::vector<std::string>* log;
  bool fail_close = false;
  cl::task<void> aclose() {
    log->push_back("aclose start");
    co_await cl::sleep(1ms);
    log->push_back("aclose end");
    if (fail_close) throw std::runtime_error("close failed");
  }
};

cl::task<recorded_resource> open_recorded(std::vector<std::string>& log, bool fail_close = false) {
  log.push_back("open");
  co_await cl::sleep(0ms);
  co_return recorded_resource{&log, fail_close};
}

}  // namespace

TEST_CASE("async_with: the body's value comes back after aclose() ran", "[task_group]") {
  std::vector<std::string> log;
  int value = 0;
  auto body = [&]() -> cl::task<void> {
    auto use = [&](recorded_resource&) -> cl::task<int> {
      log.push_back("body");
      co_await cl::sleep(1ms);
      co_return 7;
    };
    value = co_await cl::async_with(open_recorded(log), use);
  };
  cl::run(body());
  CHECK(value == 7);
  CHECK(log == std::vector<std::string>{"open", "body", "aclose start", "aclose end"});
}

TEST_CASE("async_with: a failing body still awaits aclose(), then its error propagates", "[task_group]") {
  std::vector<std::string> log;
  std::string caught;
  auto body = [&]() -> cl::task<void> {
    auto use = [&](recorded_resource&) -> cl::task<void> {
      co_await cl::sleep(1ms);
      throw std::runtime_error("body failed");
    };
    try {
      co_await cl::async_with(open_recorded(log, true), use);
    } catch (const std::runtime_error& e) {
      caught = e.what();
    }
  };
  cl::run(body());
  CHECK(caught == "body failed");  // both failed: the body's error wins
  CHECK(log == std::vector<std::string>{"open", "aclose start", "aclose end"});
}

TEST_CASE("async_with: aclose()'s error propagates when the body succeeded", "[task_group]") {
  std::vector<std::string> log;
  std::string caught;
  auto body = [&]() -> cl::task<void> {
    auto use = [&](recorded_resource&) -> cl::task<void> { co_return; };
    try {
      co_await cl::async_with(open_recorded(log, true), use);
    } catch (const std::runtime_error& e) {
      caught = e.what();
    }
  };
  cl::run(body());
  CHECK(caught == "close failed");
}

TEST_CASE("async_with: a cancelled body awaits aclose() and the task ends cancelled", "[task_group]") {
  std::vector<std::string> log;
  bool body_started = false;
  bool cancelled = false;
  auto body = [&]() -> cl::task<void> {
    auto use = [&](recorded_resource&) -> cl::task<void> {
      body_started = true;
      co_await cl::sleep(forever);
      log.push_back("body end");
    };
    auto guarded_use = [&]() -> cl::task<void> { co_await cl::async_with(open_recorded(log), use); };
    auto handle = cl::create_task(guarded_use());
    co_await until([&] { return body_started; });
    handle.cancel();
    try {
      co_await handle;
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    }
  };
  cl::run(body());
  CHECK(cancelled);
  CHECK(log == std::vector<std::string>{"open", "aclose start", "aclose end"});
}

TEST_CASE("async_with: a cancel that reaches aclose() is not swallowed by the body's error", "[task_group]") {
  std::vector<std::string> log;
  bool closing = false;
  bool cancelled = false;
  auto body = [&]() -> cl::task<void> {
    struct slow_close {
      bool* closing;
      cl::task<void> aclose() {
        *closing = true;
        co_await cl::sleep(forever);
      }
    };
    auto open_slow = [&]() -> cl::task<slow_close> { co_return slow_close{&closing}; };
    auto use = [&](slow_close&) -> cl::task<void> {
      co_await cl::sleep(0ms);
      throw std::runtime_error("body failed");
    };
    auto guarded_use = [&]() -> cl::task<void> { co_await cl::async_with(open_slow(), use); };
    auto handle = cl::create_task(guarded_use());
    co_await until([&] { return closing; });
    handle.cancel();
    try {
      co_await handle;
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    } catch (const std::runtime_error&) {
    }
  };
  cl::run(body());
  CHECK(cancelled);
}
