#!/usr/bin/env bash
# scripts/run-tests.sh [BINARY...] [-- CATCH2_ARG...] - runs each test binary as
# `timeout TEST_TIMEOUT [300] TEST_RUNNER BINARY CATCH2_ARG...` (a binary that does not exist did not
# build: failed) and each of TEST_SCRIPTS with no arguments, TEST_JOBS [2] at a time, the scripts
# first (they take longest); prints each one's output whole when it ends, with PASS or FAIL, then
# `tests: N passed, N failed` (TEST_LABEL names the run). Exit status 0 when nothing failed.
set -u -f   # -f: Catch2 test specs such as ~[slow] are not file patterns

binaries=()
while (($#)) && [[ $1 != -- ]]; do binaries+=("$1"); shift; done
(($#)) && shift
catch_args=("$@")
timeout_seconds=${TEST_TIMEOUT:-300}
jobs=${TEST_JOBS:-2}
runner=(${TEST_RUNNER:-})
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coro_loop_tests.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
passed=0
failures=()

run_one() {   # run_one NAME HEADING COMMAND...: its output, then its verdict; exit status 0 when it passed
  local name=$1 start=$SECONDS status reason
  echo "---- $2"
  shift 2
  timeout --kill-after=10 "$timeout_seconds" "$@" 2>&1
  status=$?
  if ((status == 0)); then
    echo "PASS $name ($((SECONDS - start))s)"
    return 0
  fi
  reason="exit status $status"
  ((status == 124)) && reason="timed out after ${timeout_seconds}s"
  ((status > 128)) && reason="killed by SIG$(kill -l $((status - 128)) 2>/dev/null || echo $((status - 128)))"
  echo "FAIL $name ($reason, $((SECONDS - start))s)"
  return 1
}

names=()
commands=()
for script in ${TEST_SCRIPTS:-}; do names+=("$script"); commands+=("$script"); done
for binary in "${binaries[@]}"; do
  if [[ ! -x $binary ]]; then
    echo "FAIL ${binary##*/} (did not build)"
    failures+=("${binary##*/}")
    continue
  fi
  names+=("${binary##*/}")
  commands+=("$binary")
done

report() {   # report INDEX: prints a finished item's output and counts its verdict
  cat "$tmp/$1.out"
  if [[ $(cat "$tmp/$1.status") == 0 ]]; then
    passed=$((passed + 1))
  else
    failures+=("${names[$1]}")
  fi
  rm -f "$tmp/$1.status"
}
running=0
reported=()
report_finished() {
  local index
  for index in "${!names[@]}"; do
    [[ -f $tmp/$index.status && -z ${reported[index]:-} ]] || continue
    reported[index]=1
    running=$((running - 1))
    report "$index"
  done
}
for index in "${!names[@]}"; do
  while ((running >= jobs)); do
    wait -n
    report_finished
  done
  if [[ ${commands[index]} == *.sh ]]; then
    { run_one "${names[index]}" "${names[index]}" "${commands[index]}" >"$tmp/$index.out"; echo $? >"$tmp/$index.status.part"; mv "$tmp/$index.status.part" "$tmp/$index.status"; } &
  else
    { run_one "${names[index]}" "${names[index]}${catch_args[*]:+ (${catch_args[*]})}" "${runner[@]}" \
        "${commands[index]}" "${catch_args[@]}" >"$tmp/$index.out"
      echo $? >"$tmp/$index.status.part"; mv "$tmp/$index.status.part" "$tmp/$index.status"; } &
  fi
  running=$((running + 1))
done
while ((running > 0)); do
  wait -n
  report_finished
done

echo "==== ${TEST_LABEL:-tests}: ${SECONDS}s${failures[*]:+; failed: ${failures[*]}}"
echo "tests: $passed passed, ${#failures[@]} failed"
((${#failures[@]} == 0))
