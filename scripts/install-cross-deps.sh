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

exec "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" install-cross-deps "${packages[@]}"
