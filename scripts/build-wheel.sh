#!/usr/bin/env bash
# Build the Python wheel (maturin, bindings = "bin", HDF5 linked in),
# audit it, install it into a fresh venv with no package index, and prove
# it works there: `krepair --version`, no libhdf5 among its libraries, and
# a repair of the bundled example.
#   scripts/build-wheel.sh   ->  target/wheels/krepair-<version>-py3-none-<platform>.whl
# Shares target/static with scripts/build-static.sh (a warm build is quick).
set -euo pipefail
cd "$(dirname "$0")/.."
tools=$(scripts/build-env.sh)
rm -rf target/wheels
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
