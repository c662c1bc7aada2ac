#!/usr/bin/env bash
# scripts/apt-install-missing.sh NAME PACKAGE... - installs the Debian packages of the
# list that are not installed yet, for the install-*-deps.sh scripts (NAME prefixes the
# messages). Idempotent: apt is not touched when everything is present. Without root or
# apt-get it names what is missing and fails. The package lists are updated only when
# an install cannot proceed without it.
set -euo pipefail

name=$1
shift
missing=()
for package in "$@"; do
  status=$(dpkg-query -W -f='${db:Status-Status}' "$package" 2>/dev/null || true)
  [[ $status == installed ]] || missing+=("$package")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "$name: missing: ${missing[*]}" >&2
  echo "  Debian/Ubuntu: sudo apt-get install ${missing[*]}" >&2
  exit 1
fi

export DEBIAN_FRONTEND=noninteractive
echo "$name: installing ${missing[*]}"
if ! apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"; then
  apt-get update -q -o Dpkg::Use-Pty=0
  apt-get install -y -q -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
fi
