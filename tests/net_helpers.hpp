// tests/net_helpers.hpp - small helpers shared by the tests that use sockets and streams.
// Included after catch.hpp and coro_loop.hpp; everything is inline.
// POSIX and Windows: the few OS calls the tests make themselves are wrapped here.
#pragma once

#include "test_support.hpp"

#if defined(CORO_LOOP_POSIX)
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>
#endif

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>
#include <system_error>
#include <tuple>
#include <utility>

namespace net_test {

namespace cl = coro_loop;
using namespace std::chrono_literals;

// The loop's I/O bookkeeping at one moment: what must come back once every
// socket, stream and server made since is closed.
struct io_counts {
  std::size_t registered = 0;
  std::size_t parked = 0;
  static io_counts now() {
    cl::event_loop& loop = cl::get_running_loop();
    return {loop.registered_handle_count(), loop.parked_operation_count()};
  }
};

using test_support::eventually;

// True on the completion-based backends (IOCP, io_uring): a cancel only asks, and the
// operation finishes, cancelled or with its result, when the OS confirms.
inline bool completion_based(cl::event_loop& loop) {
  const std::string_view name = loop.backend_name();
  return name == "iocp" || name == "io_uring";
}

// The loop's parked operations once those just cancelled or released have finished.
// epoll and kqueue unpark an operation at once; the completion-based backends cannot:
// a cancelled operation owns its buffer until the OS confirms the cancel, so it stays
// parked until the loop has seen that completion. There this waits for the count to
// come down to `expected`, bounded by `limit`; elsewhere it answers at once, so the
// check stays as strict as it was.
inline cl::task<std::size_t> parked_once_settled(std::size_t expected = 0, cl::duration limit = 5s) {
  cl::event_loop& loop = cl::get_running_loop();
  if (completion_based(loop)) {
    const cl::time_point deadline = cl::clock::now() + limit;
    while (loop.parked_operation_count() > expected && cl::clock::now() < deadline) co_await cl::sleep(1ms);
  }
  co_return loop.parked_operation_count();
}

// A TCP port on 127.0.0.1 with no listener: bound to port 0, read, closed.
inline std::uint16_t unused_port() {
  cl::socket probe = cl::socket::open(AF_INET, SOCK_STREAM);
  probe.bind(*cl::address::parse("127.0.0.1", 0));
  return probe.local_address().port();
}

// Makes the next close of `handle` send RST instead of FIN (SO_LINGER with a zero
// timeout: an abortive close). False when the option could not be set.
inline bool reset_on_close(cl::native_handle handle) {
#if defined(CORO_LOOP_WINDOWS)
  const ::linger abortive{1, 0};
  return ::setsockopt(handle, SOL_SOCKET, SO_LINGER, reinterpret_cast<const char*>(&abortive),
                      sizeof abortive) == 0;
#else
  const ::linger abortive{1, 0};
  return ::setsockopt(handle, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive) == 0;
#endif
}

#if defined(CORO_LOOP_WINDOWS)
namespace detail {
// A blocking Winsock call that failed, as the exception the tests expect.
[[noreturn]] inline void throw_socket_error(const char* what) {
  throw std::system_error(::WSAGetLastError(), std::system_category(), what);
}

// Two connected TCP sockets over loopback (Windows has no socketpair): a listener on
// 127.0.0.1 port 0, one blocking connect and accept, the listener closed again. Made
// overlapped (WSASocket's flag, accept inherits it) so that the loop can take them
// over; Nagle is off on both ends, as a Unix socket does not delay small writes either.
inline std::pair<SOCKET, SOCKET> connected_sockets() {
  cl::socket listener = cl::socket::open(AF_INET, SOCK_STREAM);
  listener.bind(*cl::address::parse("127.0.0.1", 0));
  if (::listen(listener.handle(), 1) != 0) throw_socket_error("listen");
  const cl::address listening = listener.local_address();
  const SOCKET client = ::WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
  if (client == INVALID_SOCKET) throw_socket_error("socket");
  if (::connect(client, listening.data(), static_cast<int>(listening.size())) != 0) {
    ::closesocket(client);
    throw_socket_error("connect");
  }
  const SOCKET server = ::accept(listener.handle(), nullptr, nullptr);
  if (server == INVALID_SOCKET) {
    ::closesocket(client);
    throw_socket_error("accept");
  }
  const BOOL no_delay = TRUE;
  for (const SOCKET end : {client, server}) {
    ::setsockopt(end, IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&no_delay), sizeof no_delay);
  }
  return {server, client};
}
}  // namespace detail

// Two connected streams over loopback TCP.
inline std::pair<cl::stream, cl::stream> stream_pair(cl::stream_options options = {}) {
  const auto [first, second] = detail::connected_sockets();
  return {cl::stream(cl::socket(first), options), cl::stream(cl::socket(second), options)};
}
#else
// Two connected streams over a Unix socketpair.
inline std::pair<cl::stream, cl::stream> stream_pair(cl::stream_options options = {}) {
  int fds[2] = {-1, -1};
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    throw std::system_error(errno, std::generic_category(), "socketpair");
  }
  return {cl::stream(cl::socket(fds[0]), options), cl::stream(cl::socket(fds[1]), options)};
}
#endif

// Two connected raw handles for tests that call read_some / wait_readable on a handle
// themselves: a non-blocking pipe on POSIX, a loopback TCP connection on Windows
// (read_some takes sockets only there). write() writes with a plain OS call, behind
// the loop's back. Closes both ends when destroyed.
class handle_pair {
 public:
  handle_pair() {
#if defined(CORO_LOOP_WINDOWS)
    std::tie(read_end, write_end) = detail::connected_sockets();
#else
    int fds[2] = {-1, -1};
    if (::pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) throw std::system_error(errno, std::generic_category(), "pipe2");
    read_end = fds[0];
    write_end = fds[1];
#endif
  }
  handle_pair(const handle_pair&) = delete;
  handle_pair& operator=(const handle_pair&) = delete;
  ~handle_pair() {
#if defined(CORO_LOOP_WINDOWS)
    ::closesocket(read_end);
    ::closesocket(write_end);
#else
    ::close(read_end);
    ::close(write_end);
#endif
  }
  // The bytes written, or -1.
  long write(std::string_view bytes) const {
#if defined(CORO_LOOP_WINDOWS)
    return ::send(write_end, bytes.data(), static_cast<int>(bytes.size()), 0);
#else
    return static_cast<long>(::write(write_end, bytes.data(), bytes.size()));
#endif
  }

  cl::native_handle read_end = cl::invalid_handle;
  cl::native_handle write_end = cl::invalid_handle;
};

// An echo server's connection handler: each line back, up to 100, until the client
// ends; an error (the client reset, the server closing its clients) ends it too.
inline cl::task<void> echo_lines_until_end(cl::stream connection) {
  try {
    for (int i = 0; i < 100; ++i) {
      std::string line = co_await connection.read_line();
      if (line.empty()) break;
      connection.write(line);
      co_await connection.drain();
    }
  } catch (const std::exception&) {
  }
  connection.close();
}

// A deterministic byte pattern: byte i of a transfer.
inline char pattern_byte(std::size_t i) noexcept { return static_cast<char>('a' + (i * 7 + i / 251) % 26); }
inline std::string pattern(std::size_t offset, std::size_t length) {
  std::string text(length, '\0');
  for (std::size_t i = 0; i < length; ++i) text[i] = pattern_byte(offset + i);
  return text;
}

}  // namespace net_test
