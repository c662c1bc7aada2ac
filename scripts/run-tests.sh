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

# Each item: its name, its heading and its program; the scripts come first and run alone, a binary
# runs under TEST_RUNNER with the Catch2 arguments.
names=()
headings=()
commands=()
for script in ${TEST_SCRIPTS:-}; do names+=("$script"); headings+=("$script"); commands+=("$script"); done
script_count=${#names[@]}
for binary in "${binaries[@]}"; do
  if [[ ! -x $binary ]]; then
    echo "FAIL ${binary##*/} (did not build)"
    failures+=("${binary##*/}")
    continue
  fi
  names+=("${binary##*/}")
  headings+=("${binary##*/}${catch_args[*]:+ (${catch_args[*]})}")
  commands+=("$binary")
done

start() {   # start INDEX: runs the item in the background; its output and status land in $tmp
  local command=("${commands[$1]}")
  (($1 >= script_count)) && command=("${runner[@]}" "${commands[$1]}" "${catch_args[@]}")
  { run_one "${names[$1]}" "${headings[$1]}" "${command[@]}" >"$tmp/$1.out"
    echo $? >"$tmp/$1.status.part" && mv "$tmp/$1.status.part" "$tmp/$1.status"; } &
}
running=0
wait_below() {   # wait_below N: reports finished items (output whole, verdict counted) until fewer than N run
  local index
  while ((running >= $1)); do
    wait -n
    for index in "${!names[@]}"; do
      [[ -f $tmp/$index.status ]] || continue
      cat "$tmp/$index.out"
      if [[ $(cat "$tmp/$index.status") == 0 ]]; then passed=$((passed + 1)); else failures+=("${names[index]}"); fi
      rm -f "$tmp/$index.status"
      running=$((running - 1))
    done
  done
}
for index in "${!names[@]}"; do
  wait_below "$jobs"
  start "$index"
  running=$((running + 1))
done
wait_below 1

echo "==== ${TEST_LABEL:-tests}: ${SECONDS}s${failures[*]:+; failed: ${failures[*]}}"
echo "tests: $passed passed, ${#failures[@]} failed"
((${#failures[@]} == 0))
