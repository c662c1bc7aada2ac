// tests/test_debug_signals.cpp - debug mode and signals [debug][signals].
//
// Debug mode (run(main, {.debug = true}), loop.set_debug(true), CORO_LOOP_DEBUG=1)
// names the task whose step blocked the loop, stays quiet for fast steps, and
// reports a task<T> destroyed without ever being awaited. Signals:
// add_signal_handler runs its callback on the loop, remove_signal_handler
// restores the previous disposition, SIGKILL/SIGSTOP are refused; SIGINT inside
// run() cancels the main task and run() throws keyboard_interrupt.
//
// stderr is captured by pointing fd 2 at a temporary file around the code.
// SIGINT tests set SIGINT to SIG_DFL for their duration (Catch2 installs its
// own handler while a test runs, and run() only claims SIGINT while it is
// SIG_DFL), and check that run() claimed it before raising it, so a failure
// cannot kill the test binary. Every test sets the dispositions it checks
// (a parent may have left SIGINT ignored, as shells do for background jobs).
// No co_await inside CHECK/REQUIRE: GCC 12 evaluates the operand of the
// macro's `(false) && (expr)` when it holds a co_await. Lambdas written
// inside a co_await expression capture only references (GCC 12 destroys an
// aggregate temporary with a non-trivial destructor twice there).
//
// Windows: no add_signal_handler; run() takes Ctrl+C through a console control
// handler instead of SIGINT. The Ctrl+C cases send a real CTRL_C_EVENT
// (GenerateConsoleCtrlEvent) after giving the process a console of its own, so
// that nothing else gets it; the POSIX disposition cases have no counterpart there.
// The CORO_LOOP_DEBUG child is started with CreateProcess.
#include "catch.hpp"
#include "coro_loop.hpp"

#include "test_support.hpp"

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#if defined(CORO_LOOP_POSIX)
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

extern char** environ;
#endif

namespace cl = coro_loop;
using namespace std::chrono_literals;
using Catch::Matchers::ContainsSubstring;

namespace {

using test_support::count_of;
using test_support::eventually;
using test_support::stderr_capture;

// The seconds in "Executing <what> took S seconds", or -1.
double reported_seconds(const std::string& text, const std::string& what) {
  const std::string prefix = "Executing " + what + " took ";
  const std::size_t at = text.find(prefix);
  if (at == std::string::npos) return -1;
  return std::strtod(text.c_str() + at + prefix.size(), nullptr);
}

bool environment_debug() {
  const char* flag = std::getenv("CORO_LOOP_DEBUG");
  return flag != nullptr && flag[0] != '\0' && flag[0] != '0';
}

cl::task<void> block_for(std::chrono::milliseconds how_long) {
  std::this_thread::sleep_for(how_long);  // deliberately blocking: the pitfall
  co_return;
}

cl::task<void> fast_steps() {
  for (int i = 0; i < 20; ++i) co_await cl::sleep(0ms);
  co_await cl::sleep(1ms);
}

cl::task<int> compute() {
  co_await cl::sleep(0ms);
  co_return 5;
}


#if defined(CORO_LOOP_POSIX)
using test_support::current_handler;
using test_support::disposition_guard;

std::atomic<int> own_handler_calls{0};
void own_handler(int) { own_handler_calls.fetch_add(1); }
#endif

}  // namespace

// ============================================================================
// Debug mode
// ============================================================================

TEST_CASE("debug: a 200 ms blocking call inside a task is reported, naming the task", "[debug]") {
  auto body = []() -> cl::task<void> {
    co_await fast_steps();
    auto blocker = cl::create_task(block_for(200ms), "blocker");
    co_await blocker;
    co_await fast_steps();
  };
  stderr_capture capture;
  cl::run(body(), {.debug = true});
  const std::string text = capture.text();
  INFO("stderr: " << text);
  CHECK_THAT(text, ContainsSubstring("Executing <Task 'blocker'> took "));
  const double seconds = reported_seconds(text, "<Task 'blocker'>");
  CHECK(seconds >= 0.19);
  CHECK(seconds < 60.0);
  CHECK(count_of(text, "Executing <Task 'blocker'>") == 1);
}

TEST_CASE("debug: a task whose steps are fast gives no warning", "[debug]") {
  auto body = []() -> cl::task<int> {
    auto a = cl::create_task(fast_steps(), "quick-a");
    auto b = cl::create_task(fast_steps(), "quick-b");
    co_await a;
    co_await b;
    const int value = co_await compute();
    co_return value;
  };
  stderr_capture capture;
  CHECK(cl::run(body(), {.debug = true}) == 5);
  const std::string text = capture.text();
  INFO("stderr: " << text);
  CHECK(text.find("Executing") == std::string::npos);
}

TEST_CASE("debug: among several tasks, only the one that blocked is named", "[debug]") {
  auto body = []() -> cl::task<void> {
    auto quick = cl::create_task(fast_steps(), "quick");
    auto slow = cl::create_task(block_for(150ms), "slow-one");
    co_await quick;
    co_await slow;
  };
  stderr_capture capture;
  cl::run(body(), {.debug = true});
  const std::string text = capture.text();
  INFO("stderr: " << text);
  CHECK_THAT(text, ContainsSubstring("Executing <Task 'slow-one'> took "));
  CHECK(text.find("<Task 'quick'>") == std::string::npos);
}

TEST_CASE("debug: without debug mode a blocking step is not reported", "[debug]") {
  if (environment_debug()) {
    WARN("CORO_LOOP_DEBUG is set: debug mode is on for every loop, nothing to check");
    return;
  }
  auto body = []() -> cl::task<void> {
    auto blocker = cl::create_task(block_for(150ms), "blocker");
    co_await blocker;
  };
  stderr_capture capture;
  cl::run(body());
  const std::string text = capture.text();
  INFO("stderr: " << text);
  CHECK(text.find("Executing") == std::string::npos);
}

TEST_CASE("debug: loop.set_debug(true) turns debug mode on for run_until_complete", "[debug]") {
  auto body = []() -> cl::task<void> {
    auto blocker = cl::create_task(block_for(200ms), "set-debug-blocker");
    co_await blocker;
  };
  {
    cl::event_loop loop;
    CHECK(loop.debug() == environment_debug());
    loop.set_debug(true);
    CHECK(loop.debug());
    stderr_capture capture;
    loop.run_until_complete(body());
    loop.close();
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK_THAT(text, ContainsSubstring("Executing <Task 'set-debug-blocker'> took "));
    CHECK(reported_seconds(text, "<Task 'set-debug-blocker'>") >= 0.19);
  }
  {
    cl::event_loop loop;
    loop.set_debug(false);
    CHECK_FALSE(loop.debug());
    stderr_capture capture;
    loop.run_until_complete(body());
    loop.close();
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK(text.find("Executing") == std::string::npos);
  }
}

TEST_CASE("debug: slow_callback_duration sets the threshold", "[debug]") {
  auto body = []() -> cl::task<void> {
    auto blocker = cl::create_task(block_for(60ms), "sixty");
    co_await blocker;
  };
  {
    stderr_capture capture;
    cl::run(body(), {.debug = true, .slow_callback_duration = 20ms});
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK_THAT(text, ContainsSubstring("Executing <Task 'sixty'> took "));
  }
  {
    stderr_capture capture;
    cl::run(body(), {.debug = true, .slow_callback_duration = 10'000ms});
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK(text.find("Executing") == std::string::npos);
  }
  {
    cl::event_loop loop;
    loop.set_debug(true);
    loop.set_slow_callback_duration(20ms);
    stderr_capture capture;
    loop.run_until_complete(body());
    loop.close();
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK_THAT(text, ContainsSubstring("Executing <Task 'sixty'> took "));
  }
}

TEST_CASE("debug: a blocking plain callback is reported as a callback", "[debug]") {
  auto body = []() -> cl::task<void> {
    bool ran = false;
    cl::get_running_loop().call_soon([&ran] {
      std::this_thread::sleep_for(150ms);
      ran = true;
    });
    co_await cl::sleep(1ms);
    while (!ran) co_await cl::sleep(1ms);
  };
  stderr_capture capture;
  cl::run(body(), {.debug = true});
  const std::string text = capture.text();
  INFO("stderr: " << text);
  CHECK_THAT(text, ContainsSubstring("Executing a callback took "));
}

TEST_CASE("debug: a task<T> destroyed without ever being awaited is reported", "[debug]") {
  const std::string message = "a task<T> was destroyed without ever being awaited";
  // Stored, then forgotten: the compiler's [[nodiscard]] cannot see it.
  auto forgets = []() -> cl::task<int> {
    {
      cl::task<int> forgotten = compute();
      CHECK(forgotten.valid());
    }
    co_return 1;
  };
  {
    stderr_capture capture;
    CHECK(cl::run(forgets(), {.debug = true}) == 1);
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK(count_of(text, message) == 1);
  }
  // Awaited, or given to create_task: no report.
  auto awaits = []() -> cl::task<int> {
    cl::task<int> kept = compute();
    const int a = co_await kept;
    const int b = co_await compute();
    auto handle = cl::create_task(compute());
    const int c = co_await handle;
    co_return a + b + c;
  };
  {
    stderr_capture capture;
    CHECK(cl::run(awaits(), {.debug = true}) == 15);
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK(text.find(message) == std::string::npos);
  }
  // Not in debug mode: no report.
  if (!environment_debug()) {
    stderr_capture capture;
    CHECK(cl::run(forgets()) == 1);
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK(text.find(message) == std::string::npos);
  }
}

TEST_CASE("debug: a failed task nobody awaited reports 'Task exception was never retrieved'", "[debug]") {
  auto fails = []() -> cl::task<void> {
    co_await cl::sleep(0ms);
    throw std::runtime_error("boom");
  };
  auto forgets = [&fails]() -> cl::task<void> {
    cl::create_task(fails(), "doomed");  // fire and forget: the handle is dropped at once
    co_await cl::sleep(10ms);
  };
  {
    stderr_capture capture;
    cl::run(forgets(), {.debug = true});
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK_THAT(text, ContainsSubstring("Task exception was never retrieved: task 'doomed': boom"));
  }
  auto keeps = [&fails]() -> cl::task<bool> {
    auto handle = cl::create_task(fails(), "kept");
    bool caught = false;
    try {
      co_await handle;
    } catch (const std::runtime_error&) {
      caught = true;
    }
    co_return caught;
  };
  {
    stderr_capture capture;
    CHECK(cl::run(keeps(), {.debug = true}));
    const std::string text = capture.text();
    INFO("stderr: " << text);
    CHECK(text.find("never retrieved") == std::string::npos);
  }
}

// CORO_LOOP_DEBUG is read once per process, so it is checked in a child
// process: this binary again, running only the hidden test case below.
TEST_CASE("debug child: blocks the loop under plain run()", "[.][debug_env_child]") {
  auto body = []() -> cl::task<void> {
    auto blocker = cl::create_task(block_for(150ms), "env-blocker");
    co_await blocker;
  };
  cl::run(body());
}

#if defined(CORO_LOOP_POSIX)
TEST_CASE("debug: CORO_LOOP_DEBUG=1 turns debug mode on without run_options", "[debug]") {
  char self[4096] = {};
  const ssize_t length = ::readlink("/proc/self/exe", self, sizeof self - 1);
  REQUIRE(length > 0);
  for (const char* value : {"1", "0"}) {
    // Everything the child needs is prepared before fork (no allocation after it).
    std::vector<std::string> environment_text;
    for (char** entry = environ; *entry != nullptr; ++entry) {
      if (std::strncmp(*entry, "CORO_LOOP_DEBUG=", 16) != 0) environment_text.emplace_back(*entry);
    }
    environment_text.push_back(std::string("CORO_LOOP_DEBUG=") + value);
    std::vector<char*> environment;
    for (auto& entry : environment_text) environment.push_back(entry.data());
    environment.push_back(nullptr);
    std::string spec = "[debug_env_child]";
    // Under qemu-user without binfmt the kernel cannot run this binary itself: the
    // runner names its emulator in CORO_LOOP_TEST_EXEC_WRAPPER (the Makefile's TARGET rules, the meson
    // cross files), e.g. "qemu-arm -L /usr/arm-linux-gnueabihf", and the child runs
    // through it.
    std::vector<std::string> wrapper_words;
    if (const char* wrapper = std::getenv("CORO_LOOP_TEST_EXEC_WRAPPER"); wrapper != nullptr) {
      std::istringstream words(wrapper);
      for (std::string word; words >> word;) wrapper_words.push_back(word);
    }
    std::vector<char*> arguments;
    for (auto& word : wrapper_words) arguments.push_back(word.data());
    arguments.push_back(self);
    arguments.push_back(spec.data());
    arguments.push_back(nullptr);

    int pipe_ends[2];
    REQUIRE(::pipe(pipe_ends) == 0);
    const pid_t child = ::fork();
    REQUIRE(child >= 0);
    if (child == 0) {
      ::dup2(pipe_ends[1], 2);
      const int null_fd = ::open("/dev/null", O_WRONLY);
      if (null_fd >= 0) ::dup2(null_fd, 1);
      ::close(pipe_ends[0]);
      if (wrapper_words.empty()) {
        ::execve(self, arguments.data(), environment.data());
      } else {
        ::execvpe(arguments[0], arguments.data(), environment.data());
      }
      static constexpr char exec_failed[] =
          "exec of the test binary failed (under qemu-user without binfmt? "
          "set CORO_LOOP_TEST_EXEC_WRAPPER to the emulator command)\n";
      [[maybe_unused]] const ssize_t written = ::write(2, exec_failed, sizeof exec_failed - 1);
      ::_exit(127);
    }
    ::close(pipe_ends[1]);
    std::string text;
    char buffer[4096];
    ssize_t got = 0;
    while ((got = ::read(pipe_ends[0], buffer, sizeof buffer)) > 0) text.append(buffer, static_cast<std::size_t>(got));
    ::close(pipe_ends[0]);
    int status = 0;
    REQUIRE(::waitpid(child, &status, 0) == child);
    INFO("CORO_LOOP_DEBUG=" << value << ", child's stderr: " << text);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    if (std::string(value) == "1") {
      CHECK_THAT(text, ContainsSubstring("Executing <Task 'env-blocker'> took "));
    } else {
      CHECK(text.find("Executing") == std::string::npos);
    }
  }
}
#else
TEST_CASE("debug: CORO_LOOP_DEBUG=1 turns debug mode on without run_options", "[debug]") {
  char self[MAX_PATH] = {};
  const DWORD length = ::GetModuleFileNameA(nullptr, self, sizeof self);
  REQUIRE((length > 0 && length < sizeof self));
  for (const char* value : {"1", "0"}) {
    // The child inherits this process's environment, changed for the moment.
    REQUIRE(::SetEnvironmentVariableA("CORO_LOOP_DEBUG", value));
    SECURITY_ATTRIBUTES inheritable{};
    inheritable.nLength = sizeof inheritable;
    inheritable.bInheritHandle = TRUE;
    HANDLE read_end = nullptr;
    HANDLE write_end = nullptr;
    REQUIRE(::CreatePipe(&read_end, &write_end, &inheritable, 0));
    REQUIRE(::SetHandleInformation(read_end, HANDLE_FLAG_INHERIT, 0));  // the child gets the write end only
    HANDLE null_output = ::CreateFileA("NUL", GENERIC_WRITE, FILE_SHARE_WRITE, &inheritable, OPEN_EXISTING, 0, nullptr);
    STARTUPINFOA startup{};
    startup.cb = sizeof startup;
    startup.dwFlags = STARTF_USESTDHANDLES;
    startup.hStdInput = nullptr;
    startup.hStdOutput = null_output;
    startup.hStdError = write_end;
    std::string command_line = std::string("\"") + self + "\" [debug_env_child]";
    PROCESS_INFORMATION child{};
    const BOOL started = ::CreateProcessA(self, command_line.data(), nullptr, nullptr, TRUE, 0, nullptr, nullptr,
                                          &startup, &child);
    const DWORD start_error = ::GetLastError();
    ::SetEnvironmentVariableA("CORO_LOOP_DEBUG", nullptr);
    ::CloseHandle(write_end);  // the child's copy stays open until it exits: then reads end
    if (null_output != INVALID_HANDLE_VALUE) ::CloseHandle(null_output);
    INFO("CreateProcess error " << start_error);
    REQUIRE(started);
    std::string text;
    char buffer[4096];
    DWORD got = 0;
    while (::ReadFile(read_end, buffer, sizeof buffer, &got, nullptr) && got > 0) text.append(buffer, got);
    ::CloseHandle(read_end);
    const DWORD waited = ::WaitForSingleObject(child.hProcess, 60'000);
    DWORD exit_code = 1;
    ::GetExitCodeProcess(child.hProcess, &exit_code);
    ::CloseHandle(child.hThread);
    ::CloseHandle(child.hProcess);
    INFO("CORO_LOOP_DEBUG=" << value << ", child's stderr: " << text);
    CHECK(waited == WAIT_OBJECT_0);
    CHECK(exit_code == 0);
    if (std::string(value) == "1") {
      CHECK_THAT(text, ContainsSubstring("Executing <Task 'env-blocker'> took "));
    } else {
      CHECK(text.find("Executing") == std::string::npos);
    }
  }
}
#endif

// ============================================================================
// Signals
// ============================================================================

#if defined(CORO_LOOP_POSIX)

TEST_CASE("signals: add_signal_handler runs the callback on the loop after raise() and kill()", "[signals]") {
  disposition_guard default_usr1(SIGUSR1, SIG_DFL);
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    const std::thread::id loop_thread = std::this_thread::get_id();
    int calls = 0;  // the callback runs on the loop's thread only
    bool on_loop_thread = true;
    bool as_plain_callback = true;
    loop.add_signal_handler(SIGUSR1, [&] {
      ++calls;
      on_loop_thread = on_loop_thread && std::this_thread::get_id() == loop_thread;
      as_plain_callback = as_plain_callback && !cl::current_task();  // not inside the signal handler or a task
    });
    CHECK(current_handler(SIGUSR1) != SIG_DFL);

    ::raise(SIGUSR1);
    CHECK(calls == 0);  // not run from the signal handler: later, by the loop
    const bool first = co_await eventually([&calls] { return calls == 1; });
    CHECK(first);

    ::kill(::getpid(), SIGUSR1);
    const bool second = co_await eventually([&calls] { return calls == 2; });
    CHECK(second);

    // Two signals raised back to back: two calls.
    ::raise(SIGUSR1);
    ::raise(SIGUSR1);
    const bool third = co_await eventually([&calls] { return calls == 4; });
    CHECK(third);
    co_await cl::sleep(5ms);
    CHECK(calls == 4);

    CHECK(on_loop_thread);
    CHECK(as_plain_callback);
    CHECK(loop.remove_signal_handler(SIGUSR1));
  };
  cl::run(body());
  CHECK(current_handler(SIGUSR1) == SIG_DFL);
}

TEST_CASE("signals: two signals, each with its callback; a second add replaces the callback", "[signals]") {
  disposition_guard default_usr1(SIGUSR1, SIG_DFL);
  disposition_guard default_usr2(SIGUSR2, SIG_DFL);
  auto body = []() -> cl::task<void> {
    cl::event_loop& loop = cl::get_running_loop();
    std::vector<std::string> seen;
    loop.add_signal_handler(SIGUSR1, [&seen] { seen.push_back("usr1-old"); });
    loop.add_signal_handler(SIGUSR1, [&seen] { seen.push_back("usr1"); });
    loop.add_signal_handler(SIGUSR2, [&seen] { seen.push_back("usr2"); });
    ::raise(SIGUSR2);
    ::raise(SIGUSR1);
    const bool both = co_await eventually([&seen] { return seen.size() >= 2; });
    CHECK(both);
    co_await cl::sleep(5ms);
    CHECK(seen == std::vector<std::string>{"usr2", "usr1"});
    CHECK(loop.remove_signal_handler(SIGUSR1));
    CHECK(loop.remove_signal_handler(SIGUSR2));
  };
  cl::run(body());
  CHECK(current_handler(SIGUSR1) == SIG_DFL);
  CHECK(current_handler(SIGUSR2) == SIG_DFL);
}

TEST_CASE("signals: remove_signal_handler restores the previous disposition and returns false the second time",
          "[signals]") {
  SECTION("a previous handler of the program") {
    disposition_guard own(SIGUSR2, &own_handler);
    own_handler_calls.store(0);
    cl::event_loop loop;
    loop.add_signal_handler(SIGUSR2, [] {});
    CHECK(current_handler(SIGUSR2) != &own_handler);
    CHECK(current_handler(SIGUSR2) != SIG_DFL);
    CHECK(loop.remove_signal_handler(SIGUSR2));
    CHECK(current_handler(SIGUSR2) == &own_handler);
    CHECK_FALSE(loop.remove_signal_handler(SIGUSR2));
    CHECK_FALSE(loop.remove_signal_handler(SIGUSR1));  // never set here
    ::raise(SIGUSR2);                                   // the restored handler works
    CHECK(own_handler_calls.load() == 1);
    loop.close();
  }
  SECTION("the default disposition") {
    disposition_guard default_usr1(SIGUSR1, SIG_DFL);
    cl::event_loop loop;
    loop.add_signal_handler(SIGUSR1, [] {});
    CHECK(current_handler(SIGUSR1) != SIG_DFL);
    CHECK(loop.remove_signal_handler(SIGUSR1));
    CHECK(current_handler(SIGUSR1) == SIG_DFL);
    CHECK_FALSE(loop.remove_signal_handler(SIGUSR1));
  }
  SECTION("an ignored signal") {
    disposition_guard ignored(SIGUSR1, SIG_IGN);
    cl::event_loop loop;
    loop.add_signal_handler(SIGUSR1, [] {});
    CHECK(current_handler(SIGUSR1) != SIG_IGN);
    CHECK(loop.remove_signal_handler(SIGUSR1));
    CHECK(current_handler(SIGUSR1) == SIG_IGN);
  }
  SECTION("closing the loop restores every disposition it changed") {
    disposition_guard default_usr1(SIGUSR1, SIG_DFL);
    disposition_guard own(SIGUSR2, &own_handler);
    {
      cl::event_loop loop;
      loop.add_signal_handler(SIGUSR1, [] {});
      loop.add_signal_handler(SIGUSR2, [] {});
      loop.close();
      CHECK(current_handler(SIGUSR1) == SIG_DFL);
      CHECK(current_handler(SIGUSR2) == &own_handler);
      CHECK_FALSE(loop.remove_signal_handler(SIGUSR1));
      CHECK_THROWS_AS(loop.add_signal_handler(SIGUSR1, [] {}), cl::invalid_state_error);
    }
    {
      cl::event_loop loop;
      loop.add_signal_handler(SIGUSR1, [] {});
    }  // destroyed without close()
    CHECK(current_handler(SIGUSR1) == SIG_DFL);
  }
}

TEST_CASE("signals: SIGKILL, SIGSTOP and bad numbers are refused with std::invalid_argument", "[signals]") {
  disposition_guard default_usr1(SIGUSR1, SIG_DFL);
  cl::event_loop loop;
  CHECK_THROWS_AS(loop.add_signal_handler(SIGKILL, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop.add_signal_handler(SIGSTOP, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop.add_signal_handler(0, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop.add_signal_handler(-3, [] {}), std::invalid_argument);
  CHECK_THROWS_AS(loop.add_signal_handler(NSIG, [] {}), std::invalid_argument);
  CHECK_FALSE(loop.remove_signal_handler(SIGKILL));
  CHECK(current_handler(SIGUSR1) == SIG_DFL);
  // The loop still works afterwards.
  loop.add_signal_handler(SIGUSR1, [] {});
  CHECK(loop.remove_signal_handler(SIGUSR1));
}

TEST_CASE("signals: a signal handled by one loop cannot be taken by another", "[signals]") {
  disposition_guard default_usr1(SIGUSR1, SIG_DFL);
  cl::event_loop first;
  cl::event_loop second;
  first.add_signal_handler(SIGUSR1, [] {});
  CHECK_THROWS_AS(second.add_signal_handler(SIGUSR1, [] {}), cl::invalid_state_error);
  CHECK(first.remove_signal_handler(SIGUSR1));
  second.add_signal_handler(SIGUSR1, [] {});
  CHECK(second.remove_signal_handler(SIGUSR1));
  CHECK(current_handler(SIGUSR1) == SIG_DFL);
}

#endif  // CORO_LOOP_POSIX

// --- Ctrl+C and run(): SIGINT on POSIX, a console control event on Windows ---

namespace {

#if defined(CORO_LOOP_POSIX)
const char* const interrupt_name = "SIGINT";
// SIGINT at its default disposition for the test (so run() claims it), restored after.
struct interrupt_setup {
  disposition_guard default_sigint{SIGINT, SIG_DFL};
  bool ready() const { return true; }
};
// run() must have claimed SIGINT, or raising it would end the test binary.
void send_interrupt() {
  REQUIRE(current_handler(SIGINT) != SIG_DFL);
  ::raise(SIGINT);
}
#else
const char* const interrupt_name = "Ctrl+C";
// Ctrl+C to this process alone. A console of its own first: wine starts the
// tests without one (GenerateConsoleCtrlEvent fails), and on Windows the
// runner's console would pass the event to every process attached to it.
struct interrupt_setup {
  bool ready() const {
    static const bool console = [] {
      ::FreeConsole();
      return ::AllocConsole() != 0;
    }();
    return console;
  }
};
// The console delivers the event on a thread of its own, soon after.
void send_interrupt() { ::GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0); }
#endif

}  // namespace

TEST_CASE("signals: Ctrl+C (SIGINT) inside run() cancels the main task: cleanup runs, run() throws keyboard_interrupt",
          "[signals]") {
  const interrupt_setup setup;
  REQUIRE(setup.ready());
  bool cleanup_ran = false;
  bool after_sleep = false;
  bool leftover_cleaned = false;
  auto leftover = [&leftover_cleaned]() -> cl::task<void> {
    try {
      co_await cl::sleep(30s);
    } catch (const cl::cancelled_error&) {
      leftover_cleaned = true;
      throw;
    }
  };
  auto main_task = [&]() -> cl::task<int> {
    auto other = cl::create_task(leftover());
    co_await cl::sleep(0ms);
    try {
      send_interrupt();
      co_await cl::sleep(30s);
      after_sleep = true;
    } catch (const cl::cancelled_error&) {
      cleanup_ran = true;
      throw;
    }
    co_return 1;
  };
  const auto start = cl::clock::now();
  bool interrupted = false;
  try {
    cl::run(main_task());
  } catch (const cl::keyboard_interrupt& error) {
    interrupted = true;
    CHECK_THAT(error.what(), ContainsSubstring(interrupt_name));
  }
  CHECK(interrupted);
  CHECK(cleanup_ran);
  CHECK_FALSE(after_sleep);
  CHECK(leftover_cleaned);  // the other tasks are cancelled too, as asyncio.run does
  CHECK(cl::clock::now() - start < 20s);
#if defined(CORO_LOOP_POSIX)
  CHECK(current_handler(SIGINT) == SIG_DFL);  // given back
#endif
}

TEST_CASE("signals: the main task's cleanup after Ctrl+C (SIGINT) may await before it rethrows", "[signals]") {
  const interrupt_setup setup;
  REQUIRE(setup.ready());
  bool cleanup_done = false;
  auto main_task = [&cleanup_done]() -> cl::task<void> {
    bool cancelled = false;
    try {
      send_interrupt();
      co_await cl::sleep(30s);
    } catch (const cl::cancelled_error&) {
      cancelled = true;
    }
    if (cancelled) {
      co_await cl::sleep(2ms);  // asynchronous cleanup
      cleanup_done = true;
      throw cl::cancelled_error{};
    }
  };
  CHECK_THROWS_AS(cl::run(main_task()), cl::keyboard_interrupt);
  CHECK(cleanup_done);
}

TEST_CASE("signals: a main task that swallows the Ctrl+C (SIGINT) cancellation returns normally from run()",
          "[signals]") {
  const interrupt_setup setup;
  REQUIRE(setup.ready());
  auto main_task = []() -> cl::task<int> {
    bool swallowed = false;
    try {
      send_interrupt();
      co_await cl::sleep(30s);
    } catch (const cl::cancelled_error&) {
      swallowed = true;
    }
    co_await cl::sleep(1ms);  // later waits are not cancelled
    co_return swallowed ? 7 : 0;
  };
  CHECK(cl::run(main_task()) == 7);
#if defined(CORO_LOOP_POSIX)
  CHECK(current_handler(SIGINT) == SIG_DFL);
  // And run() claims SIGINT again next time.
  auto again = []() -> cl::task<bool> {
    co_await cl::sleep(0ms);
    co_return current_handler(SIGINT) != SIG_DFL;
  };
  CHECK(cl::run(again()));
#else
  // And the next run() takes Ctrl+C again (unclaimed, it would end this process).
  auto again = []() -> cl::task<void> {
    send_interrupt();
    co_await cl::sleep(30s);
  };
  CHECK_THROWS_AS(cl::run(again()), cl::keyboard_interrupt);
#endif
}

#if defined(CORO_LOOP_POSIX)

TEST_CASE("signals: run() leaves SIGINT alone when the program handles it", "[signals]") {
  disposition_guard own(SIGINT, &own_handler);
  own_handler_calls.store(0);
  auto main_task = []() -> cl::task<int> {
    CHECK(current_handler(SIGINT) == &own_handler);
    ::raise(SIGINT);  // goes to the program's handler; the main task goes on
    co_await cl::sleep(5ms);
    co_return 3;
  };
  CHECK(cl::run(main_task()) == 3);
  CHECK(own_handler_calls.load() == 1);
  CHECK(current_handler(SIGINT) == &own_handler);
}

TEST_CASE("signals: run() on a thread other than the main one does not claim SIGINT", "[signals]") {
  disposition_guard default_sigint(SIGINT, SIG_DFL);
  std::atomic<bool> claimed{true};
  std::thread other([&claimed] {
    auto main_task = [&claimed]() -> cl::task<void> {
      co_await cl::sleep(0ms);
      claimed.store(current_handler(SIGINT) != SIG_DFL);
    };
    cl::run(main_task());
  });
  other.join();
  CHECK_FALSE(claimed.load());
}
#endif  // CORO_LOOP_POSIX
