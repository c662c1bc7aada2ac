#!/usr/bin/env bash
# Installs what `make test-aarch64`, `make test-armhf` (mk/cross.mk), `make test-windows`
# (mk/windows.mk) and the meson cross files (cross/*.ini) need on a Debian 12 x86-64
# host: the aarch64 and armhf cross compilers (their libasan/libubsan come with them:
# the ASan+UBSan run under qemu), qemu-user (qemu-aarch64, qemu-arm; no binfmt is
# needed, the binaries are run through it explicitly), mingw-w64 and 64-bit wine (the
# Windows tests are 64-bit only: no i386 architecture or wine32 needed) and Catch2.
# Debian's catch2 package (v2) is header-only, so the one header serves every
# toolchain; mk/cross.mk and mk/windows.mk compile its main once per toolchain into
# that toolchain's build directory. Idempotent: apt is not touched when everything is
# present.
set -euo pipefail

packages=(
  g++-aarch64-linux-gnu                 # aarch64-linux-gnu-g++ and its sysroot /usr/aarch64-linux-gnu
  g++-arm-linux-gnueabihf               # arm-linux-gnueabihf-g++ and /usr/arm-linux-gnueabihf
  libasan8-arm64-cross libubsan1-arm64-cross   # ASan+UBSan runtimes for the aarch64 sanitizer run
  qemu-user                             # qemu-aarch64, qemu-arm
  g++-mingw-w64-x86-64-posix            # x86_64-w64-mingw32-g++-posix (the -win32 variant has no std::thread)
  wine wine64                           # wine and its 64-bit loader, to run the .exe tests
  catch2                                # header-only Catch2 v2, shared by every toolchain
  make
)

exec "$(dirname "${BASH_SOURCE[0]}")/apt-install-missing.sh" install-cross-deps "${packages[@]}"
