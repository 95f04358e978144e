#!/usr/bin/env bash
# Batch benchmark (not a test): 200 archives of mixed sizes, repaired by
# `krepair batch --jobs 1`, `--jobs 2`, and by 200 single-file runs; and
# the per-archive cost of a worker: `batch --dry-run --jobs 1` over 200
# copies of one small archive, divided by 200 (an upper bound: it holds
# the archive's own work too). Medians of 3 runs. Timings are printed,
# never asserted.
#   scripts/bench_batch.sh [LABEL=BINARY ...]    (default: the release build)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/system-deps.sh
if [ $# -eq 0 ]; then
  cargo build --release --locked --quiet
  set -- default=target/release/krepair
fi
py=$(scripts/python-env.sh 3.15)
tree=target/bench/tree
small=testdata/fixtures/keras-3.15/axis_last/model.keras
if [ ! -f "$tree/.complete" ]; then
  rm -rf "$tree"; mkdir -p "$tree"
  "$py" scripts/make_big_archive.py "$small" target/bench/pad-4.keras 4
  "$py" scripts/make_big_archive.py "$small" target/bench/pad-32.keras 32
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
tiny=target/bench/tiny
if [ ! -f "$tiny/.complete" ]; then
  rm -rf "$tiny"; mkdir -p "$tiny"
  for k in $(seq 1 200); do cp "$small" "$tiny/m$k.keras"; done
  touch "$tiny/.complete"
fi
n=$(find "$tree" -name '*.keras' | wc -l)
bytes=$(du -sb "$tree" | cut -f1)
out=target/bench/tree-out
# The median wall time of 3 runs of "$@", in seconds (the output removed
# before each).
med() {
  python3 - "$out" "$@" <<'EOF'
import shutil, statistics, subprocess, sys, time
out, cmd = sys.argv[1], sys.argv[2:]
ts = []
for _ in range(3):
    shutil.rmtree(out, ignore_errors=True)
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ts.append(time.perf_counter() - t)
print(f"{statistics.median(ts):.3f}")
EOF
}
single() {
  mkdir -p "$out"
  find "$tree" -name '*.keras' | sort | while read -r f; do
    "$bin" -q "$f" "$out/$(echo "$f" | tr / _)" || true
  done
}
echo "tree: $n archives, $((bytes / 1048576)) MiB; tiny: 200 copies of $small"
echo
printf '| build | %d single-file runs s | batch --jobs 1 s | batch --jobs 2 s | --jobs 2 vs --jobs 1 | batch vs single runs | worker cost per archive ms |\n' "$n"
printf '|---|---:|---:|---:|---:|---:|---:|\n'
for build in "$@"; do
  label=${build%%=*}; bin=${build#*=}
  export bin tree out
  s=$(med bash -c "$(declare -f single); single")
  j1=$(med "$bin" batch -q --jobs 1 --out "$out" "$tree")
  j2=$(med "$bin" batch -q --jobs 2 --out "$out" "$tree")
  w=$(med "$bin" batch -q --dry-run --jobs 1 "$tiny")
  python3 -c "
s, j1, j2, w = $s, $j1, $j2, $w
print(f'| $label | {s:.2f} | {j1:.2f} | {j2:.2f} | {j1 / j2:.2f}x | {s / j1:.2f}x | {w / 200 * 1e3:.2f} |')"
done
rm -rf "$out"
