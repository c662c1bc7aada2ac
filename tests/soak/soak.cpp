// tests/soak/soak.cpp - `make soak` (not part of CI): mixed traffic
// for SOAK_SECONDS (default 1800 = 30 minutes), printing the resident set size and
// the open fd count every SOAK_REPORT_SECONDS (default 60). Traffic, all at once:
//   - HTTP against a private nginx (tests/nginx_fixture.hpp): /1k, /c/1k, /1m, redirects
//   - HTTP against an in-process fault server: resets, bad framing, stalls (read
//     timeouts), 1,000 headers, a body over max_body, and good answers in between
//   - an echo server and clients opening, using and closing connections
//   - timers (random sleeps, lateness recorded) and to_thread jobs
//   - cancellations: requests, sleeps and queue waits cancelled at random points
// Exit status 0 when, after warm-up (the first report), the RSS stays within 5% of
// its value then (SOAK_RSS_SLACK_PERCENT) plus the bodies that may be in flight at
// a sample (SOAK_RSS_SLACK_KIB, 8192: eight 1 MiB bodies), the fd count ends no
// higher than at that point, and no operation failed in a way it should not have.
#include "coro_loop.hpp"

#include "nginx_fixture.hpp"
#include "test_support.hpp"

#include <sys/socket.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

namespace cl = coro_loop;
namespace http = coro_loop::http;
using namespace std::chrono_literals;

namespace {

struct soak_stats {
  std::uint64_t nginx_ok = 0, fault_expected = 0, echo_ok = 0, timers = 0, jobs = 0, cancelled = 0;
  std::uint64_t unexpected = 0;
  double worst_timer_late_ms = 0;
  std::vector<std::string> first_unexpected;
  void fail(const std::string& what) {
    ++unexpected;
    if (first_unexpected.size() < 10) first_unexpected.push_back(what);
  }
};

bool running(cl::time_point end) { return cl::clock::now() < end; }

cl::task<void> nginx_traffic(soak_stats* s, const nginx_test::nginx* server, cl::time_point end, unsigned seed) {
  std::mt19937 rng(seed);
  http::client client;
  const char* paths[] = {"/1k", "/c/1k", "/1m", "/r301", "/chain1", "/c/1m"};
  const std::size_t sizes[] = {1024, 1024, 1048576, 1024, 1024, 1048576};
  while (running(end)) {
    const std::size_t which = rng() % 6;
    try {
      http::response response = co_await cl::timeout(30s, client.get(server->url(paths[which])));
      const std::string body = co_await cl::timeout(30s, response.text());
      if (body.size() == sizes[which]) {
        ++s->nginx_ok;
      } else {
        s->fail(std::string("nginx ") + paths[which] + ": " + std::to_string(body.size()) + " bytes");
      }
    } catch (const std::exception& error) {
      s->fail(std::string("nginx ") + paths[which] + ": " + error.what());
    }
  }
}

// The fault server: what it does depends on the request target.
cl::task<void> fault_handler(cl::stream connection) {
  try {
    for (int i = 0; i < 1000; ++i) {
      const std::string head = co_await connection.read_until("\r\n\r\n");
      const std::size_t first = head.find(' ');
      const std::string target = head.substr(first + 1, head.find(' ', first + 1) - first - 1);
      if (target == "/reset") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
        co_await connection.drain();
        co_await cl::sleep(5ms);
        const linger option{1, 0};
        ::setsockopt(connection.handle(), SOL_SOCKET, SO_LINGER, &option, sizeof option);
        connection.abort();
        co_return;
      }
      if (target == "/bad") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok");
      } else if (target == "/stall") {
        (void)co_await cl::timeout(5s, connection.read());
        break;
      } else if (target == "/headers") {
        std::string out = "HTTP/1.1 200 OK\r\n";
        for (int h = 0; h < 1000; ++h) out += "X-H" + std::to_string(h) + ": v\r\n";
        connection.write(out + "Content-Length: 2\r\n\r\nok");
      } else if (target == "/huge") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 10000000000\r\n\r\n");
        const std::string piece(64 * 1024, 'z');
        for (int p = 0; p < 64 && !connection.is_closing(); ++p) {
          connection.write(piece);
          co_await connection.drain();
        }
        break;
      } else {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood");
      }
      co_await connection.drain();
      if (target != "/good") break;
    }
  } catch (const std::exception&) {
  }
  connection.close();
}

cl::task<void> fault_traffic(soak_stats* s, std::uint16_t port, cl::time_point end, unsigned seed) {
  std::mt19937 rng(seed);
  http::client_options options;
  options.timeout.read = 200ms;
  options.limits.max_body = 1 << 20;
  http::client client(options);
  const std::string base = "http://127.0.0.1:" + std::to_string(port);
  const char* paths[] = {"/good", "/reset", "/bad", "/stall", "/headers", "/huge"};
  while (running(end)) {
    const std::size_t which = rng() % 6;
    bool failed_as_expected = false;
    try {
      http::response response = co_await cl::timeout(30s, client.get(base + paths[which]));
      const std::string body = co_await cl::timeout(30s, response.text());
      if (which == 0 && body == "good") {
        ++s->fault_expected;
      } else {
        s->fail(std::string("fault ") + paths[which] + " succeeded");
      }
    } catch (const http::protocol_error&) {
      failed_as_expected = which == 2 || which == 4 || which == 5;
    } catch (const cl::timeout_error&) {
      failed_as_expected = which == 3;
    } catch (const std::system_error&) {
      failed_as_expected = which == 1;
    } catch (const std::exception& error) {
      s->fail(std::string("fault ") + paths[which] + ": " + error.what());
    }
    if (failed_as_expected) ++s->fault_expected;
  }
}

cl::task<void> echo_handler(cl::stream connection) {
  try {
    for (int i = 0; i < 1000; ++i) {
      const std::string line = co_await connection.read_line();
      if (line.empty()) break;
      connection.write(line);
      co_await connection.drain();
    }
  } catch (const std::exception&) {
  }
  connection.close();
}

cl::task<void> echo_traffic(soak_stats* s, std::uint16_t port, cl::time_point end, unsigned seed) {
  std::mt19937 rng(seed);
  while (running(end)) {
    try {
      cl::stream connection = co_await cl::timeout(10s, cl::open_connection("127.0.0.1", port));
      const int lines = 1 + static_cast<int>(rng() % 20);
      for (int i = 0; i < lines; ++i) {
        const std::string line = "line " + std::to_string(rng()) + "\n";
        connection.write(line);
        const std::string back = co_await cl::timeout(10s, connection.read_line());
        if (back != line) s->fail("echo mismatch");
      }
      connection.close();
      co_await connection.wait_closed();
      ++s->echo_ok;
    } catch (const std::exception& error) {
      s->fail(std::string("echo: ") + error.what());
    }
  }
}

cl::task<void> timer_traffic(soak_stats* s, cl::time_point end, unsigned seed) {
  std::mt19937 rng(seed);
  while (running(end)) {
    const cl::time_point asked = cl::clock::now() + std::chrono::milliseconds(rng() % 20);
    co_await cl::sleep_until(asked);
    const double late = std::chrono::duration<double, std::milli>(cl::clock::now() - asked).count();
    s->worst_timer_late_ms = std::max(s->worst_timer_late_ms, late);
    ++s->timers;
    const std::uint32_t x = co_await cl::to_thread([](std::uint32_t v) { return v * 2654435761u; }, rng());
    (void)x;
    ++s->jobs;
  }
}

cl::task<void> victim(soak_stats* s, int kind, cl::queue<int>* q, http::client* client, std::string url) {
  (void)s;
  if (kind == 0) {
    co_await cl::sleep(50ms);
  } else if (kind == 1) {
    (void)co_await q->get();
  } else {
    http::response response = co_await client->get(url);
    (void)co_await response.text();
  }
}

cl::task<void> cancel_traffic(soak_stats* s, const nginx_test::nginx* server, cl::time_point end, unsigned seed) {
  std::mt19937 rng(seed);
  cl::queue<int> q;
  http::client client;
  while (running(end)) {
    auto handle = cl::create_task(victim, s, static_cast<int>(rng() % 3), &q, &client, server->url("/1m"));
    co_await cl::sleep(std::chrono::microseconds(rng() % 3000));
    handle.cancel();
    while (!handle.done()) co_await cl::sleep(1ms);
    if (handle.cancelled()) ++s->cancelled;
  }
}

double env_seconds(const char* name, double fallback) {
  const char* text = std::getenv(name);
  return text != nullptr && *text != '\0' ? std::strtod(text, nullptr) : fallback;
}

}  // namespace

int main() {
  const double total_seconds = env_seconds("SOAK_SECONDS", 1800);
  const double report_seconds = env_seconds("SOAK_REPORT_SECONDS", 60);
  const double slack_percent = env_seconds("SOAK_RSS_SLACK_PERCENT", 5);
  const auto slack_kib = static_cast<std::size_t>(env_seconds("SOAK_RSS_SLACK_KIB", 8192));
  nginx_test::nginx nginx_server;
  soak_stats s;
  std::size_t warm_rss = 0;
  std::size_t warm_fds = 0;
  std::size_t max_rss_after_warm_up = 0;
  std::size_t end_fds = 0;
  cl::run([&]() -> cl::task<void> {
    const cl::time_point start = cl::clock::now();
    const cl::time_point end = start + std::chrono::duration_cast<cl::duration>(std::chrono::duration<double>(total_seconds));
    cl::server echo_server = co_await cl::start_server(echo_handler, "127.0.0.1", 0);
    cl::server fault_server = co_await cl::start_server(fault_handler, "127.0.0.1", 0);
    std::vector<cl::task_handle<void>> workers;
    for (unsigned i = 0; i < 4; ++i) {
      workers.push_back(cl::create_task(nginx_traffic, &s, &nginx_server, end, 100 + i));
      workers.push_back(cl::create_task(fault_traffic, &s, fault_server.port(), end, 200 + i));
      workers.push_back(cl::create_task(echo_traffic, &s, echo_server.port(), end, 300 + i));
      workers.push_back(cl::create_task(timer_traffic, &s, end, 400 + i));
      workers.push_back(cl::create_task(cancel_traffic, &s, &nginx_server, end, 500 + i));
    }
    std::printf("soak: %.0f s of mixed traffic, a report every %.0f s (nginx on port %u)\n", total_seconds,
                report_seconds, nginx_server.port());
    std::fflush(stdout);
    for (int report = 1; running(end); ++report) {
      co_await cl::sleep_until(std::min(end, start + std::chrono::duration_cast<cl::duration>(
                                                         std::chrono::duration<double>(report * report_seconds))));
      const std::size_t rss = test_support::rss_kib();
      const std::size_t fds = test_support::open_fd_count();
      if (report == 1) {
        warm_rss = rss;
        warm_fds = fds;
      } else {
        max_rss_after_warm_up = std::max(max_rss_after_warm_up, rss);
      }
      std::printf("soak: %6.0f s  RSS %7zu KiB  fds %4zu  nginx %8llu  fault %8llu  echo %7llu  timers %8llu"
                  "  jobs %8llu  cancelled %7llu  unexpected %llu  worst timer %.1f ms late\n",
                  std::chrono::duration<double>(cl::clock::now() - start).count(), rss, fds,
                  static_cast<unsigned long long>(s.nginx_ok), static_cast<unsigned long long>(s.fault_expected),
                  static_cast<unsigned long long>(s.echo_ok), static_cast<unsigned long long>(s.timers),
                  static_cast<unsigned long long>(s.jobs), static_cast<unsigned long long>(s.cancelled),
                  static_cast<unsigned long long>(s.unexpected), s.worst_timer_late_ms);
      std::fflush(stdout);
    }
    (void)co_await cl::wait(workers, cl::return_when::all_completed, 120s);
    echo_server.close();
    fault_server.close();
    echo_server.close_clients();
    fault_server.close_clients();
    co_await cl::timeout(30s, echo_server.wait_closed());
    co_await cl::timeout(30s, fault_server.wait_closed());
    co_await cl::sleep(100ms);
    end_fds = test_support::open_fd_count();
  }());
  bool ok = true;
  for (const std::string& what : s.first_unexpected) std::printf("soak: unexpected: %s\n", what.c_str());
  if (s.unexpected != 0) ok = false;
  if (max_rss_after_warm_up > warm_rss + static_cast<std::size_t>(warm_rss * slack_percent / 100) + slack_kib) {
    std::printf("soak: RSS grew from %zu KiB after warm-up to %zu KiB (more than %.0f%% + %zu KiB)\n", warm_rss,
                max_rss_after_warm_up, slack_percent, slack_kib);
    ok = false;
  }
  if (end_fds > warm_fds) {
    std::printf("soak: %zu fds open at the end, %zu after warm-up\n", end_fds, warm_fds);
    ok = false;
  }
  std::printf("soak: %s: RSS after warm-up %zu KiB, highest later %zu KiB; fds %zu after warm-up, %zu at the end\n",
              ok ? "PASS" : "FAIL", warm_rss, max_rss_after_warm_up, warm_fds, end_fds);
  return ok ? 0 : 1;
}
