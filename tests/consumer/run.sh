#!/usr/bin/env bash
# tests/consumer/run.sh - builds tests/consumer/main.cpp each way a user's project takes coro_loop,
# runs each build and checks the line it prints:
#   copied header      coro_loop.hpp beside main.cpp, one compiler command
#   unused code        the copied header's program (-O0) holds none of the header's streams,
#                      processes or HTTP client (nm)
#   precompiled header the copied header precompiled (g++: coro_loop.hpp.gch, clang++: .pch), then
#                      main.cpp built with it (-include coro_loop.hpp, as CMake's
#                      target_precompile_headers does), as a debug build (-g)
#   meson subproject   subprojects/coro_loop -> this repository, dependency('coro_loop')
#   make install       into a temporary PREFIX (and into a DESTDIR), then:
#     pkg-config       --cflags --libs coro_loop from PREFIX, one compiler command
#     find_package     CMake, find_package(coro_loop) from PREFIX
#   add_subdirectory   CMake, add_subdirectory(this repository)
#   make uninstall     leaves nothing in PREFIX, nor the DESTDIR
# Where OpenSSL 3's headers are found for CXX, each way also builds tests/consumer/main_tls.cpp with
# TLS and runs it: -DCORO_LOOP_OPENSSL -lssl -lcrypto by hand, dependency('coro_loop-openssl') in
# meson, coro_loop-openssl.pc, find_package(coro_loop COMPONENTS tls) and coro_loop::tls.
# Prints a line per way and exits non-zero if any failed. Run by `make test`; needs cmake, meson,
# ninja and pkg-config. Environment: CXX [g++]; CONSUMER_CXXFLAGS extra compile and link flags
# (-stdlib=libc++); KEEP=1 keeps the temporary directory.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
consumer=$repo/tests/consumer
cxx=${CXX:-g++}
extra_flags=${CONSUMER_CXXFLAGS:-}
version=$(sed -n 's/^#define CORO_LOOP_VERSION "\(.*\)"$/\1/p' "$repo/coro_loop.hpp")
expected="consumer: gather gave 6 (coro_loop ${version})"
expected_tls="consumer: TLS built in, https accepted (coro_loop ${version})"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/coro_loop_consumer.XXXXXX")
[[ ${KEEP:-} == 1 ]] && echo "consumer: keeping $tmp" || trap 'rm -rf "$tmp"' EXIT
prefix=$tmp/prefix

# make, as a child of `make test` or not: never the caller's jobserver or variables.
plain_make() { env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make --no-print-directory -C "$repo" "$@"; }

missing=()
for tool in "$cxx" make cmake meson ninja pkg-config; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if ((${#missing[@]})); then
  echo "consumer: missing ${missing[*]}: run scripts/install-deps.sh test (as root, it installs them)"
  exit 1
fi

# TLS: where OpenSSL 3's headers are found for this compiler (the Makefile's HAVE_OPENSSL).
tls=""
printf '#include <openssl/ssl.h>\n#if OPENSSL_VERSION_NUMBER < 0x30000000L\n#error\n#endif\n' |
  $cxx -std=c++20 $extra_flags -E -x c++ - >/dev/null 2>&1 && tls=yes

passed=0
failed=0
way() {   # way NAME COMMAND...: runs COMMAND, its output in $tmp/NAME.log
  local name=$1 start=$SECONDS
  shift
  if "$@" >"$tmp/$name.log" 2>&1; then
    echo "ok   $name ($((SECONDS - start))s)"
    passed=$((passed + 1))
  else
    echo "FAIL $name ($((SECONDS - start))s); its output:"
    sed 's/^/    /' "$tmp/$name.log" | tail -n 40
    failed=$((failed + 1))
  fi
}

check_run() {   # check_run BINARY [EXPECTED]: runs it, expects the one known line
  local output want=${2:-$expected}
  output=$(timeout 30 "$1") || { echo "$1 exited with status $?: $output"; return 1; }
  [[ $output == "$want" ]] || { echo "$1 printed '$output', expected '$want'"; return 1; }
  echo "$output"
}
check_tls_run() {   # check_tls_run BINARY: with TLS, the TLS consumer was built and runs
  [[ -z $tls ]] || check_run "$1" "$expected_tls"
}

compile() {   # compile DIR FLAG...: main.cpp in DIR with one compiler command
  (cd "$1" && shift && $cxx -std=c++20 -Wall -Wextra -Werror $extra_flags main.cpp "$@" -o consumer) && check_run "$1/consumer"
}
compile_tls() {   # compile_tls DIR FLAG...: main_tls.cpp, the same way
  [[ -n $tls ]] || return 0
  (cd "$1" && shift && $cxx -std=c++20 -Wall -Wextra -Werror $extra_flags main_tls.cpp "$@" -o consumer_tls) &&
    check_tls_run "$1/consumer_tls"
}

compile_both() {   # compile_both DIR FLAG... -- TLS_FLAG...: compile and compile_tls at once (two cores)
  local dir=$1 plain=() status=0 pid
  shift
  while (($#)) && [[ $1 != -- ]]; do plain+=("$1"); shift; done
  (($#)) && shift
  compile "$dir" "${plain[@]}" >"$dir/plain.log" 2>&1 &
  pid=$!
  compile_tls "$dir" "$@" || status=1
  wait "$pid" || status=1
  cat "$dir/plain.log"
  return "$status"
}

copied_header() {
  mkdir -p "$tmp/copy" && cp "$repo/coro_loop.hpp" "$consumer/main.cpp" "$consumer/main_tls.cpp" "$tmp/copy/" &&
    compile_both "$tmp/copy" -pthread -- -DCORO_LOOP_OPENSSL -pthread -lssl -lcrypto
}

precompiled_header() {
  local dir=$tmp/pch extension=gch flags=(-std=c++20 -g -Wall -Wextra -Werror $extra_flags -pthread) trace
  [[ $cxx == *clang* ]] && extension=pch
  mkdir -p "$dir" && cp "$repo/coro_loop.hpp" "$consumer/main.cpp" "$dir/" &&
    (cd "$dir" && $cxx "${flags[@]}" -x c++-header coro_loop.hpp -o "coro_loop.hpp.$extension" &&
      $cxx "${flags[@]}" -Winvalid-pch -H -include coro_loop.hpp main.cpp -o consumer 2>trace.txt) ||
    { cat "$dir/trace.txt" 2>/dev/null | grep -v '^\.' | head -n 40; return 1; }
  # g++ -H marks the precompiled header it used with `!`; clang++ refuses a .pch it cannot use.
  trace=$(grep -c "^! .*coro_loop.hpp.gch" "$dir/trace.txt")
  [[ $extension == pch || $trace -gt 0 ]] || { echo "$cxx did not use coro_loop.hpp.gch"; return 1; }
  check_run "$dir/consumer"
}

# The copied header's program, built at -O0, holds none of the header's streams, processes or HTTP
# client: g++ would emit every coroutine that is not a template (CORO_LOOP_COROUTINE).
unused_code_left_out() {
  local compiler found
  compiler=$(printf '__clang__ __GNUC__\n' | $cxx -E -x c++ - | tail -n 1)
  if [[ $compiler == "__clang__ 1"[01] ]]; then
    echo "g++ ${compiler#* } keeps the header's coroutines inline (see CORO_LOOP_COROUTINE): nothing to check"
    return 0
  fi
  [[ -x $tmp/copy/consumer ]] || { echo "no $tmp/copy/consumer: the copied header's build failed"; return 1; }
  found=$(nm -C "$tmp/copy/consumer" | grep -E 'coro_loop::(http::|stream::|process::|server::|open_connection|resolve)')
  [[ -z $found ]] || { echo "main.cpp's program holds code it does not use:"; echo "$found" | head -n 20 | cut -c1-200; return 1; }
  echo "main.cpp's program: $(nm "$tmp/copy/consumer" | grep -c ' [TtWw] ') functions, none of streams, processes or the HTTP client"
}

meson_subproject() {
  mkdir -p "$tmp/meson-src/subprojects" &&
    cp "$consumer/meson.build" "$consumer/main.cpp" "$consumer/main_tls.cpp" "$tmp/meson-src/" &&
    ln -s "$repo" "$tmp/meson-src/subprojects/coro_loop" &&
    CXX=$cxx CXXFLAGS=$extra_flags LDFLAGS=$extra_flags \
      meson setup --force-fallback-for=coro_loop,coro_loop-openssl "$tmp/meson-build" "$tmp/meson-src" &&
    meson compile -C "$tmp/meson-build" -j 2 && check_run "$tmp/meson-build/consumer" &&
    check_tls_run "$tmp/meson-build/consumer_tls"
}

make_install() {
  plain_make install PREFIX="$prefix" || return 1
  for file in include/coro_loop.hpp share/pkgconfig/coro_loop.pc share/cmake/coro_loop/coro_loop-config.cmake \
      share/cmake/coro_loop/coro_loop-config-version.cmake \
      ${tls:+share/pkgconfig/coro_loop-openssl.pc share/cmake/coro_loop/coro_loop-tls-targets.cmake}; do
    [[ -f $prefix/$file ]] || { echo "make install did not install $prefix/$file"; return 1; }
  done
  cmp "$repo/coro_loop.hpp" "$prefix/include/coro_loop.hpp" &&
    # DESTDIR: the files go under it, the paths inside them do not.
    plain_make install DESTDIR="$tmp/destdir" PREFIX=/opt/coro_loop &&
    [[ -f $tmp/destdir/opt/coro_loop/include/coro_loop.hpp ]] &&
    grep -qx 'prefix=/opt/coro_loop' "$tmp/destdir/opt/coro_loop/share/pkgconfig/coro_loop.pc"
}

pkg_config() {
  local flags tls_flags=""
  local -x PKG_CONFIG_PATH=$prefix/share/pkgconfig
  [[ $(pkg-config --modversion coro_loop) == "$version" ]] || { echo "pkg-config --modversion: wrong version"; return 1; }
  pkg-config --exists 'coro_loop >= 0.1' || { echo "pkg-config: coro_loop >= 0.1 not satisfied"; return 1; }
  flags=$(pkg-config --cflags --libs coro_loop) && echo "pkg-config --cflags --libs coro_loop: $flags" || return 1
  [[ " $flags " == *" -I$prefix/include "* ]] || { echo "no -I$prefix/include in the flags"; return 1; }
  if [[ -n $tls ]]; then
    tls_flags=$(pkg-config --cflags --libs coro_loop-openssl) &&
      echo "pkg-config --cflags --libs coro_loop-openssl: $tls_flags" || return 1
    [[ " $tls_flags " == *" -DCORO_LOOP_OPENSSL "* && " $tls_flags " == *" -lssl "* ]] ||
      { echo "no -DCORO_LOOP_OPENSSL or -lssl in the flags"; return 1; }
  fi
  mkdir -p "$tmp/pkg-config" && cp "$consumer/main.cpp" "$consumer/main_tls.cpp" "$tmp/pkg-config/" &&
    compile_both "$tmp/pkg-config" $flags -- $tls_flags
}

cmake_consumer() {   # cmake_consumer BUILD_DIR CMAKE_ARG...
  local build=$1
  shift
  cmake -S "$consumer" -B "$build" -G Ninja -DCMAKE_CXX_COMPILER="$cxx" -DCONSUMER_TLS=${tls:+ON} \
      -DCMAKE_CXX_FLAGS="$extra_flags" -DCMAKE_EXE_LINKER_FLAGS="$extra_flags" "$@" &&
    cmake --build "$build" -j 2 && check_run "$build/consumer" && check_tls_run "$build/consumer_tls"
}

cmake_find_package() {
  cmake_consumer "$tmp/cmake-find" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_FIND_PACKAGE_NO_PACKAGE_REGISTRY=ON &&
    { grep -qx "coro_loop_DIR:PATH=$prefix/share/cmake/coro_loop" "$tmp/cmake-find/CMakeCache.txt" ||
      { echo "find_package did not take coro_loop from $prefix"; return 1; }; }
}

make_uninstall() {
  plain_make uninstall PREFIX="$prefix" &&
    { [[ -z $(find "$prefix" -mindepth 1 2>/dev/null) ]] || { echo "left behind:"; find "$prefix"; return 1; }; } &&
    # DESTDIR: the directories the install made there go too, the staging directory included.
    plain_make uninstall DESTDIR="$tmp/destdir" PREFIX=/opt/coro_loop &&
    { [[ ! -e $tmp/destdir ]] || { echo "left behind:"; find "$tmp/destdir"; return 1; }; }
}

echo "consumer: $cxx${extra_flags:+ $extra_flags}, coro_loop $version, TLS ${tls:-no (no OpenSSL 3 headers)}, in $tmp"
way "copied header" copied_header
way "unused code left out" unused_code_left_out
way "precompiled header" precompiled_header
way "meson subproject" meson_subproject
way "make install" make_install
if [[ -f $prefix/include/coro_loop.hpp ]]; then
  way "pkg-config" pkg_config
  way "cmake find_package" cmake_find_package
fi
way "cmake add_subdirectory" cmake_consumer "$tmp/cmake-subdir" -DCORO_LOOP_SOURCE_DIR="$repo"
way "make uninstall" make_uninstall
echo "consumer: $passed passed, $failed failed"
((failed == 0))
