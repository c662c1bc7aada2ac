// tests/catch_main.cpp - Catch2's main(), compiled once per build configuration and
// linked into every test binary (see Makefile and meson.build).
//
// A test binary may also be the child program its own tests start (test_process.cpp:
// the same program on every platform, under qemu and wine too, without host tools):
// run as `BINARY --child ROLE [ARGUMENTS...]`, main() hands over to the function that
// binary put in test_child_main, before Catch2 sees the command line.
#include <cstring>

int (*test_child_main)(int argc, char* argv[]) = nullptr;

namespace {
bool wants_child(int argc, char* argv[]) {
  return argc >= 2 && std::strcmp(argv[1], "--child") == 0 && test_child_main != nullptr;
}
}  // namespace

#if __has_include(<catch2/catch_session.hpp>)
// Catch2 v3: its own main lives in the Catch2Main library; ours keeps the build
// independent of how v3 was packaged. v3 fails a run that selects no test case
// (v2 does not); allow it, so a filter such as "~[slow]" may empty a binary.
#  include <catch2/catch_session.hpp>

int main(int argc, char* argv[]) {
  if (wants_child(argc, argv)) return test_child_main(argc, argv);
  Catch::Session session;
  session.configData().allowZeroTests = true;
  if (int const status = session.applyCommandLine(argc, argv); status != 0) return status;
  return session.run();
}
#elif __has_include(<catch2/catch.hpp>)
#  define CATCH_CONFIG_RUNNER
#  include <catch2/catch.hpp>

int main(int argc, char* argv[]) {
  if (wants_child(argc, argv)) return test_child_main(argc, argv);
  return Catch::Session().run(argc, argv);
}
#else
#  error "Catch2 not found: install Catch2: apt-get install catch2 (or run scripts/install-deps.sh test)"
#endif
