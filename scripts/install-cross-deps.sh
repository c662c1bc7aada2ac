#!/usr/bin/env bash
# Installs what `make test-aarch64` and `make test-armhf` (mk/cross.mk) and the meson
# cross files (cross/*.ini) need on a Debian 12 x86-64 host: the aarch64 and armhf
# cross compilers (their libasan/libubsan come with them: the ASan+UBSan run under
# qemu), qemu-user (qemu-aarch64, qemu-arm; no binfmt is needed, the binaries are run
# through it explicitly) and Catch2. Debian's catch2 package (v2) is header-only, so
# the one header serves every toolchain; mk/cross.mk compiles its main once per
# toolchain into that toolchain's build directory. Idempotent: apt is not touched
# when everything is present.
set -euo pipefail

packages=(
  g++-aarch64-linux-gnu                 # aarch64-linux-gnu-g++ and its sysroot /usr/aarch64-linux-gnu
  g++-arm-linux-gnueabihf               # arm-linux-gnueabihf-g++ and /usr/arm-linux-gnueabihf
  libasan8-arm64-cross libubsan1-arm64-cross   # ASan+UBSan runtimes for the aarch64 sanitizer run
  qemu-user                             # qemu-aarch64, qemu-arm
  catch2                                # header-only Catch2 v2, shared by every toolchain
  make
)

missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "install-cross-deps: missing: ${missing[*]}" >&2
  echo "  Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-cross-deps: installing ${missing[*]}"
# Update the package lists only when the install cannot proceed without it.
if ! apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"; then
  apt-get update -q -o Dpkg::Use-Pty=0
  apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
fi
