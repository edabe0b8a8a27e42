"""The stage binaries: `train`'s run artifact and one-line errors, every binary's --helpshort."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl import flags

from lazy_feature.run import artifact
from pipelines import console
from tests.helpers import (MNIST_FILES, ROOT, run_stage, stage_in_process, stage_module,
                           write_class_template_mnist, write_idx)


@pytest.mark.slow
def test_train_writes_the_run_artifact_of_a_converged_run(tmp_path):
    # Ten classes each shown by its own bright rows: parity is learnable from 60 points.
    write_class_template_mnist(tmp_path / "mnist", per_class_train=10, per_class_test=10)
    out = tmp_path / "run"
    result = stage_in_process("train", f"--output_dir={out}", "--dataset=mnist",
                              f"--data_dir={tmp_path / 'mnist'}", "--n_train=60", "--n_test=100",
                              "--width=16", "--sqrt_h_alpha=10", "--data_seed=1")
    assert result.returncode == 0, result.stderr[-2000:]
    for name in (artifact.CONFIG, artifact.METRICS, artifact.DYNAMICS, artifact.TEST_OUTPUTS,
                 artifact.TEST_LABELS, artifact.CHECKPOINT):
        assert (out / name).exists(), name
    assert os.listdir(out / artifact.EVENTS)
    metrics = json.loads((out / artifact.METRICS).read_text())
    assert metrics["converged"] and metrics["stop_reason"] == "converged"
    assert metrics["train_error"] == 0.0 and metrics["test_error"] < 0.2
    test_outputs, test_labels = np.load(out / artifact.TEST_OUTPUTS), np.load(out / artifact.TEST_LABELS)
    assert test_outputs.shape == (100,)
    assert metrics["test_error"] == np.mean(test_outputs * test_labels <= 0)
    for key in ("test_loss", "steps", "t", "wall_seconds", "alpha", "width", "output_norm",
                "output_norm_test", "f_norm_train", "f_norm_test"):
        assert key in metrics, key
    assert metrics["sqrt_h_alpha"] == pytest.approx(10.0)
    config = json.loads((out / artifact.CONFIG).read_text())
    assert config["alpha"] == pytest.approx(10 / 4) and config["lazy_feature_version"]
    assert config["form"] == "direct" and config["dtype"] == "float32"  # α·h·ε₃₂ ≤ 1e-3
    record = json.loads((out / artifact.DYNAMICS).read_text().splitlines()[-1])
    assert set(record) >= {"step", "t", "dt", "dgrad", "dout", "rescaled_loss", "train_error",
                           "weight_drift", "output_norm", "f_norm"}
    assert record["step"] == metrics["steps"] and record["unfitted"] == 0
    assert "step" in result.stderr and "a2L=" in result.stderr  # the status line
    assert not [n for n in os.listdir(out) if n.endswith(".tmp") or n == artifact.PARTIAL_DYNAMICS]


@pytest.mark.slow
def test_train_stage_runs_the_cnn_on_images(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=2, per_class_test=2)
    out = tmp_path / "run"
    result = run_stage("train", f"--output_dir={out}", "--dataset=mnist", "--architecture=cnn",
                       f"--data_dir={tmp_path / 'mnist'}", "--n_train=20", "--n_test=20",
                       "--width=4", "--alpha=1", "--max_dout=1", "--max_dgrad=0.1")
    assert result.returncode == 0, result.stderr[-2000:]
    config = json.loads((out / artifact.CONFIG).read_text())
    assert config["architecture"] == "cnn" and config["depth"] == 4
    assert json.loads((out / artifact.METRICS).read_text())["converged"]
    # A quiet console (the real binary, output to a file): the resource estimate, then the
    # status lines and the summary, without absl's prefix; no TensorFlow start-up or kernel
    # warning.
    estimate, *steps, summary = result.stderr.splitlines()
    assert estimate.startswith("estimated memory "), result.stderr[-2000:]
    assert steps and all(re.fullmatch(r"step \d+ .*a2L=.*", line) for line in steps), \
        result.stderr[-2000:]
    assert summary.startswith(f"{out}: converged after "), result.stderr[-2000:]


@pytest.mark.slow
def test_divergence_is_one_line_with_non_zero_exit(tmp_path):
    # The real binary (a subprocess): exit status 1, one error line, no traceback.
    images = write_class_template_mnist(tmp_path / "mnist", per_class_train=3, per_class_test=1)
    images[0, 5, 5] = np.nan  # a corrupt pixel: f, and so the loss, turns NaN
    write_idx(tmp_path / "mnist" / MNIST_FILES[0], images, gz=False)
    result = run_stage("train", f"--output_dir={tmp_path / 'run'}", "--dataset=mnist",
                       f"--data_dir={tmp_path / 'mnist'}", "--n_train=20", "--n_test=10",
                       "--width=8")
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: error:")]
    assert len(lines) == 1 and "gradient flow diverged" in lines[0], result.stderr[-2000:]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("binary, expected", [
    ("train", ["--width", "--sqrt_h_alpha", "--bias_scale", "--readout_bias", "--max_time",
               "--output_dir", "--live_drift", "--architecture", "--pca", "--pca_whiten",
               "--dynamics", "--batch_size", "--learning_rate", "--epochs", "--tau",
               "--tau_proportional_to_t", "--integrator", "--output_tol", "--direction_tol",
               "--stiff_output_tol"]),
    ("ensemble", ["--width", "--sqrt_h_alpha", "--bias_scale", "--seeds", "--output_dir"]),
])
def test_helpshort_lists_the_flags_a_user_sets(binary, expected):
    result = stage_in_process(binary, "--helpshort")
    listed = set(re.findall(r"^\s+--(?:\[no\])?(\w+)", result.stdout, re.MULTILINE))
    assert {flag[2:] for flag in expected} <= listed, result.stdout[-3000:]


def _helpshort_defaults(binary, *args):
    """{flag: its default as --helpshort shows it, None where it shows none} of `binary`."""
    text = stage_in_process(binary, *args, "--helpshort").stdout
    found = {}
    for block in re.split(r"\n(?=  -)", text):  # a flag's lines: itself, then indented more
        name = re.match(r"\s+(?:-\w,)?--(?:\[no\])?(\w+):", block)
        if name:
            default = re.search(r"\(default: '?(.*?)'?\)", block.replace("\n", " "))
            found[name.group(1)] = default and default.group(1)
    return found


def test_train_helpshort_shows_the_defaults_and_where_it_runs():
    shown = _helpshort_defaults("train")
    assert shown["n_train"] == "10000" and shown["n_test"] == "50000", shown
    assert shown["width"] == "100" and shown["dataset"] == "fashion_mnist"
    assert shown["strategy"] == "default" and "verbosity" in shown
    assert "sqrt_h_alpha" in shown and shown["sqrt_h_alpha"] is None  # unset: --alpha holds


def test_sweep_helpshort_lists_its_settings_and_where_it_runs():
    shown = _helpshort_defaults("sweep")
    for name in ("dynamics", "strategy", "workers", "data_dirs", "verbosity", "config",
                 "n_train", "widths", "epochs", "integrator"):
        assert name in shown, name
    assert shown["workers"] == "2" and shown["config"] == "quick"
    assert shown["n_train"] is None  # unset: the named config's


def test_probe_shares_the_training_flags_of_train_with_its_own_defaults():
    train = stage_module("train", "--output_dir=unused")
    kinds = {name: type(flags.FLAGS[name].parser) for name in _PROBE_TRAINING_FLAGS}
    helps = {name: flags.FLAGS[name].help for name in _PROBE_TRAINING_FLAGS}
    assert train["FLAGS"].n_train == 10000
    stage_module("probe", "--model=unused:unused", "--output_dir=unused")
    assert {name: type(flags.FLAGS[name].parser) for name in _PROBE_TRAINING_FLAGS} == kinds
    assert {name: flags.FLAGS[name].help for name in _PROBE_TRAINING_FLAGS} == helps
    assert (flags.FLAGS.n_train, flags.FLAGS.n_test, flags.FLAGS.max_steps,
            flags.FLAGS.epochs) == (1000, 2000, 30_000, 10)


_PROBE_TRAINING_FLAGS = ("dataset", "data_dir", "n_train", "n_test", "data_seed", "max_steps",
                         "max_wall_seconds", "max_dgrad", "learning_rate", "epochs",
                         "batch_size")


@pytest.mark.slow
def test_importing_pipelines_runs_nothing():
    # A binary quiets TensorFlow's start-up lines in its main path, not its package on import.
    code = ("import os, sys; import pipelines; assert 'tensorflow' not in sys.modules; "
            "import pipelines.common, pipelines.configs; "
            "assert 'TF_CPP_MIN_LOG_LEVEL' not in os.environ")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300, env={k: v for k, v in os.environ.items()
                                                         if k != "TF_CPP_MIN_LOG_LEVEL"})
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.parametrize("args,message", [
    (["--data_dir=/nonexistent/fashion"], "apt-get install dataset-fashion-mnist"),
    (["--alpha=0"], "alpha must be > 0"),
    (["--alpha=-1"], "alpha must be > 0"),
    (["--width=0"], "width must be >= 1"),
    (["--n_train=60000", "--n_test=20000"], "exceeds the 70000 pooled images"),
    (["--activation=gelu"], "unknown activation 'gelu'"),
    (["--integrator=heun"], "unknown integrator 'heun'"),
    (["--stiff_output_tol=0"], "stiff_output_tol must be > 0"),
    (["--alpha=1e4", "--width=100", "--dtype=float32", "--form=direct"], "use --dtype=float64"),
    (["--alpha=1e13", "--dtype=float32"], "use --dtype=float64"),
    (["--sqrt_h_alpha=1e30", "--dtype=float64", "--form=direct"],
     "float64 is the most precise dtype available"),
    (["--sqrt_h_alpha=1e200"], "float64 is the most precise dtype available"),
    (["--form=diagonal"], "unknown form 'diagonal': choose one of difference, direct"),
    (["--n_train=1"], "needs at least 10 training points (both classes); raise --n_train"),
    (["--architecture=cnn", "--bias_scale=0.1"], "bias_scale and readout_bias apply to fc only"),
    (["--architecture=cnn", "--pca=10"], "not images"),
    (["--tau=1"], "--tau and --tau_proportional_to_t are for --dynamics=momentum"),
    (["--dynamics=adam", "--n_train=20", "--n_test=10"], "batch_size=32 exceeds n_train=20"),
])
def test_bad_input_fails_in_one_line(args, message, tmp_path):
    if "--data_dir" not in args[0] and "pooled" in message and not os.path.isdir(
            "/usr/share/datasets/fashion-mnist") and not os.environ.get("CI"):
        pytest.skip("needs the Debian Fashion-MNIST package")
    out = tmp_path / "run"
    result = stage_in_process("train", f"--output_dir={out}", *args)
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: error:")]
    assert len(lines) == 1 and message in lines[0], result.stderr[-2000:]
    assert not out.exists()  # nothing half-written


def test_the_import_lines_tf_cpp_min_log_level_cannot_hide_are_dropped_and_no_others():
    # As TensorFlow 2.21 writes them where oneDNN's custom operations are on by default.
    noise = ("WARNING: All log messages before absl::InitializeLog() is called are written to "
             "STDERR\nI0000 00:00:1796039085.767001    8835 port.cc:153] oneDNN custom "
             "operations are on. You may see slightly different numerical results due to "
             "floating-point round-off errors from different computation orders. To turn them "
             "off, set the environment variable `TF_ENABLE_ONEDNN_OPTS=0`.\n")
    kept = ("E0000 00:00:1796039085.767001    8835 port.cc:153] oneDNN custom operations are "
            "on.\nWARNING: something else\nTraceback (most recent call last):\n")
    assert console.quiet_import_lines(noise + kept + noise) == kept
