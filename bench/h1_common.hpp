// bench/h1_common.hpp - what the C++ HTTP benchmark clients share (H1, H2, H3, C1, H1S, H2S).
//
// Every client is run as `<program> <workload> <port> [requests]`, workload one of
//   h1   GET /1k    100,000 requests over 64 keep-alive connections, latency percentiles
//   h2   GET /1m      1,000 requests over 8 keep-alive connections
//   h3   GET /1k     10,000 requests, a new connection each, 16 at a time
//   c1   GET /c64k   10,000 requests over 16 keep-alive connections, chunked 64 KiB bodies
// or, over TLS, as `<program> <workload> <tls-port> <ca-file> [requests]`:
//   h1s  h1 over https: the certificate verified against ca-file (bench/nginx.sh's CA)
//   h2s  h2 over https, likewise
// against the nginx of bench/nginx.sh, and prints one RESULT line with the keys of that
// workload (h1s those of h1, h2s those of h2). Client CPU is user + system time of this process (getrusage RUSAGE_SELF)
// across the timed part. A wrong status or body size makes the program exit non-zero.
#pragma once

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace bench_http {

struct workload {
  std::string name;        // "h1", "h2", "h3", "c1" (h1s and h2s: "h1" and "h2" with tls set)
  std::string path;        // what is fetched
  std::size_t body_size;   // what every response body must hold
  std::size_t connections; // at once
  std::size_t requests;    // in all
  bool new_connection;     // H3: "Connection: close", a fresh TCP connection per request
  std::uint16_t port;
  std::string host = "127.0.0.1";
  bool tls = false;        // https, the server's certificate verified against ca_file
  std::string ca_file = {};
  std::string url() const { return (tls ? "https://" : "http://") + host + ":" + std::to_string(port) + path; }
};

[[noreturn]] inline void usage(const char* program) {
  std::fprintf(stderr, "usage: %s h1|h2|h3|c1 PORT [REQUESTS]\n       %s h1s|h2s TLS_PORT CA_FILE [REQUESTS]\n",
               program, program);
  std::exit(2);
}

inline workload parse_arguments(int argc, char** argv) {
  if (argc < 3) usage(argv[0]);
  std::string name = argv[1];
  const bool tls = name == "h1s" || name == "h2s";
  if (tls) name.pop_back();
  const int first_optional = tls ? 4 : 3;
  if (argc < first_optional || argc > first_optional + 1) usage(argv[0]);
  workload chosen;
  if (name == "h1") {
    chosen = {"h1", "/1k", 1024, 64, 100000, false, 0};
  } else if (name == "h2") {
    chosen = {"h2", "/1m", std::size_t{1} << 20, 8, 1000, false, 0};
  } else if (name == "h3") {
    chosen = {"h3", "/1k", 1024, 16, 10000, true, 0};
  } else if (name == "c1") {
    chosen = {"c1", "/c64k", 65536, 16, 10000, false, 0};
  } else {
    usage(argv[0]);
  }
  const long port = std::atol(argv[2]);
  if (port <= 0 || port > 65535) usage(argv[0]);
  chosen.port = static_cast<std::uint16_t>(port);
  if (tls) {
    chosen.tls = true;
    chosen.ca_file = argv[3];
  }
  if (argc == first_optional + 1) {
    const long requests = std::atol(argv[first_optional]);
    if (requests <= 0) usage(argv[0]);
    chosen.requests = static_cast<std::size_t>(requests);
  }
  return chosen;
}

/// User + system CPU time of this process so far, in microseconds.
inline double process_cpu_us() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto micros = [](const timeval& t) { return static_cast<double>(t.tv_sec) * 1e6 + static_cast<double>(t.tv_usec); };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

/// Wall clock and CPU from construction to report(); latencies recorded per request.
class measurement {
 public:
  explicit measurement(const workload& chosen) : chosen_(chosen) { latencies_us_.reserve(chosen.requests); }

  void start() {
    cpu_start_us_ = process_cpu_us();
    wall_start_ = std::chrono::steady_clock::now();
  }
  void record_latency(std::chrono::steady_clock::duration took) {
    latencies_us_.push_back(std::chrono::duration<double, std::micro>(took).count());
  }

  /// Prints the RESULT line of the workload; returns the exit status (1 when
  /// the number of good responses is not the number asked for).
  int report(std::size_t good_responses, std::size_t body_bytes) {
    const double wall_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start_).count();
    const double cpu_us = process_cpu_us() - cpu_start_us_;
    if (good_responses != chosen_.requests || body_bytes != chosen_.requests * chosen_.body_size) {
      std::fprintf(stderr, "wrong result: %zu good responses of %zu, %zu body bytes of %zu\n", good_responses,
                   chosen_.requests, body_bytes, chosen_.requests * chosen_.body_size);
      return 1;
    }
    const double requests = static_cast<double>(chosen_.requests);
    const double mib = static_cast<double>(body_bytes) / (1024.0 * 1024.0);
    std::fprintf(stderr, "%s%s: %zu requests in %.3f s, client CPU %.3f s\n", chosen_.name.c_str(),
                 chosen_.tls ? "s" : "", chosen_.requests, wall_s, cpu_us / 1e6);
    if (chosen_.name == "h1") {
      std::printf("RESULT req_per_s=%.0f p50_us=%.1f p99_us=%.1f client_cpu_us_per_req=%.2f\n", requests / wall_s,
                  percentile(0.50), percentile(0.99), cpu_us / requests);
    } else if (chosen_.name == "h2") {
      std::printf("RESULT mb_per_s=%.1f client_cpu_ms_per_mib=%.4f\n", static_cast<double>(body_bytes) / 1e6 / wall_s,
                  cpu_us / 1000.0 / mib);
    } else if (chosen_.name == "h3") {
      std::printf("RESULT req_per_s=%.0f client_cpu_us_per_req=%.2f\n", requests / wall_s, cpu_us / requests);
    } else {
      std::printf("RESULT req_per_s=%.0f client_cpu_us_per_resp=%.2f\n", requests / wall_s, cpu_us / requests);
    }
    std::fflush(stdout);
    return 0;
  }

 private:
  double percentile(double fraction) {
    if (latencies_us_.empty()) return 0;
    const std::size_t index =
        std::min(latencies_us_.size() - 1, static_cast<std::size_t>(fraction * static_cast<double>(latencies_us_.size())));
    std::nth_element(latencies_us_.begin(), latencies_us_.begin() + static_cast<std::ptrdiff_t>(index),
                     latencies_us_.end());
    return latencies_us_[index];
  }

  workload chosen_;
  double cpu_start_us_ = 0;
  std::chrono::steady_clock::time_point wall_start_;
  std::vector<double> latencies_us_;
};

}  // namespace bench_http
