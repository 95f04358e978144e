"""Make discretization_renumbering.keras with tf.keras 2.15 (the venv of
`scripts/python-env.sh tf2.15`):

    .venvs/keras-tf2.15/bin/python testdata/refusals/make_discretization_renumbering.py

in -> a (Dense) -> d (one-hot Discretization) -> cat, and in -> b (Dense)
-> c (Dense) -> cat. tf.keras lists b before a (equal depth, b first in
traversal) and stores b at layers/dense, a at layers/dense_1. Splitting d
into an int Discretization and a CategoryEncoding (rule
discretization-encoding) makes a deeper than b, and Keras 3 then lists a
first and loads b's kernel into a: before the refusal, Keras 3.15 loaded
the migrated archive without a word and predicted wrong values (a's kernel
-3 instead of 2). `krepair migrate` refuses it (tests/migrate.rs).
"""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
from tensorflow import keras  # noqa: E402

inp = keras.Input((1,), name="in")
a = keras.layers.Dense(1, name="a", kernel_initializer=keras.initializers.Constant(2.0))(inp)
d = keras.layers.Discretization(bin_boundaries=[-1.0, 0.0, 1.0], output_mode="one_hot", name="d")(a)
b = keras.layers.Dense(1, name="b", kernel_initializer=keras.initializers.Constant(-3.0))(inp)
c = keras.layers.Dense(1, name="c", kernel_initializer=keras.initializers.Constant(0.5))(b)
out = keras.layers.Concatenate(name="cat")([c, d])
model = keras.Model(inp, out)
model.save(os.path.join(os.path.dirname(os.path.abspath(__file__)), "discretization_renumbering.keras"))
