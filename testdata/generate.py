"""Make krepair's test archives with real Keras.

Run it with the Python of a pinned Keras venv (see scripts/python-env.sh):

    .venvs/keras-3.5/bin/python testdata/generate.py --out testdata/fixtures/keras-3.5
    .venvs/keras-3.5/bin/python testdata/generate.py --out DIR --efficientnet

Each case becomes a folder holding the archive (`model.keras`, or the
directory `model.keras/` for the unzipped form), the model input `x.npy`, the
predictions of the in-memory model (`pred_memory.npy`), the predictions with
each Normalization layer computing its stored statistics
(`pred_adapted.npy`) and computing identity (`pred_identity.npy`), and
`expected.json`, which records what real Keras says about each
Normalization layer: its weights group (found by value in the saved HDF5,
not by Keras' naming rules), its stored statistics as exact float32 values,
and what `--stats auto` must choose.
"""

import argparse
import io
import json
import os
import shutil
import sys
import zipfile

os.environ.setdefault("KERAS_BACKEND", "jax")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import h5py  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixture_layers  # noqa: E402,F401

from keras import layers  # noqa: E402

SEED = 20147

if keras.__version__.startswith("2.12."):
    # `import keras` gives tf.keras 2.12's legacy optimizers, which save no
    # variables; `tf.keras`, what most 2.12 code imports, the new ones.
    import tensorflow as tf  # noqa: E402

    optimizers = tf.keras.optimizers
else:
    optimizers = keras.optimizers


def data(shape, n=64, seed=0):
    """Float32 data whose features have distinct means and spreads."""
    r = np.random.default_rng(SEED + seed)
    x = r.normal(size=(n,) + tuple(shape)).astype("float32")
    offs = np.arange(int(np.prod(shape)), dtype="float32").reshape(shape)
    return (x * (1.0 + 0.37 * offs) + 3.0 * offs - 2.5).astype("float32")


def model_input(model, x):
    """A model with several inputs takes x (their stack) as a list; its
    outputs, all of one shape, stack into one prediction array."""
    return list(x) if len(model.inputs) > 1 else x


def norms_of(model):
    out = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.Normalization):
            out.append(layer)
    return out


# ---------------------------------------------------------------- the cases


def case_axis_last():
    n = layers.Normalization(axis=-1)
    n.adapt(data((4,)))
    inp = keras.Input((4,))
    out = layers.Dense(3)(n(inp))
    return keras.Model(inp, out), data((4,), 5, 1), {n: None}


def case_axis_none():
    n = layers.Normalization(axis=None)
    n.adapt(data((4,)))
    inp = keras.Input((4,))
    out = layers.Dense(2)(n(inp))
    return keras.Model(inp, out), data((4,), 5, 1), {n: None}


def case_multi_axis_trailing():
    n = layers.Normalization(axis=(2, 3))
    n.adapt(data((4, 5, 3)))
    inp = keras.Input((4, 5, 3))
    out = layers.Dense(2)(layers.Flatten()(n(inp)))
    return keras.Model(inp, out), data((4, 5, 3), 3, 1), {n: None}


def case_multi_axis_inner():
    n = layers.Normalization(axis=(1, 2))
    n.adapt(data((4, 5, 3)))
    inp = keras.Input((4, 5, 3))
    out = layers.Dense(2)(layers.Flatten()(n(inp)))
    return keras.Model(inp, out), data((4, 5, 3), 3, 1), {n: None}


def case_invert():
    n = layers.Normalization(axis=-1, invert=True)
    n.adapt(data((3,)))
    inp = keras.Input((3,))
    out = n(layers.Dense(3)(inp))
    return keras.Model(inp, out), data((3,), 5, 1), {n: None}


def case_two_norms():
    # The first Normalization in model.layers is stored at
    # layers/normalization, whatever its name; the second one is *named*
    # "normalization" but stored at layers/normalization_1.
    a = layers.Normalization(name="stats_a")
    a.adapt(data((4,)))
    b = layers.Normalization(name="normalization")
    b.adapt(data((4,), seed=7) * 10.0)
    inp = keras.Input((4,))
    h = layers.Dense(4)(a(inp))
    out = layers.Dense(2)(b(h))
    return keras.Model(inp, out), data((4,), 5, 1), {a: None, b: None}


def case_nested_sequential():
    inner_norm = layers.Normalization(name="inner_norm")
    inner_norm.adapt(data((4,), seed=3))
    seq = keras.Sequential(
        [keras.Input((4,)), inner_norm, layers.Dense(4)], name="block"
    )
    outer = layers.Normalization(name="outer_norm")
    outer.adapt(data((4,), seed=4))
    inp = keras.Input((4,))
    out = layers.Dense(2)(seq(outer(inp)))
    return (
        keras.Model(inp, out),
        data((4,), 5, 1),
        {outer: None, inner_norm: "block/inner_norm"},
    )


def case_custom_layer():
    s = fixture_layers.Scaler(name="scaler")
    s.build((None, 4))
    s.norm.adapt(data((4,), seed=5))
    inp = keras.Input((4,))
    out = layers.Dense(2)(s(inp))
    return keras.Model(inp, out), data((4,), 5, 1), {s.norm: "scaler/norm"}


def case_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        n = layers.Normalization()
        n.adapt(data((4,)))
        inp = keras.Input((4,))
        h = layers.Dense(3)(n(inp))
        out = layers.Activation("linear", dtype="float32")(h)
        model = keras.Model(inp, out)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, data((4,), 5, 1), {n: None}


def case_compiled_mixed_float16():
    """A mixed_float16 model compiled with Adam and fitted one epoch: tf.keras
    wraps the optimizer in a LossScaleOptimizer for training."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        n = layers.Normalization()
        n.adapt(data((4,)))
        inp = keras.Input((4,))
        h = layers.Dense(6, activation="relu")(n(inp))
        out = layers.Dense(2, dtype="float32")(h)
        model = keras.Model(inp, out)
        model = compiled(
            model,
            optimizers.Adam(learning_rate=0.01),
            "mse",
            None,
            (4,),
            lambda r, k: r.normal(size=(k, 2)).astype("float32"),
            29,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    return model, data((4,), 5, 2), {n: None}


def case_explicit():
    n = layers.Normalization(mean=[1.0, 2.0, 3.0, 4.0], variance=[1.0, 4.0, 9.0, 16.0])
    inp = keras.Input((4,))
    out = layers.Dense(2)(n(inp))
    return keras.Model(inp, out), data((4,), 5, 1), {n: None}


def case_no_norm():
    inp = keras.Input((4,))
    out = layers.Dense(2)(layers.Dense(3)(inp))
    return keras.Model(inp, out), data((4,), 5, 1), {}


def case_efficientnet_stem(workdir):
    """The stem of a keras.applications EfficientNet built with
    weights="imagenet" (Rescaling, Normalization, Rescaling by
    1/sqrt(stddev)), small enough to commit, whose Normalization weights
    arrive through a legacy `.h5` load_weights() as the applications do.
    Keras 3.0-3.5 skip finalize_state() there, so the in-memory model
    computes identity; later versions finalize, so it computes the stats.
    """
    import math

    from keras.src.legacy.saving import legacy_h5_format

    def build():
        inp = keras.Input((8, 8, 3))
        h = layers.Rescaling(1.0 / 255.0)(inp)
        h = layers.Normalization(axis=3)(h)
        h = layers.Rescaling([1.0 / math.sqrt(s) for s in [0.229, 0.224, 0.225]])(h)
        h = layers.Conv2D(4, 3, padding="same", name="stem_conv")(h)
        h = layers.GlobalAveragePooling2D()(h)
        out = layers.Dense(2)(h)
        return keras.Model(inp, out, name="efficientnetb0")

    donor = build()
    (dn,) = [l for l in donor.layers if isinstance(l, layers.Normalization)]
    dn.adapt_mean.assign(np.array(IMAGENET_MEAN, "float32"))
    dn.adapt_variance.assign(np.array(IMAGENET_VARIANCE, "float32"))
    legacy = os.path.join(workdir, "stem.h5")
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, donor)
    model = build()
    model.load_weights(legacy)
    os.remove(legacy)
    (n,) = [l for l in model.layers if isinstance(l, layers.Normalization)]
    x = np.random.default_rng(SEED).uniform(0, 255, size=(3, 8, 8, 3)).astype("float32")
    return model, x, {n: None}


def case_cnn():
    """A small CNN made of the layers of a keras.applications backbone
    (Rescaling, Conv2D, BatchNormalization, pooling, DepthwiseConv2D,
    ReLU, Dropout, a softmax head), with an adapted Normalization and
    non-trivial batch-norm statistics."""
    n = layers.Normalization(axis=-1)
    n.adapt(data((6, 6, 3)) / 8.0 + 0.5)
    inp = keras.Input((6, 6, 3))
    h = layers.Rescaling(1.0 / 8.0, offset=0.5)(inp)
    h = n(h)
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    bn = layers.BatchNormalization()
    h = bn(h)
    h = layers.MaxPooling2D()(h)
    h = layers.DepthwiseConv2D(3, padding="same")(h)
    h = layers.ReLU(6.0)(h)
    h = layers.Dropout(0.2)(h)
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(3, activation="softmax")(h)
    model = keras.Model(inp, out)
    r = np.random.default_rng(SEED + 11)
    bn.set_weights([
        r.uniform(0.5, 1.5, 4).astype("float32"),
        r.normal(size=4).astype("float32"),
        r.normal(size=4).astype("float32"),
        r.uniform(0.5, 2.0, 4).astype("float32"),
    ])
    return model, data((6, 6, 3), 4, 1), {n: None}


def case_branches():
    """Branches merged by Add, Multiply and Concatenate, a Dense layer
    shared by two calls (its nodes 0 and 1), and LayerNormalization."""
    n = layers.Normalization()
    n.adapt(data((4,)))
    inp = keras.Input((4,))
    x = n(inp)
    shared = layers.Dense(4, activation="tanh", name="shared")
    a = shared(x)
    b = shared(layers.Dense(4)(x))
    h = layers.Concatenate()([layers.Add()([a, b]), layers.Multiply()([a, b])])
    out = layers.Dense(2)(layers.LayerNormalization()(h))
    return keras.Model(inp, out), data((4,), 5, 1), {n: None}


def case_nested_functional():
    """A Functional nested in a Functional, called once (tf.keras saves
    that call as its node 1)."""
    n = layers.Normalization()
    n.adapt(data((4,)))
    ii = keras.Input((4,))
    inner = keras.Model(ii, layers.Dense(3, activation="tanh")(n(ii)), name="inner")
    x = keras.Input((4,))
    out = layers.Dense(2)(inner(layers.Dense(4)(x)))
    return keras.Model(x, out), data((4,), 5, 1), {n: "inner/" + n.name}


def case_two_in_two_out():
    """Two inputs, two outputs and a Dense layer shared by both branches."""
    n = layers.Normalization()
    n.adapt(data((4,)))
    a, b = keras.Input((4,), name="a"), keras.Input((4,), name="b")
    shared = layers.Dense(3, activation="tanh", name="shared")
    sa, sb = shared(n(a)), shared(b)
    out1 = layers.Dense(2, name="out1")(layers.Concatenate()([sa, sb]))
    out2 = layers.Dense(2, name="out2")(sb)
    x = np.stack([data((4,), 5, 1), data((4,), 5, 2) / 10.0])
    return keras.Model([a, b], [out1, out2]), x, {n: None}


def case_text():
    """A text model: Embedding(mask_zero=True) (zeros in the input are
    masked), a Bidirectional LSTM and a GRU."""
    inp = keras.Input((6,), dtype="int32")
    h = layers.Embedding(20, 4, mask_zero=True)(inp)
    h = layers.Bidirectional(layers.LSTM(3, return_sequences=True))(h)
    h = layers.GRU(3)(h)
    out = layers.Dense(2)(h)
    x = np.array([[1, 2, 3, 0, 0, 0], [4, 5, 6, 7, 8, 9], [0, 0, 1, 2, 0, 3]], "int32")
    return keras.Model(inp, out), x, {}


def compiled(model, optimizer, loss, metrics, x_shape, y_of, seed):
    """Compile `model`, fit it one epoch on data of `x_shape` (targets
    `y_of(rng, n)`) and keep a second batch for the check's training step:
    a migrated optimizer must continue exactly where this one stopped."""
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    r = np.random.default_rng(SEED + seed)
    xt = data(x_shape, 16, seed)
    model.fit(xt, y_of(r, 16), epochs=1, batch_size=8, shuffle=False, verbose=0)
    model._krepair_step = (data(x_shape, 8, seed + 1), y_of(r, 8))
    return model


def case_compiled_adam():
    """A small CNN compiled with Adam, a loss object (reduction "auto") and
    two metrics, fitted one epoch: its optimizer has slots to carry over."""
    n = layers.Normalization(axis=-1)
    n.adapt(data((6, 6, 3)))
    inp = keras.Input((6, 6, 3))
    h = n(inp)
    h = layers.Conv2D(4, 3, padding="same", activation="relu")(h)
    h = layers.BatchNormalization()(h)
    h = layers.GlobalAveragePooling2D()(h)
    out = layers.Dense(3)(h)
    model = compiled(
        keras.Model(inp, out),
        optimizers.Adam(learning_rate=0.01, beta_2=0.99),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        ["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(k=2)],
        (6, 6, 3),
        lambda r, k: r.integers(0, 3, size=(k,)),
        21,
    )
    return model, data((6, 6, 3), 4, 1), {n: None}


def case_compiled_sgd():
    """A Sequential given input_shape=, compiled with Nesterov SGD and a
    string loss, fitted one epoch."""
    model = keras.Sequential([
        layers.Dense(8, activation="tanh", input_shape=(4,)),
        layers.Dense(2),
    ])
    model = compiled(
        model,
        optimizers.SGD(learning_rate=0.05, momentum=0.9, nesterov=True),
        "mse",
        [keras.metrics.MeanAbsoluteError()],
        (4,),
        lambda r, k: r.normal(size=(k, 2)).astype("float32"),
        22,
    )
    return model, data((4,), 4, 1), {}


def case_compiled_rmsprop():
    """RMSprop with momentum (velocities, then momentums), fitted one
    epoch. (Centered RMSprop cannot take a step in Keras 3.0.5 on JAX, a
    Keras bug: `ops.square` of a variable.)"""
    n = layers.Normalization()
    n.adapt(data((4,)))
    inp = keras.Input((4,))
    out = layers.Dense(1)(layers.Dense(8, activation="relu")(n(inp)))
    model = compiled(
        keras.Model(inp, out),
        optimizers.RMSprop(learning_rate=0.01, momentum=0.5),
        keras.losses.MeanSquaredError(),
        None,
        (4,),
        lambda r, k: r.normal(size=(k, 1)).astype("float32"),
        23,
    )
    return model, data((4,), 4, 1), {n: None}


def case_compiled_schedule():
    """Adam with an ExponentialDecay learning rate (Keras 3 then tracks no
    learning-rate variable), fitted one epoch."""
    inp = keras.Input((4,))
    out = layers.Dense(2)(layers.Dense(5, activation="relu")(inp))
    model = compiled(
        keras.Model(inp, out),
        optimizers.Adam(
            learning_rate=optimizers.schedules.ExponentialDecay(0.05, 1, 0.5)
        ),
        "mse",
        None,
        (4,),
        lambda r, k: r.normal(size=(k, 2)).astype("float32"),
        25,
    )
    return model, data((4,), 4, 1), {}


def case_compiled_cosine():
    """SGD with momentum and a CosineDecay learning rate with warm-up: the
    fit (2 steps) ends the warm-up, and the check's step is the first of the
    decay."""
    inp = keras.Input((4,))
    out = layers.Dense(2)(layers.Dense(5, activation="tanh")(inp))
    model = compiled(
        keras.Model(inp, out),
        optimizers.SGD(
            learning_rate=optimizers.schedules.CosineDecay(
                0.01, decay_steps=10, alpha=0.1, warmup_target=0.05, warmup_steps=2),
            momentum=0.9,
        ),
        "mse",
        None,
        (4,),
        lambda r, k: r.normal(size=(k, 2)).astype("float32"),
        31,
    )
    return model, data((4,), 4, 2), {}


def case_compiled_sgd_plain():
    """Plain SGD (momentum 0): tf.keras keeps momentum slots that stay
    zero and that Keras 3 does not have."""
    inp = keras.Input((4,))
    out = layers.Dense(2)(inp)
    model = compiled(
        keras.Model(inp, out),
        optimizers.SGD(learning_rate=0.1),
        "mae",
        None,
        (4,),
        lambda r, k: r.normal(size=(k, 2)).astype("float32"),
        24,
    )
    return model, data((4,), 4, 1), {}


def case_compiled_adamw():
    """A small model compiled with AdamW (weight decay),
    fitted one epoch: krepair migrates its class and hyperparameters but
    does not map its variables, so the migrated optimizer starts afresh."""
    n = layers.Normalization(axis=-1)
    n.adapt(data((5,)))
    inp = keras.Input((5,))
    out = layers.Dense(2)(layers.Dense(6, activation="relu")(n(inp)))
    model = compiled(
        keras.Model(inp, out),
        optimizers.AdamW(learning_rate=0.01, weight_decay=0.05),
        "mse",
        None,
        (5,),
        lambda r, k: r.normal(size=(k, 2)).astype("float32"),
        27,
    )
    return model, data((5,), 4, 4), {n: None}


def case_arithmetic():
    """Arithmetic on Keras tensors, which tf.keras saves as TFOpLambda
    layers: with constants (x * 2, x + 1, x - 0.5, 3 - x, x / 4, 1 + x,
    -x), between tensors (x + y, x - y, x * y), and tf.concat."""
    import tensorflow as tf
    n = layers.Normalization(axis=-1)
    n.adapt(data((4,)))
    inp = keras.Input((4,))
    a = layers.Dense(4)(n(inp))
    b = a * 2.0 + 1.0
    c = 3.0 - (b - 0.5)
    d = (a / 4.0) * c
    e = 1.0 + (-d - a)
    out = layers.Dense(2)(tf.concat([e, a + b], axis=-1))
    return keras.Model(inp, out), data((4,), 8, 5), {n: None}


def case_compiled_legacy_adam():
    """A Sequential given `input_shape=`, compiled with a tf.keras legacy
    Adam (what `import keras` gives in tf.keras 2.12), fitted one epoch:
    tf.keras saves none of its variables."""
    n = layers.Normalization(axis=-1, input_shape=(5,))
    n.adapt(data((5,)))
    model = keras.Sequential([n, layers.Dense(6, activation="tanh"), layers.Dense(2)])
    model = compiled(
        model,
        optimizers.legacy.Adam(learning_rate=0.02),
        "mse",
        ["mae"],
        (5,),
        lambda r, k: r.normal(size=(k, 2)).astype("float32"),
        25,
    )
    return model, data((5,), 4, 3), {n: None}


def uniform(shape, n, low, high, seed):
    r = np.random.default_rng(SEED + seed)
    return r.uniform(low, high, size=(n,) + tuple(shape)).astype("float32")


def case_discretization():
    """A lone adapted Discretization (keras #20147's sister bug): tf.keras
    reloads it with no boundaries, so every input falls in bin 0."""
    d = layers.Discretization(num_bins=4)
    sample = uniform((3,), 64, 0.0, 10.0, 7)
    if keras.__version__.startswith("2."):
        d.adapt(sample)
    else:
        # What Keras 3's adapt() does for an array, without the
        # TensorFlow import it needs to check for a tf.data.Dataset (the
        # JAX venvs have none). Keras 3 writes the boundaries it computes
        # into the config: nothing to repair.
        d.update_state(sample)
        d.finalize_state()
    inp = keras.Input((3,))
    x = np.array([[0.5, 2.6, 5.1], [7.6, 9.9, 1.0], [3.3, 6.6, 8.8]], "float32")
    return keras.Model(inp, d(inp)), x, {}


def case_discretization_onehot():
    """A one-hot Discretization beside an adapted Normalization, both
    feeding a Dense: tf.keras cannot load the archive at all (the Dense
    kernel was built for 7 bins, the reloaded layer has 1). Beside them an
    explicit Discretization (bin_boundaries given: nothing to repair)
    counted by a CategoryEncoding."""
    d = layers.Discretization(num_bins=7, output_mode="one_hot")
    d.adapt(uniform((1,), 200, -3.0, 4.0, 8))
    n = layers.Normalization(axis=-1)
    n.adapt(uniform((1,), 200, -3.0, 4.0, 9))
    inp = keras.Input((1,))
    fixed = layers.Discretization(bin_boundaries=[-1.0, 0.0, 1.0, 2.5])(inp)
    counted = layers.CategoryEncoding(num_tokens=5, output_mode="count")(fixed)
    h = layers.Concatenate()([d(inp), n(inp), counted])
    out = layers.Dense(3)(h)
    x = uniform((1,), 9, -3.5, 4.5, 10)
    return keras.Model(inp, out), x, {n: None}


def case_discretization_large():
    """A Discretization adapted in batches on many samples with a small
    epsilon: its summary is compressed and merged many times."""
    d = layers.Discretization(num_bins=10, epsilon=0.002)
    r = np.random.default_rng(SEED + 11)
    sample = r.lognormal(0.0, 1.0, size=(20000, 1)).astype("float32")
    d.adapt(sample, batch_size=1000)
    inp = keras.Input((1,))
    x = np.quantile(sample, np.linspace(0.01, 0.99, 25)).astype("float32").reshape(-1, 1)
    return keras.Model(inp, d(inp)), x, {}


def discretizations_of(model, paths):
    """Each adapt-mode Discretization: config path, name, its boundaries
    (exact float32 values) and its summary's shape."""
    out = []
    if not keras.__version__.startswith("2."):
        # Keras 3 writes an adapted layer's boundaries into its config.
        return out
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, layers.Discretization) and layer.input_bin_boundaries is None:
            out.append({
                "config_path": paths.get(layer) or layer.name,
                "name": layer.name,
                "num_bins": layer.num_bins,
                "epsilon": layer.epsilon,
                "bin_boundaries": exact(np.asarray(layer.bin_boundaries, "float32")),
                "summary_shape": list(np.asarray(layer.summary).shape),
            })
    return out


CASES = {
    "axis_last": case_axis_last,
    "axis_none": case_axis_none,
    "multi_axis_trailing": case_multi_axis_trailing,
    "multi_axis_inner": case_multi_axis_inner,
    "invert": case_invert,
    "two_norms": case_two_norms,
    "nested_sequential": case_nested_sequential,
    "custom_layer": case_custom_layer,
    "mixed_float16": case_mixed_float16,
    "explicit": case_explicit,
    "no_norm": case_no_norm,
    "efficientnet_stem": case_efficientnet_stem,
    "cnn": case_cnn,
    "branches": case_branches,
    "nested_functional": case_nested_functional,
    "two_in_two_out": case_two_in_two_out,
    "text": case_text,
    "compiled_adam": case_compiled_adam,
    "compiled_sgd": case_compiled_sgd,
    "compiled_rmsprop": case_compiled_rmsprop,
    "compiled_sgd_plain": case_compiled_sgd_plain,
    "compiled_schedule": case_compiled_schedule,
    "compiled_cosine": case_compiled_cosine,
    "compiled_legacy_adam": case_compiled_legacy_adam,
    "compiled_adamw": case_compiled_adamw,
    "compiled_mixed_float16": case_compiled_mixed_float16,
    "arithmetic": case_arithmetic,
    "discretization": case_discretization,
    "discretization_onehot": case_discretization_onehot,
    "discretization_large": case_discretization_large,
    # The same model as axis_last, saved unzipped (Keras >= 3.4).
    "directory_form": case_axis_last,
}


# ------------------------------------------------------- the reporter's model


IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_VARIANCE = [0.229**2, 0.224**2, 0.225**2]


def case_efficientnet(workdir):
    """keras #20147: EfficientNetB0(weights="imagenet") under a trainable head.

    No weights can be downloaded, so a legacy `.h5` weights file is written
    here (random weights, ImageNet normalization statistics) and served to
    `weights="imagenet"` in place of the download. In Keras 3.0-3.5 that
    load skips finalize_state(), exactly as with the real file.
    """
    from keras.src.applications import efficientnet
    from keras.src.legacy.saving import legacy_h5_format

    shape = (64, 64, 3)
    donor = keras.applications.EfficientNetB0(
        include_top=False, weights=None, input_shape=shape
    )
    (norm,) = [l for l in donor.layers if isinstance(l, layers.Normalization)]
    norm.adapt_mean.assign(np.array(IMAGENET_MEAN, "float32"))
    norm.adapt_variance.assign(np.array(IMAGENET_VARIANCE, "float32"))
    norm.count.assign(1281167)
    legacy = os.path.join(workdir, "efficientnetb0_notop.h5")
    with h5py.File(legacy, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, donor)

    real_get_file = efficientnet.file_utils.get_file
    efficientnet.file_utils.get_file = lambda *a, **k: legacy
    try:
        base = keras.applications.EfficientNetB0(
            include_top=False, weights="imagenet", input_shape=shape
        )
    finally:
        efficientnet.file_utils.get_file = real_get_file
    base.trainable = True
    inp = keras.Input(shape)
    h = base(inp)
    h = layers.GlobalAveragePooling2D()(h)
    dense = layers.Dense(32, activation="relu")
    h = dense(h)
    bn = layers.BatchNormalization()
    h = bn(h)
    h = layers.Dropout(0.3)(h)
    top = layers.Dense(3, activation="softmax")
    out = top(h)
    model = keras.Model(inp, out)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    r = np.random.default_rng(SEED)
    xt = r.uniform(0, 255, size=(8,) + shape).astype("float32")
    yt = r.integers(0, 3, size=(8,))
    model.fit(xt, yt, epochs=1, batch_size=4, verbose=0)
    # Calibrate the head as training to convergence would: standardize the
    # features it sees and make the classifier confident. Random backbone
    # weights otherwise give near-constant outputs that hide the bug.
    feats = keras.Model(inp, dense.output).predict(xt, verbose=0)
    bn.moving_mean.assign(feats.mean(axis=0))
    bn.moving_variance.assign(feats.var(axis=0) + 1e-3)
    kernel, bias = top.get_weights()
    top.set_weights([kernel * 20.0, bias])
    (norm,) = norms_of(model)
    x = r.uniform(0, 255, size=(4,) + shape).astype("float32")
    return model, x, {norm: "efficientnetb0/" + norm.name}


# ------------------------------------------- keras.applications (generated)


def case_mobilenetv2():
    """keras.applications.MobileNetV2 (weights=None, alpha 0.35, 32x32):
    ZeroPadding2D, ReLU(6), DepthwiseConv2D, BatchNormalization, Add."""
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=5
    )
    x = np.random.default_rng(SEED).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    return model, x, {}


def case_efficientnetb0():
    """keras.applications.EfficientNetB0 (weights=None, 32x32) with
    ImageNet statistics in its Normalization layer: swish, squeeze and
    excitation (Reshape, Multiply), Dropout with a noise shape."""
    model = keras.applications.EfficientNetB0(
        weights=None, input_shape=(32, 32, 3), classes=5
    )
    (n,) = [l for l in model.layers if isinstance(l, layers.Normalization)]
    n.adapt_mean.assign(np.array(IMAGENET_MEAN, "float32"))
    n.adapt_variance.assign(np.array(IMAGENET_VARIANCE, "float32"))
    n.count.assign(1281167)
    n.finalize_state()
    x = np.random.default_rng(SEED).uniform(0, 255, size=(3, 32, 32, 3)).astype("float32")
    return model, x, {n: None}


APPLICATIONS = {
    "mobilenetv2": case_mobilenetv2,
    "efficientnetb0": case_efficientnetb0,
}


# ------------------------------------------------------------ the recording


def exact(arr):
    """float32 array -> nested lists of Python floats (exact widening)."""
    return np.asarray(arr, dtype="float32").astype("float64").tolist()


def find_group(h5, mean, variance, count):
    """The `.../vars` group holding exactly these three values."""
    hits = []

    def visit(name, obj):
        if isinstance(obj, h5py.Group) and name.endswith("vars"):
            if sorted(obj.keys()) == ["0", "1", "2"]:
                m, v, c = obj["0"][()], obj["1"][()], obj["2"][()]
                if (
                    np.array_equal(m, mean)
                    and np.array_equal(v, variance)
                    and int(c) == int(count)
                ):
                    hits.append(name)

    h5.visititems(visit)
    if len(hits) != 1:
        raise SystemExit(f"weights group not found uniquely: {hits}")
    return hits[0]


def weights_of(archive):
    if os.path.isdir(archive):
        return h5py.File(os.path.join(archive, "model.weights.h5"), "r")
    with zipfile.ZipFile(archive) as z:
        return h5py.File(io.BytesIO(z.read("model.weights.h5")), "r")


def predict_with(model, norms, x, which):
    """Predictions with every adapt-mode layer computing `which` stats."""
    adapt = [n for n in norms if n.input_mean is None]
    saved = [(n.adapt_mean.numpy(), n.adapt_variance.numpy()) for n in adapt]
    for n, (m, v) in zip(adapt, saved):
        if which == "identity":
            n.adapt_mean.assign(np.zeros_like(m))
            n.adapt_variance.assign(np.ones_like(v))
        n.finalize_state()
    # The compiled predict function captured the old statistics as
    # constants: drop it so the new ones are traced in.
    model.predict_function = None
    pred = model.predict(model_input(model, x), verbose=0)
    for n, (m, v) in zip(adapt, saved):
        n.adapt_mean.assign(m)
        n.adapt_variance.assign(v)
        n.finalize_state()
    return np.asarray(pred, dtype="float32")


def record(name, builder, out_dir, legacy_signature):
    case_dir = os.path.join(out_dir, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    os.makedirs(case_dir)
    if builder is case_efficientnet:
        model, x, paths = builder(case_dir)
        os.remove(os.path.join(case_dir, "efficientnetb0_notop.h5"))
    elif builder is case_efficientnet_stem:
        model, x, paths = builder(case_dir)
    else:
        model, x, paths = builder()
    # Keras refuses an unzipped save to a path ending in `.keras`.
    archive_name = "model" if name == "directory_form" else "model.keras"
    archive = os.path.join(case_dir, archive_name)
    if name == "directory_form":
        model.save(archive, zipped=False)
    elif keras.__version__.startswith("2.12."):
        # tf.keras 2.12 writes HDF5 to a `.keras` path unless told.
        model.save(archive, save_format="keras_v3")
    else:
        model.save(archive)
    pred_memory = np.asarray(model.predict(model_input(model, x), verbose=0), dtype="float32")
    norms = norms_of(model)
    layers_out = []
    with weights_of(archive) as h5:
        for n in norms:
            entry = {
                # None: a layer of the root model, found under its own name.
                "config_path": paths[n] or n.name,
                "name": n.name,
                "axis": list(n.axis),
                "invert": bool(getattr(n, "invert", False)),
                "mode": "adapt" if n.input_mean is None else "explicit",
            }
            if n.input_mean is None:
                mean = n.adapt_mean.numpy()
                var = n.adapt_variance.numpy()
                count = int(n.count.numpy())
                group = find_group(h5, mean, var, count)
                keep = n._keep_axis
                ndim = len(n._build_input_shape)
                trailing = list(keep) == list(range(ndim - len(keep), ndim))
                entry.update(
                    weights_group=group,
                    stats_shape=list(mean.shape),
                    mean=exact(mean),
                    variance=exact(var),
                    count=count,
                    storage="config" if trailing else "variables",
                )
            layers_out.append(entry)
    model.predict_function = None
    pred_adapted = predict_with(model, norms, x, "adapted")
    pred_identity = predict_with(model, norms, x, "identity")
    auto = "identity" if legacy_signature else "adapted"
    expect_memory = pred_identity if legacy_signature else pred_adapted
    if not np.array_equal(pred_memory, expect_memory):
        raise SystemExit(f"{name}: the in-memory model does not compute {auto}")
    np.save(os.path.join(case_dir, "x.npy"), x)
    if hasattr(model, "_krepair_step"):
        record_training(model, archive, x, case_dir)
    np.save(os.path.join(case_dir, "pred_memory.npy"), pred_memory)
    np.save(os.path.join(case_dir, "pred_adapted.npy"), pred_adapted)
    np.save(os.path.join(case_dir, "pred_identity.npy"), pred_identity)
    expected = {
        "case": name,
        "keras_version": keras.__version__,
        "archive": archive_name,
        "form": "directory" if name == "directory_form" else "zip",
        "auto": auto,
        "legacy_signature": legacy_signature,
        "layers": layers_out,
        "discretizations": discretizations_of(model, paths),
    }
    with open(os.path.join(case_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"{name}: {len(layers_out)} normalization layer(s), auto={auto}")


# krepair's migrate::UNMAPPED_OPTIMIZERS.
UNMAPPED_OPTIMIZERS = {"Adadelta", "Adafactor", "Adagrad", "Adamax", "AdamW", "Ftrl", "Lion", "Nadam"}


def record_training(model, archive, x, case_dir):
    """For a compiled model: its optimizer (class, config, variables) and
    the predictions after one more training step of the saved archive
    reloaded here, which a migrated archive must reproduce."""
    opt = model.optimizer
    xs, ys = model._krepair_step
    np.savez(os.path.join(case_dir, "train_step.npz"), x=xs, y=ys)
    # tf.keras saves no variables of a legacy optimizer (and cannot load
    # the archive compiled), and krepair drops those of the optimizers it
    # does not map: a migrated model's optimizer starts afresh, as the new
    # optimizer of the same class and hyperparameters does here.
    fresh_start = "legacy" in type(opt).__module__ or type(opt).__name__ in UNMAPPED_OPTIMIZERS
    if fresh_start:
        fresh = getattr(optimizers, type(opt).__name__)(
            **{k: v for k, v in opt.get_config().items() if k not in ("decay", "name")})
        again = keras.models.load_model(archive, compile=False)
        again.compile(optimizer=fresh, loss=model.loss)
        fresh.build(again.trainable_variables)
        variables = fresh.variables() if callable(fresh.variables) else fresh.variables
    else:
        again = keras.models.load_model(archive)
        variables = opt.variables() if callable(opt.variables) else opt.variables
    np.savez(
        os.path.join(case_dir, "optimizer_vars.npz"),
        *[np.asarray(v) for v in variables],
    )
    again.train_on_batch(xs, ys)
    np.save(
        os.path.join(case_dir, "pred_step.npy"),
        np.asarray(again.predict(model_input(again, x), verbose=0), dtype="float32"),
    )
    config = {k: (v.item() if hasattr(v, "item") else v) for k, v in opt.get_config().items()}
    with open(os.path.join(case_dir, "optimizer.json"), "w") as f:
        json.dump({
            "class_name": type(opt).__name__,
            "config": config,
            "variables": len(variables),
            "state_saved": not fresh_start,
            "loss": type(model.loss).__name__ if not isinstance(model.loss, str) else model.loss,
        }, f, indent=1)
        f.write("\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="folder to write the cases into")
    p.add_argument("--efficientnet", action="store_true",
                   help="make only the reporter's EfficientNetB0 model (about 20 MB)")
    p.add_argument("--applications", action="store_true",
                   help="make only the keras.applications models (MobileNetV2, EfficientNetB0; about 19 MB)")
    p.add_argument("cases", nargs="*", help="case names (default: all small cases)")
    args = p.parse_args()
    keras.utils.set_random_seed(SEED)
    os.makedirs(args.out, exist_ok=True)
    major_minor = tuple(int(v) for v in keras.__version__.split(".")[:2])
    if args.efficientnet:
        legacy = (3, 0) <= major_minor <= (3, 5)
        record("efficientnet", case_efficientnet, args.out, legacy)
        return
    legacy = (3, 0) <= major_minor <= (3, 5)
    if args.applications:
        for name, builder in APPLICATIONS.items():
            keras.utils.set_random_seed(SEED)
            record(name, builder, args.out, False)
        return
    # tf.keras 2.x has no unzipped save, and its legacy-h5 helpers differ.
    not_in_tf_keras = {"directory_form", "efficientnet_stem"}
    # Compiled tf.keras models are inputs of `krepair migrate` only.
    # So is arithmetic on Keras tensors (TFOpLambda layers in tf.keras).
    # So is the Discretization bug (Keras 3 stores the boundaries: its
    # archives get the lone case, made on request, as a no-op).
    only_tf_keras = {n for n in CASES if n.startswith(("compiled_", "discretization"))} | {"arithmetic"}
    for name in args.cases or CASES:
        if major_minor < (3, 0) and name in not_in_tf_keras:
            print(f"{name}: skipped (not available in tf.keras {keras.__version__})")
            continue
        if major_minor >= (3, 0) and name in only_tf_keras and not args.cases:
            continue
        keras.utils.set_random_seed(SEED)
        record(name, CASES[name], args.out, legacy and name == "efficientnet_stem")


if __name__ == "__main__":
    main()
