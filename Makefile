# Makefile - build, test and demo coro_loop (GNU make 4.x). `make help` prints this.
#
# Targets
#   make, make all       build every test and example (make tests, make examples: only those)
#   make test            install what the tests need if missing (make deps), build, run the test
#                        binaries, tests/compile_fail/run.sh (each mistake there fails to compile,
#                        its first error naming it), tests/run_examples.sh (each example runs, its
#                        output checked) and tests/consumer/run.sh (a user's project takes coro_loop each way),
#                        TEST_JOBS at a time; PASS/FAIL each, then "tests: N passed, N failed"
#   make demo            build and run DEMO_PROGRAMS, each under a "== name ==" heading
#   make sanitize        make test with SANITIZE=asan (ASan+UBSan), then with SANITIZE=tsan
#   make valgrind        the tests (no examples) under valgrind memcheck
#   make test-io_uring   the tests on the io_uring backend (CORO_LOOP_IO_URING=0: on its epoll fallback)
#   make test-kqueue     the tests on the kqueue backend, against tests/kqueue/sys/event.h: the
#                        kevent(2) subset the backend uses, emulated over epoll
#   make test-aarch64, make test-armhf   the tests cross-compiled, run under qemu-user
#   make test-windows    the tests cross-compiled with mingw-w64, run under wine
#   make fuzz            the libFuzzer target tests/fuzz/http_response_fuzz.cpp (clang++, ASan+UBSan)
#                        for FUZZ_SECONDS on tests/fuzz/http_response_seeds/ (+ _crashes/) and
#                        build/fuzz/corpus/; fails on a crash, left in build/fuzz/artifacts/
#   make soak            tests/soak/soak.cpp: SOAK_SECONDS [1800] of mixed traffic, RSS and fds every
#                        SOAK_REPORT_SECONDS [60]; fails when they grow or an operation fails
#   make bench           the benchmarks, side by side with their peers (bench/bench.mk)
#   make install         CMakeLists.txt's install: coro_loop.hpp into INCLUDEDIR, coro_loop.pc (and,
#                        where OpenSSL 3 is found, coro_loop-openssl.pc) into PKGCONFIGDIR, the package
#                        of find_package(coro_loop) (with the component tls: coro_loop::tls) into CMAKEDIR
#   make uninstall       remove them (same PREFIX and DESTDIR) and the directories left empty below
#                        PREFIX; with a DESTDIR, also PREFIX's path inside it and DESTDIR when empty
#   make deps, make cross-deps   install what the tests, the cross targets need
#   make clean           remove build/
#
# Variables (on the command line: make test CXX=clang++ STDLIB=libc++)
#   CXX=g++|clang++      compiler [g++]; STDLIB=libc++ for clang++ with libc++
#   SANITIZE=asan|tsan   ASan+UBSan or TSan
#   TARGET               kqueue, aarch64, armhf or windows: what make test-TARGET builds for
#   CXXFLAGS             [-std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror -pthread], -std=c++20 and
#                        -pthread added if missing; EXTRA_CXXFLAGS appended; LDFLAGS, LDLIBS
#   TEST_CXXFLAGS        added for the test programs and the examples, before EXTRA_CXXFLAGS [-O0 -g1:
#                        a third of -O1 -g's compile time, line tables for backtraces but no
#                        variables (TEST_CXXFLAGS=-O0 keeps CXXFLAGS' -g for a debugger);
#                        TEST_CXXFLAGS= tests the CXXFLAGS build, CI's TEST_CXXFLAGS=-g0 that build
#                        without debug information]
#   BUILD                output directory [build/[SANITIZE-]CXX[-STDLIB], build/kqueue-the same,
#                        build/[asan-]aarch64, build/[asan-]armhf, build/windows]
#   CATCH_ARGS           Catch2 arguments for each test binary: CATCH_ARGS='"[queue]" --durations yes'
#   TEST_TIMEOUT         seconds per test binary [300; 600 under qemu]; VALGRIND_TIMEOUT [1200]
#   TEST_JOBS            test binaries and scripts run at once [2; 1 under wine]
#   TEST_EXAMPLES=       make test without the examples and consumer projects [yes on this machine]
#   COMPILE_FAIL=        make test without tests/compile_fail/run.sh [yes, but under TSan, valgrind and
#                        the cross targets, which compile as the native runs do]
#   TEST_RUNNER          put before each test binary [TSan: setarch -R; qemu; wine]
#   HAVE_OPENSSL         yes where OpenSSL 3's headers are found for CXX [probed]; HAVE_OPENSSL= builds
#                        as on a machine without them (no TLS tests, fetch_all over http)
#   VALGRIND             the valgrind command make valgrind puts before each test binary
#                        [valgrind --error-exitcode=1 --leak-check=full, leaks definite to possible]
#   VALGRIND_TEST_ARGS   Catch2 test spec under valgrind [~[.] ~[slow]]
#   ASAN_OPTIONS, UBSAN_OPTIONS, TSAN_OPTIONS   the sanitizers' run-time settings, exported to the
#                        tests; the environment's win [detect_leaks=1:abort_on_error=0,
#                        print_stacktrace=1:halt_on_error=1, halt_on_error=1:second_deadlock_stack=1]
#   DEMO_PROGRAMS        the examples make demo runs [all but echo_server, in the README's order]
#   JOBS                 parallel compiles when make was not given -j [2]; V=1 whole command lines
#   FUZZ_SECONDS [600], FUZZ_MAX_LEN [4096], FUZZ_CXX [clang++], FUZZ_ARGS more libFuzzer options
#   PREFIX [/usr/local], DESTDIR a staging directory (not written into the files), INCLUDEDIR,
#   PKGCONFIGDIR, CMAKEDIR [PREFIX/include, PREFIX/share/pkgconfig, PREFIX/share/cmake/coro_loop]
#
# tests/test_X.cpp -> BUILD/tests/test_X, with Catch2's main (BUILD/catch_main.o), except the files
# tests/programs.txt gathers: NAME's files -> BUILD/tests/NAME, one translation unit (BUILD/tests/NAME.cpp
# includes them); tests/two_tu/*.cpp
# -> BUILD/tests/test_two_translation_units (the header in several translation units); examples/X.cpp
# -> BUILD/examples/X. meson.build finds the same files. X.flags beside X.cpp holds flags for that
# program's compile and link (its -l, -L and -Wl, words: the link only), `#` starts a comment
# (tests/test_task.flags: -O0; tests/test_tls.flags: -lssl -lcrypto); a line starting `openssl:` is
# used only where OpenSSL 3's headers are found for CXX (HAVE_OPENSSL; examples/fetch_all.flags:
# `openssl: -DCORO_LOOP_OPENSSL -lssl -lcrypto`, so that make demo runs on a machine with only a
# compiler). The TLS tests (they include tests/tls_fixture.hpp) are left out where it is not found.
# Editing the header, or changing the compiler or flags (BUILD/config.stamp), rebuilds.

MAKEFLAGS += --no-builtin-rules
.SUFFIXES:
.DELETE_ON_ERROR:
SHELL := /bin/bash

# --- targets: each sets its toolchain, then the defaults below (?=) fill in the rest ---------
ifeq ($(TARGET),io_uring)
# Linux's io_uring backend (opt-in); CORO_LOOP_IO_URING=0 in the environment runs the same binaries on
# its epoll fallback. A kernel that refuses io_uring runs the fallback anyway: the first test says so.
TARGET_FLAGS := -DCORO_LOOP_BACKEND_IO_URING
BUILD ?= build/io_uring-$(CONFIG)
TEST_EXAMPLES ?=
else ifeq ($(TARGET),kqueue)
# No macOS or BSD machine is at hand: the backend compiled is exactly the one they get.
TARGET_FLAGS := -DCORO_LOOP_BACKEND_KQUEUE -Itests/kqueue
EXTRA_TESTS := tests/kqueue/test_kqueue_emulation.cpp
BUILD ?= build/kqueue-$(CONFIG)
TEST_EXAMPLES ?=
else ifneq ($(filter aarch64 armhf,$(TARGET)),)
# Debian's cross g++; each binary runs as `qemu-ARCH -L SYSROOT BINARY` (no binfmt), and a test that
# starts itself again is told so. Catch2 is Debian's header-only v2 through cross/catch2-include (its
# one entry points to /usr/include/catch2): the host's /usr/include stays off the cross compiler's path.
$(if $(filter tsan,$(SANITIZE)),$(error TARGET=$(TARGET): TSan does not run under qemu-user; use SANITIZE=asan))
TRIPLET := $(if $(filter armhf,$(TARGET)),arm-linux-gnueabihf,aarch64-linux-gnu)
override CXX := $(TRIPLET)-g++
export CORO_LOOP_TEST_EXEC_WRAPPER := qemu-$(if $(filter armhf,$(TARGET)),arm,aarch64) -L /usr/$(TRIPLET)
TEST_RUNNER ?= $(CORO_LOOP_TEST_EXEC_WRAPPER)
# No OpenSSL for the cross compilers here: the TLS tests (they include tls_fixture.hpp) are left out.
TEST_SKIP := $(shell grep -l '"tls_fixture.hpp"' tests/test_*.cpp)
# -Wno-psabi: GCC notes that ARM passes some std:: types differently since GCC 7; one compiler builds
# everything here. Under ASan -O0: GCC's instrumented build costs 2.5x less, the same errors found.
TARGET_FLAGS := -isystem cross/catch2-include $(if $(filter armhf,$(TARGET)),-Wno-psabi) $(if $(SANITIZE),-O0)
BUILD ?= build/$(if $(SANITIZE),$(SANITIZE)-)$(TARGET)
# Under qemu the tests run about 4x slower: the two heaviest get smaller sizes (the environment's
# win). LeakSanitizer cannot run under qemu-user (it needs ptrace).
TEST_TIMEOUT ?= 600
export CORO_LOOP_STRESS_OPS ?= $(if $(SANITIZE),20000,100000)
ifeq ($(SANITIZE),)
export CORO_LOOP_LOAD_JOBS ?= 100000
endif
# Each spawn forks the emulator (80 ms under ASan): 200 children in a row, not 1,000.
export CORO_LOOP_PROCESS_IN_A_ROW ?= 200
ASAN_OPTIONS ?= detect_leaks=0:abort_on_error=0
DEPS := cross
TEST_EXAMPLES ?=
else ifeq ($(TARGET),windows)
# mingw-w64's -posix g++ (the -win32 one has no std::thread), -static so that wine needs no DLL of the
# toolchain, no -g (it makes each .exe several times larger). Wine's debugger is off so that a crash
# fails instead of exiting 0, and its prefix is made before the tests start, so two never race to
# make it. Tests that start a host nginx (they include nginx_fixture.hpp; meson.build finds them the
# same way) are left out, as are the TLS tests (tls_fixture.hpp: host openssl and python3, and no
# OpenSSL for mingw here). Under wine each socket is also a wineserver descriptor: 10,000 connections
# exceed its RLIMIT_NOFILE.
$(if $(SANITIZE)$(STDLIB),$(error TARGET=windows: neither SANITIZE nor STDLIB applies))
override CXX := x86_64-w64-mingw32-g++-posix
CXXFLAGS ?= -std=c++20 -O1 -Wall -Wextra -Wpedantic -Werror
LDFLAGS ?= -static
LDLIBS ?= -lws2_32
# -Wa,-mbig-obj: a test program of several files has more sections than PE's 32,767.
TARGET_FLAGS := -isystem cross/catch2-include -Wa,-mbig-obj
EXE := .exe
BUILD ?= build/windows
# One test at a time: every wine process goes through the one wineserver.
TEST_JOBS ?= 1
TEST_RUNNER ?= env WINEPREFIX=$(CURDIR)/$(BUILD)/wineprefix WINEDLLOVERRIDES=winedbg.exe=d WINEDEBUG=-all wine
TEST_SETUP = $(BUILD)/wineprefix/.created
TEST_SKIP := $(shell grep -l -e '"nginx_fixture.hpp"' -e '"tls_fixture.hpp"' tests/test_*.cpp)
export CORO_LOOP_STRESS_OPS ?= 100000
export CORO_LOOP_LOAD_CONNECTIONS ?= 2000
# A process start under wine takes 60 ms: 200 children in a row, not 1,000.
export CORO_LOOP_PROCESS_IN_A_ROW ?= 200
DEPS := cross
TEST_EXAMPLES ?=
else ifneq ($(TARGET),)
$(error TARGET=$(TARGET): use kqueue, aarch64, armhf or windows (none: this machine))
endif

# --- configuration -----------------------------------------------------------------------------
ifeq ($(origin CXX),default)
CXX := g++
endif
CXX_NAME := $(notdir $(lastword $(CXX)))
IS_CLANG := $(findstring clang,$(CXX_NAME))
CXXFLAGS ?= -std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror -pthread
CONFIG = $(if $(SANITIZE),$(SANITIZE)-)$(CXX_NAME)$(if $(STDLIB),-$(STDLIB))
BUILD ?= build/$(CONFIG)

# Clang 14's -fsanitize=function miscompiles coroutines ("Cannot represent a difference across
# sections"); GCC's -Wmaybe-uninitialized misfires on instrumented code (<regex> under ASan at -O1).
ifeq ($(SANITIZE),asan)
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all \
                  $(if $(IS_CLANG),-fno-sanitize=function,-Wno-maybe-uninitialized)
else ifeq ($(SANITIZE),tsan)
SANITIZE_FLAGS := -fsanitize=thread $(if $(IS_CLANG),,-Wno-maybe-uninitialized)
else ifneq ($(SANITIZE),)
$(error SANITIZE=$(SANITIZE): use asan (address+undefined) or tsan (thread))
endif
ifneq ($(filter-out libc++,$(STDLIB)),)
$(error STDLIB=$(STDLIB): only libc++ is supported (none: the compiler's default))
endif
$(if $(STDLIB),$(if $(IS_CLANG),,$(error STDLIB=libc++ needs clang++ (CXX=$(CXX)))))
STDLIB_FLAGS := $(if $(STDLIB),-stdlib=libc++)

# OpenSSL 3 for this compiler and these flags: `yes`, or empty (no headers, or older than 3).
# (`hash`: a literal # inside a function call, the same in every make 4.x.)
hash := \#
HAVE_OPENSSL := $(shell printf '$(hash)include <openssl/ssl.h>\n$(hash)if OPENSSL_VERSION_NUMBER < 0x30000000L\n$(hash)error\n$(hash)endif\n' | \
  $(CXX) $(CXXFLAGS) $(STDLIB_FLAGS) $(TARGET_FLAGS) $(EXTRA_CXXFLAGS) -E -x c++ - >/dev/null 2>&1 && echo yes)
TLS_TESTS := $(shell grep -l '"tls_fixture.hpp"' tests/test_*.cpp)

given = $(filter $1,$(CXXFLAGS) $(EXTRA_CXXFLAGS))
COMMON_CXXFLAGS = $(if $(call given,-std=%),,-std=c++20) $(CXXFLAGS) $(if $(call given,-pthread),,-pthread) \
                  $(SANITIZE_FLAGS) $(STDLIB_FLAGS) $(TARGET_FLAGS)
ALL_CXXFLAGS = $(COMMON_CXXFLAGS) $(EXTRA_CXXFLAGS) -I.
TEST_CXXFLAGS ?= -O0 -g1
# g++ collects its garbage less often while compiling the tests and examples: the largest test
# program takes 11% less time and 10% more memory (1.3 GB at -O0 -g1).
GCC_GC_FLAGS := $(if $(IS_CLANG),,--param ggc-min-expand=200 --param ggc-min-heapsize=262144)
ALL_TEST_CXXFLAGS = $(COMMON_CXXFLAGS) $(TEST_CXXFLAGS) $(GCC_GC_FLAGS) $(EXTRA_CXXFLAGS) -I.
DEPFLAGS = -MMD -MP -MT $@ -MF $@.d
# A .flags file's -l, -L and -Wl, words are for the link: they follow the objects (the linker takes
# libraries left to right), and a compile alone never sees them (clang: "linker input unused").
comma := ,
link_only = -l% -L% -Wl$(comma)%
program_words = $(if $(wildcard $1.flags),$(shell sed -e 's/\#.*//' \
  $(if $(HAVE_OPENSSL),-e 's/^[[:space:]]*openssl://',-e '/^[[:space:]]*openssl:/d') $1.flags))
program_flags = $(filter-out $(link_only),$(call program_words,$1))
program_libs = $(filter $(link_only),$(call program_words,$1))

# The sanitizers' settings at run time (the environment's win). Whether the user set ASAN_OPTIONS is
# noted first: a TARGET's own default (no LeakSanitizer under qemu) must not lose to ours, which
# make would otherwise export to the sub-make of test-aarch64.
ASAN_OPTIONS_GIVEN := $(filter-out undefined,$(origin ASAN_OPTIONS))
ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0
UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
TSAN_OPTIONS ?= halt_on_error=1:second_deadlock_stack=1
export ASAN_OPTIONS UBSAN_OPTIONS TSAN_OPTIONS
# TSan maps fixed address ranges: a kernel with more mmap randomisation bits than its runtime knows
# (vm.mmap_rnd_bits > 28, LLVM 14 / GCC 12) makes it die with "unexpected memory mapping", so TSan
# runs go through `setarch -R` (no ASLR for that process) wherever setarch works.
TEST_RUNNER ?= $(if $(filter tsan,$(SANITIZE)),$(shell setarch $$(uname -m) -R true >/dev/null 2>&1 && echo "setarch $$(uname -m) -R"))
TEST_TIMEOUT ?= 300
TEST_JOBS ?= 2
TEST_EXAMPLES ?= yes
# The compile-fail checks ask the compiler and its standard library, not the build: the native g++,
# clang++ (ASan) and clang++ with libc++ (kqueue) runs are enough; TSan, valgrind and the cross
# targets leave them out.
COMPILE_FAIL ?= $(if $(filter tsan,$(SANITIZE))$(filter aarch64 armhf windows,$(TARGET)),,yes)
VALGRIND ?= valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite,indirect,possible \
  --show-leak-kinds=definite,indirect,possible --track-fds=no
VALGRIND_TEST_ARGS ?= ~[.] ~[slow]
VALGRIND_TIMEOUT ?= 1200
DEMO_PROGRAMS ?= sequential_vs_concurrent gather_vs_create_task producer_consumer async_context_managers fetch_all timeout_and_cancellation pitfalls executors debug_mode echo_client subprocess
JOBS ?= 2
PARALLEL = $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(JOBS))
SUBMAKE = $(MAKE) --no-print-directory
quiet = $(if $(filter 1,$(V)),,@printf '  %-4s %s\n' $1 $@;)

TEST_SRCS := $(filter-out $(TEST_SKIP) $(if $(HAVE_OPENSSL),,$(TLS_TESTS)),$(wildcard tests/test_*.cpp)) $(EXTRA_TESTS)
# tests/programs.txt: NAME's files, those of TEST_SRCS, make one program; the rest one program each.
PROGRAMS_FILE := tests/programs.txt
program_members = $(filter $(patsubst %,tests/%.cpp,$(shell sed -n 's/^$1:\([^\#]*\).*/\1/p' $(PROGRAMS_FILE))),$(TEST_SRCS))
PROGRAMS := $(foreach name,$(shell sed -n 's/^\([A-Za-z0-9_]*\):.*/\1/p' $(PROGRAMS_FILE)),$(if $(call program_members,$(name)),$(name)))
PROGRAM_BINS := $(PROGRAMS:%=$(BUILD)/tests/%$(EXE))
GATHERED_SRCS := $(foreach name,$(PROGRAMS),$(call program_members,$(name)))
TWO_TU_OBJS := $(patsubst %.cpp,$(BUILD)/%.o,$(wildcard tests/two_tu/*.cpp))
TEST_BINS := $(PROGRAM_BINS) $(patsubst %.cpp,$(BUILD)/%$(EXE),$(filter-out $(GATHERED_SRCS),$(TEST_SRCS))) \
             $(if $(TWO_TU_OBJS),$(BUILD)/tests/test_two_translation_units$(EXE))
EXAMPLE_BINS := $(patsubst %.cpp,$(BUILD)/%$(EXE),$(wildcard examples/*.cpp))
CATCH_MAIN := $(BUILD)/catch_main.o
# g++ reads the header once for the examples and the compile-fail checks: BUILD/pch/coro_loop.hpp.gch
# comes first on their include path (a program built with other flags, fetch_all with TLS, reads the
# header itself). clang++ takes a precompiled header only when named (-include-pch): none.
PCH := $(if $(IS_CLANG),,$(BUILD)/pch/coro_loop.hpp.gch)
PCH_FLAGS := $(if $(PCH),-I$(BUILD)/pch)
CONFIG_STAMP := $(BUILD)/config.stamp
CONFIG_LINE = $(strip $(CXX) | $(ALL_CXXFLAGS) | tests $(TEST_CXXFLAGS) | $(LDFLAGS) | $(LDLIBS) | openssl $(or $(HAVE_OPENSSL),no))

# --- targets -----------------------------------------------------------------------------------
.PHONY: all tests examples test test-setup sanitize valgrind demo deps cross-deps fuzz soak install uninstall \
        clean help FORCE test-io_uring test-kqueue test-aarch64 test-armhf test-windows
all: tests examples
	@:
tests: $(TEST_BINS)
	@:
examples: $(EXAMPLE_BINS)
	@:

deps:
	@CXX='$(CXX)' STDLIB='$(STDLIB)' scripts/install-deps.sh $(or $(DEPS),test)
cross-deps:
	@scripts/install-deps.sh cross

# -k: one broken file does not hide the others; what did not build counts as failed.
test: deps
	@echo "== make test: $(BUILD) ($(strip $(CXX) $(SANITIZE_FLAGS) $(STDLIB_FLAGS) $(TARGET_FLAGS)))$(if $(TEST_RUNNER), under $(TEST_RUNNER)) =="
	+@$(SUBMAKE) $(PARALLEL) -k tests $(if $(TEST_EXAMPLES),examples) $(if $(COMPILE_FAIL),$(PCH)) test-setup || true
	@set -f; TEST_LABEL='$(BUILD)' TEST_TIMEOUT='$(TEST_TIMEOUT)' TEST_RUNNER='$(TEST_RUNNER)' TEST_JOBS='$(TEST_JOBS)' \
	  TEST_SCRIPTS='$(if $(COMPILE_FAIL),tests/compile_fail/run.sh) $(if $(TEST_EXAMPLES),tests/run_examples.sh tests/consumer/run.sh)' \
	  EXAMPLES_DIR='$(BUILD)/examples' EXAMPLES_HTTPS='$(if $(HAVE_OPENSSL),on,off)' \
	  CXX='$(CXX)' CONSUMER_CXXFLAGS='$(STDLIB_FLAGS)' COMPILE_FAIL_CXXFLAGS='$(PCH_FLAGS) $(ALL_TEST_CXXFLAGS)' \
	  scripts/run-tests.sh $(TEST_BINS) -- $(TEST_ARGS) $(CATCH_ARGS)

test-setup: $(TEST_SETUP)
	@:
test-io_uring test-kqueue test-aarch64 test-armhf test-windows: test-%:
	+@$(if $(ASAN_OPTIONS_GIVEN),,env -u ASAN_OPTIONS) $(SUBMAKE) test TARGET=$*

sanitize:
	+@status=0; for sanitizer in asan tsan; do \
	  $(SUBMAKE) test SANITIZE=$$sanitizer TEST_EXAMPLES= || status=1; done; exit $$status

valgrind:
	$(if $(SANITIZE),$(error make valgrind runs an unsanitized build: drop SANITIZE=$(SANITIZE)))
	+@$(SUBMAKE) test TEST_EXAMPLES= COMPILE_FAIL= TEST_RUNNER='$(VALGRIND)' TEST_TIMEOUT=$(VALGRIND_TIMEOUT) \
	  TEST_ARGS='$(VALGRIND_TEST_ARGS)'

demo:
	+@$(SUBMAKE) $(PARALLEL) $(DEMO_PROGRAMS:%=$(BUILD)/examples/%)
	@status=0; for program in $(DEMO_PROGRAMS); do echo "== $$program =="; $(BUILD)/examples/$$program || \
	  { echo "make demo: $$program exited with status $$?" >&2; status=1; }; done; exit $$status

# libFuzzer in one process, on one core; the whole log is build/fuzz/fuzz.log.
FUZZ_CXX ?= clang++
FUZZ_SECONDS ?= 600
FUZZ_MAX_LEN ?= 4096
FUZZ := build/fuzz/http_response_fuzz
FUZZ_LOG := build/fuzz/fuzz.log
FUZZ_CORPORA := build/fuzz/corpus tests/fuzz/http_response_seeds $(wildcard tests/fuzz/http_response_crashes)
fuzz:
	@FUZZ_CXX='$(FUZZ_CXX)' scripts/install-deps.sh fuzz
	+@$(SUBMAKE) $(FUZZ)
	@mkdir -p build/fuzz/corpus build/fuzz/artifacts
	@echo "== make fuzz: $(FUZZ) for $(FUZZ_SECONDS)s on $(FUZZ_CORPORA) (log: $(FUZZ_LOG)) =="
	@$(FUZZ) -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) -timeout=10 -print_final_stats=1 \
	  -dict=tests/fuzz/http_response.dict -artifact_prefix=build/fuzz/artifacts/ $(FUZZ_ARGS) $(FUZZ_CORPORA) 2>&1 | \
	  tee $(FUZZ_LOG) | grep --line-buffered -E '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)|^Done '; \
	status=$${PIPESTATUS[0]}; if ((status == 0)); then \
	  echo "make fuzz: no crash in $(FUZZ_SECONDS)s: $$(grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_LOG) | tail -n 1)"; exit; fi; \
	tail -n 60 $(FUZZ_LOG); artifact=$$(sed -n 's/.*Test unit written to //p' $(FUZZ_LOG) | tail -n 1); \
	echo "make fuzz: FAILED (libFuzzer exit status $$status)$${artifact:+: reproducer $$artifact}"; \
	echo "  replay: $(FUZZ) $${artifact:-ARTIFACT}  (minimise: add -minimize_crash=1 -max_total_time=60)"; \
	echo "  keep it: copy it into tests/fuzz/http_response_crashes/ (tests/test_http_parser_corpus.cpp runs them)"; exit 1

SOAK_SECONDS ?= 1800
SOAK_REPORT_SECONDS ?= 60
soak: deps
	+@$(SUBMAKE) $(BUILD)/soak
	@echo "== make soak: $(BUILD)/soak for $(SOAK_SECONDS) s =="
	@SOAK_SECONDS='$(SOAK_SECONDS)' SOAK_REPORT_SECONDS='$(SOAK_REPORT_SECONDS)' $(TEST_RUNNER) $(BUILD)/soak

# Installing is CMakeLists.txt's install step, configured in a scratch directory; directories under
# PREFIX are given relative to it, which keeps the CMake package relocatable.
PREFIX ?= /usr/local
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(PREFIX)/share/pkgconfig
CMAKEDIR ?= $(PREFIX)/share/cmake/coro_loop
in_prefix = $(patsubst $(PREFIX)/%,%,$1)
cmake_install = command -v cmake >/dev/null || { echo "make $@: needs cmake (Debian: apt-get install cmake)" >&2; exit 1; }; \
  [[ '$(PREFIX)' == /* ]] || { echo "make $@: PREFIX=$(PREFIX) is not an absolute path" >&2; exit 1; }; \
  tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
  cmake -S . -B "$$tmp/build" -DCMAKE_INSTALL_PREFIX='$(PREFIX)' -DCMAKE_INSTALL_INCLUDEDIR='$(call in_prefix,$(INCLUDEDIR))' \
    -DCORO_LOOP_PKGCONFIGDIR='$(call in_prefix,$(PKGCONFIGDIR))' -DCORO_LOOP_CMAKEDIR='$(call in_prefix,$(CMAKEDIR))' \
    >"$$tmp/log" 2>&1 || { cat "$$tmp/log"; exit 1; }; \
  DESTDIR=$1 cmake --install "$$tmp/build"
install:
	@$(call cmake_install,'$(DESTDIR)')
# What an install into a scratch directory lists goes, then each directory below PREFIX left empty.
# With a DESTDIR, the install made PREFIX's path inside it too: PREFIX, its parents there and DESTDIR
# itself go as well when left empty. Without one, PREFIX stays (it may be /opt or the like).
uninstall:
	@$(call cmake_install,"$$tmp/stage") >/dev/null && cd "$$tmp/stage" && \
	  find . -type f | while read -r file; do rm -fv '$(DESTDIR)'"$${file#.}"; done && \
	  find . -depth -type d | while read -r dir; do dir=$${dir#.}; \
	    [[ $$dir == '$(patsubst %/,%,$(PREFIX))'/* ]] && rmdir '$(DESTDIR)'"$$dir" 2>/dev/null && echo "removed '$(DESTDIR)$$dir/'"; done; \
	  if [[ -n '$(DESTDIR)' ]]; then dir='$(patsubst %/,%,$(PREFIX))'; \
	    while rmdir '$(DESTDIR)'"$$dir" 2>/dev/null; do echo "removed '$(DESTDIR)$$dir/'"; [[ -n $$dir ]] || break; dir=$${dir%/*}; done; fi; true

clean:
	rm -rf build

help:
	@sed -n -e '/^#/!q' -e 's/^# \{0,1\}//p' Makefile

# --- rules: each removes its target first, so a failed build leaves no stale binary to run ------
.SECONDEXPANSION:
# The compiler and flags, rewritten when they change, so that the configuration rebuilds.
ifneq ($(CONFIG_LINE),$(shell cat $(CONFIG_STAMP) 2>/dev/null))
$(CONFIG_STAMP): FORCE
endif
$(CONFIG_STAMP):
	@mkdir -p $(@D); printf '%s\n' '$(subst ','\'',$(CONFIG_LINE))' >$@

# Catch2's own code: its warnings are not ours (-w), its speed does not matter (-O0: 4x faster to
# compile under ASan).
$(CATCH_MAIN): tests/catch_main.cpp $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_TEST_CXXFLAGS) -w -O0 $(DEPFLAGS) -c $< -o $@

# A program of several test files: its files' flags (each word once), and -Wno-subobject-linkage for
# GCC, which otherwise warns that a TEST_CASE's lambda, in a file that is not the main file, has a
# type from the anonymous namespace (no other translation unit sees these files).
unique = $(if $1,$(firstword $1) $(call unique,$(filter-out $(firstword $1),$1)))
members_words = $(call unique,$(foreach file,$(call program_members,$2),$(call $1,$(file:.cpp=))))
# With g++ the program includes the header first, read precompiled, unless one of its files defines
# a CORO_LOOP_ macro before including the header (CORO_LOOP_OPENSSL for TLS).
defines_first = $(shell awk '/^$(hash)include "coro_loop.hpp"/ { nextfile } /^$(hash)define CORO_LOOP_/ { print FILENAME; nextfile }' $1)
header_first = $(if $(PCH),$(if $(call defines_first,$(call program_members,$1)),,coro_loop.hpp))
$(PROGRAMS:%=$(BUILD)/tests/%.cpp): $(PROGRAMS_FILE) $(CONFIG_STAMP)
	@mkdir -p $(@D); printf '#include "%s"\n' $(call header_first,$(basename $(@F))) \
	  $(call program_members,$(basename $(@F))) >$@
$(PROGRAM_BINS): $(BUILD)/tests/%$(EXE): $(BUILD)/tests/%.cpp $(CATCH_MAIN) $(PCH) \
                 $$(wildcard $$(addsuffix .flags,$$(basename $$(call program_members,$$*)))) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(PCH_FLAGS) $(ALL_TEST_CXXFLAGS) -Itests $(if $(IS_CLANG),,-Wno-subobject-linkage) $(call members_words,program_flags,$*) \
	  $(DEPFLAGS) $< $(CATCH_MAIN) -o $@ $(LDFLAGS) $(call members_words,program_libs,$*) $(LDLIBS)

$(BUILD)/tests/%$(EXE): tests/%.cpp $(CATCH_MAIN) $$(wildcard tests/$$*.flags) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_TEST_CXXFLAGS) -Itests $(call program_flags,tests/$*) $(DEPFLAGS) $< $(CATCH_MAIN) \
	  -o $@ $(LDFLAGS) $(call program_libs,tests/$*) $(LDLIBS)

$(BUILD)/tests/two_tu/%.o: tests/two_tu/%.cpp $$(wildcard tests/two_tu/$$*.flags) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_TEST_CXXFLAGS) -Itests $(call program_flags,tests/two_tu/$*) $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/test_two_translation_units$(EXE): $(TWO_TU_OBJS) $(CATCH_MAIN) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,LINK)$(CXX) $(ALL_TEST_CXXFLAGS) $(filter %.o,$^) -o $@ $(LDFLAGS) $(LDLIBS)

# The header beside it: a file that includes it again (a test after the program's first include)
# finds the header there, its include guard already defined.
$(PCH): coro_loop.hpp $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@; cp $< $(@D)/coro_loop.hpp
	$(call quiet,PCH)$(CXX) $(ALL_TEST_CXXFLAGS) $(DEPFLAGS) -x c++-header $(@D)/coro_loop.hpp -o $@

$(BUILD)/examples/%$(EXE): examples/%.cpp $$(wildcard examples/$$*.flags) $(PCH) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(PCH_FLAGS) $(ALL_TEST_CXXFLAGS) $(call program_flags,examples/$*) $(DEPFLAGS) $< -o $@ $(LDFLAGS) \
	  $(call program_libs,examples/$*) $(LDLIBS)

$(BUILD)/soak: tests/soak/soak.cpp $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_CXXFLAGS) -Itests $(DEPFLAGS) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(FUZZ): tests/fuzz/http_response_fuzz.cpp
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(FUZZ_CXX) -std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror -fno-omit-frame-pointer -I. \
	  -fsanitize=fuzzer,address,undefined -fno-sanitize=function -fno-sanitize-recover=all $(DEPFLAGS) $< -o $@

# Wine's prefix, made once and waited for (wineserver -w); without Gecko and Mono (mshtml, mscoree
# off), which wineboot would offer to download.
%/wineprefix/.created:
	@rm -rf $(@D); mkdir -p $(@D); echo "  WINE $(@D)"
	@export WINEPREFIX=$(CURDIR)/$(@D) WINEDEBUG=-all; WINEDLLOVERRIDES='mscoree,mshtml=;winedbg.exe=d' \
	  timeout 300 wineboot --init >$(@D).log 2>&1 && timeout 60 wineserver -w && touch $@ || \
	  { cat $(@D).log; echo "wineboot failed to make $(@D)" >&2; exit 1; }

-include $(wildcard $(CATCH_MAIN).d $(PCH:%=%.d) $(addsuffix .d,$(TEST_BINS) $(TWO_TU_OBJS) $(EXAMPLE_BINS) $(FUZZ) $(BUILD)/soak))
-include bench/bench.mk
