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

exec "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" install-ci-deps "${packages[@]}"
