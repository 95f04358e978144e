#!/usr/bin/env bash
# Benchmark krepair against `cp` (the physical floor) and the Python route
# (load with Keras, finalize_state(), save) in one run. Not part of the
# tests: timings are printed, never asserted.
#   scripts/bench.sh            # EfficientNetB0; 64 MiB, 256 MiB, 1 GiB archives;
#                               # 100, 1,000 and 3,000 layers
# Builds what it needs: the release binary, the Keras 3.5 venv, the
# EfficientNetB0 archive (testdata/generate.py) and the padded archives
# (scripts/make_big_archive.py), all under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
# KREPAIR_BIN=target/static/dist/krepair scripts/bench.sh measures another
# build (here: the static one from scripts/build-static.sh).
bin=${KREPAIR_BIN:-target/release/krepair}
[ -n "${KREPAIR_BIN:-}" ] || cargo build --release --locked --quiet
py=$(scripts/python-env.sh 3.5)
mkdir -p target/bench
if [ ! -f target/bench/efficientnetb0.keras ]; then
  "$py" testdata/generate.py --efficientnet --out target/bench/gen >/dev/null
  cp target/bench/gen/efficientnet/model.keras target/bench/efficientnetb0.keras
fi
for s in 64 256 1024; do
  [ -f "target/bench/big-$s.keras" ] || "$py" scripts/make_big_archive.py \
    testdata/fixtures/keras-3.15/axis_last/model.keras "target/bench/big-$s.keras" "$s"
done
for n in 100 1000 3000; do
  [ -f "target/bench/layers-$n.keras" ] || "$py" scripts/make_layers_archive.py \
    "target/bench/layers-$n.keras" "$n"
done
python3 scripts/bench.py --krepair "$bin" --work target/bench/work \
  --keras-python "$py" target/bench/efficientnetb0.keras
python3 scripts/bench.py --krepair "$bin" --work target/bench/work \
  target/bench/big-64.keras target/bench/big-256.keras target/bench/big-1024.keras | tail -n +3
# `krepair migrate` on keras.applications EfficientNetB0 saved by tf.keras
# 2.15 (no Python route exists: no Keras 3 loads the input).
pytf=$(scripts/python-env.sh tf2.15)
[ -f target/bench/tf2.15/efficientnetb0/model.keras ] || "$pytf" testdata/generate.py \
  --applications --out target/bench/tf2.15 >/dev/null
python3 scripts/bench.py --migrate --krepair "$bin" --work target/bench/work \
  target/bench/tf2.15/efficientnetb0/model.keras | tail -n +3
python3 scripts/bench.py --krepair "$bin" --work target/bench/work \
  target/bench/layers-100.keras target/bench/layers-1000.keras \
  target/bench/layers-3000.keras | tail -n +3
