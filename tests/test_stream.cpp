// tests/test_stream.cpp - coro_loop::stream on its own [stream]: delimited reads and
// their limits, end of stream, write/close/wait_closed, a read interrupted by close()
// or by cancellation. Streams over a Unix socketpair: no server needed.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "net_helpers.hpp"
#include "test_support.hpp"

#include <algorithm>
#include <chrono>
#include <limits>
#include <cstddef>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using net_test::eventually;
using net_test::io_counts;

namespace {

cl::task<std::string> read_all(cl::stream& from) { co_return co_await from.read(); }

// Writes `size` bytes of the pattern in 1 MiB blocks, waiting on drain(); then
// closes `to` when asked to.
cl::task<void> write_pattern(cl::stream& to, std::size_t size, bool close_after) {
  constexpr std::size_t block = std::size_t{1} << 20;
  for (std::size_t sent = 0; sent < size; sent += block) {
    to.write(net_test::pattern(sent, std::min(block, size - sent)));
    co_await to.drain();
  }
  if (close_after) {
    to.close();
    co_await to.wait_closed();
  }
}

}  // namespace

TEST_CASE("stream: read_until returns up to and including the delimiter, even split across reads", "[stream]") {
  auto body = []() -> cl::task<void> {
    auto [a, b] = net_test::stream_pair();
    b.write("GET / HTTP/1.1\r\nHost: x\r");
    auto read_head = [](cl::stream& from) -> cl::task<std::string> { co_return co_await from.read_until("\r\n\r\n"); };
    auto reading = cl::create_task(read_head, std::ref(a));
    co_await cl::sleep(5ms);
    CHECK_FALSE(reading.done());  // "\r\n\r" is not the delimiter yet
    b.write("\n\r\nbody");
    std::string head = co_await cl::timeout(10s, reading);
    CHECK(head == "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(a.buffered() == "body");
    std::string line = co_await cl::timeout(10s, a.read_until("dy"));
    CHECK(line == "body");
    CHECK(a.buffered().empty());
    bool empty_delimiter_rejected = false;
    try {
      (void)co_await a.read_until("");
    } catch (const std::invalid_argument&) {
      empty_delimiter_rejected = true;
    }
    CHECK(empty_delimiter_rejected);
  };
  cl::run(body());
}

TEST_CASE("stream: read_until past the limit throws limit_overrun_error and keeps the data; read_line drops the line",
          "[stream]") {
  auto body = []() -> cl::task<void> {
    cl::stream_options options;
    options.limit = 16;
    auto [a, b] = net_test::stream_pair(options);
    b.write("0123456789abcdefghij\nshort\n");  // 21 bytes before the first "\n"
    co_await cl::sleep(5ms);

    std::optional<std::size_t> consumed;
    try {
      (void)co_await cl::timeout(10s, a.read_until("\n"));
    } catch (const cl::limit_overrun_error& error) {
      consumed = error.consumed;
      CHECK(std::string(error.what()).find("16") != std::string::npos);
    }
    REQUIRE(consumed.has_value());
    CHECK(*consumed >= 16);
    CHECK(a.buffered().substr(0, 21) == "0123456789abcdefghij\n");  // read_until keeps it

    bool overrun = false;
    try {
      (void)co_await cl::timeout(10s, a.read_line());
    } catch (const cl::limit_overrun_error&) {
      overrun = true;
    }
    CHECK(overrun);
    std::string next = co_await cl::timeout(10s, a.read_line());
    CHECK(next == "short\n");  // the long line was discarded, up to its "\n"

    // A line of exactly the limit (delimiter included) is fine.
    b.write("0123456789abcde\n");
    std::string exact = co_await cl::timeout(10s, a.read_line());
    CHECK(exact == "0123456789abcde\n");

    // No delimiter at all and more than the limit buffered: overrun, data kept.
    b.write(std::string(40, 'z'));
    bool no_delimiter_overrun = false;
    try {
      (void)co_await cl::timeout(10s, a.read_until("\n"));
    } catch (const cl::limit_overrun_error&) {
      no_delimiter_overrun = true;
    }
    CHECK(no_delimiter_overrun);
    CHECK(a.buffered().size() > 16);
  };
  cl::run(body());
}

TEST_CASE("stream: at EOF read_line returns the partial line, then empty; read_until throws incomplete_read_error",
          "[stream]") {
  auto body = []() -> cl::task<void> {
    {
      auto [a, b] = net_test::stream_pair();
      b.write("complete\npartial");
      b.close();
      co_await cl::timeout(10s, b.wait_closed());
      std::string first = co_await cl::timeout(10s, a.read_line());
      CHECK(first == "complete\n");
      std::string second = co_await cl::timeout(10s, a.read_line());
      CHECK(second == "partial");
      std::string third = co_await cl::timeout(10s, a.read_line());
      CHECK(third.empty());
      CHECK(a.at_eof());
    }
    {
      auto [a, b] = net_test::stream_pair();
      b.write("no delimiter");
      b.write_eof();
      std::optional<cl::incomplete_read_error> error;
      try {
        (void)co_await cl::timeout(10s, a.read_until("\r\n"));
      } catch (const cl::incomplete_read_error& caught) {
        error = caught;
      }
      REQUIRE(error.has_value());
      CHECK(error->partial == "no delimiter");
      CHECK(error->expected == cl::stream::npos);
      // write_eof() half-closed b: it can still read what a answers.
      a.write("answer");
      std::string answer = co_await cl::timeout(10s, b.read_exactly(6));
      CHECK(answer == "answer");
    }
  };
  cl::run(body());
}

TEST_CASE("stream: write after close() or write_eof() throws invalid_state_error", "[stream]") {
  auto body = []() -> cl::task<void> {
    auto [a, b] = net_test::stream_pair();
    a.write("last words");
    a.close();
    CHECK(a.is_closing());
    CHECK_THROWS_AS(a.write("more"), cl::invalid_state_error);
    a.close();  // idempotent
    co_await cl::timeout(10s, a.wait_closed());
    CHECK_THROWS_AS(a.write("more"), cl::invalid_state_error);
    std::string received = co_await cl::timeout(10s, b.read());
    CHECK(received == "last words");  // close() sent what was buffered

    b.write_eof();
    CHECK_THROWS_AS(b.write("after eof"), cl::invalid_state_error);

    cl::stream moved_from = std::move(b);
    CHECK_THROWS_AS(b.write("x"), cl::invalid_state_error);
    CHECK_FALSE(static_cast<bool>(b));
  };
  cl::run(body());
}

TEST_CASE("stream: close() while another task is blocked reading makes that read return EOF", "[stream]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const io_counts before = io_counts::now();
    {
      auto [a, b] = net_test::stream_pair();
      auto reading = cl::create_task(&read_all, std::ref(a));
      const bool parked = co_await eventually([&] { return loop.parked_operation_count() == before.parked + 1; });
      CHECK(parked);
      a.close();
      const std::size_t parked_after_close = co_await net_test::parked_once_settled(before.parked);  // IOCP: after the packet
      CHECK(parked_after_close == before.parked);
      std::string got = co_await cl::timeout(10s, reading);
      CHECK(got.empty());
      CHECK_FALSE(reading.cancelled());
      co_await cl::timeout(10s, a.wait_closed());
      // The other side sees the end too.
      std::string end = co_await cl::timeout(10s, b.read());
      CHECK(end.empty());
    }
    CHECK(io_counts::now().registered == before.registered);
    CHECK(io_counts::now().parked == before.parked);
  };
  cl::run(body());
}

// A cancel() that interrupted the read must stay a cancellation even when the
// stream is closed before the reading task runs again (asyncio: CancelledError).
TEST_CASE("stream: a read cancelled and then closed in the same iteration ends in cancelled_error", "[stream]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const io_counts before = io_counts::now();
    {
      auto [a, b] = net_test::stream_pair();
      bool went_on = false;
      auto reader = [&went_on](cl::stream& from) -> cl::task<void> {
        std::string got = co_await from.read();
        went_on = true;  // must not be reached: the task was cancelled
        (void)got;
      };
      auto reading = cl::create_task(reader, std::ref(a));
      const bool parked = co_await eventually([&] { return loop.parked_operation_count() == before.parked + 1; });
      CHECK(parked);
      CHECK(reading.cancel());
      a.close();
      bool cancelled = false;
      try {
        co_await cl::timeout(10s, reading);
      } catch (const cl::cancelled_error&) {
        cancelled = true;
      }
      CHECK(cancelled);
      CHECK_FALSE(went_on);
      CHECK(reading.cancelled());
    }
    CHECK(io_counts::now().registered == before.registered);
    CHECK(io_counts::now().parked == before.parked);
  };
  cl::run(body());
}

TEST_CASE("stream: wait_closed() returns once the buffered bytes are sent and the socket is closed", "[stream]") {
  auto body = []() -> cl::task<void> {
    const io_counts before = io_counts::now();
    {
      auto [a, b] = net_test::stream_pair();
      const std::size_t size = 4 * 1024 * 1024;  // far more than a socketpair buffers
      a.write(net_test::pattern(0, size));
      a.close();
      CHECK(a.is_closing());
      auto waiter = [](cl::stream& s) -> cl::task<void> { co_await s.wait_closed(); };
      auto waiting = cl::create_task(waiter, std::ref(a));
      co_await cl::sleep(20ms);
      CHECK_FALSE(waiting.done());  // the peer has read nothing yet
      CHECK(a.write_buffer_size() > 0);
      std::string received = co_await cl::timeout(30s, b.read());  // until EOF
      co_await cl::timeout(10s, waiting);
      CHECK(received.size() == size);
      CHECK(received == net_test::pattern(0, size));
      CHECK(a.write_buffer_size() == 0);
    }
    CHECK(io_counts::now().registered == before.registered);
    CHECK(io_counts::now().parked == before.parked);
  };
  cl::run(body());
}

TEST_CASE("stream: a send error reaches drain() and the next write() as std::system_error", "[stream]") {
  auto body = []() -> cl::task<void> {
    auto [a, b] = net_test::stream_pair();
    b.abort();  // the peer is gone
    std::string what;
    try {
      for (int i = 0; i < 64; ++i) {
        a.write(std::string(256 * 1024, 'x'));
        co_await cl::timeout(10s, a.drain());
      }
    } catch (const std::system_error& error) {
      what = error.what();
    }
    INFO("what(): " << what);
    CHECK(what.find("send") == 0);
    CHECK_THROWS_AS(a.write("more"), std::system_error);
  };
  cl::run(body());
}

TEST_CASE("stream: read(n) returns at most n bytes; a second concurrent reader is refused", "[stream]") {
  auto body = []() -> cl::task<void> {
    auto [a, b] = net_test::stream_pair();
    b.write("abcdef");
    std::string first = co_await cl::timeout(10s, a.read(4));
    CHECK(first == "abcd");
    std::string second = co_await cl::timeout(10s, a.read(4));
    CHECK(second == "ef");
    std::string none = co_await a.read(0);
    CHECK(none.empty());

    auto reading = cl::create_task(&read_all, std::ref(a));
    co_await cl::sleep(2ms);
    bool refused = false;
    try {
      (void)co_await a.read(1);
    } catch (const cl::invalid_state_error&) {
      refused = true;
    }
    CHECK(refused);
    b.write("tail");
    b.close();
    std::string rest = co_await cl::timeout(10s, reading);
    CHECK(rest == "tail");
  };
  cl::run(body());
}

TEST_CASE("stream: read to the end obeys the default max_read of 64 MiB", "[stream]") {
  auto body = []() -> cl::task<void> {
    constexpr std::size_t default_max_read = std::size_t{64} << 20;
    CHECK(cl::stream_options{}.max_read == default_max_read);
    auto [a, b] = net_test::stream_pair();
    auto writing = cl::create_task(&write_pattern, std::ref(b), default_max_read + 1, true);
    std::optional<cl::limit_overrun_error> overrun;
    try {
      (void)co_await cl::timeout(60s, a.read());
    } catch (const cl::limit_overrun_error& error) {
      overrun = error;
    }
    REQUIRE(overrun.has_value());
    INFO("what(): " << overrun->what());
    CHECK(std::string(overrun->what()).find(std::to_string(default_max_read)) != std::string::npos);
    CHECK(std::string(overrun->what()).find("max_read") != std::string::npos);
    CHECK(overrun->consumed == a.buffered().size());
    CHECK(a.buffered().size() > default_max_read);
    a.close();
    co_await cl::timeout(60s, writing);
  };
  cl::run(body());
}

TEST_CASE("stream: read to the end stops past max_read with limit_overrun_error, and keeps what it buffered",
          "[stream]") {
  auto body = []() -> cl::task<void> {
    constexpr std::size_t max_read = std::size_t{1} << 20;
    cl::stream_options options;
    options.max_read = max_read;
    {
      // A peer that keeps sending and never closes: read() gives up instead of growing.
      auto [a, b] = net_test::stream_pair(options);
      constexpr std::size_t sent = 8 * max_read;
      auto writing = cl::create_task(&write_pattern, std::ref(b), sent, false);
      std::optional<cl::limit_overrun_error> overrun;
      try {
        (void)co_await cl::timeout(30s, a.read());
      } catch (const cl::limit_overrun_error& error) {
        overrun = error;
      }
      REQUIRE(overrun.has_value());
      const std::string what = overrun->what();
      INFO("what(): " << what);
      CHECK(what.find("stream::read: more than 1048576 bytes before the end of the stream") != std::string::npos);
      CHECK(what.find("stream_options::max_read") != std::string::npos);
      CHECK(a.buffered().size() > max_read);
      CHECK(a.buffered().size() <= max_read + options.read_chunk);
      CHECK(overrun->consumed == a.buffered().size());
      // Nothing was lost: read(n) takes it all, in order, to the last byte.
      std::size_t received = 0;
      bool intact = true;
      for (int i = 0; i < 100'000 && received < sent; ++i) {
        const std::string part = co_await cl::timeout(30s, a.read(max_read / 2));
        REQUIRE_FALSE(part.empty());
        intact = intact && part == net_test::pattern(received, part.size());
        received += part.size();
      }
      CHECK(intact);
      CHECK(received == sent);
      co_await cl::timeout(30s, writing);
    }
    {
      // Exactly max_read bytes and the end: that is within the limit.
      auto [a, b] = net_test::stream_pair(options);
      auto writing = cl::create_task(&write_pattern, std::ref(b), max_read, true);
      const std::string all = co_await cl::timeout(30s, a.read());
      CHECK(all.size() == max_read);
      CHECK(all == net_test::pattern(0, max_read));
      co_await cl::timeout(30s, writing);
    }
    {
      // stream::npos: no limit, as asyncio's read(-1).
      cl::stream_options unbounded = options;
      unbounded.max_read = cl::stream::npos;
      auto [a, b] = net_test::stream_pair(unbounded);
      auto writing = cl::create_task(&write_pattern, std::ref(b), 3 * max_read, true);
      const std::string all = co_await cl::timeout(30s, a.read());
      CHECK(all.size() == 3 * max_read);
      co_await cl::timeout(30s, writing);
    }
  };
  cl::run(body());
}

TEST_CASE("stream: read_exactly over max_read is refused at once; up to it, it waits for every byte", "[stream]") {
  auto body = []() -> cl::task<void> {
    constexpr std::size_t max_read = std::size_t{1} << 20;
    cl::stream_options options;
    options.max_read = max_read;
    auto [a, b] = net_test::stream_pair(options);
    b.write("head");
    const std::size_t head = co_await cl::timeout(10s, a.fill());
    CHECK(head == 4);

    // Refused without waiting for data that will never come, nothing consumed.
    std::optional<cl::limit_overrun_error> overrun;
    try {
      (void)co_await cl::timeout(10s, a.read_exactly(max_read + 1));
    } catch (const cl::limit_overrun_error& error) {
      overrun = error;
    }
    REQUIRE(overrun.has_value());
    const std::string what = overrun->what();
    INFO("what(): " << what);
    CHECK(what.find("stream::read_exactly: 1048577 bytes asked for, more than 1048576 (stream_options::max_read)") !=
          std::string::npos);
    CHECK(overrun->consumed == 4);
    CHECK(a.buffered() == "head");
    // A length from the peer, however large, allocates nothing before it is refused.
    bool huge_refused = false;
    try {
      (void)co_await a.read_exactly(std::numeric_limits<std::size_t>::max() / 4);
    } catch (const cl::limit_overrun_error&) {
      huge_refused = true;
    }
    CHECK(huge_refused);

    // Exactly max_read (the "head" included) is fine.
    auto writing = cl::create_task(&write_pattern, std::ref(b), max_read - 4, false);
    const std::string all = co_await cl::timeout(30s, a.read_exactly(max_read));
    CHECK(all.size() == max_read);
    CHECK(all.substr(0, 4) == "head");
    CHECK(all.substr(4) == net_test::pattern(0, max_read - 4));
    co_await cl::timeout(30s, writing);

    // read(n) with a huge n returns what there is, without reserving n.
    b.write("tail");
    const std::string tail = co_await cl::timeout(10s, a.read(std::numeric_limits<std::size_t>::max() / 4));
    CHECK(tail == "tail");
  };
  cl::run(body());
}

// A parked fill() writes after what was buffered when it started: consuming
// everything meanwhile must not move where the next bytes are looked for.
TEST_CASE("stream: consuming everything while another task's fill() waits keeps the bytes that fill brings", "[stream]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const io_counts before = io_counts::now();
    auto [a, b] = net_test::stream_pair();
    b.write("old bytes");
    const std::size_t first = co_await cl::timeout(10s, a.fill());
    CHECK(first == 9);
    auto filler = [](cl::stream& from) -> cl::task<std::size_t> { co_return co_await from.fill(); };
    auto filling = cl::create_task(filler, std::ref(a));
    const bool parked = co_await eventually([&] { return loop.parked_operation_count() == before.parked + 1; });
    CHECK(parked);
    a.consume(a.buffered().size());
    CHECK(a.buffered().empty());
    b.write("new");
    const std::size_t added = co_await cl::timeout(10s, filling);
    CHECK(added == 3);
    CHECK(a.buffered() == "new");
  };
  cl::run(body());
}

namespace {

// Reads `from` to its end with read_into(buffer of `size`), returning the bytes and the
// largest single read.
cl::task<std::pair<std::string, std::size_t>> read_all_into(cl::stream& from, std::size_t size) {
  std::string buffer(size, '\0');
  std::string all;
  std::size_t largest = 0;
  for (int reads = 0; reads < 100'000; ++reads) {
    const std::size_t got = co_await cl::timeout(10s, from.read_into(buffer));
    if (got == 0) break;
    if (got > size) throw std::logic_error("read_into wrote past its buffer");
    largest = std::max(largest, got);
    all.append(buffer, 0, got);
  }
  co_return std::pair<std::string, std::size_t>(std::move(all), largest);
}

}  // namespace

TEST_CASE("stream: read_into gives buffered bytes first, reads a large buffer straight from the socket, 0 at the end",
          "[stream]") {
  auto body = []() -> cl::task<void> {
    cl::stream_options options;
    options.read_chunk = 4096;  // through the buffer: at most 4 KiB per read; straight: more
    auto [a, b] = net_test::stream_pair(options);
    std::string small(8, '\0');
    std::string empty;
    const std::size_t none = co_await a.read_into(empty);
    CHECK(none == 0);

    b.write("hello, world");
    const std::string first = co_await cl::timeout(10s, a.read(1));
    CHECK(first == "h");
    // A buffer smaller than read_chunk: what is buffered, at most its size.
    const std::size_t eight = co_await cl::timeout(10s, a.read_into(small));
    CHECK(eight == 8);
    CHECK(small == "ello, wo");
    CHECK(a.buffered() == "rld");
    std::string large(64 * 1024, '\0');
    const std::size_t three = co_await cl::timeout(10s, a.read_into(large));  // the buffered rest, no wait
    CHECK(three == 3);
    CHECK(large.substr(0, 3) == "rld");

    // A timed-out read_into loses nothing: the bytes that come later are read.
    auto reading = a.read_into(large);
    const bool timed_out = co_await test_support::times_out(20ms, std::move(reading));
    CHECK(timed_out);

    const std::size_t total = 3 * 1024 * 1024 + 17;
    auto writing = cl::create_task(&write_pattern, std::ref(b), total, true);
    auto [all, largest] = co_await read_all_into(a, 256 * 1024);
    co_await cl::timeout(10s, writing);
    CHECK(all.size() == total);
    CHECK(all == net_test::pattern(0, total));
    CHECK(largest > options.read_chunk);  // at least one read went straight into the buffer
    CHECK(a.buffered().empty());
    const std::size_t at_end = co_await a.read_into(large);
    CHECK(at_end == 0);
    CHECK(a.at_eof());
  };
  cl::run(body());
}

TEST_CASE("stream: read_into with a small buffer goes through the stream's buffer, byte-exact", "[stream]") {
  auto body = []() -> cl::task<void> {
    auto [a, b] = net_test::stream_pair();
    const std::size_t total = 300'001;
    auto writing = cl::create_task(&write_pattern, std::ref(b), total, true);
    auto [all, largest] = co_await read_all_into(a, 1000);
    co_await cl::timeout(10s, writing);
    CHECK(all == net_test::pattern(0, total));
    CHECK(largest <= 1000);
  };
  cl::run(body());
}
