"""The pre-activation velocity at t = 0, per hidden layer (Section 6, eq. 22; Appendix D, Fig. 11).

Eq. 22 predicts ż̃^ℓ = O(1/(√h·α)) in every hidden layer at initialization. As the paper does
(Appendix D), it is computed by finite difference over one gradient step from w0:

  ż^ℓ = rms over probe points and neurons of |z̃^ℓ(w0 − dt ∇L(w0), x) − z̃^ℓ(w0, x)| / dt,

with ∇L the gradient of eq. 7's loss (the run's loss, α and centering) on the whole training
set; a convolution's neurons are its channels at every position. The step is
dt = DT_FRACTION · min(1, √h·α): ∇L changes on the time scale min(1, t1), t1 ~ √h·α (the
flow's O(1) duration in the lazy regime, the loss-halving time in the feature regime,
Section 6), so the finite difference is off by ~DT_FRACTION relative. Precision: float64,
since the step moves z̃ = O(1) by only ż·dt ≲ DT_FRACTION/max(1, √h·α) (1e-9 at √h·α = 1e6),
which float32's 1e-7 resolution would lose.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from lazy_feature.model import architectures, losses
from lazy_feature.run import artifact, runner

VELOCITY = "velocity.json"  # in the run directory
DT_FRACTION = 1e-3


def step_size(alpha, width):
    """The finite-difference step dt = DT_FRACTION·min(1, √h·α) (module docstring)."""
    return DT_FRACTION * min(1.0, float(np.sqrt(width) * alpha))


def _float64_copy(network, config, input_shape):
    """`network` (built) rebuilt in float64 with the same weights."""
    copy = architectures.network(dataclasses.replace(config, dtype="float64"))
    copy.build((None, *input_shape))
    copy.set_weights([np.asarray(w, np.float64) for w in network.get_weights()])
    return copy


def _hidden_preactivations(network, x):
    """z̃^ℓ(x) of every hidden NTK layer (the readout's f left out), as float64 arrays."""
    return [np.asarray(z, np.float64) for z in network.layer_signals(tf.constant(x))[1][:-1]]


def preactivation_velocity(network, config, x_train, y_train, x_probe, dt=None):
    """ż^ℓ at w0 = `network`'s weights for each hidden layer ℓ = 1, 2, ... (module docstring).

    `config` gives α, the loss and whether F is centered (F(w0) = 0) or α f(w0) (Appendix I);
    dt defaults to `step_size`. Returns a list of floats, one per hidden NTK layer.
    """
    dt = step_size(config.alpha, config.width) if dt is None else float(dt)
    net = _float64_copy(network, config, x_train.shape[1:])
    per_pattern = losses.get(config.loss, config.loss_beta)
    x, y = tf.constant(x_train, tf.float64), tf.constant(y_train, tf.float64)
    weights = net.trainable_weights
    with tf.GradientTape() as tape:
        f = net(x)
        F = config.alpha * (f - tf.stop_gradient(f) if config.centered else f)
        loss = losses.alpha_loss(per_pattern, F, y, config.alpha, len(x_train))
    grads = tape.gradient(loss, weights)
    before = _hidden_preactivations(net, x_probe)
    for w, g in zip(weights, grads):
        w.assign_sub(dt * g)
    after = _hidden_preactivations(net, x_probe)
    return [float(np.sqrt(np.mean(np.square((z1 - z0) / dt)))) for z0, z1 in zip(before, after)]


def columns(velocities):
    """The row columns z_dot_1, z_dot_2, ... of `preactivation_velocity`'s list."""
    return {f"z_dot_{ell}": v for ell, v in enumerate(velocities, start=1)}


def evaluate(run_dir, task=None, max_test=None):
    """ż^ℓ at t = 0 of the complete run in `run_dir` on its first `max_test` test points (all
    by default), stored in velocity.json; returns its `columns` (and z_dot_dt, z_dot_n_probe).

    A run that already has velocity.json is not computed again.
    """
    path = artifact.join(run_dir, VELOCITY)
    if not artifact.exists(path):
        loaded = runner.load_run(run_dir, task)
        x_probe = loaded.task.x_test[:max_test]
        velocities = preactivation_velocity(loaded.model.initial_network, loaded.config,
                                            loaded.task.x_train, loaded.task.y_train, x_probe)
        artifact.write_json(path, dict(columns(velocities),
                                       z_dot_dt=step_size(loaded.config.alpha,
                                                          loaded.config.width),
                                       z_dot_n_probe=len(x_probe)))
    return artifact.read_json(path)
