// tests/catch.hpp - one include for the tests, whichever Catch2 is installed.
// Catch2 v3 (<catch2/catch_test_macros.hpp>) or v2 (<catch2/catch.hpp>, Debian 12's
// package `catch2`). Tests use only what both provide: TEST_CASE, SECTION,
// REQUIRE/CHECK(_FALSE), REQUIRE_THROWS_AS, REQUIRE_THROWS_WITH, REQUIRE_NOTHROW,
// INFO, WARN, and the string matchers under their v3 names
// (Catch::Matchers::ContainsSubstring, StartsWith, EndsWith, Equals).
#pragma once

#if __has_include(<catch2/catch_test_macros.hpp>)
#  include <catch2/catch_test_macros.hpp>
#  include <catch2/matchers/catch_matchers_string.hpp>
#  define CORO_LOOP_TEST_CATCH2_VERSION 3
#elif __has_include(<catch2/catch.hpp>)
#  include <catch2/catch.hpp>
#  include <string>
#  define CORO_LOOP_TEST_CATCH2_VERSION 2
// v2 calls ContainsSubstring "Contains"; give it the v3 name so one spelling works on both.
namespace Catch::Matchers {
inline auto ContainsSubstring(std::string const& text,
                              CaseSensitive::Choice sensitivity = CaseSensitive::Yes) {
  return Contains(text, sensitivity);
}
}  // namespace Catch::Matchers
#else
#  error "Catch2 not found: install Catch2: apt-get install catch2 (or run scripts/install-deps.sh test)"
#endif
