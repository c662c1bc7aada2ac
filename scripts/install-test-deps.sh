#!/usr/bin/env bash
# Makes sure what the tests need is installed: Catch2 (v2 or v3), nginx (the real
# peer of tests/test_http_nginx.cpp, which starts its own instance on 127.0.0.1 with
# its own configuration in a temporary directory), cmake, meson, ninja and pkg-config
# (tests/consumer/run.sh builds a user's project with each), and libc++'s headers
# when STDLIB=libc++. Quiet and quick when everything is present.
# Run by `make test`, `make sanitize` and `make valgrind`; safe to run by hand.
#   CXX     compiler used for the check           [g++]
#   STDLIB  libc++ to also require libc++'s headers [empty: the compiler's default]
#   NGINX   the nginx binary the tests run [found on PATH, else /usr/sbin/nginx, ...]
# As root with apt-get, installs what is missing (Debian/Ubuntu); otherwise prints
# what to install and exits 1. Debian's nginx package would start a system nginx
# on port 80 where services may start; the tests never use it, so it is left alone.
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
# The same places tests/nginx_fixture.hpp looks in ($NGINX, PATH, the sbin directories
# that are not on a normal user's PATH).
nginx_found() {
  if [[ -n ${NGINX:-} ]]; then
    [[ -x $NGINX ]] || command -v "$NGINX" >/dev/null 2>&1
    return
  fi
  command -v nginx >/dev/null 2>&1 && return 0
  local dir
  for dir in /usr/sbin /usr/local/sbin /sbin /usr/local/nginx/sbin /opt/homebrew/bin; do
    [[ -x $dir/nginx ]] && return 0
  done
  return 1
}
nginx_found || missing+=(nginx)
# tests/consumer/run.sh: command -> Debian package.
for tool in cmake:cmake meson:meson ninja:ninja-build pkg-config:pkg-config; do
  command -v "${tool%%:*}" >/dev/null 2>&1 || missing+=("${tool#*:}")
done
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
  if [[ " ${missing[*]} " == *" nginx "* ]]; then
    echo "  elsewhere: nginx with the stub_status module (brew install nginx, ...);" >&2
    echo "  NGINX=/path/to/nginx names a binary that is not on PATH" >&2
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
