"""The `train` binary: a run artifact on real data, and one-line errors on bad input."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lazy_feature import artifact

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(*args):
    return subprocess.run([sys.executable, "-m", "pipelines.train", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_train_writes_the_run_artifact(fashion_task, tmp_path):
    out = tmp_path / "run"
    result = _train(f"--output_dir={out}", "--n_train=100", "--n_test=200", "--width=30",
                    "--sqrt_h_alpha=10", "--data_seed=1")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in (artifact.CONFIG, artifact.METRICS, artifact.DYNAMICS, artifact.TEST_OUTPUTS,
                 artifact.TEST_LABELS, artifact.WEIGHTS):
        assert (out / name).exists(), name
    assert os.listdir(out / artifact.EVENTS)
    metrics = json.loads((out / artifact.METRICS).read_text())
    for key in ("train_error", "test_error", "test_loss", "converged", "steps", "t",
                "wall_seconds", "alpha", "width", "sqrt_h_alpha"):
        assert key in metrics, key
    assert metrics["sqrt_h_alpha"] == pytest.approx(10.0)
    config = json.loads((out / artifact.CONFIG).read_text())
    assert config["alpha"] == pytest.approx(10 / np.sqrt(30)) and config["lazy_feature_version"]
    assert np.load(out / artifact.TEST_OUTPUTS).shape == (200,)
    record = json.loads((out / artifact.DYNAMICS).read_text().splitlines()[-1])
    assert set(record) >= {"step", "t", "dt", "dgrad", "dout", "rescaled_loss", "train_error",
                           "weight_drift", "output_norm"}
    assert "step" in result.stderr and "a2L=" in result.stderr  # the status line
    assert not [n for n in os.listdir(out) if n.endswith((".tmp", ".partial"))]


@pytest.mark.parametrize("args,message", [
    (["--data_dir=/nonexistent/fashion"], "apt-get install dataset-fashion-mnist"),
    (["--alpha=0"], "alpha must be > 0"),
    (["--alpha=-1"], "alpha must be > 0"),
    (["--width=0"], "width must be >= 1"),
    (["--n_train=60000", "--n_test=20000"], "exceeds the 70000 pooled images"),
    (["--activation=gelu"], "unknown activation 'gelu'"),
    (["--alpha=1e4", "--width=100", "--dtype=float32"], "use dtype float64"),
])
def test_bad_input_fails_in_one_line(args, message, tmp_path):
    if "--data_dir" not in args[0] and "pooled" in message and not os.path.isdir(
            "/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"):
        pytest.skip("needs the Debian Fashion-MNIST package")
    out = tmp_path / "run"
    result = _train(f"--output_dir={out}", *args)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not out.exists()  # nothing half-written
