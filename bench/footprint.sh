#!/usr/bin/env bash
# bench/footprint.sh coro_loop|beast - what using the library costs a program.
#
# Compiles the fetch_all program (coro_loop: examples/fetch_all.cpp; beast: the same
# program on Boost.Beast, bench/footprint_beast.cpp) with `g++ -std=c++20 -O2 -DNDEBUG
# -pthread` (a release build, as bench/bench.mk's; BENCH_CXX overrides g++), strips the
# binary and prints
#   RESULT compile_s=<g++'s user + system CPU seconds> stripped_kib=<size of the stripped binary>
# CPU time rather than wall time, so other jobs on the machine do not count. The
# binary is run once to check it works (fetch_all's output ends with its connection count).
set -euo pipefail

[ $# -eq 1 ] || { echo "usage: $0 coro_loop|beast" >&2; exit 2; }
root=$(cd "$(dirname "$0")/.." && pwd)
case $1 in
  coro_loop) source=$root/examples/fetch_all.cpp ;;
  beast) source=$root/bench/footprint_beast.cpp ;;
  *) echo "$0: unknown implementation $1" >&2; exit 2 ;;
esac
compiler=${BENCH_CXX:-g++}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
TIMEFORMAT='%U %S'
cpu=$( { time "$compiler" -std=c++20 -O2 -DNDEBUG -pthread -I"$root" "$source" -o "$work/program" 2> "$work/compile.log"; } 2>&1 ) || {
  cat "$work/compile.log" >&2
  echo "$0: compiling $source failed" >&2
  exit 1
}
strip -o "$work/program.stripped" "$work/program"
bytes=$(stat -c %s "$work/program.stripped")
timeout 30 "$work/program" > "$work/output.txt"
grep -q '^connections opened: 3$' "$work/output.txt" || { cat "$work/output.txt" >&2; echo "$0: wrong output" >&2; exit 1; }
read -r user system <<< "$cpu"
awk -v user="$user" -v kernel="$system" -v bytes="$bytes" \
  'BEGIN { printf "RESULT compile_s=%.2f stripped_kib=%.1f\n", user + kernel, bytes / 1024 }'
