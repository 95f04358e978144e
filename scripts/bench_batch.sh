#!/usr/bin/env bash
# Batch benchmark (not a test): 200 archives of mixed sizes, repaired by
# `krepair batch --jobs 1`, `--jobs 2`, and by 200 single-file runs.
#   scripts/bench_batch.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
cargo build --release --locked --quiet
command -v bc >/dev/null || { apt-get update -qq && apt-get install -y -qq bc >/dev/null; }
bin=target/release/krepair
py=$(scripts/python-env.sh 3.15)
tree=target/bench/tree
if [ ! -f "$tree/.complete" ]; then
  rm -rf "$tree"; mkdir -p "$tree"
  src=testdata/fixtures/keras-3.15/axis_last/model.keras
  "$py" scripts/make_big_archive.py "$src" target/bench/pad-4.keras 4
  "$py" scripts/make_big_archive.py "$src" target/bench/pad-32.keras 32
  i=0
  for f in testdata/fixtures/keras-*/*/model.keras; do
    for k in $(seq 1 12); do
      i=$((i + 1)); [ $i -le 150 ] || break 2
      mkdir -p "$tree/small/$((i % 10))"; cp "$f" "$tree/small/$((i % 10))/m$i.keras"
    done
  done
  for k in $(seq 1 40); do mkdir -p "$tree/medium"; cp target/bench/pad-4.keras "$tree/medium/m$k.keras"; done
  for k in $(seq 1 10); do mkdir -p "$tree/large"; cp target/bench/pad-32.keras "$tree/large/m$k.keras"; done
  touch "$tree/.complete"
fi
n=$(find "$tree" -name '*.keras' | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
echo "tree: $n archives, $((bytes / 1048576)) MiB"
t() { local s e; s=$(date +%s.%N); "$@" >/dev/null 2>&1 || true; e=$(date +%s.%N); echo "$e - $s" | bc; }
out=target/bench/tree-out
rm -rf "$out"; j1=$(t "$bin" batch -q --jobs 1 --out "$out" "$tree")
rm -rf "$out"; j2=$(t "$bin" batch -q --jobs 2 --out "$out" "$tree")
rm -rf "$out"; mkdir -p "$out"
single() { find "$tree" -name '*.keras' | sort | while read -r f; do "$bin" -q "$f" "$out/$(echo "$f" | tr / _)"; done; }
s=$(t single)
printf '| runs | wall s | speed-up vs single runs |\n|---|---:|---:|\n'
printf '| %d single-file runs | %.2f | 1.00x |\n' "$n" "$s"
printf '| batch --jobs 1 | %.2f | %.2fx |\n' "$j1" "$(echo "$s / $j1" | bc -l)"
printf '| batch --jobs 2 | %.2f | %.2fx |\n' "$j2" "$(echo "$s / $j2" | bc -l)"
printf '\n--jobs 2 against --jobs 1: %.2fx faster\n' "$(echo "$j1 / $j2" | bc -l)"
