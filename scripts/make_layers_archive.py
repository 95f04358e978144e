"""Build a .keras archive with many layers, for measuring how krepair
scales with the layer count (not the byte count):

    python scripts/make_layers_archive.py OUT.keras N_LAYERS

A real Keras model, saved by the Keras of the venv that runs this: an
adapt-mode Normalization (statistics set by adapt()) feeding N small
Dense layers side by side (a deep chain of thousands of layers exceeds
Python's recursion limit in Keras), joined by a Concatenate; config.json
and the weights file both grow with N (two groups and two datasets per
Dense layer) while the bytes stay small.
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
import numpy as np  # noqa: E402


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    norm = keras.layers.Normalization()
    norm.adapt(np.arange(32, dtype="float32").reshape(4, 8))
    x = keras.Input((8,))
    h = norm(x)
    outs = [keras.layers.Dense(2, name=f"dense_{i}")(h) for i in range(n)]
    model = keras.Model(x, keras.layers.Concatenate()(outs))
    model.save(out)


if __name__ == "__main__":
    main()
