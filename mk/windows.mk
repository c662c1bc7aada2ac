# mk/windows.mk - the test suite cross-compiled for Windows with mingw-w64 and run under
# wine (included by the top Makefile; issue 8, points 2 and 5).
#
#   make test-windows   tests/test_*.cpp (but WINDOWS_SKIPPED_TESTS) and the two_tu program
#                       built with x86_64-w64-mingw32-g++-posix into build/mingw/tests/*.exe,
#                       each run as `wine BINARY` with a private wine prefix
#                       (build/mingw/wineprefix, made once by wineboot before any test runs,
#                       so two wine starts never race to create it)
#   make windows-tests  only build them
#   make cross-deps     install the cross compilers, wine and Catch2
#                       (scripts/install-deps.sh cross); test-windows runs it first
#
# The -posix variant of the compiler: the -win32 one has no std::thread. Same warnings as
# native (-Wall -Wextra -Wpedantic -Werror); -O1 without -g (debug information makes
# each static .exe several times larger and its link slower). Linked -static: libstdc++,
# libgcc and winpthread go into each .exe, so wine needs no DLL from the toolchain;
# Winsock through -lws2_32 -lmswsock. Catch2 is Debian's header-only v2 from
# /usr/include/catch2, reached through -isystem cross/catch2-include as for mk/cross.mk
# (never the host's /usr/include on the cross compiler's path); its main is compiled once for this
# toolchain (build/mingw/catch_main.o). The Makefile's rules cannot be reused: the mingw
# linker names its output X.exe when asked for X, so these rules name their targets .exe.
#
# Under wine a crashing program would start the debugger and exit 0:
# WINEDLLOVERRIDES="winedbg.exe=d" disables it, so a crash is a failure. Wine's timers
# tick about every 15.6 ms as Windows' do; the tests give Windows timing assertions slack.
# Left out (WINDOWS_SKIPPED_TESTS): test_http_nginx (needs a host nginx next to the test),
# and the examples and consumer-project scripts (POSIX shell around native binaries).
#   WINDOWS_TEST_TIMEOUT [300]  seconds per test binary (the slowest, test_net, takes 30-100 s)
#   WINDOWS_STRESS_OPS [100000] test_stress's operations (CORO_LOOP_STRESS_OPS; a value
#                               in the environment wins), as under qemu: wine is slower
#   WINDOWS_LOAD_CONNECTIONS [2000]  test_load's concurrent connections
#                               (CORO_LOOP_LOAD_CONNECTIONS): under wine every socket is
#                               also a Unix descriptor of wineserver, so 10,000
#                               connections (20,000 sockets) exceed its RLIMIT_NOFILE
#                               (20,000 here) and accept fails with EMFILE
#   V=1, CATCH_ARGS             as for make test

WINDOWS_CXX := x86_64-w64-mingw32-g++-posix
WINDOWS_BUILD := build/mingw
WINDOWS_CXXFLAGS := -std=c++20 -O1 -Wall -Wextra -Wpedantic -Werror -I. -isystem cross/catch2-include
WINDOWS_LDFLAGS := -static
WINDOWS_LDLIBS := -lws2_32 -lmswsock
WINDOWS_SKIPPED_TESTS := test_http_nginx
WINDOWS_TEST_TIMEOUT ?= 300
WINDOWS_STRESS_OPS ?= 100000
WINDOWS_LOAD_CONNECTIONS ?= 2000
WINDOWS_WINEPREFIX := $(WINDOWS_BUILD)/wineprefix
WINDOWS_WINE_ENV := WINEPREFIX=$(CURDIR)/$(WINDOWS_WINEPREFIX) WINEDLLOVERRIDES=winedbg.exe=d WINEDEBUG=-all

WINDOWS_TEST_SRCS := $(filter-out $(WINDOWS_SKIPPED_TESTS:%=tests/%.cpp),$(TEST_SRCS))
WINDOWS_CATCH_MAIN_OBJ := $(WINDOWS_BUILD)/catch_main.o
WINDOWS_TWO_TU_OBJS := $(patsubst tests/two_tu/%.cpp,$(WINDOWS_BUILD)/tests/two_tu/%.o,$(TWO_TU_SRCS))
WINDOWS_TEST_BINS := $(patsubst tests/%.cpp,$(WINDOWS_BUILD)/tests/%.exe,$(WINDOWS_TEST_SRCS)) \
                     $(if $(TWO_TU_SRCS),$(WINDOWS_BUILD)/tests/test_two_translation_units.exe)

# The compiler and flags, recorded so that changing them rebuilds (as BUILD/config.stamp).
WINDOWS_CONFIG_STAMP := $(WINDOWS_BUILD)/config.stamp
WINDOWS_CONFIG_LINE = $(WINDOWS_CXX) | $(WINDOWS_CXXFLAGS) $(EXTRA_CXXFLAGS) | $(WINDOWS_LDFLAGS) | $(WINDOWS_LDLIBS)
ifneq ($(filter test-windows windows-tests $(WINDOWS_BUILD)/%,$(MAKECMDGOALS)),)
ifneq ($(strip $(WINDOWS_CONFIG_LINE)),$(strip $(shell cat $(WINDOWS_CONFIG_STAMP) 2>/dev/null)))
$(shell mkdir -p $(WINDOWS_BUILD) && printf '%s\n' '$(subst ','\'',$(strip $(WINDOWS_CONFIG_LINE)))' > $(WINDOWS_CONFIG_STAMP))
endif
endif

.PHONY: test-windows windows-tests

windows-tests: $(WINDOWS_TEST_BINS)
	@:

test-windows: cross-deps
	@echo "== make test-windows: $(WINDOWS_BUILD) ($(WINDOWS_CXX) $(WINDOWS_LDFLAGS)) under $$(wine --version) =="
	+@$(SUBMAKE) $(PARALLEL) -k windows-tests $(WINDOWS_WINEPREFIX)/.created || true
	@set -f; TEST_LABEL='$(WINDOWS_BUILD)' TEST_TIMEOUT='$(WINDOWS_TEST_TIMEOUT)' \
	  TEST_RUNNER='env $(WINDOWS_WINE_ENV) wine' \
	  $(if $(WINDOWS_STRESS_OPS),CORO_LOOP_STRESS_OPS="$${CORO_LOOP_STRESS_OPS:-$(WINDOWS_STRESS_OPS)}") \
	  $(if $(WINDOWS_LOAD_CONNECTIONS),CORO_LOOP_LOAD_CONNECTIONS="$${CORO_LOOP_LOAD_CONNECTIONS:-$(WINDOWS_LOAD_CONNECTIONS)}") \
	  scripts/run-tests.sh $(WINDOWS_TEST_BINS) -- $(CATCH_ARGS)

# The wine prefix, made once and waited for (wineserver -w) before the first test starts.
# Gecko and Mono are not wanted (mshtml, mscoree off): wineboot would offer to download them.
$(WINDOWS_WINEPREFIX)/.created:
	@rm -rf $(@D); mkdir -p $(@D)
	@echo "  WINE $(@D)"
	@WINEPREFIX=$(CURDIR)/$(@D) WINEDLLOVERRIDES='mscoree,mshtml=;winedbg.exe=d' WINEDEBUG=-all \
	  timeout 300 wineboot --init >$(@D).log 2>&1 && WINEPREFIX=$(CURDIR)/$(@D) timeout 60 wineserver -w \
	  || { cat $(@D).log; echo "make test-windows: wineboot failed to create $(@D)" >&2; exit 1; }
	@touch $@

# Catch2's own code: -w and -O0, as for the Makefile's catch_main.o.
$(WINDOWS_CATCH_MAIN_OBJ): tests/catch_main.cpp $(WINDOWS_CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(WINDOWS_CXX) $(WINDOWS_CXXFLAGS) $(EXTRA_CXXFLAGS) -w -O0 $(DEPFLAGS) -c $< -o $@

$(WINDOWS_BUILD)/tests/%.exe: tests/%.cpp $(WINDOWS_CATCH_MAIN_OBJ) $$(wildcard tests/$$*.flags) $(WINDOWS_CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(WINDOWS_CXX) $(WINDOWS_CXXFLAGS) $(EXTRA_CXXFLAGS) $(TEST_INCLUDES) \
	  $(call program_flags,tests/$*) $(DEPFLAGS) $< $(WINDOWS_CATCH_MAIN_OBJ) -o $@ \
	  $(WINDOWS_LDFLAGS) $(WINDOWS_LDLIBS)

$(WINDOWS_BUILD)/tests/two_tu/%.o: tests/two_tu/%.cpp $$(wildcard tests/two_tu/$$*.flags) $(WINDOWS_CONFIG_STAMP)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,CXX)$(WINDOWS_CXX) $(WINDOWS_CXXFLAGS) $(EXTRA_CXXFLAGS) $(TEST_INCLUDES) \
	  $(call program_flags,tests/two_tu/$*) $(DEPFLAGS) -c $< -o $@

$(WINDOWS_BUILD)/tests/test_two_translation_units.exe: $(WINDOWS_TWO_TU_OBJS) $(WINDOWS_CATCH_MAIN_OBJ)
	@mkdir -p $(@D); rm -f $@
	$(call quiet,LINK)$(WINDOWS_CXX) $(WINDOWS_CXXFLAGS) $(EXTRA_CXXFLAGS) $^ -o $@ \
	  $(WINDOWS_LDFLAGS) $(WINDOWS_LDLIBS)

$(WINDOWS_CONFIG_STAMP): ;

-include $(wildcard $(WINDOWS_CATCH_MAIN_OBJ).d $(addsuffix .d,$(WINDOWS_TEST_BINS) $(WINDOWS_TWO_TU_OBJS)))
