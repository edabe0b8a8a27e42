"""The run artifact's storage: whole files, the one checkpoint, kill -9 at any moment, bad paths."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lazy_feature.run import artifact
from lazy_feature.run import runner
from lazy_feature.study import sweep
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import RunDirError
from pipelines import configs
from tests.helpers import ROOT, run_stage, write_class_template_mnist


def test_files_are_written_whole_on_any_filesystem(tmp_path):
    for directory in (str(tmp_path), "ram://artifact_test"):
        path = artifact.join(directory, "a", "x.npy")
        artifact.makedirs(artifact.join(directory, "a"))
        artifact.write_npy(path, np.arange(3.0))
        artifact.write_npy(path, np.arange(4.0))  # replaced whole
        np.testing.assert_array_equal(artifact.read_npy(path), np.arange(4.0))
        assert artifact.listdir(artifact.join(directory, "a")) == ["x.npy"]  # no temporary left
        with pytest.raises(TypeError):  # a failed write leaves nothing behind either
            artifact.write_bytes(artifact.join(directory, "a", "y.txt"), 5)
        assert artifact.listdir(artifact.join(directory, "a")) == ["x.npy"]


def test_restore_log_keeps_the_checkpointed_records(tmp_path):
    log = tmp_path / artifact.PARTIAL_DYNAMICS
    log.write_text('{"step": 0}\n{"step": 1}\n{"step": 2}\n{"st')  # killed mid-line
    artifact.restore_log(str(tmp_path), 2)
    assert log.read_text() == '{"step": 0}\n{"step": 1}\n'
    with pytest.raises(RunDirError, match="has 2 records, its checkpoint counts 3"):
        artifact.restore_log(str(tmp_path), 3)


def _train(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "pipelines.train", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kwargs)


def _records(run_dir):
    path = os.path.join(run_dir, artifact.PARTIAL_DYNAMICS)
    return open(path).read().count("\n") if os.path.exists(path) else 0


def _kill_at(process, run_dir, records, timeout=240):
    """kill -9 `process` once the run's dynamics log holds `records` records."""
    deadline = time.time() + timeout
    while _records(run_dir) < records and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, "the run ended before its kill"


def _without_wall(record):
    """A metrics record without what the wall clock changes: its seconds, and the checksum of
    dynamics.jsonl (whose records carry wall times)."""
    files = {k: v for k, v in record.get(artifact.FILES, {}).items() if k != artifact.DYNAMICS}
    return dict({k: v for k, v in record.items() if k != "wall_seconds"}, files=files)


@pytest.mark.slow
def test_kill_9_at_two_moments_then_rerun_ends_as_an_uninterrupted_run(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=10, per_class_test=10)
    config = TrainConfig(dataset="mnist", data_dir=str(tmp_path / "mnist"), n_train=80,
                         n_test=60, width=16, alpha=0.25, dtype="float64", max_steps=150,
                         integrator="euler")
    cut = str(tmp_path / "cut")
    args = [f"--output_dir={cut}", "--dataset=mnist", f"--data_dir={tmp_path / 'mnist'}",
            "--n_train=80", "--n_test=60", "--width=16", "--sqrt_h_alpha=1",
            "--dtype=float64", "--max_steps=150", "--checkpoint_seconds=0.05",
            "--integrator=euler"]
    # Killed early (about step 12), then again after a resume (about step 40), at moments
    # between or during checkpoint saves and log appends, wherever the SIGKILL lands.
    _kill_at(_train(args), cut, 12)
    assert not artifact.is_complete(cut)
    _kill_at(_train(args), cut, 24)
    assert not artifact.is_complete(cut)
    assert artifact.read_json(os.path.join(cut, artifact.CONFIG))["run_id"] == config.run_id()
    resumed = runner.train(config, cut, checkpoint_seconds=0.05)
    reference = runner.train(config, str(tmp_path / "whole"))
    assert reference["steps"] == 150 and _records(cut) == 0  # both kills came mid-run
    assert _without_wall(resumed) == _without_wall(reference)
    assert (open(os.path.join(cut, artifact.TEST_OUTPUTS), "rb").read()
            == open(tmp_path / "whole" / artifact.TEST_OUTPUTS, "rb").read())
    logs = [[_without_wall(json.loads(line)) for line in open(os.path.join(d, artifact.DYNAMICS))]
            for d in (cut, tmp_path / "whole")]
    assert logs[0] == logs[1]  # each record once, in order, as if never interrupted
    assert not [n for n in os.listdir(cut) if n.endswith(".tmp") or "partial" in n]


@pytest.mark.slow
def test_unreachable_output_path_is_one_line_and_writes_nothing(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=3, per_class_test=1)
    result = run_stage("train", "--output_dir=nosuchscheme://bucket/run", "--dataset=mnist",
                       f"--data_dir={tmp_path / 'mnist'}", "--n_train=20", "--n_test=10",
                       "--width=8", timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.startswith("train: ")]
    assert len(lines) == 1 and "cannot reach nosuchscheme://bucket/run" in lines[0], lines
    assert "Traceback" not in result.stderr
    assert not os.path.exists(os.path.join(ROOT, "nosuchscheme:"))
    # A directory under a file (the sweep binary's case is in test_sweep), in-process.
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = TrainConfig(dataset="mnist", data_dir=str(tmp_path / "mnist"), n_train=20,
                         n_test=10, width=8)
    with pytest.raises(RunDirError, match="cannot write to .*: choose a writable"):
        runner.train(config, str(blocker / "run"))
    with pytest.raises(RunDirError, match="cannot write to nosuchscheme://"):
        sweep.run_sweep(configs.get("tiny"), "nosuchscheme://bucket/sweep")
    assert sorted(os.listdir(tmp_path)) == ["file", "mnist"] and blocker.read_text() == ""


def test_a_run_written_before_the_checkpoint_format_is_refused_in_one_line(tmp_path):
    # lazy_feature 0.2 left weights.weights.h5 and checkpoint.json beside metrics.json.
    run_dir = str(tmp_path)
    labels = np.array([1.0, -1.0])
    artifact.write_npy(artifact.join(run_dir, artifact.TEST_LABELS), labels)
    artifact.write_json(artifact.join(run_dir, artifact.METRICS), {"steps": 1})
    (tmp_path / "weights.weights.h5").write_bytes(b"")
    with pytest.raises(RunDirError, match=r"written by lazy_feature < 0.3 .*rerun it$"):
        artifact.check_complete(run_dir, labels)

