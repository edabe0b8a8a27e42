"""probe.scan and the `probe` stage: a user's model's drift and test error over α (eq. 6)."""
import os
import re

import keras
import numpy as np
import pandas as pd
import pytest

from lazy_feature.kernel import drift
from lazy_feature.probe import alpha_scan, regime
from lazy_feature.run import data
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.errors import ConfigError
from tests import probe_models
from tests.helpers import run_stage, stage_in_process, write_class_template_mnist

LOOSE = GradientFlow(max_dgrad=1e-1, max_dout=0.3, grow=1.5)
_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((96, 64))
_Y = np.sign(_X[:, 27] + 0.1)
TASK = (_X[:48], _Y[:48], _X[48:], _Y[48:])  # 8×8×1 images, flattened


def test_crossover_interpolates_in_log_log():
    # drift = 1/α: crosses the scan's level 0.5 at α = 2, between the grid points 1 and 10.
    level = regime.FEATURE_DRIFT
    assert drift.crossover([10.0, 0.1, 1.0], [0.1, 10.0, 1.0], level) == pytest.approx(2.0)
    assert drift.crossover([1.0, 10.0], [0.2, 0.1], level) is None


@pytest.mark.slow
@pytest.mark.parametrize("build,shape", [(probe_models.mlp, None), (probe_models.cnn, (8, 8, 1))])
def test_scan_runs_a_keras_model_end_to_end(tmp_path, build, shape):
    result = alpha_scan.scan(build, TASK, alphas=(1e-3, 1e3), output_dir=str(tmp_path),
                             input_shape=shape, probe_size=16, max_steps=100, flow=LOOSE)
    table = pd.read_csv(tmp_path / alpha_scan.TABLE)
    assert list(table.alpha) == [1e-3, 1e3]
    # Small α learns features, large α stays lazy (Section 5).
    assert table.kernel_drift[0] > 0.5 > 0.1 > table.kernel_drift[1]
    assert list(table.regime) == ["feature learning", "lazy"]
    # 100 steps fit one α of the two (which, depends on the model): the other is marked, and
    # no crossover is claimed from it.
    assert table.converged.sum() == 1 and result.alpha_star is None
    assert result.user_alpha > 0 and 0 <= result.kernel_test_error <= 1
    summary = (tmp_path / alpha_scan.SUMMARY).read_text()
    assert "did not converge** (max_steps" in summary and "Crossover α*" not in summary
    assert "only 1 of 2 α converged" in summary and "Your setting: α_user = σ0" in summary
    assert (tmp_path / alpha_scan.FIGURE).read_bytes()[:4] == b"\x89PNG"
    assert os.path.exists(tmp_path / "alpha=0.001" / "regime.jsonl")
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


@pytest.mark.slow
def test_scan_with_the_users_optimizer_runs_end_to_end():
    # A plain Keras fit of F = α(f̂ − f̂0) by SGD on the α⁻²-scaled loss (eq. 7): F moves at
    # the same rate at every α, the weights by ~1/α, so small α learns features.
    result = alpha_scan.scan(probe_models.mlp, TASK, alphas=(0.1, 1e3), probe_size=16,
                             optimizer=lambda: keras.optimizers.SGD(0.01), epochs=10,
                             batch_size=16, frozen_kernel=False)
    table = result.table
    assert list(table.regime) == ["feature learning", "lazy"], table.to_string()
    assert list(table.steps) == [30, 30] and list(table.stop_reason) == ["10 epochs"] * 2
    assert "trained by SGD (10 epochs of batch 16)" in result.summary()


def test_a_diverging_optimizer_is_reported_in_its_row():
    result = alpha_scan.scan(probe_models.mlp, TASK, alphas=(1e-3,), probe_size=8, epochs=4,
                             batch_size=16, optimizer=alpha_scan.keras_optimizer("sgd", 1.0),
                             frozen_kernel=False)
    assert result.table.stop_reason[0].startswith("diverged")


@pytest.mark.parametrize("kwargs,message", [
    (dict(optimizer="sgd"), "function returning a fresh Keras optimizer"),
    (dict(optimizer=lambda: keras.optimizers.SGD(), epochs=0), "epochs=0"),
])
def test_a_bad_optimizer_setting_is_a_config_error(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        alpha_scan.scan(probe_models.mlp, TASK, alphas=(1.0,), **kwargs)


def test_keras_optimizer_names_and_errors():
    assert alpha_scan.keras_optimizer("flow") is None
    adam = alpha_scan.keras_optimizer("adam", 0.003)()
    assert isinstance(adam, keras.optimizers.Adam)
    assert float(adam.learning_rate) == pytest.approx(0.003)
    with pytest.raises(ConfigError, match="choose flow, sgd, adam"):
        alpha_scan.keras_optimizer("rmsprop")
    with pytest.raises(ConfigError, match="> 0"):
        alpha_scan.keras_optimizer("sgd", -1.0)


def test_scan_of_a_subclassed_model_with_a_chosen_logit():
    result = alpha_scan.scan(probe_models.two_logits, TASK, alphas=(1e3,), output=0, probe_size=8,
                             max_steps=100, flow=LOOSE, frozen_kernel=False)
    assert result.table.regime[0] == "lazy" and result.kernel_test_error is None


def test_a_builder_that_returns_no_model_fails_in_one_line():
    with pytest.raises(ConfigError, match="not a keras.Model"):
        alpha_scan.scan(probe_models.not_a_model, TASK, alphas=(1.0,))


@pytest.mark.slow
@pytest.mark.parametrize("training,flags", [
    ("gradient flow", ["--max_steps=10", "--max_dgrad=0.1"]),
    ("Adam (2 epochs of batch 8)", ["--optimizer=adam", "--learning_rate=0.01", "--epochs=2",
                                    "--batch_size=8"]),
])
def test_the_probe_stage_writes_its_run_directory(tmp_path, training, flags):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=6, per_class_test=4)
    out = tmp_path / "scan"
    result = stage_in_process(
        "probe", "--model=tests.probe_models:mlp", f"--output_dir={out}", "--dataset=mnist",
        f"--data_dir={tmp_path / 'mnist'}", "--n_train=40", "--n_test=20", "--alphas=0.01,100",
        "--probe_size=8", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (alpha_scan.TABLE, alpha_scan.FIGURE, alpha_scan.SUMMARY, alpha_scan.RESULT):
        assert os.path.exists(out / name), name
    assert f"trained by {training}" in (out / alpha_scan.SUMMARY).read_text()


@pytest.mark.parametrize("spec,message", [
    ("tests.probe_models", "module:function"),
    ("no_such_module_xyz:build", "cannot import"),
    ("tests.probe_models:missing", "no function 'missing'"),
])
def test_a_bad_model_spec_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        alpha_scan.load_builder(spec)


@pytest.mark.slow
def test_a_bad_model_flag_is_one_line_and_exit_1(tmp_path):
    # The real binary: the probe stage's exit status and one-line error (a subprocess).
    result = run_stage("probe", "--model=no_such_module_xyz:build", f"--output_dir={tmp_path}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("probe: error: cannot import"), result.stderr[-2000:]


@pytest.mark.slow
def test_the_probe_binary_on_a_keras_cnn_keeps_a_quiet_console(tmp_path):
    # The real binary on a user's CNN, output to a file: its progress display and the path of
    # its summary; no TensorFlow start-up line, no tf.data NodeDef error line (Keras'
    # predict), no kernel warning.
    write_class_template_mnist(tmp_path / "mnist", per_class_train=4, per_class_test=2)
    result = run_stage("probe", "--model=tests.probe_models:image_cnn", "--input_shape=28,28,1",
                       f"--output_dir={tmp_path / 'scan'}", "--dataset=mnist",
                       f"--data_dir={tmp_path / 'mnist'}", "--n_train=40", "--n_test=20",
                       "--alphas=1", "--probe_size=8", "--max_steps=5")
    assert result.returncode == 0, result.stderr[-2000:]
    *status, summary = result.stderr.splitlines()  # the progress display, then the summary
    assert status and all(re.fullmatch(r"\d/1 α, \d unconverged, [\d:]+ elapsed(, ETA .*)?",
                                       line) for line in status), result.stderr[-2000:]
    assert status[-1].startswith("1/1 α, 1 unconverged") and "ETA" not in status[-1]
    assert summary == str(tmp_path / "scan" / alpha_scan.SUMMARY)


@pytest.mark.parametrize("flags,message", [
    (["--learning_rate=0.1", "--epochs=3"],
     "--learning_rate, --epochs: for --optimizer=sgd|adam only, not --optimizer=flow"),
    (["--optimizer=flow", "--batch_size=8"], "--batch_size: for --optimizer=sgd|adam only"),
    (["--optimizer=adam", "--max_steps=10", "--max_wall_seconds=5"],
     "--max_steps, --max_wall_seconds: for --optimizer=flow only, not --optimizer=adam"),
    (["--optimizer=sgd", "--max_dgrad=0.1"], "--max_dgrad: for --optimizer=flow only"),
])
def test_a_flag_the_optimizer_ignores_is_one_line_and_writes_nothing(tmp_path, flags, message):
    out = tmp_path / "scan"
    result = stage_in_process("probe", "--model=tests.probe_models:mlp", f"--output_dir={out}",
                              *flags)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith(f"probe: error: {message}"), \
        result.stderr[-2000:]
    assert not os.path.exists(out)


def test_a_model_that_does_not_take_the_inputs_shape_is_one_line():
    with pytest.raises(ConfigError, match=r"does not take inputs of shape \(64,\): give the "
                       "shape of one input it takes") as info:
        alpha_scan.scan(probe_models.cnn, TASK, alphas=(1.0,), probe_size=8, max_steps=2)
    assert "\n" not in str(info.value) and "--input_shape=" in str(info.value)


def test_the_probe_stage_without_input_shape_for_a_cnn_is_one_line_and_writes_nothing(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=6, per_class_test=4)
    out = tmp_path / "scan"
    result = stage_in_process(
        "probe", "--model=tests.probe_models:cnn", f"--output_dir={out}", "--dataset=mnist",
        f"--data_dir={tmp_path / 'mnist'}", "--n_train=40", "--n_test=20", "--max_steps=2")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) <= 3 and lines[-1].startswith("probe: error: "), result.stderr[-2000:]
    assert "--input_shape=" in lines[-1]
    assert not os.path.exists(out)


def test_kinks_are_found_in_a_users_model():
    smooth = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="tanh"),
                               keras.layers.Dense(1)])
    assert not alpha_scan.kinked(smooth)
    assert alpha_scan.flow_for(smooth).integrator == alpha_scan.SMOOTH_INTEGRATOR
    for kink in (keras.layers.ReLU(), keras.layers.Activation("relu"),
                 keras.layers.Dense(4, activation=keras.activations.leaky_relu)):
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4), kink,
                                  keras.layers.Dense(1)])
        assert alpha_scan.kinked(model), kink
        assert alpha_scan.flow_for(model) == GradientFlow(jumps=True)
    pooled = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Conv2D(2, 2),
                               keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                               keras.layers.Dense(1)])
    assert alpha_scan.kinked(pooled)
    assert alpha_scan.kinked(probe_models.mlp()) and not alpha_scan.kinked(
        probe_models.two_logits())


@pytest.mark.slow
def test_the_default_flow_fits_a_relu_mlp_at_every_alpha(fashion_task):
    # A plain Keras ReLU MLP with biases on Fashion-MNIST, n = 300 (issue 30's case): at
    # α = 0.1 its flow slides along several kinks at once, crossing jumps of ∇L from below ε_∇
    # to thousands of times it every step, which the jump rule crosses (`integrators.Euler`).
    # Before, α = 0.1 ran to its 10 000 steps.
    del fashion_task  # the data set must be there (CI installs it)
    task = data.load_binary_task("fashion_mnist", n_train=300, n_test=1000, data_seed=0)
    result = alpha_scan.scan(probe_models.mlp, task, alphas=(0.1, 1.0, 10.0, 100.0),
                             probe_size=16, frozen_kernel=False)
    assert result.table.converged.all(), result.table.to_string()
    assert result.table.steps[0] < 10_000  # within a paper run's budget (before: 11 338)
    assert "did not converge" not in result.summary()


@pytest.mark.slow
def test_the_default_flow_fits_a_relu_cnn_at_every_alpha():
    result = alpha_scan.scan(probe_models.cnn, TASK, input_shape=(8, 8, 1), probe_size=16,
                             frozen_kernel=False)
    assert result.table.converged.all(), result.table.to_string()


def test_a_scan_stopped_short_says_so_and_states_no_crossover(tmp_path):
    result = alpha_scan.scan(probe_models.mlp, TASK, alphas=(1e-3, 1.0, 1e3), probe_size=8,
                             max_steps=3, frozen_kernel=False, output_dir=str(tmp_path))
    assert not result.table.converged.any() and result.alpha_star is None
    summary = (tmp_path / alpha_scan.SUMMARY).read_text()
    assert summary.count("did not converge** (max_steps") == 3
    assert "raise --max_steps" in summary
    assert "No crossover: only 0 of 3 α converged" in summary and "Crossover α*" not in summary
    table = pd.read_csv(tmp_path / alpha_scan.TABLE)
    assert list(table.converged) == [False] * 3
