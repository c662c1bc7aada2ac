# bench/bench.mk - `make bench`, included by the top Makefile.
#
#   make bench          install the peers (scripts/install-bench-deps.sh), build every
#                       benchmark program at -O2 into build/bench/, run bench/run.py: each
#                       workload's implementations interleaved BENCH_REPEATS times, one table
#                       on stdout and in build/bench/results.md
#   make bench-build    only build the programs (no install, no run)
#   make bench-deps     only install what the benchmarks need
#
# Variables
#   BENCH_ONLY=W1,W2    run only these workloads (names as in bench/manifest.txt) [all]
#   BENCH_REPEATS       runs of each implementation [5]
#   BENCH_TIMEOUT       seconds before one run is killed and counted as failed [120]
#   BENCH_CXX, BENCH_CC compilers [g++, gcc]; BENCH_CXXFLAGS, BENCH_CFLAGS their flags
#   BENCH_ARGS          more bench/run.py options (bench/run.py --help)
#
# Exit status: a peer failing its own check (or timing out) is reported in the table and
# does not fail `make bench`; a coro_loop run that fails does (bench/run.py's docstring).
#
# What is built from what (pattern rules: a new bench/*.cpp or bench/*.c just works)
#   bench/NAME.cpp -> build/bench/NAME   C++20, -O2 -DNDEBUG, -I. (coro_loop.hpp)
#   bench/NAME.c   -> build/bench/NAME   C17 (+ _GNU_SOURCE: POSIX and Linux headers), -O2 -DNDEBUG, -I.
#   bench/NAME.flags (optional) holds flags for that program's compile and link command, `#`
#   starts a comment: e.g. `-DASIO_STANDALONE` or `-luv` (-l, -L and -Wl, words follow the
#   source, as the linker wants them; the Makefile's program_flags and program_libs).
#   bench/*.py and bench/*.sh are run as they are (see bench/manifest.txt).

BENCH_BUILD := build/bench
BENCH_CXX ?= g++
BENCH_CC ?= gcc
# A release build, as each library's users ship theirs: -DNDEBUG turns off the assert()s
# in Boost.Beast and Asio (BOOST_ASSERT, ASIO_ASSERT), which would otherwise run on every
# parse and buffer operation; coro_loop.hpp has none.
BENCH_CXXFLAGS ?= -std=c++20 -O2 -DNDEBUG -Wall -Wextra -Wpedantic -Werror -pthread
BENCH_CFLAGS ?= -std=c17 -D_GNU_SOURCE -O2 -DNDEBUG -Wall -Wextra -Wpedantic -Werror -pthread
BENCH_REPEATS ?= 5
BENCH_ONLY ?=
BENCH_TIMEOUT ?= 120
BENCH_ARGS ?=

BENCH_CXX_SRCS := $(wildcard bench/*.cpp)
BENCH_C_SRCS := $(wildcard bench/*.c)
BENCH_BINS := $(patsubst bench/%.cpp,$(BENCH_BUILD)/%,$(BENCH_CXX_SRCS)) \
              $(patsubst bench/%.c,$(BENCH_BUILD)/%,$(BENCH_C_SRCS))

# A change of compiler or flags rebuilds every benchmark program.
BENCH_STAMP := $(BENCH_BUILD)/config.stamp
BENCH_CONFIG_LINE = $(BENCH_CXX) | $(BENCH_CXXFLAGS) | $(BENCH_CC) | $(BENCH_CFLAGS)
ifneq ($(filter bench bench-build $(BENCH_BINS),$(MAKECMDGOALS)),)
ifneq ($(strip $(BENCH_CONFIG_LINE)),$(strip $(shell cat $(BENCH_STAMP) 2>/dev/null)))
$(shell mkdir -p $(BENCH_BUILD) && printf '%s\n' '$(subst ','\'',$(strip $(BENCH_CONFIG_LINE)))' > $(BENCH_STAMP))
endif
endif

.PHONY: bench bench-build bench-deps
bench-deps:
	@scripts/install-bench-deps.sh

# -k: a program that does not build is reported as failed by the runner, the rest run.
bench: bench-deps
	+@$(SUBMAKE) $(PARALLEL) -k bench-build || true
	@/usr/bin/python3 bench/run.py --root . --bin $(BENCH_BUILD) --manifest bench/manifest.txt \
	  --repeats '$(BENCH_REPEATS)' --timeout '$(BENCH_TIMEOUT)' $(if $(BENCH_ONLY),--only '$(BENCH_ONLY)') \
	  --results $(BENCH_BUILD)/results.md $(BENCH_ARGS)

bench-build: $(BENCH_BINS)
	@:

$(BENCH_BUILD)/%: bench/%.cpp $$(wildcard bench/$$*.flags) bench/bench.mk $(BENCH_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(BENCH_CXX) $(BENCH_CXXFLAGS) $(call program_flags,bench/$*) -I. $(DEPFLAGS) $< -o $@ \
	  $(call program_libs,bench/$*)

$(BENCH_BUILD)/%: bench/%.c $$(wildcard bench/$$*.flags) bench/bench.mk $(BENCH_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CC)$(BENCH_CC) $(BENCH_CFLAGS) $(call program_flags,bench/$*) -I. $(DEPFLAGS) $< -o $@ \
	  $(call program_libs,bench/$*)

$(BENCH_STAMP): ;

-include $(wildcard $(addsuffix .d,$(BENCH_BINS)))
