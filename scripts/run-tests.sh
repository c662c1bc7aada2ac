#!/usr/bin/env bash
# Runs test binaries one after another and tells which passed.
#   scripts/run-tests.sh [BINARY...] [-- CATCH2_ARG...]
# Each binary runs as `timeout $TEST_TIMEOUT $TEST_RUNNER BINARY CATCH2_ARG...`;
# a binary that does not exist counts as failed ("did not build").
# Environment:
#   TEST_TIMEOUT   seconds per binary [300]
#   TEST_RUNNER    command put before each binary (valgrind ..., setarch ...) [none]
#   TEST_LABEL     printed in the heading and summary [tests]
#   TEST_BUILT     more binaries that only have to exist (examples): PASS if built,
#                  counted with the tests
#   TEST_SCRIPTS   scripts run after the binaries, each counted like one (no arguments:
#                  no Catch2 arguments, no TEST_RUNNER; they take settings from the
#                  environment), e.g. tests/run_examples.sh
# Prints PASS/FAIL per binary, then a last line `tests: N passed, N failed`.
# Exit status: 0 when nothing failed.
set -u -f   # -f: Catch2 test specs such as ~[slow] are not file patterns

binaries=()
while (($#)) && [[ $1 != -- ]]; do binaries+=("$1"); shift; done
(($#)) && shift   # what is left is for Catch2

timeout_seconds=${TEST_TIMEOUT:-300}
runner=(${TEST_RUNNER:-})
label=${TEST_LABEL:-tests}
built=(${TEST_BUILT:-})
scripts=(${TEST_SCRIPTS:-})

passed=0
failed=0
failures=()

for binary in "${built[@]}"; do
  name=${binary#*/*/}   # build/CONFIG/examples/x -> examples/x
  if [[ -x $binary ]]; then
    echo "PASS ${name} (built)"
    passed=$((passed + 1))
  else
    echo "FAIL ${name} (did not build)"
    failed=$((failed + 1))
    failures+=("${name}")
  fi
done

if ((${#binaries[@]} == 0)); then
  echo "${label}: no test binaries: add tests/test_*.cpp (or tests/two_tu/*.cpp)"
fi

# run_one NAME COMMAND...: runs it under the timeout, prints PASS/FAIL, counts it.
run_one() {
  local name=$1 start=$SECONDS status reason elapsed
  shift
  timeout --kill-after=10 "${timeout_seconds}" "$@"
  status=$?
  elapsed=$((SECONDS - start))
  if ((status == 0)); then
    echo "PASS ${name} (${elapsed}s)"
    passed=$((passed + 1))
  else
    reason="exit status ${status}"
    if ((status == 124)); then
      reason="timed out after ${timeout_seconds}s"
    elif ((status > 128)); then
      reason="killed by SIG$(kill -l $((status - 128)) 2>/dev/null || echo $((status - 128)))"
    fi
    echo "FAIL ${name} (${reason}, ${elapsed}s)"
    failed=$((failed + 1))
    failures+=("${name}")
  fi
}

suite_start=$SECONDS
for binary in "${binaries[@]}"; do
  name=${binary##*/}
  if [[ ! -x $binary ]]; then
    echo "FAIL ${name} (did not build)"
    failed=$((failed + 1))
    failures+=("${name}")
    continue
  fi
  echo "---- ${name}${*:+ ($*)}"
  run_one "${name}" "${runner[@]}" "${binary}" "$@"
done

for script in "${scripts[@]}"; do
  echo "---- ${script}"
  run_one "${script}" "${script}"
done

echo "==== ${label}: $((SECONDS - suite_start))s${failures[*]:+; failed: ${failures[*]}}"
echo "tests: ${passed} passed, ${failed} failed"
((failed == 0))
