#!/usr/bin/env bash
# Make (or reuse) the venv of build tools pinned in scripts/build-tools.txt
# (cmake >= 3.26, maturin, auditwheel) and print its bin directory:
#   tools=$(scripts/build-env.sh); "$tools/maturin" --version
# A stamp holding the pins' hash makes a second call free.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
req="$root/scripts/build-tools.txt"
venv="$root/.venvs/build"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ -x "$venv/bin/cmake" ] && [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ]; then
  echo "$venv/bin"
  exit 0
fi
"$root/scripts/system-deps.sh"
rm -rf "$venv"
python3 -m venv "$venv" >&2
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
echo "$want" > "$venv/.stamp"
echo "$venv/bin"
