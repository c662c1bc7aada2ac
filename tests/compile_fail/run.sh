#!/usr/bin/env bash
# tests/compile_fail/run.sh - each tests/compile_fail/*.cpp holds a mistake a user may make with
# coro_loop's templates (a callable of the wrong shape, a queue of references, ...). Each must fail to
# compile, and its first error must name the mistake: contain the text after `// first error: `
# in the file. CXX [g++] compiles, with COMPILE_FAIL_CXXFLAGS [-std=c++20 -pthread] and -I. from the
# repository's top; prints ok or FAIL for each; exit status 0 when every one passed.
set -u
cd "$(dirname "$0")/../.." || exit 1
cxx=${CXX:-g++}
read -r -a flags <<<"${COMPILE_FAIL_CXXFLAGS:--std=c++20 -pthread}"
failures=0
count=0
for source in tests/compile_fail/*.cpp; do
  count=$((count + 1))
  name=${source##*/}
  expected=$(sed -n 's|^// first error: ||p' "$source" | head -n 1)
  if [[ -z $expected ]]; then
    echo "FAIL $name: no '// first error: ' line"
    failures=$((failures + 1))
    continue
  fi
  if output=$("$cxx" "${flags[@]}" -I. -fsyntax-only "$source" 2>&1); then
    echo "FAIL $name: compiled, but it should not"
    failures=$((failures + 1))
    continue
  fi
  first=$(grep -m 1 -E '(^|: )(fatal )?error( [A-Z]+[0-9]+)?:' <<<"$output")
  if [[ $first == *"$expected"* ]]; then
    echo "ok   $name"
  else
    echo "FAIL $name: the first error does not name the mistake"
    echo "     expected: $expected"
    echo "     first error: $first"
    failures=$((failures + 1))
  fi
done
echo "compile-fail: $((count - failures)) of $count named their mistake"
((failures == 0))
