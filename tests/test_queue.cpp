// tests/test_queue.cpp - queue, lifo_queue, priority_queue [queue].
//
// asyncio.Queue in C++ (Python 3.13 for shutdown): put/get and their
// non-waiting forms, first-come first-served service of waiting getters and
// putters, no lost wake-ups, cancellation at every waiting point, task_done /
// join, shutdown, the three orders, move-only items, and a million items
// through a bounded queue. A cancel that reaches a getter after an item was
// handed to it, before it resumed, wins (asyncio): the item goes back to the
// front of the queue or to the next getter, so no item is ever lost.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "allocation_counter.hpp"
#include "task_helpers.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {


// A getter that logs (its id, its item) once served.
cl::task<void> logging_getter(cl::queue<int>& queue, int id, int delay_iterations,
                              std::vector<std::pair<int, int>>& log) {
  co_await yield(delay_iterations);
  int item = co_await queue.get();
  log.emplace_back(id, item);
}

// A putter that arrives after `delay_iterations` and logs its id once its put returned.
cl::task<void> logging_putter(cl::queue<int>& queue, int id, int item, int delay_iterations, std::vector<int>& log) {
  co_await yield(delay_iterations);
  co_await queue.put(item);
  log.push_back(id);
}

}  // namespace

// --- put / get and the non-waiting forms ---

TEST_CASE("queue: put and get pass items first in, first out; qsize, empty, full, maxsize", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(3);
    CHECK(queue.maxsize() == 3);
    CHECK(queue.qsize() == 0);
    CHECK(queue.empty());
    CHECK_FALSE(queue.full());
    co_await queue.put(1);
    co_await queue.put(2);
    CHECK(queue.qsize() == 2);
    CHECK_FALSE(queue.empty());
    CHECK_FALSE(queue.full());
    co_await queue.put(3);
    CHECK(queue.qsize() == 3);
    CHECK(queue.full());
    int first = co_await queue.get();
    int second = co_await queue.get();
    int third = co_await queue.get();
    CHECK(first == 1);
    CHECK(second == 2);
    CHECK(third == 3);
    CHECK(queue.empty());
    CHECK_FALSE(queue.full());
    CHECK_FALSE(queue.is_shut_down());
  };
  cl::run(body());
}

TEST_CASE("queue: get waits until an item is put", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    auto getter = cl::create_task(get_one(queue));
    co_await yield(3);
    CHECK_FALSE(getter.done());  // nothing to take: still waiting
    queue.put_nowait(7);
    CHECK(queue.empty());  // handed straight to the waiting getter
    int got = co_await getter;
    CHECK(got == 7);
    CHECK(queue.empty());
  };
  cl::run(body());
}

TEST_CASE("queue: put waits while the queue is full", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(1);
    co_await queue.put(1);
    bool put_returned = false;
    auto putter = [&]() -> cl::task<void> {
      co_await queue.put(2);
      put_returned = true;
    };
    auto handle = cl::create_task(putter);
    co_await yield(3);
    CHECK_FALSE(put_returned);
    CHECK(queue.qsize() == 1);
    int first = co_await queue.get();  // makes room: the waiting put goes in
    CHECK(first == 1);
    CHECK(queue.qsize() == 1);
    co_await handle;
    CHECK(put_returned);
    int second = co_await queue.get();
    CHECK(second == 2);
    CHECK(queue.empty());
  };
  cl::run(body());
}

TEST_CASE("queue: put_nowait throws queue_full and get_nowait throws queue_empty", "[queue]") {
  cl::queue<int> queue(2);
  queue.put_nowait(1);
  queue.put_nowait(2);
  CHECK(queue.full());
  CHECK_THROWS_AS(queue.put_nowait(3), cl::queue_full);
  CHECK(queue.qsize() == 2);  // the failed put changed nothing
  CHECK(queue.get_nowait() == 1);
  CHECK(queue.get_nowait() == 2);
  CHECK_THROWS_AS(queue.get_nowait(), cl::queue_empty);
  CHECK(queue.empty());
  // Both are std::runtime_errors with a message, like every library error.
  CHECK_THROWS_WITH(queue.get_nowait(), Catch::Matchers::ContainsSubstring("queue_empty"));
  queue.put_nowait(3);
  queue.put_nowait(4);
  CHECK_THROWS_WITH(queue.put_nowait(5), Catch::Matchers::ContainsSubstring("queue_full"));
}

TEST_CASE("queue: try_put and try_get report instead of throwing; a refused item stays with the caller", "[queue]") {
  cl::queue<std::unique_ptr<int>> queue(1);
  auto first = std::make_unique<int>(1);
  // An lvalue is copied (so a move-only item must be passed with std::move);
  // an rvalue is consumed only when the queue takes it.
  CHECK(queue.try_put(std::move(first)));
  CHECK(first == nullptr);  // taken by the queue
  auto second = std::make_unique<int>(2);
  CHECK_FALSE(queue.try_put(std::move(second)));
  REQUIRE(second != nullptr);  // refused: still ours
  CHECK(*second == 2);
  CHECK_FALSE(queue.try_put(std::move(second)));
  REQUIRE(second != nullptr);  // an rvalue that was refused is not consumed either
  CHECK(queue.qsize() == 1);
  std::optional<std::unique_ptr<int>> got = queue.try_get();
  REQUIRE(got.has_value());
  CHECK(**got == 1);
  CHECK_FALSE(queue.try_get().has_value());
  CHECK(queue.try_put(std::move(second)));
  CHECK(second == nullptr);
  std::optional<std::unique_ptr<int>> again = queue.try_get();
  REQUIRE(again.has_value());
  CHECK(**again == 2);
}

TEST_CASE("queue: maxsize 0 is unbounded: put never waits", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;  // maxsize 0
    CHECK(queue.maxsize() == 0);
    bool other_ran = false;
    auto other = [&]() -> cl::task<void> {
      other_ran = true;
      co_return;
    };
    auto handle = cl::create_task(other);
    for (int i = 0; i < 100000; ++i) co_await queue.put(i);
    CHECK_FALSE(other_ran);  // no put suspended, so the other task never got a turn
    CHECK(queue.qsize() == 100000);
    CHECK_FALSE(queue.full());
    queue.put_nowait(100000);
    CHECK(queue.try_put(100001));
    for (int i = 0; i <= 100001; ++i) {
      if (queue.get_nowait() != i) {
        FAIL("out of order at " << i);
      }
    }
    CHECK(queue.empty());
    co_await handle;
    CHECK(other_ran);
  };
  cl::run(body());
}

// --- fairness and wake-ups ---

TEST_CASE("queue: waiting getters are served in the order they arrived", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    std::vector<std::pair<int, int>> log;  // (getter id, item)
    std::vector<cl::task_handle<void>> getters;
    // Created 0..4, but getter i arrives after 4 - i iterations: arrival order 4, 3, 2, 1, 0.
    for (int id = 0; id < 5; ++id) getters.push_back(cl::create_task(logging_getter(queue, id, 4 - id, log)));
    co_await yield(8);
    CHECK(log.empty());
    for (int item = 10; item < 15; ++item) queue.put_nowait(item);
    for (auto& getter : getters) co_await getter;
    CHECK(log == std::vector<std::pair<int, int>>{{4, 10}, {3, 11}, {2, 12}, {1, 13}, {0, 14}});
    CHECK(queue.empty());
  };
  cl::run(body());
}

TEST_CASE("queue: waiting putters are served in the order they arrived", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(1);
    queue.put_nowait(0);
    std::vector<int> returned;  // putter ids, in the order their put returned
    std::vector<cl::task_handle<void>> putters;
    // Putter i puts 100 + i and arrives after 4 - i iterations: arrival order 4, 3, 2, 1, 0.
    for (int id = 0; id < 5; ++id) putters.push_back(cl::create_task(logging_putter(queue, id, 100 + id, 4 - id, returned)));
    co_await yield(8);
    CHECK(returned.empty());
    CHECK(queue.full());
    CHECK_FALSE(queue.try_put(999));  // a newcomer does not jump the waiting putters
    std::vector<int> items;
    for (int i = 0; i < 6; ++i) {
      int item = co_await queue.get();
      items.push_back(item);
      co_await yield();
    }
    for (auto& putter : putters) co_await putter;
    CHECK(items == std::vector<int>{0, 104, 103, 102, 101, 100});
    CHECK(returned == std::vector<int>{4, 3, 2, 1, 0});
    CHECK(queue.empty());
  };
  cl::run(body());
}

TEST_CASE("queue: handing an item to a waiting getter allocates nothing", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    int got = 0;
    auto getter = [&]() -> cl::task<void> { got = co_await queue.get(); };
    auto handle = cl::create_task(getter);
    co_await cl::sleep(0ms);  // the getter is parked (its frame already exists)
    const long before = allocations;
    queue.put_nowait(1);      // the hand-off...
    co_await cl::sleep(0ms);  // ...and the getter's resumption
    const long during = allocations - before;
    CHECK(got == 1);
    if (COUNT_ALLOCATIONS) CHECK(during == 0);
    co_await handle;
  };
  cl::run(body());
}

TEST_CASE("queue: an item handed to a waiting getter cannot be taken by a newcomer", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    auto first = cl::create_task(get_one(queue));
    co_await yield();
    queue.put_nowait(1);  // handed to `first`, which has not run yet
    CHECK(queue.qsize() == 0);
    CHECK_FALSE(queue.try_get().has_value());
    CHECK_THROWS_AS(queue.get_nowait(), cl::queue_empty);
    auto newcomer = cl::create_task(get_one(queue));
    co_await yield(2);
    CHECK(first.done());
    CHECK_FALSE(newcomer.done());
    queue.put_nowait(2);
    int first_got = co_await first;
    int newcomer_got = co_await newcomer;
    CHECK(first_got == 1);
    CHECK(newcomer_got == 2);
  };
  cl::run(body());
}

TEST_CASE("queue: no lost wake-ups with many getters and putters interleaved", "[queue]") {
  auto body = []() -> cl::task<void> {
    constexpr int producers = 8;
    constexpr int consumers = 8;
    constexpr int per_task = 250;
    cl::queue<int> queue(3);
    std::vector<int> seen(producers * per_task, 0);
    std::mt19937 random(12345);  // a fixed interleaving, varied but reproducible
    auto producer = [&](int id, unsigned seed) -> cl::task<void> {
      std::mt19937 local(seed);
      for (int k = 0; k < per_task; ++k) {
        co_await yield(static_cast<int>(local() % 3));
        co_await queue.put(id * per_task + k);
      }
    };
    auto consumer = [&](unsigned seed) -> cl::task<void> {
      std::mt19937 local(seed);
      for (int k = 0; k < per_task; ++k) {
        int item = co_await queue.get();
        ++seen.at(static_cast<std::size_t>(item));
        co_await yield(static_cast<int>(local() % 3));
      }
    };
    std::vector<cl::task_handle<void>> tasks;
    for (int i = 0; i < producers || i < consumers; ++i) {
      if (i < consumers) tasks.push_back(cl::create_task(consumer, static_cast<unsigned>(random())));
      if (i < producers) tasks.push_back(cl::create_task(producer, i, static_cast<unsigned>(random())));
    }
    std::size_t finished = co_await settle(tasks, 50s);
    CHECK(finished == tasks.size());
    std::size_t exactly_once = 0;
    for (int count : seen) exactly_once += count == 1 ? 1 : 0;
    CHECK(exactly_once == seen.size());
    CHECK(queue.empty());
  };
  cl::run(body());
}

// --- cancellation at every waiting point ---

TEST_CASE("queue: a cancelled get loses no item", "[queue]") {
  SECTION("the item goes to the next waiting getter") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto first = cl::create_task(get_one(queue));
      auto second = cl::create_task(get_one(queue));
      co_await yield();
      CHECK(first.cancel());
      queue.put_nowait(5);  // in the same step as the cancel
      bool first_cancelled = co_await ends_cancelled(first);
      int second_got = co_await second;
      CHECK(first_cancelled);
      CHECK(second_got == 5);
      CHECK(queue.empty());
    };
    cl::run(body());
  }
  SECTION("the item stays in the queue") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto getter = cl::create_task(get_one(queue));
      co_await yield();
      CHECK(getter.cancel());
      queue.put_nowait(5);  // before the cancelled getter ran again
      CHECK(queue.qsize() == 1);
      bool cancelled = co_await ends_cancelled(getter);
      CHECK(cancelled);
      CHECK(queue.qsize() == 1);
      queue.put_nowait(6);
      CHECK(queue.get_nowait() == 5);
      CHECK(queue.get_nowait() == 6);
    };
    cl::run(body());
  }
  SECTION("later getters are served normally") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto getter = cl::create_task(get_one(queue));
      co_await yield();
      getter.cancel();
      bool cancelled = co_await ends_cancelled(getter);
      CHECK(cancelled);
      auto next = cl::create_task(get_one(queue));
      co_await yield();
      queue.put_nowait(9);
      int got = co_await next;
      CHECK(got == 9);
      CHECK(queue.empty());
    };
    cl::run(body());
  }
}

TEST_CASE("queue: a cancelled put inserts nothing and leaves no waiter behind", "[queue]") {
  SECTION("alone") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue(1);
      queue.put_nowait(1);
      auto put_two = [&]() -> cl::task<void> { co_await queue.put(2); };
      auto putter = cl::create_task(put_two);
      co_await yield();
      CHECK(putter.cancel());
      bool cancelled = co_await ends_cancelled(putter);
      CHECK(cancelled);
      CHECK(queue.qsize() == 1);
      int got = co_await queue.get();
      CHECK(got == 1);
      co_await yield();
      CHECK(queue.empty());  // 2 was never inserted
      CHECK_FALSE(queue.try_get().has_value());
      // Later puts and gets behave: no phantom putter takes the free slot.
      co_await queue.put(4);
      CHECK_THROWS_AS(queue.put_nowait(5), cl::queue_full);
      CHECK(queue.get_nowait() == 4);
    };
    cl::run(body());
  }
  SECTION("ahead of another putter, which then gets the slot") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue(1);
      queue.put_nowait(1);
      auto put_two = [&]() -> cl::task<void> { co_await queue.put(2); };
      auto put_three = [&]() -> cl::task<void> { co_await queue.put(3); };
      auto first = cl::create_task(put_two);
      auto second = cl::create_task(put_three);
      co_await yield();
      CHECK(first.cancel());
      int got = co_await queue.get();  // in the same step as the cancel
      CHECK(got == 1);
      bool first_cancelled = co_await ends_cancelled(first);
      co_await second;
      CHECK(first_cancelled);
      CHECK(queue.qsize() == 1);
      CHECK(queue.get_nowait() == 3);
      CHECK(queue.empty());
    };
    cl::run(body());
  }
}

TEST_CASE("queue: an item handed to a getter cancelled before it resumed goes back to the front of the queue",
          "[queue]") {
  // asyncio's rule: a cancel that reaches a task before it resumes wins, and
  // the item it was handed is not lost: it goes back where a get finds it.
  SECTION("a plain get") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      bool got_an_item = false;
      auto getter = [&]() -> cl::task<void> {
        (void)co_await queue.get();
        got_an_item = true;
      };
      auto handle = cl::create_task(getter);
      co_await yield();
      queue.put_nowait(1);     // handed to the getter...
      CHECK(handle.cancel());  // ...which is cancelled before it ran again
      queue.put_nowait(2);
      bool cancelled = co_await ends_cancelled(handle);
      CHECK(cancelled);
      CHECK_FALSE(got_an_item);
      CHECK(queue.qsize() == 2);
      CHECK(queue.get_nowait() == 1);  // first, ahead of the later put
      CHECK(queue.get_nowait() == 2);
    };
    cl::run(body());
  }
  SECTION("the item goes straight to the next waiting getter") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto first = cl::create_task(get_one(queue));
      auto second = cl::create_task(get_one(queue));
      co_await yield();
      queue.put_nowait(7);
      CHECK(first.cancel());
      bool first_cancelled = co_await ends_cancelled(first);
      int second_got = co_await second;
      CHECK(first_cancelled);
      CHECK(second_got == 7);
      CHECK(queue.empty());
    };
    cl::run(body());
  }
  SECTION("gather(q.get(), sleep(10s)) cancelled in the step the item arrives") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto outer = cl::create_task(cl::gather(queue.get(), cl::sleep(10s)));
      co_await yield(2);  // the gather started its children, and they wait
      queue.put_nowait(2);
      CHECK(outer.cancel());
      bool cancelled = co_await ends_cancelled(outer);
      CHECK(cancelled);
      CHECK(queue.qsize() == 1);
      CHECK(queue.get_nowait() == 2);
    };
    cl::run(body());
  }
  SECTION("gather_settled(q.get(), sleep(10s)) cancelled in the step the item arrives") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto outer = cl::create_task(cl::gather_settled(queue.get(), cl::sleep(10s)));
      co_await yield(2);  // the gather started its children, and they wait
      queue.put_nowait(3);
      CHECK(outer.cancel());
      bool cancelled = co_await ends_cancelled(outer);
      CHECK(cancelled);
      CHECK(queue.qsize() == 1);
      CHECK(queue.get_nowait() == 3);
    };
    cl::run(body());
  }
  SECTION("a task_group child cancelled in the step the item arrives") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      // The body returns at once: the join waits, and the outer cancel
      // reaches the child through the group in the step the item arrives.
      auto group_body = [&](cl::task_group& group) -> cl::task<void> {
        group.create_task(get_one(queue));
        co_return;
      };
      auto outer = cl::create_task(cl::with_task_group(group_body));
      co_await yield(2);
      queue.put_nowait(4);
      CHECK(outer.cancel());
      bool cancelled = co_await ends_cancelled(outer);
      CHECK(cancelled);
      CHECK(queue.qsize() == 1);
      CHECK(queue.get_nowait() == 4);
    };
    cl::run(body());
  }
  SECTION("timeout_at expiring in the step the item arrives") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      const cl::time_point deadline = cl::clock::now() + 20ms;
      // Armed before the getter's deadline, for the same instant: the put
      // runs in the iteration the deadline passes, before the expiry notice,
      // which then reaches a getter that was handed the item but not resumed.
      bool put_done = false;
      cl::get_running_loop().call_at(deadline, [&] {
        queue.put_nowait(5);
        put_done = true;
      });
      auto getter = cl::create_task(cl::timeout_at(deadline, queue.get()));
      std::string outcome = co_await outcome_of(getter);
      CHECK(put_done);
      CHECK(outcome == "timeout");
      CHECK(queue.qsize() == 1);
      CHECK(queue.get_nowait() == 5);
    };
    cl::run(body());
  }
  SECTION("a getter that returns before a later suspension point still keeps what it took without waiting") {
    // Work that completes without suspending keeps its value: the cancel is
    // delivered at the next suspension point.
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      queue.put_nowait(8);
      std::optional<int> got;
      auto getter = [&]() -> cl::task<void> {
        cl::current_task().cancel();
        got = co_await queue.get();  // an item is there: no suspension
        co_await cl::sleep(0ms);     // the cancel lands here
      };
      auto handle = cl::create_task(getter);
      bool cancelled = co_await ends_cancelled(handle);
      CHECK(cancelled);
      REQUIRE(got.has_value());
      CHECK(*got == 8);
      CHECK(queue.empty());
    };
    cl::run(body());
  }
}

TEST_CASE("queue: a put cancelled right after its item was taken in still completes", "[queue]") {
  // The put's grant is the insertion itself: its item is already in the
  // queue (a getter may have it), so the put returns and the cancel arrives
  // at the next suspension point, as for I/O the OS already performed.
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(1);
    queue.put_nowait(1);
    bool put_returned = false;
    bool cancelled_later = false;
    auto putter = [&]() -> cl::task<void> {
      co_await queue.put(2);
      put_returned = true;
      try {
        co_await cl::sleep(0ms);
      } catch (const cl::cancelled_error&) {
        cancelled_later = true;
        throw;
      }
    };
    auto handle = cl::create_task(putter);
    co_await yield();
    CHECK(queue.get_nowait() == 1);  // room: the waiting put's item moves in
    CHECK(handle.cancel());
    bool cancelled = co_await ends_cancelled(handle);
    CHECK(cancelled);
    CHECK(put_returned);
    CHECK(cancelled_later);
    CHECK(queue.qsize() == 1);
    CHECK(queue.get_nowait() == 2);
  };
  cl::run(body());
}

TEST_CASE("queue: a get or put under timeout() that expires throws timeout_error and loses no item", "[queue]") {
  SECTION("get on an empty queue") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      const cl::time_point start = cl::clock::now();
      std::string outcome = co_await outcome_of(cl::timeout(20ms, queue.get()));
      CHECK(outcome == "timeout");
      CHECK(cl::clock::now() - start >= 20ms);
      CHECK(cl::clock::now() - start < 30s);
      queue.put_nowait(1);  // no ghost getter swallows it
      CHECK(queue.qsize() == 1);
      CHECK(queue.get_nowait() == 1);
    };
    cl::run(body());
  }
  SECTION("put on a full queue") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue(1);
      queue.put_nowait(1);
      std::string outcome = co_await outcome_of(cl::timeout(20ms, queue.put(2)));
      CHECK(outcome == "timeout");
      CHECK(queue.get_nowait() == 1);
      CHECK(queue.empty());  // 2 was not inserted on the way out
      queue.put_nowait(3);
      CHECK(queue.get_nowait() == 3);
    };
    cl::run(body());
  }
  SECTION("get served before the deadline") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto getter = [&]() -> cl::task<int> { co_return co_await cl::timeout(30s, queue.get()); };
      auto handle = cl::create_task(getter);
      co_await yield();
      queue.put_nowait(4);
      int got = co_await handle;
      CHECK(got == 4);
      CHECK(cl::get_running_loop().timer_count() == 0);
    };
    cl::run(body());
  }
  SECTION("an item handed over after the deadline passed but before the timer fired") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto getter = [&]() -> cl::task<int> { co_return co_await cl::timeout(10ms, queue.get()); };
      auto handle = cl::create_task(getter);
      co_await yield();                   // the getter waits, its deadline armed
      std::this_thread::sleep_for(50ms);  // the deadline passes while the loop is busy here
      queue.put_nowait(5);                // the wait is granted first: the item is the getter's
      std::string outcome = "ok";
      int got = 0;
      try {
        got = co_await handle;
      } catch (const cl::timeout_error&) {
        outcome = "timeout";
      }
      CHECK(outcome == "ok");
      CHECK(got == 5);
      CHECK(queue.empty());
    };
    cl::run(body());
  }
}

TEST_CASE("queue: random cancellations of getters and putters lose and duplicate nothing", "[queue]") {
  // Every put that returned normally delivers its item exactly once (to a get
  // that returned normally, or it is still in the queue); a put that threw
  // cancelled_error delivers nothing. Cancels land everywhere: on waiting
  // gets and puts, just after a hand-off, and between operations.
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(2);
    std::mt19937 random(2024);
    std::vector<int> put_ok;
    std::vector<int> got;
    auto putter = [&](int id, unsigned seed) -> cl::task<void> {
      std::mt19937 local(seed);
      for (int k = 0; k < 200; ++k) {
        const int item = id * 1000 + k;
        co_await queue.put(item);
        put_ok.push_back(item);
        co_await yield(static_cast<int>(local() % 2));
      }
    };
    auto getter = [&](unsigned seed) -> cl::task<void> {
      std::mt19937 local(seed);
      for (;;) {
        std::optional<int> item;
        try {
          item = co_await queue.get();
        } catch (const cl::queue_shut_down&) {
        }
        if (!item) co_return;
        got.push_back(*item);
        co_await yield(static_cast<int>(local() % 2));
      }
    };
    std::vector<cl::task_handle<void>> putters;
    std::vector<cl::task_handle<void>> getters;
    int next_putter_id = 0;
    for (int i = 0; i < 6; ++i) {
      putters.push_back(cl::create_task(putter, next_putter_id++, static_cast<unsigned>(random())));
      getters.push_back(cl::create_task(getter, static_cast<unsigned>(random())));
    }
    int cancels = 0;
    for (int step = 0; step < 3000; ++step) {
      co_await yield();
      const unsigned roll = random() % 8;
      if (roll == 0) {
        auto& victim = getters[random() % getters.size()];
        if (victim.cancel()) ++cancels;
        getters.push_back(cl::create_task(getter, static_cast<unsigned>(random())));
      } else if (roll == 1) {
        auto& victim = putters[random() % putters.size()];
        if (victim.cancel()) ++cancels;
        putters.push_back(cl::create_task(putter, next_putter_id++, static_cast<unsigned>(random())));
      }
    }
    CHECK(cancels > 100);
    // Let every putter finish while the getters still run, then stop the getters.
    std::size_t putters_finished = co_await settle(putters, 50s);
    CHECK(putters_finished == putters.size());
    queue.shutdown();  // the getters drain the queue, then stop
    std::size_t getters_finished = co_await settle(getters, 50s);
    CHECK(getters_finished == getters.size());
    CHECK(queue.empty());
    std::sort(put_ok.begin(), put_ok.end());
    std::sort(got.begin(), got.end());
    CHECK(put_ok.size() > 1000);
    CHECK(std::adjacent_find(put_ok.begin(), put_ok.end()) == put_ok.end());
    CHECK(got.size() == put_ok.size());
    CHECK(got == put_ok);
  };
  cl::run(body());
}

// --- task_done / join ---

TEST_CASE("queue: join waits until every item put was marked task_done", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    co_await queue.join();  // nothing put: returns at once
    for (int i = 0; i < 3; ++i) queue.put_nowait(i);
    bool joined = false;
    auto joiner = [&]() -> cl::task<void> {
      co_await queue.join();
      joined = true;
    };
    auto handle = cl::create_task(joiner);
    for (int i = 0; i < 3; ++i) {
      (void)co_await queue.get();
      co_await yield(2);
      CHECK_FALSE(joined);  // got, not yet done
      queue.task_done();
    }
    co_await handle;
    CHECK(joined);
    co_await queue.join();  // still at zero
  };
  cl::run(body());
}

TEST_CASE("queue: task_done called more times than items were put throws invalid_state_error", "[queue]") {
  cl::queue<int> queue;
  CHECK_THROWS_AS(queue.task_done(), cl::invalid_state_error);
  queue.put_nowait(1);
  queue.put_nowait(2);
  (void)queue.get_nowait();
  queue.task_done();
  queue.task_done();  // the second item was put, not yet got: still allowed (asyncio)
  CHECK_THROWS_AS(queue.task_done(), cl::invalid_state_error);
}

TEST_CASE("queue: a cancelled join leaves the other joiners and the queue working", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    queue.put_nowait(1);
    auto first = cl::create_task(queue.join());
    auto second = cl::create_task(queue.join());
    co_await yield();
    CHECK(first.cancel());
    bool first_cancelled = co_await ends_cancelled(first);
    CHECK(first_cancelled);
    CHECK_FALSE(second.done());
    (void)queue.get_nowait();
    queue.task_done();
    co_await second;
    // Another round, with a fresh joiner.
    queue.put_nowait(2);
    auto third = cl::create_task(queue.join());
    co_await yield();
    CHECK_FALSE(third.done());
    (void)queue.get_nowait();
    queue.task_done();
    co_await third;
  };
  cl::run(body());
}

TEST_CASE("queue: join under timeout() that expires leaves no joiner behind", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    queue.put_nowait(1);
    std::string outcome = co_await outcome_of(cl::timeout(20ms, queue.join()));
    CHECK(outcome == "timeout");
    (void)queue.get_nowait();
    queue.task_done();
    co_await queue.join();
  };
  cl::run(body());
}

TEST_CASE("queue: get(), put() and join() are awaitables that timeout() and create_task() accept", "[queue]") {
  // timeout(d, aw), wait_for(aw, d) and create_task(aw) take the awaitable by
  // value, so each must be movable until awaited.
  using queue_type = cl::queue<int>;
  CHECK(std::is_move_constructible_v<decltype(std::declval<queue_type&>().get())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<queue_type&>().put(1))>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<queue_type&>().join())>);
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(1);
    auto getter = cl::create_task(queue.get());
    auto joiner = cl::create_task(queue.join());  // nothing put yet: done at its first step
    co_await yield();
    CHECK(joiner.done());
    queue.put_nowait(1);
    auto putter = cl::create_task(queue.put(2));
    int got = co_await getter;
    co_await putter;
    CHECK(got == 1);
    CHECK(queue.get_nowait() == 2);
    std::string late = co_await outcome_of(cl::wait_for(queue.get(), 10ms));
    CHECK(late == "timeout");
  };
  cl::run(body());
}

// --- shutdown (Python 3.13) ---

TEST_CASE("queue: shutdown() fails waiting and later putters; getters drain the items first", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue(2);
    queue.put_nowait(1);
    queue.put_nowait(2);
    auto waiting_put = [&]() -> cl::task<std::string> { co_return co_await outcome_of(queue.put(3)); };
    auto putter = cl::create_task(waiting_put);
    co_await yield();
    queue.shutdown();
    CHECK(queue.is_shut_down());
    std::string putter_outcome = co_await putter;
    CHECK(putter_outcome == "queue_shut_down");
    CHECK_THROWS_AS(queue.put_nowait(4), cl::queue_shut_down);
    CHECK_THROWS_AS(queue.try_put(4), cl::queue_shut_down);
    std::string later_put = co_await outcome_of(queue.put(5));
    CHECK(later_put == "queue_shut_down");
    CHECK(queue.qsize() == 2);  // nothing was dropped, nothing added
    int first = co_await queue.get();
    CHECK(first == 1);
    CHECK(queue.get_nowait() == 2);
    std::string drained_get = co_await outcome_of(queue.get());
    CHECK(drained_get == "queue_shut_down");
    CHECK_THROWS_AS(queue.get_nowait(), cl::queue_shut_down);
    CHECK_THROWS_AS(queue.try_get(), cl::queue_shut_down);
    // The items that were got can still be marked done, and join then returns.
    queue.task_done();
    queue.task_done();
    co_await queue.join();
  };
  cl::run(body());
}

TEST_CASE("queue: shutdown() wakes the getters waiting on an empty queue with queue_shut_down", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::queue<int> queue;
    auto waiting_get = [&]() -> cl::task<std::string> { co_return co_await outcome_of(queue.get()); };
    auto first = cl::create_task(waiting_get);
    auto second = cl::create_task(waiting_get);
    co_await yield();
    CHECK_FALSE(first.done());
    queue.shutdown();
    std::string first_outcome = co_await first;
    std::string second_outcome = co_await second;
    CHECK(first_outcome == "queue_shut_down");
    CHECK(second_outcome == "queue_shut_down");
  };
  cl::run(body());
}

TEST_CASE("queue: shutdown(immediate) drops the items, fails the waiters and releases join", "[queue]") {
  SECTION("waiting getters throw at once") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto waiting_get = [&]() -> cl::task<std::string> { co_return co_await outcome_of(queue.get()); };
      auto getter = cl::create_task(waiting_get);
      co_await yield();
      queue.shutdown(true);
      std::string outcome = co_await getter;
      CHECK(outcome == "queue_shut_down");
    };
    cl::run(body());
  }
  SECTION("waiting putters throw, items are dropped, join is released") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue(2);
      queue.put_nowait(1);
      queue.put_nowait(2);
      auto waiting_put = [&]() -> cl::task<std::string> { co_return co_await outcome_of(queue.put(3)); };
      auto putter = cl::create_task(waiting_put);
      auto joiner = cl::create_task(queue.join());
      co_await yield();
      CHECK_FALSE(joiner.done());
      queue.shutdown(true);
      CHECK(queue.qsize() == 0);
      std::string putter_outcome = co_await putter;
      CHECK(putter_outcome == "queue_shut_down");
      co_await joiner;  // the dropped items' task_done debt is gone
      std::string get_outcome = co_await outcome_of(queue.get());
      CHECK(get_outcome == "queue_shut_down");
      CHECK_THROWS_AS(queue.get_nowait(), cl::queue_shut_down);
      CHECK_THROWS_AS(queue.task_done(), cl::invalid_state_error);
    };
    cl::run(body());
  }
  SECTION("join still waits for the items got before the shutdown") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      for (int i = 0; i < 3; ++i) queue.put_nowait(i);
      CHECK(queue.get_nowait() == 0);  // got, not yet task_done
      auto joiner = cl::create_task(queue.join());
      co_await yield();
      queue.shutdown(true);
      co_await yield(2);
      CHECK_FALSE(joiner.done());
      queue.task_done();
      co_await joiner;
    };
    cl::run(body());
  }
  SECTION("an item already handed to a getter stays that getter's") {
    auto body = []() -> cl::task<void> {
      cl::queue<int> queue;
      auto getter = cl::create_task(get_one(queue));
      co_await yield();
      queue.put_nowait(7);   // granted to the getter, which has not run yet
      queue.shutdown(true);  // a completed wait is not undone
      int got = co_await getter;
      CHECK(got == 7);
    };
    cl::run(body());
  }
}

// --- the other orders ---

TEST_CASE("lifo_queue: last in, first out, on the waiting paths too", "[queue]") {
  auto body = []() -> cl::task<void> {
    cl::lifo_queue<int> queue(3);
    co_await queue.put(1);
    co_await queue.put(2);
    queue.put_nowait(3);
    CHECK(queue.full());
    auto putter = [&]() -> cl::task<void> { co_await queue.put(4); };
    auto handle = cl::create_task(putter);
    co_await yield();
    std::vector<int> got;
    for (int i = 0; i < 4; ++i) {
      int item = co_await queue.get();
      got.push_back(item);
    }
    co_await handle;
    CHECK(got == std::vector<int>{3, 4, 2, 1});  // 4 entered when 3 left, so it is the newest
    auto getter = [&]() -> cl::task<int> { co_return co_await queue.get(); };
    auto waiting = cl::create_task(getter);
    co_await yield();
    queue.put_nowait(5);
    int waited = co_await waiting;
    CHECK(waited == 5);
  };
  cl::run(body());
}

namespace {
struct job {
  int priority;
  std::string name;
};
struct by_priority {
  bool operator()(const job& a, const job& b) const { return a.priority < b.priority; }
};
}  // namespace

TEST_CASE("priority_queue: smallest first by Compare, on the waiting paths too", "[queue]") {
  SECTION("std::less: the lowest value first") {
    cl::priority_queue<int> queue;
    for (int item : {5, 1, 4, 2, 3}) queue.put_nowait(item);
    std::vector<int> got;
    while (!queue.empty()) got.push_back(queue.get_nowait());
    CHECK(got == std::vector<int>{1, 2, 3, 4, 5});
  }
  SECTION("std::greater: the highest value first") {
    cl::priority_queue<int, std::greater<int>> queue;
    for (int item : {5, 1, 4, 2, 3}) queue.put_nowait(item);
    std::vector<int> got;
    while (!queue.empty()) got.push_back(queue.get_nowait());
    CHECK(got == std::vector<int>{5, 4, 3, 2, 1});
  }
  SECTION("a custom Compare on a struct, with a waiting putter and a waiting getter") {
    auto body = []() -> cl::task<void> {
      cl::priority_queue<job, by_priority> queue(2);
      queue.put_nowait(job{5, "five"});
      queue.put_nowait(job{7, "seven"});
      auto putter = [&]() -> cl::task<void> {
        // Named first: GCC 12 bitwise-copies a braced aggregate temporary passed
        // by value inside a co_await expression, and the copy's std::string
        // then frees a frame address (a compiler bug, also met by Asio users:
        // `co_await queue.put(job{1, "one"})` crashes under g++ 12 only).
        job one{1, "one"};
        co_await queue.put(std::move(one));
      };
      auto handle = cl::create_task(putter);
      co_await yield();
      CHECK(queue.full());
      std::vector<std::string> got;
      for (int i = 0; i < 3; ++i) {
        job item = co_await queue.get();
        got.push_back(item.name);
      }
      co_await handle;
      CHECK(got == std::vector<std::string>{"five", "one", "seven"});
      auto getter = [&]() -> cl::task<job> { co_return co_await queue.get(); };
      auto waiting = cl::create_task(getter);
      co_await yield();
      queue.put_nowait(job{9, "nine"});
      job waited = co_await waiting;
      CHECK(waited.name == "nine");
    };
    cl::run(body());
  }
}

// --- move-only items ---

namespace {
struct by_pointee {
  bool operator()(const std::unique_ptr<int>& a, const std::unique_ptr<int>& b) const { return *a < *b; }
};

// Drives one queue kind through every path with std::unique_ptr<int> items:
// put/get, the non-waiting forms, a waiting getter, a waiting putter, a
// cancelled put (its item must be destroyed, not leaked) and a cancelled get.
// `expected` is the order the items 10, 20 (queued) and 30 (a waiting put)
// come out in.
template <class Queue>
cl::task<void> move_only_paths(std::vector<int> expected) {
  using item = std::unique_ptr<int>;
  Queue queue(2);
  co_await queue.put(std::make_unique<int>(1));
  item one = co_await queue.get();
  REQUIRE(one != nullptr);
  CHECK(*one == 1);

  queue.put_nowait(std::make_unique<int>(2));
  item two = queue.get_nowait();
  CHECK(*two == 2);
  item three = std::make_unique<int>(3);
  CHECK(queue.try_put(std::move(three)));
  std::optional<item> three_back = queue.try_get();
  REQUIRE(three_back.has_value());
  CHECK(**three_back == 3);

  // A waiting getter is handed the item.
  auto getter = [&]() -> cl::task<item> { co_return co_await queue.get(); };
  auto getter_handle = cl::create_task(getter);
  co_await yield();
  co_await queue.put(std::make_unique<int>(4));
  item four = co_await getter_handle;
  REQUIRE(four != nullptr);
  CHECK(*four == 4);

  // A waiting putter's item moves in when room is made.
  queue.put_nowait(std::make_unique<int>(10));
  queue.put_nowait(std::make_unique<int>(20));
  auto putter = [&]() -> cl::task<void> { co_await queue.put(std::make_unique<int>(30)); };
  auto putter_handle = cl::create_task(putter);
  co_await yield();
  CHECK(queue.full());
  std::vector<int> order;
  for (int i = 0; i < 3; ++i) {
    item taken = co_await queue.get();
    order.push_back(*taken);
  }
  co_await putter_handle;
  CHECK(order == expected);

  // A cancelled put: its item is destroyed with the put, never inserted.
  queue.put_nowait(std::make_unique<int>(40));
  queue.put_nowait(std::make_unique<int>(50));
  auto doomed_put = [&]() -> cl::task<void> { co_await queue.put(std::make_unique<int>(60)); };
  auto doomed_putter = cl::create_task(doomed_put);
  co_await yield();
  doomed_putter.cancel();
  bool put_cancelled = co_await ends_cancelled(doomed_putter);
  CHECK(put_cancelled);
  std::vector<int> left;
  while (!queue.empty()) left.push_back(*queue.get_nowait());
  std::sort(left.begin(), left.end());
  CHECK(left == std::vector<int>{40, 50});

  // A cancelled get takes nothing.
  auto doomed_getter = cl::create_task(getter);
  co_await yield();
  doomed_getter.cancel();
  bool get_cancelled = co_await ends_cancelled(doomed_getter);
  CHECK(get_cancelled);
  queue.put_nowait(std::make_unique<int>(70));
  item seventy = queue.get_nowait();
  CHECK(*seventy == 70);

  // Items left in a queue when it dies are destroyed with it.
  queue.put_nowait(std::make_unique<int>(80));
}
}  // namespace

TEST_CASE("queue: a move-only type goes through queue, lifo_queue and priority_queue, waiting paths included",
          "[queue]") {
  SECTION("queue") { cl::run(move_only_paths<cl::queue<std::unique_ptr<int>>>({10, 20, 30})); }
  SECTION("lifo_queue") { cl::run(move_only_paths<cl::lifo_queue<std::unique_ptr<int>>>({20, 30, 10})); }
  SECTION("priority_queue") {
    cl::run(move_only_paths<cl::priority_queue<std::unique_ptr<int>, by_pointee>>({10, 20, 30}));
  }
}

// --- volume ---

TEST_CASE("queue: 1,000,000 items through a queue(1024), 1 producer and 4 consumers, each item seen exactly once",
          "[queue][slow]") {
  auto body = []() -> cl::task<void> {
    constexpr int items = 1000000;
    constexpr int consumers = 4;
    cl::queue<int> queue(1024);
    std::vector<unsigned char> seen(items, 0);
    std::vector<int> taken(consumers, 0);
    std::vector<bool> in_order(consumers, true);
    auto producer = [&]() -> cl::task<void> {
      for (int i = 0; i < items; ++i) co_await queue.put(i);
      queue.shutdown();  // consumers drain what is left, then stop
    };
    auto consumer = [&](int id) -> cl::task<void> {
      int last = -1;
      for (;;) {
        std::optional<int> item;
        try {
          item = co_await queue.get();
        } catch (const cl::queue_shut_down&) {
        }
        if (!item) break;
        // One producer and a FIFO queue: each consumer sees increasing items.
        if (*item <= last) in_order[static_cast<std::size_t>(id)] = false;
        last = *item;
        ++seen[static_cast<std::size_t>(*item)];
        ++taken[static_cast<std::size_t>(id)];
        queue.task_done();
        // Consumers pause at different rates, so the queue runs both full
        // (the producer waits) and empty (consumers wait).
        if (*item % (id + 2) == 0) co_await cl::sleep(0ms);
      }
    };
    std::vector<cl::task_handle<void>> tasks;
    for (int id = 0; id < consumers; ++id) tasks.push_back(cl::create_task(consumer, id));
    tasks.push_back(cl::create_task(producer));
    std::size_t finished = co_await settle(tasks, 300s);
    CHECK(finished == tasks.size());
    std::size_t exactly_once = 0;
    for (unsigned char count : seen) exactly_once += count == 1 ? 1 : 0;
    CHECK(exactly_once == static_cast<std::size_t>(items));
    int total = 0;
    for (int id = 0; id < consumers; ++id) {
      INFO("consumer " << id << " took " << taken[static_cast<std::size_t>(id)]);
      CHECK(in_order[static_cast<std::size_t>(id)]);
      CHECK(taken[static_cast<std::size_t>(id)] > 0);  // every consumer was served
      total += taken[static_cast<std::size_t>(id)];
    }
    CHECK(total == items);
    co_await queue.join();
  };
  const cl::time_point start = cl::clock::now();
  cl::run(body());
  CHECK(cl::clock::now() - start < 300s);
}
