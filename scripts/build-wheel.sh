#!/usr/bin/env bash
# Build the source distribution and the Python wheel (maturin, bindings =
# "bin", HDF5 linked in), audit the wheel, install it into a fresh venv
# with no package index, and prove it works there: `krepair --version`, no
# libhdf5 among its libraries, and a repair of the bundled example. The
# sdist is built the way pip builds it where no wheel fits (in an isolated
# environment holding only the [build-system] requires of pyproject.toml,
# maturin and cmake >= 3.26, with Rust and a C compiler and no CMAKE given),
# installed into another venv, and must repair the example to the same
# bytes.
#   scripts/build-wheel.sh   ->  target/sdist/krepair-<version>.tar.gz
#                                target/wheels/krepair-<version>-py3-none-<platform>.whl
# Compiles into target/static, shared with scripts/build-static.sh: the
# build from the sdist comes first, so on a clean tree (CI) the bundled
# HDF5 is built with the cmake the build requirements bring.
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(scripts/build-env.sh)
rm -rf target/wheels target/sdist target/sdist-wheel
"$tools/maturin" sdist --out target/sdist >&2
sdist=$(ls target/sdist/krepair-*.tar.gz)
echo "sdist: $sdist ($(stat -c %s "$sdist") bytes)"
env -u CMAKE CARGO_TARGET_DIR="$PWD/target/static" "$tools/pip" wheel --quiet --no-deps \
  --disable-pip-version-check --wheel-dir target/sdist-wheel "$sdist" >&2
CMAKE="$tools/cmake" "$tools/maturin" build --profile dist --target-dir target/static \
  --out target/wheels >&2
wheel=$(ls target/wheels/krepair-*.whl)
echo "wheel: $wheel ($(stat -c %s "$wheel") bytes)"
"$tools/auditwheel" show "$wheel"

venv=target/wheel-venv
rm -rf "$venv"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --no-index --disable-pip-version-check "$wheel"
bin="$venv/bin/krepair"
"$bin" --version
"$bin" --version | grep -q "bundled, statically linked" \
  || { echo "the wheel's binary is not the static build" >&2; exit 1; }
if ldd "$bin" | grep -qi hdf5; then
  echo "the wheel's binary links a shared libhdf5:" >&2
  ldd "$bin" >&2
  exit 1
fi
out=target/wheel-check
rm -rf "$out"
mkdir -p "$out"
"$bin" -q --report "$out/report.json" \
  testdata/fixtures/keras-3.5/efficientnet_stem/model.keras "$out/repaired.keras"
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

# The sdist's own build, installed as pip installs from source.
svenv=target/sdist-venv
rm -rf "$svenv"
python3 -m venv "$svenv"
"$svenv/bin/pip" install --quiet --no-index --disable-pip-version-check target/sdist-wheel/krepair-*.whl
"$svenv/bin/krepair" --version | grep -q "bundled, statically linked" \
  || { echo "the sdist's binary is not the static build" >&2; exit 1; }
"$svenv/bin/krepair" -q testdata/fixtures/keras-3.5/efficientnet_stem/model.keras \
  "$out/from-sdist.keras"
cmp "$out/repaired.keras" "$out/from-sdist.keras" \
  || { echo "the sdist's binary repaired the example to other bytes" >&2; exit 1; }
echo "sdist install: built from $sdist with only its build requirements; it repairs the example to the same bytes"
