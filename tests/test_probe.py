"""probe.scan and the `probe` stage: a user's model's drift and test error over α (eq. 6)."""
import os

import numpy as np
import pandas as pd
import pytest

from lazy_feature import probe
from lazy_feature.dynamics import GradientFlow
from lazy_feature.errors import ConfigError
from tests import probe_models
from tests.conftest import run_stage, stage_in_process, write_class_template_mnist

LOOSE = GradientFlow(max_dgrad=1e-1, max_dout=0.3, grow=1.5)
_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((96, 64))
_Y = np.sign(_X[:, 27] + 0.1)
TASK = (_X[:48], _Y[:48], _X[48:], _Y[48:])  # 8×8×1 images, flattened


def test_crossover_interpolates_in_log_log():
    # drift = 1/α: crosses 0.5 at α = 2, between the grid points 1 and 10.
    assert probe.crossover([10.0, 0.1, 1.0], [0.1, 10.0, 1.0]) == pytest.approx(2.0)
    assert probe.crossover([1.0, 10.0], [0.2, 0.1]) is None


@pytest.mark.parametrize("build,shape", [(probe_models.mlp, None), (probe_models.cnn, (8, 8, 1))])
def test_scan_runs_a_keras_model_end_to_end(tmp_path, build, shape):
    result = probe.scan(build, TASK, alphas=(1e-3, 1e3), output_dir=str(tmp_path),
                        input_shape=shape, probe_size=16, max_steps=100, flow=LOOSE)
    table = pd.read_csv(tmp_path / probe.TABLE)
    assert list(table.alpha) == [1e-3, 1e3]
    # Small α learns features, large α stays lazy (Section 5).
    assert table.kernel_drift[0] > 0.5 > 0.1 > table.kernel_drift[1]
    assert list(table.regime) == ["feature learning", "lazy"]
    assert result.alpha_star is not None and 1e-3 < result.alpha_star < 1e3
    assert result.user_alpha > 0 and 0 <= result.kernel_test_error <= 1
    summary = (tmp_path / probe.SUMMARY).read_text()
    assert "Crossover α*" in summary and "Your setting: α_user = σ0" in summary
    assert (tmp_path / probe.FIGURE).read_bytes()[:4] == b"\x89PNG"
    assert os.path.exists(tmp_path / "alpha=0.001" / "regime.jsonl")
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_scan_of_a_subclassed_model_with_a_chosen_logit():
    result = probe.scan(probe_models.two_logits, TASK, alphas=(1e3,), output=0, probe_size=8,
                        max_steps=100, flow=LOOSE, frozen_kernel=False)
    assert result.table.regime[0] == "lazy" and result.kernel_test_error is None


def test_a_builder_that_returns_no_model_fails_in_one_line():
    with pytest.raises(ConfigError, match="not a keras.Model"):
        probe.scan(probe_models.not_a_model, TASK, alphas=(1.0,))


def test_the_probe_stage_writes_its_run_directory(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=6, per_class_test=4)
    out = tmp_path / "scan"
    result = stage_in_process(
        "probe", "--model=tests.probe_models:mlp", f"--output_dir={out}", "--dataset=mnist",
        f"--data_dir={tmp_path / 'mnist'}", "--n_train=40", "--n_test=20", "--alphas=0.01,100",
        "--probe_size=8", "--max_steps=10", "--max_dgrad=0.1")
    assert result.returncode == 0, result.stderr[-3000:]
    for name in (probe.TABLE, probe.FIGURE, probe.SUMMARY, probe.RESULT):
        assert os.path.exists(out / name), name


@pytest.mark.parametrize("spec,message", [
    ("tests.probe_models", "module:function"),
    ("no_such_module_xyz:build", "cannot import"),
    ("tests.probe_models:missing", "no function 'missing'"),
])
def test_a_bad_model_spec_is_a_config_error(spec, message):
    with pytest.raises(ConfigError, match=message):
        probe.load_builder(spec)


def test_a_bad_model_flag_is_one_line_and_exit_1(tmp_path):
    # The real binary: the probe stage's exit status and one-line error (a subprocess).
    result = run_stage("probe", "--model=no_such_module_xyz:build", f"--output_dir={tmp_path}")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("probe: error: cannot import"), result.stderr[-2000:]
