"""Test vectors for krepair's Discretization boundary computation, made by
tf.keras itself.

    .venvs/keras-tf2.15/bin/python testdata/discretization_vectors.py > testdata/discretization-vectors.json

Each vector is a summary as an adapted tf.keras Discretization stores it
(its `summary` variable, float32, shape (2, n): values and weights) and,
for several `num_bins`, the boundaries tf.keras computes from it in
finalize_state() (`get_bin_boundaries`), all as exact float32 values.
The summaries come from real adapt() calls over several data sizes and
epsilons, so some are compressed and some (fewer columns than bins) are
returned as they are.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np  # noqa: E402
import keras  # noqa: E402

try:
    from keras.src.layers.preprocessing import discretization as impl
except ImportError:  # tf.keras 2.12
    from keras.layers.preprocessing import discretization as impl


def exact(a):
    return np.asarray(a, "float32").astype("float64").tolist()


def main():
    r = np.random.default_rng(20147)
    datasets = [
        ("uniform-64", r.uniform(0, 10, 64), 0.01, None),
        ("normal-500-batched", r.normal(2.0, 3.0, 500), 0.01, 37),
        ("lognormal-3000-eps0.02", r.lognormal(0.0, 1.5, 3000), 0.02, 250),
        ("ties-200", np.round(r.normal(0, 2, 200)), 0.05, None),
        ("tiny-5", r.uniform(-1, 1, 5), 0.01, None),
        ("three-values", np.array([1.0, 2.0, 3.0]), 0.5, None),
        ("wide-range", r.normal(0, 1, 300) * 10.0 ** r.integers(-6, 7, 300), 0.01, 64),
    ]
    vectors = []
    for name, values, epsilon, batch in datasets:
        layer = keras.layers.Discretization(num_bins=2, epsilon=epsilon)
        layer.adapt(values.astype("float32").reshape(-1, 1), batch_size=batch)
        summary = np.asarray(layer.summary.numpy(), "float32")
        bins = {}
        for num_bins in (1, 2, 3, 4, 7, 10, 49, 100, 300):
            b = np.asarray(impl.get_bin_boundaries(summary, num_bins), "float32")
            bins[str(num_bins)] = exact(b)
        vectors.append({"name": name, "summary": exact(summary), "bin_boundaries": bins})
    json.dump({"keras_version": keras.__version__, "vectors": vectors}, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
