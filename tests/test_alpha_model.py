"""The α-model and its adaptive gradient flow (eqs. 6-9), against brute force and the paper."""
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature import artifact, losses, run
from lazy_feature.alpha_model import AlphaModel
from lazy_feature.architectures import FullyConnected
from lazy_feature.config import TrainConfig
from lazy_feature.dynamics import GradientFlow
from tests.conftest import sphere_inputs


class _AttemptLog(keras.callbacks.Callback):
    """Keeps the logs of every trial step and stops once converged."""

    def __init__(self):
        super().__init__()
        self.attempts = []

    def on_train_batch_end(self, batch, logs=None):
        self.attempts.append({k: float(np.asarray(v)) for k, v in logs.items()})
        if logs["converged"]:
            self.model.stop_training = True


def _fit(model, x, y, max_attempts=20000):
    log = _AttemptLog()
    ds = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(ds, epochs=1, steps_per_epoch=max_attempts, verbose=0, callbacks=[log])
    return log.attempts


def test_gradient_of_eq7_matches_finite_differences():
    # ∇L of the α⁻²-scaled soft hinge, checked in float64 by central differences.
    x = sphere_inputs(6, 5, seed=0)
    y = np.array([1, -1, 1, 1, -1, -1], np.float64)
    model = AlphaModel(FullyConnected(width=4, depth=2, seed=1, dtype="float64"), alpha=0.7)
    model.compile()
    model.start(x, y)
    model.network.hidden[0].kernel.assign_add(0.3 * np.ones((5, 4)))  # leave w0: F ≠ 0

    def loss():
        F = model(x)
        return losses.alpha_loss(model.per_pattern_loss, F, tf.constant(y), 0.7, 6).numpy()

    with tf.GradientTape() as tape:
        L = losses.alpha_loss(model.per_pattern_loss, model(x), tf.constant(y), 0.7, 6)
    w = model.network.hidden[1].kernel
    g = tape.gradient(L, w).numpy()
    eps = 1e-6
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        delta = np.zeros((4, 4))
        delta[i, j] = eps
        w.assign_add(delta)
        up = loss()
        w.assign_sub(2 * delta)
        down = loss()
        w.assign_add(delta)
        assert g[i, j] == pytest.approx((up - down) / (2 * eps), rel=1e-6, abs=1e-12)


def test_accepted_steps_obey_eqs_8_and_9_and_rejected_ones_do_not():
    x = sphere_inputs(60, 10, seed=0)
    y = np.sign(x[:, 0] + 0.5 * x[:, 1])
    flow = GradientFlow(max_dout=0.1, max_dgrad=1e-4)
    model = AlphaModel(FullyConnected(width=40, depth=3, seed=0, dtype="float64"), alpha=1.0,
                       flow=flow)
    model.compile()
    attempts = _fit(model, x, y)
    assert attempts[-1]["converged"]
    accepted = [a for a in attempts if a["accepted"]]
    rejected = [a for a in attempts if not a["accepted"]]
    assert accepted and rejected  # the control was exercised both ways
    assert all(a["dout"] < 0.1 and a["dgrad"] < 1e-4 for a in accepted)
    assert all(a["dout"] >= 0.1 or a["dgrad"] >= 1e-4 for a in rejected)
    assert attempts[-1]["step"] == len(accepted)
    # t is the sum of the accepted dt: recompute it from the dt sequence.
    dts = [1.0] + [a["dt"] for a in attempts[:-1]]
    t = sum(dt for dt, a in zip(dts, attempts) if a["accepted"])
    assert attempts[-1]["t"] == pytest.approx(t, rel=1e-12)
    # Convergence: every margin > 1, recomputed from scratch rather than from the cache.
    assert np.min(model(x).numpy() * y) > 1.0


def test_small_real_run_converges_and_its_log_obeys_eqs_8_9(fashion_task, tmp_path):
    config = TrainConfig(n_train=200, n_test=1000, width=50, alpha=1.0, dtype="float64")
    metrics = run.train(config, str(tmp_path), task=fashion_task)
    assert metrics["converged"] and metrics["train_error"] == 0.0
    assert 0.0 < metrics["test_error"] < 0.2
    records = [artifact.read_json_line(line) for line in
               open(tmp_path / artifact.DYNAMICS)]
    assert records[0]["step"] == 0 and records[0]["rescaled_loss"] == pytest.approx(
        float(np.log1p(np.exp(20.0)) / 20.0), rel=1e-12)  # α²L(0) = sp_20(1): F ≡ 0
    for r in records[1:]:
        assert r["dout"] < config.max_dout and r["dgrad"] < config.max_dgrad
    assert records[-1]["step"] == metrics["steps"] and records[-1]["unfitted"] == 0
    loaded = run.load_run(str(tmp_path), task=fashion_task)
    margins = loaded.model(fashion_task.x_train).numpy() * fashion_task.y_train
    assert margins.min() > 1.0
    np.testing.assert_allclose(loaded.model(fashion_task.x_test).numpy(),
                               np.load(tmp_path / artifact.TEST_OUTPUTS), rtol=1e-12)


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
        metrics = run.train(config, str(tmp_path / str(max_dgrad)), task=task)
        assert metrics["converged"]
        outputs.append(np.load(tmp_path / str(max_dgrad) / artifact.TEST_OUTPUTS))
    relative = np.linalg.norm(outputs[0] - outputs[1]) / np.linalg.norm(outputs[1])
    assert relative < 0.01


class _Interrupt(keras.callbacks.Callback):
    def __init__(self, at_step):
        super().__init__()
        self.at_step = at_step

    def on_train_batch_end(self, batch, logs=None):
        if int(logs["step"]) >= self.at_step:
            raise KeyboardInterrupt


def _synthetic_task():
    from lazy_feature.data import BinaryTask
    x = sphere_inputs(140, 12, seed=4)
    y = np.sign(x[:, 0] - 0.3 * x[:, 2])
    return BinaryTask(x[:80], y[:80], x[80:], y[80:], np.zeros(80, int), np.zeros(60, int))


def test_interrupted_run_resumes_exactly(tmp_path):
    task = _synthetic_task()
    config = TrainConfig(n_train=80, n_test=60, width=30, alpha=0.5, dtype="float64")
    reference = run.train(config, str(tmp_path / "whole"), task=task)
    with pytest.raises(KeyboardInterrupt):
        run.train(config, str(tmp_path / "cut"), task=task, extra_callbacks=[_Interrupt(40)])
    assert not artifact.is_complete(str(tmp_path / "cut"))
    assert os.path.exists(tmp_path / "cut" / artifact.CHECKPOINT)
    resumed = run.train(config, str(tmp_path / "cut"), task=task)
    for key in ("steps", "rejected_steps", "t", "test_error", "weight_drift"):
        assert resumed[key] == reference[key], key
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / artifact.TEST_OUTPUTS),
                                  np.load(tmp_path / "whole" / artifact.TEST_OUTPUTS))
    steps = [artifact.read_json_line(line)["step"] for line in open(tmp_path / "cut" / artifact.DYNAMICS)]
    assert steps == sorted(set(steps))  # no step recorded twice after the resume
    assert not os.path.exists(tmp_path / "cut" / artifact.CHECKPOINT)


def test_complete_run_is_not_redone_and_other_config_is_refused(tmp_path):
    task = _synthetic_task()
    config = TrainConfig(n_train=80, n_test=60, width=30, alpha=0.5, dtype="float64")
    first = run.train(config, str(tmp_path), task=task)
    assert run.train(config, str(tmp_path), task=task) == first
    with pytest.raises(run.RunDirError, match="choose another output directory"):
        run.train(TrainConfig(n_train=80, n_test=60, width=31, alpha=0.5), str(tmp_path),
                  task=task)


def test_budget_stops_unconverged(tmp_path):
    task = _synthetic_task()
    config = TrainConfig(n_train=80, n_test=60, width=30, alpha=0.5, max_steps=5)
    metrics = run.train(config, str(tmp_path), task=task)
    assert not metrics["converged"] and metrics["stop_reason"] == "max_steps"
    assert metrics["steps"] == 5


def test_float32_and_float64_agree_where_float32_resolves(tmp_path):
    task = _synthetic_task()
    out = {}
    for dtype in ("float32", "float64"):
        config = TrainConfig(n_train=80, n_test=60, width=30, alpha=1.0, dtype=dtype)
        run.train(config, str(tmp_path / dtype), task=task)
        out[dtype] = np.load(tmp_path / dtype / artifact.TEST_OUTPUTS)
    assert np.linalg.norm(out["float32"] - out["float64"]) / np.linalg.norm(out["float64"]) < 0.02
