"""The pre-activation velocity at t = 0 (Appendix D, eq. 22) against float64 forward-mode AD."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.model import activations
from lazy_feature.model import architectures
from lazy_feature.study import velocity
from lazy_feature.run.config import TrainConfig
from tests.helpers import sphere_inputs


def _setup(width=12, alpha=0.5, centered=True):
    config = TrainConfig(n_train=20, n_test=15, width=width, depth=3, alpha=alpha,
                         centered=centered, dtype="float32")
    x = sphere_inputs(35, 6, seed=3).astype(np.float32)
    y = np.sign(x[:, 0] + 0.3).astype(np.float32)
    network = architectures.network(config)
    network.build((None, 6))
    return config, network, x[:20], y[:20], x[20:]


def _exact(config, network, x_train, y_train, x_probe):
    """ż^ℓ = d/ds z̃^ℓ(w0 − s∇L) at s = 0 by forward-mode AD in float64, with ∇L written out:
    at t = 0 the soft hinge's slope is −y·sigmoid(β(1 − F y)), so for the centered model (F = 0)
    ∇L = −sigmoid(β)/(α n) ∇Σ_μ y_μ f(x_μ), and for the uncentered one F = α f(w0)."""
    net = architectures.network(dataclasses.replace(config, dtype="float64"))
    net.build((None, x_train.shape[1]))
    net.set_weights([np.asarray(w, np.float64) for w in network.get_weights()])
    x, y = tf.constant(x_train, tf.float64), tf.constant(y_train, tf.float64)
    with tf.GradientTape() as tape:
        f = net(x)
        F = tf.zeros_like(f) if config.centered else config.alpha * tf.stop_gradient(f)
        slope = tf.stop_gradient(tf.sigmoid(config.loss_beta * (1 - F * y)))
        weighted = tf.reduce_sum(y * slope * f)
    grads = [-g / (config.alpha * len(x_train)) for g in tape.gradient(weighted,
                                                                       net.trainable_weights)]
    with tf.autodiff.ForwardAccumulator([w.value for w in net.trainable_weights],
                                        [-g for g in grads]) as acc:
        preacts = net.layer_signals(tf.constant(x_probe, tf.float64))[1][:-1]
    return [float(np.sqrt(np.mean(np.square(acc.jvp(z).numpy())))) for z in preacts]


@pytest.mark.parametrize("centered", [True, False])
def test_finite_difference_matches_the_exact_velocity(centered):
    config, network, x_train, y_train, x_probe = _setup(centered=centered)
    measured = velocity.preactivation_velocity(network, config, x_train, y_train, x_probe)
    exact = _exact(config, network, x_train, y_train, x_probe)
    assert len(measured) == 3 and all(v > 0 for v in measured)
    # The step's error is at most ~DT_FRACTION relative (module docstring); here ~2e-5.
    assert measured == pytest.approx(exact, rel=velocity.DT_FRACTION)
    assert velocity.columns(measured) == {"z_dot_1": measured[0], "z_dot_2": measured[1],
                                          "z_dot_3": measured[2]}


def test_velocity_scales_as_one_over_alpha():
    """Eq. 22: ż = O(1/(√h·α)); at fixed weights ∇L ∝ 1/α for the centered model at t = 0."""
    config, network, x_train, y_train, x_probe = _setup(alpha=0.5)
    small = velocity.preactivation_velocity(network, config, x_train, y_train, x_probe)
    large = velocity.preactivation_velocity(network, dataclasses.replace(config, alpha=50.0),
                                            x_train, y_train, x_probe)
    assert np.asarray(small) / np.asarray(large) == pytest.approx(100.0, rel=1e-2)


def test_step_size():
    assert velocity.step_size(1.0, 100) == velocity.DT_FRACTION
    assert velocity.step_size(1e-3, 100) == pytest.approx(velocity.DT_FRACTION * 1e-2)
    assert activations.SOFTPLUS_BETA == 5.0  # the quadrature's β the network above uses
