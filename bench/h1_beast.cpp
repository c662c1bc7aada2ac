// bench/h1_beast.cpp - H1/H2/H3/C1, and H1S/H2S over TLS, with Boost.Beast on Boost.Asio's
// C++20 coroutines (see h1_common.hpp). One coroutine per connection, each sending its next
// GET as soon as its last body was read; the read buffer is a flat_buffer with 64 KiB
// reserved, as a tuned Beast client has it. H3 opens, uses and closes a connection per
// request. Over TLS, Beast's own way: an asio::ssl::stream over the socket, an
// ssl::context(tls_client) trusting the benchmark's CA, verify_peer with
// host_name_verification (OpenSSL: h1_beast.flags).
#include "h1_common.hpp"

// Boost 1.74's awaitable.hpp uses std::exchange without including <utility>.
#include <optional>
#include <utility>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <exception>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

struct tally {
  std::size_t started = 0;
  std::size_t good = 0;
  std::size_t body_bytes = 0;
  std::size_t failures = 0;
};

asio::awaitable<tcp::socket> connect_to(const tcp::endpoint& server) {
  tcp::socket socket(co_await asio::this_coro::executor);
  co_await socket.async_connect(server, asio::use_awaitable);
  socket.set_option(tcp::no_delay(true));
  co_return socket;
}

// A verified TLS client handshake over a new connection.
asio::awaitable<asio::ssl::stream<tcp::socket>> connect_tls(const tcp::endpoint& server, asio::ssl::context& tls,
                                                            const std::string& host) {
  asio::ssl::stream<tcp::socket> stream(co_await connect_to(server), tls);
  stream.set_verify_mode(asio::ssl::verify_peer);
  stream.set_verify_callback(asio::ssl::host_name_verification(host));
  co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  co_return stream;
}

// `connect()` makes a connection: a tcp::socket, or a TLS stream over one.
template <class Connect>
asio::awaitable<void> worker(const bench_http::workload& chosen, Connect connect, bench_http::measurement& measured,
                             tally& counts) {
  using connection_type = typename decltype(connect())::value_type;
  try {
    http::request<http::empty_body> request(http::verb::get, chosen.path, 11);
    request.set(http::field::host, chosen.host + ":" + std::to_string(chosen.port));
    request.set(http::field::user_agent, "beast-bench");
    if (chosen.new_connection) request.set(http::field::connection, "close");
    beast::flat_buffer buffer;
    buffer.reserve(64 * 1024);
    std::optional<connection_type> connection;
    while (counts.started < chosen.requests) {
      ++counts.started;
      const auto begin = std::chrono::steady_clock::now();
      if (!connection) connection.emplace(co_await connect());
      co_await http::async_write(*connection, request, asio::use_awaitable);
      http::response_parser<http::string_body> parser;
      parser.body_limit(64 * 1024 * 1024);
      co_await http::async_read(*connection, buffer, parser, asio::use_awaitable);
      const http::response<http::string_body>& reply = parser.get();
      measured.record_latency(std::chrono::steady_clock::now() - begin);
      if (reply.result_int() != 200 || reply.body().size() != chosen.body_size) {
        std::fprintf(stderr, "bad response: status %u, %zu body bytes\n", reply.result_int(), reply.body().size());
      } else {
        ++counts.good;
        counts.body_bytes += reply.body().size();
      }
      if (chosen.new_connection || !reply.keep_alive()) {
        beast::error_code ignored;
        beast::get_lowest_layer(*connection).shutdown(tcp::socket::shutdown_both, ignored);
        connection.reset();
        buffer.clear();
      }
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "h1_beast: %s\n", error.what());
    ++counts.failures;
  }
}

int main(int argc, char** argv) {
  const bench_http::workload chosen = bench_http::parse_arguments(argc, argv);
  // One thread runs the io_context and is the only one to touch its objects: Asio's
  // documented concurrency hint for that case, without the scheduler's and reactor's locks.
  asio::io_context context(BOOST_ASIO_CONCURRENCY_HINT_UNSAFE);
  const tcp::endpoint server(asio::ip::make_address(chosen.host), chosen.port);
  bench_http::measurement measured(chosen);
  tally counts;
  measured.start();
  asio::ssl::context tls(asio::ssl::context::tls_client);
  if (chosen.tls) tls.load_verify_file(chosen.ca_file);
  for (std::size_t i = 0; i < chosen.connections; ++i) {
    if (chosen.tls) {
      auto connect = [&] { return connect_tls(server, tls, chosen.host); };
      asio::co_spawn(context, worker(chosen, connect, measured, counts), asio::detached);
    } else {
      auto connect = [&] { return connect_to(server); };
      asio::co_spawn(context, worker(chosen, connect, measured, counts), asio::detached);
    }
  }
  context.run();
  if (counts.failures != 0) return 1;
  return measured.report(counts.good, counts.body_bytes);
}
