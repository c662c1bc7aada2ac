// tests/test_sync.cpp - event, lock, semaphore, bounded_semaphore, condition, barrier [sync].
//
// asyncio's synchronisation primitives in C++ (Python 3.11 for Barrier):
// every wait is first-come first-served and cancellable, and a cancelled
// wait never leaves a lock held or a permit lost. A cancel that arrives
// after a wait was granted (the lock handed over, a permit given, an event
// set) does not undo that wait: it is delivered at the task's next
// suspension point, so RAII guards release what was granted.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "allocation_counter.hpp"
#include "task_helpers.hpp"

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {


// Workers take `primitive` (a lock or a semaphore with `limit` permits) through
// scoped(), hold it across suspensions, and are cancelled at random: waiting,
// at the hand-off, or while holding. Checks that never more than `limit` hold
// it at once and that every worker's guard gave back what it got.
template <class Primitive>
cl::task<void> churn(Primitive& primitive, int limit) {
  std::mt19937 random(4242);
  int holders = 0;
  int most_holders = 0;
  int acquisitions = 0;
  auto worker = [&](unsigned seed) -> cl::task<void> {
    std::mt19937 local(seed);
    for (;;) {
      auto guard = co_await primitive.scoped();
      struct holding {
        int& count;
        ~holding() { --count; }
      } hold{++holders};
      most_holders = std::max(most_holders, holders);
      ++acquisitions;
      co_await yield(static_cast<int>(local() % 3));
    }
  };
  std::vector<cl::task_handle<void>> workers;
  for (int i = 0; i < 8; ++i) workers.push_back(cl::create_task(worker, static_cast<unsigned>(random())));
  int cancels = 0;
  for (int step = 0; step < 3000; ++step) {
    co_await yield();
    if (random() % 4 == 0) {
      if (workers[random() % workers.size()].cancel()) ++cancels;
      workers.push_back(cl::create_task(worker, static_cast<unsigned>(random())));
    }
  }
  (void)co_await settle(workers, 0s);  // cancels the rest
  CHECK(cancels > 300);
  CHECK(acquisitions > 300);
  CHECK(most_holders == limit);
  CHECK(holders == 0);
}

}  // namespace

// --- event ---

TEST_CASE("event: set, clear and is_set; wait on a set event returns at once", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::event event;
    CHECK_FALSE(event.is_set());
    event.set();
    CHECK(event.is_set());
    event.set();  // idempotent
    CHECK(event.is_set());
    bool other_ran = false;
    auto other = [&]() -> cl::task<void> {
      other_ran = true;
      co_return;
    };
    auto handle = cl::create_task(other);
    co_await event.wait();
    CHECK_FALSE(other_ran);  // the wait did not suspend
    event.clear();
    CHECK_FALSE(event.is_set());
    co_await handle;
  };
  cl::run(body());
}

TEST_CASE("event: set() releases every waiter, in the order they came; clear() makes later waits wait", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::event event;
    std::vector<int> woke;
    auto waiter = [&](int id) -> cl::task<void> {
      co_await yield(4 - id);  // arrival order 4, 3, 2, 1, 0
      co_await event.wait();
      woke.push_back(id);
    };
    std::vector<cl::task_handle<void>> waiters;
    for (int id = 0; id < 5; ++id) waiters.push_back(cl::create_task(waiter, id));
    co_await yield(8);
    CHECK(woke.empty());
    event.set();
    for (auto& handle : waiters) co_await handle;
    CHECK(woke == std::vector<int>{4, 3, 2, 1, 0});
    event.clear();
    auto late = cl::create_task(event.wait());
    co_await yield(3);
    CHECK_FALSE(late.done());
    event.set();
    co_await late;
  };
  cl::run(body());
}

TEST_CASE("event: a cancelled wait leaves the other waiters and set() working", "[sync]") {
  SECTION("cancelled while waiting") {
    auto body = []() -> cl::task<void> {
      cl::event event;
      auto first = cl::create_task(event.wait());
      auto second = cl::create_task(event.wait());
      auto third = cl::create_task(event.wait());
      co_await yield();
      CHECK(second.cancel());
      bool cancelled = co_await ends_cancelled(second);
      CHECK(cancelled);
      CHECK_FALSE(first.done());
      event.set();
      co_await first;
      co_await third;
    };
    cl::run(body());
  }
  SECTION("cancelled in the step that set the event, before it resumed: the wait ends cancelled (asyncio)") {
    auto body = []() -> cl::task<void> {
      cl::event event;
      std::vector<std::string> log;
      auto waiter = [&]() -> cl::task<void> {
        try {
          co_await event.wait();
          log.push_back("woke");
        } catch (const cl::cancelled_error&) {
          log.push_back("cancelled at the wait");
          throw;
        }
      };
      auto handle = cl::create_task(waiter);
      auto other = cl::create_task(event.wait());
      co_await yield();
      event.set();
      CHECK(handle.cancel());
      bool cancelled = co_await ends_cancelled(handle);
      co_await other;  // the set reached every other waiter
      CHECK(cancelled);
      CHECK(log == std::vector<std::string>{"cancelled at the wait"});
      CHECK(event.is_set());
    };
    cl::run(body());
  }
}

// --- lock ---

TEST_CASE("lock: acquirers are served in the order they arrived", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::lock lock;
    std::vector<int> order;
    auto worker = [&](int id) -> cl::task<void> {
      co_await yield(4 - id);  // arrival order 4, 3, 2, 1, 0
      co_await lock.acquire();
      order.push_back(id);
      co_await yield();  // hold it across a suspension
      lock.release();
    };
    co_await lock.acquire();
    CHECK(lock.locked());
    std::vector<cl::task_handle<void>> workers;
    for (int id = 0; id < 5; ++id) workers.push_back(cl::create_task(worker, id));
    co_await yield(8);
    CHECK(order.empty());
    lock.release();
    CHECK(lock.locked());  // handed to the first waiter, not freed for anyone to grab
    for (auto& handle : workers) co_await handle;
    CHECK(order == std::vector<int>{4, 3, 2, 1, 0});
    CHECK_FALSE(lock.locked());
  };
  cl::run(body());
}

TEST_CASE("lock: a newcomer does not barge in ahead of a waiter that was handed the lock", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::lock lock;
    std::vector<std::string> order;
    auto worker = [&](std::string name) -> cl::task<void> {
      co_await lock.acquire();
      order.push_back(name);
      lock.release();
    };
    co_await lock.acquire();
    auto waiter = cl::create_task(worker, std::string("waiter"));
    co_await yield();
    lock.release();  // handed to the waiter, which has not run yet
    auto newcomer = cl::create_task(worker, std::string("newcomer"));
    co_await waiter;
    co_await newcomer;
    CHECK(order == std::vector<std::string>{"waiter", "newcomer"});
  };
  cl::run(body());
}

TEST_CASE("lock: scoped() returns a guard that releases, including on exception", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::lock lock;
    {
      auto guard = co_await lock.scoped();
      CHECK(lock.locked());
    }
    CHECK_FALSE(lock.locked());
    bool caught = false;
    try {
      auto guard = co_await lock.scoped();
      throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
      caught = true;
      CHECK_FALSE(lock.locked());  // released during unwinding, before the handler
    }
    CHECK(caught);
    {
      auto guard = co_await lock.scoped();
      auto moved = std::move(guard);  // only the moved-to guard releases
      CHECK(lock.locked());
      moved.unlock();  // early release
      CHECK_FALSE(lock.locked());
      moved.unlock();  // a second unlock is a no-op
    }
    CHECK_FALSE(lock.locked());
    // A guard's release hands the lock to a waiter.
    bool waiter_ran = false;
    auto waiter = [&]() -> cl::task<void> {
      auto guard = co_await lock.scoped();
      waiter_ran = true;
    };
    cl::task_handle<void> handle;
    {
      auto guard = co_await lock.scoped();
      handle = cl::create_task(waiter);
      co_await yield(2);
      CHECK_FALSE(waiter_ran);
    }
    CHECK(lock.locked());
    co_await handle;
    CHECK(waiter_ran);
    CHECK_FALSE(lock.locked());
  };
  cl::run(body());
}

TEST_CASE("lock: release when not held throws invalid_state_error", "[sync]") {
  cl::lock lock;
  CHECK_THROWS_AS(lock.release(), cl::invalid_state_error);
  auto body = [](cl::lock& lock) -> cl::task<void> {
    co_await lock.acquire();
    lock.release();
    CHECK_THROWS_AS(lock.release(), cl::invalid_state_error);
    CHECK_FALSE(lock.locked());
  };
  cl::run(body(lock));
}

TEST_CASE("lock: a cancelled acquire never leaves the lock held", "[sync]") {
  SECTION("cancelled while waiting, alone") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      co_await lock.acquire();
      auto waiter = cl::create_task(lock.acquire());
      co_await yield();
      CHECK(waiter.cancel());
      bool cancelled = co_await ends_cancelled(waiter);
      CHECK(cancelled);
      lock.release();
      CHECK_FALSE(lock.locked());  // not handed to the cancelled waiter
    };
    cl::run(body());
  }
  SECTION("cancelled while waiting, ahead of another waiter") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      std::vector<std::string> log;
      auto worker = [&](std::string name) -> cl::task<void> {
        auto guard = co_await lock.scoped();
        log.push_back(name);
      };
      co_await lock.acquire();
      auto first = cl::create_task(worker, std::string("first"));
      auto second = cl::create_task(worker, std::string("second"));
      co_await yield();
      CHECK(first.cancel());
      lock.release();  // in the same step as the cancel: goes to `second`
      bool cancelled = co_await ends_cancelled(first);
      co_await second;
      CHECK(cancelled);
      CHECK(log == std::vector<std::string>{"second"});
      CHECK_FALSE(lock.locked());
    };
    cl::run(body());
  }
  SECTION("cancelled at the moment of hand-off, before it resumed: the lock passes to the next waiter") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      std::vector<std::string> log;
      auto worker = [&](std::string name) -> cl::task<void> {
        try {
          auto guard = co_await lock.scoped();
          log.push_back(name + " acquired");
        } catch (const cl::cancelled_error&) {
          log.push_back(name + " cancelled at the acquire");
          throw;
        }
      };
      co_await lock.acquire();
      auto first = cl::create_task(worker, std::string("first"));
      auto second = cl::create_task(worker, std::string("second"));
      co_await yield();
      lock.release();        // handed to `first`...
      CHECK(first.cancel());  // ...which is cancelled before it ran again
      bool cancelled = co_await ends_cancelled(first);
      co_await second;
      CHECK(cancelled);
      CHECK(log == std::vector<std::string>{"first cancelled at the acquire", "second acquired"});
      CHECK_FALSE(lock.locked());
    };
    cl::run(body());
  }
  SECTION("cancelled at the moment of hand-off with nobody behind: the lock is free again") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      co_await lock.acquire();
      auto waiter = cl::create_task(lock.acquire());
      co_await yield();
      lock.release();
      CHECK(lock.locked());  // handed over, not yet taken
      CHECK(waiter.cancel());
      bool cancelled = co_await ends_cancelled(waiter);
      CHECK(cancelled);
      CHECK_FALSE(lock.locked());
    };
    cl::run(body());
  }
  SECTION("cancelled before it reached the acquire") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      cl::event go;
      bool acquired = false;
      auto worker = [&]() -> cl::task<void> {
        co_await go.wait();
        co_await lock.acquire();  // the pending cancel is delivered here
        acquired = true;
      };
      co_await lock.acquire();
      auto handle = cl::create_task(worker);
      co_await yield();
      go.set();  // granted, not resumed: the cancel below wins at the event wait
      CHECK(handle.cancel());
      bool cancelled = co_await ends_cancelled(handle);
      CHECK(cancelled);
      CHECK_FALSE(acquired);
      lock.release();
      CHECK_FALSE(lock.locked());
    };
    cl::run(body());
  }
}

TEST_CASE("lock: acquire under timeout()", "[sync]") {
  SECTION("the deadline passes: timeout_error, and the lock is never handed to the timed-out waiter") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      co_await lock.acquire();
      const cl::time_point start = cl::clock::now();
      std::string outcome = co_await outcome_of(cl::timeout(20ms, lock.acquire()));
      CHECK(outcome == "timeout");
      CHECK(cl::clock::now() - start >= 20ms);
      CHECK(cl::clock::now() - start < 30s);
      CHECK(lock.locked());
      lock.release();
      CHECK_FALSE(lock.locked());
      co_await lock.acquire();  // and it still works
      lock.release();
    };
    cl::run(body());
  }
  SECTION("granted before the deadline") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      co_await lock.acquire();
      auto waiter = [&]() -> cl::task<void> {
        co_await cl::timeout(30s, lock.acquire());
        CHECK(lock.locked());
        lock.release();
      };
      auto handle = cl::create_task(waiter);
      co_await yield();
      lock.release();
      co_await handle;
      CHECK_FALSE(lock.locked());
      CHECK(cl::get_running_loop().timer_count() == 0);
    };
    cl::run(body());
  }
  SECTION("handed over after the deadline passed but before the timer fired: acquired, no timeout") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      co_await lock.acquire();
      std::string outcome;
      auto waiter = [&]() -> cl::task<void> {
        outcome = co_await outcome_of(cl::timeout(10ms, lock.acquire()));
        if (outcome == "ok") lock.release();
      };
      auto handle = cl::create_task(waiter);
      co_await yield();
      std::this_thread::sleep_for(50ms);  // the deadline passes while the loop is busy here
      lock.release();                     // granted before the timer could fire
      co_await handle;
      CHECK(outcome == "ok");
      CHECK_FALSE(lock.locked());
    };
    cl::run(body());
  }
}

TEST_CASE("sync: handing over an event, the lock, a permit or a notify allocates nothing", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::event event;
    cl::lock lock;
    cl::semaphore semaphore(0);
    cl::condition condition;
    int resumed = 0;
    auto event_waiter = [&]() -> cl::task<void> {
      co_await event.wait();
      ++resumed;
    };
    auto lock_waiter = [&]() -> cl::task<void> {
      co_await lock.acquire();
      ++resumed;
      lock.release();
    };
    auto semaphore_waiter = [&]() -> cl::task<void> {
      co_await semaphore.acquire();
      ++resumed;
    };
    auto condition_waiter = [&]() -> cl::task<void> {
      auto guard = co_await condition.scoped();
      co_await condition.wait();  // its frame is made here, before the measurement
      ++resumed;
    };
    co_await lock.acquire();
    std::vector<cl::task_handle<void>> waiters;
    waiters.reserve(4);
    waiters.push_back(cl::create_task(event_waiter));
    waiters.push_back(cl::create_task(lock_waiter));
    waiters.push_back(cl::create_task(semaphore_waiter));
    waiters.push_back(cl::create_task(condition_waiter));
    co_await cl::sleep(0ms);  // all four are parked
    const long before = allocations;
    event.set();
    lock.release();
    semaphore.release();
    {
      auto guard = co_await condition.scoped();
      condition.notify();
    }
    co_await cl::sleep(0ms);
    co_await cl::sleep(0ms);
    const long during = allocations - before;
    CHECK(resumed == 4);
    if (COUNT_ALLOCATIONS) CHECK(during == 0);
    for (auto& handle : waiters) co_await handle;
  };
  cl::run(body());
}

TEST_CASE("sync: the waits of event, lock and semaphore are awaitables that timeout() and create_task() accept",
          "[sync]") {
  // timeout(d, aw), wait_for(aw, d) and create_task(aw) take the awaitable by
  // value, so it must be movable until awaited (as sleep(), queue::get() and
  // queue::put() are): `co_await timeout(1s, lock.acquire())` is the C++
  // spelling of `await asyncio.wait_for(lock.acquire(), 1)`.
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::event&>().wait())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::lock&>().acquire())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::lock&>().scoped())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::semaphore&>().acquire())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::semaphore&>().scoped())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::bounded_semaphore&>().scoped())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::condition&>().wait())>);
  CHECK(std::is_move_constructible_v<decltype(std::declval<cl::barrier&>().wait())>);
  auto body = []() -> cl::task<void> {
    cl::event event;
    cl::lock lock;
    cl::semaphore semaphore(0);
    // create_task(event.wait()): the moved awaiter waits in the task's frame.
    auto waiter = cl::create_task(event.wait());
    co_await yield(2);
    CHECK_FALSE(waiter.done());
    event.set();
    co_await waiter;
    // timeout() on a permit that never comes: timeout_error, and the waiter
    // it left is gone (the next release goes to the count).
    std::string outcome = co_await outcome_of(cl::timeout(10ms, semaphore.acquire()));
    CHECK(outcome == "timeout");
    semaphore.release();
    CHECK(semaphore.value() == 1);
    // timeout() around scoped(): the guard comes out through the timeout.
    {
      auto guard = co_await cl::timeout(30s, lock.scoped());
      CHECK(lock.locked());
      std::string busy = co_await outcome_of(cl::wait_for(lock.scoped(), 10ms));
      CHECK(busy == "timeout");
    }
    CHECK_FALSE(lock.locked());
  };
  cl::run(body());
}

// --- semaphore ---

TEST_CASE("semaphore: permits are counted; acquirers beyond them wait and are served in arrival order", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::semaphore semaphore(2);
    CHECK(semaphore.value() == 2);
    CHECK_FALSE(semaphore.locked());
    co_await semaphore.acquire();
    co_await semaphore.acquire();
    CHECK(semaphore.value() == 0);
    CHECK(semaphore.locked());
    std::vector<int> order;
    auto worker = [&](int id) -> cl::task<void> {
      co_await yield(4 - id);  // arrival order 4, 3, 2, 1, 0
      co_await semaphore.acquire();
      order.push_back(id);
    };
    std::vector<cl::task_handle<void>> workers;
    for (int id = 0; id < 5; ++id) workers.push_back(cl::create_task(worker, id));
    co_await yield(8);
    CHECK(order.empty());
    for (int released = 1; released <= 5; ++released) {
      semaphore.release();  // each permit goes to the next waiter, not to the count
      CHECK(semaphore.value() == 0);
      co_await yield();
      CHECK(order.size() == static_cast<std::size_t>(released));
    }
    for (auto& handle : workers) co_await handle;
    CHECK(order == std::vector<int>{4, 3, 2, 1, 0});
    semaphore.release();
    CHECK(semaphore.value() == 1);
    CHECK_FALSE(semaphore.locked());
  };
  cl::run(body());
}

TEST_CASE("semaphore: a cancelled acquire loses no permit", "[sync]") {
  SECTION("cancelled while waiting, alone") {
    auto body = []() -> cl::task<void> {
      cl::semaphore semaphore(1);
      co_await semaphore.acquire();
      auto waiter = [&]() -> cl::task<void> { co_await semaphore.acquire(); };
      auto handle = cl::create_task(waiter);
      co_await yield();
      CHECK(handle.cancel());
      bool cancelled = co_await ends_cancelled(handle);
      CHECK(cancelled);
      semaphore.release();
      CHECK(semaphore.value() == 1);
    };
    cl::run(body());
  }
  SECTION("cancelled while waiting, ahead of another waiter") {
    auto body = []() -> cl::task<void> {
      cl::semaphore semaphore(1);
      co_await semaphore.acquire();
      int served = 0;
      auto waiter = [&]() -> cl::task<void> {
        auto guard = co_await semaphore.scoped();
        ++served;
      };
      auto first = cl::create_task(waiter);
      auto second = cl::create_task(waiter);
      co_await yield();
      CHECK(first.cancel());
      semaphore.release();  // same step as the cancel: the permit goes to `second`
      bool cancelled = co_await ends_cancelled(first);
      co_await second;
      CHECK(cancelled);
      CHECK(served == 1);
      CHECK(semaphore.value() == 1);
    };
    cl::run(body());
  }
  SECTION("cancelled at the moment of hand-off, before it resumed: the permit goes back") {
    auto body = []() -> cl::task<void> {
      cl::semaphore semaphore(1);
      co_await semaphore.acquire();
      std::vector<std::string> log;
      auto waiter = [&]() -> cl::task<void> {
        auto guard = co_await semaphore.scoped();
        log.push_back("acquired");
      };
      auto handle = cl::create_task(waiter);
      co_await yield();
      semaphore.release();
      CHECK(semaphore.value() == 0);  // handed over, not yet taken
      CHECK(handle.cancel());
      bool cancelled = co_await ends_cancelled(handle);
      CHECK(cancelled);
      CHECK(log.empty());
      CHECK(semaphore.value() == 1);
    };
    cl::run(body());
  }
  SECTION("cancelled at the moment of hand-off, ahead of another waiter: the permit goes to it") {
    auto body = []() -> cl::task<void> {
      cl::bounded_semaphore semaphore(1);
      co_await semaphore.acquire();
      std::vector<int> served;
      auto waiter = [&](int id) -> cl::task<void> {
        auto guard = co_await semaphore.scoped();
        served.push_back(id);
      };
      auto first = cl::create_task(waiter, 1);
      auto second = cl::create_task(waiter, 2);
      co_await yield();
      semaphore.release();
      CHECK(first.cancel());
      bool cancelled = co_await ends_cancelled(first);
      co_await second;
      CHECK(cancelled);
      CHECK(served == std::vector<int>{2});
      CHECK(semaphore.value() == 1);
    };
    cl::run(body());
  }
}

TEST_CASE("semaphore: scoped() returns the permit, including on exception", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::semaphore semaphore(2);
    {
      auto first = co_await semaphore.scoped();
      auto second = co_await semaphore.scoped();
      CHECK(semaphore.value() == 0);
      CHECK(semaphore.locked());
    }
    CHECK(semaphore.value() == 2);
    bool caught = false;
    try {
      auto guard = co_await semaphore.scoped();
      CHECK(semaphore.value() == 1);
      throw std::runtime_error("boom");
    } catch (const std::runtime_error&) {
      caught = true;
    }
    CHECK(caught);
    CHECK(semaphore.value() == 2);
    {
      auto guard = co_await semaphore.scoped();
      auto moved = std::move(guard);
      CHECK(semaphore.value() == 1);
    }
    CHECK(semaphore.value() == 2);
  };
  cl::run(body());
}

TEST_CASE("bounded_semaphore: releasing past the initial value throws invalid_state_error", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::bounded_semaphore semaphore(2);
    CHECK_THROWS_AS(semaphore.release(), cl::invalid_state_error);
    CHECK(semaphore.value() == 2);
    co_await semaphore.acquire();
    semaphore.release();
    CHECK_THROWS_AS(semaphore.release(), cl::invalid_state_error);
    CHECK(semaphore.value() == 2);
    {
      auto guard = co_await semaphore.scoped();
      CHECK(semaphore.value() == 1);
    }
    CHECK(semaphore.value() == 2);
    // Through waiters: a release hands the permit on, the last one is refused.
    co_await semaphore.acquire();
    co_await semaphore.acquire();
    auto waiter = [&]() -> cl::task<void> {
      co_await semaphore.acquire();
      semaphore.release();
    };
    auto handle = cl::create_task(waiter);
    co_await yield();
    semaphore.release();  // to the waiter, which gives it back
    co_await handle;
    CHECK(semaphore.value() == 1);
    semaphore.release();
    CHECK(semaphore.value() == 2);
    CHECK_THROWS_AS(semaphore.release(), cl::invalid_state_error);
  };
  cl::run(body());
}

TEST_CASE("bounded_semaphore: a release with a task waiting is refused past the initial value too", "[sync]") {
  // asyncio.BoundedSemaphore(0).release() raises ValueError whether or not a
  // task waits; a permit given to a waiter here would be one more than the
  // semaphore ever had.
  auto body = []() -> cl::task<void> {
    cl::bounded_semaphore semaphore(0);
    bool acquired = false;
    auto waiter = [&]() -> cl::task<void> {
      co_await semaphore.acquire();
      acquired = true;
    };
    auto handle = cl::create_task(waiter);
    co_await yield();
    CHECK_THROWS_AS(semaphore.release(), cl::invalid_state_error);
    co_await yield();
    CHECK_FALSE(acquired);
    handle.cancel();
    (void)co_await ends_cancelled(handle);
  };
  cl::run(body());
}

// --- condition ---

TEST_CASE("condition: notify(n) wakes n waiters in arrival order, notify_all the rest", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::condition condition;
    std::vector<int> woke;
    auto waiter = [&](int id) -> cl::task<void> {
      co_await yield(4 - id);  // arrival order 4, 3, 2, 1, 0
      auto guard = co_await condition.scoped();
      co_await condition.wait();
      CHECK(condition.locked());  // held again on return
      woke.push_back(id);
    };
    std::vector<cl::task_handle<void>> waiters;
    for (int id = 0; id < 5; ++id) waiters.push_back(cl::create_task(waiter, id));
    co_await yield(8);
    CHECK_FALSE(condition.locked());  // every waiter released the lock while waiting
    {
      auto guard = co_await condition.scoped();
      condition.notify(0);
      condition.notify(2);
    }
    co_await yield(4);
    CHECK(woke == std::vector<int>{4, 3});
    {
      auto guard = co_await condition.scoped();
      condition.notify_all();
    }
    for (auto& handle : waiters) co_await handle;
    CHECK(woke == std::vector<int>{4, 3, 2, 1, 0});
    CHECK_FALSE(condition.locked());
    {
      auto guard = co_await condition.scoped();
      condition.notify_all();  // nobody waits: a no-op
    }
  };
  cl::run(body());
}

TEST_CASE("condition: wait_for(predicate) returns once the predicate holds, with the lock held", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::condition condition;
    int value = 0;
    int checks = 0;
    bool result = false;
    auto predicate = [&] {
      ++checks;
      return value >= 3;
    };
    auto waiter = [&]() -> cl::task<void> {
      auto guard = co_await condition.scoped();
      result = co_await condition.wait_for(predicate);
      CHECK(condition.locked());
      CHECK(value == 3);
    };
    auto handle = cl::create_task(waiter);
    co_await yield();
    for (int i = 1; i <= 3; ++i) {
      {
        auto guard = co_await condition.scoped();
        value = i;
        condition.notify_all();
      }
      co_await yield(2);
    }
    co_await handle;
    CHECK(result);
    CHECK(checks == 4);  // once before waiting, then after each notify
    // A predicate already true returns without waiting.
    auto guard = co_await condition.scoped();
    bool at_once = co_await condition.wait_for([] { return true; });
    CHECK(at_once);
  };
  cl::run(body());
}

TEST_CASE("condition: wait or notify without the lock throws invalid_state_error", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::condition condition;
    std::string outcome = co_await outcome_of(condition.wait());
    CHECK(outcome == "invalid_state");
    CHECK_THROWS_AS(condition.notify(), cl::invalid_state_error);
    CHECK_THROWS_AS(condition.notify_all(), cl::invalid_state_error);
    CHECK_THROWS_AS(condition.release(), cl::invalid_state_error);
    CHECK_FALSE(condition.locked());
  };
  cl::run(body());
}

TEST_CASE("condition: a cancelled wait re-acquires the lock before cancelled_error reaches the caller", "[sync]") {
  SECTION("cancelled while another task holds the lock") {
    auto body = []() -> cl::task<void> {
      cl::condition condition;
      std::vector<std::string> log;
      auto waiter = [&]() -> cl::task<void> {
        auto guard = co_await condition.scoped();
        try {
          co_await condition.wait();
        } catch (const cl::cancelled_error&) {
          log.push_back(condition.locked() ? "waiter caught, lock held" : "waiter caught, lock free");
          throw;
        }
      };
      auto holder = [&]() -> cl::task<void> {
        auto guard = co_await condition.scoped();  // granted when the waiter's wait releases it
        log.push_back("holder has the lock");
        co_await yield(3);
        log.push_back("holder releases");
      };
      auto waiting = cl::create_task(waiter);
      co_await yield();  // the waiter holds the lock and waits (releasing it)
      auto holding = cl::create_task(holder);
      co_await yield(2);  // the holder holds it
      CHECK(waiting.cancel());
      bool cancelled = co_await ends_cancelled(waiting);
      co_await holding;
      CHECK(cancelled);
      CHECK(log == std::vector<std::string>{"holder has the lock", "holder releases", "waiter caught, lock held"});
      CHECK_FALSE(condition.locked());  // the waiter's guard released it on the way out
    };
    cl::run(body());
  }
  SECTION("cancelled in the step that notified it, before it resumed: cancelled, the lock held, and the "
          "notification passed on") {
    auto body = []() -> cl::task<void> {
      cl::condition condition;
      std::vector<std::string> log;
      auto waiter = [&](std::string name) -> cl::task<void> {
        auto guard = co_await condition.scoped();
        try {
          co_await condition.wait();
          log.push_back(name + " notified");
        } catch (const cl::cancelled_error&) {
          log.push_back(name + (condition.locked() ? " cancelled, lock held" : " cancelled, lock free"));
          throw;
        }
      };
      auto first = cl::create_task(waiter, std::string("first"));
      auto second = cl::create_task(waiter, std::string("second"));
      co_await yield(2);
      {
        auto guard = co_await condition.scoped();
        condition.notify(1);  // to `first`...
        CHECK(first.cancel());  // ...cancelled before it resumed: `second` gets the notification
      }
      bool cancelled = co_await ends_cancelled(first);
      co_await second;
      CHECK(cancelled);
      CHECK(log == std::vector<std::string>{"first cancelled, lock held", "second notified"});
      CHECK_FALSE(condition.locked());
    };
    cl::run(body());
  }
  SECTION("a cancelled waiter is not counted by a later notify(1)") {
    auto body = []() -> cl::task<void> {
      cl::condition condition;
      std::vector<int> woke;
      auto waiter = [&](int id) -> cl::task<void> {
        auto guard = co_await condition.scoped();
        co_await condition.wait();
        woke.push_back(id);
      };
      auto first = cl::create_task(waiter, 1);
      auto second = cl::create_task(waiter, 2);
      co_await yield(2);
      CHECK(first.cancel());
      bool cancelled = co_await ends_cancelled(first);
      CHECK(cancelled);
      {
        auto guard = co_await condition.scoped();
        condition.notify(1);
      }
      co_await second;
      CHECK(woke == std::vector<int>{2});
    };
    cl::run(body());
  }
}

TEST_CASE("condition: shares an external lock", "[sync]") {
  auto body = []() -> cl::task<void> {
    // A bounded buffer: two conditions over one lock (threading's classic).
    cl::lock lock;
    cl::condition not_empty(lock);
    cl::condition not_full(lock);
    std::vector<int> buffer;
    std::vector<int> consumed;
    constexpr std::size_t capacity = 2;
    constexpr int count = 20;
    auto producer = [&]() -> cl::task<void> {
      for (int i = 0; i < count; ++i) {
        auto guard = co_await lock.scoped();
        CHECK(not_full.locked());  // the conditions see the shared lock
        co_await not_full.wait_for([&] { return buffer.size() < capacity; });
        buffer.push_back(i);
        not_empty.notify();
      }
    };
    auto consumer = [&]() -> cl::task<void> {
      for (int i = 0; i < count; ++i) {
        auto guard = co_await not_empty.scoped();  // the same lock, through the condition
        CHECK(lock.locked());
        co_await not_empty.wait_for([&] { return !buffer.empty(); });
        consumed.push_back(buffer.front());
        buffer.erase(buffer.begin());
        not_full.notify();
      }
    };
    auto consuming = cl::create_task(consumer);
    auto producing = cl::create_task(producer);
    co_await producing;
    co_await consuming;
    std::vector<int> expected;
    for (int i = 0; i < count; ++i) expected.push_back(i);
    CHECK(consumed == expected);
    CHECK_FALSE(lock.locked());
  };
  cl::run(body());
}

TEST_CASE("condition: random cancellations and notifies never let two tasks hold the lock", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::condition condition;
    std::mt19937 random(77);
    int owner = -1;  // who holds the lock, as the tasks see it
    int overlaps = 0;
    int completed_waits = 0;
    auto take = [&](int me) {
      if (owner != -1) ++overlaps;
      owner = me;
    };
    auto waiter = [&](int me) -> cl::task<void> {
      for (;;) {
        auto guard = co_await condition.scoped();
        take(me);
        owner = -1;  // wait() releases the lock...
        bool cancelled = false;
        try {
          co_await condition.wait();
        } catch (const cl::cancelled_error&) {
          cancelled = true;
        }
        take(me);  // ...and holds it again when it returns or throws
        if (!condition.locked()) ++overlaps;
        owner = -1;
        if (cancelled) throw cl::cancelled_error{};
        ++completed_waits;
      }  // the guard releases here, after owner was cleared
    };
    std::vector<cl::task_handle<void>> waiters;
    int next_id = 0;
    for (int i = 0; i < 6; ++i) waiters.push_back(cl::create_task(waiter, next_id++));
    for (int step = 0; step < 2000; ++step) {
      co_await yield();
      const unsigned roll = random() % 6;
      if (roll == 0) {
        waiters[random() % waiters.size()].cancel();
        waiters.push_back(cl::create_task(waiter, next_id++));
      } else if (roll <= 2) {
        auto guard = co_await condition.scoped();
        take(1000);
        condition.notify(random() % 3);
        owner = -1;
      }
    }
    std::size_t finished = co_await settle(waiters, 0s);  // cancels the rest
    (void)finished;
    CHECK(overlaps == 0);
    CHECK(completed_waits > 100);
    CHECK_FALSE(condition.locked());
  };
  cl::run(body());
}

TEST_CASE("lock and semaphore: random cancellations never lose a permit or let too many in", "[sync]") {
  SECTION("semaphore(3)") {
    auto body = []() -> cl::task<void> {
      cl::semaphore semaphore(3);
      co_await churn(semaphore, 3);
      CHECK(semaphore.value() == 3);
      CHECK_FALSE(semaphore.locked());
    };
    cl::run(body());
  }
  SECTION("lock") {
    auto body = []() -> cl::task<void> {
      cl::lock lock;
      co_await churn(lock, 1);
      CHECK_FALSE(lock.locked());
    };
    cl::run(body());
  }
}

// --- barrier ---

TEST_CASE("barrier: the n tasks get distinct indexes 0..n-1, in arrival order", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::barrier barrier(5);
    CHECK(barrier.parties() == 5);
    CHECK(barrier.n_waiting() == 0);
    CHECK_FALSE(barrier.broken());
    std::vector<std::size_t> index_of(5, 99);
    auto party = [&](int id) -> cl::task<void> {
      co_await yield(4 - id);  // arrival order 4, 3, 2, 1, 0
      index_of[static_cast<std::size_t>(id)] = co_await barrier.wait();
    };
    std::vector<cl::task_handle<void>> parties;
    for (int id = 0; id < 4; ++id) parties.push_back(cl::create_task(party, id));
    co_await yield(8);
    CHECK(barrier.n_waiting() == 4);
    for (const auto& handle : parties) CHECK_FALSE(handle.done());
    parties.push_back(cl::create_task(party, 4));  // the last one arrives late
    for (auto& handle : parties) co_await handle;
    // Party 4 arrived last; the others in the order 3, 2, 1, 0.
    CHECK(index_of == std::vector<std::size_t>{3, 2, 1, 0, 4});
    CHECK(barrier.n_waiting() == 0);
    CHECK_FALSE(barrier.broken());
  };
  cl::run(body());
}

TEST_CASE("barrier: works for many rounds, no task a round ahead of another", "[sync]") {
  auto body = []() -> cl::task<void> {
    constexpr int parties = 3;
    constexpr int rounds = 20;
    cl::barrier barrier(parties);
    std::vector<int> passed;                                           // round numbers, in the order the waits returned
    std::vector<std::vector<std::size_t>> indexes(rounds);
    auto party = [&](int id) -> cl::task<void> {
      for (int round = 0; round < rounds; ++round) {
        co_await yield((id + round) % 3);
        std::size_t index = co_await barrier.wait();
        passed.push_back(round);
        indexes[static_cast<std::size_t>(round)].push_back(index);
      }
    };
    std::vector<cl::task_handle<void>> tasks;
    for (int id = 0; id < parties; ++id) tasks.push_back(cl::create_task(party, id));
    for (auto& handle : tasks) co_await handle;
    CHECK(passed.size() == static_cast<std::size_t>(parties * rounds));
    CHECK(std::is_sorted(passed.begin(), passed.end()));
    for (auto& round : indexes) {
      std::sort(round.begin(), round.end());
      CHECK(round == std::vector<std::size_t>{0, 1, 2});
    }
    CHECK(barrier.n_waiting() == 0);
  };
  cl::run(body());
}

TEST_CASE("barrier: abort() breaks it for the waiters and for later callers", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::barrier barrier(3);
    auto waiting = [&]() -> cl::task<std::string> { co_return co_await outcome_of(barrier.wait()); };
    auto first = cl::create_task(waiting);
    auto second = cl::create_task(waiting);
    co_await yield();
    CHECK(barrier.n_waiting() == 2);
    barrier.abort();
    CHECK(barrier.broken());
    std::string first_outcome = co_await first;
    std::string second_outcome = co_await second;
    CHECK(first_outcome == "broken");
    CHECK(second_outcome == "broken");
    std::string later = co_await outcome_of(barrier.wait());
    CHECK(later == "broken");
    CHECK(barrier.broken());
    CHECK(barrier.n_waiting() == 0);
    // asyncio: reset() on a broken barrier with nobody inside makes it usable.
    barrier.reset();
    CHECK_FALSE(barrier.broken());
    std::vector<cl::task_handle<std::size_t>> parties;
    for (int i = 0; i < 3; ++i) parties.push_back(cl::create_task(barrier.wait()));
    std::vector<std::size_t> indexes;
    for (auto& handle : parties) indexes.push_back(co_await handle);
    std::sort(indexes.begin(), indexes.end());
    CHECK(indexes == std::vector<std::size_t>{0, 1, 2});
  };
  cl::run(body());
}

TEST_CASE("barrier: reset() fails the waiters with broken_barrier_error, then the barrier works again", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::barrier barrier(3);
    auto waiting = [&]() -> cl::task<std::string> { co_return co_await outcome_of(barrier.wait()); };
    auto first = cl::create_task(waiting);
    auto second = cl::create_task(waiting);
    co_await yield();
    CHECK(barrier.n_waiting() == 2);
    barrier.reset();
    std::string first_outcome = co_await first;
    std::string second_outcome = co_await second;
    CHECK(first_outcome == "broken");
    CHECK(second_outcome == "broken");
    CHECK_FALSE(barrier.broken());
    CHECK(barrier.n_waiting() == 0);
    std::vector<cl::task_handle<std::size_t>> parties;
    for (int i = 0; i < 3; ++i) parties.push_back(cl::create_task(barrier.wait()));
    std::vector<std::size_t> indexes;
    for (auto& handle : parties) indexes.push_back(co_await handle);
    std::sort(indexes.begin(), indexes.end());
    CHECK(indexes == std::vector<std::size_t>{0, 1, 2});
    barrier.reset();  // nobody inside: stays usable
    CHECK_FALSE(barrier.broken());
  };
  cl::run(body());
}

TEST_CASE("barrier: a cancelled waiter lowers n_waiting()", "[sync]") {
  auto body = []() -> cl::task<void> {
    cl::barrier barrier(3);
    auto first = cl::create_task(barrier.wait());
    auto second = cl::create_task(barrier.wait());
    co_await yield();
    CHECK(barrier.n_waiting() == 2);
    CHECK(first.cancel());
    bool cancelled = co_await ends_cancelled(first);
    CHECK(cancelled);
    CHECK(barrier.n_waiting() == 1);
    CHECK_FALSE(barrier.broken());  // asyncio: a cancelled waiter does not break it
    // Two more arrivals complete the round with `second`.
    auto third = cl::create_task(barrier.wait());
    co_await yield();
    CHECK(barrier.n_waiting() == 2);
    CHECK_FALSE(second.done());
    auto fourth = cl::create_task(barrier.wait());
    (void)co_await second;
    (void)co_await third;
    (void)co_await fourth;
    CHECK(barrier.n_waiting() == 0);
  };
  cl::run(body());
}

TEST_CASE("barrier: zero parties is refused", "[sync]") {
  CHECK_THROWS_AS(cl::barrier(0), std::invalid_argument);
}
