#!/usr/bin/env bash
# Benchmark krepair against `cp` (the physical floor) and the Python route
# (load with Keras, finalize_state(), save) in one run. Not part of the
# tests: timings are printed, never asserted.
#   scripts/bench.sh            # EfficientNetB0; 64 MiB, 256 MiB, 1 GiB archives;
#                               # migrate of tf.keras EfficientNetB0 (.keras and
#                               # legacy .h5); 100, 1,000
#                               # and 3,000 layers; batch of 200 archives
# Builds what it needs: the release and static binaries, the Keras 3.5 venv, the
# EfficientNetB0 archive (testdata/generate.py) and the padded archives
# (scripts/make_big_archive.py), all under target/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
command -v /usr/bin/time >/dev/null || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
# Both builds, one row each: the default (Debian's shared HDF5 1.10) and
# the static one the wheel ships (HDF5 2.2, scripts/build-static.sh).
# KREPAIR_BENCH_STATIC=0 measures the default build only.
cargo build --release --locked --quiet
bins=(default=target/release/krepair)
if [ "${KREPAIR_BENCH_STATIC:-1}" != 0 ]; then
  bins+=("static=$(scripts/build-static.sh 2>/dev/null | sed -n 1p)")
fi
builds=()
for b in "${bins[@]}"; do builds+=(--krepair "$b"); done
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
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(. /etc/os-release && echo "$PRETTY_NAME")"
echo
python3 scripts/bench.py "${builds[@]}" --work target/bench/work --header \
  --keras-python "$py" target/bench/efficientnetb0.keras
python3 scripts/bench.py "${builds[@]}" --work target/bench/work \
  target/bench/big-64.keras target/bench/big-256.keras target/bench/big-1024.keras
# `krepair migrate` on keras.applications EfficientNetB0 saved by tf.keras
# 2.15 (no Python route exists: no Keras 3 loads the input).
pytf=$(scripts/python-env.sh tf2.15)
[ -f target/bench/tf2.15/efficientnetb0/model.keras ] || "$pytf" testdata/generate.py \
  --applications --out target/bench/tf2.15 >/dev/null
# The same model as a legacy HDF5 file (model.save("m.h5"), tf.keras 2.15).
h5=target/bench/tf2.15/efficientnetb0-h5/model.h5
if [ ! -f "$h5" ]; then
  mkdir -p "$(dirname "$h5")"
  "$pytf" -c 'import sys, tensorflow as tf; tf.keras.models.load_model(sys.argv[1]).save(sys.argv[2], save_format="h5")' \
    target/bench/tf2.15/efficientnetb0/model.keras "$h5" 2>/dev/null
fi
python3 scripts/bench.py --migrate "${builds[@]}" --work target/bench/work \
  target/bench/tf2.15/efficientnetb0/model.keras "$h5"
python3 scripts/bench.py "${builds[@]}" --work target/bench/work \
  target/bench/layers-100.keras target/bench/layers-1000.keras \
  target/bench/layers-3000.keras
echo
scripts/bench_batch.sh "${bins[@]}"
