#!/usr/bin/env bash
# tests/compile_fail/run.sh - each tests/compile_fail/*.cpp holds a mistake a user may make with
# coro_loop's templates (a callable of the wrong shape, a queue of references, ...). Each must fail to
# compile, and its first error must name the mistake: contain the text after `// first error: `
# in the file. CXX [g++] compiles, with COMPILE_FAIL_CXXFLAGS [-std=c++20 -pthread] and -I. from the
# repository's top, JOBS [2] files at a time; prints ok or FAIL for each, in the files' order; exit
# status 0 when every one passed.
set -u
cd "$(dirname "$0")/../.." || exit 1
cxx=${CXX:-g++}
read -r -a flags <<<"${COMPILE_FAIL_CXXFLAGS:--std=c++20 -pthread}"
jobs=${JOBS:-2}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coro_loop_compile_fail.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT

check() {   # check SOURCE: prints the verdict; exit status 0 when the mistake was named
  local source=$1 name=${1##*/} expected output first
  expected=$(sed -n 's|^// first error: ||p' "$source" | head -n 1)
  if [[ -z $expected ]]; then
    echo "FAIL $name: no '// first error: ' line"
    return 1
  fi
  if output=$("$cxx" "${flags[@]}" -I. -fsyntax-only "$source" 2>&1); then
    echo "FAIL $name: compiled, but it should not"
    return 1
  fi
  first=$(grep -m 1 -E '(^|: )(fatal )?error( [A-Z]+[0-9]+)?:' <<<"$output")
  if [[ $first != *"$expected"* ]]; then
    echo "FAIL $name: the first error does not name the mistake"
    echo "     expected: $expected"
    echo "     first error: $first"
    return 1
  fi
  echo "ok   $name"
}

sources=(tests/compile_fail/*.cpp)
for index in "${!sources[@]}"; do
  ((index < jobs)) || wait -n
  { check "${sources[index]}" >"$tmp/$index.out" 2>&1; echo $? >"$tmp/$index.status"; } &
done
wait
failures=0
for index in "${!sources[@]}"; do
  cat "$tmp/$index.out"
  [[ $(cat "$tmp/$index.status") == 0 ]] || failures=$((failures + 1))
done
echo "compile-fail: $((${#sources[@]} - failures)) of ${#sources[@]} named their mistake"
((failures == 0))
