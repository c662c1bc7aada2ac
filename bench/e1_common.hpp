// bench/e1_common.hpp - what the C++ E1 echo benchmarks share.
//
// E1: 100 connections x 10,000 round trips of a 64-byte message. The program forks:
// the child is the echo server, pinned to CPU 0; the parent is the client, pinned to
// CPU 1. The child writes its port into a pipe once it listens and exits after every
// client connection has closed; the parent times its client, then reaps the child with
// wait4, whose rusage is the server's CPU. Prints
//   RESULT round_trips_per_s=.. client_cpu_us_per_rt=.. server_cpu_us_per_rt=..
// A wrong echo, a failed connection or a server that does not exit cleanly makes the
// program exit non-zero. Every wait is bounded.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <thread>

namespace bench_echo {

constexpr std::size_t connections = 100;
constexpr std::size_t round_trips_per_connection = 10000;
constexpr std::size_t message_size = 64;

/// The message every client sends (and must get back).
inline std::string message() {
  std::string text(message_size, '\0');
  for (std::size_t i = 0; i < message_size; ++i) text[i] = static_cast<char>('A' + i % 26);
  return text;
}

inline void pin_to_cpu(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  if (sched_setaffinity(0, sizeof set, &set) != 0) std::perror("sched_setaffinity (going on unpinned)");
}

inline double cpu_us(const rusage& usage) {
  auto micros = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

/// Passed to the server: call once listening, with the port.
class port_announcer {
 public:
  explicit port_announcer(int fd) : fd_(fd) {}
  void announce(std::uint16_t port) const {
    if (::write(fd_, &port, sizeof port) != static_cast<ssize_t>(sizeof port)) std::_Exit(3);
  }

 private:
  int fd_;
};

/// serve(announcer): runs the echo server until every connection closed; returns 0 on success.
/// run_clients(port): runs the clients; returns the number of round trips that echoed correctly.
inline int run_benchmark(const std::function<int(const port_announcer&)>& serve,
                         const std::function<std::size_t(std::uint16_t)>& run_clients) {
  int port_pipe[2];
  if (::pipe2(port_pipe, O_CLOEXEC) != 0) {
    std::perror("pipe2");
    return 1;
  }
  const pid_t parent = ::getpid();
  const pid_t server = ::fork();
  if (server < 0) {
    std::perror("fork");
    return 1;
  }
  if (server == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a dead client leaves no server behind
    if (::getppid() != parent) std::_Exit(4);
    ::close(port_pipe[0]);
    pin_to_cpu(0);
    int status = 1;
    try {
      status = serve(port_announcer(port_pipe[1]));
    } catch (const std::exception& error) {
      std::fprintf(stderr, "echo server: %s\n", error.what());
    }
    std::fflush(stderr);
    std::_Exit(status);
  }
  ::close(port_pipe[1]);
  pin_to_cpu(1);

  auto reap = [&](bool kill_first, rusage& usage) {
    if (kill_first) ::kill(server, SIGKILL);
    int status = 0;
    // Bounded: 30 s for the server to see every connection close, then SIGKILL.
    for (int waited_ms = 0; waited_ms < 30000; waited_ms += 1) {
      const pid_t done = ::wait4(server, &status, WNOHANG, &usage);
      if (done == server) return WIFEXITED(status) && WEXITSTATUS(status) == 0;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    ::kill(server, SIGKILL);
    ::wait4(server, &status, 0, &usage);
    std::fprintf(stderr, "echo server did not exit within 30 s\n");
    return false;
  };

  std::uint16_t port = 0;
  pollfd readable{port_pipe[0], POLLIN, 0};
  rusage server_usage{};
  if (::poll(&readable, 1, 10000) != 1 || ::read(port_pipe[0], &port, sizeof port) != sizeof port) {
    std::fprintf(stderr, "echo server did not start within 10 s\n");
    reap(true, server_usage);
    return 1;
  }
  ::close(port_pipe[0]);

  rusage client_before{};
  ::getrusage(RUSAGE_SELF, &client_before);
  const auto begin = std::chrono::steady_clock::now();
  std::size_t good = 0;
  try {
    good = run_clients(port);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "echo client: %s\n", error.what());
  }
  const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - begin).count();
  rusage client_after{};
  ::getrusage(RUSAGE_SELF, &client_after);
  const bool server_ok = reap(false, server_usage);

  const std::size_t expected = connections * round_trips_per_connection;
  if (good != expected || !server_ok) {
    std::fprintf(stderr, "wrong result: %zu good round trips of %zu, server %s\n", good, expected,
                 server_ok ? "ok" : "failed");
    return 1;
  }
  const double trips = static_cast<double>(expected);
  std::fprintf(stderr, "e1: %zu round trips in %.3f s, client CPU %.3f s, server CPU %.3f s\n", expected, wall_s,
               (cpu_us(client_after) - cpu_us(client_before)) / 1e6, cpu_us(server_usage) / 1e6);
  std::printf("RESULT round_trips_per_s=%.0f client_cpu_us_per_rt=%.3f server_cpu_us_per_rt=%.3f\n", trips / wall_s,
              (cpu_us(client_after) - cpu_us(client_before)) / trips, cpu_us(server_usage) / trips);
  std::fflush(stdout);
  return 0;
}

}  // namespace bench_echo
