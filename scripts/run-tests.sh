#!/usr/bin/env bash
# scripts/run-tests.sh [BINARY...] [-- CATCH2_ARG...] - runs test binaries one after another, each as
# `timeout TEST_TIMEOUT [300] TEST_RUNNER BINARY CATCH2_ARG...` (a binary that does not exist did not
# build: failed), then each of TEST_SCRIPTS with no arguments; prints PASS or FAIL for each, then
# `tests: N passed, N failed` (TEST_LABEL names the run). Exit status 0 when nothing failed.
set -u -f   # -f: Catch2 test specs such as ~[slow] are not file patterns

binaries=()
while (($#)) && [[ $1 != -- ]]; do binaries+=("$1"); shift; done
(($#)) && shift
timeout_seconds=${TEST_TIMEOUT:-300}
runner=(${TEST_RUNNER:-})
passed=0
failures=()

run_one() {   # run_one NAME COMMAND...
  local name=$1 start=$SECONDS status reason
  shift
  timeout --kill-after=10 "$timeout_seconds" "$@"
  status=$?
  if ((status == 0)); then
    echo "PASS $name ($((SECONDS - start))s)"
    passed=$((passed + 1))
    return
  fi
  reason="exit status $status"
  ((status == 124)) && reason="timed out after ${timeout_seconds}s"
  ((status > 128)) && reason="killed by SIG$(kill -l $((status - 128)) 2>/dev/null || echo $((status - 128)))"
  echo "FAIL $name ($reason, $((SECONDS - start))s)"
  failures+=("$name")
}

for binary in "${binaries[@]}"; do
  if [[ ! -x $binary ]]; then
    echo "FAIL ${binary##*/} (did not build)"
    failures+=("${binary##*/}")
    continue
  fi
  echo "---- ${binary##*/}${*:+ ($*)}"
  run_one "${binary##*/}" "${runner[@]}" "$binary" "$@"
done
for script in ${TEST_SCRIPTS:-}; do
  echo "---- $script"
  run_one "$script" "$script"
done

echo "==== ${TEST_LABEL:-tests}: ${SECONDS}s${failures[*]:+; failed: ${failures[*]}}"
echo "tests: $passed passed, ${#failures[@]} failed"
((${#failures[@]} == 0))
