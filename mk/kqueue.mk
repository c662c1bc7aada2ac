# mk/kqueue.mk - the test suite on the kqueue backend, on Linux (included by the top
# Makefile; issue 8, point 3).
#
#   make test-kqueue    every tests/test_*.cpp (and the two_tu program) built with
#                       -DCORO_LOOP_BACKEND_KQUEUE -Itests/kqueue into build/kqueue-[SANITIZE-]CXX[-STDLIB]
#                       and run like `make test`, plus the emulation's own test
#                       (tests/kqueue/test_kqueue_emulation.cpp). Examples and the
#                       consumer-project script are left to the native runs.
#
# No macOS or BSD machine is at hand and no kqueue library is packaged, so
# tests/kqueue/sys/event.h stands in for the system's <sys/event.h>: the kqueue subset
# the backend uses, over epoll, with kevent(2)'s semantics (its top comment lists what
# it cannot match). The backend code compiled is exactly the one macOS and the BSDs get.
# Any make test variable applies (CXX=clang++, SANITIZE=asan, CATCH_ARGS, ...).

KQUEUE_FLAGS := -DCORO_LOOP_BACKEND_KQUEUE -Itests/kqueue

.PHONY: test-kqueue
test-kqueue:
	+@$(MAKE) --no-print-directory test TEST_EXAMPLES= \
	  BUILD=build/kqueue-$(if $(SANITIZE),$(SANITIZE)-)$(CXX_NAME)$(if $(STDLIB),-$(STDLIB)) \
	  EXTRA_CXXFLAGS='$(strip $(EXTRA_CXXFLAGS) $(KQUEUE_FLAGS))' \
	  EXTRA_TEST_SRCS=tests/kqueue/test_kqueue_emulation.cpp
