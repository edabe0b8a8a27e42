"""The precision rule (lazy_feature.model.precision): float32 up to α·h·ε = 1e-3, float64 above."""
import numpy as np
import pytest
import keras
import tensorflow as tf

from lazy_feature.kernel import ntk
from lazy_feature.model import architectures, precision
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.probe.regime import RegimeMonitor
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import ConfigError

EPS32 = float(np.finfo(np.float32).eps)


@pytest.mark.parametrize("width", [1, 16, 100, 1000])
def test_threshold_alpha_h_eps_is_one_thousandth(width):
    at = precision.RESOLUTION / (width * EPS32)  # α with α·h·ε = 1e-3 exactly
    below, above = at * (1 - 1e-6), at * (1 + 1e-6)
    assert precision.check(None, below, width) == "float32"
    assert precision.check("float32", below, width) == "float32"
    assert precision.check(None, above, width) == "float64"
    with pytest.raises(ConfigError, match="use --dtype=float64"):
        precision.check("float32", above, width)
    assert precision.check("float64", above, width) == "float64"


def test_train_config_applies_the_rule():
    at = precision.RESOLUTION / (100 * EPS32)
    assert TrainConfig(width=100, alpha=0.99 * at).dtype == "float32"
    assert TrainConfig(width=100, alpha=1.01 * at).dtype == "float64"
    with pytest.raises(ConfigError, match="float32 cannot resolve"):
        TrainConfig(width=100, alpha=1.01 * at, dtype="float32")


def test_float64_covers_the_papers_range():
    # √h·α up to 1e7 (Fig. 5) at h up to 1000.
    assert precision.check(None, 1e7 / np.sqrt(1000), 1000) == "float64"
    assert precision.resolves("float64", 1e7 / np.sqrt(1000), 1000)


def test_unknown_dtype():
    with pytest.raises(ConfigError, match="unknown dtype 'float16'"):
        precision.check("float16", 1.0, 10)


@pytest.mark.parametrize("architecture, width, depth, shape", [
    ("cnn", 3, None, (28, 28, 1)), ("cnn", 5, None, (32, 32, 3)),
    ("wide_resnet", 1, 10, (16, 16, 3)), ("wide_resnet", 2, 10, (16, 16, 3))])
def test_the_rule_of_a_convolutional_net_takes_its_largest_fan_in(architecture, width, depth,
                                                                   shape):
    from lazy_feature.model import architectures  # pylint: disable=import-outside-toplevel
    config = TrainConfig(architecture=architecture, width=width, depth=depth, alpha=1.0)
    model = architectures.network(config)
    model.build((None, *shape))
    largest_fan_in = max(layer.fan_in for layer in model.ntk_layers)
    assert precision.resolution_width(architecture, width) == largest_fan_in
    # A Wide-ResNet 28 x 10 reaches 640 channels: its rule's h is 9·640, not k = 10.
    at = precision.RESOLUTION / (largest_fan_in * EPS32)
    assert TrainConfig(architecture=architecture, width=width, depth=depth,
                       alpha=0.99 * at).dtype == "float32"
    assert TrainConfig(architecture=architecture, width=width, depth=depth,
                       alpha=1.01 * at).dtype == "float64"
    assert precision.resolution_width("wide_resnet", 10) == 9 * 640


def _monitor_started(x):
    """A RegimeMonitor on a plain Keras model, at its fit's start (its snapshot of Θ(w0))."""
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    monitor = RegimeMonitor(x, np.ones(2, np.float32))
    monitor.set_model(model)
    monitor.on_train_begin()


def _tensor_float_32_after(make):
    """Whether TensorFloat-32 is on after `make()`, with it on before (TensorFlow's default)."""
    tf.config.experimental.enable_tensor_float_32_execution(True)
    try:
        make()
        return tf.config.experimental.tensor_float_32_execution_enabled()
    finally:
        tf.config.experimental.enable_tensor_float_32_execution(False)


@pytest.mark.parametrize("make", ["alpha_model", "kernel", "generic_kernel", "monitor"])
def test_tensor_float_32_is_off_for_every_run_and_kernel(make):
    # On an Ampere-or-later GPU TensorFlow would run float32 products with 10-bit inputs
    # (ε ≈ 9.8e-4): F = α(f − f0) would err by 8% at √h·α ~ 800 (precision.exact_float32).
    # The setting is the process's, so this checks that each entry point turns it off.
    network = architectures.FullyConnected(4)
    x = np.ones((2, 3), np.float32)
    makers = {
        "alpha_model": lambda: AlphaModel(network, 1.0),
        "kernel": lambda: ntk.gram(network, x),
        "generic_kernel": lambda: ntk.gram_generic(network, x),
        "monitor": lambda: _monitor_started(x),
    }
    assert not _tensor_float_32_after(makers[make])
