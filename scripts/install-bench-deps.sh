#!/usr/bin/env bash
# Installs what `make bench` (bench/bench.mk, bench/run.py) needs on Debian 12: the
# compilers, the peers the benchmarks compare coro_loop with (standalone Asio, libuv,
# libcurl's multi interface, Boost.Beast, CPython asyncio with uvloop and aiohttp, wrk),
# the private nginx the HTTP rows talk to, and taskset (util-linux) to pin servers and
# clients to their own CPUs. The Python peers run on Debian's /usr/bin/python3 because
# python3-uvloop and python3-aiohttp are Debian packages for that interpreter.
# Idempotent: apt is not touched when everything is present.
set -euo pipefail

packages=(
  g++ gcc make                        # the benchmark programs (-O2)
  libasio-dev                         # standalone Asio with C++20 coroutines
  libuv1-dev                          # libuv in C
  libcurl4-openssl-dev                # libcurl's multi interface (HTTP rows)
  libboost-dev                        # Boost.Beast (HTTP rows)
  wrk                                 # the HTTP ceiling
  python3 python3-uvloop python3-aiohttp   # CPython asyncio, uvloop, aiohttp
  nginx                               # bench/nginx.sh: the private server of the HTTP rows
  util-linux coreutils procps         # taskset, timeout, ps
  curl                                # bench/nginx.sh: checks that nginx answers
)

exec "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" install-bench-deps "${packages[@]}"
