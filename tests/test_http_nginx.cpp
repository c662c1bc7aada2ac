// tests/test_http_nginx.cpp - coro_loop::http::client against a real nginx [http].
//
// Each test case starts its own nginx (tests/nginx_fixture.hpp) on 127.0.0.1 and
// a free port, with its own configuration in a temporary directory; it is
// stopped and removed when the case ends. nginx missing is a failure, never a
// skip: `make test` installs it (scripts/install-deps.sh test).
//
// nginx's stub_status ("accepts": TCP connections nginx accepted) is read on a
// blocking socket of the fixture's own, independent of the client under test:
// it proves from the server's side what connections_opened() claims. Each read
// of /status is itself one accepted connection, so a difference between two
// reads is the client's connections plus one.
//
// Every request runs under the client's total/connect/read timeouts and every
// case under cl::timeout(20s); every loop is bounded.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "nginx_fixture.hpp"
#include "test_support.hpp"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace cl = coro_loop;
namespace http = coro_loop::http;
using namespace std::chrono_literals;
using nginx_test::nginx;
using Catch::Matchers::ContainsSubstring;
using test_support::difference;

namespace {

constexpr std::size_t one_k = 1024;
constexpr std::size_t one_m = std::size_t{1} << 20;

// The options of every client here: nothing may wait unbounded.
http::client_options bounded(http::client_options options = {}) {
  options.timeout.total = 10s;
  options.timeout.connect = 5s;
  options.timeout.read = 5s;
  return options;
}

// Awaits `request` (and reads the body); the what() of the Error it throws, or
// nullopt when it does not throw. Another exception type propagates.
// (No co_return of a string inside the handler of a coroutine template: g++ 11 stops
// with an internal compiler error.)
template <class Error>
cl::task<std::optional<std::string>> error_of(cl::task<http::response> request) {
  std::optional<std::string> message;
  try {
    http::response response = co_await std::move(request);
    (void)co_await response.text();
  } catch (const Error& error) {
    message = error.what();
  }
  co_return message;
}

// GET url and read the whole body; the size read. Also records the most
// connections the client had leased at once, seen from inside.
cl::task<std::size_t> fetch_all(http::client& client, std::string url, std::size_t& peak_active) {
  http::response response = co_await client.get(std::move(url));
  if (client.active_connections() > peak_active) peak_active = client.active_connections();
  REQUIRE(response.status() == 200);
  std::string body = co_await response.text();
  if (client.active_connections() > peak_active) peak_active = client.active_connections();
  co_return body.size();
}

}  // namespace

TEST_CASE("http nginx: GET /1k and /1m: status, headers and bodies byte-exact", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    {
      http::response response = co_await client.get(server.url("/1k"));
      CHECK(response.status() == 200);
      CHECK(response.reason() == "OK");
      CHECK(response.version_minor() == 1);
      CHECK(response.ok());
      CHECK(response.url() == server.url("/1k"));
      CHECK(response.history().empty());
      REQUIRE(response.content_length().has_value());
      CHECK(*response.content_length() == one_k);
      CHECK(response.headers().get("content-length") == std::optional<std::string_view>("1024"));
      CHECK(response.headers().get("Server").value_or("").substr(0, 6) == "nginx/");
      const std::string text = co_await response.text();
      CHECK(text.size() == one_k);
      CHECK(difference(text, nginx::content(one_k)) == "");  // every byte value, NUL, CR and LF included
      CHECK(response.body_complete());
    }
    {
      http::response response = co_await client.get(server.url("/1m"));
      CHECK(response.status() == 200);
      CHECK(response.content_length() == std::optional<std::uint64_t>(one_m));
      const std::string text = co_await response.text();
      CHECK(text.size() == one_m);
      CHECK(difference(text, nginx::content(one_m)) == "");
      CHECK(response.body_complete());
    }
    {  // body(): the same bytes as std::byte
      http::response response = co_await client.get(server.url("/1k"));
      const std::vector<std::byte> bytes = co_await response.body();
      const std::string expected = nginx::content(one_k);
      REQUIRE(bytes.size() == expected.size());
      bool same = true;
      for (std::size_t i = 0; i < bytes.size(); ++i) same = same && bytes[i] == static_cast<std::byte>(expected[i]);
      CHECK(same);
    }
    CHECK(client.connections_opened() == 1);
    client.close();
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: chunked bodies (/c/1k, /c/1m) byte-exact, with the trailer", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    for (const std::size_t size : {one_k, one_m}) {
      INFO("size " << size);
      http::response response = co_await client.get(server.url(size == one_k ? "/c/1k" : "/c/1m"));
      CHECK(response.status() == 200);
      CHECK(response.headers().get("Transfer-Encoding") == std::optional<std::string_view>("chunked"));
      CHECK_FALSE(response.content_length().has_value());
      const std::string text = co_await response.text();
      CHECK(text.size() == size);
      CHECK(difference(text, nginx::content(size)) == "");
      CHECK(response.body_complete());
      CHECK(response.trailers().get("x-trailer") == std::optional<std::string_view>("done"));
    }
    CHECK(client.connections_opened() == 1);  // a chunked body read to its end keeps the connection
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: 20 sequential GETs on one client use one connection (nginx's accepts agree)", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    const nginx::status before = server.stub_status();
    for (int i = 0; i < 20; ++i) {
      INFO("request " << i);
      http::response response = co_await client.get(server.url(i % 2 == 0 ? "/1k" : "/1m"));
      REQUIRE(response.status() == 200);
      const std::string text = co_await response.text();
      CHECK(text.size() == (i % 2 == 0 ? one_k : one_m));
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 1);
    }
    CHECK(client.connections_opened() == 1);
    const nginx::status after = server.stub_status();
    CHECK(after.accepts - before.accepts == 1 + 1);    // the client's one, and this /status read's
    CHECK(after.requests - before.requests == 20 + 1);
    CHECK(after.active == 2);                          // the pooled connection is still open, and this one
    client.close();
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: client.close() closes the pooled connections; nginx sees them go", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    std::size_t peak = 0;
    std::vector<cl::task<std::size_t>> gets;
    for (int i = 0; i < 3; ++i) gets.push_back(fetch_all(client, server.url("/1m"), peak));
    const std::vector<std::size_t> sizes = co_await cl::gather(std::move(gets));
    CHECK(sizes == std::vector<std::size_t>(3, one_m));
    const std::size_t opened = client.connections_opened();
    CHECK(opened == 3);  // all three started before any finished
    CHECK(client.idle_connections() == opened);
    CHECK(server.stub_status().active == opened + 1);
    client.close();
    CHECK(client.idle_connections() == 0);
    bool gone = false;  // nginx notices the FINs asynchronously
    for (int i = 0; i < 400 && !gone; ++i) {
      gone = server.stub_status().active == 1;  // only the /status read itself
      if (!gone) co_await cl::sleep(5ms);
    }
    CHECK(gone);
    const std::optional<std::string> refused = co_await error_of<cl::invalid_state_error>(client.get(server.url("/1k")));
    CHECK(refused.has_value());
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: 10 concurrent GETs with limit_per_host=2 open at most 2 connections", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client_options options = bounded();
    options.limit_per_host = 2;
    http::client client(options);
    const nginx::status before = server.stub_status();
    std::size_t peak = 0;
    std::vector<cl::task<std::size_t>> gets;
    for (int i = 0; i < 10; ++i) gets.push_back(fetch_all(client, server.url("/1m"), peak));
    const std::vector<std::size_t> sizes = co_await cl::gather(std::move(gets));
    CHECK(sizes == std::vector<std::size_t>(10, one_m));
    // All ten start before any finishes: the first two open a connection each, the
    // others wait for them.
    CHECK(peak == 2);
    CHECK(client.connections_opened() == 2);
    CHECK(client.active_connections() == 0);
    const nginx::status after = server.stub_status();
    CHECK(after.accepts - before.accepts == client.connections_opened() + 1);
    CHECK(after.requests - before.requests == 10 + 1);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: limit=3 over all hosts bounds 9 concurrent GETs to 3 connections", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client_options options = bounded();
    options.limit = 3;
    http::client client(options);
    std::size_t peak = 0;
    std::vector<cl::task<std::size_t>> gets;
    for (int i = 0; i < 9; ++i) gets.push_back(fetch_all(client, server.url("/1m"), peak));
    const std::vector<std::size_t> sizes = co_await cl::gather(std::move(gets));
    CHECK(sizes == std::vector<std::size_t>(9, one_m));
    CHECK(peak == 3);
    CHECK(client.connections_opened() == 3);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: keep_alive=false opens a connection per request", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client_options options = bounded();
    options.keep_alive = false;
    http::client client(options);
    const nginx::status before = server.stub_status();
    for (int i = 0; i < 3; ++i) {
      http::response response = co_await client.get(server.url("/1k"));
      CHECK(response.status() == 200);
      const std::string text = co_await response.text();
      CHECK(difference(text, nginx::content(one_k)) == "");
    }
    CHECK(client.connections_opened() == 3);
    CHECK(client.idle_connections() == 0);
    const nginx::status after = server.stub_status();
    CHECK(after.accepts - before.accepts == 3 + 1);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: HEAD gives the headers, an empty body, and keeps the connection", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    {
      http::response response = co_await client.head(server.url("/1k"));
      CHECK(response.status() == 200);
      CHECK(response.content_length() == std::optional<std::uint64_t>(one_k));
      CHECK(response.headers().get("Content-Length") == std::optional<std::string_view>("1024"));
      const std::string text = co_await response.text();
      CHECK(text.empty());
      CHECK(response.body_complete());
    }
    {  // the next request goes over the same connection: the 1024 bytes were not expected
      http::response response = co_await client.get(server.url("/1k"));
      CHECK(response.status() == 200);
      const std::string text = co_await response.text();
      CHECK(difference(text, nginx::content(one_k)) == "");
    }
    {
      http::response response = co_await client.head(server.url("/1m"));
      CHECK(response.content_length() == std::optional<std::uint64_t>(one_m));
      const std::string text = co_await response.text();
      CHECK(text.empty());
    }
    CHECK(client.connections_opened() == 1);
    CHECK(client.idle_connections() == 1);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: 404 is a response; raise_for_status throws status_error with the status and the URL",
          "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    http::response response = co_await client.get(server.url("/missing"));
    CHECK(response.status() == 404);
    CHECK(response.reason() == "Not Found");
    CHECK_FALSE(response.ok());
    std::optional<http::status_error> error;
    try {
      response.raise_for_status();
    } catch (const http::status_error& caught) {
      error = caught;
    }
    REQUIRE(error.has_value());
    CHECK(error->status == 404);
    CHECK(error->reason == "Not Found");
    CHECK(error->url == server.url("/missing"));
    CHECK_THAT(error->what(), ContainsSubstring("404"));
    CHECK_THAT(error->what(), ContainsSubstring(server.url("/missing")));
    const std::string text = co_await response.text();
    CHECK_THAT(text, ContainsSubstring("404 Not Found"));  // nginx's error page
    {  // a 200 does not throw
      http::response fine = co_await client.get(server.url("/1k"));
      CHECK_NOTHROW(fine.raise_for_status());
      (void)co_await fine.text();
    }
    CHECK(client.connections_opened() == 1);  // a read 404 body keeps the connection
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: GET follows 301, 302, 303, 307, 308 and relative Locations; history and url()",
          "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    for (const char* path : {"/r301", "/r302", "/r303", "/r307", "/r308", "/sub/rel"}) {
      INFO(path);
      http::response response = co_await client.get(server.url(path));
      CHECK(response.status() == 200);
      CHECK(response.url() == server.url("/1k"));
      CHECK(response.history() == std::vector<std::string>{server.url(path)});
      const std::string text = co_await response.text();
      CHECK(difference(text, nginx::content(one_k)) == "");
    }
    {  // a chain of three
      http::response response = co_await client.get(server.url("/chain1"));
      CHECK(response.status() == 200);
      CHECK(response.url() == server.url("/1k"));
      CHECK(response.history() ==
            std::vector<std::string>{server.url("/chain1"), server.url("/chain2"), server.url("/chain3")});
      const std::string text = co_await response.text();
      CHECK(difference(text, nginx::content(one_k)) == "");
    }
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: redirected methods: 301/302 POST->GET, 303 ->GET, 307/308 keep the method and body",
          "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    const std::string payload = "a=b&c=d";  // /echo answers "METHOD CONTENT_LENGTH BODY"
    {  // /echo itself
      http::response response = co_await client.post(server.url("/echo"), payload);
      const std::string text = co_await response.text();
      CHECK(text == "POST 7 a=b&c=d");
    }
    struct expectation {
      const char* path;
      const char* method;
      const char* echoed;
    };
    for (const expectation& e : {expectation{"/r301m", "POST", "GET  "}, expectation{"/r302m", "POST", "GET  "},
                                 expectation{"/r303m", "POST", "GET  "}, expectation{"/r307m", "POST", "POST 7 a=b&c=d"},
                                 expectation{"/r308m", "POST", "POST 7 a=b&c=d"},
                                 // as aiohttp and requests: 301/302 change only POST; 303 changes every method but HEAD
                                 expectation{"/r301m", "PUT", "PUT 7 a=b&c=d"}, expectation{"/r303m", "PUT", "GET  "},
                                 expectation{"/r307m", "PUT", "PUT 7 a=b&c=d"},
                                 expectation{"/r307m", "DELETE", "DELETE  "}}) {
      INFO(e.method << " " << e.path);
      http::request_options options;
      if (std::string(e.method) != "DELETE") options.body = payload;
      http::response response = co_await client.request(e.method, server.url(e.path), options);
      CHECK(response.status() == 200);
      CHECK(response.url() == server.url("/echo"));
      CHECK(response.history() == std::vector<std::string>{server.url(e.path)});
      const std::string text = co_await response.text();
      CHECK(text == e.echoed);
    }
    {  // HEAD stays HEAD on 303
      http::response response = co_await client.head(server.url("/r303"));
      CHECK(response.status() == 200);
      CHECK(response.content_length() == std::optional<std::uint64_t>(one_k));
      const std::string text = co_await response.text();
      CHECK(text.empty());
    }
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: a redirect loop ends in redirect_error after max_redirects", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    {
      const nginx::status before = server.stub_status();
      const std::optional<std::string> what = co_await error_of<http::redirect_error>(client.get(server.url("/loop")));
      REQUIRE(what.has_value());
      const nginx::status after = server.stub_status();
      // 10 redirects followed (max_redirects' default): 10 or 11 requests, whatever the
      // exact counting; what matters is that it stopped near there.
      CHECK(after.requests - before.requests - 1 >= 10);
      CHECK(after.requests - before.requests - 1 <= 12);
    }
    {
      http::request_options options;
      options.max_redirects = 3;
      const nginx::status before = server.stub_status();
      const std::optional<std::string> what =
          co_await error_of<http::redirect_error>(client.get(server.url("/loop"), options));
      REQUIRE(what.has_value());
      const nginx::status after = server.stub_status();
      CHECK(after.requests - before.requests - 1 >= 3);
      CHECK(after.requests - before.requests - 1 <= 5);
    }
    {  // max_redirects counts redirects: the chain of 3 passes with 3 and fails with 2
      http::request_options options;
      options.max_redirects = 3;
      http::response response = co_await client.get(server.url("/chain1"), options);
      CHECK(response.status() == 200);
      CHECK(response.history().size() == 3);
      (void)co_await response.text();
      options.max_redirects = 2;
      const std::optional<std::string> what =
          co_await error_of<http::redirect_error>(client.get(server.url("/chain1"), options));
      CHECK(what.has_value());
    }
    {  // the client's own max_redirects
      http::client_options options = bounded();
      options.max_redirects = 1;
      http::client strict(options);
      http::response one = co_await strict.get(server.url("/r301"));
      CHECK(one.status() == 200);
      (void)co_await one.text();
      const std::optional<std::string> what =
          co_await error_of<http::redirect_error>(strict.get(server.url("/chain1")));
      CHECK(what.has_value());
    }
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: follow_redirects=false returns the 30x itself", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    {
      http::client_options options = bounded();
      options.follow_redirects = false;
      http::client client(options);
      for (const int code : {301, 302, 303, 307, 308}) {
        INFO(code);
        const std::string path = "/r" + std::to_string(code);
        http::response response = co_await client.get(server.url(path));
        CHECK(response.status() == code);
        CHECK(response.ok());  // < 400
        CHECK(response.url() == server.url(path));
        CHECK(response.history().empty());
        CHECK(response.headers().get("Location") ==
              std::optional<std::string_view>(code == 302 ? "/1k" : server.url("/1k")));
        const std::string text = co_await response.text();
        CHECK_THAT(text, ContainsSubstring(std::to_string(code)));
      }
      // per request, the other way round
      http::request_options follow;
      follow.follow_redirects = true;
      http::response response = co_await client.get(server.url("/r301"), follow);
      CHECK(response.status() == 200);
      CHECK(response.url() == server.url("/1k"));
      (void)co_await response.text();
      CHECK(client.connections_opened() == 1);
    }
    {  // per request on a following client
      http::client client(bounded());
      http::request_options no_follow;
      no_follow.follow_redirects = false;
      http::response response = co_await client.get(server.url("/loop"), no_follow);
      CHECK(response.status() == 302);
      CHECK(response.headers().get("Location") == std::optional<std::string_view>(server.url("/loop")));
    }
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: a redirect to https:// is a redirect_error (TLS is not built in)", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    const std::optional<std::string> what = co_await error_of<http::redirect_error>(client.get(server.url("/rhttps")));
    REQUIRE(what.has_value());
    CHECK_THAT(*what, ContainsSubstring("https needs TLS, which is not built in: #define CORO_LOOP_OPENSSL"));
    // the client is still usable
    http::response response = co_await client.get(server.url("/1k"));
    const std::string text = co_await response.text();
    CHECK(difference(text, nginx::content(one_k)) == "");
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: read_chunk streams /1m and /c/1m to exactly 1 MiB; the connection is reused", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    for (const char* path : {"/1m", "/c/1m"}) {
      INFO(path);
      http::response response = co_await client.get(server.url(path));
      REQUIRE(response.status() == 200);
      std::string all;
      std::size_t chunks = 0;
      for (int i = 0; i < 1'000'000; ++i) {
        const std::string chunk = co_await response.read_chunk(16 * 1024);
        if (chunk.empty()) break;
        CHECK(chunk.size() <= 16 * 1024);
        all += chunk;
        ++chunks;
      }
      CHECK(all.size() == one_m);
      CHECK(difference(all, nginx::content(one_m)) == "");
      CHECK(chunks >= one_m / (16 * 1024));
      CHECK(response.body_complete());
      const std::string end = co_await response.read_chunk();
      CHECK(end.empty());  // and it stays at the end
    }
    http::response response = co_await client.get(server.url("/1k"));
    const std::string text = co_await response.text();
    CHECK(difference(text, nginx::content(one_k)) == "");
    CHECK(client.connections_opened() == 1);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: a response dropped with its body unread closes its connection", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded());
    {
      http::response response = co_await client.get(server.url("/1m"));
      CHECK(response.status() == 200);
      const std::string first = co_await response.read_chunk(1000);
      CHECK_FALSE(first.empty());
    }  // 1 MiB minus a little left unread
    CHECK(client.active_connections() == 0);
    CHECK(client.idle_connections() == 0);
    http::response response = co_await client.get(server.url("/1k"));
    const std::string text = co_await response.text();
    CHECK(difference(text, nginx::content(one_k)) == "");
    CHECK(client.connections_opened() == 2);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: request bodies, User-Agent and default headers reach nginx", "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    http::client_options options = bounded();
    options.user_agent = "nginx-test/1.0";
    options.headers.add("X-Test", "client");
    http::client client(options);
    {
      http::response response = co_await client.get(server.url("/headers"));
      const std::string text = co_await response.text();
      CHECK(text == "ua=nginx-test/1.0 x=client");
    }
    {  // a request's own header replaces the client's
      http::request_options request;
      request.headers.add("X-Test", "request");
      http::response response = co_await client.get(server.url("/headers"), request);
      const std::string text = co_await response.text();
      CHECK(text == "ua=nginx-test/1.0 x=request");
    }
    {
      http::response response = co_await client.put(server.url("/echo"), "put body");
      const std::string text = co_await response.text();
      CHECK(text == "PUT 8 put body");
    }
    {
      http::response response = co_await client.patch(server.url("/echo"), "p");
      const std::string text = co_await response.text();
      CHECK(text == "PATCH 1 p");
    }
    {
      const std::string big(40000, 'x');  // several socket writes; under nginx's 64 KiB body buffer
      http::response response = co_await client.post(server.url("/echo"), big);
      const std::string text = co_await response.text();
      CHECK(difference(text, "POST 40000 " + big) == "");
    }
    {
      http::response response = co_await client.del(server.url("/method"));
      const std::string text = co_await response.text();
      CHECK(text == "DELETE");
    }
    {
      http::response response = co_await client.request("OPTIONS", server.url("/method"));
      const std::string text = co_await response.text();
      CHECK(text == "OPTIONS");
    }
    CHECK(client.connections_opened() == 1);
  };
  cl::run(cl::timeout(20s, body()));
}

TEST_CASE("http nginx: nginx closing connections: Connection: close is honoured, an idle connection nginx "
          "closed is replaced, the client's keep_alive_timeout closes its own",
          "[http]") {
  nginx server;
  auto body = [&]() -> cl::task<void> {
    {  // /close answers with Connection: close and closes: never pooled
      http::client client(bounded());
      for (int i = 0; i < 3; ++i) {
        http::response response = co_await client.get(server.url("/close"));
        CHECK(response.headers().get("Connection") == std::optional<std::string_view>("close"));
        const std::string text = co_await response.text();
        CHECK(text == "closed");
        CHECK(client.idle_connections() == 0);
      }
      CHECK(client.connections_opened() == 3);
    }
    {  // nginx closes the pooled connection after 200 ms idle; the next GET still succeeds
      http::client client(bounded());
      http::response first = co_await client.get(server.url("/short"));
      const std::string short_text = co_await first.text();
      CHECK(short_text == "short");
      CHECK(client.idle_connections() == 1);
      bool closed = false;  // nginx's side: only the /status read itself left
      for (int i = 0; i < 400 && !closed; ++i) {
        co_await cl::sleep(10ms);
        closed = server.stub_status().active == 1;
      }
      REQUIRE(closed);
      for (int i = 0; i < 3; ++i) {
        http::response response = co_await client.get(server.url("/1k"));
        CHECK(response.status() == 200);
        const std::string text = co_await response.text();
        CHECK(difference(text, nginx::content(one_k)) == "");
      }
      CHECK(client.connections_opened() == 2);
    }
    {  // the client's keep_alive_timeout: an idle connection older than it is not reused
      http::client_options options = bounded();
      options.keep_alive_timeout = 50ms;
      http::client client(options);
      http::response first = co_await client.get(server.url("/1k"));
      (void)co_await first.text();
      co_await cl::sleep(300ms);
      http::response second = co_await client.get(server.url("/1k"));
      const std::string text = co_await second.text();
      CHECK(difference(text, nginx::content(one_k)) == "");
      CHECK(client.connections_opened() == 2);
    }
  };
  cl::run(cl::timeout(20s, body()));
}
