// tests/test_http_api.cpp - coro_loop::http [http]: the request calls as a user writes
// them, options and all inside the co_await (client.get(url, {.timeout = {.total = 10s}}),
// aiohttp's session.get(url, timeout=aiohttp.ClientTimeout(total=10))), and
// response::json<T>() (aiohttp's resp.json()), with a type of the test's own and with
// nlohmann::json where the system has <nlohmann/json.hpp>.
// The options written in a call are a request_options_view, trivially destructible:
// GCC 12 destroys twice an aggregate temporary with owning members written in a
// co_await expression. With an owning type there, the first case below dies on g++ 12
// at every -O level ("free(): invalid pointer"; ASan: "attempting free on address which
// was not malloc()-ed"). Loopback (127.0.0.1) only.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "scripted_server.hpp"
#include "test_support.hpp"

#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#if __has_include(<nlohmann/json.hpp>)
#include <nlohmann/json.hpp>
#define CORO_LOOP_TEST_NLOHMANN_JSON 1
#endif

namespace cl = coro_loop;
namespace http = coro_loop::http;
using namespace std::chrono_literals;
using namespace http_test;
using test_support::contains;

// What the compiler bug cannot reach: nothing written in a call has a destructor to run
// twice, and the owning request_options cannot be written as a braced list at all.
static_assert(std::is_trivially_destructible_v<http::request_options_view>);
static_assert(std::is_trivially_destructible_v<http::header_list_view>);
static_assert(std::is_trivially_destructible_v<http::timeouts>);
static_assert(!std::is_aggregate_v<http::request_options>);

namespace {

// A JSON document type of the test's own: it keeps the text of an object, refuses the rest.
struct json_object_text {
  std::string text;
  static json_object_text parse(std::string text) {
    if (text.empty() || text.front() != '{') throw std::invalid_argument("not a JSON object: " + text);
    return {std::move(text)};
  }
};
static_assert(http::json_parsable<json_object_text>);
static_assert(!http::json_parsable<int>);
static_assert(!http::json_parsable<std::string>);

// Fields and options made by a function: prvalues of owning, non-aggregate types inside the
// co_await, which GCC 12 handles (its bug is in aggregate initialization).
http::header_list made_fields() { return {{"X-Made", "m"}, {"X-Long", std::string(100, 'l')}}; }
http::request_options made_options() {
  http::request_options options;
  options.headers.add("X-Returned", "r");
  options.body = std::string(100, 'r');
  return options;
}

// Reads the body of `r`, which should be "ok". (The await is not inside a Catch2 macro:
// its temporaries are what GCC 12 mishandles across a co_await.)
cl::task<void> expect_ok(http::response& r) {
  const std::string text = co_await r.text();
  CHECK(text == "ok");
}

// The request the server saw for `target` (an empty one if none).
const seen_request& sent(const script& s, std::string_view target) {
  static const seen_request none;
  for (const seen_request& each : s.requests) {
    if (each.target == target) return each;
  }
  return none;
}

// A client whose requests cannot hang the test.
http::client_options within_10s() {
  http::client_options options;
  options.timeout.total = 10s;
  return options;
}

// Answers nothing; waits (10 s at most) for the client to give up and close.
cl::task<bool> stay_silent(cl::stream& connection, const seen_request&, int, int) {
  (void)co_await cl::timeout(10s, connection.read());
  co_return false;
}

}  // namespace

TEST_CASE("http: options written inside the co_await reach the server", "[http]") {
  auto body = []() -> cl::task<void> {
    script s;
    s.act = reply(ok_response("ok"));
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    const std::string payload(100, 'p');
    const std::string id = "id-" + std::string(40, '7');
    {
      http::client client(within_10s());
      {
        http::response r = co_await client.get(base + "/total", {.timeout = {.total = 10s}});
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.get(base + "/named-type", {.timeout = http::timeouts{.total = 10s, .read = 5s}});
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.get(base + "/defaulted");
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.del(base + "/empty", {});
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.post(base + "/body", "a body longer than a small string's buffer");
        co_await expect_ok(r);
      }
      {
        http::header_list fields{{"X-Named", "n"}};
        http::response r =
            co_await client.put(base + "/fields", {.headers = fields, .body = payload, .follow_redirects = false});
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.patch(
            base + "/temporaries", {.headers = made_fields(), .body = std::to_string(7) + payload, .max_redirects = 1});
        co_await expect_ok(r);
      }
      {
        // Three members: a braced list std::string's constructors must never see (libc++ 14).
        const http::header_list three{{"X-Three", "3"}};
        http::response r = co_await client.post(base + "/three", {.headers = three, .body = payload, .timeout = {.total = 10s}});
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.request("OPTIONS", base + "/request", {.timeout = {.total = 10s}});
        co_await expect_ok(r);
      }
      {
#if defined(__GNUC__) && !defined(__clang__)
        // GCC 12 refuses a braced list (an initializer_list) inside a co_await ("array used
        // as initializer"): the task is made in a statement of its own, then awaited.
        cl::task<http::response> sending =
            client.post(base + "/list", {.headers = {{"X-Inline", "1"}, {"X-Id", id}}, .body = payload});
        http::response r = co_await std::move(sending);
#else
        http::response r = co_await client.post(base + "/list", {.headers = {{"X-Inline", "1"}, {"X-Id", id}}, .body = payload});
#endif
        co_await expect_ok(r);
      }
      CHECK(client.connections_opened() == 1);
    }
    REQUIRE(s.requests.size() == 10);
    CHECK(sent(s, "/total").method == "GET");
    CHECK(sent(s, "/defaulted").method == "GET");
    CHECK(sent(s, "/empty").method == "DELETE");
    CHECK(sent(s, "/body").method == "POST");
    CHECK(sent(s, "/body").body == "a body longer than a small string's buffer");
    CHECK(sent(s, "/fields").method == "PUT");
    CHECK(sent(s, "/fields").value("X-Named") == "n");
    CHECK(sent(s, "/fields").body == payload);
    CHECK(sent(s, "/temporaries").method == "PATCH");
    CHECK(sent(s, "/temporaries").value("X-Made") == "m");
    CHECK(sent(s, "/temporaries").value("X-Long") == std::string(100, 'l'));
    CHECK(sent(s, "/temporaries").body == "7" + payload);
    CHECK(sent(s, "/three").value("X-Three") == "3");
    CHECK(sent(s, "/three").body == payload);
    CHECK(sent(s, "/request").method == "OPTIONS");
    CHECK(sent(s, "/list").value("X-Inline") == "1");
    CHECK(sent(s, "/list").value("X-Id") == id);
    CHECK(sent(s, "/list").body == payload);
    co_await stop(server);
  };
  cl::run(body());
}

TEST_CASE("http: a timeout written in the call replaces the client's; left out, the client's apply", "[http]") {
  auto body = []() -> cl::task<void> {
    script s;
    s.act = stay_silent;
    cl::server server = co_await start(s);
    const std::string url = base_url(server) + "/silent";
    {
      http::client_options options;
      options.timeout.read = 300ms;
      http::client client(options);

      std::exception_ptr error = co_await failure_of(client.get(url));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "read timeout (300 ms)"));

      error = co_await failure_of(client.get(url, {.body = "left out"}));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "read timeout (300 ms)"));

      // The whole set is replaced, as aiohttp's timeout=: no read timeout any more.
      error = co_await failure_of(client.get(url, {.timeout = {.total = 600ms}}));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "total timeout (600 ms)"));

      error = co_await failure_of(client.get(url, {.timeout = {.total = std::nullopt, .read = 400ms}}));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "read timeout (400 ms)"));

      // The owning options, by name: with a timeout it replaces the client's, without, it does not.
      http::request_options named;
      error = co_await failure_of(client.get(url, named));
      CHECK(contains(what_of(error), "read timeout (300 ms)"));
      named.timeout = http::timeouts{.total = 500ms};
      error = co_await failure_of(client.get(url, named));
      CHECK(contains(what_of(error), "total timeout (500 ms)"));
    }
    co_await stop(server);
  };
  cl::run(body());
}

TEST_CASE("http: request_options pass by name, moved, returned or value-initialized", "[http]") {
  auto body = []() -> cl::task<void> {
    script s;
    s.act = reply(ok_response("ok"));
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client(within_10s());
      http::request_options options;
      options.headers.add("X-Named", "n");
      options.set_body(std::string_view("named body"));
      options.follow_redirects = false;
      {
        http::response r = co_await client.post(base + "/named", options);
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.put(base + "/moved", std::move(options));
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.post(base + "/returned", made_options());
        co_await expect_ok(r);
      }
      {
        http::response r = co_await client.get(base + "/value-initialized", http::request_options());
        co_await expect_ok(r);
      }
    }
    REQUIRE(s.requests.size() == 4);
    CHECK(sent(s, "/named").value("X-Named") == "n");
    CHECK(sent(s, "/named").body == "named body");
    CHECK(sent(s, "/moved").method == "PUT");
    CHECK(sent(s, "/moved").body == "named body");
    CHECK(sent(s, "/returned").value("X-Returned") == "r");
    CHECK(sent(s, "/returned").body == std::string(100, 'r'));
    CHECK(sent(s, "/value-initialized").method == "GET");
    CHECK(sent(s, "/value-initialized").body.empty());
    co_await stop(server);
  };
  cl::run(body());
}

TEST_CASE("http: response::json<T>() parses the body with T::parse, within limits.max_body", "[http]") {
  auto body = []() -> cl::task<void> {
    script s;
    s.act = reply([](const seen_request& request, int, int) {
      if (request.target == "/object") return ok_response(R"({"id": 1, "title": "qui est esse"})");
      if (request.target == "/big") return ok_response("{" + std::string(100, ' ') + "}");
      return ok_response("not json");
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client(within_10s());
      http::response r = co_await client.get(base + "/object", {.timeout = {.total = 10s}});
      const json_object_text document = co_await r.json<json_object_text>();
      CHECK(document.text == R"({"id": 1, "title": "qui est esse"})");
      CHECK(r.body_complete());

      // What parse throws reaches the caller as it is; the connection was read to the end.
      http::response refused = co_await client.get(base + "/text");
      const std::exception_ptr error = co_await failure_of(refused.json<json_object_text>());
      CHECK_KIND(error, "std::exception");
      CHECK(what_of(error) == "not a JSON object: not json");
      http::response after = co_await client.get(base + "/object");
      co_await after.json<json_object_text>();
      CHECK(client.connections_opened() == 1);  // read to the end, the connection was reused

      http::client_options small = within_10s();
      small.limits.max_body = 64;
      http::client limited(small);
      http::response big = co_await limited.get(base + "/big");
      const std::exception_ptr too_big = co_await failure_of(big.json<json_object_text>());
      CHECK_KIND(too_big, "protocol_error");
      CHECK(contains(what_of(too_big), "limits.max_body"));
    }
    co_await stop(server);
  };
  cl::run(body());
}

#if defined(CORO_LOOP_TEST_NLOHMANN_JSON)
TEST_CASE("http: response::json<nlohmann::json>() reads a document as aiohttp's resp.json()", "[http]") {
  auto body = []() -> cl::task<void> {
    script s;
    s.act = reply([](const seen_request& request, int, int) {
      if (request.target == "/posts/2") {
        return ok_response(R"({"userId": 1, "id": 2, "title": "qui est esse", "tags": ["a", "b"]})");
      }
      return ok_response(R"({"title": )");
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client(within_10s());
      http::response r = co_await client.get(base + "/posts/2", {.timeout = {.total = 10s}});
      r.raise_for_status();
      const nlohmann::json post = co_await r.json<nlohmann::json>();
      CHECK(post["title"] == "qui est esse");
      CHECK(post["id"] == 2);
      CHECK(post["tags"].size() == 2);

      http::response cut = co_await client.get(base + "/cut");
      bool parse_error = false;
      try {
        (void)co_await cut.json<nlohmann::json>();
      } catch (const nlohmann::json::parse_error&) {
        parse_error = true;
      }
      CHECK(parse_error);
    }
    co_await stop(server);
  };
  cl::run(body());
}
#else
TEST_CASE("http: response::json<nlohmann::json>() (skipped: no <nlohmann/json.hpp>)", "[http]") {
  WARN("<nlohmann/json.hpp> not found: install nlohmann-json3-dev (scripts/install-deps.sh test does)");
}
#endif
