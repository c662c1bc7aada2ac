// tests/catch_main.cpp - Catch2's main(), compiled once per build configuration and
// linked into every test binary (see Makefile and meson.build).
#if __has_include(<catch2/catch_session.hpp>)
// Catch2 v3: its own main lives in the Catch2Main library; ours keeps the build
// independent of how v3 was packaged. v3 fails a run that selects no test case
// (v2 does not); allow it, so a filter such as "~[slow]" may empty a binary.
#  include <catch2/catch_session.hpp>

int main(int argc, char* argv[]) {
  Catch::Session session;
  session.configData().allowZeroTests = true;
  if (int const status = session.applyCommandLine(argc, argv); status != 0) return status;
  return session.run();
}
#elif __has_include(<catch2/catch.hpp>)
#  define CATCH_CONFIG_MAIN
#  include <catch2/catch.hpp>
#else
#  error "Catch2 not found: install Catch2: apt-get install catch2 (or run scripts/install-test-deps.sh)"
#endif
