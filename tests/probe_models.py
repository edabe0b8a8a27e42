"""Small user models for the regime probe's tests and the `probe` stage (--model=...)."""
import keras


def mlp(dtype="float32"):
    """A standard-parametrization Keras MLP (Glorot init) with one output, Sequential."""
    return keras.Sequential([keras.layers.Dense(16, activation="relu", dtype=dtype),
                             keras.layers.Dense(1, dtype=dtype)])


def mlp64():
    return mlp("float64")


def cnn(dtype="float32"):
    """A small functional CNN on 8×8×1 images with one output."""
    inputs = keras.Input((8, 8, 1))
    z = keras.layers.Conv2D(4, 3, activation="relu", dtype=dtype)(inputs)
    z = keras.layers.Flatten(dtype=dtype)(z)
    return keras.Model(inputs, keras.layers.Dense(1, dtype=dtype)(z))


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


def cnn_with_bias(dtype="float64"):
    """A Sequential CNN with biases, "same" padding, strides and dilation: every case of the
    structured path's convolutions (`kernel.structured`)."""
    return keras.Sequential([
        keras.Input((9, 9, 2)),
        keras.layers.Conv2D(3, 3, activation="tanh", dtype=dtype),
        keras.layers.Conv2D(4, 2, strides=2, padding="same", activation="relu", dtype=dtype),
        keras.layers.Conv2D(2, 2, dilation_rate=2, padding="same", use_bias=False, dtype=dtype),
        keras.layers.Flatten(dtype=dtype),
        keras.layers.Dense(5, activation="tanh", dtype=dtype),
        keras.layers.Dense(1, dtype=dtype)])


def mixed_cnn(dtype="float64"):
    """A functional CNN with a layer the structured kernel does not know (BatchNormalization)
    and a Dense called twice (shared weights): those weights take the generic path."""
    inputs = keras.Input((6, 6, 1))
    z = keras.layers.Conv2D(3, 3, padding="same", activation="relu", dtype=dtype)(inputs)
    z = keras.layers.BatchNormalization(dtype=dtype)(z)
    z = keras.layers.Flatten(dtype=dtype)(z)
    shared = keras.layers.Dense(4, activation="tanh", dtype=dtype)
    z = keras.layers.Dense(4, dtype=dtype)(z)
    z = shared(shared(z))
    return keras.Model(inputs, keras.layers.Dense(1, dtype=dtype)(z))


def image_cnn():
    """A small ReLU CNN with max-pooling on 28×28×1 images (MNIST's), one output."""
    inputs = keras.Input((28, 28, 1))
    z = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
    z = keras.layers.MaxPooling2D()(z)
    z = keras.layers.Flatten()(z)
    return keras.Model(inputs, keras.layers.Dense(1)(z))
