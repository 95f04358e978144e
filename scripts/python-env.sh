#!/usr/bin/env bash
# Make (or reuse) the venv of one pinned Keras version:
#   scripts/python-env.sh 3.5   ->  .venvs/keras-3.5/bin/python
# The pins are testdata/requirements/keras-<version>.txt (pip freeze of a
# working install: Keras, JAX on the CPU, numpy, h5py). A stamp file holding
# the requirements' hash makes a second call free.
set -euo pipefail
version=${1:?usage: scripts/python-env.sh KERAS_VERSION}
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/testdata/requirements/keras-$version.txt"
venv="$root/.venvs/keras-$version"
[ -f "$req" ] || { echo "no pinned requirements for Keras $version ($req)" >&2; exit 1; }
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin/python"
  exit 0
fi
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" > "$venv/.stamp"
echo "$venv/bin/python"
