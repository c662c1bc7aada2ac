#!/usr/bin/env bash
# Installs everything .ci/run uses (Debian 12): Catch2, clang 14 with its
# sanitizer runtimes and libc++ (headers are needed for -stdlib=libc++: the
# runtime packages libc++1-14/libc++abi1-14 alone are not enough), meson, ninja,
# cmake and pkg-config (tests/consumer/run.sh), valgrind, nginx (the real server of tests/test_http_nginx.cpp). Idempotent: apt
# is not touched when everything is present.
set -euo pipefail

packages=(
  g++ make catch2
  clang clang-14 libclang-rt-14-dev   # clang++; -fsanitize runtimes for clang
  libc++-14-dev libc++abi-14-dev      # clang++ -stdlib=libc++
  meson ninja-build valgrind
  cmake pkg-config                    # tests/consumer/run.sh: find_package, pkg-config
  nginx                               # tests/test_http_nginx.cpp (stub_status, return)
  util-linux coreutils                # setarch (TSan without ASLR), timeout
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "install-ci-deps: missing: ${missing[*]}" >&2
  echo "  run: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-ci-deps: installing ${missing[*]}"
if ! apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"; then
  apt-get update -q -o Dpkg::Use-Pty=0
  apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
fi
