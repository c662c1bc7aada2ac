#!/usr/bin/env bash
# Makes sure `make fuzz` can build a libFuzzer target: clang++ that links
# -fsanitize=fuzzer,address,undefined (Debian: libFuzzer and the sanitizer
# runtimes come with libclang-rt-14-dev, not with clang itself). Quiet and quick
# when it works. Run by `make fuzz`; safe to run by hand.
#   FUZZ_CXX  compiler to check [clang++]
# As root with apt-get, installs what is missing (Debian/Ubuntu); otherwise prints
# what to install and exits 1.
set -euo pipefail

cxx=${FUZZ_CXX:-clang++}

links() {
  printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
    'extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t*, std::size_t) { return 0; }' |
    $cxx -std=c++20 -fsanitize=fuzzer,address,undefined -x c++ - -o /dev/null >/dev/null 2>&1
}

links && exit 0

if command -v "${cxx%% *}" >/dev/null 2>&1 && ! $cxx --version 2>/dev/null | grep -q clang; then
  echo "install-fuzz-deps: FUZZ_CXX=$cxx is not clang: libFuzzer (-fsanitize=fuzzer) needs clang++" >&2
  exit 1
fi

missing=(clang-14 libclang-rt-14-dev)
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-fuzz-deps: $cxx cannot link -fsanitize=fuzzer,address,undefined" >&2
  echo "  Debian/Ubuntu: sudo apt-get install clang ${missing[*]}" >&2
  echo "  elsewhere: clang with compiler-rt's libFuzzer (brew install llvm, ...)" >&2
  exit 1
fi

command -v "${cxx%% *}" >/dev/null 2>&1 || missing+=(clang)
export DEBIAN_FRONTEND=noninteractive
echo "install-fuzz-deps: installing ${missing[*]}"
# Update the package lists only when the install cannot proceed without it.
if ! apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"; then
  apt-get update -q -o Dpkg::Use-Pty=0
  apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
fi
if ! links; then
  echo "install-fuzz-deps: $cxx still cannot link -fsanitize=fuzzer (installed: ${missing[*]})" >&2
  exit 1
fi
