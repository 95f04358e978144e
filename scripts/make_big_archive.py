"""Build a large .keras archive for benchmarks: a real Keras fixture (an
adapt-mode Normalization, then Dense) whose weights file is padded with
many float32 datasets up to the requested size.

    python scripts/make_big_archive.py SRC.keras OUT.keras SIZE_MIB

Needs h5py (every Keras venv has it). The padding lives in its own group
(`padding/vars/<i>`, 4 MiB each, random values so nothing compresses or
stays sparse); krepair must copy it untouched.
"""

import os
import shutil
import sys
import tempfile
import zipfile

import h5py
import numpy as np


def main():
    src, out, size_mib = sys.argv[1], sys.argv[2], int(sys.argv[3])
    with tempfile.TemporaryDirectory() as d:
        with zipfile.ZipFile(src) as z:
            names = z.namelist()
            z.extractall(d)
        h5 = os.path.join(d, "model.weights.h5")
        rng = np.random.default_rng(0)
        chunk = rng.standard_normal(1 << 20).astype("float32")  # 4 MiB
        with h5py.File(h5, "a") as f:
            g = f.create_group("padding").create_group("vars")
            for i in range(size_mib // 4):
                g.create_dataset(str(i), data=np.roll(chunk, i))
        tmp = out + ".tmp"
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as z:
            for n in names:
                z.write(os.path.join(d, n), n)
        shutil.move(tmp, out)


if __name__ == "__main__":
    main()
