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
#   4. the sdist is what both wheels were built from, by pip in an
#      isolated environment holding only the [build-system] requires of
#      pyproject.toml (scripts/release.sh), so installing the x86_64 wheel
#      (2.) also installs what the sdist builds.
#   scripts/build-wheel.sh   ->  target/release-artifacts/ (see release.sh)
# The wheels compile into target/zig. Each section's wall time is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(scripts/build-env.sh)
# section NAME: say how long the last section took and start the next.
section_start=$SECONDS
section() {
  echo "build-wheel: $* (at $((SECONDS - section_start)) s)"
}
dist=target/release-artifacts
section "release artifacts"
scripts/release.sh "$dist"
# The version is the one release.sh put in the sdist's name.
sdist=$(ls "$dist"/krepair-*.tar.gz)
version=${sdist##*/krepair-}
version=${version%.tar.gz}
(cd "$dist" && sha256sum --quiet -c SHA256SUMS)
example=testdata/fixtures/keras-3.5/efficientnet_stem/model.keras
out=target/wheel-check
rm -rf "$out"
mkdir -p "$out"

# 1. The platform tags and what the binaries link.
section "platform tags"
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
section "the x86_64 wheel installed"
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
section "the aarch64 binary under qemu against the x86_64 one"
arm=$PWD/$dist/krepair-$version-aarch64-linux-gnu
x86=$PWD/$dist/krepair-$version-x86_64-linux-gnu
file "$arm" | grep -q "ARM aarch64" || { echo "$arm is not an aarch64 executable" >&2; exit 1; }
"$arm" --version | grep -q "bundled, statically linked" \
  || { echo "the aarch64 binary is not the static build" >&2; exit 1; }
"$arm" -q "$example" "$out/repaired-aarch64.keras"
cmp "$out/repaired.keras" "$out/repaired-aarch64.keras" \
  || { echo "the aarch64 binary repaired the example to other bytes" >&2; exit 1; }
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
# differential DIR FIXTURE...: every run of `same` on each fixture, in DIR
# (the folder both binaries run in); the number of runs goes to DIR/runs.
differential() {
  local cross=$1 model in name runs=0
  shift
  mkdir -p "$cross"
  for model in "$@"; do
    in=$PWD/$model
    name=${model#testdata/fixtures/}
    same "repair $name" -q --report report.json "$in" out.keras || return 1
    same "inspect $name" inspect --json "$in" || return 1
    case $model in
      testdata/fixtures/keras-tf2.*/* | testdata/fixtures/migrate-*/*)
        same "migrate $name" migrate -q --report report.json "$in" out.keras || return 1 ;;
    esac
  done
  echo "$runs" > "$cross/runs"
}
# Half the fixtures on each core: qemu is the slow part.
fixtures=(testdata/fixtures/*/*/model.keras)
half=$(((${#fixtures[@]} + 1) / 2))
differential "$out/cross-1" "${fixtures[@]:0:half}" &
first=$!
differential "$out/cross-2" "${fixtures[@]:half}" &
second=$!
code=0
wait "$first" || code=1
wait "$second" || code=1
[ "$code" = 0 ] || exit 1
runs=$(($(cat "$out/cross-1/runs") + $(cat "$out/cross-2/runs")))
echo "aarch64 under qemu: $runs runs on ${#fixtures[@]} fixtures, each the same as x86_64 (exit code, stdout, output bytes, report)"
section "done"
