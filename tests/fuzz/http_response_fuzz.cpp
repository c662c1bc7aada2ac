// tests/fuzz/http_response_fuzz.cpp - libFuzzer target for coro_loop::http::response_parser.
// The input's first three bytes choose the request method, keep-alive pipelining, the
// limits and how the bytes arrive; the rest is what the server sent (layout and checks:
// http_response_driver.hpp). A protocol_error is the expected answer to bad input; a
// broken invariant, any other exception, a crash, UB or a leak is a finding.
// Build and run: `make fuzz` (FUZZ_SECONDS=600); seeds: tests/fuzz/http_response_seeds/.
// By hand: clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined
//   -fno-sanitize=function -I. tests/fuzz/http_response_fuzz.cpp -o http_response_fuzz
#include "coro_loop.hpp"

#include "http_response_driver.hpp"

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string_view>
#include <typeinfo>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  try {
    http_fuzz::run(input);
  } catch (const http_fuzz::invariant_violation& e) {
    std::fprintf(stderr, "http_response_fuzz: invariant violated: %s\n", e.what());
    std::abort();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "http_response_fuzz: unexpected exception %s: %s\n", typeid(e).name(), e.what());
    std::abort();
  }
  return 0;
}
