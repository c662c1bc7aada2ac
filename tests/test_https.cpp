// tests/test_https.cpp - the HTTP client over TLS [https]: https:// URLs against nginx with
// TLS (tests/nginx_fixture.hpp, a server block of its own on a second port) and against a
// server of our own that speaks HTTP/1.1 over TLS or in plain on one port, with the
// certificates the openssl command makes at test time (tests/tls_fixture.hpp: a CA, a
// server certificate for localhost and 127.0.0.1, another CA nobody trusts).
//
// What is covered: verified GETs by name and by IP address, 1 KiB, 5 MiB and chunked bodies
// byte-exact; 1,000 keep-alive GETs on 4 connections (nginx's access log counts them); an
// untrusted certificate (tls_certificate_error naming the host) and verification off; a
// client certificate; the
// client's default context (the system's trust store, ALPN http/1.1) and a server choosing
// another ALPN protocol; a close-delimited body cut without close_notify (protocol_error,
// never a whole body); the connect timeout bounding a stalled handshake; cancelling in the
// handshake, before the head and in the body (the connection closed, the pool sound, every
// resource back); a pooled TLS connection the server closed (with close_notify or without)
// retried once for GET, not for POST, and nginx's keepalive_timeout; redirects between
// http:// and https:// dropping Authorization and Cookie, the scheme alone counting as a
// change of origin; one pool per scheme, host and port.
//
// Every request runs under the client's timeouts and every case under cl::timeout; every
// loop is bounded. No co_await inside CHECK (GCC 12 evaluates it twice), and no aggregate
// or lambda written inside a co_await expression (GCC 12 destroys it twice): named locals.
#define CORO_LOOP_OPENSSL
#include "catch.hpp"
#include "coro_loop.hpp"

#include "net_helpers.hpp"
#include "nginx_fixture.hpp"
#include "test_support.hpp"
#include "tls_fixture.hpp"

#include <stdlib.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cl = coro_loop;
namespace http = coro_loop::http;
using namespace std::chrono_literals;
using net_test::eventually;
using test_support::contains;
using test_support::difference;
using test_support::resource_counts;
using tls_test::file;
using tls_test::trusting_client;

namespace {

cl::tls_context test_server_context() { return cl::tls_context::server(file("server.pem"), file("server.key")); }

nginx_test::nginx::tls_files nginx_tls() { return {file("server.pem"), file("server.key"), file("ca.pem")}; }

// The options of every client here: nothing may wait unbounded. An empty `tls` is the
// client's default context.
http::client_options bounded(cl::tls_context tls) {
  http::client_options options;
  options.timeout.total = 20s;
  options.timeout.connect = 10s;
  options.timeout.read = 10s;
  options.tls = std::move(tls);
  return options;
}

// A response read to its end.
struct fetched {
  int status = 0;
  std::string body;
  std::string url;
  std::vector<std::string> history;
};

cl::task<fetched> fetch(http::client& client, std::string method, std::string url,
                        http::request_options options = {}) {
  http::response response = co_await client.request(std::move(method), std::move(url), options);
  fetched result;
  result.status = response.status();
  result.url = response.url();
  result.history = response.history();
  result.body = co_await response.text();
  co_return result;
}
cl::task<fetched> get(http::client& client, std::string url) { return fetch(client, "GET", std::move(url)); }

// What awaiting `work` throws as Error (its what()), or nullopt when it does not throw.
template <class Error, class Awaitable>
cl::task<std::optional<std::string>> maybe_error_of(Awaitable work) {
  try {
    co_await std::move(work);
  } catch (const Error& error) {
    co_return std::string(error.what());
  }
  co_return std::nullopt;
}

// Once `reached` holds (within 10 s), cancels `running` and waits for it; true when the
// condition was reached and the request ended in cancelled_error.
template <class Condition>
cl::task<bool> cancel_once(cl::task_handle<fetched> running, Condition reached) {
  const bool in_place = co_await eventually(reached, 10s);
  running.cancel();
  bool cancelled = false;
  try {
    (void)co_await running;
  } catch (const cl::cancelled_error&) {
    cancelled = true;
  } catch (const std::exception& error) {
    UNSCOPED_INFO("the request ended in " << error.what());
  }
  co_return in_place && cancelled;
}

// --- a server of our own: HTTP/1.1 over TLS or in plain, on one port ----------------------

struct served {
  std::size_t connections = 0;      // accepted
  std::size_t tls_connections = 0;  // of which spoke TLS
  std::size_t open = 0;             // handlers running: a connection the client closed ends its handler
  std::size_t clean_ends = 0;       // connections the client ended between requests, over TLS with close_notify
  std::size_t ragged_ends = 0;      // ... without it (a truncation), or with a reset
  std::vector<std::string> requests;  // "https GET /path"
};

// The value of field `name` (lower case) in a request head, or "".
std::string field_of(const std::string& head, const std::string& name) {
  std::string lower = head;
  for (char& c : lower) c = http::header_list::to_lower(c);
  const std::size_t at = lower.find("\r\n" + name + ":");
  if (at == std::string::npos) return {};
  const std::size_t start = head.find_first_not_of(' ', at + name.size() + 3);
  return head.substr(start, head.find("\r\n", start) - start);
}

std::string ok_response(const std::string& body, const std::string& more_fields = "") {
  return "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" + more_fields + "\r\n" + body;
}

// Waits (at most 5 s) until everything written was handed to the OS.
cl::task<void> sent(cl::stream& connection) {
  for (int i = 0; i < 5000 && connection.write_buffer_size() > 0; ++i) co_await cl::sleep(1ms);
}

// Reads until the client goes (its end, a reset, a truncation), at most 30 s.
cl::task<void> until_client_goes(cl::stream& connection) {
  try {
    auto reading = connection.read();
    (void)co_await cl::timeout(30s, std::move(reading));
  } catch (const std::exception&) {
  }
}

// One connection: a first byte 0x16 (a TLS handshake record) starts TLS, anything else is
// plain HTTP. Paths:
//   /ok                   "ok https" or "ok http"
//   /alpn                 the ALPN protocol chosen ("" for none)
//   /credentials          "auth=<Authorization> cookie=<Cookie>"
//   /to_https/credentials, /to_http/credentials   302 to /credentials on this port, that scheme
//   /until-close-notify   a body delimited by the close: "partial body", then close_notify
//   /until-close-cut      the same cut without close_notify (abort)
//   /length-cut           Content-Length: 100, 10 bytes, then cut without close_notify
//   /stall-head           no answer; waits for the client to go
//   /stall-body           Content-Length: 1000000, 1,000 bytes; waits for the client to go
//   /stale-notify, /stale-cut   "ok" as a connection's first request; on a later one the
//                         connection is closed without an answer (close_notify, or none)
cl::task<void> serve(cl::stream connection, served* seen, cl::tls_context context) {
  ++seen->connections;
  ++seen->open;
  struct open_count {
    served* seen;
    ~open_count() { --seen->open; }
  } counted{seen};
  try {
    const std::size_t first = co_await connection.fill();
    if (first == 0) co_return;
    const bool tls = connection.buffered().front() == '\x16';
    if (tls) {
      cl::tls_options options(context);
      co_await connection.start_tls(std::move(options));
      ++seen->tls_connections;
    }
    const std::string scheme = tls ? "https" : "http";
    const std::string here = "127.0.0.1:" + std::to_string(connection.local_address().port());
    for (int index = 0; index < 10000; ++index) {
      std::string head;
      try {
        head = co_await connection.read_until("\r\n\r\n");
      } catch (const cl::incomplete_read_error&) {
        ++seen->clean_ends;
        break;
      } catch (const std::exception&) {
        ++seen->ragged_ends;
        break;
      }
      const std::size_t method_end = head.find(' ');
      const std::string method = head.substr(0, method_end);
      const std::string path = head.substr(method_end + 1, head.find(' ', method_end + 1) - method_end - 1);
      const std::string length = field_of(head, "content-length");
      if (!length.empty() && length != "0") (void)co_await connection.read_exactly(std::stoul(length));
      seen->requests.push_back(scheme + " " + method + " " + path);
      if (path.starts_with("/stale-") && index > 0) {
        if (path == "/stale-cut") {
          connection.abort();
        } else {
          connection.close();
        }
        co_return;
      }
      if (path == "/alpn") {
        connection.write(ok_response(std::string(connection.selected_alpn_protocol())));
      } else if (path == "/credentials") {
        const std::string credentials =
            "auth=" + field_of(head, "authorization") + " cookie=" + field_of(head, "cookie");
        connection.write(ok_response(credentials));
      } else if (path == "/to_https/credentials" || path == "/to_http/credentials") {
        const std::string target = path == "/to_https/credentials" ? "https" : "http";
        connection.write("HTTP/1.1 302 Found\r\nLocation: " + target + "://" + here +
                         "/credentials\r\nContent-Length: 0\r\n\r\n");
      } else if (path == "/until-close-notify" || path == "/until-close-cut") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\npartial body");
        co_await sent(connection);
        if (path == "/until-close-cut") {
          connection.abort();
        } else {
          connection.close();
        }
        co_return;
      } else if (path == "/length-cut") {
        connection.write("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
        co_await sent(connection);
        connection.abort();
        co_return;
      } else if (path == "/stall-head" || path == "/stall-body") {
        if (path == "/stall-body") connection.write("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n" +
                                                    std::string(1000, 'x'));
        co_await until_client_goes(connection);
        co_return;
      } else {
        connection.write(ok_response("ok " + scheme));
      }
      co_await connection.drain();
    }
  } catch (const std::exception&) {
    // the client went away mid-exchange
  }
  connection.close();
}

// A server that accepts and reads, and never answers: a TLS client's handshake stalls.
cl::task<void> never_answer(cl::stream connection, served* seen) {
  ++seen->connections;
  ++seen->open;
  co_await until_client_goes(connection);
  --seen->open;
}

cl::task<cl::server> start_ours(served& seen, cl::tls_context context) {
  auto handler = [seen = &seen, context](cl::stream connection) { return serve(std::move(connection), seen, context); };
  co_return co_await cl::start_server(handler, "127.0.0.1", 0);
}
cl::task<cl::server> start_stalling(served& seen) {
  auto handler = [seen = &seen](cl::stream connection) { return never_answer(std::move(connection), seen); };
  co_return co_await cl::start_server(handler, "127.0.0.1", 0);
}
cl::task<void> stop(cl::server& server) {
  server.close();
  server.close_clients();
  auto closing = server.wait_closed();
  co_await cl::timeout(10s, std::move(closing));
}

std::string url_of(const char* scheme, const cl::server& server, const std::string& path,
                   const char* host = "127.0.0.1") {
  return std::string(scheme) + "://" + host + ":" + std::to_string(server.port()) + path;
}

}  // namespace

TEST_CASE("https: url::parse takes https:// with port 443 by default; resolve_url keeps the scheme", "[https]") {
  const http::url plain = http::url::parse("https://Example.com/a?b");
  CHECK(plain.scheme == "https");
  CHECK(plain.host == "example.com");
  CHECK(plain.port == 443);
  CHECK(plain.host_header() == "example.com");
  CHECK(plain.to_string() == "https://example.com/a?b");
  const http::url other_port = http::url::parse("HTTPS://[::1]:8443/");
  CHECK(other_port.scheme == "https");
  CHECK(other_port.port == 8443);
  CHECK(other_port.host_header() == "[::1]:8443");
  // 443 is the default of https only, 80 of http only.
  CHECK(http::url::parse("http://example.com:443/").host_header() == "example.com:443");
  CHECK(http::url::parse("https://example.com:80/").host_header() == "example.com:80");
  CHECK(http::resolve_url(plain, "//other.example/x").to_string() == "https://other.example/x");
  CHECK(http::resolve_url(plain, "/y").to_string() == "https://example.com/y");
  CHECK(http::resolve_url(plain, "http://example.com/z").to_string() == "http://example.com/z");
  try {
    (void)http::url::parse("ftp://example.com/");
    FAIL("ftp:// parsed");
  } catch (const http::url_error& error) {
    CHECK(contains(error.what(), "only http:// and https:// are"));
  }
}

TEST_CASE("https nginx: verified GETs by name and by IP address; 1 KiB, 5 MiB and chunked bodies byte-exact",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  nginx_test::nginx server(nginx_tls());
  auto body = [&]() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    {
      http::client client(bounded(trusting_client()));
      for (const char* host : {"127.0.0.1", "localhost"}) {
        INFO("host " << host);
        const std::string url = "https://" + std::string(host) + ":" + std::to_string(server.tls_port()) + "/1k";
        const fetched small = co_await get(client, url);
        CHECK(small.status == 200);
        CHECK(small.url == url);
        CHECK(difference(small.body, nginx_test::nginx::content(1024)) == "");
      }
      // Two hosts, two pools: the name and the address are different origins.
      CHECK(client.connections_opened() == 2);
      CHECK(client.idle_connections() == 2);

      const fetched large = co_await get(client, server.https_url("/5m"));
      CHECK(large.status == 200);
      CHECK(difference(large.body, nginx_test::nginx::content(std::size_t{5} << 20)) == "");

      const std::string chunked_url = server.https_url("/c/1m");
      http::response chunked = co_await client.get(chunked_url);
      CHECK(chunked.headers().get("Transfer-Encoding") == std::optional<std::string_view>("chunked"));
      const std::string chunked_body = co_await chunked.text();
      CHECK(difference(chunked_body, nginx_test::nginx::content(std::size_t{1} << 20)) == "");
      CHECK(chunked.trailers().get("X-Trailer") == std::optional<std::string_view>("done"));

      // read_into a caller's buffer: over TLS the stream decrypts through its own buffer.
      http::response streamed = co_await client.get(server.https_url("/5m"));
      std::string buffer(256 * 1024, '\0');
      std::string streamed_body;
      for (int reads = 0; reads < 10'000; ++reads) {
        const std::size_t got = co_await streamed.read_into(buffer);
        if (got == 0) break;
        streamed_body.append(buffer, 0, got);
      }
      CHECK(difference(streamed_body, nginx_test::nginx::content(std::size_t{5} << 20)) == "");
      CHECK(streamed.body_complete());
      // Everything after the first request to 127.0.0.1 went over that one connection.
      CHECK(client.connections_opened() == 2);
      CHECK(server.tls_connections("/5m") == 1);
      CHECK(client.active_connections() == 0);
    }
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(60s, body()));
}

TEST_CASE("https nginx: 1,000 keep-alive GETs from 4 tasks use 4 connections, by nginx's access log", "[https]") {
  if (!tls_test::tools_present("https")) return;
  nginx_test::nginx server(nginx_tls());
  auto body = [&]() -> cl::task<void> {
    constexpr int requests = 1000;
    constexpr int workers = 4;
    http::client_options options = bounded(trusting_client());
    options.limit_per_host = workers;
    http::client client(std::move(options));
    const std::string url = server.https_url("/1k");
    const std::string expected = nginx_test::nginx::content(1024);
    int started = 0;
    int good = 0;
    auto worker = [&]() -> cl::task<void> {
      while (started < requests) {
        ++started;
        http::response response = co_await client.get(url);
        const std::string text = co_await response.text();
        if (response.status() == 200 && text == expected) ++good;
      }
    };
    std::vector<cl::task<void>> running;
    for (int i = 0; i < workers; ++i) running.push_back(worker());
    auto all = cl::gather(std::move(running));
    co_await cl::timeout(60s, std::move(all));
    CHECK(good == requests);
    CHECK(client.connections_opened() <= 8);
    CHECK(client.idle_connections() == client.connections_opened());
    // From the server's side: the requests it logged, and the connections that carried them
    // (nginx logs a request once its response is sent: the last line may come a little later).
    const auto all_logged = [&] { return server.tls_requests("/1k") == requests; };
    const bool logged = co_await eventually(all_logged, 5s);
    CHECK(logged);
    CHECK(server.tls_requests("/1k") == requests);
    CHECK(server.tls_connections("/1k") == client.connections_opened());
    CHECK(server.tls_connections("/1k") <= 8);
  };
  cl::run(cl::timeout(90s, body()));
}

TEST_CASE("https nginx: an untrusted CA is tls_certificate_error naming the host; verification off accepts it",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  nginx_test::nginx server(nginx_tls());
  auto body = [&]() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    const std::string port = std::to_string(server.tls_port());
    {
      cl::tls_context other_ca = cl::tls_context::client();
      other_ca.load_verify_locations(file("other_ca.pem"));
      http::client client(bounded(other_ca));
      const std::string url = "https://localhost:" + port + "/1k";
      const std::optional<std::string> what = co_await maybe_error_of<cl::tls_certificate_error>(get(client, url));
      REQUIRE(what.has_value());
      CHECK(*what == "tls handshake with localhost (127.0.0.1:" + port +
                         "): certificate verify failed: unable to get local issuer certificate");
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
      // Again: nothing half-made was pooled.
      const std::optional<std::string> again = co_await maybe_error_of<cl::tls_certificate_error>(get(client, url));
      CHECK(again.has_value());
      CHECK(client.connections_opened() == 0);
    }
    {
      cl::tls_context anything = cl::tls_context::client();
      anything.set_verify(false);
      http::client client(bounded(anything));
      const fetched accepted = co_await get(client, "https://localhost:" + port + "/1k");
      CHECK(accepted.status == 200);
      CHECK(difference(accepted.body, nginx_test::nginx::content(1024)) == "");
    }
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https nginx: a client certificate given in client_options::tls reaches the server", "[https]") {
  if (!tls_test::tools_present("https")) return;
  nginx_test::nginx server(nginx_tls());
  auto body = [&]() -> cl::task<void> {
    const std::string url = server.https_url("/client_cert");
    {
      cl::tls_context with_certificate = trusting_client();
      with_certificate.load_cert_chain(file("client.pem"), file("client.key"));
      http::client client(bounded(with_certificate));
      const fetched presented = co_await get(client, url);
      CHECK(presented.status == 200);
      CHECK(presented.body == "client=CN=coro_loop test client");
    }
    {
      http::client client(bounded(trusting_client()));
      const fetched without = co_await get(client, url);
      CHECK(without.status == 403);
    }
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https: the default context trusts the system's store and offers ALPN http/1.1; another ALPN choice "
          "is protocol_error",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  // OpenSSL's default trust store is SSL_CERT_FILE when set: the test CA stands in for the system's.
  // SSL_CERT_FILE is how a program points OpenSSL's default trust store at another file.
  const test_support::scoped_env trust_store("SSL_CERT_FILE", file("ca.pem"));
  auto body = []() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served seen;
    cl::tls_context context = test_server_context();
    context.set_alpn_protocols({"h2", "http/1.1"});
    cl::server ours = co_await start_ours(seen, context);
    {
      http::client client(bounded(cl::tls_context()));
      const fetched by_address = co_await get(client, url_of("https", ours, "/alpn"));
      CHECK(by_address.status == 200);
      CHECK(by_address.body == "http/1.1");  // the server prefers h2, which the client does not offer
      const fetched by_name = co_await get(client, url_of("https", ours, "/alpn", "localhost"));
      CHECK(by_name.body == "http/1.1");
    }
    {
      cl::tls_context offering_h2 = trusting_client();
      offering_h2.set_alpn_protocols({"h2"});
      http::client client(bounded(offering_h2));
      const std::optional<std::string> what =
          co_await maybe_error_of<http::protocol_error>(get(client, url_of("https", ours, "/alpn")));
      REQUIRE(what.has_value());
      CHECK(contains(*what, "the server chose \"h2\" through ALPN, and this client speaks HTTP/1.1 only"));
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
    }
    co_await stop(ours);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https: a close-delimited body cut without close_notify is protocol_error, never a whole body",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  auto body = []() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served seen;
    cl::server ours = co_await start_ours(seen, test_server_context());
    {
      http::client client(bounded(trusting_client()));
      // With close_notify the end of the connection is the end of the body.
      const fetched whole = co_await get(client, url_of("https", ours, "/until-close-notify"));
      CHECK(whole.status == 200);
      CHECK(whole.body == "partial body");

      const std::string cut_url = url_of("https", ours, "/until-close-cut");
      const std::optional<std::string> cut = co_await maybe_error_of<http::protocol_error>(get(client, cut_url));
      REQUIRE(cut.has_value());
      CHECK(contains(*cut, "http: the body of " + cut_url +
                               " ended without TLS close_notify after 12 bytes: it may be truncated"));
      // Streamed: the bytes that came are given, the end is still an error.
      {
        http::response response = co_await client.get(cut_url);
        const std::string piece = co_await response.read_chunk();
        CHECK(piece == "partial body");
        const std::optional<std::string> then = co_await maybe_error_of<http::protocol_error>(response.read_chunk());
        CHECK(then.has_value());
        CHECK_FALSE(response.body_complete());
      }
      const std::optional<std::string> short_length =
          co_await maybe_error_of<http::protocol_error>(get(client, url_of("https", ours, "/length-cut")));
      REQUIRE(short_length.has_value());
      CHECK(contains(*short_length, "connection closed after 10 of 100 body bytes"));
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
    }
    co_await stop(ours);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https: the connect timeout bounds the TCP connect and the TLS handshake together", "[https]") {
  if (!tls_test::tools_present("https")) return;
  auto body = []() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served seen;
    cl::server stalling = co_await start_stalling(seen);
    const std::string url = url_of("https", stalling, "/");
    {
      http::client_options options = bounded(trusting_client());
      options.timeout.connect = 300ms;
      http::client client(std::move(options));
      const cl::time_point start = cl::clock::now();
      const std::optional<std::string> what = co_await maybe_error_of<cl::timeout_error>(get(client, url));
      const cl::duration took = cl::clock::now() - start;
      REQUIRE(what.has_value());
      CHECK(*what == "http: connect timeout (300 ms) waiting for " + url);
      CHECK(took >= 250ms);
      CHECK(took < 5s);
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
    }
    {  // Without one, the total timeout bounds the handshake.
      http::client_options options = bounded(trusting_client());
      options.timeout.connect = std::nullopt;
      options.timeout.total = 400ms;
      http::client client(std::move(options));
      const std::optional<std::string> what = co_await maybe_error_of<cl::timeout_error>(get(client, url));
      REQUIRE(what.has_value());
      CHECK(*what == "http: total timeout (400 ms) waiting for " + url);
    }
    // Each stalled connection was closed by the client: the server saw both go.
    CHECK(seen.connections == 2);
    const auto none_open = [&] { return seen.open == 0; };
    const bool all_gone = co_await eventually(none_open, 10s);
    CHECK(all_gone);
    co_await stop(stalling);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https: cancelling in the handshake, before the head or in the body closes that connection; the pool "
          "stays sound",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  auto body = []() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served stalled;
    cl::server stalling = co_await start_stalling(stalled);
    served seen;
    cl::server ours = co_await start_ours(seen, test_server_context());
    {
      http::client client(bounded(trusting_client()));
      // A pooled connection first: the request cancelled before its head reuses it.
      const fetched first = co_await get(client, url_of("https", ours, "/ok"));
      CHECK(first.body == "ok https");
      CHECK(client.idle_connections() == 1);

      // 1. In the handshake: the server accepted, and never answers the ClientHello.
      auto handshaking = get(client, url_of("https", stalling, "/"));
      const auto accepted = [&] { return stalled.connections == 1; };
      auto cancelling_handshake = cancel_once(cl::create_task(std::move(handshaking)), accepted);
      const bool cancelled_handshake = co_await std::move(cancelling_handshake);
      CHECK(cancelled_handshake);
      CHECK(client.active_connections() == 0);
      const auto stalled_gone = [&] { return stalled.open == 0; };
      const bool handshake_gone = co_await eventually(stalled_gone, 10s);
      CHECK(handshake_gone);

      // 2. Waiting for the head: the request went out, nothing comes back.
      auto heading = get(client, url_of("https", ours, "/stall-head"));
      const auto head_asked = [&] { return seen.requests.size() == 2; };
      auto cancelling_head = cancel_once(cl::create_task(std::move(heading)), head_asked);
      const bool cancelled_head = co_await std::move(cancelling_head);
      CHECK(cancelled_head);

      // 3. In the body: 1,000 of 1,000,000 bytes came.
      auto reading = get(client, url_of("https", ours, "/stall-body"));
      const auto body_asked = [&] { return seen.requests.size() == 3; };
      auto cancelling_body = cancel_once(cl::create_task(std::move(reading)), body_asked);
      const bool cancelled_body = co_await std::move(cancelling_body);
      CHECK(cancelled_body);

      // 4. A response dropped with its body unread.
      {
        http::response dropped = co_await client.get(url_of("https", ours, "/stall-body"));
        CHECK(dropped.status() == 200);
      }
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
      // The server saw each connection closed: the reused one (2), and those of 3 and 4.
      const auto all_closed = [&] { return seen.open == 0; };
      const bool closed = co_await eventually(all_closed, 10s);
      CHECK(closed);
      CHECK(seen.connections == 3);

      // The pool is sound: new connections open, and are pooled and reused.
      const fetched after = co_await get(client, url_of("https", ours, "/ok"));
      CHECK(after.body == "ok https");
      CHECK(seen.connections == 4);
      auto both = cl::gather(get(client, url_of("https", ours, "/ok")), get(client, url_of("https", ours, "/ok")));
      auto [one, two] = co_await std::move(both);
      CHECK(one.body == "ok https");
      CHECK(two.body == "ok https");
      CHECK(seen.connections == 5);
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 2);
    }
    co_await stop(ours);
    co_await stop(stalling);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(60s, body()));
}

TEST_CASE("https: a pooled connection the server closed is retried once for GET (with close_notify or without), "
          "not for POST",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  auto body = []() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served seen;
    cl::server ours = co_await start_ours(seen, test_server_context());
    {
      http::client client(bounded(trusting_client()));
      const fetched first = co_await get(client, url_of("https", ours, "/stale-notify"));
      CHECK(first.body == "ok https");
      CHECK(client.idle_connections() == 1);
      // Sent on the pooled connection, which the server closes with close_notify: retried.
      const fetched notified = co_await get(client, url_of("https", ours, "/stale-notify"));
      CHECK(notified.body == "ok https");
      CHECK(seen.connections == 2);
      // The same, closed without close_notify: the end is taken as the server going away.
      const fetched cut = co_await get(client, url_of("https", ours, "/stale-cut"));
      CHECK(cut.body == "ok https");
      CHECK(seen.connections == 3);
      CHECK(client.connections_opened() == 3);
      CHECK(seen.requests.size() == 5);
      // A POST is not retried.
      http::request_options post;
      post.body = "data";
      const std::optional<std::string> refused =
          co_await maybe_error_of<http::disconnected_error>(fetch(client, "POST", url_of("https", ours, "/stale-cut"), post));
      REQUIRE(refused.has_value());
      CHECK(contains(*refused, "the server closed the connection without responding to POST"));
      CHECK(seen.connections == 3);
      CHECK(client.active_connections() == 0);
      CHECK(client.idle_connections() == 0);
    }
    co_await stop(ours);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https nginx: a connection nginx closed after its keepalive_timeout is not reused, nor an error",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  nginx_test::nginx server(nginx_tls());
  auto body = [&]() -> cl::task<void> {
    http::client client(bounded(trusting_client()));
    const std::string url = server.https_url("/short");  // keepalive_timeout 200ms
    const fetched first = co_await get(client, url);
    CHECK(first.body == "short");
    co_await cl::sleep(600ms);
    const fetched second = co_await get(client, url);
    CHECK(second.body == "short");
    CHECK(client.connections_opened() == 2);
    const auto both_logged = [&] { return server.tls_requests("/short") == 2; };
    const bool logged = co_await eventually(both_logged, 5s);
    CHECK(logged);
    CHECK(server.tls_connections("/short") == 2);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https: redirects between http:// and https:// drop Authorization and Cookie, the scheme alone "
          "changing the origin",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  nginx_test::nginx server(nginx_tls());
  auto body = [&]() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served seen;
    cl::server ours = co_await start_ours(seen, test_server_context());
    {
      http::client client(bounded(trusting_client()));
      http::request_options credentials;
      credentials.headers = {{"Authorization", "Bearer secret"}, {"Cookie", "session=1"}};

      // Our server: the same host and port, only the scheme changes.
      const std::string to_https = url_of("http", ours, "/to_https/credentials");
      const fetched up = co_await fetch(client, "GET", to_https, credentials);
      CHECK(up.url == url_of("https", ours, "/credentials"));
      CHECK(up.history == std::vector<std::string>{to_https});
      CHECK(up.body == "auth= cookie=");
      const std::string to_http = url_of("https", ours, "/to_http/credentials");
      const fetched down = co_await fetch(client, "GET", to_http, credentials);
      CHECK(down.url == url_of("http", ours, "/credentials"));
      CHECK(down.body == "auth= cookie=");
      CHECK(seen.requests == std::vector<std::string>{"http GET /to_https/credentials", "https GET /credentials",
                                                      "https GET /to_http/credentials", "http GET /credentials"});

      // nginx: plain and TLS on two ports.
      const fetched nginx_up = co_await fetch(client, "GET", server.url("/to_https/credentials"), credentials);
      CHECK(nginx_up.url == server.https_url("/credentials"));
      CHECK(nginx_up.body == "auth= cookie=");
      const fetched nginx_down = co_await fetch(client, "GET", server.https_url("/to_http/credentials"), credentials);
      CHECK(nginx_down.url == server.url("/credentials"));
      CHECK(nginx_down.body == "auth= cookie=");
      // Within one origin they stay.
      const fetched same = co_await fetch(client, "GET", server.https_url("/same/credentials"), credentials);
      CHECK(same.url == server.https_url("/credentials"));
      CHECK(same.body == "auth=Bearer secret cookie=session=1");
    }
    co_await stop(ours);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}

TEST_CASE("https: one pool per scheme, host and port: http:// and https:// to one port never share a connection; "
          "closing the client sends close_notify",
          "[https]") {
  if (!tls_test::tools_present("https")) return;
  auto body = []() -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    served seen;
    cl::server ours = co_await start_ours(seen, test_server_context());
    {
      http::client client(bounded(trusting_client()));
      for (int round = 0; round < 3; ++round) {
        const fetched plain = co_await get(client, url_of("http", ours, "/ok"));
        CHECK(plain.body == "ok http");
        const fetched secured = co_await get(client, url_of("https", ours, "/ok"));
        CHECK(secured.body == "ok https");
      }
      CHECK(seen.connections == 2);
      CHECK(seen.tls_connections == 1);
      CHECK(client.connections_opened() == 2);
      CHECK(client.idle_connections() == 2);
      // Closing the client ends its idle connections in order: over TLS with close_notify.
      client.close();
      const auto both_ended = [&] { return seen.open == 0; };
      const bool ended = co_await eventually(both_ended, 10s);
      CHECK(ended);
      CHECK(seen.clean_ends == 2);
      CHECK(seen.ragged_ends == 0);
    }
    co_await stop(ours);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(cl::timeout(30s, body()));
}
