# mk/cross.mk - the test suite cross-compiled for embedded Linux and run under qemu-user
# (included by the top Makefile; issue 8, embedded Linux targets).
#
#   make test-aarch64   tests/test_*.cpp and the two_tu program built with
#                       aarch64-linux-gnu-g++ into build/aarch64, each run as
#                       `qemu-aarch64 -L /usr/aarch64-linux-gnu BINARY` (no binfmt needed)
#   make test-armhf     the same for 32-bit ARM (arm-linux-gnueabihf-g++ -Wno-psabi,
#                       qemu-arm -L /usr/arm-linux-gnueabihf) into build/armhf
#   SANITIZE=asan       ASan+UBSan under qemu into build/asan-aarch64 (build/asan-armhf);
#                       LeakSanitizer cannot work under qemu-user (it needs ptrace), so
#                       ASAN_OPTIONS has detect_leaks=0. SANITIZE=tsan is refused: TSan
#                       runs natively (.ci/run), and the cross toolchains' TSan runtimes
#                       are neither installed nor tried under qemu-user.
#   make cross-deps     install the cross compilers, qemu-user and Catch2
#                       (scripts/install-deps.sh cross); the test targets run it first
#
# Same warnings as native (CXXFLAGS of the Makefile: -Wall -Wextra -Wpedantic -Werror);
# Catch2 is Debian's header-only v2 in /usr/include/catch2, taken through
# -isystem cross/catch2-include (a directory whose only entry `catch2` points there), so
# that <catch2/catch.hpp> resolves without putting the host's /usr/include on the
# cross compiler's path. Catch2's main is compiled once per toolchain
# (BUILD/catch_main.o, the Makefile's rule).
#
# Under qemu-user the tests run about 4 times slower than natively, so two heavy
# tests get smaller sizes through their own knobs (a value set in the environment wins;
# an empty one keeps the test's default):
#   CORO_LOOP_STRESS_OPS  [CROSS_STRESS_OPS: 100000]   test_stress's cancellation storm
#                         (native 1,000,000: 105 s under qemu-aarch64, 100,000: 22 s, loaded machine)
#   CORO_LOOP_LOAD_JOBS   [CROSS_LOAD_JOBS: 100000]    test_load's saturated thread pool
#                         (native 1,000,000: 44 s under qemu-aarch64, 100,000: 4 s, loaded machine)
# test_load's 10,000 connections and 100,000 tasks keep their defaults. Under
# SANITIZE=asan test_stress runs 20,000 operations (its valgrind size; 100,000 took 42 s)
# and test_load keeps its own sanitizer sizes.
#   CROSS_OPTIMIZE [-O0 under SANITIZE=asan, else none]  appended to the compile flags:
#                 GCC's ASan+UBSan build costs 2.5 times less at -O0 than at the
#                 Makefile's -O1 (the whole aarch64 build: about 390 instead of 870
#                 CPU seconds) and finds the same memory errors; the run under qemu
#                 takes 174 s instead of 125 s (test_net's 100 x 1,000 echo round
#                 trips: 57 s instead of 15 s), a net gain of 1-3 minutes on 2 cores.
#   CROSS_TEST_TIMEOUT [600]   seconds per test binary
# A test that re-executes itself (test_debug_signals) is told the emulator through
# CORO_LOOP_TEST_EXEC_WRAPPER, since without binfmt the kernel cannot run the binary.
# Host programs the tests start (nginx for test_http_nginx) run natively as usual.
# Examples are not built or run for the cross targets (CROSS_EXAMPLES=yes builds them,
# and checks that they built).

CROSS_aarch64_CXX := aarch64-linux-gnu-g++
CROSS_aarch64_SYSROOT := /usr/aarch64-linux-gnu
CROSS_aarch64_QEMU := qemu-aarch64
CROSS_aarch64_FLAGS :=
CROSS_armhf_CXX := arm-linux-gnueabihf-g++
CROSS_armhf_SYSROOT := /usr/arm-linux-gnueabihf
CROSS_armhf_QEMU := qemu-arm
# GCC notes on ARM that the ABI of passing some std:: types changed in GCC 7; every
# object here is built by the same compiler, so the note says nothing about this build.
CROSS_armhf_FLAGS := -Wno-psabi

ifeq ($(SANITIZE),)
CROSS_STRESS_OPS ?= 100000
CROSS_LOAD_JOBS ?= 100000
CROSS_OPTIMIZE ?=
else
CROSS_STRESS_OPS ?= 20000
CROSS_LOAD_JOBS ?=
CROSS_OPTIMIZE ?= -O0
endif
CROSS_TEST_TIMEOUT ?= 600
CROSS_EXAMPLES ?=
CROSS_CATCH2_INCLUDE := cross/catch2-include

.PHONY: test-aarch64 test-armhf cross-deps

cross-deps:
	@scripts/install-deps.sh cross

# $(call cross_build,TARGET): the build directory of TARGET under the current SANITIZE.
cross_build = build/$(if $(SANITIZE),$(SANITIZE)-)$1

test-aarch64 test-armhf: cross-deps
ifeq ($(SANITIZE),tsan)
	$(error make $@: SANITIZE=tsan does not run under qemu-user; use SANITIZE=asan)
endif
	$(eval cross_target := $(@:test-%=%))
	$(eval cross_dir := $(call cross_build,$(cross_target)))
	@echo "== make $@: $(cross_dir) ($(strip $(CROSS_$(cross_target)_CXX) $(SANITIZE_FLAGS) \
	  $(CROSS_$(cross_target)_FLAGS))) under $(CROSS_$(cross_target)_QEMU) =="
	+@$(SUBMAKE) $(PARALLEL) -k tests $(if $(CROSS_EXAMPLES),examples) \
	  CXX='$(CROSS_$(cross_target)_CXX)' BUILD='$(cross_dir)' \
	  EXTRA_CXXFLAGS='$(strip -isystem $(CROSS_CATCH2_INCLUDE) $(CROSS_$(cross_target)_FLAGS) $(CROSS_OPTIMIZE) $(EXTRA_CXXFLAGS))' \
	  || true
	@set -f; TEST_LABEL='$(cross_dir)' TEST_TIMEOUT='$(CROSS_TEST_TIMEOUT)' \
	  TEST_RUNNER='$(CROSS_$(cross_target)_QEMU) -L $(CROSS_$(cross_target)_SYSROOT)' \
	  CORO_LOOP_TEST_EXEC_WRAPPER='$(CROSS_$(cross_target)_QEMU) -L $(CROSS_$(cross_target)_SYSROOT)' \
	  TEST_BUILT='$(if $(CROSS_EXAMPLES),$(patsubst examples/%.cpp,$(cross_dir)/examples/%,$(EXAMPLE_SRCS)))' \
	  $(if $(CROSS_STRESS_OPS),CORO_LOOP_STRESS_OPS="$${CORO_LOOP_STRESS_OPS:-$(CROSS_STRESS_OPS)}") \
	  $(if $(CROSS_LOAD_JOBS),CORO_LOOP_LOAD_JOBS="$${CORO_LOOP_LOAD_JOBS:-$(CROSS_LOAD_JOBS)}") \
	  ASAN_OPTIONS="$${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=0}" UBSAN_OPTIONS='$(UBSAN_OPTIONS)' \
	  scripts/run-tests.sh $(patsubst tests/%.cpp,$(cross_dir)/tests/%,$(TEST_SRCS)) \
	    $(if $(TWO_TU_SRCS),$(cross_dir)/tests/test_two_translation_units) -- $(CATCH_ARGS)
