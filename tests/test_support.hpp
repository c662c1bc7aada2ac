// tests/test_support.hpp - resource accounting shared by the fault, load and stress
// tests: after each case the counts of open file descriptors, live tasks, timers and
// the loop's I/O registrations return to where they were. Also what several test
// files need alike: stderr captured into a string, whether a sanitizer or valgrind
// is watching, sizes read from the environment, counting a text's occurrences,
// a signal's disposition set for a scope (POSIX).
// Included after catch.hpp and coro_loop.hpp; everything is inline. Linux: open fds
// are counted in /proc/self/fd, the resident set size read from /proc/self/status.
// Windows: open file, pipe and socket handles, and the working set size.
#pragma once

#if defined(CORO_LOOP_POSIX)
#include <dirent.h>
#include <signal.h>  // sigaction: a disposition for a scope
#include <unistd.h>  // dup, dup2, close
#else
#include <io.h>  // dup, dup2, close
#include <psapi.h>
#endif

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace test_support {

namespace cl = coro_loop;
using namespace std::chrono_literals;

#if defined(CORO_LOOP_WINDOWS)
namespace detail {
// One entry of NtQuerySystemInformation's SystemExtendedHandleInformation (class 64):
// every open handle of every process. Declared here: mingw's <winternl.h> does not
// describe it. (The older class 16 truncates handle values to 16 bits.)
struct system_handle_entry {
  PVOID object;
  ULONG_PTR process_id;
  ULONG_PTR handle_value;
  ULONG granted_access;
  USHORT creator_back_trace_index;
  USHORT object_type_index;
  ULONG attributes;
  ULONG reserved;
};
using query_system_information_function = LONG(WINAPI*)(int, void*, ULONG, ULONG*);
}  // namespace detail

// What a file descriptor is on POSIX: this process's handles that are files, pipes or
// sockets (GetFileType knows them). Threads, events and completion ports are left out,
// as they have no descriptor on POSIX either: the thread pool's idle workers must not
// count as a leak. Read from the system's handle table: GetProcessHandleCount counts
// every kind (and under wine always answers 0).
inline std::size_t open_fd_count() {
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  if (ntdll == nullptr) return 0;
  // Through void(*)(): GCC allows that cast between unrelated function types.
  const auto query = reinterpret_cast<detail::query_system_information_function>(
      reinterpret_cast<void (*)()>(::GetProcAddress(ntdll, "NtQuerySystemInformation")));
  if (query == nullptr) return 0;
  constexpr int system_extended_handle_information = 64;
  constexpr LONG status_info_length_mismatch = static_cast<LONG>(0xC0000004L);
  std::string buffer(std::size_t{1} << 16, '\0');
  LONG status = 0;
  // The table may grow between calls: a bounded number of tries, the buffer doubled each time.
  for (int attempt = 0; attempt < 16; ++attempt) {
    ULONG needed = 0;
    status = query(system_extended_handle_information, buffer.data(), static_cast<ULONG>(buffer.size()), &needed);
    if (status != status_info_length_mismatch) break;
    buffer.resize(buffer.size() * 2);
  }
  if (status != 0) return 0;
  // The table: a ULONG_PTR count, a reserved ULONG_PTR, then the entries.
  ULONG_PTR entries = 0;
  std::memcpy(&entries, buffer.data(), sizeof entries);
  const std::size_t first_entry = 2 * sizeof(ULONG_PTR);
  const ULONG_PTR process_id = ::GetCurrentProcessId();
  std::size_t count = 0;
  for (ULONG_PTR i = 0; i < entries && first_entry + (i + 1) * sizeof(detail::system_handle_entry) <= buffer.size();
       ++i) {
    detail::system_handle_entry entry{};
    std::memcpy(&entry, buffer.data() + first_entry + i * sizeof entry, sizeof entry);
    if (entry.process_id != process_id) continue;
    if (::GetFileType(reinterpret_cast<HANDLE>(entry.handle_value)) == FILE_TYPE_UNKNOWN) continue;
    ++count;
  }
  return count;
}

// The working set of this process in KiB (Windows' resident set size).
inline std::size_t rss_kib() {
  PROCESS_MEMORY_COUNTERS counters{};
  counters.cb = sizeof counters;
  if (!::K32GetProcessMemoryInfo(::GetCurrentProcess(), &counters, sizeof counters)) return 0;
  return static_cast<std::size_t>(counters.WorkingSetSize / 1024);
}
#else
// Open file descriptors of this process (the directory stream's own fd not counted).
inline std::size_t open_fd_count() {
  DIR* directory = ::opendir("/proc/self/fd");
  if (directory == nullptr) return 0;
  std::size_t count = 0;
  while (const dirent* entry = ::readdir(directory)) {
    if (entry->d_name[0] != '.') ++count;
  }
  ::closedir(directory);
  return count > 0 ? count - 1 : 0;
}

// VmRSS of this process in KiB (0 when /proc is not there).
inline std::size_t rss_kib() {
  std::FILE* status = std::fopen("/proc/self/status", "r");
  if (status == nullptr) return 0;
  char line[256];
  std::size_t kib = 0;
  while (std::fgets(line, sizeof line, status) != nullptr) {
    if (std::strncmp(line, "VmRSS:", 6) == 0) {
      kib = static_cast<std::size_t>(std::strtoull(line + 6, nullptr, 10));
      break;
    }
  }
  std::fclose(status);
  return kib;
}
#endif

// Points fd 2 at a temporary file until text() (or the destructor): what the
// library reports on stderr, read back by a test. Should the temporary file not
// open, nothing is captured and text() is empty.
class stderr_capture {
 public:
  stderr_capture() {
    std::fflush(stderr);
    file_ = std::tmpfile();
    if (file_ == nullptr) return;
    saved_ = ::dup(2);
    if (saved_ >= 0) ::dup2(::fileno(file_), 2);
  }
  stderr_capture(const stderr_capture&) = delete;
  stderr_capture& operator=(const stderr_capture&) = delete;
  ~stderr_capture() {
    restore();
    if (file_ != nullptr) std::fclose(file_);
  }
  // Restores stderr and returns what was written meanwhile.
  std::string text() {
    restore();
    return written();
  }
  // What was written so far; stderr stays captured (a test that reads twice).
  std::string text_so_far() {
    std::fflush(stderr);
    return written();
  }

 private:
  // The whole file. fd 2 shares its offset: read to the end, that is where the
  // next write lands.
  std::string written() {
    std::string captured;
    if (file_ == nullptr) return captured;
    std::fseek(file_, 0, SEEK_SET);
    char buffer[4096];
    std::size_t got = 0;
    while ((got = std::fread(buffer, 1, sizeof buffer, file_)) > 0) captured.append(buffer, got);
    return captured;
  }
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    ::dup2(saved_, 2);
    ::close(saved_);
    saved_ = -1;
  }
  std::FILE* file_ = nullptr;
  int saved_ = -1;
};

// Built with a sanitizer (ASan, TSan, MSan).
constexpr bool sanitized() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  return true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || __has_feature(memory_sanitizer)
  return true;
#else
  return false;
#endif
#else
  return false;
#endif
}

// Running under valgrind (its preload libraries are in LD_PRELOAD).
inline bool under_valgrind() {
  const char* preload = std::getenv("LD_PRELOAD");
  return preload != nullptr && std::strstr(preload, "vgpreload") != nullptr;
}

// Running under wine rather than Windows: its ntdll exports wine_get_version.
inline bool under_wine() {
#if defined(CORO_LOOP_WINDOWS)
  const HMODULE ntdll = ::GetModuleHandleW(L"ntdll.dll");
  return ntdll != nullptr && ::GetProcAddress(ntdll, "wine_get_version") != nullptr;
#else
  return false;
#endif
}

// Built with optimization (-O1 and up).
constexpr bool optimized() {
#if defined(__OPTIMIZE__)
  return true;
#else
  return false;
#endif
}

// Sanitizer or valgrind: slower, and memory is not returned at once (quarantine).
inline bool instrumented() { return sanitized() || under_valgrind(); }

// glibc fills every block it hands out when MALLOC_PERTURB_ is set (meson test sets it by
// default): memory reserved and never written is then resident all the same.
inline bool malloc_perturbed() {
  const char* perturb = std::getenv("MALLOC_PERTURB_");
  return perturb != nullptr && std::strtol(perturb, nullptr, 10) != 0;
}

// The number in the environment variable `name`, or `fallback` when it is unset or empty.
inline std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  return std::strtoull(text, nullptr, 10);
}

// A test's size: the environment variable `name`, else the default for this build: `plain`
// when optimized, `with_sanitizer` under a sanitizer or unoptimized (make test's -O0, where the
// full size would take most of the run; CI's -O1 stage runs it), `with_valgrind` under valgrind.
inline std::uint64_t sized(const char* name, std::uint64_t plain, std::uint64_t with_sanitizer,
                           std::uint64_t with_valgrind) {
  if (under_valgrind()) return env_number(name, with_valgrind);
  if (sanitized() || !optimized()) return env_number(name, with_sanitizer);
  return env_number(name, plain);
}

// Whether `part` occurs in `text`.
inline bool contains(std::string_view text, std::string_view part) { return text.find(part) != std::string_view::npos; }

// "" when `got` equals `expected`, else where they differ: a short failure message
// instead of a megabyte of expansion.
inline std::string difference(const std::string& got, const std::string& expected) {
  if (got == expected) return {};
  std::size_t at = 0;
  while (at < got.size() && at < expected.size() && got[at] == expected[at]) ++at;
  return "got " + std::to_string(got.size()) + " bytes, expected " + std::to_string(expected.size()) +
         ", first difference at byte " + std::to_string(at) + "; got from there: \"" + got.substr(at, 60) + "\"";
}

// How often `part` occurs in `text` (occurrences that do not overlap).
inline std::size_t count_of(std::string_view text, std::string_view part) {
  std::size_t count = 0;
  for (std::size_t at = text.find(part); at != std::string_view::npos; at = text.find(part, at + part.size())) ++count;
  return count;
}

// What must come back once every task, socket, stream, server and timer a test
// made is finished and closed. now() needs a running loop (all_tasks()).
struct resource_counts {
  std::size_t fds = 0;
  std::size_t tasks = 0;
  std::size_t timers = 0;
  std::size_t registered = 0;
  std::size_t parked = 0;

  static resource_counts now() {
    cl::event_loop& loop = cl::get_running_loop();
    return {open_fd_count(), cl::all_tasks().size(), loop.timer_count(), loop.registered_handle_count(),
            loop.parked_operation_count()};
  }
  bool operator==(const resource_counts&) const = default;
  std::string to_string() const {
    return "fds " + std::to_string(fds) + ", tasks " + std::to_string(tasks) + ", timers " + std::to_string(timers) +
           ", registered " + std::to_string(registered) + ", parked " + std::to_string(parked);
  }
};

#if defined(CORO_LOOP_POSIX)
// A signal's disposition now (its handler, SIG_DFL or SIG_IGN).
inline void (*current_handler(int signal_number))(int) {
  struct sigaction current {};
  ::sigaction(signal_number, nullptr, &current);
  return current.sa_handler;
}

// Sets a signal's disposition for a scope, then restores the one before.
class disposition_guard {
 public:
  disposition_guard(int signal_number, void (*handler)(int)) : signal_number_(signal_number) {
    struct sigaction action {};
    action.sa_handler = handler;
    ::sigemptyset(&action.sa_mask);
    ::sigaction(signal_number, &action, &saved_);
  }
  disposition_guard(const disposition_guard&) = delete;
  disposition_guard& operator=(const disposition_guard&) = delete;
  ~disposition_guard() { ::sigaction(signal_number_, &saved_, nullptr); }

 private:
  int signal_number_;
  struct sigaction saved_ {};
};

// Sets an environment variable for a scope, then restores the value before (or unsets it).
class scoped_env {
 public:
  scoped_env(const char* name, const std::string& value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old;
    ::setenv(name, value.c_str(), 1);
  }
  scoped_env(const scoped_env&) = delete;
  scoped_env& operator=(const scoped_env&) = delete;
  ~scoped_env() {
    if (old_) {
      ::setenv(name_, old_->c_str(), 1);
    } else {
      ::unsetenv(name_);
    }
  }

 private:
  const char* name_;
  std::optional<std::string> old_;
};
#endif  // CORO_LOOP_POSIX

// Polls `condition` once per millisecond on the loop (other tasks run meanwhile) until it holds:
// false if it still does not after `limit`.
template <class Condition>
cl::task<bool> eventually(Condition condition, cl::duration limit = 20s) {
  const cl::time_point deadline = cl::clock::now() + limit;
  while (!condition()) {
    if (cl::clock::now() >= deadline) co_return false;
    co_await cl::sleep(1ms);
  }
  co_return true;
}

// Whether `awaitable` is still unfinished after `delay`: timeout() threw timeout_error.
// (Bind a task to a local and move it in: no temporary inside a co_await with GCC 12.)
template <class Awaitable>
cl::task<bool> times_out(cl::duration delay, Awaitable awaitable) {
  try {
    co_await cl::timeout(delay, std::move(awaitable));
  } catch (const cl::timeout_error&) {
    co_return true;
  }
  co_return false;
}

// The checks below need Catch2 (tests); tests/soak/soak.cpp uses only the counters.
#if defined(CHECK)
// Waits (bounded, polling every millisecond) until the counts equal `before`, then
// checks each. Closing is asynchronous (a stream's close finishes on the loop), so a
// test gives it up to `limit`.
inline cl::task<void> expect_resources_back(resource_counts before, cl::duration limit = 10s) {
  const cl::time_point deadline = cl::clock::now() + limit;
  while (!(resource_counts::now() == before) && cl::clock::now() < deadline) co_await cl::sleep(1ms);
  const resource_counts after = resource_counts::now();
  INFO("before: " << before.to_string() << "; after: " << after.to_string());
  CHECK(after.fds == before.fds);
  CHECK(after.tasks == before.tasks);
  CHECK(after.timers == before.timers);
  CHECK(after.registered == before.registered);
  CHECK(after.parked == before.parked);
}

// The coroutine `body()`, then expect_resources_back: what it opened (descriptors,
// tasks, timers, registrations, parked operations) must all be back. Its locals are
// gone by then, so a test need not scope them itself.
template <class Body>
cl::task<void> leaves_nothing_behind(Body body) {
  const resource_counts before = resource_counts::now();
  co_await body();
  co_await expect_resources_back(before);
}

// Outside any loop: the fd count before and after a whole cl::run().
class fd_guard {
 public:
  fd_guard() : before_(open_fd_count()) {}
  void check() const {
    INFO("open fds before " << before_);
    CHECK(open_fd_count() == before_);
  }

 private:
  std::size_t before_;
};

#endif  // defined(CHECK)

}  // namespace test_support
