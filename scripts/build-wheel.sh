#!/usr/bin/env bash
# Build every release artifact (scripts/release.sh: the sdist, the
# manylinux2014 wheels for x86_64 and aarch64, their binaries, SHA256SUMS)
# and prove each works:
#   1. auditwheel names manylinux_2_17 for both wheels, and no binary needs
#      a glibc symbol newer than 2.17 or a libhdf5;
#   2. the x86_64 wheel installs into a fresh venv with no package index;
#      its binary is the static build and repairs the bundled example
#      (scripts/test.sh then runs the real-Keras check with it);
#   3. the aarch64 binary runs under qemu-user and, on every committed
#      fixture, gives what the x86_64 binary gives: the same exit code, the
#      same output bytes and report for a repair (and, for tf.keras
#      archives, a migration), the same `inspect --json`;
#   4. the sdist is built the way pip builds it where no wheel fits (in an
#      isolated environment holding only the [build-system] requires of
#      pyproject.toml, maturin and cmake >= 3.26, with Rust and a C
#      compiler and no CMAKE given), installed into another venv, and
#      repairs the example to the same bytes.
#   scripts/build-wheel.sh   ->  target/release-artifacts/ (see release.sh)
# The sdist's build compiles into target/static, shared with
# scripts/build-static.sh; the wheels into target/zig.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(scripts/build-env.sh)
dist=target/release-artifacts
scripts/release.sh "$dist"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
(cd "$dist" && sha256sum --quiet -c SHA256SUMS)
example=testdata/fixtures/keras-3.5/efficientnet_stem/model.keras
out=target/wheel-check
rm -rf "$out"
mkdir -p "$out"

# 1. The platform tags and what the binaries link.
for arch in x86_64 aarch64; do
  wheel=$(ls "$dist"/krepair-"$version"-py3-none-*_"$arch".whl)
  echo "wheel: $wheel ($(stat -c %s "$wheel") bytes)"
  "$tools/auditwheel" show "$wheel" | tee "$out/auditwheel-$arch.txt"
  grep -q "\"manylinux_2_17_$arch\"" "$out/auditwheel-$arch.txt" \
    || { echo "auditwheel does not name manylinux_2_17_$arch for $wheel" >&2; exit 1; }
  bin="$dist/krepair-$version-$arch-linux-gnu"
  newest=$(objdump -T "$bin" | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -1)
  [ "$(printf '%s\n' "$newest" GLIBC_2.17 | sort -V | tail -1)" = GLIBC_2.17 ] \
    || { echo "$bin needs $newest, newer than glibc 2.17" >&2; exit 1; }
  if objdump -p "$bin" | grep NEEDED | grep -qi hdf5; then
    echo "$bin links a shared libhdf5" >&2
    exit 1
  fi
  echo "$arch: newest glibc symbol $newest; needs $(objdump -p "$bin" | awk '/NEEDED/ {print $2}' | tr '\n' ' ')"
done

# 2. The x86_64 wheel in a fresh venv.
venv=target/wheel-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-index --disable-pip-version-check \
  "$dist"/krepair-"$version"-py3-none-*_x86_64.whl
bin="$venv/bin/krepair"
cmp "$bin" "$dist/krepair-$version-x86_64-linux-gnu"
"$bin" --version
"$bin" --version | grep -q "bundled, statically linked" \
  || { echo "the wheel's binary is not the static build" >&2; exit 1; }
"$bin" -q --report "$out/report.json" "$example" "$out/repaired.keras"
python3 - "$out/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["outcome"] == "repaired", r["outcome"]
assert [l["status"] for l in r["layers"]] == ["repaired"], r["layers"]
print("wheel install: krepair repaired the bundled example "
      f"({r['output']['path']}, sha256 {r['output']['sha256'][:16]}...)")
PY
"$bin" --dry-run "$out/repaired.keras" >/dev/null
echo "wheel install: the repaired example has nothing left to repair"

# 3. The aarch64 binary under qemu-user (binfmt_misc, scripts/cross-deps.sh)
# against the x86_64 one, fixture by fixture. Both run in one folder with
# the same argument strings, so even the paths in the reports agree.
arm=$PWD/$dist/krepair-$version-aarch64-linux-gnu
x86=$PWD/$dist/krepair-$version-x86_64-linux-gnu
file "$arm" | grep -q "ARM aarch64" || { echo "$arm is not an aarch64 executable" >&2; exit 1; }
"$arm" --version | grep -q "bundled, statically linked" \
  || { echo "the aarch64 binary is not the static build" >&2; exit 1; }
"$arm" -q "$example" "$out/repaired-aarch64.keras"
cmp "$out/repaired.keras" "$out/repaired-aarch64.keras" \
  || { echo "the aarch64 binary repaired the example to other bytes" >&2; exit 1; }
cross=$out/cross
mkdir -p "$cross"
# same NAME ARGS...: run ARGS with each binary in $cross (the output and
# report, if any, at out.keras and report.json there) and require the
# same exit code, stdout, output and report.
same() {
  local name=$1 bin code
  shift
  for bin in x86 arm; do
    rm -rf "$cross/out.keras" "$cross/report.json"
    code=0
    (cd "$cross" && "${!bin}" "$@" > "stdout.$bin" 2> "stderr.$bin") || code=$?
    echo "$code" > "$cross/code.$bin"
    [ -e "$cross/out.keras" ] && mv "$cross/out.keras" "$cross/out.$bin"
    [ -e "$cross/report.json" ] && mv "$cross/report.json" "$cross/report.$bin"
  done
  local f
  for f in code stdout out report; do
    if [ -e "$cross/$f.x86" ] || [ -e "$cross/$f.arm" ]; then
      cmp -s "$cross/$f.x86" "$cross/$f.arm" || {
        echo "not ok $name: $f differs between x86_64 and aarch64 ($(cat "$cross/stderr.arm"))" >&2
        return 1
      }
    fi
  done
  rm -f "$cross"/*.x86 "$cross"/*.arm
  runs=$((runs + 1))
}
runs=0
for model in testdata/fixtures/*/*/model.keras; do
  in=$PWD/$model
  name=${model#testdata/fixtures/}
  same "repair $name" -q --report report.json "$in" out.keras
  same "inspect $name" inspect --json "$in"
  case $model in
    testdata/fixtures/keras-tf2.*/* | testdata/fixtures/migrate-*/*)
      same "migrate $name" migrate -q --report report.json "$in" out.keras ;;
  esac
done
echo "aarch64 under qemu: $runs runs on $(ls testdata/fixtures/*/*/model.keras | wc -l) fixtures, each the same as x86_64 (exit code, stdout, output bytes, report)"

# 4. The sdist, built as pip builds from source and installed.
sdist=$(ls "$dist"/krepair-"$version".tar.gz)
rm -rf target/sdist-wheel
env -u CMAKE CARGO_TARGET_DIR="$PWD/target/static" "$tools/pip" wheel --quiet --no-deps \
  --disable-pip-version-check --wheel-dir target/sdist-wheel "$sdist" >&2
svenv=target/sdist-venv
rm -rf "$svenv"
python3 -m venv "$svenv"
"$svenv/bin/pip" install --quiet --no-index --disable-pip-version-check target/sdist-wheel/krepair-*.whl
"$svenv/bin/krepair" --version | grep -q "bundled, statically linked" \
  || { echo "the sdist's binary is not the static build" >&2; exit 1; }
"$svenv/bin/krepair" -q "$example" "$out/from-sdist.keras"
cmp "$out/repaired.keras" "$out/from-sdist.keras" \
  || { echo "the sdist's binary repaired the example to other bytes" >&2; exit 1; }
echo "sdist install: built from $sdist with only its build requirements; it repairs the example to the same bytes"
