// tests/allocation_counter.hpp - every allocation counted, per thread, so that a test can
// check that a hand-off between a waker and a waiter, both on the loop's thread, allocates
// nothing (a thread pool's or another test's threads in the same program do not count):
//
//   const long before = allocations;
//   ...                                          // the step that must not allocate
//   if (COUNT_ALLOCATIONS) CHECK(allocations - before == 0);
//
// It replaces the global operator new and delete, which a program may define only
// once: include it from test files compiled as one translation unit (tests/programs.txt;
// #pragma once), never from two translation units of a program (catch_main.o defines
// none), after catch.hpp and coro_loop.hpp. Sanitizer runtimes own operator new
// themselves: there the operators are not replaced, COUNT_ALLOCATIONS is 0 and nothing
// is counted.
#pragma once

#include <cstddef>
#include <cstdlib>
#include <new>

#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define COUNT_ALLOCATIONS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define COUNT_ALLOCATIONS 0
#endif
#endif
#ifndef COUNT_ALLOCATIONS
#define COUNT_ALLOCATIONS 1
#endif

namespace {
thread_local long allocations = 0;
}  // namespace

#if COUNT_ALLOCATIONS
// Not inlined, so every new meets its own delete: valgrind, which replaces
// both, then never sees a malloc'd block reach its operator delete.
#if defined(__GNUC__)
#define ALLOCATION_FUNCTION __attribute__((noinline))
#else
#define ALLOCATION_FUNCTION
#endif
ALLOCATION_FUNCTION void* operator new(std::size_t size) {
  ++allocations;
  if (void* block = std::malloc(size == 0 ? 1 : size)) return block;
  throw std::bad_alloc();
}
ALLOCATION_FUNCTION void* operator new[](std::size_t size) { return ::operator new(size); }
ALLOCATION_FUNCTION void operator delete(void* block) noexcept { std::free(block); }
ALLOCATION_FUNCTION void operator delete[](void* block) noexcept { std::free(block); }
ALLOCATION_FUNCTION void operator delete(void* block, std::size_t) noexcept { std::free(block); }
ALLOCATION_FUNCTION void operator delete[](void* block, std::size_t) noexcept { std::free(block); }
#endif  // COUNT_ALLOCATIONS
