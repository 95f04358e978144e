#!/usr/bin/env bash
# Install what the aarch64 release build and its check need, if missing
# (scripts/release.sh, scripts/build-wheel.sh), all from Debian 12's own
# packages:
#   - Debian's Rust 1.9x (rustc-web) and its standard library for
#     aarch64-unknown-linux-gnu (libstd-rust-web-dev:arm64, so the arm64
#     architecture is added to dpkg). rustup's toolchain has no aarch64
#     standard library and can't fetch one here; Debian's compiler is used
#     for the aarch64 target alone (RUSTC=/usr/bin/rustc), with rustup's
#     cargo. It installs as /usr/bin/rustc, behind rustup's on PATH.
#   - qemu-user, to run the aarch64 binary (its libc6:arm64 comes with
#     the standard library), and qemu-user-binfmt, whose binfmt_misc entry
#     this script registers with the kernel (mounting binfmt_misc if it is
#     not): krepair runs each archive in a worker process started from its
#     own executable, and only binfmt_misc makes that exec of an aarch64
#     binary go through qemu too.
# zig, the C compiler and linker for glibc 2.17, comes from PyPI with the
# other build tools (scripts/build-tools.txt). Idempotent and quiet when
# everything is there already.
set -euo pipefail

. "$(dirname "$0")/apt.sh"
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  echo "krepair: adding the arm64 architecture to dpkg (for the aarch64 Rust standard library)" >&2
  as_root dpkg --add-architecture arm64
fi
need=()
dpkg -s rustc-web >/dev/null 2>&1 || need+=(rustc-web)
dpkg -s libstd-rust-web-dev:arm64 >/dev/null 2>&1 || need+=(libstd-rust-web-dev:arm64)
command -v qemu-aarch64 >/dev/null 2>&1 || need+=(qemu-user)
dpkg -s qemu-user-binfmt >/dev/null 2>&1 || need+=(qemu-user-binfmt)
apt_install "for the aarch64 build and its check" "${need[@]}"
# rustc-web and its arm64 standard library must be one version.
host=$(dpkg-query -W -f '${Version}' rustc-web)
arm=$(dpkg-query -W -f '${Version}' libstd-rust-web-dev:arm64)
[ "$host" = "$arm" ] || { echo "krepair: rustc-web $host but libstd-rust-web-dev:arm64 $arm" >&2; exit 1; }

binfmt=/proc/sys/fs/binfmt_misc
if [ ! -e "$binfmt/register" ]; then
  as_root mount -t binfmt_misc binfmt_misc "$binfmt"
fi
if [ ! -e "$binfmt/qemu-aarch64" ]; then
  echo "krepair: registering qemu-aarch64 with binfmt_misc" >&2
  as_root sh -c "cat /usr/lib/binfmt.d/qemu-aarch64.conf > $binfmt/register"
fi
grep -qx enabled "$binfmt/qemu-aarch64" \
  || { echo "krepair: the binfmt_misc entry qemu-aarch64 is not enabled" >&2; exit 1; }
