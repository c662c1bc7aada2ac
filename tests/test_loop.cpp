// tests/test_loop.cpp - the event loop core [loop].
//
// call_soon (FIFO), call_later / call_at (deadline order, FIFO among equal
// deadlines), cancellable handles, call_soon_threadsafe waking a blocked loop,
// stop(), run_until_complete, the running loop of a thread, the thread checks,
// throwing callbacks, time(), close().
#include "coro_loop.hpp"
#include "catch.hpp"

#include "net_helpers.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;

namespace {

using test_support::stderr_capture;

cl::task<int> answer_later() {
  co_await cl::sleep(1ms);
  co_return 42;
}

cl::task<int> fail_later() {
  co_await cl::sleep(1ms);
  throw std::runtime_error("run_until_complete failure");
}

}  // namespace

// --- call_soon ---

TEST_CASE("loop: call_soon runs callbacks in FIFO order", "[loop]") {
  cl::event_loop loop;
  std::vector<int> order;
  for (int i = 0; i < 100; ++i) loop.call_soon([&order, i] { order.push_back(i); });
  loop.call_soon([&] { loop.stop(); });
  loop.run_forever();
  REQUIRE(order.size() == 100);
  for (int i = 0; i < 100; ++i) CHECK(order[static_cast<std::size_t>(i)] == i);
}

TEST_CASE("loop: a callback scheduled by a callback runs on the next iteration, after the current batch",
          "[loop]") {
  cl::event_loop loop;
  std::vector<std::string> order;
  loop.call_soon([&] {
    order.push_back("a");
    loop.call_soon([&] {
      order.push_back("c (from a)");
      loop.stop();
    });
  });
  loop.call_soon([&] { order.push_back("b"); });
  loop.run_forever();
  CHECK(order == std::vector<std::string>{"a", "b", "c (from a)"});
}

// --- call_later / call_at ---

TEST_CASE("loop: call_later and call_at run callbacks in deadline order, FIFO among equal deadlines", "[loop]") {
  cl::event_loop loop;
  std::vector<std::string> order;
  std::vector<bool> on_time;
  const cl::time_point base = loop.time();
  auto record = [&](std::string name, cl::time_point deadline) {
    return [&order, &on_time, &loop, name, deadline] {
      order.push_back(name);
      on_time.push_back(loop.time() >= deadline);  // never early
    };
  };
  loop.call_at(base + 30ms, record("30", base + 30ms));
  loop.call_at(base + 10ms, record("10", base + 10ms));
  loop.call_at(base + 20ms, record("20", base + 20ms));
  loop.call_at(base + 5ms, record("5a", base + 5ms));
  loop.call_at(base + 5ms, record("5b", base + 5ms));
  loop.call_at(base + 5ms, record("5c", base + 5ms));
  cl::callback_handle later = loop.call_later(40ms, record("40 (later)", base + 40ms));
  CHECK(later.when() >= base + 40ms);
  // Same deadline as `later`, armed after it: runs right after it.
  loop.call_at(later.when(), [&] { loop.stop(); });
  CHECK(loop.timer_count() == 8);
  loop.run_forever();
  CHECK(order == std::vector<std::string>{"5a", "5b", "5c", "10", "20", "30", "40 (later)"});
  CHECK(on_time == std::vector<bool>(7, true));
  CHECK(loop.time() - base >= 40ms);
  CHECK(loop.timer_count() == 0);
}

TEST_CASE("loop: many timers with equal and shuffled deadlines fire in (deadline, insertion) order", "[loop]") {
  cl::event_loop loop;
  const cl::time_point base = loop.time();
  std::vector<std::pair<int, int>> fired;  // (deadline in ms, insertion index)
  int index = 0;
  for (int round = 0; round < 20; ++round) {
    for (int ms : {7, 3, 9, 1, 5, 3, 1, 9}) {
      int mine = index++;
      loop.call_at(base + std::chrono::milliseconds(ms), [&fired, ms, mine] { fired.emplace_back(ms, mine); });
    }
  }
  loop.call_at(base + 10ms, [&] { loop.stop(); });
  loop.run_forever();
  REQUIRE(fired.size() == 160);
  CHECK(std::is_sorted(fired.begin(), fired.end()));
}

TEST_CASE("loop: call_later with a zero or negative delay runs on the next iteration", "[loop]") {
  cl::event_loop loop;
  std::vector<std::string> order;
  loop.call_later(-5ms, [&] { order.push_back("negative"); });
  loop.call_later(0ms, [&] { order.push_back("zero"); });
  loop.call_soon([&] { order.push_back("soon"); });
  loop.call_later(1ms, [&] { loop.stop(); });
  loop.run_forever();
  REQUIRE(order.size() == 3);
  CHECK(std::count(order.begin(), order.end(), "negative") == 1);
  CHECK(std::count(order.begin(), order.end(), "zero") == 1);
  // Among the timers, the earlier deadline first.
  CHECK(std::find(order.begin(), order.end(), "negative") < std::find(order.begin(), order.end(), "zero"));
}

// --- cancelling handles ---

TEST_CASE("loop: a cancelled call_soon handle never runs", "[loop]") {
  cl::event_loop loop;
  std::vector<int> ran;
  cl::callback_handle first = loop.call_soon([&] { ran.push_back(1); });
  cl::callback_handle second = loop.call_soon([&] { ran.push_back(2); });
  cl::callback_handle third = loop.call_soon([&] { ran.push_back(3); });
  CHECK_FALSE(second.cancelled());
  second.cancel();
  CHECK(second.cancelled());
  second.cancel();  // idempotent
  CHECK(second.cancelled());
  loop.call_soon([&] { loop.stop(); });
  loop.run_forever();
  CHECK(ran == std::vector<int>{1, 3});
  first.cancel();  // after it ran: a no-op
  CHECK(ran == std::vector<int>{1, 3});
}

TEST_CASE("loop: a cancelled timer never runs and leaves the timer heap at once", "[loop]") {
  cl::event_loop loop;
  std::vector<std::string> ran;
  cl::callback_handle keep = loop.call_later(5ms, [&] { ran.push_back("kept"); });
  cl::callback_handle drop = loop.call_later(1ms, [&] { ran.push_back("dropped"); });
  cl::callback_handle drop_at = loop.call_at(loop.time() + 2ms, [&] { ran.push_back("dropped at"); });
  CHECK(loop.timer_count() == 3);
  drop.cancel();
  CHECK(loop.timer_count() == 2);
  drop_at.cancel();
  CHECK(loop.timer_count() == 1);
  drop.cancel();
  CHECK(loop.timer_count() == 1);
  // A callback may cancel a timer that is due in the same iteration.
  cl::callback_handle victim;
  const cl::time_point same = loop.time() + 10ms;
  loop.call_at(same, [&] { victim.cancel(); });
  victim = loop.call_at(same, [&] { ran.push_back("victim"); });
  loop.call_later(20ms, [&] { loop.stop(); });
  loop.run_forever();
  CHECK(ran == std::vector<std::string>{"kept"});
  CHECK(loop.timer_count() == 0);
}

TEST_CASE("loop: a handle may outlive the callback and the loop's reference to it", "[loop]") {
  cl::callback_handle outlives;
  {
    cl::event_loop loop;
    int runs = 0;
    outlives = loop.call_soon([&] { ++runs; });
    loop.call_soon([&] { loop.stop(); });
    loop.run_forever();
    CHECK(runs == 1);
    cl::callback_handle unused = loop.call_later(1h, [] {});
    (void)unused;
  }  // closing releases the armed timer; our handle keeps its node alive
  CHECK_FALSE(outlives.cancelled());
}

// --- call_soon_threadsafe ---

TEST_CASE("loop: call_soon_threadsafe from 8 threads x 10,000 calls delivers each exactly once and wakes the loop",
          "[loop]") {
  constexpr int thread_count = 8;
  constexpr int calls_per_thread = 10'000;
  constexpr int total_calls = thread_count * calls_per_thread;
  cl::event_loop loop;
  // Loop thread only: written by the callbacks.
  std::vector<int> per_thread(thread_count, 0);
  std::vector<std::vector<unsigned char>> seen(thread_count, std::vector<unsigned char>(calls_per_thread, 0));
  std::vector<int> last_index(thread_count, -1);
  int delivered = 0;
  int duplicates = 0;
  int out_of_order = 0;
  bool timed_out = false;
  std::vector<std::thread> producers;
  // A generous guard: the test fails, rather than hangs, if a wake-up is lost.
  cl::callback_handle guard = loop.call_later(60s, [&] {
    timed_out = true;
    loop.stop();
  });
  loop.call_soon([&] {
    for (int t = 0; t < thread_count; ++t) {
      producers.emplace_back([&, t] {
        // By now the loop has nothing to do but wait in the backend.
        std::this_thread::sleep_for(20ms);
        for (int i = 0; i < calls_per_thread; ++i) {
          loop.call_soon_threadsafe([&, t, i] {
            if (seen[t][static_cast<std::size_t>(i)]++ != 0) ++duplicates;
            if (i <= last_index[t]) ++out_of_order;  // one producer's calls keep their order
            last_index[t] = i;
            ++per_thread[t];
            if (++delivered == total_calls) loop.stop();
          });
        }
      });
    }
  });
  loop.run_forever();
  for (auto& producer : producers) producer.join();
  guard.cancel();
  CHECK_FALSE(timed_out);
  CHECK(delivered == total_calls);
  CHECK(duplicates == 0);
  CHECK(out_of_order == 0);
  for (int t = 0; t < thread_count; ++t) {
    INFO("thread " << t);
    CHECK(per_thread[t] == calls_per_thread);
  }
}

TEST_CASE("loop: call_soon_threadsafe wakes a loop blocked on a far timer", "[loop]") {
  cl::event_loop loop;
  bool woke = false;
  std::thread producer;
  loop.call_later(1h, [] {});  // the loop would otherwise sleep for an hour
  cl::callback_handle guard = loop.call_later(60s, [&] { loop.stop(); });
  const auto start = loop.time();
  loop.call_soon([&] {
    producer = std::thread([&] {
      std::this_thread::sleep_for(30ms);
      loop.call_soon_threadsafe([&] {
        woke = true;
        loop.stop();
      });
    });
  });
  loop.run_forever();
  producer.join();
  CHECK(woke);
  CHECK(loop.time() - start >= 30ms);
  CHECK(loop.time() - start < 30s);
}

TEST_CASE("loop: call_soon_threadsafe callbacks queued before the loop runs are delivered, unless cancelled", "[loop]") {
  cl::event_loop loop;
  std::atomic<int> scheduled{0};
  int delivered = 0;
  std::thread producer([&] {
    for (int i = 0; i < 100; ++i) {
      loop.call_soon_threadsafe([&] { ++delivered; });
      ++scheduled;
    }
  });
  producer.join();
  // A threadsafe handle cancelled before the loop drained its queue never runs.
  bool cancelled_ran = false;
  cl::callback_handle cancelled = loop.call_soon_threadsafe([&] { cancelled_ran = true; });
  cancelled.cancel();
  CHECK(cancelled.cancelled());
  loop.call_soon_threadsafe([&] { loop.stop(); });
  loop.run_forever();
  CHECK(scheduled == 100);
  CHECK(delivered == 100);
  CHECK_FALSE(cancelled_ran);
}

TEST_CASE("loop: call_soon from another thread while the loop runs throws invalid_state_error", "[loop]") {
  cl::event_loop loop;
  std::string call_soon_error;
  std::string call_later_error;
  bool ran = false;
  loop.call_soon([&] {
    std::thread other([&] {
      try {
        loop.call_soon([&] { ran = true; });
      } catch (const cl::invalid_state_error& error) {
        call_soon_error = error.what();
      }
      try {
        loop.call_later(1ms, [&] { ran = true; });
      } catch (const cl::invalid_state_error& error) {
        call_later_error = error.what();
      }
    });
    other.join();
    loop.call_soon([&] { loop.stop(); });
  });
  loop.run_forever();
  CHECK_FALSE(ran);
  CHECK_THAT(call_soon_error, Catch::Matchers::ContainsSubstring("call_soon_threadsafe"));
  CHECK_FALSE(call_later_error.empty());
}

// --- run_forever / stop ---

TEST_CASE("loop: stop() from a callback ends run_forever after the current iteration", "[loop]") {
  cl::event_loop loop;
  std::vector<std::string> order;
  loop.call_soon([&] {
    order.push_back("stopper");
    loop.stop();
    loop.call_soon([&] { order.push_back("next iteration"); });
  });
  loop.call_soon([&] { order.push_back("same iteration"); });
  CHECK_FALSE(loop.is_running());
  loop.run_forever();
  CHECK_FALSE(loop.is_running());
  CHECK(order == std::vector<std::string>{"stopper", "same iteration"});
  // The loop can run again; what was scheduled is still there.
  loop.call_soon([&] { loop.stop(); });
  loop.run_forever();
  CHECK(order == std::vector<std::string>{"stopper", "same iteration", "next iteration"});
}

TEST_CASE("loop: is_running and get_running_loop inside and outside the loop", "[loop]") {
  CHECK_THROWS_AS(cl::get_running_loop(), cl::invalid_state_error);
  cl::event_loop loop;
  CHECK_THROWS_AS(cl::get_running_loop(), cl::invalid_state_error);  // created is not running
  cl::event_loop* seen = nullptr;
  bool running_inside = false;
  loop.call_soon([&] {
    seen = &cl::get_running_loop();
    running_inside = loop.is_running();
    loop.stop();
  });
  loop.run_forever();
  CHECK(seen == &loop);
  CHECK(running_inside);
  CHECK_FALSE(loop.is_running());
  CHECK_THROWS_AS(cl::get_running_loop(), cl::invalid_state_error);
  // Each thread has its own (absent) running loop.
  bool other_thread_threw = false;
  loop.call_soon([&] {
    std::thread other([&] {
      try {
        (void)cl::get_running_loop();
      } catch (const cl::invalid_state_error&) {
        other_thread_threw = true;
      }
    });
    other.join();
    loop.stop();
  });
  loop.run_forever();
  CHECK(other_thread_threw);
}

TEST_CASE("loop: running a loop inside a running loop throws invalid_state_error", "[loop]") {
  cl::event_loop loop;
  bool same_loop_threw = false;
  bool other_loop_threw = false;
  bool still_running = false;
  loop.call_soon([&] {
    try {
      loop.run_forever();
    } catch (const cl::invalid_state_error&) {
      same_loop_threw = true;
    }
    cl::event_loop other;
    try {
      other.run_forever();
    } catch (const cl::invalid_state_error&) {
      other_loop_threw = true;
    }
    still_running = &cl::get_running_loop() == &loop && loop.is_running();
    loop.stop();
  });
  loop.run_forever();
  CHECK(same_loop_threw);
  CHECK(other_loop_threw);
  CHECK(still_running);
}

TEST_CASE("loop: two loops can run one after the other on one thread, and on two threads at once", "[loop]") {
  int runs = 0;
  for (int i = 0; i < 3; ++i) {
    cl::event_loop loop;
    loop.call_soon([&] {
      ++runs;
      loop.stop();
    });
    loop.run_forever();
  }
  CHECK(runs == 3);
  std::atomic<int> finished{0};
  auto worker = [&] {
    cl::event_loop loop;
    int local = 0;
    for (int i = 0; i < 1000; ++i) loop.call_soon([&] { ++local; });
    loop.call_later(5ms, [&] { loop.stop(); });
    loop.run_forever();
    if (local == 1000) ++finished;
  };
  std::thread a(worker);
  std::thread b(worker);
  a.join();
  b.join();
  CHECK(finished == 2);
}

// --- run_until_complete ---

TEST_CASE("loop: run_until_complete returns the value or rethrows the exception", "[loop]") {
  cl::event_loop loop;
  CHECK(loop.run_until_complete(answer_later()) == 42);
  CHECK_FALSE(loop.is_running());
  REQUIRE_THROWS_WITH(loop.run_until_complete(fail_later()), "run_until_complete failure");
  // The same loop stays usable.
  CHECK(loop.run_until_complete(answer_later()) == 42);
  // A loop stopped before the awaitable finished says so.
  auto slow = []() -> cl::task<int> {
    cl::get_running_loop().stop();
    co_await cl::sleep(1ms);
    co_return 1;
  };
  CHECK_THROWS_AS(loop.run_until_complete(slow()), cl::invalid_state_error);
  CHECK(loop.run_until_complete(answer_later()) == 42);
}

// --- throwing callbacks ---

TEST_CASE("loop: a callback that throws is reported on stderr and the loop goes on", "[loop]") {
  cl::event_loop loop;
  std::vector<std::string> order;
  std::string output;
  {
    stderr_capture capture;
    loop.call_soon([&] {
      order.push_back("thrower");
      throw std::runtime_error("callback exploded");
    });
    loop.call_soon([&] { order.push_back("after"); });
    loop.call_later(1ms, [&] { throw 7; });
    loop.call_later(2ms, [&] {
      order.push_back("timer after");
      loop.stop();
    });
    loop.run_forever();
    output = capture.text();
  }
  INFO("stderr: " << output);
  CHECK(order == std::vector<std::string>{"thrower", "after", "timer after"});
  CHECK_THAT(output, Catch::Matchers::ContainsSubstring("callback exploded"));
  CHECK_THAT(output, Catch::Matchers::ContainsSubstring("unknown exception in callback"));
}

// --- time ---

TEST_CASE("loop: time() is monotonic and follows steady_clock", "[loop]") {
  cl::event_loop loop;
  cl::time_point previous = loop.time();
  for (int i = 0; i < 10'000; ++i) {
    cl::time_point now = loop.time();
    REQUIRE(now >= previous);
    previous = now;
  }
  const cl::time_point before = loop.time();
  std::this_thread::sleep_for(10ms);
  const cl::time_point after = loop.time();
  CHECK(after - before >= 10ms);
  CHECK(after - before < 10s);
  CHECK(cl::clock::now() >= after);
}

// --- close ---

TEST_CASE("loop: close() makes the scheduling calls and run_forever throw", "[loop]") {
  cl::event_loop loop;
  CHECK_FALSE(loop.is_closed());
  loop.close();
  CHECK(loop.is_closed());
  loop.close();  // idempotent
  CHECK_THROWS_AS(loop.call_soon([] {}), cl::invalid_state_error);
  CHECK_THROWS_AS(loop.call_later(1ms, [] {}), cl::invalid_state_error);
  CHECK_THROWS_AS(loop.call_at(loop.time(), [] {}), cl::invalid_state_error);
  CHECK_THROWS_AS(loop.call_soon_threadsafe([] {}), cl::invalid_state_error);
  CHECK_THROWS_AS(loop.run_forever(), cl::invalid_state_error);
}

TEST_CASE("loop: run_until_complete on a closed loop throws and does not keep the awaitable", "[loop]") {
  // The coroutine's frame owns `witness`: once the call failed and the loop is
  // gone, nothing may still hold it (a leaked frame would).
  auto witness = std::make_shared<int>(1);
  std::weak_ptr<int> watch = witness;
  auto holder = [](std::shared_ptr<int> owned) -> cl::task<int> {
    co_await cl::sleep(1ms);
    co_return *owned;
  };
  {
    cl::event_loop loop;
    loop.close();
    CHECK_THROWS_AS(loop.run_until_complete(holder(std::move(witness))), cl::invalid_state_error);
    CHECK(loop.pending_task_count() == 0);
  }
  CHECK(watch.expired());
}

TEST_CASE("loop: close() while running throws invalid_state_error", "[loop]") {
  cl::event_loop loop;
  bool threw = false;
  loop.call_soon([&] {
    try {
      loop.close();
    } catch (const cl::invalid_state_error&) {
      threw = true;
    }
    loop.stop();
  });
  loop.run_forever();
  CHECK(threw);
  CHECK_FALSE(loop.is_closed());
}

TEST_CASE("loop: close() discards callbacks and timers that never ran", "[loop]") {
  SECTION("no loop running on the thread") {
    int ran = 0;
    {
      cl::event_loop loop;
      loop.call_soon([&] { ++ran; });
      loop.call_later(1ms, [&] { ++ran; });
      loop.call_soon_threadsafe([&] { ++ran; });
      loop.close();
      CHECK(loop.timer_count() == 0);
    }
    CHECK(ran == 0);
  }
  SECTION("another loop running on the thread") {
    // A loop closed from inside another loop's callback must discard its own
    // callbacks, not run them under the loop that happens to be running.
    cl::event_loop outer;
    int ran = 0;
    outer.call_soon([&] {
      {
        cl::event_loop inner;
        inner.call_soon([&] { ++ran; });
        inner.call_soon_threadsafe([&] { ++ran; });
      }
      outer.stop();
    });
    outer.run_forever();
    CHECK(ran == 0);
  }
}

// The loop skips the non-blocking poll of the OS while ready work keeps it
// busy, but only for a bounded number of iterations: I/O that is ready must
// not starve behind a task that yields forever.
TEST_CASE("loop: ready I/O is noticed within a bounded number of iterations of a busy loop", "[loop]") {
  net_test::handle_pair ends;  // a pipe; a socket pair on Windows
  long spins_when_read = -1;
  long spins = 0;
  bool read_done = false;
  auto reader = [&]() -> cl::task<void> {
    std::byte byte{};
    const std::size_t got = co_await cl::read_some(ends.read_end, std::span<std::byte>(&byte, 1));
    CHECK(got == 1);
    spins_when_read = spins;
    read_done = true;
  };
  auto spinner = [&]() -> cl::task<void> {
    // Parked on the pipe first, then made readable while this task spins.
    co_await cl::sleep(0s);
    REQUIRE(ends.write("x") == 1);
    const long spins_at_write = spins;
    while (!read_done && spins < 100'000) {
      ++spins;
      co_await cl::sleep(0s);
    }
    CHECK(read_done);
    CHECK(spins_when_read - spins_at_write <= 64);
  };
  auto body = [&]() -> cl::task<void> {
    auto read_task = cl::create_task(reader);
    auto spin_task = cl::create_task(spinner);
    co_await cl::gather(std::move(read_task), std::move(spin_task));
  };
  cl::run(body());
}
