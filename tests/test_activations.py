import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.model import activations
from lazy_feature.errors import ConfigError


def _second_moment_trapezoid(fn, z_max=12.0, points=2_000_001):
    """E[fn(z)²], z ~ N(0,1), by the trapezoid rule: independent of the module's quadrature."""
    z = np.linspace(-z_max, z_max, points)
    density = np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi)
    return np.trapezoid(fn(z) ** 2 * density, z)


@pytest.mark.parametrize("name,beta", [("softplus", 1.0), ("softplus", 5.0), ("softplus", 20.0),
                                       ("relu", None), ("tanh", None), ("swish", None)])
def test_normalized_activation_has_unit_second_moment(name, beta):
    sigma = activations.get(name, beta) if beta else activations.get(name)
    fn = lambda z: sigma(tf.constant(z, tf.float64)).numpy()
    # Trapezoid error on this grid is < 1e-8; the normalization must hold to that level.
    assert _second_moment_trapezoid(fn) == pytest.approx(1.0, abs=1e-7)


def test_paper_prefactors():
    assert activations.normalization("softplus", 5.0) == pytest.approx(1.40438, abs=5e-6)
    assert activations.normalization("relu") == pytest.approx(np.sqrt(2.0), rel=1e-12)
    assert activations.normalization("linear") == pytest.approx(1.0, rel=1e-12)


def test_softplus_is_stable_and_tends_to_relu():
    x = tf.constant([-1e3, -1.0, 0.0, 1.0, 1e3], tf.float64)
    y = activations.softplus(x, 100.0).numpy()
    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y, np.maximum(x.numpy(), 0.0), atol=np.log(2) / 100 + 1e-12)


def test_unknown_activation():
    with pytest.raises(ConfigError, match="unknown activation 'gelu'"):
        activations.get("gelu")
