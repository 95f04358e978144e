#!/usr/bin/env bash
# Run every test krepair has, from a fresh Debian machine:
#   1. system packages (scripts/system-deps.sh: libhdf5-dev, pkg-config);
#   2. cargo fmt --check, clippy -D warnings, cargo test (unit, CLI and
#      repair tests on the committed real-Keras fixtures);
#   3. the real-Keras check: pinned Keras venvs (scripts/python-env.sh),
#      the reporter's EfficientNetB0 model generated with Keras 3.5 and
#      3.15, then every fixture repaired by the release binary and loaded
#      in each Keras (scripts/check_keras.py), and the tf.keras 2.12, 2.13
#      and 2.14 fixtures repaired and loaded in tf.keras 2.12, 2.13, 2.14
#      (with the Discretization cases: the unrepaired reload loses the
#      bins, the repaired one predicts the in-memory model);
#   3b. the migration check: the layer zoo (testdata/zoo.py: one model
#      per layer class, written by tf.keras 2.12 to 2.15 and tf_keras
#      2.21) migrated and loaded in Keras 3.0.5, 3.15.1 and the pinned
#      pre-release keras-nightly, and in 3.15.1 on TensorFlow; the same
#      zoo saved as legacy HDF5 (.h5) by tf.keras 2.12 to 2.15 and tf_keras
#      2.21, and as HDF5 under a .keras name by tf.keras 2.12, migrated and
#      checked in 3.0.5, 3.15.1 and the pre-release; the zoo saved as .h5
#      by Keras 3.0.5 and 3.15.1, each checked in the Keras that wrote it
#      (another Keras 3 is issue #33's); the zoo saved as .keras by every
#      pinned Keras 3 (3.0.5 to 3.15.1), repaired (`krepair IN OUT`, made
#      to load in every Keras 3) and loaded in 3.0.5, 3.15.1 and the
#      pre-release, and a representative subset of the zoos of 3.0.5 and
#      3.15.1 in 3.5, 3.6, 3.10 and 3.13, with the committed cases
#      (scripts/check_cross.py; the matrix by scripts/cross_matrix.py);
#      the Keras 3 table (scripts/keras3_table.py) probed in every Keras 3
#      and checked against src/passes/keras3/compat.json; the layer
#      table (scripts/layer_table.py) checked against every writer and
#      reader and docs/layers.md against its output; and every tf.keras 2.12 to 2.15 fixture
#      (made by testdata/generate.py with the pins keras-tf2.1x.txt;
#      regenerate with scripts/python-env.sh tf2.13), and MobileNetV2
#      and EfficientNetB0 generated with tf.keras 2.15, migrated by the
#      release binary and loaded in Keras 3.0, 3.5, 3.6, 3.10, 3.13 and
#      3.15 (scripts/check_migrate.py);
#   3c. the inspect check: `krepair inspect --json` of every committed
#      fixture against what the Keras that made it builds and loads
#      (scripts/check_inspect.py), and of every migrated tf.keras fixture
#      in Keras 3.15; `krepair diff` of two fine-tuning checkpoints of
#      each Keras 3 fixture against numpy;
#   4. the release artifacts (scripts/build-wheel.sh): the sdist and the
#      manylinux2014 x86_64 and aarch64 wheels built from it by pip (the
#      static binary with the bundled HDF5), audited, the x86_64 one
#      installed into a fresh venv and used there to repair the bundled
#      example, the aarch64 binary under qemu against the x86_64 one on
#      every fixture; then the real-Keras check (Keras 3.15) with the
#      wheel's binary.
# Set KREPAIR_SKIP_KERAS=1 to stop after step 2 (no Python needed), and
# KREPAIR_SKIP_WHEEL=1 to skip step 4.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

# step NAME: start the next step. Each step's wall time is printed when the
# next one starts, and all of them, with the total, when the run ends.
times=()
step_name=""
step_start=$SECONDS
end_step() {
  [ -n "$step_name" ] || return 0
  local took=$((SECONDS - step_start))
  times+=("$(printf '%5d s  %s' "$took" "$step_name")")
  printf '   (%d s)\n' "$took"
}
step() {
  end_step
  step_name=$*
  step_start=$SECONDS
  printf '\n== [%d:%02d] %s (disk free: %s)\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*" "$(disk_free)"
}
# disk_free: what is free on the disk of the working tree. A whole run
# needs about 14 GB (the venvs 7.5, target/ 6); a CI run that ran out
# of disk (a pip cache and pip's separate copies took 16 GB) is how this
# came to be printed.
disk_free() {
  df -h --output=avail . 2>/dev/null | tail -1 | tr -d ' '
}
# tidy DIR...: on CI, remove what only this run reads, once read, so
# that the run's disk use stays near its peak step's rather than the sum.
tidy() {
  [ "${CI:-}" = true ] || return 0
  rm -rf "$@"
}
summary() {
  local code=$?
  end_step
  step_name=""
  printf '\n== wall time of each step\n'
  printf '%s\n' "${times[@]}"
  printf '%5d s  in all (exit %d), disk free at the end: %s\n' "$SECONDS" "$code" "$(disk_free)"
}
trap summary EXIT

step "system packages"
scripts/system-deps.sh

step "cargo fmt --check"
cargo fmt --check
step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets --locked -- -D warnings
step "cargo test (the fuzzer runs KREPAIR_FUZZ_SECONDS, 60 by default here)"
KREPAIR_FUZZ_SECONDS=${KREPAIR_FUZZ_SECONDS:-60} cargo test --locked
# The debug build (2.4 GB) has done its work.
tidy target/debug

if [ "${KREPAIR_SKIP_KERAS:-0}" = 1 ]; then
  echo "KREPAIR_SKIP_KERAS=1: real-Keras check not run"
  exit 0
fi

step "release build"
cargo build --release --locked
bin=target/release/krepair

step "Keras venvs"
# Loaders: the bug (3.5), the fix (3.6), the broadcast_to era (3.10), the
# latest (3.15), and tf.keras 2.15 (TensorFlow).
versions=(3.5 3.6 3.10 3.15 tf2.15)
declare -A py
for v in "${versions[@]}"; do
  py[$v]=$(scripts/python-env.sh "$v")
  echo "keras $v: ${py[$v]}"
done

# The real-Keras jobs (generators and checks) run KREPAIR_JOBS at a time (2
# by default): each spends most of its time compiling XLA or TensorFlow
# programs on one core. Each job has its own log, work folder and JAX
# cache; its result is read from its log once the batch is done.
jobs_max=${KREPAIR_JOBS:-2}
status=0
total_passed=0
total_failed=0
batch=()
# job LOG CMD...: start CMD in the background, its output into LOG and its
# exit code into LOG.rc, once fewer than jobs_max jobs are running.
job() {
  local log=$1
  shift
  while [ "$(jobs -rp | wc -l)" -ge "$jobs_max" ]; do
    wait -n || true
  done
  rm -f "$log.rc"
  (
    code=0
    "$@" > "$log" 2>&1 || code=$?
    echo "$code" > "$log.rc"
  ) &
  batch+=("$log")
}
# settle [checks]: wait for the batch. Each job's failure fails the run;
# with `checks`, show what each check's log holds that is not ok and add
# its closing "N passed, N failed" to the totals.
settle() {
  wait
  local log line
  for log in "${batch[@]}"; do
    if [ "$(cat "$log.rc" 2>/dev/null)" != 0 ]; then
      status=1
      echo "$log: exit $(cat "$log.rc" 2>/dev/null || echo '?')" >&2
    fi
    if [ "${1:-}" != checks ]; then
      cat "$log"
      continue
    fi
    grep -v '^ok ' "$log" || true
    line=$(tail -1 "$log")
    if [[ "$line" =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
      total_passed=$((total_passed + BASH_REMATCH[1]))
      total_failed=$((total_failed + BASH_REMATCH[2]))
      echo "$log: $line"
    else
      echo "$log: the check did not finish" >&2
      status=1
    fi
  done
  batch=()
}
# keras_env V: the venv python of Keras V (made once, here, not in a job).
keras_env() {
  [ -n "${py[$1]:-}" ] || py[$1]=$(scripts/python-env.sh "$1")
}
# Loading EfficientNetB0 compiles the same XLA programs again and again:
# each job keeps them in a cache of its own.
export JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
# jax NAME CMD...: CMD with JAX's compilation cache in target/jax-cache/NAME.
jax() {
  local name=$1
  shift
  JAX_COMPILATION_CACHE_DIR="$PWD/target/jax-cache/$name" "$@"
}

gen=target/keras-generated
step "generate the reporter's EfficientNetB0 model with Keras 3.5 and 3.15, and keras.applications MobileNetV2 and EfficientNetB0 with tf.keras 2.15 (for the migration check)"
for v in 3.5 3.15; do
  rm -rf "$gen/keras-$v"
  job "target/generate-$v.log" "${py[$v]}" testdata/generate.py --efficientnet --out "$gen/keras-$v"
done
rm -rf "$gen/migrate-tf2.15"
job target/generate-tf2.15.log "${py[tf2.15]}" testdata/generate.py --applications --out "$gen/migrate-tf2.15"
# The same by tf.keras 2.12, whose EfficientNet Normalization (axis 3, no
# build_config) takes its input's rank from the InputLayer behind the
# Rescaling.
keras_env tf2.12
rm -rf "$gen/migrate-apps-tf2.12"
job target/generate-apps-tf2.12.log "${py[tf2.12]}" testdata/generate.py --applications --out "$gen/migrate-apps-tf2.12"
# The layer zoo (testdata/zoo.py): one small model per layer class, by
# every Keras 2 writer krepair migrates.
zoo_writers=(tf2.12 tf2.13 tf2.14 tf2.15 tfk2.21)
for v in "${zoo_writers[@]}"; do
  keras_env "$v"
  rm -rf "$gen/zoo-$v"
  job "target/generate-zoo-$v.log" "${py[$v]}" testdata/zoo.py --out "$gen/zoo-$v"
done
# The same zoo as legacy HDF5 model files (model.save("m.h5")), by the
# first and last tf.keras and by tf_keras 2.21, and tf.keras 2.12's HDF5
# under a .keras name (what its model.save("m.keras") writes).
h5_writers=(tf2.12 tf2.13 tf2.14 tf2.15 tfk2.21)
for v in "${h5_writers[@]}"; do
  rm -rf "$gen/zoo-h5-$v"
  job "target/generate-zoo-h5-$v.log" "${py[$v]}" testdata/zoo.py --format h5 --out "$gen/zoo-h5-$v"
done
# Keras 3's own legacy HDF5 files (model.save("m.h5") in Keras 3), by the
# oldest and newest pinned Keras 3.
keras3_h5_writers=(3.0 3.15)
for v in "${keras3_h5_writers[@]}"; do
  keras_env "$v"
  rm -rf "$gen/zoo-h5-keras$v"
  job "target/generate-zoo-h5-keras$v.log" env KERAS_BACKEND=jax JAX_PLATFORMS=cpu "${py[$v]}" testdata/zoo.py \
    --format h5 --out "$gen/zoo-h5-keras$v"
done
# The zoo as .keras archives by every pinned Keras 3, for the
# cross-version check (issue #33).
keras3_writers=(3.0 3.5 3.6 3.10 3.13 3.15)
for v in "${keras3_writers[@]}"; do
  keras_env "$v"
  rm -rf "$gen/zoo-keras$v"
  job "target/generate-zoo-keras$v.log" env KERAS_BACKEND=jax JAX_PLATFORMS=cpu "${py[$v]}" testdata/zoo.py \
    --out "$gen/zoo-keras$v"
done
rm -rf "$gen/zoo-h5-named-keras-tf2.12"
job target/generate-zoo-h5-named-keras-tf2.12.log "${py[tf2.12]}" testdata/zoo.py --format h5-named-keras \
  --out "$gen/zoo-h5-named-keras-tf2.12" Dense LSTM Bidirectional_GRU MultiHeadAttention BatchNormalization \
  model_nested model_shared_layer compiled_by_name_adam
settle
[ "$status" = 0 ] || { echo "generating the test models failed" >&2; exit 1; }

step "the layer table: what every writer's get_config writes for each class, what every Keras 3 takes (scripts/layer_table.py), against src/passes/migrate/layers.json and docs/layers.md"
lt=target/layer-table
rm -rf "$lt"
mkdir -p "$lt"
for v in "${zoo_writers[@]}"; do
  job "$lt/dump-$v.log" "${py[$v]}" scripts/layer_table.py dump --out "$lt/dump-$v.json"
done
settle
for v in 3.0 3.5 3.6 3.10 3.13 3.15 nightly; do
  keras_env "$v"
  job "$lt/probe-$v.log" env KERAS_BACKEND=jax JAX_PLATFORMS=cpu "${py[$v]}" scripts/layer_table.py probe \
    --dump "$lt"/dump-*.json --out "$lt/probe-$v.json"
done
job "$lt/probe-3.15-tensorflow.log" env KERAS_BACKEND=tensorflow "${py[tfk2.21]}" scripts/layer_table.py probe \
  --dump "$lt"/dump-*.json --out "$lt/probe-3.15-tensorflow.json"
settle
python3 scripts/layer_table.py write --check --dump "$lt"/dump-*.json --probe "$lt"/probe-*.json \
  --table src/passes/migrate/layers.json --out docs/layers.md || status=1

step "the Keras 3 table: what every pinned Keras 3 accepts and computes (scripts/keras3_table.py), against src/passes/keras3/compat.json"
k3=target/keras3-table
rm -rf "$k3"
mkdir -p "$k3"
for v in 3.0 3.5 3.6 3.10 3.13 3.15 nightly; do
  job "$k3/probe-$v.log" env KERAS_BACKEND=jax JAX_PLATFORMS=cpu "${py[$v]}" scripts/keras3_table.py probe \
    --out "$k3/probe-$v.json"
done
settle
python3 scripts/keras3_table.py write --check --probe "$k3"/probe-*.json --table src/passes/keras3/compat.json || status=1

step "real-Keras check"
for v in "${versions[@]}"; do
  job "target/keras-check-$v.log" jax "check-$v" "${py[$v]}" scripts/check_keras.py --krepair "$bin" \
    --work "target/keras-check/$v" testdata/fixtures/keras-* "$gen"/keras-*
done
# Repairs (not migrations) of tf.keras 2.12, 2.13 and 2.14 archives,
# loaded in the tf.keras that saved them.
for v in tf2.12 tf2.13 tf2.14; do
  keras_env "$v"
  job "target/keras-check-$v.log" "${py[$v]}" scripts/check_keras.py --krepair "$bin" \
    --work "target/keras-check/$v" "testdata/fixtures/migrate-$v"
done
settle checks
echo
echo "real-keras: $total_passed passed, $total_failed failed"
tidy target/keras-check

step "migration check (the fixtures, applications and committed zoo cases in every Keras 3 and the pre-release; the whole zoo of every writer in 3.0, 3.15 and the pre-release, and in 3.15 on TensorFlow; Keras 3 archives of every pinned Keras 3 repaired and loaded in the others)"
migrate_versions=(3.0 3.5 3.6 3.10 3.13 3.15 nightly)
for v in "${migrate_versions[@]}"; do
  keras_env "$v"
done
for v in "${migrate_versions[@]}"; do
  job "target/migrate-check-$v.log" jax "migrate-$v" "${py[$v]}" scripts/check_migrate.py --krepair "$bin" \
    --work "target/migrate-check/$v" testdata/fixtures/keras-tf2.15 testdata/fixtures/migrate-tf2.12 \
    testdata/fixtures/migrate-tf2.13 testdata/fixtures/migrate-tf2.14 "$gen/migrate-tf2.15" \
    testdata/fixtures/migrate-zoo-tf2.15 testdata/fixtures/migrate-zoo-tfk2.21 testdata/fixtures/migrate-h5-tf2.15
done
zoo=()
for w in "${zoo_writers[@]}"; do
  zoo+=("$gen/zoo-$w")
done
for v in 3.0 3.15 nightly; do
  job "target/zoo-check-$v.log" jax "zoo-$v" "${py[$v]}" scripts/check_migrate.py --krepair "$bin" \
    --work "target/zoo-check/$v" "${zoo[@]}" "$gen/migrate-apps-tf2.12"
done
# The legacy HDF5 zoos, migrated, in the oldest and newest Keras 3 and
# the pre-release.
h5zoo=("$gen/zoo-h5-named-keras-tf2.12" testdata/fixtures/migrate-h5-edited)
for w in "${h5_writers[@]}"; do
  h5zoo+=("$gen/zoo-h5-$w")
done
for v in 3.0 3.15 nightly; do
  job "target/h5-check-$v.log" jax "h5-$v" "${py[$v]}" scripts/check_migrate.py --krepair "$bin" \
    --work "target/h5-check/$v" "${h5zoo[@]}"
done
# Keras 3's own .h5 files, migrated, each in the Keras 3 that wrote them.
for v in "${keras3_h5_writers[@]}"; do
  job "target/h5-check-keras$v.log" jax "h5-keras$v" "${py[$v]}" scripts/check_migrate.py --krepair "$bin" \
    --work "target/h5-check/keras$v" "$gen/zoo-h5-keras$v" "testdata/fixtures/migrate-h5-keras$v"
done
# Keras 3 archives repaired for every Keras 3 (issue #33): the zoo of
# every pinned Keras 3 in the oldest, the newest and the pre-release; the
# zoos of the oldest and newest writers in every other.
k3zoo=()
for w in "${keras3_writers[@]}"; do
  k3zoo+=("$gen/zoo-keras$w")
done
mkdir -p target/cross-check
# The middle versions: a representative subset (recurrent, wrapped,
# merged, random augmentation, attention, nested, compiled, every
# initializer) of the oldest and newest writers' zoos, and the committed
# cases. 3.0.5 and the pre-release also load the archives as written (the
# harness can fail: they refuse much of what other Keras 3 write).
subset=LSTM,GRU,Bidirectional_GRU,Dot,RandomFlip,RandomRotation,refused_RandomCrop,Dense,Conv2D,BatchNormalization
subset+=,MultiHeadAttention,Embedding,TimeDistributed,LayerNormalization,Normalization,Discretization,model_nested
subset+=,model_transformer_block,compiled_by_name_adam,keras3_every_initializer,keras3_LSTM_orthogonal_gain
for v in 3.0 3.15 nightly 3.5 3.6 3.10 3.13; do
  args=(--after-only)
  case $v in
    3.0 | nightly) zoos=("${k3zoo[@]}") args=() ;;
    3.15) zoos=("${k3zoo[@]}") ;;
    *) zoos=("$gen/zoo-keras3.0" "$gen/zoo-keras3.15") args+=(--cases "$subset") ;;
  esac
  zoos+=(testdata/fixtures/cross-keras3.0 testdata/fixtures/cross-keras3.15)
  job "target/cross-check-$v.log" jax "cross-$v" "${py[$v]}" scripts/check_cross.py --krepair "$bin" \
    --work "target/cross-check/$v" --matrix "target/cross-check/matrix-$v.json" "${args[@]}" "${zoos[@]}"
done
# Keras 3.15.1 beside TensorFlow 2.21 (the tf_keras 2.21 venv) on its
# TensorFlow backend: the lookup and hashing layers run only there.
job target/zoo-check-tf-backend.log env KERAS_BACKEND=tensorflow "${py[tfk2.21]}" scripts/check_migrate.py \
  --krepair "$bin" --work target/zoo-check/tf-backend "$gen/zoo-tf2.15" "$gen/zoo-tfk2.21"
settle checks
python3 scripts/cross_matrix.py target/cross-check/matrix-*.json || status=1
tidy target/migrate-check target/zoo-check target/h5-check target/cross-check/{3,n}*

step "inspect check (krepair inspect against what each Keras builds and loads)"
job target/inspect-check-3.15.log jax inspect-3.15 "${py[3.15]}" scripts/check_inspect.py --krepair "$bin" \
  --diff target/inspect-diff testdata/fixtures/keras-3.5 testdata/fixtures/keras-3.6 testdata/fixtures/keras-3.15
job target/inspect-check-tf2.15.log "${py[tf2.15]}" scripts/check_inspect.py --krepair "$bin" \
  testdata/fixtures/keras-tf2.15
for v in tf2.12 tf2.13 tf2.14; do
  job "target/inspect-check-$v.log" "${py[$v]}" scripts/check_inspect.py --krepair "$bin" \
    "testdata/fixtures/migrate-$v"
done
job target/inspect-check-migrated.log jax inspect-migrated "${py[3.15]}" scripts/check_inspect.py --migrate --krepair "$bin" \
  testdata/fixtures/keras-tf2.15 testdata/fixtures/migrate-tf2.12 \
  testdata/fixtures/migrate-tf2.13 testdata/fixtures/migrate-tf2.14
settle checks
echo
echo "real-keras (repair, migrate and inspect): $total_passed passed, $total_failed failed"

if [ "${KREPAIR_SKIP_WHEEL:-0}" != 1 ]; then
  step "the Python wheel (static HDF5): build, audit, install in a fresh venv, use"
  scripts/build-wheel.sh || status=1
  step "the real-Keras check with the wheel's static binary (Keras 3.15)"
  job target/keras-check-static.log jax static-3.15 "${py[3.15]}" scripts/check_keras.py \
    --krepair target/wheel-venv/bin/krepair --work target/keras-check-static testdata/fixtures/keras-*
  settle checks
fi
exit $status
