"""The layer zoo: one small model per Keras 2 layer class, saved by the
tf.keras (2.12 to 2.15) or tf_keras (2.16 to 2.21) of the venv it runs in,
for the migration check (scripts/check_migrate.py).

    .venvs/keras-tf2.15/bin/python testdata/zoo.py --out target/zoo/tf2.15

Each case is a folder in the layout check_migrate.py reads: `model.keras`,
the input `x.npy`, what the in-memory model predicts (`pred_memory.npy`)
and `expected.json`. Every float variable is moved away from its initial
value before the save, so that a variable put in the wrong place changes
the output. The `compiled_by_name_*` cases are compiled the way tutorials
do it (`optimizer="adam"`, `loss="mse"`), fitted one epoch, and carry what
check_migrate.py's compiled check reads (optimizer.json,
optimizer_vars.npz, train_step.npz, pred_step.npy).

A case the writer cannot build (a class it does not have) is skipped and
said so; `--list` prints the case names.
"""

import argparse
import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("KERAS_BACKEND", "jax")  # a Keras 3 writer (tf.keras ignores it)

import numpy as np  # noqa: E402

try:  # TensorFlow >= 2.16 keeps Keras 2 as the tf_keras package.
    import tf_keras as keras  # noqa: E402
    import tensorflow as tf  # noqa: E402

    VERSION = keras.__version__
except ImportError:
    import keras as keras_package  # noqa: E402

    VERSION = keras_package.__version__
    if VERSION.startswith("3."):  # a Keras 3 writer (its own legacy .h5, issue #31)
        keras = keras_package
    else:
        import tensorflow as tf  # noqa: E402

        keras = tf.keras
KERAS3 = VERSION.startswith("3.")

L = keras.layers
SEED = 30


def floats(shape, n=4, seed=0):
    return np.random.default_rng(SEED + seed).normal(size=(n,) + tuple(shape)).astype("float32")


def ints(shape, high, n=4, seed=0):
    return np.random.default_rng(SEED + seed).integers(0, high, size=(n,) + tuple(shape)).astype("int64")


def one(layer, shape, x=None, dtype="float32"):
    """`layer` over one input of `shape` (a Functional model)."""
    inp = keras.Input(shape, dtype=dtype)
    return keras.Model(inp, layer(inp)), floats(shape) if x is None else x


def seq(layers, shape):
    """A Sequential whose first layer is given `input_shape=` (tf.keras
    then writes `batch_input_shape` into that layer's config)."""
    return keras.Sequential(layers), floats(shape)


def two(layer, a, b):
    """`layer` over two inputs of shapes `a` and `b`."""
    i, j = keras.Input(a), keras.Input(b)
    return keras.Model([i, j], layer([i, j])), [floats(a), floats(b, seed=1)]


def cells(cell):
    return one(L.RNN(cell, return_sequences=True), (5, 3))


WORDS = np.array([["a", "c"], ["b", "a"], ["z", "b"], ["c", "c"]])


def adapted(layer, data):
    """`layer` adapted to `data` (its vocabulary then lives in the
    archive's assets, not in its config)."""
    layer.adapt(np.array(data))
    return layer


def mha():
    q, v = keras.Input((4, 6)), keras.Input((5, 6))
    out = L.MultiHeadAttention(num_heads=2, key_dim=3)(q, v)
    return keras.Model([q, v], out), [floats((4, 6)), floats((5, 6), seed=1)]


def transformer_block():
    inp = keras.Input((6, 8))
    h = L.MultiHeadAttention(num_heads=2, key_dim=4, dropout=0.1)(inp, inp)
    h = L.LayerNormalization(epsilon=1e-6)(L.Add()([inp, h]))
    f = L.Dense(8)(L.Dense(16, activation="relu")(h))
    out = L.GlobalAveragePooling1D()(L.LayerNormalization(epsilon=1e-6)(f + h))
    return keras.Model(inp, L.Dense(2)(out)), floats((6, 8))


def time_series():
    inp = keras.Input((12, 3))
    h = L.Conv1D(4, 3, padding="causal", dilation_rate=2, activation="relu")(inp)
    h = L.SeparableConv1D(4, 3, padding="same")(h)
    h = L.Conv1DTranspose(3, 3, strides=2)(h)
    h = L.MaxPooling1D()(h)
    return keras.Model(inp, L.Dense(1)(L.Flatten()(h))), floats((12, 3))


def shared_layer():
    d = L.Dense(3, name="shared")
    i, j = keras.Input((4,)), keras.Input((4,))
    return keras.Model([i, j], L.Concatenate()([d(i), d(j)])), [floats((4,)), floats((4,), seed=1)]


def nested():
    inner = keras.Sequential([L.Conv2D(3, 3, padding="same"), L.PReLU()], name="inner")
    inp = keras.Input((6, 6, 2))
    h = inner(L.UpSampling2D()(inp))
    return keras.Model(inp, L.GlobalMaxPooling2D()(h)), floats((6, 6, 2))


def efficientnet_stem():
    """EfficientNet's stem: Rescaling, then a Normalization adapted over
    axis 3 of a rank-4 input (tf.keras 2.12 writes no build_config: its
    rank comes from the InputLayer, through the Rescaling)."""
    inp = keras.Input((8, 8, 3))
    h = L.Rescaling(1.0 / 255.0)(inp)
    n = L.Normalization(axis=3)
    n.adapt(np.random.default_rng(SEED).uniform(0, 1, size=(16, 8, 8, 3)).astype("float32"))
    h = n(h)
    h = L.Conv2D(4, 3, strides=2, padding="same", use_bias=False)(h)
    h = L.Activation("swish")(L.BatchNormalization(axis=3)(h))
    x = np.random.default_rng(SEED).uniform(0, 255, size=(4, 8, 8, 3)).astype("float32")
    return keras.Model(inp, L.GlobalAveragePooling2D()(h)), x


def embedding_lstm():
    inp = keras.Input((7,), dtype="int64")
    h = L.Embedding(20, 4, mask_zero=True)(inp)
    h = L.Bidirectional(L.LSTM(3, return_sequences=True))(h)
    return keras.Model(inp, L.GRU(2)(h)), ints((7,), 20)


def every_initializer():
    """A chain of Dense layers, one per initializer class of this Keras 3's
    keras.initializers (the ones a 3x3 kernel takes), each with one of its
    regularizer and constraint classes in turn (issue #33: their names and
    config keys changed between Keras 3 versions)."""
    import inspect

    def classes(mod, base):
        out = []
        for n in sorted(dir(mod)):
            c = getattr(mod, n)
            if inspect.isclass(c) and issubclass(c, base) and c is not base and c not in out:
                out.append(c)
        return out

    inits = []
    for c in classes(keras.initializers, keras.initializers.Initializer):
        try:
            keras.ops.convert_to_numpy(c()((3, 3)))
            inits.append(c)
        except Exception:  # noqa: BLE001 - needs arguments or another shape
            pass
    regs = [c() for c in classes(keras.regularizers, keras.regularizers.Regularizer) if c.__name__ != "OrthogonalRegularizer"]
    cons = [c() for c in classes(keras.constraints, keras.constraints.Constraint)]
    inp = keras.Input((3,))
    h = inp
    for i, c in enumerate(inits):
        h = L.Dense(3, kernel_initializer=c(), kernel_regularizer=regs[i % len(regs)],
                    kernel_constraint=cons[i % len(cons)], name=f"dense_{c.__name__.lower()}")(h)
    return keras.Model(inp, h), floats((3,))


# Cases only a Keras 3 writer builds, and only as a .keras archive (issue
# #33: what changed between Keras 3 versions).
KERAS3_CASES = {
    "keras3_every_initializer": every_initializer,
    "keras3_LSTM_orthogonal_gain": lambda: one(
        L.LSTM(3, recurrent_initializer=keras.initializers.Orthogonal(gain=2.0)
               if hasattr(keras.initializers, "Orthogonal") else keras.initializers.OrthogonalInitializer(gain=2.0)),
        (5, 3)),
}


# name: builder returning (model, x). Each name is the class it covers,
# with a variant where one class has several configurations.
CASES = {
    "Activation": lambda: one(L.Activation("tanh"), (5,)),
    "ActivityRegularization": lambda: one(L.ActivityRegularization(l1=0.01), (5,)),
    "Add": lambda: two(L.Add(), (4,), (4,)),
    "AdditiveAttention": lambda: two(L.AdditiveAttention(), (3, 4), (5, 4)),
    "AlphaDropout": lambda: one(L.AlphaDropout(0.2), (5,)),
    "Attention": lambda: two(L.Attention(), (3, 4), (5, 4)),
    "Average": lambda: two(L.Average(), (4,), (4,)),
    "AveragePooling1D": lambda: one(L.AveragePooling1D(2), (6, 3)),
    "AveragePooling2D": lambda: one(L.AveragePooling2D(2), (6, 6, 3)),
    "AveragePooling3D": lambda: one(L.AveragePooling3D(2), (4, 4, 4, 2)),
    "BatchNormalization": lambda: one(L.BatchNormalization(), (4, 4, 3)),
    "Bidirectional_GRU": lambda: one(L.Bidirectional(L.GRU(3)), (5, 3)),
    "Bidirectional_LSTM_concat": lambda: one(L.Bidirectional(L.LSTM(3, return_sequences=True)), (5, 3)),
    "Bidirectional_SimpleRNN_sum": lambda: one(L.Bidirectional(L.SimpleRNN(3), merge_mode="sum"), (5, 3)),
    "CategoryEncoding": lambda: one(L.CategoryEncoding(6, output_mode="multi_hot"), (3,), ints((3,), 6), "int64"),
    "CenterCrop": lambda: one(L.CenterCrop(4, 4), (6, 6, 3)),
    "Concatenate": lambda: two(L.Concatenate(axis=1), (3,), (2,)),
    "Conv1D": lambda: one(L.Conv1D(4, 3, activation="relu"), (8, 3)),
    "Conv1D_causal_dilated": lambda: one(L.Conv1D(4, 3, padding="causal", dilation_rate=2), (8, 3)),
    "Conv1DTranspose": lambda: one(L.Conv1DTranspose(4, 3, strides=2), (6, 3)),
    "Conv2D": lambda: one(L.Conv2D(4, 3, padding="same"), (6, 6, 3)),
    "Conv2D_groups": lambda: one(L.Conv2D(4, 3, groups=2), (6, 6, 4)),
    "Conv2DTranspose": lambda: one(L.Conv2DTranspose(4, 3, strides=2, padding="same"), (5, 5, 3)),
    "Conv3D": lambda: one(L.Conv3D(3, 2), (4, 4, 4, 2)),
    "Conv3DTranspose": lambda: one(L.Conv3DTranspose(3, 2), (3, 3, 3, 2)),
    "ConvLSTM1D": lambda: one(L.ConvLSTM1D(3, 3, padding="same", recurrent_activation="sigmoid"), (4, 6, 2)),
    "ConvLSTM2D": lambda: one(
        L.ConvLSTM2D(2, 3, padding="same", return_sequences=True, recurrent_activation="sigmoid"), (3, 5, 5, 2)),
    "ConvLSTM3D": lambda: one(L.ConvLSTM3D(2, 2, padding="same", recurrent_activation="sigmoid"), (2, 3, 3, 3, 1)),
    "Discretization": lambda: one(L.Discretization(bin_boundaries=[-0.5, 0.0, 0.5]), (4,)),
    "Cropping1D": lambda: one(L.Cropping1D((1, 2)), (6, 3)),
    "Cropping2D": lambda: one(L.Cropping2D(((1, 0), (0, 2))), (6, 6, 3)),
    "Cropping3D": lambda: one(L.Cropping3D(1), (4, 4, 4, 2)),
    "Dense": lambda: one(L.Dense(3, activation="relu"), (5,)),
    "Dense_3d": lambda: one(L.Dense(3), (4, 5)),
    "DepthwiseConv1D": lambda: one(L.DepthwiseConv1D(3, depth_multiplier=2), (8, 3)),
    "DepthwiseConv2D": lambda: one(L.DepthwiseConv2D(3, depth_multiplier=2, padding="same"), (6, 6, 3)),
    "Dot": lambda: two(L.Dot(axes=1), (4,), (4,)),
    "Dot_normalize": lambda: two(L.Dot(axes=(2, 2), normalize=True), (3, 4), (5, 4)),
    "Dropout": lambda: one(L.Dropout(0.3), (5,)),
    "ELU": lambda: one(L.ELU(alpha=0.7), (5,)),
    "EinsumDense": lambda: one(L.EinsumDense("ab,bc->ac", output_shape=3, bias_axes="c"), (5,)),
    "Embedding": lambda: one(L.Embedding(10, 4), (6,), ints((6,), 10), "int64"),
    "Flatten": lambda: one(L.Flatten(), (3, 4)),
    "GRU": lambda: one(L.GRU(4), (5, 3)),
    "GRU_reset_before": lambda: one(L.GRU(4, reset_after=False, return_sequences=True), (5, 3)),
    "GRUCell": lambda: cells(L.GRUCell(3)),
    "GaussianDropout": lambda: one(L.GaussianDropout(0.2), (5,)),
    "GaussianNoise": lambda: one(L.GaussianNoise(0.2), (5,)),
    "GlobalAveragePooling1D": lambda: one(L.GlobalAveragePooling1D(), (6, 3)),
    "GlobalAveragePooling2D": lambda: one(L.GlobalAveragePooling2D(keepdims=True), (6, 6, 3)),
    "GlobalAveragePooling3D": lambda: one(L.GlobalAveragePooling3D(), (4, 4, 4, 2)),
    "GlobalMaxPooling1D": lambda: one(L.GlobalMaxPooling1D(), (6, 3)),
    "GlobalMaxPooling2D": lambda: one(L.GlobalMaxPooling2D(), (6, 6, 3)),
    "GlobalMaxPooling3D": lambda: one(L.GlobalMaxPooling3D(), (4, 4, 4, 2)),
    "GroupNormalization": lambda: one(L.GroupNormalization(groups=2), (4, 4, 4)),
    "Hashing": lambda: one(L.Hashing(num_bins=5), (3,), ints((3,), 100), "int64"),
    "Identity": lambda: one(L.Identity(), (5,)),
    "IntegerLookup": lambda: one(L.IntegerLookup(vocabulary=[3, 7, 11]), (4,), ints((4,), 12), "int64"),
    "LSTM": lambda: one(L.LSTM(4), (5, 3)),
    "LSTM_sequences": lambda: one(L.LSTM(3, return_sequences=True, unroll=True), (5, 3)),
    "LSTMCell": lambda: cells(L.LSTMCell(3)),
    "LayerNormalization": lambda: one(L.LayerNormalization(), (4, 5)),
    "LayerNormalization_axes": lambda: one(L.LayerNormalization(axis=[1, 2]), (3, 4, 5)),
    "LeakyReLU": lambda: one(L.LeakyReLU(alpha=0.2), (5,)),
    "Masking": lambda: one(L.Masking(0.0), (4, 3)),
    "MaxPooling1D": lambda: one(L.MaxPooling1D(2), (6, 3)),
    "MaxPooling2D": lambda: one(L.MaxPooling2D(2), (6, 6, 3)),
    "MaxPooling3D": lambda: one(L.MaxPooling3D(2), (4, 4, 4, 2)),
    "Maximum": lambda: two(L.Maximum(), (4,), (4,)),
    "Minimum": lambda: two(L.Minimum(), (4,), (4,)),
    "MultiHeadAttention": mha,
    "Multiply": lambda: two(L.Multiply(), (4,), (4,)),
    "Normalization": lambda: one(L.Normalization(mean=[1.0, 2.0, 3.0], variance=[1.0, 4.0, 9.0]), (3,)),
    "PReLU": lambda: one(L.PReLU(), (5,)),
    "PReLU_shared": lambda: one(L.PReLU(shared_axes=[1, 2]), (4, 4, 3)),
    "Permute": lambda: one(L.Permute((2, 1)), (3, 4)),
    "RNN_stacked_cells": lambda: cells(L.StackedRNNCells([L.SimpleRNNCell(3), L.LSTMCell(2)])),
    "RandomBrightness": lambda: one(L.RandomBrightness(0.2), (6, 6, 3)),
    "RandomContrast": lambda: one(L.RandomContrast(0.2), (6, 6, 3)),
    "RandomFlip": lambda: one(L.RandomFlip(), (6, 6, 3)),
    "RandomHeight": lambda: one(L.RandomHeight(0.2), (6, 6, 3)),
    "RandomRotation": lambda: one(L.RandomRotation(0.1), (6, 6, 3)),
    "RandomTranslation": lambda: one(L.RandomTranslation(0.1, 0.1), (6, 6, 3)),
    "RandomWidth": lambda: one(L.RandomWidth(0.2), (6, 6, 3)),
    "RandomZoom": lambda: one(L.RandomZoom(0.1), (6, 6, 3)),
    "ReLU": lambda: one(L.ReLU(max_value=2.0, negative_slope=0.1, threshold=0.1), (5,)),
    "RepeatVector": lambda: one(L.RepeatVector(3), (4,)),
    "Rescaling": lambda: one(L.Rescaling(1 / 127.5, offset=-1), (5,)),
    "Reshape": lambda: one(L.Reshape((2, 6)), (3, 4)),
    "Resizing": lambda: one(L.Resizing(4, 5), (6, 6, 3)),
    "SeparableConv1D": lambda: one(L.SeparableConv1D(4, 3, depth_multiplier=2), (8, 3)),
    "SeparableConv2D": lambda: one(L.SeparableConv2D(4, 3, padding="same"), (6, 6, 3)),
    "SimpleRNN": lambda: one(L.SimpleRNN(4), (5, 3)),
    "SimpleRNNCell": lambda: cells(L.SimpleRNNCell(3)),
    "Softmax": lambda: one(L.Softmax(), (5,)),
    "SpatialDropout1D": lambda: one(L.SpatialDropout1D(0.2), (5, 3)),
    "SpatialDropout2D": lambda: one(L.SpatialDropout2D(0.2), (4, 4, 3)),
    "SpatialDropout3D": lambda: one(L.SpatialDropout3D(0.2), (3, 3, 3, 2)),
    "Subtract": lambda: two(L.Subtract(), (4,), (4,)),
    "ThresholdedReLU": lambda: one(L.ThresholdedReLU(theta=0.3), (5,)),
    "TimeDistributed": lambda: one(L.TimeDistributed(L.Dense(3)), (4, 5)),
    "UnitNormalization": lambda: one(L.UnitNormalization(), (5,)),
    "UpSampling1D": lambda: one(L.UpSampling1D(2), (4, 3)),
    "UpSampling2D": lambda: one(L.UpSampling2D(2, interpolation="bilinear"), (4, 4, 3)),
    "UpSampling3D": lambda: one(L.UpSampling3D(2), (2, 2, 2, 2)),
    "ZeroPadding1D": lambda: one(L.ZeroPadding1D(2), (4, 3)),
    "ZeroPadding2D": lambda: one(L.ZeroPadding2D(((1, 0), (2, 1))), (4, 4, 3)),
    "ZeroPadding3D": lambda: one(L.ZeroPadding3D(1), (2, 2, 2, 2)),
    "ThresholdedReLU_zero": lambda: one(L.ThresholdedReLU(theta=0.0), (5,)),
    "StringLookup": lambda: one(L.StringLookup(vocabulary=["a", "b", "c"]), (2,), WORDS, "string"),
    "StringLookup_adapted": lambda: one(adapted(L.StringLookup(), ["a", "b", "b", "c", "c", "c"]), (2,), WORDS, "string"),
    "TextVectorization": lambda: one(
        adapted(L.TextVectorization(max_tokens=10, output_sequence_length=4), ["the cat sat", "the dog ran", "a cat"]),
        (), np.array(["the cat ran", "a dog sat on", "zebra", ""]), "string"),
    # Models as people write them.
    "model_transformer_block": transformer_block,
    "model_time_series": time_series,
    "model_shared_layer": shared_layer,
    "model_nested": nested,
    "model_embedding_lstm": embedding_lstm,
    "model_efficientnet_stem": efficientnet_stem,
    "model_sequential_input_shape": lambda: seq(
        [L.Conv2D(4, 3, input_shape=(6, 6, 3), activation="relu"), L.MaxPooling2D(), L.Flatten(), L.Dense(2)], (6, 6, 3)),
}


# Cases krepair must refuse, with what its message must say.
REFUSED = {
    "refused_ConvLSTM2D_hard_sigmoid": (
        lambda: one(L.ConvLSTM2D(2, 3, padding="same"), (3, 5, 5, 2)), "hard_sigmoid"),
    "refused_Lambda": (lambda: one(L.Lambda(lambda t: t * 2.0), (5,)), "Lambda layer holds Python bytecode"),
    "refused_RandomCrop": (lambda: one(L.RandomCrop(4, 4), (6, 6, 3)), "smart_resize"),
    "refused_LocallyConnected1D": (
        lambda: one(L.LocallyConnected1D(2, 3), (6, 3)), "LocallyConnected"),
}
CASES.update({name: build for name, (build, _) in REFUSED.items()})

# Classes Keras 3 runs through TensorFlow whatever its backend
# ("Layer Hashing requires TensorFlow"): their cases load only where
# tensorflow is installed.
NEEDS_TENSORFLOW = {"Hashing", "IntegerLookup", "StringLookup", "StringLookup_adapted", "TextVectorization"}

# tf.keras 2.12 to 2.14 save an adapted vocabulary as an asset under their
# weights layout (assets/_layer_checkpoint_dependencies/...), which
# krepair does not move yet: refused, saying so.
LEGACY_LAYOUT_ASSETS = {"StringLookup_adapted", "TextVectorization"}

# What each --format writes, and the form expected.json names.
# h5-named-keras: what tf.keras 2.12 writes for model.save("model.keras")
# without save_format (an HDF5 file under a .keras name).
ARCHIVES = {"keras": "model.keras", "h5": "model.h5", "h5-named-keras": "model.keras"}
FORMS = {"keras": "zip", "h5": "hdf5", "h5-named-keras": "hdf5"}

# The legacy HDF5 cases krepair refuses (beyond REFUSED, whose classes
# it refuses whatever the format), with what the refusal says.
H5_REFUSED = {}

# The REFUSED cases a Keras 3 writer saves with what its own Keras 3
# computes (their refusals are about what tf.keras wrote).
KERAS3_TAKES = {"refused_ConvLSTM2D_hard_sigmoid", "refused_RandomCrop"}

# Keras 3.0 names a weight of its HDF5 files by the variable's name alone
# (`kernel`), which does not say which layer of a nested model it is.
KERAS30_H5_REFUSED = {"model_nested": "names no layer of it"}


def perturb(model, seed):
    """Move every float variable away from its initial value (variances
    and other non-trainable statistics stay positive), but an adapted
    Normalization's statistics, which the model computes only as
    finalize_state() left them."""
    r = np.random.default_rng(SEED + seed)
    adapted = {id(w) for l in model.layers if isinstance(l, L.Normalization) for w in l.weights}
    for w in model.weights:
        if id(w) in adapted:
            continue
        dtype = getattr(w, "dtype", None)  # none on a lookup's vocabulary handle (tf.keras 2.13, 2.14)
        dtype = getattr(dtype, "name", dtype)  # tf.DType (tf.keras) or str (Keras 3)
        if not str(dtype).startswith(("float", "bfloat")):  # a lookup's vocabulary handle
            continue
        v = np.asarray(w.numpy() if hasattr(w, "numpy") else w)
        scale = r.uniform(0.5, 1.5, size=v.shape)
        if w.trainable:
            v = v * scale + r.normal(0, 0.2, size=v.shape)
        else:
            v = v * scale + r.uniform(0, 0.2, size=v.shape)
        w.assign(v.astype(str(dtype)))


def predict(model, x):
    return np.asarray(model.predict(x, verbose=0), dtype="float32")


BY_NAME = {
    # (optimizer, loss, metrics): how tutorials compile.
    "compiled_by_name_adam": ("adam", "mse", ["mae"]),
    "compiled_by_name_rmsprop": ("rmsprop", "binary_crossentropy", ["accuracy"]),
    "compiled_by_name_sgd": ("sgd", "mean_squared_error", None),
}


def record(name, out_dir, fmt="keras"):
    case_dir = os.path.join(out_dir, name)
    shutil.rmtree(case_dir, ignore_errors=True)
    keras.utils.set_random_seed(SEED)
    try:
        build = CASES.get(name) or KERAS3_CASES.get(name)
        model, x = build() if build else one(L.Dense(1, activation="sigmoid"), (4,))
    except (AttributeError, TypeError, ValueError, ImportError) as e:
        print(f"{name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
        return
    os.makedirs(case_dir)
    perturb(model, len(name))
    if name in BY_NAME:
        fit_by_name(model, name, case_dir)
    archive = os.path.join(case_dir, ARCHIVES[fmt])
    if fmt == "h5-named-keras":
        model.save(archive)
        with open(archive, "rb") as f:
            if f.read(8) != b"\x89HDF\r\n\x1a\n":
                print(f"{name}: skipped (keras {VERSION} writes a zip under a .keras name)")
                shutil.rmtree(case_dir)
                return
    elif fmt == "h5" and KERAS3:
        try:
            model.save(archive)  # Keras 3 writes its legacy HDF5 for a .h5 name
        except Exception as e:  # noqa: BLE001 (Keras 3 cannot save some layers as HDF5)
            print(f"{name}: skipped (keras {VERSION} does not save it as HDF5: {type(e).__name__}: "
                  f"{str(e).splitlines()[0][:100]})")
            shutil.rmtree(case_dir)
            return
    elif fmt == "h5":
        try:
            model.save(archive, save_format="h5")
        except NotImplementedError as e:  # tf.keras cannot write it as HDF5 (lookup tables)
            print(f"{name}: skipped (tf.keras does not save it as HDF5: {str(e).splitlines()[0][:100]})")
            shutil.rmtree(case_dir)
            return
    elif VERSION.startswith("2.12."):
        model.save(archive, save_format="keras_v3")
    else:
        model.save(archive)
    xs = x if isinstance(x, list) else [x]
    if len(xs) == 1 or all(a.shape == xs[0].shape for a in xs):
        np.save(os.path.join(case_dir, "x.npy"), x)
    else:  # inputs of different shapes: one array each
        np.savez(os.path.join(case_dir, "x.npz"), *xs)
    pred = predict(model, x)
    np.save(os.path.join(case_dir, "pred_memory.npy"), pred)
    expected = {"case": name, "keras_version": VERSION, "archive": ARCHIVES[fmt], "form": FORMS[fmt],
                "inputs": len(xs), "layers": [], "discretizations": []}
    if name in REFUSED and not (KERAS3 and name in KERAS3_TAKES):
        expected["refused"] = REFUSED[name][1]
    if FORMS[fmt] == "hdf5" and name in H5_REFUSED:
        expected["refused"] = H5_REFUSED[name]
    if FORMS[fmt] == "hdf5" and VERSION.startswith("3.0.") and name in KERAS30_H5_REFUSED:
        expected["refused"] = KERAS30_H5_REFUSED[name]
    elif FORMS[fmt] != "hdf5" and name in LEGACY_LAYOUT_ASSETS and VERSION.startswith(("2.12.", "2.13.", "2.14.")):
        expected["refused"] = "an asset in tf.keras"
    if name in NEEDS_TENSORFLOW:
        expected["needs_tensorflow"] = True
    with open(os.path.join(case_dir, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    print(f"{name}: saved")
    return model


def fit_by_name(model, name, case_dir):
    """Compile by name, fit one epoch, keep the next batch, its result in
    a reload of the saved archive, and the optimizer's state."""
    optimizer, loss, metrics = BY_NAME[name]
    model.compile(optimizer=optimizer, loss=loss, metrics=metrics)
    r = np.random.default_rng(SEED)
    xt, yt = floats((4,), 16, 3), r.uniform(0, 1, size=(16, 1)).astype("float32")
    model.fit(xt, yt, epochs=1, batch_size=8, shuffle=False, verbose=0)
    xs, ys = floats((4,), 8, 4), r.uniform(0, 1, size=(8, 1)).astype("float32")
    np.savez(os.path.join(case_dir, "train_step.npz"), x=xs, y=ys)
    opt = model.optimizer
    np.savez(os.path.join(case_dir, "optimizer_vars.npz"), *[np.asarray(v) for v in opt.variables])
    config = {k: (v.item() if hasattr(v, "item") else v) for k, v in opt.get_config().items()}
    with open(os.path.join(case_dir, "optimizer.json"), "w") as f:
        json.dump({"class_name": type(opt).__name__, "config": config, "variables": len(opt.variables),
                   "state_saved": True, "loss": loss}, f, indent=1)
        f.write("\n")
    model._krepair_after = (xs, ys)


def after_step(name, case_dir, x, fmt="keras", model=None):
    """The reloaded archive's prediction after one more training step."""
    if name not in BY_NAME:
        return
    step = np.load(os.path.join(case_dir, "train_step.npz"))
    if KERAS3 and fmt == "h5":
        # Keras 3.15 cannot load a compiled model of its own legacy HDF5
        # ("Could not deserialize 'keras.metrics.mse'"): the model saved
        # takes the step in memory, from the state it saved.
        again = model
    else:
        again = keras.models.load_model(os.path.join(case_dir, ARCHIVES[fmt]))
    again.train_on_batch(step["x"], step["y"])
    np.save(os.path.join(case_dir, "pred_step.npy"), predict(again, x))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder to write the cases into")
    p.add_argument("--list", action="store_true", help="print the case names")
    p.add_argument("--format", choices=sorted(ARCHIVES), default="keras",
                   help="keras: a .keras archive (model.keras); h5: the legacy HDF5 model file (model.h5)")
    p.add_argument("cases", nargs="*", help="case names (default: all)")
    a = p.parse_args()
    names = a.cases or list(CASES) + list(BY_NAME)
    if KERAS3 and a.format == "keras" and not a.cases:
        names += list(KERAS3_CASES)
    if a.list:
        print("\n".join(names))
        return
    os.makedirs(a.out, exist_ok=True)
    backend = keras.backend.backend() if KERAS3 else f"tensorflow {tf.__version__}"
    print(f"writer: keras {VERSION} ({backend})")
    for name in names:
        model = record(name, a.out, a.format)
        case_dir = os.path.join(a.out, name)
        if os.path.isdir(case_dir):
            after_step(name, case_dir, np.load(os.path.join(case_dir, "x.npy")) if name in BY_NAME else None,
                       a.format, model)


if __name__ == "__main__":
    main()
