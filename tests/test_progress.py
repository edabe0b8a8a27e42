"""The progress display of many runs, and the quiet console of the sweep and ensemble binaries."""
import io
import json
import os
import re
import subprocess
import sys

import pytest

from lazy_feature.run import artifact
from lazy_feature.run import progress
from lazy_feature.study import grid_point
from pipelines import configs
from tests.helpers import stage_in_process, synthetic_sweep, write_mnist_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# A status line of the plain (not a terminal) display.
PLAIN = re.compile(r"\d+/\d+ (runs|members), \d+ (failed|excluded|unconverged), [\d:]+ elapsed"
                   r"(, ETA ([\d:]+|\?))?")


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _finish(rows_dir, name, status="done"):
    artifact.write_json(os.path.join(rows_dir, f"{name}.json"), {"status": status})


def _display(tmp_path, stream, clock, names="abcd"):
    """A Display of runs a..d whose rows go to tmp_path; its thread never fires on its own."""
    paths = [str(tmp_path / f"{name}.json") for name in names]
    return progress.Display(progress.Counter(paths), stream, every=60.0, poll=3600.0, clock=clock)


def test_counter_counts_earlier_rows_and_failures(tmp_path):
    _finish(tmp_path, "a")  # rows of a killed sweep, one of them a failure
    _finish(tmp_path, "b", "diverged")
    (tmp_path / ".c.json.123.tmp").write_text("{")  # a row being written is not a row
    counter = progress.Counter([str(tmp_path / f"{name}.json") for name in "abcd"])
    assert counter.total == 4 and counter.poll() == (2, 1)
    _finish(tmp_path, "c")
    assert counter.poll() == (3, 1)


def test_plain_display_writes_lines_on_change_and_periodically(tmp_path):
    clock, stream = Clock(), io.StringIO()
    _finish(tmp_path, "a")  # finished before a resume: done from the start, not in the rate
    with _display(tmp_path, stream, clock) as display:
        clock.now = 30.0
        display.update()  # nothing new, not yet due
        clock.now = 61.0
        display.update()
        clock.now = 70.0
        _finish(tmp_path, "b", "diverged")
        display.update()
        _finish(tmp_path, "c")
        _finish(tmp_path, "d")
        clock.now = 100.0
    assert stream.getvalue().splitlines() == [
        "1/4 runs, 0 failed, 0:00 elapsed, ETA ?",
        "1/4 runs, 0 failed, 1:01 elapsed, ETA ?",
        "2/4 runs, 1 failed, 1:10 elapsed, ETA 2:20",  # 2 left at 70 s per new run
        "4/4 runs, 1 failed, 1:40 elapsed",
    ]


def test_terminal_display_redraws_one_line(tmp_path):
    clock, stream = Clock(), Terminal()
    with _display(tmp_path, stream, clock, names="ab") as display:
        clock.now = 1.0
        _finish(tmp_path, "a")
        display.update()
        _finish(tmp_path, "b")
    text = stream.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n") and text.count("\r") == 3
    first, last = text.split("\r")[1].rstrip(), text.split("\r")[-1].rstrip()
    assert first == "[" + "." * 20 + "] 0/2 runs, 0 failed, 0:00 elapsed, ETA ?"
    assert last == "[" + "#" * 20 + "] 2/2 runs, 0 failed, 0:01 elapsed"


def test_no_stream_shows_nothing(tmp_path):
    with progress.shown([str(tmp_path / "a.json")], None):
        _finish(tmp_path, "a")


# The sweep binary on the "synthetic" config. (The Beam runner's console is checked in
# test_sweep.py.)
_SWEEP = """
import runpy, sys
from pipelines import console
console.quiet_tensorflow()  # as the binary does first, before the imports below load TensorFlow
from pipelines import configs
from tests.helpers import synthetic_sweep
data_dir = sys.argv.pop(1)
configs.CONFIGS["synthetic"] = lambda: synthetic_sweep(data_dir)
runpy.run_module("pipelines.sweep", run_name="__main__")
"""


def _run(args, timeout=600):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def _train_logs_have_steps(runs_dir):
    run_dirs = [os.path.join(runs_dir, name) for name in os.listdir(runs_dir)]
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, artifact.TRAIN_LOG)) as f:
            log = f.read()
        assert "step 0 " in log and "a2L=" in log, log
    return len(run_dirs)


@pytest.mark.slow
def test_sweep_console_is_one_progress_display(tmp_path, monkeypatch):
    write_mnist_dir(tmp_path / "mnist")
    out = tmp_path / "sweep"
    args = ["-c", _SWEEP, str(tmp_path / "mnist"), "--config=synthetic", f"--output_dir={out}",
            "--noreport", "--runner=inprocess"]
    result = _run(args)
    assert result.returncode == 0, result.stderr[-3000:]
    estimate, *lines = result.stderr.splitlines()  # the resource estimate comes first
    assert estimate.startswith("estimated memory ") and "per trial step" in estimate
    assert all(PLAIN.fullmatch(line) for line in lines), result.stderr[-3000:]
    assert lines[0].startswith("0/2 runs,") and lines[-1].startswith("2/2 runs, 0 excluded,")
    assert _train_logs_have_steps(out / grid_point.RUNS) == 2

    # --verbosity=1 brings the logs back; nothing is left to run (in this process: the
    # binary's own console is the run above).
    monkeypatch.setitem(configs.CONFIGS, "synthetic",
                        lambda: synthetic_sweep(str(tmp_path / "mnist")))
    again = stage_in_process("sweep", *args[3:], "--verbosity=1")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "2 runs, 2 finished, 0 to run" in again.stderr
    assert "\n2/2 runs, 0 excluded, 0:00 elapsed\n" in again.stderr


@pytest.mark.slow
def test_ensemble_console_is_one_progress_display(tmp_path):
    write_mnist_dir(tmp_path / "mnist")
    out = tmp_path / "ensemble"
    result = _run(["-m", "pipelines.ensemble", "--dataset=mnist",
                   f"--data_dir={tmp_path / 'mnist'}", "--n_train=40", "--n_test=40",
                   "--width=16", "--sqrt_h_alpha=10", "--seeds=0,1", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stderr.splitlines()
    assert all(PLAIN.fullmatch(line) for line in lines), result.stderr[-3000:]
    assert lines[-1].startswith("2/2 members, 0 unconverged,")
    assert json.loads(result.stdout)["n_members"] == 2
    assert _train_logs_have_steps(out / "members") == 2
