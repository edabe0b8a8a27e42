"""Small user models for the regime probe's tests and the `probe` stage (--model=...)."""
import keras


def mlp(dtype="float32"):
    """A standard-parametrization Keras MLP (Glorot init) with one output, Sequential."""
    return keras.Sequential([keras.layers.Dense(16, activation="relu", dtype=dtype),
                             keras.layers.Dense(1, dtype=dtype)])


def mlp64():
    return mlp("float64")


def cnn():
    """A small functional CNN on 8×8×1 images with one output."""
    inputs = keras.Input((8, 8, 1))
    z = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    z = keras.layers.Flatten()(z)
    return keras.Model(inputs, keras.layers.Dense(1)(z))


class TwoLayer(keras.Model):
    """A subclassed model with two logits (choose one with output=, or 'sum')."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(8, activation="tanh")
        self.logits = keras.layers.Dense(2)

    def call(self, x):
        return self.logits(self.hidden(x))


def two_logits():
    return TwoLayer()


def not_a_model():
    return "a string"
