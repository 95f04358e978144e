#!/usr/bin/env bash
# Install the system packages krepair builds against, if they are missing:
# the HDF5 C library (Debian's libhdf5-dev, linked by the `hdf5` crate) and
# pkg-config, which the crate uses to find it. Idempotent and quiet when
# everything is there already.
set -euo pipefail

need=()
dpkg -s libhdf5-dev >/dev/null 2>&1 || need+=(libhdf5-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || need+=(python3-venv)
. "$(dirname "$0")/apt.sh"
apt_install "to build krepair" "${need[@]}"
