// tests/test_backend.cpp - the backend (epoll, kqueue, IOCP) driven through
// read_some, write_some, wait_readable and wait_writable [backend].
//
// Pipes and socketpairs, non-blocking: a read parks until the peer writes; EOF;
// OS errors as std::system_error; cancelling a parked operation; a write to a
// full pipe parks until drained; release() drops the registration; many
// descriptors at once. Windows has neither pipes the backend takes nor
// socketpair: both are a loopback TCP connection there (net_helpers.hpp).
#include "coro_loop.hpp"
#include "catch.hpp"

#include "net_helpers.hpp"
#include "task_helpers.hpp"

#if defined(CORO_LOOP_POSIX)
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <vector>

namespace cl = coro_loop;
using namespace std::chrono_literals;
using namespace task_test;

namespace {

// Two descriptors, non-blocking, closed on destruction. Call release() on the
// loop's backend before they close (the tests do, and check the count).
struct fd_pair {
  cl::native_handle first = cl::invalid_handle;   // read end of a pipe, or one end of a socketpair
  cl::native_handle second = cl::invalid_handle;  // write end of a pipe, or the other end
  fd_pair(const fd_pair&) = delete;
  fd_pair& operator=(const fd_pair&) = delete;
  fd_pair(fd_pair&& other) noexcept : first(other.first), second(other.second) {
    other.first = other.second = cl::invalid_handle;
  }
  ~fd_pair() {
    close_first();
    close_second();
  }
  void close_first() { close_handle(first); }
  void close_second() { close_handle(second); }
#if defined(CORO_LOOP_WINDOWS)
  static fd_pair pipe() { return socketpair(); }
  static fd_pair socketpair() {
    const auto [one, other] = net_test::detail::connected_sockets();
    return fd_pair(one, other);
  }
#else
  static fd_pair pipe() {
    int fds[2];
    REQUIRE(::pipe2(fds, O_NONBLOCK | O_CLOEXEC) == 0);
    return fd_pair(fds[0], fds[1]);
  }
  static fd_pair socketpair() {
    int fds[2];
    REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, fds) == 0);
    return fd_pair(fds[0], fds[1]);
  }
#endif

 private:
  fd_pair(cl::native_handle a, cl::native_handle b) : first(a), second(b) {}
  static void close_handle(cl::native_handle& handle) {
    if (handle == cl::invalid_handle) return;
#if defined(CORO_LOOP_WINDOWS)
    ::closesocket(handle);
#else
    ::close(handle);
#endif
    handle = cl::invalid_handle;
  }
};

// Writes `text` with a plain OS call, behind the loop's back; the bytes written or -1.
long write_raw(cl::native_handle handle, std::string_view text) {
#if defined(CORO_LOOP_WINDOWS)
  return ::send(handle, text.data(), static_cast<int>(text.size()), 0);
#else
  return static_cast<long>(::write(handle, text.data(), text.size()));
#endif
}

std::span<const std::byte> bytes_of(const std::string& text) { return std::as_bytes(std::span(text)); }

std::string text_of(std::span<const std::byte> data) {
  return std::string(reinterpret_cast<const char*>(data.data()), data.size());
}

void release(cl::native_handle fd) { cl::get_running_loop().release(fd); }

// Reads until `count` bytes arrived or EOF.
cl::task<std::string> read_exactly(cl::native_handle fd, std::size_t count) {
  std::string out;
  std::array<std::byte, 4096> buffer{};
  while (out.size() < count) {
    std::size_t want = std::min(buffer.size(), count - out.size());
    std::size_t got = co_await cl::read_some(fd, std::span(buffer).first(want));
    if (got == 0) break;
    out += text_of(std::span(buffer).first(got));
  }
  co_return out;
}

cl::task<void> write_all(cl::native_handle fd, std::string data) {
  std::size_t written = 0;
  while (written < data.size()) {
    written += co_await cl::write_some(fd, bytes_of(data).subspan(written));
  }
}

}  // namespace

#if defined(CORO_LOOP_BACKEND_IO_URING)
namespace {

// What the kernel says to io_uring_setup, asked directly: the backend must agree.
bool kernel_allows_io_uring() {
  io_uring_params params{};
  const long ring = ::syscall(__NR_io_uring_setup, 4, &params);
  if (ring < 0) return false;
  ::close(static_cast<int>(ring));
  return true;
}

bool io_uring_turned_off() {
  const char* setting = std::getenv("CORO_LOOP_IO_URING");
  return setting != nullptr && (std::string_view(setting) == "0" || std::string_view(setting) == "off");
}

}  // namespace
#endif

TEST_CASE("backend: the loop names its backend; io_uring falls back to epoll where refused or turned off",
          "[backend]") {
  {
    cl::event_loop loop;
    const std::string name = loop.backend_name();
#if defined(CORO_LOOP_BACKEND_IO_URING)
    const bool expected_io_uring = kernel_allows_io_uring() && !io_uring_turned_off();
    CHECK(name == (expected_io_uring ? "io_uring" : "epoll"));
#elif defined(CORO_LOOP_BACKEND_EPOLL)
    CHECK(name == "epoll");
#elif defined(CORO_LOOP_BACKEND_KQUEUE)
    CHECK(name == "kqueue");
#else
    CHECK(name == "iocp");
#endif
    loop.close();
    CHECK(std::string_view(loop.backend_name()) == "closed");
  }
#if defined(CORO_LOOP_BACKEND_IO_URING)
  // CORO_LOOP_IO_URING=0: the epoll backend, which works as ever.
  const test_support::scoped_env off("CORO_LOOP_IO_URING", "0");
  cl::event_loop fallback;
  CHECK(std::string_view(fallback.backend_name()) == "epoll");
  const std::string echoed = fallback.run_until_complete([]() -> cl::task<std::string> {
    fd_pair pipe = fd_pair::pipe();
    auto reader = cl::create_task([&]() -> cl::task<std::string> { co_return co_await read_exactly(pipe.first, 5); });
    co_await cl::sleep(0ms);
    CHECK(cl::get_running_loop().parked_operation_count() == 1);
    REQUIRE(write_raw(pipe.second, "hello") == 5);
    std::string got = co_await reader;
    release(pipe.first);
    co_return got;
  }());
  CHECK(echoed == "hello");
  fallback.close();
#endif
}

#if defined(__linux__)  // accept4, SOCK_CLOEXEC
namespace {

// A blocking loopback connect to `port`: the listener's backlog completes it
// without the loop running. The client's descriptor.
int connect_blocking(std::uint16_t port) {
  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in where{};
  where.sin_family = AF_INET;
  where.sin_port = htons(port);
  where.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::connect(client, reinterpret_cast<const sockaddr*>(&where), sizeof where) == 0);
  return client;
}

}  // namespace

// The listener's readiness is reported (io_uring: its poll completes) but not yet
// handled when the listener is released and closed, and its number is taken by a
// new listener with a client waiting: the parked accept must end, and the new
// listener's client must stay for it.
TEST_CASE("backend: an accept released with its listener never accepts from the next file of that number",
          "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::socket first = cl::socket::open(AF_INET, SOCK_STREAM);
    first.bind(*cl::address::parse("127.0.0.1", 0));
    first.listen(8);
    const cl::native_handle number = first.handle();
    std::string outcome = "not ended";
    auto acceptor = cl::create_task([&]() -> cl::task<void> {
      try {
        auto accepted = co_await first.accept();
        outcome = "accepted from port " + std::to_string(accepted.first.local_address().port());
      } catch (...) {
        outcome = "ended without a connection";
      }
    });
    co_await cl::sleep(0ms);
    co_await cl::sleep(0ms);  // parked (io_uring: its poll may still be queued; release() submits it)
    const int early_client = connect_blocking(first.local_address().port());
    first.close();  // releases, then closes: all before the loop runs again
    int second = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (second != number) {
      REQUIRE(::dup2(second, number) == number);
      ::close(second);
      second = number;
    }
    sockaddr_in any_port{};
    any_port.sin_family = AF_INET;
    any_port.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(second, reinterpret_cast<const sockaddr*>(&any_port), sizeof any_port) == 0);
    REQUIRE(::listen(second, 8) == 0);
    socklen_t length = sizeof any_port;
    REQUIRE(::getsockname(second, reinterpret_cast<sockaddr*>(&any_port), &length) == 0);
    const int late_client = connect_blocking(ntohs(any_port.sin_port));
    co_await acceptor;
    CHECK(outcome == "ended without a connection");
    // The new listener's client is still there for it (bounded: the handshake's
    // last step may be handled a moment after connect() returned).
    pollfd ready{second, POLLIN, 0};
    CHECK(::poll(&ready, 1, 5000) == 1);
    const int taken = ::accept4(second, nullptr, nullptr, SOCK_CLOEXEC);
    CHECK(taken >= 0);
    for (int handle : {taken, late_client, early_client, second}) {
      if (handle >= 0) ::close(handle);
    }
  };
  cl::run(body());
}
#endif

#if defined(CORO_LOOP_POSIX)  // Windows: 5,000 overlapped probes of one loopback socket under wine
// More completions at once than io_uring's completion ring holds (4,096): the
// kernel holds the rest back, and a loop kept busy (a task yielding with sleep(0),
// so the loop never waits) must still collect them.
TEST_CASE("backend: five thousand waits ready at once all complete while the loop stays busy", "[backend]") {
  auto body = []() -> cl::task<void> {
    fd_pair pipe = fd_pair::pipe();
    constexpr int waiters = 5000;
    int woken = 0;
    std::vector<cl::task_handle<void>> handles;
    for (int i = 0; i < waiters; ++i) {
      handles.push_back(cl::create_task([&]() -> cl::task<void> {
        co_await cl::wait_readable(pipe.first);
        ++woken;
      }));
    }
    co_await cl::sleep(10ms);  // all parked, and handed to the OS
    REQUIRE(write_raw(pipe.second, "x") == 1);
    long iterations = 0;
    const cl::time_point deadline = cl::clock::now() + 5s;
    while (woken < waiters && cl::clock::now() < deadline) {
      co_await cl::sleep(0ms);
      ++iterations;
    }
    INFO("after " << iterations << " busy iterations");
    CHECK(woken == waiters);
    const std::size_t finished = co_await settle(handles, 5s);
    CHECK(finished == waiters);
    release(pipe.first);
  };
  cl::run(body());
}
#endif

TEST_CASE("backend: a read parks until the other end writes, and the data arrives intact", "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair pipe = fd_pair::pipe();
    std::vector<std::string> log;
    auto reader = cl::create_task([&]() -> cl::task<std::string> {
      std::array<std::byte, 64> buffer{};
      log.push_back("read starts");
      std::size_t got = co_await cl::read_some(pipe.first, buffer);
      log.push_back("read done");
      co_return text_of(std::span(buffer).first(got));
    });
    auto writer = cl::create_task([&]() -> cl::task<std::size_t> {
      co_await cl::sleep(20ms);
      log.push_back("write");
      std::string message = "hello, pipe";
      std::size_t written = co_await cl::write_some(pipe.second, bytes_of(message));
      co_return written;
    });
    co_await cl::sleep(0ms);
    CHECK(loop.parked_operation_count() == 1);  // the reader, parked on EAGAIN
    CHECK(loop.registered_handle_count() == 1);
    CHECK_FALSE(reader.done());
    std::string received = co_await reader;
    std::size_t written = co_await writer;
    CHECK(written == 11);
    CHECK(received == "hello, pipe");
    CHECK(log == std::vector<std::string>{"read starts", "write", "read done"});
    CHECK(loop.parked_operation_count() == 0);
    release(pipe.first);
#if defined(CORO_LOOP_BACKEND_IOCP)
    // IOCP associates a socket with the port at its first operation, the write end too.
    release(pipe.second);
#endif
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: a read with data already waiting completes without parking", "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair pipe = fd_pair::pipe();
    REQUIRE(write_raw(pipe.second, "ready") == 5);
    std::array<std::byte, 3> small{};
    std::size_t got = co_await cl::read_some(pipe.first, small);
    CHECK(got == 3);
    CHECK(text_of(small) == "rea");
    got = co_await cl::read_some(pipe.first, small);
    CHECK(got == 2);
    CHECK(text_of(std::span(small).first(2)) == "dy");
#if defined(CORO_LOOP_BACKEND_IOCP)
    // IOCP associates the socket with the port at its first operation, parked or not.
    release(pipe.first);
#endif
    CHECK(loop.registered_handle_count() == 0);  // nothing parked, nothing registered
    CHECK(loop.parked_operation_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: read_some returns 0 at end of file", "[backend]") {
  SECTION("the writer closes while the read is parked") {
    auto body = []() -> cl::task<void> {
      fd_pair pipe = fd_pair::pipe();
      auto reader = cl::create_task([&]() -> cl::task<std::size_t> {
        std::array<std::byte, 16> buffer{};
        std::size_t got = co_await cl::read_some(pipe.first, buffer);
        co_return got;
      });
      co_await cl::sleep(5ms);
      CHECK(cl::get_running_loop().parked_operation_count() == 1);
      pipe.close_second();
      std::size_t got = co_await reader;
      CHECK(got == 0);
      release(pipe.first);
    };
    cl::run(body());
  }
  SECTION("data, then end of file, on a socketpair") {
    auto body = []() -> cl::task<void> {
      fd_pair pair = fd_pair::socketpair();
      REQUIRE(write_raw(pair.second, "tail") == 4);
      pair.close_second();
      std::string all = co_await read_exactly(pair.first, 100);
      CHECK(all == "tail");
      std::array<std::byte, 4> buffer{};
      std::size_t again = co_await cl::read_some(pair.first, buffer);
      CHECK(again == 0);
      release(pair.first);
    };
    cl::run(body());
  }
}

TEST_CASE("backend: OS errors are std::system_error naming the operation and the fd", "[backend]") {
  SECTION("reading a closed fd") {
    auto body = []() -> cl::task<void> {
      fd_pair pipe = fd_pair::pipe();
      const cl::native_handle closed = pipe.first;
      pipe.close_first();
      std::array<std::byte, 4> buffer{};
      bool threw = false;
      try {
        (void)co_await cl::read_some(closed, buffer);
      } catch (const std::system_error& error) {
        threw = true;
#if defined(CORO_LOOP_WINDOWS)
        // A closed SOCKET is no socket any more: Winsock says WSAENOTSOCK.
        const bool bad_handle = error.code() == std::errc::bad_file_descriptor || error.code() == std::errc::not_a_socket;
        CHECK(bad_handle);
#else
        CHECK(error.code() == std::errc::bad_file_descriptor);
#endif
        CHECK_THAT(error.what(), Catch::Matchers::ContainsSubstring("read"));
        CHECK_THAT(error.what(), Catch::Matchers::ContainsSubstring(std::to_string(closed)));
      }
      CHECK(threw);
      CHECK(cl::get_running_loop().parked_operation_count() == 0);
    };
    cl::run(body());
  }
#if defined(CORO_LOOP_POSIX)
  SECTION("writing to a pipe whose read end is closed: EPIPE, no SIGPIPE") {
    auto body = []() -> cl::task<void> {
      fd_pair pipe = fd_pair::pipe();
      pipe.close_first();
      std::string data = "lost";
      bool threw = false;
      try {
        (void)co_await cl::write_some(pipe.second, bytes_of(data));
      } catch (const std::system_error& error) {
        threw = true;
        CHECK(error.code() == std::errc::broken_pipe);
        CHECK_THAT(error.what(), Catch::Matchers::ContainsSubstring("write"));
      }
      CHECK(threw);
    };
    cl::run(body());
  }
#else
  SECTION("writing to a connection whose peer closed: a std::system_error (reset or broken pipe)") {
    // TCP takes the first write after the peer's close (the peer answers it with
    // RST); a later one fails. Bounded: 100 writes, a millisecond apart.
    auto body = []() -> cl::task<void> {
      fd_pair pipe = fd_pair::pipe();
      pipe.close_first();
      std::string data = "lost";
      bool threw = false;
      for (int attempt = 0; attempt < 100 && !threw; ++attempt) {
        try {
          (void)co_await cl::write_some(pipe.second, bytes_of(data));
          co_await cl::sleep(1ms);
        } catch (const std::system_error& error) {
          threw = true;
          INFO(error.what());
          const bool peer_gone = error.code() == std::errc::connection_reset ||
                                 error.code() == std::errc::broken_pipe ||
                                 error.code() == std::errc::connection_aborted;
          CHECK(peer_gone);
          CHECK_THAT(error.what(), Catch::Matchers::ContainsSubstring("write"));
        }
      }
      CHECK(threw);
      release(pipe.second);
    };
    cl::run(body());
  }
#endif
  SECTION("a parked read whose fd was released (closed) fails with ECANCELED, not as a cancellation") {
    auto body = []() -> cl::task<void> {
      cl::event_loop& loop = cl::get_running_loop();
      fd_pair pipe = fd_pair::pipe();
      auto reader = cl::create_task([&]() -> cl::task<std::size_t> {
        std::array<std::byte, 4> buffer{};
        std::size_t got = co_await cl::read_some(pipe.first, buffer);
        co_return got;
      });
      co_await cl::sleep(0ms);
      CHECK(loop.parked_operation_count() == 1);
      release(pipe.first);
      const std::size_t parked_after_release = co_await net_test::parked_once_settled();  // IOCP: after the packet
      CHECK(parked_after_release == 0);
      CHECK(loop.registered_handle_count() == 0);
      pipe.close_first();
      bool failed_with_ecanceled = false;
      try {
        (void)co_await reader;
      } catch (const std::system_error& error) {
        failed_with_ecanceled = error.code() == std::errc::operation_canceled;
        CHECK_THAT(error.what(), Catch::Matchers::ContainsSubstring("closed while the operation waited"));
      }
      CHECK(failed_with_ecanceled);
      CHECK_FALSE(reader.cancelled());
    };
    cl::run(body());
  }
}

TEST_CASE("backend: cancelling a parked read throws cancelled_error in the reader and unparks it", "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair pipe = fd_pair::pipe();
    bool reader_saw_cancel = false;
    auto reader = cl::create_task([&]() -> cl::task<std::size_t> {
      std::array<std::byte, 16> buffer{};
      try {
        std::size_t got = co_await cl::read_some(pipe.first, buffer);
        co_return got;
      } catch (const cl::cancelled_error&) {
        reader_saw_cancel = true;
        throw;
      }
    });
    auto canceller = cl::create_task([&]() -> cl::task<void> {
      co_await cl::sleep(10ms);
      CHECK(loop.parked_operation_count() == 1);
      reader.cancel();
      const std::size_t parked_after_cancel = co_await net_test::parked_once_settled();  // IOCP: after the packet
      CHECK(parked_after_cancel == 0);
    });
    bool cancelled = co_await ends_cancelled(reader);
    co_await canceller;
    CHECK(cancelled);
    CHECK(reader_saw_cancel);
    CHECK(reader.cancelled());
    CHECK(loop.parked_operation_count() == 0);
    // Data written afterwards is still there for the next read: nothing consumed it.
    REQUIRE(write_raw(pipe.second, "z") == 1);
    std::string next = co_await read_exactly(pipe.first, 1);
    CHECK(next == "z");
    release(pipe.first);
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

// The data arrives while the loop is held up (a blocking sleep on the loop
// thread), then the reader is cancelled. epoll/kqueue: the read had not run,
// so it ends cancelled and the data is still in the socket. IOCP and io_uring:
// the OS finished the read before the cancel reached it, so the read returns the
// data and the cancel comes at the reader's next suspension. Either way, no byte is lost.
TEST_CASE("backend: a read the OS finished before the cancel keeps its data; otherwise the data stays unread",
          "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair pipe = fd_pair::socketpair();
    std::vector<std::string> log;
    auto reader = cl::create_task([&]() -> cl::task<void> {
      std::array<std::byte, 16> buffer{};
      const std::size_t got = co_await cl::read_some(pipe.first, buffer);
      log.push_back("read " + text_of(std::span(buffer).first(got)));
      co_await cl::sleep(0ms);  // the next suspension point: the cancel arrives here
      log.push_back("after the next suspension");
    });
    co_await cl::sleep(20ms);
    REQUIRE(loop.parked_operation_count() == 1);
    REQUIRE(write_raw(pipe.second, "data") == 4);
    std::this_thread::sleep_for(200ms);  // generous: the OS completes the read meanwhile (IOCP)
    reader.cancel();
    const bool cancelled = co_await ends_cancelled(reader);  // named: GCC 12 evaluates a co_await in CHECK twice
    CHECK(cancelled);
    CHECK(reader.cancelled());
    if (net_test::completion_based(loop)) {
      CHECK(log == std::vector<std::string>{"read data"});
    } else {
      CHECK(log.empty());
      const std::string unread = co_await read_exactly(pipe.first, 4);
      CHECK(unread == "data");
    }
    const std::size_t parked = co_await net_test::parked_once_settled();
    CHECK(parked == 0);
    release(pipe.first);
    release(pipe.second);
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: a write to a full pipe parks and resumes when the reader drains it", "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair pipe = fd_pair::pipe();
#if defined(CORO_LOOP_WINDOWS)
    // A loopback socket: 16 MiB is more than its buffers take (a few MiB), so the
    // overlapped send stays pending while the reader reads nothing. Not smaller
    // buffers instead: with a 4 KiB receive window every segment waits for a
    // delayed ACK, and the transfer takes minutes.
    const int capacity = 4 << 20;
#else
    ::fcntl(pipe.second, F_SETPIPE_SZ, 4096);  // best effort: a small pipe fills fast
    const int capacity = ::fcntl(pipe.second, F_GETPIPE_SZ);
#endif
    REQUIRE(capacity > 0);
    const std::size_t total = static_cast<std::size_t>(capacity) * 4;
    std::string payload(total, '\0');
    for (std::size_t i = 0; i < total; ++i) payload[i] = static_cast<char>('a' + i % 23);
    bool writer_done = false;
    auto writer = cl::create_task([&]() -> cl::task<void> {
      co_await write_all(pipe.second, payload);
      writer_done = true;
    });
    co_await cl::sleep(10ms);
    // The pipe is full: the writer waits in the backend.
    CHECK_FALSE(writer_done);
    CHECK(loop.parked_operation_count() == 1);
    std::string received = co_await read_exactly(pipe.first, total);
    co_await writer;
    CHECK(writer_done);
    CHECK(received.size() == total);
    CHECK(received == payload);
    CHECK(loop.parked_operation_count() == 0);
    release(pipe.first);
    release(pipe.second);
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: release() drops the registration of a descriptor", "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair a = fd_pair::pipe();
    fd_pair b = fd_pair::pipe();
    // Park a read on each, then satisfy it: the registrations stay until released.
    for (fd_pair* pipe : {&a, &b}) {
      auto reader = cl::create_task([pipe]() -> cl::task<std::string> {
        std::string got = co_await read_exactly(pipe->first, 2);
        co_return got;
      });
      co_await cl::sleep(0ms);
      REQUIRE(write_raw(pipe->second, "ok") == 2);
      std::string got = co_await reader;
      CHECK(got == "ok");
    }
    CHECK(loop.registered_handle_count() == 2);
    loop.release(a.first);
    CHECK(loop.registered_handle_count() == 1);
    loop.release(a.first);  // twice: no-op
    loop.release(cl::invalid_handle);  // unknown: no-op
    loop.release(static_cast<cl::native_handle>(100000));
    CHECK(loop.registered_handle_count() == 1);
    loop.release(b.first);
    CHECK(loop.registered_handle_count() == 0);
    // A released fd can be used again: it registers anew.
    auto reader = cl::create_task([&]() -> cl::task<std::string> {
      std::string got = co_await read_exactly(a.first, 3);
      co_return got;
    });
    co_await cl::sleep(0ms);
    CHECK(loop.registered_handle_count() == 1);
    REQUIRE(write_raw(a.second, "new") == 3);
    std::string again = co_await reader;
    CHECK(again == "new");
    loop.release(a.first);
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: wait_readable parks until the peer writes; wait_writable sees a writable socket", "[backend]") {
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    fd_pair pair = fd_pair::socketpair();
    std::vector<std::string> log;
    auto waiter = cl::create_task([&]() -> cl::task<std::string> {
      co_await cl::wait_readable(pair.first);
      log.push_back("readable");
      char buffer[16];
      const auto got = ::recv(pair.first, buffer, static_cast<int>(sizeof buffer), 0);  // "other code" reads
      co_return std::string(buffer, got > 0 ? static_cast<std::size_t>(got) : 0);
    });
    co_await cl::sleep(10ms);
    CHECK_FALSE(waiter.done());
    CHECK(loop.parked_operation_count() == 1);
    log.push_back("send");
    REQUIRE(::send(pair.second, "ping", 4, 0) == 4);
    std::string got = co_await waiter;
    CHECK(got == "ping");
    CHECK(log == std::vector<std::string>{"send", "readable"});
    co_await cl::wait_writable(pair.second);  // an empty socket buffer: writable
    release(pair.first);
    release(pair.second);
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: wait_readable / wait_writable complete when the fd is already ready, however often asked",
          "[backend]") {
  // Readiness, not edges: an fd that is readable (writable) now must satisfy
  // the wait now, even if it was registered earlier and no new edge comes.
  auto body = []() -> cl::task<void> {
    fd_pair pair = fd_pair::socketpair();
    bool timed_out = false;
    int waits_done = 0;
    auto waiter = cl::create_task([&]() -> cl::task<void> {
      co_await cl::wait_writable(pair.first);
      ++waits_done;
      co_await cl::wait_writable(pair.first);  // still writable: no new edge will come
      ++waits_done;
      REQUIRE(::send(pair.second, "x", 1, 0) == 1);
      co_await cl::wait_readable(pair.first);
      ++waits_done;
      co_await cl::wait_readable(pair.first);  // the byte is still unread
      ++waits_done;
    });
    auto watchdog = cl::create_task([&]() -> cl::task<void> {
      co_await cl::sleep(2s);
      timed_out = true;
      waiter.cancel();
    });
    bool cancelled = co_await ends_cancelled(waiter);
    watchdog.cancel();
    (void)co_await ends_cancelled(watchdog);
    CHECK_FALSE(cancelled);
    CHECK_FALSE(timed_out);
    CHECK(waits_done == 4);
    release(pair.first);
  };
  cl::run(body());
}

TEST_CASE("backend: read_some and write_some move data both ways on a socketpair", "[backend]") {
  auto body = []() -> cl::task<void> {
    fd_pair pair = fd_pair::socketpair();
    std::string big(200'000, 'q');  // more than a socket buffer: partial writes and parking
    for (std::size_t i = 0; i < big.size(); i += 997) big[i] = static_cast<char>('A' + i % 26);
    auto sender = cl::create_task(write_all(pair.first, big));
    std::string received = co_await read_exactly(pair.second, big.size());
    co_await sender;
    CHECK(received == big);
    auto back = cl::create_task(write_all(pair.second, "reply"));
    std::string reply = co_await read_exactly(pair.first, 5);
    co_await back;
    CHECK(reply == "reply");
    release(pair.first);
    release(pair.second);
    CHECK(cl::get_running_loop().registered_handle_count() == 0);
  };
  cl::run(body());
}

TEST_CASE("backend: 100 concurrent pipe pairs ping-pong bytes", "[backend]") {
  constexpr int pairs = 100;
  constexpr int rounds = 50;
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    // For each pair: one pipe each way.
    std::vector<fd_pair> to_pong;
    std::vector<fd_pair> to_ping;
    for (int i = 0; i < pairs; ++i) {
      to_pong.push_back(fd_pair::pipe());
      to_ping.push_back(fd_pair::pipe());
    }
    auto ping = [](cl::native_handle out, cl::native_handle in, int id) -> cl::task<int> {
      int completed = 0;
      std::array<std::byte, 1> byte{};
      for (int round = 0; round < rounds; ++round) {
        byte[0] = static_cast<std::byte>((id + round) & 0xff);
        std::size_t written = co_await cl::write_some(out, byte);
        REQUIRE(written == 1);
        std::size_t got = co_await cl::read_some(in, byte);
        REQUIRE(got == 1);
        if (byte[0] == static_cast<std::byte>((id + round + 1) & 0xff)) ++completed;
      }
      co_return completed;
    };
    auto pong = [](cl::native_handle in, cl::native_handle out) -> cl::task<int> {
      int echoed = 0;
      std::array<std::byte, 1> byte{};
      for (;;) {
        std::size_t got = co_await cl::read_some(in, byte);
        if (got == 0) break;  // ping closed its end
        byte[0] = static_cast<std::byte>((static_cast<int>(byte[0]) + 1) & 0xff);
        std::size_t written = co_await cl::write_some(out, byte);
        REQUIRE(written == 1);
        ++echoed;
      }
      co_return echoed;
    };
    std::vector<cl::task_handle<int>> pongs;
    std::vector<cl::task_handle<int>> pings;
    for (int i = 0; i < pairs; ++i) {
      auto index = static_cast<std::size_t>(i);
      pongs.push_back(cl::create_task(pong, to_pong[index].first, to_ping[index].second));
      pings.push_back(cl::create_task(ping, to_pong[index].second, to_ping[index].first, i));
    }
    int completed = 0;
    for (auto& handle : pings) completed += co_await handle;
    CHECK(completed == pairs * rounds);
    // EOF ends each pong.
    for (auto& pipe : to_pong) {
      release(pipe.second);
      pipe.close_second();
    }
    int echoed = 0;
    for (auto& handle : pongs) echoed += co_await handle;
    CHECK(echoed == pairs * rounds);
    CHECK(loop.parked_operation_count() == 0);
    for (int i = 0; i < pairs; ++i) {
      auto index = static_cast<std::size_t>(i);
      release(to_pong[index].first);
      release(to_ping[index].first);
      release(to_ping[index].second);
    }
    CHECK(loop.registered_handle_count() == 0);
  };
  cl::run(body());
}

// After a short read of a byte stream the backend parks the next read without
// trying it (nothing is left until the OS reports more). End of file is
// reported once, possibly with the data of the short read: the read after it
// must still see the end at once, on a pipe and on a socket alike.
TEST_CASE("backend: data and end of file arriving together: the read after the short one returns 0", "[backend]") {
  for (const bool use_socket : {false, true}) {
    CAPTURE(use_socket);
    auto body = [use_socket]() -> cl::task<void> {
      fd_pair pair = use_socket ? fd_pair::socketpair() : fd_pair::pipe();
      std::vector<std::size_t> reads;
      auto reader = cl::create_task([&]() -> cl::task<void> {
        for (int i = 0; i < 3; ++i) {
          std::array<std::byte, 64> buffer{};
          const std::size_t got = co_await cl::read_some(pair.first, buffer);
          reads.push_back(got);
          if (got == 0) co_return;
        }
      });
      co_await cl::sleep(0ms);  // the first read is parked now
      CHECK(write_raw(pair.second, "abc") == 3);
      pair.close_second();  // the end of file joins the data before the loop polls again
      co_await cl::timeout(5s, reader);
      CHECK(reader.done());
      CHECK(reads == std::vector<std::size_t>{3, 0});
      release(pair.first);
    };
    cl::run(body());
  }
}

TEST_CASE("backend: a read after a short one waits for more and gets it, many times over", "[backend]") {
  auto body = []() -> cl::task<void> {
    fd_pair pair = fd_pair::socketpair();
    std::string received;
    auto reader = cl::create_task([&]() -> cl::task<void> {
      while (received.size() < 300) {
        std::array<std::byte, 64> buffer{};
        const std::size_t got = co_await cl::read_some(pair.first, buffer);
        if (got == 0) co_return;
        received += text_of(std::span(buffer).first(got));
      }
    });
    for (int i = 0; i < 100; ++i) {
      CHECK(write_raw(pair.second, "xyz") == 3);  // each a short read for the reader
      co_await cl::sleep(0ms);
      if (i % 7 == 0) co_await cl::sleep(1ms);  // sometimes the loop blocks in the poll first
    }
    co_await cl::timeout(5s, reader);
    CHECK(received.size() == 300);
    release(pair.first);
  };
  cl::run(body());
}
