#!/usr/bin/env bash
# scripts/install-deps.sh SET... - makes sure what each SET needs is installed:
#   test    make test: Catch2 (v2 or v3), nlohmann/json (tests/test_http_api.cpp parses with it; the
#           case is skipped without it), nginx (tests/nginx_fixture.hpp), OpenSSL's headers and
#           libraries, the openssl command and python3 (tests/tls_fixture.hpp), cmake, meson, ninja and
#           pkg-config (tests/consumer/run.sh), libc++ when STDLIB=libc++; found through CXX [g++],
#           PATH and NGINX (an nginx off PATH), so non-Debian installs count
#   fuzz    make fuzz: FUZZ_CXX [clang++] links -fsanitize=fuzzer,address,undefined (Debian: libFuzzer
#           and the sanitizer runtimes come with libclang-rt-14-dev, not with clang)
#   ci      .ci/run: both compilers, clang's sanitizer runtimes and libc++, valgrind and the above
#   cross   the cross targets and cross/*.ini: aarch64 and armhf g++ (with ASan+UBSan runtimes),
#           qemu-user, mingw-w64's -posix g++ (the -win32 one has no std::thread), 64-bit wine
#   bench   make bench: Asio, liburing (E1's Asio-on-io_uring peer), libuv, libcurl, Beast, CPython with
#           uvloop and aiohttp, wrk, nginx, OpenSSL (headers and the openssl command: H1S and H2S,
#           bench/nginx.sh's CA)
# Quick and quiet when all is there. As root with apt-get (Debian 12) installs what is missing,
# waiting for another apt or dpkg to finish; otherwise names it and fails.
set -euo pipefail

cxx=${CXX:-g++}
fuzz_cxx=${FUZZ_CXX:-clang++}
missing=()
has() { command -v "$1" >/dev/null 2>&1; }
want() {   # want PACKAGE...: Debian packages, by name
  local package
  for package; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null) == installed ]] || missing+=("$package")
  done
}
fuzz_links() {
  echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' |
    $fuzz_cxx -fsanitize=fuzzer,address,undefined -x c++ - -o /dev/null >/dev/null 2>&1
}

for set in "$@"; do
  case $set in
    test)
      printf '#if !__has_include(<catch2/catch_test_macros.hpp>) && !__has_include(<catch2/catch.hpp>)\n#error\n#endif\n' |
        $cxx -std=c++20 -E -x c++ - >/dev/null 2>&1 || missing+=(catch2)
      printf '#if !__has_include(<nlohmann/json.hpp>)\n#error\n#endif\n' |
        $cxx -std=c++20 -E -x c++ - >/dev/null 2>&1 || missing+=(nlohmann-json3-dev)
      # Where tests/nginx_fixture.hpp looks: sbin directories are not on a user's PATH.
      PATH=$PATH:/usr/sbin:/usr/local/sbin:/sbin:/usr/local/nginx/sbin:/opt/homebrew/bin has "${NGINX:-nginx}" ||
        missing+=(nginx)
      printf '#include <openssl/ssl.h>\n' | $cxx -std=c++20 -E -x c++ - >/dev/null 2>&1 || missing+=(libssl-dev)
      for tool in cmake meson ninja:ninja-build pkg-config openssl python3; do
        has "${tool%:*}" || missing+=("${tool#*:}")
      done
      [[ ${STDLIB:-} != libc++ ]] || printf '#include <vector>\nint main() {}\n' |
        $cxx -std=c++20 -stdlib=libc++ -x c++ - -o /dev/null >/dev/null 2>&1 || missing+=(libc++-14-dev libc++abi-14-dev) ;;
    fuzz)
      fuzz_links && continue
      if has "$fuzz_cxx" && ! $fuzz_cxx --version | grep -q clang; then
        echo "install-deps: FUZZ_CXX=$fuzz_cxx is not clang: libFuzzer needs clang++" >&2
        exit 1
      fi
      missing+=(clang clang-14 libclang-rt-14-dev) ;;
    ci) want g++ g++-11 make catch2 nlohmann-json3-dev clang clang-14 clang-16 libclang-rt-14-dev libc++-14-dev libc++abi-14-dev \
          meson ninja-build cmake pkg-config valgrind nginx libssl-dev openssl python3 util-linux coreutils ;;
    cross) want g++-aarch64-linux-gnu g++-arm-linux-gnueabihf libasan8-arm64-cross libubsan1-arm64-cross qemu-user \
             g++-mingw-w64-x86-64-posix wine wine64 catch2 make ;;
    bench) want g++ gcc make libasio-dev liburing-dev libuv1-dev libcurl4-openssl-dev libboost-dev wrk python3 python3-uvloop \
             python3-aiohttp nginx util-linux coreutils procps curl libssl-dev openssl ;;
    *) echo "install-deps: unknown set '$set' (test, fuzz, ci, cross, bench)" >&2; exit 2 ;;
  esac
done
((${#missing[@]})) || exit 0

if [[ $(id -u) != 0 ]] || ! has apt-get; then
  echo "install-deps: missing: ${missing[*]}" >&2
  echo "  Debian/Ubuntu: sudo apt-get install ${missing[*]}; elsewhere, the same from your package manager" >&2
  exit 1
fi
echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt_get() { apt-get -y -q -o Dpkg::Use-Pty=0 -o DPkg::Lock::Timeout=600 "$@"; }
# The package lists are updated only when the install cannot do without. apt-get update takes its
# lock without waiting (DPkg::Lock::Timeout is dpkg's), so it is tried again while another holds it.
if ! apt_get install --no-install-recommends "${missing[@]}"; then
  for attempt in {1..120}; do
    output=$(apt_get update 2>&1) && { echo "$output"; break; }
    echo "$output" >&2
    [[ $output == *'Could not get lock'* && $attempt -lt 120 ]] || exit 1
    sleep 5
  done
  apt_get install --no-install-recommends "${missing[@]}"
fi
[[ " $* " != *' fuzz '* ]] || fuzz_links || { echo "install-deps: $fuzz_cxx still cannot link -fsanitize=fuzzer" >&2; exit 1; }
