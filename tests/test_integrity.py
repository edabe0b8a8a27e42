"""No silent corruption: one trainer per run, checkpoints that fall back, artifacts that prove
they are whole, tables rebuilt from rows, one-line errors, valid JSON everywhere."""
import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import tensorflow as tf

from lazy_feature.errors import RunDirError
from lazy_feature.run import artifact, lease, runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.study import ensemble, grid_point, sweep
from tests.helpers import (ROOT, StopAtStep, stage_in_process, synthetic_sweep,
                           write_class_template_mnist)

STEPS = 60


class Killed(Exception):
    """A kill in the middle of a run: only its periodic checkpoints remain."""


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "mnist"
    write_class_template_mnist(path, per_class_train=10, per_class_test=10)
    return str(path)


def _config(mnist, **settings):
    return TrainConfig(**dict(dict(dataset="mnist", data_dir=mnist, n_train=40, n_test=40,
                                   width=16, alpha=0.25, dtype="float64", integrator="euler",
                                   max_steps=STEPS), **settings))


@pytest.fixture(scope="module")
def whole(mnist, tmp_path_factory):
    """An uninterrupted run: (its directory, its metrics)."""
    run_dir = str(tmp_path_factory.mktemp("whole") / "run")
    return run_dir, runner.train(_config(mnist), run_dir)


def _same_run(run_dir, reference_dir):
    """The run in `run_dir` ended where the one in `reference_dir` did: the same metrics
    (wall clock aside) and the same test outputs, byte for byte."""
    def without_wall(metrics):
        files = {k: v for k, v in metrics[artifact.FILES].items() if k != artifact.DYNAMICS}
        return dict({k: v for k, v in metrics.items() if k != "wall_seconds"}, files=files)
    a, b = (artifact.read_json(os.path.join(d, artifact.METRICS)) for d in (run_dir,
                                                                             reference_dir))
    assert without_wall(a) == without_wall(b)
    steps = [r["step"] for r in artifact.read_run_jsonl(run_dir)]
    assert steps == sorted(set(steps)) and steps[0] == 0  # one log, whole, in order
    for name in (artifact.TEST_OUTPUTS, artifact.TEST_LABELS):
        assert open(os.path.join(run_dir, name), "rb").read() == open(
            os.path.join(reference_dir, name), "rb").read()


def _interrupted(mnist, run_dir, at_step=30):
    """A run killed at `at_step`, with a checkpoint at nearly every step before."""
    with pytest.raises(Killed):
        runner.train(_config(mnist), run_dir, checkpoint_seconds=0.0,
                     extra_callbacks=[StopAtStep(at_step, Killed())])
    assert not artifact.is_complete(run_dir)
    manager_dir = os.path.join(run_dir, artifact.CHECKPOINT)
    return sorted((os.path.join(manager_dir, n[:-len(".index")])
                   for n in os.listdir(manager_dir) if n.endswith(".index")),
                  key=lambda p: int(p.rsplit("-", 1)[1]))


def _cut(path):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:len(data) // 2])


def _data(prefix):
    return next(os.path.join(os.path.dirname(prefix), n)
                for n in os.listdir(os.path.dirname(prefix))
                if n.startswith(os.path.basename(prefix) + ".data"))


# -- checkpoints: fall back, then explain ------------------------------------------------------

@pytest.mark.parametrize("damage", ["index deleted", "data cut in half"])
def test_an_unreadable_last_checkpoint_resumes_from_the_one_before(mnist, whole, tmp_path,
                                                                   damage, caplog):
    run_dir = str(tmp_path / "run")
    *_, before, last = _interrupted(mnist, run_dir)
    if damage == "index deleted":
        os.remove(last + ".index")
    else:
        _cut(_data(last))
    runner.train(_config(mnist), run_dir)
    assert f"resuming from {before}" in caplog.text
    _same_run(run_dir, whole[0])


def test_a_garbled_checkpoint_index_resumes_from_the_checkpoints_on_disk(mnist, whole,
                                                                          tmp_path, caplog):
    run_dir = str(tmp_path / "run")
    _interrupted(mnist, run_dir)
    with open(os.path.join(run_dir, artifact.CHECKPOINT, "checkpoint"), "w") as f:
        f.write("model_checkpoint_path: \x00\x01 {{{ garbage")
    runner.train(_config(mnist), run_dir)
    assert "cannot be read: trying the checkpoints on disk" in caplog.text
    assert "starts over" not in caplog.text
    _same_run(run_dir, whole[0])


def test_with_no_readable_checkpoint_the_run_starts_over_saying_so(mnist, whole, tmp_path,
                                                                   caplog):
    run_dir = str(tmp_path / "run")
    for prefix in _interrupted(mnist, run_dir):
        _cut(_data(prefix))
    runner.train(_config(mnist), run_dir)
    assert "the run starts over" in caplog.text
    _same_run(run_dir, whole[0])


# -- artifacts that prove they are whole --------------------------------------------------------

def _copy(src, dst):
    tf.io.gfile.makedirs(dst)
    for name in os.listdir(src):
        path = os.path.join(src, name)
        if os.path.isdir(path):
            _copy(path, os.path.join(dst, name))
        else:
            tf.io.gfile.copy(path, os.path.join(dst, name))


def test_metrics_json_vouches_for_the_files_and_holds_valid_json(whole):
    run_dir, metrics = whole
    for name in artifact.VOUCHED:
        data = open(os.path.join(run_dir, name), "rb").read()
        assert metrics[artifact.FILES][name]["sha256"] == artifact.file_record(data, name)[
            "sha256"]
    assert metrics[artifact.FILES][artifact.TEST_OUTPUTS]["shape"] == [40]
    for name in (artifact.METRICS, artifact.CONFIG):  # no bare NaN or Infinity (strict JSON)
        json.loads(open(os.path.join(run_dir, name)).read(),
                   parse_constant=lambda c: pytest.fail(f"{name} holds {c}"))
    assert artifact.load_config(run_dir).max_time == float("inf")  # read back as a float


@pytest.mark.parametrize("name", [artifact.TEST_OUTPUTS, artifact.METRICS])
def test_a_damaged_output_is_found_and_the_run_finishes_again(whole, tmp_path, name, caplog):
    run_dir = str(tmp_path / "run")
    _copy(whole[0], run_dir)
    path = os.path.join(run_dir, name)
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY garbage" if name.endswith(".npy") else b'{"run_id": "ab')
    if name == artifact.TEST_OUTPUTS:  # every reader refuses it, naming it
        with pytest.raises(RunDirError, match=f"{path} is damaged .*checksum"):
            ensemble.load_member_outputs([run_dir])
        with pytest.raises(RunDirError, match=f"{path} is damaged"):
            runner.load_run(run_dir)
    runner.train(artifact.load_config(run_dir), run_dir)
    assert "the run finishes again from its final checkpoint" in caplog.text
    _same_run(run_dir, whole[0])


def test_a_damaged_dynamics_log_is_named_with_what_to_delete(whole, tmp_path):
    run_dir = str(tmp_path / "run")
    _copy(whole[0], run_dir)
    path = os.path.join(run_dir, artifact.DYNAMICS)
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text.replace('"step": 3,', '"step": 4,', 1))  # still valid JSON: only the sum sees it
    with pytest.raises(RunDirError, match=f"{path} is damaged .*delete {run_dir}"):
        runner.train(artifact.load_config(run_dir), run_dir)


def test_a_stage_names_a_damaged_file_in_one_line_and_exits_1(whole, tmp_path):
    run_dir = str(tmp_path / "run")
    _copy(whole[0], run_dir)
    with open(os.path.join(run_dir, artifact.TEST_OUTPUTS), "wb") as f:
        f.write(os.urandom(200))
    result = stage_in_process("ntk_eval", f"--run_dir={run_dir}")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"ntk_eval: error: {run_dir}/{artifact.TEST_OUTPUTS} is damaged (its checksum differs "
        f"from the one in {artifact.METRICS}): {artifact.REDO}"]
    assert not os.path.exists(os.path.join(run_dir, artifact.NTK))


def test_tensorflow_file_errors_are_one_line(whole, tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RunDirError, match=f"cannot write {blocker}/x.json .*permissions"):
        artifact.write_json(str(blocker / "x.json"), {})

    def denied(*args, **kwargs):  # what a directory made unwritable mid-run raises, for root too
        raise tf.errors.PermissionDeniedError(None, None, "/runs/x/test_outputs.npy; Permission "
                                              "denied\n  and a second line")
    monkeypatch.setattr(runner, "_finish", denied)
    config = artifact.load_config(whole[0])
    result = stage_in_process("train", f"--output_dir={tmp_path / 'run'}",
                              f"--data_dir={config.data_dir}", "--dataset=mnist",
                              "--n_train=40", "--n_test=40", "--width=16", "--alpha=0.25",
                              "--dtype=float64", "--integrator=euler", "--max_steps=5")
    assert result.returncode == 1 and "Traceback" not in result.stderr  # (status lines above)
    assert result.stderr.strip().splitlines()[-1] == (
        "train: error: /runs/x/test_outputs.npy; Permission denied: check the path's "
        "permissions and free space, then rerun to resume")


def test_no_test_set_gives_no_test_metrics_and_valid_json(mnist, tmp_path):
    run_dir = str(tmp_path / "run")
    metrics = runner.train(_config(mnist, n_test=0, max_steps=5), run_dir)
    assert metrics["test_error"] != metrics["test_error"]  # NaN in Python,
    stored = json.loads(open(os.path.join(run_dir, artifact.METRICS)).read(),
                        parse_constant=lambda c: pytest.fail(f"metrics.json holds {c}"))
    assert stored["test_error"] is None and stored["test_loss"] is None  # null on disk
    for line in open(os.path.join(run_dir, artifact.DYNAMICS)):
        json.loads(line, parse_constant=lambda c: pytest.fail(f"dynamics.jsonl holds {c}"))


# -- sweeps: damaged rows and tables are made again ----------------------------------------------

def _without_wall(table):
    return table.drop(columns=[c for c in table if "wall" in c]).reset_index(drop=True)


def test_a_sweep_rebuilds_damaged_rows_runs_and_tables(mnist, tmp_path, caplog):
    out = str(tmp_path / "sweep")
    grid = synthetic_sweep(mnist)
    runs, _ = sweep.run_sweep(grid, out, runner="inprocess")
    first, second = runs["run_id"]
    row = grid_point.row_path(out, first)
    with open(row, "w") as f:
        f.write('{"alpha": 0.')
    with open(os.path.join(out, grid_point.RUNS, second, artifact.TEST_OUTPUTS), "wb") as f:
        f.write(b"garbage")
    again, _ = sweep.run_sweep(grid, out, runner="inprocess")
    assert f"{row} is damaged" in caplog.text and "test_outputs.npy damaged" in caplog.text
    pd.testing.assert_frame_equal(_without_wall(again), _without_wall(runs))

    results = os.path.join(out, sweep.RESULTS)
    text = open(results).read()
    with open(results, "w") as f:
        f.write(text[:len(text) // 2])  # cut short: still a CSV, with fewer rows
    read, _ = sweep.read_tables(out)
    assert open(results).read() == text and "is damaged: it is made again" in caplog.text
    assert list(read["run_id"]) == list(runs["run_id"])


# -- one trainer per run --------------------------------------------------------------------

def test_a_file_lease_is_held_renewed_taken_over_once_expired_and_fenced(tmp_path):
    path = str(tmp_path / lease.LEASE)
    first = lease.FileLease(path, wait=False, on_wait=lambda: None, ttl=30, settle=0.01)
    with pytest.raises(lease.Busy):
        lease.FileLease(path, wait=False, on_wait=lambda: None, ttl=30, settle=0.01)
    first.check()
    with open(path, "w") as f:  # it expired (a paused worker), and another trainer took it
        json.dump(dict(token="other", expires=time.time() + 30), f)
    with pytest.raises(RunDirError, match="another trainer took over"):
        first.check()
    first.release()
    assert json.load(open(path))["token"] == "other"  # the new holder's lease stays
    with open(path, "w") as f:
        json.dump(dict(token="other", expires=time.time() - 1), f)  # expired
    taken = lease.FileLease(path, wait=False, on_wait=lambda: None, ttl=30, settle=0.01)
    taken.check()
    taken.release()
    assert not os.path.exists(path)


def test_the_lock_of_a_killed_trainer_is_gone_with_it_and_the_lease_is_reentrant(tmp_path):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(600)"),
        os.path.join(run_dir, lease.LEASE)], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(lease.Busy):
        with lease.held(run_dir, wait=False):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with lease.held(run_dir, wait=False), lease.held(run_dir, wait=False):  # re-entrant
        pass
    for directory in (run_dir, "ram://lease_test/run"):
        with lease.held(directory, file_lease=directory.startswith("ram")):
            assert os.path.join(directory, lease.LEASE) in lease._HELD.leases


def _files(run_dir):
    return {n for n in os.listdir(run_dir) if not n.startswith(".")}


@pytest.mark.slow
def test_two_trainers_of_one_run_publish_it_once_and_whole(mnist, whole, tmp_path):
    run_dir = str(tmp_path / "run")
    config = _config(mnist)
    args = [f"--output_dir={run_dir}", "--dataset=mnist", f"--data_dir={mnist}", "--n_train=40",
            "--n_test=40", "--width=16", "--alpha=0.25", "--dtype=float64",
            "--integrator=euler", f"--max_steps={STEPS}", "--verbosity=1"]
    both = [subprocess.Popen([sys.executable, "-m", "pipelines.train", *args], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outcomes = [p.communicate(timeout=300) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outcomes]
    assert artifact.load_config(run_dir).run_id() == config.run_id()
    _same_run(run_dir, whole[0])
    assert _files(run_dir) == _files(whole[0])


@pytest.mark.slow
def test_two_sweeps_on_one_directory_end_as_one_sweep(mnist, tmp_path):
    """An in-process sweep and a Beam sweep started together on one directory."""
    out, alone = str(tmp_path / "both"), str(tmp_path / "alone")
    grid = synthetic_sweep(mnist)
    sweep.run_sweep(grid, alone, runner="inprocess")
    reference, _ = sweep.read_tables(alone)
    script = ("import sys; from tests.helpers import synthetic_sweep; "
              "from lazy_feature.study import sweep; "
              "sweep.run_sweep(synthetic_sweep(sys.argv[1]), sys.argv[2], runner=sys.argv[3], "
              "workers=1)")
    both = [subprocess.Popen([sys.executable, "-c", script, mnist, out, name], cwd=ROOT,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for name in ("inprocess", "beam")]
    outcomes = [p.communicate(timeout=600) for p in both]
    assert [p.returncode for p in both] == [0, 0], [err[-2000:] for _, err in outcomes]
    runs, _ = sweep.read_tables(out)
    pd.testing.assert_frame_equal(_without_wall(runs).drop(columns="run_dir"),
                                  _without_wall(reference).drop(columns="run_dir"))
    for run_id in runs["run_id"]:
        steps = [r["step"] for r in artifact.read_run_jsonl(os.path.join(out, grid_point.RUNS,
                                                                          run_id))]
        assert steps == sorted(set(steps)) and steps[0] == 0
