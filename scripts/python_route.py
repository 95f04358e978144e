"""The Python route krepair replaces: load the model with Keras, call
finalize_state() on every Normalization layer, save it again.

    python scripts/python_route.py IN.keras OUT.keras
"""

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import keras  # noqa: E402

model = keras.saving.load_model(sys.argv[1], compile=False)
for layer in model._flatten_layers(include_self=False, recursive=True):
    if isinstance(layer, keras.layers.Normalization) and layer.input_mean is None:
        layer.finalize_state()
model.save(sys.argv[2])
