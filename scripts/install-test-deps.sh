#!/usr/bin/env bash
# Makes sure what the tests need is installed: Catch2 (v2 or v3), and libc++'s
# headers when STDLIB=libc++. Quiet and quick when everything is present.
# Run by `make test`, `make sanitize` and `make valgrind`; safe to run by hand.
#   CXX     compiler used for the check           [g++]
#   STDLIB  libc++ to also require libc++'s headers [empty: the compiler's default]
# As root with apt-get, installs what is missing (Debian/Ubuntu); otherwise prints
# what to install and exits 1.
set -euo pipefail

cxx=${CXX:-g++}
stdlib=${STDLIB:-}
missing=()

# Ask the compiler itself, so CPATH, -isystem defaults and non-/usr prefixes count.
if ! printf '%s\n' \
    '#if !__has_include(<catch2/catch_test_macros.hpp>) && !__has_include(<catch2/catch.hpp>)' \
    '#error no catch2' '#endif' | $cxx -std=c++20 -E -x c++ - >/dev/null 2>&1; then
  missing+=(catch2)
fi
if [[ $stdlib == libc++ ]]; then
  if ! printf '#include <vector>\nint main() { return std::vector<int>{}.size(); }\n' |
      $cxx -std=c++20 -stdlib=libc++ -x c++ - -o /dev/null >/dev/null 2>&1; then
    missing+=(libc++-14-dev libc++abi-14-dev)
  fi
fi

((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-test-deps: missing: ${missing[*]}" >&2
  echo "  Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
  if [[ " ${missing[*]} " == *" catch2 "* ]]; then
    echo "  elsewhere: Catch2 v2 or v3 (brew install catch2, vcpkg install catch2, ...)," >&2
    echo "  with <catch2/catch.hpp> or <catch2/catch_test_macros.hpp> on the include path" >&2
  fi
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-test-deps: installing ${missing[*]}"
# Update the package lists only when the install cannot proceed without it.
if ! apt-get install -y -q -o Dpkg::Use-Pty=0 "${missing[@]}"; then
  apt-get update -q -o Dpkg::Use-Pty=0
  apt-get install -y -q -o Dpkg::Use-Pty=0 "${missing[@]}"
fi
