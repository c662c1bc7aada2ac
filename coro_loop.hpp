// coro_loop.hpp - Python's asyncio for C++20, in one header - v0.1.0
//
// Use: copy this file, #include "coro_loop.hpp", build with -std=c++20
// (plus -pthread on POSIX, -lws2_32 on Windows). Nothing else to link.
//
//   #include "coro_loop.hpp"
//   coro_loop::task<int> answer() { co_await coro_loop::sleep(std::chrono::milliseconds(10)); co_return 42; }
//   int main() { return coro_loop::run(answer()) == 42 ? 0 : 1; }
//
// Configuration: #define before the first include [default]
//   CORO_LOOP_BACKEND_EPOLL, CORO_LOOP_BACKEND_KQUEUE, CORO_LOOP_BACKEND_IOCP
//                                            force a backend [picked from the OS: epoll
//                                            on Linux, kqueue on macOS and the BSDs,
//                                            IOCP on Windows (link ws2_32)]
//   CORO_LOOP_BACKEND_IO_URING               Linux's io_uring (section 4.5), falling
//                                            back to epoll at run time where the kernel
//                                            refuses it [off]
//   CORO_LOOP_MAX_TRANSFER_DEPTH             symmetric transfers in a row before a
//                                            bounce through the ready queue [64]
//   CORO_LOOP_NO_FRAME_RECYCLING             allocate every coroutine frame with
//                                            operator new (on by default under sanitizers)
//   CORO_LOOP_NO_HTTP                        leave out the HTTP client (section 10):
//                                            a program without it compiles faster [HTTP in]
//   CORO_LOOP_OPENSSL                        TLS through OpenSSL 3 (section 9.5); link
//                                            -lssl -lcrypto [off: TLS throws tls_error
//                                            saying how to turn it on]
// Run time: CORO_LOOP_DEBUG=1 turns on debug mode (see run()); there, on POSIX,
// SIGQUIT (Ctrl+\) prints the task tree and the program goes on.
// CORO_LOOP_IO_URING=0 makes the io_uring backend run its epoll fallback.
//
// Contents (search ">>name" to jump):
//   1 config & platform  >>config      2 utilities        >>util
//   3 event loop core    >>loop        4 backends         >>backend >>epoll >>kqueue >>iocp >>io_uring
//   5 tasks              >>tasks       6 combinators      >>combine
//   7 synchronisation    >>sync        8 executors        >>exec
//   9 networking         >>net >>tls >>process   10 HTTP/1.1 client >>http
//   11 event_loop, signals, run()   >>run
//
// Public names, one line each, with the tag of the section that declares them
// (all in namespace coro_loop):
//   clock, time_point, duration, native_handle, invalid_handle   >>util  the loop's clock; handle types
//   cancelled_error, timeout_error, invalid_state_error   >>util  what cancellation, deadlines, misuse throw
//   callback_handle, run_options                >>loop    a scheduled callback; run()'s options
//   task<T>, await_result_t<A>                  >>tasks   lazy coroutine type; what co_await A yields
//   create_task(aw, name), create_task(fn, args...)   >>tasks  start now as a scheduled task (fn: captures live on)
//   task_handle<T>, task_ref                    >>tasks   done/cancelled/result/exception/cancel/uncancel/name
//   current_task(), all_tasks()                 >>tasks   the task running now; every task not yet done
//   sleep(d), sleep_until(t)                    >>combine suspend; sleep(0) yields for exactly one iteration
//   exception_group, outcome<T>                 >>combine a task_group's errors; one child's value or error
//   gather(aws...), gather(range), gather_settled(...)   >>combine  all results; each value or exception
//   shield(aw)                                  >>combine the caller's cancel does not reach aw
//   wait(tasks, when, timeout), return_when, wait_result, as_completed   >>combine  asyncio.wait, as_completed
//   timeout(d, aw), timeout_at(t, aw), wait_for(aw, d), timeout_scope   >>combine  deadlines
//   task_group, with_task_group(body)           >>combine asyncio.TaskGroup, with 3.15's cancel()
//   async_with(opening, body)                   >>combine async with: body(resource), then always aclose()
//   event, lock, semaphore, bounded_semaphore, condition, barrier   >>sync  asyncio's primitives
//   queue<T>, lifo_queue<T>, priority_queue<T, Compare>, basic_queue   >>sync  async queues
//   queue_shut_down, queue_empty, queue_full, broken_barrier_error   >>sync  their errors
//   thread_pool, to_thread(fn, args...), run_in_executor(pool, fn, args...)   >>exec  work on threads
//   concurrent_future<T>, run_coroutine_threadsafe(aw, loop)   >>exec  submit from another thread
//   read_some, write_some, wait_readable, wait_writable   >>net  awaitable I/O on a handle
//   address, socket, resolve(host, port)        >>net     addresses, raw sockets, DNS off the loop thread
//   tls_context, tls_options, tls_version       >>tls     TLS settings (asyncio's SSLContext) and per connection
//   tls_error, tls_certificate_error, tls_eof_error   >>tls  what a TLS handshake, read or write throws
//   stream, stream_options, open_connection(host, port[, tls]), open_unix_connection(path)   >>net  streams
//   stream::read_into(buffer)                   >>net     a read into the caller's buffer, straight from the socket
//   stream::start_tls(tls), selected_alpn_protocol(), negotiated_tls_version()   >>net  TLS on a stream
//   incomplete_read_error, limit_overrun_error  >>net     what stream reads throw
//   start_server(handler, host, port[, tls]), start_unix_server(handler, path), server, server_options   >>net
//   datagram_endpoint, open_datagram_endpoint(host, port)   >>net  UDP: send_to, recv_from, recv_from_into
//   create_subprocess_exec(program, args...[, options]), create_subprocess_shell(command[, options])   >>process
//   process, process_options, stdio, communicate_result   >>process  pid/wait/communicate/returncode/kill/terminate/send_signal
//   http::client, client_options, timeouts, limits   >>http  keep-alive pool (http, https) and its settings
//   http::request_options_view, request_options  >>http   a request's settings: written in the call, or owned
//   http::response, json_parsable               >>http    status, headers, text(), body(), json<J>(), read_chunk(),
//                                                          read_into(buffer)
//   http::url, resolve_url, header_list, header_list_view, response_parser   >>http  URLs, fields, the parser
//   http::error, protocol_error, disconnected_error, status_error, redirect_error,
//     invalid_request_error, url_error          >>http    what a request throws
//   event_loop, get_running_loop()              >>run     the loop (call_soon/later/at/threadsafe, run_*,
//                                                         stop, close, release, signal handlers,
//                                                         backend_name); this thread's
//   run(aw, options), keyboard_interrupt        >>run     asyncio.run; what Ctrl+C ends it with
//   print_task_tree(), capture_task_tree(), task_tree_node   >>run  what every task waits on, and who awaits it
//
// Differences from asyncio that matter (README.md has the whole table):
//   - cancelled_error does not derive from std::exception, so catch (std::exception&)
//     never swallows a cancellation (as Python's CancelledError is a BaseException).
//   - A cancel that reaches a task after its wait was granted, before it resumed,
//     wins as in asyncio: the wait throws cancelled_error and gives back what it
//     was granted (a queue item to the front of the queue or the next getter,
//     the lock or a permit to the next waiter). Where giving back would lose a
//     result (bytes the OS already read, a gather's values, a put whose item the
//     queue took) the wait returns it and the cancel is delivered at the next
//     suspension point. A task that returns before such a point keeps its value
//     (asyncio would cancel it).
//   - A task_handle is for its loop's thread: cancel, uncancel, set_name and
//     add_done_callback throw invalid_state_error from another thread, or once the
//     loop closed without the task. run() finishes every task before it closes the
//     loop, cancelling in rounds the tasks started during its shutdown.
//   - Tasks are kept alive by the loop until they finish (asyncio keeps only a weak
//     reference): a fire-and-forget task is never collected mid-flight.
//   - stream::read() to the end and read_exactly(n) stop at stream_options::max_read
//     (64 MiB) with limit_overrun_error; asyncio's read(-1) and readexactly are unbounded.
//   - Over TLS, an end without close_notify throws tls_eof_error (a truncation), close()
//     sends close_notify without waiting for the peer's, and write_eof() is allowed.
//   - A subprocess's program is looked up before it starts: a missing one throws from
//     create_subprocess_exec, never as exit code 127 later. communicate() stops at
//     process_options::streams.max_read (64 MiB) per stream with limit_overrun_error;
//     a process object destroyed while its child runs hands the child to its loop,
//     which reaps it (asyncio would warn).
//
// Windows (IOCP) in short: the same API on sockets, with errors as errno values
// (std::errc compares as on POSIX). Absent, with a compile-time message: Unix
// sockets (address::unix_path, open_unix_connection, start_unix_server) and
// add_signal_handler; run() turns Ctrl+C and Ctrl+Break into keyboard_interrupt
// through SetConsoleCtrlHandler. A cancelled I/O operation stays in
// parked_operation_count() until Windows confirms it, an iteration later.
// start_server ignores reuse_address (Windows keeps no TIME_WAIT on the port)
// and rejects reuse_port; read_some/write_some take sockets and overlapped pipe
// handles. Subprocesses: CreateProcessW, overlapped named pipes; send_signal
// takes SIGTERM only, and terminate() and kill() both end the child with code 1.

#ifndef CORO_LOOP_HPP
#define CORO_LOOP_HPP

// ============================================================================
// 1. Config & platform detection  >>config
//    Turns the OS and the user's overrides into exactly one backend macro.
// ============================================================================

#define CORO_LOOP_VERSION_MAJOR 0
#define CORO_LOOP_VERSION_MINOR 1
#define CORO_LOOP_VERSION_PATCH 0
#define CORO_LOOP_VERSION "0.1.0"

#if !defined(CORO_LOOP_BACKEND_EPOLL) && !defined(CORO_LOOP_BACKEND_KQUEUE) && !defined(CORO_LOOP_BACKEND_IOCP) && \
    !defined(CORO_LOOP_BACKEND_IO_URING)
#if defined(__linux__)
#define CORO_LOOP_BACKEND_EPOLL 1
#elif defined(__APPLE__) || defined(__FreeBSD__) || defined(__OpenBSD__) || defined(__NetBSD__) || \
    defined(__DragonFly__)
#define CORO_LOOP_BACKEND_KQUEUE 1
#elif defined(_WIN32)
#define CORO_LOOP_BACKEND_IOCP 1
#else
#error "coro_loop: no backend for this OS; Linux (epoll), macOS/BSD (kqueue) and Windows (IOCP) are supported"
#endif
#endif
#if defined(CORO_LOOP_BACKEND_EPOLL) + defined(CORO_LOOP_BACKEND_KQUEUE) + defined(CORO_LOOP_BACKEND_IOCP) + \
        defined(CORO_LOOP_BACKEND_IO_URING) != \
    1
#error "coro_loop: define at most one of CORO_LOOP_BACKEND_EPOLL, _KQUEUE, _IOCP, _IO_URING"
#endif
#if defined(CORO_LOOP_BACKEND_IO_URING) && !defined(__linux__)
#error "coro_loop: the io_uring backend needs Linux"
#endif
// io_uring falls back to epoll where the kernel refuses it: both are compiled.
#if defined(CORO_LOOP_BACKEND_EPOLL) || defined(CORO_LOOP_BACKEND_IO_URING)
#define CORO_LOOP_EPOLL 1
#endif
#if defined(CORO_LOOP_BACKEND_IOCP)
#if !defined(_WIN32)
#error "coro_loop: the IOCP backend needs Windows"
#endif
// Winsock and overlapped I/O. Unix sockets and signal handlers are POSIX only.
#define CORO_LOOP_WINDOWS 1
#else
// Both readiness backends run on POSIX: sockets, pipes, signals, fcntl.
#define CORO_LOOP_POSIX 1
#endif

#ifndef CORO_LOOP_MAX_TRANSFER_DEPTH
#define CORO_LOOP_MAX_TRANSFER_DEPTH 64
#endif

// Sanitizers must see every frame allocation, so recycling is off under them.
// So is it with mingw-w64: winpthread runs thread_local destructors from its
// own TLS clean-up, after the recycler's storage is gone, and a thread that
// ran a loop never finished exiting (seen under wine).
#if !defined(CORO_LOOP_NO_FRAME_RECYCLING) && defined(__MINGW32__)
#define CORO_LOOP_NO_FRAME_RECYCLING 1
#endif
#if !defined(CORO_LOOP_NO_FRAME_RECYCLING)
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define CORO_LOOP_NO_FRAME_RECYCLING 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
#define CORO_LOOP_NO_FRAME_RECYCLING 1
#endif
#endif
#endif

// The header's coroutines that are not templates are written as templates of an unused parameter
// (CORO_LOOP_COROUTINE; CORO_LOOP_COROUTINE_DEFINITION on a member's definition outside its class),
// compiled only where a program calls them: g++ at -O0 emits every coroutine that is not a
// template, used or not, in every translation unit, and with it all that coroutine calls (a
// program that only sleeps compiled the HTTP client). A function that is not a coroutine and calls
// one is such a template too, or it would instantiate it. g++ 11 crashes on such a template (its
// signature not depending on the parameter) whose co_return has an operand other than a local
// variable's name: there they stay inline.
#if defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 12
#define CORO_LOOP_COROUTINE inline
#define CORO_LOOP_COROUTINE_DEFINITION inline
#else
#define CORO_LOOP_COROUTINE template <class = void>
#define CORO_LOOP_COROUTINE_DEFINITION template <class>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define CORO_LOOP_NOINLINE __attribute__((noinline))
#define CORO_LOOP_ALWAYS_INLINE __attribute__((always_inline)) inline
#else
#define CORO_LOOP_NOINLINE
#define CORO_LOOP_ALWAYS_INLINE inline
#endif

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <concepts>
#include <coroutine>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <new>
#include <optional>
#include <ranges>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#if defined(CORO_LOOP_POSIX)
#include <fcntl.h>
#include <signal.h>
#include <poll.h>
#include <pthread.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#if defined(__linux__)
#include <sys/syscall.h>
#endif
#include <sys/un.h>
#include <sys/wait.h>
#include <spawn.h>
#include <unistd.h>
#if defined(__APPLE__)
#include <crt_externs.h>  // _NSGetEnviron: `environ` is not there for a library
#endif
#endif
#if defined(CORO_LOOP_EPOLL)
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif
#if defined(CORO_LOOP_BACKEND_IO_URING)
#include <linux/io_uring.h>  // the kernel's structures only: no liburing
#include <sys/mman.h>
#endif
#if defined(CORO_LOOP_BACKEND_KQUEUE)
#include <sys/types.h>
#include <sys/event.h>
#include <sys/time.h>
#endif
#if defined(CORO_LOOP_WINDOWS)
// <windows.h> must not define min/max macros or pull in the old winsock.h.
#if !defined(WIN32_LEAN_AND_MEAN)
#define WIN32_LEAN_AND_MEAN
#endif
#if !defined(NOMINMAX)
#define NOMINMAX
#endif
#include <winsock2.h>
#include <ws2tcpip.h>
#include <mswsock.h>
#include <windows.h>
#if defined(_MSC_VER)
#pragma comment(lib, "ws2_32.lib")
#endif
#endif
// TLS (section 9.5) is the one user of these; they are here, under the same
// macro as its implementation, so that no #include sits inside the namespace.
#if defined(CORO_LOOP_OPENSSL)
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#if !defined(OPENSSL_VERSION_NUMBER) || OPENSSL_VERSION_NUMBER < 0x30000000L || defined(LIBRESSL_VERSION_NUMBER)
#error "coro_loop: CORO_LOOP_OPENSSL needs OpenSSL 3.0 or later (its headers and -lssl -lcrypto)"
#endif
#endif

#if defined(CORO_LOOP_POSIX) && !defined(__APPLE__) && !defined(__GLIBC__)
// POSIX's; the BSDs' <unistd.h> declares it only under some feature macros.
extern "C" char** environ;
#endif

namespace coro_loop {

/// The loop's clock (steady: never set back) and the types every delay and deadline use.
using clock = std::chrono::steady_clock;
using time_point = clock::time_point;
using duration = clock::duration;

namespace detail {
// now + delay, saturated: every deadline of the library is made here, because
// now + delay itself overflows (undefined behaviour) for a delay near
// duration::max(). Past the clock's range a deadline is time_point::max(),
// which never comes ("max means forever"), or time_point::min().
inline time_point deadline_after(duration delay) noexcept {
  const duration now = clock::now().time_since_epoch();
  if (delay > duration::zero() && now > duration::max() - delay) return time_point::max();
  if (delay < duration::zero() && now < duration::min() - delay) return time_point::min();
  return time_point(now + delay);
}
}  // namespace detail

#if defined(CORO_LOOP_WINDOWS)
/// What the backend works on: a SOCKET (Winsock) on Windows, a file descriptor on POSIX.
using native_handle = std::uintptr_t;
/// The "no handle" value: INVALID_SOCKET on Windows, -1 on POSIX.
inline constexpr native_handle invalid_handle = static_cast<native_handle>(~static_cast<std::uintptr_t>(0));
#else
/// What the backend works on: a file descriptor on POSIX, a SOCKET (Winsock) on Windows.
using native_handle = int;
/// The "no handle" value: -1 on POSIX, INVALID_SOCKET on Windows.
inline constexpr native_handle invalid_handle = -1;
#endif

// ============================================================================
// 2. Utilities: errors, intrusive lists, the timer heap, the frame allocator  >>util
//    Uses only the standard library.
// ============================================================================

/// Thrown at the suspension point of a cancelled task (asyncio.CancelledError).
/// Deliberately not a std::exception: catch (const std::exception&) must not
/// swallow a cancellation, as `except Exception` does not in Python.
class cancelled_error {
 public:
  const char* what() const noexcept { return "coro_loop::cancelled_error: the task was cancelled"; }
};

/// Thrown by timeout(), timeout_at() and wait_for() when the deadline passes.
class timeout_error : public std::runtime_error {
 public:
  timeout_error() : std::runtime_error("coro_loop::timeout_error: the deadline passed") {}
  using std::runtime_error::runtime_error;
};

/// Thrown on misuse: a result read before it is set, a task awaited twice, a closed loop.
class invalid_state_error : public std::logic_error {
 public:
  using std::logic_error::logic_error;
};

class event_loop;

namespace detail {

// One line per OS failure, naming what failed: "epoll_ctl add fd 7: Bad file descriptor".
#if defined(CORO_LOOP_WINDOWS)
// Windows reports socket errors as WSA codes and I/O errors as ERROR_ codes.
// The loop keeps POSIX errno values everywhere (the code above the backend
// compares error == ECANCELED, ECONNRESET, ...), so each code is translated
// once, where it is read. A code with no errno equivalent is kept negated.
struct windows_error_pair {
  int windows;
  int posix;
  const char* text;  // ours: Windows' own message table is not complete everywhere (wine)
};
inline constexpr windows_error_pair windows_errors[] = {
    {WSAECONNREFUSED, ECONNREFUSED, "Connection refused"},
    {ERROR_CONNECTION_REFUSED, ECONNREFUSED, "Connection refused"},
    {ERROR_PORT_UNREACHABLE, ECONNREFUSED, "Connection refused"},
    {WSAECONNRESET, ECONNRESET, "Connection reset by peer"},
    {ERROR_NETNAME_DELETED, ECONNRESET, "Connection reset by peer"},
    {WSAECONNABORTED, ECONNABORTED, "Connection aborted"},
    {ERROR_CONNECTION_ABORTED, ECONNABORTED, "Connection aborted"},
    {WSAETIMEDOUT, ETIMEDOUT, "Connection timed out"},
    {ERROR_SEM_TIMEOUT, ETIMEDOUT, "Connection timed out"},
    {WSAENETUNREACH, ENETUNREACH, "Network is unreachable"},
    {ERROR_NETWORK_UNREACHABLE, ENETUNREACH, "Network is unreachable"},
    {WSAEHOSTUNREACH, EHOSTUNREACH, "No route to host"},
    {ERROR_HOST_UNREACHABLE, EHOSTUNREACH, "No route to host"},
    {WSAEADDRINUSE, EADDRINUSE, "Address already in use"},
    {WSAEADDRNOTAVAIL, EADDRNOTAVAIL, "Cannot assign requested address"},
    {WSAEAFNOSUPPORT, EAFNOSUPPORT, "Address family not supported"},
    {WSAEMSGSIZE, EMSGSIZE, "Message too long"},
    {ERROR_MORE_DATA, EMSGSIZE, "Message too long"},
    {WSAENOTCONN, ENOTCONN, "Socket is not connected"},
    {WSAENOTSOCK, ENOTSOCK, "Not a socket"},
    {WSAENOBUFS, ENOBUFS, "No buffer space available"},
    {WSAEINVAL, EINVAL, "Invalid argument"},
    {ERROR_INVALID_PARAMETER, EINVAL, "Invalid argument"},
    {WSAEACCES, EACCES, "Permission denied"},
    {WSAEOPNOTSUPP, EOPNOTSUPP, "Operation not supported"},
    {WSAEWOULDBLOCK, EWOULDBLOCK, "Operation would block"},
    {WSAEINPROGRESS, EINPROGRESS, "Operation in progress"},
    {WSAEALREADY, EALREADY, "Operation already in progress"},
    {WSAESHUTDOWN, EPIPE, "Broken pipe"},
    {ERROR_BROKEN_PIPE, EPIPE, "Broken pipe"},
    {WSAEBADF, EBADF, "Bad file descriptor"},
    {ERROR_INVALID_HANDLE, EBADF, "Bad file descriptor"},
    {WSAEINTR, ECANCELED, "Operation canceled"},
    {ERROR_OPERATION_ABORTED, ECANCELED, "Operation canceled"},
    {WSA_OPERATION_ABORTED, ECANCELED, "Operation canceled"},
    {ERROR_NOT_ENOUGH_MEMORY, ENOMEM, "Cannot allocate memory"},
    {WSAEMFILE, EMFILE, "Too many open files"},
    // Pipes and processes (9.9).
    {ERROR_NO_DATA, EPIPE, "Broken pipe"},
    {ERROR_FILE_NOT_FOUND, ENOENT, "No such file or directory"},
    {ERROR_PATH_NOT_FOUND, ENOENT, "No such file or directory"},
    {ERROR_DIRECTORY, ENOENT, "No such file or directory"},  // CreateProcess: no such working directory
    {ERROR_ACCESS_DENIED, EACCES, "Permission denied"},
    {ERROR_BAD_EXE_FORMAT, ENOEXEC, "Exec format error"},
};
inline int posix_error_from_windows(unsigned long code) noexcept {
  for (const windows_error_pair& pair : windows_errors) {
    if (static_cast<unsigned long>(pair.windows) == code) return pair.posix;
  }
  return -static_cast<int>(code);
}
// errno values, with the texts above (mingw's strerror knows none of the
// socket errors), and negated Windows codes, with Windows' text and number.
// Compares equal to std::errc like the generic category.
class windows_socket_category_type final : public std::error_category {
 public:
  const char* name() const noexcept override { return "coro_loop"; }
  std::string message(int code) const override {
    if (code < 0) return std::system_category().message(-code) + " (Windows error " + std::to_string(-code) + ")";
    for (const windows_error_pair& pair : windows_errors) {
      if (pair.posix == code) return pair.text;
    }
    return std::generic_category().message(code);
  }
  std::error_condition default_error_condition(int code) const noexcept override {
    if (code < 0) return std::error_condition(-code, std::system_category());
    return std::error_condition(code, std::generic_category());
  }
};
inline const std::error_category& os_error_category() noexcept {
  static const windows_socket_category_type category;
  return category;
}
// The error of the Winsock call that just failed, as an errno value.
inline int last_socket_error() noexcept { return posix_error_from_windows(static_cast<unsigned long>(::WSAGetLastError())); }
#else
inline const std::error_category& os_error_category() noexcept { return std::generic_category(); }
// The error of the socket call that just failed.
inline int last_socket_error() noexcept { return errno; }
#endif

// An OS error: errno values on every platform (Windows codes are translated).
[[noreturn]] inline void throw_system_error(int error_number, const std::string& what) {
  throw std::system_error(error_number, os_error_category(), what);
}

// False, but only once a template is instantiated: a static_assert on it
// gives a clear message where a POSIX-only function is used on Windows.
template <class>
inline constexpr bool posix_only = false;
// The same for the misuses a template can only see once instantiated (a
// callable that returns void to create_task): the static_assert names it.
template <class...>
inline constexpr bool always_false = false;

// How errors name a handle that has no better label.
inline std::string handle_label(native_handle handle) {
#if defined(CORO_LOOP_WINDOWS)
  return "socket " + std::to_string(handle);
#else
  return "fd " + std::to_string(handle);
#endif
}

inline void close_socket(native_handle handle) noexcept {
#if defined(CORO_LOOP_WINDOWS)
  ::closesocket(handle);
#else
  ::close(handle);
#endif
}

// Whether `handle` is readable (writable) right now, without waiting: data,
// the end of the stream or an error count as readable.
inline bool ready_now(native_handle handle, bool readable) noexcept {
#if defined(CORO_LOOP_WINDOWS)
  WSAPOLLFD probe{};
  probe.fd = handle;
  probe.events = readable ? POLLRDNORM : POLLWRNORM;
  return ::WSAPoll(&probe, 1, 0) > 0;
#else
  pollfd probe{handle, static_cast<short>(readable ? POLLIN : POLLOUT), 0};
  int ready = 0;
  do {
    ready = ::poll(&probe, 1, 0);
  } while (ready < 0 && errno == EINTR);
  return ready > 0;
#endif
}

#if defined(CORO_LOOP_WINDOWS)
// WSAIoctl's SIO_UDP_CONNRESET (mstcpip.h, not always at hand).
inline constexpr DWORD udp_connection_reset_control = IOC_IN | IOC_VENDOR | 12;
inline constexpr int shut_write = SD_SEND;
#else
inline constexpr int shut_write = SHUT_WR;
#endif

// An element of the loop's ready queue: anything that can be run once, later,
// on the loop thread (a task step, a callback, a completion notice). When the
// loop closes, the nodes left are run with no running loop in the thread:
// each then discards itself (releases, frees) instead of doing its work.
struct ready_node {
  ready_node* next_ready = nullptr;
  void (*run)(ready_node* self) noexcept = nullptr;
};

// FIFO of ready_nodes, intrusive: pushing allocates nothing.
class ready_queue {
 public:
  bool empty() const noexcept { return head_ == nullptr; }
  ready_node* back() const noexcept { return tail_; }
  void push_back(ready_node& node) noexcept {
    node.next_ready = nullptr;
    if (tail_ != nullptr) {
      tail_->next_ready = &node;
    } else {
      head_ = &node;
    }
    tail_ = &node;
  }
  ready_node* pop_front() noexcept {
    ready_node* node = head_;
    head_ = node->next_ready;
    if (head_ == nullptr) tail_ = nullptr;
    node->next_ready = nullptr;
    return node;
  }
  // Moves every node of `other` to the back of this queue.
  void splice_back(ready_queue& other) noexcept {
    if (other.head_ == nullptr) return;
    if (tail_ != nullptr) {
      tail_->next_ready = other.head_;
    } else {
      head_ = other.head_;
    }
    tail_ = other.tail_;
    other.head_ = other.tail_ = nullptr;
  }

 private:
  ready_node* head_ = nullptr;
  ready_node* tail_ = nullptr;
};

// A doubly linked intrusive list hook; unlinking is O(1) and idempotent.
struct list_hook {
  list_hook* prev = nullptr;
  list_hook* next = nullptr;
  bool linked() const noexcept { return prev != nullptr; }
};

// A circular intrusive list with a sentinel; FIFO when pushed at the back.
class intrusive_list {
 public:
  intrusive_list() noexcept { sentinel_.prev = sentinel_.next = &sentinel_; }
  intrusive_list(const intrusive_list&) = delete;
  intrusive_list& operator=(const intrusive_list&) = delete;
  bool empty() const noexcept { return sentinel_.next == &sentinel_; }
  std::size_t size() const noexcept {
    std::size_t count = 0;
    for (const list_hook* h = sentinel_.next; h != &sentinel_; h = h->next) ++count;
    return count;
  }
  void push_back(list_hook& hook) noexcept {
    hook.prev = sentinel_.prev;
    hook.next = &sentinel_;
    sentinel_.prev->next = &hook;
    sentinel_.prev = &hook;
  }
  void push_front(list_hook& hook) noexcept {
    hook.next = sentinel_.next;
    hook.prev = &sentinel_;
    sentinel_.next->prev = &hook;
    sentinel_.next = &hook;
  }
  list_hook* front() const noexcept { return empty() ? nullptr : sentinel_.next; }
  list_hook* pop_front() noexcept {
    if (empty()) return nullptr;
    list_hook* hook = sentinel_.next;
    unlink(*hook);
    return hook;
  }
  static void unlink(list_hook& hook) noexcept {
    if (!hook.linked()) return;
    hook.prev->next = hook.next;
    hook.next->prev = hook.prev;
    hook.prev = hook.next = nullptr;
  }
  // Visits every hook; `visit` may unlink the hook it is given.
  template <class Visit>
  void for_each(Visit&& visit) {
    for (list_hook* h = sentinel_.next; h != &sentinel_;) {
      list_hook* next = h->next;
      visit(*h);
      h = next;
    }
  }

 private:
  list_hook sentinel_;
};

// A counted reference to a T with retain()/release(): what callback_handle
// and task_ref hold. Copies share, the last one releases; T decides what a
// count costs (atomic for callbacks, which cross threads; plain for tasks).
template <class T>
class counted_ref {
 public:
  counted_ref() noexcept = default;
  // Takes over a reference the caller already counted.
  static counted_ref adopt(T* target) noexcept { return counted_ref(target); }
  // Counts a new reference.
  static counted_ref share(T* target) noexcept {
    if (target != nullptr) target->retain();
    return counted_ref(target);
  }
  counted_ref(const counted_ref& other) noexcept : counted_ref(share(other.target_)) {}
  counted_ref(counted_ref&& other) noexcept : target_(std::exchange(other.target_, nullptr)) {}
  counted_ref& operator=(counted_ref other) noexcept {
    std::swap(target_, other.target_);
    return *this;
  }
  ~counted_ref() {
    if (target_ != nullptr) target_->release();
  }
  T* get() const noexcept { return target_; }
  T* operator->() const noexcept { return target_; }
  T& operator*() const noexcept { return *target_; }
  bool operator==(std::nullptr_t) const noexcept { return target_ == nullptr; }
  friend bool operator==(const counted_ref& a, const counted_ref& b) noexcept { return a.target_ == b.target_; }

 private:
  explicit counted_ref(T* target) noexcept : target_(target) {}
  T* target_ = nullptr;
};

// Recovers the object that embeds `Member` as a base class.
template <class Owner, class Member>
Owner& owner_of(Member& member) noexcept {
  return static_cast<Owner&>(member);
}

// An entry of the timer heap. It lives inside whatever waits (a sleep awaiter,
// a call_later callback): arming a timer allocates nothing but heap slots.
struct timer_node {
  static constexpr std::size_t not_in_heap = static_cast<std::size_t>(-1);
  time_point deadline{};
  std::uint64_t sequence = 0;  // FIFO among equal deadlines
  std::size_t heap_index = not_in_heap;
  void (*fire)(timer_node* self) noexcept = nullptr;
  bool armed() const noexcept { return heap_index != not_in_heap; }
};

// A binary min-heap ordered by (deadline, sequence) that knows each node's
// slot, so a cancelled timer is removed at once in O(log n): a cancelled sleep
// leaves nothing behind (asyncio leaves it until the heap is compacted).
class timer_heap {
 public:
  bool empty() const noexcept { return heap_.empty(); }
  std::size_t size() const noexcept { return heap_.size(); }
  timer_node* top() const noexcept { return heap_.front(); }
  // Every armed timer, in no particular order (a task tree looks for timeouts).
  std::span<timer_node* const> nodes() const noexcept { return heap_; }

  void push(timer_node& node) {
    node.sequence = next_sequence_++;
    heap_.push_back(&node);
    node.heap_index = heap_.size() - 1;
    sift_up(node.heap_index);
  }
  void remove(timer_node& node) noexcept {
    if (!node.armed()) return;
    std::size_t index = node.heap_index;
    node.heap_index = timer_node::not_in_heap;
    timer_node* last = heap_.back();
    heap_.pop_back();
    if (last == &node) return;
    heap_[index] = last;
    last->heap_index = index;
    sift_down(index);
    sift_up(last->heap_index);
  }
  timer_node* pop() noexcept {
    timer_node* node = heap_.front();
    remove(*node);
    return node;
  }

 private:
  static bool earlier(const timer_node* a, const timer_node* b) noexcept {
    return a->deadline < b->deadline || (a->deadline == b->deadline && a->sequence < b->sequence);
  }
  void place(std::size_t index, timer_node* node) noexcept {
    heap_[index] = node;
    node->heap_index = index;
  }
  void sift_up(std::size_t index) noexcept {
    timer_node* node = heap_[index];
    while (index > 0) {
      std::size_t parent = (index - 1) / 2;
      if (!earlier(node, heap_[parent])) break;
      place(index, heap_[parent]);
      index = parent;
    }
    place(index, node);
  }
  void sift_down(std::size_t index) noexcept {
    timer_node* node = heap_[index];
    const std::size_t count = heap_.size();
    for (;;) {
      std::size_t child = 2 * index + 1;
      if (child >= count) break;
      if (child + 1 < count && earlier(heap_[child + 1], heap_[child])) ++child;
      if (!earlier(heap_[child], node)) break;
      place(index, heap_[child]);
      index = child;
    }
    place(index, node);
  }

  std::vector<timer_node*> heap_;
  std::uint64_t next_sequence_ = 0;
};

// --- 2.1 The frame allocator ---
// Every coroutine frame is one heap allocation (elision is not reliable), so
// frames are recycled per thread in 16-byte size classes. A frame freed on
// another thread simply joins that thread's lists. Blocks are plain
// operator-new memory, so the cache can always hand them back.
class frame_recycler {
 public:
  static constexpr std::size_t granularity = 16;
  static constexpr std::size_t class_count = 48;  // frames up to 768 bytes
  static constexpr std::size_t max_cached_bytes = std::size_t{8} << 20;

  ~frame_recycler() {
    for (free_block*& head : free_lists_) {
      while (head != nullptr) {
        free_block* next = head->next;
        ::operator delete(static_cast<void*>(head));
        head = next;
      }
    }
    alive_flag() = false;
  }
  static bool& alive_flag() noexcept {
    static thread_local bool alive = true;
    return alive;
  }
  void* allocate(std::size_t size) {
    std::size_t size_class = class_of(size);
    if (size_class < class_count && free_lists_[size_class] != nullptr) {
      free_block* block = free_lists_[size_class];
      free_lists_[size_class] = block->next;
      cached_bytes_ -= (size_class + 1) * granularity;
      return block;
    }
    if (size_class < class_count) return ::operator new((size_class + 1) * granularity);
    return ::operator new(size);
  }
  void deallocate(void* pointer, std::size_t size) noexcept {
    std::size_t size_class = class_of(size);
    std::size_t bytes = (size_class + 1) * granularity;
    if (size_class >= class_count || cached_bytes_ + bytes > max_cached_bytes) {
      ::operator delete(pointer);
      return;
    }
    auto* block = static_cast<free_block*>(pointer);
    block->next = free_lists_[size_class];
    free_lists_[size_class] = block;
    cached_bytes_ += bytes;
  }

 private:
  struct free_block {
    free_block* next;
  };
  static std::size_t class_of(std::size_t size) noexcept { return (size + granularity - 1) / granularity - 1; }
  free_block* free_lists_[class_count] = {};
  std::size_t cached_bytes_ = 0;
};

inline frame_recycler& this_thread_recycler() noexcept {
  static thread_local frame_recycler recycler;
  return recycler;
}

inline void* allocate_frame(std::size_t size) {
#if defined(CORO_LOOP_NO_FRAME_RECYCLING)
  return ::operator new(size);
#else
  // After this thread's recycler is destroyed (thread exit), frames still
  // come and go through plain operator new and delete.
  if (!frame_recycler::alive_flag()) return ::operator new(size);
  return this_thread_recycler().allocate(size);
#endif
}

inline void deallocate_frame(void* pointer, [[maybe_unused]] std::size_t size) noexcept {
#if defined(CORO_LOOP_NO_FRAME_RECYCLING)
  ::operator delete(pointer);
#else
  if (!frame_recycler::alive_flag()) {
    ::operator delete(pointer);
    return;
  }
  this_thread_recycler().deallocate(pointer, size);
#endif
}

}  // namespace detail

// ============================================================================
// 3. Event loop core: ready queue, timers, callbacks, the current loop  >>loop
//    Uses 2. detail::loop_core is the loop the layers below the public
//    event_loop (11) reach: scheduling, timers, the current task, the inbox,
//    the backend. The backend (4) is reached through a pointer so that this
//    section reads before it; the core's backend-driving members follow 4.
// ============================================================================

class task_ref;
class thread_pool;

namespace detail {

class backend;
class task_promise_base;
class loop_core;

// The running loop of this thread. Read through a non-inlined function:
// Clang may cache a thread_local's address across a suspension point, and a
// coroutine may resume on another thread.
CORO_LOOP_NOINLINE inline loop_core*& running_loop_slot() noexcept {
  static thread_local loop_core* loop = nullptr;
  return loop;
}
// The loop that lives on this thread, running or not: a socket closed outside
// a running loop still drops its registration there.
CORO_LOOP_NOINLINE inline loop_core*& thread_loop_slot() noexcept {
  static thread_local loop_core* loop = nullptr;
  return loop;
}


// A callback scheduled by call_soon / call_later / call_at. Shared between the
// loop and any callback_handle by an atomic count, because
// call_soon_threadsafe hands it across threads.
class callback_node : public ready_node, public timer_node {
 public:
  void retain() noexcept { references_.fetch_add(1, std::memory_order_relaxed); }
  void release() noexcept {
    if (references_.fetch_sub(1, std::memory_order_acq_rel) == 1) destroy_(this);
  }
  bool cancelled() const noexcept { return cancelled_.load(std::memory_order_acquire); }
  // callback_handle::cancel.
  inline void cancel() noexcept;
  // A call_at deadline: the heap's reference moves to the ready queue.
  inline static void fire_from_heap(timer_node* timer) noexcept;

 protected:
  using invoke_function = void (*)(callback_node*);
  using destroy_function = void (*)(callback_node*) noexcept;
  callback_node(invoke_function invoke, destroy_function destroy) noexcept : invoke_(invoke), destroy_(destroy) {
    run = &run_callback;
  }
  ~callback_node() = default;

 private:
  friend class loop_core;
  // Runs from the ready queue; the queue's reference is released afterwards.
  // A throwing callback is reported and the loop goes on, as in asyncio.
  static void run_callback(ready_node* node) noexcept {
    auto* self = static_cast<callback_node*>(node);
    if (!self->cancelled() && running_loop_slot() != nullptr) {
      try {
        self->invoke_(self);
      } catch (const std::exception& error) {
        std::fprintf(stderr, "coro_loop: exception in callback: %s\n", error.what());
      } catch (const cancelled_error&) {
        std::fprintf(stderr, "coro_loop: cancelled_error escaped a callback\n");
      } catch (...) {
        std::fprintf(stderr, "coro_loop: unknown exception in callback\n");
      }
    }
    self->release();
  }
  invoke_function invoke_;
  destroy_function destroy_;
  std::atomic<int> references_{1};
  std::atomic<bool> cancelled_{false};
  loop_core* loop_ = nullptr;
};

template <class Callback>
class callback_of final : public callback_node {
 public:
  explicit callback_of(Callback callback)
      : callback_node(&invoke, &destroy), callback_(std::move(callback)) {}

 private:
  static void invoke(callback_node* self) { static_cast<callback_of*>(self)->callback_(); }
  static void destroy(callback_node* self) noexcept { delete static_cast<callback_of*>(self); }
  Callback callback_;
};

struct cancellable_wait;
struct wait_report;  // (5.1) what a task tree records of one wait

// What one kind of wait is: a table per awaiter type, in static storage, so a
// suspended task points at its wait and its wait at its kind, and describing
// waits costs an awaiter nothing. `interrupt` returns true when it has taken
// charge of resuming the task (now or later) so that the waiting co_await
// throws cancelled_error; false when the wait cannot be interrupted, in which
// case the cancellation is delivered at the next suspension point.
// `describe` (null: `operation` says it all) runs only when a task tree is
// captured, on the loop thread.
struct wait_kind {
  const char* operation;  // "sleep", "queue::get": in errors, and the plainest description
  bool (*interrupt)(cancellable_wait* self) noexcept;
  void (*describe)(const cancellable_wait& self, wait_report& report);
};

// Something a task can be suspended on that a cancel() can interrupt: a sleep,
// an I/O operation, a queue waiter, another task. Set at each suspension.
struct cancellable_wait {
  const wait_kind* kind_of_wait = nullptr;
};

// The loop's door for other threads: call_soon_threadsafe, executor
// completions, run_coroutine_threadsafe. Held by shared_ptr by everything that
// may post after the loop is gone: posting to a closed inbox fails cleanly.
class loop_inbox {
 public:
  explicit loop_inbox(loop_core* loop) noexcept : loop_(loop) {}
  loop_inbox(const loop_inbox&) = delete;
  loop_inbox& operator=(const loop_inbox&) = delete;

  // Any thread. False when the loop is closed (the node was not taken).
  inline bool post(ready_node& node) noexcept;
  bool has_pending() const noexcept { return pending_.load(std::memory_order_acquire); }
  // Loop thread. The flag is cleared before taking the nodes, so a post that
  // misses this drain always wakes the loop for the next one.
  void drain_into(ready_queue& ready) noexcept {
    pending_.store(false, std::memory_order_release);
    std::lock_guard<std::mutex> guard(mutex_);
    ready.splice_back(queue_);
  }
  // Loop thread, at close: no more posts; hands back what is still queued.
  void close(ready_queue& leftovers) noexcept {
    std::lock_guard<std::mutex> guard(mutex_);
    closed_ = true;
    loop_ = nullptr;
    leftovers.splice_back(queue_);
  }

 private:
  std::mutex mutex_;
  ready_queue queue_;  // guarded by mutex_
  std::atomic<bool> pending_{false};
  bool closed_ = false;  // guarded by mutex_
  loop_core* loop_;      // guarded by mutex_: the backend's wake-up is reached through it
};

// "<Task 'name'>" for a task step, "a callback" otherwise (debug mode).
inline std::string describe_ready_node(ready_node* node);

}  // namespace detail

/// The handle of a scheduled callback (asyncio.Handle / TimerHandle).
/// Copyable; cancel() is for the loop's thread, except for call_soon_threadsafe
/// handles, whose cancel() may race the callback and is then a no-op.
class callback_handle {
 public:
  /// Copies share the callback (an atomic count, so any thread may hold one); an empty
  /// (default) handle's cancel() does nothing and its cancelled() is false.
  callback_handle() noexcept = default;
  /// Prevents the callback from running; a no-op when it already ran.
  void cancel() noexcept {
    if (node_ != nullptr) node_->cancel();
  }
  /// True once cancel() was called.
  bool cancelled() const noexcept { return node_ != nullptr && node_->cancelled(); }
  /// The deadline of a call_later / call_at callback.
  time_point when() const noexcept { return node_ != nullptr ? node_->deadline : time_point{}; }

 private:
  friend class detail::loop_core;
  // Takes the reference call_soon & co counted for the handle.
  explicit callback_handle(detail::callback_node* node) noexcept
      : node_(detail::counted_ref<detail::callback_node>::adopt(node)) {}
  detail::counted_ref<detail::callback_node> node_;
};

/// Options of run() and event_loop::run_until_complete.
struct run_options {
  /// Debug mode: warn when one step holds the loop longer than slow_callback_duration,
  /// report tasks destroyed without ever being awaited. Also on with CORO_LOOP_DEBUG=1.
  bool debug = false;
  /// Debug mode reports a step that holds the loop at least this long.
  std::chrono::milliseconds slow_callback_duration{100};
};

namespace detail {

// Per-loop state of a layer below the core that the loop must close while its
// backend still exists (9.9's child processes: operations parked there, a
// watch to stop). Made by that layer on first use and found again by its
// close function, which is unique to each kind; event_loop::close() calls it
// once, after the tasks finished, and forgets the attachment (it frees itself).
struct loop_attachment {
  using close_function = void (*)(loop_attachment* self) noexcept;
  close_function close = nullptr;
  loop_attachment* next_attachment = nullptr;
};

// The loop's machinery: the ready queue, the timer heap, the tasks, the inbox
// other threads post through, the backend. Each layer below the public
// event_loop (11) reaches the loop through this; event_loop adds what users
// call (running, closing, signals) on top of it.
class loop_core {
 public:
  loop_core(const loop_core&) = delete;
  loop_core& operator=(const loop_core&) = delete;

  // --- callbacks (event_loop's call_soon, call_later, call_at, call_soon_threadsafe)
  template <class Callback>
  callback_handle call_soon(Callback&& callback);
  template <class Callback>
  callback_handle call_later(duration delay, Callback&& callback);
  template <class Callback>
  callback_handle call_at(time_point deadline, Callback&& callback);
  template <class Callback>
  callback_handle call_soon_threadsafe(Callback&& callback);

  // --- what tasks, combinators and I/O use
  // The task whose step is running, or null inside a plain callback.
  task_promise_base* current_task() const noexcept { return current_task_; }
  // Queues `node` for the next batch; loop thread only (other threads post through inbox()).
  void schedule(ready_node& node) noexcept { ready_.push_back(node); }
  // Arms / disarms a timer node; it fires on the loop thread once its deadline has passed.
  void add_timer(timer_node& node) { timers_.push(node); }
  void remove_timer(timer_node& node) noexcept { timers_.remove(node); }
  class backend& backend() noexcept { return *backend_; }
  // The door other threads post through; outlives the loop while shared.
  const std::shared_ptr<loop_inbox>& inbox() const noexcept { return inbox_; }
  // Counts a symmetric transfer; false when the chain is deep enough that the
  // next hop must bounce through the ready queue (see transfer_to in 5).
  bool count_transfer() noexcept { return ++transfer_depth_ <= CORO_LOOP_MAX_TRANSFER_DEPTH; }
  bool debug() const noexcept { return options_.debug; }
  bool is_running() const noexcept { return running_; }
  bool is_closed() const noexcept { return closed_; }
  // Any thread: true while another thread runs this loop.
  bool runs_on_another_thread() const noexcept {
    const std::thread::id runner = running_thread_.load(std::memory_order_relaxed);
    return runner != std::thread::id{} && runner != std::this_thread::get_id();
  }
  // The tasks started and not yet done, in the order they started.
  intrusive_list& pending_tasks() noexcept { return pending_tasks_; }
  std::uint64_t next_task_number() const noexcept { return next_task_number_; }
  bool has_ready() const noexcept { return !ready_.empty(); }
  // The attachment whose close function is `kind`, or null (see loop_attachment).
  loop_attachment* find_attachment(loop_attachment::close_function kind) const noexcept {
    for (loop_attachment* each = attachments_; each != nullptr; each = each->next_attachment) {
      if (each->close == kind) return each;
    }
    return nullptr;
  }
  void attach(loop_attachment& attachment) noexcept {
    attachment.next_attachment = attachments_;
    attachments_ = &attachment;
  }
  const timer_heap& timers() const noexcept { return timers_; }

  // --- running
  // Runs iterations while keep_running() holds, as this thread's running loop.
  template <class KeepRunning>
  void run_while(KeepRunning keep_running);
  // Refuses a closed loop, a running one, or a thread already running a loop.
  void check_can_run() const {
    if (closed_) throw invalid_state_error("event_loop: the loop is closed");
    if (running_) throw invalid_state_error("event_loop: this loop is already running");
    if (running_loop_slot() != nullptr) {
      throw invalid_state_error("event_loop: another loop is running in this thread");
    }
  }

 protected:
  loop_core();
  ~loop_core();
  void check_thread(const char* operation) const;

  ready_queue ready_;
  timer_heap timers_;
  std::unique_ptr<class backend> backend_;
  intrusive_list pending_tasks_;  // every task started and not yet done
  std::shared_ptr<loop_inbox> inbox_;  // what other threads post to
  run_options options_{};
  bool running_ = false;
  bool stopping_ = false;
  bool closed_ = false;
  loop_attachment* attachments_ = nullptr;  // closed by event_loop::close()

 private:
  friend class task_promise_base;  // a task's step sets current_task_ and numbers itself
  friend class loop_inbox;         // wakes the backend
  template <class Callback>
  static callback_node* make_callback(Callback&& callback);
  void wake_backend() noexcept;
  // One iteration: poll I/O (when idle, blocking until I/O or the next
  // timer), fire due timers, run the ready batch. Only inside run_while: a
  // task step run without a running loop discards itself.
  void run_once();
  void run_ready_batch();
  void run_timed(ready_node* node);
  int backend_timeout_ms() const noexcept;

  // While ready work keeps the loop busy, the OS is asked for I/O (a
  // non-blocking poll) only every this many iterations: a syscall per
  // iteration would cost more than the steps it separates (ping-pong between
  // two tasks). I/O waits at most this many short batches.
  static constexpr unsigned busy_iterations_per_poll = 32;

  unsigned busy_iterations_since_poll_ = 0;
  // The thread running the loop, or none: read by other threads (a misused
  // task_handle, call_soon) to refuse them, hence atomic.
  std::atomic<std::thread::id> running_thread_{};
  task_promise_base* current_task_ = nullptr;
  std::uint64_t next_task_number_ = 1;
  unsigned transfer_depth_ = 0;
};

}  // namespace detail

namespace detail {
// Debug mode as seen from code without a loop reference: the running loop's
// flag, or CORO_LOOP_DEBUG when no loop runs.
inline bool debug_from_environment() noexcept {
  static const bool enabled = [] {
    const char* flag = std::getenv("CORO_LOOP_DEBUG");
    return flag != nullptr && flag[0] != '\0' && flag[0] != '0';
  }();
  return enabled;
}
inline bool debug_enabled() noexcept {
  loop_core* loop = running_loop_slot();
  return loop != nullptr ? loop->debug() : debug_from_environment();
}

// The loop running on this thread, for the layers below event_loop;
// invalid_state_error when there is none.
CORO_LOOP_ALWAYS_INLINE loop_core& running_core() {
  loop_core* loop = running_loop_slot();
  if (loop == nullptr) throw invalid_state_error("coro_loop: no running event loop in this thread");
  return *loop;
}
}  // namespace detail

/// The loop running on this thread; throws invalid_state_error when there is none.
/// (Defined with event_loop, in 11.)
inline event_loop& get_running_loop();

namespace detail {
// The core of a public loop, for functions of the layers below that take an
// event_loop& (run_coroutine_threadsafe). Defined with event_loop, in 11.
inline loop_core& core_of(event_loop& loop) noexcept;
}  // namespace detail

// --- 3.1 loop_core: callbacks ---

inline void detail::callback_node::fire_from_heap(timer_node* timer) noexcept {
  auto* self = static_cast<callback_node*>(timer);
  self->loop_->schedule(*self);
}

// A timer still in the heap leaves it now, so no dead entry lingers; the
// heap's reference goes with it. Ready-queue entries are skipped when run.
inline void detail::callback_node::cancel() noexcept {
  if (cancelled_.exchange(true, std::memory_order_acq_rel)) return;
  if (armed()) {
    loop_->remove_timer(*this);
    release();
  }
}

template <class Callback>
detail::callback_node* detail::loop_core::make_callback(Callback&& callback) {
  static_assert(std::is_invocable_v<std::decay_t<Callback>&>, "a loop callback takes no arguments");
  return new callback_of<std::decay_t<Callback>>(std::forward<Callback>(callback));
}

template <class Callback>
callback_handle detail::loop_core::call_soon(Callback&& callback) {
  check_thread("call_soon");
  callback_node* node = make_callback(std::forward<Callback>(callback));
  node->loop_ = this;
  node->retain();  // one reference for the loop, one for the handle
  ready_.push_back(*node);
  return callback_handle(node);
}

template <class Callback>
callback_handle detail::loop_core::call_at(time_point deadline, Callback&& callback) {
  check_thread("call_at");
  callback_node* node = make_callback(std::forward<Callback>(callback));
  node->loop_ = this;
  node->deadline = deadline;
  node->fire = &callback_node::fire_from_heap;
  node->retain();
  timers_.push(*node);
  return callback_handle(node);
}

template <class Callback>
callback_handle detail::loop_core::call_later(duration delay, Callback&& callback) {
  return call_at(deadline_after(delay), std::forward<Callback>(callback));
}

template <class Callback>
callback_handle detail::loop_core::call_soon_threadsafe(Callback&& callback) {
  callback_node* node = make_callback(std::forward<Callback>(callback));
  node->loop_ = this;
  node->retain();
  if (!inbox_->post(*node)) {
    node->release();
    node->release();
    throw invalid_state_error("call_soon_threadsafe: the event loop is closed");
  }
  return callback_handle(node);
}

template <class KeepRunning>
void detail::loop_core::run_while(KeepRunning keep_running) {
  check_can_run();
  loop_core*& slot = running_loop_slot();
  slot = this;
  running_ = true;
  running_thread_.store(std::this_thread::get_id(), std::memory_order_relaxed);
  struct restore {
    loop_core* loop;
    ~restore() {
      loop->running_ = false;
      loop->running_thread_.store(std::thread::id{}, std::memory_order_relaxed);
      loop->stopping_ = false;
      running_loop_slot() = nullptr;
    }
  } restore_on_exit{this};
  while (keep_running()) run_once();
}

// ============================================================================
// 4. I/O backends: the operation interface, then one section per OS  >>backend
//    Uses 2 and 3. Exactly one backend is compiled in.
// ============================================================================
//
// The backend is built around operations (read, recv, send, accept, connect,
// ...), not around "wait until readable", so that IOCP and io_uring can submit
// them natively. Its contract, the same in every backend:
//
//   bool start(io_operation& op)
//       Performs op at once if it can: returns true with op.result / op.error
//       set, and op.complete is NOT called. Otherwise parks op and returns
//       false; op.complete runs later, on the loop thread, exactly once.
//   void cancel(io_operation& op) noexcept
//       For a parked op: op.complete runs with op.error == ECANCELED (at once
//       on epoll and kqueue; after the OS confirms on IOCP and io_uring, which
//       may also report that the operation finished first). No-op for an op
//       not parked.
//   void abandon(io_operation& op) noexcept
//       The op's owner is being destroyed: forget op, no callback.
//   void release(native_handle handle) noexcept
//       Called before a handle is closed: drops its registration (kevent(2) and
//       epoll both need this before close to stay consistent under dup()).
//   void wake() noexcept
//       Any thread: makes a blocked poll() return.
//   void poll(int timeout_ms)
//       Waits up to timeout_ms (-1: no limit) for readiness or completions and
//       runs the completions of the operations that finished.
//   const char* name()
//       "epoll", "kqueue", "iocp" or "io_uring": event_loop::backend_name().
//   std::size_t registered_count() / parked_count()
//       Handles known to the OS queue / operations parked: for leak checks.
//   bool read_would_block(native_handle handle) const noexcept
//       True only when a read of the byte stream `handle` is known to find
//       nothing (the last read took all there was and the OS has reported
//       nothing since, as of the last poll); false when not known. Lets the
//       layers above skip a syscall (a pooled HTTP connection's check).
// One kind of operation moves no bytes: wait_process completes (result 0)
// once the child process behind op.handle has exited, and never reaps it (its
// owner does: waitpid, GetExitCodeProcess). op.handle is what each OS waits on:
// a pidfd on epoll (readable once the process exits: parked like a read), the
// pid on kqueue (EVFILT_PROC with NOTE_EXIT; the pid needs no release()), the
// process handle on IOCP (RegisterWaitForSingleObject: a system wait thread,
// shared by up to 63 waits, posts the completion packet to the port).
// start() completes it at once when the process has exited already; cancel()
// and abandon() stop the wait, never the process.
// And one constant:
//   accept_scratch_bytes
//       The buffer an accept operation must lend the backend (AcceptEx writes
//       both addresses there); 0 where the OS needs none.

namespace detail {

enum class io_kind : std::uint8_t {
  read,           // read(2) on a pipe or other fd
  write,          // write(2)
  recv,           // recv(2) on a socket
  send,           // send(2), never raising SIGPIPE
  accept,         // accept4(2): result is the new handle, non-blocking
  connect,        // connect(2), then SO_ERROR once writable
  recv_from,      // recvfrom(2): address / address_length filled
  send_to,        // sendto(2)
  wait_readable,  // completes when the handle becomes readable
  wait_writable,  // completes when the handle becomes writable
  wait_process,   // completes when the child process exited (not reaped; see above)
};

// One I/O request. It lives in the awaiting frame (or in a stream): starting
// and parking allocate nothing.
struct io_operation {
#if defined(CORO_LOOP_BACKEND_IOCP)
  // First, so that the OVERLAPPED* a completion packet carries converts back
  // to its operation (io_operation is standard-layout).
  OVERLAPPED overlapped{};
#endif
  // --- set by the caller
  io_kind kind = io_kind::read;
  native_handle handle = invalid_handle;
  void* buffer = nullptr;
  std::size_t length = 0;
  int flags = 0;                     // MSG_* flags for recv/send
  void* address = nullptr;           // a sockaddr_storage for accept/connect/recv_from/send_to
  std::uint32_t address_length = 0;  // in: its size; out (accept, recv_from): the filled length
  void (*complete)(io_operation* self) noexcept = nullptr;
  // --- results
  std::ptrdiff_t result = 0;  // bytes moved, or the accepted handle
  int error = 0;              // 0, an errno value, or ECANCELED after cancel()
  // --- backend-private
  io_operation* prev_parked = nullptr;
  io_operation* next_parked = nullptr;
  bool parked = false;
  bool connect_started = false;
#if defined(CORO_LOOP_BACKEND_IOCP)
  native_handle accepted_handle = invalid_handle;  // AcceptEx's new socket until it completes
  unsigned long transfer_flags = 0;                // WSARecv's in/out flags
  int transfer_address_length = 0;                 // WSARecvFrom's in/out address length
  bool probe = false;                              // a wait_readable/wait_writable zero-byte transfer
  bool file = false;                               // not a socket (a pipe): ReadFile / WriteFile
  HANDLE wait_registration = nullptr;              // wait_process: RegisterWaitForSingleObject's
  HANDLE completion_port = nullptr;                // wait_process: where the wait thread posts
  LONG wait_state = 0;                             // wait_process: 0 waiting, 1 exited, 2 cancelled
#endif
#if defined(CORO_LOOP_BACKEND_IO_URING)
  msghdr message{};          // recv_from / send_to: what IORING_OP_RECVMSG / SENDMSG read
  iovec vector{};            // its one buffer
  bool polling = false;      // a readiness wait is submitted; the syscall is tried after it
  bool cancelling = false;   // cancel() asked: the op completes as cancelled rather than wait again
  bool listed = false;       // on its handle's list (release() cancels the list)
#endif

  bool reads() const noexcept {
    return kind == io_kind::read || kind == io_kind::recv || kind == io_kind::accept ||
           kind == io_kind::recv_from || kind == io_kind::wait_readable || kind == io_kind::wait_process;
  }
};

}  // namespace detail

#if defined(CORO_LOOP_POSIX)
// --- 4.1 Readiness backends (epoll, kqueue): the shared part ---
// Try the syscall first; on EAGAIN park the operation on its handle and retry
// it when the OS reports readiness. Each handle is registered once, in clear
// (edge) mode for both directions, and stays registered until release(): no
// system call per operation. The OS queue itself is the Derived class's
// (4.2 epoll, 4.3 kqueue): watch(handle), unwatch(handle), wake(), poll().
namespace detail {

// An accept needs no buffer of its own here (see the contract above).
inline constexpr std::size_t accept_scratch_bytes = 0;

// A send that never raises SIGPIPE where the flag exists; elsewhere (macOS)
// the process-wide SIG_IGN below covers it.
#if defined(MSG_NOSIGNAL)
inline constexpr int send_no_signal = MSG_NOSIGNAL;
#else
inline constexpr int send_no_signal = 0;
#endif

// Python ignores SIGPIPE at start-up; so do we, once, unless the program
// installed its own handler: a write to a closed pipe is then EPIPE.
inline void ignore_sigpipe_once() noexcept {
  static std::once_flag once;
  std::call_once(once, [] {
    struct sigaction current{};
    if (::sigaction(SIGPIPE, nullptr, &current) == 0 && current.sa_handler == SIG_DFL) {
      struct sigaction ignore{};
      ignore.sa_handler = SIG_IGN;
      ::sigemptyset(&ignore.sa_mask);
      ::sigaction(SIGPIPE, &ignore, nullptr);
    }
  });
}

// Marks a descriptor non-blocking and close-on-exec, for the systems whose
// socket()/accept() cannot do it in the same call.
inline int make_non_blocking_and_cloexec(int handle) noexcept {
  const int status_flags = ::fcntl(handle, F_GETFL);
  if (status_flags < 0 || ::fcntl(handle, F_SETFL, status_flags | O_NONBLOCK) < 0) return -1;
  const int descriptor_flags = ::fcntl(handle, F_GETFD);
  if (descriptor_flags < 0 || ::fcntl(handle, F_SETFD, descriptor_flags | FD_CLOEXEC) < 0) return -1;
  return 0;
}

// pipe2 where it exists; pipe + fcntl on macOS (a fork on another thread
// between the two calls would pass the descriptors on: a program that spawns
// processes does so through 9.9, whose children close what they do not need).
// The signal self-pipes (9.9, 11) and the pipes of child processes use it.
inline bool open_non_blocking_pipe(int (&ends)[2]) noexcept {
#if defined(__APPLE__)
  if (::pipe(ends) < 0) return false;
  if (make_non_blocking_and_cloexec(ends[0]) < 0 || make_non_blocking_and_cloexec(ends[1]) < 0) {
    const int error = errno;
    ::close(ends[0]);
    ::close(ends[1]);
    errno = error;
    return false;
  }
  return true;
#else
  return ::pipe2(ends, O_NONBLOCK | O_CLOEXEC) == 0;
#endif
}

// accept4 where it exists (Linux, the BSDs); accept + fcntl on macOS.
inline int accept_non_blocking(int listener, sockaddr* address, socklen_t* length) noexcept {
#if defined(__APPLE__)
  const int accepted = ::accept(listener, address, length);
  if (accepted >= 0 && make_non_blocking_and_cloexec(accepted) < 0) {
    const int error = errno;
    ::close(accepted);
    errno = error;
    return -1;
  }
  return accepted;
#else
  return ::accept4(listener, address, length, SOCK_NONBLOCK | SOCK_CLOEXEC);
#endif
}

// Pipes and stream sockets only: a datagram socket returns one datagram
// per read, and a terminal one line, whatever else is queued.
inline bool is_byte_stream(native_handle handle) noexcept {
  struct stat status {};
  if (::fstat(handle, &status) < 0) return false;
  if (S_ISFIFO(status.st_mode)) return true;
  if (!S_ISSOCK(status.st_mode)) return false;
  int type = 0;
  socklen_t length = sizeof type;
  return ::getsockopt(handle, SOL_SOCKET, SO_TYPE, &type, &length) == 0 && type == SOCK_STREAM;
}

// Runs op's syscall once, without blocking. True when op is finished (result
// or error set); false when it would block (a connect: once it is under way).
// `after_readiness`: the OS reported the handle ready (a wait is then done).
// The readiness backends and io_uring's first try share it.
inline bool perform(io_operation& op, bool after_readiness) noexcept {
  for (;;) {
    ssize_t done = -1;
    switch (op.kind) {
      case io_kind::read: done = ::read(op.handle, op.buffer, op.length); break;
      case io_kind::write: done = ::write(op.handle, op.buffer, op.length); break;
      case io_kind::recv: done = ::recv(op.handle, op.buffer, op.length, op.flags); break;
      case io_kind::send: done = ::send(op.handle, op.buffer, op.length, op.flags | send_no_signal); break;
      case io_kind::accept: {
        socklen_t length = op.address_length;
        done = accept_non_blocking(op.handle, static_cast<sockaddr*>(op.address),
                                   op.address != nullptr ? &length : nullptr);
        if (done >= 0) op.address_length = length;
        break;
      }
      case io_kind::recv_from: {
        socklen_t length = op.address_length;
        done = ::recvfrom(op.handle, op.buffer, op.length, op.flags, static_cast<sockaddr*>(op.address), &length);
        if (done >= 0) op.address_length = length;
        break;
      }
      case io_kind::send_to:
        done = ::sendto(op.handle, op.buffer, op.length, op.flags | send_no_signal,
                        static_cast<const sockaddr*>(op.address), op.address_length);
        break;
      case io_kind::connect: {
        if (!op.connect_started) {
          if (::connect(op.handle, static_cast<const sockaddr*>(op.address), op.address_length) == 0) {
            op.result = 0;
            return true;
          }
          if (errno == EINPROGRESS) {
            op.connect_started = true;
            return false;
          }
          if (errno == EINTR) continue;
          op.error = errno;
          return true;
        }
        int socket_error = 0;
        socklen_t length = sizeof socket_error;
        if (::getsockopt(op.handle, SOL_SOCKET, SO_ERROR, &socket_error, &length) < 0) socket_error = errno;
        if (socket_error == EINPROGRESS || socket_error == EALREADY) return false;
        op.error = socket_error;
        return true;
      }
      case io_kind::wait_readable:
      case io_kind::wait_writable:
      case io_kind::wait_process: {  // a pidfd (epoll; kqueue waits for processes itself)
        if (after_readiness) return true;
        // Reports are spent once seen: readiness that already exists must
        // satisfy the wait now, not after the next report.
        return ready_now(op.handle, op.kind != io_kind::wait_writable);
      }
    }
    if (done >= 0) {
      op.result = done;
      return true;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return false;
    op.error = errno;
    return true;
  }
}

template <class Derived>
class readiness_backend {
 public:
  bool start(io_operation& op) {
    op.error = 0;
    op.result = 0;
    op.connect_started = false;
    if (known_drained(op)) {
      // The last read took all there was, and whatever arrives since will be
      // reported: the syscall would only say EAGAIN (a request-response
      // exchange saves one per response).
      park(op);
      return false;
    }
    if (perform(op, false)) {
      note_read(op);
      return true;
    }
    park(op);
    if (is_byte_read(op)) handles_[static_cast<std::size_t>(op.handle)].read_drained = true;
    return false;
  }

  void cancel(io_operation& op) noexcept {
    if (!op.parked) return;
    unpark(op);
    op.error = ECANCELED;
    op.complete(&op);
  }

  void abandon(io_operation& op) noexcept {
    if (op.parked) unpark(op);
  }

  void release(native_handle handle) noexcept {
    if (handle < 0 || static_cast<std::size_t>(handle) >= handles_.size()) return;
    handle_state& state = handles_[static_cast<std::size_t>(handle)];
    // Parked operations on a handle being closed complete as cancelled
    // rather than waiting for readiness that can never come.
    for (io_operation** head : {&state.readers_head, &state.writers_head}) {
      while (*head != nullptr) cancel(**head);
    }
    if (state.registered) {
      derived().unwatch(handle);
      --registered_count_;
    }
    state = handle_state{};  // the number may come back as another file
  }

  std::size_t registered_count() const noexcept { return registered_count_; }
  std::size_t parked_count() const noexcept { return parked_count_; }

  // True when the last read of the byte stream `handle` took all there was
  // and the OS has reported nothing since (no data, end of file or error), as
  // of the last poll: a read would say EAGAIN. False when not known.
  bool read_would_block(native_handle handle) const noexcept {
    return tracks_drain(handle) && handles_[static_cast<std::size_t>(handle)].read_drained;
  }

 protected:
  readiness_backend() { ignore_sigpipe_once(); }

  // Retries the parked operations of one direction in FIFO order until one
  // would block again: in clear mode, the rest wait for the next report.
  // `hung_up`: the OS reported end of file or an error with this readiness.
  void retry_parked(native_handle handle, bool readers, bool hung_up = false) noexcept {
    if (handle < 0 || static_cast<std::size_t>(handle) >= handles_.size()) return;
    if (readers) {
      handle_state& state = handles_[static_cast<std::size_t>(handle)];
      state.read_drained = false;
      // End of file and errors are reported once but stay: a read after a
      // short one returns them at once, so it must always be tried.
      if (hung_up) state.read_ended = true;
    }
    for (;;) {
      handle_state& state = handles_[static_cast<std::size_t>(handle)];
      io_operation* op = readers ? state.readers_head : state.writers_head;
      if (op == nullptr) return;
      if (!perform(*op, true)) {
        if (readers && is_byte_read(*op)) state.read_drained = true;
        return;
      }
      note_read(*op);
      unpark(*op);
      op->complete(op);
    }
  }

 private:
  struct handle_state {
    io_operation* readers_head = nullptr;
    io_operation* readers_tail = nullptr;
    io_operation* writers_head = nullptr;
    io_operation* writers_tail = nullptr;
    bool registered = false;
    bool byte_stream = false;   // a pipe or stream socket: a short read empties it
    bool read_drained = false;  // nothing to read until the OS reports more
    bool read_ended = false;    // end of file or an error was reported: never skip a read
  };

  Derived& derived() noexcept { return static_cast<Derived&>(*this); }

  // A registered byte stream not yet at its end: its "nothing left" state is tracked.
  bool tracks_drain(native_handle handle) const noexcept {
    if (handle < 0 || static_cast<std::size_t>(handle) >= handles_.size()) return false;
    const handle_state& state = handles_[static_cast<std::size_t>(handle)];
    return state.registered && state.byte_stream && !state.read_ended;
  }
  // A read or recv on such a handle.
  bool is_byte_read(const io_operation& op) const noexcept {
    return (op.kind == io_kind::read || op.kind == io_kind::recv) && tracks_drain(op.handle);
  }
  bool known_drained(const io_operation& op) const noexcept {
    return (op.kind == io_kind::read || op.kind == io_kind::recv) && read_would_block(op.handle);
  }
  // A short read of a byte stream took everything there was.
  void note_read(const io_operation& op) noexcept {
    if (op.error == 0 && op.result > 0 && static_cast<std::size_t>(op.result) < op.length && is_byte_read(op)) {
      handles_[static_cast<std::size_t>(op.handle)].read_drained = true;
    }
  }

  void park(io_operation& op) {
    auto index = static_cast<std::size_t>(op.handle);
    if (index >= handles_.size()) handles_.resize(std::max(index + 1, handles_.size() * 2));
    handle_state& state = handles_[index];
    if (!state.registered) {
      derived().watch(op.handle);
      state.registered = true;
      state.byte_stream = is_byte_stream(op.handle);
      ++registered_count_;
    }
    io_operation*& head = op.reads() ? state.readers_head : state.writers_head;
    io_operation*& tail = op.reads() ? state.readers_tail : state.writers_tail;
    op.prev_parked = tail;
    op.next_parked = nullptr;
    if (tail != nullptr) {
      tail->next_parked = &op;
    } else {
      head = &op;
    }
    tail = &op;
    op.parked = true;
    ++parked_count_;
  }

  void unpark(io_operation& op) noexcept {
    handle_state& state = handles_[static_cast<std::size_t>(op.handle)];
    io_operation*& head = op.reads() ? state.readers_head : state.writers_head;
    io_operation*& tail = op.reads() ? state.readers_tail : state.writers_tail;
    (op.prev_parked != nullptr ? op.prev_parked->next_parked : head) = op.next_parked;
    (op.next_parked != nullptr ? op.next_parked->prev_parked : tail) = op.prev_parked;
    op.prev_parked = op.next_parked = nullptr;
    op.parked = false;
    --parked_count_;
  }

  std::vector<handle_state> handles_;
  std::size_t registered_count_ = 0;
  std::size_t parked_count_ = 0;
};

}  // namespace detail
#endif  // CORO_LOOP_POSIX

#if defined(CORO_LOOP_EPOLL)
// --- 4.2 epoll (Linux)  >>epoll ---
// One edge-triggered registration per handle for both directions; an eventfd
// wakes epoll_wait from other threads.
namespace detail {

class epoll_backend : public readiness_backend<epoll_backend> {
 public:
  epoll_backend() {
    epoll_handle_ = ::epoll_create1(EPOLL_CLOEXEC);
    if (epoll_handle_ < 0) throw_system_error(errno, "epoll_create1");
    wake_handle_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_handle_ < 0) {
      int error = errno;
      ::close(epoll_handle_);
      throw_system_error(error, "eventfd");
    }
    epoll_event event{};
    event.events = EPOLLIN;
    event.data.fd = wake_handle_;
    if (::epoll_ctl(epoll_handle_, EPOLL_CTL_ADD, wake_handle_, &event) < 0) {
      int error = errno;
      ::close(wake_handle_);
      ::close(epoll_handle_);
      throw_system_error(error, "epoll_ctl add eventfd");
    }
  }
  ~epoll_backend() {
    ::close(wake_handle_);
    ::close(epoll_handle_);
  }
  epoll_backend(const epoll_backend&) = delete;
  epoll_backend& operator=(const epoll_backend&) = delete;

  const char* name() const noexcept { return "epoll"; }

  void wake() noexcept {
    std::uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the loop will wake anyway.
    [[maybe_unused]] ssize_t written = ::write(wake_handle_, &one, sizeof one);
  }

  void poll(int timeout_ms) {
    epoll_event events[128];
    int count = ::epoll_wait(epoll_handle_, events, 128, timeout_ms);
    if (count < 0) {
      if (errno == EINTR) return;
      throw_system_error(errno, "epoll_wait");
    }
    for (int i = 0; i < count; ++i) {
      const int handle = events[i].data.fd;
      if (handle == wake_handle_) {
        std::uint64_t value;
        [[maybe_unused]] ssize_t got = ::read(wake_handle_, &value, sizeof value);
        continue;
      }
      const std::uint32_t flags = events[i].events;
      if (flags & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) {
        retry_parked(handle, true, (flags & (EPOLLRDHUP | EPOLLERR | EPOLLHUP)) != 0);
      }
      if (flags & (EPOLLOUT | EPOLLERR | EPOLLHUP)) retry_parked(handle, false);
    }
  }

 private:
  friend class readiness_backend<epoll_backend>;

  void watch(native_handle handle) {
    epoll_event event{};
    event.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    event.data.fd = handle;
    if (::epoll_ctl(epoll_handle_, EPOLL_CTL_ADD, handle, &event) < 0) {
      throw_system_error(errno, "epoll_ctl add fd " + std::to_string(handle));
    }
  }
  void unwatch(native_handle handle) noexcept { ::epoll_ctl(epoll_handle_, EPOLL_CTL_DEL, handle, nullptr); }

  int epoll_handle_ = -1;
  int wake_handle_ = -1;
};

#if defined(CORO_LOOP_BACKEND_EPOLL)
class backend final : public epoll_backend {};
#endif

}  // namespace detail
#endif  // CORO_LOOP_EPOLL

#if defined(CORO_LOOP_BACKEND_KQUEUE)
// --- 4.3 kqueue (macOS, FreeBSD, OpenBSD, NetBSD)  >>kqueue ---
// Each handle gets an EVFILT_READ and an EVFILT_WRITE filter, both EV_CLEAR
// (reported once per change, like edge-triggered epoll), added together and
// deleted together before close. An EVFILT_USER event wakes kevent() from
// other threads. A process wait is an EVFILT_PROC filter on the pid with
// NOTE_EXIT and the operation as udata; the system drops it once it reported
// the exit (it marks it EV_ONESHOT). struct kevent is only touched through
// EV_SET and its named fields: its layout differs between macOS and the BSDs.
namespace detail {

class backend : public readiness_backend<backend> {
 public:
  backend() {
    queue_handle_ = ::kqueue();
    if (queue_handle_ < 0) throw_system_error(errno, "kqueue");
    // kqueue descriptors are not inherited by fork(); exec is what matters.
    ::fcntl(queue_handle_, F_SETFD, FD_CLOEXEC);
    struct kevent change;
    EV_SET(&change, wake_identifier, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    if (::kevent(queue_handle_, &change, 1, nullptr, 0, nullptr) < 0) {
      const int error = errno;
      ::close(queue_handle_);
      throw_system_error(error, "kevent add EVFILT_USER");
    }
  }
  ~backend() { ::close(queue_handle_); }
  backend(const backend&) = delete;
  backend& operator=(const backend&) = delete;

  const char* name() const noexcept { return "kqueue"; }

  // Process waits are this backend's own; everything else is the shared part's.
  bool start(io_operation& op) {
    if (op.kind != io_kind::wait_process) return readiness_backend::start(op);
    op.error = 0;
    op.result = 0;
    struct kevent change;
    EV_SET(&change, static_cast<std::uintptr_t>(op.handle), EVFILT_PROC, EV_ADD, NOTE_EXIT, 0, &op);
    if (::kevent(queue_handle_, &change, 1, nullptr, 0, nullptr) < 0) {
      // ESRCH: no such process any more. A child that has exited but is not
      // reaped yet is reported at once by FreeBSD; macOS may refuse it so.
      if (errno != ESRCH) op.error = errno;
      return true;
    }
    op.parked = true;
    ++parked_process_waits_;
    return false;
  }
  void cancel(io_operation& op) noexcept {
    if (op.kind != io_kind::wait_process) return readiness_backend::cancel(op);
    if (!op.parked) return;
    forget_process_wait(op);
    op.error = ECANCELED;
    op.complete(&op);
  }
  void abandon(io_operation& op) noexcept {
    if (op.kind != io_kind::wait_process) return readiness_backend::abandon(op);
    if (op.parked) forget_process_wait(op);
  }
  std::size_t parked_count() const noexcept { return readiness_backend::parked_count() + parked_process_waits_; }

  void wake() noexcept {
    struct kevent change;
    EV_SET(&change, wake_identifier, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    ::kevent(queue_handle_, &change, 1, nullptr, 0, nullptr);
  }

  void poll(int timeout_ms) {
    timespec timeout{};
    timeout.tv_sec = timeout_ms / 1000;
    timeout.tv_nsec = static_cast<long>(timeout_ms % 1000) * 1'000'000L;
    const int count = ::kevent(queue_handle_, nullptr, 0, events_, event_capacity, timeout_ms < 0 ? nullptr : &timeout);
    if (count < 0) {
      if (errno == EINTR) return;
      throw_system_error(errno, "kevent wait");
    }
    // Members, not locals: a completion may abandon a process wait whose
    // event is further on in this batch (forget_process_wait drops it).
    event_count_ = count;
    for (next_event_ = 0; next_event_ < event_count_;) {
      const struct kevent& event = events_[next_event_++];
      if (event.filter == EVFILT_USER) continue;
      if (event.filter == EVFILT_PROC) {
        // reinterpret_cast: udata is void* on macOS and FreeBSD, intptr_t on older NetBSD.
        auto* op = reinterpret_cast<io_operation*>(event.udata);
        if (op == nullptr) continue;  // dropped
        op->parked = false;
        --parked_process_waits_;
        op->complete(op);
        continue;
      }
      const auto handle = static_cast<native_handle>(event.ident);
      // EV_EOF and EV_ERROR end up here too: the retried syscall reports them.
      if (event.filter == EVFILT_READ) retry_parked(handle, true, (event.flags & (EV_EOF | EV_ERROR)) != 0);
      if (event.filter == EVFILT_WRITE) retry_parked(handle, false);
    }
    event_count_ = next_event_ = 0;
  }

 private:
  friend class readiness_backend<backend>;
  static constexpr std::uintptr_t wake_identifier = 0;  // EVFILT_USER has its own name space
  static constexpr int event_capacity = 128;

  void watch(native_handle handle) {
    struct kevent changes[2];
    EV_SET(&changes[0], static_cast<std::uintptr_t>(handle), EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    EV_SET(&changes[1], static_cast<std::uintptr_t>(handle), EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    if (::kevent(queue_handle_, changes, 2, nullptr, 0, nullptr) < 0) {
      throw_system_error(errno, "kevent add fd " + std::to_string(handle));
    }
  }
  void unwatch(native_handle handle) noexcept {
    struct kevent changes[2];
    EV_SET(&changes[0], static_cast<std::uintptr_t>(handle), EVFILT_READ, EV_DELETE, 0, 0, nullptr);
    EV_SET(&changes[1], static_cast<std::uintptr_t>(handle), EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
    ::kevent(queue_handle_, changes, 2, nullptr, 0, nullptr);
  }
  // Deletes the filter (ENOENT once the exit was reported: the system
  // dropped it) and any report of it this poll has not handled yet.
  void forget_process_wait(io_operation& op) noexcept {
    struct kevent change;
    EV_SET(&change, static_cast<std::uintptr_t>(op.handle), EVFILT_PROC, EV_DELETE, 0, 0, nullptr);
    ::kevent(queue_handle_, &change, 1, nullptr, 0, nullptr);
    for (int i = next_event_; i < event_count_; ++i) {
      if (events_[i].filter == EVFILT_PROC && reinterpret_cast<io_operation*>(events_[i].udata) == &op) {
        events_[i].udata = {};
      }
    }
    op.parked = false;
    --parked_process_waits_;
  }

  int queue_handle_ = -1;
  struct kevent events_[event_capacity];
  int event_count_ = 0;
  int next_event_ = 0;
  std::size_t parked_process_waits_ = 0;
};

}  // namespace detail
#endif  // CORO_LOOP_BACKEND_KQUEUE

#if defined(CORO_LOOP_BACKEND_IOCP)
// --- 4.4 IOCP (Windows)  >>iocp ---
// Operations are submitted as overlapped Winsock calls and finish when their
// completion packet is dequeued (GetQueuedCompletionStatusEx): start() never
// completes an operation itself, except on an immediate error. A socket is
// associated with the port on its first operation. cancel() asks CancelIoEx
// and the packet that follows says whether the cancel or the transfer won;
// abandon() waits for that packet, since the OS may write into the buffer until
// then. A null packet posted by wake() makes a blocked poll() return. Handles
// that are not sockets (the overlapped pipes of 9.9) read and write with
// ReadFile / WriteFile, a broken pipe reading as the end of the stream; a
// process wait's packet is posted by the system wait thread that saw the
// process handle signalled, or by cancel() when it beat that thread.
namespace detail {

// Winsock's start-up, and the extension functions that overlapped accept and
// connect need (loaded through WSAIoctl: no mswsock import library), once per
// process. Winsock is left started at exit: a pool thread may still resolve.
struct winsock_library {
  int startup_error = 0;
  LPFN_ACCEPTEX accept_ex = nullptr;
  LPFN_CONNECTEX connect_ex = nullptr;
  LPFN_GETACCEPTEXSOCKADDRS get_accept_ex_sockaddrs = nullptr;
  ULONG(WINAPI* nt_status_to_error)(LONG status) = nullptr;

  winsock_library() {
    WSADATA data;
    startup_error = ::WSAStartup(MAKEWORD(2, 2), &data);
    if (startup_error != 0) return;
    const SOCKET probe = ::WSASocketW(AF_INET, SOCK_STREAM, IPPROTO_TCP, nullptr, 0, WSA_FLAG_OVERLAPPED);
    if (probe != INVALID_SOCKET) {
      GUID accept_id = WSAID_ACCEPTEX;
      GUID connect_id = WSAID_CONNECTEX;
      GUID sockaddrs_id = WSAID_GETACCEPTEXSOCKADDRS;
      load(probe, accept_id, &accept_ex);
      load(probe, connect_id, &connect_ex);
      load(probe, sockaddrs_id, &get_accept_ex_sockaddrs);
      ::closesocket(probe);
    }
    if (HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll")) {
      nt_status_to_error = reinterpret_cast<ULONG(WINAPI*)(LONG)>(
          reinterpret_cast<void (*)()>(::GetProcAddress(ntdll, "RtlNtStatusToDosError")));
    }
  }
  template <class Function>
  static void load(SOCKET probe, GUID& id, Function* function) noexcept {
    DWORD returned = 0;
    ::WSAIoctl(probe, SIO_GET_EXTENSION_FUNCTION_POINTER, &id, sizeof id, function, sizeof *function, &returned,
               nullptr, nullptr);
  }
};

inline const winsock_library& winsock_loaded() noexcept {
  static const winsock_library library;
  return library;
}
// Starts Winsock if needed; throws when it or its extensions are missing.
inline const winsock_library& winsock() {
  const winsock_library& library = winsock_loaded();
  if (library.startup_error != 0) {
    throw_system_error(posix_error_from_windows(static_cast<unsigned long>(library.startup_error)), "WSAStartup");
  }
  if (library.accept_ex == nullptr || library.connect_ex == nullptr || library.get_accept_ex_sockaddrs == nullptr) {
    throw_system_error(EOPNOTSUPP, "WSAIoctl: the AcceptEx/ConnectEx extensions are missing");
  }
  return library;
}

// AcceptEx writes both addresses, each with 16 spare bytes, into the buffer
// the accept operation supplies.
inline constexpr std::size_t accept_address_space = sizeof(sockaddr_storage) + 16;
inline constexpr std::size_t accept_buffer_size = 2 * accept_address_space;
inline constexpr std::size_t accept_scratch_bytes = accept_buffer_size;

class backend {
 public:
  backend() {
    winsock();
    port_ = ::CreateIoCompletionPort(INVALID_HANDLE_VALUE, nullptr, 0, 1);
    if (port_ == nullptr) throw_system_error(posix_error_from_windows(::GetLastError()), "CreateIoCompletionPort");
  }
  ~backend() { ::CloseHandle(port_); }
  backend(const backend&) = delete;
  backend& operator=(const backend&) = delete;

  const char* name() const noexcept { return "iocp"; }

  bool start(io_operation& op) {
    op.error = 0;
    op.result = 0;
    op.overlapped = OVERLAPPED{};
    op.probe = false;
    if (op.kind == io_kind::wait_process) return start_process_wait(op);
    if (!associate(op)) return finish_now(op, posix_error_from_windows(::GetLastError()));
    if (op.kind == io_kind::wait_readable || op.kind == io_kind::wait_writable) {
      // Readiness that exists already satisfies the wait now; otherwise a
      // zero-byte transfer completes when the socket becomes ready.
      if (ready_now(op.handle, op.kind == io_kind::wait_readable)) return true;
      op.probe = true;
    }
    const int error = submit(op);
    if (error == EPIPE && op.file && op.kind == io_kind::read) return true;  // the writer closed: the end
    if (error != 0) return finish_now(op, error);
    op.parked = true;
    ++parked_count_;
    return false;
  }

  void cancel(io_operation& op) noexcept {
    if (!op.parked) return;
    if (op.kind == io_kind::wait_process) {
      stop_process_wait(op);
      return;
    }
    // The packet that follows carries ECANCELED, or the result when the
    // transfer finished first.
    ::CancelIoEx(reinterpret_cast<HANDLE>(op.handle), &op.overlapped);
  }

  void abandon(io_operation& op) noexcept {
    if (!op.parked) return;
    if (op.kind == io_kind::wait_process && !stop_process_wait(op)) {
      forget(op);  // no packet is on its way
      return;
    }
    for (std::size_t i = next_packet_; i < packets_.size(); ++i) {
      if (packets_[i].lpOverlapped == &op.overlapped) {
        packets_[i].lpOverlapped = nullptr;  // dropped: read as a wake-up
        forget(op);
        return;
      }
    }
    if (op.kind != io_kind::wait_process) ::CancelIoEx(reinterpret_cast<HANDLE>(op.handle), &op.overlapped);
    // The buffer is the owner's, and the owner is going: wait here for the
    // packet (cancelled I/O completes promptly), keeping the others for poll().
    for (;;) {
      OVERLAPPED_ENTRY entries[16];
      ULONG count = 0;
      if (!::GetQueuedCompletionStatusEx(port_, entries, 16, &count, INFINITE, FALSE)) continue;
      bool found = false;
      for (ULONG i = 0; i < count; ++i) {
        if (entries[i].lpOverlapped == &op.overlapped) {
          found = true;
        } else {
          packets_.push_back(entries[i]);
        }
      }
      if (found) break;
    }
    forget(op);
  }

  void release(native_handle handle) noexcept {
    // Operations in flight on a socket about to be closed finish as
    // cancelled; their packets arrive later, as closing would also cause.
    if (associated_.erase(handle) != 0) ::CancelIoEx(reinterpret_cast<HANDLE>(handle), nullptr);
  }

  void wake() noexcept { ::PostQueuedCompletionStatus(port_, 0, 0, nullptr); }

  void poll(int timeout_ms) {
    if (next_packet_ == packets_.size()) {
      packets_.clear();
      next_packet_ = 0;
      packets_.resize(128);
      ULONG count = 0;
      const DWORD wait = timeout_ms < 0 ? INFINITE : static_cast<DWORD>(timeout_ms);
      const BOOL dequeued = ::GetQueuedCompletionStatusEx(port_, packets_.data(), 128, &count, wait, FALSE);
      packets_.resize(dequeued ? count : 0);
      if (!dequeued) {
        const DWORD error = ::GetLastError();
        if (error == WAIT_TIMEOUT || error == WAIT_IO_COMPLETION) return;
        throw_system_error(posix_error_from_windows(error), "GetQueuedCompletionStatusEx");
      }
    }
    // A completion may abandon an operation whose packet is further on in
    // packets_ (abandon() then drops it) or take more packets (appended).
    while (next_packet_ < packets_.size()) {
      const OVERLAPPED_ENTRY packet = packets_[next_packet_++];
      if (packet.lpOverlapped != nullptr) finish(*reinterpret_cast<io_operation*>(packet.lpOverlapped), packet);
    }
  }

  std::size_t registered_count() const noexcept { return associated_.size(); }
  std::size_t parked_count() const noexcept { return parked_count_; }
  // Not known on IOCP: nothing says a socket is drained without asking it.
  bool read_would_block(native_handle) const noexcept { return false; }

 private:
  // Associates a handle with the port on its first operation, noting whether
  // it is a socket (only sockets answer SO_TYPE).
  bool associate(io_operation& op) {
    auto known = associated_.find(op.handle);
    if (known == associated_.end()) {
      if (::CreateIoCompletionPort(reinterpret_cast<HANDLE>(op.handle), port_, 0, 0) == nullptr &&
          ::GetLastError() != ERROR_INVALID_PARAMETER) {  // this port has it already (a released socket)
        return false;
      }
      int type = 0;
      int length = sizeof type;
      const bool socket = ::getsockopt(op.handle, SOL_SOCKET, SO_TYPE, reinterpret_cast<char*>(&type), &length) == 0;
      known = associated_.emplace(op.handle, !socket).first;
    }
    op.file = known->second;
    return true;
  }

  // A process wait: done now if the handle is signalled, else a system wait
  // thread posts the packet when it is (WT_EXECUTEONLYONCE: once).
  bool start_process_wait(io_operation& op) {
    const DWORD now = ::WaitForSingleObject(reinterpret_cast<HANDLE>(op.handle), 0);
    if (now == WAIT_OBJECT_0) return true;
    if (now == WAIT_FAILED) return finish_now(op, posix_error_from_windows(::GetLastError()));
    op.completion_port = port_;
    op.wait_state = 0;
    if (!::RegisterWaitForSingleObject(&op.wait_registration, reinterpret_cast<HANDLE>(op.handle), &on_process_exit,
                                       &op, INFINITE, WT_EXECUTEONLYONCE | WT_EXECUTEINWAITTHREAD)) {
      op.wait_registration = nullptr;
      return finish_now(op, posix_error_from_windows(::GetLastError()));
    }
    op.parked = true;
    ++parked_count_;
    return false;
  }
  // On a system wait thread. The loop thread's stop_process_wait waits for
  // this to return before it may free op.
  static void CALLBACK on_process_exit(void* context, BOOLEAN) noexcept {
    auto* op = static_cast<io_operation*>(context);
    if (::InterlockedCompareExchange(&op->wait_state, 1, 0) == 0) {
      ::PostQueuedCompletionStatus(op->completion_port, 0, 0, &op->overlapped);
    }
  }
  // Unregisters the wait (waiting for a callback under way to return) and, if
  // the exit was not posted, posts the cancel's packet instead. False when no
  // packet is on its way (a cancel already posted counts as on its way).
  bool stop_process_wait(io_operation& op) noexcept {
    if (op.wait_registration != nullptr) ::UnregisterWaitEx(std::exchange(op.wait_registration, nullptr), INVALID_HANDLE_VALUE);
    if (::InterlockedCompareExchange(&op.wait_state, 2, 0) != 0) return true;
    return ::PostQueuedCompletionStatus(port_, 0, 0, &op.overlapped) != 0;
  }

  static bool finish_now(io_operation& op, int error) noexcept {
    op.error = error;
    return true;
  }

  // Submits op's overlapped call: 0 when a packet will come, else the errno
  // of an immediate failure (no packet then).
  static int submit(io_operation& op) {
    if (op.file && (op.kind == io_kind::read || op.kind == io_kind::write)) return submit_file(op);
    const SOCKET handle = op.handle;
    WSABUF buffer{static_cast<ULONG>(std::min<std::size_t>(op.length, 1u << 30)), static_cast<char*>(op.buffer)};
    if (op.probe) buffer = WSABUF{0, nullptr};
    int status = 0;
    switch (op.kind) {
      case io_kind::read:
      case io_kind::recv:
      case io_kind::wait_readable:
        op.transfer_flags = op.probe ? MSG_PEEK : static_cast<unsigned long>(op.flags);
        status = ::WSARecv(handle, &buffer, 1, nullptr, &op.transfer_flags, &op.overlapped, nullptr);
        break;
      case io_kind::write:
      case io_kind::send:
      case io_kind::wait_writable:
        status = ::WSASend(handle, &buffer, 1, nullptr, static_cast<DWORD>(op.flags), &op.overlapped, nullptr);
        break;
      case io_kind::recv_from:
        op.transfer_flags = static_cast<unsigned long>(op.flags);
        op.transfer_address_length = static_cast<int>(op.address_length);
        status = ::WSARecvFrom(handle, &buffer, 1, nullptr, &op.transfer_flags, static_cast<sockaddr*>(op.address),
                               &op.transfer_address_length, &op.overlapped, nullptr);
        break;
      case io_kind::send_to:
        status = ::WSASendTo(handle, &buffer, 1, nullptr, static_cast<DWORD>(op.flags),
                             static_cast<const sockaddr*>(op.address), static_cast<int>(op.address_length),
                             &op.overlapped, nullptr);
        break;
      case io_kind::accept: return submit_accept(op);
      case io_kind::connect: return submit_connect(op);
      case io_kind::wait_process: return EINVAL;  // start() takes these
    }
    if (status == 0) return 0;
    const int error = ::WSAGetLastError();
    // A datagram larger than the buffer completes with a warning status, and
    // warnings are queued to the port like successes: its packet will come.
    if (error == WSA_IO_PENDING || (error == WSAEMSGSIZE && op.kind == io_kind::recv_from)) return 0;
    return posix_error_from_windows(static_cast<unsigned long>(error));
  }

  // ReadFile / WriteFile on an overlapped handle that is not a socket; an end
  // of file (the writer closed the pipe) is EPIPE here, the end of the stream above.
  static int submit_file(io_operation& op) {
    const auto handle = reinterpret_cast<HANDLE>(op.handle);
    const auto length = static_cast<DWORD>(std::min<std::size_t>(op.length, 1u << 30));
    const BOOL done = op.kind == io_kind::read ? ::ReadFile(handle, op.buffer, length, nullptr, &op.overlapped)
                                               : ::WriteFile(handle, op.buffer, length, nullptr, &op.overlapped);
    if (done) return 0;  // the packet still comes: the port is not in skip-on-success mode
    const DWORD error = ::GetLastError();
    if (error == ERROR_IO_PENDING) return 0;
    if (error == ERROR_HANDLE_EOF) return EPIPE;
    return posix_error_from_windows(error);
  }

  // AcceptEx takes a socket made beforehand, of the listener's family.
  static int submit_accept(io_operation& op) {
    if (op.buffer == nullptr || op.length < accept_buffer_size) return EINVAL;
    sockaddr_storage local{};
    int local_length = sizeof local;
    if (::getsockname(op.handle, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) return last_socket_error();
    op.accepted_handle = ::WSASocketW(local.ss_family, SOCK_STREAM, IPPROTO_TCP, nullptr, 0,
                                      WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (op.accepted_handle == INVALID_SOCKET) return last_socket_error();
    DWORD received = 0;
    if (winsock().accept_ex(op.handle, op.accepted_handle, op.buffer, 0, accept_address_space, accept_address_space,
                            &received, &op.overlapped) ||
        ::WSAGetLastError() == WSA_IO_PENDING) {
      return 0;
    }
    const int error = last_socket_error();
    ::closesocket(std::exchange(op.accepted_handle, invalid_handle));
    return error;
  }

  // ConnectEx needs a bound socket: bind to the wildcard address unless bound.
  static int submit_connect(io_operation& op) {
    const auto* peer = static_cast<const sockaddr*>(op.address);
    sockaddr_storage local{};
    int local_length = sizeof local;
    if (::getsockname(op.handle, reinterpret_cast<sockaddr*>(&local), &local_length) != 0) {
      local = sockaddr_storage{};
      local.ss_family = peer->sa_family;
      local_length = peer->sa_family == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
      if (::bind(op.handle, reinterpret_cast<const sockaddr*>(&local), local_length) != 0) return last_socket_error();
    }
    if (winsock().connect_ex(op.handle, peer, static_cast<int>(op.address_length), nullptr, 0, nullptr,
                             &op.overlapped) ||
        ::WSAGetLastError() == WSA_IO_PENDING) {
      return 0;
    }
    return last_socket_error();
  }

  // A packet arrived: fill in op's result and run its completion.
  void finish(io_operation& op, const OVERLAPPED_ENTRY& packet) noexcept {
    if (op.kind == io_kind::wait_process) {
      if (op.wait_registration != nullptr) ::UnregisterWaitEx(std::exchange(op.wait_registration, nullptr), INVALID_HANDLE_VALUE);
      op.result = 0;
      op.error = op.wait_state == 2 ? ECANCELED : 0;
      forget(op);
      op.complete(&op);
      return;
    }
    const auto status = static_cast<LONG>(op.overlapped.Internal);
    op.result = static_cast<std::ptrdiff_t>(packet.dwNumberOfBytesTransferred);
    op.error = status >= 0 ? 0 : error_from_status(status);
    if (op.kind == io_kind::recv_from && op.error == EMSGSIZE) op.error = 0;  // truncated, as on POSIX
    if (op.kind == io_kind::recv_from && op.error == 0) {
      op.address_length = static_cast<std::uint32_t>(op.transfer_address_length);
    }
    if (op.probe) op.result = 0;
    // A pipe whose writer closed: the end of the stream, as read(2) says.
    if (op.file && op.kind == io_kind::read && (op.error == EPIPE || op.error == -ERROR_HANDLE_EOF)) op.error = 0;
    if (op.kind == io_kind::accept) finish_accept(op);
    if (op.kind == io_kind::connect && op.error == 0 &&
        ::setsockopt(op.handle, SOL_SOCKET, SO_UPDATE_CONNECT_CONTEXT, nullptr, 0) != 0) {
      op.error = last_socket_error();
    }
    forget(op);
    op.complete(&op);
  }

  static void finish_accept(io_operation& op) noexcept {
    SOCKET accepted = std::exchange(op.accepted_handle, invalid_handle);
    SOCKET listener = op.handle;
    if (op.error == 0 && ::setsockopt(accepted, SOL_SOCKET, SO_UPDATE_ACCEPT_CONTEXT,
                                      reinterpret_cast<const char*>(&listener), sizeof listener) != 0) {
      op.error = last_socket_error();
    }
    if (op.error != 0) {
      ::closesocket(accepted);
      return;
    }
    sockaddr* local = nullptr;
    sockaddr* remote = nullptr;
    int local_length = 0;
    int remote_length = 0;
    winsock_loaded().get_accept_ex_sockaddrs(op.buffer, 0, accept_address_space, accept_address_space, &local,
                                      &local_length, &remote, &remote_length);
    if (op.address != nullptr && remote != nullptr) {
      const auto copied = std::min<std::size_t>(static_cast<std::size_t>(remote_length), op.address_length);
      std::memcpy(op.address, remote, copied);
      op.address_length = static_cast<std::uint32_t>(copied);
    }
    op.result = static_cast<std::ptrdiff_t>(accepted);
  }

  // The packet's NTSTATUS as an errno value, through its Win32 error code.
  static int error_from_status(LONG status) noexcept {
    const winsock_library& library = winsock_loaded();
    if (library.nt_status_to_error == nullptr) return EIO;
    return posix_error_from_windows(library.nt_status_to_error(status));
  }

  void forget(io_operation& op) noexcept {
    if (op.accepted_handle != invalid_handle) ::closesocket(std::exchange(op.accepted_handle, invalid_handle));
    op.parked = false;
    --parked_count_;
  }

  HANDLE port_ = nullptr;
  std::unordered_map<native_handle, bool> associated_;  // handle -> not a socket (ReadFile/WriteFile)
  std::vector<OVERLAPPED_ENTRY> packets_;  // dequeued; [next_packet_, size) not yet finished
  std::size_t next_packet_ = 0;
  std::size_t parked_count_ = 0;
};

}  // namespace detail
#endif  // CORO_LOOP_BACKEND_IOCP

#if defined(CORO_LOOP_BACKEND_IO_URING)
// --- 4.5 io_uring (Linux, opt-in)  >>io_uring ---
// Completion-based, as IOCP is, through the raw system calls (no liburing).
// start() tries the syscall at once, as epoll does, unless the handle's last
// read came back short (then it would only say EAGAIN): a send, or a read with
// data waiting, needs nothing more. What would block is submitted as the
// operation itself (IORING_OP_READ, WRITE, RECV, SEND, RECVMSG, SENDMSG) and
// completes with its completion entry. An accept, a connect under way and the
// readiness waits are an IORING_OP_POLL_ADD followed by the syscall; so is an
// operation the kernel answered -EAGAIN (older kernels do so for non-blocking
// descriptors). Submissions stay in the ring until the next poll(): one
// io_uring_enter submits them all and waits. cancel() submits
// IORING_OP_ASYNC_CANCEL and the completion decides (ECANCELED, or the result
// when the transfer finished first); abandon() waits for it, since the kernel
// may write into the buffer until then; release() submits the cancels of what
// is in flight on the handle at once, before the handle is closed, and an
// operation released so completes as cancelled (or with what the kernel had
// already moved), never touching the handle's number again (another file may
// have it by then). The kernel ties each request to the thread that submitted
// it: completions reach a loop that another thread runs now only while the
// submitting thread lives (one that ends has its requests cancelled).
// Where the kernel refuses io_uring (seccomp in containers, kernels before
// 5.11, qemu-user) or lacks an operation used here, or the environment has
// CORO_LOOP_IO_URING=0, the loop runs the epoll backend (4.2) instead, with
// the same behaviour; event_loop::backend_name() says which one runs.
#if !defined(IORING_SETUP_SUBMIT_ALL)  // kernel headers older than 5.18
#define IORING_SETUP_SUBMIT_ALL (1U << 7)
#endif
#if !defined(IORING_SETUP_COOP_TASKRUN)  // kernel headers older than 5.19
#define IORING_SETUP_COOP_TASKRUN (1U << 8)
#define IORING_SETUP_TASKRUN_FLAG (1U << 9)
#define IORING_SQ_TASKRUN (1U << 2)
#endif

namespace detail {

class backend {
 public:
  backend() {
    ignore_sigpipe_once();
    if (!open_ring()) {
      close_ring();
      fallback_ = std::make_unique<epoll_backend>();
    }
  }
  ~backend() { close_ring(); }
  backend(const backend&) = delete;
  backend& operator=(const backend&) = delete;

  const char* name() const noexcept { return fallback_ ? "epoll" : "io_uring"; }

  bool start(io_operation& op) {
    if (fallback_) return fallback_->start(op);
    op.error = 0;
    op.result = 0;
    op.connect_started = false;
    op.polling = false;
    op.cancelling = false;
    if (!known_drained(op) && perform(op, false)) {
      note_read(op);
      return true;
    }
    park(op);
    submit_operation(op);
    return false;
  }

  void cancel(io_operation& op) noexcept {
    if (fallback_) return fallback_->cancel(op);
    if (!op.parked || op.cancelling) return;
    op.cancelling = true;
    submit_cancel(op);
  }

  void abandon(io_operation& op) noexcept {
    if (fallback_) return fallback_->abandon(op);
    if (!op.parked) return;
    unlist(op);
    if (!drop_completion(op)) {
      // The owner and its buffer are going: wait here for the completion
      // (a cancelled operation completes promptly), keeping the others.
      if (!op.cancelling) submit_cancel(op);
      op.cancelling = true;
      while (!drop_completion(op)) {
        // EBADR: the kernel dropped some completion (out of memory), said once.
        if (const int error = enter(1, -1); error != 0 && error != EBADR) fail("io_uring_enter", error);
      }
    }
    op.parked = false;
    --parked_count_;
  }

  void release(native_handle handle) noexcept {
    if (fallback_) return fallback_->release(handle);
    if (handle < 0 || static_cast<std::size_t>(handle) >= handles_.size()) return;
    handle_state& state = handles_[static_cast<std::size_t>(handle)];
    if (!state.registered) return;
    // What is in flight on a handle about to be closed completes as cancelled;
    // the cancels must reach the kernel before the close.
    const bool any = state.head != nullptr;
    while (state.head != nullptr) {
      io_operation& op = *state.head;
      unlist(op);
      if (!op.cancelling) submit_cancel(op);
      op.cancelling = true;
    }
    if (any) {
      if (const int error = submit_all(); error != 0) fail("io_uring_enter", error);
    }
    state = handle_state{};  // the number may come back as another file
    --registered_count_;
  }

  void wake() noexcept {
    if (fallback_) return fallback_->wake();
    std::uint64_t one = 1;
    // EAGAIN means the counter is already non-zero: the loop will wake anyway.
    [[maybe_unused]] ssize_t written = ::write(wake_handle_, &one, sizeof one);
  }

  void poll(int timeout_ms) {
    if (fallback_) return fallback_->poll(timeout_ms);
    if (next_completion_ == completions_.size()) {
      completions_.clear();
      next_completion_ = 0;
      const bool waiting = timeout_ms != 0 && cq_ready() == 0;
      // Completions may wait in the kernel: as work for this thread to run
      // (COOP_TASKRUN), or held back when the completion ring was full (NODROP).
      const unsigned kernel_flags = __atomic_load_n(sq_.flags, __ATOMIC_RELAXED);
      const bool held = (kernel_flags & (IORING_SQ_TASKRUN | IORING_SQ_CQ_OVERFLOW)) != 0;
      if (waiting || held || to_submit() != 0) {
        const int error = enter(waiting ? 1 : 0, timeout_ms);
        if (error != 0) throw_system_error(error, "io_uring_enter");
      }
      reap();
    }
    // A completion may abandon an operation whose entry is further on in
    // completions_ (abandon() then drops it) or take more entries (appended).
    while (next_completion_ < completions_.size()) {
      const completion entry = completions_[next_completion_++];
      if (entry.user_data == wake_tag) {
        std::uint64_t value;
        [[maybe_unused]] ssize_t got = ::read(wake_handle_, &value, sizeof value);
        arm_wake();
      } else if (entry.user_data != 0) {
        finish(*reinterpret_cast<io_operation*>(entry.user_data), entry.result);
      }
    }
  }

  std::size_t registered_count() const noexcept {
    return fallback_ ? fallback_->registered_count() : registered_count_;
  }
  std::size_t parked_count() const noexcept { return fallback_ ? fallback_->parked_count() : parked_count_; }
  bool read_would_block(native_handle handle) const noexcept {
    // Not known without readiness reports: a read is always tried.
    return fallback_ ? fallback_->read_would_block(handle) : false;
  }

 private:
  // Entries of the submission ring, and of the completion ring: the kernel
  // holds up completions beyond it (IORING_FEAT_NODROP) until they are reaped.
  static constexpr unsigned submission_entries = 256;
  static constexpr unsigned completion_entries = 4096;
  // user_data of the wake-up poll; 0 marks an entry to ignore (a cancel's own
  // completion, or one dropped by abandon()). An operation's is its address.
  static constexpr std::uint64_t wake_tag = 1;

  struct completion {
    std::uint64_t user_data;
    int result;
  };
  struct handle_state {
    io_operation* head = nullptr;  // in flight on this handle (prev/next_parked)
    bool registered = false;
    bool byte_stream = false;      // a pipe or stream socket: a short read empties it
    bool read_drained = false;     // the last read came back short
  };
  struct submission_ring {
    unsigned* head = nullptr;
    unsigned* tail = nullptr;
    unsigned* flags = nullptr;
    unsigned mask = 0;
    unsigned entries = 0;
  };
  struct completion_ring {
    unsigned* head = nullptr;
    unsigned* tail = nullptr;
    io_uring_cqe* entries = nullptr;
    unsigned mask = 0;
  };

  static int setup(unsigned entries, io_uring_params& params) noexcept {
    return static_cast<int>(::syscall(__NR_io_uring_setup, entries, &params));
  }

  // Everything or nothing: false leaves what was opened for close_ring().
  bool open_ring() noexcept {
    if (const char* setting = std::getenv("CORO_LOOP_IO_URING");
        setting != nullptr && (std::strcmp(setting, "0") == 0 || std::strcmp(setting, "off") == 0)) {
      return false;
    }
    io_uring_params params{};
    // Completions are finished when the loop enters the kernel anyway, not by
    // interrupting it (COOP_TASKRUN, 5.19: without it E1's echo took three
    // times the CPU per round trip, the loop interrupted for each completion);
    // the kernel says in the ring when such work waits (TASKRUN_FLAG). The
    // work goes to the thread that submitted: once another thread runs the
    // loop, it waits for that thread's next entry into the kernel (a system
    // call, a wake-up, at worst a scheduler tick). An entry the kernel refuses
    // does not hold back the ones after it (SUBMIT_ALL, 5.18). Without those
    // flags where the kernel is older.
    params.flags = IORING_SETUP_CQSIZE | IORING_SETUP_SUBMIT_ALL | IORING_SETUP_COOP_TASKRUN |
                   IORING_SETUP_TASKRUN_FLAG;
    params.cq_entries = completion_entries;
    ring_handle_ = setup(submission_entries, params);
    if (ring_handle_ < 0 && errno == EINVAL) {
      params = io_uring_params{};
      params.flags = IORING_SETUP_CQSIZE;
      params.cq_entries = completion_entries;
      ring_handle_ = setup(submission_entries, params);
    }
    if (ring_handle_ < 0) return false;
    constexpr unsigned needed = IORING_FEAT_SINGLE_MMAP | IORING_FEAT_NODROP | IORING_FEAT_RW_CUR_POS |
                                IORING_FEAT_EXT_ARG;
    if ((params.features & needed) != needed) return false;

    ring_size_ = std::max(params.sq_off.array + params.sq_entries * sizeof(unsigned),
                          params.cq_off.cqes + params.cq_entries * sizeof(io_uring_cqe));
    ring_ = ::mmap(nullptr, ring_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_handle_,
                   IORING_OFF_SQ_RING);
    if (ring_ == MAP_FAILED) {
      ring_ = nullptr;
      return false;
    }
    sqes_size_ = params.sq_entries * sizeof(io_uring_sqe);
    void* sqes = ::mmap(nullptr, sqes_size_, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_handle_,
                        IORING_OFF_SQES);
    if (sqes == MAP_FAILED) return false;
    sqes_ = static_cast<io_uring_sqe*>(sqes);

    char* base = static_cast<char*>(ring_);
    sq_.head = reinterpret_cast<unsigned*>(base + params.sq_off.head);
    sq_.tail = reinterpret_cast<unsigned*>(base + params.sq_off.tail);
    sq_.flags = reinterpret_cast<unsigned*>(base + params.sq_off.flags);
    sq_.mask = *reinterpret_cast<unsigned*>(base + params.sq_off.ring_mask);
    sq_.entries = *reinterpret_cast<unsigned*>(base + params.sq_off.ring_entries);
    unsigned* array = reinterpret_cast<unsigned*>(base + params.sq_off.array);
    for (unsigned i = 0; i < sq_.entries; ++i) array[i] = i;  // slot i holds entry i, always
    sq_tail_ = *sq_.tail;
    cq_.head = reinterpret_cast<unsigned*>(base + params.cq_off.head);
    cq_.tail = reinterpret_cast<unsigned*>(base + params.cq_off.tail);
    cq_.mask = *reinterpret_cast<unsigned*>(base + params.cq_off.ring_mask);
    cq_.entries = reinterpret_cast<io_uring_cqe*>(base + params.cq_off.cqes);

    if (!supports_operations()) return false;
    wake_handle_ = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_handle_ < 0) return false;
    try {
      completions_.reserve(completion_entries);
    } catch (...) {
      return false;
    }
    // A kernel (or seccomp) that sets rings up but refuses to enter them. The
    // wake-up poll goes in with the first poll(), from the thread running the loop.
    if (enter(0, 0) != 0) return false;
    arm_wake();
    return true;
  }

  // Every operation this backend submits, per IORING_REGISTER_PROBE (5.6).
  bool supports_operations() const noexcept {
    constexpr unsigned slots = 256;
    alignas(io_uring_probe) unsigned char storage[sizeof(io_uring_probe) + slots * sizeof(io_uring_probe_op)] = {};
    auto* probe = reinterpret_cast<io_uring_probe*>(storage);
    if (::syscall(__NR_io_uring_register, ring_handle_, IORING_REGISTER_PROBE, probe, slots) < 0) return false;
    for (unsigned operation : {IORING_OP_READ, IORING_OP_WRITE, IORING_OP_RECV, IORING_OP_SEND, IORING_OP_RECVMSG,
                               IORING_OP_SENDMSG, IORING_OP_POLL_ADD, IORING_OP_ASYNC_CANCEL}) {
      if (operation > probe->last_op || (probe->ops[operation].flags & IO_URING_OP_SUPPORTED) == 0) return false;
    }
    return true;
  }

  void close_ring() noexcept {
    if (sqes_ != nullptr) ::munmap(sqes_, sqes_size_);
    if (ring_ != nullptr) ::munmap(ring_, ring_size_);
    if (ring_handle_ >= 0) ::close(ring_handle_);  // cancels whatever is still in flight
    if (wake_handle_ >= 0) ::close(wake_handle_);
    sqes_ = nullptr;
    ring_ = nullptr;
    ring_handle_ = wake_handle_ = -1;
  }

  // A ring that stops working where a wait cannot be given up (the kernel
  // may still write into an owner's buffer) or a close must not come first:
  // no safe way on; the process stops, saying why.
  [[noreturn]] static void fail(const char* what, int error) noexcept {
    std::fprintf(stderr, "coro_loop: %s failed on the io_uring backend: %s\n", what, std::strerror(error));
    std::abort();
  }

  // --- the submission side
  unsigned to_submit() const noexcept { return sq_tail_ - __atomic_load_n(sq_.head, __ATOMIC_ACQUIRE); }

  // A zeroed entry, published by commit(); submits first when the ring is full.
  io_uring_sqe& next_entry() noexcept {
    if (to_submit() == sq_.entries) {
      if (const int error = submit_all(); error != 0) fail("io_uring_enter", error);
    }
    io_uring_sqe& entry = sqes_[sq_tail_ & sq_.mask];
    entry = io_uring_sqe{};
    return entry;
  }
  void commit() noexcept { __atomic_store_n(sq_.tail, ++sq_tail_, __ATOMIC_RELEASE); }

  static std::uint32_t poll_mask(unsigned events) noexcept {
#if __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    return (events << 16) | (events >> 16);  // the kernel reads the field word-swapped
#else
    return events;
#endif
  }

  void arm_wake() noexcept {
    io_uring_sqe& entry = next_entry();
    entry.opcode = IORING_OP_POLL_ADD;
    entry.fd = wake_handle_;
    entry.poll32_events = poll_mask(POLLIN);
    entry.user_data = wake_tag;
    commit();
  }

  void submit_cancel(io_operation& op) noexcept {
    io_uring_sqe& entry = next_entry();
    entry.opcode = IORING_OP_ASYNC_CANCEL;
    entry.fd = -1;
    entry.addr = reinterpret_cast<std::uintptr_t>(&op);
    entry.user_data = 0;
    commit();
  }

  // Submits op as itself, or as a readiness wait when the syscall comes after one.
  void submit_operation(io_operation& op) noexcept {
    io_uring_sqe& entry = next_entry();
    entry.fd = op.handle;
    entry.user_data = reinterpret_cast<std::uintptr_t>(&op);
    // An accept too: IORING_OP_ACCEPT would keep the descriptor limit of its
    // submission (a limit lowered meanwhile would not stop it), accept4 reads it.
    const bool polls_first = op.kind == io_kind::wait_readable || op.kind == io_kind::wait_writable ||
                             op.kind == io_kind::wait_process || op.kind == io_kind::connect ||
                             op.kind == io_kind::accept;
    if (polls_first || op.polling) {
      op.polling = true;
      entry.opcode = IORING_OP_POLL_ADD;
      entry.poll32_events = poll_mask(op.reads() ? POLLIN : POLLOUT);
      commit();
      return;
    }
    entry.addr = reinterpret_cast<std::uintptr_t>(op.buffer);
    entry.len = static_cast<std::uint32_t>(std::min<std::size_t>(op.length, 0x7ffff000));  // read(2)'s own cap
    switch (op.kind) {
      case io_kind::read:
      case io_kind::write:
        entry.opcode = op.kind == io_kind::read ? IORING_OP_READ : IORING_OP_WRITE;
        entry.off = ~std::uint64_t{0};  // the file position, as read(2) and write(2)
        break;
      case io_kind::recv:
        entry.opcode = IORING_OP_RECV;
        entry.msg_flags = static_cast<std::uint32_t>(op.flags);
        break;
      case io_kind::send:
        entry.opcode = IORING_OP_SEND;
        entry.msg_flags = static_cast<std::uint32_t>(op.flags | MSG_NOSIGNAL);
        break;
      case io_kind::recv_from:
      case io_kind::send_to: {
        const bool receives = op.kind == io_kind::recv_from;
        op.vector = iovec{op.buffer, op.length};
        op.message = msghdr{};
        op.message.msg_name = op.address;
        op.message.msg_namelen = op.address_length;
        op.message.msg_iov = &op.vector;
        op.message.msg_iovlen = 1;
        entry.opcode = receives ? IORING_OP_RECVMSG : IORING_OP_SENDMSG;
        entry.addr = reinterpret_cast<std::uintptr_t>(&op.message);
        entry.len = 1;
        entry.msg_flags = static_cast<std::uint32_t>(receives ? op.flags : op.flags | MSG_NOSIGNAL);
        break;
      }
      default:  // the waits went above
        break;
    }
    commit();
  }

  // io_uring_enter: submits what is queued and waits for `wait` completions,
  // at most timeout_ms (-1: no limit). 0 also for an interrupted or timed-out
  // wait and a full completion ring (-EBUSY: reaped, to be tried again); any
  // other errno is returned (a ring that no longer works).
  int enter(unsigned wait, int timeout_ms) noexcept {
    __kernel_timespec timeout{};
    io_uring_getevents_arg argument{};
    if (wait != 0 && timeout_ms >= 0) {
      timeout.tv_sec = timeout_ms / 1000;
      timeout.tv_nsec = static_cast<long long>(timeout_ms % 1000) * 1'000'000;
      argument.ts = reinterpret_cast<std::uintptr_t>(&timeout);
    }
    const unsigned flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
    const long entered =
        ::syscall(__NR_io_uring_enter, ring_handle_, to_submit(), wait, flags, &argument, sizeof argument);
    if (entered >= 0 || errno == EINTR || errno == ETIME) return 0;
    if (errno == EBUSY || errno == EAGAIN) {
      reap();
      return 0;
    }
    return errno;
  }

  // Submits everything queued before it returns (release(): before a close).
  // The errno when the ring refuses: its operations never reach the kernel then.
  int submit_all() noexcept {
    while (to_submit() != 0) {
      if (const int error = enter(0, 0); error != 0) return error;
    }
    return 0;
  }

  // --- the completion side
  unsigned cq_ready() const noexcept {
    return __atomic_load_n(cq_.tail, __ATOMIC_ACQUIRE) - *cq_.head;
  }

  // Moves the completion ring's entries to completions_, freeing the ring.
  void reap() noexcept {
    unsigned head = *cq_.head;
    const unsigned tail = __atomic_load_n(cq_.tail, __ATOMIC_ACQUIRE);
    for (; head != tail; ++head) {
      const io_uring_cqe& entry = cq_.entries[head & cq_.mask];
      completions_.push_back(completion{entry.user_data, entry.res});
    }
    __atomic_store_n(cq_.head, head, __ATOMIC_RELEASE);
  }

  // abandon(): drops op's completion if it has come; true then.
  bool drop_completion(io_operation& op) noexcept {
    reap();
    const auto tag = reinterpret_cast<std::uintptr_t>(&op);
    for (std::size_t i = next_completion_; i < completions_.size(); ++i) {
      if (completions_[i].user_data == tag) {
        completions_[i].user_data = 0;
        return true;
      }
    }
    return false;
  }

  void finish(io_operation& op, int result) noexcept {
    // Released: its handle may be closed, its number another file's by now.
    const bool released = !op.listed;
    if (op.polling) {
      if (result < 0) return complete(op, -result);
      if (released) return complete(op, ECANCELED);
      if (op.kind == io_kind::wait_readable || op.kind == io_kind::wait_writable ||
          op.kind == io_kind::wait_process) {
        return complete(op, 0);
      }
      // A connect under way, an accept, or an operation the kernel answered
      // EAGAIN: the syscall now, or another poll.
      if (perform(op, true)) {
        note_read(op);
        return complete(op, op.error);
      }
      if (op.cancelling) return complete(op, ECANCELED);
      return submit_operation(op);
    }
    if (result == -EAGAIN || result == -EINTR) {
      if (op.cancelling || released) return complete(op, ECANCELED);
      op.polling = result == -EAGAIN;
      return submit_operation(op);
    }
    if (result < 0) return complete(op, -result);
    op.result = result;
    if (op.kind == io_kind::recv_from) op.address_length = op.message.msg_namelen;
    if (!released) note_read(op);
    complete(op, 0);
  }

  void complete(io_operation& op, int error) noexcept {
    op.error = error;
    op.polling = false;
    unlist(op);
    op.parked = false;
    --parked_count_;
    op.complete(&op);
  }

  // --- handles and what is in flight on them
  void park(io_operation& op) {
    auto index = static_cast<std::size_t>(op.handle);
    if (index >= handles_.size()) handles_.resize(std::max(index + 1, handles_.size() * 2));
    handle_state& state = handles_[index];
    if (!state.registered) {
      state.registered = true;
      state.byte_stream = is_byte_stream(op.handle);
      ++registered_count_;
    }
    op.prev_parked = nullptr;
    op.next_parked = state.head;
    if (state.head != nullptr) state.head->prev_parked = &op;
    state.head = &op;
    op.listed = true;
    op.parked = true;
    ++parked_count_;
  }

  void unlist(io_operation& op) noexcept {
    if (!op.listed) return;
    handle_state& state = handles_[static_cast<std::size_t>(op.handle)];
    (op.prev_parked != nullptr ? op.prev_parked->next_parked : state.head) = op.next_parked;
    if (op.next_parked != nullptr) op.next_parked->prev_parked = op.prev_parked;
    op.prev_parked = op.next_parked = nullptr;
    op.listed = false;
  }

  bool is_byte_read(const io_operation& op) const noexcept {
    if (op.kind != io_kind::read && op.kind != io_kind::recv) return false;
    if (op.handle < 0 || static_cast<std::size_t>(op.handle) >= handles_.size()) return false;
    const handle_state& state = handles_[static_cast<std::size_t>(op.handle)];
    return state.registered && state.byte_stream;
  }
  bool known_drained(const io_operation& op) const noexcept {
    return is_byte_read(op) && handles_[static_cast<std::size_t>(op.handle)].read_drained;
  }
  // A short read of a byte stream took everything there was; a full one may not have.
  void note_read(const io_operation& op) noexcept {
    if (op.error != 0 || !is_byte_read(op)) return;
    handles_[static_cast<std::size_t>(op.handle)].read_drained =
        op.result > 0 && static_cast<std::size_t>(op.result) < op.length;
  }

  std::unique_ptr<epoll_backend> fallback_;  // set when the kernel refused io_uring
  int ring_handle_ = -1;
  int wake_handle_ = -1;
  void* ring_ = nullptr;
  std::size_t ring_size_ = 0;
  io_uring_sqe* sqes_ = nullptr;
  std::size_t sqes_size_ = 0;
  submission_ring sq_;
  completion_ring cq_;
  unsigned sq_tail_ = 0;  // ours; the kernel's copy is published by commit()
  std::vector<completion> completions_;
  std::size_t next_completion_ = 0;
  std::vector<handle_state> handles_;
  std::size_t registered_count_ = 0;
  std::size_t parked_count_ = 0;
};

}  // namespace detail
#endif  // CORO_LOOP_BACKEND_IO_URING

// --- 4.9 loop_core: the members that drive the backend ---

inline detail::loop_core::loop_core()
    : backend_(std::make_unique<class backend>()), inbox_(std::make_shared<loop_inbox>(this)) {
  if (thread_loop_slot() == nullptr) thread_loop_slot() = this;
  options_.debug = debug_from_environment();
}

inline detail::loop_core::~loop_core() {
  if (thread_loop_slot() == this) thread_loop_slot() = nullptr;
}

inline void detail::loop_core::wake_backend() noexcept {
  if (backend_ != nullptr) backend_->wake();
}

inline void detail::loop_core::check_thread(const char* operation) const {
  if (closed_) throw invalid_state_error(std::string(operation) + ": the event loop is closed");
  if (runs_on_another_thread()) {
    throw invalid_state_error(std::string(operation) +
                              ": called from another thread; use call_soon_threadsafe");
  }
}

// Only the first post since the loop last drained pays for a wake-up. The
// wake happens under the inbox's lock, so close() cannot free the backend
// in between.
inline bool detail::loop_inbox::post(ready_node& node) noexcept {
  std::lock_guard<std::mutex> guard(mutex_);
  if (closed_) return false;
  queue_.push_back(node);
  if (!pending_.exchange(true, std::memory_order_acq_rel)) loop_->wake_backend();
  return true;
}

inline int detail::loop_core::backend_timeout_ms() const noexcept {
  if (!ready_.empty() || stopping_ || inbox_->has_pending()) return 0;
  if (timers_.empty()) return -1;
  // Compared before subtracting: a deadline of time_point::min() (a delay
  // saturated downwards) minus now would overflow.
  const time_point now = clock::now();
  const time_point next = timers_.top()->deadline;
  if (next <= now) return 0;
  const duration wait = next - now;
  // Round up: waking a little late is fine, waking early spins.
  auto milliseconds = std::chrono::ceil<std::chrono::milliseconds>(wait).count();
  return milliseconds > 86'400'000 ? 86'400'000 : static_cast<int>(milliseconds);
}

inline void detail::loop_core::run_once() {
  int timeout_ms = backend_timeout_ms();
  if (timeout_ms != 0) {
    busy_iterations_since_poll_ = 0;
    backend_->poll(timeout_ms);
  } else if (backend_->parked_count() != 0 && ++busy_iterations_since_poll_ >= busy_iterations_per_poll) {
    busy_iterations_since_poll_ = 0;
    backend_->poll(0);
  }
  if (inbox_->has_pending()) inbox_->drain_into(ready_);
  if (!timers_.empty()) {
    const time_point now = clock::now();
    while (!timers_.empty() && timers_.top()->deadline <= now) {
      timer_node* timer = timers_.pop();
      timer->fire(timer);
    }
  }
  run_ready_batch();
}

// Runs the nodes that were ready when the batch began; what they schedule
// runs on the next iteration, so sleep(0) yields exactly one iteration.
inline void detail::loop_core::run_ready_batch() {
  if (ready_.empty()) return;
  ready_node* last = ready_.back();
  for (;;) {
    ready_node* node = ready_.pop_front();
    const bool was_last = node == last;
    if (options_.debug) {
      run_timed(node);
    } else {
      node->run(node);
    }
    if (was_last) break;
  }
}

// Debug mode: one step that holds the loop past slow_callback_duration is
// named: blocking code in a coroutine, the commonest asyncio mistake.
inline void detail::loop_core::run_timed(ready_node* node) {
  // Named before it runs: a task that finishes may free itself.
  std::string what = describe_ready_node(node);
  const time_point start = clock::now();
  node->run(node);
  const duration took = clock::now() - start;
  if (took >= options_.slow_callback_duration) {
    std::fprintf(stderr, "coro_loop: Executing %s took %.3f seconds (is blocking code running in a coroutine?)\n",
                 what.c_str(), std::chrono::duration<double>(took).count());
  }
}


// ============================================================================
// 5. Tasks: task<T>, scheduled tasks and their handles, cancellation  >>tasks
//    Uses 2 and 3. A task<T> awaited directly runs inline in its awaiter's
//    task (no scheduling); create_task makes the same frame a scheduled task.
// ============================================================================

template <class T = void>
class task;
template <class T = void>
class task_handle;
class task_ref;

namespace detail {
// Where a task was created: a defaulted argument of create_task, gather,
// task_group::create_task, with_task_group and run() (`site = source_site::here()`)
// fills it in at the caller's line, with nothing written there. The builtins
// rather than std::source_location: Clang 14 has neither it nor the builtin
// libstdc++ builds it on. An aggregate, so no argument of a user converts to it.
struct source_site {
  const char* file = nullptr;
  std::uint_least32_t line = 0;
  static constexpr source_site here(const char* file = __builtin_FILE(),
                                    std::uint_least32_t line = __builtin_LINE()) noexcept {
    return {file, line};
  }
};

template <class Callback>
class done_callback;
template <class Awaitable>
auto spawn(loop_core& loop, Awaitable&& awaitable, std::string name, source_site site);
struct task_ref_access;
template <class T>
struct is_task_handle : std::false_type {};
template <class T>
struct is_task_handle<task_handle<T>> : std::true_type {
  using result_type = T;
};

template <class A>
concept has_member_co_await = requires(A&& a) { static_cast<A&&>(a).operator co_await(); };
template <class A>
concept has_free_co_await = requires(A&& a) { operator co_await(static_cast<A&&>(a)); };
template <class A>
concept is_awaiter = requires(A& a, std::coroutine_handle<> h) {
  { a.await_ready() } -> std::convertible_to<bool>;
  a.await_resume();
};

// The awaiter that `co_await a` would use, following the language's lookup.
template <class A>
decltype(auto) get_awaiter(A&& a) {
  if constexpr (has_member_co_await<A>) {
    return static_cast<A&&>(a).operator co_await();
  } else if constexpr (has_free_co_await<A>) {
    return operator co_await(static_cast<A&&>(a));
  } else {
    return static_cast<A&&>(a);
  }
}

template <class A>
concept awaitable = has_member_co_await<A> || has_free_co_await<A> || is_awaiter<std::remove_reference_t<A>>;

// Notified once when a scheduled task finishes: an awaiting handle, a
// done-callback, a gather. Intrusive, so awaiting a task allocates nothing.
struct completion_waiter {
  completion_waiter* next_waiter = nullptr;
  void (*notify)(completion_waiter* self) noexcept = nullptr;
};

// A waiter that must end even if the task never finishes (its loop closed and
// left it behind): a concurrent_future another thread may be blocked on.
// leave_behind() knows it by its notify function, so plain waiters stay two
// pointers.
class ending_waiter : public completion_waiter {
 public:
  using end_function = void (*)(ending_waiter* self, bool task_finished) noexcept;
  explicit ending_waiter(end_function on_end) noexcept : on_end_(on_end) { notify = &on_finished; }
  static void on_finished(completion_waiter* self) noexcept {
    auto* waiter = static_cast<ending_waiter*>(self);
    waiter->on_end_(waiter, true);
  }
  void left_behind() noexcept { on_end_(this, false); }

 private:
  end_function on_end_;
};

// The part of every task<T> promise that does not depend on T. A frame is
// either awaited directly (continuation_ says who resumes when it ends) or
// scheduled by create_task (a "root": the fields below continuation_).
class task_promise_base : public ready_node, public list_hook {
 public:
  task_promise_base() noexcept = default;
  task_promise_base(const task_promise_base&) = delete;
  task_promise_base& operator=(const task_promise_base&) = delete;

  static void* operator new(std::size_t size) { return allocate_frame(size); }
  static void operator delete(void* pointer, std::size_t size) noexcept { deallocate_frame(pointer, size); }

  std::suspend_always initial_suspend() const noexcept { return {}; }
  /// True once a co_await has taken this frame (it then cannot be scheduled).
  bool awaited() const noexcept { return static_cast<bool>(continuation_); }

  // --- scheduled-task state, all on the loop thread ---
  bool done() const noexcept { return state_ == state::done; }
  bool cancelled() const noexcept { return state_ == state::done && cancelled_; }
  int cancelling() const noexcept { return static_cast<int>(cancel_requests_); }
  int uncancel() noexcept {
    if (cancel_requests_ > 0) --cancel_requests_;
    // asyncio 3.11+: with no request left, an undelivered one is dropped too.
    if (cancel_requests_ == 0) must_cancel_ = false;
    return static_cast<int>(cancel_requests_);
  }

  // Requests cancellation: interrupts the current wait if it can, otherwise
  // the next cancellable suspension throws. False when already done.
  bool cancel() noexcept {
    if (state_ == state::done) return false;
    ++cancel_requests_;
    if (current_wait_ != nullptr && !wait_uninterruptible_) {
      passing_cancel_on_ = true;
      const bool interrupted = current_wait_->kind_of_wait->interrupt(current_wait_);
      passing_cancel_on_ = false;
      if (interrupted) {
        // The interrupted wait will resume the task with a cancelled_error, at
        // once or (gather, task_group) after its children finished; requests
        // made before the task runs again merge into it (asyncio).
        cancel_in_flight_ = true;
        return true;
      }
    }
    if (!cancel_in_flight_) must_cancel_ = true;
    return true;
  }
  // True while cancel() is passing its request to the task's wait: a cancel
  // that comes back here went round a cycle of tasks awaiting each other.
  bool passing_cancel_on() const noexcept { return passing_cancel_on_; }
  // The wait ended early (a cancel interrupted it): nothing to interrupt now.
  void stop_waiting() noexcept { current_wait_ = nullptr; }
  // An interrupted wait completed anyway: the cancel it took is delivered at
  // the next cancellable suspension point instead.
  void deliver_cancel_later() noexcept { must_cancel_ = true; }
  // For await_resume after a wait that was granted (a timer fired, an item,
  // the lock or a permit handed over, a task finished): true when a cancel
  // reached the task after the grant, before it resumed. That cancel wins, as
  // in asyncio, and is consumed here: the awaiter gives back what it was
  // granted and throws cancelled_error. Waits whose grant cannot go back
  // without losing a result (bytes the OS read, a gather's values) do not ask:
  // the result is returned and the cancel meets the next suspension point.
  bool take_cancel_after_grant() noexcept {
    if (!must_cancel_) return false;
    must_cancel_ = false;
    return true;
  }

  // Called by a leaf awaiter in await_suspend. Returns false (do not suspend,
  // throw cancelled_error from await_resume) when a cancel is waiting to be
  // delivered; otherwise records where to resume and what can be interrupted.
  bool suspend_on(cancellable_wait* wait, std::coroutine_handle<> resume_point) noexcept {
    if (must_cancel_) {
      must_cancel_ = false;
      return false;
    }
    current_wait_ = wait;
    wait_uninterruptible_ = false;
    resume_point_ = resume_point;
    return true;
  }
  // Same, for a wait that cannot be interrupted (the task is resumed by
  // whoever completes it; a cancel waits for the next suspension point).
  // `wait`, if any, is only there to be described in a task tree.
  void suspend_uninterruptibly(std::coroutine_handle<> resume_point, cancellable_wait* wait = nullptr) noexcept {
    current_wait_ = wait;
    wait_uninterruptible_ = true;
    resume_point_ = resume_point;
  }
  // The wait is over (completed or interrupted): run the task's next step.
  void wake(loop_core& loop) noexcept {
    current_wait_ = nullptr;
    loop.schedule(*this);
  }

  void retain() noexcept { ++references_; }
  /// The run function of a task's ready node (to tell tasks from callbacks).
  static auto step_function() noexcept -> void (&)(ready_node*) noexcept { return step; }
  inline void release() noexcept;
  void add_waiter(completion_waiter& waiter) noexcept {
    waiter.next_waiter = waiters_;
    waiters_ = &waiter;
  }
  void remove_waiter(completion_waiter& waiter) noexcept {
    for (completion_waiter** link = &waiters_; *link != nullptr; link = &(*link)->next_waiter) {
      if (*link == &waiter) {
        *link = waiter.next_waiter;
        waiter.next_waiter = nullptr;
        return;
      }
    }
  }

  // What a handle does to a pending task (cancel, uncancel, set_name, a done
  // callback) is for its loop's thread. Another thread, or a loop that closed
  // without the task, gets invalid_state_error naming the right tool instead
  // of a data race or a write into the freed loop. A done task touches no
  // loop and passes. Cheap: one atomic load and the running loop's slot.
  void check_loop_thread(const char* operation) const {
    loop_core* loop = loop_.load(std::memory_order_acquire);
    if (loop == nullptr) {
      if (state_ == state::done) return;
      throw invalid_state_error(std::string(operation) +
                                ": the task's event loop is closed and left it unfinished");
    }
    if (running_loop_slot() == loop || !loop->runs_on_another_thread()) return;
    throw invalid_state_error(std::string(operation) +
                              ": called from a thread that does not run the task's event loop; use "
                              "loop.call_soon_threadsafe(...), or run_coroutine_threadsafe and "
                              "concurrent_future::cancel()");
  }
  // close() leaves this unfinished task behind: it has no loop any more, and
  // the waiters that must end anyway (a concurrent_future) are told so.
  void leave_behind() noexcept {
    loop_.store(nullptr, std::memory_order_release);
    current_wait_ = nullptr;
    completion_waiter* kept = nullptr;
    while (waiters_ != nullptr) {
      completion_waiter* waiter = waiters_;
      waiters_ = waiter->next_waiter;
      if (waiter->notify == &ending_waiter::on_finished) {
        waiter->next_waiter = nullptr;
        static_cast<ending_waiter*>(waiter)->left_behind();
      } else {
        waiter->next_waiter = kept;
        kept = waiter;
      }
    }
    waiters_ = kept;
  }
  std::uint64_t number() const noexcept { return number_; }
  // Where a scheduled task's frame starts (its allocation).
  void* frame_address() const noexcept { return root_frame_.address(); }

  // --- what a task tree reads (loop thread)
  // The wait the task is suspended on, or null: ready, running, or suspended
  // on an awaiter that is not coro_loop's.
  const cancellable_wait* current_wait() const noexcept { return current_wait_; }
  bool started() const noexcept { return started_; }
  // Where create_task & co. were called; no file when unknown.
  source_site created_at() const noexcept { return {created_file_, created_line_}; }
  // The tasks and callbacks notified when this one ends, newest first.
  const completion_waiter* waiters() const noexcept { return waiters_; }

  std::string name() const {
    if (name_ != nullptr) return *name_;
    return "Task-" + std::to_string(number_);
  }
  void set_name(std::string name) {
    if (name_ == nullptr) {
      name_ = new std::string(std::move(name));
    } else {
      *name_ = std::move(name);
    }
  }
  std::exception_ptr exception() const noexcept { return exception_; }
  void mark_retrieved() noexcept { exception_retrieved_ = true; }
  bool has_exception() const noexcept { return exception_ != nullptr; }

  // Makes a created frame a scheduled task of `loop` and queues its first step.
  void start_as_task(loop_core& loop, std::coroutine_handle<> self, source_site site) {
    loop_.store(&loop, std::memory_order_relaxed);
    root_frame_ = self;
    resume_point_ = self;
    scheduled_ = true;
    created_file_ = site.file;  // from here on the member of the union that lives
    created_line_ = site.line;
    state_ = state::pending;
    references_ = 1;  // the loop's, dropped when the task finishes
    number_ = loop.next_task_number_++;
    run = &step;
    loop.pending_tasks_.push_back(*this);  // the list_hook base
    loop.schedule(*this);
  }

 protected:
  ~task_promise_base() {
    if (name_ != nullptr) delete name_;
  }

  // For unhandled_exception of a scheduled task: Python marks a task
  // cancelled exactly when its coroutine raised CancelledError.
  void store_exception(std::exception_ptr error) noexcept {
    exception_ = std::move(error);
    if (!scheduled_) return;
    try {
      std::rethrow_exception(exception_);
    } catch (const cancelled_error&) {
      cancelled_ = true;
    } catch (...) {
    }
  }

  template <class Promise>
  friend struct final_awaiter;
  friend class coro_loop::task_ref;
  template <class U>
  friend class coro_loop::task;

  enum class state : std::uint8_t { created, pending, done };

  // One step of a scheduled task: resume it where it last suspended.
  static void step(ready_node* node) noexcept {
    auto* self = static_cast<task_promise_base*>(node);
    loop_core* loop = running_loop_slot();
    if (loop == nullptr) return;  // discarded at close; close() accounts for pending tasks
    if (!self->started_ && self->must_cancel_) {
      // Cancelled before its first step: the body never runs (asyncio).
      self->must_cancel_ = false;
      self->exception_ = std::make_exception_ptr(cancelled_error{});
      self->cancelled_ = true;
      self->finish(*loop);
      return;
    }
    self->started_ = true;
    self->current_wait_ = nullptr;
    self->cancel_in_flight_ = false;
    loop->current_task_ = self;
    loop->transfer_depth_ = 0;
    self->resume_point_.resume();  // may finish and free this task
    loop->current_task_ = nullptr;
  }

  // The scheduled task's coroutine has ended (or never started): publish the
  // outcome, wake the waiters in the order they came, drop the loop's reference.
  void finish(loop_core& loop) noexcept {
    // A cancel that arrived after the task's last suspension point is not
    // delivered: the value it returned stands (asyncio would discard it, but
    // that value may hold an item the task took without waiting).
    // cancelling() still counts the request.
    must_cancel_ = false;
    state_ = state::done;
    loop_.store(nullptr, std::memory_order_release);  // a done task touches no loop
    current_wait_ = nullptr;
    intrusive_list::unlink(*this);
    completion_waiter* reversed = nullptr;
    while (waiters_ != nullptr) {
      completion_waiter* waiter = waiters_;
      waiters_ = waiter->next_waiter;
      waiter->next_waiter = reversed;
      reversed = waiter;
    }
    while (reversed != nullptr) {
      completion_waiter* waiter = reversed;
      reversed = waiter->next_waiter;
      waiter->next_waiter = nullptr;
      waiter->notify(waiter);
    }
    (void)loop;
    release();
  }

  // When awaited directly, who resumes the frame when it ends; when scheduled,
  // where it was created. A frame is one or the other for life (scheduled_
  // says which), so they share a word: a task pays nothing for its site.
  union {
    std::coroutine_handle<> continuation_{};
    const char* created_file_;
  };
  // --- when scheduled
  // Its loop while pending; null once done, or once its loop closed without
  // it (then state_ is not done). Atomic: a handle misused on another thread
  // reads it to refuse, instead of racing.
  std::atomic<loop_core*> loop_{nullptr};
  std::coroutine_handle<> root_frame_{};    // this frame, to destroy once done and released
  std::coroutine_handle<> resume_point_{};  // the innermost frame of the chain, resumed by step()
  cancellable_wait* current_wait_ = nullptr;
  // (the list_hook base links the task into its loop's pending tasks until done)
  completion_waiter* waiters_ = nullptr;   // newest first; notified oldest first
  std::string* name_ = nullptr;            // allocated only by set_name
  std::uint64_t number_ = 0;               // "Task-<number>" when unnamed
  std::exception_ptr exception_{};
  std::uint32_t references_ = 0;           // handles + the loop's while pending
  std::uint32_t created_line_ = 0;         // with created_file_
  std::uint16_t cancel_requests_ = 0;      // cancel() minus uncancel() (asyncio's cancelling())
  state state_ = state::created;
  // One bit each, in one byte, so that created_line_ fits in what was padding:
  // the task tree costs a task no memory. Loop thread only (state_, which
  // another thread may read, is a byte of its own).
  bool scheduled_ : 1 = false;
  bool started_ : 1 = false;
  bool must_cancel_ : 1 = false;       // requested, not yet thrown into the coroutine
  bool cancel_in_flight_ : 1 = false;  // woken by an interrupt: a cancelled_error is on its way
  bool cancelled_ : 1 = false;
  bool exception_retrieved_ : 1 = false;
  bool wait_uninterruptible_ : 1 = false;  // current_wait_ is there to be described, not interrupted
  bool passing_cancel_on_ : 1 = false;     // inside cancel(), interrupting current_wait_
};

// --- 5.1 The suspension protocol ---
// Every awaiter that suspends a task keeps DESIGN's cancellation model the same
// way, so the model is written here once and an awaiter says only what it
// waits on. It derives from `suspension` and:
//   await_suspend  calls suspend(caller, waiting): false means a cancel was
//                  already waiting (do not suspend; await_resume throws);
//                  then links itself to what will grant the wait. `waiting`
//                  is the awaiter type's static wait_kind: its operation's
//                  name, its on_interrupt, and its describe.
//   the grant      calls resume(): the task runs on the next iteration.
//   on_interrupt   is a cancel reaching the suspended task. It either stops
//                  now (unlinks, then resume_cancelled()) or keeps waiting
//                  (gather: the children finish first; mark_cancelled() then
//                  resume() later); returns true either way. A completed
//                  wait the cancel came too late for (the OS finished first)
//                  calls deliver_cancel_later(): the result stands.
//   await_resume   calls throw_if_cancelled(give_back): cancelled_error when
//                  interrupted, or when a cancel reached the task between the
//                  grant and now; that cancel wins (asyncio), so give_back()
//                  first returns what was granted (the lock, a permit, an
//                  item). A grant that cannot go back without losing a result
//                  (bytes read, a gather's values) uses throw_if_interrupted().
//   describe       writes what the task waits on into a wait_report, in words
//                  that name the object (`queue::get on queue 0x5568d0 (0 items,
//                  3 getters)`), and lists the tasks it waits for; it runs only
//                  when a task tree is captured (print_task_tree, in 11).
// The awaiter lives in the awaiting frame: waiting allocates nothing.

// What one wait says of itself in a task tree.
struct wait_report {
  time_point now;                           // one reading of the clock for the whole tree
  std::string text;                         // "sleep until +2.4 s"
  std::vector<task_promise_base*> awaited;  // the tasks it waits for: its children in the tree
};

// "2.4 s", "350 ms", "12 us": a duration as a person reads it (2 or 3 digits).
inline std::string describe_duration(duration span) {
  const bool negative = span < duration::zero();
  const double us = std::chrono::duration<double, std::micro>(negative ? -span : span).count();
  char text[48];
  if (us >= 10e6) {
    std::snprintf(text, sizeof text, "%.0f s", us / 1e6);
  } else if (us >= 1e6) {
    std::snprintf(text, sizeof text, "%.1f s", us / 1e6);
  } else if (us >= 1e3) {
    std::snprintf(text, sizeof text, "%.0f ms", us / 1e3);
  } else {
    std::snprintf(text, sizeof text, "%.0f us", us);
  }
  return negative ? std::string("-") + text : std::string(text);
}
// "+2.4 s" from now to `deadline`; "now" once it passed (its timer is due).
inline std::string describe_deadline(time_point deadline, time_point now) {
  if (deadline <= now) return "now";
  return "+" + describe_duration(deadline - now);
}
// An object's identity, as a tree names the queue or lock a task waits on.
inline std::string describe_address(const void* object) {
  char text[32];
  std::snprintf(text, sizeof text, "%p", object);
  return text;
}

// The running task, for whatever acts on it (an awaiter, a timeout scope); a
// clear error outside any task.
inline task_promise_base& current_task_for(const char* operation) {
  task_promise_base* task = running_core().current_task();
  if (task == nullptr) throw invalid_state_error(std::string(operation) + ": must be awaited inside a task");
  return *task;
}

class suspension : public cancellable_wait {
 public:
  suspension() noexcept = default;
  // Awaiters move before they are awaited (into create_task, timeout, ...);
  // the moved-to one starts afresh.
  suspension(suspension&& other) noexcept : cancellable_wait(), interruptible_(other.interruptible_) {}
  suspension& operator=(suspension&&) = delete;

 protected:
  // `operation` names the wait in errors when it differs from waiting.operation
  // (an I/O awaiter: "read", "connect").
  bool suspend(std::coroutine_handle<> caller, const wait_kind& waiting, const char* operation = nullptr) {
    enter(operation != nullptr ? operation : waiting.operation);
    kind_of_wait = &waiting;
    if (!interruptible_) {
      task_->suspend_uninterruptibly(caller, this);
      return true;
    }
    if (!task_->suspend_on(this, caller)) {
      cancelled_ = true;
      return false;
    }
    return true;
  }
  // Before suspend(): a cancel cannot interrupt this wait (condition's
  // re-acquire); it meets the next suspension point, and the grant stands.
  void make_uninterruptible() noexcept { interruptible_ = false; }
  // After suspend() returned false: stay suspended anyway (the awaiter took the
  // pending cancel as an interrupt and resumes the task itself later).
  void keep_waiting(std::coroutine_handle<> caller) noexcept { (void)task_->suspend_on(this, caller); }
  // suspend() succeeded but the wait is already over: do not suspend after all.
  void not_suspending() noexcept { task_->stop_waiting(); }

  void resume() noexcept { task_->wake(*loop_); }
  void resume_cancelled() noexcept {
    cancelled_ = true;
    task_->wake(*loop_);
  }
  void mark_cancelled() noexcept { cancelled_ = true; }
  // The task is already queued (sleep(0)): the interrupt only marks it.
  void cancelled_while_queued() noexcept {
    cancelled_ = true;
    task_->stop_waiting();
  }
  void deliver_cancel_later() noexcept {
    cancelled_ = false;
    task_->deliver_cancel_later();
  }

  // Inlined whole: a throw from a helper outlined by the compiler costs the unwinder
  // one more frame per cancel (W6 in make bench, about 6%).
  template <class GiveBack>
  CORO_LOOP_ALWAYS_INLINE void throw_if_cancelled(GiveBack give_back) const {
    if (cancelled_) throw cancelled_error{};
    if (task_ != nullptr && interruptible_ && task_->take_cancel_after_grant()) {
      give_back();
      throw cancelled_error{};
    }
  }
  CORO_LOOP_ALWAYS_INLINE void throw_if_cancelled() const {
    throw_if_cancelled([] {});
  }
  void throw_if_interrupted() const {
    if (cancelled_) throw cancelled_error{};
  }

  bool cancelled() const noexcept { return cancelled_; }
  bool interruptible() const noexcept { return interruptible_; }
  // Null until suspend(): an awaiter whose await_ready took the fast path has none.
  task_promise_base* task() const noexcept { return task_; }
  loop_core& loop() const noexcept { return *loop_; }
  bool has_loop() const noexcept { return loop_ != nullptr; }

 private:
  void enter(const char* operation) {
    task_ = &current_task_for(operation);
    loop_ = running_loop_slot();
  }
  task_promise_base* task_ = nullptr;
  loop_core* loop_ = nullptr;
  bool cancelled_ = false;
  bool interruptible_ = true;
};

// Symmetric transfer to `next`, unless the chain of transfers since the loop
// last resumed this task is deep: then bounce through the ready queue.
// GCC at -O0/-O1 and under sanitizers, and Clang 14, do not make symmetric
// transfer a tail call, so an unbounded chain would overflow the stack.
inline std::coroutine_handle<> transfer_to(std::coroutine_handle<> next) noexcept {
  loop_core* loop = running_loop_slot();
  if (loop != nullptr && !loop->count_transfer()) {
    if (task_promise_base* task = loop->current_task(); task != nullptr) {
      task->suspend_uninterruptibly(next);
      loop->schedule(*task);
      return std::noop_coroutine();
    }
  }
  return next;
}

template <class Promise>
struct final_awaiter {
  bool await_ready() const noexcept { return false; }
  std::coroutine_handle<> await_suspend(std::coroutine_handle<Promise> frame) noexcept {
    Promise& promise = frame.promise();
    if (promise.scheduled_) {
      promise.finish(*running_loop_slot());
      return std::noop_coroutine();
    }
    if (!promise.continuation_) return std::noop_coroutine();
    return transfer_to(promise.continuation_);
  }
  void await_resume() const noexcept {}
};

// Where a task<T>'s result lives until it is taken.
template <class T>
class result_storage {
 public:
  result_storage() noexcept {}
  ~result_storage() { reset(); }
  template <class U>
  void emplace(U&& value) {
    ::new (static_cast<void*>(std::addressof(value_))) T(std::forward<U>(value));
    has_value_ = true;
  }
  void reset() noexcept {
    if (has_value_) {
      value_.~T();
      has_value_ = false;
    }
  }
  bool has_value() const noexcept { return has_value_; }
  T& get() noexcept { return value_; }

 private:
  union {
    T value_;
  };
  bool has_value_ = false;
};

template <class T>
class task_promise final : public task_promise_base {
 public:
  task<T> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { store_exception(std::current_exception()); }

  template <class U = T>
    requires std::convertible_to<U&&, T>
  void return_value(U&& value) noexcept(std::is_nothrow_constructible_v<T, U&&>) {
    storage_.emplace(std::forward<U>(value));
  }
  // The value for an awaiter: moved out (an awaited frame has one awaiter).
  T take_result() {
    if (exception_ != nullptr) std::rethrow_exception(exception_);
    return std::move(storage_.get());
  }
  T& result_reference() {
    if (exception_ != nullptr) std::rethrow_exception(exception_);
    return storage_.get();
  }

 private:
  result_storage<T> storage_;
};

template <class T>
class task_promise<T&> final : public task_promise_base {
 public:
  task<T&> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { store_exception(std::current_exception()); }
  void return_value(T& value) noexcept { value_ = std::addressof(value); }
  T& take_result() { return result_reference(); }
  T& result_reference() {
    if (exception_ != nullptr) std::rethrow_exception(exception_);
    return *value_;
  }

 private:
  T* value_ = nullptr;
};

template <>
class task_promise<void> final : public task_promise_base {
 public:
  task<void> get_return_object() noexcept;
  final_awaiter<task_promise> final_suspend() const noexcept { return {}; }
  void unhandled_exception() noexcept { store_exception(std::current_exception()); }
  void return_void() const noexcept {}
  void take_result() {
    if (exception_ != nullptr) std::rethrow_exception(exception_);
  }
  void result_reference() { take_result(); }
};

}  // namespace detail

/// A lazy coroutine returning T (T may be void, a reference, or move-only).
/// Nothing runs until it is awaited (inline, in the awaiter's task) or given
/// to create_task (as a task of its own). Exceptions propagate through co_await.
template <class T>
class [[nodiscard]] task {
 public:
  /// For the compiler (promise_type) and for generic code (value_type is T).
  using promise_type = detail::task_promise<T>;
  using value_type = T;

  /// Move-only: a task owns its frame. Destroying one that was never awaited destroys the
  /// frame unrun (debug mode reports it). A default task is empty: valid() is false.
  task() noexcept = default;
  task(task&& other) noexcept : frame_(std::exchange(other.frame_, {})) {}
  task& operator=(task&& other) noexcept {
    if (this != &other) {
      destroy();
      frame_ = std::exchange(other.frame_, {});
    }
    return *this;
  }
  ~task() { destroy(); }

  /// False for a moved-from or default-constructed task.
  bool valid() const noexcept { return static_cast<bool>(frame_); }

  /// What co_await on a task uses: runs the frame inline, in the awaiting task. Awaiting a
  /// task twice, or an empty one, throws invalid_state_error.
  class awaiter {
   public:
    explicit awaiter(std::coroutine_handle<promise_type> frame) noexcept : frame_(frame) {}
    bool await_ready() const {
      if (!frame_ || frame_.done() || frame_.promise().continuation_) {
        throw invalid_state_error("task<T>: awaited twice, or empty (moved-from)");
      }
      return false;
    }
    std::coroutine_handle<> await_suspend(std::coroutine_handle<> caller) noexcept {
      frame_.promise().continuation_ = caller;
      return detail::transfer_to(frame_);
    }
    decltype(auto) await_resume() { return frame_.promise().take_result(); }

   private:
    std::coroutine_handle<promise_type> frame_;
  };
  /// On an lvalue or a temporary alike; the frame lives until the task object dies.
  awaiter operator co_await() & noexcept { return awaiter(frame_); }
  awaiter operator co_await() && noexcept { return awaiter(frame_); }

 private:
  friend promise_type;
  template <class U>
  friend class task_handle;
  template <class Awaitable>
  friend auto detail::spawn(detail::loop_core& loop, Awaitable&& awaitable, std::string name,
                            detail::source_site site);
  explicit task(std::coroutine_handle<promise_type> frame) noexcept : frame_(frame) {}
  void destroy() noexcept {
    if (frame_) {
      if (!frame_.promise().awaited() && detail::debug_enabled()) {
        // A forgotten co_await. [[nodiscard]] catches the plain call at
        // compile time; this catches a task stored and then forgotten.
        std::fprintf(stderr, "coro_loop: a task<T> was destroyed without ever being awaited (forgot co_await?)\n");
      }
      frame_.destroy();
      frame_ = {};
    }
  }
  std::coroutine_handle<promise_type> release_frame() noexcept { return std::exchange(frame_, {}); }

  std::coroutine_handle<promise_type> frame_{};
};

namespace detail {
template <class T>
task<T> task_promise<T>::get_return_object() noexcept {
  return task<T>(std::coroutine_handle<task_promise>::from_promise(*this));
}
template <class T>
task<T&> task_promise<T&>::get_return_object() noexcept {
  return task<T&>(std::coroutine_handle<task_promise>::from_promise(*this));
}
inline task<void> task_promise<void>::get_return_object() noexcept {
  return task<void>(std::coroutine_handle<task_promise>::from_promise(*this));
}

}  // namespace detail

/// The type `co_await A` yields (void, a reference or a value).
template <class A>
using await_result_t = decltype(detail::get_awaiter(std::declval<A>()).await_resume());

/// A scheduled task without its result type (asyncio.Task as seen by
/// current_task() and all_tasks()). Copyable; loop thread only.
class task_ref {
 public:
  /// Copies share the task: its frame lives while any handle does (a plain count: loop thread
  /// only). A default task_ref is empty: done(), cancelled() and cancel() are false and
  /// cancelling() 0 there; the other members throw invalid_state_error.
  task_ref() noexcept = default;
  /// False when empty; == tells whether two handles refer to the same task.
  explicit operator bool() const noexcept { return task_ != nullptr; }
  friend bool operator==(const task_ref& a, const task_ref& b) noexcept { return a.task_ == b.task_; }

  /// True once the task finished: returned, threw, or was cancelled.
  bool done() const noexcept { return task_ != nullptr && task_->done(); }
  /// True when the task finished by cancellation.
  bool cancelled() const noexcept { return task_ != nullptr && task_->cancelled(); }
  /// Requests cancellation (see the header's top comment); false when already done.
  /// Throws invalid_state_error from a thread that does not run the task's loop (use
  /// call_soon_threadsafe) or once that loop closed without the task; so do uncancel,
  /// set_name and add_done_callback.
  bool cancel() {
    if (task_ == nullptr) return false;
    task_->check_loop_thread("task_handle::cancel");
    return task_->cancel();
  }
  /// Pending cancellation requests (asyncio's Task.cancelling()).
  int cancelling() const noexcept { return task_ != nullptr ? task_->cancelling() : 0; }
  /// Takes one request back; returns the requests left (asyncio's Task.uncancel()).
  int uncancel() {
    if (task_ == nullptr) return 0;
    task_->check_loop_thread("task_handle::uncancel");
    return task_->uncancel();
  }
  /// The task's name: the one given, or "Task-<n>".
  std::string name() const { return checked("name").name(); }
  /// Renames the task (asyncio's Task.set_name); names appear in debug and leak reports.
  void set_name(std::string name) {
    checked("set_name").check_loop_thread("task_handle::set_name");
    task_->set_name(std::move(name));
  }
  /// The exception the task ended with (null when it returned a value).
  /// Throws cancelled_error if it was cancelled, invalid_state_error if not done.
  std::exception_ptr exception() const {
    check_done("exception");
    if (get().cancelled()) throw cancelled_error{};
    get().mark_retrieved();
    return get().exception();
  }
  /// Runs `callback` (with a task_ref, or with nothing) on a later iteration
  /// once the task is done; at once-scheduled if it already is (asyncio).
  template <class Callback>
  void add_done_callback(Callback callback);

 protected:
  friend task_ref current_task() noexcept;
  friend std::vector<task_ref> all_tasks();
  template <class Callback>
  friend class detail::done_callback;
  friend struct detail::task_ref_access;
  explicit task_ref(detail::task_promise_base* task) noexcept
      : task_(detail::counted_ref<detail::task_promise_base>::share(task)) {}
  detail::task_promise_base& get() const noexcept { return *task_; }
  detail::task_promise_base& checked(const char* what) const {
    if (task_ == nullptr) throw invalid_state_error(std::string("task_ref::") + what + ": empty handle");
    return *task_;
  }
  void check_done(const char* what) const {
    if (!checked(what).done()) throw invalid_state_error(std::string("task_ref::") + what + ": the task is not done");
  }
  detail::counted_ref<detail::task_promise_base> task_;
};

/// The handle of a task made by create_task (asyncio.Task). Copyable; awaiting
/// it waits for the task and returns its value (copied when T is copyable,
/// else moved out: a move-only result can be awaited once) or rethrows.
/// Cancelling the awaiting task cancels the awaited one (asyncio), and the
/// awaiter then gets the awaited task's outcome.
template <class T>
class task_handle : public task_ref {
 public:
  /// An empty handle; real ones come from create_task and task_group::create_task.
  task_handle() noexcept = default;

  /// The value (a reference into the task, valid while a handle lives), or
  /// rethrows its exception; cancelled_error when cancelled;
  /// invalid_state_error when not done.
  decltype(auto) result() const {
    check_done("result");
    if (get().cancelled()) throw cancelled_error{};
    get().mark_retrieved();
    return promise().result_reference();
  }

  /// What co_await on a handle uses (see above). Throws invalid_state_error for an empty
  /// handle, or when it would have to wait outside a task.
  class awaiter : private detail::completion_waiter, private detail::suspension {
   public:
    explicit awaiter(detail::task_promise_base* target) : target_(target) {
      if (target_ == nullptr) throw_empty();
    }
    awaiter(const awaiter&) = delete;
    awaiter& operator=(const awaiter&) = delete;
    ~awaiter() {
      if (linked_) target_->remove_waiter(*this);
    }
    bool await_ready() const noexcept { return target_->done(); }
    bool await_suspend(std::coroutine_handle<> caller) {
      target_->check_loop_thread("awaiting a task_handle");
      if (!suspend(caller, waiting)) return false;
      notify = &on_done;
      target_->add_waiter(*this);
      linked_ = true;
      return true;
    }
    T await_resume() {
      throw_if_cancelled();  // a cancel after the target finished wins; its value stays in it
      target_->mark_retrieved();
      if (target_->cancelled()) throw cancelled_error{};
      auto& promise = static_cast<detail::task_promise<T>&>(*target_);
      if constexpr (std::is_void_v<T> || std::is_reference_v<T>) {
        return promise.result_reference();
      } else if constexpr (std::is_copy_constructible_v<T>) {
        return promise.result_reference();
      } else {
        return promise.take_result();
      }
    }

   private:
    [[noreturn]] static void throw_empty() { throw invalid_state_error("awaiting an empty task_handle"); }
    // The awaiting task was cancelled: pass the cancel inward and keep
    // waiting; its outcome (usually cancelled_error) becomes ours. Tasks that
    // await each other in a cycle (a deadlock) would pass it round for ever:
    // where it comes back to a task already passing it on, this wait stops.
    static bool on_cancel(detail::cancellable_wait* wait) noexcept {
      auto* self = static_cast<awaiter*>(wait);
      if (self->target_->passing_cancel_on()) {
        self->target_->remove_waiter(*self);
        self->linked_ = false;
        self->resume_cancelled();
        return true;
      }
      self->target_->cancel();
      return true;
    }
    static void on_done(detail::completion_waiter* waiter) noexcept {
      auto* self = static_cast<awaiter*>(waiter);
      self->linked_ = false;
      self->resume();
    }
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      const auto& self = static_cast<const awaiter&>(wait);
      report.text = "awaiting task '" + self.target_->name() + "'";
      report.awaited.push_back(self.target_);
    }
    static constexpr detail::wait_kind waiting{"awaiting a task_handle", &on_cancel, &describe};
    bool linked_ = false;  // first: it fills the protocol's tail
    detail::task_promise_base* target_;
  };
  /// Any number of tasks may await one handle (a move-only result: only the first gets it).
  awaiter operator co_await() const { return awaiter(task_.get()); }

 private:
  template <class Awaitable>
  friend auto detail::spawn(detail::loop_core& loop, Awaitable&& awaitable, std::string name,
                            detail::source_site site);
  explicit task_handle(detail::task_promise_base* task) noexcept : task_ref(task) {}
  detail::task_promise<T>& promise() const noexcept { return static_cast<detail::task_promise<T>&>(get()); }
};

inline std::string detail::describe_ready_node(ready_node* node) {
  if (node->run == &task_promise_base::step_function()) {
    return "<Task '" + static_cast<task_promise_base*>(node)->name() + "'>";
  }
  return "a callback";
}

inline void detail::task_promise_base::release() noexcept {
  if (--references_ != 0) return;
  if (exception_ != nullptr && !cancelled_ && !exception_retrieved_) {
    // asyncio's "Task exception was never retrieved": the error would
    // otherwise vanish with the frame.
    std::string what = "unknown exception";
    try {
      std::rethrow_exception(exception_);
    } catch (const std::exception& error) {
      what = error.what();
    } catch (...) {
    }
    std::fprintf(stderr, "coro_loop: Task exception was never retrieved: task '%s': %s\n", name().c_str(),
                 what.c_str());
  }
  root_frame_.destroy();
}

namespace detail {

// Wraps any awaitable in a task<T> frame so it can be scheduled.
template <class Awaitable>
task<await_result_t<Awaitable>> await_in_task(Awaitable awaitable) {
  co_return co_await std::move(awaitable);
}
template <class Awaitable>
  requires std::is_void_v<await_result_t<Awaitable>>
task<void> await_in_task(Awaitable awaitable) {
  co_await std::move(awaitable);
}

// Keeps the callable and its arguments in this frame for the task's whole
// life, so a coroutine lambda's captures outlive its first suspension.
template <class Callable, class... Args>
auto invoke_in_task(Callable callable, Args... args)
    -> task<await_result_t<std::invoke_result_t<Callable&, Args&...>>> {
  auto inner = std::invoke(callable, args...);
  if constexpr (std::is_void_v<await_result_t<decltype(inner)>>) {
    co_await std::move(inner);
  } else {
    co_return co_await std::move(inner);
  }
}

template <class T>
struct is_task : std::false_type {};
template <class T>
struct is_task<task<T>> : std::true_type {};

}  // namespace detail

namespace detail {
template <class Awaitable>
auto spawn(loop_core& loop, Awaitable&& awaitable, std::string name, source_site site) {
  using value_type = await_result_t<Awaitable>;
  task<value_type> body;
  if constexpr (detail::is_task<std::remove_cvref_t<Awaitable>>::value && std::is_rvalue_reference_v<Awaitable&&>) {
    body = std::move(awaitable);
    if (!body.valid()) throw invalid_state_error("create_task: empty (moved-from) task");
  } else {
    body = detail::await_in_task<std::decay_t<Awaitable>>(std::forward<Awaitable>(awaitable));
  }
  auto frame = body.release_frame();
  if (frame.promise().awaited() || frame.done()) {
    frame.destroy();
    throw invalid_state_error("create_task: the task was already awaited");
  }
  frame.promise().start_as_task(loop, frame, site);
  if (!name.empty()) frame.promise().set_name(std::move(name));
  return task_handle<value_type>(&frame.promise());
}

// create_task(fn, args...): fn(args...) must return an awaitable. Checked
// here, before anything else is instantiated, so that a mistake gets one
// sentence naming it rather than pages from inside invoke_in_task.
template <class Callable, class... Args>
auto spawn_call(loop_core& loop, source_site site, Callable&& callable, Args&&... args) {
  if constexpr (!std::invocable<std::decay_t<Callable>&, std::decay_t<Args>&...>) {
    static_assert(always_false<Callable, Args...>,
                  "create_task(fn, args...): fn is neither an awaitable (a task<T>) nor callable with these "
                  "arguments");
  } else if constexpr (std::is_void_v<std::invoke_result_t<std::decay_t<Callable>&, std::decay_t<Args>&...>>) {
    static_assert(always_false<Callable, Args...>,
                  "create_task(fn, args...): fn(args...) returns void; it must return an awaitable, e.g. be a "
                  "coroutine returning coro_loop::task<T>");
  } else if constexpr (!awaitable<std::invoke_result_t<std::decay_t<Callable>&, std::decay_t<Args>&...>>) {
    static_assert(always_false<Callable, Args...>,
                  "create_task(fn, args...): fn(args...) returns a value that is not awaitable; it must return "
                  "an awaitable, e.g. be a coroutine returning coro_loop::task<T>");
  } else {
    return spawn(loop,
                 invoke_in_task<std::decay_t<Callable>, std::decay_t<Args>...>(std::forward<Callable>(callable),
                                                                                std::forward<Args>(args)...),
                 {}, site);
  }
}
}  // namespace detail

/// Starts `awaitable` as a scheduled task on the running loop (asyncio.create_task):
/// its first step runs on a later iteration. Returns its task_handle.
/// Throws invalid_state_error without a running loop. `site` is for the caller's line.
template <class Awaitable>
  requires detail::awaitable<Awaitable>
auto create_task(Awaitable&& awaitable, std::string name = {},
                 detail::source_site site = detail::source_site::here()) {
  return detail::spawn(detail::running_core(), std::forward<Awaitable>(awaitable), std::move(name), site);
}

// create_task(callable, args...): one overload per count of arguments up to
// three, because a defaulted parameter (the creation site) cannot follow a
// pack; with more arguments the task tree does not know where the task began.

/// Starts `callable(args...)` (which returns an awaitable) as a task, moving the
/// callable and the arguments into the task's frame: a coroutine lambda's
/// captures and the arguments live as long as the task.
template <class Callable>
  requires(!detail::awaitable<Callable>)
auto create_task(Callable&& callable, detail::source_site site = detail::source_site::here()) {
  return detail::spawn_call(detail::running_core(), site, std::forward<Callable>(callable));
}
/// The same with one argument.
template <class Callable, class Arg>
  requires(!detail::awaitable<Callable>)
auto create_task(Callable&& callable, Arg&& arg, detail::source_site site = detail::source_site::here()) {
  return detail::spawn_call(detail::running_core(), site, std::forward<Callable>(callable), std::forward<Arg>(arg));
}
/// The same with two arguments.
template <class Callable, class Arg1, class Arg2>
  requires(!detail::awaitable<Callable>)
auto create_task(Callable&& callable, Arg1&& arg1, Arg2&& arg2,
                 detail::source_site site = detail::source_site::here()) {
  return detail::spawn_call(detail::running_core(), site, std::forward<Callable>(callable), std::forward<Arg1>(arg1),
                            std::forward<Arg2>(arg2));
}
/// The same with three arguments.
template <class Callable, class Arg1, class Arg2, class Arg3>
  requires(!detail::awaitable<Callable>)
auto create_task(Callable&& callable, Arg1&& arg1, Arg2&& arg2, Arg3&& arg3,
                 detail::source_site site = detail::source_site::here()) {
  return detail::spawn_call(detail::running_core(), site, std::forward<Callable>(callable), std::forward<Arg1>(arg1),
                            std::forward<Arg2>(arg2), std::forward<Arg3>(arg3));
}
/// The same with four arguments or more (the task tree shows no creation site).
template <class Callable, class... Args>
  requires(!detail::awaitable<Callable>) && (sizeof...(Args) > 3)
auto create_task(Callable&& callable, Args&&... args) {
  return detail::spawn_call(detail::running_core(), detail::source_site{}, std::forward<Callable>(callable),
                            std::forward<Args>(args)...);
}

/// The task running now, or an empty task_ref in a plain callback or without a loop.
inline task_ref current_task() noexcept {
  detail::loop_core* loop = detail::running_loop_slot();
  return task_ref(loop != nullptr ? loop->current_task() : nullptr);
}

/// Every task of the running loop that is not done yet.
inline std::vector<task_ref> all_tasks() {
  std::vector<task_ref> tasks;
  detail::loop_core& loop = detail::running_core();
  loop.pending_tasks().for_each([&](detail::list_hook& hook) {
    tasks.push_back(task_ref(static_cast<detail::task_promise_base*>(&hook)));
  });
  return tasks;
}

namespace detail {
// The library's own access to the task behind a handle.
struct task_ref_access {
  static task_promise_base* promise(const task_ref& handle) noexcept { return handle.task_.get(); }
};

// A done-callback: runs through the ready queue, never synchronously (asyncio).
template <class Callback>
class done_callback final : public completion_waiter, public ready_node {
 public:
  done_callback(task_promise_base* task, Callback callback, loop_core& loop)
      : task_(task), callback_(std::move(callback)), loop_(&loop) {
    task_->retain();
    notify = [](completion_waiter* waiter) noexcept {
      auto* self = static_cast<done_callback*>(waiter);
      self->loop_->schedule(*self);
    };
    run = [](ready_node* node) noexcept {
      auto* self = static_cast<done_callback*>(node);
      if (running_loop_slot() == nullptr) {
        delete self;
        return;
      }
      try {
        if constexpr (std::is_invocable_v<Callback&, task_ref>) {
          self->callback_(task_ref(self->task_));
        } else {
          self->callback_();
        }
      } catch (const std::exception& error) {
        std::fprintf(stderr, "coro_loop: exception in done callback: %s\n", error.what());
      } catch (...) {
        std::fprintf(stderr, "coro_loop: unknown exception in done callback\n");
      }
      delete self;
    };
  }
  ~done_callback() { task_->release(); }

 private:
  task_promise_base* task_;
  Callback callback_;
  loop_core* loop_;
};
}  // namespace detail

template <class Callback>
void task_ref::add_done_callback(Callback callback) {
  checked("add_done_callback").check_loop_thread("task_handle::add_done_callback");
  detail::loop_core& loop = detail::running_core();
  auto* node = new detail::done_callback<Callback>(task_.get(), std::move(callback), loop);
  if (task_->done()) {
    loop.schedule(*node);
  } else {
    task_->add_waiter(*node);
  }
}

namespace detail {
// Cancels every pending task of `loop` and runs it until they finish, as
// asyncio.run does before closing (run() and event_loop::close); past
// `limit`, tasks still running are left to close(), which names them. In
// rounds: a cancelled task's cleanup, or another thread, may start new tasks
// meanwhile; each round cancels the tasks started since the last one (task
// numbers only grow), so the loop never waits on a task it has not asked to
// stop. Debug mode names those stragglers.
inline void finish_tasks(loop_core& loop, duration limit) {
  if (loop.pending_tasks().empty()) return;
  const time_point deadline = deadline_after(limit);
  callback_handle wake_at_deadline;
  if (deadline != time_point::max()) wake_at_deadline = loop.call_at(deadline, [] {});
  std::uint64_t first_uncancelled = 0;
  while (!loop.pending_tasks().empty() && clock::now() < deadline) {
    const bool straggling = first_uncancelled != 0;
    loop.pending_tasks().for_each([&](list_hook& hook) {
      auto& task = static_cast<task_promise_base&>(hook);
      if (task.number() < first_uncancelled) return;
      if (straggling && loop.debug()) {
        std::fprintf(stderr, "coro_loop: task '%s' was started while the loop was shutting down; cancelling it\n",
                     task.name().c_str());
      }
      task.cancel();
    });
    first_uncancelled = loop.next_task_number();
    loop.run_while([&] {
      return !loop.pending_tasks().empty() && loop.next_task_number() == first_uncancelled &&
             clock::now() < deadline;
    });
  }
  wake_at_deadline.cancel();
  // The tasks' ends scheduled done-callbacks: give them a few iterations
  // rather than discarding them.
  int iterations = 0;
  loop.run_while([&] { return loop.has_ready() && iterations++ < 16; });
}
}  // namespace detail

// ============================================================================
// 6. Combinators: sleep, gather, wait, as_completed, timeout, shield,
//    task_group  >>combine
//    Uses 3 (loop) and 5 (tasks). Knows nothing of the backend.
// ============================================================================

namespace detail {

// sleep / sleep_until: one timer node in the awaiting frame.
class sleep_awaiter : private timer_node, private suspension {
 public:
  explicit sleep_awaiter(time_point deadline, bool yield_only) noexcept : yield_only_(yield_only) {
    this->deadline = deadline;
  }
  // Movable until awaited (create_task(sleep(d)) moves it into a frame).
  sleep_awaiter(sleep_awaiter&& other) noexcept : timer_node(), suspension(), yield_only_(other.yield_only_) {
    deadline = other.deadline;
  }
  ~sleep_awaiter() {
    // The frame is being destroyed mid-sleep: take the timer out of the heap.
    if (armed()) loop().remove_timer(*this);
  }
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting)) return false;
    if (yield_only_) {
      loop().schedule(*task());  // sleep(0): back of the ready queue, so it runs on the next iteration
    } else {
      fire = &on_fire;
      loop().add_timer(*this);
    }
    return true;
  }
  void await_resume() const { throw_if_cancelled(); }

 private:
  static void on_fire(timer_node* timer) noexcept { static_cast<sleep_awaiter*>(timer)->resume(); }
  static bool on_cancel(cancellable_wait* wait) noexcept {
    auto* self = static_cast<sleep_awaiter*>(wait);
    if (self->yield_only_) {
      self->cancelled_while_queued();
    } else {
      self->loop().remove_timer(*self);
      self->resume_cancelled();
    }
    return true;
  }
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const sleep_awaiter&>(wait);
    report.text = self.yield_only_ ? "sleep(0): yielding for one iteration"
                                   : "sleep until " + describe_deadline(self.deadline, report.now);
  }
  static constexpr wait_kind waiting{"sleep", &on_cancel, &describe};
  bool yield_only_;
};

}  // namespace detail

/// Suspends the calling task for `delay`; sleep(0) (or a negative delay) yields
/// for exactly one loop iteration. Cancellable: the timer leaves the heap at once.
inline detail::sleep_awaiter sleep(duration delay) {
  if (delay <= duration::zero()) return detail::sleep_awaiter(time_point{}, true);
  return detail::sleep_awaiter(detail::deadline_after(delay), false);
}
/// Suspends the calling task until `deadline` on the loop's clock.
inline detail::sleep_awaiter sleep_until(time_point deadline) { return detail::sleep_awaiter(deadline, false); }

// --- 6.1 Children: the shared machinery of gather, shield and friends ---

/// Thrown by task_group when children (or its body) failed: every error, in
/// the order they happened (Python's ExceptionGroup). Always a group, even
/// for a single error, so one catch clause serves every case.
class exception_group : public std::exception {
 public:
  /// what() reads "message (N sub-exceptions)", then one line per error.
  exception_group(std::string message, std::vector<std::exception_ptr> errors)
      : errors_(std::move(errors)) {
    what_ = std::move(message) + " (" + std::to_string(errors_.size()) + " sub-exception" +
            (errors_.size() == 1 ? "" : "s") + ")";
    for (const std::exception_ptr& error : errors_) what_ += "\n  - " + describe(error);
  }
  const char* what() const noexcept override { return what_.c_str(); }
  /// Every error, in the order they happened (ExceptionGroup.exceptions).
  const std::vector<std::exception_ptr>& exceptions() const noexcept { return errors_; }

  /// One line for any exception_ptr: its what(), or a fixed text.
  static std::string describe(const std::exception_ptr& error) {
    try {
      std::rethrow_exception(error);
    } catch (const std::exception& e) {
      return e.what();
    } catch (const cancelled_error& e) {
      return e.what();
    } catch (...) {
      return "unknown exception";
    }
  }

 private:
  std::vector<std::exception_ptr> errors_;
  std::string what_;
};

namespace detail {

// void results become std::monostate and references std::reference_wrapper,
// so every child's value fits in a tuple, a vector or an outcome.
template <class T>
struct stored_value {
  using type = T;
};
template <>
struct stored_value<void> {
  using type = std::monostate;
};
template <class T>
struct stored_value<T&> {
  using type = std::reference_wrapper<T>;
};
template <class T>
using stored_value_t = typename stored_value<T>::type;

inline bool is_cancellation(const std::exception_ptr& error) noexcept {
  if (error == nullptr) return false;
  try {
    std::rethrow_exception(error);
  } catch (const cancelled_error&) {
    return true;
  } catch (...) {
    return false;
  }
}

}  // namespace detail

/// One child's outcome in gather_settled (Python's return_exceptions=True):
/// its value, or the exception it ended with (a cancelled child holds cancelled_error).
template <class T>
class outcome {
 public:
  /// T, with void as std::monostate and a reference as std::reference_wrapper.
  using value_type = detail::stored_value_t<T>;
  /// Made by gather_settled: from the child's exception (never null), or from its value.
  explicit outcome(std::exception_ptr error) noexcept : error_(std::move(error)) {}
  explicit outcome(value_type value) : value_(std::move(value)) {}
  /// True when the child returned normally; operator bool says the same.
  bool has_value() const noexcept { return error_ == nullptr; }
  explicit operator bool() const noexcept { return has_value(); }
  /// The value; rethrows the child's exception when there is none.
  value_type& value() & {
    if (error_ != nullptr) std::rethrow_exception(error_);
    return *value_;
  }
  const value_type& value() const& {
    if (error_ != nullptr) std::rethrow_exception(error_);
    return *value_;
  }
  value_type&& value() && {
    if (error_ != nullptr) std::rethrow_exception(error_);
    return std::move(*value_);
  }
  /// The exception, or null.
  const std::exception_ptr& error() const noexcept { return error_; }

 private:
  std::optional<value_type> value_;
  std::exception_ptr error_;
};

namespace detail {

// Calls callable(args...), awaits what it returns, and keeps the value or
// the exception of either step: for what must run its own epilogue whatever
// happened (leave a timeout scope, join a group, aclose a resource) before
// the outcome propagates. `args` live in the awaiting frame.
template <class Callable, class... Args>
auto settle(Callable callable, Args&... args)
    -> task<outcome<await_result_t<std::invoke_result_t<Callable&, Args&...>>>> {
  using value_type = await_result_t<std::invoke_result_t<Callable&, Args&...>>;
  try {
    auto inner = std::invoke(callable, args...);
    if constexpr (std::is_void_v<value_type>) {
      co_await std::move(inner);
      co_return outcome<value_type>(std::monostate{});
    } else if constexpr (std::is_reference_v<value_type>) {
      value_type value = co_await std::move(inner);
      co_return outcome<value_type>(std::ref(value));
    } else {
      value_type value = co_await std::move(inner);
      co_return outcome<value_type>(std::move(value));
    }
  } catch (...) {
    co_return outcome<value_type>(std::current_exception());
  }
}
// settle()'s callable for an awaitable already at hand: hands it over.
struct pass_awaitable {
  template <class Awaitable>
  Awaitable&& operator()(Awaitable& awaitable) const noexcept {
    return std::move(awaitable);
  }
};
// What an outcome holds, as the task that made it would return it (void, a
// reference, a value), or its exception rethrown.
template <class T>
T unwrap(outcome<T>&& result) {
  if constexpr (std::is_void_v<T>) {
    (void)std::move(result).value();
  } else if constexpr (std::is_reference_v<T>) {
    return std::move(result).value().get();
  } else {
    return std::move(result).value();
  }
}

// A child of gather / shield: a task we spawned (ours to empty) or a handle
// the caller passed in (copied out when the value is copyable).
template <class T>
struct child {
  task_handle<T> handle;
  bool owned;
};

template <class Awaitable>
auto make_child(Awaitable&& awaitable, source_site site) {
  using decayed = std::remove_cvref_t<Awaitable>;
  if constexpr (is_task_handle<decayed>::value) {
    return child<typename is_task_handle<decayed>::result_type>{awaitable, false};
  } else {
    return child<await_result_t<Awaitable>>{spawn(running_core(), std::forward<Awaitable>(awaitable), {}, site), true};
  }
}

template <class T>
task_promise_base* promise_of(const child<T>& c) noexcept {
  return task_ref_access::promise(c.handle);
}

// Moves (our own child, or a move-only value) or copies a finished child's value.
template <class T>
stored_value_t<T> take_value(child<T>& c) {
  auto& promise = static_cast<task_promise<T>&>(*promise_of(c));
  promise.mark_retrieved();
  if constexpr (std::is_void_v<T>) {
    promise.result_reference();
    return std::monostate{};
  } else if constexpr (std::is_reference_v<T>) {
    return std::ref(promise.result_reference());
  } else if constexpr (std::is_copy_constructible_v<T>) {
    if (!c.owned) return promise.result_reference();
    return promise.take_result();
  } else {
    return promise.take_result();
  }
}

template <class T>
outcome<T> take_outcome(child<T>& c) {
  task_promise_base* promise = promise_of(c);
  promise->mark_retrieved();
  if (promise->has_exception()) return outcome<T>(promise->exception());
  return outcome<T>(take_value(c));
}

// "Watch N tasks", written once for gather, wait and as_completed (a base of
// each): one completion node per task not yet done, linked in the tasks
// themselves, and `on_done(self, index)` as each finishes. Destroying the watch
// unlinks what is left (the watcher may stop before the tasks do).
class tasks_watch {
 public:
  using done_function = void (*)(tasks_watch* self, std::size_t index) noexcept;
  tasks_watch(std::span<task_promise_base* const> tasks, done_function on_done) noexcept
      : tasks_(tasks), on_done_(on_done) {}
  tasks_watch(const tasks_watch&) = delete;
  tasks_watch& operator=(const tasks_watch&) = delete;
  ~tasks_watch() { stop_watching(); }

  std::span<task_promise_base* const> watched() const noexcept { return tasks_; }
  // Links a node to each task not yet done and calls already_done(index) for each
  // one that is, in one pass (a gather of a million tasks reads each frame once);
  // returns how many were linked.
  template <class AlreadyDone>
  std::size_t start_watching(AlreadyDone already_done) {
    const std::span<task_promise_base* const> tasks = tasks_;
    nodes_.resize(tasks.size());
    std::size_t linked = 0;
    for (std::size_t i = 0; i < tasks.size(); ++i) {
      if (tasks[i]->done()) {
        already_done(i);
        continue;
      }
      nodes_[i].watch = this;
      nodes_[i].index = i;
      nodes_[i].notify = &on_task_done;
      nodes_[i].linked = true;
      tasks[i]->add_waiter(nodes_[i]);
      ++linked;
    }
    return linked;
  }
  std::size_t start_watching() {
    return start_watching([](std::size_t) {});
  }
  // Unlinks every node still linked: no more on_done calls.
  void stop_watching() noexcept {
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      if (!nodes_[i].linked) continue;
      tasks_[i]->remove_waiter(nodes_[i]);
      nodes_[i].linked = false;
    }
  }

 private:
  struct node : completion_waiter {
    tasks_watch* watch = nullptr;
    std::size_t index = 0;
    bool linked = false;
  };
  static void on_task_done(completion_waiter* waiter) noexcept {
    auto* done = static_cast<node*>(waiter);
    done->linked = false;
    done->watch->on_done_(done->watch, done->index);
  }
  std::span<task_promise_base* const> tasks_;
  std::vector<node> nodes_;
  done_function on_done_;
};

// Waits until every child is done. A cancel of the waiting task cancels every
// child, still waits for all of them (a C++ frame must not outlive what its
// children reference), then throws cancelled_error. With
// cancel_siblings_on_failure (gather), the first child to fail cancels the
// others. await_resume returns the index of the first child that failed, in
// completion order, or `none`. A cancel after every child finished does not
// undo the gather: its values are returned and the cancel meets the next
// suspension point (throwing would destroy them).
class children_watch : private tasks_watch, private suspension {
 public:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);

  children_watch(std::span<task_promise_base* const> children, bool cancel_siblings_on_failure)
      : tasks_watch(children, &on_child_done), cancel_siblings_(cancel_siblings_on_failure) {}

  bool await_ready() {
    for (task_promise_base* child : watched()) {
      if (!child->done()) return false;
    }
    for (std::size_t i = 0; i < watched().size(); ++i) note_finished(i);
    return true;
  }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting)) {
      on_interrupt(this);  // the pending cancel interrupts at once; we still wait for the children
      keep_waiting(caller);
    }
    remaining_ = start_watching([this](std::size_t index) { note_finished(index); });
    if (remaining_ == 0) {
      not_suspending();
      return false;
    }
    return true;
  }
  std::size_t await_resume() const {
    throw_if_interrupted();
    return first_failure_;
  }

 private:
  void note_finished(std::size_t index) noexcept {
    if (watched()[index]->has_exception() && first_failure_ == none) {
      first_failure_ = index;
      if (cancel_siblings_) cancel_children();
    }
  }
  // Once per watch: a second request would reach a child already cleaning
  // up after the first (its cleanup's next wait would throw).
  void cancel_children() noexcept {
    if (children_cancelled_) return;
    children_cancelled_ = true;
    for (task_promise_base* child : watched()) child->cancel();
  }
  static void on_child_done(tasks_watch* watch, std::size_t index) noexcept {
    auto* self = static_cast<children_watch*>(watch);
    self->note_finished(index);
    if (--self->remaining_ == 0) self->resume();
  }
  static bool on_interrupt(cancellable_wait* wait) noexcept {
    auto* self = static_cast<children_watch*>(wait);
    self->mark_cancelled();
    self->cancel_children();
    return true;  // we resume once every child is done
  }
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const children_watch&>(wait);
    const std::size_t count = self.watched().size();
    report.text = "gather of " + std::to_string(count) + (count == 1 ? " task" : " tasks") + " (" +
                  std::to_string(self.remaining_) + " running" +
                  (self.cancelled() ? "; cancelled, waiting for them to finish)"
                   : self.children_cancelled_ ? "; one failed, the others cancelled)"
                                              : ")");
    for (task_promise_base* child : self.watched()) {
      if (!child->done()) report.awaited.push_back(child);
    }
  }
  static constexpr wait_kind waiting{"gather", &on_interrupt, &describe};

  bool cancel_siblings_;
  bool children_cancelled_ = false;
  std::size_t remaining_ = 0;
  std::size_t first_failure_ = none;
};

template <class... Children>
std::array<task_promise_base*, sizeof...(Children)> promises_of(const std::tuple<Children...>& children) {
  return std::apply([](const auto&... c) { return std::array<task_promise_base*, sizeof...(Children)>{promise_of(c)...}; },
                    children);
}

template <class T>
std::vector<task_promise_base*> promises_of(const std::vector<child<T>>& children) {
  std::vector<task_promise_base*> promises;
  promises.reserve(children.size());
  for (const child<T>& c : children) promises.push_back(promise_of(c));
  return promises;
}

// After gather's watch: every child's error counts as retrieved (asyncio marks
// them so), and the first failure is rethrown.
inline void rethrow_first_failure(std::span<task_promise_base* const> promises, std::size_t first_failure) {
  for (task_promise_base* promise : promises) promise->mark_retrieved();
  if (first_failure != children_watch::none) std::rethrow_exception(promises[first_failure]->exception());
}

template <class Range>
using range_child_t = decltype(make_child(std::move(*std::ranges::begin(std::declval<Range&>())), source_site{}));

}  // namespace detail

// --- 6.2 gather ---

namespace detail {

template <class... Awaitables>
task<std::tuple<stored_value_t<await_result_t<Awaitables>>...>> gather_tuple(source_site site,
                                                                             Awaitables... awaitables) {
  if constexpr (sizeof...(Awaitables) == 0) {
    co_return std::tuple<>{};
  } else {
    // Braces: left to right, so the children start in the arguments' order.
    std::tuple<decltype(make_child(std::move(awaitables), site))...> children{
        make_child(std::move(awaitables), site)...};
    const auto promises = promises_of(children);
    children_watch watch(promises, true);
    const std::size_t first_failure = co_await watch;
    rethrow_first_failure(promises, first_failure);
    co_return std::apply(
        [](auto&... c) { return std::tuple<stored_value_t<await_result_t<Awaitables>>...>(take_value(c)...); },
        children);
  }
}

template <class Range>
task<std::vector<stored_value_t<await_result_t<std::ranges::range_value_t<Range>>>>> gather_range(source_site site,
                                                                                                  Range awaitables) {
  using child_type = range_child_t<Range>;
  std::vector<child_type> children;
  if constexpr (std::ranges::sized_range<Range>) children.reserve(std::ranges::size(awaitables));
  for (auto&& awaitable : awaitables) children.push_back(make_child(std::move(awaitable), site));
  const std::vector<task_promise_base*> promises = promises_of(children);
  children_watch watch(promises, true);
  const std::size_t first_failure = co_await watch;
  rethrow_first_failure(promises, first_failure);
  std::vector<stored_value_t<await_result_t<std::ranges::range_value_t<Range>>>> values;
  values.reserve(children.size());
  for (child_type& c : children) values.push_back(take_value(c));
  co_return values;
}

template <class... Awaitables>
task<std::tuple<outcome<await_result_t<Awaitables>>...>> gather_tuple_settled(source_site site,
                                                                              Awaitables... awaitables) {
  std::tuple<decltype(make_child(std::move(awaitables), site))...> children{
      make_child(std::move(awaitables), site)...};
  if constexpr (sizeof...(Awaitables) != 0) {
    const auto promises = promises_of(children);
    children_watch watch(promises, false);
    co_await watch;
  }
  co_return std::apply(
      [](auto&... c) { return std::tuple<outcome<await_result_t<Awaitables>>...>(take_outcome(c)...); }, children);
}

template <class Range>
task<std::vector<outcome<await_result_t<std::ranges::range_value_t<Range>>>>> gather_range_settled(source_site site,
                                                                                                   Range awaitables) {
  using child_type = range_child_t<Range>;
  std::vector<child_type> children;
  for (auto&& awaitable : awaitables) children.push_back(make_child(std::move(awaitable), site));
  const std::vector<task_promise_base*> promises = promises_of(children);
  children_watch watch(promises, false);
  co_await watch;
  std::vector<outcome<await_result_t<std::ranges::range_value_t<Range>>>> outcomes;
  outcomes.reserve(children.size());
  for (child_type& c : children) outcomes.push_back(take_outcome(c));
  co_return outcomes;
}

// One argument that is a range of awaitables rather than an awaitable: the
// gather(range) overloads.
template <class... Arguments>
concept one_range = sizeof...(Arguments) == 1 && (std::ranges::input_range<Arguments> && ...) &&
                    (!awaitable<Arguments> && ...);

// What every gather overload calls: the arguments are checked first, so that
// one that is not awaitable gets a sentence naming the mistake rather than
// pages from inside the coroutines above. A defaulted parameter (the site)
// cannot follow a pack: gather(a, b, ...) gives its children no site of their
// own (the tree shows them under the gather of the task that called it), a
// range's children get the caller's line.
template <bool Settled, class... Awaitables>
auto gather_call(source_site site, Awaitables&&... awaitables) {
  if constexpr (!(awaitable<Awaitables> && ...)) {
    static_assert(always_false<Awaitables...>,
                  "gather(a, b, ...): every argument must be awaitable: a task<T> (call the coroutine: f(), not "
                  "f), a task_handle<T>, sleep(d), ...");
  } else if constexpr (!(std::is_constructible_v<std::decay_t<Awaitables>, Awaitables&&> && ...)) {
    static_assert(always_false<Awaitables...>,
                  "gather(a, b, ...): an argument cannot be copied (a task<T> is move-only): pass it as a "
                  "temporary, f(), or with std::move");
  } else if constexpr (Settled) {
    return gather_tuple_settled<std::decay_t<Awaitables>...>(site, std::forward<Awaitables>(awaitables)...);
  } else {
    return gather_tuple<std::decay_t<Awaitables>...>(site, std::forward<Awaitables>(awaitables)...);
  }
}
template <bool Settled, class Range>
auto gather_range_call(source_site site, Range&& awaitables) {
  if constexpr (!awaitable<std::ranges::range_value_t<Range>>) {
    static_assert(always_false<Range>,
                  "gather(range): the range's elements must be awaitable: task<T>, task_handle<T>, ...");
  } else if constexpr (Settled) {
    return gather_range_settled<std::remove_cvref_t<Range>>(site, std::forward<Range>(awaitables));
  } else {
    return gather_range<std::remove_cvref_t<Range>>(site, std::forward<Range>(awaitables));
  }
}

}  // namespace detail

/// Runs every awaitable concurrently (task_handles as they are, anything else
/// as a new task) and returns their values as a tuple, void as std::monostate.
/// When one fails, the others are cancelled and awaited, then its exception
/// propagates; cancelling the gather cancels every child (and awaits them).
/// Differs from asyncio: siblings are cancelled and awaited before the error
/// propagates, because a C++ frame must not outlive what its children use.
template <class... Awaitables>
  requires(!detail::one_range<Awaitables...>)
auto gather(Awaitables&&... awaitables) {
  return detail::gather_call<false>(detail::source_site{}, std::forward<Awaitables>(awaitables)...);
}

/// gather over a range of awaitables (or task_handles): a vector of values in
/// the range's order. Same failure and cancellation rules as gather(a, b, ...).
/// (`site`: the caller's line, for the task tree.)
template <class Range>
  requires detail::one_range<Range>
auto gather(Range&& awaitables, detail::source_site site = detail::source_site::here()) {
  return detail::gather_range_call<false>(site, std::forward<Range>(awaitables));
}

/// gather that never fails for a child (Python's return_exceptions=True): a
/// tuple of outcome<T>, each a value or the child's exception. Cancelling it
/// still cancels and awaits every child, then throws cancelled_error.
template <class... Awaitables>
  requires(!detail::one_range<Awaitables...>)
auto gather_settled(Awaitables&&... awaitables) {
  return detail::gather_call<true>(detail::source_site{}, std::forward<Awaitables>(awaitables)...);
}

/// gather_settled over a range: a vector of outcome<T> in the range's order.
template <class Range>
  requires detail::one_range<Range>
auto gather_settled(Range&& awaitables, detail::source_site site = detail::source_site::here()) {
  return detail::gather_range_call<true>(site, std::forward<Range>(awaitables));
}

// --- 6.3 shield ---

namespace detail {
// Waits for a task without passing a cancel on: an interrupt stops the wait
// (the caller gets cancelled_error) and the task runs on. A cancel after the
// task finished returns its value (shield owns it: throwing would destroy it).
class shield_wait : private completion_waiter, private suspension {
 public:
  explicit shield_wait(task_promise_base* target) noexcept : target_(target) {}
  shield_wait(const shield_wait&) = delete;
  shield_wait& operator=(const shield_wait&) = delete;
  ~shield_wait() {
    if (linked_) target_->remove_waiter(*this);
  }
  bool await_ready() const noexcept { return target_->done(); }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting)) return false;
    notify = &on_done;
    target_->add_waiter(*this);
    linked_ = true;
    return true;
  }
  void await_resume() const { throw_if_interrupted(); }

 private:
  static void on_done(completion_waiter* waiter) noexcept {
    auto* self = static_cast<shield_wait*>(waiter);
    self->linked_ = false;
    self->resume();
  }
  static bool on_interrupt(cancellable_wait* wait) noexcept {
    auto* self = static_cast<shield_wait*>(wait);
    self->target_->remove_waiter(*self);
    self->linked_ = false;
    self->resume_cancelled();
    return true;
  }
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const shield_wait&>(wait);
    report.text = "shield over task '" + self.target_->name() + "'";
    report.awaited.push_back(self.target_);
  }
  static constexpr wait_kind waiting{"shield", &on_interrupt, &describe};
  bool linked_ = false;  // first: it fills the protocol's tail
  task_promise_base* target_;
};
}  // namespace detail

/// Runs `awaitable` as a task that the caller's cancellation does not reach:
/// a cancelled caller gets cancelled_error at once while the inner task runs
/// on (asyncio.shield). Whatever the inner work references must outlive it.
template <class Awaitable>
  requires detail::awaitable<Awaitable>
task<await_result_t<Awaitable>> shield(Awaitable awaitable, detail::source_site site = detail::source_site::here()) {
  auto inner = detail::make_child(std::move(awaitable), site);
  detail::shield_wait wait(detail::promise_of(inner));
  co_await wait;
  detail::task_promise_base* promise = detail::promise_of(inner);
  promise->mark_retrieved();
  if constexpr (std::is_void_v<await_result_t<Awaitable>>) {
    static_cast<detail::task_promise<void>&>(*promise).result_reference();
  } else if constexpr (std::is_reference_v<await_result_t<Awaitable>>) {
    co_return static_cast<detail::task_promise<await_result_t<Awaitable>>&>(*promise).result_reference();
  } else {
    co_return detail::take_value(inner);
  }
}

// --- 6.4 wait and as_completed ---

/// When wait() returns (asyncio's FIRST_COMPLETED, FIRST_EXCEPTION, ALL_COMPLETED).
enum class return_when { first_completed, first_exception, all_completed };

/// What wait() returns: the tasks done and those still pending, each in the given order.
template <class Handle>
struct wait_result {
  std::vector<Handle> done;
  std::vector<Handle> pending;
};

namespace detail {
// Waits until `condition` holds over the watched tasks, or a deadline; a
// cancel stops the wait without touching the tasks (asyncio.wait).
class condition_wait : private tasks_watch, private timer_node, private suspension {
 public:
  condition_wait(std::span<task_promise_base* const> tasks, return_when when, std::optional<time_point> deadline)
      : tasks_watch(tasks, &on_task_done), when_(when), deadline_(deadline) {}
  ~condition_wait() {
    if (armed()) loop().remove_timer(*this);
  }

  bool await_ready() const noexcept { return satisfied(); }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting)) return false;
    start_watching();
    if (deadline_) {
      deadline = *deadline_;
      fire = &on_deadline;
      loop().add_timer(*this);
    }
    return true;
  }
  void await_resume() const { throw_if_cancelled(); }  // the tasks keep their results

 private:
  bool satisfied() const noexcept {
    std::size_t done = 0;
    for (task_promise_base* task : watched()) {
      if (!task->done()) continue;
      ++done;
      if (when_ == return_when::first_completed) return true;
      if (when_ == return_when::first_exception && task->has_exception() && !task->cancelled()) return true;
    }
    return done == watched().size();
  }
  void finish() noexcept {
    stop_watching();
    if (armed()) loop().remove_timer(*this);
    resume();
  }
  static void on_task_done(tasks_watch* watch, std::size_t) noexcept {
    auto* self = static_cast<condition_wait*>(watch);
    if (self->satisfied()) self->finish();
  }
  static void on_deadline(timer_node* timer) noexcept { static_cast<condition_wait*>(timer)->finish(); }
  static bool on_interrupt(cancellable_wait* wait) noexcept {
    auto* self = static_cast<condition_wait*>(wait);
    self->mark_cancelled();
    self->finish();
    return true;
  }
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const condition_wait&>(wait);
    static constexpr const char* whens[] = {"first_completed", "first_exception", "all_completed"};
    report.text = std::string("wait (") + whens[static_cast<int>(self.when_)] + ") on " +
                  std::to_string(self.watched().size()) + " tasks";
    if (self.armed()) report.text += ", timeout in " + describe_duration(self.deadline - report.now);
    for (task_promise_base* task : self.watched()) {
      if (!task->done()) report.awaited.push_back(task);
    }
  }
  static constexpr wait_kind waiting{"wait", &on_interrupt, &describe};

  return_when when_;
  std::optional<time_point> deadline_;
};
}  // namespace detail

/// Waits for the tasks (task_handles) until `when` holds or `timeout` passes
/// and returns them split into done and pending (asyncio.wait). Neither a
/// timeout nor a cancel of the caller cancels the tasks.
/// Throws std::invalid_argument for an empty list.
template <class Handle>
  requires std::is_base_of_v<task_ref, Handle>
task<wait_result<Handle>> wait(std::vector<Handle> tasks, return_when when = return_when::all_completed,
                               std::optional<duration> timeout = std::nullopt) {
  if (tasks.empty()) throw std::invalid_argument("wait: the set of tasks is empty");
  std::vector<detail::task_promise_base*> promises;
  promises.reserve(tasks.size());
  for (const Handle& handle : tasks) promises.push_back(detail::task_ref_access::promise(handle));
  std::optional<time_point> deadline;
  if (timeout) deadline = detail::deadline_after(*timeout);
  detail::condition_wait waiting(promises, when, deadline);
  co_await waiting;
  wait_result<Handle> result;
  for (Handle& handle : tasks) (handle.done() ? result.done : result.pending).push_back(std::move(handle));
  co_return result;
}

/// Yields the tasks in the order they finish (asyncio.as_completed):
///   auto order = as_completed(handles);
///   while (!order.empty()) { auto next = co_await order.next(); ... co_await next ... }
/// With a timeout, next() throws timeout_error once it passes (measured from
/// construction). Not movable: its waiters point into it.
template <class Handle>
  requires std::is_base_of_v<task_ref, Handle>
class as_completed : private detail::timer_node {
 public:
  /// Starts watching `tasks` on the running loop (invalid_state_error without one); tasks
  /// already done come out first, in the order given.
  explicit as_completed(std::vector<Handle> tasks, std::optional<duration> timeout = std::nullopt)
      : tasks_(std::move(tasks)), promises_(promises_of(tasks_)), watch_(promises_, &on_task_done, this),
        loop_(&detail::running_core()) {
    for (std::size_t i = 0; i < tasks_.size(); ++i) {
      if (promises_[i]->done()) finished_.push_back(i);
    }
    watch_.start_watching();
    if (timeout) {
      deadline = detail::deadline_after(*timeout);
      fire = &on_deadline;
      loop_->add_timer(*this);
    }
  }
  /// Not copyable: the tasks' waiters point into it. Destroying it stops the watch; the tasks run on.
  as_completed(const as_completed&) = delete;
  as_completed& operator=(const as_completed&) = delete;
  ~as_completed() {
    if (armed()) loop_->remove_timer(*this);
  }
  /// Tasks not yet handed out by next().
  std::size_t size() const noexcept { return tasks_.size() - handed_out_; }
  /// True once every task was handed out; next() then throws invalid_state_error.
  bool empty() const noexcept { return size() == 0; }

  /// What next() returns: co_await it for the next Handle. One awaiting task at a time.
  class next_awaiter : private detail::suspension {
   public:
    explicit next_awaiter(as_completed& owner) noexcept : owner_(&owner) {}
    bool await_ready() const {
      if (owner_->empty()) throw invalid_state_error("as_completed::next: every task was already handed out");
      return owner_->next_finished_ < owner_->finished_.size() || owner_->expired_;
    }
    bool await_suspend(std::coroutine_handle<> caller) {
      if (owner_->waiter_ != nullptr) {
        throw invalid_state_error("as_completed::next: another task is already waiting on it");
      }
      if (!suspend(caller, waiting)) return false;
      owner_->waiter_ = this;
      return true;
    }
    Handle await_resume() {
      throw_if_cancelled();  // a cancel after a task finished wins; it is handed out next time
      ++owner_->handed_out_;
      if (owner_->next_finished_ < owner_->finished_.size()) {
        return owner_->tasks_[owner_->finished_[owner_->next_finished_++]];
      }
      // Past the deadline, once the tasks done before it were handed out:
      // one timeout_error for each task not done by then (asyncio's iterator).
      throw timeout_error();
    }

   private:
    friend class as_completed;
    static bool on_interrupt(detail::cancellable_wait* wait) noexcept {
      auto* self = static_cast<next_awaiter*>(wait);
      self->owner_->waiter_ = nullptr;
      self->resume_cancelled();
      return true;
    }
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      const as_completed& owner = *static_cast<const next_awaiter&>(wait).owner_;
      report.text = "as_completed::next (" + std::to_string(owner.handed_out_) + " of " +
                    std::to_string(owner.tasks_.size()) + " handed out)";
      if (owner.armed()) report.text += ", timeout in " + detail::describe_duration(owner.deadline - report.now);
      for (detail::task_promise_base* task : owner.promises_) {
        if (!task->done()) report.awaited.push_back(task);
      }
    }
    static constexpr detail::wait_kind waiting{"as_completed", &on_interrupt, &describe};
    void wake() noexcept {
      owner_->waiter_ = nullptr;
      resume();
    }
    as_completed* owner_;
  };
  /// The next task to finish. Past the deadline, the tasks done before it come
  /// first, then one timeout_error per task that was not (asyncio.as_completed).
  next_awaiter next() noexcept { return next_awaiter(*this); }

 private:
  // The watch of the tasks; it knows its as_completed.
  struct watch : detail::tasks_watch {
    watch(std::span<detail::task_promise_base* const> tasks, done_function on_done, as_completed* owner) noexcept
        : tasks_watch(tasks, on_done), owner(owner) {}
    as_completed* owner;
  };
  static std::vector<detail::task_promise_base*> promises_of(const std::vector<Handle>& tasks) {
    std::vector<detail::task_promise_base*> promises;
    promises.reserve(tasks.size());
    for (const Handle& task : tasks) promises.push_back(detail::task_ref_access::promise(task));
    return promises;
  }
  static void on_task_done(detail::tasks_watch* done, std::size_t index) noexcept {
    as_completed* self = static_cast<watch*>(done)->owner;
    self->finished_.push_back(index);
    if (self->waiter_ != nullptr) self->waiter_->wake();
  }
  // asyncio drops every task not done at the deadline: one finishing later
  // is never handed out.
  static void on_deadline(detail::timer_node* timer) noexcept {
    auto* self = static_cast<as_completed*>(timer);
    self->expired_ = true;
    self->watch_.stop_watching();
    if (self->waiter_ != nullptr) self->waiter_->wake();
  }

  std::vector<Handle> tasks_;
  std::vector<detail::task_promise_base*> promises_;
  watch watch_;
  std::vector<std::size_t> finished_;  // indexes, in completion order
  std::size_t next_finished_ = 0;
  std::size_t handed_out_ = 0;
  detail::loop_core* loop_;
  next_awaiter* waiter_ = nullptr;
  bool expired_ = false;
};

// --- 6.5 timeout ---

/// A deadline over some work of the current task (asyncio.Timeout): run(aw)
/// awaits aw; at the deadline the task is cancelled and, if the cancellation
/// ends aw, run throws timeout_error. The deadline can be read and moved while
/// aw runs. An outer cancel racing the deadline stays a cancelled_error:
/// requests are counted (cancelling()/uncancel()), never guessed.
///   timeout_scope scope(2s);
///   auto value = co_await scope.run(work(scope));   // work may call scope.reschedule(...)
namespace detail {
// Reads timeout scopes and task groups to draw the task tree (11.3): declared
// here, defined with the tree, so that neither needs a public accessor.
class task_tree_builder;
}  // namespace detail

class timeout_scope : private detail::timer_node {
 public:
  /// A deadline `delay` from now.
  explicit timeout_scope(duration delay) : when_(detail::deadline_after(delay)) {}
  /// A deadline on the loop's clock; std::nullopt for none (until rescheduled).
  explicit timeout_scope(std::optional<time_point> when) : when_(when) {}
  /// Not copyable: its timer sits in the loop's heap. Destroying it disarms the deadline.
  timeout_scope(const timeout_scope&) = delete;
  timeout_scope& operator=(const timeout_scope&) = delete;
  ~timeout_scope() {
    disarm();
    disown_notice();
  }

  /// The deadline, or std::nullopt for none.
  std::optional<time_point> when() const noexcept { return when_; }
  /// Moves the deadline (std::nullopt: none). Throws invalid_state_error once
  /// the deadline has passed (asyncio: "Cannot change state of expiring Timeout").
  void reschedule(std::optional<time_point> when) {
    if (state_ == state::expiring || state_ == state::expired || state_ == state::finished) {
      throw invalid_state_error("timeout_scope::reschedule: the timeout already expired or finished");
    }
    when_ = when;
    if (state_ == state::active) {
      disarm();
      disown_notice();
      arm();
    }
  }
  /// Moves the deadline to `delay` from now; throws as the overload above.
  void reschedule(duration delay) { reschedule(std::optional<time_point>(detail::deadline_after(delay))); }
  /// True when the deadline passed while the work ran.
  bool expired() const noexcept { return state_ == state::expiring || state_ == state::expired; }

  /// Awaits `awaitable` under this deadline (once per scope).
  template <class Awaitable>
    requires detail::awaitable<Awaitable>
  task<await_result_t<Awaitable>> run(Awaitable awaitable) {
    enter();
    auto settling = detail::settle(detail::pass_awaitable{}, awaitable);
    outcome<await_result_t<Awaitable>> result = co_await settling;
    if (std::exception_ptr expired = leave(result.error())) std::rethrow_exception(expired);
    co_return detail::unwrap(std::move(result));
  }

 private:
  friend class detail::task_tree_builder;
  enum class state : std::uint8_t { created, active, expiring, expired, finished };
  void enter() {
    if (state_ != state::created) throw invalid_state_error("timeout_scope::run: a scope runs once");
    task_ = &detail::current_task_for("timeout");
    loop_ = &detail::running_core();
    cancelling_at_entry_ = task_->cancelling();
    state_ = state::active;
    arm();
  }
  // Converts the cancellation our own expiry caused into timeout_error (the
  // result, else null): only when no other cancel request is outstanding
  // (asyncio 3.11's rule).
  std::exception_ptr leave(const std::exception_ptr& error) {
    disarm();
    disown_notice();  // the work ended before the expiry was acted on
    if (state_ != state::expiring) {
      state_ = state::finished;
      return nullptr;
    }
    state_ = state::expired;
    if (task_->uncancel() <= cancelling_at_entry_ && detail::is_cancellation(error)) {
      return std::make_exception_ptr(timeout_error());
    }
    return nullptr;
  }
  void arm() {
    if (!when_) return;
    // A deadline already passed expires before the work's next step: the
    // notice is queued now, ahead of whatever wakes the task later (asyncio
    // call_soon()s the expiry then), so timeout(0ms, sleep(0ms)) expires.
    if (*when_ <= clock::now()) {
      queue_expiry_notice();
      return;
    }
    deadline = *when_;
    fire = &on_deadline;
    loop_->add_timer(*this);
  }
  void disarm() noexcept {
    if (armed()) loop_->remove_timer(*this);
  }
  // The deadline does not cancel at once: like asyncio's timer handle it runs
  // as a callback, after the timers due at the same instant were queued, so
  // an outer cancel due then is counted before the task resumes.
  struct expiry_notice : detail::ready_node {
    timeout_scope* scope;
  };
  static void on_deadline(detail::timer_node* timer) noexcept {
    static_cast<timeout_scope*>(timer)->queue_expiry_notice();
  }
  void queue_expiry_notice() noexcept {
    auto* notice = new (std::nothrow) expiry_notice();
    if (notice == nullptr) {
      expire();
      return;
    }
    notice->scope = this;
    notice->run = [](detail::ready_node* node) noexcept {
      auto* arrived = static_cast<expiry_notice*>(node);
      if (arrived->scope != nullptr && detail::running_loop_slot() != nullptr) {
        arrived->scope->notice_ = nullptr;
        arrived->scope->expire();
      } else if (arrived->scope != nullptr) {
        arrived->scope->notice_ = nullptr;
      }
      delete arrived;
    };
    notice_ = notice;
    loop_->schedule(*notice);
  }
  void expire() noexcept {
    state_ = state::expiring;
    task_->cancel();
  }
  void disown_notice() noexcept {
    if (notice_ != nullptr) {
      notice_->scope = nullptr;
      notice_ = nullptr;
    }
  }

  std::optional<time_point> when_;
  expiry_notice* notice_ = nullptr;
  detail::task_promise_base* task_ = nullptr;
  detail::loop_core* loop_ = nullptr;
  int cancelling_at_entry_ = 0;
  state state_ = state::created;
};

/// Awaits `awaitable` with a deadline `delay` from now; on expiry cancels it,
/// waits for it to finish, and throws timeout_error (asyncio.timeout).
template <class Awaitable>
  requires detail::awaitable<Awaitable>
task<await_result_t<Awaitable>> timeout(duration delay, Awaitable awaitable) {
  timeout_scope scope(delay);
  co_return co_await scope.run(std::move(awaitable));
}

/// timeout() with a deadline on the loop's clock (asyncio.timeout_at).
template <class Awaitable>
  requires detail::awaitable<Awaitable>
task<await_result_t<Awaitable>> timeout_at(time_point deadline, Awaitable awaitable) {
  timeout_scope scope(std::optional<time_point>{deadline});
  co_return co_await scope.run(std::move(awaitable));
}

/// asyncio.wait_for: timeout() with the arguments the other way round.
template <class Awaitable>
  requires detail::awaitable<Awaitable>
task<await_result_t<Awaitable>> wait_for(Awaitable awaitable, duration delay) {
  timeout_scope scope(delay);
  co_return co_await scope.run(std::move(awaitable));
}

// --- 6.6 task_group ---

/// Structured concurrency (asyncio.TaskGroup, 3.11-3.13 semantics, plus 3.15's
/// cancel()). Children made by create_task run concurrently; the first child to
/// fail with an error other than cancellation cancels the other children and the
/// group's body; the join waits for every child and throws every error together
/// as one exception_group. Cancelling the task that joins cancels the children,
/// and the join rethrows cancelled_error once they are done. cancel() ends the
/// group early and without an error of its own.
/// C++ has no async destructor: use with_task_group(body), which always joins;
/// the explicit form must reach co_await join(error) on every path. A group
/// destroyed with children still running terminates the program (they would
/// outlive what they reference).
class task_group {
 public:
  /// Binds the group to the task running now (its body's task); `site` is for the caller's line.
  task_group(detail::source_site site = detail::source_site::here())
      : loop_(&detail::running_core()), parent_(loop_->current_task()), site_(site) {
    if (parent_ == nullptr) throw invalid_state_error("task_group: must be created inside a task");
    cancelling_at_entry_ = parent_->cancelling();
  }
  /// Not copyable. Destroying it with children running terminates (see above); destroying it
  /// unjoined with child errors reports on stderr how many were lost.
  task_group(const task_group&) = delete;
  task_group& operator=(const task_group&) = delete;
  ~task_group() {
    if (!children_.empty()) {
      std::fprintf(stderr,
                   "coro_loop: task_group destroyed with %zu children still running; join it "
                   "(co_await group.join()) or use with_task_group\n",
                   children_.size());
      std::terminate();
    }
    if (state_ != state::joined && !errors_.empty()) {
      std::fprintf(stderr, "coro_loop: task_group destroyed without join; %zu child errors are lost\n",
                   errors_.size());
    }
  }

  /// Starts `awaitable` as a child task. Throws invalid_state_error after the
  /// join finished, or while the group is shutting down after a failure.
  template <class Awaitable>
    requires detail::awaitable<Awaitable>
  auto create_task(Awaitable&& awaitable, std::string name = {},
                   detail::source_site site = detail::source_site::here()) {
    check_open();
    return adopt(detail::spawn(*loop_, std::forward<Awaitable>(awaitable), std::move(name), site));
  }
  /// Starts `callable(args...)` as a child, moving both into its frame (one overload per
  /// count of arguments up to three, as the free create_task).
  template <class Callable>
    requires(!detail::awaitable<Callable>)
  auto create_task(Callable&& callable, detail::source_site site = detail::source_site::here()) {
    check_open();
    return adopt(detail::spawn_call(*loop_, site, std::forward<Callable>(callable)));
  }
  /// The same with one argument.
  template <class Callable, class Arg>
    requires(!detail::awaitable<Callable>)
  auto create_task(Callable&& callable, Arg&& arg, detail::source_site site = detail::source_site::here()) {
    check_open();
    return adopt(detail::spawn_call(*loop_, site, std::forward<Callable>(callable), std::forward<Arg>(arg)));
  }
  /// The same with two arguments.
  template <class Callable, class Arg1, class Arg2>
    requires(!detail::awaitable<Callable>)
  auto create_task(Callable&& callable, Arg1&& arg1, Arg2&& arg2,
                   detail::source_site site = detail::source_site::here()) {
    check_open();
    return adopt(detail::spawn_call(*loop_, site, std::forward<Callable>(callable), std::forward<Arg1>(arg1),
                                    std::forward<Arg2>(arg2)));
  }
  /// The same with three arguments.
  template <class Callable, class Arg1, class Arg2, class Arg3>
    requires(!detail::awaitable<Callable>)
  auto create_task(Callable&& callable, Arg1&& arg1, Arg2&& arg2, Arg3&& arg3,
                   detail::source_site site = detail::source_site::here()) {
    check_open();
    return adopt(detail::spawn_call(*loop_, site, std::forward<Callable>(callable), std::forward<Arg1>(arg1),
                                    std::forward<Arg2>(arg2), std::forward<Arg3>(arg3)));
  }
  /// The same with four arguments or more (the task tree shows no creation site).
  template <class Callable, class... Args>
    requires(!detail::awaitable<Callable>) && (sizeof...(Args) > 3)
  auto create_task(Callable&& callable, Args&&... args) {
    check_open();
    return adopt(
        detail::spawn_call(*loop_, detail::source_site{}, std::forward<Callable>(callable), std::forward<Args>(args)...));
  }

  /// Children not yet done.
  std::size_t size() const noexcept { return children_.size(); }

  /// Cancels every child and, while it runs, the body; the join then ends without an error of
  /// its own (asyncio 3.15's TaskGroup.cancel()). No-op once joined or shutting down.
  void cancel() noexcept {
    if (state_ == state::joined || aborting_) return;
    cancelled_ = true;
    shut_down();
  }

  /// Waits for every child (asyncio's __aexit__). `body_error` is what the
  /// body threw, if anything: an error aborts the group and joins the errors,
  /// a cancellation is rethrown after the children finish (unless cancel() caused it).
  CORO_LOOP_COROUTINE
  task<void> join(std::exception_ptr body_error = nullptr);

 private:
  enum class state : std::uint8_t { open, joining, joined };
  // One per child: notified when it ends, then handled on a later iteration
  // through the ready queue, as asyncio runs a TaskGroup's done-callbacks (so
  // siblings already resumed in that iteration may still fail on their own).
  friend class detail::task_tree_builder;
  struct child_entry : detail::completion_waiter, detail::list_hook, detail::ready_node {
    task_group* group;
    detail::task_promise_base* task;
  };
  // A child's end, told to its entry: joined on the next iteration. Named, so
  // that a task tree knows a group's entry among a task's waiters.
  static void on_child_notified(detail::completion_waiter* waiter) noexcept {
    auto* done = static_cast<child_entry*>(waiter);
    done->group->loop_->schedule(*done);
  }
  class join_wait;

  void check_open() const {
    if (state_ == state::joined) throw invalid_state_error("task_group: create_task after join");
    if (aborting_) throw invalid_state_error("task_group: create_task while the group is shutting down");
  }
  // Makes a new task one of the group's children; returns its handle.
  template <class Handle>
  Handle adopt(Handle handle) {
    adopt(detail::task_ref_access::promise(handle));
    return handle;
  }
  void adopt(detail::task_promise_base* task) {
    auto* entry = new child_entry();
    entry->group = this;
    entry->task = task;
    entry->notify = &on_child_notified;
    entry->run = &on_child_done;
    task->retain();
    children_.push_back(*entry);
    task->add_waiter(*entry);
  }
  void abort() noexcept {
    aborting_ = true;
    children_.for_each([](detail::list_hook& hook) { static_cast<child_entry&>(hook).task->cancel(); });
  }
  // The first failure, or cancel(): the children are cancelled, and so is the
  // body while it runs (once: both callers come here only when not aborting
  // yet); the join takes that request back.
  void shut_down() noexcept {
    abort();
    if (state_ == state::open && !parent_->done()) {
      parent_cancel_requested_ = true;
      parent_->cancel();
    }
  }
  static void on_child_done(detail::ready_node* node) noexcept;

  detail::loop_core* loop_;
  detail::task_promise_base* parent_;
  detail::source_site site_;         // where the group was opened, for a task tree
  detail::intrusive_list children_;  // child_entry, still running
  std::vector<std::exception_ptr> errors_;
  join_wait* joiner_ = nullptr;
  int cancelling_at_entry_ = 0;  // the body's task's cancelling() when the group began
  state state_ = state::open;
  bool aborting_ = false;
  bool cancelled_ = false;  // cancel() shut the group down
  bool parent_cancel_requested_ = false;
  bool propagate_cancellation_ = false;
};

// The join's wait: resumes when no child is left. A cancel of the joining task
// aborts the group (once) and keeps waiting: children must finish first.
class task_group::join_wait : private detail::suspension {
 public:
  explicit join_wait(task_group& group) noexcept : group_(&group) {}
  join_wait(const join_wait&) = delete;
  join_wait& operator=(const join_wait&) = delete;
  ~join_wait() {
    if (group_->joiner_ == this) group_->joiner_ = nullptr;
  }
  bool await_ready() const noexcept { return group_->children_.empty(); }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting)) {
      on_interrupt(this);  // the pending cancel aborts the group; the children finish first
      keep_waiting(caller);
    }
    group_->joiner_ = this;
    return true;
  }
  // Cancellation is the join's to report (after the children), not the wait's.
  void await_resume() const noexcept {}
  void wake() noexcept {
    group_->joiner_ = nullptr;
    resume();
  }

 private:
  static bool on_interrupt(detail::cancellable_wait* wait) noexcept {
    auto* self = static_cast<join_wait*>(wait);
    if (!self->group_->aborting_) {
      self->group_->propagate_cancellation_ = true;
      self->group_->abort();
    }
    return true;
  }
  static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
    task_group& group = *static_cast<const join_wait&>(wait).group_;
    const std::size_t running = group.children_.size();
    report.text = "task_group::join on task_group " + detail::describe_address(&group) + " (" +
                  std::to_string(running) + (running == 1 ? " child" : " children") + " running" +
                  (group.aborting_ ? "; shutting down)" : ")");
    group.children_.for_each(
        [&report](detail::list_hook& hook) { report.awaited.push_back(static_cast<child_entry&>(hook).task); });
  }
  static constexpr detail::wait_kind waiting{"task_group::join", &on_interrupt, &describe};
  task_group* group_;
};

inline void task_group::on_child_done(detail::ready_node* node) noexcept {
  auto* entry = static_cast<child_entry*>(node);
  task_group& group = *entry->group;
  detail::task_promise_base* child = entry->task;
  detail::intrusive_list::unlink(*entry);
  if (detail::running_loop_slot() == nullptr) {  // discarded at close
    delete entry;
    child->release();
    return;
  }
  if (child->has_exception() && !child->cancelled()) {
    child->mark_retrieved();
    group.errors_.push_back(child->exception());
    if (!group.aborting_) group.shut_down();
  }
  delete entry;
  child->release();
  if (group.children_.empty() && group.joiner_ != nullptr) group.joiner_->wake();
}

CORO_LOOP_COROUTINE_DEFINITION
task<void> task_group::join(std::exception_ptr body_error) {
  if (state_ != state::open) throw invalid_state_error("task_group: joined twice");
  if (loop_->current_task() != parent_) throw invalid_state_error("task_group: join from another task than the body's");
  state_ = state::joining;
  if (body_error != nullptr) {
    if (detail::is_cancellation(body_error)) {
      propagate_cancellation_ = true;
      body_error = nullptr;
    }
    if (!aborting_) abort();
  }
  while (!children_.empty()) {
    join_wait waiting(*this);
    co_await waiting;
  }
  state_ = state::joined;
  // Our own cancel of the body is taken back. Requests beyond those the task
  // had when the group began are someone else's (an outer cancel, a timeout's
  // expiry) and propagate, even when the join's wait, already shutting down,
  // absorbed their delivery (gh-155433); otherwise the cancellation the group
  // caused ends here. Counted from the entry value, not from zero (asyncio),
  // as timeout_scope counts: a group run in cleanup after its task caught a
  // cancel must not raise that old cancel again.
  const int requests = parent_cancel_requested_ ? parent_->uncancel() : parent_->cancelling();
  if (parent_cancel_requested_ || cancelled_) propagate_cancellation_ = requests > cancelling_at_entry_;
  if (body_error != nullptr) errors_.push_back(body_error);
  if (errors_.empty()) {
    if (propagate_cancellation_) throw cancelled_error{};
    co_return;
  }
  // An outer cancel must not be swallowed by the error group: ask again so
  // it is delivered at the next suspension point (asyncio 3.13).
  if (parent_->cancelling() > 0) {
    parent_->uncancel();
    parent_->cancel();
  }
  throw exception_group("unhandled errors in a task_group", std::move(errors_));
}

namespace detail {
template <class T>
struct is_optional : std::false_type {};
template <class T>
struct is_optional<std::optional<T>> : std::true_type {};
}  // namespace detail

namespace detail {
template <class Body>
auto run_with_task_group(Body body, source_site site) -> task<await_result_t<std::invoke_result_t<Body&, task_group&>>> {
  using value_type = await_result_t<std::invoke_result_t<Body&, task_group&>>;
  task_group group(site);
  auto settling = detail::settle(std::ref(body), group);
  outcome<value_type> result = co_await settling;
  auto joining = group.join(result.error());
  co_await joining;  // raises what the body threw, if it must propagate
  if constexpr (std::is_void_v<value_type>) {
    co_return;
  } else {
    // The join returned without an error, so a missing value means the body
    // threw the cancellation of group.cancel(). asyncio's `async with` has no
    // value to lose; here the caller must be able to tell: std::optional says
    // "none", other types have no honest stand-in.
    if (!result.has_value()) {
      if constexpr (detail::is_optional<value_type>::value) {
        co_return std::nullopt;
      } else {
        throw invalid_state_error(
            "with_task_group: cancel() ended the body before it returned a value; give the body a "
            "std::optional or void result");
      }
    }
    co_return detail::unwrap(std::move(result));
  }
}
}  // namespace detail

/// Runs `body(group)` (which returns an awaitable) with a fresh task_group and
/// always joins it, even when the body throws (asyncio's `async with TaskGroup()`).
/// Returns the body's value; throws exception_group or cancelled_error as join does.
/// When group.cancel() ended the body before it returned a value: a std::optional
/// body gives std::nullopt, any other type throws invalid_state_error.
template <class Body>
auto with_task_group(Body body, detail::source_site site = detail::source_site::here()) {
  if constexpr (!std::invocable<Body&, task_group&>) {
    static_assert(detail::always_false<Body>,
                  "with_task_group(body): body must be callable as body(group) with a coro_loop::task_group&, "
                  "e.g. [](coro_loop::task_group& group) -> coro_loop::task<void> { ... }");
  } else if constexpr (!detail::awaitable<std::invoke_result_t<Body&, task_group&>>) {
    static_assert(detail::always_false<Body>,
                  "with_task_group(body): body(group) must return an awaitable, e.g. be a coroutine returning "
                  "coro_loop::task<T>; this one returns void or a plain value");
  } else {
    return detail::run_with_task_group(std::move(body), site);
  }
}

// --- 6.7 async_with ---

namespace detail {
template <class Resource>
concept async_closable = requires(Resource& resource) {
  { resource.aclose() } -> awaitable;
};

template <class Opening, class Body>
auto run_async_with(Opening opening, Body body)
    -> task<await_result_t<std::invoke_result_t<Body&, await_result_t<Opening>&>>> {
  using value_type = await_result_t<std::invoke_result_t<Body&, await_result_t<Opening>&>>;
  auto resource = co_await std::move(opening);
  auto settling = settle(std::ref(body), resource);
  outcome<value_type> result = co_await settling;
  try {
    co_await resource.aclose();
  } catch (...) {
    if (result.has_value() || is_cancellation(std::current_exception())) throw;
  }
  co_return unwrap(std::move(result));
}
}  // namespace detail

/// `async with` for a resource whose cleanup must co_await (a destructor
/// cannot): awaits `opening` for the resource, awaits body(resource), then
/// awaits resource.aclose() on every path: success, error, cancellation
/// (contextlib.aclosing). For cleanup that need not wait, plain RAII is the
/// answer. Differences: C++ keeps one exception, so when both the body and
/// aclose() fail the body's error propagates, unless aclose() was cancelled
/// (a cancellation is never swallowed).
///   auto rows = co_await async_with(open_db(), [](db& conn) { return conn.query("SELECT 1"); });
template <class Opening, class Body>
auto async_with(Opening opening, Body body) {
  if constexpr (!detail::awaitable<Opening>) {
    static_assert(detail::always_false<Opening>,
                  "async_with(opening, body): opening must be awaitable (a task<Resource> that opens the "
                  "resource: call the coroutine, open(), not open)");
  } else if constexpr (std::is_void_v<await_result_t<Opening>>) {
    static_assert(detail::always_false<Opening>,
                  "async_with(opening, body): co_await opening must give the resource; it gives void");
  } else if constexpr (!detail::async_closable<std::remove_cvref_t<await_result_t<Opening>>>) {
    static_assert(detail::always_false<Opening>,
                  "async_with(opening, body): the resource needs a member aclose() returning an awaitable "
                  "(task<void>), which async_with awaits on every path");
  } else if constexpr (!std::invocable<Body&, await_result_t<Opening>&>) {
    static_assert(detail::always_false<Body>,
                  "async_with(opening, body): body must be callable as body(resource&) with what opening gives");
  } else if constexpr (!detail::awaitable<std::invoke_result_t<Body&, await_result_t<Opening>&>>) {
    static_assert(detail::always_false<Body>,
                  "async_with(opening, body): body(resource) must return an awaitable, e.g. be a coroutine "
                  "returning coro_loop::task<T>; this one returns void or a plain value");
  } else {
    return detail::run_async_with(std::move(opening), std::move(body));
  }
}

// ============================================================================
// 7. Synchronisation: event, lock, semaphore, condition, barrier, queues  >>sync
//    Uses 3 and 5 (the suspension protocol). Every wait is FIFO-fair and
//    cancellable; what a waker gives (an item, the lock, a permit) is handed
//    straight to the first waiter, so no newcomer can take it between the
//    wake-up and the waiter's next step; a waiter cancelled in between gives
//    it back to the next one. Waiting allocates nothing.
// ============================================================================

/// Thrown by queue operations after shutdown() (asyncio.QueueShutDown, 3.13).
class queue_shut_down : public std::runtime_error {
 public:
  queue_shut_down() : std::runtime_error("coro_loop::queue_shut_down: the queue was shut down") {}
};
/// Thrown by get_nowait on an empty queue (asyncio.QueueEmpty).
class queue_empty : public std::runtime_error {
 public:
  queue_empty() : std::runtime_error("coro_loop::queue_empty: get_nowait on an empty queue") {}
};
/// Thrown by put_nowait on a full queue (asyncio.QueueFull).
class queue_full : public std::runtime_error {
 public:
  queue_full() : std::runtime_error("coro_loop::queue_full: put_nowait on a full queue") {}
};
/// Thrown by barrier::wait when the barrier is broken or reset (asyncio.BrokenBarrierError).
class broken_barrier_error : public std::runtime_error {
 public:
  broken_barrier_error() : std::runtime_error("coro_loop::broken_barrier_error: the barrier is broken") {}
};

namespace detail {

// A task parked in a primitive's FIFO; lives in the awaiting frame. Whoever
// grants the wait unlinks it and calls grant(); a cancel unlinks it and
// resumes the task with cancelled_error; a frame destroyed mid-wait unlinks it.
// A cancel that reaches the task after the grant, before it resumed, wins:
// the primitive's await_resume gives the grant back (throw_if_cancelled).
class parked_waiter : public list_hook, protected suspension {
 public:
  parked_waiter() noexcept = default;
  // A moved-to waiter starts unlinked (see suspension).
  parked_waiter(parked_waiter&&) noexcept : list_hook(), suspension() {}
  parked_waiter(const parked_waiter&) = delete;
  parked_waiter& operator=(const parked_waiter&) = delete;
  ~parked_waiter() { intrusive_list::unlink(*this); }

  // Links this waiter at the back of `waiters` and suspends; false (do not
  // suspend, await_resume throws) when a cancel was waiting to be delivered.
  // `waiting` is the primitive's wait_kind, made by parking().
  bool park(intrusive_list& waiters, std::coroutine_handle<> caller, const wait_kind& waiting,
            const char* operation = nullptr) {
    if (!suspend(caller, waiting, operation)) return false;
    waiters.push_back(*this);
    return true;
  }
  void grant() noexcept {
    intrusive_list::unlink(*this);
    resume();
  }

  static parked_waiter& from(list_hook& hook) noexcept { return static_cast<parked_waiter&>(hook); }

 protected:
  // A primitive's wait kind: its name and describe, the interrupt shared.
  static constexpr wait_kind parking(const char* operation,
                                     void (*describe)(const cancellable_wait&, wait_report&)) noexcept {
    return {operation, &on_interrupt, describe};
  }
  // "event 0x5568d0 (3 waiting)": the object a primitive's waiter waits on.
  static std::string waited_object(const char* type, const void* object, const std::string& details) {
    return std::string(type) + " " + describe_address(object) + " (" + details + ")";
  }

 private:
  static bool on_interrupt(cancellable_wait* wait) noexcept {
    auto* self = static_cast<parked_waiter*>(wait);
    intrusive_list::unlink(*self);
    self->resume_cancelled();
    return true;
  }
};

inline void grant_all(intrusive_list& waiters) noexcept {
  while (list_hook* hook = waiters.front()) parked_waiter::from(*hook).grant();
}

// What `co_await x.scoped()` returns for a lock or a semaphore: it releases
// on destruction (async with), or earlier with unlock().
template <class Owner>
class [[nodiscard]] release_guard {
 public:
  explicit release_guard(Owner* owner) noexcept : owner_(owner) {}
  release_guard(release_guard&& other) noexcept : owner_(std::exchange(other.owner_, nullptr)) {}
  release_guard& operator=(release_guard&&) = delete;
  ~release_guard() {
    if (owner_ != nullptr) owner_->release();
  }
  void unlock() {
    if (owner_ != nullptr) std::exchange(owner_, nullptr)->release();
  }

 private:
  Owner* owner_;
};

// acquire() of a lock or a semaphore: takes what is free now
// (Owner::take_if_free), else parks in Owner's FIFO; a grant that a cancel
// beat goes on to the next waiter (Owner's own release()). With
// `interruptible` false (condition's re-acquire) a cancel does not end the
// wait: it is delivered at the next suspension point.
template <class Owner>
class acquire_wait : private parked_waiter {
 public:
  explicit acquire_wait(Owner& owner, bool interruptible = true) noexcept : owner_(&owner) {
    if (!interruptible) make_uninterruptible();
  }
  bool await_ready() noexcept { return owner_->take_if_free(); }
  bool await_suspend(std::coroutine_handle<> caller) { return park(owner_->waiters_, caller, waiting); }
  void await_resume() const {
    throw_if_cancelled([this] { owner_->Owner::release(); });
  }

 private:
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const acquire_wait&>(wait);
    // Appended piece by piece: g++ 12 at -O1 warned of an out-of-bounds memcpy (-Warray-bounds, a
    // false positive) in the temporary strings of `std::string(a) + " on " + b`.
    report.text = Owner::acquire_name;
    report.text += " on ";
    report.text += self.owner_->describe_for_waiter();
    if (!self.interruptible()) report.text += ", not cancellable (condition::wait taking its lock back)";
  }
  static constexpr wait_kind waiting = parking(Owner::acquire_name, &describe);
  Owner* owner_;
};

// An acquire whose result is a release_guard.
template <class Owner, class Acquire>
class scoped_acquire : public Acquire {
 public:
  explicit scoped_acquire(Owner& owner) noexcept : Acquire(owner), owner_(&owner) {}
  release_guard<Owner> await_resume() const {
    Acquire::await_resume();
    return release_guard<Owner>(owner_);
  }

 private:
  Owner* owner_;
};

}  // namespace detail

// --- 7.1 event ---

/// asyncio.Event: wait() suspends until set(); set() releases every waiter.
class event {
 public:
  /// Starts clear; is_set() reads the flag. Not copyable: waiting tasks point into it.
  event() noexcept = default;
  event(const event&) = delete;
  event& operator=(const event&) = delete;
  bool is_set() const noexcept { return set_; }
  /// Sets the flag and wakes every waiter (they resume on a later iteration).
  void set() noexcept {
    set_ = true;
    detail::grant_all(waiters_);
  }
  /// Resets the flag: waiters already woken still resume; later wait()s suspend until set().
  void clear() noexcept { set_ = false; }

  class awaiter : private detail::parked_waiter {
   public:
    explicit awaiter(event& owner) noexcept : event_(&owner) {}
    bool await_ready() const noexcept { return event_->set_; }
    bool await_suspend(std::coroutine_handle<> caller) { return park(event_->waiters_, caller, waiting); }
    void await_resume() const { throw_if_cancelled(); }

   private:
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      const event* owner = static_cast<const awaiter&>(wait).event_;
      report.text = "event::wait on " + waited_object("event", owner, std::to_string(owner->waiters_.size()) + " waiting");
    }
    static constexpr detail::wait_kind waiting = parking("event::wait", &describe);
    event* event_;
  };
  /// Waits until the flag is set; returns at once if it is.
  awaiter wait() noexcept { return awaiter(*this); }

 private:
  detail::intrusive_list waiters_;
  bool set_ = false;
};

// --- 7.2 lock ---

/// asyncio.Lock, strictly FIFO: release() hands the lock to the first waiter.
/// Not reentrant. A cancelled acquire never leaves the lock held.
class lock {
 public:
  /// Starts unlocked; locked() is true while a task holds it. Not copyable: waiters point into it.
  lock() noexcept = default;
  lock(const lock&) = delete;
  lock& operator=(const lock&) = delete;
  bool locked() const noexcept { return locked_; }

  /// Releases; the first waiter, if any, now holds the lock. Throws
  /// invalid_state_error when the lock is not held.
  void release() {
    if (!locked_) throw invalid_state_error("lock::release: the lock is not held");
    if (list_hook_front() != nullptr) {
      detail::parked_waiter::from(*list_hook_front()).grant();  // stays locked: ownership moves
    } else {
      locked_ = false;
    }
  }

  /// What acquire() returns.
  using acquire_awaiter = detail::acquire_wait<lock>;
  /// Waits for the lock (co_await lock.acquire(); ... lock.release();).
  acquire_awaiter acquire() noexcept { return acquire_awaiter(*this); }

  /// Holds the lock until destroyed; unlock() releases early.
  using guard = detail::release_guard<lock>;
  /// What scoped() returns; co_await it for a guard.
  using scoped_awaiter = detail::scoped_acquire<lock, acquire_awaiter>;
  /// Acquires and returns a guard that releases (async with lock:).
  scoped_awaiter scoped() noexcept { return scoped_awaiter(*this); }

 private:
  friend class condition;
  friend class detail::acquire_wait<lock>;
  static constexpr const char* acquire_name = "lock::acquire";
  std::string describe_for_waiter() const {
    return "lock " + detail::describe_address(this) + " (" + (locked_ ? "held" : "free") + ", " +
           std::to_string(waiters_.size()) + " waiting)";
  }
  bool take_if_free() noexcept {
    if (locked_ || !waiters_.empty()) return false;
    locked_ = true;
    return true;
  }
  detail::list_hook* list_hook_front() const noexcept { return waiters_.front(); }
  detail::intrusive_list waiters_;
  bool locked_ = false;
};

// --- 7.3 semaphore, bounded_semaphore ---

/// asyncio.Semaphore, strictly FIFO: release() hands its permit to the first
/// waiter. A cancelled acquire never loses a permit.
class semaphore {
 public:
  /// Starts with `value` permits. Not copyable: waiters point into it.
  explicit semaphore(std::size_t value = 1) noexcept : value_(value) {}
  semaphore(const semaphore&) = delete;
  semaphore& operator=(const semaphore&) = delete;
  /// True when an acquire would wait.
  bool locked() const noexcept { return value_ == 0 || !waiters_.empty(); }
  /// Permits free now (0 while tasks wait: a release goes straight to the first waiter).
  std::size_t value() const noexcept { return value_; }

  /// Returns a permit: to the first waiter if any, else to the count.
  void release() {
    if (detail::list_hook* first = waiters_.front()) {
      detail::parked_waiter::from(*first).grant();
    } else {
      ++value_;
    }
  }

  /// What acquire() returns.
  using acquire_awaiter = detail::acquire_wait<semaphore>;
  /// Waits for a permit (co_await sem.acquire(); ... sem.release();).
  acquire_awaiter acquire() noexcept { return acquire_awaiter(*this); }

  /// Holds a permit until destroyed (co_await semaphore.scoped()).
  using guard = detail::release_guard<semaphore>;
  /// scoped() acquires a permit and returns a guard that gives it back (async with sem:).
  using scoped_awaiter = detail::scoped_acquire<semaphore, acquire_awaiter>;
  scoped_awaiter scoped() noexcept { return scoped_awaiter(*this); }

 protected:
  std::size_t value_;
  detail::intrusive_list waiters_;
  // What a task tree calls this semaphore instead of "semaphore 0x…" (the HTTP
  // client's connection slots); the derived class that sets it owns the text.
  const std::string* described_as_ = nullptr;

 private:
  friend class detail::acquire_wait<semaphore>;
  static constexpr const char* acquire_name = "semaphore::acquire";
  std::string describe_for_waiter() const {
    return (described_as_ != nullptr ? *described_as_ : "semaphore " + detail::describe_address(this)) + " (" +
           std::to_string(value_) + " free, " + std::to_string(waiters_.size()) + " waiting)";
  }
  bool take_if_free() noexcept {
    if (value_ == 0 || !waiters_.empty()) return false;
    --value_;
    return true;
  }
};

/// A semaphore that refuses to be released past its initial value
/// (asyncio.BoundedSemaphore): release() then throws invalid_state_error.
class bounded_semaphore : public semaphore {
 public:
  /// Starts with, and never holds more than, `value` permits. release() is not virtual:
  /// called through a semaphore& it is the unchecked one.
  explicit bounded_semaphore(std::size_t value = 1) noexcept : semaphore(value), initial_(value) {}
  /// Returns a permit; throws invalid_state_error when no permit is held.
  void release() {
    // Permits held are initial - value (a hand-off to a waiter keeps the
    // count), so this holds whether or not a task waits.
    if (value_ >= initial_) {
      throw invalid_state_error("bounded_semaphore::release: released more times than acquired");
    }
    semaphore::release();
  }
  /// Guards that release through the checked release() above.
  using guard = detail::release_guard<bounded_semaphore>;
  using scoped_awaiter = detail::scoped_acquire<bounded_semaphore, acquire_awaiter>;
  scoped_awaiter scoped() noexcept { return scoped_awaiter(*this); }

 private:
  std::size_t initial_;
};

// --- 7.4 condition ---

/// asyncio.Condition over a lock (its own, or one given). wait() releases the
/// lock, waits for notify, and re-acquires the lock before returning or
/// throwing, even when cancelled. notify(n) wakes up to n waiters, FIFO.
class condition {
 public:
  /// Over a lock of its own, or over `shared`, which must outlive it. Not copyable.
  condition() noexcept : lock_(&own_lock_) {}
  explicit condition(class lock& shared) noexcept : lock_(&shared) {}
  condition(const condition&) = delete;
  condition& operator=(const condition&) = delete;

  /// The lock's own acquire, release, locked and scoped (async with condition:).
  lock::acquire_awaiter acquire() noexcept { return lock_->acquire(); }
  void release() { lock_->release(); }
  bool locked() const noexcept { return lock_->locked(); }
  lock::scoped_awaiter scoped() noexcept { return lock_->scoped(); }

  /// Waits for a notify; the lock must be held (invalid_state_error otherwise).
  CORO_LOOP_COROUTINE
  task<void> wait() {
    if (!lock_->locked()) throw invalid_state_error("condition::wait: the lock is not held");
    lock_->release();
    bool cancelled = false;
    try {
      notify_awaiter notified(*this);
      co_await notified;
    } catch (const cancelled_error&) {
      cancelled = true;
    }
    // The caller held the lock; it holds it again whatever happened.
    lock::acquire_awaiter reacquire(*lock_, false);
    co_await reacquire;
    if (cancelled) throw cancelled_error{};
  }
  /// Waits until predicate() is true (checked first, then after each notify);
  /// returns its last value. The lock must be held.
  template <class Predicate>
  task<bool> wait_for(Predicate predicate) {
    while (!predicate()) co_await wait();
    co_return true;
  }
  /// Wakes up to `count` waiters (FIFO). The lock must be held.
  void notify(std::size_t count = 1) {
    if (!lock_->locked()) throw invalid_state_error("condition::notify: the lock is not held");
    while (count-- > 0 && wake_first()) {
    }
  }
  /// Wakes every waiter. The lock must be held.
  void notify_all() { notify(static_cast<std::size_t>(-1)); }

 private:
  class notify_awaiter : private detail::parked_waiter {
   public:
    explicit notify_awaiter(condition& owner) noexcept : condition_(&owner) {}
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> caller) { return park(condition_->waiters_, caller, waiting); }
    void await_resume() const {
      // Notified, then cancelled before it resumed: the notification is not
      // lost, the next waiter gets it (asyncio 3.13).
      throw_if_cancelled([this] { condition_->wake_first(); });
    }

   private:
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      const condition* owner = static_cast<const notify_awaiter&>(wait).condition_;
      report.text = "condition::wait on " +
                    waited_object("condition", owner, std::to_string(owner->waiters_.size()) + " waiting");
    }
    static constexpr detail::wait_kind waiting = parking("condition::wait", &describe);
    condition* condition_;
  };
  bool wake_first() noexcept {
    detail::list_hook* first = waiters_.front();
    if (first == nullptr) return false;
    detail::parked_waiter::from(*first).grant();
    return true;
  }
  class lock own_lock_;
  class lock* lock_;
  detail::intrusive_list waiters_;
};

// --- 7.5 barrier ---

/// asyncio.Barrier (3.11): wait() returns when `parties` tasks are waiting,
/// each with a distinct index in 0..parties-1 (arrival order). abort() breaks
/// it (waiters and later callers get broken_barrier_error); reset() wakes the
/// waiters with broken_barrier_error and makes it usable again once they left.
class barrier {
 public:
  /// Throws std::invalid_argument when `parties` is 0. Not copyable: waiters point into it.
  explicit barrier(std::size_t parties) : parties_(parties) {
    if (parties == 0) throw std::invalid_argument("barrier: parties must be > 0");
  }
  barrier(const barrier&) = delete;
  barrier& operator=(const barrier&) = delete;
  std::size_t parties() const noexcept { return parties_; }
  /// Tasks waiting for the barrier to fill.
  std::size_t n_waiting() const noexcept { return state_ == state::filling ? count_ : 0; }
  /// True after abort(), until reset().
  bool broken() const noexcept { return state_ == state::broken; }

  /// Waits until `parties` tasks wait; returns this task's arrival index. Throws
  /// broken_barrier_error when broken, or reset meanwhile; a cancelled waiter stops counting.
  CORO_LOOP_COROUTINE
  task<std::size_t> wait() {
    // Tasks arriving while the previous round drains or resets wait for it.
    while (state_ == state::draining || state_ == state::resetting) {
      state_awaiter changed(*this);
      co_await changed;
    }
    if (state_ == state::broken) throw broken_barrier_error();
    const std::size_t index = count_++;
    leave_on_exit leave{this};
    if (index + 1 == parties_) {
      state_ = state::draining;
      detail::grant_all(waiters_);
      co_return index;
    }
    while (state_ == state::filling) {
      state_awaiter changed(*this);
      co_await changed;  // a cancel here leaves the count one lower, as asyncio
    }
    if (state_ == state::broken || state_ == state::resetting) throw broken_barrier_error();
    co_return index;
  }
  /// Breaks the barrier for good: current and later waits throw broken_barrier_error.
  void abort() noexcept {
    state_ = state::broken;
    detail::grant_all(waiters_);
  }
  /// Returns to the empty state; tasks waiting now get broken_barrier_error.
  void reset() noexcept {
    if (count_ > 0) {
      if (state_ != state::resetting) {
        state_ = state::resetting;
        detail::grant_all(waiters_);
      }
    } else {
      state_ = state::filling;
    }
  }

 private:
  enum class state : std::uint8_t { filling, draining, resetting, broken };
  class state_awaiter : private detail::parked_waiter {
   public:
    explicit state_awaiter(barrier& owner) noexcept : barrier_(&owner) {}
    bool await_ready() const noexcept { return false; }
    bool await_suspend(std::coroutine_handle<> caller) { return park(barrier_->waiters_, caller, waiting); }
    void await_resume() const { throw_if_cancelled(); }

   private:
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      const barrier* owner = static_cast<const state_awaiter&>(wait).barrier_;
      static constexpr const char* states[] = {"filling", "draining", "resetting", "broken"};
      report.text = "barrier::wait on " +
                    waited_object("barrier", owner,
                                  std::to_string(owner->count_) + " of " + std::to_string(owner->parties_) +
                                      " arrived, " + states[static_cast<int>(owner->state_)]);
    }
    static constexpr detail::wait_kind waiting = parking("barrier::wait", &describe);
    barrier* barrier_;
  };
  // A waiting task leaves the round however its wait() ends. A member, not a class local to the
  // coroutine: g++ 12 crashes mangling a coroutine's local class read from a precompiled header.
  struct leave_on_exit {
    barrier* self;
    ~leave_on_exit() { self->leave(); }
  };
  // The last task out of a drained or reset round opens the next one.
  void leave() noexcept {
    --count_;
    if (count_ == 0 && (state_ == state::draining || state_ == state::resetting)) {
      state_ = state::filling;
      detail::grant_all(waiters_);
    }
  }
  std::size_t parties_;
  std::size_t count_ = 0;
  state state_ = state::filling;
  detail::intrusive_list waiters_;
};

// --- 7.6 queues ---

namespace detail {

// The three orders a queue can keep its items in. Each offers push (a put),
// push_next (an item that must come out next: one handed to a getter that
// never took it), take, size and clear.
// First in, first out (a deque, taken from the front), or last in, first out
// (a vector, taken from the back).
template <class T, bool FirstInFirstOut>
class sequence_items {
 public:
  void push(T&& item) { items_.push_back(std::move(item)); }
  void push_next(T&& item) {
    if constexpr (FirstInFirstOut) {
      items_.push_front(std::move(item));
    } else {
      items_.push_back(std::move(item));
    }
  }
  T take() {
    if constexpr (FirstInFirstOut) {
      T item = std::move(items_.front());
      items_.pop_front();
      return item;
    } else {
      T item = std::move(items_.back());
      items_.pop_back();
      return item;
    }
  }
  std::size_t size() const noexcept { return items_.size(); }
  void clear() noexcept { items_.clear(); }

 private:
  std::conditional_t<FirstInFirstOut, std::deque<T>, std::vector<T>> items_;
};
template <class T>
using fifo_items = sequence_items<T, true>;
template <class T>
using lifo_items = sequence_items<T, false>;

// A binary heap on a vector, so a move-only item can be moved out of the top
// (std::priority_queue only exposes it as const).
template <class T, class Compare>
class priority_items {
 public:
  void push(T&& item) {
    items_.push_back(std::move(item));
    std::push_heap(items_.begin(), items_.end(), later_);
  }
  void push_next(T&& item) { push(std::move(item)); }
  T take() {
    std::pop_heap(items_.begin(), items_.end(), later_);
    T item = std::move(items_.back());
    items_.pop_back();
    return item;
  }
  std::size_t size() const noexcept { return items_.size(); }
  void clear() noexcept { items_.clear(); }

 private:
  // std::push_heap keeps the largest on top; the queue serves the smallest.
  struct reversed {
    Compare less;
    bool operator()(const T& a, const T& b) const { return less(b, a); }
  } later_{};
  std::vector<T> items_;
};

}  // namespace detail

/// asyncio.Queue with a choice of order (queue, lifo_queue, priority_queue
/// below). maxsize 0 means unbounded. put/get suspend when full/empty and are
/// served first come, first served; a cancelled get loses no item and a
/// cancelled put inserts nothing. Move-only items work. Loop thread only.
template <class T, class Items>
class basic_queue {
  static_assert(std::is_object_v<T> && !std::is_array_v<T>,
                "queue<T>: T must be an object type, not a reference, void, a function or an array (for a "
                "reference, use a pointer or std::reference_wrapper<T>)");
  static_assert(!std::is_const_v<T> && !std::is_volatile_v<T>,
                "queue<T>: T must not be const or volatile: get() moves the item out of the queue");
  static_assert(std::is_move_constructible_v<T> || !std::is_object_v<T>,
                "queue<T>: T must be move-constructible: put() and get() move items in and out");

 public:
  /// `maxsize` 0: unbounded. Not copyable: waiters point into it. Tasks still waiting when it
  /// is destroyed are never resumed.
  explicit basic_queue(std::size_t maxsize = 0) noexcept : maxsize_(maxsize) {}
  basic_queue(const basic_queue&) = delete;
  basic_queue& operator=(const basic_queue&) = delete;
  ~basic_queue() {
    // Waiters left on a dying queue stay suspended (their frames die with
    // their loop); they must not reach back into this object.
    for (detail::intrusive_list* waiters : {&getters_, &putters_, &joiners_}) {
      while (detail::list_hook* hook = waiters->pop_front()) (void)hook;
    }
  }

  /// asyncio's qsize, maxsize, empty and full; is_shut_down() is true after shutdown().
  std::size_t qsize() const noexcept { return items_.size(); }
  std::size_t maxsize() const noexcept { return maxsize_; }
  bool empty() const noexcept { return items_.size() == 0; }
  bool full() const noexcept { return maxsize_ > 0 && items_.size() >= maxsize_; }
  bool is_shut_down() const noexcept { return shut_down_; }

  /// What put(), get() and join() return; every co_await of them is cancellable.
  class put_awaiter;
  class get_awaiter;
  class join_awaiter;

  /// Puts `item`, waiting while the queue is full. Throws queue_shut_down.
  put_awaiter put(T item) { return put_awaiter(*this, std::move(item)); }
  /// Takes the next item, waiting while the queue is empty. Throws
  /// queue_shut_down once shut down and drained (at once if immediate).
  get_awaiter get() noexcept { return get_awaiter(*this); }

  /// Puts without waiting; throws queue_full or queue_shut_down.
  void put_nowait(T item) {
    if (!put_if_room(item)) throw queue_full();
  }
  /// Takes without waiting; throws queue_empty or queue_shut_down.
  T get_nowait() {
    std::optional<T> item = try_get();
    if (!item) throw queue_empty();
    return std::move(*item);
  }
  /// Puts if there is room: true if put, false if full (the item stays with
  /// the caller). Throws queue_shut_down after shutdown().
  bool try_put(T&& item) { return put_if_room(item); }
  /// Copies `item` in if there is room.
  bool try_put(const T& item)
    requires std::copy_constructible<T>
  {
    T copy(item);
    return put_if_room(copy);
  }
  /// Takes an item if there is one. Throws queue_shut_down when shut down and empty.
  std::optional<T> try_get() {
    if (items_.size() == 0) {
      if (shut_down_) throw queue_shut_down();
      return std::nullopt;
    }
    std::optional<T> item(items_.take());
    refill_from_putter();
    return item;
  }

  /// Marks one item processed; join() returns when every item put was.
  /// Throws invalid_state_error when called more often than items were put.
  void task_done() {
    if (unfinished_ == 0) throw invalid_state_error("queue::task_done: called more times than items were put");
    if (--unfinished_ == 0) detail::grant_all(joiners_);
  }
  /// Waits until every item put has been marked task_done.
  join_awaiter join() noexcept { return join_awaiter(*this); }

  /// Python 3.13: later puts throw queue_shut_down and so do the waiting ones;
  /// getters drain the items first, unless `immediate`, which drops them (and
  /// their task_done debt) so waiting and later getters throw at once.
  void shutdown(bool immediate = false) {
    shut_down_ = true;
    if (immediate) {
      const std::size_t dropped = items_.size();
      items_.clear();
      unfinished_ = unfinished_ > dropped ? unfinished_ - dropped : 0;
      if (unfinished_ == 0) detail::grant_all(joiners_);
    }
    detail::grant_all(getters_);  // the queue is empty whenever getters wait
    detail::grant_all(putters_);
  }

  class put_awaiter : private detail::parked_waiter {
   public:
    put_awaiter(basic_queue& owner, T&& item) : queue_(&owner), item_(std::move(item)) {}
    put_awaiter(put_awaiter&& other) noexcept(std::is_nothrow_move_constructible_v<T>)
        : queue_(other.queue_), item_(std::move(other.item_)) {}
    put_awaiter& operator=(put_awaiter&&) = delete;
    CORO_LOOP_ALWAYS_INLINE bool await_ready() {
      if (queue_->shut_down_) return true;
      if (queue_->give_to_getter(*item_)) {
        item_.reset();
        return true;
      }
      if (queue_->full() || !queue_->putters_.empty()) return false;
      queue_->items_.push(std::move(*item_));
      ++queue_->unfinished_;
      item_.reset();
      return true;
    }
    bool await_suspend(std::coroutine_handle<> caller) { return park(queue_->putters_, caller, waiting); }
    void await_resume() const {
      // Granted means the queue took the item (a getter may have it already):
      // the put has happened, so a later cancel meets the next suspension.
      throw_if_interrupted();
      if (item_.has_value()) throw queue_shut_down();  // woken by shutdown, not by room
    }

   private:
    friend class basic_queue;
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      report.text = "queue::put on " + static_cast<const put_awaiter&>(wait).queue_->describe_for_waiter();
    }
    static constexpr detail::wait_kind waiting = parking("queue::put", &describe);
    basic_queue* queue_;
    std::optional<T> item_;  // ours until the queue takes it
  };

  class get_awaiter : private detail::parked_waiter {
   public:
    explicit get_awaiter(basic_queue& owner) noexcept : queue_(&owner) {}
    get_awaiter(get_awaiter&& other) noexcept : queue_(other.queue_) {}
    get_awaiter& operator=(get_awaiter&&) = delete;
    ~get_awaiter() {
      // Handed an item but never resumed to take it (the frame is being
      // destroyed): the item goes back to the front of the queue.
      if (item_.has_value() && queue_ != nullptr && linked() == false) queue_->return_item(std::move(*item_));
    }
    bool await_ready() const noexcept { return queue_->items_.size() != 0 || queue_->shut_down_; }
    bool await_suspend(std::coroutine_handle<> caller) { return park(queue_->getters_, caller, waiting); }
    T await_resume() {
      throw_if_cancelled([this] {
        if (!item_.has_value()) return;
        queue_->return_item(std::move(*item_));  // to the next getter, or first in line
        item_.reset();
      });
      if (item_.has_value()) {
        T item = std::move(*item_);
        item_.reset();
        return item;
      }
      if (queue_->items_.size() == 0) throw queue_shut_down();
      T item = queue_->items_.take();
      queue_->refill_from_putter();
      return item;
    }

   private:
    friend class basic_queue;
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      report.text = "queue::get on " + static_cast<const get_awaiter&>(wait).queue_->describe_for_waiter();
    }
    static constexpr detail::wait_kind waiting = parking("queue::get", &describe);
    basic_queue* queue_;
    std::optional<T> item_;  // an item handed over by a put while we waited
  };

  class join_awaiter : private detail::parked_waiter {
   public:
    explicit join_awaiter(basic_queue& owner) noexcept : queue_(&owner) {}
    bool await_ready() const noexcept { return queue_->unfinished_ == 0; }
    bool await_suspend(std::coroutine_handle<> caller) { return park(queue_->joiners_, caller, waiting); }
    void await_resume() const { throw_if_cancelled(); }

   private:
    static void describe(const detail::cancellable_wait& wait, detail::wait_report& report) {
      const basic_queue* owner = static_cast<const join_awaiter&>(wait).queue_;
      report.text = "queue::join on queue " + detail::describe_address(owner) + " (" +
                    std::to_string(owner->unfinished_) + " items not task_done)";
    }
    static constexpr detail::wait_kind waiting = parking("queue::join", &describe);
    basic_queue* queue_;
  };

 private:
  // What a task tree says of the queue a task waits on.
  std::string describe_for_waiter() const {
    std::string text = "queue " + detail::describe_address(this) + " (" + std::to_string(items_.size());
    if (maxsize_ > 0) text += " of " + std::to_string(maxsize_);
    text += items_.size() == 1 && maxsize_ == 0 ? " item, " : " items, ";
    const std::size_t getters = getters_.size();
    const std::size_t putters = putters_.size();
    text += std::to_string(getters) + (getters == 1 ? " getter" : " getters");
    if (putters > 0) text += ", " + std::to_string(putters) + (putters == 1 ? " putter" : " putters");
    return text + (shut_down_ ? ", shut down)" : ")");
  }

  // Moves from `item` only when it is put.
  bool put_if_room(T& item) {
    if (shut_down_) throw queue_shut_down();
    if (give_to_getter(item)) return true;
    if (full()) return false;
    items_.push(std::move(item));
    ++unfinished_;
    return true;
  }
  // A waiting getter takes `item` directly: no other task can take it first.
  bool give_to_getter(T& item) {
    detail::list_hook* first = getters_.front();
    if (first == nullptr) return false;
    auto& getter = static_cast<get_awaiter&>(detail::parked_waiter::from(*first));
    getter.item_.emplace(std::move(item));
    ++unfinished_;
    getter.grant();
    return true;
  }
  // An item left: the first waiting putter's item takes its place.
  void refill_from_putter() {
    detail::list_hook* first = putters_.front();
    if (first == nullptr || full()) return;
    auto& putter = static_cast<put_awaiter&>(detail::parked_waiter::from(*first));
    items_.push(std::move(*putter.item_));
    putter.item_.reset();
    ++unfinished_;
    putter.grant();
  }
  void return_item(T&& item) {
    if (!give_to_getter(item)) {
      items_.push_next(std::move(item));
      return;
    }
    --unfinished_;  // give_to_getter counted it as a new put
  }

  Items items_;
  std::size_t maxsize_;
  std::size_t unfinished_ = 0;  // put and not yet task_done
  detail::intrusive_list getters_;
  detail::intrusive_list putters_;
  detail::intrusive_list joiners_;
  bool shut_down_ = false;
};

/// asyncio.Queue: first in, first out.
template <class T>
using queue = basic_queue<T, detail::fifo_items<T>>;
/// asyncio.LifoQueue: last in, first out.
template <class T>
using lifo_queue = basic_queue<T, detail::lifo_items<T>>;
/// asyncio.PriorityQueue: smallest first by Compare (std::less: the lowest value).
template <class T, class Compare = std::less<T>>
using priority_queue = basic_queue<T, detail::priority_items<T, Compare>>;

// ============================================================================
// 8. Executors: thread_pool, to_thread, run_in_executor,
//    run_coroutine_threadsafe  >>exec
//    Uses 3 (the loop's inbox), 5 (tasks) and 6 (outcome). In C++ threads run in
//    parallel, so this pool serves asyncio's ThreadPoolExecutor and
//    ProcessPoolExecutor alike.
// ============================================================================

namespace detail {

// One unit of work for a thread_pool. Its state word is the hand-off point
// between the worker and whoever waits for the job (see executor_job).
class pool_job {
 public:
  enum state_value : int {
    queued,     // in the pool's queue; may still be removed
    running,    // a worker took it
    completed,  // ran; its completion is on its way to the waiter
    abandoned,  // the waiter left while it ran: the worker deletes it
    dropped,    // removed from the queue unrun (cancel, or shutdown with cancel_pending)
  };
  pool_job* prev_job = nullptr;
  pool_job* next_job = nullptr;
  std::atomic<int> state{queued};
  // When a worker took it: written before `state` becomes running, so whoever
  // reads running (acquire) may read it (a task tree: "running for 1.2 s").
  time_point started{};
  // Worker thread: run the work and deliver (or delete the job if abandoned).
  void (*execute)(pool_job* self) noexcept = nullptr;
  // Any thread, under the pool's lock released: the job will never run.
  void (*drop)(pool_job* self) noexcept = nullptr;
};

}  // namespace detail

/// A pool of worker threads with a FIFO job queue (concurrent.futures'
/// ThreadPoolExecutor). Workers start on demand up to `max_workers`.
/// submit() and the awaitables below may be used from any thread.
class thread_pool {
 public:
  /// Throws std::invalid_argument when max_workers is 0.
  explicit thread_pool(std::size_t max_workers) : max_workers_(max_workers) {
    if (max_workers == 0) throw std::invalid_argument("thread_pool: max_workers must be > 0");
  }
  /// Not copyable: its workers and the awaiting tasks point at it.
  thread_pool(const thread_pool&) = delete;
  thread_pool& operator=(const thread_pool&) = delete;
  /// Shuts down: waits for every queued job to run, then joins the workers.
  ~thread_pool() { shutdown(true, false); }

  /// The most worker threads it starts (on demand, never more).
  std::size_t max_workers() const noexcept { return max_workers_; }
  /// Jobs queued and not yet taken by a worker.
  std::size_t queued() const {
    std::lock_guard<std::mutex> guard(mutex_);
    return queued_count_;
  }

  /// Refuses new jobs; with cancel_pending, drops the queued ones (their
  /// awaiters get cancelled_error, their futures a broken promise); with
  /// wait, returns once the workers have finished and are joined. Idempotent.
  void shutdown(bool wait = true, bool cancel_pending = false) {
    std::vector<detail::pool_job*> dropped;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      shutting_down_ = true;
      if (cancel_pending) {
        while (detail::pool_job* job = pop_front_locked()) {
          job->state.store(detail::pool_job::dropped, std::memory_order_release);
          dropped.push_back(job);
        }
      }
    }
    work_available_.notify_all();
    for (detail::pool_job* job : dropped) job->drop(job);
    if (!wait) return;
    std::vector<std::thread> workers;
    {
      std::lock_guard<std::mutex> guard(mutex_);
      workers.swap(workers_);
    }
    for (std::thread& worker : workers) {
      if (worker.get_id() == std::this_thread::get_id()) {
        worker.detach();  // shutdown from one of our own jobs: cannot join ourselves
      } else if (worker.joinable()) {
        worker.join();
      }
    }
  }

  /// Any thread: runs `callable(args...)` on a worker; the std::future holds
  /// its value or exception. Throws invalid_state_error after shutdown.
  template <class Callable, class... Args>
  auto submit(Callable&& callable, Args&&... args)
      -> std::future<std::invoke_result_t<std::decay_t<Callable>, std::decay_t<Args>...>>;

  // --- for the library: queue a job; true if removed before it started ---
  /// Any thread. Throws invalid_state_error after shutdown(); may start a worker.
  void enqueue(detail::pool_job& job) {
    std::unique_lock<std::mutex> guard(mutex_);
    if (shutting_down_) throw invalid_state_error("thread_pool: submit after shutdown");
    job.state.store(detail::pool_job::queued, std::memory_order_relaxed);
    job.prev_job = tail_;
    job.next_job = nullptr;
    (tail_ != nullptr ? tail_->next_job : head_) = &job;
    tail_ = &job;
    ++queued_count_;
    // One wake-up in flight at a time: the worker it wakes passes the baton
    // on if more jobs wait (see work()). Waking one sleeper per job of a burst
    // had them all fight over mutex_ for jobs the first could have run.
    if (idle_workers_ > wakeups_pending_) {
      if (wakeups_pending_ == 0) wake_one_locked(guard);
    } else if (workers_.size() < max_workers_) {
      try {
        workers_.emplace_back([this] { work(); });
      } catch (...) {
        // No new thread: the workers already running will take the job. With
        // none, it must not stay queued, since the caller frees it when we throw.
        if (!workers_.empty()) return;
        unlink_locked(job);
        throw;
      }
    }
  }
  /// Any thread: true when `job` was still queued (it is then dropped unrun).
  bool try_remove(detail::pool_job& job) noexcept {
    std::lock_guard<std::mutex> guard(mutex_);
    if (job.state.load(std::memory_order_relaxed) != detail::pool_job::queued) return false;
    unlink_locked(job);
    job.state.store(detail::pool_job::dropped, std::memory_order_relaxed);
    return true;
  }

 private:
  detail::pool_job* pop_front_locked() noexcept {
    detail::pool_job* job = head_;
    if (job != nullptr) unlink_locked(*job);
    return job;
  }
  void unlink_locked(detail::pool_job& job) noexcept {
    (job.prev_job != nullptr ? job.prev_job->next_job : head_) = job.next_job;
    (job.next_job != nullptr ? job.next_job->prev_job : tail_) = job.prev_job;
    job.prev_job = job.next_job = nullptr;
    --queued_count_;
  }
  // Called with mutex_ held; returns with it released.
  void wake_one_locked(std::unique_lock<std::mutex>& guard) noexcept {
    ++wakeups_pending_;
    guard.unlock();
    work_available_.notify_one();
  }
  void work() {
    std::unique_lock<std::mutex> guard(mutex_);
    for (;;) {
      while (head_ == nullptr && !shutting_down_) {
        ++idle_workers_;
        work_available_.wait(guard);
        --idle_workers_;
        if (wakeups_pending_ > 0) --wakeups_pending_;
      }
      detail::pool_job* job = pop_front_locked();
      if (job == nullptr) return;  // shutting down and drained
      job->started = clock::now();
      job->state.store(detail::pool_job::running, std::memory_order_release);
      if (head_ != nullptr && idle_workers_ > 0 && wakeups_pending_ == 0) {
        wake_one_locked(guard);  // more jobs wait: one more worker, each in turn
      } else {
        guard.unlock();
      }
      job->execute(job);
      guard.lock();
    }
  }

  mutable std::mutex mutex_;
  std::condition_variable work_available_;
  detail::pool_job* head_ = nullptr;  // guarded by mutex_, as everything below
  detail::pool_job* tail_ = nullptr;
  std::size_t queued_count_ = 0;
  std::size_t idle_workers_ = 0;
  std::size_t wakeups_pending_ = 0;  // notified workers that have not taken the mutex back yet
  std::vector<std::thread> workers_;
  const std::size_t max_workers_;
  bool shutting_down_ = false;
};

namespace detail {

// A job whose outcome goes to a std::promise (thread_pool::submit).
template <class Result, class Work>
class future_job final : public pool_job {
 public:
  explicit future_job(Work work) : work_(std::move(work)) {
    execute = [](pool_job* job) noexcept {
      auto* self = static_cast<future_job*>(job);
      try {
        if constexpr (std::is_void_v<Result>) {
          self->work_();
          self->promise_.set_value();
        } else {
          self->promise_.set_value(self->work_());
        }
      } catch (...) {
        self->promise_.set_exception(std::current_exception());
      }
      delete self;
    };
    drop = [](pool_job* job) noexcept { delete static_cast<future_job*>(job); };  // the future sees broken_promise
  }
  std::future<Result> future() { return promise_.get_future(); }

 private:
  Work work_;
  std::promise<Result> promise_;
};

// A job awaited by a task. Ownership moves with the state word:
//   queued / running / completed: owned by the awaiter (it frees the job);
//   abandoned: owned by the worker (the awaiter left while it ran).
// The completion crosses back to the loop through its inbox, as a ready node.
template <class Result, class Work>
class executor_job final : public pool_job, public ready_node {
 public:
  class awaiter;

  executor_job(Work work, std::shared_ptr<loop_inbox> inbox) : work_(std::move(work)), inbox_(std::move(inbox)) {
    execute = &run_on_worker;
    drop = &drop_unrun;
    run = &deliver_on_loop;
  }

 private:
  static void run_on_worker(pool_job* job) noexcept {
    auto* self = static_cast<executor_job*>(job);
    try {
      if constexpr (std::is_void_v<Result>) {
        self->work_();
        self->outcome_.emplace(std::monostate{});
      } else {
        self->outcome_.emplace(self->work_());
      }
    } catch (...) {
      self->outcome_.emplace(std::current_exception());
    }
    self->finish_on_worker();
  }
  static void drop_unrun(pool_job* job) noexcept {
    auto* self = static_cast<executor_job*>(job);
    self->dropped_by_pool_ = true;
    self->finish_on_worker();
  }
  void finish_on_worker() noexcept {
    int expected = state.load(std::memory_order_acquire);
    if (expected == abandoned) {
      delete this;
      return;
    }
    if (expected == running &&
        !state.compare_exchange_strong(expected, completed, std::memory_order_acq_rel)) {
      delete this;  // abandoned meanwhile
      return;
    }
    // The awaiter stays until this node has been delivered: it only
    // abandons a running job, and this one is completed (or dropped unrun).
    if (!inbox_->post(*this)) delete this;  // the loop closed: nobody is waiting
  }
  static void deliver_on_loop(ready_node* node) noexcept;

  Work work_;
  std::shared_ptr<loop_inbox> inbox_;
  std::optional<outcome<Result>> outcome_;  // set by the worker that ran it
  awaiter* awaiter_ = nullptr;  // loop thread only; null once the awaiter is gone
  bool dropped_by_pool_ = false;
};

// The pool of to_thread, made on first use (a task tree names its jobs as to_thread's).
CORO_LOOP_NOINLINE inline thread_pool& default_pool() {
  static thread_pool pool(std::min<std::size_t>(32, std::max(1u, std::thread::hardware_concurrency()) + 4));
  return pool;
}

template <class Result, class Work>
class executor_job<Result, Work>::awaiter : private suspension {
 public:
  awaiter(thread_pool& pool, Work work)
      : pool_(&pool), job_(new executor_job(std::move(work), running_core().inbox())) {}
  awaiter(awaiter&& other) noexcept : suspension(), pool_(other.pool_), job_(std::exchange(other.job_, nullptr)) {}
  awaiter& operator=(awaiter&&) = delete;
  ~awaiter() { leave(); }

  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting)) return false;
    job_->awaiter_ = this;
    try {
      pool_->enqueue(*job_);  // a worker may finish it at once, but the
                              // completion only runs on this thread, later
    } catch (...) {
      not_suspending();  // refused (shut down): nothing to wait for
      throw;
    }
    submitted_ = true;
    return true;
  }
  // A cancel after the value was delivered returns it (the work is done) and
  // meets the next suspension point.
  Result await_resume() {
    throw_if_interrupted();
    if (job_->dropped_by_pool_) throw cancelled_error{};
    return unwrap(std::move(*job_->outcome_));
  }

 private:
  friend class executor_job;
  void on_complete() noexcept {
    delivered_ = true;
    if (cancel_when_delivered_) {
      resume_cancelled();
    } else {
      resume();
    }
  }
  // Cancel: a queued job leaves the queue; a running one is abandoned to its
  // worker (the result will be dropped); a completed one is about to be
  // delivered, so we wait for that and then report the cancellation.
  static bool on_interrupt(cancellable_wait* wait) noexcept {
    auto* self = static_cast<awaiter*>(wait);
    if (self->detach_from_job()) {
      self->resume_cancelled();
    } else {
      self->cancel_when_delivered_ = true;  // its completion is in flight: on_complete resumes us
    }
    return true;
  }
  // True when the job no longer concerns us (removed or abandoned).
  bool detach_from_job() noexcept {
    if (pool_->try_remove(*job_)) {
      job_->awaiter_ = nullptr;
      return true;
    }
    int expected = running;
    if (job_->state.compare_exchange_strong(expected, abandoned, std::memory_order_acq_rel)) {
      job_ = nullptr;  // the worker deletes it
      return true;
    }
    return false;
  }
  void leave() noexcept {
    if (job_ == nullptr) return;
    if (!submitted_ || delivered_) {
      delete job_;
      return;
    }
    if (cancelled()) {  // removed from the queue: ours to free
      delete job_;
      return;
    }
    if (detach_from_job()) {
      delete job_;  // null when abandoned: then this deletes nothing
      return;
    }
    job_->awaiter_ = nullptr;  // completed, delivery in flight: it frees itself
  }
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const awaiter&>(wait);
    report.text = self.pool_ == &default_pool() ? "to_thread job"
                                                : "run_in_executor job on thread_pool " + describe_address(self.pool_);
    if (self.job_ == nullptr) {
      report.text += ", cancelled: its worker finishes it and drops the result";
      return;
    }
    switch (self.job_->state.load(std::memory_order_acquire)) {
      case queued:
        report.text += " queued (" + std::to_string(self.pool_->queued()) + " jobs queued in all)";
        break;
      case running:
        report.text += " running for " + describe_duration(report.now - self.job_->started);
        break;
      default:
        report.text += " done, its result on its way";
    }
    if (self.cancel_when_delivered_) report.text += "; cancelled";
  }
  static constexpr wait_kind waiting{"to_thread", &on_interrupt, &describe};

  // The flags first: they fill the protocol's tail.
  bool submitted_ = false;
  bool delivered_ = false;
  bool cancel_when_delivered_ = false;
  thread_pool* pool_;
  executor_job* job_;
};

template <class Result, class Work>
void executor_job<Result, Work>::deliver_on_loop(ready_node* node) noexcept {
  auto* self = static_cast<executor_job*>(node);
  if (self->awaiter_ != nullptr && running_loop_slot() != nullptr) {
    self->awaiter_->on_complete();
  } else if (self->awaiter_ == nullptr) {
    delete self;  // its awaiter left while it was in flight
  }
}

// The callable and its arguments, moved into one object a worker can call.
template <class Callable, class... Args>
auto bind_work(Callable&& callable, Args&&... args) {
  return [callable = std::forward<Callable>(callable),
          ... args = std::forward<Args>(args)]() mutable -> decltype(auto) {
    return std::invoke(std::move(callable), std::move(args)...);  // runs once: move-only arguments work
  };
}

}  // namespace detail

template <class Callable, class... Args>
auto thread_pool::submit(Callable&& callable, Args&&... args)
    -> std::future<std::invoke_result_t<std::decay_t<Callable>, std::decay_t<Args>...>> {
  using result_type = std::invoke_result_t<std::decay_t<Callable>, std::decay_t<Args>...>;
  auto work = detail::bind_work(std::forward<Callable>(callable), std::forward<Args>(args)...);
  auto job = std::make_unique<detail::future_job<result_type, decltype(work)>>(std::move(work));
  std::future<result_type> future = job->future();
  enqueue(*job);
  job.release();  // the pool owns it now
  return future;
}

/// Runs `callable(args...)` on `pool` and awaits its value, which (or whose
/// exception) is delivered on the loop's thread through its wake-up, never by
/// polling. Cancelling the awaiting task removes a job not yet started; a
/// running job finishes on its worker, its result dropped, while the awaiter
/// gets cancelled_error at once.
template <class Callable, class... Args>
auto run_in_executor(thread_pool& pool, Callable&& callable, Args&&... args) {
  if constexpr (!std::invocable<std::decay_t<Callable>, std::decay_t<Args>...>) {
    static_assert(detail::always_false<Callable, Args...>,
                  "run_in_executor(pool, fn, args...) / to_thread(fn, args...): fn is not callable with these "
                  "arguments (each is copied or moved to the worker thread, then fn(args...) runs there)");
  } else if constexpr (detail::awaitable<std::invoke_result_t<std::decay_t<Callable>, std::decay_t<Args>...>>) {
    static_assert(detail::always_false<Callable, Args...>,
                  "run_in_executor(pool, fn, args...) / to_thread(fn, args...): fn returns an awaitable (a "
                  "coroutine?); a worker thread runs plain functions: co_await the coroutine, or create_task it");
  } else {
    using result_type = std::invoke_result_t<std::decay_t<Callable>, std::decay_t<Args>...>;
    auto work = detail::bind_work(std::forward<Callable>(callable), std::forward<Args>(args)...);
    using job_type = detail::executor_job<result_type, decltype(work)>;
    return typename job_type::awaiter(pool, std::move(work));
  }
}

/// run_in_executor on the default pool, made on first use with
/// min(32, cores + 4) workers as Python's (asyncio.to_thread).
template <class Callable, class... Args>
auto to_thread(Callable&& callable, Args&&... args) {
  return run_in_executor(detail::default_pool(), std::forward<Callable>(callable), std::forward<Args>(args)...);
}

namespace detail {
template <class T, class Awaitable>
class threadsafe_start;
}  // namespace detail

/// The other side of run_coroutine_threadsafe: a future a plain thread can
/// block on (concurrent.futures.Future). Copyable; every member is thread-safe.
template <class T>
class concurrent_future {
 public:
  /// An empty future: its members throw invalid_state_error (cancel() is false).
  concurrent_future() = default;
  /// Blocks until done; returns the value or rethrows (cancelled_error when cancelled).
  detail::stored_value_t<T> get() const {
    check("get");
    std::unique_lock<std::mutex> guard(state_->mutex);
    state_->finished.wait(guard, [&] { return state_->done; });
    return state_->result->value();  // a copy: get() may be called again
  }
  /// Waits up to `limit`; true when done.
  bool wait_for(duration limit) const {
    check("wait_for");
    std::unique_lock<std::mutex> guard(state_->mutex);
    return state_->finished.wait_for(guard, limit, [&] { return state_->done; });
  }
  /// True once the task finished: with a value, an exception or a cancellation.
  bool done() const {
    check("done");
    std::lock_guard<std::mutex> guard(state_->mutex);
    return state_->done;
  }
  /// Asks the task to cancel itself on its loop; false when already done or
  /// the loop is closed.
  bool cancel() const;

 private:
  template <class Awaitable>
  friend auto run_coroutine_threadsafe(Awaitable awaitable, event_loop& loop, detail::source_site site);
  template <class, class>
  friend class detail::threadsafe_start;
  struct shared_state {
    std::mutex mutex;
    std::condition_variable finished;
    bool done = false;
    std::optional<outcome<T>> result;  // set once, with done
    std::shared_ptr<detail::loop_inbox> inbox;
    task_ref task;  // loop thread only
  };
  explicit concurrent_future(std::shared_ptr<shared_state> state) noexcept : state_(std::move(state)) {}
  void check(const char* what) const {
    if (state_ == nullptr) throw invalid_state_error(std::string("concurrent_future::") + what + ": empty future");
  }
  std::shared_ptr<shared_state> state_;
};

namespace detail {
// A one-shot ready node posted through an inbox, freeing itself after it runs.
template <class Callback>
class posted_callback final : public ready_node {
 public:
  explicit posted_callback(Callback callback) : callback_(std::move(callback)) {
    run = [](ready_node* node) noexcept {
      auto* self = static_cast<posted_callback*>(node);
      if (running_loop_slot() != nullptr) self->callback_();
      delete self;
    };
  }
  static bool post(loop_inbox& inbox, Callback callback) {
    auto* node = new posted_callback(std::move(callback));
    if (inbox.post(*node)) return true;
    delete node;
    return false;
  }

 private:
  Callback callback_;
};
}  // namespace detail

template <class T>
bool concurrent_future<T>::cancel() const {
  if (state_ == nullptr || done()) return false;
  auto state = state_;
  auto request = [state]() noexcept {
    if (state->task) state->task.cancel();
  };
  return detail::posted_callback<decltype(request)>::post(*state->inbox, std::move(request));
}

namespace detail {
// run_coroutine_threadsafe's node: posted through the loop's inbox, it starts
// the task on the loop's thread, then waits for it as a completion waiter and
// records its outcome in the future's shared state. The future always ends:
// cancelled when the loop closes before the start ran (the node is discarded)
// or leaves the task unfinished (an ending_waiter).
template <class T, class Awaitable>
class threadsafe_start final : public ready_node, public ending_waiter {
 public:
  using shared_state = typename concurrent_future<T>::shared_state;
  threadsafe_start(std::shared_ptr<shared_state> state, Awaitable awaitable, source_site site)
      : ending_waiter(&on_task_end), state_(std::move(state)), awaitable_(std::move(awaitable)), site_(site) {
    run = &start_on_loop;
  }

 private:
  static void start_on_loop(ready_node* node) noexcept {
    auto* self = static_cast<threadsafe_start*>(node);
    if (running_loop_slot() == nullptr) {  // the loop closed first
      self->finish(std::make_exception_ptr(cancelled_error{}));
      return;
    }
    try {
      auto handle = create_task(std::move(self->awaitable_), {}, self->site_);
      self->task_ = handle;
      self->state_->task = handle;
      task_ref_access::promise(handle)->add_waiter(*self);
    } catch (...) {
      self->finish(std::current_exception());
    }
  }
  static void on_task_end(ending_waiter* waiter, bool task_finished) noexcept {
    auto* self = static_cast<threadsafe_start*>(waiter);
    if (!task_finished) {
      self->finish(std::make_exception_ptr(cancelled_error{}));
      return;
    }
    task_promise_base& task = *task_ref_access::promise(self->task_);
    std::exception_ptr error;
    if (task.cancelled()) {
      error = std::make_exception_ptr(cancelled_error{});
    } else {
      task.mark_retrieved();
      error = task.exception();
    }
    if (error == nullptr) {
      try {
        std::lock_guard<std::mutex> guard(self->state_->mutex);
        if constexpr (std::is_void_v<T>) {
          self->state_->result.emplace(std::monostate{});
        } else {
          self->state_->result.emplace(static_cast<task_promise<T>&>(task).result_reference());
        }
      } catch (...) {
        error = std::current_exception();  // the value's copy threw
      }
    }
    self->finish(error);
  }
  // Publishes the outcome (a value already stored, or `error`) and frees this node.
  void finish(std::exception_ptr error) noexcept {
    {
      std::lock_guard<std::mutex> guard(state_->mutex);
      if (error != nullptr) state_->result.emplace(std::move(error));
      state_->done = true;
      state_->finished.notify_all();
    }
    state_->task = task_ref{};  // loop thread only: read by cancel()'s posted request
    delete this;
  }

  std::shared_ptr<shared_state> state_;
  Awaitable awaitable_;
  source_site site_;
  task_ref task_;
};
}  // namespace detail

/// Any thread: starts `awaitable` as a task on `loop` (which must be running
/// or about to run) and returns a concurrent_future for its outcome.
/// Throws invalid_state_error when the loop is closed. The future always
/// ends: cancelled_error when the loop closes before the task finished.
template <class Awaitable>
auto run_coroutine_threadsafe(Awaitable awaitable, event_loop& loop,
                              detail::source_site site = detail::source_site::here()) {
  using value_type = await_result_t<Awaitable>;
  using future_type = concurrent_future<value_type>;
  auto state = std::make_shared<typename future_type::shared_state>();
  state->inbox = detail::core_of(loop).inbox();
  auto* start = new detail::threadsafe_start<value_type, Awaitable>(state, std::move(awaitable), site);
  if (!state->inbox->post(*start)) {
    delete start;
    throw invalid_state_error("run_coroutine_threadsafe: the event loop is closed");
  }
  return future_type(std::move(state));
}

// ============================================================================
// 9. Networking: awaitable operations on handles  >>net
//    Uses 4 (the backend's contract), 5 (tasks), 6 (sleep: accept's back-off;
//    timeout: a TLS handshake's; gather: communicate), 7 (a stream's waiters
//    park like the primitives') and 8 (resolve runs on the thread pool); the
//    child processes of 9.9 keep per-loop state as a loop attachment (3).
// ============================================================================

namespace detail {

// One backend operation awaited by a task; the operation lives in the frame.
// Cancelling asks the backend to cancel and waits for its confirmation, so the
// buffer is never released while the OS may still write to it (IOCP).
class io_awaiter : protected io_operation, private suspension {
 public:
  // `label` (the peer, "127.0.0.1:8080") names the operation in errors; it
  // must outlive the await. Without one, errors name the descriptor.
  io_awaiter(io_kind kind, native_handle handle, void* buffer, std::size_t length, const char* name,
             const std::string* label = nullptr) noexcept
      : name_(name), label_(label) {
    this->kind = kind;
    this->handle = handle;
    this->buffer = buffer;
    this->length = length;
  }
  // Movable until awaited, like every leaf awaiter.
  io_awaiter(io_awaiter&& other) noexcept
      : io_awaiter(other.kind, other.handle, other.buffer, other.length, other.name_, other.label_) {
    address = other.address;
    address_length = other.address_length;
    flags = other.flags;
  }
  io_awaiter& operator=(io_awaiter&&) = delete;
  ~io_awaiter() {
    if (has_loop() && parked) loop().backend().abandon(*this);
  }
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!suspend(caller, waiting, name_)) return false;
    complete = &on_complete;
    if (loop().backend().start(*this)) {
      not_suspending();
      return false;
    }
    return true;
  }
  // Bytes moved (or the accepted handle). Throws cancelled_error when the
  // task was cancelled, or a std::system_error naming the operation and the
  // descriptor; ECANCELED when the descriptor was released (closed) while the
  // operation waited: nobody cancelled the task, so it is not a cancellation.
  // A cancel after the OS completed it returns the result (the bytes were
  // moved) and meets the next suspension point.
  std::size_t await_resume() const {
    throw_if_interrupted();
    if (error != 0) throw_error();
    return static_cast<std::size_t>(result);
  }

 protected:
  // True when the awaiting task's cancel (not the OS) ended the operation.
  bool cancelled_by_task() const noexcept { return cancelled(); }
  void relabel(const std::string* label) noexcept { label_ = label; }
  [[noreturn]] void throw_error() const {
    std::string what = std::string(name_) + " " + (label_ != nullptr ? *label_ : handle_label(handle));
    if (error == ECANCELED) what += " (the descriptor was closed while the operation waited)";
    throw_system_error(error, what);
  }

 private:
  static void on_complete(io_operation* operation) noexcept {
    auto* self = static_cast<io_awaiter*>(operation);
    // The OS finished the operation before the cancel reached it (IOCP):
    // its result stands (no byte is lost).
    if (self->cancelled() && self->error != ECANCELED) self->deliver_cancel_later();
    self->resume();
  }
  static bool on_cancel(cancellable_wait* wait) noexcept {
    auto* self = static_cast<io_awaiter*>(wait);
    self->mark_cancelled();
    // Completes with ECANCELED, or with the result when the OS finished first.
    self->loop().backend().cancel(*self);
    return true;
  }
  // "read from 127.0.0.1:8080 (fd 7)".
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const auto& self = static_cast<const io_awaiter&>(wait);
    static constexpr const char* verbs[] = {"read from",   "write to",          "read from",
                                            "write to",    "accept on",         "connect to",
                                            "receive a datagram on", "send a datagram to", "wait until readable:",
                                            "wait until writable:"};
    const auto index = static_cast<std::size_t>(self.io_operation::kind);
    report.text = std::string(index < std::size(verbs) ? verbs[index] : self.name_) + " ";
    if (self.label_ != nullptr && !self.label_->empty()) {
      report.text += *self.label_ + " (" + handle_label(self.handle) + ")";
    } else {
      report.text += handle_label(self.handle);
    }
    if (self.cancelled()) report.text += ", cancelled: waiting for the OS to confirm";
  }
  static constexpr wait_kind waiting{"I/O", &on_cancel, &describe};
  const char* name_;
  const std::string* label_;
};

}  // namespace detail

/// Reads up to buffer.size() bytes from a non-blocking POSIX fd (a pipe, a
/// socket; on Windows a socket only); returns 0 at end of file. Throws
/// std::system_error naming the fd.
/// The fd must stay open until the read finishes; call
/// get_running_loop().release(fd) before closing it.
inline detail::io_awaiter read_some(native_handle handle, std::span<std::byte> buffer) noexcept {
  return detail::io_awaiter(detail::io_kind::read, handle, buffer.data(), buffer.size(), "read");
}
/// Writes some of `buffer` to a non-blocking POSIX fd; returns the bytes written.
inline detail::io_awaiter write_some(native_handle handle, std::span<const std::byte> buffer) noexcept {
  return detail::io_awaiter(detail::io_kind::write, handle, const_cast<std::byte*>(buffer.data()), buffer.size(),
                            "write");
}
/// Suspends until `handle` is readable (writable); for fds read by other code.
inline detail::io_awaiter wait_readable(native_handle handle) noexcept {
  return detail::io_awaiter(detail::io_kind::wait_readable, handle, nullptr, 0, "wait_readable");
}
/// Suspends until `handle` is writable; the same rules as wait_readable.
inline detail::io_awaiter wait_writable(native_handle handle) noexcept {
  return detail::io_awaiter(detail::io_kind::wait_writable, handle, nullptr, 0, "wait_writable");
}

// --- 9.2 Addresses ---

/// A socket address: IPv4, IPv6 or (POSIX) a Unix socket path.
class address {
 public:
  /// An empty address: family() is AF_UNSPEC and size() 0.
  address() noexcept = default;
  /// Copies what accept, getsockname or getaddrinfo returned.
  address(const sockaddr* raw, socklen_t length) noexcept {
    size_ = std::min<socklen_t>(length, sizeof storage_);
    std::memcpy(&storage_, raw, size_);
  }
  /// A numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]"); std::nullopt
  /// when `host` is not numeric (then it needs resolve()).
  static std::optional<address> parse(std::string_view host, std::uint16_t port) {
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host.empty() || host.size() >= INET6_ADDRSTRLEN + 8) return std::nullopt;
    char text[INET6_ADDRSTRLEN + 8];
    std::memcpy(text, host.data(), host.size());
    text[host.size()] = '\0';
    sockaddr_in v4{};
    if (::inet_pton(AF_INET, text, &v4.sin_addr) == 1) {
      v4.sin_family = AF_INET;
      v4.sin_port = htons(port);
      return address(reinterpret_cast<const sockaddr*>(&v4), sizeof v4);
    }
    sockaddr_in6 v6{};
    if (::inet_pton(AF_INET6, text, &v6.sin6_addr) == 1) {
      v6.sin6_family = AF_INET6;
      v6.sin6_port = htons(port);
      return address(reinterpret_cast<const sockaddr*>(&v6), sizeof v6);
    }
    return std::nullopt;
  }
#if defined(CORO_LOOP_POSIX)
  /// A Unix domain socket path. Throws std::invalid_argument when too long. POSIX only.
  static address unix_path(std::string_view path) {
    sockaddr_un raw{};
    if (path.empty() || path.size() >= sizeof raw.sun_path) {
      throw std::invalid_argument("unix socket path is empty or longer than " +
                                  std::to_string(sizeof raw.sun_path - 1) + " bytes: " + std::string(path));
    }
    raw.sun_family = AF_UNIX;
    std::memcpy(raw.sun_path, path.data(), path.size());
    return address(reinterpret_cast<const sockaddr*>(&raw),
                   static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size() + 1));
  }
#else
  template <class Path>
  static address unix_path(Path) {
    static_assert(detail::posix_only<Path>, "coro_loop: Unix domain sockets (address::unix_path) are POSIX only");
    return address();
  }
#endif

  /// AF_INET, AF_INET6, AF_UNIX, or AF_UNSPEC when empty; port() is 0 unless IPv4 or IPv6.
  int family() const noexcept { return size_ == 0 ? AF_UNSPEC : storage_.ss_family; }
  std::uint16_t port() const noexcept {
    if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(storage_).sin_port);
    if (family() == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6&>(storage_).sin6_port);
    return 0;
  }
  /// "127.0.0.1", "::1", or the Unix path.
  std::string host() const {
    char text[INET6_ADDRSTRLEN] = {};
    if (family() == AF_INET) {
      ::inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(storage_).sin_addr, text, sizeof text);
      return text;
    }
    if (family() == AF_INET6) {
      ::inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(storage_).sin6_addr, text, sizeof text);
      return text;
    }
#if defined(CORO_LOOP_POSIX)
    if (family() == AF_UNIX) {
      const auto& raw = reinterpret_cast<const sockaddr_un&>(storage_);
      return std::string(raw.sun_path, ::strnlen(raw.sun_path, sizeof raw.sun_path));
    }
#endif
    return "<no address>";
  }
  /// "127.0.0.1:8080", "[::1]:8080", or the Unix path.
  std::string to_string() const {
    if (family() == AF_INET6) return "[" + host() + "]:" + std::to_string(port());
    if (family() == AF_INET) return host() + ":" + std::to_string(port());
    return host();
  }

  /// The raw sockaddr for system calls: size() bytes used of capacity(); resize() after a call
  /// filled it in (clamped to capacity()).
  const sockaddr* data() const noexcept { return reinterpret_cast<const sockaddr*>(&storage_); }
  sockaddr* data() noexcept { return reinterpret_cast<sockaddr*>(&storage_); }
  socklen_t size() const noexcept { return size_; }
  static constexpr socklen_t capacity() noexcept { return sizeof(sockaddr_storage); }
  void resize(socklen_t length) noexcept { size_ = std::min<socklen_t>(length, sizeof storage_); }

 private:
  sockaddr_storage storage_{};
  socklen_t size_ = 0;
};

// --- 9.3 Sockets ---

class socket;

namespace detail {

// accept / connect / recv_from / send_to: an io_awaiter that carries its
// address, and a label for errors ("connect 127.0.0.1:1: Connection refused").
class socket_awaiter : public io_awaiter {
 public:
  socket_awaiter(io_kind kind, native_handle handle, void* buffer, std::size_t length, const char* name,
                 coro_loop::address where, std::string label)
      : io_awaiter(kind, handle, buffer, length, name, nullptr), address_(where), label_(std::move(label)) {
    bind_fields();
  }
  socket_awaiter(socket_awaiter&& other) noexcept
      : io_awaiter(std::move(other)), address_(other.address_), label_(std::move(other.label_)) {
    bind_fields();
  }
  const coro_loop::address& where() const noexcept { return address_; }

 protected:
  void bind_fields() noexcept {
    io_awaiter::relabel(&label_);
    io_operation::address = address_.data();
    io_operation::address_length = kind == io_kind::accept || kind == io_kind::recv_from ? coro_loop::address::capacity()
                                                                                           : address_.size();
  }
  // After accept / recv_from: the address the OS filled in.
  coro_loop::address filled_address() noexcept {
    address_.resize(io_operation::address_length);
    return address_;
  }
  coro_loop::address address_;
  std::string label_;
};

class accept_awaiter;
class recv_from_awaiter;

}  // namespace detail

/// A non-blocking socket owned by this object (closed by its destructor).
/// Its awaitable operations are cancellable and leave nothing parked when
/// cancelled. Loop-thread object; movable while no operation is in flight.
class socket {
 public:
  /// An empty socket: is_open() is false.
  socket() noexcept = default;
  /// Takes ownership of `handle` (made non-blocking here on POSIX; on Windows
  /// it must have been made overlapped, as WSASocket and socket() do).
  explicit socket(native_handle handle) : handle_(handle) {
    if (handle_ != invalid_handle) make_non_blocking();
  }
  /// Move-only; assigning closes the socket held before.
  socket(socket&& other) noexcept
      : handle_(std::exchange(other.handle_, invalid_handle)), label_(std::move(other.label_)) {}
  socket& operator=(socket&& other) noexcept {
    if (this != &other) {
      close();
      handle_ = std::exchange(other.handle_, invalid_handle);
      label_ = std::move(other.label_);
    }
    return *this;
  }
  ~socket() { close(); }

  /// A new non-blocking, close-on-exec socket (Windows: overlapped, not
  /// inherited). Throws std::system_error.
  static socket open(int family, int type, int protocol = 0) {
#if defined(CORO_LOOP_WINDOWS)
    detail::winsock();
    const native_handle handle =
        ::WSASocketW(family, type, protocol, nullptr, 0, WSA_FLAG_OVERLAPPED | WSA_FLAG_NO_HANDLE_INHERIT);
    if (handle == invalid_handle) detail::throw_system_error(detail::last_socket_error(), "socket");
    if (type == SOCK_DGRAM) {
      // Windows reports an ICMP "port unreachable" for an earlier datagram as a
      // reset of the next receive; POSIX sockets that are not connected never do.
      BOOL report = FALSE;
      DWORD returned = 0;
      ::WSAIoctl(handle, detail::udp_connection_reset_control, &report, sizeof report, nullptr, 0, &returned, nullptr,
                 nullptr);
    }
#elif defined(SOCK_NONBLOCK)
    const int handle = ::socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    if (handle < 0) detail::throw_system_error(errno, "socket");
#else
    const int handle = ::socket(family, type, protocol);
    if (handle < 0) detail::throw_system_error(errno, "socket");
    if (detail::make_non_blocking_and_cloexec(handle) < 0) {
      const int error = errno;
      ::close(handle);
      detail::throw_system_error(error, "fcntl O_NONBLOCK");
    }
#endif
    return adopt_non_blocking(handle);
  }

  /// The descriptor (SOCKET), or invalid_handle once closed or released.
  native_handle handle() const noexcept { return handle_; }
  bool is_open() const noexcept { return handle_ != invalid_handle; }
  /// Gives up ownership (the backend registration is dropped first).
  native_handle release() noexcept {
    forget_registration();
    return std::exchange(handle_, invalid_handle);
  }
  /// Closes now; an operation parked on it fails with std::system_error (ECANCELED). Idempotent.
  void close() noexcept {
    if (handle_ == invalid_handle) return;
    forget_registration();
    detail::close_socket(std::exchange(handle_, invalid_handle));
  }

  /// bind(2), listen(2), setsockopt(2) with an int value: each throws std::system_error naming the call.
  void bind(const address& local) {
    if (::bind(handle_, local.data(), local.size()) != 0) {
      detail::throw_system_error(detail::last_socket_error(), "bind " + local.to_string());
    }
  }
  void listen(int backlog) {
    if (::listen(handle_, backlog) != 0) {
      detail::throw_system_error(detail::last_socket_error(), "listen " + local_address().to_string());
    }
  }
  void set_option(int level, int name, int value) {
    if (::setsockopt(handle_, level, name, reinterpret_cast<const char*>(&value), sizeof value) != 0) {
      detail::throw_system_error(detail::last_socket_error(), "setsockopt " + std::to_string(name));
    }
  }
  /// shutdown(2): SHUT_RD, SHUT_WR or SHUT_RDWR (Windows: SD_RECEIVE, SD_SEND, SD_BOTH, the same values).
  void shutdown(int how) {
    if (::shutdown(handle_, how) != 0) {
      const int error = detail::last_socket_error();
      if (error != ENOTCONN) detail::throw_system_error(error, "shutdown " + label());
    }
  }
  /// getsockname(2) / getpeername(2); each throws std::system_error on failure.
  address local_address() const {
    address local;
    socklen_t length = address::capacity();
    if (::getsockname(handle_, local.data(), &length) != 0) {
      detail::throw_system_error(detail::last_socket_error(), "getsockname");
    }
    local.resize(length);
    return local;
  }
  address peer_address() const {
    address peer;
    socklen_t length = address::capacity();
    if (::getpeername(handle_, peer.data(), &length) != 0) {
      detail::throw_system_error(detail::last_socket_error(), "getpeername");
    }
    peer.resize(length);
    return peer;
  }

  /// Connects to `peer`; throws std::system_error ("connect 127.0.0.1:1: Connection refused").
  detail::socket_awaiter connect(const address& peer) {
    label_ = peer.to_string();
    return detail::socket_awaiter(detail::io_kind::connect, handle_, nullptr, 0, "connect", peer, label_);
  }
  /// Accepts a connection: returns {socket, peer address}.
  inline detail::accept_awaiter accept();
  /// Receives up to buffer.size() bytes; 0 means the peer closed its side.
  detail::io_awaiter recv(std::span<char> buffer) noexcept {
    return detail::io_awaiter(detail::io_kind::recv, handle_, buffer.data(), buffer.size(), "recv", &label_);
  }
  /// Sends some of `buffer`; returns the bytes sent. Never raises SIGPIPE.
  detail::io_awaiter send(std::span<const char> buffer) noexcept {
    return detail::io_awaiter(detail::io_kind::send, handle_, const_cast<char*>(buffer.data()), buffer.size(), "send",
                              &label_);
  }
  /// Receives one datagram: returns {bytes, sender}.
  inline detail::recv_from_awaiter recv_from(std::span<char> buffer);
  /// Sends one datagram to `peer`.
  detail::socket_awaiter send_to(std::span<const char> buffer, const address& peer) {
    return detail::socket_awaiter(detail::io_kind::send_to, handle_, const_cast<char*>(buffer.data()), buffer.size(),
                                  "send_to", peer, peer.to_string());
  }

  /// What errors name this socket by: its peer once connected, else "fd N".
  std::string label() const { return label_.empty() ? detail::handle_label(handle_) : label_; }
  /// Sets what errors name this socket by; label_pointer() is null while there is none.
  void set_label(std::string label) { label_ = std::move(label); }
  const std::string* label_pointer() const noexcept { return label_.empty() ? nullptr : &label_; }

 private:
  friend class detail::accept_awaiter;
  // Takes a handle the OS made non-blocking already (accept4): no fcntl.
  static socket adopt_non_blocking(native_handle handle) noexcept {
    socket adopted;
    adopted.handle_ = handle;
    return adopted;
  }
  void make_non_blocking() {
#if defined(CORO_LOOP_POSIX)
    const int flags = ::fcntl(handle_, F_GETFL);
    if (flags < 0 || ::fcntl(handle_, F_SETFL, flags | O_NONBLOCK) < 0) detail::throw_system_error(errno, "fcntl O_NONBLOCK");
#endif
  }
  void forget_registration() noexcept {
    if (detail::loop_core* loop = detail::thread_loop_slot(); loop != nullptr && !loop->is_closed()) {
      loop->backend().release(handle_);
    }
  }
  native_handle handle_ = invalid_handle;
  std::string label_;
};

namespace detail {
// Room an accept operation lends the backend (accept_scratch_bytes, 4):
// nothing on the readiness backends.
template <std::size_t Bytes>
struct accept_scratch {
  alignas(sockaddr_storage) char bytes[Bytes];
  void* data() noexcept { return bytes; }
};
template <>
struct accept_scratch<0> {
  void* data() noexcept { return nullptr; }
};

class accept_awaiter : public socket_awaiter {
 public:
  accept_awaiter(native_handle listener, std::string label)
      : socket_awaiter(io_kind::accept, listener, nullptr, 0, "accept", coro_loop::address{}, std::move(label)) {
    lend_scratch();
  }
  accept_awaiter(accept_awaiter&& other) noexcept : socket_awaiter(std::move(other)) { lend_scratch(); }
  std::pair<socket, coro_loop::address> await_resume() {
    const std::size_t handle = socket_awaiter::await_resume();
    socket accepted = socket::adopt_non_blocking(static_cast<native_handle>(handle));
    coro_loop::address peer = filled_address();
    accepted.set_label(peer.family() == AF_UNIX ? "unix peer" : peer.to_string());
    return {std::move(accepted), peer};
  }

 private:
  void lend_scratch() noexcept {
    buffer = scratch_.data();
    length = accept_scratch_bytes;
  }
  [[no_unique_address]] accept_scratch<accept_scratch_bytes> scratch_;
};
class recv_from_awaiter : public socket_awaiter {
 public:
  recv_from_awaiter(native_handle handle, std::span<char> buffer, std::string label)
      : socket_awaiter(io_kind::recv_from, handle, buffer.data(), buffer.size(), "recv_from", coro_loop::address{},
                       std::move(label)) {}
  std::pair<std::size_t, coro_loop::address> await_resume() {
    const std::size_t received = socket_awaiter::await_resume();
    return {received, filled_address()};
  }
};
}  // namespace detail

inline detail::accept_awaiter socket::accept() {
  // A server labels its listeners: no getsockname per connection then.
  return detail::accept_awaiter(handle_, "listener " + (label_.empty() ? local_address().to_string() : label_));
}
inline detail::recv_from_awaiter socket::recv_from(std::span<char> buffer) {
  return detail::recv_from_awaiter(handle_, buffer, label());
}

// --- 9.4 resolve ---

namespace detail {
// getaddrinfo's EAI_* codes as std::error_code values.
class resolve_category_type final : public std::error_category {
 public:
  const char* name() const noexcept override { return "getaddrinfo"; }
  std::string message(int code) const override { return ::gai_strerror(code); }
};
inline const std::error_category& resolve_category() noexcept {
  static const resolve_category_type category;
  return category;
}

// Blocking: runs on the thread pool.
inline std::vector<address> resolve_blocking(const std::string& host, std::uint16_t port, int family, int type) {
  addrinfo hints{};
  hints.ai_family = family;
  hints.ai_socktype = type;
#if defined(CORO_LOOP_WINDOWS)
  // Windows' AI_ADDRCONFIG ignores loopback: "localhost" would fail offline.
  winsock();
#else
  hints.ai_flags = AI_ADDRCONFIG;
#endif
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  const int code = ::getaddrinfo(host.empty() ? nullptr : host.c_str(), service.c_str(), &hints, &found);
  const std::string what = "resolve " + host + ":" + service;
#if defined(EAI_SYSTEM)
  if (code == EAI_SYSTEM) throw_system_error(errno, what);
#endif
  if (code != 0) throw std::system_error(code, resolve_category(), what);
  std::vector<address> addresses;
  for (addrinfo* entry = found; entry != nullptr; entry = entry->ai_next) {
    addresses.emplace_back(entry->ai_addr, static_cast<socklen_t>(entry->ai_addrlen));
  }
  ::freeaddrinfo(found);
  return addresses;
}
}  // namespace detail

/// The addresses of host:port (getaddrinfo on the thread pool, as asyncio;
/// numeric hosts skip the pool). Cancellable. Throws std::system_error
/// ("resolve nosuch.invalid:80: Name or service not known").
CORO_LOOP_COROUTINE
task<std::vector<address>> resolve(std::string host, std::uint16_t port, int family = AF_UNSPEC,
                                   int type = SOCK_STREAM) {
  if (std::optional<address> numeric = address::parse(host, port)) {
    if (family == AF_UNSPEC || family == numeric->family()) co_return std::vector<address>{*numeric};
  }
  co_return co_await to_thread(&detail::resolve_blocking, std::move(host), port, family, type);
}

// --- 9.5 TLS: contexts, options, the engine  >>tls ---
// Opt-in: `#define CORO_LOOP_OPENSSL` before the first include compiles the
// OpenSSL 3 engine below (link -lssl -lcrypto; its headers are included in
// section 1, under the only other test of the macro). Without it the same
// types exist, and making a tls_context throws tls_error saying how to turn
// TLS on; nothing else changes.
//
// TLS runs over memory, never over the socket: a TLS stream receives
// ciphertext with its ordinary recv operation into a buffer of its own, feeds
// it to the engine and decrypts into its input buffer; write() encrypts into
// the stream's output, sent by its ordinary send. So every backend (epoll,
// kqueue, IOCP) serves TLS unchanged, no call blocks the loop, and
// cancellation and timeouts are the streams' own. The engine is all that
// streams ask of a TLS library; a second one (Mbed TLS) would add a block
// defining the same two classes, members in the same order:
//
//   class tls_context_state                  a tls_context's settings, shared by its connections
//     tls_context_state(bool server)          client: verifies the peer against the system trust
//                                             store; server: asks no certificate; both TLS 1.2+
//     load_verify_locations(file, directory)  trust these CAs (the system store is then not loaded)
//     load_cert_chain(certificate, key)       the certificate presented (a server's, or a client's)
//     set_verify(on), set_alpn_protocols(list), set_min_version(v), set_max_version(v)
//     is_server(), verifies()
//   class tls_engine                          one connection
//     tls_engine(context, server_name)        a client verifies server_name (a DNS name or an IP
//                                             address) and sends a DNS name as SNI
//     feed(ciphertext)                        what the socket received
//     has_output(), take_output(vector&)      appends what must be sent: handshake, records, alerts
//     handshake()                             one step: done, want_input or failed
//     read(into, produced&)                   decrypts into `into`: done (produced > 0), want_input,
//                                             closed (the peer's close_notify) or failed
//     write(plaintext)                        encrypts all of it into the output; false: failed
//     shutdown()                              queues close_notify (once; never after a failure)
//     has_buffered_input()                    ciphertext or plaintext held inside: a read needs no recv
//     alpn_protocol(), version()              what the handshake chose
//     error(), certificate_error()            why the last step failed, in the library's words, and
//                                             whether it was the check of the peer's certificate
// Each member returns at once, on the loop thread. Only the constructors
// throw (tls_error), and feed / take_output (std::bad_alloc). What a closed
// socket means is the stream's to decide: without close_notify first, a
// truncation (an error), never a clean end.

/// A TLS protocol version (asyncio's ssl.TLSVersion); nothing older than 1.2 is ever offered.
enum class tls_version : std::uint8_t { v1_2, v1_3 };

/// Thrown by a TLS handshake, read or write, naming the operation, the peer and the library's
/// reason ("tls handshake with 127.0.0.1:8443: tlsv1 alert unknown ca"), and by a tls_context's
/// set-up (a missing file, a key that does not fit); asyncio's ssl.SSLError.
class tls_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The peer's certificate failed the check: untrusted, expired, or for another name
/// ("tls handshake with 127.0.0.1:8443: certificate verify failed: self-signed certificate");
/// asyncio's ssl.SSLCertVerificationError.
class tls_certificate_error : public tls_error {
 public:
  using tls_error::tls_error;
};

/// The peer closed the connection without close_notify, so what came may be cut short
/// ("tls read from 127.0.0.1:8443: the peer closed the connection without close_notify (the
/// data may be truncated)"); thrown by a read, never taken for the end (Python's ssl.SSLEOFError).
class tls_eof_error : public tls_error {
 public:
  using tls_error::tls_error;
};

namespace detail {
class tls_context_state;
struct tls_context_access;
// How to build TLS in: the end of every message that finds it missing.
inline constexpr const char* how_to_build_tls_in =
    "#define CORO_LOOP_OPENSSL before including coro_loop.hpp, and link with -lssl -lcrypto (OpenSSL 3)";
}  // namespace detail

/// TLS settings shared by many connections (asyncio's ssl.SSLContext): the check of the peer,
/// trusted CAs, the certificate presented, ALPN, versions. Copies share one context: set it
/// up first; then connections on any thread may use it (the setters are not thread-safe).
class tls_context {
 public:
  /// An empty context: valid() is false, and a connection given it throws invalid_state_error.
  tls_context() noexcept = default;
  /// A client context, safe by default (asyncio's ssl.create_default_context()): the server's
  /// certificate must chain to the system's trusted CAs and name the host; TLS 1.2 or later.
  /// Throws tls_error (without CORO_LOOP_OPENSSL: TLS is not built in, and how to build it in).
  static tls_context client();
  /// A server context presenting `certificate_file` (PEM: the certificate, then any
  /// intermediates) with `key_file` (PEM); it asks for no client certificate unless set_verify(true).
  static tls_context server(const std::string& certificate_file, const std::string& key_file);

  /// Trusts the CAs in a PEM file and/or a hashed directory (openssl rehash) instead of the
  /// system's (asyncio's load_verify_locations); a server checks client certificates against them.
  tls_context& load_verify_locations(const std::string& ca_file, const std::string& ca_directory = {});
  /// Presents this certificate chain and key: a client's own certificate, or a server's new one.
  tls_context& load_cert_chain(const std::string& certificate_file, const std::string& key_file);
  /// Client: false accepts any certificate for any name (asyncio's check_hostname = False with
  /// verify_mode = CERT_NONE), only when asked for. Server: true demands a client certificate.
  tls_context& set_verify(bool verify);
  /// ALPN protocols, most preferred first ({"h2", "http/1.1"}); a server picks the first of its
  /// list the client also offers, and none when they share none. Throws std::invalid_argument.
  tls_context& set_alpn_protocols(const std::vector<std::string>& protocols);
  /// The oldest version offered or accepted [1.2] (asyncio's minimum_version).
  tls_context& set_min_version(tls_version version);
  /// The newest version offered or accepted [1.3] (asyncio's maximum_version).
  tls_context& set_max_version(tls_version version);

  /// False for an empty (default or moved-from) context.
  bool valid() const noexcept { return state_ != nullptr; }
  /// Made by server() (else by client()); whether the peer's certificate is checked.
  bool is_server() const;
  bool verifies() const;

 private:
  friend struct detail::tls_context_access;
  detail::tls_context_state& get(const char* operation) const;
  std::shared_ptr<detail::tls_context_state> state_;
};

/// One TLS connection's settings (asyncio's ssl= and server_hostname=). Constructors, not an
/// aggregate, on purpose: GCC 12 destroys an aggregate temporary written inside a co_await
/// expression twice, while `co_await open_connection(host, port, tls_options(context))` is safe.
struct tls_options {
  /// TLS with `shared` (a tls_context converts); a client verifies the host it connects to.
  tls_options(tls_context shared) : context(std::move(shared)) {}
  /// A client verifies `hostname` instead, and sends it as SNI (asyncio's server_hostname).
  tls_options(tls_context shared, std::string hostname)
      : context(std::move(shared)), server_hostname(std::move(hostname)) {}

  tls_context context;
  std::string server_hostname;  // "": open_connection's host; start_tls: the peer's IP address
  duration handshake_timeout = std::chrono::seconds(60);  // asyncio's ssl_handshake_timeout:
                                                          // timeout_error past it
};

namespace detail {

struct tls_context_access {
  static const std::shared_ptr<tls_context_state>& state(const tls_context& context) { return context.state_; }
};

// One step of the engine (see above).
enum class tls_step : std::uint8_t { done, want_input, closed, failed };

#if defined(CORO_LOOP_OPENSSL)

// The HTTP client takes https:// URLs (section 10).
inline constexpr bool tls_built_in = true;

// This thread's OpenSSL error queue as text, its reasons "; "-joined (the
// queue is emptied); `fallback` when it held none. `verify_failed` tells
// whether one of them was the certificate check.
inline std::string take_openssl_errors(const char* fallback, bool* verify_failed = nullptr) {
  std::string text;
  while (const unsigned long code = ERR_get_error()) {
    if (verify_failed != nullptr && ERR_GET_LIB(code) == ERR_LIB_SSL &&
        ERR_GET_REASON(code) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
      *verify_failed = true;
    }
    char buffer[256];
    const char* reason = ERR_reason_error_string(code);
    if (reason == nullptr) {
      ERR_error_string_n(code, buffer, sizeof buffer);
      reason = buffer;
    }
    if (text.find(reason) != std::string::npos) continue;
    if (!text.empty()) text += "; ";
    text += reason;
  }
  return text.empty() ? std::string(fallback) : text;
}

class tls_context_state {
 public:
  explicit tls_context_state(bool server) : server_(server), verify_(!server) {
    ERR_clear_error();
    context_ = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
    if (context_ == nullptr) throw tls_error("tls_context: " + take_openssl_errors("SSL_CTX_new failed"));
    SSL_CTX_set_min_proto_version(context_, TLS1_2_VERSION);
    // No renegotiation (its attacks, and a write that would have to wait for a
    // read) and no compression (CRIME), whatever the system's configuration says.
    SSL_CTX_set_options(context_, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION);
    // An idle connection gives its record buffers back (about 34 KiB).
    SSL_CTX_set_mode(context_, SSL_MODE_RELEASE_BUFFERS);
    if (server_) {
      // A session resumed under a client certificate needs an id context.
      static constexpr unsigned char session_context[] = "coro_loop";
      SSL_CTX_set_session_id_context(context_, session_context, sizeof session_context - 1);
      SSL_CTX_set_alpn_select_cb(context_, &select_alpn, this);
    }
    apply_verify();
  }
  tls_context_state(const tls_context_state&) = delete;
  tls_context_state& operator=(const tls_context_state&) = delete;
  ~tls_context_state() { SSL_CTX_free(context_); }

  void load_verify_locations(const std::string& file, const std::string& directory) {
    if (file.empty() && directory.empty()) {
      throw std::invalid_argument("tls_context::load_verify_locations: neither a file nor a directory");
    }
    ERR_clear_error();
    if (SSL_CTX_load_verify_locations(context_, file.empty() ? nullptr : file.c_str(),
                                      directory.empty() ? nullptr : directory.c_str()) != 1) {
      throw tls_error("tls_context::load_verify_locations " + (file.empty() ? directory : file) + ": " +
                      take_openssl_errors("cannot load"));
    }
    own_trust_ = true;
  }
  void load_cert_chain(const std::string& certificate, const std::string& key) {
    ERR_clear_error();
    if (SSL_CTX_use_certificate_chain_file(context_, certificate.c_str()) != 1) {
      throw tls_error("tls_context::load_cert_chain " + certificate + ": " + take_openssl_errors("cannot load"));
    }
    if (SSL_CTX_use_PrivateKey_file(context_, key.c_str(), SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(context_) != 1) {
      throw tls_error("tls_context::load_cert_chain " + key + ": " + take_openssl_errors("cannot load"));
    }
  }
  void set_verify(bool verify) {
    verify_ = verify;
    apply_verify();
  }
  void set_alpn_protocols(const std::vector<std::string>& protocols) {
    std::string wire;  // RFC 7301 section 3.1: each name after its length byte
    for (const std::string& protocol : protocols) {
      if (protocol.empty() || protocol.size() > 255) {
        throw std::invalid_argument("tls_context::set_alpn_protocols: a protocol name has 1 to 255 bytes: \"" +
                                    protocol + "\"");
      }
      wire += static_cast<char>(protocol.size());
      wire += protocol;
    }
    // A client offers the list in every ClientHello; a server picks from it (select_alpn).
    if (!server_ && SSL_CTX_set_alpn_protos(context_, reinterpret_cast<const unsigned char*>(wire.data()),
                                            static_cast<unsigned>(wire.size())) != 0) {
      throw tls_error("tls_context::set_alpn_protocols: " + take_openssl_errors("refused"));
    }
    alpn_ = std::move(wire);
  }
  void set_min_version(tls_version version) { SSL_CTX_set_min_proto_version(context_, protocol_number(version)); }
  void set_max_version(tls_version version) { SSL_CTX_set_max_proto_version(context_, protocol_number(version)); }
  bool is_server() const noexcept { return server_; }
  bool verifies() const noexcept { return verify_; }

  // For tls_engine: a connection object. A client that verifies and was given
  // no CAs of its own loads the system's first (once: it reads files).
  SSL* new_connection() {
    if (!server_ && verify_ && !own_trust_) {
      std::call_once(system_trust_loaded_, [this] {
        // A failure here shows as "unable to get local issuer certificate" on connecting.
        SSL_CTX_set_default_verify_paths(context_);
        ERR_clear_error();
      });
    }
    ERR_clear_error();
    SSL* connection = SSL_new(context_);
    if (connection == nullptr) throw tls_error("tls: " + take_openssl_errors("SSL_new failed"));
    return connection;
  }

 private:
  static int protocol_number(tls_version version) noexcept {
    return version == tls_version::v1_3 ? TLS1_3_VERSION : TLS1_2_VERSION;
  }
  void apply_verify() {
    int mode = SSL_VERIFY_NONE;
    if (verify_) mode = server_ ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER;
    SSL_CTX_set_verify(context_, mode, nullptr);
  }
  // The server's ALPN choice: the first of ours the client offers; none
  // (rather than a fatal alert) when they share none, as Python's ssl does.
  static int select_alpn(SSL*, const unsigned char** chosen, unsigned char* chosen_length, const unsigned char* offered,
                         unsigned offered_length, void* self) {
    const std::string& ours = static_cast<tls_context_state*>(self)->alpn_;
    unsigned char* match = nullptr;
    unsigned char match_length = 0;
    if (ours.empty() ||
        SSL_select_next_proto(&match, &match_length, reinterpret_cast<const unsigned char*>(ours.data()),
                              static_cast<unsigned>(ours.size()), offered, offered_length) != OPENSSL_NPN_NEGOTIATED) {
      return SSL_TLSEXT_ERR_NOACK;
    }
    *chosen = match;
    *chosen_length = match_length;
    return SSL_TLSEXT_ERR_OK;
  }

  SSL_CTX* context_ = nullptr;
  std::string alpn_;  // in wire format
  std::once_flag system_trust_loaded_;
  bool server_;
  bool verify_;
  bool own_trust_ = false;
};

class tls_engine {
 public:
  tls_engine(std::shared_ptr<tls_context_state> context, std::string_view server_name)
      : context_(std::move(context)), connection_(context_->new_connection()) {
    BIO* input = BIO_new(BIO_s_mem());
    BIO* output = BIO_new(BIO_s_mem());
    if (input == nullptr || output == nullptr) {
      BIO_free(input);
      BIO_free(output);
      throw std::bad_alloc();
    }
    // Empty means "nothing yet", never the end: the stream sees the socket and
    // decides what its end means.
    BIO_set_mem_eof_return(input, -1);
    SSL_set_bio(connection_.get(), input, output);  // the connection owns both now
    input_ = input;
    output_ = output;
    if (context_->is_server()) {
      SSL_set_accept_state(connection_.get());
      return;
    }
    SSL_set_connect_state(connection_.get());
    if (server_name.size() >= 2 && server_name.front() == '[' && server_name.back() == ']') {
      server_name = server_name.substr(1, server_name.size() - 2);
    }
    name_ = server_name;
    const bool numeric = address::parse(name_, 0).has_value();
    ERR_clear_error();
    // SNI carries DNS names only (RFC 6066 section 3).
    if (!numeric && !name_.empty() && SSL_set_tlsext_host_name(connection_.get(), name_.c_str()) != 1) {
      throw tls_error("tls: cannot send \"" + name_ + "\" as the server name: " + take_openssl_errors("refused"));
    }
    if (!context_->verifies()) return;
    if (name_.empty()) throw tls_error("tls: no server name to verify the certificate against");
    X509_VERIFY_PARAM* check = SSL_get0_param(connection_.get());
    X509_VERIFY_PARAM_set_hostflags(check, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
    const int named = numeric ? X509_VERIFY_PARAM_set1_ip_asc(check, name_.c_str())
                              : X509_VERIFY_PARAM_set1_host(check, name_.c_str(), name_.size());
    if (named != 1) {
      throw tls_error("tls: cannot verify the name \"" + name_ + "\": " + take_openssl_errors("refused"));
    }
  }

  void feed(std::span<const char> ciphertext) {
    while (!ciphertext.empty()) {
      const std::size_t piece = std::min<std::size_t>(ciphertext.size(), std::size_t{1} << 30);
      if (BIO_write(input_, ciphertext.data(), static_cast<int>(piece)) != static_cast<int>(piece)) {
        throw std::bad_alloc();
      }
      ciphertext = ciphertext.subspan(piece);
    }
  }
  bool has_output() const noexcept { return BIO_ctrl_pending(output_) > 0; }
  void take_output(std::vector<char>& out) {
    const std::size_t pending = BIO_ctrl_pending(output_);
    if (pending == 0) return;
    const std::size_t start = out.size();
    out.resize(start + pending);
    std::size_t taken = 0;
    if (BIO_read_ex(output_, out.data() + start, pending, &taken) != 1) taken = 0;
    out.resize(start + taken);
  }

  tls_step handshake() {
    if (failed_) return tls_step::failed;
    ERR_clear_error();
    const int result = SSL_do_handshake(connection_.get());
    return result == 1 ? tls_step::done : after(result);
  }
  tls_step read(std::span<char> into, std::size_t& produced) {
    produced = 0;
    if (failed_) return tls_step::failed;
    if (peer_closed_) return tls_step::closed;
    // As many records as fit: one recv often brings several.
    while (produced < into.size()) {
      std::size_t got = 0;
      ERR_clear_error();
      const int result = SSL_read_ex(connection_.get(), into.data() + produced, into.size() - produced, &got);
      if (result == 1) {
        produced += got;
        continue;
      }
      // A failure or close_notify after some plaintext is kept for the next read.
      const tls_step step = after(result);
      return produced > 0 ? tls_step::done : step;
    }
    return tls_step::done;
  }
  bool write(std::string_view plaintext) {
    if (failed_) return false;
    if (plaintext.empty()) return true;
    ERR_clear_error();
    std::size_t written = 0;
    // All or nothing: a memory BIO takes every record, and without
    // renegotiation a write never waits for a read.
    const int result = SSL_write_ex(connection_.get(), plaintext.data(), plaintext.size(), &written);
    if (result == 1 && written == plaintext.size()) return true;
    if (after(result) != tls_step::failed) {
      failed_ = true;
      error_ = "the connection cannot send any more";
    }
    return false;
  }
  void shutdown() noexcept {
    if (failed_ || shutdown_sent_) return;
    shutdown_sent_ = true;
    ERR_clear_error();
    // 0 (sent; the peer's not yet read) is all a close needs: nobody waits for the peer's.
    (void)SSL_shutdown(connection_.get());
    ERR_clear_error();
  }
  bool has_buffered_input() const noexcept {
    return SSL_has_pending(connection_.get()) == 1 || BIO_ctrl_pending(input_) > 0;
  }
  std::string_view alpn_protocol() const noexcept {
    const unsigned char* protocol = nullptr;
    unsigned length = 0;
    SSL_get0_alpn_selected(connection_.get(), &protocol, &length);
    return protocol == nullptr ? std::string_view() : std::string_view(reinterpret_cast<const char*>(protocol), length);
  }
  std::optional<tls_version> version() const noexcept {
    switch (SSL_version(connection_.get())) {
      case TLS1_2_VERSION:
        return tls_version::v1_2;
      case TLS1_3_VERSION:
        return tls_version::v1_3;
      default:
        return std::nullopt;
    }
  }
  const std::string& error() const noexcept { return error_; }
  bool certificate_error() const noexcept { return certificate_error_; }

 private:
  struct connection_free {
    void operator()(SSL* connection) const noexcept { SSL_free(connection); }
  };
  // What a call that did not succeed means; a failure is recorded with its reason.
  tls_step after(int result) {
    const int code = SSL_get_error(connection_.get(), result);
    if (code == SSL_ERROR_WANT_READ) return tls_step::want_input;
    if (code == SSL_ERROR_ZERO_RETURN) {
      peer_closed_ = true;
      return tls_step::closed;
    }
    // Not SSL_ERROR_WANT_WRITE: a memory BIO takes every byte.
    failed_ = true;
    bool verify_failed = false;
    error_ = take_openssl_errors("the TLS library reported an error without a reason", &verify_failed);
    const long verify = SSL_get_verify_result(connection_.get());
    if (verify_failed && verify != X509_V_OK) {
      certificate_error_ = true;
      error_ = std::string("certificate verify failed: ") + X509_verify_cert_error_string(verify);
      if (verify == X509_V_ERR_HOSTNAME_MISMATCH || verify == X509_V_ERR_IP_ADDRESS_MISMATCH) {
        error_ += " (the certificate is not for " + name_ + ")";
      }
    }
    return tls_step::failed;
  }

  std::shared_ptr<tls_context_state> context_;  // select_alpn reads its list during the handshake
  std::unique_ptr<SSL, connection_free> connection_;
  BIO* input_ = nullptr;   // ciphertext received, owned by connection_
  BIO* output_ = nullptr;  // ciphertext to send, owned by connection_
  std::string name_;       // what a client verifies
  std::string error_;
  bool failed_ = false;
  bool peer_closed_ = false;
  bool shutdown_sent_ = false;
  bool certificate_error_ = false;
};

#else  // no TLS library: the same classes; constructing one says how to build TLS in

// The HTTP client refuses https:// URLs up front without a TLS library.
inline constexpr bool tls_built_in = false;

[[noreturn]] inline void throw_tls_not_built_in() {
  throw tls_error(std::string("TLS is not built in: ") + how_to_build_tls_in);
}

class tls_context_state {
 public:
  explicit tls_context_state(bool) { throw_tls_not_built_in(); }
  void load_verify_locations(const std::string&, const std::string&) {}
  void load_cert_chain(const std::string&, const std::string&) {}
  void set_verify(bool) {}
  void set_alpn_protocols(const std::vector<std::string>&) {}
  void set_min_version(tls_version) {}
  void set_max_version(tls_version) {}
  bool is_server() const noexcept { return false; }
  bool verifies() const noexcept { return true; }
};

class tls_engine {
 public:
  tls_engine(std::shared_ptr<tls_context_state>, std::string_view) { throw_tls_not_built_in(); }
  void feed(std::span<const char>) {}
  bool has_output() const noexcept { return false; }
  void take_output(std::vector<char>&) {}
  tls_step handshake() { return tls_step::failed; }
  tls_step read(std::span<char>, std::size_t& produced) {
    produced = 0;
    return tls_step::failed;
  }
  bool write(std::string_view) { return false; }
  void shutdown() noexcept {}
  bool has_buffered_input() const noexcept { return false; }
  std::string_view alpn_protocol() const noexcept { return {}; }
  std::optional<tls_version> version() const noexcept { return std::nullopt; }
  const std::string& error() const noexcept { return error_; }
  bool certificate_error() const noexcept { return false; }

 private:
  std::string error_;
};

#endif  // CORO_LOOP_OPENSSL

}  // namespace detail

inline tls_context tls_context::client() {
  tls_context made;
  made.state_ = std::make_shared<detail::tls_context_state>(false);
  return made;
}
inline tls_context tls_context::server(const std::string& certificate_file, const std::string& key_file) {
  tls_context made;
  made.state_ = std::make_shared<detail::tls_context_state>(true);
  made.state_->load_cert_chain(certificate_file, key_file);
  return made;
}
inline tls_context& tls_context::load_verify_locations(const std::string& ca_file, const std::string& ca_directory) {
  get("load_verify_locations").load_verify_locations(ca_file, ca_directory);
  return *this;
}
inline tls_context& tls_context::load_cert_chain(const std::string& certificate_file, const std::string& key_file) {
  get("load_cert_chain").load_cert_chain(certificate_file, key_file);
  return *this;
}
inline tls_context& tls_context::set_verify(bool verify) {
  get("set_verify").set_verify(verify);
  return *this;
}
inline tls_context& tls_context::set_alpn_protocols(const std::vector<std::string>& protocols) {
  get("set_alpn_protocols").set_alpn_protocols(protocols);
  return *this;
}
inline tls_context& tls_context::set_min_version(tls_version version) {
  get("set_min_version").set_min_version(version);
  return *this;
}
inline tls_context& tls_context::set_max_version(tls_version version) {
  get("set_max_version").set_max_version(version);
  return *this;
}
inline bool tls_context::is_server() const { return get("is_server").is_server(); }
inline bool tls_context::verifies() const { return get("verifies").verifies(); }
inline detail::tls_context_state& tls_context::get(const char* operation) const {
  if (state_ == nullptr) {
    throw invalid_state_error(std::string("tls_context::") + operation +
                              ": empty context (make one with tls_context::client() or ::server())");
  }
  return *state_;
}

// --- 9.6 Streams ---

/// Thrown by read_exactly (and read_until at end of stream) when the stream
/// ended first (asyncio.IncompleteReadError); partial holds what was read.
class incomplete_read_error : public std::runtime_error {
 public:
  incomplete_read_error(std::string partial_data, std::size_t expected_bytes)
      : std::runtime_error("coro_loop::incomplete_read_error: " + std::to_string(partial_data.size()) +
                           " bytes read before the end of the stream, " +
                           (expected_bytes == static_cast<std::size_t>(-1) ? std::string("delimiter not found")
                                                                           : std::to_string(expected_bytes) + " expected")),
        partial(std::move(partial_data)),
        expected(expected_bytes) {}
  std::string partial;
  std::size_t expected;  // SIZE_MAX when a delimiter was expected
};

/// Thrown by read_until / read_line when the delimiter is not within the
/// limit (asyncio.LimitOverrunError), and by read() to the end and read_exactly
/// past stream_options::max_read; consumed says how much was buffered (and stays so).
class limit_overrun_error : public std::runtime_error {
 public:
  limit_overrun_error(std::size_t consumed_bytes, std::size_t limit)
      : limit_overrun_error(consumed_bytes, "delimiter not found within " + std::to_string(limit) + " bytes") {}
  /// `what` says which limit was passed and how to raise it.
  limit_overrun_error(std::size_t consumed_bytes, const std::string& what)
      : std::runtime_error("coro_loop::limit_overrun_error: " + what), consumed(consumed_bytes) {}
  std::size_t consumed;
};

/// Options of a stream (open_connection, start_server).
struct stream_options {
  std::size_t limit = 64 * 1024;       // read_until / read_line give up past this (asyncio's limit)
  std::size_t max_read = 64u << 20;    // read() to the end and read_exactly() give up past this;
                                       // stream::npos: no limit (asyncio has none)
  std::size_t high_water = 64 * 1024;  // drain() waits while more than this is unsent...
  std::size_t low_water = 16 * 1024;   // ...until no more than this is
  std::size_t read_chunk = 64 * 1024;  // bytes asked of the OS per read
  bool no_delay = true;                // TCP_NODELAY on TCP sockets
};

namespace detail {

// Ciphertext asked of the OS per recv on a TLS stream: two full records.
// More buys little (decryption costs far more than the system call) and
// would be held by every connection.
inline constexpr std::size_t tls_receive_chunk = 32 * 1024;

// What TLS adds to a stream: the engine, the buffer ciphertext is received
// into, and the name its errors give the peer. A plain stream has none, and
// pays for TLS only the test of that null pointer.
struct tls_layer {
  tls_layer(const tls_context& context, std::string_view server_name, std::string peer)
      : engine(checked(context), server_name), label(std::move(peer)) {}
  std::span<char> receive_space(std::size_t read_chunk) {
    if (ciphertext == nullptr) {
      capacity = std::min(read_chunk, tls_receive_chunk);
      ciphertext.reset(new char[capacity]);
    }
    return {ciphertext.get(), capacity};
  }
  [[noreturn]] void throw_error(const char* operation) const {
    const std::string what = std::string(operation) + " " + label + ": " + engine.error();
    if (engine.certificate_error()) throw tls_certificate_error(what);
    throw tls_error(what);
  }
  static std::shared_ptr<tls_context_state> checked(const tls_context& context) {
    if (!context.valid()) {
      throw invalid_state_error("tls: empty tls_context (make one with tls_context::client() or ::server())");
    }
    return tls_context_access::state(context);
  }

  tls_engine engine;
  std::string label;  // "127.0.0.1:8443", or "localhost (127.0.0.1:8443)" when a name was asked for
  std::unique_ptr<char[]> ciphertext;
  std::size_t capacity = 0;
  bool handshake_done = false;  // until then the stream's own reads and writes are refused
};

// Everything a stream owns, at a fixed address: operations in flight point here.
// A stream runs over a connected socket, or over one end of a pipe (a child
// process's stdin, stdout or stderr, 9.9): then it reads and writes with
// read(2)/write(2) (ReadFile/WriteFile on Windows) instead of recv/send, and
// write_eof() closes the pipe, the only way a pipe's reader sees the end.
class stream_state {
 public:
  stream_state(socket connection, const stream_options& options, bool over_pipe = false)
      : socket_(std::move(connection)), options_(options), pipe_(over_pipe) {
    send_.kind = pipe_ ? io_kind::write : io_kind::send;
    send_.handle = socket_.handle();
    send_.complete = &on_sent;
    send_.stream = this;
    label_ = socket_.label();
  }
  stream_state(const stream_state&) = delete;
  stream_state& operator=(const stream_state&) = delete;
  ~stream_state() {
    if (sending_) abandon_send();
    close_handle();
  }

  bool over_pipe() const noexcept { return pipe_; }
  io_kind read_kind() const noexcept { return pipe_ ? io_kind::read : io_kind::recv; }
  // Closes the socket or the pipe (its registration dropped first). A pipe on
  // Windows is a HANDLE: CloseHandle, not closesocket.
  void close_handle() noexcept {
#if defined(CORO_LOOP_WINDOWS)
    if (pipe_) {
      if (socket_.is_open()) ::CloseHandle(reinterpret_cast<HANDLE>(socket_.release()));
      return;
    }
#endif
    socket_.close();
  }

  // --- reading
  std::string_view buffered() const noexcept { return {input_.get() + input_begin_, input_end_ - input_begin_}; }
  void consume(std::size_t count) noexcept {
    input_begin_ += std::min(count, input_end_ - input_begin_);
    // A read in flight writes at input_end_: nothing moves while one is.
    if (input_begin_ != input_end_ || reading_) return;
    input_begin_ = input_end_ = 0;
    // A buffer grown for one large read (read_exactly(n), read() to the end)
    // is not kept for the connection's lifetime.
    if (input_capacity_ > 4 * options_.read_chunk) {
      input_.reset();
      input_capacity_ = 0;
    }
  }
  std::string take(std::size_t count) {
    std::string taken(buffered().substr(0, count));
    consume(taken.size());
    return taken;
  }
  // Room for the next read, compacting or growing the buffer. Growth
  // doubles, but stops at room for `needed` more bytes (or one read_chunk, if
  // larger), and goes straight there once doubling comes within a read_chunk
  // of it: a read bounded by max_read or by n allocates about that much, not
  // twice it.
  std::span<char> free_space(std::size_t needed = static_cast<std::size_t>(-1)) {
    if (input_capacity_ - input_end_ < options_.read_chunk / 4 + 1) {
      if (input_begin_ > 0) {
        std::memmove(input_.get(), input_.get() + input_begin_, input_end_ - input_begin_);
        input_end_ -= input_begin_;
        input_begin_ = 0;
      }
      if (input_capacity_ - input_end_ < options_.read_chunk / 4 + 1) {
        // Uninitialised on purpose: zeroing 64 KiB per new connection cost
        // more than the rest of a short exchange.
        std::size_t capacity = std::max(input_capacity_ * 2, input_end_ + options_.read_chunk);
        const std::size_t enough = std::max(needed, options_.read_chunk);
        if (capacity - input_end_ + options_.read_chunk >= enough) capacity = input_end_ + enough;
        std::unique_ptr<char[]> grown(new char[capacity]);
        if (input_end_ > 0) std::memcpy(grown.get(), input_.get(), input_end_);
        input_ = std::move(grown);
        input_capacity_ = capacity;
      }
    }
    return {input_.get() + input_end_, std::min(input_capacity_ - input_end_, options_.read_chunk)};
  }
  void filled(std::size_t count) noexcept { input_end_ += count; }

  // --- writing
  std::size_t unsent() const noexcept { return in_flight_.size() - in_flight_begin_ + output_.size(); }
  void write(std::string_view data) {
    if (closing_) throw invalid_state_error("stream::write: the stream is closing");
    if (write_error_ != 0) throw_write_error();
    if (eof_written_) throw invalid_state_error("stream::write: write_eof() was called");
    if (tls_ != nullptr) {
      encrypt(data);
    } else {
      output_.insert(output_.end(), data.begin(), data.end());
    }
    if (!sending_) send_some();
  }
  [[noreturn]] void throw_write_error() const {
    throw_system_error(write_error_, (pipe_ ? "write " : "send ") + label_);
  }
  void write_eof() {
    if (eof_written_ || closing_) return;
    if (tls_ != nullptr) {
      if (!tls_->handshake_done) throw invalid_state_error("stream::write_eof: the TLS handshake has not finished");
      // TLS ends its data with close_notify, after the records buffered; the
      // TCP write side is shut once that is sent (after_flush).
      tls_->engine.shutdown();
      tls_->engine.take_output(output_);
      eof_written_ = true;
      if (!sending_) send_some();
      return;
    }
    eof_written_ = true;
    if (!sending_) shut_write_side();
  }
  // Sends what the engine produced by itself: a handshake flight, the alert
  // that tells the peer why a handshake or a read failed, a reply to a
  // post-handshake message. (OpenSSL answers a TLS 1.3 key update with the next
  // write, ahead of its records.) Dropped once the socket is closed or a send failed.
  void send_tls_output() {
    if (!tls_->engine.has_output()) return;
    if (closed_ || write_error_ != 0) {
      std::vector<char> dropped;
      tls_->engine.take_output(dropped);
      return;
    }
    tls_->engine.take_output(output_);
    if (!sending_) send_some();
  }

  // --- closing
  void close() {
    if (closing_) return;
    closing_ = true;
    if (read_in_flight_ != nullptr) event_loop_of().backend().cancel(*read_in_flight_);
    if (tls_ != nullptr && tls_->handshake_done && !eof_written_ && write_error_ == 0 && !closed_) {
      // close_notify after the buffered records, so that the peer can tell this
      // end from a cut (RFC 8446 section 6.1). Nobody waits for the peer's: the
      // close is over once this is sent, as a plain stream's.
      tls_->engine.shutdown();
      tls_->engine.take_output(output_);
      if (!sending_) {
        try {
          send_some();
        } catch (...) {
          finish_close();
        }
        return;
      }
    }
    if (!sending_) finish_close();
  }
  void abort() {
    closing_ = true;
    drop_unsent();
    if (sending_) abandon_send();
    if (read_in_flight_ != nullptr) event_loop_of().backend().cancel(*read_in_flight_);
    finish_close();
  }

  socket socket_;
  stream_options options_;
  std::string label_;
  address peer_;
  std::unique_ptr<tls_layer> tls_;          // null unless TLS runs on this stream
  io_operation* read_in_flight_ = nullptr;  // a parked recv, cancelled by close()
  intrusive_list drain_waiters_;
  intrusive_list close_waiters_;
  int write_error_ = 0;
  bool eof_ = false;
  bool reading_ = false;
  bool closing_ = false;
  bool closed_ = false;

  // The stream's one reader, from construction to the end of its scope. Not a class local to the
  // coroutines that read: g++ 12 crashes mangling a coroutine's local class read from a precompiled
  // header.
  class read_claim {
   public:
    explicit read_claim(stream_state& state) noexcept : state_(&state) { state.reading_ = true; }
    read_claim(const read_claim&) = delete;
    read_claim& operator=(const read_claim&) = delete;
    ~read_claim() { state_->reading_ = false; }

   private:
    stream_state* state_;
  };

 private:
  static loop_core& event_loop_of() { return running_core(); }
  void encrypt(std::string_view data) {
    if (!tls_->handshake_done) throw invalid_state_error("stream::write: the TLS handshake has not finished");
    if (!tls_->engine.write(data)) tls_->throw_error("tls write to");
    tls_->engine.take_output(output_);
  }
  // Sends from the buffer until it is empty or the OS would block; a parked
  // send finishes in on_sent, on the loop thread, with no task involved.
  // Bytes in flight stay in in_flight_, which nothing else touches while a
  // send may point into it; write() appends to output_, swapped in later.
  void send_some() {
    for (;;) {
      if (in_flight_begin_ == in_flight_.size()) {
        in_flight_.clear();
        in_flight_begin_ = 0;
        in_flight_.swap(output_);
        if (in_flight_.empty()) break;
      }
      send_.buffer = in_flight_.data() + in_flight_begin_;
      send_.length = in_flight_.size() - in_flight_begin_;
      if (!event_loop_of().backend().start(send_)) {
        sending_ = true;
        return;
      }
      if (!sent(send_)) return;
    }
    after_flush();
  }
  // Accounts a finished send; false after an error.
  bool sent(const io_operation& operation) noexcept {
    if (operation.error != 0) {
      write_error_ = operation.error;
      drop_unsent();
      grant_all(drain_waiters_);
      if (closing_) finish_close();
      return false;
    }
    in_flight_begin_ += static_cast<std::size_t>(operation.result);
    if (unsent() <= options_.low_water) grant_all(drain_waiters_);
    return true;
  }
  static void on_sent(io_operation* operation) noexcept {
    stream_state* self = static_cast<send_operation*>(operation)->stream;
    self->sending_ = false;
    if (!self->sent(*operation)) return;
    try {
      self->send_some();
    } catch (...) {
      self->write_error_ = EIO;
      self->grant_all_on_error();
    }
  }
  void grant_all_on_error() noexcept {
    grant_all(drain_waiters_);
    if (closing_) finish_close();
  }
  void after_flush() {
    if (eof_written_) shut_write_side();
    if (closing_) finish_close();
  }
  void shut_write_side() noexcept {
    if (pipe_) {
      close_handle();
    } else {
      ::shutdown(socket_.handle(), shut_write);
    }
  }
  void abandon_send() noexcept {
    if (loop_core* loop = thread_loop_slot(); loop != nullptr && !loop->is_closed()) loop->backend().abandon(send_);
    sending_ = false;
  }
  void finish_close() noexcept {
    if (closed_) return;
    closed_ = true;
    close_handle();
    grant_all(close_waiters_);
    grant_all(drain_waiters_);
  }

  std::unique_ptr<char[]> input_;  // input_capacity_ bytes; [input_begin_, input_end_) hold data
  std::size_t input_capacity_ = 0;
  std::size_t input_begin_ = 0;
  std::size_t input_end_ = 0;
  void drop_unsent() noexcept {
    output_.clear();
    in_flight_.clear();
    in_flight_begin_ = 0;
  }
  std::vector<char> output_;     // written, not yet handed to a send
  std::vector<char> in_flight_;  // what the current send reads from
  std::size_t in_flight_begin_ = 0;

  // The background send; its completion finds the stream through it.
  struct send_operation : io_operation {
    stream_state* stream = nullptr;
  } send_;
  bool sending_ = false;
  bool eof_written_ = false;
  bool pipe_ = false;
};

// A recv (a read, over a pipe) into the stream's buffer. close() cancels it:
// that reads as the end of the stream, while the task's own cancel stays
// cancelled_error.
class stream_recv : public io_awaiter {
 public:
  stream_recv(stream_state& state, std::span<char> space)
      : io_awaiter(state.read_kind(), state.socket_.handle(), space.data(), space.size(),
                   state.over_pipe() ? "read" : "recv", &state.label_),
        state_(&state) {}
  bool await_suspend(std::coroutine_handle<> caller) {
    const bool suspended = io_awaiter::await_suspend(caller);
    if (suspended) state_->read_in_flight_ = this;
    return suspended;
  }
  std::size_t await_resume() {
    state_->read_in_flight_ = nullptr;
    if (!cancelled_by_task() && error == ECANCELED && state_->closing_) return 0;
    return io_awaiter::await_resume();
  }
  ~stream_recv() {
    if (state_->read_in_flight_ == this) state_->read_in_flight_ = nullptr;
  }

 private:
  stream_state* state_;
};

// A task parked until the stream's unsent bytes fall to the low-water mark,
// or until it is closed.
class stream_waiter : private parked_waiter {
 public:
  stream_waiter(intrusive_list& waiters, const char* operation) noexcept : waiters_(&waiters), operation_(operation) {}
  bool await_ready() const noexcept { return false; }
  bool await_suspend(std::coroutine_handle<> caller) { return park(*waiters_, caller, waiting, operation_); }
  void await_resume() const { throw_if_cancelled(); }

 private:
  static void describe(const cancellable_wait& wait, wait_report& report) {
    report.text = static_cast<const stream_waiter&>(wait).operation_;
  }
  static constexpr wait_kind waiting = parking("stream", &describe);
  intrusive_list* waiters_;
  const char* operation_;
};

// A TLS stream's fill(): decrypts what the engine holds, receiving more
// ciphertext when it needs it. 0 at the end, which is the peer's close_notify
// or this stream's own close(). The socket's end without close_notify is a
// truncation and throws: a close-delimited body cut there must not pass for
// a whole one.
CORO_LOOP_COROUTINE
task<std::size_t> receive_decrypted(stream_state& state, std::size_t needed, std::span<char> direct) {
  tls_layer& tls = *state.tls_;
  const bool into_buffer = direct.empty();
  for (;;) {
    std::size_t produced = 0;
    const tls_step step = tls.engine.read(into_buffer ? state.free_space(needed) : direct, produced);
    state.send_tls_output();
    if (produced > 0) {
      if (into_buffer) state.filled(produced);
      co_return produced;
    }
    if (step == tls_step::closed || state.closing_) co_return 0;
    if (step == tls_step::failed) tls.throw_error("tls read from");
    stream_recv receive(state, tls.receive_space(state.options_.read_chunk));
    const std::size_t received = co_await receive;
    if (received == 0) {
      if (state.closing_) co_return 0;
      throw tls_eof_error("tls read from " + tls.label +
                          ": the peer closed the connection without close_notify (the data may be truncated)");
    }
    tls.engine.feed(std::span<const char>(tls.ciphertext.get(), received));
  }
}

// The handshake, to its end, through the stream's own recv and send.
CORO_LOOP_COROUTINE
task<void> run_tls_handshake(stream_state& state) {
  tls_layer& tls = *state.tls_;
  for (;;) {
    const tls_step step = tls.engine.handshake();
    state.send_tls_output();  // the next flight, or the alert that tells the peer why not
    if (step == tls_step::done) break;
    if (step == tls_step::failed) tls.throw_error("tls handshake with");
    if (step == tls_step::closed) {
      throw tls_error("tls handshake with " + tls.label + ": the peer sent close_notify before the handshake finished");
    }
    stream_recv receive(state, tls.receive_space(state.options_.read_chunk));
    const std::size_t received = co_await receive;
    if (received == 0) {
      throw tls_error("tls handshake with " + tls.label +
                      (state.closing_ ? ": the stream was closed" : ": the peer closed the connection"));
    }
    tls.engine.feed(std::span<const char>(tls.ciphertext.get(), received));
  }
  tls.handshake_done = true;
}

// stream::start_tls: the engine over the stream, then the handshake within
// tls.handshake_timeout. A handshake that fails, times out or is cancelled
// aborts the stream: nothing half-secured stays usable.
CORO_LOOP_COROUTINE
task<void> upgrade_to_tls(stream_state& state, const tls_options& tls, std::string server_name) {
  std::string label = state.label_;
  const bool server = tls.context.valid() && tls.context.is_server();
  if (!server && !server_name.empty() && server_name != state.peer_.host()) {
    label = server_name + " (" + label + ")";
  }
  auto layer = std::make_unique<tls_layer>(tls.context, server_name, std::move(label));
  // Bytes read past the point where TLS begins (a ClientHello sent right
  // behind a STARTTLS line) are TLS already.
  if (!state.buffered().empty()) {
    layer->engine.feed(state.buffered());
    state.consume(state.buffered().size());
  }
  state.tls_ = std::move(layer);
  const stream_state::read_claim reading(state);
  try {
    auto handshaking = run_tls_handshake(state);
    co_await timeout(tls.handshake_timeout, std::move(handshaking));
  } catch (const timeout_error&) {
    state.abort();
    const auto limit = std::chrono::duration_cast<std::chrono::milliseconds>(tls.handshake_timeout);
    throw timeout_error("tls handshake with " + state.tls_->label + ": not finished within " +
                        std::to_string(limit.count()) + " ms (tls_options::handshake_timeout)");
  } catch (...) {
    state.abort();
    throw;
  }
}

// Makes the streams of 9.9 over pipes (defined there).
struct stream_access;

}  // namespace detail

/// A connected byte stream (asyncio's StreamReader and StreamWriter in one
/// object). Reads are buffered in large chunks; write() buffers and sends in
/// the background; drain() applies backpressure. Move-only; loop thread only.
/// Destroying a stream aborts it: call close() and co_await wait_closed() to be
/// sure buffered bytes were sent.
class stream {
 public:
  /// read()'s default: read to the end of the stream.
  static constexpr std::size_t npos = static_cast<std::size_t>(-1);
  /// An empty stream (a moved-from one too): reading, writing or waiting on it throws invalid_state_error.
  stream() noexcept = default;
  /// Wraps a connected socket.
  explicit stream(socket connection, stream_options options = {})
      : stream(std::move(connection), std::nullopt, options) {}
  /// Wraps a connected socket whose peer is already known (from connect or
  /// accept): saves the getpeername call.
  stream(socket connection, const address& peer, stream_options options = {})
      : stream(std::move(connection), std::optional<address>(peer), options) {}

 private:
  friend struct detail::stream_access;
  explicit stream(std::unique_ptr<detail::stream_state> state) noexcept : state_(std::move(state)) {}
  stream(socket connection, std::optional<address> known_peer, stream_options options)
      : state_(std::make_unique<detail::stream_state>(std::move(connection), options)) {
    if (state_->socket_.is_open()) {
      if (known_peer.has_value()) {
        state_->peer_ = *known_peer;
      } else {
        try {
          state_->peer_ = state_->socket_.peer_address();
        } catch (const std::system_error&) {
        }
      }
      if (options.no_delay && (state_->peer_.family() == AF_INET || state_->peer_.family() == AF_INET6)) {
        const int one = 1;
        ::setsockopt(state_->socket_.handle(), IPPROTO_TCP, TCP_NODELAY, reinterpret_cast<const char*>(&one),
                     sizeof one);
      }
    }
  }

 public:
  /// False for an empty stream.
  explicit operator bool() const noexcept { return state_ != nullptr; }

  // --- reading ---
  /// Up to n bytes (at least 1 unless at the end); empty at the end of the
  /// stream. With no argument, everything until the end (asyncio's read(-1)),
  /// but limit_overrun_error once more than max_read bytes came (they stay buffered).
  CORO_LOOP_COROUTINE
  task<std::string> read(std::size_t n = npos) {
    detail::stream_state& state = get("read");
    if (n == 0) co_return std::string();
    if (n == npos) {
      const std::size_t max_read = state.options_.max_read;
      while (state.buffered().size() <= max_read) {
        // One byte past max_read is enough to know it was exceeded.
        const std::size_t room = max_read - state.buffered().size();
        const std::size_t needed = room == npos ? npos : room + 1;
        if (co_await read_more(needed, "read") == 0) co_return state.take(npos);
      }
      throw limit_overrun_error(state.buffered().size(),
                                "stream::read: more than " + std::to_string(max_read) +
                                    " bytes before the end of the stream (stream_options::max_read; raise it, or "
                                    "read in parts with read(n))");
    }
    if (state.buffered().empty()) co_await read_more(npos, "read");
    co_return state.take(n);
  }
  /// Up to into.size() bytes into the caller's buffer (Python's readinto): at least 1,
  /// 0 at the end of the stream. Buffered bytes come first; with none, a buffer of at
  /// least stream_options::read_chunk bytes is filled straight from the socket (over TLS,
  /// decrypted straight into it): no copy through the stream's buffer, so a large
  /// transfer into a reused buffer runs at the kernel's copy speed. A smaller buffer is
  /// served through the stream's buffer.
  CORO_LOOP_COROUTINE
  task<std::size_t> read_into(std::span<char> into) {
    detail::stream_state& state = get("read_into");
    if (into.empty()) co_return 0;
    if (state.buffered().empty()) {
      const bool direct = into.size() >= state.options_.read_chunk;
      if (direct) co_return co_await read_more(into.size(), "read_into", into);
      co_await read_more(npos, "read_into");
    }
    const std::string_view data = state.buffered();
    const std::size_t count = std::min(data.size(), into.size());
    if (count > 0) std::memcpy(into.data(), data.data(), count);
    state.consume(count);
    co_return count;
  }
  /// Exactly n bytes; incomplete_read_error (with the partial data) if the stream ends first.
  /// An n over max_read is refused at once with limit_overrun_error, nothing read.
  CORO_LOOP_COROUTINE
  task<std::string> read_exactly(std::size_t n) {
    detail::stream_state& state = get("read_exactly");
    if (n > state.options_.max_read) {
      throw limit_overrun_error(state.buffered().size(),
                                "stream::read_exactly: " + std::to_string(n) + " bytes asked for, more than " +
                                    std::to_string(state.options_.max_read) + " (stream_options::max_read)");
    }
    while (state.buffered().size() < n) {
      if (co_await read_more(n - state.buffered().size(), "read_exactly") == 0) {
        throw incomplete_read_error(state.take(npos), n);
      }
    }
    co_return state.take(n);
  }
  /// Data up to and including `delimiter`. limit_overrun_error when it is not
  /// found within the stream's limit (the data stays buffered);
  /// incomplete_read_error (with the partial data) when the stream ends first.
  CORO_LOOP_COROUTINE
  task<std::string> read_until(std::string delimiter = "\n") {
    detail::stream_state& state = get("read_until");
    if (delimiter.empty()) throw std::invalid_argument("read_until: empty delimiter");
    std::size_t searched = 0;
    for (;;) {
      const std::string_view data = state.buffered();
      const std::size_t found = data.find(delimiter, searched);
      if (found != std::string_view::npos) {
        if (found + delimiter.size() > state.options_.limit) throw limit_overrun_error(found, state.options_.limit);
        co_return state.take(found + delimiter.size());
      }
      if (data.size() > state.options_.limit) throw limit_overrun_error(data.size(), state.options_.limit);
      searched = data.size() >= delimiter.size() ? data.size() - delimiter.size() + 1 : 0;
      if (co_await fill() == 0) throw incomplete_read_error(state.take(npos), npos);
    }
  }
  /// One line including "\n"; at the end of the stream, what is left (maybe
  /// empty). A line longer than the limit is discarded (up to its "\n", or
  /// all that is buffered) and limit_overrun_error thrown, as asyncio's readline.
  CORO_LOOP_COROUTINE
  task<std::string> read_line() {
    detail::stream_state& state = get("read_line");
    std::exception_ptr overrun;
    try {
      co_return co_await read_until("\n");
    } catch (const incomplete_read_error& error) {
      co_return error.partial;
    } catch (const limit_overrun_error&) {
      overrun = std::current_exception();
    }
    const std::size_t newline = state.buffered().find('\n');
    state.consume(newline == std::string_view::npos ? npos : newline + 1);
    std::rethrow_exception(overrun);
  }
  /// True once the end of the stream was read and nothing is buffered.
  bool at_eof() const noexcept { return state_ != nullptr && state_->eof_ && state_->buffered().empty(); }
  /// Whether the peer may have sent bytes, the end of the stream or an error that no read
  /// took yet (buffered() aside); asks the OS without waiting. With `as_of_last_poll`, a
  /// backend that knows the last read drained the socket says no without a system call,
  /// blind to what arrived since its last poll: for callers that can recover from that.
  bool input_pending(bool as_of_last_poll = false) const noexcept {
    if (state_ == nullptr) return false;
    if (state_->tls_ != nullptr && state_->tls_->engine.has_buffered_input()) return true;
    const native_handle connection = state_->socket_.handle();
#if defined(CORO_LOOP_WINDOWS)
    if (state_->over_pipe()) {  // WSAPoll knows sockets only
      DWORD available = 0;
      return !::PeekNamedPipe(reinterpret_cast<HANDLE>(connection), nullptr, 0, nullptr, &available, nullptr) ||
             available > 0;
    }
#endif
    if (auto* loop = detail::thread_loop_slot();
        as_of_last_poll && loop != nullptr && loop->backend().read_would_block(connection)) {
      return false;
    }
    return detail::ready_now(connection, true);
  }

  /// The bytes read but not yet consumed (zero-copy access for parsers).
  std::string_view buffered() const noexcept { return state_ != nullptr ? state_->buffered() : std::string_view(); }
  /// Drops the first `count` buffered bytes (after parsing buffered() in place).
  void consume(std::size_t count) noexcept {
    if (state_ != nullptr) state_->consume(count);
  }
  /// Reads more into the buffer; returns the bytes added, 0 at the end of the
  /// stream. One reader at a time (invalid_state_error otherwise).
  CORO_LOOP_COROUTINE
  task<std::size_t> fill() { return read_more(npos, "fill"); }

  // --- writing ---
  /// Buffers `data` and starts sending it; never waits. Throws the error of an
  /// earlier failed send, or invalid_state_error after close().
  void write(std::string_view data) { get("write").write(data); }
  /// Waits while more than high_water bytes are unsent, until no more than
  /// low_water are (asyncio's drain). Throws the send error, if any.
  CORO_LOOP_COROUTINE
  task<void> drain() {
    detail::stream_state& state = get("drain");
    if (state.write_error_ != 0) state.throw_write_error();
    if (state.unsent() <= state.options_.high_water) co_return;
    while (state.unsent() > state.options_.low_water && state.write_error_ == 0 && !state.closed_) {
      detail::stream_waiter waiting(state.drain_waiters_, "stream::drain");
      co_await waiting;
    }
    if (state.write_error_ != 0) state.throw_write_error();
  }
  /// Bytes written and not yet sent.
  std::size_t write_buffer_size() const noexcept { return state_ != nullptr ? state_->unsent() : 0; }
  /// Half-closes: the peer reads the end of the stream once the buffer is sent. Over TLS
  /// that end is close_notify (reading goes on until the peer's); asyncio refuses write_eof
  /// there, since a TLS 1.2 peer may answer it by closing at once (TLS 1.3 allows half-close).
  void write_eof() { get("write_eof").write_eof(); }

  // --- TLS ---
  /// Upgrades this plain stream to TLS (asyncio's StreamWriter.start_tls): a client handshake
  /// with a client context, verifying tls.server_hostname or else the peer's IP address; a
  /// server handshake with a server context. Bytes already buffered are taken as TLS. Throws
  /// tls_error, tls_certificate_error, std::system_error, timeout_error (past
  /// tls.handshake_timeout) or cancelled_error, and then the stream is aborted.
  CORO_LOOP_COROUTINE
  task<void> start_tls(tls_options tls) {
    detail::stream_state& state = get("start_tls");
    if (state.tls_ != nullptr) throw invalid_state_error("stream::start_tls: TLS runs on this stream already");
    if (state.reading_) throw invalid_state_error("stream::start_tls: another task is reading");
    if (state.closing_ || state.eof_) throw invalid_state_error("stream::start_tls: the stream is closing or ended");
    std::string server_name = tls.server_hostname.empty() ? state.peer_.host() : tls.server_hostname;
    co_await detail::upgrade_to_tls(state, tls, std::move(server_name));
  }
  /// True once TLS was started on this stream (open_connection or start_server with tls, start_tls).
  bool is_tls() const noexcept { return state_ != nullptr && state_->tls_ != nullptr; }
  /// The protocol ALPN chose ("http/1.1"); empty when none was, or without TLS (asyncio's
  /// selected_alpn_protocol()).
  std::string_view selected_alpn_protocol() const noexcept {
    return is_tls() && state_->tls_->handshake_done ? state_->tls_->engine.alpn_protocol() : std::string_view();
  }
  /// The TLS version in use; std::nullopt without TLS (asyncio's SSLObject.version()).
  std::optional<tls_version> negotiated_tls_version() const noexcept {
    return is_tls() && state_->tls_->handshake_done ? state_->tls_->engine.version() : std::nullopt;
  }

  // --- closing ---
  /// Closes once the buffered bytes are sent (over TLS, then close_notify, without waiting
  /// for the peer's); a pending read returns the end of the stream. Idempotent.
  void close() {
    if (state_ != nullptr) state_->close();
  }
  /// Closes now, dropping unsent bytes.
  void abort() {
    if (state_ != nullptr) state_->abort();
  }
  /// True once close() or abort() was called (asyncio's is_closing).
  bool is_closing() const noexcept { return state_ != nullptr && state_->closing_; }
  /// Waits until close() has finished (the buffer sent, the socket closed).
  CORO_LOOP_COROUTINE
  task<void> wait_closed() {
    detail::stream_state& state = get("wait_closed");
    while (!state.closed_) {
      detail::stream_waiter waiting(state.close_waiters_, "stream::wait_closed");
      co_await waiting;
    }
  }

  /// The peer (AF_UNSPEC when getpeername failed), the local address (std::system_error on
  /// failure), and the descriptor (-1 when empty or closed).
  const address& peer_address() const { return get("peer_address").peer_; }
  address local_address() const { return get("local_address").socket_.local_address(); }
  native_handle handle() const noexcept { return state_ != nullptr ? state_->socket_.handle() : -1; }

 private:
  detail::stream_state& get(const char* operation) const {
    if (state_ == nullptr) throw invalid_state_error(std::string("stream::") + operation + ": empty (moved-from) stream");
    return *state_;
  }
  // fill(), growing the buffer no further than room for `needed` more bytes
  // (free_space); or, given `direct` (nothing buffered), the socket read (or
  // decrypted) straight into it. `operation` names the caller in errors.
  CORO_LOOP_COROUTINE
  task<std::size_t> read_more(std::size_t needed, const char* operation, std::span<char> direct = {}) {
    detail::stream_state& state = get(operation);
    if (state.reading_) throw invalid_state_error("stream: read while another task is already reading");
    if (state.eof_ || state.closed_) co_return 0;
    const detail::stream_state::read_claim reading(state);
    if (state.tls_ != nullptr) {
      if (!state.tls_->handshake_done) throw invalid_state_error("stream: read before the TLS handshake finished");
      const std::size_t decrypted = co_await detail::receive_decrypted(state, needed, direct);
      if (decrypted == 0) state.eof_ = true;
      co_return decrypted;
    }
    const bool into_buffer = direct.empty();
    detail::stream_recv receive(state, into_buffer ? state.free_space(needed) : direct);
    const std::size_t received = co_await receive;
    if (received == 0) {
      state.eof_ = true;
    } else if (into_buffer) {
      state.filled(received);
    }
    co_return received;
  }
  std::unique_ptr<detail::stream_state> state_;
};

/// Connects to host:port, trying each resolved address in turn, and returns a
/// stream (asyncio.open_connection). Throws std::system_error naming the
/// address ("connect 127.0.0.1:1: Connection refused"); put it under timeout()
/// to bound the wait.
CORO_LOOP_COROUTINE
task<stream> open_connection(std::string host, std::uint16_t port, stream_options options = {}) {
  const std::vector<address> addresses = co_await resolve(host, port);
  std::vector<std::string> failures;
  std::exception_ptr last_error;
  for (const address& peer : addresses) {
    try {
      socket connection = socket::open(peer.family(), SOCK_STREAM);
      co_await connection.connect(peer);
      co_return stream(std::move(connection), peer, options);
    } catch (const std::system_error& error) {
      failures.push_back(error.what());
      last_error = std::current_exception();
    }
  }
  if (failures.size() == 1) std::rethrow_exception(last_error);
  std::string all = "open_connection " + host + ":" + std::to_string(port) + ": every address failed:";
  for (const std::string& failure : failures) all += " [" + failure + "]";
  throw std::system_error(std::make_error_code(std::errc::host_unreachable), all);
}

/// Connects as open_connection(host, port) does, then runs a TLS client handshake (asyncio's
/// open_connection(..., ssl=context)): the certificate must be valid for tls.server_hostname,
/// or else for `host`. Throws std::system_error, tls_error, tls_certificate_error ("tls
/// handshake with 127.0.0.1:8443: certificate verify failed: self-signed certificate"), or
/// timeout_error past tls.handshake_timeout; timeout() bounds the whole, cancelling cleanly.
CORO_LOOP_COROUTINE
task<stream> open_connection(std::string host, std::uint16_t port, tls_options tls,
                             stream_options options = {}) {
  if (!tls.context.valid() || tls.context.is_server()) {
    throw invalid_state_error("open_connection " + host + ":" + std::to_string(port) +
                              ": TLS needs a client context (tls_context::client())");
  }
  stream connection = co_await open_connection(host, port, options);
  if (tls.server_hostname.empty()) tls.server_hostname = std::move(host);
  co_await connection.start_tls(std::move(tls));
  co_return connection;
}

#if defined(CORO_LOOP_POSIX)
/// Connects to the Unix domain socket at `path` (POSIX only).
CORO_LOOP_COROUTINE
task<stream> open_unix_connection(std::string path, stream_options options = {}) {
  const address peer = address::unix_path(path);
  socket connection = socket::open(AF_UNIX, SOCK_STREAM);
  co_await connection.connect(peer);  // labels the socket with the path
  co_return stream(std::move(connection), options);
}
#else
template <class Path>
task<stream> open_unix_connection(Path, stream_options = {}) {
  static_assert(detail::posix_only<Path>, "coro_loop: open_unix_connection (Unix domain sockets) is POSIX only");
  co_return stream();
}
#endif

// --- 9.7 Servers ---

/// Options of start_server / start_unix_server.
struct server_options {
  int backlog = 100;           // listen(2) backlog, asyncio's default
  bool reuse_address = true;   // SO_REUSEADDR (TCP); ignored on Windows, whose
                               // SO_REUSEADDR would let another socket take the port
  bool reuse_port = false;     // SO_REUSEPORT (TCP); std::invalid_argument on Windows
  stream_options stream = {};  // for every accepted connection
};

namespace detail {

// Shared by the server object, its accept loops and its connection tasks.
struct server_state {
  std::vector<socket> listeners;
  std::vector<address> addresses;
  std::vector<task_ref> accept_tasks;
  intrusive_list connections;  // connection_entry: one per running handler
  intrusive_list idle_waiters;  // wait_closed: until closed and no connection is left
  server_options options;
  std::optional<tls_options> tls;  // each connection's handshake runs in its own task
  std::string unix_path;        // removed again on close
  bool serving = false;

  void close() {
    if (!serving) return;
    serving = false;
    // Through the task itself: this also runs from a destructor, where a
    // handle's misuse check must not throw.
    for (task_ref& accepting : accept_tasks) {
      if (task_promise_base* task = task_ref_access::promise(accepting)) task->cancel();
    }
    accept_tasks.clear();
    for (socket& listener : listeners) listener.close();
#if defined(CORO_LOOP_POSIX)
    if (!unix_path.empty()) ::unlink(unix_path.c_str());
#endif
    notify_if_idle();
  }
  void notify_if_idle() noexcept {
    if (!serving && connections.empty()) grant_all(idle_waiters);
  }
};

// Links a connection's task into its server from the accept on, so that
// close_clients() reaches a handler that has not started yet too. Owned by
// the connection task's frame (a parameter): it goes when the task ends.
struct connection_entry : list_hook {
  explicit connection_entry(std::shared_ptr<server_state> owner) : server(std::move(owner)) {
    server->connections.push_back(*this);
  }
  connection_entry(const connection_entry&) = delete;
  connection_entry& operator=(const connection_entry&) = delete;
  ~connection_entry() {
    intrusive_list::unlink(*this);
    server->notify_if_idle();
  }
  std::shared_ptr<server_state> server;
  task_promise_base* task = nullptr;
};

// A handler's exception is reported, not fatal to the server (asyncio logs it).
// A failed TLS handshake only ends the connection; debug mode reports it (asyncio
// logs it at debug level: an ssl.SSLError is an OSError there).
template <class Handler>
task<void> serve_connection(std::unique_ptr<connection_entry> entry, Handler handler, stream connection) {
  const std::string peer = connection.peer_address().to_string();
  if (entry->server->tls.has_value()) {
    bool secured = false;
    try {
      tls_options tls = *entry->server->tls;
      co_await connection.start_tls(std::move(tls));
      secured = true;
    } catch (const std::exception& error) {
      if (debug_enabled()) {
        std::fprintf(stderr, "coro_loop: connection from %s dropped: %s\n", peer.c_str(), error.what());
      }
    }
    if (!secured) co_return;
  }
  try {
    auto handling = std::invoke(handler, std::move(connection));
    co_await std::move(handling);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "coro_loop: connection handler for %s failed: %s\n", peer.c_str(), error.what());
  } catch (const cancelled_error&) {
    throw;
  } catch (...) {
    std::fprintf(stderr, "coro_loop: connection handler for %s failed with an unknown exception\n", peer.c_str());
  }
}

// asyncio's ACCEPT_RETRY_DELAY.
inline constexpr std::chrono::seconds accept_retry_delay{1};

template <class Handler>
task<void> accept_connections(std::shared_ptr<server_state> server, std::size_t index, Handler handler) {
  for (;;) {
    std::pair<socket, address> accepted;
    std::error_code failure;
    try {
      auto accepting = server->listeners[index].accept();
      accepted = co_await accepting;
    } catch (const std::system_error& error) {
      // A connection reset before it was accepted is skipped, as asyncio does
      // (Windows' AcceptEx reports those; Linux's accept drops them).
      const int code = error.code().value();
      if (error.code().category() == os_error_category() && (code == ECONNABORTED || code == ECONNRESET)) continue;
      failure = error.code();
    }
    if (failure) {
      // Out of descriptors or memory (EMFILE, ENFILE, ENOBUFS, ENOMEM), or
      // another failure of the listener itself: an immediate retry fails
      // again while the connection waits in the backlog. Report once and
      // pause, as asyncio does; closing the server cancels the pause.
      std::fprintf(stderr, "coro_loop: accept failed on %s: %s; retrying in %d s\n",
                   server->addresses[index].to_string().c_str(), failure.message().c_str(),
                   static_cast<int>(accept_retry_delay.count()));
      co_await sleep(accept_retry_delay);
      continue;
    }
    stream connection(std::move(accepted.first), accepted.second, server->options.stream);
    auto entry = std::make_unique<connection_entry>(server);
    connection_entry* linked = entry.get();
    auto serving = create_task(serve_connection<Handler>(std::move(entry), handler, std::move(connection)));
    linked->task = task_ref_access::promise(serving);
  }
}

}  // namespace detail

/// A listening server (asyncio.Server). close() stops accepting and lets the
/// running connections finish; close_clients() cancels them; wait_closed()
/// waits until both are over. Destroying the server closes it (connections
/// keep running). Move-only; loop thread only.
class server {
 public:
  /// Move-only; an empty (default or moved-from) server's queries and waits throw invalid_state_error.
  server() noexcept = default;
  server(server&&) noexcept = default;
  server& operator=(server&&) noexcept = default;
  ~server() {
    if (state_ != nullptr) state_->close();
  }
  /// The bound addresses (port 0 is replaced by the port the OS picked).
  const std::vector<address>& addresses() const { return get("addresses").addresses; }
  /// The first bound port (handy with port 0).
  std::uint16_t port() const {
    const detail::server_state& state = get("port");
    return state.addresses.empty() ? 0 : state.addresses.front().port();
  }
  /// True from start until close() (asyncio's is_serving).
  bool is_serving() const noexcept { return state_ != nullptr && state_->serving; }
  /// Stops accepting and closes the listening sockets; connections go on.
  void close() {
    if (state_ != nullptr) state_->close();
  }
  /// Cancels every running connection handler (asyncio 3.13's close_clients).
  void close_clients() {
    if (state_ == nullptr) return;
    state_->connections.for_each(
        [](detail::list_hook& hook) {
          if (auto* task = static_cast<detail::connection_entry&>(hook).task) task->cancel();
        });
  }
  /// Number of connection handlers running.
  std::size_t connection_count() const noexcept { return state_ != nullptr ? state_->connections.size() : 0; }
  /// Waits until the server is closed and every connection handler finished.
  CORO_LOOP_COROUTINE
  task<void> wait_closed() {
    get("wait_closed");
    std::shared_ptr<detail::server_state> state = state_;
    while (state->serving || !state->connections.empty()) {
      detail::stream_waiter waiting(state->idle_waiters, "server::wait_closed");
      co_await waiting;
    }
  }
  /// Serves until cancelled (then closes the server and rethrows), or until
  /// close() was called and every connection handler finished (then returns).
  CORO_LOOP_COROUTINE
  task<void> serve_forever() {
    get("serve_forever");
    std::shared_ptr<detail::server_state> state = state_;
    try {
      while (state->serving) {
        detail::stream_waiter waiting(state->idle_waiters, "server::serve_forever");
        co_await waiting;
      }
    } catch (const cancelled_error&) {
      state->close();
      throw;
    }
  }

 private:
  template <class Handler>
  friend server start_serving(std::vector<socket> listeners, Handler handler, server_options options,
                              std::string unix_path, std::optional<tls_options> tls);
  detail::server_state& get(const char* operation) const {
    if (state_ == nullptr) throw invalid_state_error(std::string("server::") + operation + ": empty (moved-from) server");
    return *state_;
  }
  std::shared_ptr<detail::server_state> state_;
};

/// Starts an accept loop per listening socket, each connection in its own
/// task running handler(stream), after a TLS handshake when `tls` is given.
/// Used by start_server and start_unix_server.
template <class Handler>
server start_serving(std::vector<socket> listeners, Handler handler, server_options options, std::string unix_path,
                     std::optional<tls_options> tls) {
  auto state = std::make_shared<detail::server_state>();
  state->options = options;
  state->tls = std::move(tls);
  state->unix_path = std::move(unix_path);
  state->listeners = std::move(listeners);
  state->serving = true;
  for (std::size_t i = 0; i < state->listeners.size(); ++i) {
    state->addresses.push_back(state->listeners[i].local_address());
    if (state->unix_path.empty()) state->listeners[i].set_label(state->addresses.back().to_string());
    state->accept_tasks.push_back(create_task(detail::accept_connections<Handler>(state, i, handler)));
  }
  server result;
  result.state_ = std::move(state);
  return result;
}

namespace detail {
// start_server's sockets: bound and listening on each address of host:port.
CORO_LOOP_COROUTINE
task<std::vector<socket>> listen_on(std::string host, std::uint16_t port, server_options options) {
  std::vector<address> addresses;
  if (host.empty()) {
    addresses.push_back(*address::parse("0.0.0.0", port));
  } else {
    addresses = co_await resolve(host, port, AF_UNSPEC, SOCK_STREAM);
  }
  std::vector<socket> listeners;
  for (const address& local : addresses) {
    socket listener = socket::open(local.family(), SOCK_STREAM);
#if defined(CORO_LOOP_WINDOWS)
    // A listening port is not held by TIME_WAIT connections on Windows.
    if (options.reuse_port) throw std::invalid_argument("start_server: reuse_port is not supported on Windows");
#else
    if (options.reuse_address) listener.set_option(SOL_SOCKET, SO_REUSEADDR, 1);
    if (options.reuse_port) listener.set_option(SOL_SOCKET, SO_REUSEPORT, 1);
#endif
    // One socket per family, as asyncio: a v6 socket must not also claim v4.
    if (local.family() == AF_INET6) listener.set_option(IPPROTO_IPV6, IPV6_V6ONLY, 1);
    listener.bind(local);
    listener.listen(options.backlog);
    listeners.push_back(std::move(listener));
  }
  co_return listeners;
}
}  // namespace detail

namespace detail {
// A server's checks of the user's handler, the first statement of its body,
// so that a mistake gets one sentence naming it rather than an error inside
// the header ("'void handling' has incomplete type").
template <class Handler>
void check_connection_handler() noexcept {
  if constexpr (!std::invocable<Handler&, stream>) {
    static_assert(always_false<Handler>,
                  "start_server(handler, ...): handler must be callable as handler(stream), taking each "
                  "connection's coro_loop::stream by value or as stream&&");
  } else if constexpr (!awaitable<std::invoke_result_t<Handler&, stream>>) {
    static_assert(always_false<Handler>,
                  "start_server(handler, ...): handler(stream) must return an awaitable: make it a coroutine "
                  "returning coro_loop::task<void>; this one returns void or a plain value");
  }
}
}  // namespace detail

/// Listens on host:port (every address it resolves to; "" for every IPv4
/// interface, 0.0.0.0 only, where asyncio also binds "::"; pass "::" for IPv6;
/// port 0 picks a free port) and runs handler(stream) for each
/// connection in its own task (asyncio.start_server). A handler's exception is
/// reported on stderr, never fatal; so is a failed accept (out of descriptors):
/// accepting pauses 1 s, then resumes. Throws std::system_error ("bind ...").
template <class Handler>
task<server> start_server(Handler handler, std::string host, std::uint16_t port, server_options options = {}) {
  detail::check_connection_handler<Handler>();
  std::vector<socket> listeners = co_await detail::listen_on(std::move(host), port, options);
  co_return start_serving(std::move(listeners), std::move(handler), options, std::string(), std::nullopt);
}

/// The same, each connection over TLS (asyncio's start_server(..., ssl=context)): the handler
/// gets the stream once its handshake succeeded, within tls.handshake_timeout; a connection
/// whose handshake fails is closed (debug mode says why). `tls` needs a server context.
template <class Handler>
task<server> start_server(Handler handler, std::string host, std::uint16_t port, tls_options tls,
                          server_options options = {}) {
  detail::check_connection_handler<Handler>();
  if (!tls.context.valid() || !tls.context.is_server()) {
    throw invalid_state_error("start_server " + host + ":" + std::to_string(port) +
                              ": TLS needs a server context (tls_context::server(certificate, key))");
  }
  std::vector<socket> listeners = co_await detail::listen_on(std::move(host), port, options);
  co_return start_serving(std::move(listeners), std::move(handler), options, std::string(), std::move(tls));
}

#if defined(CORO_LOOP_POSIX)
/// Listens on a Unix domain socket at `path` (a stale socket file there is
/// removed first, and the file is removed on close). POSIX only.
template <class Handler>
task<server> start_unix_server(Handler handler, std::string path, server_options options = {}) {
  detail::check_connection_handler<Handler>();
  const address local = address::unix_path(path);
  struct stat existing {};
  if (::stat(path.c_str(), &existing) == 0 && S_ISSOCK(existing.st_mode)) ::unlink(path.c_str());
  socket listener = socket::open(AF_UNIX, SOCK_STREAM);
  listener.set_label(path);
  listener.bind(local);
  listener.listen(options.backlog);
  std::vector<socket> listeners;
  listeners.push_back(std::move(listener));
  co_return start_serving(std::move(listeners), std::move(handler), options, std::move(path), std::nullopt);
}
#else
template <class Handler>
task<server> start_unix_server(Handler, std::string, server_options = {}) {
  static_assert(detail::posix_only<Handler>, "coro_loop: start_unix_server (Unix domain sockets) is POSIX only");
  co_return server();
}
#endif

// --- 9.8 Datagrams (UDP) ---

/// A UDP endpoint: send_to / recv_from, awaitable and cancellable. Move-only.
class datagram_endpoint {
 public:
  /// Empty, or over a bound UDP socket (open_datagram_endpoint makes one).
  datagram_endpoint() noexcept = default;
  explicit datagram_endpoint(socket bound) noexcept : socket_(std::move(bound)) {}
  /// Move-only; assigning closes the socket held before.
  datagram_endpoint(datagram_endpoint&& other) noexcept
      : socket_(std::move(other.socket_)),
        receive_buffer_(std::move(other.receive_buffer_)),
        borrower_(std::exchange(other.borrower_, nullptr)) {
    if (borrower_ != nullptr) borrower_->owner_ = this;
  }
  datagram_endpoint& operator=(datagram_endpoint&& other) noexcept {
    if (this != &other) {
      if (borrower_ != nullptr) borrower_->owner_ = nullptr;
      socket_ = std::move(other.socket_);
      receive_buffer_ = std::move(other.receive_buffer_);
      borrower_ = std::exchange(other.borrower_, nullptr);
      if (borrower_ != nullptr) borrower_->owner_ = this;
    }
    return *this;
  }
  ~datagram_endpoint() {
    if (borrower_ != nullptr) borrower_->owner_ = nullptr;
  }

  /// Sends one datagram to `peer`.
  CORO_LOOP_COROUTINE
  task<void> send_to(std::string_view data, address peer) {
    auto sending = socket_.send_to(std::span<const char>(data.data(), data.size()), peer);
    co_await sending;
  }
  /// Receives one datagram and its sender; one longer than max_size is truncated to
  /// max_size bytes (the rest is lost, as with recvfrom). The string holds the datagram only.
  CORO_LOOP_COROUTINE
  task<std::pair<std::string, address>> recv_from(std::size_t max_size = 65536) {
    // The OS writes into a buffer the endpoint keeps for its next receive and
    // only the datagram is copied out: a kept 20-byte datagram must not hold
    // max_size bytes.
    buffer_loan loan(*this, max_size);
    auto receiving = socket_.recv_from(std::span<char>(loan.data(), max_size));
    // Assigned, not bound: g++ 11 has an internal compiler error on a structured
    // binding (or an initialization) from a co_await of a named awaiter.
    std::pair<std::size_t, address> received;
    received = co_await receiving;
    co_return std::pair<std::string, address>(std::string(loan.data(), received.first), received.second);
  }
  /// Receives one datagram into `buffer`: returns {bytes, sender}; one longer than
  /// the buffer is truncated to buffer.size() bytes (asyncio's sock_recvfrom_into).
  detail::recv_from_awaiter recv_from_into(std::span<char> buffer) { return socket_.recv_from(buffer); }
  /// The bound address (std::system_error once closed); close() is idempotent; raw() is the
  /// socket itself, for set_option or connect.
  address local_address() const { return socket_.local_address(); }
  void close() noexcept { socket_.close(); }
  socket& raw() noexcept { return socket_; }

 private:
  // The endpoint's receive buffer, lent to one receive at a time; a second
  // receiver waiting at the same moment uses a buffer of its own. The
  // endpoint's move or destruction redirects or cuts the loan, so a receive
  // that ends later never gives the buffer back to a dead endpoint.
  class buffer_loan {
   public:
    buffer_loan(datagram_endpoint& lender, std::size_t size) {
      if (lender.borrower_ == nullptr) {
        owner_ = &lender;
        lender.borrower_ = this;
        buffer_ = std::move(lender.receive_buffer_);
      }
      if (buffer_.size() < size) buffer_.resize(size);
    }
    buffer_loan(const buffer_loan&) = delete;
    buffer_loan& operator=(const buffer_loan&) = delete;
    ~buffer_loan() {
      if (owner_ == nullptr) return;
      owner_->receive_buffer_ = std::move(buffer_);
      owner_->borrower_ = nullptr;
    }
    char* data() noexcept { return buffer_.data(); }

   private:
    friend class datagram_endpoint;
    datagram_endpoint* owner_ = nullptr;  // null when the buffer is this receive's own
    std::vector<char> buffer_;
  };
  socket socket_;
  std::vector<char> receive_buffer_;  // empty while lent
  buffer_loan* borrower_ = nullptr;   // the receive holding receive_buffer_, if any
};

/// Opens a UDP endpoint bound to host:port (port 0: any free port).
CORO_LOOP_COROUTINE
task<datagram_endpoint> open_datagram_endpoint(std::string host, std::uint16_t port) {
  const std::vector<address> addresses = co_await resolve(host, port, AF_UNSPEC, SOCK_DGRAM);
  if (addresses.empty()) throw std::system_error(std::make_error_code(std::errc::address_not_available), "bind " + host);
  socket bound = socket::open(addresses.front().family(), SOCK_DGRAM);
  bound.bind(addresses.front());
  co_return datagram_endpoint(std::move(bound));
}

// --- 9.9 Subprocesses  >>process ---
// asyncio.create_subprocess_exec / _shell: a child process whose stdin, stdout
// and stderr are inherited, piped (a stream of 9.6 over the parent's end),
// /dev/null, or stderr merged into stdout. Waiting for its exit is one
// backend operation (io_kind::wait_process, 4), so no thread waits per child:
//   Linux (epoll)   a pidfd (pidfd_open, 5.3), readable once the child exits.
//                   Where the kernel refuses pidfd_open (older kernels,
//                   seccomp), a SIGCHLD self-pipe instead: see child_signals.
//   kqueue          EVFILT_PROC with NOTE_EXIT on the pid.
//   Windows (IOCP)  the process handle: a system wait thread posts to the port.
// The exit is then reaped with waitpid(pid, WNOHANG) for that pid only, never
// waitpid(-1): children started by other code are left to it. A returncode is
// the exit code, or minus the signal number on POSIX (asyncio's rule); 255
// when another part of the program reaped the child first (asyncio's too).
//
// Spawning copies no memory: posix_spawn (glibc: clone(CLONE_VM|CLONE_VFORK);
// macOS: a system call), with the three descriptors set up by file actions, the
// working directory by posix_spawn_file_actions_addchdir_np, and every other
// descriptor closed (addclosefrom_np where it exists, POSIX_SPAWN_CLOEXEC_DEFAULT
// on macOS; elsewhere every descriptor of this library is close-on-exec, and
// the program's own must be too). SIGPIPE, which the loop ignores, is reset to
// its default in the child, and the child's signal mask is empty. The program
// is looked up in PATH here, before spawning, so that a missing one is an
// error of the call ("spawn nosuch: No such file or directory"): posix_spawn
// reports a failed exec synchronously on glibc, macOS and FreeBSD, but not
// under qemu-user, which emulates vfork as fork. Windows: CreateProcessW with
// the command line quoted as the C runtime splits it (quote_argument), only the
// child's three handles inherited (PROC_THREAD_ATTRIBUTE_HANDLE_LIST), and
// overlapped named pipes whose parent ends the IOCP backend reads and writes.
//
// A process object destroyed while its child runs hands the child to its loop,
// which reaps it when it exits: no zombie stays behind. A loop that closes
// first makes one last non-blocking attempt; a child still running then is
// reaped by init once this program exits (debug mode names it).

/// What a child's stdin, stdout or stderr is connected to (asyncio.subprocess's None, PIPE,
/// DEVNULL, STDOUT).
enum class stdio : std::uint8_t {
  inherit,    // the parent's own (asyncio's None)
  pipe,       // a pipe: the process's stdin_ / stdout_ / stderr_ stream (PIPE)
  devnull,    // /dev/null, NUL on Windows (DEVNULL)
  to_stdout,  // stderr only: wherever stdout goes (STDOUT)
};

/// Options of create_subprocess_exec / create_subprocess_shell, written in the call:
/// {.stdout_ = stdio::pipe, .cwd = "/tmp"}. Views (the call copies what they name before it
/// returns), so with nothing to destroy, safe inside co_await with GCC 12.
struct process_options {
  stdio stdin_ = stdio::inherit;  // stdin_, stdout_, stderr_: the names without `_` are C macros
  stdio stdout_ = stdio::inherit;
  stdio stderr_ = stdio::inherit;
  std::string_view cwd = {};                   // the child's working directory; empty: this one's
  std::span<const std::string_view> env = {};  // "NAME=value" entries added to this environment
                                               // (replacing a NAME it has); "NAME" alone removes it
  bool replace_env = false;                    // true: env is the child's whole environment
  stream_options streams = {};                 // the pipes' streams; streams.max_read bounds communicate()
};

/// What process::communicate returns: all a piped stdout and stderr carried (empty when not piped).
struct communicate_result {
  std::string stdout_data;
  std::string stderr_data;
};

class process;

namespace detail {

#if defined(CORO_LOOP_WINDOWS)
using process_id = DWORD;
#else
using process_id = pid_t;
#endif

class child_registry;
class process_wait;

// One child process, shared by its process object, the tasks waiting for it
// and, once the process object is gone (orphaned_), its loop's registry,
// which reaps it. Freed when nobody needs it any more: exited (or its loop
// closed), orphaned, and no wait awaiter left that reads its returncode.
class child_process : public list_hook {
 public:
  child_process(child_registry& registry, std::string program) noexcept;
  child_process(const child_process&) = delete;
  child_process& operator=(const child_process&) = delete;

  // Spawned: the pid, and what the backend waits on (invalid_handle: the
  // SIGCHLD fallback, Linux without pidfd_open only).
  void started(process_id pid, native_handle wait_handle);
  process_id pid() const noexcept { return pid_; }
  const std::string& label() const noexcept { return label_; }
  std::optional<int> returncode() const noexcept { return returncode_; }
  bool has_loop() const noexcept { return registry_ != nullptr; }
#if defined(CORO_LOOP_WINDOWS)
  HANDLE process_handle() const noexcept { return reinterpret_cast<HANDLE>(wait_handle_); }
#endif

  // Reaps the child if it has exited; true once its returncode is known. A
  // reap wakes every waiter, and frees an orphan nobody else needs: a caller
  // that is not such a waiter must not touch this after true.
  bool try_reap() noexcept;
  // Makes sure its exit will be noticed (the backend operation parked, or the
  // SIGCHLD watch running); it may be noticed now. Throws what the OS says.
  void watch();
  // Its process object is gone; frees it now if nothing else needs it.
  void orphan() noexcept;
  // Its loop is closing: last attempt, then no loop any more.
  void detach_from_loop() noexcept;
  // A wait awaiter's reference (see process_wait).
  void add_reader() noexcept { ++readers_; }
  void drop_reader() noexcept {
    --readers_;
    free_if_unneeded();
  }
  intrusive_list& waiters() noexcept { return waiters_; }
  const intrusive_list& waiters() const noexcept { return waiters_; }
  // True while its exit is watched through the SIGCHLD fallback.
  bool polled() const noexcept { return !returncode_.has_value() && wait_handle_ == invalid_handle; }

 private:
  // The returncode just became known: releases the OS handle, wakes the
  // waiters, and frees an orphan.
  void exited() noexcept;
  struct exit_watch : io_operation {
    child_process* child = nullptr;
  };
  static void on_exit_reported(io_operation* operation) noexcept;
  void release_wait_handle() noexcept;
  void free_if_unneeded() noexcept;

  child_registry* registry_;  // null once its loop closed
  std::string label_;         // "ls (pid 1234)": what errors name
  process_id pid_ = 0;
  native_handle wait_handle_ = invalid_handle;  // pidfd, pid (kqueue), process HANDLE
  exit_watch watch_;
  std::optional<int> returncode_;
  intrusive_list waiters_;  // process_wait awaiters
  int readers_ = 0;         // process_wait awaiters alive
  bool orphaned_ = false;
};

// A task waiting for a child's exit; returns its returncode. Keeps the child
// alive while it exists (a process object may go meanwhile). A cancel stops
// waiting, never the child.
class process_wait : private parked_waiter {
 public:
  explicit process_wait(child_process* child) noexcept : child_(child) {
    if (child_ != nullptr) child_->add_reader();
  }
  process_wait(process_wait&& other) noexcept : parked_waiter(std::move(other)), child_(other.child_) {
    if (child_ != nullptr) child_->add_reader();
  }
  process_wait& operator=(process_wait&&) = delete;
  ~process_wait() {
    intrusive_list::unlink(*this);
    if (child_ != nullptr) child_->drop_reader();
  }
  bool await_ready() {
    if (child_ == nullptr) throw invalid_state_error("process::wait: empty (moved-from) process");
    return child_->try_reap();
  }
  bool await_suspend(std::coroutine_handle<> caller) {
    if (!child_->has_loop()) throw invalid_state_error("process::wait: the event loop of " + child_->label() + " is closed");
    child_->watch();  // before parking: it may throw, or see the exit now
    if (child_->returncode().has_value()) return false;
    return park(child_->waiters(), caller, waiting);
  }
  int await_resume() const {
    throw_if_cancelled();  // a cancel after the exit was seen wins; the returncode stays known
    return *child_->returncode();
  }
  // The exit was seen.
  void grant_exit() noexcept { grant(); }
  static process_wait& from(list_hook& hook) noexcept {
    return static_cast<process_wait&>(parked_waiter::from(hook));
  }

 private:
  static void describe(const cancellable_wait& wait, wait_report& report) {
    const child_process& child = *static_cast<const process_wait&>(wait).child_;
    report.text = "process::wait for " + child.label() + " (" + std::to_string(child.waiters().size()) + " waiting)";
  }
  static constexpr wait_kind waiting = parking("process::wait", &describe);
  child_process* child_;
};

#if defined(CORO_LOOP_POSIX)
// The SIGCHLD fallback, for Linux kernels without pidfd_open (before 5.3) or
// where seccomp refuses it. One handler for the process, installed on first
// use and never removed; it calls the handler it replaced (or that one's
// sa_sigaction), so a program's own SIGCHLD handling goes on. It writes a byte
// to the pipe of each loop that has such children (a fixed table: one slot per
// loop); each loop then tries waitpid(pid, WNOHANG) on its own children only.
// asyncio's SafeChildWatcher worked alike; its ThreadedChildWatcher needs a
// thread per child, which this library refuses. A program that replaces the
// handler later without calling ours would lose the wake-ups: each loop also
// tries every 100 ms while it has such children. Where SIGCHLD is SIG_IGN the
// handler is not installed (that would bring back the zombies the program
// asked the kernel to reap): the kernel reaps our children too, found by the
// 100 ms tries, and their returncode reads 255.
struct child_signal_table {
  static constexpr int slot_count = 64;
  std::atomic<int> write_ends[slot_count] = {};  // a loop's pipe, plus one (0: free)
  std::atomic<int> handlers_running{0};          // handlers between reading a slot and writing
  struct sigaction previous {};
  bool installed = false;
};
inline child_signal_table& child_signals() noexcept {
  static child_signal_table table;
  return table;
}
inline void on_child_signal(int signal_number, siginfo_t* info, void* context) {
  const int saved_errno = errno;
  child_signal_table& table = child_signals();
  table.handlers_running.fetch_add(1);
  for (std::atomic<int>& slot : table.write_ends) {
    const int write_end = slot.load();
    if (write_end > 0) {
      const unsigned char byte = 1;
      [[maybe_unused]] const ssize_t written = ::write(write_end - 1, &byte, 1);  // full: a wake-up is pending
    }
  }
  table.handlers_running.fetch_sub(1);
  errno = saved_errno;
  const struct sigaction& previous = table.previous;
  if ((previous.sa_flags & SA_SIGINFO) != 0) {
    if (previous.sa_sigaction != nullptr) previous.sa_sigaction(signal_number, info, context);
  } else if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler != nullptr) {
    previous.sa_handler(signal_number);
  }
}
// Publishes `write_end` to the handler (installing it first); false when
// every slot is taken, or SIGCHLD is ignored (that loop then relies on its
// 100 ms tries).
inline bool claim_child_signal_slot(int write_end) {
  child_signal_table& table = child_signals();
  static std::mutex install_mutex;
  {
    std::lock_guard<std::mutex> guard(install_mutex);
    if (!table.installed) {
      struct sigaction current {};
      if (::sigaction(SIGCHLD, nullptr, &current) < 0) throw_system_error(errno, "sigaction SIGCHLD");
      if ((current.sa_flags & SA_SIGINFO) == 0 && current.sa_handler == SIG_IGN) return false;
      const bool previous_is_handler = (current.sa_flags & SA_SIGINFO) != 0 || current.sa_handler != SIG_DFL;
      struct sigaction action {};
      action.sa_sigaction = &on_child_signal;
      ::sigemptyset(&action.sa_mask);
      // A handler of the program's that asked for stops too keeps getting them.
      action.sa_flags = SA_SIGINFO | SA_RESTART;
      if (!previous_is_handler || (current.sa_flags & SA_NOCLDSTOP) != 0) action.sa_flags |= SA_NOCLDSTOP;
      if (::sigaction(SIGCHLD, &action, &table.previous) < 0) throw_system_error(errno, "sigaction SIGCHLD");
      table.installed = true;
    }
  }
  for (std::atomic<int>& slot : table.write_ends) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, write_end + 1)) return true;
  }
  return false;
}
// Takes the slot back; returns once no handler can still write to the pipe,
// so that it may be closed (its number could otherwise be reused meanwhile).
inline void release_child_signal_slot(int write_end) noexcept {
  child_signal_table& table = child_signals();
  for (std::atomic<int>& slot : table.write_ends) {
    int expected = write_end + 1;
    if (slot.compare_exchange_strong(expected, 0)) break;
  }
  while (table.handlers_running.load() != 0) std::this_thread::yield();
}
#endif  // CORO_LOOP_POSIX

// A loop's children: every child_process it started and not yet freed, the
// orphans it reaps, and the SIGCHLD watch of the children that need it.
// Attached to the loop on its first spawn; closed with it.
class child_registry : private loop_attachment, private timer_node {
 public:
  // The running loop's registry, made on first use.
  static child_registry& of(loop_core& loop) {
    if (loop_attachment* found = loop.find_attachment(&close_registry)) return *static_cast<child_registry*>(found);
    auto* made = new child_registry(loop);
    loop.attach(*made);
    return *made;
  }
  loop_core& loop() const noexcept { return *loop_; }
  void add(child_process& child) noexcept { children_.push_back(child); }
  void remove(child_process& child) noexcept { intrusive_list::unlink(child); }
  std::size_t size() const noexcept { return children_.size(); }

#if defined(CORO_LOOP_POSIX)
  // Starts watching SIGCHLD for the children without a backend handle.
  void watch_signals() {
    if (!retry_armed_) {
      deadline = deadline_after(retry_interval);
      loop_->add_timer(*this);
      retry_armed_ = true;
    }
    if (signal_read_ != invalid_handle) return;
    int ends[2];
    if (!open_non_blocking_pipe(ends)) throw_system_error(errno, "pipe for SIGCHLD");
    signal_read_ = ends[0];
    signal_write_ = ends[1];
    try {
      slot_claimed_ = claim_child_signal_slot(signal_write_);
    } catch (...) {
      close_signal_pipe();
      throw;
    }
    signal_op_.kind = io_kind::read;
    signal_op_.handle = signal_read_;
    signal_op_.buffer = signal_bytes_;
    signal_op_.length = sizeof signal_bytes_;
    signal_op_.complete = &on_signal_pipe;
    signal_op_.registry = this;
    park_signal_read();
  }
#endif

 private:
  explicit child_registry(loop_core& loop) noexcept : loop_(&loop) {
    close = &close_registry;
    fire = &on_retry;
  }
  static void close_registry(loop_attachment* attachment) noexcept {
    auto* self = static_cast<child_registry*>(attachment);
#if defined(CORO_LOOP_POSIX)
    self->stop_signal_watch();
#endif
    self->children_.for_each([](list_hook& hook) { static_cast<child_process&>(hook).detach_from_loop(); });
    delete self;
  }

#if defined(CORO_LOOP_POSIX)
  struct signal_operation : io_operation {
    child_registry* registry = nullptr;
  };
  static constexpr duration retry_interval = std::chrono::milliseconds(100);

  // Parks the pipe's read; bytes already there mean a check now.
  void park_signal_read() noexcept {
    for (;;) {
      bool done = false;
      try {
        done = loop_->backend().start(signal_op_);
      } catch (...) {
        return;  // out of memory: the 100 ms retries carry on
      }
      if (!done || signal_op_.error != 0 || signal_op_.result <= 0) return;
    }
  }
  static void on_signal_pipe(io_operation* operation) noexcept {
    child_registry* self = static_cast<signal_operation*>(operation)->registry;
    if (operation->error != 0) return;  // released: the watch is stopping
    self->check_polled();
    if (self->signal_read_ != invalid_handle) self->park_signal_read();
  }
  static void on_retry(timer_node* timer) noexcept {
    auto* self = static_cast<child_registry*>(timer);
    self->retry_armed_ = false;
    self->check_polled();
    if (self->signal_read_ != invalid_handle && !self->retry_armed_) {
      self->deadline = deadline_after(retry_interval);
      self->loop_->add_timer(*self);
      self->retry_armed_ = true;
    }
  }
  // Reads the pipe empty, then reaps what exited; stops once none is left to poll.
  void check_polled() noexcept {
    if (signal_read_ != invalid_handle) {
      unsigned char drained[64];
      while (::read(signal_read_, drained, sizeof drained) > 0) {
      }
    }
    bool any_left = false;
    children_.for_each([&any_left](list_hook& hook) {
      auto& child = static_cast<child_process&>(hook);
      if (child.polled() && !child.try_reap()) any_left = true;  // a reap may free it (unlinking it)
    });
    if (!any_left) stop_signal_watch();
  }
  void stop_signal_watch() noexcept {
    if (retry_armed_) {
      loop_->remove_timer(*this);
      retry_armed_ = false;
    }
    if (signal_read_ == invalid_handle) return;
    loop_->backend().abandon(signal_op_);
    loop_->backend().release(signal_read_);
    close_signal_pipe();
  }
  void close_signal_pipe() noexcept {
    if (slot_claimed_) release_child_signal_slot(signal_write_);
    slot_claimed_ = false;
    ::close(std::exchange(signal_read_, invalid_handle));
    ::close(std::exchange(signal_write_, invalid_handle));
  }

  signal_operation signal_op_;
  int signal_read_ = invalid_handle;
  int signal_write_ = invalid_handle;
  unsigned char signal_bytes_[64] = {};
  bool slot_claimed_ = false;
  bool retry_armed_ = false;
#else
  static void on_retry(timer_node*) noexcept {}
#endif

  loop_core* loop_;
  intrusive_list children_;
};

inline child_process::child_process(child_registry& registry, std::string program) noexcept
    : registry_(&registry), label_(std::move(program)) {
  watch_.child = this;
  watch_.kind = io_kind::wait_process;
  watch_.complete = &on_exit_reported;
}

inline void child_process::started(process_id pid, native_handle wait_handle) {
  pid_ = pid;
  wait_handle_ = wait_handle;
  watch_.handle = wait_handle;
  label_ += " (pid " + std::to_string(pid) + ")";
  registry_->add(*this);
}

inline bool child_process::try_reap() noexcept {
  if (returncode_.has_value()) return true;
#if defined(CORO_LOOP_POSIX)
  int status = 0;
  pid_t reaped = 0;
  do {
    reaped = ::waitpid(pid_, &status, WNOHANG);
  } while (reaped < 0 && errno == EINTR);
  if (reaped == 0) return false;
  if (reaped < 0) {
    // ECHILD: another part of the program reaped it (asyncio reports 255 too).
    if (debug_enabled()) {
      std::fprintf(stderr, "coro_loop: %s was reaped by someone else; its returncode reads 255\n", label_.c_str());
    }
    returncode_ = 255;
  } else if (WIFEXITED(status)) {
    returncode_ = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    returncode_ = -WTERMSIG(status);
  } else {
    returncode_ = status;
  }
#else
  if (wait_handle_ == invalid_handle || ::WaitForSingleObject(process_handle(), 0) != WAIT_OBJECT_0) return false;
  DWORD code = 0;
  returncode_ = ::GetExitCodeProcess(process_handle(), &code) ? static_cast<int>(code) : 255;
#endif
  // Whoever reaped, every waiter learns it now: a task whose wait found the
  // exit first must not leave the others parked on a watch that ends here.
  exited();
  return true;
}

inline void child_process::watch() {
  if (returncode_.has_value() || registry_ == nullptr) return;
  if (wait_handle_ == invalid_handle) {
#if defined(CORO_LOOP_POSIX)
    registry_->watch_signals();
#endif
    return;
  }
  if (watch_.parked) return;
  if (registry_->loop().backend().start(watch_)) on_exit_reported(&watch_);
}

// The backend says the child exited (or could not watch it: then the SIGCHLD
// fallback takes over, which reaps it whatever happened).
inline void child_process::on_exit_reported(io_operation* operation) noexcept {
  child_process* self = static_cast<exit_watch*>(operation)->child;
  if (operation->error == ECANCELED) return;
  if (self->try_reap()) return;
#if defined(CORO_LOOP_POSIX)
  self->release_wait_handle();
  try {
    self->watch();
  } catch (...) {
    std::fprintf(stderr, "coro_loop: cannot watch %s any more\n", self->label_.c_str());
  }
#endif
}

inline void child_process::exited() noexcept {
  release_wait_handle();
  while (list_hook* hook = waiters_.front()) process_wait::from(*hook).grant_exit();
  free_if_unneeded();
}

inline void child_process::release_wait_handle() noexcept {
  if (wait_handle_ == invalid_handle) return;
  if (registry_ != nullptr && watch_.parked) registry_->loop().backend().abandon(watch_);
#if defined(CORO_LOOP_WINDOWS)
  ::CloseHandle(process_handle());
#elif defined(CORO_LOOP_EPOLL)
  if (registry_ != nullptr) registry_->loop().backend().release(wait_handle_);
  ::close(wait_handle_);  // the pidfd
#endif
  wait_handle_ = invalid_handle;
}

inline void child_process::orphan() noexcept {
  orphaned_ = true;
  add_reader();  // watch() may see the exit now, and must not free this under us
  if (registry_ == nullptr) try_reap();  // no loop to hand it to: one last try
  if (!returncode_.has_value() && registry_ != nullptr) {
    try {
      watch();
    } catch (...) {
      std::fprintf(stderr, "coro_loop: cannot watch %s any more; it will not be reaped\n", label_.c_str());
    }
  }
  drop_reader();
}

inline void child_process::detach_from_loop() noexcept {
  add_reader();  // a reap must not free this before it is detached
  try_reap();
  if (!returncode_.has_value() && orphaned_ && registry_->loop().debug()) {
    std::fprintf(stderr,
                 "coro_loop: %s was still running when its loop closed; it is not reaped (init reaps it "
                 "once this program exits)\n",
                 label_.c_str());
  }
  release_wait_handle();
  while (list_hook* hook = waiters_.front()) intrusive_list::unlink(*hook);  // frames left behind by close()
  registry_->remove(*this);
  registry_ = nullptr;
  drop_reader();
}

inline void child_process::free_if_unneeded() noexcept {
  if (!orphaned_ || readers_ != 0) return;
  if (registry_ != nullptr && !returncode_.has_value()) return;  // the registry reaps it first
  if (registry_ != nullptr) registry_->remove(*this);
  release_wait_handle();
  delete this;
}

// --- 9.10 Spawning ---

// What create_subprocess_exec was asked, copied: the caller's views may die
// before the task runs.
struct spawn_request {
  std::string program;                 // as given (errors name it)
  std::vector<std::string> arguments;  // argv; [0] is the program
  std::string cwd;
  std::vector<std::string> env;
  bool replace_env = false;
  bool shell = false;  // create_subprocess_shell: arguments[0] is the command line
  stdio modes[3] = {stdio::inherit, stdio::inherit, stdio::inherit};
  stream_options streams;

  void take_options(const process_options& options) {
    cwd = options.cwd;
    env.assign(options.env.begin(), options.env.end());
    replace_env = options.replace_env;
    modes[0] = options.stdin_;
    modes[1] = options.stdout_;
    modes[2] = options.stderr_;
    streams = options.streams;
    if (modes[0] == stdio::to_stdout || modes[1] == stdio::to_stdout) {
      throw std::invalid_argument("create_subprocess: stdio::to_stdout is for stderr_ only");
    }
  }
};

// Makes the streams of a child's pipes, over the parent's ends.
struct stream_access {
  static stream over_pipe(native_handle end, const stream_options& options) {
    // The socket only holds the handle: a pipe stream closes it as a pipe (close_handle).
    socket holder(end);
    return stream(std::make_unique<stream_state>(std::move(holder), options, true));
  }
  static void set_label(stream& pipe, std::string label) {
    if (pipe.state_ != nullptr) pipe.state_->label_ = std::move(label);
  }
};

[[noreturn]] inline void throw_spawn_error(int error_number, const std::string& program) {
  throw_system_error(error_number, "spawn " + program);
}

#if defined(CORO_LOOP_POSIX)

// A descriptor closed by its destructor (the pipes while a spawn may fail).
class owned_descriptor {
 public:
  owned_descriptor() noexcept = default;
  owned_descriptor(const owned_descriptor&) = delete;
  owned_descriptor& operator=(const owned_descriptor&) = delete;
  ~owned_descriptor() { reset(); }
  int get() const noexcept { return fd_; }
  int release() noexcept { return std::exchange(fd_, -1); }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_ = -1;
};

inline char** process_environment() noexcept {
#if defined(__APPLE__)
  return *::_NSGetEnviron();
#else
  return environ;
#endif
}

// Whether `entry` ("NAME=value") sets `name`.
inline bool sets_variable(std::string_view entry, std::string_view name) noexcept {
  return entry.size() > name.size() && entry.starts_with(name) && entry[name.size()] == '=';
}

// The value of `name` in a "NAME=value" list, if any.
inline const char* find_in_environment(const std::vector<std::string>& entries, std::string_view name) {
  for (const std::string& entry : entries) {
    if (sets_variable(entry, name)) return entry.c_str() + name.size() + 1;
  }
  return nullptr;
}

// The child's environment: this one with the changes, or the given one.
inline std::vector<std::string> child_environment(const spawn_request& request) {
  std::vector<std::string> entries;
  if (!request.replace_env) {
    for (char** entry = process_environment(); entry != nullptr && *entry != nullptr; ++entry) entries.emplace_back(*entry);
  }
  for (const std::string& change : request.env) {
    const std::size_t equals = change.find('=');
    const std::string_view name = std::string_view(change).substr(0, equals);
    if (name.empty()) throw std::invalid_argument("create_subprocess: an environment entry has no name: \"" + change + "\"");
    std::erase_if(entries, [name](const std::string& entry) { return sets_variable(entry, name); });
    if (equals != std::string::npos) entries.push_back(change);
  }
  return entries;
}

// execvp's search, done before spawning so that a missing program is the
// call's error: a name with a slash as it is, else each PATH directory (the
// child's PATH, as execvpe; an empty entry is the working directory).
inline std::string find_program(const std::string& program, const char* path) {
  auto runnable = [](const std::string& candidate) {
    struct stat status {};
    if (::stat(candidate.c_str(), &status) != 0) return errno;
    if (S_ISDIR(status.st_mode)) return EACCES;
    return ::access(candidate.c_str(), X_OK) == 0 ? 0 : errno;
  };
  if (program.empty()) throw_spawn_error(ENOENT, "\"\"");
  if (program.find('/') != std::string::npos) {
    if (const int error = runnable(program); error != 0) throw_spawn_error(error, program);
    return program;
  }
  if (path == nullptr) path = "/usr/bin:/bin";
  int error = ENOENT;
  for (std::string_view rest = path;;) {
    const std::size_t colon = rest.find(':');
    const std::string_view directory = rest.substr(0, colon);
    std::string candidate = directory.empty() ? program : std::string(directory) + "/" + program;
    const int found = runnable(candidate);
    if (found == 0) return candidate;
    if (found == EACCES) error = EACCES;  // as execvp: a later match may still run
    if (colon == std::string_view::npos) break;
    rest.remove_prefix(colon + 1);
  }
  throw_spawn_error(error, program);
}

// A pipe for one of the child's descriptors: the parent's end non-blocking,
// the child's blocking (as a program expects its stdin to be); both
// close-on-exec (the child gets its end through dup2) and above 2, so that a
// dup2 onto 0, 1 or 2 always copies (a dup2 onto itself would keep
// close-on-exec set).
inline void open_child_pipe(bool child_reads, owned_descriptor& parent_end, owned_descriptor& child_end) {
  int ends[2];
  if (!open_non_blocking_pipe(ends)) throw_system_error(errno, "pipe for a child process");
  owned_descriptor read_end;
  owned_descriptor write_end;
  read_end.reset(ends[0]);
  write_end.reset(ends[1]);
  for (owned_descriptor* end : {&read_end, &write_end}) {
    if (end->get() > 2) continue;
    const int moved = ::fcntl(end->get(), F_DUPFD_CLOEXEC, 3);
    if (moved < 0) throw_system_error(errno, "fcntl F_DUPFD_CLOEXEC");
    end->reset(moved);  // O_NONBLOCK lives in the open file: the copy has it
  }
  owned_descriptor& child = child_reads ? read_end : write_end;
  const int flags = ::fcntl(child.get(), F_GETFL);
  if (flags < 0 || ::fcntl(child.get(), F_SETFL, flags & ~O_NONBLOCK) < 0) throw_system_error(errno, "fcntl");
  child_end.reset(child.release());
  parent_end.reset((child_reads ? write_end : read_end).release());
}

// posix_spawn's attribute and file-action objects, destroyed with this.
struct spawn_setup {
  posix_spawn_file_actions_t actions;
  posix_spawnattr_t attributes;
  spawn_setup() {
    if (const int error = ::posix_spawn_file_actions_init(&actions); error != 0) {
      throw_system_error(error, "posix_spawn_file_actions_init");
    }
    if (const int error = ::posix_spawnattr_init(&attributes); error != 0) {
      ::posix_spawn_file_actions_destroy(&actions);
      throw_system_error(error, "posix_spawnattr_init");
    }
  }
  spawn_setup(const spawn_setup&) = delete;
  spawn_setup& operator=(const spawn_setup&) = delete;
  ~spawn_setup() {
    ::posix_spawnattr_destroy(&attributes);
    ::posix_spawn_file_actions_destroy(&actions);
  }
  static void check(int error, const char* what) {
    if (error != 0) throw_system_error(error, what);
  }
};

// Whether pidfd_open may be used: false once the kernel refused it (ENOSYS,
// or EPERM under seccomp), and for the tests that exercise the SIGCHLD
// fallback on a kernel that has it.
inline std::atomic<bool>& use_pidfd() noexcept {
  static std::atomic<bool> enabled{true};
  return enabled;
}

// What the backend waits on for `pid` (see io_kind::wait_process);
// invalid_handle: the SIGCHLD fallback.
inline native_handle process_wait_handle([[maybe_unused]] pid_t pid) noexcept {
#if defined(CORO_LOOP_BACKEND_KQUEUE)
  return pid;
#elif defined(__linux__)
  if (!use_pidfd().load(std::memory_order_relaxed)) return invalid_handle;
#if defined(SYS_pidfd_open)
  const long number = SYS_pidfd_open;
#else
  const long number = 434;  // the same on every Linux architecture
#endif
  const int pidfd = static_cast<int>(::syscall(number, pid, 0));  // close-on-exec by definition
  if (pidfd >= 0) return pidfd;
  if (errno == ENOSYS || errno == EPERM) use_pidfd().store(false, std::memory_order_relaxed);
  return invalid_handle;  // this child is watched through SIGCHLD
#else
  return invalid_handle;
#endif
}

inline process start_process(spawn_request& request);

#endif  // CORO_LOOP_POSIX

#if defined(CORO_LOOP_WINDOWS)

// UTF-8 to UTF-16 (Windows' "W" functions); invalid_argument on bad UTF-8.
inline std::wstring widen(std::string_view text) {
  if (text.empty()) return std::wstring();
  const int size = ::MultiByteToWideChar(CP_UTF8, MB_ERR_INVALID_CHARS, text.data(), static_cast<int>(text.size()),
                                         nullptr, 0);
  if (size <= 0) throw std::invalid_argument("create_subprocess: not UTF-8: " + std::string(text));
  std::wstring wide(static_cast<std::size_t>(size), L'\0');
  ::MultiByteToWideChar(CP_UTF8, 0, text.data(), static_cast<int>(text.size()), wide.data(), size);
  return wide;
}

// Appends `argument` to a command line so that the C runtime's parser
// (CommandLineToArgvW, and every program built with MSVC or mingw) gives it
// back unchanged: quoted when empty or holding a space, tab or quote; inside
// quotes a quote is written \" and the backslashes before a quote (or before
// the closing quote) are doubled; other backslashes stay as they are.
inline void quote_argument(std::wstring& command_line, std::wstring_view argument) {
  if (!command_line.empty()) command_line += L' ';
  if (!argument.empty() && argument.find_first_of(L" \t\n\v\"") == std::wstring_view::npos) {
    command_line += argument;
    return;
  }
  command_line += L'"';
  std::size_t backslashes = 0;
  for (const wchar_t character : argument) {
    if (character == L'\\') {
      ++backslashes;
      continue;
    }
    if (character == L'"') {
      command_line.append(2 * backslashes + 1, L'\\');
    } else {
      command_line.append(backslashes, L'\\');
    }
    backslashes = 0;
    command_line += character;
  }
  command_line.append(2 * backslashes, L'\\');
  command_line += L'"';
}

// A HANDLE closed by its destructor.
class owned_handle {
 public:
  owned_handle() noexcept = default;
  owned_handle(const owned_handle&) = delete;
  owned_handle& operator=(const owned_handle&) = delete;
  ~owned_handle() { reset(); }
  HANDLE get() const noexcept { return handle_; }
  HANDLE release() noexcept { return std::exchange(handle_, nullptr); }
  void reset(HANDLE handle = nullptr) noexcept {
    if (handle_ != nullptr && handle_ != INVALID_HANDLE_VALUE) ::CloseHandle(handle_);
    handle_ = handle;
  }

 private:
  HANDLE handle_ = nullptr;
};

inline int last_windows_error() noexcept { return posix_error_from_windows(::GetLastError()); }

// A pipe for one of the child's handles: a named pipe (anonymous pipes cannot
// be overlapped) whose server end is the parent's, overlapped for the port;
// the child's end is the client, synchronous, inheritable.
inline void open_child_pipe(bool child_reads, owned_handle& parent_end, owned_handle& child_end) {
  static std::atomic<unsigned long> serial{0};
  const std::wstring name = L"\\\\.\\pipe\\coro_loop-" + std::to_wstring(::GetCurrentProcessId()) + L"-" +
                            std::to_wstring(serial.fetch_add(1));
  const DWORD direction = child_reads ? PIPE_ACCESS_OUTBOUND : PIPE_ACCESS_INBOUND;
  parent_end.reset(::CreateNamedPipeW(name.c_str(), direction | FILE_FLAG_OVERLAPPED | FILE_FLAG_FIRST_PIPE_INSTANCE,
                                      PIPE_TYPE_BYTE | PIPE_READMODE_BYTE | PIPE_WAIT | PIPE_REJECT_REMOTE_CLIENTS, 1,
                                      64 * 1024, 64 * 1024, 0, nullptr));
  if (parent_end.get() == INVALID_HANDLE_VALUE) {
    parent_end.release();
    throw_system_error(last_windows_error(), "CreateNamedPipe for a child process");
  }
  SECURITY_ATTRIBUTES inheritable{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
  const DWORD access = child_reads ? GENERIC_READ | FILE_WRITE_ATTRIBUTES : GENERIC_WRITE | FILE_READ_ATTRIBUTES;
  child_end.reset(::CreateFileW(name.c_str(), access, 0, &inheritable, OPEN_EXISTING, 0, nullptr));
  if (child_end.get() == INVALID_HANDLE_VALUE) {
    child_end.release();
    throw_system_error(last_windows_error(), "CreateFile for a child process's pipe");
  }
}

inline process start_process(spawn_request& request);

#endif  // CORO_LOOP_WINDOWS

template <class Argument>
inline constexpr bool is_process_options = std::is_same_v<std::remove_cvref_t<Argument>, process_options>;

}  // namespace detail

/// A child process started by create_subprocess_exec / create_subprocess_shell (asyncio's
/// Process). Move-only; loop thread only. Destroying it while the child runs leaves the child
/// running (asyncio's rule), and its loop reaps it when it exits: no zombie.
class process {
 public:
  /// An empty process: pid() is 0, wait() throws invalid_state_error.
  process() noexcept = default;
  process(process&& other) noexcept
      : stdin_(std::move(other.stdin_)),
        stdout_(std::move(other.stdout_)),
        stderr_(std::move(other.stderr_)),
        child_(std::exchange(other.child_, nullptr)) {}
  process& operator=(process&& other) noexcept {
    if (this != &other) {
      release();
      stdin_ = std::move(other.stdin_);
      stdout_ = std::move(other.stdout_);
      stderr_ = std::move(other.stderr_);
      child_ = std::exchange(other.child_, nullptr);
    }
    return *this;
  }
  ~process() { release(); }

  /// The pipes, as asyncio's proc.stdin/stdout/stderr: streams when piped, else empty
  /// (any use throws invalid_state_error). stdin_.close() (or write_eof()) sends the end of input.
  stream stdin_;
  stream stdout_;
  stream stderr_;

  /// The child's process id (0 when empty).
  int pid() const noexcept { return child_ != nullptr ? static_cast<int>(child_->pid()) : 0; }
  /// The exit code once the child's exit was seen (by wait(), communicate() or the loop);
  /// minus the signal number when a signal ended it (POSIX); 255 if someone else reaped it.
  std::optional<int> returncode() const noexcept {
    return child_ != nullptr ? child_->returncode() : std::nullopt;
  }
  /// Waits for the child to exit and returns its returncode. Cancelling stops the wait,
  /// not the child: timeout(5s, p.wait()) leaves it running (asyncio). Many tasks may wait.
  /// Does not read the pipes: a child filling a pipe nobody reads never exits (communicate).
  detail::process_wait wait() noexcept { return detail::process_wait(child_); }
  /// Writes `input` to stdin_ (then closes it) while reading stdout_ and stderr_ to their
  /// end, concurrently (no pipe deadlock), then waits for the exit. Throws
  /// limit_overrun_error past streams.max_read bytes on either (64 MiB; the child keeps
  /// running), invalid_state_error for input without a stdin_ pipe. Cancelled, it stops
  /// reading and loses nothing: what was read stays buffered in the streams. The end of
  /// stdout_ comes when every process holding it closed it (a grandchild may hold it open).
  CORO_LOOP_COROUTINE
  task<communicate_result> communicate(std::string input = {});
  /// Sends `signal_number` (POSIX); a no-op once the returncode is known, since the pid may
  /// be reused. Windows: SIGTERM only, as terminate(); std::invalid_argument otherwise.
  void send_signal(int signal_number) {
#if defined(CORO_LOOP_WINDOWS)
    if (signal_number != SIGTERM) {
      throw std::invalid_argument("process::send_signal: Windows has SIGTERM only (terminate())");
    }
    terminate();
#else
    detail::child_process& child = get("send_signal");
    if (child.returncode().has_value()) return;
    if (::kill(child.pid(), signal_number) != 0 && errno != ESRCH) {
      detail::throw_system_error(errno, "send_signal " + std::to_string(signal_number) + " to " + child.label());
    }
#endif
  }
  /// SIGTERM; Windows: TerminateProcess with exit code 1 (asyncio's terminate()).
  void terminate() {
#if defined(CORO_LOOP_WINDOWS)
    terminate_with("terminate");
#else
    send_signal(SIGTERM);
#endif
  }
  /// SIGKILL; Windows: TerminateProcess with exit code 1, as terminate() (asyncio's kill()).
  void kill() {
#if defined(CORO_LOOP_WINDOWS)
    terminate_with("kill");
#else
    send_signal(SIGKILL);
#endif
  }
  /// False for an empty (default or moved-from) process.
  explicit operator bool() const noexcept { return child_ != nullptr; }

 private:
  friend process detail::start_process(detail::spawn_request& request);
  explicit process(detail::child_process* child) noexcept : child_(child) {}
  // A child just started, and the parent's ends of its pipes (empty where not piped).
  static process adopt(detail::child_process* child, stream (&streams)[3]) {
    process started(child);
    stream* own[3] = {&started.stdin_, &started.stdout_, &started.stderr_};
    const char* names[3] = {"the stdin_ of ", "the stdout_ of ", "the stderr_ of "};
    for (int which = 0; which < 3; ++which) {
      detail::stream_access::set_label(streams[which], names[which] + child->label());
      *own[which] = std::move(streams[which]);
    }
    return started;
  }
  detail::child_process& get(const char* operation) const {
    if (child_ == nullptr) throw invalid_state_error(std::string("process::") + operation + ": empty (moved-from) process");
    return *child_;
  }
  void release() noexcept {
    stdin_ = stream();
    stdout_ = stream();
    stderr_ = stream();
    if (child_ != nullptr) std::exchange(child_, nullptr)->orphan();
  }
#if defined(CORO_LOOP_WINDOWS)
  void terminate_with(const char* operation) {
    detail::child_process& child = get(operation);
    if (child.returncode().has_value() || child.try_reap()) return;
    // Access denied: it exited meanwhile (Windows refuses to terminate a finished process).
    if (!::TerminateProcess(child.process_handle(), 1) && ::GetLastError() != ERROR_ACCESS_DENIED) {
      detail::throw_system_error(detail::last_windows_error(), std::string(operation) + " " + child.label());
    }
  }
#endif
  detail::child_process* child_ = nullptr;
};

namespace detail {

// The task create_subprocess_exec returns: spawns when awaited, as asyncio's
// coroutine does; the request is the frame's own copy.
CORO_LOOP_COROUTINE
task<process> spawn_process(spawn_request request) { co_return start_process(request); }

// communicate's writer: the input, then the end of it. A child that exits (or
// closes its stdin) without reading it all is not an error (asyncio).
CORO_LOOP_COROUTINE
task<void> feed_input(stream& input, std::string data) {
  if (!input) co_return;
  bool broken = false;
  try {
    if (!data.empty()) {
      input.write(data);
      co_await input.drain();
    }
  } catch (const std::system_error& error) {
    if (error.code() != std::errc::broken_pipe && error.code() != std::errc::connection_reset) throw;
    broken = true;
  }
  if (broken) {
    input.abort();
    co_return;
  }
  input.close();
  co_await input.wait_closed();
}

// communicate's readers: one stream to its end, within streams.max_read.
CORO_LOOP_COROUTINE
task<std::string> read_to_end(stream& output, std::string what) {
  if (!output) co_return std::string();
  std::exception_ptr overrun;
  std::size_t consumed = 0;
  try {
    co_return co_await output.read();
  } catch (const limit_overrun_error& error) {
    overrun = std::current_exception();
    consumed = error.consumed;
  }
  throw limit_overrun_error(consumed, "process::communicate: " + what +
                                          " passed process_options::streams.max_read before its end; the child "
                                          "keeps running (kill() it, or read the stream in parts)");
}

}  // namespace detail

CORO_LOOP_COROUTINE_DEFINITION
task<communicate_result> process::communicate(std::string input) {
  detail::child_process& child = get("communicate");
  if (!input.empty() && !stdin_) {
    throw invalid_state_error("process::communicate: input given but the stdin_ of " + child.label() +
                              " is not stdio::pipe");
  }
  auto feeding = detail::feed_input(stdin_, std::move(input));
  auto reading_out = detail::read_to_end(stdout_, "the stdout_ of " + child.label());
  auto reading_err = detail::read_to_end(stderr_, "the stderr_ of " + child.label());
  auto results = co_await gather(std::move(feeding), std::move(reading_out), std::move(reading_err));
  auto waiting = wait();
  co_await waiting;
  co_return communicate_result{std::move(std::get<1>(results)), std::move(std::get<2>(results))};
}

/// Starts `program` with `arguments...` (strings), the last of which may be a
/// process_options (asyncio.create_subprocess_exec(program, *args, stdin=..., ...));
/// `program` is looked up in PATH. Awaiting the task spawns it; throws std::system_error
/// naming the program ("spawn nosuch: No such file or directory").
template <class... Arguments>
  requires((std::convertible_to<const Arguments&, std::string_view> || detail::is_process_options<Arguments>) && ...)
task<process> create_subprocess_exec(std::string_view program, const Arguments&... arguments) {
  detail::spawn_request request;
  request.program = std::string(program);
  request.arguments.emplace_back(program);
  constexpr std::size_t count = sizeof...(Arguments);
  std::size_t index = 0;
  [[maybe_unused]] auto take = [&request, &index](const auto& argument) {
    ++index;
    if constexpr (detail::is_process_options<decltype(argument)>) {
      if (index != count) throw std::invalid_argument("create_subprocess_exec: process_options must come last");
      request.take_options(argument);
    } else {
      request.arguments.emplace_back(std::string_view(argument));
    }
  };
  (take(arguments), ...);
  return detail::spawn_process(std::move(request));
}

/// The same with the arguments in a range (a std::vector<std::string>, a span of views).
template <class Range>
  requires std::ranges::input_range<Range> &&
           std::convertible_to<std::ranges::range_reference_t<Range>, std::string_view> &&
           (!std::convertible_to<const Range&, std::string_view>)
task<process> create_subprocess_exec(std::string_view program, const Range& arguments, process_options options = {}) {
  detail::spawn_request request;
  request.program = std::string(program);
  request.arguments.emplace_back(program);
  for (auto&& argument : arguments) request.arguments.emplace_back(std::string_view(argument));
  request.take_options(options);
  return detail::spawn_process(std::move(request));
}

/// Starts `program` without arguments, with `options` written in the call:
/// create_subprocess_exec("ls", {.stdout_ = stdio::pipe}).
CORO_LOOP_COROUTINE
task<process> create_subprocess_exec(std::string_view program, process_options options) {
  return create_subprocess_exec(program, std::span<const std::string_view>(), options);
}

/// Runs `command` through the shell (/bin/sh -c; Windows: %COMSPEC% /c, cmd.exe), as
/// asyncio.create_subprocess_shell; the same errors. Quoting is the caller's business.
CORO_LOOP_COROUTINE
task<process> create_subprocess_shell(std::string_view command, process_options options = {}) {
  detail::spawn_request request;
#if defined(CORO_LOOP_WINDOWS)
  const char* comspec = std::getenv("COMSPEC");
  request.program = comspec != nullptr && *comspec != '\0' ? comspec : "cmd.exe";
#else
  request.program = "/bin/sh";
#endif
  request.arguments = {request.program, "-c", std::string(command)};
  request.shell = true;
  request.take_options(options);
  return detail::spawn_process(std::move(request));
}

#if defined(CORO_LOOP_POSIX)
inline process detail::start_process(spawn_request& request) {
  child_registry& registry = child_registry::of(running_core());
  const std::vector<std::string> environment_entries =
      request.env.empty() && !request.replace_env ? std::vector<std::string>() : child_environment(request);
  const bool own_environment = !request.env.empty() || request.replace_env;
  const char* path = own_environment ? find_in_environment(environment_entries, "PATH") : std::getenv("PATH");
  const std::string executable = find_program(request.program, path);
  if (!request.cwd.empty()) {
    // Checked here for the same reason as the program: posix_spawn's own
    // report of a failed chdir comes too late under qemu-user and valgrind.
    struct stat status {};
    const int error = ::stat(request.cwd.c_str(), &status) != 0 ? errno : !S_ISDIR(status.st_mode) ? ENOTDIR : 0;
    if (error != 0) throw_spawn_error(error, request.program + " in " + request.cwd);
  }
  std::vector<char*> argv;
  for (std::string& argument : request.arguments) argv.push_back(argument.data());
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (own_environment) {
    for (const std::string& entry : environment_entries) envp.push_back(const_cast<char*>(entry.c_str()));
    envp.push_back(nullptr);
  }

  // Everything that can fail is made before the child exists: only the spawn
  // itself may fail after, and then the destructors undo the rest.
  owned_descriptor parent_ends[3];
  owned_descriptor child_ends[3];
  stream streams[3];
  spawn_setup setup;
  for (int which = 0; which < 3; ++which) {
    if (request.modes[which] != stdio::pipe) continue;
    open_child_pipe(which == 0, parent_ends[which], child_ends[which]);
    streams[which] = stream_access::over_pipe(parent_ends[which].get(), request.streams);
    parent_ends[which].release();  // the stream owns it now
  }
  for (int which = 0; which < 3; ++which) {
    switch (request.modes[which]) {
      case stdio::inherit:
#if defined(__APPLE__)
        // POSIX_SPAWN_CLOEXEC_DEFAULT closes what no action names.
        spawn_setup::check(::posix_spawn_file_actions_addinherit_np(&setup.actions, which), "posix_spawn inherit");
#endif
        break;
      case stdio::pipe:
        spawn_setup::check(::posix_spawn_file_actions_adddup2(&setup.actions, child_ends[which].get(), which),
                           "posix_spawn_file_actions_adddup2");
        break;
      case stdio::devnull:
        spawn_setup::check(::posix_spawn_file_actions_addopen(&setup.actions, which, "/dev/null",
                                                              which == 0 ? O_RDONLY : O_WRONLY, 0),
                           "posix_spawn_file_actions_addopen /dev/null");
        break;
      case stdio::to_stdout:
        spawn_setup::check(::posix_spawn_file_actions_adddup2(&setup.actions, 1, 2), "posix_spawn_file_actions_adddup2");
        break;
    }
  }
  if (!request.cwd.empty()) {
#if (defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 29)) || defined(__APPLE__) || \
    (defined(__FreeBSD__) && __FreeBSD__ >= 14)
    spawn_setup::check(::posix_spawn_file_actions_addchdir_np(&setup.actions, request.cwd.c_str()),
                       "posix_spawn_file_actions_addchdir_np");
#else
    throw_spawn_error(ENOSYS, request.program + " in " + request.cwd +
                                  " (no posix_spawn_file_actions_addchdir_np here: run it through a shell's cd)");
#endif
  }
  short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
#if defined(__APPLE__)
  flags |= POSIX_SPAWN_CLOEXEC_DEFAULT;
#elif defined(__GLIBC__) && (__GLIBC__ > 2 || __GLIBC_MINOR__ >= 34)
  spawn_setup::check(::posix_spawn_file_actions_addclosefrom_np(&setup.actions, 3), "posix_spawn_file_actions_addclosefrom_np");
#endif
  sigset_t no_signals;
  ::sigemptyset(&no_signals);
  sigset_t defaults;
  ::sigemptyset(&defaults);
  ::sigaddset(&defaults, SIGPIPE);  // ignored by the loop (4.1); a child expects its default
  spawn_setup::check(::posix_spawnattr_setsigmask(&setup.attributes, &no_signals), "posix_spawnattr_setsigmask");
  spawn_setup::check(::posix_spawnattr_setsigdefault(&setup.attributes, &defaults), "posix_spawnattr_setsigdefault");
  spawn_setup::check(::posix_spawnattr_setflags(&setup.attributes, flags), "posix_spawnattr_setflags");

  auto child = std::make_unique<child_process>(registry, request.program);
  pid_t pid = 0;
  const int error = ::posix_spawn(&pid, executable.c_str(), &setup.actions, &setup.attributes, argv.data(),
                                  own_environment ? envp.data() : process_environment());
  if (error != 0) throw_spawn_error(error, request.program);
  for (owned_descriptor& end : child_ends) end.reset();
  child->started(pid, process_wait_handle(pid));  // links it: nothing below throws
  return process::adopt(child.release(), streams);
}
#endif  // CORO_LOOP_POSIX

#if defined(CORO_LOOP_WINDOWS)
inline process detail::start_process(spawn_request& request) {
  child_registry& registry = child_registry::of(running_core());
  std::wstring command_line;
  if (request.shell) {
    // cmd.exe takes what follows /c as it is, quotes included (asyncio's form).
    quote_argument(command_line, widen(request.program));
    command_line += L" /c \"" + widen(request.arguments.back()) + L"\"";
  } else {
    for (const std::string& argument : request.arguments) quote_argument(command_line, widen(argument));
  }
  // The environment block: "NAME=value\0...\0\0"; names compare without case.
  std::wstring environment_block;
  const bool own_environment = !request.env.empty() || request.replace_env;
  if (own_environment) {
    std::vector<std::wstring> entries;
    if (!request.replace_env) {
      wchar_t* strings = ::GetEnvironmentStringsW();
      for (const wchar_t* entry = strings; entry != nullptr && *entry != L'\0'; entry += std::wcslen(entry) + 1) {
        entries.emplace_back(entry);
      }
      if (strings != nullptr) ::FreeEnvironmentStringsW(strings);
    }
    auto same_name = [](std::wstring_view entry, std::wstring_view name) {
      // "=C:=C:\dir" entries name a drive's directory: their name starts after the first '='.
      const std::size_t equals = entry.find(L'=', 1);
      return equals == name.size() && ::CompareStringOrdinal(entry.data(), static_cast<int>(equals), name.data(),
                                                             static_cast<int>(name.size()), TRUE) == CSTR_EQUAL;
    };
    for (const std::string& change : request.env) {
      const std::wstring wide = widen(change);
      const std::size_t equals = wide.find(L'=');
      const std::wstring_view name = std::wstring_view(wide).substr(0, equals);
      if (name.empty()) throw std::invalid_argument("create_subprocess: an environment entry has no name: \"" + change + "\"");
      std::erase_if(entries, [&](const std::wstring& entry) { return same_name(entry, name); });
      if (equals != std::wstring::npos) entries.push_back(wide);
    }
    for (const std::wstring& entry : entries) {
      environment_block += entry;
      environment_block += L'\0';
    }
    if (entries.empty()) environment_block += L'\0';
    environment_block += L'\0';
  }
  const std::wstring directory = widen(request.cwd);

  // The child's three handles, inheritable; the parent's ends as streams.
  owned_handle parent_ends[3];
  owned_handle child_ends[3];
  stream streams[3];
  SECURITY_ATTRIBUTES inheritable{sizeof(SECURITY_ATTRIBUTES), nullptr, TRUE};
  const DWORD standard[3] = {STD_INPUT_HANDLE, STD_OUTPUT_HANDLE, STD_ERROR_HANDLE};
  HANDLE child_handles[3] = {nullptr, nullptr, nullptr};
  for (int which = 0; which < 3; ++which) {
    switch (request.modes[which]) {
      case stdio::inherit: {
        // Made inheritable by a copy: the original may not be.
        const HANDLE own = ::GetStdHandle(standard[which]);
        HANDLE copy = nullptr;
        if (own != nullptr && own != INVALID_HANDLE_VALUE &&
            ::DuplicateHandle(::GetCurrentProcess(), own, ::GetCurrentProcess(), &copy, 0, TRUE, DUPLICATE_SAME_ACCESS)) {
          child_ends[which].reset(copy);
        }
        break;
      }
      case stdio::pipe:
        open_child_pipe(which == 0, parent_ends[which], child_ends[which]);
        streams[which] = stream_access::over_pipe(reinterpret_cast<native_handle>(parent_ends[which].get()), request.streams);
        parent_ends[which].release();
        break;
      case stdio::devnull:
        child_ends[which].reset(::CreateFileW(L"NUL", which == 0 ? GENERIC_READ : GENERIC_WRITE,
                                              FILE_SHARE_READ | FILE_SHARE_WRITE, &inheritable, OPEN_EXISTING, 0, nullptr));
        if (child_ends[which].get() == INVALID_HANDLE_VALUE) {
          child_ends[which].release();
          throw_system_error(last_windows_error(), "open NUL for " + request.program);
        }
        break;
      case stdio::to_stdout: break;
    }
    child_handles[which] = request.modes[which] == stdio::to_stdout ? child_handles[1] : child_ends[which].get();
  }
  // Only these handles are inherited: PROC_THREAD_ATTRIBUTE_HANDLE_LIST, each
  // once, without console pseudo-handles (low bits 11), which it refuses.
  std::vector<HANDLE> inherited;
  for (HANDLE handle : child_handles) {
    if (handle == nullptr || (reinterpret_cast<std::uintptr_t>(handle) & 3) == 3) continue;
    if (std::find(inherited.begin(), inherited.end(), handle) == inherited.end()) inherited.push_back(handle);
  }
  SIZE_T list_size = 0;
  ::InitializeProcThreadAttributeList(nullptr, 1, 0, &list_size);
  std::vector<unsigned char> list_storage(list_size);
  auto* list = reinterpret_cast<LPPROC_THREAD_ATTRIBUTE_LIST>(list_storage.data());
  const bool has_list = !inherited.empty() && ::InitializeProcThreadAttributeList(list, 1, 0, &list_size) &&
                        ::UpdateProcThreadAttribute(list, 0, PROC_THREAD_ATTRIBUTE_HANDLE_LIST, inherited.data(),
                                                    inherited.size() * sizeof(HANDLE), nullptr, nullptr);
  struct list_guard {
    LPPROC_THREAD_ATTRIBUTE_LIST list;
    bool made;
    ~list_guard() {
      if (made) ::DeleteProcThreadAttributeList(list);
    }
  } guard{list, has_list};
  STARTUPINFOEXW startup{};
  startup.StartupInfo.cb = sizeof startup;
  startup.StartupInfo.dwFlags = STARTF_USESTDHANDLES;
  startup.StartupInfo.hStdInput = child_handles[0];
  startup.StartupInfo.hStdOutput = child_handles[1];
  startup.StartupInfo.hStdError = child_handles[2];
  startup.lpAttributeList = has_list ? list : nullptr;

  auto child = std::make_unique<child_process>(registry, request.program);
  PROCESS_INFORMATION created{};
  const DWORD creation = CREATE_UNICODE_ENVIRONMENT | (has_list ? EXTENDED_STARTUPINFO_PRESENT : 0);
  if (!::CreateProcessW(nullptr, command_line.data(), nullptr, nullptr, inherited.empty() ? FALSE : TRUE, creation,
                        own_environment ? environment_block.data() : nullptr,
                        directory.empty() ? nullptr : directory.c_str(), &startup.StartupInfo, &created)) {
    throw_spawn_error(last_windows_error(), request.program);
  }
  ::CloseHandle(created.hThread);
  for (owned_handle& end : child_ends) end.reset();
  child->started(created.dwProcessId, reinterpret_cast<native_handle>(created.hProcess));
  return process::adopt(child.release(), streams);
}
#endif  // CORO_LOOP_WINDOWS

// ============================================================================
// 10. HTTP/1.1 client  >>http
//    Uses 2 (deadlines, errors), 5 (tasks), 6 (timeout_scope), 7 (semaphores)
//    and 9 (streams, TLS); never the loop (3) or a backend (4). http://, and
//    https:// where TLS is built in (CORO_LOOP_OPENSSL): a TLS stream is a
//    stream, so only connecting, the pool's key and the end of a body differ.
//    Framing follows RFC 9112, redirects RFC 9110.
//    Left out where CORO_LOOP_NO_HTTP is defined.
// ============================================================================

#if !defined(CORO_LOOP_NO_HTTP)
namespace http {

// --- 10.1 Errors ---

/// Base of the errors about what a server sent.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A response that breaks HTTP/1.1 or a configured limit: bad syntax, bad
/// framing, an oversized head or body, a body cut short. The connection is
/// closed; what() names the rule and quotes the offending bytes.
class protocol_error : public error {
 public:
  using error::error;
};

/// The server closed the connection before sending any byte of the response
/// (aiohttp's ServerDisconnectedError).
class disconnected_error : public protocol_error {
 public:
  using protocol_error::protocol_error;
};

/// Thrown by response::raise_for_status() for a status of 400 or more.
class status_error : public error {
 public:
  status_error(int status_code, std::string reason_phrase, std::string request_url)
      : error("http " + std::to_string(status_code) + (reason_phrase.empty() ? "" : " ") + reason_phrase + ": " +
              request_url),
        status(status_code),
        reason(std::move(reason_phrase)),
        url(std::move(request_url)) {}
  int status;
  std::string reason;
  std::string url;
};

/// Too many redirects, or a redirect the client cannot follow (ftp://; https:// without TLS).
class redirect_error : public error {
 public:
  using error::error;
};

/// A request that cannot be sent as asked: a method or header name that is not
/// a token; a control byte other than HTAB (CR, LF, NUL, ...) in a header value,
/// client_options::user_agent and headers included, or in the URL; a
/// Content-Length or Transfer-Encoding set by hand. Nothing was sent.
class invalid_request_error : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

/// A URL that does not parse, or one the client cannot fetch (ftp://; https:// without TLS).
class url_error : public invalid_request_error {
 public:
  using invalid_request_error::invalid_request_error;
};

// --- 10.2 URLs and headers ---

/// An http:// or https:// URL, parsed strictly (RFC 3986): no user info, a port in
/// 1..65535, IPv6 literals in brackets. The fragment is dropped; spaces and
/// non-ASCII bytes in the path and query are percent-encoded, control bytes refused.
struct url {
  std::string scheme = "http";  // "http" or "https", lower-case
  std::string host;           // lower-case; an IPv6 literal without its brackets
  std::uint16_t port = 80;    // [80 for http, 443 for https]
  std::string target = "/";   // path and query, never empty
  /// Throws url_error saying what is wrong; https:// without TLS built in says how to build it in.
  static url parse(std::string_view text);
  /// The Host header: "example.com", "[::1]:8080" (the port only when not the scheme's default).
  std::string host_header() const;
  /// The scheme's default port: 443 for https, else 80.
  std::uint16_t default_port() const noexcept { return scheme == "https" ? 443 : 80; }
  /// The URL again, as scheme://host_header() followed by target (the fragment is gone).
  std::string to_string() const { return scheme + "://" + host_header() + target; }
};

/// Resolves a reference (a Location header) against `base`: absolute URLs,
/// "//host/path", "/path", "?query" and relative paths with dot segments.
url resolve_url(const url& base, std::string_view reference);

/// Header fields in order, repeats kept; names compare case-insensitively.
class header_list {
 public:
  /// A (name, value) pair; names keep the case they were given in.
  using field = std::pair<std::string, std::string>;
  /// Empty, or the given fields in order: {{"Accept", "text/html"}, {"X-Id", "7"}}.
  header_list() = default;
  header_list(std::initializer_list<field> fields) : fields_(fields) {}
  /// Appends a field, keeping any of the same name.
  void add(std::string name, std::string value) { fields_.emplace_back(std::move(name), std::move(value)); }
  /// Replaces every field of that name by this one.
  void set(std::string name, std::string value) {
    erase(name);
    add(std::move(name), std::move(value));
  }
  /// Removes every field of that name; returns how many.
  std::size_t erase(std::string_view name) {
    return std::erase_if(fields_, [&](const field& each) { return same_name(each.first, name); });
  }
  /// The first value of that name.
  std::optional<std::string_view> get(std::string_view name) const {
    for (const field& each : fields_) {
      if (same_name(each.first, name)) return std::string_view(each.second);
    }
    return std::nullopt;
  }
  /// Every value of that name, in order.
  std::vector<std::string_view> get_all(std::string_view name) const {
    std::vector<std::string_view> values;
    for (const field& each : fields_) {
      if (same_name(each.first, name)) values.emplace_back(each.second);
    }
    return values;
  }
  /// Whether a field of that name exists; size() counts every field, repeats included.
  bool contains(std::string_view name) const { return get(name).has_value(); }
  std::size_t size() const noexcept { return fields_.size(); }
  bool empty() const noexcept { return fields_.empty(); }
  /// The fields in order, as field pairs; back() is the last one added.
  auto begin() const noexcept { return fields_.begin(); }
  auto end() const noexcept { return fields_.end(); }
  field& back() { return fields_.back(); }
  void clear() noexcept { fields_.clear(); }

  /// ASCII case-insensitive comparison of two field names.
  static bool same_name(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
      if (to_lower(a[i]) != to_lower(b[i])) return false;
    }
    return true;
  }
  /// ASCII lower case of one byte, other bytes unchanged (no locale).
  static char to_lower(char c) noexcept { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }

 private:
  std::vector<field> fields_;
};

/// Header fields given with one request, viewed, not copied: a braced list
/// {{"Accept", "text/html"}, {"X-Id", id}} or a header_list. Trivially destructible, so
/// it is safe to write inside a co_await (see request_options_view); what it views must
/// live until the request function returns, which copies the fields.
class header_list_view {
 public:
  /// A field as two views, name and value.
  using field = std::pair<std::string_view, std::string_view>;
  /// No fields, the fields of a braced list (its array lives until the end of the full
  /// expression, so pass the list in the call), or those of a header_list.
  constexpr header_list_view() noexcept = default;
  constexpr header_list_view(std::initializer_list<field> fields) noexcept : fields_(fields) {}
  constexpr header_list_view(const header_list& fields) noexcept : list_(&fields) {}
  /// Calls visit(name, value) on each field, in order.
  template <class Visit>
  void for_each(Visit visit) const {
    if (list_ != nullptr) {
      for (const auto& [name, value] : *list_) visit(std::string_view(name), std::string_view(value));
      return;
    }
    for (const field& each : fields_) visit(each.first, each.second);
  }

 private:
  std::initializer_list<field> fields_;  // a braced list's, when list_ is null
  const header_list* list_ = nullptr;
};

// --- 10.3 Options ---

/// aiohttp's ClientTimeout: {.total = 10s}. Each timeout throws coro_loop::timeout_error
/// naming it; std::nullopt is no limit.
// Every member has an initializer so that {.total = 10s} leaves no member without one
// (g++'s -Wmissing-field-initializers, in -Wextra, warns on designated initializers too).
struct timeouts {
  std::optional<duration> total = std::chrono::seconds(300);  // the request, its redirects and reading the body
  std::optional<duration> connect = std::nullopt;  // waiting for a pool slot plus the TCP connect
  std::optional<duration> read = std::nullopt;     // each wait for bytes from the server
};

/// What a response may be; past a limit the client throws protocol_error.
struct limits {
  /// Longest status line in bytes, not counting its CRLF.
  std::size_t max_status_line = 8 * 1024;
  std::size_t max_header_bytes = 64 * 1024;  // the header block, and separately the trailers
  std::size_t max_header_count = 100;        // fields in the header block (and in the trailers)
  std::size_t max_body = 64 * 1024 * 1024;   // text() and body(); read_chunk() streams any size
};

/// A client's settings (aiohttp's ClientSession and TCPConnector arguments).
struct client_options {
  std::size_t limit = 100;         // connections in use at once, all hosts (0: no limit)
  std::size_t limit_per_host = 0;  // connections in use at once per scheme, host and port (0: no limit)
  duration keep_alive_timeout = std::chrono::seconds(15);  // an idle connection older than this is not reused
  bool keep_alive = true;          // false: every request says "Connection: close"
  /// Timeouts of each request (a request's own timeout replaces them) and response limits.
  timeouts timeout = {};
  http::limits limits = {};
  header_list headers = {};        // sent with every request; a request's own fields replace same-named ones
  /// Sent as User-Agent unless a header field sets one; empty: no User-Agent field. It and
  /// headers pass the checks of a request's own fields (invalid_request_error, nothing sent).
  std::string user_agent = "coro_loop/" CORO_LOOP_VERSION;
  /// Follow 301, 302, 303, 307 and 308 up to max_redirects times (then redirect_error).
  bool follow_redirects = true;
  int max_redirects = 10;
  /// The TLS settings of https:// requests (aiohttp's ssl=). Empty, the client makes
  /// tls_context::client() on its first https request: the system's CAs, the URL's host
  /// checked (an IP address against the certificate's addresses), ALPN "http/1.1". Give your
  /// own to trust other CAs (load_verify_locations), present a client certificate
  /// (load_cert_chain) or, only when asked for, accept any certificate (set_verify(false)).
  /// https:// needs CORO_LOOP_OPENSSL; a server ALPN choice other than http/1.1 is protocol_error.
  tls_context tls = {};
};

namespace detail {
// What request_options_view::timeout holds when the call gave none: a total no caller
// means (the earliest possible deadline), so the client's timeouts apply.
inline constexpr duration client_timeouts_marker = duration::min();
}  // namespace detail

/// One request's settings as written in the call, each one left out coming from the client:
/// co_await client.get(url, {.timeout = {.total = 10s}}), client.post(url, {.headers = fields, .body = text}).
/// Views, like std::string_view: the request function copies what they name before it
/// returns, so temporaries are fine in the call; to keep options, use a request_options.
/// GCC 12 rejects a braced list of headers inside a co_await ("array used as initializer"):
/// there, name the header_list, or make the request in a statement of its own, then await it.
// Trivially destructible on purpose: GCC 12 destroys twice an aggregate temporary with
// owning members written in a co_await expression ("free(): invalid pointer" at any -O),
// and destroying this one twice does nothing. The request functions are not coroutines:
// they copy the views into owning storage before the lazy task they return starts.
struct request_options_view {
  /// Fields for this request; they replace the client's fields of the same names.
  header_list_view headers = {};
  std::string_view body = {};  // any bytes
  /// This request's timeouts, replacing the client's. Left out, the client's apply (the
  /// member then holds a marker, a total of duration::min(), not a value to use).
  timeouts timeout = {.total = detail::client_timeouts_marker};
  /// When set, replace the client's follow_redirects / max_redirects.
  std::optional<bool> follow_redirects = std::nullopt;
  std::optional<int> max_redirects = std::nullopt;
};
static_assert(std::is_trivially_destructible_v<request_options_view>,
              "written in a co_await, an owning member would be destroyed twice by GCC 12");

/// One request's settings, owned: for options kept in a variable or built step by step,
/// then passed by name (client.get(url, options)); what is left unset comes from the client.
struct request_options {
  // Not an aggregate, so it cannot be written as a braced list inside a co_await (where
  // GCC 12 would destroy its members twice): a braced list is a request_options_view.
  request_options() = default;
  /// Fields for this request; they replace the client's fields of the same names.
  header_list headers;
  std::string body;                  // any bytes: std::string holds binary data
  std::optional<timeouts> timeout;   // replaces the client's
  /// When set, replace the client's follow_redirects / max_redirects.
  std::optional<bool> follow_redirects;
  std::optional<int> max_redirects;
  /// Sets the body from bytes (or text: std::string_view converts).
  void set_body(std::span<const std::byte> bytes) {
    body.assign(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  }
  void set_body(std::string_view text) { body.assign(text); }
  /// A view of these options: how the request functions take them.
  operator request_options_view() const noexcept {
    request_options_view view;
    view.headers = headers;
    view.body = body;
    if (timeout) view.timeout = *timeout;
    view.follow_redirects = follow_redirects;
    view.max_redirects = max_redirects;
    return view;
  }
};

// --- 10.4 The response parser ---

/// The incremental HTTP/1.1 response parser behind client (RFC 9112). It never
/// reads: the caller feeds bytes and consumes what it reports, so it serves
/// any transport, and fuzzing. Throws protocol_error for anything malformed.
class response_parser {
 public:
  /// How the body is delimited (RFC 9112 6.3): none, Content-Length, chunked, or until the
  /// server closes the connection.
  enum class framing : std::uint8_t { none, length, chunked, until_close };

  /// `limits` bounds the status line, header block, field count and trailers (max_body is the client's).
  explicit response_parser(http::limits limits = {}) : limits_(limits) {}

  /// Resets for the response to a request with this method ("HEAD": no body).
  void start(std::string_view request_method);
  /// Feed every buffered, unconsumed byte, the same prefix each time plus what
  /// arrived since. Returns 0 while the head is incomplete, then the size of
  /// the head (status line, fields, empty line) for the caller to consume.
  /// After an interim (1xx) head, call it again on the bytes that follow.
  std::size_t parse_head(std::string_view data);
  /// The last head was a 1xx interim response (another head follows).
  bool interim() const noexcept { return interim_; }
  /// True once parse_head returned a head (interim or final).
  bool head_complete() const noexcept { return head_complete_; }

  /// The parsed head: status, HTTP/1.x minor version (0 or 1), reason, fields, trailers (once
  /// a chunked body ended), framing, and the Content-Length when present and valid.
  int status() const noexcept { return status_; }
  int version_minor() const noexcept { return version_minor_; }
  const std::string& reason() const noexcept { return reason_; }
  header_list& headers() noexcept { return headers_; }
  const header_list& headers() const noexcept { return headers_; }
  header_list& trailers() noexcept { return trailers_; }
  const header_list& trailers() const noexcept { return trailers_; }
  framing body_framing() const noexcept { return framing_; }
  std::optional<std::uint64_t> content_length() const noexcept { return content_length_; }

  /// After the head: consumes framing and at most max_payload body bytes from
  /// the front of `data`, and points `payload` at the body bytes among them.
  /// Returns the bytes consumed; 0 with an empty payload when more bytes are
  /// needed (or done()).
  std::size_t parse_body(std::string_view data, std::string_view& payload,
                         std::size_t max_payload = static_cast<std::size_t>(-1));
  /// Body bytes parsed so far (chunk framing not counted).
  std::uint64_t body_bytes_received() const noexcept { return body_received_; }
  /// With nothing buffered: how many body bytes come next with no framing between
  /// them, for a caller to read straight into its own buffer (the rest of a
  /// Content-Length body or of the current chunk's data; any number until the
  /// close). 0 when framing comes next, or when done().
  std::uint64_t direct_payload_room() const noexcept;
  /// `count` (at most direct_payload_room()) body bytes were read that way.
  void took_direct_payload(std::size_t count) noexcept;
  /// The connection ended: completes a close-delimited body; anything else
  /// unfinished is a protocol_error ("connection closed after 10 of 100 body bytes").
  void end_of_input();
  /// The whole response, body and trailers, was parsed.
  bool done() const noexcept { return done_; }
  /// The connection may carry another request once this response is done.
  bool keep_alive() const noexcept { return keep_alive_; }

 private:
  enum class head_phase : std::uint8_t { status_line, fields };
  enum class chunk_phase : std::uint8_t { size_line, data, data_end, trailers };
  void parse_status_line(std::string_view line);
  void parse_field_line(std::string_view line, header_list& into, const char* block);
  void finish_head();
  void decide_framing();
  std::uint64_t read_content_length() const;
  std::size_t parse_chunked(std::string_view data, std::string_view& payload, std::size_t max_payload);

  http::limits limits_;
  bool head_request_ = false;
  // head scanning state: offsets into the data the caller keeps feeding
  head_phase phase_ = head_phase::status_line;
  std::size_t scanned_ = 0;
  std::size_t line_start_ = 0;
  std::size_t fields_start_ = 0;
  bool head_complete_ = false;
  bool interim_ = false;
  int interim_heads_ = 0;
  // the head
  int status_ = 0;
  int version_minor_ = 1;
  std::string reason_;
  header_list headers_;
  header_list trailers_;
  // the body
  framing framing_ = framing::none;
  std::optional<std::uint64_t> content_length_;
  std::uint64_t body_remaining_ = 0;  // length framing: bytes to come; chunked: of this chunk
  std::uint64_t body_received_ = 0;
  chunk_phase chunk_phase_ = chunk_phase::size_line;
  std::size_t trailer_bytes_ = 0;
  bool done_ = false;
  bool keep_alive_ = false;
};

// --- 10.5 Client and response ---

class client;

namespace detail {

// The waits that have a timeout of their own, besides the whole request's.
enum class wait_step : std::uint8_t { connect, read };

// A request's timeouts as deadlines, the one place they are read: the total
// deadline is fixed when the request starts, a connect or read deadline when
// that step starts (the read timeout bounds each wait for bytes, the connect
// timeout the wait for a pool slot and the connect together).
class request_deadlines {
 public:
  // A started step: the deadline of its own timeout, if it has one.
  struct step {
    wait_step kind;
    std::optional<time_point> deadline;
  };

  request_deadlines() = default;
  explicit request_deadlines(const timeouts& limits) noexcept : limits_(limits), total_(after(limits.total)) {}

  // Starts a connect or read step now.
  step connect() const noexcept { return {wait_step::connect, after(limits_.connect)}; }
  step read() const noexcept { return {wait_step::read, after(limits_.read)}; }
  // Awaits `work` under the nearer of the step's deadline and the total one,
  // and names the one that fired, with its timeout, in the timeout_error
  // ("read timeout (500 ms) waiting for <url>"). With neither, no timer is armed.
  template <class Awaitable>
  task<await_result_t<Awaitable>> within(Awaitable work, step current, const std::string& url) const;

 private:
  static std::optional<time_point> after(std::optional<duration> limit) noexcept {
    return limit ? std::optional<time_point>(coro_loop::detail::deadline_after(*limit)) : std::nullopt;
  }
  static std::string describe(duration limit) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(limit).count();
    return ms % 1000 == 0 ? std::to_string(ms / 1000) + " s" : std::to_string(ms) + " ms";
  }

  timeouts limits_;
  std::optional<time_point> total_;
};

// What one request runs under; its response keeps it for reading the body.
struct request_context {
  request_deadlines deadlines;
  std::size_t max_body = 0;
  bool reuse_allowed = true;  // false when either side asked for "Connection: close"
  std::string url;
};

// An idle kept-alive connection, with when it went idle. One the pool drops (too
// old, gone stale, the client closed) is closed, not aborted: over TLS the server
// then reads close_notify, an orderly end, rather than a truncation. Nobody waits
// for it: what cannot be sent at once is dropped with the socket.
struct idle_connection {
  idle_connection(stream idle, time_point when) noexcept : connection(std::move(idle)), since(when) {}
  idle_connection(idle_connection&&) noexcept = default;
  idle_connection& operator=(idle_connection&& other) noexcept {
    if (this != &other) {
      close_quietly();
      connection = std::move(other.connection);
      since = other.since;
    }
    return *this;
  }
  ~idle_connection() { close_quietly(); }
  void close_quietly() noexcept {
    try {
      connection.close();  // a no-op once moved from
    } catch (...) {
    }
  }

  stream connection;
  time_point since;
};

// A limit on connections in use, named in a task tree by what it limits: a
// request waiting for a slot reads "semaphore::acquire on http::client's
// connection slots for http://host:80 (0 free, 3 waiting)".
class connection_slots : public semaphore {
 public:
  connection_slots(std::size_t limit, std::string what) : semaphore(limit), what_(std::move(what)) {
    described_as_ = &what_;
  }

 private:
  std::string what_;
};

// Connections to one host and port.
struct host_pool {
  std::unique_ptr<connection_slots> in_use_limit;  // limit_per_host, when set
  std::vector<idle_connection> idle;        // the most recently used at the back
};

// A client's connections, shared by the client and the responses that hold
// one: a response may outlive its client and still return its connection.
struct pool_state {
  explicit pool_state(client_options settings)
      : options(std::move(settings)),
        in_use_limit(options.limit > 0 ? std::make_unique<connection_slots>(
                                             options.limit, "http::client's connection slots (all hosts)")
                                       : nullptr) {}
  client_options options;
  std::unique_ptr<connection_slots> in_use_limit;  // limit, when set
  std::map<std::string, host_pool> hosts;   // by "scheme://host:port": http and https never share
  std::size_t active = 0;
  std::size_t idle = 0;
  std::size_t opened = 0;
  time_point last_sweep = clock::now();
  bool closed = false;

  // The context of https:// connections: options.tls, or the safe default made on
  // first use (a client that never asks for https loads no trust store).
  const tls_context& https_context() {
    if (!options.tls.valid()) {
      tls_context made = tls_context::client();
      made.set_alpn_protocols({"http/1.1"});
      options.tls = std::move(made);
    }
    return options.tls;
  }
  // An idle connection older than keep_alive_timeout is not reused.
  bool too_old(const idle_connection& connection, time_point now) const noexcept {
    return now - connection.since >= options.keep_alive_timeout;
  }
  // Closes idle connections past keep_alive_timeout, for every host, at most
  // once per timeout: a client that talked to many hosts does not keep their
  // sockets open until it is closed.
  void sweep_idle(time_point now) {
    if (now - last_sweep < options.keep_alive_timeout) return;
    last_sweep = now;
    for (auto& [key, host] : hosts) {
      idle -= std::erase_if(host.idle, [&](const idle_connection& each) { return too_old(each, now); });
    }
  }
};

// One connection taken from the pool, with the permits it holds. Given back
// exactly once: to the idle list when the exchange ended cleanly, else closed.
class connection_lease {
 public:
  connection_lease() noexcept = default;
  connection_lease(std::shared_ptr<pool_state> pool, host_pool& host) noexcept : pool_(std::move(pool)), host_(&host) {}
  connection_lease(connection_lease&& other) noexcept
      : connection(std::move(other.connection)),
        reused(other.reused),
        pool_(std::move(other.pool_)),
        host_(other.host_),
        counted_(std::exchange(other.counted_, false)) {}
  connection_lease& operator=(connection_lease&& other) noexcept {
    if (this != &other) {
      give_back(false);
      connection = std::move(other.connection);
      reused = other.reused;
      pool_ = std::move(other.pool_);
      host_ = other.host_;
      counted_ = std::exchange(other.counted_, false);
    }
    return *this;
  }
  ~connection_lease() { give_back(false); }

  // The permits were taken: from now on the lease counts as active.
  void count_in() noexcept {
    counted_ = true;
    ++pool_->active;
  }
  bool held() const noexcept { return pool_ != nullptr; }
  // Pools the connection when `reusable`, the pool is open and the stream is
  // sound; closes it otherwise. Releases the permits either way.
  void give_back(bool reusable) noexcept {
    if (pool_ == nullptr) return;
    if (counted_) {
      if (reusable && !pool_->closed && connection && !connection.is_closing() && connection.buffered().empty()) {
        try {
          host_->idle.emplace_back(std::move(connection), clock::now());
          ++pool_->idle;
        } catch (...) {
        }
      }
      stream dropped = std::move(connection);  // destroying a stream closes it
      --pool_->active;
      if (host_->in_use_limit != nullptr) host_->in_use_limit->release();
      if (pool_->in_use_limit != nullptr) pool_->in_use_limit->release();
      counted_ = false;
    }
    pool_.reset();
  }

  stream connection;
  bool reused = false;

 private:
  std::shared_ptr<pool_state> pool_;
  host_pool* host_ = nullptr;
  bool counted_ = false;
};

}  // namespace detail

/// A type response::json() can return: Json::parse(std::string) makes one from the
/// body's text (nlohmann::json has this static parse; a type of your own can too).
template <class Json>
concept json_parsable = requires(std::string text) {
  { Json::parse(std::move(text)) } -> std::convertible_to<Json>;
};

/// A response whose head has arrived. It holds its connection until the body
/// is read to the end (the connection then goes back to the pool) or until it
/// is closed or destroyed (an unread body closes the connection). Move-only;
/// must not outlive the event loop.
class response {
 public:
  /// Move-only; a default response is empty (no connection). Destroying one, or assigning
  /// over it, close()s it.
  response() = default;
  response(response&&) noexcept = default;
  response& operator=(response&& other) noexcept {
    if (this != &other) {
      close();
      lease_ = std::move(other.lease_);
      parser_ = std::move(other.parser_);
      context_ = std::move(other.context_);
      history_ = std::move(other.history_);
    }
    return *this;
  }
  ~response() { close(); }

  /// The final head: status code, reason phrase, header fields.
  int status() const noexcept { return parser_.status(); }
  const std::string& reason() const noexcept { return parser_.reason(); }
  /// 1 for HTTP/1.1, 0 for HTTP/1.0.
  int version_minor() const noexcept { return parser_.version_minor(); }
  const header_list& headers() const noexcept { return parser_.headers(); }
  /// A chunked body's trailer fields, once the body was read.
  const header_list& trailers() const noexcept { return parser_.trailers(); }
  /// The URL this response came from (the last one, after redirects).
  const std::string& url() const noexcept { return context_.url; }
  /// The URLs that redirected here, in order.
  const std::vector<std::string>& history() const noexcept { return history_; }
  /// status() < 400 (aiohttp's ok).
  bool ok() const noexcept { return status() < 400; }
  /// The Content-Length of the body (given for HEAD, 204 and 304 too); std::nullopt when absent.
  std::optional<std::uint64_t> content_length() const noexcept { return parser_.content_length(); }
  /// Throws status_error (status, reason, url) when status() >= 400.
  void raise_for_status() const {
    if (!ok()) throw status_error(status(), reason(), url());
  }
  /// Every body byte was read.
  bool body_complete() const noexcept { return parser_.done(); }

  /// The rest of the body. protocol_error past limits.max_body, or when the
  /// body is malformed or cut short by the server closing; std::system_error
  /// when the connection is reset; timeout_error per the request's timeouts.
  /// Holds at most limits.max_body and about 1 MiB while reading, whatever the framing.
  CORO_LOOP_COROUTINE
  task<std::string> text() {
    std::string body_text;
    co_await read_rest(body_text);
    co_return body_text;
  }
  /// The rest of the body, as bytes (read into the vector itself: no copy).
  CORO_LOOP_COROUTINE
  task<std::vector<std::byte>> body() {
    std::vector<std::byte> body_bytes;
    co_await read_rest(body_bytes);
    co_return body_bytes;
  }
  /// The body parsed by Json::parse(text) (aiohttp's json()): co_await resp.json<nlohmann::json>(),
  /// or any type with such a static parse; no JSON library is built in. Throws what text()
  /// throws, and what parse throws (nlohmann::json::parse_error). The Content-Type is not checked.
  template <json_parsable Json>
  task<Json> json() {
    std::string body_text = co_await text();
    co_return Json::parse(std::move(body_text));
  }
  /// The next piece of the body, at most max_bytes; empty at its end. No size limit.
  CORO_LOOP_COROUTINE
  task<std::string> read_chunk(std::size_t max_bytes = 64 * 1024);
  /// The next piece of the body into the caller's buffer (Python's readinto): the bytes
  /// written, 0 at its end. No size limit. A buffer of at least 64 KiB (the stream's
  /// read_chunk) reused from call to call takes a large body at the kernel's copy speed:
  /// with nothing buffered, the socket is read straight into it.
  CORO_LOOP_COROUTINE
  task<std::size_t> read_into(std::span<char> into);
  /// Drops the connection now, unless the body was read to the end (then it
  /// is pooled). Idempotent.
  void close() noexcept {
    finish_from_buffer();
    lease_.give_back(parser_.done() && parser_.keep_alive() && context_.reuse_allowed);
  }

 private:
  // Responses are made by their client only: client::send_request builds one
  // from its parts once the final head is in; client::perform, following
  // redirects, gives it the history and drops a redirect's body.
  friend class client;
  response(detail::connection_lease lease, response_parser parser, detail::request_context context)
      : lease_(std::move(lease)), parser_(std::move(parser)), context_(std::move(context)) {
    release_when_done();  // no body (HEAD, 204, 304, Content-Length: 0)
  }
  // Appends the rest of the body to `out` (a std::string or std::vector<std::byte>).
  template <class Buffer>
  task<void> read_rest(Buffer& out);
  // Reads and drops the body of a redirect when it is small; closes otherwise.
  CORO_LOOP_COROUTINE
  task<void> discard_body(std::size_t at_most);
  // Waits for more bytes; false at the end of the stream (handled).
  CORO_LOOP_COROUTINE
  task<bool> fill();
  // Reads into `direct` (nothing buffered; at most the parser's direct_payload_room()),
  // or into the connection's buffer when it is empty; 0 at the end of the stream (handled).
  CORO_LOOP_COROUTINE
  task<std::size_t> receive(std::span<char> direct);
  // Returns the connection once the parser is done.
  void release_when_done() noexcept {
    if (parser_.done()) lease_.give_back(parser_.keep_alive() && context_.reuse_allowed);
  }
  // A body already in the buffer completes without I/O, so dropping a
  // response after reading only its head can still pool the connection.
  void finish_from_buffer() noexcept;

  detail::connection_lease lease_;
  response_parser parser_;
  detail::request_context context_;
  std::vector<std::string> history_;
};

/// An HTTP/1.1 client with a keep-alive connection pool (aiohttp's
/// ClientSession), for http:// and, with TLS built in, https:// URLs: create one
/// and reuse it. Requests may run concurrently.
/// Move-only; loop thread only; close it (or destroy it) before the loop ends.
class client {
 public:
  /// With default or given options. Move-only; destroying one, or assigning over it, close()s it.
  client() : client(client_options()) {}
  explicit client(client_options options) : pool_(std::make_shared<detail::pool_state>(std::move(options))) {}
  client(client&&) noexcept = default;
  client& operator=(client&& other) noexcept {
    if (this != &other) {
      close();
      pool_ = std::move(other.pool_);
    }
    return *this;
  }
  ~client() { close(); }

  /// Sends `method` to `url` and returns once the response head arrived; read
  /// the body from the response. Follows redirects unless told not to.
  /// Throws url_error / invalid_request_error (nothing sent), std::system_error
  /// (connect, or a reset after part of the response arrived), tls_error /
  /// tls_certificate_error (https), protocol_error / disconnected_error,
  /// redirect_error, timeout_error; invalid_state_error after close().
  // Not a coroutine: it copies what `options` views into the task it returns, so the
  // views may end with the call's full expression.
  CORO_LOOP_COROUTINE
  task<response> request(std::string method, std::string url, request_options_view options = {}) {
    return perform(pool_for("request"), std::move(method), std::move(url), owned(options));
  }
  /// GET, HEAD and DELETE (del: delete is a keyword), with options written in the call:
  /// client.get(url, {.timeout = {.total = 10s}}), or a request_options by name.
  CORO_LOOP_COROUTINE
  task<response> get(std::string url, request_options_view options = {}) {
    return request("GET", std::move(url), options);
  }
  CORO_LOOP_COROUTINE
  task<response> head(std::string url, request_options_view options = {}) {
    return request("HEAD", std::move(url), options);
  }
  CORO_LOOP_COROUTINE
  task<response> del(std::string url, request_options_view options = {}) {
    return request("DELETE", std::move(url), options);
  }
  /// POST, PUT and PATCH send `body` (any bytes: a std::string, moved in, or what converts
  /// to one), or options.body, with its Content-Length.
  // The body forms are templates so that a braced list never reaches std::string's
  // constructors: libc++ 14 fails to compile one with three designators there.
  CORO_LOOP_COROUTINE
  task<response> post(std::string url, request_options_view options = {}) {
    return request("POST", std::move(url), options);
  }
  template <std::convertible_to<std::string> Body>
  task<response> post(std::string url, Body&& body) {
    return send_body("POST", std::move(url), std::forward<Body>(body));
  }
  CORO_LOOP_COROUTINE
  task<response> put(std::string url, request_options_view options = {}) {
    return request("PUT", std::move(url), options);
  }
  template <std::convertible_to<std::string> Body>
  task<response> put(std::string url, Body&& body) {
    return send_body("PUT", std::move(url), std::forward<Body>(body));
  }
  CORO_LOOP_COROUTINE
  task<response> patch(std::string url, request_options_view options = {}) {
    return request("PATCH", std::move(url), options);
  }
  template <std::convertible_to<std::string> Body>
  task<response> patch(std::string url, Body&& body) {
    return send_body("PATCH", std::move(url), std::forward<Body>(body));
  }

  /// Closes the idle connections; those in use close when their response
  /// ends. Later requests throw invalid_state_error. Idempotent.
  void close() noexcept {
    if (pool_ == nullptr || pool_->closed) return;
    pool_->closed = true;
    for (auto& [key, host] : pool_->hosts) host.idle.clear();
    pool_->idle = 0;
  }
  /// True after close(), and for a moved-from client.
  bool closed() const noexcept { return pool_ == nullptr || pool_->closed; }
  /// Pooled connections waiting for a request, all hosts.
  std::size_t idle_connections() const noexcept { return pool_ != nullptr ? pool_->idle : 0; }
  /// Connections held by requests in flight and by responses.
  std::size_t active_connections() const noexcept { return pool_ != nullptr ? pool_->active : 0; }
  /// TCP connections opened so far.
  std::size_t connections_opened() const noexcept { return pool_ != nullptr ? pool_->opened : 0; }

 private:
  // The owning copy of what a view refers to, made before the request's task starts.
  static request_options owned(const request_options_view& view) {
    request_options options;
    view.headers.for_each([&](std::string_view name, std::string_view value) {
      options.headers.add(std::string(name), std::string(value));
    });
    options.body.assign(view.body);
    if (view.timeout.total != detail::client_timeouts_marker) options.timeout = view.timeout;
    options.follow_redirects = view.follow_redirects;
    options.max_redirects = view.max_redirects;
    return options;
  }
  CORO_LOOP_COROUTINE
  task<response> send_body(std::string method, std::string url, std::string body) {
    request_options options;
    options.body = std::move(body);
    return perform(pool_for("request"), std::move(method), std::move(url), std::move(options));
  }
  std::shared_ptr<detail::pool_state> pool_for(const char* operation) const {
    if (pool_ == nullptr) throw invalid_state_error(std::string("http::client::") + operation + ": moved-from client");
    return pool_;
  }
  // The request does not refer to the client: it may be moved or destroyed
  // while the request runs (its pool lives on in the request).
  CORO_LOOP_COROUTINE
  static task<response> perform(std::shared_ptr<detail::pool_state> pool, std::string method, std::string url,
                                request_options options);
  // One exchange on one connection, up to the final head: one per redirect.
  CORO_LOOP_COROUTINE
  static task<response> send_request(std::shared_ptr<detail::pool_state> pool, std::string method, url target,
                                     const header_list& headers, const std::string& body,
                                     const detail::request_context& request);

  std::shared_ptr<detail::pool_state> pool_;
};

// --- 10.6 Implementation: text helpers ---

namespace detail {

// tchar of RFC 9110: the bytes allowed in a token (method, field name).
inline bool is_token_char(char c) noexcept {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return true;
  return std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
}
inline bool is_token(std::string_view text) noexcept {
  return !text.empty() && std::all_of(text.begin(), text.end(), is_token_char);
}
inline bool is_blank(char c) noexcept { return c == ' ' || c == '\t'; }
inline std::string_view trim_blanks(std::string_view text) noexcept {
  while (!text.empty() && is_blank(text.front())) text.remove_prefix(1);
  while (!text.empty() && is_blank(text.back())) text.remove_suffix(1);
  return text;
}
inline int hex_digit_value(char c) noexcept {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The bytes an error message quotes: printable ASCII as is, others as \xNN,
// cut at 60 so a hostile peer cannot make the message huge.
inline std::string quote_bytes(std::string_view bytes) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string quoted = "\"";
  for (std::size_t i = 0; i < bytes.size() && i < 60; ++i) {
    const auto byte = static_cast<unsigned char>(bytes[i]);
    if (byte >= 0x20 && byte < 0x7f && byte != '"' && byte != '\\') {
      quoted += static_cast<char>(byte);
    } else if (byte == '\r') {
      quoted += "\\r";
    } else if (byte == '\n') {
      quoted += "\\n";
    } else {
      quoted += "\\x";
      quoted += hex[byte >> 4];
      quoted += hex[byte & 15];
    }
  }
  quoted += bytes.size() > 60 ? "\"..." : "\"";
  return quoted;
}

[[noreturn]] inline void throw_protocol_error(const std::string& what) { throw protocol_error("http: " + what); }

// Each comma-separated element of the fields named `name`, blanks trimmed.
template <class Visit>
void for_each_list_element(const header_list& headers, std::string_view name, Visit visit) {
  for (std::string_view value : headers.get_all(name)) {
    while (!value.empty()) {
      const std::size_t comma = value.find(',');
      const std::string_view element = trim_blanks(value.substr(0, comma));
      if (!element.empty()) visit(element);
      if (comma == std::string_view::npos) break;
      value.remove_prefix(comma + 1);
    }
  }
}

inline bool list_has_token(const header_list& headers, std::string_view name, std::string_view token) {
  bool found = false;
  for_each_list_element(headers, name, [&](std::string_view element) {
    if (header_list::same_name(element, token)) found = true;
  });
  return found;
}

// RFC 3986 5.2.4: removes "." and ".." segments from a path.
inline std::string remove_dot_segments(std::string_view path) {
  std::vector<std::string_view> segments;
  const bool absolute = !path.empty() && path.front() == '/';
  if (absolute) path.remove_prefix(1);
  bool ends_with_slash = path.empty();
  while (true) {
    const std::size_t slash = path.find('/');
    const std::string_view segment = path.substr(0, slash);
    const bool last = slash == std::string_view::npos;
    if (segment == "..") {
      if (!segments.empty()) segments.pop_back();
      ends_with_slash = true;
    } else if (segment == ".") {
      ends_with_slash = true;
    } else {
      segments.push_back(segment);
      ends_with_slash = false;
    }
    if (last) break;
    path.remove_prefix(slash + 1);
    if (path.empty()) {
      ends_with_slash = true;
      break;
    }
  }
  std::string result = absolute ? "/" : "";
  for (std::size_t i = 0; i < segments.size(); ++i) {
    if (i > 0) result += '/';
    result += segments[i];
  }
  if (ends_with_slash && !segments.empty() && !segments.back().empty()) result += '/';
  return result;
}

}  // namespace detail

// --- 10.7 Implementation: URLs ---

inline url url::parse(std::string_view text) {
  const auto fail = [&](const std::string& why) -> url {
    throw url_error("http: invalid URL " + detail::quote_bytes(text) + ": " + why);
  };
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) return fail("it contains a control byte (CR, LF, NUL, ...)");
  }
  const std::size_t scheme_end = text.find("://");
  if (scheme_end == std::string_view::npos) return fail("expected scheme://host (an absolute http:// URL)");
  std::string scheme(text.substr(0, scheme_end));
  std::transform(scheme.begin(), scheme.end(), scheme.begin(), header_list::to_lower);
  if (scheme == "https" && !coro_loop::detail::tls_built_in) {
    throw url_error("http: " + detail::quote_bytes(text) + ": https needs TLS, which is not built in: " +
                    coro_loop::detail::how_to_build_tls_in);
  }
  if (scheme != "http" && scheme != "https") {
    return fail("unsupported scheme \"" + scheme + "\" (only http:// and https:// are)");
  }
  std::string_view rest = text.substr(scheme_end + 3);
  const std::size_t authority_end = rest.find_first_of("/?#");
  const std::string_view authority = rest.substr(0, authority_end);
  rest = authority_end == std::string_view::npos ? std::string_view() : rest.substr(authority_end);
  if (authority.find('@') != std::string_view::npos) return fail("user info (user@host) is not supported");

  url parsed;
  parsed.scheme = std::move(scheme);
  parsed.port = parsed.default_port();
  std::string_view port_text;
  bool has_port = false;
  if (!authority.empty() && authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return fail("unterminated IPv6 literal");
    parsed.host = std::string(authority.substr(1, close - 1));
    in6_addr probe{};
    if (::inet_pton(AF_INET6, parsed.host.c_str(), &probe) != 1) return fail("bad IPv6 literal");
    const std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return fail("unexpected bytes after the IPv6 literal");
      port_text = after.substr(1);
      has_port = true;
    }
  } else {
    const std::size_t colon = authority.find(':');
    parsed.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      has_port = true;
    }
    if (parsed.host.empty()) return fail("no host");
    for (const char c : parsed.host) {
      const bool allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                           c == '.' || c == '_';
      if (!allowed) return fail("the host has a byte a host name cannot have");
    }
  }
  if (parsed.host.empty()) return fail("no host");
  std::transform(parsed.host.begin(), parsed.host.end(), parsed.host.begin(), header_list::to_lower);
  if (has_port && !port_text.empty()) {
    unsigned long port = 0;
    for (const char c : port_text) {
      if (c < '0' || c > '9' || port > 65535) return fail("the port is not a number in 1..65535");
      port = port * 10 + static_cast<unsigned long>(c - '0');
    }
    if (port == 0 || port > 65535) return fail("the port is not a number in 1..65535");
    parsed.port = static_cast<std::uint16_t>(port);
  }

  const std::string_view path_and_query = rest.substr(0, rest.find('#'));
  static constexpr char hex[] = "0123456789ABCDEF";
  std::string target;
  if (path_and_query.empty() || path_and_query.front() != '/') target = "/";
  for (const char c : path_and_query) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte <= 0x20 || byte >= 0x7f || std::string_view("\"<>\\^`{|}").find(c) != std::string_view::npos) {
      target += '%';
      target += hex[byte >> 4];
      target += hex[byte & 15];
    } else {
      target += c;
    }
  }
  parsed.target = std::move(target);
  return parsed;
}

inline std::string url::host_header() const {
  std::string header = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  if (port != default_port()) header += ":" + std::to_string(port);
  return header;
}

inline url resolve_url(const url& base, std::string_view reference) {
  reference = detail::trim_blanks(reference);
  const std::string origin = base.scheme + "://" + base.host_header();
  const std::size_t scheme_end = reference.find("://");
  const std::size_t first_delimiter = reference.find_first_of("/?#");
  if (scheme_end != std::string_view::npos && scheme_end < first_delimiter) return url::parse(reference);
  if (reference.substr(0, 2) == "//") return url::parse(base.scheme + ":" + std::string(reference));
  reference = reference.substr(0, reference.find('#'));
  if (reference.empty()) return base;
  const std::string_view base_path = std::string_view(base.target).substr(0, base.target.find('?'));
  if (reference.front() == '?') return url::parse(origin + std::string(base_path) + std::string(reference));
  const std::size_t query = reference.find('?');
  const std::string_view path = reference.substr(0, query);
  const std::string_view query_part = query == std::string_view::npos ? std::string_view() : reference.substr(query);
  std::string merged;
  if (path.front() == '/') {
    merged = std::string(path);
  } else {
    merged = std::string(base_path.substr(0, base_path.rfind('/') + 1)) + std::string(path);
  }
  return url::parse(origin + detail::remove_dot_segments(merged) + std::string(query_part));
}

// --- 10.8 Implementation: the response parser ---

inline void response_parser::start(std::string_view request_method) {
  head_request_ = request_method == "HEAD";
  phase_ = head_phase::status_line;
  scanned_ = line_start_ = fields_start_ = 0;
  head_complete_ = interim_ = false;
  interim_heads_ = 0;
  status_ = 0;
  version_minor_ = 1;
  reason_.clear();
  headers_.clear();
  trailers_.clear();
  framing_ = framing::none;
  content_length_.reset();
  body_remaining_ = body_received_ = 0;
  chunk_phase_ = chunk_phase::size_line;
  trailer_bytes_ = 0;
  done_ = keep_alive_ = false;
}

inline std::size_t response_parser::parse_head(std::string_view data) {
  if (head_complete_) {
    if (!interim_) throw invalid_state_error("http::response_parser::parse_head: the head was already parsed");
    // The next head starts in fresh data after the interim one.
    const int interim_heads = interim_heads_ + 1;
    if (interim_heads > 32) detail::throw_protocol_error("more than 32 interim (1xx) responses");
    start(head_request_ ? "HEAD" : "GET");
    interim_heads_ = interim_heads;
  }
  if (data.size() < scanned_) throw invalid_state_error("http::response_parser::parse_head: fed less data than before");
  for (;;) {
    const std::size_t newline = data.find('\n', scanned_);
    if (newline == std::string_view::npos) {
      scanned_ = data.size();
      // The same limits as on a complete line, so that how the bytes were
      // split never changes the outcome: a trailing CR is not part of the line.
      std::size_t pending = data.size() - line_start_;
      if (pending > 0 && data.back() == '\r') --pending;
      if (phase_ == head_phase::status_line && pending > limits_.max_status_line) {
        detail::throw_protocol_error("status line longer than " + std::to_string(limits_.max_status_line) +
                                     " bytes: " + detail::quote_bytes(data.substr(line_start_)));
      }
      if (phase_ == head_phase::fields && data.size() - fields_start_ > limits_.max_header_bytes) {
        detail::throw_protocol_error("header block larger than " + std::to_string(limits_.max_header_bytes) +
                                     " bytes");
      }
      return 0;
    }
    std::string_view line = data.substr(line_start_, newline - line_start_);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    scanned_ = line_start_ = newline + 1;
    if (phase_ == head_phase::status_line) {
      // Servers sometimes send a stray CRLF after a body: skip empty lines.
      if (line.empty()) {
        if (line_start_ > limits_.max_status_line) detail::throw_protocol_error("too many empty lines before the status line");
        continue;
      }
      if (line.size() > limits_.max_status_line) {
        detail::throw_protocol_error("status line longer than " + std::to_string(limits_.max_status_line) +
                                     " bytes: " + detail::quote_bytes(line));
      }
      parse_status_line(line);
      phase_ = head_phase::fields;
      fields_start_ = line_start_;
      continue;
    }
    if (line_start_ - fields_start_ > limits_.max_header_bytes) {
      detail::throw_protocol_error("header block larger than " + std::to_string(limits_.max_header_bytes) + " bytes");
    }
    if (line.empty()) {
      const std::size_t head_size = line_start_;
      finish_head();
      return head_size;
    }
    parse_field_line(line, headers_, "header");
  }
}

inline void response_parser::parse_status_line(std::string_view line) {
  // HTTP-version SP status-code SP [reason-phrase]; the SP before an empty
  // reason is often missing, and tolerated.
  if (line.size() < 12 || line.substr(0, 7) != "HTTP/1." || line[7] < '0' || line[7] > '9' || line[8] != ' ') {
    detail::throw_protocol_error("the status line is not \"HTTP/1.x NNN reason\": " + detail::quote_bytes(line));
  }
  version_minor_ = line[7] == '0' ? 0 : 1;
  int code = 0;
  for (std::size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') {
      detail::throw_protocol_error("the status code is not three digits: " + detail::quote_bytes(line));
    }
    code = code * 10 + (line[i] - '0');
  }
  if (code < 100) detail::throw_protocol_error("status code below 100: " + detail::quote_bytes(line));
  if (line.size() > 12 && line[12] != ' ') {
    detail::throw_protocol_error("the status code is not three digits: " + detail::quote_bytes(line));
  }
  const std::string_view reason = line.size() > 13 ? line.substr(13) : std::string_view();
  for (const char c : reason) {
    const auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && c != '\t') || byte == 0x7f) {
      detail::throw_protocol_error("control byte in the reason phrase: " + detail::quote_bytes(line));
    }
  }
  status_ = code;
  reason_ = std::string(reason);
}

inline void response_parser::parse_field_line(std::string_view line, header_list& into, const char* block) {
  if (detail::is_blank(line.front())) {
    // obs-fold (RFC 9112 5.2): a user agent replaces it with a space.
    if (into.empty()) {
      detail::throw_protocol_error(std::string("whitespace before the first ") + block +
                                   " field: " + detail::quote_bytes(line));
    }
    const std::string_view continuation = detail::trim_blanks(line);
    for (const char c : continuation) {
      if (c == '\0' || c == '\r') detail::throw_protocol_error("NUL or CR in a field value: " + detail::quote_bytes(line));
    }
    std::string& value = into.back().second;
    if (!continuation.empty()) {
      if (!value.empty()) value += ' ';
      value += continuation;
    }
    return;
  }
  const std::size_t colon = line.find(':');
  if (colon == std::string_view::npos) {
    detail::throw_protocol_error(std::string(block) + " line without a colon: " + detail::quote_bytes(line));
  }
  const std::string_view name = line.substr(0, colon);
  if (!detail::is_token(name)) {
    detail::throw_protocol_error(
        std::string("bad field name (not a token, or whitespace before the colon): ") + detail::quote_bytes(line));
  }
  const std::string_view value = detail::trim_blanks(line.substr(colon + 1));
  for (const char c : value) {
    if (c == '\0' || c == '\r') detail::throw_protocol_error("NUL or CR in a field value: " + detail::quote_bytes(line));
  }
  if (into.size() >= limits_.max_header_count) {
    detail::throw_protocol_error("more than " + std::to_string(limits_.max_header_count) + " " + block + " fields");
  }
  into.add(std::string(name), std::string(value));
}

inline void response_parser::finish_head() {
  head_complete_ = true;
  if (status_ >= 100 && status_ < 200) {
    if (status_ == 101) detail::throw_protocol_error("101 Switching Protocols, but no upgrade was asked for");
    interim_ = true;
    return;
  }
  decide_framing();
}

// RFC 9112 6.3, in its order.
inline void response_parser::decide_framing() {
  keep_alive_ = version_minor_ >= 1 ? !detail::list_has_token(headers_, "Connection", "close")
                                    : detail::list_has_token(headers_, "Connection", "keep-alive");
  const bool has_transfer_encoding = headers_.contains("Transfer-Encoding");
  const bool has_content_length = headers_.contains("Content-Length");
  if (head_request_ || status_ == 204 || status_ == 304) {
    // No body, whatever the fields say; a Content-Length here tells the size
    // a GET would get, and is reported when it is valid.
    framing_ = framing::none;
    done_ = true;
    if (has_content_length && !has_transfer_encoding) {
      try {
        content_length_ = read_content_length();
      } catch (const protocol_error&) {
      }
    }
    return;
  }
  if (has_transfer_encoding) {
    if (has_content_length) {
      detail::throw_protocol_error("both Content-Length and Transfer-Encoding (a request smuggling risk)");
    }
    std::vector<std::string_view> codings;
    detail::for_each_list_element(headers_, "Transfer-Encoding", [&](std::string_view coding) {
      codings.push_back(coding);
    });
    for (std::size_t i = 0; i < codings.size(); ++i) {
      const bool chunked = header_list::same_name(codings[i], "chunked");
      if (!chunked || i + 1 != codings.size()) {
        detail::throw_protocol_error("unsupported Transfer-Encoding " + detail::quote_bytes(codings[i]) +
                                     " (only chunked, last, is)");
      }
    }
    if (codings.empty()) detail::throw_protocol_error("empty Transfer-Encoding");
    framing_ = framing::chunked;
    chunk_phase_ = chunk_phase::size_line;
    return;
  }
  if (has_content_length) {
    content_length_ = read_content_length();
    framing_ = framing::length;
    body_remaining_ = *content_length_;
    done_ = body_remaining_ == 0;
    return;
  }
  framing_ = framing::until_close;
  keep_alive_ = false;
}

// Content-Length: digits only; repeated fields (or a list) must agree (RFC 9112 6.3).
inline std::uint64_t response_parser::read_content_length() const {
  std::optional<std::uint64_t> length;
  detail::for_each_list_element(headers_, "Content-Length", [&](std::string_view element) {
    std::uint64_t value = 0;
    if (element.size() > 19) detail::throw_protocol_error("bad Content-Length " + detail::quote_bytes(element));
    for (const char c : element) {
      if (c < '0' || c > '9') detail::throw_protocol_error("bad Content-Length " + detail::quote_bytes(element));
      value = value * 10 + static_cast<std::uint64_t>(c - '0');
    }
    if (length && *length != value) detail::throw_protocol_error("Content-Length fields that disagree");
    length = value;
  });
  if (!length) detail::throw_protocol_error("empty Content-Length");
  return *length;
}

inline std::size_t response_parser::parse_body(std::string_view data, std::string_view& payload,
                                               std::size_t max_payload) {
  payload = {};
  if (!head_complete_ || interim_) throw invalid_state_error("http::response_parser::parse_body: no final head yet");
  if (done_) return 0;
  switch (framing_) {
    case framing::none:
      return 0;
    case framing::length: {
      const std::size_t take = static_cast<std::size_t>(
          std::min<std::uint64_t>(body_remaining_, std::min(data.size(), max_payload)));
      payload = data.substr(0, take);
      body_remaining_ -= take;
      body_received_ += take;
      done_ = body_remaining_ == 0;
      return take;
    }
    case framing::until_close: {
      const std::size_t take = std::min(data.size(), max_payload);
      payload = data.substr(0, take);
      body_received_ += take;
      return take;
    }
    case framing::chunked:
      return parse_chunked(data, payload, max_payload);
  }
  return 0;
}

inline std::uint64_t response_parser::direct_payload_room() const noexcept {
  if (!head_complete_ || interim_ || done_) return 0;
  switch (framing_) {
    case framing::length:
      return body_remaining_;
    case framing::until_close:
      return static_cast<std::uint64_t>(-1);
    case framing::chunked:
      return chunk_phase_ == chunk_phase::data ? body_remaining_ : 0;
    case framing::none:
      break;
  }
  return 0;
}

inline void response_parser::took_direct_payload(std::size_t count) noexcept {
  body_received_ += count;
  if (framing_ == framing::until_close) return;
  body_remaining_ -= count;
  if (body_remaining_ > 0) return;
  if (framing_ == framing::length) done_ = true;
  if (framing_ == framing::chunked) chunk_phase_ = chunk_phase::data_end;
}

inline std::size_t response_parser::parse_chunked(std::string_view data, std::string_view& payload,
                                                  std::size_t max_payload) {
  static constexpr std::size_t max_chunk_line = 4096;  // size plus extensions
  std::size_t consumed = 0;
  while (!done_) {
    const std::string_view rest = data.substr(consumed);
    switch (chunk_phase_) {
      case chunk_phase::size_line: {
        const std::size_t newline = rest.find('\n');
        if (newline == std::string_view::npos) {
          const std::size_t pending = rest.size() - (!rest.empty() && rest.back() == '\r' ? 1 : 0);
          if (pending > max_chunk_line) {
            detail::throw_protocol_error("chunk size line longer than " + std::to_string(max_chunk_line) + " bytes");
          }
          return consumed;
        }
        std::string_view line = rest.substr(0, newline);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        if (line.size() > max_chunk_line) {
          detail::throw_protocol_error("chunk size line longer than " + std::to_string(max_chunk_line) + " bytes");
        }
        std::uint64_t size = 0;
        std::size_t digits = 0;
        while (digits < line.size() && detail::hex_digit_value(line[digits]) >= 0) {
          if (size >= (std::uint64_t{1} << 56)) detail::throw_protocol_error("chunk size too large: " + detail::quote_bytes(line));
          size = size * 16 + static_cast<std::uint64_t>(detail::hex_digit_value(line[digits]));
          ++digits;
        }
        std::string_view extensions = detail::trim_blanks(line.substr(digits));
        if (digits == 0 || (!extensions.empty() && extensions.front() != ';')) {
          detail::throw_protocol_error("bad chunk size line: " + detail::quote_bytes(line));
        }
        for (const char c : extensions) {
          if (c == '\0' || c == '\r') detail::throw_protocol_error("bad chunk extension: " + detail::quote_bytes(line));
        }
        consumed += newline + 1;
        if (size == 0) {
          chunk_phase_ = chunk_phase::trailers;
        } else {
          body_remaining_ = size;
          chunk_phase_ = chunk_phase::data;
        }
        break;
      }
      case chunk_phase::data: {
        const std::size_t take =
            static_cast<std::size_t>(std::min<std::uint64_t>(body_remaining_, std::min(rest.size(), max_payload)));
        if (take == 0) return consumed;
        payload = rest.substr(0, take);
        body_remaining_ -= take;
        body_received_ += take;
        if (body_remaining_ == 0) chunk_phase_ = chunk_phase::data_end;
        return consumed + take;
      }
      case chunk_phase::data_end: {
        if (rest.empty()) return consumed;
        if (rest.front() == '\n') {
          consumed += 1;
        } else if (rest.front() == '\r') {
          if (rest.size() < 2) return consumed;
          if (rest[1] != '\n') detail::throw_protocol_error("chunk data not followed by CRLF: " + detail::quote_bytes(rest));
          consumed += 2;
        } else {
          detail::throw_protocol_error("chunk data longer than its size: " + detail::quote_bytes(rest));
        }
        chunk_phase_ = chunk_phase::size_line;
        break;
      }
      case chunk_phase::trailers: {
        const std::size_t newline = rest.find('\n');
        if (newline == std::string_view::npos) {
          if (trailer_bytes_ + rest.size() > limits_.max_header_bytes) {
            detail::throw_protocol_error("trailers larger than " + std::to_string(limits_.max_header_bytes) + " bytes");
          }
          return consumed;
        }
        trailer_bytes_ += newline + 1;
        if (trailer_bytes_ > limits_.max_header_bytes) {
          detail::throw_protocol_error("trailers larger than " + std::to_string(limits_.max_header_bytes) + " bytes");
        }
        std::string_view line = rest.substr(0, newline);
        if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
        consumed += newline + 1;
        if (line.empty()) {
          done_ = true;
        } else {
          parse_field_line(line, trailers_, "trailer");
        }
        break;
      }
    }
  }
  return consumed;
}

inline void response_parser::end_of_input() {
  if (done_) return;
  if (!head_complete_ || interim_) detail::throw_protocol_error("connection closed inside the response head");
  switch (framing_) {
    case framing::until_close:
      done_ = true;
      keep_alive_ = false;
      return;
    case framing::length:
      detail::throw_protocol_error("connection closed after " + std::to_string(body_received_) + " of " +
                                   std::to_string(*content_length_) + " body bytes");
    case framing::chunked:
      detail::throw_protocol_error("connection closed inside a chunked body (after " +
                                   std::to_string(body_received_) + " body bytes)");
    case framing::none:
      return;
  }
}

// --- 10.9 Implementation: the connection pool and one exchange ---

namespace detail {

template <class Awaitable>
task<await_result_t<Awaitable>> request_deadlines::within(Awaitable work, step current, const std::string& url) const {
  if (!total_ && !current.deadline) co_return co_await std::move(work);
  const bool step_is_nearer = current.deadline && (!total_ || *current.deadline < *total_);
  timeout_scope scope(step_is_nearer ? current.deadline : total_);
  try {
    co_return co_await scope.run(std::move(work));
  } catch (const timeout_error&) {
    if (!scope.expired()) throw;
    const std::string which =
        !step_is_nearer                   ? "total timeout (" + describe(*limits_.total) + ")"
        : current.kind == wait_step::read ? "read timeout (" + describe(*limits_.read) + ")"
                                          : "connect timeout (" + describe(*limits_.connect) + ")";
    throw timeout_error("http: " + which + " waiting for " + url);
  }
}

// Whether a pooled connection can carry a request: nothing unread, and the
// server has not closed it, reset it or sent something unasked since. A
// server that closes after this check is covered by the retry of idempotent
// requests; for them (`retry_covers_stale`) the loop's last poll is recent
// enough, which saves a system call per request.
inline bool still_open(const stream& connection, bool retry_covers_stale) noexcept {
  if (!connection || connection.is_closing() || !connection.buffered().empty() || connection.at_eof()) return false;
  return !connection.input_pending(retry_covers_stale);
}

CORO_LOOP_COROUTINE
task<connection_lease> acquire_connection(std::shared_ptr<pool_state> pool, const url& target,
                                          const request_context& request, bool fresh, bool retry_covers_stale) {
  if (pool->closed) throw invalid_state_error("http::client: request after close()");
  pool->sweep_idle(clock::now());
  const request_deadlines::step connect = request.deadlines.connect();
  const std::string origin = target.scheme + "://" + target.host + ":" + std::to_string(target.port);
  host_pool& host = pool->hosts[origin];
  if (pool->options.limit_per_host > 0 && host.in_use_limit == nullptr) {
    host.in_use_limit =
        std::make_unique<connection_slots>(pool->options.limit_per_host, "http::client's connection slots for " + origin);
  }
  // Per host first, then the total, so a host at its own limit never holds a
  // total permit another host could use.
  if (host.in_use_limit != nullptr) {
    co_await request.deadlines.within(host.in_use_limit->acquire(), connect, request.url);
  }
  if (pool->in_use_limit != nullptr) {
    try {
      co_await request.deadlines.within(pool->in_use_limit->acquire(), connect, request.url);
    } catch (...) {
      if (host.in_use_limit != nullptr) host.in_use_limit->release();
      throw;
    }
  }
  connection_lease lease(pool, host);
  lease.count_in();
  if (pool->closed) throw invalid_state_error("http::client: closed while the request waited for a connection");
  const time_point now = clock::now();
  while (!fresh && !host.idle.empty()) {
    idle_connection candidate = std::move(host.idle.back());
    host.idle.pop_back();
    --pool->idle;
    if (!pool->too_old(candidate, now) && still_open(candidate.connection, retry_covers_stale)) {
      lease.connection = std::move(candidate.connection);
      lease.reused = true;
      co_return lease;
    }
  }
  // The connect timeout bounds the TCP connect and the TLS handshake together; a cancel
  // or a timeout during either closes the connection (open_connection aborts it).
  stream_options options;
  task<stream> opening;
  if (target.scheme == "https") {
    tls_options tls(pool->https_context(), target.host);  // the URL's host: SNI and the name checked
    opening = open_connection(target.host, target.port, std::move(tls), options);
  } else {
    opening = open_connection(target.host, target.port, options);
  }
  auto connecting = request.deadlines.within(std::move(opening), connect, request.url);
  lease.connection = co_await std::move(connecting);
  ++pool->opened;
  // Only HTTP/1.1 is spoken: a context of the user's that offered more ("h2") must
  // not have it chosen.
  if (const std::string_view alpn = lease.connection.selected_alpn_protocol(); !alpn.empty() && alpn != "http/1.1") {
    throw protocol_error("http: " + request.url + ": the server chose \"" + std::string(alpn) +
                         "\" through ALPN, and this client speaks HTTP/1.1 only (offer \"http/1.1\" alone)");
  }
  co_return lease;
}

inline bool is_idempotent(std::string_view method) noexcept {
  return method == "GET" || method == "HEAD" || method == "PUT" || method == "DELETE" || method == "OPTIONS" ||
         method == "TRACE";
}

// What an error message calls a byte a request head must not carry.
inline std::string name_control_byte(unsigned char byte) {
  if (byte == '\r') return "CR";
  if (byte == '\n') return "LF";
  if (byte == '\0') return "NUL";
  if (byte == 0x7f) return "DEL";
  static constexpr char hex[] = "0123456789abcdef";
  return std::string("control byte 0x") + hex[byte >> 4] + hex[byte & 15];
}

// The request line: a method that is a token, a target of visible ASCII only
// (url::parse percent-encodes spaces and non-ASCII and refuses control bytes).
inline void check_request_line(std::string_view method, std::string_view target) {
  if (!is_token(method)) {
    throw invalid_request_error("http: method " + quote_bytes(method) + " is not a token (RFC 9110 9.1)");
  }
  const bool visible = std::all_of(target.begin(), target.end(), [](char c) {
    const auto byte = static_cast<unsigned char>(c);
    return byte > 0x20 && byte < 0x7f;
  });
  if (target.empty() || !visible) {
    throw invalid_request_error("http: request target " + quote_bytes(target) + " is empty or not visible ASCII");
  }
}

// The one check of every field a request head carries, whatever set it:
// client_options::user_agent and headers, request_options::headers, the
// client's own fields. A name is a token; a value holds HTAB, SP, visible
// ASCII and obs-text only (RFC 9110 5.5). CR or LF would start a field or a
// request of the caller's input's choosing; NUL and the other control bytes
// are invalid, and servers disagree on what they mean.
inline void check_field(std::string_view name, std::string_view value) {
  if (!is_token(name)) {
    throw invalid_request_error("http: header name " + quote_bytes(name) + " is not a token (RFC 9110 5.1)");
  }
  for (const char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if ((byte < 0x20 && byte != '\t') || byte == 0x7f) {
      throw invalid_request_error("http: header value of " + std::string(name) + " contains " +
                                  name_control_byte(byte) + ": " + quote_bytes(value));
    }
  }
}

// The request head and body, as sent. The head is written here only, and
// every byte of it passes check_request_line or check_field on the way, so no
// option or field, present or future, can reach the server unchecked. The
// client's headers come first, a request's own replace those of the same name.
inline std::string format_request(std::string_view method, const url& target, const header_list& headers,
                                  const std::string& body, const client_options& options) {
  check_request_line(method, target.target);
  std::string text;
  text.reserve(256 + body.size());
  const auto add_field = [&text](std::string_view name, std::string_view value) {
    check_field(name, value);
    text.append(name).append(": ").append(value).append("\r\n");
  };
  text.append(method).append(" ").append(target.target).append(" HTTP/1.1\r\n");
  if (!headers.contains("Host")) add_field("Host", target.host_header());
  if (!headers.contains("User-Agent") && !options.user_agent.empty()) add_field("User-Agent", options.user_agent);
  if (!headers.contains("Accept")) add_field("Accept", "*/*");
  if (!body.empty() || method == "POST" || method == "PUT" || method == "PATCH") {
    add_field("Content-Length", std::to_string(body.size()));
  }
  if (!options.keep_alive && !headers.contains("Connection")) add_field("Connection", "close");
  for (const auto& [name, value] : headers) {
    if (header_list::same_name(name, "Content-Length") || header_list::same_name(name, "Transfer-Encoding")) {
      throw invalid_request_error("http: " + std::string(name) + " is set by the client from the body, not by hand");
    }
    add_field(name, value);
  }
  text.append("\r\n");
  text.append(body);
  return text;
}

inline bool is_connection_reset(const std::system_error& error) noexcept {
  const int code = error.code().value();
  return error.code().category() == coro_loop::detail::os_error_category() &&
         (code == ECONNRESET || code == EPIPE || code == ECONNABORTED);
}

inline bool is_redirect(int status) noexcept {
  return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

}  // namespace detail

// One exchange on one connection: send, then read up to the final head. A
// reused connection the server had closed is retried once, on a new one,
// for idempotent methods when no byte of the response had arrived.
CORO_LOOP_COROUTINE_DEFINITION
task<response> client::send_request(std::shared_ptr<detail::pool_state> pool, std::string method, url target,
                                    const header_list& headers, const std::string& body,
                                    const detail::request_context& request) {
  const std::string request_text = detail::format_request(method, target, headers, body, pool->options);
  const bool wants_close = !pool->options.keep_alive || detail::list_has_token(headers, "Connection", "close");
  const bool idempotent = detail::is_idempotent(method);
  for (int attempt = 0;; ++attempt) {
    detail::connection_lease lease =
        co_await detail::acquire_connection(pool, target, request, attempt > 0, attempt == 0 && idempotent);
    const bool may_retry = lease.reused && attempt == 0 && idempotent;
    response_parser parser(pool->options.limits);
    parser.start(method);
    bool any_byte = false;
    std::exception_ptr disconnected;
    std::string send_failure;
    try {
      stream& connection = lease.connection;
      // A server may answer before it has read the whole body, then close
      // (RFC 9112 9.6): the send fails with EPIPE or a reset, while its
      // answer already waits in the socket. So a failed send only ends the
      // sending; what the server sent is read before deciding it is gone.
      try {
        connection.write(request_text);
        if (connection.write_buffer_size() > 0) {
          co_await request.deadlines.within(connection.drain(), request.deadlines.read(), request.url);
        } else {
          connection.write({});  // a send that failed at once dropped the rest: this throws its error
        }
      } catch (const std::system_error& error) {
        if (!detail::is_connection_reset(error)) throw;
        send_failure = error.what();
      }
      for (;;) {
        const std::size_t head_size = parser.parse_head(connection.buffered());
        if (head_size > 0) {
          connection.consume(head_size);
          if (parser.interim()) continue;
          break;
        }
        std::size_t received = 0;
        try {
          received = co_await request.deadlines.within(connection.fill(), request.deadlines.read(), request.url);
        } catch (const tls_eof_error&) {
          // Over TLS, an end without close_notify: inside a head it cuts no body, so it is
          // an end like any other (and a pooled connection the server dropped is retried).
        }
        if (received == 0) {
          if (!any_byte && connection.buffered().empty()) {
            throw disconnected_error("http: the server closed the connection without responding to " + method + " " +
                                     request.url + (send_failure.empty() ? "" : " (" + send_failure + ")"));
          }
          parser.end_of_input();
        }
        any_byte = true;
      }
    } catch (const disconnected_error&) {
      disconnected = std::current_exception();
    } catch (const std::system_error& error) {
      if (any_byte || !detail::is_connection_reset(error)) throw;
      disconnected = std::make_exception_ptr(disconnected_error(
          "http: the connection was reset before a response to " + method + " " + request.url + " (" + error.what() +
          ")"));
    }
    if (disconnected != nullptr) {
      lease.give_back(false);
      if (may_retry) continue;
      std::rethrow_exception(disconnected);
    }
    detail::request_context context = request;
    context.reuse_allowed = !wants_close && send_failure.empty();
    co_return response(std::move(lease), std::move(parser), std::move(context));
  }
}

CORO_LOOP_COROUTINE_DEFINITION
task<response> client::perform(std::shared_ptr<detail::pool_state> pool, std::string method,
                               std::string url_text, request_options options) {
  url target = url::parse(url_text);
  // The method and fields are checked where the head is written
  // (detail::format_request), before a connection is taken.
  header_list headers;
  for (const auto& [name, value] : pool->options.headers) {
    if (!options.headers.contains(name)) headers.add(name, value);
  }
  for (const auto& [name, value] : options.headers) headers.add(name, value);
  if (pool->closed) throw invalid_state_error("http::client: request after close()");

  detail::request_context request{detail::request_deadlines(options.timeout.value_or(pool->options.timeout)),
                                  pool->options.limits.max_body, true, target.to_string()};
  const bool follow = options.follow_redirects.value_or(pool->options.follow_redirects);
  const int max_redirects = options.max_redirects.value_or(pool->options.max_redirects);
  std::string body = std::move(options.body);
  std::vector<std::string> history;
  for (int redirects = 0;; ++redirects) {
    request.url = target.to_string();
    response result = co_await send_request(pool, method, target, headers, body, request);
    const std::optional<std::string_view> location = result.headers().get("Location");
    if (!follow || !detail::is_redirect(result.status()) || !location) {
      result.history_ = std::move(history);
      co_return result;
    }
    if (redirects >= max_redirects) {
      throw redirect_error("http: more than " + std::to_string(max_redirects) + " redirects, the last from " +
                           request.url);
    }
    url next;
    try {
      next = resolve_url(target, *location);
    } catch (const url_error& error) {
      throw redirect_error("http: " + std::to_string(result.status()) + " redirect from " + request.url +
                           " that cannot be followed: " + error.what());
    }
    // RFC 9110 15.4: 303 turns everything but HEAD into GET; 301 and 302 turn
    // POST into GET, as every user agent does; 307 and 308 change nothing.
    const int status = result.status();
    if ((status == 303 && method != "HEAD") || ((status == 301 || status == 302) && method == "POST")) {
      method = "GET";
      body.clear();
      headers.erase("Content-Type");
    }
    if (next.scheme != target.scheme || next.host != target.host || next.port != target.port) {
      // Credentials are for the origin they were given to: scheme, host and port (RFC 6454),
      // so http:// to https:// on the same host drops them too, as browsers do.
      headers.erase("Authorization");
      headers.erase("Cookie");
      if (headers.contains("Host")) headers.set("Host", next.host_header());
    }
    co_await result.discard_body(64 * 1024);
    history.push_back(request.url);
    target = std::move(next);
  }
}

// --- 10.10 Implementation: reading the body ---

inline void response::finish_from_buffer() noexcept {
  if (!lease_.held() || parser_.done() || !parser_.head_complete()) return;
  try {
    for (;;) {
      std::string_view payload;
      const std::size_t consumed = parser_.parse_body(lease_.connection.buffered(), payload);
      if (consumed == 0) return;
      lease_.connection.consume(consumed);
      if (parser_.done()) return;
    }
  } catch (...) {
    lease_.give_back(false);
  }
}

CORO_LOOP_COROUTINE_DEFINITION
task<bool> response::fill() {
  const std::size_t received = co_await receive({});
  co_return received > 0;
}

CORO_LOOP_COROUTINE_DEFINITION
task<std::size_t> response::receive(std::span<char> direct) {
  std::size_t received = 0;
  try {
    if (direct.empty()) {
      received = co_await context_.deadlines.within(lease_.connection.fill(), context_.deadlines.read(), context_.url);
    } else {
      received = co_await context_.deadlines.within(lease_.connection.read_into(direct), context_.deadlines.read(),
                                                    context_.url);
    }
  } catch (const tls_eof_error& error) {
    // A body delimited by the close is whole only at close_notify: cut without it, it may
    // be short and is never taken for complete. A length or chunked body that stopped
    // short says so below, as over plain TCP.
    if (parser_.body_framing() == response_parser::framing::until_close) {
      throw protocol_error("http: the body of " + context_.url + " ended without TLS close_notify after " +
                           std::to_string(parser_.body_bytes_received()) + " bytes: it may be truncated (" +
                           error.what() + ")");
    }
  }
  if (received == 0) parser_.end_of_input();
  co_return received;
}

CORO_LOOP_COROUTINE_DEFINITION
task<std::string> response::read_chunk(std::size_t max_bytes) {
  if (max_bytes == 0) throw std::invalid_argument("http::response::read_chunk: max_bytes is 0");
  try {
    while (!parser_.done()) {
      if (!lease_.held()) throw invalid_state_error("http::response::read_chunk: the response was closed");
      std::string_view payload;
      const std::size_t consumed = parser_.parse_body(lease_.connection.buffered(), payload, max_bytes);
      std::string piece(payload);
      lease_.connection.consume(consumed);
      if (!piece.empty()) {
        release_when_done();
        co_return piece;
      }
      if (consumed == 0 && !parser_.done()) co_await fill();
    }
  } catch (...) {
    lease_.give_back(false);
    throw;
  }
  release_when_done();
  co_return std::string();
}

CORO_LOOP_COROUTINE_DEFINITION
task<std::size_t> response::read_into(std::span<char> into) {
  if (into.empty()) throw std::invalid_argument("http::response::read_into: an empty buffer");
  try {
    while (!parser_.done()) {
      if (!lease_.held()) throw invalid_state_error("http::response::read_into: the response was closed");
      const std::string_view buffered = lease_.connection.buffered();
      const std::uint64_t room = parser_.direct_payload_room();
      if (buffered.empty() && room > 0) {
        const std::span<char> direct = into.first(static_cast<std::size_t>(std::min<std::uint64_t>(room, into.size())));
        const std::size_t received = co_await receive(direct);
        if (received == 0) continue;  // the end of the stream: the parser is done or threw
        parser_.took_direct_payload(received);
        release_when_done();
        co_return received;
      }
      std::string_view payload;
      const std::size_t consumed = parser_.parse_body(buffered, payload, into.size());
      if (!payload.empty()) std::memcpy(into.data(), payload.data(), payload.size());
      lease_.connection.consume(consumed);
      if (!payload.empty()) {
        release_when_done();
        co_return payload.size();
      }
      if (consumed == 0 && !parser_.done()) co_await fill();
    }
  } catch (...) {
    lease_.give_back(false);
    throw;
  }
  release_when_done();
  co_return 0;
}

namespace detail {

// Makes room in `out` for `more` body bytes; the body is known to fit in
// `limit` (max_body). A small body grows as a string does. Past 1 MiB (or
// half the limit) the capacity goes to the limit at once: every regrowth
// copies the body while the old and the new block are both alive, so the
// last doubling below the limit held twice the limit (a 64 MiB body took
// 128 MiB), and the blocks freed on the way may stay resident in the
// allocator. Reserving the limit costs address space, not memory: its pages
// are touched only as the body fills them. Where the allocator refuses the
// limit (a huge max_body, a 32-bit address space) the doubling goes on.
template <class Buffer>
void reserve_body(Buffer& out, std::size_t more, std::size_t limit) {
  const std::size_t needed = out.size() + more;
  if (needed <= out.capacity()) return;
  const std::size_t doubled = std::max(needed, out.capacity() * 2);
  if (doubled > std::min<std::size_t>(limit / 2, 1024 * 1024)) {
    try {
      out.reserve(std::max(needed, limit));
      return;
    } catch (const std::bad_alloc&) {
    } catch (const std::length_error&) {
    }
  }
  out.reserve(doubled);
}

inline void append_body(std::string& out, std::string_view bytes) { out.append(bytes); }
inline void append_body(std::vector<std::byte>& out, std::string_view bytes) {
  const auto* first = reinterpret_cast<const std::byte*>(bytes.data());
  out.insert(out.end(), first, first + bytes.size());
}

}  // namespace detail

template <class Buffer>
task<void> response::read_rest(Buffer& out) {
  const std::optional<std::uint64_t> length = parser_.content_length();
  if (parser_.body_framing() == response_parser::framing::length && !parser_.done() && length &&
      *length <= context_.max_body) {
    // Known and within the limit: read straight into its place, not through the
    // connection's buffer (read_into throws if the body comes short). The block is
    // reserved whole (address space), but sized, which zeroes and so touches its
    // pages, a MiB at a time as the bytes come: a length announced but never sent
    // costs at most that. (Smaller steps made glibc trim and re-fault the heap per
    // response in make bench's H2: 167,000 page faults per 1,000 MiB, 30,000 now.)
    constexpr std::size_t step = 1024 * 1024;
    const std::size_t size = static_cast<std::size_t>(*length);
    out.reserve(size);
    std::size_t filled = 0;
    while (filled < size) {
      if (out.size() == filled) out.resize(filled + std::min(step, size - filled));
      const std::span<char> room(reinterpret_cast<char*>(out.data()) + filled, out.size() - filled);
      const std::size_t got = co_await read_into(room);
      if (got == 0) break;
      filled += got;
    }
    out.resize(filled);
    co_return;
  }
  try {
    while (!parser_.done()) {
      if (!lease_.held()) throw invalid_state_error("http::response: the body was read after close()");
      std::string_view payload;
      const std::size_t consumed = parser_.parse_body(lease_.connection.buffered(), payload);
      if (out.size() + payload.size() > context_.max_body) {
        throw protocol_error("http: response body larger than limits.max_body (" + std::to_string(context_.max_body) +
                             " bytes) from " + context_.url);
      }
      detail::reserve_body(out, payload.size(), context_.max_body);
      detail::append_body(out, payload);
      lease_.connection.consume(consumed);
      if (consumed == 0 && !parser_.done()) co_await fill();
    }
  } catch (...) {
    lease_.give_back(false);
    throw;
  }
  release_when_done();
  // A body that ended far below the reserved limit moves to a block of its
  // own size, so a kept response costs what it holds. Only a body under half
  // the limit moves: the copy then touches at most the limit too.
  if (out.capacity() / 2 > out.size()) out.shrink_to_fit();
}

CORO_LOOP_COROUTINE_DEFINITION
task<void> response::discard_body(std::size_t at_most) {
  const std::optional<std::uint64_t> length = parser_.content_length();
  if (parser_.body_framing() == response_parser::framing::until_close || (length && *length > at_most)) {
    lease_.give_back(false);
    co_return;
  }
  std::size_t discarded = 0;
  while (!parser_.done() && discarded <= at_most) {
    const std::string piece = co_await read_chunk();
    if (piece.empty()) break;
    discarded += piece.size();
  }
  close();
}

}  // namespace http
#endif  // !CORO_LOOP_NO_HTTP

// ============================================================================
// 11. The event loop, signals, run()  >>run
//    Uses everything above: the public event_loop over detail::loop_core (3),
//    its signal handlers, and run(), the entry point of a program.
// ============================================================================

// --- 11.1 Signals (POSIX): a self-pipe per loop ---

#if defined(CORO_LOOP_POSIX)

namespace detail {

// signal number -> write end of the handling loop's pipe, plus one (0: none).
// Atomics, because the handler may run on any thread at any time.
inline std::atomic<int>* signal_pipe_table() noexcept {
  static std::atomic<int> table[NSIG] = {};
  return table;
}

// The process-wide handler: async-signal-safe, it only writes one byte.
inline void on_signal(int signal_number) {
  const int saved_errno = errno;
  const int slot = signal_pipe_table()[signal_number].load(std::memory_order_acquire);
  if (slot > 0) {
    const auto byte = static_cast<unsigned char>(signal_number);
    [[maybe_unused]] ssize_t written = ::write(slot - 1, &byte, 1);  // a full pipe drops it: one wake-up is enough
  }
  errno = saved_errno;
}

// One loop's signal handlers: the pipe, the parked read that watches it,
// and each signal's callback and previous disposition.
class signal_watch : private io_operation {
 public:
  explicit signal_watch(loop_core& loop) : loop_(&loop) {
    int ends[2];
    if (!open_non_blocking_pipe(ends)) throw_system_error(errno, "pipe for signal handlers");
    read_end_ = ends[0];
    write_end_ = ends[1];
    kind = io_kind::read;
    handle = read_end_;
    buffer = bytes_;
    length = sizeof bytes_;
    complete = &on_readable;
    watch();
  }
  signal_watch(const signal_watch&) = delete;
  signal_watch& operator=(const signal_watch&) = delete;
  ~signal_watch() {
    for (auto& [signal_number, handler] : handlers_) restore(signal_number, handler);
    loop_->backend().abandon(*this);
    loop_->backend().release(read_end_);
    ::close(read_end_);
    ::close(write_end_);
  }

  void add(int signal_number, std::function<void()> callback) {
    if (signal_number <= 0 || signal_number >= NSIG) {
      throw std::invalid_argument("add_signal_handler: bad signal number " + std::to_string(signal_number));
    }
    if (signal_number == SIGKILL || signal_number == SIGSTOP) {
      throw std::invalid_argument("add_signal_handler: SIGKILL and SIGSTOP cannot be handled");
    }
    auto found = handlers_.find(signal_number);
    if (found != handlers_.end()) {
      found->second.callback = std::move(callback);
      return;
    }
    int expected = 0;
    if (!signal_pipe_table()[signal_number].compare_exchange_strong(expected, write_end_ + 1)) {
      throw invalid_state_error("add_signal_handler: signal " + std::to_string(signal_number) +
                                " is handled by another event loop");
    }
    handler_entry added{std::move(callback), {}};
    struct sigaction action {};
    action.sa_handler = &on_signal;
    ::sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESTART;
    if (::sigaction(signal_number, &action, &added.previous) < 0) {
      const int error_number = errno;
      signal_pipe_table()[signal_number].store(0);
      throw_system_error(error_number, "sigaction " + std::to_string(signal_number));
    }
    handlers_.emplace(signal_number, std::move(added));
  }
  bool remove(int signal_number) {
    auto found = handlers_.find(signal_number);
    if (found == handlers_.end()) return false;
    restore(signal_number, found->second);
    handlers_.erase(found);
    return true;
  }
  bool empty() const noexcept { return handlers_.empty(); }

 private:
  struct handler_entry {
    std::function<void()> callback;
    struct sigaction previous;
  };
  static void restore(int signal_number, handler_entry& handler) noexcept {
    ::sigaction(signal_number, &handler.previous, nullptr);
    signal_pipe_table()[signal_number].store(0, std::memory_order_release);
  }
  // Parks a read of the pipe; bytes that are already there are dispatched.
  void watch() {
    while (loop_->backend().start(*this)) {
      if (error != 0 || result <= 0) return;
      dispatch();
    }
  }
  static void on_readable(io_operation* operation) noexcept {
    auto* self = static_cast<signal_watch*>(operation);
    if (self->error != 0) return;  // cancelled: the loop is closing
    self->dispatch();
    try {
      self->watch();
    } catch (...) {
      std::fprintf(stderr, "coro_loop: cannot watch the signal pipe any more\n");
    }
  }
  // asyncio runs signal callbacks as ordinary callbacks of the loop.
  void dispatch() noexcept {
    for (std::ptrdiff_t i = 0; i < result; ++i) {
      auto found = handlers_.find(bytes_[i]);
      if (found == handlers_.end()) continue;
      try {
        std::function<void()> callback = found->second.callback;
        loop_->call_soon(std::move(callback));
      } catch (...) {
      }
    }
  }

  loop_core* loop_;
  int read_end_ = -1;
  int write_end_ = -1;
  unsigned char bytes_[64] = {};
  std::map<int, handler_entry> handlers_;
};

}  // namespace detail
#endif  // CORO_LOOP_POSIX

// --- 11.2 event_loop ---

/// The event loop (asyncio's loop): one per thread, driven by run_forever /
/// run_until_complete or, usually, by run(). Loop thread only, except
/// call_soon_threadsafe.
class event_loop : private detail::loop_core {
 public:
  /// Creates a stopped loop with its own epoll/kqueue descriptor (std::system_error when the
  /// OS refuses); debug mode starts as CORO_LOOP_DEBUG says. The destructor close()s it,
  /// swallowing errors. Not copyable: tasks, handles and timers point into it.
  event_loop() = default;
  ~event_loop() {
    try {
      close();
    } catch (...) {
    }
  }
  event_loop(const event_loop&) = delete;
  event_loop& operator=(const event_loop&) = delete;

  /// The loop's clock (steady_clock), the time base of call_at and sleep_until.
  time_point time() const noexcept { return clock::now(); }

  /// call_soon(cb): runs `cb` on a later iteration, after those already scheduled (FIFO).
  /// call_later(delay, cb), call_at(deadline, cb): after `delay` (at once on the next
  /// iteration when <= 0), or at `deadline` on the loop's clock; FIFO among equal deadlines.
  /// All three: loop thread only; invalid_state_error from another thread while the loop
  /// runs, or on a closed loop. Each returns a callback_handle that can cancel the call.
  using loop_core::call_at;
  using loop_core::call_later;
  using loop_core::call_soon;
  /// Any thread: schedules `callback` and wakes the loop if it is blocked.
  /// Throws invalid_state_error when the loop is closed.
  using loop_core::call_soon_threadsafe;

  /// Runs until stop(). Throws invalid_state_error when this thread already runs a loop.
  void run_forever() {
    run_while([this] { return !stopping_; });
  }
  /// Asks run_forever to return after the current iteration.
  void stop() noexcept { stopping_ = true; }
  /// Runs `awaitable` as a task until it finishes; returns its value or rethrows.
  template <class Awaitable>
  decltype(auto) run_until_complete(Awaitable&& awaitable, detail::source_site site = detail::source_site::here());
  /// True inside run_forever / run_until_complete; is_closed() once close() has finished.
  using loop_core::is_closed;
  using loop_core::is_running;
  /// Releases the backend. Tasks still pending are cancelled and given up to
  /// 1 s to finish (none when another loop runs in this thread); the frames
  /// of those that did not finish are named on stderr and leaked, never freed
  /// under a waiter (asyncio warns "Task was destroyed but it is pending").
  /// Prefer run(), which finishes them.
  void close();
  /// Debug mode (asyncio's get_debug / set_debug): see run_options::debug.
  using loop_core::debug;
  void set_debug(bool enabled) noexcept { options_.debug = enabled; }
  /// In debug mode, a step longer than this is reported (asyncio's slow_callback_duration).
  void set_slow_callback_duration(std::chrono::milliseconds limit) noexcept { options_.slow_callback_duration = limit; }

  /// Runs `callback` on this loop each time signal `signal_number` arrives
  /// (POSIX; through a self-pipe, so the callback runs as a normal callback).
  /// Replaces an earlier handler of this loop; throws std::invalid_argument for
  /// SIGKILL/SIGSTOP or a bad number, invalid_state_error when another loop
  /// handles that signal. POSIX only: absent on Windows (run() handles Ctrl+C
  /// there through SetConsoleCtrlHandler).
#if defined(CORO_LOOP_POSIX)
  template <class Callback>
  void add_signal_handler(int signal_number, Callback callback) {
    check_thread("add_signal_handler");
    if (signals_ == nullptr) signals_ = std::make_unique<detail::signal_watch>(core());
    signals_->add(signal_number, std::function<void()>(std::move(callback)));
  }
  /// Restores the signal's previous disposition; false when none was set here.
  bool remove_signal_handler(int signal_number) {
    if (signals_ == nullptr) return false;
    const bool removed = signals_->remove(signal_number);
    if (signals_->empty()) signals_.reset();
    return removed;
  }
#else
  template <class Callback>
  void add_signal_handler(int, Callback) {
    static_assert(detail::posix_only<Callback>,
                  "coro_loop: add_signal_handler is POSIX only; on Windows run() turns Ctrl+C into keyboard_interrupt");
  }
#endif

  /// asyncio's loop.run_in_executor: `pool` null means the default pool (see to_thread).
  template <class Callable, class... Args>
  auto run_in_executor(thread_pool* pool, Callable&& callable, Args&&... args) {
    return coro_loop::run_in_executor(pool != nullptr ? *pool : detail::default_pool(),
                                      std::forward<Callable>(callable), std::forward<Args>(args)...);
  }

  /// Releases `handle`'s registration with the backend: call it before closing a
  /// descriptor used with read_some / write_some / wait_readable (kqueue and epoll need it).
  void release(native_handle handle) noexcept {
    if (backend_ != nullptr) backend_->release(handle);
  }

  /// Introspection, for tests and leak checks: armed timers, tasks not yet done,
  /// descriptors known to the backend, I/O operations parked in the backend
  /// (the loop's own signal pipe not counted).
  std::size_t timer_count() const noexcept { return timers_.size(); }
  std::size_t pending_task_count() const noexcept { return pending_tasks_.size(); }
  std::size_t registered_handle_count() const noexcept {
    return backend_ == nullptr ? 0 : backend_->registered_count() - own_io_count();
  }
  std::size_t parked_operation_count() const noexcept {
    return backend_ == nullptr ? 0 : backend_->parked_count() - own_io_count();
  }
  /// The backend this loop runs on: "epoll", "kqueue", "iocp", or "io_uring"
  /// (CORO_LOOP_BACKEND_IO_URING; "epoll" there when the kernel refused io_uring).
  const char* backend_name() const noexcept { return backend_ == nullptr ? "closed" : backend_->name(); }

 private:
  friend detail::loop_core& detail::core_of(event_loop& loop) noexcept;
  friend event_loop& get_running_loop();
  detail::loop_core& core() noexcept { return *this; }
  // The handle and the parked read of the signal pipe, which are the loop's own.
  std::size_t own_io_count() const noexcept {
#if defined(CORO_LOOP_POSIX)
    return signals_ != nullptr ? 1 : 0;
#else
    return 0;
#endif
  }

#if defined(CORO_LOOP_POSIX)
  std::unique_ptr<detail::signal_watch> signals_;  // made by the first add_signal_handler
#endif
};

inline event_loop& get_running_loop() {
  // Every running loop is an event_loop: loop_core is only ever its base.
  return static_cast<event_loop&>(detail::running_core());
}

inline detail::loop_core& detail::core_of(event_loop& loop) noexcept { return loop; }

template <class Awaitable>
decltype(auto) event_loop::run_until_complete(Awaitable&& awaitable, detail::source_site site) {
  using value_type = await_result_t<Awaitable>;
  check_can_run();
  auto handle = [&] {
    if constexpr (detail::is_task_handle<std::remove_cvref_t<Awaitable>>::value) {
      return awaitable;
    } else {
      return detail::spawn<Awaitable>(core(), std::forward<Awaitable>(awaitable), {}, site);
    }
  }();
  run_while([&] { return !handle.done() && !stopping_; });
  if (!handle.done()) throw invalid_state_error("run_until_complete: the loop stopped before the awaitable finished");
  if constexpr (std::is_void_v<value_type>) {
    handle.result();
  } else if constexpr (std::is_reference_v<value_type>) {
    return handle.result();
  } else {
    value_type value = std::move(handle.result());
    return value;
  }
}

namespace detail {
// The frames close() leaves behind stay reachable from here, by the address
// of their allocation: they are leaked on purpose (freeing one under a waiter
// would be worse), and leak checkers (valgrind, LeakSanitizer) must not
// report them as lost, nor as "possibly lost" through an inner pointer.
inline void keep_left_behind(task_promise_base& task) noexcept {
  static std::mutex mutex;
  // Never destroyed: the list must outlive static destruction, when leak
  // checkers look.
  static auto* left_behind = new std::vector<void*>();
  std::lock_guard<std::mutex> guard(mutex);
  try {
    left_behind->push_back(task.frame_address());
  } catch (...) {  // out of memory: the frame stays leaked, only unlisted
  }
}
}  // namespace detail

inline void event_loop::close() {
  if (closed_) return;
  if (running_) throw invalid_state_error("close: the event loop is running");
  if (!pending_tasks_.empty() && detail::running_loop_slot() == nullptr) {
    try {
      detail::finish_tasks(core(), std::chrono::seconds(1));
    } catch (...) {
    }
  }
  pending_tasks_.for_each([](detail::list_hook& hook) {
    auto& task = static_cast<detail::task_promise_base&>(hook);
    std::fprintf(stderr, "coro_loop: task '%s' was still pending when its loop closed; its frame is leaked\n",
                 task.name().c_str());
    detail::intrusive_list::unlink(hook);
    task.retain();
    task.leave_behind();
    detail::keep_left_behind(task);
  });
  detail::ready_queue posted_late;
  inbox_->close(posted_late);
  ready_.splice_back(posted_late);
  // A ready node run without a running loop discards itself (see ready_node);
  // another loop may be running in this thread, so hide it meanwhile.
  detail::loop_core* running_here = std::exchange(detail::running_loop_slot(), nullptr);
  while (!ready_.empty()) {
    detail::ready_node* node = ready_.pop_front();
    node->run(node);
  }
  detail::running_loop_slot() = running_here;
  while (!timers_.empty()) {
    detail::timer_node* timer = timers_.pop();
    // A callback's reference goes with it; other timers (a sleep in a leaked
    // frame) are only taken out of the heap.
    if (timer->fire == &detail::callback_node::fire_from_heap) static_cast<detail::callback_node*>(timer)->release();
  }
  // The layers' per-loop state (child processes) goes while the backend it
  // parked operations in still exists.
  while (detail::loop_attachment* attachment = std::exchange(attachments_, nullptr)) {
    attachments_ = attachment->next_attachment;
    attachment->close(attachment);
  }
  closed_ = true;
#if defined(CORO_LOOP_POSIX)
  signals_.reset();
#endif
  backend_.reset();
  if (detail::thread_loop_slot() == &core()) detail::thread_loop_slot() = nullptr;
}


// --- 11.3 The task tree ---
// What every task waits on, as asyncio.capture_call_graph / print_call_graph
// give it and Go's goroutine dump on SIGQUIT: read on the loop thread from
// what the tasks already hold (each wait's wait_kind, each task's creation
// site and waiters), so it costs nothing until asked for.

/// One task of a task tree (capture_task_tree), with the tasks it waits for.
struct task_tree_node {
  std::string name;        ///< the task's name: the one given, or "Task-<n>"
  std::string state;       ///< "running", "ready", "not started", "suspended", "suspended, cancelling"
  std::string created_at;  ///< "file.cpp:42": where create_task, run, gather(range) ... was called; empty when unknown
  std::string waiting_on;  ///< what it is suspended on, in words; empty when not on one of coro_loop's waits
  std::string awaited_by;  ///< who waits for it: "gather in 'main'", "task_group 0x... in 'main'"; empty for a root
  std::vector<task_tree_node> children;  ///< the tasks it waits for (a gather's, a group's children, ...)
  /// The tree from this task down: a line per task, its wait on the next, children indented.
  std::string to_string() const;
};

namespace detail {

class task_tree_builder {
 public:
  explicit task_tree_builder(loop_core& loop) : loop_(&loop), now_(clock::now()) {
    loop.pending_tasks().for_each([this](list_hook& hook) {
      auto* task = static_cast<task_promise_base*>(&hook);
      index_.emplace(task, entries_.size());
      entries_.emplace_back(task);
    });
    for (timer_node* timer : loop.timers().nodes()) note_timeout(*timer);
    for (entry& each : entries_) describe(each);
    for (std::size_t i = 0; i < entries_.size(); ++i) adopt_awaited(i);
    for (std::size_t i = 0; i < entries_.size(); ++i) adopt_group_child(i);
  }

  // Every pending task: the roots (awaited by no task) and their trees; then
  // any task left over (tasks awaiting each other in a cycle: a deadlock).
  std::vector<task_tree_node> all() {
    std::vector<task_tree_node> roots;
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].parent == none) roots.push_back(build(i));
    }
    for (std::size_t i = 0; i < entries_.size(); ++i) {
      if (!entries_[i].visited) {
        roots.push_back(build(i));
        roots.back().awaited_by += " (tasks awaiting each other in a cycle)";
      }
    }
    return roots;
  }
  // The tree of one task; a done task is one node with its end as its state.
  task_tree_node one(task_promise_base& task) {
    auto found = index_.find(&task);
    if (found != index_.end()) return build(found->second);
    task_tree_node node;
    node.name = task.name();
    node.state = task.cancelled() ? "done, cancelled" : task.has_exception() ? "done, failed" : "done";
    return node;
  }

 private:
  static constexpr std::size_t none = static_cast<std::size_t>(-1);
  struct entry {
    explicit entry(task_promise_base* of) noexcept : task(of) {}
    task_promise_base* task;
    std::string waiting_on;
    std::vector<task_promise_base*> awaited;
    std::optional<time_point> timeout;  // the nearest timeout_scope armed by this task
    std::size_t parent = none;
    std::string awaited_by;
    std::vector<std::size_t> children;
    bool visited = false;
  };

  void note_timeout(timer_node& timer) {
    if (timer.fire != &timeout_scope::on_deadline) return;
    const auto& scope = static_cast<const timeout_scope&>(timer);
    auto found = index_.find(scope.task_);
    if (found == index_.end()) return;
    std::optional<time_point>& nearest = entries_[found->second].timeout;
    if (!nearest || timer.deadline < *nearest) nearest = timer.deadline;
  }

  void describe(entry& each) {
    const cancellable_wait* wait = each.task->current_wait();
    if (wait != nullptr && each.task != loop_->current_task()) {
      const wait_kind& kind = *wait->kind_of_wait;
      wait_report report{now_, {}, {}};
      if (kind.describe != nullptr) {
        kind.describe(*wait, report);
      } else {
        report.text = kind.operation;
      }
      each.waiting_on = std::move(report.text);
      each.awaited = std::move(report.awaited);
    }
    if (each.timeout) {
      each.waiting_on += (each.waiting_on.empty() ? "" : ", ") + std::string("timeout in ") +
                         describe_duration(*each.timeout - now_);
    }
  }

  std::string state_of(const task_promise_base& task) const {
    if (&task == loop_->current_task()) return "running";
    if (!task.started()) return "not started";
    if (task.current_wait() == nullptr) return "ready";
    return task.cancelling() > 0 ? "suspended, cancelling" : "suspended";
  }

  void attach(std::size_t child, std::size_t parent, std::string awaited_by) {
    entries_[child].parent = parent;
    entries_[child].awaited_by = std::move(awaited_by);
    entries_[parent].children.push_back(child);
  }

  // The tasks a task's wait names are its children, under the first waiter.
  void adopt_awaited(std::size_t parent) {
    const entry& waiting = entries_[parent];
    if (waiting.awaited.empty()) return;
    std::string operation = waiting.task->current_wait()->kind_of_wait->operation;
    if (operation == "awaiting a task_handle") operation = "co_await";
    const std::string awaited_by = operation + " in '" + waiting.task->name() + "'";
    for (task_promise_base* awaited : waiting.awaited) {
      auto found = index_.find(awaited);
      if (found == index_.end() || found->second == parent || entries_[found->second].parent != none) continue;
      attach(found->second, parent, awaited_by);
    }
  }

  // A group's child that no wait names (its group's task is not in join yet)
  // goes under the task that opened the group.
  void adopt_group_child(std::size_t child) {
    if (entries_[child].parent != none) return;
    for (const completion_waiter* waiter = entries_[child].task->waiters(); waiter != nullptr;
         waiter = waiter->next_waiter) {
      if (waiter->notify != &task_group::on_child_notified) continue;
      const task_group& group = *static_cast<const task_group::child_entry*>(waiter)->group;
      auto found = index_.find(group.parent_);
      if (found == index_.end() || found->second == child) return;
      std::string awaited_by = "task_group " + describe_address(&group);
      if (group.site_.file != nullptr) awaited_by += " (opened at " + site_text(group.site_) + ")";
      attach(child, found->second, awaited_by + " in '" + group.parent_->name() + "'");
      return;
    }
  }

  static std::string site_text(source_site site) {
    if (site.file == nullptr) return {};
    return std::string(site.file) + ":" + std::to_string(site.line);
  }

  task_tree_node build(std::size_t index) {
    entry& each = entries_[index];
    each.visited = true;
    task_tree_node node;
    node.name = each.task->name();
    node.state = state_of(*each.task);
    node.created_at = site_text(each.task->created_at());
    node.waiting_on = std::move(each.waiting_on);
    node.awaited_by = std::move(each.awaited_by);
    for (std::size_t child : each.children) {
      if (!entries_[child].visited) node.children.push_back(build(child));
    }
    return node;
  }

  loop_core* loop_;
  time_point now_;
  std::vector<entry> entries_;
  std::map<const task_promise_base*, std::size_t> index_;
};

inline void append_task_tree(std::string& out, const task_tree_node& node, const std::string& first,
                             const std::string& rest) {
  out += first + "Task '" + node.name + "' (" + node.state + ")";
  if (!node.created_at.empty()) out += " created at " + node.created_at;
  if (!node.awaited_by.empty()) out += ", awaited by " + node.awaited_by;
  out += '\n';
  const std::string below = node.children.empty() ? "   " : "|  ";
  if (!node.waiting_on.empty()) out += rest + below + "waiting on: " + node.waiting_on + "\n";
  for (std::size_t i = 0; i < node.children.size(); ++i) {
    const bool last = i + 1 == node.children.size();
    append_task_tree(out, node.children[i], rest + (last ? "`- " : "|- "), rest + (last ? "   " : "|  "));
  }
}

inline std::string task_tree_text(const std::vector<task_tree_node>& roots) {
  std::string out;
  for (const task_tree_node& root : roots) append_task_tree(out, root, "", "");
  return out;
}

// "coro_loop: <why>: 3 tasks on event loop 0x5568d0" and the tree, to stderr
// at once (one write, so that two loops' dumps do not interleave by line).
inline void print_loop_task_tree(loop_core& loop, const char* why) {
  const std::vector<task_tree_node> roots = task_tree_builder(loop).all();
  const std::size_t count = loop.pending_tasks().size();
  std::string text = std::string("coro_loop: ") + why + ": " + std::to_string(count) +
                     (count == 1 ? " task" : " tasks") + " on event loop " + describe_address(&loop) + "\n" +
                     task_tree_text(roots);
  std::fwrite(text.data(), 1, text.size(), stderr);
  std::fflush(stderr);
}

// The loops run() runs in debug mode: SIGQUIT prints the tree of each, each
// on its own thread. An entry lives from run()'s start until its loop closed.
struct debug_loop_list {
  std::mutex mutex;
  std::vector<event_loop*> loops;
};
inline debug_loop_list& debug_loops() {
  static debug_loop_list list;
  return list;
}
class debug_loop_entry {
 public:
  explicit debug_loop_entry(event_loop& loop) : loop_(loop.debug() ? &loop : nullptr) {
    if (loop_ == nullptr) return;
    std::lock_guard<std::mutex> guard(debug_loops().mutex);
    debug_loops().loops.push_back(loop_);
  }
  debug_loop_entry(const debug_loop_entry&) = delete;
  debug_loop_entry& operator=(const debug_loop_entry&) = delete;
  ~debug_loop_entry() {
    if (loop_ == nullptr) return;
    std::lock_guard<std::mutex> guard(debug_loops().mutex);
    std::erase(debug_loops().loops, loop_);
  }

 private:
  event_loop* loop_;
};

// SIGQUIT's callback, on the loop that claimed it: its own tree now, every
// other debug loop's posted to that loop's thread.
inline void print_every_loop_task_tree(event_loop& here) {
  print_loop_task_tree(core_of(here), "SIGQUIT");
  std::lock_guard<std::mutex> guard(debug_loops().mutex);
  for (event_loop* other : debug_loops().loops) {
    if (other == &here) continue;
    try {
      other->call_soon_threadsafe([other] { print_loop_task_tree(core_of(*other), "SIGQUIT"); });
    } catch (...) {  // closing: it has no tasks left to show
    }
  }
}

// run() in debug mode takes SIGQUIT while it has its default disposition
// (which ends the process with a core dump) and no loop holds it already.
inline void claim_task_tree_signal([[maybe_unused]] event_loop& loop) noexcept {
#if defined(CORO_LOOP_POSIX)
  if (!loop.debug()) return;
  struct sigaction current {};
  if (::sigaction(SIGQUIT, nullptr, &current) != 0 || current.sa_handler != SIG_DFL) return;
  try {
    loop.add_signal_handler(SIGQUIT, [&loop] { print_every_loop_task_tree(loop); });
  } catch (...) {  // another loop holds it, or no pipe: the API still works
  }
#endif
}

// How long run()'s shutdown waits for the tasks before debug mode prints them.
inline constexpr std::chrono::seconds shutdown_report_delay{3};

}  // namespace detail

inline std::string task_tree_node::to_string() const {
  std::string out;
  detail::append_task_tree(out, *this, "", "");
  return out;
}

/// Every pending task of the running loop as trees (asyncio.capture_call_graph):
/// each root a task no other task waits for, below it the tasks it waits for.
/// Loop thread only; invalid_state_error without a running loop.
inline std::vector<task_tree_node> capture_task_tree() {
  return detail::task_tree_builder(detail::running_core()).all();
}

/// The tree of one task and the tasks it waits for; a done task alone.
inline task_tree_node capture_task_tree(const task_ref& task) {
  detail::task_promise_base* promise = detail::task_ref_access::promise(task);
  if (promise == nullptr) throw invalid_state_error("capture_task_tree: empty task_ref");
  return detail::task_tree_builder(detail::running_core()).one(*promise);
}

/// The trees of `loop`'s pending tasks, from its thread while it is not running (after
/// run_until_complete). invalid_state_error from a thread that runs it.
inline std::vector<task_tree_node> capture_task_tree(event_loop& loop) {
  if (loop.is_running() && detail::running_loop_slot() != &detail::core_of(loop)) {
    throw invalid_state_error("capture_task_tree: the loop runs on another thread; use call_soon_threadsafe");
  }
  return detail::task_tree_builder(detail::core_of(loop)).all();
}

/// Prints capture_task_tree() to `out` (asyncio.print_call_graph): a line per task (name,
/// state, where it was created, who awaits it), its wait on the next, children indented.
inline void print_task_tree(std::FILE* out = stderr) {
  const std::string text = detail::task_tree_text(capture_task_tree());
  std::fwrite(text.data(), 1, text.size(), out);
  std::fflush(out);
}

// --- 11.4 run() ---

/// Thrown by run() when Ctrl+C (SIGINT; on Windows also Ctrl+Break) cancelled
/// the main task (Python's KeyboardInterrupt): catch it in main() for a clean exit.
class keyboard_interrupt : public std::runtime_error {
 public:
#if defined(CORO_LOOP_WINDOWS)
  keyboard_interrupt() : std::runtime_error("coro_loop::keyboard_interrupt: interrupted by Ctrl+C") {}
#else
  keyboard_interrupt() : std::runtime_error("coro_loop::keyboard_interrupt: interrupted by SIGINT") {}
#endif
};

#if defined(CORO_LOOP_POSIX)
namespace detail {
inline bool is_main_thread() noexcept {
#if defined(__linux__)
  return ::getpid() == static_cast<pid_t>(::syscall(SYS_gettid));
#else
  return ::pthread_main_np() != 0;  // macOS and the BSDs
#endif
}

// asyncio.run's Ctrl+C rule: only on the main thread, and only when SIGINT
// still has its default disposition (the program has not claimed it).
inline bool may_claim_sigint() noexcept {
  if (!is_main_thread()) return false;
  struct sigaction current {};
  return ::sigaction(SIGINT, nullptr, &current) == 0 && current.sa_handler == SIG_DFL &&
         signal_pipe_table()[SIGINT].load() == 0;
}

// run()'s Ctrl+C: a SIGINT handler of its loop, when the rule above allows.
template <class OnInterrupt>
bool claim_keyboard_interrupt(event_loop& loop, OnInterrupt on_interrupt) {
  if (!may_claim_sigint()) return false;
  loop.add_signal_handler(SIGINT, std::move(on_interrupt));
  return true;
}
inline void release_keyboard_interrupt(event_loop& loop) { loop.remove_signal_handler(SIGINT); }
}  // namespace detail
#endif  // CORO_LOOP_POSIX

#if defined(CORO_LOOP_WINDOWS)
// Ctrl+C on Windows: a console control handler.
// Windows runs console control handlers on a thread of their own; the one
// installed here posts run()'s callback to the loop that claimed Ctrl+C (the
// first run() in the process: there is no "main thread" rule to copy).
namespace detail {

struct console_interrupt_claim {
  std::mutex mutex;
  event_loop* loop = nullptr;  // null: unclaimed, Windows' default handler ends the process
  std::function<void()> on_interrupt;
};
inline console_interrupt_claim& console_interrupt() {
  static console_interrupt_claim claim;
  return claim;
}

inline BOOL WINAPI on_console_control(DWORD control) {
  if (control != CTRL_C_EVENT && control != CTRL_BREAK_EVENT) return FALSE;
  console_interrupt_claim& claim = console_interrupt();
  std::lock_guard<std::mutex> guard(claim.mutex);
  // One interrupt per claim: the next Ctrl+C is the default one, as on POSIX.
  event_loop* loop = std::exchange(claim.loop, nullptr);
  if (loop == nullptr) return FALSE;
  try {
    loop->call_soon_threadsafe(std::move(claim.on_interrupt));
  } catch (...) {
    return FALSE;
  }
  return TRUE;
}

template <class OnInterrupt>
bool claim_keyboard_interrupt(event_loop& loop, OnInterrupt on_interrupt) {
  console_interrupt_claim& claim = console_interrupt();
  std::lock_guard<std::mutex> guard(claim.mutex);
  if (claim.loop != nullptr) return false;
  static const bool installed = ::SetConsoleCtrlHandler(&on_console_control, TRUE) != 0;
  if (!installed) return false;
  claim.loop = &loop;
  claim.on_interrupt = std::move(on_interrupt);
  return true;
}
// Before the loop closes: the handler must never post to a closed loop.
inline void release_keyboard_interrupt(event_loop& loop) noexcept {
  console_interrupt_claim& claim = console_interrupt();
  std::lock_guard<std::mutex> guard(claim.mutex);
  if (claim.loop != &loop) return;
  claim.loop = nullptr;
  claim.on_interrupt = nullptr;
}

}  // namespace detail
#endif  // CORO_LOOP_WINDOWS

/// Python's asyncio.run(): runs `awaitable` as the main task of a fresh loop,
/// returns its value or rethrows its exception; then cancels the tasks still
/// pending, waits for them to finish, and closes the loop.
/// On the main thread, while SIGINT has its default disposition, Ctrl+C
/// cancels the main task; if that ends it, run() throws keyboard_interrupt
/// after the cleanup. A second Ctrl+C meanwhile ends the process as usual.
/// Windows: the same for Ctrl+C and Ctrl+Break, in the first run() of the
/// process (a console control handler, on any thread).
template <class Awaitable>
decltype(auto) run(Awaitable&& awaitable, run_options options = {},
                   detail::source_site site = detail::source_site::here()) {
  using value_type = await_result_t<Awaitable>;
  if (detail::running_loop_slot() != nullptr) {
    throw invalid_state_error("run: cannot be called while another event loop is running in this thread");
  }
  bool interrupted = false;  // before the loop: a queued SIGINT callback may run during cleanup
  event_loop loop;
  loop.set_debug(options.debug || loop.debug());
  loop.set_slow_callback_duration(options.slow_callback_duration);
  struct finish_on_exit {
    event_loop& loop;
    detail::debug_loop_entry listed;  // for SIGQUIT, in debug mode: until the loop closed
    ~finish_on_exit() {
      try {
        detail::release_keyboard_interrupt(loop);
        // Debug mode: a shutdown that hangs says which tasks it waits for, and on what.
        callback_handle report;
        if (loop.debug()) {
          report = loop.call_later(detail::shutdown_report_delay, [&waiting = loop] {
            detail::print_loop_task_tree(detail::core_of(waiting), "run() is still waiting for its tasks to finish");
          });
        }
        detail::finish_tasks(detail::core_of(loop), duration::max());
        report.cancel();
      } catch (...) {
      }
      loop.close();
    }
  } finish{loop, detail::debug_loop_entry(loop)};
  auto main_task = detail::spawn(detail::core_of(loop), std::forward<Awaitable>(awaitable), {}, site);
  detail::claim_task_tree_signal(loop);
  detail::claim_keyboard_interrupt(loop, [&loop, &interrupted, main = task_ref(main_task)]() mutable {
    interrupted = true;
    detail::release_keyboard_interrupt(loop);  // the next Ctrl+C is the default one
    main.cancel();
  });
  try {
    if constexpr (std::is_void_v<value_type>) {
      loop.run_until_complete(main_task);
    } else if constexpr (std::is_reference_v<value_type>) {
      return loop.run_until_complete(main_task);
    } else {
      value_type value = loop.run_until_complete(main_task);
      return value;
    }
  } catch (const cancelled_error&) {
    if (interrupted && main_task.uncancel() == 0) throw keyboard_interrupt();
    throw;
  }
}


}  // namespace coro_loop

#endif  // CORO_LOOP_HPP

// coro_loop is released under the MIT License: Copyright (c) 2026 the coro_loop
// authors. Permission is hereby granted, free of charge, to any person
// obtaining a copy of this software, to deal in it without restriction,
// subject to including this notice; it is provided "as is", without warranty.

