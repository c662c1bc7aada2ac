// tests/test_cancel.cpp - cancellation, asyncio's model in C++ [cancel].
//
// cancel() requests; the co_await at the task's current suspension point
// throws cancelled_error; cleanup may co_await; swallowing is allowed;
// cancelling() / uncancel() count requests; a cancel reaching a task whose
// wait was granted but which has not resumed wins, and what the wait was
// granted goes back (asyncio); where that would lose a result (bytes the OS
// already read, a gather's values) the result is returned and the cancel is
// delivered at the next suspension point.
#include "coro_loop.hpp"
#include "catch.hpp"

#include "net_helpers.hpp"
#include "task_helpers.hpp"

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <type_traits>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {

// The pipe of the read_some cases: a socket pair on Windows.
using pipe_fds = net_test::handle_pair;

}  // namespace

TEST_CASE("cancel: cancelled_error is not a std::exception", "[cancel]") {
  STATIC_REQUIRE_FALSE(std::is_base_of_v<std::exception, cl::cancelled_error>);
  CHECK(std::string(cl::cancelled_error{}.what()).find("cancelled") != std::string::npos);
}

TEST_CASE("cancel: cancelling a sleeping task throws cancelled_error at the sleep and removes its timer",
          "[cancel]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    std::vector<std::string> log;
    auto sleeper = [&]() -> cl::task<void> {
      log.push_back("sleeping");
      try {
        co_await cl::sleep(1h);
        log.push_back("woke normally");
      } catch (const cl::cancelled_error&) {
        log.push_back("cancelled at the sleep");
        throw;
      }
    };
    auto handle = cl::create_task(sleeper);
    co_await cl::sleep(0ms);  // its first step runs and arms the timer
    CHECK(loop.timer_count() == 1);
    CHECK(handle.cancel());
    CHECK(loop.timer_count() == 0);  // removed at once, not left to expire
    CHECK_FALSE(handle.done());      // delivered when the task next runs
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK(handle.done());
    CHECK(handle.cancelled());
    CHECK(handle.cancelling() == 1);
    CHECK_THROWS_AS(handle.result(), cl::cancelled_error);
    CHECK_THROWS_AS(handle.exception(), cl::cancelled_error);
    CHECK(log == std::vector<std::string>{"sleeping", "cancelled at the sleep"});
    CHECK(loop.timer_count() == 0);
  };
  auto start = cl::clock::now();
  cl::run(body());
  CHECK(cl::clock::now() - start < 30s);  // nobody waited for the hour
}

TEST_CASE("cancel: a task cancelled before its first step never runs its body", "[cancel]") {
  auto body = []() -> cl::task<void> {
    bool ran = false;
    auto worker = [&]() -> cl::task<int> {
      ran = true;
      co_return 1;
    };
    auto handle = cl::create_task(worker);
    CHECK(handle.cancel());
    CHECK(handle.cancelling() == 1);
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK_FALSE(ran);
    CHECK(handle.cancelled());
    CHECK(cl::get_running_loop().pending_task_count() == 1);  // only this one
  };
  cl::run(body());
}

TEST_CASE("cancel: cancelling a finished task returns false and changes nothing", "[cancel]") {
  auto body = []() -> cl::task<void> {
    auto handle = cl::create_task(value_after(0ms, 8));
    (void)co_await handle;
    CHECK_FALSE(handle.cancel());
    CHECK(handle.cancelling() == 0);
    CHECK_FALSE(handle.cancelled());
    CHECK(handle.result() == 8);
    int again = co_await handle;
    CHECK(again == 8);
  };
  cl::run(body());
}

TEST_CASE("cancel: a task that catches cancelled_error can await its cleanup and rethrow", "[cancel]") {
  auto body = []() -> cl::task<void> {
    bool cleanup_done = false;
    cl::duration cleanup_took{};
    auto worker = [&]() -> cl::task<void> {
      bool cancelled = false;
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        cancelled = true;
      }
      if (cancelled) {
        // co_await is not allowed inside a handler: clean up after it.
        auto start = cl::clock::now();
        co_await cl::sleep(10ms);
        cleanup_took = cl::clock::now() - start;
        cleanup_done = true;
        throw cl::cancelled_error{};
      }
    };
    auto handle = cl::create_task(worker);
    co_await cl::sleep(0ms);
    handle.cancel();
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK(cleanup_done);
    CHECK(cleanup_took >= 10ms);
    CHECK(handle.cancelled());
  };
  cl::run(body());
}

TEST_CASE("cancel: cancel() twice counts two requests but delivers one cancelled_error, so cleanup may await",
          "[cancel]") {
  // asyncio: t.cancel(); t.cancel() on a sleeping task -> cancelling() == 2,
  // one CancelledError at the sleep, and the cleanup's own awaits complete.
  auto body = []() -> cl::task<void> {
    int deliveries = 0;
    bool cleanup_done = false;
    auto worker = [&]() -> cl::task<void> {
      bool cancelled = false;
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        ++deliveries;
        cancelled = true;
      }
      if (cancelled) {
        try {
          co_await cl::sleep(5ms);
          cleanup_done = true;
        } catch (const cl::cancelled_error&) {
          ++deliveries;  // a second delivery would cut the cleanup short
        }
        throw cl::cancelled_error{};
      }
    };
    auto handle = cl::create_task(worker);
    co_await cl::sleep(0ms);
    CHECK(handle.cancel());
    CHECK(handle.cancel());
    CHECK(handle.cancelling() == 2);
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK(handle.cancelled());
    CHECK(deliveries == 1);
    CHECK(cleanup_done);
  };
  cl::run(body());
}

TEST_CASE("cancel: a task that swallows cancellation finishes normally and is not cancelled", "[cancel]") {
  auto body = []() -> cl::task<void> {
    auto worker = []() -> cl::task<int> {
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        co_return -1;
      }
      co_return 1;
    };
    auto handle = cl::create_task(worker);
    co_await cl::sleep(0ms);
    handle.cancel();
    int value = co_await handle;
    CHECK(value == -1);
    CHECK(handle.done());
    CHECK_FALSE(handle.cancelled());
    CHECK(handle.result() == -1);
    CHECK(handle.cancelling() == 1);  // the request still counts (asyncio) until uncancel()
    // Swallowed once, the task keeps working: later waits are not cancelled.
    auto resilient = [&]() -> cl::task<int> {
      int cancellations = 0;
      for (int i = 0; i < 2; ++i) {
        try {
          co_await cl::sleep(1h);
        } catch (const cl::cancelled_error&) {
          ++cancellations;
        }
      }
      co_await cl::sleep(1ms);  // not cancelled: completes
      co_return cancellations;
    };
    auto second = cl::create_task(resilient);
    co_await cl::sleep(0ms);
    second.cancel();
    co_await cl::sleep(0ms);
    co_await cl::sleep(0ms);
    second.cancel();
    int count = co_await second;
    CHECK(count == 2);
    CHECK_FALSE(second.cancelled());
  };
  cl::run(body());
}

TEST_CASE("cancel: cancelling a task that awaits another task cancels the inner one too", "[cancel]") {
  auto body = []() -> cl::task<void> {
    bool inner_saw_cancel = false;
    bool outer_saw_cancel = false;
    auto inner_body = [&]() -> cl::task<int> {
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        inner_saw_cancel = true;
        throw;
      }
      co_return 1;
    };
    auto inner = cl::create_task(inner_body);
    auto outer_body = [&]() -> cl::task<int> {
      try {
        int value = co_await inner;
        co_return value;
      } catch (const cl::cancelled_error&) {
        outer_saw_cancel = true;
        throw;
      }
    };
    auto outer = cl::create_task(outer_body);
    co_await cl::sleep(0ms);  // both are now suspended: inner at its sleep, outer on inner
    CHECK(cl::get_running_loop().timer_count() == 1);
    CHECK(outer.cancel());
    bool outer_cancelled = co_await ends_cancelled(outer);
    CHECK(outer_cancelled);
    CHECK(inner.done());
    CHECK(inner.cancelled());
    CHECK(inner.cancelling() == 1);
    CHECK(outer.cancelled());
    CHECK(inner_saw_cancel);
    CHECK(outer_saw_cancel);
    CHECK(cl::get_running_loop().timer_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("cancel: an awaited task that swallows the cancellation gives its value to the awaiting task",
          "[cancel]") {
  // asyncio: the outer task's await returns the inner task's outcome.
  auto body = []() -> cl::task<void> {
    auto inner_body = []() -> cl::task<int> {
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        co_return 99;
      }
      co_return 1;
    };
    auto inner = cl::create_task(inner_body);
    auto outer_body = [&]() -> cl::task<int> {
      int value = co_await inner;
      co_return value + 1;
    };
    auto outer = cl::create_task(outer_body);
    co_await cl::sleep(0ms);
    outer.cancel();
    int value = co_await outer;
    CHECK(value == 100);
    CHECK_FALSE(inner.cancelled());
    CHECK_FALSE(outer.cancelled());
  };
  cl::run(body());
}

TEST_CASE("cancel: cancelling a task reaches a sleep inside a task<T> it awaits inline", "[cancel]") {
  auto body = []() -> cl::task<void> {
    bool leaf_cancelled = false;
    auto leaf = [&]() -> cl::task<int> {
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        leaf_cancelled = true;
        throw;
      }
      co_return 0;
    };
    auto middle = [&]() -> cl::task<int> {
      cl::task<int> awaited = leaf();
      int value = co_await awaited;
      co_return value;
    };
    auto handle = cl::create_task(middle);
    co_await cl::sleep(0ms);
    handle.cancel();
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK(leaf_cancelled);
    CHECK(handle.cancelled());
  };
  cl::run(body());
}

TEST_CASE("cancel: catch (const std::exception&) does not swallow a cancellation", "[cancel]") {
  auto body = []() -> cl::task<void> {
    bool swallowed = false;
    auto worker = [&]() -> cl::task<void> {
      try {
        co_await cl::sleep(1h);
      } catch (const std::exception&) {
        swallowed = true;
      }
    };
    auto handle = cl::create_task(worker);
    co_await cl::sleep(0ms);
    handle.cancel();
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK_FALSE(swallowed);
    CHECK(handle.cancelled());
  };
  cl::run(body());
}

TEST_CASE("cancel: cancelling a task parked in read_some leaves no parked operation", "[cancel]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    pipe_fds pipe;
    auto reader = [&]() -> cl::task<std::size_t> {
      std::array<std::byte, 16> buffer{};
      std::size_t got = co_await cl::read_some(pipe.read_end, buffer);
      co_return got;
    };
    auto handle = cl::create_task(reader);
    co_await cl::sleep(0ms);
    CHECK(loop.parked_operation_count() == 1);
    CHECK(handle.cancel());
    const std::size_t parked_after_cancel = co_await net_test::parked_once_settled();  // IOCP: after the packet
    CHECK(parked_after_cancel == 0);
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK(handle.cancelled());
    // The pipe still works for the next reader.
    CHECK(pipe.write("x") == 1);
    std::array<std::byte, 16> buffer{};
    std::size_t got = co_await cl::read_some(pipe.read_end, buffer);
    CHECK(got == 1);
    CHECK(loop.parked_operation_count() == 0);
    loop.release(pipe.read_end);
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("cancel: uncancel() takes requests back; with none left an undelivered cancel is dropped", "[cancel]") {
  auto body = []() -> cl::task<void> {
    // Requested and withdrawn before the first step: the body runs normally.
    bool ran = false;
    auto worker = [&]() -> cl::task<int> {
      ran = true;
      co_await cl::sleep(1ms);
      co_return 5;
    };
    auto withdrawn = cl::create_task(worker);
    CHECK(withdrawn.cancel());
    CHECK(withdrawn.cancelling() == 1);
    CHECK(withdrawn.uncancel() == 0);
    int value = co_await withdrawn;
    CHECK(ran);
    CHECK(value == 5);
    CHECK_FALSE(withdrawn.cancelled());

    // Two requests, one withdrawn: still cancelled.
    bool ran_second = false;
    auto second_body = [&]() -> cl::task<int> {
      ran_second = true;
      co_return 1;
    };
    auto twice = cl::create_task(second_body);
    twice.cancel();
    twice.cancel();
    CHECK(twice.cancelling() == 2);
    CHECK(twice.uncancel() == 1);
    CHECK(twice.cancelling() == 1);
    bool cancelled = co_await ends_cancelled(twice);
    CHECK(cancelled);
    CHECK_FALSE(ran_second);

    // The pattern of nested timeouts: the task uncancels the request it handled itself.
    auto self_handling = []() -> cl::task<int> {
      try {
        co_await cl::sleep(1h);
      } catch (const cl::cancelled_error&) {
        CHECK(cl::current_task().cancelling() == 1);
        CHECK(cl::current_task().uncancel() == 0);
      }
      co_await cl::sleep(1ms);  // no request left: this wait completes
      co_return cl::current_task().cancelling();
    };
    auto handled = cl::create_task(self_handling);
    co_await cl::sleep(0ms);
    handled.cancel();
    int left = co_await handled;
    CHECK(left == 0);
    CHECK_FALSE(handled.cancelled());
  };
  cl::run(body());
}

TEST_CASE("cancel: a cancel arriving after a task's wait completed, before it resumed, wins unless a result "
          "would be lost",
          "[cancel]") {
  SECTION("the wait is on another task: the await throws, the value stays with that task (asyncio)") {
    auto body = []() -> cl::task<void> {
      const cl::time_point deadline = cl::clock::now() + 10ms;
      std::vector<std::string> log;
      // producer's timer is armed before canceller's: same deadline, FIFO order.
      auto producer = cl::create_task([&]() -> cl::task<int> {
        co_await cl::sleep_until(deadline);
        co_return 42;
      });
      cl::task_handle<void> consumer;
      auto canceller = cl::create_task([&]() -> cl::task<void> {
        co_await cl::sleep_until(deadline);
        // producer finished in this iteration and woke consumer, which is
        // now ready but has not run: the cancel wins over the finished wait.
        CHECK(producer.done());
        CHECK_FALSE(consumer.done());
        log.push_back("cancel");
        consumer.cancel();
      });
      consumer = cl::create_task([&]() -> cl::task<void> {
        try {
          int value = co_await producer;
          log.push_back("got " + std::to_string(value));
        } catch (const cl::cancelled_error&) {
          log.push_back("cancelled at the await");
          throw;
        }
      });
      bool cancelled = co_await ends_cancelled(consumer);
      co_await canceller;
      CHECK(cancelled);
      CHECK(consumer.cancelled());
      CHECK_FALSE(producer.cancelled());
      CHECK(producer.result() == 42);
      CHECK(log == std::vector<std::string>{"cancel", "cancelled at the await"});
    };
    cl::run(body());
  }
  SECTION("the wait is a read that completed: its bytes are returned, the cancel hits the next wait") {
    auto body = []() -> cl::task<void> {
      pipe_fds pipe;
      std::vector<std::string> log;
      cl::task_handle<void> reader;
      auto trigger = cl::create_task([&]() -> cl::task<void> {
        co_await cl::sleep(0ms);  // reader is parked now
        CHECK(pipe.write("abc") == 3);
        // The loop polls the OS only every few iterations while it is busy:
        // yield until the poll has completed the read. This task was queued
        // before the reader was woken, so it runs first in that iteration.
        for (int i = 0; i < 1000 && cl::get_running_loop().parked_operation_count() != 0; ++i) {
          co_await cl::sleep(0ms);
        }
        CHECK(cl::get_running_loop().parked_operation_count() == 0);
        CHECK_FALSE(reader.done());
        log.push_back("cancel");
        reader.cancel();
      });
      reader = cl::create_task([&]() -> cl::task<void> {
        std::array<std::byte, 8> buffer{};
        std::size_t got = co_await cl::read_some(pipe.read_end, buffer);
        log.push_back("read " + std::to_string(got));
        try {
          co_await cl::sleep(0ms);
          log.push_back("yielded");
        } catch (const cl::cancelled_error&) {
          log.push_back("cancelled at next wait");
          throw;
        }
      });
      bool cancelled = co_await ends_cancelled(reader);
      co_await trigger;
      CHECK(cancelled);
      CHECK(log == std::vector<std::string>{"cancel", "read 3", "cancelled at next wait"});
      CHECK(cl::get_running_loop().parked_operation_count() == 0);
      cl::get_running_loop().release(pipe.read_end);
    };
    cl::run(body());
  }
}

TEST_CASE("cancel: a task that cancels itself gets cancelled_error at its next wait", "[cancel]") {
  SECTION("after a normal wait") {
    auto body = []() -> cl::task<std::string> {
      co_await cl::sleep(1ms);
      cl::current_task().cancel();
      try {
        co_await cl::sleep(0ms);
      } catch (const cl::cancelled_error&) {
        co_return "cancelled";
      }
      co_return "not cancelled";
    };
    CHECK(cl::run(body()) == "cancelled");
  }
  SECTION("after a cancelled sleep(0) was caught") {
    // The cancelled sleep(0) must not leave the task looking as if it still
    // waited there: the new request is delivered at the next wait (asyncio).
    auto body = []() -> cl::task<std::vector<std::string>> {
      std::vector<std::string> log;
      auto worker = [&]() -> cl::task<void> {
        try {
          co_await cl::sleep(0ms);
          log.push_back("first yield completed");
        } catch (const cl::cancelled_error&) {
          log.push_back("first cancelled");
        }
        cl::current_task().cancel();
        try {
          co_await cl::sleep(0ms);
          log.push_back("second yield completed");
        } catch (const cl::cancelled_error&) {
          log.push_back("second cancelled");
        }
      };
      auto handle = cl::create_task(worker);
      co_await cl::sleep(0ms);  // worker is in its sleep(0)
      handle.cancel();
      co_await handle;
      co_return log;
    };
    CHECK(cl::run(body()) == std::vector<std::string>{"first cancelled", "second cancelled"});
  }
}

TEST_CASE("cancel: cancelling many sleeping tasks leaves no timers and every one ends cancelled", "[cancel]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    std::vector<cl::task_handle<int>> handles;
    for (int i = 0; i < 1000; ++i) handles.push_back(cl::create_task(value_after(std::chrono::seconds(1 + i % 7), i)));
    co_await cl::sleep(0ms);
    CHECK(loop.timer_count() == 1000);
    for (std::size_t i = 0; i < handles.size(); i += 2) handles[i].cancel();
    CHECK(loop.timer_count() == 500);
    for (std::size_t i = 1; i < handles.size(); i += 2) handles[i].cancel();
    CHECK(loop.timer_count() == 0);
    int cancelled = 0;
    for (auto& handle : handles) {
      bool was = co_await ends_cancelled(handle);
      cancelled += was ? 1 : 0;
    }
    CHECK(cancelled == 1000);
  };
  cl::run(body());
}

TEST_CASE("cancel: random puts, gets, permits and cancels under gather, timeout and task_group lose and "
          "duplicate nothing",
          "[cancel]") {
  // Every put that returned delivers its item exactly once: to the code that
  // awaited a get, a gather of one get or a timeout around one (recorded as
  // it comes out), or it is still in the queue at the end. Cancels land everywhere, many in the very step an item or a
  // permit was handed over; what such a cancelled wait was granted must come
  // back. Permits: never more holders than permits, and all back at the end.
  auto body = []() -> cl::task<void> {
    constexpr int permits = 2;
    cl::queue<int> queue(3);
    cl::semaphore semaphore(permits);
    std::mt19937 random(1717);
    std::vector<int> put_ok;
    std::vector<int> got;
    int holders = 0;
    int most_holders = 0;
    int next_item = 0;

    auto get_and_record = [&]() -> cl::task<void> {
      int item = co_await queue.get();
      got.push_back(item);
    };
    auto hold_permit = [&](int steps) -> cl::task<void> {
      auto guard = co_await semaphore.scoped();
      most_holders = std::max(most_holders, ++holders);
      struct leave {
        int& count;
        ~leave() { --count; }
      } on_exit{holders};
      co_await yield(steps);
    };
    auto producer = [&](unsigned seed) -> cl::task<void> {
      std::mt19937 local(seed);
      for (int k = 0; k < 50; ++k) {
        const int item = next_item++;
        if (local() % 3 == 0) {
          if (queue.try_put(int(item))) put_ok.push_back(item);
        } else {
          co_await queue.put(int(item));
          put_ok.push_back(item);
        }
        co_await yield(static_cast<int>(local() % 3));
      }
    };
    // One consumer step in one of the shapes a program uses.
    auto consumer = [&](unsigned seed) -> cl::task<void> {
      std::mt19937 local(seed);
      for (;;) {
        switch (local() % 6) {
          case 0: {
            int item = co_await queue.get();
            got.push_back(item);
            break;
          }
          case 1: {
            // The value comes out of the combinator: an item handed to the
            // child and then cancelled with the gather must not vanish there.
            auto one = cl::gather(queue.get());
            auto [item] = co_await one;
            got.push_back(item);
            break;
          }
          case 2: {
            auto settled = cl::gather_settled(queue.get());
            auto [outcome] = co_await settled;
            if (outcome) got.push_back(outcome.value());
            break;
          }
          case 3: {
            auto bounded = cl::timeout(std::chrono::milliseconds(local() % 3), queue.get());
            try {
              int item = co_await bounded;
              got.push_back(item);
            } catch (const cl::timeout_error&) {
            }
            break;
          }
          case 4: {
            auto group_body = [&](cl::task_group& group) -> cl::task<void> {
              group.create_task(get_and_record());
              group.create_task(hold_permit(1));
              co_await get_and_record();
            };
            auto grouped = cl::with_task_group(group_body);
            co_await grouped;
            break;
          }
          default: {
            auto held = cl::timeout(std::chrono::milliseconds(local() % 3), hold_permit(static_cast<int>(local() % 3)));
            try {
              co_await held;
            } catch (const cl::timeout_error&) {
            }
            break;
          }
        }
      }
    };

    std::vector<cl::task_handle<void>> producers;
    std::vector<cl::task_handle<void>> consumers;
    for (int i = 0; i < 4; ++i) {
      producers.push_back(cl::create_task(producer, static_cast<unsigned>(random())));
      consumers.push_back(cl::create_task(consumer, static_cast<unsigned>(random())));
    }
    int cancels = 0;
    for (int step = 0; step < 3000; ++step) {
      co_await cl::sleep(0ms);
      switch (random() % 8) {
        case 0:
          if (consumers[random() % consumers.size()].cancel()) ++cancels;
          consumers.push_back(cl::create_task(consumer, static_cast<unsigned>(random())));
          break;
        case 1:
          if (producers[random() % producers.size()].cancel()) ++cancels;
          producers.push_back(cl::create_task(producer, static_cast<unsigned>(random())));
          break;
        case 2:
          // An item handed over and its getter cancelled in the same step.
          if (queue.try_put(next_item)) {
            put_ok.push_back(next_item);
            if (consumers[random() % consumers.size()].cancel()) ++cancels;
          }
          ++next_item;
          break;
        case 3: {
          // A permit handed over and its holder cancelled in the same step.
          auto extra = cl::create_task(hold_permit(0));
          consumers.push_back(cl::create_task(consumer, static_cast<unsigned>(random())));
          if (consumers[random() % consumers.size()].cancel()) ++cancels;
          co_await cl::sleep(0ms);
          if (extra.cancel()) ++cancels;
          try {
            co_await extra;
          } catch (const cl::cancelled_error&) {
          }
          break;
        }
        default:
          break;
      }
    }
    CHECK(cancels > 300);
    for (auto& handle : producers) handle.cancel();
    for (auto& handle : consumers) handle.cancel();
    for (auto* handles : {&producers, &consumers}) {
      for (auto& handle : *handles) {
        try {
          co_await handle;
        } catch (const cl::cancelled_error&) {
        } catch (const cl::exception_group&) {
        }
      }
    }
    while (std::optional<int> item = queue.try_get()) got.push_back(*item);
    std::sort(put_ok.begin(), put_ok.end());
    std::sort(got.begin(), got.end());
    CHECK(put_ok.size() > 1000);
    CHECK(std::adjacent_find(got.begin(), got.end()) == got.end());
    CHECK(got.size() == put_ok.size());
    CHECK(got == put_ok);
    CHECK(most_holders <= permits);
    CHECK(holders == 0);
    CHECK(semaphore.value() == static_cast<std::size_t>(permits));
  };
  cl::run(body());
}
