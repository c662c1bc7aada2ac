// bench/h1_coro_loop.cpp - H1/H2/H3/C1, and H1S/H2S over TLS, with coro_loop's http::client
// (see h1_common.hpp). One client whose limit is the connection count and as many worker
// tasks, each sending its next GET as soon as its last body was read; H3 turns keep-alive
// off, so every request says "Connection: close" and opens a new connection. Over TLS the
// client's context is tls_context::client() trusting the benchmark's CA, as a user with a
// private CA writes it (verification on); built with CORO_LOOP_OPENSSL (h1_coro_loop.flags).
#include "../coro_loop.hpp"
#include "h1_common.hpp"

#include <exception>

namespace cl = coro_loop;

struct tally {
  std::size_t started = 0;
  std::size_t good = 0;
  std::size_t body_bytes = 0;
};

cl::task<void> worker(cl::http::client& client, const bench_http::workload& chosen, const std::string& url,
                      bench_http::measurement& measured, tally& counts) {
  while (counts.started < chosen.requests) {
    ++counts.started;
    const auto begin = std::chrono::steady_clock::now();
    cl::http::response reply = co_await client.get(url);
    const std::string body = co_await reply.text();
    measured.record_latency(std::chrono::steady_clock::now() - begin);
    if (reply.status() != 200 || body.size() != chosen.body_size) {
      std::fprintf(stderr, "bad response: status %d, %zu body bytes\n", reply.status(), body.size());
      continue;
    }
    ++counts.good;
    counts.body_bytes += body.size();
  }
}

cl::task<int> run_workload(bench_http::workload chosen) {
  cl::http::client_options options;
  options.limit = chosen.connections;
  options.keep_alive = !chosen.new_connection;
  if (chosen.tls) {
    options.tls = cl::tls_context::client();
    options.tls.load_verify_locations(chosen.ca_file);
  }
  cl::http::client client(std::move(options));
  const std::string url = chosen.url();
  bench_http::measurement measured(chosen);
  tally counts;
  measured.start();
  std::vector<cl::task<void>> workers;
  for (std::size_t i = 0; i < chosen.connections; ++i) workers.push_back(worker(client, chosen, url, measured, counts));
  co_await cl::gather(std::move(workers));
  const int status = measured.report(counts.good, counts.body_bytes);
  if (!chosen.new_connection && client.connections_opened() != chosen.connections) {
    std::fprintf(stderr, "expected %zu connections, %zu were opened\n", chosen.connections, client.connections_opened());
    co_return 1;
  }
  client.close();
  co_return status;
}

int main(int argc, char** argv) {
  const bench_http::workload chosen = bench_http::parse_arguments(argc, argv);
  try {
    return cl::run(run_workload(chosen));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "h1_coro_loop: %s\n", error.what());
    return 1;
  }
}
