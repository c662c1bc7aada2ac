// bench/h1_coro_loop.cpp - H1/H2/H3/C1, and H1S/H2S over TLS, with coro_loop's http::client
// (see h1_common.hpp). One client whose limit is the connection count and as many worker
// tasks, each sending its next GET as soon as its last body was read; H3 turns keep-alive
// off, so every request says "Connection: close" and opens a new connection. Over TLS the
// client's context is tls_context::client() trusting the benchmark's CA, as a user with a
// private CA writes it (verification on); built with CORO_LOOP_OPENSSL (h1_coro_loop.flags).
// With --read-into (H2R) each worker reads its bodies with response::read_into into one
// 1 MiB buffer of its own, reused, instead of text().
#include "../coro_loop.hpp"
#include "h1_common.hpp"

#include <algorithm>
#include <exception>
#include <string_view>
#include <vector>

namespace cl = coro_loop;

struct tally {
  std::size_t started = 0;
  std::size_t good = 0;
  std::size_t body_bytes = 0;
};

// The body's size: text(), or read_into `buffer` when it is not empty.
cl::task<std::size_t> read_body(cl::http::response& reply, std::string& buffer) {
  if (buffer.empty()) {
    const std::string body = co_await reply.text();
    co_return body.size();
  }
  std::size_t size = 0;
  for (;;) {
    const std::size_t got = co_await reply.read_into(buffer);
    if (got == 0) co_return size;
    size += got;
  }
}

cl::task<void> worker(cl::http::client& client, const bench_http::workload& chosen, const std::string& url,
                      bench_http::measurement& measured, tally& counts, bool read_into) {
  std::string buffer(read_into ? std::size_t{1} << 20 : 0, '\0');
  while (counts.started < chosen.requests) {
    ++counts.started;
    const auto begin = std::chrono::steady_clock::now();
    cl::http::response reply = co_await client.get(url);
    const std::size_t body_size = co_await read_body(reply, buffer);
    measured.record_latency(std::chrono::steady_clock::now() - begin);
    if (reply.status() != 200 || body_size != chosen.body_size) {
      std::fprintf(stderr, "bad response: status %d, %zu body bytes\n", reply.status(), body_size);
      continue;
    }
    ++counts.good;
    counts.body_bytes += body_size;
  }
}

cl::task<int> run_workload(bench_http::workload chosen, bool read_into) {
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
  for (std::size_t i = 0; i < chosen.connections; ++i) workers.push_back(worker(client, chosen, url, measured, counts, read_into));
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
  std::vector<char*> arguments(argv, argv + argc);
  const auto flag = std::find_if(arguments.begin(), arguments.end(),
                                 [](const char* argument) { return std::string_view(argument) == "--read-into"; });
  const bool read_into = flag != arguments.end();
  if (read_into) arguments.erase(flag);
  const bench_http::workload chosen = bench_http::parse_arguments(static_cast<int>(arguments.size()), arguments.data());
  try {
    return cl::run(run_workload(chosen, read_into));
  } catch (const std::exception& error) {
    std::fprintf(stderr, "h1_coro_loop: %s\n", error.what());
    return 1;
  }
}
