"""The α-model and its adaptive gradient flow (eqs. 6-9), against brute force and the paper."""
import os
import signal

import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.model import activations
from lazy_feature.run import artifact
from lazy_feature.run import callbacks
from lazy_feature.run import data
from lazy_feature import errors
from lazy_feature.run import runner
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import ConvNet, FullyConnected
from lazy_feature.run.config import TrainConfig
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics
from tests.helpers import (StopAtStep, checkpoint_step, killed_at, sphere_inputs,
                           synthetic_task)


def _numpy_f(kernels, x, beta=5.0):
    """f(w, x) of a bias-free softplus FullyConnected, from its kernels, in NumPy (eqs. 10-14)."""
    a = activations.normalization("softplus", beta)
    z = x
    for W in kernels[:-1]:
        z = a * np.logaddexp(0.0, beta * (z @ W) / np.sqrt(W.shape[0])) / beta
    return (z @ kernels[-1])[:, 0] / np.sqrt(kernels[-1].shape[0])


def _kernels(network):
    """Each layer's W: its kernel, plus δ in the difference form (w = w0 + δ)."""
    return [layer.kernel.numpy() + (layer.delta.numpy() if layer.difference else 0.0)
            for layer in network.ntk_layers if layer.built]


def test_stored_gradient_is_the_gradient_of_eq7():
    # After a few steps (w ≠ w0), the gradient the flow stores for its next step is ∇L of
    # eq. 7 at the current w: checked entry by entry against central finite differences
    # of L computed in NumPy.
    x = sphere_inputs(6, 5, seed=0)
    y = np.array([1, -1, 1, 1, -1, -1], np.float64)
    alpha = 0.7
    model = AlphaModel(FullyConnected(width=4, depth=2, seed=1, dtype="float64"), alpha=alpha,
                       dynamics=GradientFlowDynamics(GradientFlow(dt0=0.5)))
    model.compile()
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), epochs=1, steps_per_epoch=8,
              verbose=0)
    assert model.step_count.numpy() > 0 and model.weight_drift().numpy() > 0
    kernels, kernels0 = _kernels(model.network), _kernels(model.initial_network)
    f0 = _numpy_f(kernels0, x)

    def loss(ks):
        margins = alpha * (_numpy_f(ks, x) - f0) * y
        return np.sum(np.logaddexp(0.0, 20.0 * (1.0 - margins)) / 20.0) / (alpha ** 2 * len(x))

    eps = 1e-6
    for k, (W, g) in enumerate(zip(kernels, model.stored_grad)):
        g = g.numpy()
        for index in [(0, 0), (W.shape[0] - 1, W.shape[1] - 1), (1, W.shape[1] // 2)]:
            up, down = [k_.copy() for k_ in kernels], [k_.copy() for k_ in kernels]
            up[k][index] += eps
            down[k][index] -= eps
            assert g[index] == pytest.approx((loss(up) - loss(down)) / (2 * eps),
                                             rel=1e-6, abs=1e-11), (k, index)


class _StepSnapshots(keras.callbacks.Callback):
    """The logs of every trial step and the weights before and after it; stops once converged."""

    def __init__(self):
        super().__init__()
        self.attempts = []

    def on_train_batch_begin(self, batch, logs=None):
        self._before = _kernels(self.model.network)

    def on_train_batch_end(self, batch, logs=None):
        logs = {k: float(np.asarray(v)) for k, v in logs.items()}
        self.attempts.append((logs, self._before, _kernels(self.model.network)))
        if logs["converged"]:
            self.model.stop_training = True


def test_accepted_steps_obey_eqs_8_and_9_and_rejected_ones_do_not():
    x = sphere_inputs(60, 10, seed=0)
    y = np.sign(x[:, 0] + 0.5 * x[:, 1])
    flow = GradientFlow(max_dout=0.1, max_dgrad=1e-4)
    model = AlphaModel(FullyConnected(width=40, depth=3, seed=0, dtype="float64"), alpha=1.0,
                       dynamics=GradientFlowDynamics(flow))
    model.compile()
    snapshots = _StepSnapshots()
    model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), epochs=1, steps_per_epoch=20000,
              verbose=0, callbacks=[snapshots])
    attempts = [logs for logs, _, _ in snapshots.attempts]
    assert attempts[-1]["converged"]
    accepted = [a for a in attempts if a["accepted"]]
    rejected = [a for a in attempts if not a["accepted"]]
    assert accepted and rejected  # the control was exercised both ways
    assert all(a["dgrad"] < 1e-4 for a in accepted)
    # A rejected step broke eq. 8 or 9, or crossed the stopping criterion by more than
    # landing_tol (`integrators.landing`): those come only at the end, before the step landed.
    landings = [i for i, a in enumerate(attempts)
                if not a["accepted"] and a["dout"] < 0.1 and a["dgrad"] < 1e-4]
    assert all(i >= len(attempts) - 4 for i in landings), landings
    # Eq. 8 recomputed from the weights before and after each step, in NumPy: an accepted
    # step moved F by less than max_dout on every training point; a rejected one left w as
    # it was, bit for bit.
    for logs, before, after in snapshots.attempts:
        if logs["accepted"]:
            dout = 1.0 * np.max(np.abs(_numpy_f(after, x) - _numpy_f(before, x)))
            assert dout < 0.1 and dout == pytest.approx(logs["dout"], rel=1e-9)
        else:
            assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert attempts[-1]["step"] == len(accepted)
    # t is the sum of the accepted dt: recompute it from the dt sequence.
    dts = [1.0] + [a["dt"] for a in attempts[:-1]]
    t = sum(dt for dt, a in zip(dts, attempts) if a["accepted"])
    assert attempts[-1]["t"] == pytest.approx(t, rel=1e-12)
    # Convergence: every margin > 1, recomputed from scratch rather than from the cache, and
    # the run ended within landing_tol of it.
    assert 1.0 < np.min(model(x).numpy() * y) <= 1.0 + flow.landing_tol


@pytest.mark.slow
def test_small_real_run_converges_and_its_log_obeys_eqs_8_9(fashion_task, tmp_path):
    config = TrainConfig(n_train=200, n_test=1000, width=50, alpha=1.0, dtype="float64",
                         integrator="euler")
    metrics = runner.train(config, str(tmp_path), task=fashion_task)
    assert metrics["converged"] and metrics["train_error"] == 0.0
    assert 0.0 < metrics["test_error"] < 0.2
    records = [artifact.read_json_line(line) for line in
               open(tmp_path / artifact.DYNAMICS)]
    assert records[0]["step"] == 0 and records[0]["rescaled_loss"] == pytest.approx(
        float(np.log1p(np.exp(20.0)) / 20.0), rel=1e-12)  # α²L(0) = sp_20(1): F ≡ 0
    for r in records[1:]:
        assert r["dout"] < config.max_dout and r["dgrad"] < config.max_dgrad
    assert records[-1]["step"] == metrics["steps"] and records[-1]["unfitted"] == 0
    loaded = runner.load_run(str(tmp_path), task=fashion_task)
    margins = loaded.model(fashion_task.x_train).numpy() * fashion_task.y_train
    assert margins.min() > 1.0
    np.testing.assert_allclose(loaded.model(fashion_task.x_test).numpy(),
                               np.load(tmp_path / artifact.TEST_OUTPUTS), rtol=1e-12)


@pytest.mark.slow
def test_gradient_flow_fidelity(fashion_task, tmp_path):
    # Appendix G: the discretization is fine enough that ε_∇ / 10 moves the final test
    # outputs by less than 1% (relative, in norm).
    outputs = []
    for max_dgrad in (1e-4, 1e-5):
        config = TrainConfig(n_train=100, n_test=1000, width=40, alpha=1.0, dtype="float64",
                             max_dgrad=max_dgrad)
        task = fashion_task.__class__(fashion_task.x_train[:100], fashion_task.y_train[:100],
                                      fashion_task.x_test, fashion_task.y_test,
                                      fashion_task.classes_train[:100], fashion_task.classes_test)
        metrics = runner.train(config, str(tmp_path / str(max_dgrad)), task=task)
        assert metrics["converged"]
        outputs.append(np.load(tmp_path / str(max_dgrad) / artifact.TEST_OUTPUTS))
    relative = np.linalg.norm(outputs[0] - outputs[1]) / np.linalg.norm(outputs[1])
    assert relative < 0.01


@pytest.mark.slow
@pytest.mark.parametrize("integrator, activation", [
    ("euler", "softplus"), ("euler", "relu"), ("bogacki_shampine", "softplus"),
    ("rkc", "softplus"), ("bogacki_shampine_rkc", "softplus"), ("etdrk4", "softplus"),
    ("bogacki_shampine_etdrk4", "softplus")])
def test_killed_and_interrupted_run_resumes_exactly(tmp_path, integrator, activation):
    # ε_∇ = 5e-2 keeps the run to ~100 steps; exactness does not depend on it. (ReLU: the
    # Euler integrator's memory of jumps of ∇L is resumed too; this one converges in 170
    # steps, with 187 half-step probes among its 467 gradient evaluations.)
    task = synthetic_task(n_train=10, n_test=20)
    # (RKC at looser tolerances: fewer, costlier steps.)
    config = TrainConfig(n_train=10, n_test=20, width=8, alpha=0.5, dtype="float64",
                         max_dgrad=5e-2, integrator=integrator, activation=activation,
                         init_seed=2 if activation == "relu" else 0,
                         **(dict(output_tol=1e-3, direction_tol=1e-2)
                            if integrator == "rkc" else {}))
    reference = runner.train(config, str(tmp_path / "whole"), task=task)
    cut = str(tmp_path / "cut")
    # Killed at step 20 before its save: only the periodic checkpoints (every step here,
    # after the step's records) are on disk, the last one at step 19.
    assert killed_at(20, config, cut, task) == 19
    if (integrator, activation) == ("euler", "softplus"):  # (how a checkpoint is saved does
        # not depend on the integrator)
        # Resumed, then sent SIGTERM (a preempted machine) at step 40 with no periodic
        # checkpoint due: it saves one at the end of that step and stops.
        with pytest.raises(KeyboardInterrupt, match="SIGTERM"):
            runner.train(config, cut, task=task, checkpoint_seconds=1e9,
                         extra_callbacks=[StopAtStep(40, signal.SIGTERM)])
        assert checkpoint_step(cut, config, task) == 40
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # the handler is gone
    assert not artifact.is_complete(cut)
    resumed = runner.train(config, cut, task=task)
    for key in ("steps", "rejected_steps", "gradient_evaluations", "t", "test_error",
                "weight_drift"):
        assert resumed[key] == reference[key], key
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / artifact.TEST_OUTPUTS),
                                  np.load(tmp_path / "whole" / artifact.TEST_OUTPUTS))
    steps = [artifact.read_json_line(line)["step"] for line in open(tmp_path / "cut" / artifact.DYNAMICS)]
    assert steps == sorted(set(steps))  # no step recorded twice after the resumes
    assert len(artifact.listdir(os.path.join(cut, artifact.CHECKPOINT))) <= 2 * 2 + 1  # kept 2


def test_complete_run_is_not_redone_and_other_config_is_refused(tmp_path):
    task = synthetic_task()
    config = TrainConfig(n_train=80, n_test=60, width=30, alpha=0.5, dtype="float64")
    first = runner.train(config, str(tmp_path), task=task)
    assert runner.train(config, str(tmp_path), task=task) == first
    with pytest.raises(runner.RunDirError, match="choose another output directory"):
        runner.train(TrainConfig(n_train=80, n_test=60, width=31, alpha=0.5), str(tmp_path),
                     task=task)


@pytest.mark.parametrize("budget, value", [("max_steps", 5), ("max_time", 0.05),
                                           ("max_wall_seconds", 1e-6)])
def test_budget_stops_unconverged(tmp_path, budget, value):
    task = synthetic_task(n_train=30, n_test=20)
    config = TrainConfig(n_train=30, n_test=20, width=8, alpha=0.5, dtype="float64",
                         **{budget: value})
    metrics = runner.train(config, str(tmp_path), task=task)
    assert metrics == artifact.read_json(str(tmp_path / artifact.METRICS))
    assert not metrics["converged"] and metrics["stop_reason"] == budget
    if budget == "max_steps":
        assert metrics["steps"] == 5
    if budget == "max_time":  # stopped at the first step that reaches it (every step logged)
        records = [artifact.read_json_line(line) for line in open(tmp_path / artifact.DYNAMICS)]
        assert metrics["t"] >= 0.05 and records[-2]["t"] < 0.05
        assert records[-2]["step"] == metrics["steps"] - 1 < 10
    if budget == "max_wall_seconds":
        assert metrics["steps"] <= 1 and metrics["wall_seconds"] >= 1e-6


def test_a_flow_whose_dt_falls_towards_zero_stops_stalled():
    # dt < STALL_RATIO·t for STALL_STEPS accepted steps in a row is a stall (a ReLU kink that
    # eq. 9 cannot cross); a shorter dip, as in a stiff phase, is not.
    stopping = callbacks.GradientFlowStopping()
    ratio, steps = stopping.STALL_RATIO, stopping.STALL_STEPS

    def state(step, dt):
        return dict(converged=False, t=1.0, step=step, dt=dt, rescaled_loss=0.5)

    assert stopping.stop_reason(state(100, 1e-3)) is None
    for step in range(101, 101 + steps):  # a dip one step short of a stall
        assert stopping.stop_reason(state(step, 0.5 * ratio)) is None
    assert stopping.stop_reason(state(101 + steps, 2 * ratio)) is None  # dt recovers
    first = 102 + steps
    assert stopping.stop_reason(state(first, 0.5 * ratio)) is None
    assert stopping.stop_reason(state(first + steps - 1, 0.5 * ratio)) is None
    assert stopping.stop_reason(state(first + steps, 0.5 * ratio)) == "stalled"
    # A flow that came to rest (∇L vanished, dt growing without bound) stalls too.
    rest = callbacks.GradientFlowStopping()
    assert rest.stop_reason(dict(state(10, 1e90), t=0.1 * rest.REST_TIME)) is None
    assert rest.stop_reason(dict(state(11, 1e99), t=rest.REST_TIME)) == "stalled"


@pytest.mark.slow
def test_a_relu_network_in_the_feature_regime_converges_across_its_kinks(tmp_path):
    # ReLU, L = 5, √h·α = 1e-2: ∇L jumps where a pre-activation crosses zero. Under eq. 9
    # alone this flow stalls (dt about 5e-19 at t ≈ 2e-4 within some 120 steps); the Euler
    # integrator's jump rule takes it to convergence (`dynamics`, jumps of ∇L).
    task = synthetic_task(n_train=60, n_test=20)
    config = TrainConfig(n_train=60, n_test=20, width=10, depth=5, activation="relu",
                         alpha=0.01 / np.sqrt(10), dtype="float64")
    assert config.flow().jumps and not TrainConfig().flow().jumps
    metrics = runner.train(config, str(tmp_path), task=task)
    assert metrics["converged"] and metrics["train_error"] == 0.0


def test_output_norms_on_train_and_test_sets(tmp_path):
    # ‖f(w) − f(w0)‖ and ‖f(w)‖ of eq. 31, recomputed in NumPy from the saved weights.
    task = synthetic_task(n_train=30, n_test=20)
    config = TrainConfig(n_train=30, n_test=20, width=8, alpha=0.5, dtype="float64", max_steps=40)
    metrics = runner.train(config, str(tmp_path), task=task)
    model = runner.load_run(str(tmp_path), task=task).model
    kernels, kernels0 = _kernels(model.network), _kernels(model.initial_network)
    rms = lambda v: np.sqrt(np.mean(v ** 2))
    for x, suffix in ((task.x_train, "train"), (task.x_test, "test")):
        f, f0 = _numpy_f(kernels, x), _numpy_f(kernels0, x)
        assert rms(f - f0) > 0.01 * rms(f)  # w has moved
        norm = metrics["output_norm" if suffix == "train" else "output_norm_test"]
        assert norm == pytest.approx(rms(f - f0), rel=1e-10)
        assert metrics[f"f_norm_{suffix}"] == pytest.approx(rms(f), rel=1e-10)
    last = artifact.read_json_line(open(tmp_path / artifact.DYNAMICS).readlines()[-1])
    assert last["f_norm"] == pytest.approx(metrics["f_norm_train"], rel=1e-12)


@pytest.mark.parametrize("integrator", ["euler", "bogacki_shampine", "rkc",
                                        "bogacki_shampine_rkc", "etdrk4",
                                        "bogacki_shampine_etdrk4"])
def test_nan_loss_raises_divergence_error(tmp_path, integrator):
    task = synthetic_task(n_train=30, n_test=20)
    task.x_train[3, 0] = np.nan  # one bad input makes f, and so the loss, NaN
    config = TrainConfig(n_train=30, n_test=20, width=8, alpha=0.5, dtype="float64",
                         integrator=integrator)
    with pytest.raises(errors.DivergenceError, match="diverged at step 0.*rescaled loss=nan"):
        runner.train(config, str(tmp_path), task=task)
    assert not artifact.is_complete(str(tmp_path))


@pytest.mark.slow
def test_float32_and_float64_agree_where_float32_resolves(tmp_path):
    task = synthetic_task()
    out = {}
    for dtype in ("float32", "float64"):
        config = TrainConfig(n_train=80, n_test=60, width=30, alpha=1.0, dtype=dtype)
        runner.train(config, str(tmp_path / dtype), task=task)
        out[dtype] = np.load(tmp_path / dtype / artifact.TEST_OUTPUTS)
    assert np.linalg.norm(out["float32"] - out["float64"]) / np.linalg.norm(out["float64"]) < 0.02


def _image_task(side, n_train, n_test, seed=0):
    """Binary images (side × side × 1) whose class parity sets their brightness."""
    rng = np.random.default_rng(seed)
    classes = np.arange(n_train + n_test) % 4
    images = rng.normal(size=(len(classes), side, side, 1)) + 1.5 * (classes % 2 == 0)[
        :, None, None, None]
    return data.binary_task(images, classes, n_train, n_test, seed)


def test_cnn_trains_end_to_end_on_images(tmp_path):
    task = _image_task(19, 24, 40)
    # Looser eqs. 8-9 than the paper's (a few dozen steps): this tests the plumbing.
    config = TrainConfig(architecture="cnn", n_train=24, n_test=40, width=4, alpha=1.0,
                         dtype="float64", max_dout=1.0, max_dgrad=0.1)
    metrics = runner.train(config, str(tmp_path), task=task)
    assert metrics["converged"] and metrics["train_error"] == 0.0 and metrics["test_error"] < 0.2
    loaded = runner.load_run(str(tmp_path), task=task)
    assert isinstance(loaded.model.network, ConvNet)
    assert loaded.task.x_test.shape == (40, 19, 19, 1)  # images in their shape, not flattened
    np.testing.assert_allclose(loaded.model(loaded.task.x_test).numpy(),
                               np.load(tmp_path / artifact.TEST_OUTPUTS), rtol=1e-12)


def test_an_image_the_cnn_cannot_take_writes_nothing(tmp_path):
    config = TrainConfig(architecture="cnn", n_train=12, n_test=4, width=4)
    with pytest.raises(errors.ConfigError, match="shrink a side of 16"):
        runner.train(config, str(tmp_path / "run"), task=_image_task(16, 12, 4))
    assert not (tmp_path / "run").exists()
