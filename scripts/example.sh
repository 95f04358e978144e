#!/usr/bin/env bash
# Repair the example archive that ships with the repo, from a fresh Debian
# machine: installs what the build needs, builds krepair, and repairs
# testdata/fixtures/keras-3.5/efficientnet_stem/model.keras (the stem of a
# keras.applications EfficientNet loaded with weights="imagenet" in Keras
# 3.5, which ran with identity normalization; keras #20147) into
# target/example/repaired.keras, with the audit report beside it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
cargo build --release --locked --quiet
mkdir -p target/example
rm -f target/example/repaired.keras target/example/report.json
input=testdata/fixtures/keras-3.5/efficientnet_stem/model.keras
set -x
target/release/krepair "$input" target/example/repaired.keras --report target/example/report.json
