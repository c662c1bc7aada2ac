// bench/footprint_beast.cpp - examples/fetch_all.cpp written with Boost.Beast and
// Boost.Asio's C++20 coroutines, for the footprint comparison (bench/footprint.sh):
// the same small JSON server on 127.0.0.1 (each answer takes 200 ms), the same fetch
// (10 s total timeout, a status >= 400 is an error, the body read), fetch_all running
// every URL at once and keeping each result or error, the same reuse of kept-alive
// connections (a small idle pool), and the same output.
#include <chrono>
#include <cstdio>
#include <exception>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>  // Boost 1.74's awaitable.hpp uses std::exchange without including it
#include <variant>
#include <vector>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

// --- the server side: a tiny JSON API ---

const char* const titles[] = {"sunt aut facere repellat", "qui est esse", "ea molestias quasi exercitationem"};

asio::awaitable<void> serve_posts(tcp::socket connection) {
  beast::flat_buffer buffer;
  asio::steady_timer delay(connection.get_executor());
  for (;;) {
    http::request<http::empty_body> request;
    beast::error_code error;
    co_await http::async_read(connection, buffer, request, asio::redirect_error(asio::use_awaitable, error));
    if (error) co_return;  // the client closed the connection
    delay.expires_after(200ms);  // a slow API
    co_await delay.async_wait(asio::use_awaitable);
    http::response<http::string_body> response(http::status::not_found, 11);
    response.set(http::field::content_type, "application/json");
    response.body() = "{\"error\": \"not found\"}";
    for (int id = 1; id <= 3; ++id) {
      if (request.target() == "/posts/" + std::to_string(id)) {
        response.result(http::status::ok);
        response.body() = "{\"userId\": 1, \"id\": " + std::to_string(id) + ", \"title\": \"" + titles[id - 1] + "\"}";
      }
    }
    response.prepare_payload();
    co_await http::async_write(connection, response, asio::use_awaitable);
  }
}

asio::awaitable<void> accept_loop(tcp::acceptor& acceptor) {
  for (;;) {
    beast::error_code error;
    tcp::socket connection = co_await acceptor.async_accept(asio::redirect_error(asio::use_awaitable, error));
    if (error) co_return;
    asio::co_spawn(acceptor.get_executor(), serve_posts(std::move(connection)), asio::detached);
  }
}

std::string json_string_field(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\": \"";
  const std::size_t start = json.find(key);
  if (start == std::string::npos) return "";
  const std::size_t value = start + key.size();
  return json.substr(value, json.find('"', value) - value);
}

// --- the client side: a session keeping idle connections for reuse ---

struct session {
  tcp::endpoint server;
  std::string host;
  std::vector<beast::tcp_stream> idle;
  std::size_t opened = 0;
};

// GET target with a 10 s total timeout; throws on a status >= 400; returns the body.
asio::awaitable<std::string> fetch(session& client, std::string target) {
  std::optional<beast::tcp_stream> stream;
  if (!client.idle.empty()) {
    stream.emplace(std::move(client.idle.back()));
    client.idle.pop_back();
  } else {
    stream.emplace(co_await asio::this_coro::executor);
    stream->expires_after(10s);
    co_await stream->async_connect(client.server, asio::use_awaitable);
    ++client.opened;
  }
  stream->expires_after(10s);
  http::request<http::empty_body> request(http::verb::get, target, 11);
  request.set(http::field::host, client.host);
  co_await http::async_write(*stream, request, asio::use_awaitable);
  beast::flat_buffer buffer;
  http::response<http::string_body> response;
  co_await http::async_read(*stream, buffer, response, asio::use_awaitable);
  stream->expires_never();
  if (response.keep_alive()) client.idle.push_back(std::move(*stream));
  if (response.result_int() >= 400) {
    throw std::runtime_error(std::to_string(response.result_int()) + ", message='" + std::string(response.reason()) +
                             "', url='" + target + "'");
  }
  co_return std::move(response.body());
}

using outcome = std::variant<std::string, std::exception_ptr>;

// Every target at once; each result or its error, in order (return_exceptions=True).
asio::awaitable<std::vector<outcome>> fetch_all(session& client, std::vector<std::string> targets) {
  auto executor = co_await asio::this_coro::executor;
  std::vector<outcome> results(targets.size());
  std::size_t remaining = targets.size();
  asio::steady_timer all_done(executor, asio::steady_timer::time_point::max());
  for (std::size_t i = 0; i < targets.size(); ++i) {
    asio::co_spawn(executor, fetch(client, targets[i]),
                   [&, i](std::exception_ptr error, std::string body) {
                     if (error) {
                       results[i] = error;
                     } else {
                       results[i] = std::move(body);
                     }
                     if (--remaining == 0) all_done.cancel();
                   });
  }
  beast::error_code ignored;
  if (remaining != 0) co_await all_done.async_wait(asio::redirect_error(asio::use_awaitable, ignored));
  co_return results;
}

void print_results(const std::vector<outcome>& results) {
  for (const outcome& result : results) {
    if (const auto* error = std::get_if<std::exception_ptr>(&result)) {
      try {
        std::rethrow_exception(*error);
      } catch (const std::exception& e) {
        std::printf("Error: %s\n", e.what());
      }
      continue;
    }
    std::printf("%s\n", json_string_field(std::get<std::string>(result), "title").c_str());
  }
}

asio::awaitable<void> amain(tcp::acceptor& acceptor) {
  session client;
  client.server = acceptor.local_endpoint();
  client.host = "127.0.0.1:" + std::to_string(client.server.port());
  const std::vector<std::string> targets = {"/posts/1", "/posts/2", "/posts/3"};

  const auto start_sequential = std::chrono::steady_clock::now();
  std::vector<outcome> one_by_one;
  for (const std::string& target : targets) {
    std::vector<std::string> single = {target};  // a braced list inside co_await trips GCC 12
    auto results = co_await fetch_all(client, std::move(single));
    one_by_one.push_back(std::move(results.front()));
  }
  const std::chrono::duration<double> sequential = std::chrono::steady_clock::now() - start_sequential;
  std::printf("sequential:\n");
  print_results(one_by_one);
  std::printf("Sequential: %.2fs\n", sequential.count());

  const auto start_concurrent = std::chrono::steady_clock::now();
  std::vector<outcome> results = co_await fetch_all(client, targets);
  const std::chrono::duration<double> concurrent = std::chrono::steady_clock::now() - start_concurrent;
  std::printf("concurrent:\n");
  print_results(results);
  std::printf("Concurrent: %.2fs\n", concurrent.count());

  std::vector<std::string> missing = {"/posts/404"};
  print_results(co_await fetch_all(client, std::move(missing)));
  std::printf("connections opened: %zu\n", client.opened);
  client.idle.clear();
  acceptor.close();
}

int main() {
  asio::io_context context(1);
  tcp::acceptor acceptor(context, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::co_spawn(context, accept_loop(acceptor), asio::detached);
  asio::co_spawn(context, amain(acceptor), [&](std::exception_ptr error) {
    context.stop();  // the server's connection handlers wait for requests that never come
    if (error) std::rethrow_exception(error);
  });
  context.run();
  return 0;
}
