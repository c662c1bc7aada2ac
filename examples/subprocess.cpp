// examples/subprocess.cpp - asyncio's "Subprocesses" examples: run(cmd) with communicate() under gather.
// Shows commands run concurrently, a child's stdout read line by line as it comes, and a hung one timed out and killed.
#include "coro_loop.hpp"

#include <chrono>
#include <cstdio>
#include <string>
#include <utility>

namespace cl = coro_loop;
using namespace std::chrono_literals;

// The commands, for the shell of each platform.
#if defined(_WIN32)
constexpr const char* failing_command = "dir C:\\zzz";
constexpr const char* greeting_command = "ping -n 2 127.0.0.1 >NUL & echo hello";
constexpr const char* counting_command = "for %i in (1 2 3) do @echo line %i";
#else
constexpr const char* failing_command = "ls /zzz";
constexpr const char* greeting_command = "sleep 0.2; echo hello";
constexpr const char* counting_command = "for i in 1 2 3; do echo line $i; sleep 0.1; done";
#endif

// async def run(cmd): the whole output once the command is done.
cl::task<void> run(std::string command) {
  cl::process child = co_await cl::create_subprocess_shell(command, {.stdout_ = cl::stdio::pipe, .stderr_ = cl::stdio::pipe});
  cl::communicate_result output = co_await child.communicate();
  std::printf("[%s exited with %d]\n", command.c_str(), *child.returncode());
  if (!output.stdout_data.empty()) std::printf("[stdout]\n%s", output.stdout_data.c_str());
  if (!output.stderr_data.empty()) std::printf("[stderr]\n%s", output.stderr_data.c_str());
}

// Each line as the child writes it (asyncio's proc.stdout.readline()).
cl::task<void> stream_lines() {
  cl::process child = co_await cl::create_subprocess_shell(counting_command, {.stdout_ = cl::stdio::pipe});
  const cl::time_point started = cl::clock::now();
  for (;;) {
    std::string line = co_await child.stdout_.read_line();
    if (line.empty()) break;  // the end of its stdout
    const auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(cl::clock::now() - started);
    std::printf("after %4lld ms: %s", static_cast<long long>(elapsed.count()), line.c_str());
  }
  std::printf("the counting command exited with %d\n", co_await child.wait());
}

// A program that hangs, started without a shell: timeout() gives up waiting,
// the child keeps running (asyncio's rule) until it is killed.
cl::task<void> give_up_on_hang() {
#if defined(_WIN32)
  cl::process child = co_await cl::create_subprocess_exec("ping", "-n", "30", "127.0.0.1",
                                                          cl::process_options{.stdout_ = cl::stdio::devnull});
#else
  cl::process child = co_await cl::create_subprocess_exec("sleep", "10");
#endif
  bool timed_out = false;
  try {
    co_await cl::timeout(500ms, child.wait());
  } catch (const cl::timeout_error&) {
    timed_out = true;  // C++ cannot co_await inside a catch block
  }
  if (timed_out) {
    child.kill();
    const int code = co_await child.wait();
    std::printf("the hanging program did not finish within 0.5 s: killed, returncode %d\n", code);
  }
}

cl::task<void> main_task() {
  const cl::time_point started = cl::clock::now();
  // Named first: a std::string argument made inside the co_await would be a temporary there (GCC 12).
  cl::task<void> failing = run(failing_command);
  cl::task<void> greeting = run(greeting_command);
  co_await cl::gather(std::move(failing), std::move(greeting), stream_lines(), give_up_on_hang());
  std::printf("all done in %.2f s\n", std::chrono::duration<double>(cl::clock::now() - started).count());
}

int main() { cl::run(main_task()); }
