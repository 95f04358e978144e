"""Custom layers used by the krepair test fixtures.

Imported by generate.py (to build the models) and by check_keras.py (to load
them), so both sides register the same class under the same name.
"""

import keras

# tf.keras 2.12 has it under keras.utils only.
register = getattr(getattr(keras, "saving", None), "register_keras_serializable", None) \
    or keras.utils.register_keras_serializable


@register(package="krepair_fixtures")
class Scaler(keras.layers.Layer):
    """A custom layer that owns a Normalization layer as an attribute.

    Its weights live at `layers/scaler/norm/vars`, and its config serializes
    the Normalization under the key `norm`, so a repaired config reaches the
    inner layer on load.
    """

    def __init__(self, norm=None, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        if isinstance(norm, dict):
            norm = keras.layers.deserialize(norm)
        self.norm = norm if norm is not None else keras.layers.Normalization()
        self.factor = factor

    def build(self, input_shape):
        # A deserialized inner layer may already be built from its own
        # build_config (Keras >= 3.6); building it twice adds variables to
        # a locked layer.
        if not self.norm.built:
            self.norm.build(input_shape)
        self.built = True

    def call(self, x):
        return self.norm(x) * self.factor

    def get_config(self):
        config = super().get_config()
        config["norm"] = keras.layers.serialize(self.norm)
        config["factor"] = self.factor
        return config
