#!/usr/bin/env bash
# Make (or reuse) the venv of one pinned Keras version:
#   scripts/python-env.sh 3.5   ->  .venvs/keras-3.5/bin/python
# The pins are testdata/requirements/keras-<version>.txt (pip freeze of a
# working install: Keras, JAX or TensorFlow on the CPU, numpy, h5py). A
# stamp file holding the requirements' hash makes a second call free.
#
# The venvs are installed by uv (pinned below) from one cache in
# .venvs/.uv-cache, hard-linked: a package two venvs share (numpy, scipy,
# jaxlib, h5py) is on disk once. With pip, the twelve venvs took 13 GB
# plus pip's own cache of every wheel, and a CI machine ran out of disk
# (measured: 5.6 GB with uv for the same twelve; see README).
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
uv_version=0.13.10
tool="$root/.venvs/uv"
uv="$tool/bin/uv"
if [ "$("$uv" --version 2>/dev/null | cut -d' ' -f2)" != "$uv_version" ]; then
  rm -rf "$tool"
  python3 -m venv "$tool" >&2
  "$tool/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check "uv==$uv_version" >&2
fi
export UV_CACHE_DIR="$root/.venvs/.uv-cache" UV_LINK_MODE=hardlink UV_NO_PROGRESS=1
rm -rf "$venv"
"$uv" venv --quiet --seed --python python3 "$venv" >&2
"$uv" pip install --quiet --python "$venv/bin/python" -r "$req" >&2
echo "$want" > "$venv/.stamp"
echo "$venv/bin/python"
