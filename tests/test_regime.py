"""RegimeMonitor: the kernel drift of eq. 5's NTK (Section 5) on a probe, for any Keras model."""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing import event_accumulator

from lazy_feature.kernel import drift, ntk
from lazy_feature.probe import regime
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import FullyConnected
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.errors import ConfigError
from tests import probe_models
from tests.helpers import sphere_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

X = sphere_inputs(48, 6, seed=0)
Y = np.sign(X[:, 0] + 0.2)
LOOSE = GradientFlow(max_dgrad=1e-1, max_dout=0.3, grow=1.5)


def _flow_fit(alpha, attempts, monitor, width=16):
    model = AlphaModel(FullyConnected(width, depth=2, seed=1, dtype="float64"), alpha=alpha,
                       dynamics=GradientFlowDynamics(LOOSE))
    model.compile()
    model.fit(tf.data.Dataset.from_tensors((X, Y)).repeat(), epochs=1, steps_per_epoch=attempts,
              verbose=0, shuffle=False, callbacks=[monitor])
    return model


def test_drift_equals_ntk_kernel_drift_on_the_packages_network():
    monitor = regime.RegimeMonitor(X[:16], Y[:16], every=3)
    model = _flow_fit(0.3, 40, monitor)
    expected = drift.kernel_drift(model, monitor.probe_x)["drift"]
    assert expected > 1e-3
    np.testing.assert_allclose(monitor.kernel_drift(), expected, rtol=1e-9)
    history = monitor.history()
    assert history.step.iloc[0] == 0 and history.kernel_drift.iloc[0] == 0
    assert history.step.iloc[-1] == 40
    np.testing.assert_allclose(history.weight_drift.iloc[-1], float(model.weight_drift()),
                               rtol=1e-9)


@pytest.mark.parametrize("alpha,regime_name", [(1e3, "lazy"), (1e-3, "feature learning")])
def test_very_large_alpha_is_lazy_and_very_small_alpha_learns_features(alpha, regime_name):
    monitor = regime.RegimeMonitor(X[:24], Y[:24])
    _flow_fit(alpha, 150, monitor)
    verdict = monitor.verdict()
    assert verdict.regime == regime_name, str(verdict)
    assert str(verdict).startswith(regime_name)
    assert "lazy below 0.1" in str(verdict) and "above 0.5" in str(verdict)


def test_alignment_is_one_for_the_label_kernel():
    y = np.array([1.0, -1.0, -1.0, 1.0, 1.0])
    assert regime.alignment(np.outer(y, y), y) == pytest.approx(1.0, abs=1e-14)
    assert regime.alignment(np.eye(5), y) == pytest.approx(1 / np.sqrt(5))


@pytest.mark.parametrize("build,shape,output", [
    (probe_models.mlp, (8,), None),             # Sequential, float32
    (probe_models.mlp64, (8,), None),           # float64
    (probe_models.cnn, (8, 8, 1), None),        # functional, conv
    (probe_models.two_logits, (8,), "sum"),     # subclassed, sum of logits
    (probe_models.two_logits, (8,), 1),         # subclassed, one logit
])
def test_monitors_a_plain_fit_and_writes_tensorboard_and_jsonl(tmp_path, build, shape, output):
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(1).standard_normal((64,) + shape)
    y = np.where(x.reshape(64, -1)[:, 0] > 0, 1.0, 0.0)  # 0/1 labels are read as ∓1
    model = build()
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    monitor = regime.RegimeMonitor(x[:16], y[:16], log_dir=str(tmp_path), every=2, output=output,
                                   test_data=(x[32:], y[32:]))
    model.fit(x[:32], y[:32, None], epochs=3, batch_size=8, verbose=0, callbacks=[monitor])
    history = monitor.history()
    assert history.step.iloc[-1] == 12
    assert (history.kernel_drift.iloc[1:] > 0).all()
    assert any(c.startswith("weight_drift/") for c in history.columns)
    with open(tmp_path / "regime.jsonl") as f:
        lines = [json.loads(line) for line in f]
    assert [r["step"] for r in lines] == list(history.step)
    assert any(name.startswith("events.out.tfevents") for name in os.listdir(tmp_path))
    events = event_accumulator.EventAccumulator(str(tmp_path), size_guidance={"tensors": 0})
    events.Reload()
    log_drift = {e.step: float(tf.make_ndarray(e.tensor_proto))
                 for e in events.Tensors("regime/log10_kernel_drift")}
    assert list(log_drift) == list(history.step.iloc[1:])  # every record past w0
    assert np.allclose(list(log_drift.values()), np.log10(history.kernel_drift.iloc[1:]),
                       rtol=1e-6)
    verdict = monitor.verdict()
    assert 0 <= verdict.kernel_test_error <= 1 and 0 <= verdict.network_test_error <= 1
    assert "frozen kernel" in str(verdict)


def test_a_vector_output_without_a_choice_fails_in_one_line():
    # Seeded: a run of this process may have turned op determinism on (`runner.train`), which
    # refuses unseeded random initializers.
    keras.utils.set_random_seed(0)
    model = probe_models.two_logits()
    monitor = regime.RegimeMonitor(X[:4], Y[:4])
    model.compile(optimizer="sgd", loss="mse")
    with pytest.raises(ConfigError, match="choose an output") as info:
        model.fit(X[:8], np.zeros((8, 2)), epochs=1, verbose=0, callbacks=[monitor])
    assert "\n" not in str(info.value)
    assert "--output=INDEX or --output=sum" in str(info.value)  # the probe stage's flag too


def test_a_probe_above_the_memory_bound_fails_in_one_line():
    with pytest.raises(ConfigError, match="MAX_PROBE") as info:
        regime.RegimeMonitor(np.zeros((regime.MAX_PROBE + 1, 2)))
    assert "\n" not in str(info.value)


def test_verdict_before_training_says_what_to_do():
    with pytest.raises(ConfigError, match="fit"):
        regime.RegimeMonitor(X[:4]).verdict()


@pytest.mark.parametrize("build,shape,structured", [
    (probe_models.cnn_with_bias, (9, 9, 2), 5),  # every weight on the structured path
    (probe_models.mixed_cnn, (6, 6, 1), 3),      # BatchNormalization and a shared Dense: generic
])
def test_the_structured_probe_kernel_equals_the_generic_one(build, shape, structured):
    keras.utils.set_random_seed(3)
    x = np.random.default_rng(2).standard_normal((10,) + shape)
    network = regime.scalar_output(build(), x)
    kernel = ntk.ProbeKernel(network, x)
    assert len(kernel.kernel.terms) == structured
    f, theta = kernel(x)
    expected = ntk.gram_generic(network, x)  # per-example Jacobians, float64
    np.testing.assert_allclose(theta.numpy(), expected, rtol=0,
                               atol=1e-10 * np.abs(expected).max())
    np.testing.assert_allclose(f.numpy(), network(x).numpy(), rtol=1e-12)


@pytest.mark.slow
def test_monitor_and_scan_under_a_mirrored_strategy_match_one_device():
    # Its own process: the CPU is split into 2 logical devices before TensorFlow starts.
    done = subprocess.run([sys.executable, "-m", "tests.mirrored_regime"], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["replicas"] == 2
    single, mirrored = r["default"], r["mirrored"]
    assert single["step"] == mirrored["step"] and single["kernel_drift"][-1] > 1e-2
    for key in ("kernel_drift", "weight_drift", "alignment"):
        np.testing.assert_allclose(mirrored[key], single[key], rtol=1e-9, atol=1e-12)
    # probe.scan(strategy=...) by gradient flow; the stage below trains by SGD
    one, two = single["scan"]["flow"], mirrored["scan"]["flow"]
    assert one["steps"] == two["steps"] and one["kernel_drift"][0] > 1e-3
    np.testing.assert_allclose(two["kernel_drift"], one["kernel_drift"], rtol=1e-9)
    assert two["test_error"] == one["test_error"]
    assert r["stage"] == {"returncode": 0, "rows": 1}, r["stage"]  # --strategy=mirrored
