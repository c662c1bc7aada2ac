// tests/test_http.cpp - coro_loop::http [http]: URL parsing and resolution, request
// building, responses, framing, limits, timeouts, keep-alive and the connection pool,
// against misbehaving servers written with our own start_server (each reads a request
// head with read_until("\r\n\r\n") and answers with scripted bytes), and the
// response_parser on its own (every split point, LF-only lines, obs-fold, limits).
// Every case ends in the documented error or the right body: no crash, hang or leak
// (the loop's I/O counts come back to their start values). Loopback (127.0.0.1) only.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "net_helpers.hpp"
#include "scripted_server.hpp"
#include "test_support.hpp"

#if defined(CORO_LOOP_POSIX)
#include <sys/socket.h>
#endif

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

namespace cl = coro_loop;
namespace http = coro_loop::http;
using namespace std::chrono_literals;
using namespace std::string_literals;
using namespace http_test;
using net_test::eventually;
using net_test::io_counts;
using test_support::contains;
using test_support::difference;

namespace {

// --- error classification ----------------------------------------------------

// Synchronous version for url::parse and friends.
template <class Function>
std::exception_ptr failure_of_call(Function function) {
  try {
    function();
  } catch (...) {
    return std::current_exception();
  }
  return nullptr;
}

// Assertions on an awaited value: the value is bound to a named local first, so no
// co_await sits inside a Catch2 macro (GCC 12 and temporaries across co_await).
#define CHECK_AWAIT(expr)                            \
  do {                                               \
    const bool check_await_value_ = co_await (expr); \
    CHECK(check_await_value_);                       \
  } while (false)
#define CHECK_AWAIT_EQ(expr, expected)         \
  do {                                         \
    auto check_await_value_ = co_await (expr); \
    CHECK(check_await_value_ == (expected));   \
  } while (false)

// --- the scripted server (scripted_server.hpp): counts and requests ----------------

cl::task<void> expect_counts(io_counts before) {
  const bool back = co_await eventually(
      [&] {
        const io_counts now = io_counts::now();
        return now.registered == before.registered && now.parked == before.parked;
      },
      5s);
  CHECK(back);
  CHECK(io_counts::now().registered == before.registered);
  CHECK(io_counts::now().parked == before.parked);
}

// GET and the whole body. (Two functions, not a defaulted request_options argument:
// GCC 12 destroys a defaulted aggregate argument twice when the call sits in a co_await.)
cl::task<std::string> fetch_text_with(http::client& client, std::string url, http::request_options options) {
  http::response response = co_await client.get(std::move(url), std::move(options));
  co_return co_await response.text();
}


cl::task<std::string> post_text(http::client& client, std::string url, std::string body) {
  http::response response = co_await client.post(std::move(url), std::move(body));
  co_return co_await response.text();
}

// --- the parser, driven by hand ------------------------------------------------------

struct parsed {
  std::vector<int> interim_statuses;
  int status = 0;
  int version_minor = -1;
  std::string reason;
  std::vector<std::pair<std::string, std::string>> headers;
  std::vector<std::pair<std::string, std::string>> trailers;
  std::string body;
  bool keep_alive = false;
  bool done = false;
  std::size_t left_over = 0;  // bytes after the response

  bool operator==(const parsed&) const = default;
};

std::vector<std::pair<std::string, std::string>> pairs_of(const http::header_list& list) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& field : list) out.emplace_back(field.first, field.second);
  return out;
}

// Feeds `full` to a fresh parser as a transport would: the bytes arrive in pieces
// ending at `cuts` (ascending), then the rest; the parser always sees every buffered,
// unconsumed byte. `eof_at_end`: the connection ends after the last byte.
parsed parse_in_pieces(std::string_view full, std::vector<std::size_t> cuts, http::limits limits = {},
                       std::string_view method = "GET", bool eof_at_end = false) {
  http::response_parser parser(limits);
  parser.start(method);
  parsed out;
  std::string buffer;
  std::size_t fed = 0;
  std::size_t next_cut = 0;
  auto feed_more = [&]() -> bool {
    if (fed >= full.size()) return false;
    std::size_t end = full.size();
    while (next_cut < cuts.size()) {
      const std::size_t cut = cuts[next_cut++];
      if (cut > fed && cut < full.size()) {
        end = cut;
        break;
      }
    }
    buffer.append(full.substr(fed, end - fed));
    fed = end;
    return true;
  };
  feed_more();
  bool in_head = true;
  for (int guard = 0;; ++guard) {
    if (guard > 1'000'000) throw std::runtime_error("parse_in_pieces: no progress");
    if (in_head) {
      const std::size_t used = parser.parse_head(buffer);
      if (used == 0) {
        if (!feed_more()) throw std::runtime_error("parse_in_pieces: incomplete head");
        continue;
      }
      buffer.erase(0, used);
      if (parser.interim()) {
        out.interim_statuses.push_back(parser.status());
        continue;
      }
      in_head = false;
      out.status = parser.status();
      out.version_minor = parser.version_minor();
      out.reason = parser.reason();
      out.headers = pairs_of(parser.headers());
      if (parser.done()) break;
      continue;
    }
    std::string_view payload;
    const std::size_t used = parser.parse_body(buffer, payload);
    out.body.append(payload);
    buffer.erase(0, used);
    if (parser.done()) break;
    if (used == 0 && payload.empty()) {
      if (!feed_more()) {
        if (!eof_at_end) throw std::runtime_error("parse_in_pieces: incomplete body");
        parser.end_of_input();
        break;
      }
    }
  }
  out.trailers = pairs_of(parser.trailers());
  out.keep_alive = parser.keep_alive();
  out.done = parser.done();
  out.left_over = buffer.size() + (full.size() - fed);
  return out;
}

parsed parse_whole(std::string_view full, http::limits limits = {}, std::string_view method = "GET",
                   bool eof_at_end = false) {
  return parse_in_pieces(full, {}, limits, method, eof_at_end);
}

std::exception_ptr parse_failure(std::string_view full, http::limits limits = {}, std::string_view method = "GET",
                                 bool eof_at_end = false) {
  return failure_of_call([&] { (void)parse_whole(full, limits, method, eof_at_end); });
}

// Only parse_head on `data` (which may be an incomplete head): its result or error.
std::exception_ptr head_failure(std::string_view data, http::limits limits = {}) {
  return failure_of_call([&] {
    http::response_parser parser(limits);
    parser.start("GET");
    (void)parser.parse_head(data);
  });
}

}  // namespace

// =================================================================================
// URLs
// =================================================================================

TEST_CASE("http: url::parse takes host, port, IPv6 literals, path and query; drops the fragment", "[http]") {
  {
    const http::url u = http::url::parse("http://example.com");
    CHECK(u.scheme == "http");
    CHECK(u.host == "example.com");
    CHECK(u.port == 80);
    CHECK(u.target == "/");
    CHECK(u.host_header() == "example.com");
    CHECK(u.to_string() == "http://example.com/");
  }
  {
    const http::url u = http::url::parse("http://example.com:8080/a/b?x=1&y=2");
    CHECK(u.host == "example.com");
    CHECK(u.port == 8080);
    CHECK(u.target == "/a/b?x=1&y=2");
    CHECK(u.host_header() == "example.com:8080");
    CHECK(u.to_string() == "http://example.com:8080/a/b?x=1&y=2");
  }
  {
    const http::url u = http::url::parse("http://[::1]:8080/a?b");
    CHECK(u.host == "::1");
    CHECK(u.port == 8080);
    CHECK(u.target == "/a?b");
    CHECK(u.host_header() == "[::1]:8080");
    CHECK(u.to_string() == "http://[::1]:8080/a?b");
  }
  {
    const http::url u = http::url::parse("http://[::1]/");
    CHECK(u.host == "::1");
    CHECK(u.port == 80);
    CHECK(u.host_header() == "[::1]");
  }
  {
    const http::url u = http::url::parse("http://127.0.0.1:65535/");
    CHECK(u.host == "127.0.0.1");
    CHECK(u.port == 65535);
    CHECK(u.host_header() == "127.0.0.1:65535");
  }
  {
    const http::url u = http::url::parse("http://example.com:80/x");
    CHECK(u.port == 80);
    CHECK(u.host_header() == "example.com");  // the default port is not repeated
    CHECK(u.to_string() == "http://example.com/x");
  }
  {  // a query without a path: the default path "/"
    const http::url u = http::url::parse("http://example.com?q=1");
    CHECK(u.host == "example.com");
    CHECK(u.target == "/?q=1");
  }
  {  // percent-escapes are kept as they are
    const http::url u = http::url::parse("http://example.com/a%20b?c=%2F");
    CHECK(u.target == "/a%20b?c=%2F");
  }
  {  // (header) spaces in the path and query are percent-encoded, not refused; the host is lower-cased
    const http::url u = http::url::parse("http://Example.COM/a b?c d");
    CHECK(u.host == "example.com");
    CHECK(u.target == "/a%20b?c%20d");
  }
  {  // an empty port is the default one
    const http::url u = http::url::parse("http://example.com:/x");
    CHECK(u.port == 80);
  }
  {  // the fragment is not part of the target (never sent)
    const http::url u = http::url::parse("http://example.com/p?q=1#frag");
    CHECK(u.target == "/p?q=1");
    CHECK(u.to_string() == "http://example.com/p?q=1");
    const http::url v = http::url::parse("http://example.com#frag");
    CHECK(v.host == "example.com");
    CHECK(v.target == "/");
    CHECK(v.to_string().find('#') == std::string::npos);
  }
}

TEST_CASE("http: url::parse rejects malformed URLs with url_error; https:// says TLS is not built in", "[http]") {
  const std::vector<std::string> bad = {
      "",
      "http://",
      "http:///path",
      "http://:8080/",
      "http://host:abc/",
      "http://host:65536/",
      "http://host:99999999999999999999/",
      "http://host:-1/",
      "http://host:0/",
      "http://ho st/",
      "http://user@host/",
      "http://[::1]x/",
      "http://[not-ipv6]/",
      "http://host/a\tb",
      "http://host/a\r\nX-Injected: 1",
      "http://host/a\nb",
      "http://host/a\rb",
      "http://host/a\0b"s,
      "http://ho\0st/"s,
      "example.com/path",
      "//example.com/",
      "ftp://example.com/",
      "http//example.com/",
      "http:example.com",
      "http://[::1/",
  };
  for (const std::string& text : bad) {
    const std::exception_ptr error = failure_of_call([&] { (void)http::url::parse(text); });
    UNSCOPED_INFO("url: \"" << text << "\"");
    CHECK_KIND(error, "url_error");
    // url_error is an invalid_request_error is a std::invalid_argument.
    CHECK(failure_of_call([&] {
            try {
              (void)http::url::parse(text);
            } catch (const std::invalid_argument&) {
              return;
            }
          }) == nullptr);
  }
  const std::exception_ptr tls = failure_of_call([] { (void)http::url::parse("https://example.com/"); });
  CHECK_KIND(tls, "url_error");
  // This file does not define CORO_LOOP_OPENSSL: the message says how to build TLS in.
  CHECK(contains(what_of(tls), "https needs TLS, which is not built in: #define CORO_LOOP_OPENSSL"));
  CHECK(contains(what_of(tls), "-lssl -lcrypto"));
}

TEST_CASE("http: resolve_url resolves absolute, network-path, absolute-path and relative references", "[http]") {
  const http::url base = http::url::parse("http://a.example:8080/x/y?q=1");
  CHECK(http::resolve_url(base, "http://b.example/z").to_string() == "http://b.example/z");
  CHECK(http::resolve_url(base, "http://b.example:81/z?k").to_string() == "http://b.example:81/z?k");
  {
    const http::url u = http::resolve_url(base, "//c.example/w?k");
    CHECK(u.scheme == "http");
    CHECK(u.host == "c.example");
    CHECK(u.port == 80);
    CHECK(u.target == "/w?k");
  }
  CHECK(http::resolve_url(base, "/abs?k=v").to_string() == "http://a.example:8080/abs?k=v");
  CHECK(http::resolve_url(base, "rel").to_string() == "http://a.example:8080/x/rel");
  CHECK(http::resolve_url(base, "./here").to_string() == "http://a.example:8080/x/here");
  CHECK(http::resolve_url(base, "../up").to_string() == "http://a.example:8080/up");
  CHECK(http::resolve_url(base, "rel?k=2").to_string() == "http://a.example:8080/x/rel?k=2");
  CHECK(http::resolve_url(base, "rel#frag").to_string() == "http://a.example:8080/x/rel");
  CHECK(http::resolve_url(base, "?only").to_string() == "http://a.example:8080/x/y?only");
  const http::url v6 = http::url::parse("http://[::1]:9000/dir/file");
  CHECK(http::resolve_url(v6, "other").to_string() == "http://[::1]:9000/dir/other");
  const std::exception_ptr bad = failure_of_call([&] { (void)http::resolve_url(base, "ftp://x/"); });
  CHECK_KIND(bad, "url_error");
}

// =================================================================================
// Requests
// =================================================================================

TEST_CASE(
    "http: the request carries Host with the port, User-Agent, Content-Length only with a body, headers in "
    "order",
    "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply(ok_response("ok"));
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    const std::string host = "127.0.0.1:" + std::to_string(server.port());
    {
      http::client_options options;
      options.headers = {{"X-Client", "c"}, {"X-Over", "client"}};
      http::client client(options);

      http::request_options get_options;
      get_options.headers = {{"X-B", "2"}, {"X-A", "1"}, {"X-Over", "request"}, {"X-A", "3"}};
      std::string got = co_await cl::timeout(10s, fetch_text_with(client, base + "/path?x=1", get_options));
      CHECK(got == "ok");
      got = co_await cl::timeout(10s, post_text(client, base + "/post", "hello"));
      CHECK(got == "ok");
      got = co_await cl::timeout(10s, post_text(client, base + "/empty", ""));
      CHECK(got == "ok");
      const std::string binary = "a\0b\r\n\r\nc"s;
      got = co_await cl::timeout(10s, post_text(client, base + "/binary", binary));
      CHECK(got == "ok");
      {
        http::response r = co_await cl::timeout(10s, client.put(base + "/put", "p"));
        CHECK_AWAIT_EQ(r.text(), "ok");
      }
      {
        http::response r = co_await cl::timeout(10s, client.patch(base + "/patch", "pa"));
        CHECK_AWAIT_EQ(r.text(), "ok");
      }
      {
        http::response r = co_await cl::timeout(10s, client.del(base + "/del"));
        CHECK_AWAIT_EQ(r.text(), "ok");
      }
      {
        http::response r = co_await cl::timeout(10s, client.request("OPTIONS", base + "/opt"));
        CHECK_AWAIT_EQ(r.text(), "ok");
      }
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/sp ace")), "ok");  // sent percent-encoded
      CHECK(client.connections_opened() == 1);
    }
    REQUIRE(s.requests.size() == 9);
    {
      const seen_request& get = s.requests[0];
      CHECK(get.method == "GET");
      CHECK(get.target == "/path?x=1");
      CHECK(get.version == "HTTP/1.1");
      CHECK(get.values("Host") == std::vector<std::string>{host});
      CHECK(get.index_of("Host") == 0);  // Host first (RFC 9110 7.2 "SHOULD")
      CHECK(get.values("User-Agent") == std::vector<std::string>{"coro_loop/" CORO_LOOP_VERSION});
      CHECK(get.values("Content-Length").empty());
      CHECK(get.values("Transfer-Encoding").empty());
      CHECK(get.body.empty());
      CHECK(get.values("X-Client") == std::vector<std::string>{"c"});
      CHECK(get.values("X-Over") == std::vector<std::string>{"request"});  // the request's replaces the client's
      CHECK(get.values("X-A") == std::vector<std::string>{"1", "3"});
      const std::size_t b = get.index_of("X-B", "2");
      const std::size_t a1 = get.index_of("X-A", "1");
      const std::size_t a3 = get.index_of("X-A", "3");
      CHECK(b < a1);
      CHECK(a1 < a3);
      CHECK(a3 < get.fields.size());
    }
    {
      const seen_request& post = s.requests[1];
      CHECK(post.method == "POST");
      CHECK(post.target == "/post");
      CHECK(post.values("Content-Length") == std::vector<std::string>{"5"});
      CHECK(post.values("Transfer-Encoding").empty());
      CHECK(post.body == "hello");
      CHECK(post.values("Host") == std::vector<std::string>{host});
    }
    {
      const seen_request& empty = s.requests[2];
      CHECK(empty.method == "POST");
      CHECK(empty.values("Content-Length") == std::vector<std::string>{"0"});
      CHECK(empty.body.empty());
    }
    {
      const seen_request& binary = s.requests[3];
      CHECK(binary.values("Content-Length") == std::vector<std::string>{"8"});
      CHECK(binary.body == "a\0b\r\n\r\nc"s);
    }
    CHECK(s.requests[4].method == "PUT");
    CHECK(s.requests[4].body == "p");
    CHECK(s.requests[5].method == "PATCH");
    CHECK(s.requests[5].body == "pa");
    CHECK(s.requests[6].method == "DELETE");
    CHECK(s.requests[6].values("Content-Length").empty());
    CHECK(s.requests[7].method == "OPTIONS");
    CHECK(s.requests[8].target == "/sp%20ace");
    CHECK(s.connections == 1);

    // A custom User-Agent, and keep_alive = false: "Connection: close", never reused.
    const std::size_t first = s.requests.size();
    {
      http::client_options options;
      options.user_agent = "tester/2.0";
      options.keep_alive = false;
      http::client client(options);
      for (int i = 0; i < 2; ++i) {
        std::string got = co_await cl::timeout(10s, fetch_text(client, base + "/ua"));
        CHECK(got == "ok");
      }
      CHECK(client.connections_opened() == 2);
      CHECK(client.idle_connections() == 0);
    }
    REQUIRE(s.requests.size() == first + 2);
    CHECK(s.requests[first].values("User-Agent") == std::vector<std::string>{"tester/2.0"});
    CHECK(lower(s.requests[first].value("Connection").value_or("")) == "close");
    CHECK(s.connections == 3);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE(
    "http: CR, LF or NUL in a header, method or URL, or a user-set framing header: invalid_request_error "
    "and nothing is sent",
    "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply(ok_response("ok"));
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      struct bad_request {
        std::string method;
        std::string url;
        http::header_list headers;
        const char* expected;
      };
      const std::vector<bad_request> cases = {
          {"GET", base + "/", {{"X-Value", "a\r\nX-Injected: 1"}}, "invalid_request_error"},
          {"GET", base + "/", {{"X-Value", "a\nb"}}, "invalid_request_error"},
          {"GET", base + "/", {{"X-Value", "a\rb"}}, "invalid_request_error"},
          {"GET", base + "/", {{"X-Value", "a\0b"s}}, "invalid_request_error"},
          {"GET", base + "/", {{"X-Name\r\nX-Injected", "1"}}, "invalid_request_error"},
          {"GET", base + "/", {{"Bad Name", "1"}}, "invalid_request_error"},
          {"GET", base + "/", {{"Bad:Name", "1"}}, "invalid_request_error"},
          {"GET", base + "/", {{"", "1"}}, "invalid_request_error"},
          {"GET", base + "/", {{"X\0Y"s, "1"}}, "invalid_request_error"},
          {"GET", base + "/", {{"Content-Length", "5"}}, "invalid_request_error"},
          {"GET", base + "/", {{"Transfer-Encoding", "chunked"}}, "invalid_request_error"},
          {"GE T", base + "/", {}, "invalid_request_error"},
          {"GET\r\nX: 1", base + "/", {}, "invalid_request_error"},
          {"GET\0"s, base + "/", {}, "invalid_request_error"},
          {"", base + "/", {}, "invalid_request_error"},
          {"GET", base + "/a\r\nX-Injected: 1", {}, "url_error"},
          {"GET", base + "/a\0b"s, {}, "url_error"},
          {"GET", "https://127.0.0.1:1/", {}, "url_error"},
      };
      for (const bad_request& c : cases) {
        http::request_options options;
        options.headers = c.headers;
        const std::exception_ptr error =
            co_await failure_of(cl::timeout(10s, client.request(c.method, c.url, std::move(options))));
        UNSCOPED_INFO("method \"" << c.method << "\" url \"" << c.url << "\"");
        CHECK_KIND(error, c.expected);
      }
      // The same through the client's own headers (refused by the constructor or by the request).
      http::client_options options;
      options.headers = {{"X-Client", "evil\r\nX-Injected: 1"}};
      std::optional<http::client> bad_client;
      std::exception_ptr error = failure_of_call([&] { bad_client.emplace(options); });
      if (error == nullptr) error = co_await failure_of(cl::timeout(10s, bad_client->get(base + "/")));
      CHECK_KIND(error, "invalid_request_error");
      CHECK(client.connections_opened() == 0);
      if (bad_client) CHECK(bad_client->connections_opened() == 0);
      CHECK(client.active_connections() == 0);
    }
    co_await cl::sleep(20ms);  // a connection would have been accepted by now
    CHECK(s.connections == 0);
    CHECK(s.requests.empty());
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

namespace {

// A server that only counts: connections, and every byte it receives. It answers the
// first request head with an empty 200 and closes, so a request that gets through
// ends at once (and is seen here) rather than waiting for a timeout.
struct byte_counter {
  int connections = 0;
  std::string received;
};

cl::task<void> count_bytes(byte_counter& counter, cl::stream connection) {
  ++counter.connections;
  const std::size_t start = counter.received.size();
  for (int i = 0; i < 1000; ++i) {
    std::string piece;
    try {
      piece = co_await connection.read(64 * 1024);
    } catch (const std::exception&) {
    }
    if (piece.empty()) break;
    counter.received += piece;
    if (counter.received.find("\r\n\r\n", start) != std::string::npos) {
      try {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      } catch (const std::exception&) {
      }
      break;
    }
  }
  connection.close();
  try {
    co_await connection.wait_closed();
  } catch (const std::exception&) {
  }
}

// Every place a byte of a request head can come from, each fed one bad byte sequence.
enum class head_input {
  user_agent,
  client_header_value,
  client_header_name,
  request_header_value,
  request_header_name,
  host_header,
  authorization_header,
  cookie_header,
  user_agent_header,
  method,
  url_path,
  url_query,
  url_host,
};

struct head_input_case {
  head_input input;
  const char* label;
  const char* expected;  // the error kind
};

// Sends one GET with `bad` placed in `input`; the error it ends with.
cl::task<std::exception_ptr> send_with_bad_bytes(head_input input, std::string bad, std::uint16_t port) {
  const std::string origin = "http://127.0.0.1:" + std::to_string(port);
  http::client_options client_options;
  client_options.timeout.total = 10s;
  http::request_options request_options;
  std::string method = "GET";
  std::string url = origin + "/";
  switch (input) {
    case head_input::user_agent: client_options.user_agent = "agent/1" + bad; break;
    case head_input::client_header_value: client_options.headers = {{"X-Client", "a" + bad + "b"}}; break;
    case head_input::client_header_name: client_options.headers = {{"X-Cli" + bad + "ent", "v"}}; break;
    case head_input::request_header_value: request_options.headers = {{"X-Request", "a" + bad + "b"}}; break;
    case head_input::request_header_name: request_options.headers = {{"X-Req" + bad + "uest", "v"}}; break;
    case head_input::host_header: request_options.headers = {{"Host", "example.com" + bad}}; break;
    case head_input::authorization_header: request_options.headers = {{"Authorization", "Bearer t" + bad}}; break;
    case head_input::cookie_header: request_options.headers = {{"Cookie", "a=1" + bad + "; b=2"}}; break;
    case head_input::user_agent_header: request_options.headers = {{"User-Agent", "agent/2" + bad}}; break;
    case head_input::method: method = "PO" + bad + "ST"; break;
    case head_input::url_path: url = origin + "/a" + bad + "b"; break;
    case head_input::url_query: url = origin + "/?q=a" + bad + "b"; break;
    case head_input::url_host: url = "http://127.0.0.1" + bad + ":" + std::to_string(port) + "/"; break;
  }
  std::exception_ptr error;
  try {
    http::client client(client_options);
    cl::task<http::response> sending = client.request(method, url, std::move(request_options));
    http::response r = co_await cl::timeout(10s, std::move(sending));
  } catch (...) {
    error = std::current_exception();
  }
  co_return error;
}

}  // namespace

TEST_CASE("http: CR, LF, NUL or another control byte from any option or request field is refused before anything "
          "is sent",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    byte_counter counter;
    auto handler = [&counter](cl::stream connection) { return count_bytes(counter, std::move(connection)); };
    cl::server server = co_await cl::start_server(handler, "127.0.0.1", 0);
    const std::vector<head_input_case> inputs = {
        {head_input::user_agent, "client_options::user_agent", "invalid_request_error"},
        {head_input::client_header_value, "client_options::headers value", "invalid_request_error"},
        {head_input::client_header_name, "client_options::headers name", "invalid_request_error"},
        {head_input::request_header_value, "request_options::headers value", "invalid_request_error"},
        {head_input::request_header_name, "request_options::headers name", "invalid_request_error"},
        {head_input::host_header, "a Host field set by hand", "invalid_request_error"},
        {head_input::authorization_header, "an Authorization field", "invalid_request_error"},
        {head_input::cookie_header, "a Cookie field", "invalid_request_error"},
        {head_input::user_agent_header, "a User-Agent field", "invalid_request_error"},
        {head_input::method, "the method", "invalid_request_error"},
        {head_input::url_path, "the URL's path", "url_error"},
        {head_input::url_query, "the URL's query", "url_error"},
        {head_input::url_host, "the URL's host", "url_error"},
    };
    // CR LF (a second field line), each alone, NUL, and the other control bytes
    // RFC 9110 5.5 leaves out of a field value (only HTAB is allowed).
    const std::vector<std::string> bad_bytes = {"\r\nX-Injected: yes", "\r\n", "\n", "\r", "\0"s,
                                                "\x01",                "\x08", "\x0b", "\x1f", "\x7f"};
    for (const head_input_case& input : inputs) {
      for (const std::string& bad : bad_bytes) {
        const int connections_before = counter.connections;
        const std::size_t bytes_before = counter.received.size();
        const std::exception_ptr error = co_await send_with_bad_bytes(input.input, bad, server.port());
        UNSCOPED_INFO(input.label << " with " << http::detail::quote_bytes(bad));
        CHECK_KIND(error, input.expected);
        UNSCOPED_INFO(input.label << " with " << http::detail::quote_bytes(bad));
        CHECK(counter.connections == connections_before);
        UNSCOPED_INFO(input.label << " with " << http::detail::quote_bytes(bad) << ": the server received "
                                  << http::detail::quote_bytes(counter.received.substr(bytes_before)));
        CHECK(counter.received.size() == bytes_before);
      }
    }
    {
      const std::exception_ptr error =
          co_await send_with_bad_bytes(head_input::user_agent, "\r\nX-Injected: yes", server.port());
      UNSCOPED_INFO("what(): " << what_of(error));
      CHECK(contains(what_of(error), "User-Agent"));
      CHECK(contains(what_of(error), "CR"));
      CHECK(contains(what_of(error), "\"agent/1\\r\\nX-Injected: yes\""));
    }
    co_await cl::sleep(20ms);  // a connection would have been accepted by now
    CHECK(counter.connections == 0);
    CHECK(counter.received.empty());

    // HTAB and bytes of 0x80 and above (obs-text) are allowed in a field value, and sent as given.
    {
      http::client_options options;
      options.user_agent = "agent\t1 \x80\xff";
      options.headers = {{"X-Client", "a\tb"}};
      http::client client(options);
      http::request_options request_options;
      request_options.headers = {{"X-Request", "caf\xc3\xa9"}};
      cl::task<http::response> sending = client.get(base_url(server) + "/fine", std::move(request_options));
      http::response r = co_await cl::timeout(10s, std::move(sending));
      CHECK(r.status() == 200);
    }
    CHECK(counter.connections == 1);
    CHECK(contains(counter.received, "\r\nUser-Agent: agent\t1 \x80\xff\r\n"));
    CHECK(contains(counter.received, "\r\nX-Client: a\tb\r\n"));
    CHECK(contains(counter.received, "\r\nX-Request: caf\xc3\xa9\r\n"));
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a redirect to a Location with a control byte is redirect_error, and the target is not requested",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply([](const seen_request& request, int, int) -> std::string {
      if (request.target == "/start") return "HTTP/1.1 302 Found\r\nLocation: /next\x01x\r\nContent-Length: 0\r\n\r\n";
      if (request.target == "/tab") return "HTTP/1.1 302 Found\r\nLocation: /next\tx\r\nContent-Length: 0\r\n\r\n";
      return ok_response("reached");
    });
    cl::server server = co_await start(s);
    {
      http::client client;
      for (const char* path : {"/start", "/tab"}) {
        const std::exception_ptr error = co_await failure_of(cl::timeout(10s, client.get(base_url(server) + path)));
        UNSCOPED_INFO(path);
        CHECK_KIND(error, "redirect_error");
      }
    }
    REQUIRE(s.requests.size() == 2);
    CHECK(s.requests[0].target == "/start");
    CHECK(s.requests[1].target == "/tab");
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

// =================================================================================
// Responses
// =================================================================================

TEST_CASE("http: status, reason, repeated headers in order, case-insensitive lookups; raise_for_status", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply([](const seen_request& request, int, int) -> std::string {
      if (request.target == "/500") {
        return "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 4\r\n\r\noops";
      }
      if (request.target == "/404") return "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
      return "HTTP/1.1 201 Created\r\n"
             "Set-Cookie: a=1\r\n"
             "Content-Type: text/plain\r\n"
             "set-cookie: b=2\r\n"
             "X-Pad:   padded value \t\r\n"
             "SET-COOKIE: c=3\r\n"
             "X-Empty:\r\n"
             "Content-Length: 4\r\n"
             "\r\n"
             "body";
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/created"));
        CHECK(r.status() == 201);
        CHECK(r.reason() == "Created");
        CHECK(r.version_minor() == 1);
        CHECK(r.ok());
        CHECK(r.url() == base + "/created");
        CHECK(r.history().empty());
        CHECK(r.content_length() == std::optional<std::uint64_t>(4));
        const http::header_list& h = r.headers();
        CHECK(h.size() == 7);
        const std::vector<std::string_view> cookies = h.get_all("Set-Cookie");
        CHECK(cookies == std::vector<std::string_view>{"a=1", "b=2", "c=3"});
        CHECK(h.get_all("set-COOKIE").size() == 3);
        CHECK(h.get("content-TYPE") == std::optional<std::string_view>("text/plain"));
        CHECK(h.get("Set-Cookie") == std::optional<std::string_view>("a=1"));  // the first
        CHECK(h.get("x-pad") == std::optional<std::string_view>("padded value"));
        CHECK(h.get("X-Empty") == std::optional<std::string_view>(""));
        CHECK(h.contains("CONTENT-LENGTH"));
        CHECK_FALSE(h.contains("X-Missing"));
        CHECK_FALSE(h.get("X-Missing").has_value());
        CHECK(h.get_all("X-Missing").empty());
        std::vector<std::string> names;
        for (const auto& field : h) names.push_back(field.first);
        CHECK(names == std::vector<std::string>{"Set-Cookie", "Content-Type", "set-cookie", "X-Pad", "SET-COOKIE",
                                                "X-Empty", "Content-Length"});
        CHECK_NOTHROW(r.raise_for_status());
        CHECK_FALSE(r.body_complete());
        CHECK_AWAIT_EQ(r.text(), "body");
        CHECK(r.body_complete());
        CHECK_AWAIT_EQ(r.text(), "");  // nothing left
      }
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/500"));
        CHECK(r.status() == 500);
        CHECK_FALSE(r.ok());
        std::optional<http::status_error> error;
        try {
          r.raise_for_status();
        } catch (const http::status_error& caught) {
          error = caught;
        }
        REQUIRE(error.has_value());
        CHECK(error->status == 500);
        CHECK(error->reason == "Internal Server Error");
        CHECK(error->url == base + "/500");
        CHECK(contains(error->what(), "500"));
        CHECK(contains(error->what(), base + "/500"));
        CHECK_AWAIT_EQ(r.text(), "oops");  // the body is still readable
      }
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/404"));
        CHECK(r.status() == 404);
        CHECK(r.reason() == "Not Found");
        std::optional<int> status;
        try {
          r.raise_for_status();
        } catch (const http::error& caught) {  // status_error is an http::error
          if (auto* as_status = dynamic_cast<const http::status_error*>(&caught)) status = as_status->status;
        }
        CHECK(status == std::optional<int>(404));
        CHECK_AWAIT_EQ(r.text(), "");
      }
      CHECK(client.connections_opened() == 1);
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 1);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

// =================================================================================
// Framing
// =================================================================================

TEST_CASE("http: chunked bodies with extensions and trailers; the connection is reused", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply(
        "HTTP/1.1 200 OK\r\n"
        "Transfer-Encoding: chunked\r\n"
        "Trailer: X-Checksum\r\n"
        "\r\n"
        "5;name=value\r\nhello\r\n"
        "7;a=1;b=\"x y\"\r\n, world\r\n"
        "A\r\n0123456789\r\n"
        "0;last\r\n"
        "X-Checksum: abc\r\n"
        "X-Other: 1\r\n"
        "\r\n");
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      for (int i = 0; i < 2; ++i) {
        http::response r = co_await cl::timeout(10s, client.get(base + "/chunked"));
        CHECK_FALSE(r.content_length().has_value());
        CHECK_AWAIT_EQ(r.text(), "hello, world0123456789");
        CHECK(r.body_complete());
        CHECK(r.trailers().get("x-checksum") == std::optional<std::string_view>("abc"));
        CHECK(r.trailers().get("X-Other") == std::optional<std::string_view>("1"));
        CHECK(r.trailers().size() == 2);
      }
      // read_chunk() streams the same body; the end is an empty piece.
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/chunked"));
        std::string all;
        for (int i = 0; i < 1000; ++i) {
          std::string piece = co_await cl::timeout(10s, r.read_chunk(4));
          if (piece.empty()) break;
          CHECK(piece.size() <= 4);
          all += piece;
        }
        CHECK(all == "hello, world0123456789");
        CHECK(r.body_complete());
        CHECK(r.trailers().get("X-Checksum") == std::optional<std::string_view>("abc"));
      }
      CHECK(client.connections_opened() == 1);
    }
    CHECK(s.connections == 1);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a close-delimited body is read to the end and its connection is not reused", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = [](cl::stream& connection, const seen_request&, int, int) -> cl::task<bool> {
      connection.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end");
      co_await connection.drain();
      co_return false;  // close: that ends the body
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      for (int i = 0; i < 2; ++i) {
        http::response r = co_await cl::timeout(10s, client.get(base + "/close"));
        CHECK_FALSE(r.content_length().has_value());
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "until the end");
        CHECK(r.body_complete());
      }
      CHECK(client.connections_opened() == 2);
      CHECK(client.idle_connections() == 0);
      CHECK(client.active_connections() == 0);
      // HTTP/1.0 and "Connection: close" are not reused either.
      s.act = reply([](const seen_request& request, int, int) -> std::string {
        if (request.target == "/http10") return "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok";
        return "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok";
      });
      for (const char* path : {"/http10", "/http10", "/close-header", "/close-header"}) {
        http::response r = co_await cl::timeout(10s, client.get(base + path));
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "ok");
      }
      CHECK(client.connections_opened() == 6);
      CHECK(client.idle_connections() == 0);
    }
    CHECK(s.connections == 6);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: 1xx interim responses are skipped; HEAD, 204 and 304 have no body and keep the connection", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply([](const seen_request& request, int, int) -> std::string {
      if (request.target == "/interim") {
        return "HTTP/1.1 100 Continue\r\n\r\n"
               "HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
               "HTTP/1.1 102 Processing\r\n\r\n"
               "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal";
      }
      if (request.method == "HEAD") return "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Head: yes\r\n\r\n";
      if (request.target == "/204") return "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n";
      if (request.target == "/304") return "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n";
      return ok_response("plain");
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client_options options;
      options.timeout.read = 5s;  // a client waiting for a body that never comes fails, not hangs
      http::client client(options);
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/interim"));
        CHECK(r.status() == 200);
        CHECK(r.reason() == "OK");
        CHECK_FALSE(r.headers().contains("Link"));  // the interim response's fields are not the final ones
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "final");
      }
      {
        http::response r = co_await cl::timeout(10s, client.head(base + "/head"));
        CHECK(r.status() == 200);
        CHECK(r.headers().get("X-Head") == std::optional<std::string_view>("yes"));
        CHECK(r.body_complete());
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "");
      }
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/204"));
        CHECK(r.status() == 204);
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "");
        CHECK(r.body_complete());
      }
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/304"));
        CHECK(r.status() == 304);
        CHECK(r.ok());
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "");
        CHECK(r.body_complete());
      }
      {  // the head of a HEAD response, dropped unread, still frees the connection
        http::response r = co_await cl::timeout(10s, client.head(base + "/head"));
        CHECK(r.status() == 200);
      }
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/after"));
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "plain");
      }
      CHECK(client.connections_opened() == 1);
      CHECK(client.idle_connections() == 1);
    }
    CHECK(s.connections == 1);
    CHECK(s.requests.size() == 6);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: malformed framing and heads end in protocol_error on a fresh connection each", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    struct bad_response {
      std::string path;
      std::string bytes;  // written, then the server closes
      const char* expected;
      const char* mentions = "";  // what() names what was wrong (lower-cased comparison)
    };
    const std::vector<bad_response> cases = {
        {"/cl-and-te",
         "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
         "protocol_error", "transfer-encoding"},
        {"/cl-abc", "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello", "protocol_error", "content-length"},
        {"/cl-negative", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\nhello", "protocol_error", "content-length"},
        {"/cl-plus", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", "protocol_error", "content-length"},
        {"/cl-overflow", "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\nhello", "protocol_error",
         "content-length"},
        {"/cl-two-values", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "protocol_error",
         "content-length"},
        {"/cl-list", "HTTP/1.1 200 OK\r\nContent-Length: 5, 6\r\n\r\nhello!", "protocol_error", "content-length"},
        {"/truncated", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", "protocol_error", "10 of 100"},
        {"/chunk-zz", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", "protocol_error",
         "chunk"},
        {"/chunk-empty-size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\nhello\r\n0\r\n\r\n",
         "protocol_error", "chunk"},
        {"/chunk-overflow",
         "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
         "protocol_error", "chunk"},
        {"/chunk-overflow-17", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\nhello\r\n",
         "protocol_error", "chunk"},
        {"/chunk-no-crlf", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
         "protocol_error", "chunk"},
        {"/chunk-truncated", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", "protocol_error",
         "chunk"},
        {"/chunk-no-last", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", "protocol_error",
         "chunk"},
        {"/bad-status-code", "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n", "protocol_error", "status"},
        {"/short-status-code", "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n", "protocol_error", "status"},
        {"/long-status-code", "HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", "protocol_error", "status"},
        {"/http2", "HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", "protocol_error", "status"},
        {"/not-http", "hello world\r\n\r\n", "protocol_error", "status"},
        {"/space-before-colon", "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok", "protocol_error"},
        {"/nul-in-value", "HTTP/1.1 200 OK\r\nX-Bad: a\0b\r\nContent-Length: 2\r\n\r\nok"s, "protocol_error", "nul"},
        {"/no-colon", "HTTP/1.1 200 OK\r\nJustAName\r\nContent-Length: 2\r\n\r\nok", "protocol_error"},
        {"/empty-name", "HTTP/1.1 200 OK\r\n: value\r\nContent-Length: 2\r\n\r\nok", "protocol_error"},
        {"/partial-head", "HTTP/1.1 200 OK\r\nContent-Le", "protocol_error"},
        {"/interim-then-close", "HTTP/1.1 100 Continue\r\n\r\n", "protocol_error"},
        {"/unsupported-coding", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "protocol_error",
         "transfer-encoding"},
        {"/switching", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", "protocol_error", "101"},
        {"/nothing", "", "disconnected_error"},
    };
    script s;
    s.act = [&cases](cl::stream& connection, const seen_request& request, int, int) -> cl::task<bool> {
      for (const bad_response& c : cases) {
        if (c.path == request.target) {
          connection.write(c.bytes);
          co_await connection.drain();
          co_return false;
        }
      }
      connection.write(ok_response("fine"));
      co_await connection.drain();
      co_return true;
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client_options options;
      options.timeout.read = 5s;  // a wrong wait is a failure, not a hang
      http::client client(options);
      for (const bad_response& c : cases) {
        const std::size_t opened = client.connections_opened();
        const std::exception_ptr error = co_await failure_of(cl::timeout(10s, fetch_text(client, base + c.path)));
        UNSCOPED_INFO("case " << c.path);
        CHECK_KIND(error, c.expected);
        UNSCOPED_INFO("case " << c.path << ": " << describe(error));
        CHECK(contains(lower(what_of(error)), c.mentions));
        UNSCOPED_INFO("case " << c.path);
        CHECK(client.connections_opened() == opened + 1);  // a fresh connection, not retried
        const bool released = co_await eventually([&] { return client.active_connections() == 0; }, 5s);
        UNSCOPED_INFO("case " << c.path);
        CHECK(released);
        CHECK(client.idle_connections() == 0);
      }
      {
        const std::exception_ptr error = co_await failure_of(cl::timeout(10s, fetch_text(client, base + "/truncated")));
        CHECK(contains(what_of(error), "10"));
        CHECK(contains(what_of(error), "100"));
      }
      // The client still works afterwards.
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/good")), "fine");
    }
    CHECK(s.connections == static_cast<int>(cases.size()) + 2);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: an identical repeated Content-Length is accepted", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok");
    cl::server server = co_await start(s);
    {
      http::client client;
      for (int i = 0; i < 2; ++i) {
        http::response r = co_await cl::timeout(10s, client.get(base_url(server) + "/"));
        CHECK(r.content_length() == std::optional<std::uint64_t>(2));
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), "ok");
      }
      CHECK(client.connections_opened() == 1);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

// =================================================================================
// Limits
// =================================================================================

TEST_CASE("http: header block and header count limits end in protocol_error", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply([](const seen_request& request, int, int) -> std::string {
      std::string head = "HTTP/1.1 200 OK\r\n";
      if (request.target == "/big") {
        head += "X-Big: " + std::string(2048, 'a') + "\r\n";
      } else if (request.target == "/many") {
        for (int i = 0; i < 20; ++i) head += "X-N" + std::to_string(i) + ": v\r\n";
      } else if (request.target == "/few") {
        for (int i = 0; i < 4; ++i) head += "X-N" + std::to_string(i) + ": v\r\n";
      }
      return head + "Content-Length: 2\r\n\r\nok";
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client_options options;
      options.limits.max_header_bytes = 1024;
      options.limits.max_header_count = 10;
      options.timeout.read = 5s;
      http::client strict(options);
      std::exception_ptr error = co_await failure_of(cl::timeout(10s, fetch_text(strict, base + "/big")));
      CHECK_KIND(error, "protocol_error");
      error = co_await failure_of(cl::timeout(10s, fetch_text(strict, base + "/many")));
      CHECK_KIND(error, "protocol_error");
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(strict, base + "/few")), "ok");
      CHECK(strict.active_connections() == 0);

      http::client lenient;  // the defaults take both
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(lenient, base + "/big")), "ok");
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(lenient, base + "/many")), "ok");
      CHECK(lenient.connections_opened() == 1);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

namespace {

// Reads r's body with read_into(a buffer of `size`) to its end (0), at most 100,000 reads.
cl::task<std::string> read_all_into(http::response& r, std::size_t size) {
  std::string buffer(size, '\0');
  std::string all;
  for (int reads = 0; reads < 100'000; ++reads) {
    const std::size_t got = co_await cl::timeout(10s, r.read_into(buffer));
    if (got == 0) break;
    if (got > size) throw std::logic_error("read_into wrote past its buffer");
    all.append(buffer, 0, got);
  }
  co_return all;
}

}  // namespace

TEST_CASE("http: read_into streams a body into the caller's buffer, whatever its framing and the buffer's size",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    const std::size_t size = 3 * 1024 * 1024 + 5;
    const std::string payload = net_test::pattern(0, size);
    script s;
    s.act = [&payload](cl::stream& connection, const seen_request& request, int, int) -> cl::task<bool> {
      if (request.target == "/chunked") {
        std::string out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (std::size_t at = 0; at < payload.size(); at += 100'000) {
          const std::string piece = payload.substr(at, 100'000);
          char line[32];
          std::snprintf(line, sizeof line, "%zx\r\n", piece.size());
          out += line + piece + "\r\n";
        }
        connection.write(out + "0\r\nX-End: yes\r\n\r\n");
      } else if (request.target == "/close") {
        connection.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + payload);
      } else if (request.target == "/short") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n" +
                         payload.substr(0, 100'000));
      } else {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n" + payload);
      }
      co_await connection.drain();
      co_return request.target != "/close" && request.target != "/short";
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      for (const std::size_t buffer : {std::size_t{1000}, std::size_t{64 * 1024}, std::size_t{1024 * 1024}}) {
        for (const char* path : {"/length", "/chunked", "/close"}) {
          http::response r = co_await cl::timeout(10s, client.get(base + path));
          const std::string all = co_await read_all_into(r, buffer);
          UNSCOPED_INFO(path << " with a buffer of " << buffer);
          CHECK(difference(all, payload).empty());
          CHECK(r.body_complete());
          if (std::string_view(path) == "/chunked") CHECK(r.trailers().get("x-end") == std::optional<std::string_view>("yes"));
          std::string after(16, '\0');
          const std::size_t more = co_await r.read_into(after);
          CHECK(more == 0);
        }
      }
      // Each round's /length and /chunked reused one connection, which /close then ended.
      CHECK(client.connections_opened() == 3);

      http::response cut = co_await cl::timeout(10s, client.get(base + "/short"));
      std::string buffer(1024 * 1024, '\0');
      std::exception_ptr error;
      for (int reads = 0; reads < 1000 && !error; ++reads) {
        error = co_await failure_of(cl::timeout(10s, cut.read_into(buffer)));
      }
      CHECK_KIND(error, "protocol_error");
      CHECK_FALSE(cut.body_complete());

      std::string empty;
      http::response again = co_await cl::timeout(10s, client.get(base + "/length"));
      const std::exception_ptr refused = co_await failure_of(again.read_into(empty));
      CHECK_KIND(refused, "std::exception");  // std::invalid_argument
      const std::string text = co_await cl::timeout(10s, again.text());  // the body is still whole
      CHECK(text.size() == size);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a Content-Length announced but not sent costs no memory: text() holds what came", "[http]") {
  // RSS says nothing under a sanitizer or valgrind, nor when malloc fills what it hands out.
  if (test_support::instrumented() || test_support::malloc_perturbed()) return;
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    constexpr int requests = 4;
    int stalled = 0;
    script s;
    // 60 MiB announced (under max_body's 64 MiB), 100 KiB sent, then nothing until the client leaves.
    s.act = [&stalled](cl::stream& connection, const seen_request&, int, int) -> cl::task<bool> {
      ++stalled;
      co_return co_await write_and_wait_for_close(
          connection, "HTTP/1.1 200 OK\r\nContent-Length: 62914560\r\n\r\n" + std::string(100 * 1024, 'x'));
    };
    cl::server server = co_await start(s);
    const std::string url = base_url(server) + "/big";
    {
      http::client client;
      std::vector<http::response> responses;
      for (int i = 0; i < requests; ++i) responses.push_back(co_await cl::timeout(10s, client.get(url)));
      const std::size_t rss_before = test_support::rss_kib();
      std::vector<cl::task<std::string>> reading;
      for (http::response& r : responses) reading.push_back(r.text());
      auto all = cl::create_task(cl::gather_settled(std::move(reading)));
      for (int i = 0; i < 1000 && stalled < requests; ++i) co_await cl::sleep(1ms);
      co_await cl::sleep(100ms);  // every text() has what was sent and waits for the rest
      const std::size_t rss_during = test_support::rss_kib();
      all.cancel();
      const std::exception_ptr ended = co_await failure_of(std::move(all));
      CHECK(ended != nullptr);
      CHECK(stalled == requests);
      // Each text() holds the 100 KiB that came and one step ahead, not the 60 MiB announced.
      INFO("RSS " << rss_before << " KiB before, " << rss_during << " KiB while the bodies stall");
      CHECK(rss_during < rss_before + 16 * 1024);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a body over limits.max_body: text() and body() throw protocol_error, read_chunk() streams it",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    const std::string payload = net_test::pattern(0, 5000);
    script s;
    s.act = reply([&payload](const seen_request& request, int, int) -> std::string {
      if (request.target == "/chunked") {
        std::string out = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
        for (std::size_t at = 0; at < payload.size(); at += 700) {
          const std::string piece = payload.substr(at, 700);
          char size[32];
          std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
          out += size + piece + "\r\n";
        }
        return out + "0\r\n\r\n";
      }
      return ok_response(payload);
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client_options options;
      options.limits.max_body = 1000;
      options.timeout.read = 5s;
      http::client client(options);
      for (const char* path : {"/length", "/chunked"}) {
        {
          http::response r = co_await cl::timeout(10s, client.get(base + path));  // the head is fine
          CHECK(r.status() == 200);
          const std::exception_ptr error = co_await failure_of(cl::timeout(10s, r.text()));
          UNSCOPED_INFO(path);
          CHECK_KIND(error, "protocol_error");
        }
        {
          http::response r = co_await cl::timeout(10s, client.get(base + path));
          const std::exception_ptr error = co_await failure_of(cl::timeout(10s, r.body()));
          UNSCOPED_INFO(path);
          CHECK_KIND(error, "protocol_error");
        }
        {
          http::response r = co_await cl::timeout(10s, client.get(base + path));
          std::string all;
          for (int i = 0; i < 10'000; ++i) {
            std::string piece = co_await cl::timeout(10s, r.read_chunk(1024));
            if (piece.empty()) break;
            CHECK(piece.size() <= 1024);
            all += piece;
          }
          CHECK(all.size() == payload.size());
          CHECK(all == payload);
          CHECK(r.body_complete());
        }
      }
      // A body of exactly max_body is fine, as bytes too.
      http::client_options exact_options;
      exact_options.limits.max_body = payload.size();
      http::client exact(exact_options);
      http::response r = co_await cl::timeout(10s, exact.get(base + "/length"));
      std::vector<std::byte> bytes = co_await cl::timeout(10s, r.body());
      CHECK(bytes.size() == payload.size());
      CHECK(std::equal(bytes.begin(), bytes.end(), payload.begin(),
                       [](std::byte b, char c) { return b == static_cast<std::byte>(c); }));
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

namespace {

// Serves a body of `size` bytes, framed as the target says (/length, /chunked,
// /close), in 256 KiB writes with a drain after each: the server's own memory
// stays small beside the body.
cl::task<void> serve_large_body(std::size_t size, cl::stream connection) {
  try {
    const std::string head = co_await connection.read_until("\r\n\r\n");
    const bool chunked = head.rfind("GET /chunked ", 0) == 0;
    const bool until_close = head.rfind("GET /close ", 0) == 0;
    if (chunked) {
      connection.write("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
    } else if (until_close) {
      connection.write("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n");
    } else {
      connection.write("HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(size) + "\r\n\r\n");
    }
    std::string piece(256 * 1024, '\0');
    for (std::size_t sent = 0, index = 0; sent < size; sent += piece.size(), ++index) {
      piece.assign(std::min(piece.size(), size - sent), static_cast<char>('a' + index % 26));
      if (chunked) {
        char size_line[32];
        std::snprintf(size_line, sizeof size_line, "%zx\r\n", piece.size());
        connection.write(size_line);
      }
      connection.write(piece);
      if (chunked) connection.write("\r\n");
      co_await connection.drain();
    }
    if (chunked) connection.write("0\r\n\r\n");
    co_await connection.drain();
  } catch (const std::exception&) {
  }
  connection.close();
  try {
    co_await connection.wait_closed();
  } catch (const std::exception&) {
  }
}

// Whether `bytes` is what serve_large_body sends, checked at every piece's start and end.
template <class Bytes>
bool is_large_body(const Bytes& bytes, std::size_t size) {
  if (bytes.size() != size) return false;
  const std::size_t piece = 256 * 1024;
  for (std::size_t at = 0, index = 0; at < size; at += piece, ++index) {
    const auto expected = static_cast<unsigned char>('a' + index % 26);
    const std::size_t last = std::min(at + piece, size) - 1;
    if (static_cast<unsigned char>(bytes[at]) != expected || static_cast<unsigned char>(bytes[last]) != expected) {
      return false;
    }
  }
  return true;
}

#if defined(__linux__)
// The peak resident set size is reset to the current one by writing 5 to
// /proc/self/clear_refs (Linux 4.0); false where that is not allowed.
bool reset_peak_rss() {
  std::FILE* clear_refs = std::fopen("/proc/self/clear_refs", "w");
  if (clear_refs == nullptr) return false;
  const bool written = std::fputs("5", clear_refs) >= 0;
  return std::fclose(clear_refs) == 0 && written;
}

// A "VmRSS:" or "VmHWM:" line of /proc/self/status, in KiB.
std::size_t status_kib(const char* field) {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return 0;
  char line[256];
  std::size_t kib = 0;
  while (std::fgets(line, sizeof line, status) != nullptr) {
    if (std::strncmp(line, field, std::strlen(field)) == 0) {
      kib = static_cast<std::size_t>(std::strtoull(line + std::strlen(field), nullptr, 10));
      break;
    }
  }
  std::fclose(status);
  return kib;
}
#endif

}  // namespace

TEST_CASE("http: text() and body() of a body of limits.max_body take at most max_body and a few MiB, any framing",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    // The peak is measured on Linux without instrumentation; elsewhere the same reads
    // run on a smaller body, for their results.
    bool measure = false;
#if defined(__linux__)
    measure = !test_support::instrumented() && reset_peak_rss();
    if (!test_support::instrumented() && !measure) WARN("/proc/self/clear_refs is not writable: memory not measured");
#endif
    http::client_options options;
    options.timeout.read = 10s;
    if (!measure) options.limits.max_body = 4u << 20;
    const std::size_t size = options.limits.max_body;  // the largest body text() accepts
    auto handler = [size](cl::stream connection) { return serve_large_body(size, std::move(connection)); };
    cl::server server = co_await cl::start_server(handler, "127.0.0.1", 0);
    {
      http::client client(options);
      for (const char* path : {"/length", "/chunked", "/close"}) {
        for (const bool as_bytes : {false, true}) {
          const std::string url = base_url(server) + path;
          http::response r = co_await cl::timeout(10s, client.get(url));
          REQUIRE(r.status() == 200);
          std::size_t growth_kib = 0;
          bool read_well = false;
#if defined(__linux__)
          const bool measuring = measure && reset_peak_rss();
          const std::size_t resident_kib = status_kib("VmRSS:");
#endif
          if (as_bytes) {
            const std::vector<std::byte> bytes = co_await cl::timeout(60s, r.body());
            read_well = is_large_body(bytes, size);
          } else {
            const std::string text = co_await cl::timeout(60s, r.text());
            read_well = is_large_body(text, size);
          }
#if defined(__linux__)
          if (measuring) growth_kib = status_kib("VmHWM:") - resident_kib;
#endif
          UNSCOPED_INFO(path << (as_bytes ? " body()" : " text()"));
          CHECK(read_well);
          if (measure) {
            UNSCOPED_INFO(path << (as_bytes ? " body()" : " text()") << ": the peak resident size grew by "
                               << growth_kib / 1024 << " MiB reading " << size / (1024 * 1024) << " MiB");
            CHECK(growth_kib <= size / 1024 + 8 * 1024);
          }
        }
      }
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a response written one byte at a time parses the same", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    const std::string response =
        "HTTP/1.1 100 Continue\r\n\r\n"
        "HTTP/1.1 200 OK\r\n"
        "Set-Cookie: a=1\r\n"
        "Set-Cookie: b=2\r\n"
        "Transfer-Encoding: chunked\r\n"
        "\r\n"
        "5;x=y\r\nhello\r\n"
        "6\r\n world\r\n"
        "0\r\n"
        "X-Trailer: done\r\n"
        "\r\n";
    script s;
    s.act = [&response](cl::stream& connection, const seen_request&, int, int) -> cl::task<bool> {
      for (char byte : response) {
        connection.write(std::string_view(&byte, 1));
        co_await connection.drain();
        co_await cl::sleep(1ms);
      }
      co_return true;
    };
    cl::server server = co_await start(s);
    {
      http::client client;
      for (int i = 0; i < 2; ++i) {
        http::response r = co_await cl::timeout(20s, client.get(base_url(server) + "/dribble"));
        CHECK(r.status() == 200);
        CHECK(r.headers().get_all("set-cookie") == std::vector<std::string_view>{"a=1", "b=2"});
        CHECK_AWAIT_EQ(cl::timeout(20s, r.text()), "hello world");
        CHECK(r.trailers().get("X-Trailer") == std::optional<std::string_view>("done"));
      }
      CHECK(client.connections_opened() == 1);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

// =================================================================================
// Timeouts
// =================================================================================

TEST_CASE("http: a stalled server ends in timeout_error (read, total, while reading the body, waiting for a slot)",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = [](cl::stream& connection, const seen_request& request, int, int) -> cl::task<bool> {
      if (request.target == "/silent") {  // never answers; waits for the client to give up
        auto waiting = write_and_wait_for_close(connection, "");
        co_return co_await std::move(waiting);
      }
      if (request.target == "/stall-body") {
        auto waiting = write_and_wait_for_close(connection, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        co_return co_await std::move(waiting);
      }
      if (request.target == "/drip") {  // a byte every 50 ms: never a read timeout, but slow
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
        for (int i = 0; i < 1000 && !connection.is_closing(); ++i) {
          connection.write("x");
          co_await connection.drain();
          co_await cl::sleep(50ms);
        }
        co_return false;
      }
      connection.write(ok_response("hello"));
      co_await connection.drain();
      co_return true;
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      // read timeout, nothing arrives
      http::client_options options;
      options.timeout.read = 200ms;
      http::client client(options);
      cl::time_point start = cl::clock::now();
      std::exception_ptr error = co_await failure_of(cl::timeout(20s, fetch_text(client, base + "/silent")));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "read timeout"));
      CHECK(contains(what_of(error), "/silent"));
      CHECK(seconds_since(start) < 5.0);
      CHECK_AWAIT(eventually([&] { return client.active_connections() == 0; }, 5s));

      // read timeout in the middle of the body
      http::response r = co_await cl::timeout(10s, client.get(base + "/stall-body"));
      start = cl::clock::now();
      error = co_await failure_of(cl::timeout(20s, r.text()));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "read timeout"));
      CHECK(seconds_since(start) < 5.0);

      // the client is still usable, on a new connection
      const std::size_t opened = client.connections_opened();
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/ok")), "hello");
      CHECK(client.connections_opened() == opened + 1);
    }
    {
      // total timeout, nothing arrives
      http::client_options options;
      options.timeout.total = 300ms;
      http::client client(options);
      cl::time_point start = cl::clock::now();
      std::exception_ptr error = co_await failure_of(cl::timeout(20s, fetch_text(client, base + "/silent")));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "total timeout"));
      CHECK(seconds_since(start) < 5.0);

      // total timeout while a slow body keeps every single read under the read timeout
      http::request_options per_request;
      per_request.timeout = http::timeouts{};
      per_request.timeout->total = 400ms;
      per_request.timeout->read = 3s;
      start = cl::clock::now();
      error = co_await failure_of(cl::timeout(20s, fetch_text_with(client, base + "/drip", per_request)));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "total timeout"));
      CHECK(seconds_since(start) < 5.0);
      CHECK_AWAIT(eventually([&] { return client.active_connections() == 0; }, 5s));
    }
    {
      // connect timeout while waiting for a pool slot (limit = 1, the one connection is leased)
      http::client_options options;
      options.limit = 1;
      http::client client(options);
      // 10 of 100 body bytes, then nothing: the connection stays leased to `held`
      http::response held = co_await cl::timeout(10s, client.get(base + "/stall-body"));
      CHECK(client.active_connections() == 1);
      http::request_options per_request;
      per_request.timeout = http::timeouts{};
      per_request.timeout->connect = 200ms;
      const cl::time_point start = cl::clock::now();
      std::exception_ptr error = co_await failure_of(cl::timeout(20s, client.get(base + "/ok", per_request)));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "connect timeout"));
      CHECK(seconds_since(start) < 5.0);
      CHECK(client.connections_opened() == 1);
      held.close();  // the slot is free again
      CHECK(client.active_connections() == 0);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/ok")), "hello");
      CHECK(client.connections_opened() == 2);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

// =================================================================================
// Keep-alive and the pool
// =================================================================================

TEST_CASE("http: timeouts of duration::max() mean no deadline, not an overflow", "[http]") {
  // now + duration::max() used to overflow into a deadline in the past: the
  // request timed out at once.
  auto body = []() -> cl::task<void> {
    script s;
    s.act = reply([](const seen_request&, int, int) -> std::string {
      return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client_options options;
      options.timeout.total = cl::duration::max();
      options.timeout.connect = cl::duration::max();
      options.timeout.read = cl::duration::max();
      http::client client(options);
      std::string got = co_await cl::timeout(10s, fetch_text(client, base + "/"));
      CHECK(got == "ok");
      client.close();
    }
    server.close();
    co_await server.wait_closed();
  };
  cl::run(body());
}

TEST_CASE("http: a kept-alive connection the server closed while idle is not used: GET and POST go to a new one",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = [](cl::stream& connection, const seen_request&, int, int) -> cl::task<bool> {
      connection.write(ok_response("ok"));  // HTTP/1.1, no "Connection: close"...
      co_await connection.drain();
      co_return false;  // ...but closed all the same
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/1")), "ok");
      CHECK(client.idle_connections() == 1);  // pooled: nothing said it would close
      // The server has closed its end by now.
      CHECK_AWAIT(eventually([&] { return s.connections == 1 && s.open == 0; }, 5s));
      co_await cl::sleep(10ms);

      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/2")), "ok");
      CHECK(s.connections == 2);
      CHECK(client.connections_opened() == 2);
      CHECK(s.requests.size() == 2);

      CHECK_AWAIT(eventually([&] { return s.open == 0; }, 5s));
      co_await cl::sleep(10ms);
      // The closed idle connection is noticed before the request is sent, so even a
      // POST (never retried) succeeds on a new connection.
      CHECK_AWAIT_EQ(cl::timeout(10s, post_text(client, base + "/3", "data")), "ok");
      CHECK(s.connections == 3);
      CHECK(client.connections_opened() == 3);
      CHECK(s.requests.size() == 3);
      CHECK(client.active_connections() == 0);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE(
    "http: a reused connection the server closes without answering: GET is retried once on a new one, "
    "POST fails with disconnected_error",
    "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    // Answers the first request of each connection; reads the second and closes without a byte.
    s.act = [](cl::stream& connection, const seen_request& request, int, int index) -> cl::task<bool> {
      if (index >= 2) {
        if (request.target.rfind("/reset", 0) == 0) {  // an abortive close: the client reads ECONNRESET
          net_test::reset_on_close(connection.handle());
          connection.abort();
        }
        co_return false;
      }
      if (request.method == "HEAD") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n");
      } else {
        connection.write(ok_response("ok"));
      }
      co_await connection.drain();
      co_return true;
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/1")), "ok");
      CHECK(client.idle_connections() == 1);
      // Sent on the pooled connection, which the server then closes: retried on a new one.
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/2")), "ok");
      CHECK(s.connections == 2);
      CHECK(client.connections_opened() == 2);
      REQUIRE(s.requests.size() == 3);  // /1 and /2 on the first connection, /2 again on the second
      CHECK(s.requests[1].target == "/2");
      CHECK(s.requests[2].target == "/2");
      CHECK(client.idle_connections() == 1);

      // A POST in the same place is not retried.
      const std::exception_ptr error = co_await failure_of(cl::timeout(10s, post_text(client, base + "/3", "data")));
      CHECK_KIND(error, "disconnected_error");
      co_await cl::sleep(20ms);
      CHECK(s.connections == 2);  // no new connection
      CHECK(client.connections_opened() == 2);
      CHECK(s.requests.size() == 4);  // the server did read it once
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);

      // A HEAD (idempotent) is retried too.
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/4")), "ok");  // a new connection (3)
      {
        http::response r = co_await cl::timeout(10s, client.head(base + "/5"));
        CHECK(r.status() == 200);
      }
      CHECK(s.connections == 4);

      // The same with a reset instead of a clean close.
      CHECK(client.idle_connections() == 1);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/reset-get")), "ok");  // retried
      CHECK(s.connections == 5);
      const std::exception_ptr reset =
          co_await failure_of(cl::timeout(10s, post_text(client, base + "/reset-post", "data")));
      CHECK_KIND(reset, "disconnected_error");
      CHECK(s.connections == 5);
      CHECK(client.active_connections() == 0);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: 5 sequential GETs use one connection; limit_per_host = 1 serialises concurrent requests", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = [](cl::stream& connection, const seen_request& request, int, int) -> cl::task<bool> {
      co_await cl::sleep(20ms);  // long enough for concurrent requests to overlap
      connection.write(ok_response(request.target));
      co_await connection.drain();
      co_return true;
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      for (int i = 0; i < 5; ++i) {
        const std::string path = "/seq" + std::to_string(i);
        CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + path)), path);
        CHECK(client.active_connections() == 0);
        CHECK(client.idle_connections() == 1);
      }
      CHECK(client.connections_opened() == 1);
    }
    CHECK(s.connections == 1);
    const int after_sequential = s.connections;
    {
      http::client_options options;
      options.limit_per_host = 1;
      http::client client(options);
      auto a = cl::create_task(fetch_text, std::ref(client), base + "/c0");
      auto b = cl::create_task(fetch_text, std::ref(client), base + "/c1");
      auto c = cl::create_task(fetch_text, std::ref(client), base + "/c2");
      const bool leased = co_await eventually([&] { return client.active_connections() == 1; }, 5s);
      CHECK(leased);
      CHECK(client.active_connections() <= 1);
      // The two others wait for the host's one slot, and a task tree says so.
      int waiting_for_a_slot = 0;
      for (const cl::task_tree_node& node : cl::capture_task_tree()) {
        INFO(node.waiting_on);
        if (contains(node.waiting_on, "semaphore::acquire on http::client's connection slots for " + base + " (0 free, 2 waiting)")) {
          ++waiting_for_a_slot;
        }
      }
      CHECK(waiting_for_a_slot == 2);
      CHECK_AWAIT_EQ(cl::timeout(10s, a), "/c0");
      CHECK_AWAIT_EQ(cl::timeout(10s, b), "/c1");
      CHECK_AWAIT_EQ(cl::timeout(10s, c), "/c2");
      CHECK(client.connections_opened() == 1);
      CHECK(client.active_connections() == 0);
    }
    CHECK(s.connections == after_sequential + 1);
    CHECK(s.max_open == 1);
    CHECK(s.max_in_flight == 1);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a response dropped or cancelled with its body unread closes its connection", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    const std::string big = net_test::pattern(0, 200 * 1024);
    script s;
    s.act = [&big, &s](cl::stream& connection, const seen_request& request, int, int) -> cl::task<bool> {
      if (request.target == "/partial") {  // a head and 10 of 1000 body bytes, then nothing
        auto waiting = write_and_wait_for_close(connection, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789",
                                                &s.waits_ended);
        co_return co_await std::move(waiting);
      }
      if (request.target == "/big") {
        connection.write(ok_response(big));
        co_await connection.drain();
        co_return true;
      }
      connection.write(ok_response("small"));
      co_await connection.drain();
      co_return true;
    };
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      // cancelled while reading the body
      bool got_head = false;
      auto reader = [&got_head](http::client& c, std::string url) -> cl::task<std::string> {
        http::response r = co_await c.get(std::move(url));
        got_head = true;
        co_return co_await r.text();
      };
      auto reading = cl::create_task(reader, std::ref(client), base + "/partial");
      CHECK_AWAIT(eventually([&] { return got_head; }, 5s));
      co_await cl::sleep(10ms);  // parked in the body read
      CHECK_FALSE(reading.done());
      CHECK(client.active_connections() == 1);
      CHECK(reading.cancel());
      const std::exception_ptr error = co_await failure_of(cl::timeout(10s, reading));
      CHECK_KIND(error, "cancelled_error");
      CHECK_AWAIT(eventually([&] { return client.active_connections() == 0; }, 5s));
      CHECK(client.idle_connections() == 0);
      CHECK_AWAIT(eventually([&] { return s.waits_ended == 1; }, 5s));  // the server saw the client close
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/small")), "small");
      CHECK(s.connections == 2);  // a new connection
      CHECK(client.connections_opened() == 2);

      // dropped with most of a big body unread
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/big"));
        CHECK(r.status() == 200);
        CHECK(client.active_connections() == 1);
      }
      CHECK(client.active_connections() == 0);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/small")), "small");
      CHECK(s.connections == 3);
      CHECK(client.connections_opened() == 3);

      // close() on the response: same
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/big"));
        std::string first = co_await cl::timeout(10s, r.read_chunk(100));
        CHECK(first.size() <= 100);
        CHECK(first == big.substr(0, first.size()));
        const std::exception_ptr zero = co_await failure_of(r.read_chunk(0));
        CHECK_KIND(zero, "std::exception");   // std::invalid_argument
        http::response moved = std::move(r);  // the connection moves along
        CHECK(client.active_connections() == 1);
        std::string second = co_await cl::timeout(10s, moved.read_chunk(100));
        CHECK(second == big.substr(first.size(), second.size()));
        moved.close();
        CHECK(client.active_connections() == 0);
        const std::exception_ptr after_close = co_await failure_of(cl::timeout(10s, moved.text()));
        CHECK_KIND(after_close, "invalid_state_error");
        moved.close();  // idempotent
      }
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/small")), "small");
      CHECK(s.connections == 4);

      // read to the end, it is reused
      {
        http::response r = co_await cl::timeout(10s, client.get(base + "/big"));
        CHECK_AWAIT_EQ(cl::timeout(10s, r.text()), big);
      }
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/small")), "small");
      CHECK(s.connections == 4);
      CHECK(client.connections_opened() == 4);
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE(
    "http: an idle connection older than keep_alive_timeout is not reused; unsolicited bytes after a "
    "response keep its connection out of the pool",
    "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply([](const seen_request& request, int, int) -> std::string {
      if (request.target == "/extra") return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA BYTES";
      return ok_response("ok");
    });
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client_options options;
      options.keep_alive_timeout = 50ms;
      http::client client(options);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/a")), "ok");
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/b")), "ok");  // soon after: reused
      CHECK(client.connections_opened() == 1);
      co_await cl::sleep(150ms);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/c")), "ok");  // too old: a new one
      CHECK(client.connections_opened() == 2);
      CHECK(s.connections == 2);
    }
    {
      http::client client;
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/extra")), "ok");
      // "EXTRA BYTES" must never be read as the next response.
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/after-extra")), "ok");
      CHECK(client.connections_opened() == 2);
    }
    CHECK(s.connections == 4);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a response outlives its client and still reads its body", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    const std::string big = net_test::pattern(0, 300 * 1024);
    script s;
    s.act = reply(ok_response(big));
    cl::server server = co_await start(s);
    {
      std::optional<http::response> kept;
      {
        http::client client;
        kept.emplace(co_await cl::timeout(10s, client.get(base_url(server) + "/big")));
      }  // the client is gone; the response holds the pool's state
      CHECK_AWAIT_EQ(cl::timeout(10s, kept->text()), big);
      CHECK(kept->body_complete());
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE(
    "http: pool limits: a request cancelled while waiting for a slot gives nothing back twice; limit spans "
    "hosts",
    "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = [&s](cl::stream& connection, const seen_request& request, int, int) -> cl::task<bool> {
      if (request.target == "/stall-body") {
        auto waiting = write_and_wait_for_close(connection, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789",
                                                &s.waits_ended);
        co_return co_await std::move(waiting);
      }
      co_await cl::sleep(20ms);
      connection.write(ok_response(request.target));
      co_await connection.drain();
      co_return true;
    };
    cl::server first = co_await start(s);
    cl::server second = co_await start(s);  // another port: another "host" for the pool
    {
      http::client_options options;
      options.limit = 1;
      http::client client(options);
      {
        http::response held = co_await cl::timeout(10s, client.get(base_url(first) + "/stall-body"));
        CHECK(client.active_connections() == 1);
        auto waiting = cl::create_task(fetch_text, std::ref(client), base_url(first) + "/waits");
        co_await cl::sleep(20ms);
        CHECK_FALSE(waiting.done());  // no slot
        CHECK(waiting.cancel());
        const std::exception_ptr error = co_await failure_of(cl::timeout(10s, waiting));
        CHECK_KIND(error, "cancelled_error");
        CHECK(client.active_connections() == 1);
        CHECK(client.connections_opened() == 1);
      }  // `held` dropped: its connection closes, its slot frees
      CHECK(client.active_connections() == 0);
      // One slot, two hosts, four concurrent requests: one at a time, every one served.
      const int in_flight_before = s.max_in_flight;
      auto a = cl::create_task(fetch_text, std::ref(client), base_url(first) + "/a");
      auto b = cl::create_task(fetch_text, std::ref(client), base_url(second) + "/b");
      auto c = cl::create_task(fetch_text, std::ref(client), base_url(first) + "/c");
      auto d = cl::create_task(fetch_text, std::ref(client), base_url(second) + "/d");
      CHECK_AWAIT_EQ(cl::timeout(10s, a), "/a");
      CHECK_AWAIT_EQ(cl::timeout(10s, b), "/b");
      CHECK_AWAIT_EQ(cl::timeout(10s, c), "/c");
      CHECK_AWAIT_EQ(cl::timeout(10s, d), "/d");
      CHECK(s.max_in_flight == std::max(in_flight_before, 1));
      CHECK(client.active_connections() == 0);
      // Nothing leaked: the single slot is still usable, twice in a row.
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base_url(second) + "/e")), "/e");
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base_url(first) + "/f")), "/f");
    }
    CHECK_AWAIT(eventually([&] { return s.waits_ended == 1; }, 5s));
    co_await stop(first);
    co_await stop(second);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: a server that never reads a large POST body: the client's send ends in a read timeout", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    int accepted = 0;
    auto never_reads = [&accepted](cl::stream connection) -> cl::task<void> {
      ++accepted;
      co_await cl::sleep(20s);  // cancelled by close_clients() at the end
      connection.close();
    };
    cl::server server = co_await cl::start_server(never_reads, "127.0.0.1", 0);
    {
      http::client_options options;
      options.timeout.read = 200ms;
      http::client client(options);
      const std::string payload(32 * 1024 * 1024, 'p');  // more than the socket buffers hold
      const cl::time_point start = cl::clock::now();
      const std::exception_ptr error =
          co_await failure_of(cl::timeout(20s, post_text(client, base_url(server) + "/upload", payload)));
      CHECK_KIND(error, "timeout_error");
      CHECK(contains(what_of(error), "read timeout"));
      CHECK(seconds_since(start) < 5.0);
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
    }
    CHECK(accepted == 1);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

#if defined(CORO_LOOP_POSIX)
namespace {

// How the early-answering server ends the connection after its response, with the
// request body still arriving: every way makes Linux send RST (the body unread).
enum class early_ending { close_unread, reset, shut_write_then_close };

struct early_server {
  early_ending ending = early_ending::close_unread;
  int answered = 0;
};

// Reads only the request head, answers 501 at once and closes, as Python's
// http.server answers a POST it has no handler for (RFC 9112 section 9.6).
cl::task<void> answer_early(early_server& server, cl::stream connection) {
  bool read_head = true;
  try {
    (void)co_await connection.read_until("\r\n\r\n");
  } catch (const std::exception&) {
    read_head = false;
  }
  if (read_head) {
    try {
      connection.write(
          "HTTP/1.1 501 Not Implemented\r\nContent-Type: text/plain\r\nContent-Length: 15\r\n"
          "Connection: close\r\n\r\nnot implemented");
      co_await connection.drain();
      ++server.answered;
      if (server.ending == early_ending::shut_write_then_close) connection.write_eof();
      if (server.ending == early_ending::reset) net_test::reset_on_close(connection.handle());
    } catch (const std::exception&) {
    }
  }
  connection.close();
  try {
    co_await connection.wait_closed();
  } catch (const std::exception&) {
  }
}

}  // namespace

// POSIX only: on Windows an arriving RST discards what the socket had received.
TEST_CASE("http: a response sent while the request body is still being sent is returned, not lost to the reset",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    early_server state;
    auto handler = [&state](cl::stream connection) { return answer_early(state, std::move(connection)); };
    cl::server server = co_await cl::start_server(handler, "127.0.0.1", 0);
    {
      http::client_options options;
      options.timeout.read = 10s;
      http::client client(options);
      const std::string payload(5 * 1024 * 1024, 'u');  // far more than the socket buffers hold
      constexpr int tries = 100;
      int returned_501 = 0;
      std::string first_failure;
      const std::string url = base_url(server) + "/upload";
      const cl::time_point start = cl::clock::now();
      for (int i = 0; i < tries; ++i) {
        state.ending = static_cast<early_ending>(i % 3);
        std::exception_ptr error;
        int status = 0;
        std::string text;
        try {
          cl::task<http::response> posting = client.post(url, payload);
          http::response r = co_await cl::timeout(10s, std::move(posting));
          status = r.status();
          text = co_await cl::timeout(10s, r.text());
        } catch (...) {
          error = std::current_exception();
        }
        if (status == 501 && text == "not implemented") {
          ++returned_501;
        } else if (first_failure.empty()) {
          first_failure = "try " + std::to_string(i) + ": status " + std::to_string(status) + ", " + describe(error);
        }
      }
      INFO("first failure: " << first_failure);
      CHECK(returned_501 == tries);
      CHECK(state.answered == tries);
      CHECK(seconds_since(start) < 60.0);
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);  // a connection whose send failed is never pooled
    }
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}
#endif  // CORO_LOOP_POSIX

TEST_CASE("http: client.close() closes idle connections; a request after it throws invalid_state_error", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script s;
    s.act = reply(ok_response("ok"));
    cl::server server = co_await start(s);
    const std::string base = base_url(server);
    {
      http::client client;
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base + "/")), "ok");
      CHECK(client.idle_connections() == 1);
      client.close();
      CHECK(client.idle_connections() == 0);
      // The server sees the end of the connection.
      CHECK_AWAIT(eventually([&] { return s.ended_by_client == 1; }, 5s));
      const std::exception_ptr error = co_await failure_of(cl::timeout(10s, client.get(base + "/")));
      CHECK_KIND(error, "invalid_state_error");
      CHECK(client.connections_opened() == 1);
      client.close();  // idempotent
    }
    CHECK(s.connections == 1);
    co_await stop(server);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: idle connections past keep_alive_timeout are closed for every host, not only the one asked for",
          "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    script first_script;
    script second_script;
    first_script.act = reply(ok_response("one"));
    second_script.act = reply(ok_response("two"));
    cl::server first = co_await start(first_script);
    cl::server second = co_await start(second_script);
    {
      http::client_options options;
      options.keep_alive_timeout = 50ms;
      http::client client(options);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base_url(first) + "/a")), "one");
      CHECK(client.idle_connections() == 1);
      co_await cl::sleep(120ms);
      // A request to the second server sweeps the first one's expired connection.
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text(client, base_url(second) + "/b")), "two");
      CHECK(client.idle_connections() == 1);
      CHECK_AWAIT(eventually([&] { return first_script.ended_by_client == 1; }, 5s));
    }
    co_await stop(first);
    co_await stop(second);
    co_await expect_counts(before);
  };
  cl::run(body());
}

TEST_CASE("http: request_options::set_body sends bytes and text as they are", "[http]") {
  auto body = []() -> cl::task<void> {
    script s;
    s.act = reply(ok_response("ok"));
    cl::server server = co_await start(s);
    {
      http::client client;
      const std::byte bytes[] = {std::byte{0}, std::byte{0xff}, std::byte{'\r'}, std::byte{'\n'}};
      http::request_options binary;
      binary.set_body(bytes);
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text_with(client, base_url(server) + "/bytes", std::move(binary))), "ok");
      http::request_options text;
      text.set_body(std::string_view("plain"));
      CHECK_AWAIT_EQ(cl::timeout(10s, fetch_text_with(client, base_url(server) + "/text", std::move(text))), "ok");
    }
    REQUIRE(s.requests.size() == 2);
    CHECK(s.requests[0].body == std::string("\0\xff\r\n", 4));
    CHECK(s.requests[1].body == "plain");
    co_await stop(server);
  };
  cl::run(body());
}

TEST_CASE("http: connecting to a port with no listener is std::system_error", "[http]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    {
      http::client client;
      const std::string url = "http://127.0.0.1:" + std::to_string(net_test::unused_port()) + "/";
      const std::exception_ptr error = co_await failure_of(cl::timeout(10s, client.get(url)));
      CHECK_KIND(error, "system_error");
      CHECK(client.active_connections() == 0);
    }
    co_await expect_counts(before);
  };
  cl::run(body());
}

// =================================================================================
// response_parser on its own
// =================================================================================

TEST_CASE("http: response_parser gives the same result for a response split at every byte", "[http]") {
  const std::vector<std::string> responses = {
      "HTTP/1.1 100 Continue\r\n\r\n"
      "HTTP/1.1 200 OK\r\n"
      "Content-Type: text/plain\r\n"
      "Set-Cookie: a=1\r\n"
      "Set-Cookie: b=2\r\n"
      "Transfer-Encoding: chunked\r\n"
      "\r\n"
      "5;ext=1\r\nhello\r\n"
      "7;a=1;b=\"q\"\r\n, world\r\n"
      "0\r\n"
      "X-Trailer: yes\r\n"
      "\r\n",
      "HTTP/1.1 404 Not Found\r\nContent-Length: 12\r\nX-A: 1\r\n\r\nnot here!!!!",
      "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody until the end",
  };
  for (std::size_t which = 0; which < responses.size(); ++which) {
    const std::string& full = responses[which];
    const bool until_close = which == 2;
    const parsed reference = parse_whole(full, {}, "GET", until_close);
    CHECK(reference.done);
    if (which == 0) {
      CHECK(reference.interim_statuses == std::vector<int>{100});
      CHECK(reference.status == 200);
      CHECK(reference.body == "hello, world");
      CHECK(reference.trailers == std::vector<std::pair<std::string, std::string>>{{"X-Trailer", "yes"}});
      CHECK(reference.headers.size() == 4);
      CHECK(reference.keep_alive);
    } else if (which == 1) {
      CHECK(reference.status == 404);
      CHECK(reference.reason == "Not Found");
      CHECK(reference.body == "not here!!!!");
      CHECK(reference.keep_alive);
    } else {
      CHECK(reference.version_minor == 0);
      CHECK(reference.body == "body until the end");
      CHECK_FALSE(reference.keep_alive);
    }
    CHECK(reference.left_over == 0);
    int mismatches = 0;
    for (std::size_t cut = 0; cut <= full.size(); ++cut) {
      const parsed split = parse_in_pieces(full, {cut}, {}, "GET", until_close);
      if (!(split == reference)) {
        ++mismatches;
        UNSCOPED_INFO("response " << which << " split at " << cut);
        CHECK(split == reference);
      }
    }
    CHECK(mismatches == 0);
    // every byte on its own
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < full.size(); ++i) every.push_back(i);
    const parsed bytewise = parse_in_pieces(full, every, {}, "GET", until_close);
    CHECK(bytewise == reference);
  }
}

TEST_CASE("http: response_parser: framing, HEAD, keep_alive, pipelined responses on one parser", "[http]") {
  {
    http::response_parser parser;
    parser.start("GET");
    const std::string two =
        "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nde";
    std::string_view data = two;
    std::size_t used = parser.parse_head(data);
    REQUIRE(used > 0);
    CHECK(parser.body_framing() == http::response_parser::framing::length);
    CHECK(parser.content_length() == std::optional<std::uint64_t>(3));
    data.remove_prefix(used);
    std::string body;
    for (int i = 0; i < 10 && !parser.done(); ++i) {
      std::string_view payload;
      used = parser.parse_body(data, payload);
      body.append(payload);
      data.remove_prefix(used);
    }
    CHECK(parser.done());
    CHECK(body == "abc");
    CHECK(parser.keep_alive());
    parser.start("GET");
    used = parser.parse_head(data);
    REQUIRE(used > 0);
    data.remove_prefix(used);
    body.clear();
    for (int i = 0; i < 10 && !parser.done(); ++i) {
      std::string_view payload;
      used = parser.parse_body(data, payload);
      body.append(payload);
      data.remove_prefix(used);
    }
    CHECK(body == "de");
    CHECK(data.empty());
    CHECK(parser.done());
    CHECK_FALSE(parser.keep_alive());
  }
  {  // HEAD: no body whatever Content-Length says
    const std::string text = "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n";
    const parsed p = parse_whole(text, {}, "HEAD");
    CHECK(p.done);
    CHECK(p.body.empty());
    CHECK(p.keep_alive);
    http::response_parser parser;
    parser.start("HEAD");
    CHECK(parser.parse_head(text) == text.size());
    CHECK(parser.body_framing() == http::response_parser::framing::none);
    CHECK(parser.done());
  }
  {  // 204 and 304: no body
    for (const char* text : {"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                             "HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n"}) {
      const parsed p = parse_whole(text);
      CHECK(p.done);
      CHECK(p.body.empty());
      CHECK(p.keep_alive);
    }
  }
  {  // HTTP/1.0 with "Connection: keep-alive" may be reused; a list of equal lengths is one length;
     // the coding name is case-insensitive
    CHECK(parse_whole("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok").keep_alive);
    CHECK_FALSE(parse_whole("HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok").keep_alive);
    CHECK_FALSE(parse_whole("HTTP/1.1 200 OK\r\nConnection: Close\r\nContent-Length: 2\r\n\r\nok").keep_alive);
    CHECK(parse_whole("HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok").body == "ok");
    CHECK(parse_whole("HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n").body == "ok");
    // stray empty lines before a status line are skipped
    CHECK(parse_whole("\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").body == "ok");
  }
  {  // until close
    http::response_parser parser;
    parser.start("GET");
    const std::string text = "HTTP/1.1 200 OK\r\n\r\nabc";
    const std::size_t used = parser.parse_head(text);
    CHECK(used == text.size() - 3);
    CHECK(parser.body_framing() == http::response_parser::framing::until_close);
    CHECK_FALSE(parser.keep_alive());
    CHECK(parse_whole(text, {}, "GET", true).body == "abc");
  }
  {  // chunked
    http::response_parser parser;
    parser.start("GET");
    const std::string text = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    CHECK(parser.parse_head(text) > 0);
    CHECK(parser.body_framing() == http::response_parser::framing::chunked);
    CHECK_FALSE(parser.content_length().has_value());
    CHECK(parse_whole(text).body.empty());
  }
  {  // a length body cut short by the end of the connection
    const std::exception_ptr error =
        parse_failure("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", {}, "GET", true);
    CHECK_KIND(error, "protocol_error");
  }
  {  // a chunked body cut short by the end of the connection
    const std::exception_ptr error =
        parse_failure("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel", {}, "GET", true);
    CHECK_KIND(error, "protocol_error");
  }
}

TEST_CASE("http: response_parser accepts LF-only lines, obs-fold, an empty reason", "[http]") {
  {
    const parsed p = parse_whole("HTTP/1.1 200 OK\nContent-Length: 2\nX-A: b\n\nok");
    CHECK(p.status == 200);
    CHECK(p.reason == "OK");
    CHECK(p.body == "ok");
    CHECK(p.headers == std::vector<std::pair<std::string, std::string>>{{"Content-Length", "2"}, {"X-A", "b"}});
  }
  {  // mixed line endings
    const parsed p = parse_whole("HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 2\r\n\nok");
    CHECK(p.body == "ok");
    CHECK(p.headers.size() == 2);
  }
  {  // LF-only chunked
    const parsed p = parse_whole("HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n0\nX-T: 1\n\n");
    CHECK(p.body == "abc");
    CHECK(p.trailers == std::vector<std::pair<std::string, std::string>>{{"X-T", "1"}});
  }
  {  // obs-fold: replaced by spaces
    const parsed p =
        parse_whole("HTTP/1.1 200 OK\r\nX-Folded: first\r\n second\r\n\tthird\r\nContent-Length: 0\r\n\r\n");
    REQUIRE(p.headers.size() == 2);
    CHECK(p.headers[0].first == "X-Folded");
    const std::string& value = p.headers[0].second;
    CHECK(value.rfind("first", 0) == 0);
    CHECK(value.size() >= 5 + 1 + 6 + 1 + 5);
    CHECK(value.substr(value.size() - 5) == "third");
    CHECK(contains(value, "second"));
    CHECK(value.find_first_of("\r\n") == std::string::npos);
    CHECK(p.headers[1].first == "Content-Length");
  }
  {  // an empty reason phrase
    const parsed p = parse_whole("HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n");
    CHECK(p.status == 200);
    CHECK(p.reason.empty());
  }
  {  // a reason phrase with spaces and a header value with inner spaces
    const parsed p = parse_whole("HTTP/1.1 418 I'm a teapot\r\nX-V:  a  b \r\nContent-Length: 0\r\n\r\n");
    CHECK(p.status == 418);
    CHECK(p.reason == "I'm a teapot");
    CHECK(p.headers[0].second == "a  b");
  }
}

TEST_CASE("http: response_parser rejects bad syntax with protocol_error", "[http]") {
  const std::vector<std::string> bad = {
      "HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",               // whitespace before the colon
      "HTTP/1.1 200 OK\r\nContent-Length\t: 2\r\n\r\nok",              // a tab too
      "HTTP/1.1 200 OK\r\nX-Bad: a\0b\r\nContent-Length: 0\r\n\r\n"s,  // NUL in a value
      "HTTP/1.1 200 OK\r\nX-B\0ad: a\r\nContent-Length: 0\r\n\r\n"s,   // NUL in a name
      "HTTP/1.1 200 OK\r\nX Bad: a\r\nContent-Length: 0\r\n\r\n",      // space in a name
      "HTTP/1.1 200 OK\r\n: empty name\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nno colon here\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\n folded first line\r\nContent-Length: 0\r\n\r\n",  // obs-fold with nothing to fold into
      "HTTP/1.1 20 OK\r\n\r\n",
      "HTTP/1.1 2000 OK\r\n\r\n",
      "HTTP/1.1 abc OK\r\n\r\n",
      "HTTP/1.1 -200 OK\r\n\r\n",
      "HTTP/2 200 OK\r\n\r\n",
      "HTTP/1.1\r\n\r\n",
      "FOO/1.1 200 OK\r\n\r\n",
      "hello world\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
      "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999999\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n",
  };
  for (const std::string& text : bad) {
    // Whole, and byte by byte: the error is the same however the bytes arrive. No end of
    // input is signalled: a parser that accepted the bad part would ask for more bytes
    // (parse_in_pieces then throws a plain std::runtime_error) instead of failing for
    // another reason.
    const std::exception_ptr whole = parse_failure(text, {}, "GET", false);
    UNSCOPED_INFO("response: " << text);
    CHECK_KIND(whole, "protocol_error");
    std::vector<std::size_t> every;
    for (std::size_t i = 1; i < text.size(); ++i) every.push_back(i);
    const std::exception_ptr bytewise = failure_of_call([&] { (void)parse_in_pieces(text, every, {}, "GET", false); });
    UNSCOPED_INFO("response, byte by byte: " << text);
    CHECK_KIND(bytewise, "protocol_error");
  }
}

TEST_CASE("http: response_parser limits: status line, header bytes, header count, trailers; never waits past them",
          "[http]") {
  {  // endless interim responses, endless empty lines, an endless chunk size line: errors, not waits
    std::string interims;
    for (int i = 0; i < 100; ++i) interims += "HTTP/1.1 100 Continue\r\n\r\n";
    CHECK_KIND(parse_failure(interims + "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), "protocol_error");
    std::string empty_lines;
    for (int i = 0; i < 10'000; ++i) empty_lines += "\r\n";
    CHECK_KIND(head_failure(empty_lines), "protocol_error");
    const std::string endless_extension =
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;" + std::string(100'000, 'x');
    CHECK_KIND(parse_failure(endless_extension, {}, "GET", false), "protocol_error");
  }
  http::limits small;
  small.max_status_line = 32;
  small.max_header_bytes = 256;
  small.max_header_count = 3;
  // within every limit
  const parsed fine = parse_whole("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nContent-Length: 0\r\n\r\n", small);
  CHECK(fine.status == 200);
  CHECK(fine.headers.size() == 3);
  // a long status line, complete or not
  const std::string long_status = "HTTP/1.1 200 " + std::string(100, 'x');
  CHECK_KIND(parse_failure(long_status + "\r\nContent-Length: 0\r\n\r\n", small), "protocol_error");
  CHECK_KIND(head_failure(long_status, small), "protocol_error");  // no line end yet: still an error
  CHECK_KIND(head_failure(std::string(1000, 'H'), small), "protocol_error");
  // too many fields
  CHECK_KIND(parse_failure("HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\nC: 3\r\nContent-Length: 0\r\n\r\n", small),
             "protocol_error");
  // too many header bytes, complete or not
  const std::string big_head = "HTTP/1.1 200 OK\r\nX-Big: " + std::string(1000, 'a');
  CHECK_KIND(parse_failure(big_head + "\r\nContent-Length: 0\r\n\r\n", small), "protocol_error");
  CHECK_KIND(head_failure(big_head, small), "protocol_error");
  // many small lines, never a blank one
  std::string endless = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 200; ++i) endless += "X: y\r\n";
  http::limits roomy_count = small;
  roomy_count.max_header_count = 100000;
  CHECK_KIND(head_failure(endless, roomy_count), "protocol_error");
  // trailers count against the header limits
  const std::string big_trailer =
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: " + std::string(1000, 't') + "\r\n\r\n";
  CHECK_KIND(parse_failure(big_trailer, small), "protocol_error");
  CHECK(parse_whole(big_trailer).trailers.size() == 1);  // fine with the defaults
  // the defaults take a large but legal head
  std::string large = "HTTP/1.1 200 OK\r\n";
  for (int i = 0; i < 90; ++i) large += "X-" + std::to_string(i) + ": " + std::string(500, 'v') + "\r\n";
  large += "Content-Length: 0\r\n\r\n";
  CHECK(parse_whole(large).headers.size() == 91);
}
