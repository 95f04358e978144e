#!/usr/bin/env bash
# Build every release artifact into one folder, with checksums:
#   scripts/release.sh [DIR]        (DIR: target/release-artifacts)
#   DIR/krepair-<v>.tar.gz                    the sdist (pip builds it where no wheel fits)
#   DIR/krepair-<v>-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
#   DIR/krepair-<v>-py3-none-manylinux2014_aarch64.manylinux_2_17_aarch64.whl
#   DIR/krepair-<v>-x86_64-linux-gnu          the binary inside the x86_64 wheel
#   DIR/krepair-<v>-aarch64-linux-gnu         the binary inside the aarch64 wheel
#   DIR/SHA256SUMS                            sha256sum -c SHA256SUMS checks them
# Both wheels are built from the sdist, by pip, as pip builds it on a
# machine no wheel fits. They carry the static binary (HDF5 and zlib built
# from the sources bundled with the hdf5 crate, linked in). zig compiles the C and links
# against glibc 2.17's symbols (maturin --zig), so the binaries run on
# glibc 2.17 or newer: RHEL/CentOS 7 and 8, Ubuntu 18.04 and newer. The
# aarch64 one is compiled by Debian's rustc with Debian's aarch64 standard
# library (scripts/cross-deps.sh): rustup has no aarch64 standard library
# here. scripts/build-wheel.sh checks what this builds.
# Takes about 8 minutes from clean on 2 cores (two HDF5 builds).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(scripts/build-env.sh)
scripts/cross-deps.sh
out=${1:-target/release-artifacts}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[ -n "$version" ] || { echo "release: no version in Cargo.toml" >&2; exit 1; }
rm -rf "$out"
mkdir -p "$out"

"$tools/maturin" sdist --out "$out" >&2
sdist=$out/krepair-$version.tar.gz
[ -f "$sdist" ] || { echo "release: maturin made no $sdist" >&2; exit 1; }

# wheel TARGET [VAR=VALUE...]: the manylinux2014 wheel for TARGET, built
# from the sdist the way pip builds any sdist: in an isolated environment
# that holds only the [build-system] requires of pyproject.toml (maturin,
# cmake >= 3.26; CMAKE is unset so that cmake is the one used), so each
# wheel also proves the sdist complete. MATURIN_PEP517_ARGS gives maturin
# the zig linker, the platform and the target. zig is the binary inside
# the ziglang package, put on PATH: pip's isolation hides the tools'
# site-packages, so maturin can't run it as `python -m ziglang`.
# --no-cache-dir: pip would otherwise store every wheel it builds in its
# cache.
zig=$("$tools/python" -c 'import os, ziglang; print(os.path.dirname(ziglang.__file__))')
[ -x "$zig/zig" ] || { echo "release: no zig binary in $zig (scripts/build-tools.txt: ziglang)" >&2; exit 1; }
wheel() {
  local target=$1
  shift
  env -u CMAKE "$@" PATH="$zig:$PATH" CARGO_TARGET_DIR="$PWD/target/zig" \
    MATURIN_PEP517_ARGS="--zig --compatibility manylinux2014 --target $target" \
    "$tools/pip" wheel --quiet --no-deps --no-cache-dir --disable-pip-version-check \
    --wheel-dir "$out" "$sdist" >&2
}
wheel x86_64-unknown-linux-gnu
wheel aarch64-unknown-linux-gnu RUSTC=/usr/bin/rustc

# The bare binaries are the very bytes the wheels install.
"$tools/python" - "$out" "$version" <<'PY'
import glob, os, sys, zipfile
out, version = sys.argv[1], sys.argv[2]
for arch in ("x86_64", "aarch64"):
    (wheel,) = glob.glob(os.path.join(out, f"krepair-{version}-py3-none-*_{arch}.whl"))
    with zipfile.ZipFile(wheel) as z:
        data = z.read(f"krepair-{version}.data/scripts/krepair")
    path = os.path.join(out, f"krepair-{version}-{arch}-linux-gnu")
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, 0o755)
PY

(cd "$out" && sha256sum -- krepair-* > SHA256SUMS)
echo "release artifacts in $out:"
(cd "$out" && ls -l -- * | awk '{printf "  %10d  %s\n", $5, $NF}')
