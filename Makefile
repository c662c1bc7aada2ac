# Makefile - build, test and demo coro_loop (GNU make 4.x). `make help` prints this.
#
# Targets
#   make, make all      build every test and example of the configuration
#   make test           install Catch2 if missing, build everything, run each test
#                       binary in turn, then tests/run_examples.sh (every example runs,
#                       its output checked) and tests/consumer/run.sh (a user's project
#                       takes coro_loop each way: copied header, meson subproject,
#                       make install + pkg-config and find_package, add_subdirectory)
#                       (PASS/FAIL each, then "tests: N passed, N failed")
#   make sanitize       make test twice for $(CXX): ASan+UBSan (SANITIZE=asan), TSan (SANITIZE=tsan)
#   make valgrind       the default configuration's tests under valgrind memcheck
#   make demo           build and run $(DEMO_PROGRAMS), each under a "== name ==" heading
#   make tests, make examples   build only those
#   make deps           install what the tests need (scripts/install-deps.sh test)
#   make fuzz           build the libFuzzer target tests/fuzz/http_response_fuzz.cpp (clang++,
#                       ASan+UBSan) as build/fuzz/http_response_fuzz and run it on one core for
#                       FUZZ_SECONDS from tests/fuzz/http_response_seeds/ (+ _crashes/) and the
#                       scratch corpus build/fuzz/corpus/; prints runs, cov and ft; fails on a
#                       crash, leaving it in build/fuzz/artifacts/. Not part of `make test`.
#   make soak           build tests/soak/soak.cpp as BUILD/soak and run it: SOAK_SECONDS [1800] of mixed
#                       traffic (HTTP to a private nginx and to a fault server, echo, timers, to_thread,
#                       cancellations), RSS and fd counts every SOAK_REPORT_SECONDS [60]; fails when the
#                       RSS grows more than 5% (+ SOAK_RSS_SLACK_KIB for bodies in flight) after the
#                       first report, fds leak or an operation fails unexpectedly. Not part of `make test`.
#   make install        CMakeLists.txt's install: coro_loop.hpp into INCLUDEDIR, coro_loop.pc into
#                       PKGCONFIGDIR, the package of find_package(coro_loop) into CMAKEDIR
#   make uninstall      remove them (same PREFIX and DESTDIR) and the directories left empty
#   make clean          remove build/ (every configuration)
#   make test-kqueue    the tests on the kqueue backend, against the epoll-based kqueue
#                       emulation in tests/kqueue (mk/kqueue.mk has the details)
#   make test-aarch64, make test-armhf   the tests cross-compiled for 64-bit and 32-bit ARM
#                       Linux and run under qemu-user; SANITIZE=asan for ASan+UBSan
#                       (mk/cross.mk has the details)
#   make test-windows   the tests cross-compiled for Windows with mingw-w64 and run under
#                       wine (mk/windows.mk has the details)
#
# Variables (on the command line, e.g. `make test CXX=clang++ STDLIB=libc++`)
#   CXX=g++|clang++     compiler [g++]
#   STDLIB=libc++       clang only: libc++ instead of libstdc++ (needs libc++-14-dev)
#   SANITIZE=asan|tsan  one sanitizer configuration; `make sanitize` runs both
#   CXXFLAGS            [-std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror -pthread];
#                       -std=c++20 and -pthread are added if CXXFLAGS has none
#   EXTRA_CXXFLAGS      appended after CXXFLAGS: add a flag without retyping the defaults
#   LDFLAGS, LDLIBS     extra link flags and libraries
#   BUILD               output directory [build/[SANITIZE-]CXX[-STDLIB]], e.g. build/g++,
#                       build/clang++-libc++, build/asan-g++, build/tsan-clang++
#   CATCH_ARGS          Catch2 arguments for every test binary run [none],
#                       e.g. CATCH_ARGS='"[queue]" --durations yes'
#   TEST_TIMEOUT        seconds per test binary [300]; VALGRIND_TIMEOUT [1200]
#   VALGRIND_TEST_ARGS  Catch2 test spec under valgrind [~[.] ~[slow]]
#   DEMO_PROGRAMS       examples run by `make demo` [sequential_vs_concurrent]
#   JOBS                parallel compiles when make itself was not given -j [2]
#   FUZZ_SECONDS        how long `make fuzz` runs [600]; FUZZ_MAX_LEN its largest input [4096]
#   FUZZ_CXX            `make fuzz`'s compiler [clang++] (libFuzzer needs clang; deps:
#                       scripts/install-deps.sh fuzz); FUZZ_ARGS more libFuzzer options
#   V=1                 print whole compiler command lines
#   PREFIX              make install's root [/usr/local]; DESTDIR a staging directory put
#                       before every path, not written into the files [none]; INCLUDEDIR,
#                       PKGCONFIGDIR, CMAKEDIR [PREFIX/include, PREFIX/share/pkgconfig,
#                       PREFIX/share/cmake/coro_loop]
# A change of compiler or flags rebuilds that configuration (BUILD/config.stamp).
#
# What is built from what
#   tests/test_X.cpp    -> BUILD/tests/test_X, linked with BUILD/catch_main.o (compiled
#                          once per configuration from tests/catch_main.cpp)
#   tests/two_tu/*.cpp  -> all linked together into BUILD/tests/test_two_translation_units
#                          (the header in several translation units: a missing `inline`)
#   examples/X.cpp      -> BUILD/examples/X
#   tests/fuzz/http_response_fuzz.cpp -> build/fuzz/http_response_fuzz (make fuzz only; its
#                          driver tests/fuzz/http_response_driver.hpp also serves
#                          tests/test_http_parser_corpus.cpp)
#   Tests compile with -I. -Itests: `#include "coro_loop.hpp"` and `#include "catch.hpp"`.
#   Per-program flags: a file beside the source with the same name and `.flags`
#   (tests/test_X.flags, tests/two_tu/a.flags, examples/X.flags) holds flags appended
#   to that program's compile and link commands; whitespace separated, `#` starts a
#   comment. Example: tests/test_deep_chain.flags containing `-O0`.
#   Header dependencies are tracked (-MMD -MP): editing coro_loop.hpp rebuilds.

MAKEFLAGS += --no-builtin-rules
.SUFFIXES:
.DELETE_ON_ERROR:
SHELL := /bin/bash

# --- configuration -----------------------------------------------------------
ifeq ($(origin CXX),default)
CXX := g++
endif
CXX_NAME := $(notdir $(lastword $(CXX)))

CXXFLAGS ?= -std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror -pthread
EXTRA_CXXFLAGS ?=
LDFLAGS ?=
LDLIBS ?=
SANITIZE ?=
STDLIB ?=

ifeq ($(SANITIZE),)
SANITIZE_FLAGS :=
else ifeq ($(SANITIZE),asan)
SANITIZE_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all
else ifeq ($(SANITIZE),tsan)
SANITIZE_FLAGS := -fsanitize=thread
else
$(error SANITIZE=$(SANITIZE): use asan (address+undefined) or tsan (thread))
endif
# GCC's -Wmaybe-uninitialized gives false positives on instrumented code (seen in
# libstdc++'s <regex> under ASan at -O1); the unsanitized builds keep that warning.
ifneq ($(SANITIZE),)
ifeq ($(findstring clang,$(CXX_NAME)),)
SANITIZE_FLAGS += -Wno-maybe-uninitialized
endif
endif
# Clang 14's -fsanitize=function miscompiles coroutines ("Cannot represent a
# difference across sections"); the rest of UBSan stays on.
ifeq ($(SANITIZE),asan)
ifneq ($(findstring clang,$(CXX_NAME)),)
SANITIZE_FLAGS += -fno-sanitize=function
endif
endif

ifeq ($(STDLIB),)
STDLIB_FLAGS :=
else ifeq ($(STDLIB),libc++)
ifeq ($(findstring clang,$(CXX_NAME)),)
$(error STDLIB=libc++ needs clang++ (CXX=$(CXX)))
endif
STDLIB_FLAGS := -stdlib=libc++
else
$(error STDLIB=$(STDLIB): only libc++ is supported (empty means the compiler's default))
endif

BUILD ?= build/$(if $(SANITIZE),$(SANITIZE)-)$(CXX_NAME)$(if $(STDLIB),-$(STDLIB))

ALL_CXXFLAGS = $(if $(filter -std=%,$(CXXFLAGS) $(EXTRA_CXXFLAGS)),,-std=c++20) \
               $(CXXFLAGS) $(if $(filter -pthread,$(CXXFLAGS) $(EXTRA_CXXFLAGS)),,-pthread) \
               $(SANITIZE_FLAGS) $(STDLIB_FLAGS) $(EXTRA_CXXFLAGS) -I.
TEST_INCLUDES := -Itests
DEPFLAGS = -MMD -MP -MT $@ -MF $@.d

# Run-time settings of the sanitizers (the environment's own values win).
ASAN_OPTIONS ?= detect_leaks=1:abort_on_error=0
UBSAN_OPTIONS ?= print_stacktrace=1:halt_on_error=1
TSAN_OPTIONS ?= halt_on_error=1:second_deadlock_stack=1
# TSan maps fixed address ranges; kernels with more mmap randomisation bits than the
# runtime knows (vm.mmap_rnd_bits > 28 and LLVM 14 / GCC 12) make it die with
# "unexpected memory mapping". TSan runs therefore go through `setarch -R` (ASLR off
# for that process only) wherever setarch works; TSAN_SETARCH= turns that off.
ifeq ($(SANITIZE),tsan)
TSAN_SETARCH ?= $(shell setarch $$(uname -m) -R true >/dev/null 2>&1 && echo "setarch $$(uname -m) -R")
TEST_RUNNER := $(TSAN_SETARCH)
else
TEST_RUNNER :=
endif

TEST_TIMEOUT ?= 300
CATCH_ARGS ?=
VALGRIND ?= valgrind
VALGRIND_FLAGS ?= --error-exitcode=1 --leak-check=full \
  --errors-for-leak-kinds=definite,indirect,possible \
  --show-leak-kinds=definite,indirect,possible --track-fds=no
VALGRIND_TEST_ARGS ?= ~[.] ~[slow]
VALGRIND_TIMEOUT ?= 1200
DEMO_PROGRAMS ?= sequential_vs_concurrent gather_vs_create_task producer_consumer async_context_managers fetch_all timeout_and_cancellation pitfalls executors debug_mode echo_client
JOBS ?= 2
# `make test` builds the examples too (a broken example fails the run);
# the sanitizer configurations skip them.
TEST_EXAMPLES ?= yes

# Parallel compiles unless the caller's make already shares its job slots.
PARALLEL = $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$(JOBS))
SUBMAKE = $(MAKE) --no-print-directory

ifeq ($(V),1)
quiet =
else
quiet = @printf '  %-4s %s\n' $1 $@;
endif

# --- what to build -----------------------------------------------------------
# EXTRA_TEST_SRCS: more Catch2 test files under tests/ (mk/kqueue.mk adds the kqueue emulation's own test).
TEST_SRCS := $(wildcard tests/test_*.cpp) $(EXTRA_TEST_SRCS)
TWO_TU_SRCS := $(wildcard tests/two_tu/*.cpp)
EXAMPLE_SRCS := $(wildcard examples/*.cpp)

CATCH_MAIN_OBJ := $(BUILD)/catch_main.o
TWO_TU_OBJS := $(patsubst tests/two_tu/%.cpp,$(BUILD)/tests/two_tu/%.o,$(TWO_TU_SRCS))
TEST_BINS := $(patsubst tests/%.cpp,$(BUILD)/tests/%,$(TEST_SRCS)) \
             $(if $(TWO_TU_SRCS),$(BUILD)/tests/test_two_translation_units)
EXAMPLE_BINS := $(patsubst examples/%.cpp,$(BUILD)/examples/%,$(EXAMPLE_SRCS))
DEMO_BINS := $(addprefix $(BUILD)/examples/,$(DEMO_PROGRAMS))

# Flags from SOURCE_WITHOUT_.cpp.flags, if that file exists.
program_flags = $(if $(wildcard $1.flags),$(shell sed -e 's/\#.*//' $1.flags))

# The configuration's compiler and flags, recorded so that changing them rebuilds.
CONFIG_STAMP := $(BUILD)/config.stamp
CONFIG_LINE = $(CXX) | $(ALL_CXXFLAGS) | $(LDFLAGS) | $(LDLIBS)
ifneq ($(filter-out clean help sanitize fuzz install uninstall test-aarch64 test-armhf cross-deps test-windows windows-tests build/mingw/%,$(or $(MAKECMDGOALS),all)),)
ifneq ($(strip $(CONFIG_LINE)),$(strip $(shell cat $(CONFIG_STAMP) 2>/dev/null)))
$(shell mkdir -p $(BUILD) && printf '%s\n' '$(subst ','\'',$(strip $(CONFIG_LINE)))' > $(CONFIG_STAMP))
endif
endif

# --- targets -----------------------------------------------------------------
.PHONY: all tests examples demo-programs test sanitize valgrind demo deps fuzz soak install uninstall clean help
all: tests examples
	@:
tests: $(TEST_BINS)
	@:
examples: $(EXAMPLE_BINS)
	@:
demo-programs: $(DEMO_BINS)
	@:

deps:
	@CXX='$(CXX)' STDLIB='$(STDLIB)' scripts/install-deps.sh test

# Build with -k so one broken file does not hide the others: whatever did not build
# is reported as FAIL by scripts/run-tests.sh.
test: deps
	@echo "== make test: $(BUILD) ($(strip $(CXX) $(SANITIZE_FLAGS) $(STDLIB_FLAGS))) =="
	+@$(SUBMAKE) $(PARALLEL) -k tests $(if $(TEST_EXAMPLES),examples) || true
	@set -f; TEST_LABEL='$(BUILD)' TEST_TIMEOUT='$(TEST_TIMEOUT)' TEST_RUNNER='$(TEST_RUNNER)' \
	  TEST_BUILT='$(if $(TEST_EXAMPLES),$(EXAMPLE_BINS))' \
	  TEST_SCRIPTS='$(if $(TEST_EXAMPLES),tests/run_examples.sh tests/consumer/run.sh)' \
	  EXAMPLES_DIR='$(BUILD)/examples' CXX='$(CXX)' CONSUMER_CXXFLAGS='$(STDLIB_FLAGS)' \
	  ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' TSAN_OPTIONS='$(TSAN_OPTIONS)' \
	  scripts/run-tests.sh $(TEST_BINS) -- $(CATCH_ARGS)

sanitize:
	+@status=0; \
	for sanitizer in asan tsan; do \
	  $(SUBMAKE) test SANITIZE=$$sanitizer TEST_EXAMPLES= || status=1; \
	done; \
	exit $$status

valgrind: deps
ifneq ($(SANITIZE),)
	$(error make valgrind runs an unsanitized build: drop SANITIZE=$(SANITIZE))
endif
	@echo "== make valgrind: $(BUILD), Catch2 args: $(VALGRIND_TEST_ARGS) $(CATCH_ARGS) =="
	+@$(SUBMAKE) $(PARALLEL) -k tests || true
	@set -f; TEST_LABEL='valgrind $(BUILD)' TEST_TIMEOUT='$(VALGRIND_TIMEOUT)' \
	  TEST_RUNNER='$(VALGRIND) $(VALGRIND_FLAGS)' \
	  scripts/run-tests.sh $(TEST_BINS) -- $(VALGRIND_TEST_ARGS) $(CATCH_ARGS)

demo:
	@for program in $(DEMO_PROGRAMS); do \
	  [[ -f examples/$$program.cpp ]] || \
	    { echo "make demo: examples/$$program.cpp does not exist (DEMO_PROGRAMS=$(DEMO_PROGRAMS))" >&2; exit 1; }; \
	done
	+@$(SUBMAKE) $(PARALLEL) demo-programs
	@status=0; \
	for program in $(DEMO_PROGRAMS); do \
	  echo "== $$program =="; \
	  $(BUILD)/examples/$$program || { echo "make demo: $$program exited with status $$?" >&2; status=1; }; \
	done; \
	exit $$status

# libFuzzer: one process, one core (no -jobs/-workers); the log is build/fuzz/fuzz.log.
FUZZ_CXX ?= clang++
FUZZ_SECONDS ?= 600
FUZZ_MAX_LEN ?= 4096
FUZZ_ARGS ?=
FUZZ_BUILD := build/fuzz
FUZZ_TARGET := $(FUZZ_BUILD)/http_response_fuzz
FUZZ_CXXFLAGS := -std=c++20 -O1 -g -Wall -Wextra -Wpedantic -Werror -fno-omit-frame-pointer \
  -fsanitize=fuzzer,address,undefined -fno-sanitize=function -fno-sanitize-recover=all -I.
FUZZ_CORPORA := $(FUZZ_BUILD)/corpus tests/fuzz/http_response_seeds $(wildcard tests/fuzz/http_response_crashes)
fuzz:
	@FUZZ_CXX='$(FUZZ_CXX)' scripts/install-deps.sh fuzz
	+@$(SUBMAKE) $(FUZZ_TARGET)
	@mkdir -p $(FUZZ_BUILD)/corpus $(FUZZ_BUILD)/artifacts
	@echo "== make fuzz: $(FUZZ_TARGET) for $(FUZZ_SECONDS)s on $(FUZZ_CORPORA) (log: $(FUZZ_BUILD)/fuzz.log) =="
	@ASAN_OPTIONS='$(ASAN_OPTIONS)' UBSAN_OPTIONS='$(UBSAN_OPTIONS)' \
	  $(FUZZ_TARGET) -max_total_time=$(FUZZ_SECONDS) -max_len=$(FUZZ_MAX_LEN) -timeout=10 \
	  -dict=tests/fuzz/http_response.dict -print_final_stats=1 \
	  -artifact_prefix=$(FUZZ_BUILD)/artifacts/ $(FUZZ_ARGS) $(FUZZ_CORPORA) 2>&1 | \
	  tee $(FUZZ_BUILD)/fuzz.log | grep --line-buffered -E '^#[0-9]+[[:space:]]+(INITED|pulse|DONE)|^Done '; \
	status=$${PIPESTATUS[0]}; \
	if ((status == 0)); then \
	  echo "make fuzz: no crash in $(FUZZ_SECONDS)s: $$(grep -E '^#[0-9]+[[:space:]]+DONE' $(FUZZ_BUILD)/fuzz.log | tail -n 1)"; \
	else \
	  tail -n 60 $(FUZZ_BUILD)/fuzz.log; \
	  artifact=$$(sed -n 's/.*Test unit written to //p' $(FUZZ_BUILD)/fuzz.log | tail -n 1); \
	  echo "make fuzz: FAILED (libFuzzer exit status $$status)$${artifact:+: reproducer $$artifact}"; \
	  echo "  replay:   $(FUZZ_TARGET) $${artifact:-ARTIFACT}"; \
	  echo "  minimise: $(FUZZ_TARGET) -minimize_crash=1 -max_total_time=60 $${artifact:-ARTIFACT}"; \
	  echo "  keep it:  copy it into tests/fuzz/http_response_crashes/ (run by tests/test_http_parser_corpus.cpp)"; \
	  exit 1; \
	fi

# A long run of mixed traffic, by hand (tests/soak/soak.cpp says what it does).
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
uninstall:
	@$(call cmake_install,"$$tmp/stage") >/dev/null && cd "$$tmp/stage" && \
	  find . -type f | while read -r file; do rm -fv '$(DESTDIR)'"$${file#.}"; done && \
	  find . -depth -type d | while read -r dir; do dir=$${dir#.}; \
	    [[ $$dir == '$(PREFIX)'/* ]] && rmdir '$(DESTDIR)'"$$dir" 2>/dev/null && echo "removed '$(DESTDIR)$$dir/'"; done; true

clean:
	rm -rf build

help:
	@sed -n -e '/^#/!q' -e 's/^# \{0,1\}//p' Makefile

# --- rules -------------------------------------------------------------------
# Each recipe removes its target first: after a failed compile no stale binary is
# left to be run as if it had built.
.SECONDEXPANSION:

# Catch2's own code: its warnings are not ours to fix (-w), and its speed does not
# matter (-O0: about 4x less compile time than -O1 under ASan).
$(CATCH_MAIN_OBJ): tests/catch_main.cpp $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_CXXFLAGS) -w -O0 $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/%: tests/%.cpp $(CATCH_MAIN_OBJ) $$(wildcard tests/$$*.flags) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_CXXFLAGS) $(TEST_INCLUDES) $(call program_flags,tests/$*) \
	  $(DEPFLAGS) $< $(CATCH_MAIN_OBJ) -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/tests/two_tu/%.o: tests/two_tu/%.cpp $$(wildcard tests/two_tu/$$*.flags) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_CXXFLAGS) $(TEST_INCLUDES) $(call program_flags,tests/two_tu/$*) \
	  $(DEPFLAGS) -c $< -o $@

$(BUILD)/tests/test_two_translation_units: $(TWO_TU_OBJS) $(CATCH_MAIN_OBJ)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,LINK)$(CXX) $(ALL_CXXFLAGS) $^ -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/examples/%: examples/%.cpp $$(wildcard examples/$$*.flags) $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_CXXFLAGS) $(call program_flags,examples/$*) \
	  $(DEPFLAGS) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(BUILD)/soak: tests/soak/soak.cpp $(CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(CXX) $(ALL_CXXFLAGS) $(TEST_INCLUDES) $(DEPFLAGS) $< -o $@ $(LDFLAGS) $(LDLIBS)

$(FUZZ_TARGET): tests/fuzz/http_response_fuzz.cpp
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(FUZZ_CXX) $(FUZZ_CXXFLAGS) -MMD -MP -MT $@ -MF $@.d $< -o $@

$(CONFIG_STAMP): ;

-include $(wildcard $(CATCH_MAIN_OBJ).d $(addsuffix .d,$(TEST_BINS) $(TWO_TU_OBJS) $(EXAMPLE_BINS)) $(FUZZ_TARGET).d $(BUILD)/soak.d)

# Targets kept in their own files: `make bench` (bench/bench.mk), the cross test runs
# `make test-aarch64|test-armhf` (mk/cross.mk), `make test-kqueue` (mk/kqueue.mk) and
# `make test-windows` (mk/windows.mk).
-include bench/bench.mk mk/cross.mk mk/kqueue.mk mk/windows.mk
