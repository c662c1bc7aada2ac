// tests/kqueue/test_kqueue_emulation.cpp - checks the kqueue test double
// (tests/kqueue/sys/event.h) against the semantics of FreeBSD's kevent(2) that
// coro_loop's kqueue backend relies on: level vs EV_CLEAR, independent READ and
// WRITE filters, EV_EOF, change errors and EV_RECEIPT, timeouts and EINTR,
// EVFILT_USER triggered from another thread, EVFILT_PROC's NOTE_EXIT, and no
// descriptor or memory left behind by kqueue()/close() cycles.
// Not built by the Makefile (it builds tests/test_*.cpp); by hand:
//   g++ -std=c++20 -Wall -Wextra -Wpedantic -Werror -pthread -Itests/kqueue -Itests
//       tests/kqueue/test_kqueue_emulation.cpp tests/catch_main.cpp -o build/test_kqueue_emulation
#include <sys/event.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>
#include <vector>

#include "catch.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// Closes the descriptors it holds; close_first()/close_second() close one early.
struct descriptor_pair {
  int first = -1;
  int second = -1;
  void close_first() {
    if (first >= 0) ::close(first);
    first = -1;
  }
  void close_second() {
    if (second >= 0) ::close(second);
    second = -1;
  }
  ~descriptor_pair() {
    close_first();
    close_second();
  }
};

void make_socket_pair(descriptor_pair& pair) {
  int descriptors[2];
  REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, descriptors) == 0);
  pair.first = descriptors[0];
  pair.second = descriptors[1];
}

// first: the read end, second: the write end.
void make_pipe(descriptor_pair& pair) {
  int descriptors[2];
  REQUIRE(::pipe2(descriptors, O_NONBLOCK | O_CLOEXEC) == 0);
  pair.first = descriptors[0];
  pair.second = descriptors[1];
}

// A connected TCP pair over loopback: first = the connecting side, second = the accepted one.
void make_tcp_pair(descriptor_pair& pair) {
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 1) == 0);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  pair.first = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(pair.first >= 0);
  REQUIRE(::connect(pair.first, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  pair.second = ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
  REQUIRE(pair.second >= 0);
  ::close(listener);
  REQUIRE(::fcntl(pair.first, F_SETFL, O_NONBLOCK) == 0);
}

// Applies one change; returns kevent()'s result (errno tells the error).
int apply(int kq, std::uintptr_t ident, short filter, unsigned short flags, unsigned int fflags = 0,
          void* udata = nullptr) {
  struct kevent change;
  EV_SET(&change, ident, filter, flags, fflags, 0, udata);
  return ::kevent(kq, &change, 1, nullptr, 0, nullptr);
}

// What kevent() reports now ({0, 0}: a poll) or within `timeout`.
std::vector<struct kevent> wait_events(int kq, int capacity = 16, timespec timeout = {0, 0}) {
  std::vector<struct kevent> events(static_cast<std::size_t>(capacity));
  const int count = ::kevent(kq, nullptr, 0, events.data(), capacity, &timeout);
  REQUIRE(count >= 0);
  events.resize(static_cast<std::size_t>(count));
  return events;
}

std::size_t count_of(const std::vector<struct kevent>& events, int ident, short filter) {
  std::size_t count = 0;
  for (const struct kevent& event : events) {
    if (event.ident == static_cast<std::uintptr_t>(ident) && event.filter == filter) ++count;
  }
  return count;
}

const struct kevent* find(const std::vector<struct kevent>& events, int ident, short filter) {
  for (const struct kevent& event : events) {
    if (event.ident == static_cast<std::uintptr_t>(ident) && event.filter == filter) return &event;
  }
  return nullptr;
}

void write_bytes(int fd, std::size_t count) {
  std::vector<char> bytes(count, 'x');
  REQUIRE(::write(fd, bytes.data(), count) == static_cast<ssize_t>(count));
}

void drain(int fd) {
  char buffer[65536];
  while (::read(fd, buffer, sizeof buffer) > 0) {
  }
}

// Writes until the buffer is full (EAGAIN).
void fill(int fd) {
  std::vector<char> bytes(65536, 'x');
  while (::write(fd, bytes.data(), bytes.size()) > 0) {
  }
  REQUIRE(errno == EAGAIN);
}

std::size_t open_descriptor_count() {
  DIR* directory = ::opendir("/proc/self/fd");
  REQUIRE(directory != nullptr);
  std::size_t count = 0;
  while (const dirent* entry = ::readdir(directory)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(directory);
  return count - 1;  // the directory stream's own
}

struct queue {
  int kq = ::kqueue();
  queue() { REQUIRE(kq >= 0); }
  ~queue() { ::close(kq); }
};

}  // namespace

TEST_CASE("kqueue emulation: FreeBSD's constants and EV_SET's named fields", "[kqueue]") {
  CHECK(EVFILT_READ == -1);
  CHECK(EVFILT_WRITE == -2);
  CHECK(EVFILT_USER == -11);
  CHECK(EV_ADD == 0x1);
  CHECK(EV_DELETE == 0x2);
  CHECK(EV_ENABLE == 0x4);
  CHECK(EV_DISABLE == 0x8);
  CHECK(EV_CLEAR == 0x20);
  CHECK(EV_RECEIPT == 0x40);
  CHECK(EV_ERROR == 0x4000);
  CHECK(EV_EOF == 0x8000);
  CHECK(EVFILT_PROC == -5);
  CHECK(NOTE_FFNOP == 0u);
  CHECK(NOTE_TRIGGER == 0x01000000u);
  CHECK(NOTE_EXIT == 0x80000000u);
  int marker = 0;
  struct kevent event;
  EV_SET(&event, 7, EVFILT_WRITE, EV_ADD | EV_CLEAR, NOTE_TRIGGER, 42, &marker);
  CHECK(event.ident == 7u);
  CHECK(event.filter == EVFILT_WRITE);
  CHECK(event.flags == (EV_ADD | EV_CLEAR));
  CHECK(event.fflags == NOTE_TRIGGER);
  CHECK(event.data == 42);
  CHECK(event.udata == &marker);
}

TEST_CASE("kqueue emulation: kqueue() is close-on-exec and an unknown queue is EBADF", "[kqueue]") {
  queue q;
  CHECK((::fcntl(q.kq, F_GETFD) & FD_CLOEXEC) != 0);
  struct kevent event;
  timespec zero{0, 0};
  errno = 0;
  CHECK(::kevent(-1, nullptr, 0, &event, 1, &zero) == -1);
  CHECK(errno == EBADF);
  descriptor_pair pair;
  make_socket_pair(pair);  // an open descriptor that is not a queue
  errno = 0;
  CHECK(::kevent(pair.first, nullptr, 0, &event, 1, &zero) == -1);
  CHECK(errno == EBADF);
  errno = 0;
  timespec bad{0, 1000000000L};
  CHECK(::kevent(q.kq, nullptr, 0, &event, 1, &bad) == -1);
  CHECK(errno == EINVAL);
}

TEST_CASE("kqueue emulation: EVFILT_READ without EV_CLEAR is level-triggered", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  int marker = 0;
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD, 0, &marker) == 0);
  CHECK(wait_events(q.kq).empty());
  write_bytes(pair.second, 5);
  for (int round = 0; round < 3; ++round) {  // reported for as long as the bytes are there
    const std::vector<struct kevent> events = wait_events(q.kq);
    REQUIRE(events.size() == 1);
    CHECK(events[0].ident == static_cast<std::uintptr_t>(pair.first));
    CHECK(events[0].filter == EVFILT_READ);
    CHECK(events[0].data == 5);
    CHECK(events[0].udata == &marker);
    CHECK((events[0].flags & (EV_EOF | EV_ERROR)) == 0);
  }
  drain(pair.first);
  CHECK(wait_events(q.kq).empty());
}

TEST_CASE("kqueue emulation: EVFILT_READ with EV_CLEAR reports each arrival once", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  write_bytes(pair.second, 5);
  std::vector<struct kevent> events = wait_events(q.kq);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 5);
  CHECK((events[0].flags & EV_CLEAR) != 0);  // the registration's flags come back, as on BSD
  CHECK(wait_events(q.kq).empty());          // not read, but already reported
  write_bytes(pair.second, 3);
  events = wait_events(q.kq);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data == 8);  // everything readable now
  CHECK(wait_events(q.kq).empty());
}

TEST_CASE("kqueue emulation: EVFILT_WRITE level-triggered and with EV_CLEAR", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  SECTION("level: reported while there is room") {
    REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD) == 0);
    for (int round = 0; round < 3; ++round) {
      const std::vector<struct kevent> events = wait_events(q.kq);
      REQUIRE(events.size() == 1);
      CHECK(events[0].filter == EVFILT_WRITE);
      CHECK(events[0].data > 0);
    }
    fill(pair.first);
    CHECK(wait_events(q.kq).empty());
  }
  SECTION("EV_CLEAR: once, then again when room comes back") {
    REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(wait_events(q.kq).size() == 1);
    CHECK(wait_events(q.kq).empty());
    fill(pair.first);
    CHECK(wait_events(q.kq).empty());
    drain(pair.second);
    const std::vector<struct kevent> events = wait_events(q.kq);
    REQUIRE(events.size() == 1);
    CHECK(events[0].filter == EVFILT_WRITE);
    CHECK(events[0].data > 0);
  }
}

TEST_CASE("kqueue emulation: READ and WRITE of one descriptor are separate registrations", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  int read_marker = 0;
  int write_marker = 0;
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD, 0, &read_marker) == 0);
  REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD, 0, &write_marker) == 0);
  write_bytes(pair.second, 4);
  std::vector<struct kevent> events = wait_events(q.kq);
  // One kevent per (ident, filter), each with its own udata.
  REQUIRE(events.size() == 2);
  REQUIRE(find(events, pair.first, EVFILT_READ) != nullptr);
  REQUIRE(find(events, pair.first, EVFILT_WRITE) != nullptr);
  CHECK(find(events, pair.first, EVFILT_READ)->udata == &read_marker);
  CHECK(find(events, pair.first, EVFILT_WRITE)->udata == &write_marker);

  REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_DELETE) == 0);
  events = wait_events(q.kq);
  CHECK(count_of(events, pair.first, EVFILT_READ) == 1);
  CHECK(count_of(events, pair.first, EVFILT_WRITE) == 0);

  errno = 0;
  CHECK(apply(q.kq, pair.first, EVFILT_WRITE, EV_DELETE) == -1);  // already gone
  CHECK(errno == ENOENT);
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_DELETE) == 0);
  CHECK(wait_events(q.kq).empty());
}

TEST_CASE("kqueue emulation: one kevent per (ident, filter), the rest in the next call", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  // Both EV_CLEAR (epoll edge-triggered): an edge that does not fit must not be lost.
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
  write_bytes(pair.second, 1);
  const std::vector<struct kevent> first = wait_events(q.kq, 1);
  REQUIRE(first.size() == 1);
  const std::vector<struct kevent> second = wait_events(q.kq, 1);
  REQUIRE(second.size() == 1);
  CHECK(first[0].filter != second[0].filter);
  CHECK(wait_events(q.kq).empty());
}

TEST_CASE("kqueue emulation: EV_DISABLE and EV_ENABLE", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_DISABLE) == 0);
  write_bytes(pair.second, 2);
  CHECK(wait_events(q.kq).empty());
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ENABLE) == 0);
  CHECK(wait_events(q.kq).size() == 1);
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_DISABLE) == 0);
  CHECK(wait_events(q.kq).empty());
  errno = 0;
  CHECK(apply(q.kq, pair.first, EVFILT_WRITE, EV_ENABLE) == -1);  // never added
  CHECK(errno == ENOENT);
}

TEST_CASE("kqueue emulation: EV_EOF", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  SECTION("socket pair, peer closed with bytes unread: READ has EV_EOF and the count, WRITE has EV_EOF") {
    make_socket_pair(pair);
    REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    (void)wait_events(q.kq);  // the initial WRITE
    write_bytes(pair.second, 3);
    pair.close_second();
    const std::vector<struct kevent> events = wait_events(q.kq);
    const struct kevent* read = find(events, pair.first, EVFILT_READ);
    const struct kevent* write = find(events, pair.first, EVFILT_WRITE);
    REQUIRE(read != nullptr);
    CHECK((read->flags & EV_EOF) != 0);
    CHECK(read->data == 3);  // BSD: EOF may come with data still pending
    REQUIRE(write != nullptr);
    CHECK((write->flags & EV_EOF) != 0);
  }
  SECTION("socket pair, peer shut down writing: READ has EV_EOF, WRITE does not") {
    make_socket_pair(pair);
    REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD) == 0);
    REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD) == 0);
    REQUIRE(::shutdown(pair.second, SHUT_WR) == 0);
    const std::vector<struct kevent> events = wait_events(q.kq);
    REQUIRE(find(events, pair.first, EVFILT_READ) != nullptr);
    CHECK((find(events, pair.first, EVFILT_READ)->flags & EV_EOF) != 0);
    CHECK(find(events, pair.first, EVFILT_READ)->data == 0);
    REQUIRE(find(events, pair.first, EVFILT_WRITE) != nullptr);
    CHECK((find(events, pair.first, EVFILT_WRITE)->flags & EV_EOF) == 0);
  }
  SECTION("pipe: the writer closed gives READ EV_EOF; the reader closed gives WRITE EV_EOF") {
    make_pipe(pair);
    REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(apply(q.kq, pair.second, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    std::vector<struct kevent> events = wait_events(q.kq);
    REQUIRE(events.size() == 1);  // the pipe has room
    CHECK(events[0].ident == static_cast<std::uintptr_t>(pair.second));
    CHECK((events[0].flags & EV_EOF) == 0);
    CHECK(events[0].data > 0);
    write_bytes(pair.second, 6);
    events = wait_events(q.kq);
    REQUIRE(find(events, pair.first, EVFILT_READ) != nullptr);
    CHECK(find(events, pair.first, EVFILT_READ)->data == 6);
    CHECK((find(events, pair.first, EVFILT_READ)->flags & EV_EOF) == 0);

    descriptor_pair second_pipe;
    make_pipe(second_pipe);
    REQUIRE(apply(q.kq, second_pipe.second, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    (void)wait_events(q.kq);
    second_pipe.close_first();  // no reader left
    events = wait_events(q.kq);
    REQUIRE(find(events, second_pipe.second, EVFILT_WRITE) != nullptr);
    CHECK((find(events, second_pipe.second, EVFILT_WRITE)->flags & EV_EOF) != 0);
    REQUIRE(apply(q.kq, second_pipe.second, EVFILT_WRITE, EV_DELETE) == 0);

    REQUIRE(apply(q.kq, pair.second, EVFILT_WRITE, EV_DELETE) == 0);
    pair.close_second();  // no writer left
    events = wait_events(q.kq);
    REQUIRE(find(events, pair.first, EVFILT_READ) != nullptr);
    CHECK((find(events, pair.first, EVFILT_READ)->flags & EV_EOF) != 0);
  }
  SECTION("TCP: a FIN gives READ EV_EOF only; a reset gives both, and SO_ERROR is left for the caller") {
    make_tcp_pair(pair);
    REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(apply(q.kq, pair.first, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
    (void)wait_events(q.kq);
    REQUIRE(::shutdown(pair.second, SHUT_WR) == 0);
    std::vector<struct kevent> events = wait_events(q.kq, 16, {2, 0});
    REQUIRE(find(events, pair.first, EVFILT_READ) != nullptr);
    CHECK((find(events, pair.first, EVFILT_READ)->flags & EV_EOF) != 0);
    if (const struct kevent* write = find(events, pair.first, EVFILT_WRITE)) CHECK((write->flags & EV_EOF) == 0);

    linger abortive{1, 0};  // close() sends RST
    REQUIRE(::setsockopt(pair.second, SOL_SOCKET, SO_LINGER, &abortive, sizeof abortive) == 0);
    pair.close_second();
    events = wait_events(q.kq, 16, {2, 0});
    REQUIRE(find(events, pair.first, EVFILT_READ) != nullptr);
    REQUIRE(find(events, pair.first, EVFILT_WRITE) != nullptr);
    CHECK((find(events, pair.first, EVFILT_READ)->flags & EV_EOF) != 0);
    CHECK((find(events, pair.first, EVFILT_WRITE)->flags & EV_EOF) != 0);
    CHECK(find(events, pair.first, EVFILT_WRITE)->fflags == 0u);  // documented: never SO_ERROR
    int error = 0;
    socklen_t length = sizeof error;
    REQUIRE(::getsockopt(pair.first, SOL_SOCKET, SO_ERROR, &error, &length) == 0);
    CHECK(error != 0);  // still there for the caller (EPIPE: reset after the FIN)
  }
}

TEST_CASE("kqueue emulation: a listening socket, a connect in progress and an eventfd", "[kqueue]") {
  queue q;
  const int listener = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t length = sizeof address;
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0);
  REQUIRE(::listen(listener, 4) == 0);
  REQUIRE(::getsockname(listener, reinterpret_cast<sockaddr*>(&address), &length) == 0);
  REQUIRE(apply(q.kq, listener, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  CHECK(wait_events(q.kq).empty());

  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  REQUIRE(client >= 0);
  const int connected = ::connect(client, reinterpret_cast<sockaddr*>(&address), sizeof address);
  REQUIRE((connected == 0 || errno == EINPROGRESS));
  REQUIRE(apply(q.kq, client, EVFILT_WRITE, EV_ADD | EV_CLEAR) == 0);
  bool accepted_ready = false;
  bool connect_done = false;
  const steady::time_point deadline = steady::now() + 5s;
  while ((!accepted_ready || !connect_done) && steady::now() < deadline) {
    for (const struct kevent& event : wait_events(q.kq, 16, {1, 0})) {
      if (event.ident == static_cast<std::uintptr_t>(listener)) {
        CHECK(event.filter == EVFILT_READ);
        CHECK(event.data >= 1);
        accepted_ready = true;
      }
      if (event.ident == static_cast<std::uintptr_t>(client)) {
        CHECK(event.filter == EVFILT_WRITE);
        CHECK((event.flags & EV_EOF) == 0);
        connect_done = true;
      }
    }
  }
  CHECK(accepted_ready);
  CHECK(connect_done);
  REQUIRE(apply(q.kq, listener, EVFILT_READ, EV_DELETE) == 0);
  REQUIRE(apply(q.kq, client, EVFILT_WRITE, EV_DELETE) == 0);
  ::close(client);
  ::close(listener);

  const int counter = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  REQUIRE(counter >= 0);
  REQUIRE(apply(q.kq, counter, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  CHECK(wait_events(q.kq).empty());
  const std::uint64_t one = 1;
  REQUIRE(::write(counter, &one, sizeof one) == sizeof one);
  const std::vector<struct kevent> events = wait_events(q.kq);
  REQUIRE(events.size() == 1);
  CHECK(events[0].data > 0);
  REQUIRE(apply(q.kq, counter, EVFILT_READ, EV_DELETE) == 0);
  ::close(counter);
}

TEST_CASE("kqueue emulation: change errors, EV_ERROR entries and EV_RECEIPT", "[kqueue]") {
  queue q;
  descriptor_pair pair;
  make_socket_pair(pair);
  struct kevent changes[3];
  struct kevent events[3];

  SECTION("an error with room in the event list is an EV_ERROR entry, returned without waiting") {
    EV_SET(&changes[0], pair.first, EVFILT_READ, EV_ADD, 0, 0, nullptr);
    EV_SET(&changes[1], pair.first, EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);  // never added
    EV_SET(&changes[2], 1000000, EVFILT_READ, EV_ADD, 0, 0, nullptr);         // not open
    const steady::time_point started = steady::now();
    const int count = ::kevent(q.kq, changes, 3, events, 3, nullptr);  // would wait forever otherwise
    CHECK(steady::now() - started < 1s);
    REQUIRE(count == 2);
    CHECK(events[0].flags == EV_ERROR);
    CHECK(events[0].filter == EVFILT_WRITE);
    CHECK(events[0].data == ENOENT);
    CHECK(events[1].flags == EV_ERROR);
    CHECK(events[1].ident == 1000000u);
    CHECK(events[1].data == EBADF);
    write_bytes(pair.second, 1);  // the good change was applied
    CHECK(wait_events(q.kq).size() == 1);
  }
  SECTION("an error without room fails the call; changes before it stay applied") {
    EV_SET(&changes[0], pair.first, EVFILT_READ, EV_ADD, 0, 0, nullptr);
    EV_SET(&changes[1], pair.first, EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
    errno = 0;
    CHECK(::kevent(q.kq, changes, 2, nullptr, 0, nullptr) == -1);
    CHECK(errno == ENOENT);
    write_bytes(pair.second, 1);
    CHECK(wait_events(q.kq).size() == 1);
  }
  SECTION("a bad descriptor is EBADF, an unknown filter or flag EINVAL") {
    errno = 0;
    CHECK(apply(q.kq, 1000000, EVFILT_READ, EV_ADD) == -1);
    CHECK(errno == EBADF);
    errno = 0;
    CHECK(apply(q.kq, 1000000, EVFILT_WRITE, EV_DELETE) == -1);
    CHECK(errno == EBADF);
    errno = 0;
    CHECK(apply(q.kq, pair.first, -7 /* EVFILT_TIMER */, EV_ADD) == -1);
    CHECK(errno == EINVAL);
    errno = 0;
    CHECK(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | 0x0010 /* EV_ONESHOT */) == -1);
    CHECK(errno == EINVAL);
  }
  SECTION("EV_RECEIPT: an entry for every change, data 0 on success, no waiting, pending events left alone") {
    write_bytes(pair.second, 1);
    REQUIRE(apply(q.kq, pair.second, EVFILT_WRITE, EV_ADD) == 0);  // ready, not drained by the receipts
    int marker = 0;
    EV_SET(&changes[0], pair.first, EVFILT_READ, EV_ADD | EV_RECEIPT, 0, 0, &marker);
    EV_SET(&changes[1], pair.first, EVFILT_WRITE, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
    const int count = ::kevent(q.kq, changes, 2, events, 3, nullptr);
    REQUIRE(count == 2);
    CHECK(events[0].flags == EV_ERROR);
    CHECK(events[0].data == 0);
    CHECK(events[0].udata == &marker);
    CHECK(events[1].flags == EV_ERROR);
    CHECK(events[1].data == ENOENT);
    const std::vector<struct kevent> ready = wait_events(q.kq);
    CHECK(count_of(ready, pair.first, EVFILT_READ) == 1);
    CHECK(count_of(ready, pair.second, EVFILT_WRITE) == 1);
  }
  SECTION("the same array as change list and event list") {
    EV_SET(&changes[0], pair.first, EVFILT_READ, EV_ADD | EV_RECEIPT, 0, 0, nullptr);
    EV_SET(&changes[1], pair.first, EVFILT_WRITE, EV_ADD | EV_RECEIPT, 0, 0, nullptr);
    EV_SET(&changes[2], pair.second, EVFILT_READ, EV_DELETE | EV_RECEIPT, 0, 0, nullptr);
    REQUIRE(::kevent(q.kq, changes, 3, changes, 3, nullptr) == 3);
    CHECK(changes[0].data == 0);
    CHECK(changes[1].data == 0);
    CHECK(changes[1].filter == EVFILT_WRITE);
    CHECK(changes[2].data == ENOENT);
    CHECK(changes[2].ident == static_cast<std::uintptr_t>(pair.second));
  }
  SECTION("changes are applied before waiting in the same call") {
    write_bytes(pair.second, 2);
    EV_SET(&changes[0], pair.first, EVFILT_READ, EV_ADD, 0, 0, nullptr);
    timespec zero{0, 0};
    REQUIRE(::kevent(q.kq, changes, 1, events, 3, &zero) == 1);
    CHECK(events[0].filter == EVFILT_READ);
    CHECK(events[0].data == 2);
  }
}

TEST_CASE("kqueue emulation: a descriptor closed without EV_DELETE, its number reused", "[kqueue]") {
  queue q;
  descriptor_pair old_pair;
  make_socket_pair(old_pair);
  const int number = old_pair.first;
  REQUIRE(apply(q.kq, number, EVFILT_READ, EV_ADD) == 0);
  REQUIRE(apply(q.kq, number, EVFILT_WRITE, EV_ADD) == 0);
  old_pair.close_first();  // BSD drops both filters here
  descriptor_pair new_pair;
  make_socket_pair(new_pair);
  REQUIRE(new_pair.first == number);
  errno = 0;
  CHECK(apply(q.kq, number, EVFILT_WRITE, EV_DELETE) == -1);
  CHECK(errno == ENOENT);
  REQUIRE(apply(q.kq, number, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  CHECK(wait_events(q.kq).empty());  // no WRITE left over from the old descriptor
  write_bytes(new_pair.second, 1);
  const std::vector<struct kevent> events = wait_events(q.kq);
  REQUIRE(events.size() == 1);
  CHECK(events[0].filter == EVFILT_READ);
}

TEST_CASE("kqueue emulation: timeouts", "[kqueue]") {
  queue q;
  struct kevent event;
  timespec zero{0, 0};
  steady::time_point started = steady::now();
  CHECK(::kevent(q.kq, nullptr, 0, &event, 1, &zero) == 0);
  CHECK(steady::now() - started < 100ms);

  timespec fifty_milliseconds{0, 50000000L};
  started = steady::now();
  CHECK(::kevent(q.kq, nullptr, 0, &event, 1, &fifty_milliseconds) == 0);
  const steady::duration waited = steady::now() - started;
  CHECK(waited >= 50ms);
  CHECK(waited < 2s);

  // nevents == 0 returns at once whatever the timeout
  started = steady::now();
  CHECK(::kevent(q.kq, nullptr, 0, nullptr, 0, nullptr) == 0);
  CHECK(steady::now() - started < 100ms);
}

namespace {
void ignore_signal(int) {}
}  // namespace

TEST_CASE("kqueue emulation: a signal during the wait is -1/EINTR", "[kqueue]") {
  queue q;
  struct sigaction action {};
  struct sigaction previous {};
  action.sa_handler = ignore_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: the wait is interrupted
  REQUIRE(::sigaction(SIGUSR1, &action, &previous) == 0);
  // With a user event too: the wait then also watches its own wake-up eventfd.
  REQUIRE(apply(q.kq, 1, EVFILT_USER, EV_ADD | EV_CLEAR) == 0);
  const pthread_t waiter = ::pthread_self();
  std::atomic<bool> done{false};
  std::thread signaller([&] {
    // Until the waiter is interrupted; bounded.
    for (int attempt = 0; attempt < 100 && !done.load(); ++attempt) {
      std::this_thread::sleep_for(50ms);
      if (!done.load()) ::pthread_kill(waiter, SIGUSR1);
    }
  });
  struct kevent event;
  timespec limit{10, 0};
  errno = 0;
  const int count = ::kevent(q.kq, nullptr, 0, &event, 1, &limit);
  const int error = errno;
  done = true;
  signaller.join();
  ::sigaction(SIGUSR1, &previous, nullptr);
  CHECK(count == -1);
  CHECK(error == EINTR);
}

TEST_CASE("kqueue emulation: EVFILT_USER", "[kqueue]") {
  queue q;
  int marker = 0;
  SECTION("EV_CLEAR: fires once per NOTE_TRIGGER, with the udata and ident") {
    REQUIRE(apply(q.kq, 5, EVFILT_USER, EV_ADD | EV_CLEAR, 0, &marker) == 0);
    CHECK(wait_events(q.kq).empty());
    REQUIRE(apply(q.kq, 5, EVFILT_USER, 0, NOTE_TRIGGER, &marker) == 0);
    REQUIRE(apply(q.kq, 5, EVFILT_USER, 0, NOTE_TRIGGER, &marker) == 0);  // coalesced
    const std::vector<struct kevent> events = wait_events(q.kq);
    REQUIRE(events.size() == 1);
    CHECK(events[0].ident == 5u);
    CHECK(events[0].filter == EVFILT_USER);
    CHECK(events[0].udata == &marker);
    CHECK((events[0].flags & EV_ERROR) == 0);
    CHECK(wait_events(q.kq).empty());
    REQUIRE(apply(q.kq, 5, EVFILT_USER, 0, NOTE_TRIGGER | NOTE_FFNOP, &marker) == 0);
    CHECK(wait_events(q.kq).size() == 1);
  }
  SECTION("without EV_CLEAR it stays triggered") {
    REQUIRE(apply(q.kq, 5, EVFILT_USER, EV_ADD) == 0);
    REQUIRE(apply(q.kq, 5, EVFILT_USER, 0, NOTE_TRIGGER) == 0);
    CHECK(wait_events(q.kq).size() == 1);
    CHECK(wait_events(q.kq).size() == 1);
    REQUIRE(apply(q.kq, 5, EVFILT_USER, EV_DISABLE) == 0);
    CHECK(wait_events(q.kq).empty());
    REQUIRE(apply(q.kq, 5, EVFILT_USER, EV_ENABLE) == 0);
    CHECK(wait_events(q.kq).size() == 1);
  }
  SECTION("its own name space, separate from descriptors; delete and unknown idents") {
    descriptor_pair pair;
    make_socket_pair(pair);
    REQUIRE(apply(q.kq, pair.first, EVFILT_USER, EV_ADD | EV_CLEAR) == 0);
    REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD) == 0);
    REQUIRE(apply(q.kq, pair.first, EVFILT_USER, 0, NOTE_TRIGGER) == 0);
    const std::vector<struct kevent> events = wait_events(q.kq);
    CHECK(count_of(events, pair.first, EVFILT_USER) == 1);
    CHECK(count_of(events, pair.first, EVFILT_READ) == 0);
    REQUIRE(apply(q.kq, pair.first, EVFILT_USER, EV_DELETE) == 0);
    errno = 0;
    CHECK(apply(q.kq, pair.first, EVFILT_USER, 0, NOTE_TRIGGER) == -1);
    CHECK(errno == ENOENT);
    errno = 0;
    CHECK(apply(q.kq, pair.first, EVFILT_USER, EV_DELETE) == -1);
    CHECK(errno == ENOENT);
  }
}

TEST_CASE("kqueue emulation: NOTE_TRIGGER from another thread wakes a kevent() waiting forever", "[kqueue]") {
  queue q;
  REQUIRE(apply(q.kq, 0, EVFILT_USER, EV_ADD | EV_CLEAR) == 0);
  descriptor_pair pair;
  make_socket_pair(pair);
  REQUIRE(apply(q.kq, pair.first, EVFILT_READ, EV_ADD | EV_CLEAR) == 0);
  // Rounds with the trigger before, during and after the waiter enters kevent():
  // every trigger must end a wait, none may be lost.
  constexpr int rounds = 300;
  std::atomic<int> round_started{-1};
  std::thread trigger([&] {
    for (int round = 0; round < rounds; ++round) {
      const steady::time_point limit = steady::now() + 5s;
      while (round_started.load() < round && steady::now() < limit) std::this_thread::yield();
      if (round % 3 == 1) std::this_thread::sleep_for(std::chrono::microseconds(200));
      struct kevent change;
      EV_SET(&change, 0, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
      if (::kevent(q.kq, &change, 1, nullptr, 0, nullptr) != 0) return;
    }
  });
  int woken = 0;
  const steady::time_point started = steady::now();
  for (int round = 0; round < rounds; ++round) {
    round_started = round;
    struct kevent event;
    timespec limit{5, 0};  // a lost wake-up fails the test instead of hanging it
    const int count = ::kevent(q.kq, nullptr, 0, &event, 1, &limit);
    if (count == 1 && event.filter == EVFILT_USER) ++woken;
  }
  trigger.join();
  const std::chrono::duration<double, std::micro> elapsed = steady::now() - started;
  INFO("mean round " << elapsed.count() / rounds << " us");
  CHECK(woken == rounds);
  CHECK(elapsed < 10s);
  CHECK(wait_events(q.kq).empty());

  // And a real NULL timeout: the trigger comes 50 ms later.
  std::thread late([&] {
    std::this_thread::sleep_for(50ms);
    struct kevent change;
    EV_SET(&change, 0, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);
    ::kevent(q.kq, &change, 1, nullptr, 0, nullptr);
  });
  struct kevent event;
  const int count = ::kevent(q.kq, nullptr, 0, &event, 1, nullptr);
  late.join();
  CHECK(count == 1);
  CHECK(event.filter == EVFILT_USER);
}

TEST_CASE("kqueue emulation: kqueue()/close() cycles leave no descriptor behind", "[kqueue]") {
  const std::size_t before = open_descriptor_count();
  descriptor_pair pair;
  make_socket_pair(pair);
  for (int cycle = 0; cycle < 1000; ++cycle) {
    const int kq = ::kqueue();
    REQUIRE(kq >= 0);
    struct kevent changes[3];
    EV_SET(&changes[0], 0, EVFILT_USER, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    EV_SET(&changes[1], pair.first, EVFILT_READ, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    EV_SET(&changes[2], pair.first, EVFILT_WRITE, EV_ADD | EV_CLEAR, 0, 0, nullptr);
    REQUIRE(::kevent(kq, changes, 3, nullptr, 0, nullptr) == 0);
    struct kevent events[4];
    timespec zero{0, 0};
    REQUIRE(::kevent(kq, nullptr, 0, events, 4, &zero) == 1);  // the WRITE, once (EV_CLEAR)
    timespec short_wait{0, 100000};  // a blocking wait: makes the per-wait eventfd
    REQUIRE(::kevent(kq, nullptr, 0, events, 4, &short_wait) == 0);
    if (cycle % 2 == 0) {  // half without deleting: close() must still release everything
      EV_SET(&changes[0], pair.first, EVFILT_READ, EV_DELETE, 0, 0, nullptr);
      EV_SET(&changes[1], pair.first, EVFILT_WRITE, EV_DELETE, 0, 0, nullptr);
      REQUIRE(::kevent(kq, changes, 2, nullptr, 0, nullptr) == 0);
    }
    EV_SET(&changes[0], 0, EVFILT_USER, 0, NOTE_TRIGGER, 0, nullptr);  // left pending at close
    REQUIRE(::kevent(kq, changes, 1, nullptr, 0, nullptr) == 0);
    ::close(kq);
  }
  pair.close_first();
  pair.close_second();
  CHECK(open_descriptor_count() == before);
}

namespace {
// A child that exits with `code` once its pipe is closed (or at once: close
// `release` first); killed by SIGKILL when `code` is negative. Only
// async-signal-safe calls after fork().
struct child {
  pid_t pid = -1;
  int release = -1;  // the write end: closing it lets the child go
  explicit child(int code) {
    int ends[2];
    REQUIRE(::pipe2(ends, O_CLOEXEC) == 0);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(ends[1]);
      char byte;
      while (::read(ends[0], &byte, 1) > 0) {
      }
      if (code < 0) ::kill(::getpid(), SIGKILL);
      ::_exit(code);
    }
    ::close(ends[0]);
    release = ends[1];
  }
  void let_go() {
    if (release >= 0) ::close(release);
    release = -1;
  }
  // Waits (bounded) until it has exited, without reaping it.
  void wait_exited() {
    siginfo_t info{};
    for (int i = 0; i < 5000 && info.si_pid == 0; ++i) {
      REQUIRE(::waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0);
      if (info.si_pid == 0) std::this_thread::sleep_for(1ms);
    }
    REQUIRE(info.si_pid == pid);
  }
  int reap() {
    int status = 0;
    REQUIRE(::waitpid(pid, &status, 0) == pid);
    pid = -1;
    return status;
  }
  ~child() {
    let_go();
    if (pid > 0) ::waitpid(pid, nullptr, 0);
  }
};
}  // namespace

TEST_CASE("kqueue emulation: EVFILT_PROC reports NOTE_EXIT once, with the wait status", "[kqueue]") {
  const std::size_t before = open_descriptor_count();
  {
    queue q;
    int marker = 0;
    SECTION("a running child: reported when it exits, then the registration is gone") {
      child running(3);
      REQUIRE(apply(q.kq, static_cast<std::uintptr_t>(running.pid), EVFILT_PROC, EV_ADD, NOTE_EXIT, &marker) == 0);
      CHECK(wait_events(q.kq).empty());
      running.let_go();
      const std::vector<struct kevent> events = wait_events(q.kq, 16, {5, 0});
      REQUIRE(events.size() == 1);
      CHECK(events[0].ident == static_cast<std::uintptr_t>(running.pid));
      CHECK(events[0].filter == EVFILT_PROC);
      CHECK(events[0].fflags == NOTE_EXIT);
      CHECK((events[0].flags & EV_EOF) != 0);
      CHECK(events[0].udata == &marker);
      CHECK(WIFEXITED(static_cast<int>(events[0].data)));
      CHECK(WEXITSTATUS(static_cast<int>(events[0].data)) == 3);
      CHECK(wait_events(q.kq).empty());
      errno = 0;
      CHECK(apply(q.kq, static_cast<std::uintptr_t>(running.pid), EVFILT_PROC, EV_DELETE) == -1);
      CHECK(errno == ENOENT);
      const int status = running.reap();  // the emulation never reaps
      CHECK(WEXITSTATUS(status) == 3);
    }
    SECTION("a child that exited before EV_ADD, not reaped yet, is reported at once") {
      child exited(0);
      exited.let_go();
      exited.wait_exited();
      REQUIRE(apply(q.kq, static_cast<std::uintptr_t>(exited.pid), EVFILT_PROC, EV_ADD, NOTE_EXIT) == 0);
      const std::vector<struct kevent> events = wait_events(q.kq);
      REQUIRE(events.size() == 1);
      CHECK(events[0].filter == EVFILT_PROC);
    }
    SECTION("a child killed by a signal: data says so") {
      child killed(-1);
      REQUIRE(apply(q.kq, static_cast<std::uintptr_t>(killed.pid), EVFILT_PROC, EV_ADD, NOTE_EXIT) == 0);
      killed.let_go();
      const std::vector<struct kevent> events = wait_events(q.kq, 16, {5, 0});
      REQUIRE(events.size() == 1);
      CHECK(WIFSIGNALED(static_cast<int>(events[0].data)));
      CHECK(WTERMSIG(static_cast<int>(events[0].data)) == SIGKILL);
    }
    SECTION("EV_DELETE before the exit: nothing is reported; ENOENT, ESRCH, EINVAL") {
      child running(0);
      REQUIRE(apply(q.kq, static_cast<std::uintptr_t>(running.pid), EVFILT_PROC, EV_ADD, NOTE_EXIT) == 0);
      REQUIRE(apply(q.kq, static_cast<std::uintptr_t>(running.pid), EVFILT_PROC, EV_DELETE) == 0);
      running.let_go();
      running.wait_exited();
      CHECK(wait_events(q.kq, 16, {0, 20'000'000}).empty());
      errno = 0;
      CHECK(apply(q.kq, static_cast<std::uintptr_t>(running.pid), EVFILT_PROC, EV_DELETE) == -1);
      CHECK(errno == ENOENT);
      const pid_t gone = running.pid;
      running.reap();
      errno = 0;
      CHECK(apply(q.kq, static_cast<std::uintptr_t>(gone), EVFILT_PROC, EV_ADD, NOTE_EXIT) == -1);
      CHECK(errno == ESRCH);
      errno = 0;
      CHECK(apply(q.kq, static_cast<std::uintptr_t>(::getpid()), EVFILT_PROC, EV_ADD, 0x40000000u) == -1);  // NOTE_FORK
      CHECK(errno == EINVAL);
    }
    SECTION("a queue closed with a registration left: its pidfd goes when the number is reused") {
      child running(0);
      const int kq = ::kqueue();
      REQUIRE(kq >= 0);
      REQUIRE(apply(kq, static_cast<std::uintptr_t>(running.pid), EVFILT_PROC, EV_ADD, NOTE_EXIT) == 0);
      ::close(kq);
      const int again = ::kqueue();  // the lowest free number: the same
      CHECK(again == kq);
      ::close(again);
    }
  }
  CHECK(open_descriptor_count() == before);
}
