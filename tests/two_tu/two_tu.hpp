// tests/two_tu/two_tu.hpp - what b.cpp offers a.cpp.
#pragma once

#include <string>

#include "coro_loop.hpp"

namespace two_tu {
// Runs a small coroutine through coro_loop::run(): the sum 1..n, one sleep(0) per step.
int run_in_b(int n);
// A task defined in b.cpp: "b saw <text>" after a short sleep.
coro_loop::task<std::string> task_from_b(std::string text);
// get_running_loop() as b.cpp sees it (null when none).
coro_loop::event_loop* running_loop_from_b();
}  // namespace two_tu
