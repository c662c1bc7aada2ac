// tests/test_tls.cpp - TLS [tls]: the OpenSSL engine (section 9.5) under streams and
// servers, against peers nobody here wrote: openssl s_server and s_client, and
// Python's ssl module, with certificates the openssl command makes at test time
// (tests/tls_fixture.hpp). Verified exchanges by name and by address, TLS 1.2 and
// 1.3, 5 MiB byte-exact both ways, each bad certificate's error and verify = false,
// truncation without close_notify, stalled and cancelled handshakes, client
// certificates, our server under s_client and 1,000 concurrent Python clients,
// start_tls on both ends, a TLS 1.3 key update, ALPN, peers that do not speak TLS,
// and the errors of a context's set-up.
//
// No co_await inside CHECK/REQUIRE (GCC 12 evaluates it twice), no aggregate or
// capturing lambda written inside a co_await expression (GCC 12 destroys it
// twice): await into named locals.
#define CORO_LOOP_OPENSSL
#include "catch.hpp"
#include "coro_loop.hpp"

#include "net_helpers.hpp"
#include "test_support.hpp"
#include "tls_fixture.hpp"

#include <sys/resource.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using net_test::eventually;
using test_support::contains;
using test_support::resource_counts;
using tls_test::file;
using tls_test::trusting_client;

namespace {

const tls_test::certificates& certs() { return tls_test::certificates::shared(); }
cl::tls_context test_server() { return cl::tls_context::server(file("server.pem"), file("server.key")); }

// s_server's arguments to present certificate `name` (with server.key) and
// answer each line reversed.
std::vector<std::string> reversing(const char* name, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {"-cert", file(name), "-key", file("server.key"), "-rev"};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}
std::vector<std::string> python_args(const char* mode, std::vector<std::string> more = {}) {
  std::vector<std::string> args = {mode, "--cert", file("server.pem"), "--key", file("server.key")};
  args.insert(args.end(), more.begin(), more.end());
  return args;
}

// What awaiting `work` throws as E (its what()), or "no error".
template <class Error, class Awaitable>
cl::task<std::string> error_of(Awaitable work) {
  try {
    co_await std::move(work);
  } catch (const Error& error) {
    co_return error.what();
  }
  co_return "no error";
}

// Opens a TLS connection (within 10 s).
cl::task<cl::stream> connect(std::string host, std::uint16_t port, cl::tls_options tls) {
  auto opening = cl::open_connection(std::move(host), port, std::move(tls));
  co_return co_await cl::timeout(10s, std::move(opening));
}

// One line there and its answer back (within 10 s).
cl::task<std::string> round_trip(cl::stream& connection, std::string line) {
  connection.write(line);
  co_return co_await cl::timeout(10s, connection.read_line());
}

cl::task<void> close_and_wait(cl::stream& connection) {
  connection.close();
  co_await cl::timeout(10s, connection.wait_closed());
}

// Polls until `child` exits, keeping the loop running meanwhile; false past `limit`.
cl::task<bool> exits(tls_test::process& child, cl::duration limit) {
  const cl::time_point deadline = cl::clock::now() + limit;
  while (!child.exited()) {
    if (cl::clock::now() >= deadline) co_return false;
    co_await cl::sleep(5ms);
  }
  co_return true;
}

// Polls until `child`'s output holds `text`; false past `limit`.
cl::task<bool> says(const tls_test::process& child, std::string text, cl::duration limit = 10s) {
  co_return co_await eventually([&] { return contains(child.output(), text); }, limit);
}

// Our servers' handler: each line comes back as "echo:LINE" (with " alpn=X" before the
// newline when asked), until the client's end or `lines` lines; then close, close_notify
// and all.
cl::task<void> echo_prefixed(cl::stream connection, bool tell_alpn, int lines = 100) {
  try {
    for (int i = 0; i < lines; ++i) {
      std::string line = co_await connection.read_line();
      if (line.empty()) break;
      if (tell_alpn) line.insert(line.size() - 1, " alpn=" + std::string(connection.selected_alpn_protocol()));
      connection.write("echo:" + line);
    }
  } catch (const std::exception&) {
  }
  connection.close();
  co_await connection.wait_closed();
}

// Counts the handlers running and the most at once.
struct concurrency {
  std::size_t running = 0;
  std::size_t peak = 0;
};
cl::task<void> counted_echo(cl::stream connection, concurrency* seen) {
  seen->peak = std::max(seen->peak, ++seen->running);
  auto echoing = echo_prefixed(std::move(connection), false);
  co_await std::move(echoing);
  --seen->running;
}

// Sends `size` content bytes in 256 KiB writes, each drained, then write_eof().
cl::task<void> send_content(cl::stream& connection, std::size_t size) {
  constexpr std::size_t block = std::size_t{256} << 10;
  for (std::size_t sent = 0; sent < size; sent += block) {
    connection.write(tls_test::content(sent, std::min(block, size - sent)));
    co_await connection.drain();
  }
  connection.write_eof();
}
cl::task<std::string> read_to_end(cl::stream& connection) { co_return co_await connection.read(); }

// Raises the soft RLIMIT_NOFILE to `needed` if the hard limit allows; false otherwise.
bool enough_descriptors(rlim_t needed) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return false;
  if (limit.rlim_cur >= needed) return true;
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < needed) return false;
  limit.rlim_cur = needed;
  return ::setrlimit(RLIMIT_NOFILE, &limit) == 0;
}

}  // namespace

TEST_CASE("tls: a verified exchange with openssl s_server, by name and by IP address; ALPN", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  tls_test::process plain = tls_test::s_server(reversing("server.pem"));
  tls_test::process alpn = tls_test::s_server(reversing("server.pem", {"-alpn", "http/1.1"}));
  auto body = [](std::uint16_t plain_port, std::uint16_t alpn_port) -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    cl::tls_context context = trusting_client();
    context.set_alpn_protocols({"h2", "http/1.1"});
    for (const char* host : {"localhost", "127.0.0.1"}) {
      INFO("host " << host);
      cl::stream connection = co_await connect(host, plain_port, cl::tls_options(context));
      CHECK(connection.is_tls());
      CHECK(connection.negotiated_tls_version() == cl::tls_version::v1_3);
      CHECK(connection.selected_alpn_protocol().empty());  // s_server was given no ALPN list
      const std::string reply = co_await round_trip(connection, "hello tls\n");
      CHECK(reply == "slt olleh\n");
      co_await close_and_wait(connection);
    }
    cl::stream chosen = co_await connect("localhost", alpn_port, cl::tls_options(context));
    CHECK(chosen.selected_alpn_protocol() == "http/1.1");
    const std::string reply = co_await round_trip(chosen, "alpn\n");
    CHECK(reply == "npla\n");
    co_await close_and_wait(chosen);
    co_await test_support::expect_resources_back(before);
  };
  cl::run(body(plain.port(), alpn.port()));
}

TEST_CASE("tls: TLS 1.2 and 1.3, either side setting the limit", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  tls_test::process only_12 = tls_test::s_server(reversing("server.pem", {"-tls1_2"}));
  tls_test::process only_13 = tls_test::python_server(python_args("echo", {"--min-version", "TLSv1_3"}));
  auto body = [](std::uint16_t port_12, std::uint16_t port_13) -> cl::task<void> {
    cl::tls_context any = trusting_client();
    cl::stream over_12 = co_await connect("localhost", port_12, cl::tls_options(any));
    CHECK(over_12.negotiated_tls_version() == cl::tls_version::v1_2);
    const std::string reversed = co_await round_trip(over_12, "twelve\n");
    CHECK(reversed == "evlewt\n");
    co_await close_and_wait(over_12);

    cl::stream over_13 = co_await connect("localhost", port_13, cl::tls_options(any));
    CHECK(over_13.negotiated_tls_version() == cl::tls_version::v1_3);
    const std::string echoed = co_await round_trip(over_13, "thirteen\n");
    CHECK(echoed == "thirteen\n");
    co_await close_and_wait(over_13);

    cl::tls_context at_most_12 = trusting_client();
    at_most_12.set_max_version(cl::tls_version::v1_2);
    const std::string refused_by_peer =
        co_await error_of<cl::tls_error>(connect("127.0.0.1", port_13, cl::tls_options(at_most_12)));
    INFO(refused_by_peer);
    CHECK(refused_by_peer.starts_with("tls handshake with 127.0.0.1:" + std::to_string(port_13) + ": "));
    CHECK(contains(refused_by_peer, "protocol version"));

    cl::tls_context at_least_13 = trusting_client();
    at_least_13.set_min_version(cl::tls_version::v1_3);
    const std::string refused_here =
        co_await error_of<cl::tls_error>(connect("127.0.0.1", port_12, cl::tls_options(at_least_13)));
    INFO(refused_here);
    CHECK(refused_here.starts_with("tls handshake with 127.0.0.1:" + std::to_string(port_12) + ": "));
    CHECK(contains(refused_here, "protocol"));
  };
  cl::run(body(only_12.port(), only_13.port()));
}

TEST_CASE("tls: 5 MiB byte-exact both ways with Python's ssl module, over TLS 1.3 and TLS 1.2", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  tls_test::process python = tls_test::python_server(python_args("echo"));
  auto body = [](std::uint16_t port) -> cl::task<void> {
    constexpr std::size_t size = std::size_t{5} << 20;
    const std::string expected = tls_test::content(0, size);
    for (const cl::tls_version version : {cl::tls_version::v1_3, cl::tls_version::v1_2}) {
      cl::tls_context context = trusting_client();
      context.set_max_version(version);
      cl::stream connection = co_await connect("localhost", port, cl::tls_options(context));
      CHECK(connection.negotiated_tls_version() == version);
      // Both at once: the echo comes back while the rest is still going out.
      auto sending = send_content(connection, size);
      auto receiving = read_to_end(connection);
      auto gathering = cl::gather(std::move(sending), std::move(receiving));
      auto [sent, echoed] = co_await cl::timeout(60s, std::move(gathering));
      CHECK(echoed.size() == size);
      const bool same = echoed == expected;
      CHECK(same);
      // The end came with the peer's close_notify: a clean end, not a truncation.
      CHECK(connection.at_eof());
      co_await close_and_wait(connection);
    }
  };
  cl::run(body(python.port()));
}

TEST_CASE("tls: each bad certificate fails the handshake with its reason; verify = false accepts it", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  struct bad_certificate {
    const char* file;
    const char* host;
    const char* reason;
  };
  const std::vector<bad_certificate> cases = {
      {"expired.pem", "127.0.0.1", "certificate verify failed: certificate has expired"},
      {"wrong_host.pem", "localhost", "certificate verify failed: hostname mismatch (the certificate is not for localhost)"},
      {"wrong_host.pem", "127.0.0.1",
       "certificate verify failed: IP address mismatch (the certificate is not for 127.0.0.1)"},
      {"self_signed.pem", "127.0.0.1", "certificate verify failed: self-signed certificate"},
      {"unknown_ca.pem", "localhost", "certificate verify failed: unable to get local issuer certificate"},
  };
  std::vector<tls_test::process> servers;
  for (const bad_certificate& bad : cases) servers.push_back(tls_test::s_server(reversing(bad.file)));
  auto body = [](const std::vector<bad_certificate>& cases, const std::vector<tls_test::process>& servers)
      -> cl::task<void> {
    cl::tls_context verifying = trusting_client();
    cl::tls_context trusting_anything = cl::tls_context::client();
    trusting_anything.set_verify(false);
    CHECK_FALSE(trusting_anything.verifies());
    for (std::size_t i = 0; i < cases.size(); ++i) {
      const std::string port = std::to_string(servers[i].port());
      const std::string peer = std::string(cases[i].host) == "127.0.0.1"
                                   ? "127.0.0.1:" + port
                                   : std::string(cases[i].host) + " (127.0.0.1:" + port + ")";
      const std::string message = co_await error_of<cl::tls_certificate_error>(
          connect(cases[i].host, servers[i].port(), cl::tls_options(verifying)));
      CHECK(message == "tls handshake with " + peer + ": " + cases[i].reason);

      cl::stream accepted = co_await connect(cases[i].host, servers[i].port(), cl::tls_options(trusting_anything));
      const std::string reply = co_await round_trip(accepted, "anyway\n");
      CHECK(reply == "yawyna\n");
      co_await close_and_wait(accepted);
    }
  };
  cl::run(body(cases, servers));
}

TEST_CASE("tls: the end of the connection without close_notify is an error, with it a clean end", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  constexpr std::size_t size = 100000;
  tls_test::process cutting = tls_test::python_server(python_args("cut", {"--size", std::to_string(size)}));
  tls_test::process closing = tls_test::python_server(python_args("send", {"--size", std::to_string(size)}));
  auto body = [](std::uint16_t cut_port, std::uint16_t closed_port) -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    cl::tls_context context = trusting_client();
    const std::string truncated = "tls read from localhost (127.0.0.1:" + std::to_string(cut_port) +
                                  "): the peer closed the connection without close_notify (the data may be truncated)";
    {
      cl::stream connection = co_await connect("localhost", cut_port, cl::tls_options(context));
      const std::string message = co_await error_of<cl::tls_error>(connection.read());
      CHECK(message == truncated);
    }
    {
      // Every byte sent before the cut is read; the cut itself is still an error.
      cl::stream connection = co_await connect("localhost", cut_port, cl::tls_options(context));
      const std::string all = co_await connection.read_exactly(size);
      CHECK(all == tls_test::content(0, size));
      const std::string line_error = co_await error_of<cl::tls_error>(connection.read_line());
      CHECK(line_error == truncated);
      CHECK_FALSE(connection.at_eof());
    }
    {
      cl::stream connection = co_await connect("localhost", closed_port, cl::tls_options(context));
      const std::string all = co_await connection.read();
      CHECK(all == tls_test::content(0, size));
      CHECK(connection.at_eof());
      const std::string after = co_await connection.read();
      CHECK(after.empty());
    }
    co_await test_support::expect_resources_back(before);
  };
  cl::run(body(cutting.port(), closing.port()));
}

TEST_CASE("tls: close() sends close_notify (Python sees a clean end), abort() does not", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  tls_test::process python = tls_test::python_server(python_args("expect_end"));
  auto body = [](const tls_test::process& python) -> cl::task<void> {
    cl::tls_context context = trusting_client();
    cl::stream closed = co_await connect("localhost", python.port(), cl::tls_options(context));
    closed.write("some data\n");
    co_await close_and_wait(closed);
    const bool clean = co_await says(python, "clean end");
    CHECK(clean);
    cl::stream aborted = co_await connect("localhost", python.port(), cl::tls_options(context));
    aborted.write("some data\n");
    co_await cl::sleep(20ms);
    aborted.abort();
    const bool ragged = co_await says(python, "ragged end");
    CHECK(ragged);
    INFO(python.output());
    CHECK(test_support::count_of(python.output(), " end") == 2);
  };
  cl::run(body(python));
}

TEST_CASE("tls: our client and server: close() ends cleanly, abort() reads as a truncation", "[tls]") {
  auto body = []() -> cl::task<void> {
    if (!tls_test::tools_present("TLS")) co_return;
    const resource_counts before = resource_counts::now();
    std::vector<std::string> outcomes;
    // A line answered first: the client then has read the server's TLS 1.3 session
    // tickets too, so that its close is a FIN (with unread bytes, the kernel resets).
    auto record = [&outcomes](cl::stream connection) -> cl::task<void> {
      try {
        std::string line = co_await connection.read_line();
        connection.write("ok\n");
        std::string rest = co_await connection.read();
        outcomes.push_back("read " + line + rest);
      } catch (const std::exception& error) {
        outcomes.push_back(error.what());
      }
    };
    cl::server listener = co_await cl::start_server(record, "127.0.0.1", 0, cl::tls_options(test_server()));
    cl::tls_context context = trusting_client();
    cl::stream closing = co_await connect("localhost", listener.port(), cl::tls_options(context));
    const std::string ok = co_await round_trip(closing, "first\n");
    CHECK(ok == "ok\n");
    closing.write("bye");
    co_await close_and_wait(closing);
    const bool first = co_await eventually([&] { return outcomes.size() == 1; });
    CHECK(first);
    cl::stream aborting = co_await connect("localhost", listener.port(), cl::tls_options(context));
    const std::string ok_again = co_await round_trip(aborting, "first\n");
    CHECK(ok_again == "ok\n");
    aborting.write("cut");
    co_await cl::sleep(20ms);
    aborting.abort();
    const bool second = co_await eventually([&] { return outcomes.size() == 2; });
    REQUIRE(second);
    CHECK(outcomes[0] == "read first\nbye");
    INFO(outcomes[1]);
    CHECK(outcomes[1].starts_with("tls read from 127.0.0.1:"));
    CHECK(contains(outcomes[1], "without close_notify"));
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
    co_await test_support::expect_resources_back(before);
  };
  cl::run(body());
}

TEST_CASE("tls: a stalled handshake is bounded by timeout() and by handshake_timeout, and cancellable; nothing leaks",
          "[tls]") {
  auto body = []() -> cl::task<void> {
    // A server that accepts and never says a word: the handshake waits for its answer.
    const resource_counts before = resource_counts::now();
    auto silent = [](cl::stream peer) -> cl::task<void> { (void)co_await peer.read(); };
    cl::server listener = co_await cl::start_server(silent, "127.0.0.1", 0);
    const std::uint16_t port = listener.port();
    cl::tls_context context = cl::tls_context::client();

    cl::tls_options tls(context);
    auto opening = cl::open_connection("127.0.0.1", port, tls);
    const std::string outer = co_await error_of<cl::timeout_error>(cl::timeout(200ms, std::move(opening)));
    CHECK(outer != "no error");

    tls.handshake_timeout = 200ms;
    const std::string own = co_await error_of<cl::timeout_error>(cl::open_connection("127.0.0.1", port, tls));
    CHECK(own == "tls handshake with 127.0.0.1:" + std::to_string(port) +
                     ": not finished within 200 ms (tls_options::handshake_timeout)");

    tls.handshake_timeout = std::chrono::hours(1);
    auto connecting = cl::create_task(cl::open_connection("127.0.0.1", port, tls));
    const bool waiting = co_await eventually([&] { return listener.connection_count() == 1; });
    CHECK(waiting);
    co_await cl::sleep(20ms);
    connecting.cancel();
    const bool ended = co_await eventually([&] { return connecting.done(); });
    REQUIRE(ended);
    CHECK(connecting.cancelled());

    // Each connection was closed: the server saw its end.
    const bool all_gone = co_await eventually([&] { return listener.connection_count() == 0; });
    CHECK(all_gone);
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
    co_await test_support::expect_resources_back(before);
  };
  cl::run(body());
}

TEST_CASE("tls: our server drops a client that stalls its handshake, or does not speak TLS", "[tls]") {
  auto body = []() -> cl::task<void> {
    if (!tls_test::tools_present("TLS")) co_return;
    int handled = 0;
    auto handler = [&handled](cl::stream) -> cl::task<void> {
      ++handled;
      co_return;
    };
    const resource_counts before = resource_counts::now();
    cl::tls_options tls(test_server());
    tls.handshake_timeout = 300ms;
    cl::server listener = co_await cl::start_server(handler, "127.0.0.1", 0, tls);

    cl::stream stalling = co_await cl::open_connection("127.0.0.1", listener.port());
    const cl::time_point start = cl::clock::now();
    const std::string nothing = co_await cl::timeout(10s, stalling.read());
    CHECK(nothing.empty());  // closed by the server: the end of the stream
    CHECK(cl::clock::now() - start >= 250ms);

    cl::stream talking_http = co_await cl::open_connection("127.0.0.1", listener.port());
    talking_http.write("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    // An alert, maybe, then the end: never an HTTP answer, never a hang.
    const std::string answer = co_await cl::timeout(10s, talking_http.read());
    CHECK_FALSE(contains(answer, "HTTP"));

    // Cancelled mid-handshake by close_clients(): the connection goes.
    cl::stream waiting = co_await cl::open_connection("127.0.0.1", listener.port());
    const bool accepted = co_await eventually([&] { return listener.connection_count() == 1; });
    CHECK(accepted);
    listener.close_clients();
    const std::string ended = co_await cl::timeout(10s, waiting.read());
    CHECK(ended.empty());

    const bool none_left = co_await eventually([&] { return listener.connection_count() == 0; });
    CHECK(none_left);
    CHECK(handled == 0);
    stalling.close();
    talking_http.close();
    waiting.close();
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
    co_await test_support::expect_resources_back(before);
  };
  cl::run(body());
}

TEST_CASE("tls: a server's failed handshake is reported in debug mode only (as asyncio)", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  for (const bool debug : {false, true}) {
    INFO("debug " << debug);
    test_support::stderr_capture captured;
    auto body = []() -> cl::task<void> {
      auto handler = [](cl::stream) -> cl::task<void> { co_return; };
      cl::server listener = co_await cl::start_server(handler, "127.0.0.1", 0, cl::tls_options(test_server()));
      cl::stream client = co_await cl::open_connection("127.0.0.1", listener.port());
      client.write("not tls at all\r\n\r\n");
      try {
        (void)co_await cl::timeout(10s, client.read());  // an alert, then the end (or a reset)
      } catch (const std::system_error&) {
      }
      const bool dropped = co_await eventually([&] { return listener.connection_count() == 0; });
      CHECK(dropped);
      listener.close();
      co_await cl::timeout(10s, listener.wait_closed());
    };
    cl::run_options options;
    options.debug = debug;
    cl::run(body(), options);
    const std::string text = captured.text();
    INFO(text);
    CHECK(contains(text, "coro_loop: connection from 127.0.0.1:") == debug);
    CHECK(contains(text, "dropped: tls handshake with 127.0.0.1:") == debug);
  }
}

TEST_CASE("tls: a peer that does not speak TLS gives the client a clear error", "[tls]") {
  auto body = []() -> cl::task<void> {
    auto http = [](cl::stream peer) -> cl::task<void> {
      peer.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      peer.close();
      co_await peer.wait_closed();
    };
    cl::server listener = co_await cl::start_server(http, "127.0.0.1", 0);
    cl::tls_context context = cl::tls_context::client();
    const std::string message =
        co_await error_of<cl::tls_error>(connect("127.0.0.1", listener.port(), cl::tls_options(context)));
    INFO(message);
    CHECK(message.starts_with("tls handshake with 127.0.0.1:" + std::to_string(listener.port()) + ": "));
    CHECK(message != "no error");
    listener.close();
    co_await listener.wait_closed();
  };
  cl::run(body());
}

TEST_CASE("tls: a client certificate the server demands: presented, or missing with a clear error", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  tls_test::process demanding =
      tls_test::s_server(reversing("server.pem", {"-Verify", "1", "-CAfile", file("ca.pem")}));
  tls_test::process demanding_12 =
      tls_test::s_server(reversing("server.pem", {"-Verify", "1", "-CAfile", file("ca.pem"), "-tls1_2"}));
  auto body = [](std::uint16_t port, std::uint16_t port_12) -> cl::task<void> {
    cl::tls_context with_certificate = trusting_client();
    with_certificate.load_cert_chain(file("client.pem"), file("client.key"));
    for (const std::uint16_t each : {port, port_12}) {
      cl::stream connection = co_await connect("localhost", each, cl::tls_options(with_certificate));
      const std::string reply = co_await round_trip(connection, "mine\n");
      CHECK(reply == "enim\n");
      co_await close_and_wait(connection);
    }

    // TLS 1.3: the client's handshake is over before the server looks at its
    // (empty) certificate; the refusal arrives on the first read.
    cl::tls_context without = trusting_client();
    cl::stream refused = co_await connect("localhost", port, cl::tls_options(without));
    refused.write("nothing\n");
    const std::string message = co_await error_of<cl::tls_error>(refused.read_line());
    INFO(message);
    CHECK(message.starts_with("tls read from localhost (127.0.0.1:" + std::to_string(port) + "): "));
    CHECK(contains(message, "certificate required"));

    // TLS 1.2: the handshake itself fails.
    const std::string message_12 =
        co_await error_of<cl::tls_error>(connect("localhost", port_12, cl::tls_options(without)));
    INFO(message_12);
    CHECK(message_12.starts_with("tls handshake with localhost (127.0.0.1:" + std::to_string(port_12) + "): "));
    CHECK(contains(message_12, "alert"));
  };
  cl::run(body(demanding.port(), demanding_12.port()));
}

TEST_CASE("tls: our server demanding a client certificate, with Python's ssl clients and ours", "[tls]") {
  auto body = []() -> cl::task<void> {
    if (!tls_test::tools_present("TLS")) co_return;
    cl::tls_context context = test_server();
    context.set_verify(true).load_verify_locations(file("ca.pem"));
    auto echo = [](cl::stream connection) { return echo_prefixed(std::move(connection), false); };
    cl::server listener = co_await cl::start_server(echo, "127.0.0.1", 0, cl::tls_options(context));
    const std::string port = std::to_string(listener.port());

    tls_test::process with = tls_test::python_clients(
        {"--port", port, "--cafile", file("ca.pem"), "--cert", file("client.pem"), "--key", file("client.key")});
    tls_test::process without = tls_test::python_clients({"--port", port, "--cafile", file("ca.pem")});
    const bool with_done = co_await exits(with, 30s);
    const bool without_done = co_await exits(without, 30s);
    REQUIRE(with_done);
    REQUIRE(without_done);
    INFO(with.output());
    INFO(without.output());
    CHECK(with.exit_code() == 0);
    CHECK(contains(with.output(), "OK 1"));
    CHECK(without.exit_code() != 0);

    cl::tls_context ours = trusting_client();
    ours.load_cert_chain(file("client.pem"), file("client.key"));
    cl::stream connection = co_await connect("localhost", listener.port(), cl::tls_options(ours));
    const std::string reply = co_await round_trip(connection, "ours\n");
    CHECK(reply == "echo:ours\n");
    co_await close_and_wait(connection);
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
  };
  cl::run(body());
}

TEST_CASE("tls: our server driven by openssl s_client, TLS 1.3 and 1.2, with ALPN", "[tls]") {
  auto body = []() -> cl::task<void> {
    if (!tls_test::tools_present("TLS")) co_return;
    cl::tls_context context = test_server();
    context.set_alpn_protocols({"h2", "http/1.1"});
    // One line: s_client (-quiet) ends when the server closes.
    auto echo = [](cl::stream connection) { return echo_prefixed(std::move(connection), true, 1); };
    cl::server listener = co_await cl::start_server(echo, "127.0.0.1", 0, cl::tls_options(context));
    for (const char* version : {"-tls1_3", "-tls1_2"}) {
      INFO(version);
      tls_test::process client(
          {tls_test::openssl_program(), "s_client", "-connect", "127.0.0.1:" + std::to_string(listener.port()),
           "-CAfile", file("ca.pem"), "-verify_return_error", "-verify_hostname", "localhost", "-servername",
           "localhost", "-alpn", "http/1.1", version, "-quiet"},
          tls_test::output_file("s_client"), true);
      // -quiet: s_client sends its stdin and prints what comes back until our close.
      CHECK(client.send_input("hello\n"));
      const bool done = co_await exits(client, 20s);
      REQUIRE(done);
      INFO(client.output());
      CHECK(client.exit_code() == 0);
      CHECK(contains(client.output(), "echo:hello alpn=http/1.1\n"));
    }
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
  };
  cl::run(body());
}

namespace {
// Our server against `count` concurrent Python ssl clients: each sends a line and
// holds its connection until every one has its echo, so all are open at once.
cl::task<void> many_python_clients(std::size_t count) {
  concurrency seen;
  auto handler = [&seen](cl::stream connection) { return counted_echo(std::move(connection), &seen); };
  cl::server_options options;
  options.backlog = 4096;  // every client connects at once: none waits for a SYN retry
  cl::server listener = co_await cl::start_server(handler, "127.0.0.1", 0, cl::tls_options(test_server()), options);
  const cl::time_point start = cl::clock::now();
  tls_test::process clients = tls_test::python_clients({"--port", std::to_string(listener.port()), "--cafile",
                                                        file("ca.pem"), "--count", std::to_string(count)});
  const bool done = co_await exits(clients, 120s);
  REQUIRE(done);
  INFO(clients.output());
  CHECK(clients.exit_code() == 0);
  CHECK(contains(clients.output(), "OK " + std::to_string(count) + "\n"));
  CHECK(seen.peak == count);
  const bool drained = co_await eventually([&] { return listener.connection_count() == 0; });
  CHECK(drained);
  const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(cl::clock::now() - start);
  INFO(count << " concurrent Python TLS clients served in " << elapsed.count() << " ms");
  CHECK(elapsed < 60s);  // about 2 s here (1,000 clients); generous for a loaded machine
  listener.close();
  co_await cl::timeout(10s, listener.wait_closed());
}
}  // namespace

TEST_CASE("tls: our server with 1,000 concurrent Python ssl clients (100 under valgrind)", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  std::size_t count = test_support::sized("CORO_LOOP_TLS_CLIENTS", 1000, 1000, 100);
  // Each connection is a descriptor here and one in Python (which inherits the limit).
  if (!enough_descriptors(static_cast<rlim_t>(count) + 256)) {
    WARN("RLIMIT_NOFILE's hard limit is under " << count + 256 << ": 100 clients instead of " << count);
    count = 100;
    REQUIRE(enough_descriptors(static_cast<rlim_t>(count) + 256));
  }
  cl::run(many_python_clients(count));
}

TEST_CASE("tls: start_tls upgrades a plain stream: against Python, and ours on both ends", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  tls_test::process python = tls_test::python_server(python_args("starttls"));
  auto body = [](std::uint16_t python_port) -> cl::task<void> {
    const resource_counts before = resource_counts::now();
    cl::tls_context client = trusting_client();
    {
      cl::stream connection = co_await cl::open_connection("127.0.0.1", python_port);
      const std::string go = co_await round_trip(connection, "STARTTLS\n");
      CHECK(go == "GO\n");
      CHECK_FALSE(connection.is_tls());
      co_await cl::timeout(10s, connection.start_tls(cl::tls_options(client, "localhost")));
      CHECK(connection.is_tls());
      const std::string echoed = co_await round_trip(connection, "secret\n");
      CHECK(echoed == "secret\n");
      co_await close_and_wait(connection);
    }

    // Ours on both ends, the client starting its handshake right behind its
    // STARTTLS line: the server's read_line takes part of the ClientHello with
    // the line, and start_tls must take those bytes as TLS.
    auto upgrading = [](cl::stream connection) -> cl::task<void> {
      const std::string line = co_await connection.read_line();
      if (line != "STARTTLS\n") co_return;
      co_await connection.start_tls(cl::tls_options(test_server()));
      auto echoing = echo_prefixed(std::move(connection), false);
      co_await std::move(echoing);
    };
    cl::server listener = co_await cl::start_server(upgrading, "127.0.0.1", 0);
    cl::stream connection = co_await cl::open_connection("127.0.0.1", listener.port());
    connection.write("STARTTLS\n");
    // No server hostname: the peer's address is verified.
    co_await cl::timeout(10s, connection.start_tls(cl::tls_options(client)));
    const std::string echoed = co_await round_trip(connection, "both ends\n");
    CHECK(echoed == "echo:both ends\n");
    const std::string twice = co_await error_of<cl::invalid_state_error>(connection.start_tls(cl::tls_options(client)));
    CHECK(twice == "stream::start_tls: TLS runs on this stream already");
    co_await close_and_wait(connection);
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
    co_await test_support::expect_resources_back(before);
  };
  cl::run(body(python.port()));
}

TEST_CASE("tls: a TLS 1.3 key update the peer asks for during a read is answered", "[tls]") {
  if (!tls_test::tools_present("TLS")) return;
  // s_server without -rev: stdin goes to the client, its "K" command sends a
  // KeyUpdate asking for ours; what the client sends is printed.
  tls_test::process server =
      tls_test::s_server({"-cert", file("server.pem"), "-key", file("server.key"), "-tls1_3"}, true);
  auto body = [](tls_test::process& server) -> cl::task<void> {
    cl::tls_context context = trusting_client();
    cl::stream connection = co_await connect("localhost", server.port(), cl::tls_options(context));
    connection.write("before\n");
    const bool got_before = co_await says(server, "before\n");
    CHECK(got_before);
    // A first line read takes the session tickets too: nothing is left unread.
    CHECK(server.send_input("hello\n"));
    const std::string hello = co_await cl::timeout(10s, connection.read_line());
    CHECK(hello == "hello\n");
    CHECK(server.send_input("K\n"));
    // Its KeyUpdate has arrived once there is input again; only then the data,
    // or s_server would read the command and the line as one block of data.
    const bool arrived = co_await eventually([&] { return connection.input_pending(); });
    REQUIRE(arrived);
    CHECK(server.send_input("after the key update\n"));
    // Our read takes the KeyUpdate, then the line; OpenSSL answers with our own
    // KeyUpdate ahead of the next record we write, or the server could not read it.
    const std::string line = co_await cl::timeout(10s, connection.read_line());
    CHECK(line == "after the key update\n");
    connection.write("ping\n");
    const bool got_ping = co_await says(server, "ping\n");
    INFO(server.output());
    CHECK(got_ping);
    co_await close_and_wait(connection);
  };
  cl::run(body(server));
}

// GCC 12 destroys an aggregate temporary written inside a co_await expression twice;
// tls_options has constructors instead, so each way of writing it there is safe (this
// test is the proof under g++ 12 with ASan, at -O0 and -O2).
TEST_CASE("tls: tls_options written inside a co_await expression, every way", "[tls]") {
  auto body = []() -> cl::task<void> {
    if (!tls_test::tools_present("TLS")) co_return;
    cl::tls_context server_context = test_server();
    auto echo = [](cl::stream connection) { return echo_prefixed(std::move(connection), false); };
    cl::server listener = co_await cl::start_server(echo, "127.0.0.1", 0, server_context);
    const std::uint16_t port = listener.port();
    cl::tls_context context = trusting_client();
    std::vector<cl::stream> streams;
    streams.push_back(co_await cl::open_connection("localhost", port, context));
    streams.push_back(co_await cl::open_connection("127.0.0.1", port, cl::tls_options(context, "localhost")));
    streams.push_back(co_await cl::open_connection("127.0.0.1", port, {context, std::string("localhost")}));
    streams.push_back(co_await cl::open_connection("localhost", port, cl::tls_options(trusting_client())));
    cl::stream upgraded = co_await cl::open_connection("127.0.0.1", port);
    co_await upgraded.start_tls({trusting_client(), "localhost"});
    streams.push_back(std::move(upgraded));
    for (cl::stream& connection : streams) {
      const std::string reply = co_await round_trip(connection, "same\n");
      CHECK(reply == "echo:same\n");
      co_await close_and_wait(connection);
    }
    listener.close();
    co_await cl::timeout(10s, listener.wait_closed());
  };
  cl::run(body());
}

TEST_CASE("tls: a context's set-up errors and misuse are clear", "[tls]") {
  const std::string missing = certs().dir() + "/no-such.pem";
  std::string message;
  try {
    (void)cl::tls_context::server(missing, file("server.key"));
  } catch (const cl::tls_error& error) {
    message = error.what();
  }
  INFO(message);
  CHECK(message.starts_with("tls_context::load_cert_chain " + missing + ": "));
  message.clear();
  try {
    (void)cl::tls_context::server(file("server.pem"), file("client.key"));
  } catch (const cl::tls_error& error) {
    message = error.what();
  }
  INFO(message);
  CHECK(message.starts_with("tls_context::load_cert_chain " + file("client.key") + ": "));
  message.clear();
  try {
    cl::tls_context::client().load_verify_locations(missing);
  } catch (const cl::tls_error& error) {
    message = error.what();
  }
  CHECK(message.starts_with("tls_context::load_verify_locations " + missing + ": "));
  CHECK_THROWS_AS(cl::tls_context::client().set_alpn_protocols({"http/1.1", ""}), std::invalid_argument);
  CHECK_THROWS_AS(cl::tls_context().set_verify(false), cl::invalid_state_error);

  auto body = []() -> cl::task<void> {
    auto idle = [](cl::stream) -> cl::task<void> { co_return; };
    const std::string empty_context =
        co_await error_of<cl::invalid_state_error>(cl::open_connection("127.0.0.1", 1, cl::tls_options(cl::tls_context())));
    CHECK(empty_context == "open_connection 127.0.0.1:1: TLS needs a client context (tls_context::client())");
    const std::string server_context =
        co_await error_of<cl::invalid_state_error>(cl::open_connection("127.0.0.1", 1, cl::tls_options(test_server())));
    CHECK(server_context == empty_context);
    const std::string client_context = co_await error_of<cl::invalid_state_error>(
        cl::start_server(idle, "127.0.0.1", 0, cl::tls_options(cl::tls_context::client())));
    CHECK(client_context ==
          "start_server 127.0.0.1:0: TLS needs a server context (tls_context::server(certificate, key))");
  };
  cl::run(body());
}
