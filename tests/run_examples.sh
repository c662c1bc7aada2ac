#!/usr/bin/env bash
# tests/run_examples.sh - runs every example program and checks what it prints, so
# that none of them rots: each examples/NAME.cpp must have built as BIN_DIR/NAME, exit
# with status 0 within EXAMPLE_TIMEOUT seconds and print its key lines (a NAME without
# checks below only has to exit 0). Timings are checked loosely: the concurrent
# figure below the sequential one, both within generous bounds.
# echo_server (serves until Ctrl+C) runs with `0 --once`, and echo_client talks to it.
# fetch_all says whether it was built with TLS ("https: on ..." or "https: off ...");
# EXAMPLES_HTTPS=on or off says which to expect (the Makefile and meson know), else either.
#   tests/run_examples.sh [BIN_DIR]   [$EXAMPLES_DIR]
# Run by `make test` (BIN_DIR = BUILD/examples) and by meson test (the build directory).
# Prints one line per example, then `examples: N passed, N failed`; exits non-zero if
# any failed.
set -uo pipefail

source_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_dir=${1:-${EXAMPLES_DIR:-}}
if [[ -z $bin_dir ]]; then
  echo "usage: tests/run_examples.sh BIN_DIR (or EXAMPLES_DIR=BIN_DIR)" >&2
  exit 2
fi
bin_dir=$(cd "$bin_dir" 2>/dev/null && pwd) || { echo "run_examples: no directory ${1:-$EXAMPLES_DIR}" >&2; exit 1; }
timeout_seconds=${EXAMPLE_TIMEOUT:-60}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coro_loop_examples.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

output=""   # what the example being checked printed (stdout and stderr)
problems=()

expect() {   # expect TEXT...: each TEXT is a line (or part of one) of the output
  local text
  for text in "$@"; do
    grep -qF -- "$text" <<<"$output" || problems+=("no line with '${text}'")
  done
}

expect_count() {   # expect_count N EXTENDED_REGEX
  local count
  count=$(grep -cE -- "$2" <<<"$output")
  ((count == $1)) || problems+=("${count} lines match /$2/, expected $1")
}

seconds_of() {   # seconds_of LABEL: the number in the line "LABEL: 1.23s"
  sed -n "s/^$1: \([0-9.]*\)s\$/\1/p" <<<"$output" | head -n 1
}

# check_timing LABEL_A LABEL_B MIN_A MAX_A MIN_B: A is the sequential figure, B the
# concurrent one; MIN_* are the sleeps' sums (a floor no run can beat), MAX_A is
# generous for a loaded machine, and B must stay below A.
check_timing() {
  local a b
  a=$(seconds_of "$1")
  b=$(seconds_of "$2")
  if [[ -z $a || -z $b ]]; then
    problems+=("no '$1: N.NNs' or '$2: N.NNs' line")
    return
  fi
  awk -v a="$a" -v b="$b" -v min_a="$3" -v max_a="$4" -v min_b="$5" \
    'BEGIN { exit !(a >= min_a && a <= max_a && b >= min_b && b < a) }' ||
    problems+=("timings $1 ${a}s, $2 ${b}s: expected $3 <= $1 <= $4, $5 <= $2 < $1")
}

check() {   # check NAME: the key lines of each example's output
  case $1 in
    async_context_managers)
      expect "Opening DB connection" "[{'id': 1, 'name': 'Alice'}]" "Closing DB connection" \
        "Connection closed" "lock held: True" "lock held: False" ;;
    debug_mode)
      expect "is blocking code running in a coroutine?" "main() done" \
        "Task 'consumer' (suspended) created at " "waiting on: queue::get on queue " ;;
    echo_client)
      expect "Started an echo server on 127.0.0.1:" "echoed: hello" "echoed: world" ;;
    executors)
      expect "read file.txt" "Sum: 333332833333500000" ;;
    fetch_all)
      expect "Sequential:" "Concurrent:" "Error: http 404 Not Found"
      case ${EXAMPLES_HTTPS:-} in
        on) expect "https: on, the certificate verified against a CA made at start-up" \
              "Error: http 404 Not Found: https://127.0.0.1:" ;;
        off) expect "https: off (built without CORO_LOOP_OPENSSL" "Error: http 404 Not Found: http://127.0.0.1:" ;;
        *) expect_count 1 '^https: (on|off)' ;;
      esac
      local title
      for title in "sunt aut facere repellat" "qui est esse" "ea molestias quasi exercitationem"; do
        expect_count 2 "^${title}\$"
      done
      check_timing Sequential Concurrent 0.55 10 0.18 ;;
    gather_vs_create_task)
      expect "['result-1', 'result-2', 'result-3']" "Task failed: work 2 failed" "result-1 result-2" ;;
    pitfalls)
      expect "was destroyed without ever being awaited" "Task exception was never retrieved" \
        "caught: work() failed" "from a worker thread" ;;
    producer_consumer)
      expect "All items processed; shutting the queue down"
      local produced processed
      produced=$(grep -c '^Produced: ' <<<"$output")
      processed=$(grep -cE '^Worker [0-9]+ processed: ' <<<"$output")
      ((produced > 0 && produced == processed)) ||
        problems+=("${produced} items produced, ${processed} processed") ;;
    sequential_vs_concurrent)
      expect "start" "end" "{'url': 'https://api.example.com/data', 'data': '...'}"
      check_timing Sequential Concurrent 0.95 10 0.45 ;;
    timeout_and_cancellation)
      expect "Operation timed out after 2 seconds" "Task was cancelled cleanly" ;;
    subprocess)
      expect "[ls /zzz exited with 2]" "No such file or directory" "[sleep 0.2; echo hello exited with 0]" "hello" \
        "the counting command exited with 0" "did not finish within 0.5 s: killed, returncode -9" "all done in"
      expect_count 3 '^after +[0-9]+ ms: line [123]$' ;;
  esac
}

# echo_server with `0 --once` on a free port; echo_client talks to it; the server
# exits by itself once the client has gone.
run_echo_server() {
  local server=$bin_dir/echo_server client=$bin_dir/echo_client log=$tmp/echo_server.log port="" status
  timeout "$timeout_seconds" "$server" 0 --once >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do
    port=$(sed -n 's/^Serving on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$log")
    [[ -n $port ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z $port ]]; then
    kill "$pid" 2>/dev/null
    wait "$pid"
    output=$(cat "$log")
    problems+=("no 'Serving on 127.0.0.1:PORT' line")
    return 1
  fi
  output=$(timeout 30 "$client" "$port" ping pong 2>&1)
  status=$?
  ((status == 0)) || problems+=("echo_client ${port} ping pong exited with status ${status}")
  expect "echoed: ping" "echoed: pong"
  wait "$pid"
  status=$?
  output=$(cat "$log")
  expect "connected" "disconnected"
  return "$status"
}

passed=0
failed=0
failures=()
start_all=$SECONDS
for source in "$source_dir"/examples/*.cpp; do
  name=$(basename "$source" .cpp)
  binary=$bin_dir/$name
  problems=()
  output=""
  start=$SECONDS
  if [[ ! -x $binary ]]; then
    problems+=("${binary} was not built")
  elif [[ $name == echo_server ]]; then
    run_echo_server || problems+=("exit status $?")
  else
    output=$(cd "$tmp" && timeout --kill-after=5 "$timeout_seconds" "$binary" 2>&1 </dev/null)
    status=$?
    if ((status == 124)); then
      problems+=("timed out after ${timeout_seconds}s")
    elif ((status != 0)); then
      problems+=("exit status ${status}")
    else
      check "$name"
    fi
  fi
  if ((${#problems[@]} == 0)); then
    echo "ok   ${name} ($((SECONDS - start))s)"
    passed=$((passed + 1))
  else
    echo "FAIL ${name} ($((SECONDS - start))s):"
    printf '    %s\n' "${problems[@]}"
    echo "    its output:"
    sed 's/^/      /' <<<"$output" | tail -n 40
    failed=$((failed + 1))
    failures+=("$name")
  fi
done
echo "examples: ${passed} passed, ${failed} failed in $((SECONDS - start_all))s${failures[*]:+; failed: ${failures[*]}}"
((failed == 0))
