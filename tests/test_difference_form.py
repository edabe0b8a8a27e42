"""The difference form (lazy_feature.model.difference): F = α[f(w) − f(w0)] from the pair
propagation, in float32 as close to float64 as float32 itself allows, at any α.

Each check compares float32 with a float64 computation whose own error is ~1e-16 relative,
against tolerances of 1e-5 and more; the direct form in float32 fails the same checks at
√h·α ≥ 1e4, which shows that they can fail."""
import dataclasses

import mpmath
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.kernel import drift
from lazy_feature.model import activations, architectures
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.run import artifact, runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.study import sweep
from tests.helpers import killed_at, relative_distance, synthetic_task

mpmath.mp.dps = 40
# The raw activations in 40-digit arithmetic (`activations._RAW`'s, β = 5 for softplus).
EXACT = {"softplus": lambda z: mpmath.log1p(mpmath.exp(5 * z)) / 5,
         "relu": lambda z: max(z, 0), "tanh": mpmath.tanh,
         "swish": lambda z: z / (1 + mpmath.exp(-z)), "linear": lambda z: z}


@pytest.mark.parametrize("name", activations.NAMES)
def test_each_activation_change_is_exact_to_a_few_float32_roundings_of_itself(name):
    rng = np.random.default_rng(0)
    z0 = (3.0 * rng.standard_normal(600)).astype(np.float32)
    # near zero change, moderate, large (past the direct branch), and across the ReLU kink
    dz = (rng.standard_normal(600) * np.repeat([1e-9, 1e-5, 1e-2, 1.0, 30.0, 0.0], 100)
          ).astype(np.float32)
    dz[500:] = -2.0 * z0[500:]  # z0 + Δz on the other side of 0
    a = activations.normalization(name)
    exact = np.array([float(a * (EXACT[name](mpmath.mpf(float(u)) + mpmath.mpf(float(d)))
                                 - EXACT[name](mpmath.mpf(float(u))))) for u, d in zip(z0, dz)])
    change = activations.get_change(name)(tf.constant(z0), tf.constant(dz)).numpy()
    # a few roundings of the change itself (a·σ' ≤ 1.5, so |Δσ| ≤ 1.5·|Δz|)
    assert np.all(np.abs(change - exact) <= 8 * np.finfo(np.float32).eps * np.abs(dz)), name
    with tf.GradientTape() as tape:
        dz_t = tf.constant(dz)
        tape.watch(dz_t)
        total = tf.reduce_sum(activations.get_change(name)(tf.constant(z0), dz_t))
    assert np.all(np.isfinite(tape.gradient(total, dz_t).numpy()))


@pytest.mark.parametrize("name", activations.NAMES)
def test_each_activation_changes_gradient_is_the_derivative_at_the_moved_point(name):
    # the closed-form gradient against TensorFlow's derivative of a·σ(z0 + Δz), float64
    rng = np.random.default_rng(1)
    z0 = tf.constant(2.0 * rng.standard_normal(300))
    dz = tf.constant(rng.standard_normal(300) * np.repeat([1e-6, 1e-2, 1.0], 100))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(dz)
        change = tf.reduce_sum(activations.get_change(name)(z0, dz))
        value = tf.reduce_sum(activations.get(name)(z0 + dz))
    np.testing.assert_allclose(tape.gradient(change, dz).numpy(),
                               tape.gradient(value, dz).numpy(), rtol=1e-12, atol=1e-15)


def _networks(kind, activation):
    """The same network in float64 and float32, difference form (w0 drawn in float64)."""
    def make(dtype, form=True):
        if kind == "fc":
            return architectures.FullyConnected(24, activation=activation, bias_scale=0.5,
                                                readout_bias=True, difference=form, dtype=dtype)
        if kind == "cnn":
            return architectures.ConvNet(3, activation=activation, difference=form, dtype=dtype)
        return architectures.WideResNet(1, depth=10, activation=activation, difference=form,
                                        dtype=dtype)
    return make


def _inputs(kind):
    rng = np.random.default_rng(1)
    return rng.standard_normal((6, 10) if kind == "fc" else (3, 19, 19, 2))


CASES = ([("fc", a) for a in ("softplus", "relu", "tanh", "swish")]
         + [("cnn", "softplus"), ("wide_resnet", "softplus")])


@pytest.mark.parametrize("kind, activation", CASES)
@pytest.mark.parametrize("sqrt_h_alpha", [1e2, 1e4, 1e6])
def test_float32_outputs_and_gradients_match_float64_at_any_alpha(kind, activation,
                                                                  sqrt_h_alpha):
    # δ of the size a run reaches there, ‖δ‖/‖w0‖ ~ 1/(√h·α) (Appendix B)
    make, x = _networks(kind, activation), _inputs(kind)
    models = {}
    for dtype in ("float64", "float32"):
        network = make(dtype)
        network.build(x.shape)
        models[dtype] = AlphaModel(network, alpha=sqrt_h_alpha / np.sqrt(network.width))
        models[dtype].build(x.shape)
    rng = np.random.default_rng(2)
    for w64, w32 in zip(models["float64"].network.weights, models["float32"].network.weights):
        if w64.trainable:  # δ and the biases
            w64.assign(rng.standard_normal(w64.shape) / sqrt_h_alpha)
        w32.assign(np.asarray(w64).astype(np.float32))
    for model in models.values():  # w0 as rounded to float32, in both
        for w0, w in zip(model.initial_network.weights, models["float32"].network.weights):
            w0.assign(np.zeros(w.shape) if w.trainable else np.asarray(w, np.float64))
        for w64, w32 in zip(model.network.weights, models["float32"].network.weights):
            w64.assign(np.asarray(w32, np.float64))
    y = np.where(np.arange(len(x)) % 2, 1.0, -1.0)
    F, grads = {}, {}
    for dtype, model in models.items():
        xd = tf.constant(x, dtype)
        F[dtype] = model(xd).numpy()
        f0 = model.initial_network(xd)
        f, _, g = model.local_loss_and_grad(xd, tf.constant(y, dtype), f0, n=len(x))
        grads[dtype] = np.concatenate([np.ravel(v) for v in g])
        # The signals at w0 computed once (as the flow does on its training set) give the
        # very values computed on the way.
        cached = model.local_loss_and_grad(xd, tf.constant(y, dtype), f0, n=len(x),
                                           initial=model.network.initial_signals(xd))
        np.testing.assert_array_equal(cached[0], f)
        for got, want in zip(cached[2], g):
            np.testing.assert_array_equal(got, want)
    # F is α·Δf with |F| = O(1): float32 gives it to ~1e-6 of itself at any α
    assert relative_distance(F["float32"], F["float64"]) < 1e-5
    assert relative_distance(grads["float32"], grads["float64"]) < 1e-5
    if kind == "fc" and activation == "softplus" and sqrt_h_alpha >= 1e4:
        # the direct form in float32, the same weights: f(w) − f(w0) cancels
        direct = models["float32"].alpha * (models["float32"].network(x.astype(np.float32))
                                            - models["float32"].initial_network(
                                                x.astype(np.float32))).numpy()
        assert relative_distance(direct, F["float64"]) > 1e-3


@pytest.mark.parametrize("kind", ["fc", "cnn", "wide_resnet"])
@pytest.mark.parametrize("sqrt_h_alpha", [1e2, 1e4, 1e6])
def test_kernel_drift_of_a_float32_network_matches_float64(kind, sqrt_h_alpha):
    make, x = _networks(kind, "softplus"), _inputs(kind)
    pairs = {}
    rng = np.random.default_rng(3)
    values = None
    for dtype in ("float64", "float32"):
        network, initial = make(dtype), make(dtype)
        for net in (network, initial):
            net.build(x.shape)
        if values is None:
            values = [rng.standard_normal(w.shape) / sqrt_h_alpha if w.trainable
                      else np.asarray(w, np.float32) for w in network.weights]
        for w, w0, value in zip(network.weights, initial.weights, values):
            w.assign(value)
            w0.assign(np.zeros(w.shape) if w.trainable else value)
        pairs[dtype] = drift.kernel_drift((network, initial), x)
    # the drift ~ 1/(√h·α): 1e-6 at the largest, which float32 kernels would not resolve
    assert pairs["float64"]["drift"] < 10 / sqrt_h_alpha
    assert pairs["float32"]["drift"] == pytest.approx(pairs["float64"]["drift"], rel=1e-6)


def test_a_sweep_takes_each_points_own_form():
    # the base's form was resolved at its α = 1 (direct); each point resolves its own
    grid = sweep.SweepConfig(base=TrainConfig(n_train=40, n_test=30), widths=(100,),
                             sqrt_h_alphas=(1.0, 1e4))
    assert grid.base.form == "direct"
    found = {round(c.alpha * 10): (c.form, c.dtype) for c in grid.configs()}
    assert found == {1: ("direct", "float32"), 10000: ("difference", "float32")}
    pinned = dataclasses.replace(grid, form="direct")
    assert {c.dtype for c in pinned.configs()} == {"float32", "float64"}


TASK = synthetic_task(n_train=40, n_test=60)


@pytest.mark.slow
def test_a_lazy_float32_run_ends_as_near_the_reference_as_float64_euler(tmp_path):
    # √h·α = 1e4, where the direct form needs float64. The reference: etdrk4 in float64 at a
    # hundredth of its output tolerance (its own distance to the same at a tenth is checked
    # to be under a tenth of what is asserted).
    base = TrainConfig(n_train=40, n_test=60, width=16, alpha=1e4 / 4)
    assert base.dtype == "float32" and base.form == "difference"
    reference = {}
    for factor in (10, 100):
        tight = dataclasses.replace(base, integrator="etdrk4", dtype="float64",
                                    output_tol=1e-4 / factor, direction_tol=1e-3 / factor,
                                    landing_tol=1e-7)
        runner.train(tight, str(tmp_path / f"reference_{factor}"), task=TASK)
        reference[factor] = artifact.read_npy(
            f"{tmp_path}/reference_{factor}/{artifact.TEST_OUTPUTS}")
    deviation = {}
    for name, config in (("default", base),
                         ("euler", dataclasses.replace(base, integrator="euler",
                                                       dtype="float64", form="direct"))):
        metrics = runner.train(config, str(tmp_path / name), task=TASK)
        assert metrics["converged"]
        deviation[name] = relative_distance(
            artifact.read_npy(f"{tmp_path}/{name}/{artifact.TEST_OUTPUTS}"), reference[100])
    assert relative_distance(reference[10], reference[100]) < deviation["euler"] / 10
    assert deviation["default"] <= deviation["euler"], deviation


@pytest.mark.slow
def test_a_float32_run_in_the_difference_form_resumes_exactly(tmp_path):
    config = TrainConfig(n_train=40, n_test=60, width=8, alpha=1e4, max_dgrad=5e-2)
    assert config.dtype == "float32" and config.form == "difference"
    whole = runner.train(config, str(tmp_path / "whole"), task=TASK)
    cut = str(tmp_path / "cut")
    assert killed_at(15, config, cut, TASK) == 14
    resumed = runner.train(config, cut, task=TASK)
    for key in ("steps", "gradient_evaluations", "t", "weight_drift"):
        assert resumed[key] == whole[key], key
    np.testing.assert_array_equal(artifact.read_npy(f"{cut}/{artifact.TEST_OUTPUTS}"),
                                  artifact.read_npy(f"{tmp_path}/whole/{artifact.TEST_OUTPUTS}"))
