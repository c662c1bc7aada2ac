// tests/test_load.cpp - load [load]: many concurrent connections to our own echo
// server on loopback, all served; 100,000 tasks on one task_group with random
// failures, every error accounted for; a thread pool saturated with jobs while the
// loop keeps its timers on time and the debug-mode slow-step warning never fires.
// Open fds and live tasks come back afterwards.
//
// Sizes (the full sizes are the optimized build's defaults; unoptimized and sanitized builds
// and valgrind use less unless told):
//   CORO_LOOP_LOAD_CONNECTIONS  concurrent connections [10,000; 1,000 unoptimized or sanitized;
//                               200 valgrind]
//                               (RLIMIT_NOFILE is raised to fit; when the hard limit
//                               cannot be raised, as many as it allows run, with a
//                               warning, or the case is skipped when that is < 1,000;
//                               Windows has no such limit)
//   CORO_LOOP_LOAD_TASKS        task_group children    [100,000; 20,000; 5,000]
//   CORO_LOOP_LOAD_JOBS         thread pool jobs       [1,000,000; 100,000; 20,000]
#include "catch.hpp"
#include "coro_loop.hpp"

#include "net_helpers.hpp"
#include "test_support.hpp"

#if defined(CORO_LOOP_POSIX)
#include <sys/resource.h>
#endif

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <optional>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using test_support::resource_counts;
using test_support::sized;

namespace {

#if defined(CORO_LOOP_POSIX)
// Raises RLIMIT_NOFILE to at least `needed` for its lifetime; ok() tells whether it could.
class fd_limit {
 public:
  explicit fd_limit(rlim_t needed) {
    if (::getrlimit(RLIMIT_NOFILE, &saved_) != 0) return;
    if (saved_.rlim_cur != RLIM_INFINITY && saved_.rlim_cur >= needed) {
      ok_ = true;
      return;
    }
    rlimit wanted = saved_;
    wanted.rlim_cur = needed;
    if (wanted.rlim_max != RLIM_INFINITY && wanted.rlim_max < needed) wanted.rlim_max = needed;  // root only
    if (::setrlimit(RLIMIT_NOFILE, &wanted) == 0) {
      ok_ = changed_ = true;
    } else {
      message_ = "RLIMIT_NOFILE is " + std::to_string(saved_.rlim_cur) + " (hard " + std::to_string(saved_.rlim_max) +
                 ") and cannot be raised to " + std::to_string(needed) + ": " + std::strerror(errno);
    }
  }
  ~fd_limit() {
    if (changed_) ::setrlimit(RLIMIT_NOFILE, &saved_);
  }
  fd_limit(const fd_limit&) = delete;
  fd_limit& operator=(const fd_limit&) = delete;
  bool ok() const noexcept { return ok_; }
  const std::string& message() const noexcept { return message_; }

 private:
  rlimit saved_{};
  bool ok_ = false;
  bool changed_ = false;
  std::string message_;
};
#else
// Windows limits handles only by memory (about 16 million per process): nothing to raise.
using rlim_t = std::uint64_t;
class fd_limit {
 public:
  explicit fd_limit(rlim_t) {}
  bool ok() const noexcept { return true; }
  const std::string& message() const noexcept { return message_; }

 private:
  std::string message_;
};
#endif

struct load_state {
  std::size_t connected = 0;
  std::size_t served = 0;
  std::size_t failed = 0;
  std::vector<std::string> failures;
  cl::event all_connected;
};

cl::task<void> one_client(load_state* state, std::uint16_t port, cl::semaphore* connecting, std::size_t index) {
  load_state& s = *state;
  try {
    cl::stream_options options;
    options.read_chunk = 1024;
    cl::stream connection;
    {
      auto permit = co_await connecting->scoped();  // at most so many SYNs in flight
      connection = co_await cl::open_connection("127.0.0.1", port, options);
    }
    ++s.connected;
    co_await s.all_connected.wait();  // every connection is open at once
    const std::string line = "client " + std::to_string(index) + "\n";
    connection.write(line);
    const std::string back = co_await connection.read_line();
    if (back != line) throw std::runtime_error("echo returned " + back);
    ++s.served;
    connection.close();
    co_await connection.wait_closed();
  } catch (const std::exception& error) {
    ++s.failed;
    if (s.failures.size() < 5) s.failures.push_back(error.what());
  }
}

}  // namespace

TEST_CASE("load: many concurrent connections to our echo server are all served", "[load]") {
  std::uint64_t connections = sized("CORO_LOOP_LOAD_CONNECTIONS", 10'000, 1'000, 200);
  std::optional<fd_limit> limit;
  limit.emplace(static_cast<rlim_t>(2 * connections + 256));
#if defined(CORO_LOOP_POSIX)
  if (!limit->ok()) {
    // Without the right to raise the hard limit: as many as it allows, if that is
    // still a real load; else skipped. Either way it says so.
    const std::string why = limit->message();
    limit.reset();
    rlimit current{};
    ::getrlimit(RLIMIT_NOFILE, &current);
    const std::uint64_t fit = current.rlim_max > 256 ? (current.rlim_max - 256) / 2 : 0;
    if (fit < 1'000) {
      WARN("load: skipped " << connections << " connections: " << why);
      return;
    }
    WARN("load: " << why << "; running " << fit << " connections instead of " << connections);
    connections = fit;
    limit.emplace(static_cast<rlim_t>(2 * connections + 256));
    REQUIRE(limit->ok());
  }
#endif
  test_support::fd_guard fds;
  cl::run([](std::uint64_t n) -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    const cl::time_point started = cl::clock::now();
    {
      cl::server_options options;
      options.backlog = 4096;
      options.stream.read_chunk = 1024;
      cl::server server = co_await cl::start_server(net_test::echo_lines_until_end, "127.0.0.1", 0, options);
      load_state s;
      cl::semaphore connecting(256);
      std::vector<cl::task_handle<void>> clients;
      clients.reserve(n);
      for (std::size_t i = 0; i < n; ++i) {
        clients.push_back(cl::create_task(one_client, &s, server.port(), &connecting, i));
      }
      // Wait (bounded) until every client connected or failed, then release them all.
      const cl::time_point deadline = cl::clock::now() + 120s;
      while (s.connected + s.failed < n && cl::clock::now() < deadline) co_await cl::sleep(5ms);
      const std::size_t at_once = s.connected;
      // The server side: every connection accepted and its handler running.
      while (server.connection_count() < at_once && cl::clock::now() < deadline) co_await cl::sleep(5ms);
      const std::size_t handlers = server.connection_count();
      s.all_connected.set();
      auto waiting = cl::wait(clients, cl::return_when::all_completed, 120s);
      auto result = co_await std::move(waiting);
      const double seconds = std::chrono::duration<double>(cl::clock::now() - started).count();
      std::printf("load: %zu connections open at once (%zu server handlers), %zu served, %zu failed, %.2f s\n",
                  at_once, handlers, s.served, s.failed, seconds);
      std::fflush(stdout);
      for (const std::string& failure : s.failures) UNSCOPED_INFO("failure: " << failure);
      CHECK(result.pending.empty());
      CHECK(s.failed == 0);
      CHECK(at_once == n);
      CHECK(handlers == n);
      CHECK(s.served == n);
      server.close();
      server.close_clients();
      co_await cl::timeout(60s, server.wait_closed());
    }
    co_await test_support::expect_resources_back(before, 30s);
  }(connections));
  fds.check();
}

namespace {

struct group_counts {
  std::uint64_t thrown = 0;
  std::uint64_t completed = 0;
  std::uint64_t cancelled = 0;
};

cl::task<void> child(group_counts* counts, bool fails, int steps) {
  try {
    for (int i = 0; i < steps; ++i) co_await cl::sleep(0ms);
    if (fails) {
      ++counts->thrown;
      throw std::runtime_error("planned failure");
    }
    co_await cl::sleep(1ms);
    ++counts->completed;
  } catch (const cl::cancelled_error&) {
    ++counts->cancelled;
    throw;
  }
}

}  // namespace

TEST_CASE("load: 100,000 tasks on one task_group with random failures: every error is in the group", "[load]") {
  const std::uint64_t tasks = sized("CORO_LOOP_LOAD_TASKS", 100'000, 20'000, 5'000);
  test_support::fd_guard fds;
  cl::run([](std::uint64_t n) -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    std::mt19937 rng(20261124);
    for (int round = 0; round < 2; ++round) {
      // Round 0: about one child in 2,000 fails; round 1: none does.
      group_counts counts;
      std::size_t error_count = 0;
      bool raised = false;
      const cl::time_point started = cl::clock::now();
      try {
        co_await cl::with_task_group([&](cl::task_group& group) -> cl::task<void> {
          for (std::uint64_t i = 0; i < n; ++i) {
            const bool fails = round == 0 && rng() % 2000 == 0;
            (void)group.create_task(child(&counts, fails, static_cast<int>(rng() % 4)));
          }
          co_return;
        });
      } catch (const cl::exception_group& errors) {
        raised = true;
        error_count = errors.exceptions().size();
        for (const std::exception_ptr& error : errors.exceptions()) {
          CHECK(cl::exception_group::describe(error) == "planned failure");
        }
      }
      const double seconds = std::chrono::duration<double>(cl::clock::now() - started).count();
      std::printf("load: task_group round %d: %llu children, %llu failed, %llu completed, %llu cancelled, %.2f s\n",
                  round, static_cast<unsigned long long>(n), static_cast<unsigned long long>(counts.thrown),
                  static_cast<unsigned long long>(counts.completed), static_cast<unsigned long long>(counts.cancelled),
                  seconds);
      std::fflush(stdout);
      CHECK(counts.thrown + counts.completed + counts.cancelled == n);
      if (round == 0) {
        CHECK(raised);
        CHECK(counts.thrown > 0);
        CHECK(error_count == counts.thrown);
      } else {
        CHECK_FALSE(raised);
        CHECK(counts.completed == n);
      }
    }
    co_await test_support::expect_resources_back(before);
  }(tasks));
  fds.check();
}

namespace {

struct ticker_result {
  std::uint64_t ticks = 0;
  double worst_late_ms = 0;
};

// Sleeps 10 ms at a time until stopped and records how late each wake-up was.
cl::task<void> ticker(ticker_result* result, const bool* stop) {
  while (!*stop) {
    const cl::time_point asked = cl::clock::now() + 10ms;
    co_await cl::sleep_until(asked);
    const double late = std::chrono::duration<double, std::milli>(cl::clock::now() - asked).count();
    result->worst_late_ms = std::max(result->worst_late_ms, late);
    ++result->ticks;
  }
}

cl::task<void> submitter(cl::thread_pool* pool, std::uint64_t jobs, std::atomic<std::uint64_t>* ran,
                         std::uint64_t* results) {
  for (std::uint64_t i = 0; i < jobs; ++i) {
    const std::uint64_t value = co_await cl::run_in_executor(
        *pool,
        [ran](std::uint64_t x) {
          ran->fetch_add(1, std::memory_order_relaxed);
          return x + 1;
        },
        i);
    *results += value - i;
  }
}

}  // namespace

TEST_CASE("load: a thread pool saturated with jobs: the loop keeps its timers and never blocks", "[load]") {
  const std::uint64_t jobs = sized("CORO_LOOP_LOAD_JOBS", 1'000'000, 100'000, 20'000);
  test_support::stderr_capture captured;
  test_support::fd_guard fds;
  std::uint64_t results = 0;
  std::atomic<std::uint64_t> ran{0};
  ticker_result ticks;
  double seconds = 0;
  cl::run_options options;
  options.debug = true;
  // Generous: a loaded 2-core machine; valgrind runs one thread at a time.
  options.slow_callback_duration = test_support::instrumented() ? 1000ms : 250ms;
  cl::run(
      [](std::uint64_t n, std::uint64_t* results, std::atomic<std::uint64_t>* ran, ticker_result* ticks,
         double* seconds) -> cl::task<void> {
        const resource_counts before = resource_counts::now();
        const cl::time_point started = cl::clock::now();
        {
          cl::thread_pool pool(2);
          bool stop = false;
          auto clock_task = cl::create_task(ticker, ticks, &stop);
          // 256 submitters keep the pool's queue full: always more jobs than workers.
          constexpr std::uint64_t submitters = 256;
          std::vector<cl::task_handle<void>> handles;
          for (std::uint64_t i = 0; i < submitters; ++i) {
            const std::uint64_t share = n / submitters + (i < n % submitters ? 1 : 0);
            handles.push_back(cl::create_task(submitter, &pool, share, ran, results));
          }
          auto waiting = cl::wait(handles, cl::return_when::all_completed, 300s);
          auto result = co_await std::move(waiting);
          CHECK(result.pending.empty());
          stop = true;
          for (int i = 0; i < 5000 && !clock_task.done(); ++i) co_await cl::sleep(1ms);
          CHECK(clock_task.done());
        }
        *seconds = std::chrono::duration<double>(cl::clock::now() - started).count();
        co_await test_support::expect_resources_back(before);
      }(jobs, &results, &ran, &ticks, &seconds),
      options);
  const std::string warnings = captured.text_so_far();  // the capture stays open: fds counted its descriptors
  std::printf("load: %llu pool jobs in %.2f s, %llu ticks of 10 ms, the latest %.1f ms late\n",
              static_cast<unsigned long long>(jobs), seconds, static_cast<unsigned long long>(ticks.ticks),
              ticks.worst_late_ms);
  std::fflush(stdout);
  INFO("stderr: " << warnings);
  CHECK(results == jobs);
  CHECK(ran.load() == jobs);
  CHECK(ticks.ticks > 0);
  CHECK(ticks.worst_late_ms < (test_support::instrumented() ? 3000.0 : 1000.0));  // on time, generously
  CHECK(warnings.find("took") == std::string::npos);  // no slow-step warning
  fds.check();
}
