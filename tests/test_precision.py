"""The precision rule (lazy_feature.model.precision): in the direct form float32 up to
α·h·ε = 1e-3, float64 above; in the difference form float32 up to α = 9.2e12."""
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
    direct = dict(form="direct")
    assert precision.check(None, below, width, **direct) == "float32"
    assert precision.check("float32", below, width, **direct) == "float32"
    assert precision.check(None, above, width, **direct) == "float64"
    with pytest.raises(ConfigError, match="use --dtype=float64"):
        precision.check("float32", above, width, **direct)
    assert precision.check("float64", above, width, **direct) == "float64"
    # the difference form resolves it in float32, given or by default
    assert precision.check(None, above, width) == precision.check("float32", above, width) \
        == "float32"


def test_train_config_applies_the_rule():
    at = precision.RESOLUTION / (100 * EPS32)
    assert TrainConfig(width=100, alpha=0.99 * at, form="direct").dtype == "float32"
    assert TrainConfig(width=100, alpha=1.01 * at, form="direct").dtype == "float64"
    with pytest.raises(ConfigError, match="float32 cannot resolve"):
        TrainConfig(width=100, alpha=1.01 * at, dtype="float32", form="direct")
    assert TrainConfig(width=100, alpha=1e6).dtype == "float32"


def test_the_default_form_is_direct_where_float32_resolves_it_and_the_difference_beyond():
    at = precision.RESOLUTION / (100 * EPS32)
    below, above = TrainConfig(width=100, alpha=0.99 * at), TrainConfig(width=100, alpha=1.01 * at)
    assert (below.form, below.dtype) == ("direct", "float32")
    assert (above.form, above.dtype) == ("difference", "float32")
    # a run given float64 keeps the direct form, and its former run id
    given = TrainConfig(width=100, alpha=1.01 * at, dtype="float64")
    assert given.form == "direct"
    assert given.run_id() == TrainConfig(width=100, alpha=1.01 * at, dtype="float64",
                                         form="direct").run_id()
    assert above.run_id() != TrainConfig(width=100, alpha=1.01 * at, form="direct").run_id()


def test_the_difference_forms_float32_range_ends_where_the_losss_scale_underflows():
    # 1/(α² n) at n = 1e6 stays 1e6 × float32's smallest normal number up to α = 9.2e12
    largest = precision.largest_alpha("float32", 100)
    tiny = float(np.finfo(np.float32).tiny)
    assert 1.0 / (largest ** 2 * precision.LARGEST_N) == pytest.approx(
        precision.HEADROOM * tiny)
    assert precision.check(None, 0.99 * largest, 100) == "float32"
    assert precision.check(None, 1.01 * largest, 100) == "float64"
    with pytest.raises(ConfigError, match="1/\\(alpha\\^2 n\\).*use --dtype=float64"):
        precision.check("float32", 1.01 * largest, 100)


def test_float64_covers_the_papers_range():
    # √h·α up to 1e7 (Fig. 5) at h up to 1000, in either form.
    assert precision.check(None, 1e7 / np.sqrt(1000), 1000, form="direct") == "float64"
    assert precision.resolves("float64", 1e7 / np.sqrt(1000), 1000, form="direct")
    assert precision.check(None, 1e7 / np.sqrt(1000), 1000) == "float32"


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
    assert TrainConfig(architecture=architecture, width=width, depth=depth, form="direct",
                       alpha=0.99 * at).dtype == "float32"
    assert TrainConfig(architecture=architecture, width=width, depth=depth, form="direct",
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
