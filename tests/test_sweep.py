"""Sweeps: the grid, run ids, a tiny Beam sweep killed and resumed, the stage binaries' errors."""
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from lazy_feature.run import artifact
from lazy_feature.run import callbacks
from lazy_feature.study import ensemble
from lazy_feature.study import fits
from lazy_feature.study import grid_point
from lazy_feature.study import report
from lazy_feature.run import runner
from lazy_feature.study import sweep
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask
from lazy_feature.errors import ConfigError, RunDirError
from pipelines import configs
from tests.helpers import run_stage, sphere_inputs, stage_in_process

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# 2 √h·α × 2 seeds: 4 runs, 2 ensembles of 2 members.
TINY_FLAGS = ["--config=tiny", "--widths=16", "--sqrt_h_alphas=0.1,10", "--seeds=0,1"]
TINY_RUNS = 4


def test_grid_points_and_run_ids():
    grid = sweep.SweepConfig(widths=(10, 40), sqrt_h_alphas=(1e-2, 1e4), alphas=(1.0,),
                             seeds=(0, 1))
    points = grid.configs()
    assert len(points) == 2 * 3 * 2 and len({c.run_id() for c in points}) == len(points)
    assert sorted(c.sqrt_h_alpha for c in points if c.width == 40) == pytest.approx(
        [1e-2, 1e-2, np.sqrt(40), np.sqrt(40), 1e4, 1e4])
    # Form per point: the direct form where α·h·ε32 is small enough, the difference form
    # beyond it (precision.py), both in float32.
    too_fine = [c.alpha * c.width * np.finfo(np.float32).eps > 1e-3 for c in points]
    assert any(too_fine) and not all(too_fine)
    assert all((c.form == "difference") == fine for c, fine in zip(points, too_fine))
    assert {c.dtype for c in points} == {"float32"}
    assert [c.run_id() for c in grid.configs()] == [c.run_id() for c in points]
    # Each point's integrator is the default's choice at its own √h·α, named.
    assert [c.integrator for c in sorted(points, key=lambda c: c.sqrt_h_alpha)
            if c.width == 40 and c.init_seed == 0] == ["bogacki_shampine_etdrk4"] * 2 + ["etdrk4"]
    with pytest.raises(ConfigError, match="empty grid"):
        dataclasses.replace(grid, seeds=()).configs()
    with pytest.raises(ConfigError, match="empty grid"):
        dataclasses.replace(grid, alphas=(), sqrt_h_alphas=()).configs()


def test_variants_repeat_the_grid_with_their_settings():
    grid = sweep.SweepConfig(widths=(10,), sqrt_h_alphas=(1.0,), seeds=(0, 1),
                             variants=({"centered": True}, {"centered": False, "depth": 2}))
    points = grid.configs()
    assert [(c.centered, c.depth, c.init_seed) for c in points] == [
        (True, 3, 0), (True, 3, 1), (False, 2, 0), (False, 2, 1)]
    again = sweep.SweepConfig.from_dict(json.loads(json.dumps(grid.to_dict())))
    assert [c.run_id() for c in again.configs()] == [c.run_id() for c in points]
    with pytest.raises(ConfigError, match="an adam run has none"):  # no reference flow
        dataclasses.replace(grid, fidelity=True, variants=({"dynamics": "adam"},)).configs()


@pytest.mark.slow
def test_run_id_is_stable_and_ignores_where_and_how_long():
    config = TrainConfig(width=40, alpha=0.5, n_train=100, n_test=100)
    same = TrainConfig(width=40, alpha=0.5, n_train=100, n_test=100, data_dir="/elsewhere",
                       max_time=10.0, max_steps=5, max_wall_seconds=1.0)
    assert same.run_id() == config.run_id()
    for change in (dict(alpha=0.25), dict(init_seed=1), dict(data_seed=1), dict(depth=2),
                   dict(loss_beta=10.0), dict(dtype="float64")):
        assert dataclasses.replace(config, **change).run_id() != config.run_id(), change
    # The id is a hash of the settings, not of this process: another interpreter agrees.
    code = ("from lazy_feature.run.config import TrainConfig;"
            "print(TrainConfig(width=40, alpha=0.5, n_train=100, n_test=100).run_id())")
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, timeout=120, check=True)
    assert other.stdout.strip() == config.run_id()


@pytest.mark.slow
def test_named_configs_are_valid_grids():
    for name, make in configs.CONFIGS.items():
        points = make().configs()
        assert points, name
        assert "python -m pipelines.sweep --config=" + name in make.__doc__, name
        if name not in ("quick", "tiny"):
            assert "Fig." in make.__doc__ or "Table" in make.__doc__, name
            assert "n = " in make.__doc__, name
    fig5 = configs.get("fig5").configs()
    levels = sorted({round(float(np.log10(c.sqrt_h_alpha)), 6) for c in fig5})
    assert (levels[0], levels[-1]) == (-4, 7)  # the paper's span (Fig. 5)
    alphas = sorted({c.alpha for c in fig5})
    assert np.log10(alphas[-1] / alphas[0]) >= 11  # α over 11 decades and more (Fig. 5 (a))
    assert {c.n_train for c in configs.get("fig3").configs()} == {10000}
    assert {c.n_train for c in configs.get("fig4a").configs()} == {1000}  # its caption
    assert {c.n_train for c in configs.get("fig4b").configs()} == {10000}
    claims = configs.get("claims").configs()
    assert {(c.n_train, c.width) for c in claims} == {(10000, 100)} and len(claims) == 10
    # quick: each regime's fit range holds three √h·α levels (fits.py).
    quick = configs.get("quick")
    levels = {fits.level(c.sqrt_h_alpha) for c in quick.configs()}  # as the fits see them
    assert sum(x <= quick.feature_range[1] for x in levels) >= 3
    assert sum(x >= quick.lazy_range[0] for x in levels) >= 3
    with pytest.raises(ConfigError, match="unknown config 'fig99'"):
        configs.get("fig99")


def _synthetic_task(n_train=40, n_test=60):
    x = sphere_inputs(n_train + n_test, 10, seed=7)
    y = np.sign(x[:, 0] + 0.5 * x[:, 1])
    return BinaryTask(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                      np.zeros(n_train, int), np.zeros(n_test, int))


@pytest.mark.slow
def test_ensemble_of_members(tmp_path):
    task = _synthetic_task()
    config = TrainConfig(n_train=40, n_test=60, width=20, alpha=0.3, dtype="float64")
    summary = ensemble.train_ensemble(config, [0, 1, 2], str(tmp_path), task=task)
    members = [os.path.join(tmp_path, "members", run_id) for run_id in summary["members"]]
    outputs = np.stack([np.load(os.path.join(d, artifact.TEST_OUTPUTS)) for d in members])
    mean = outputs.mean(axis=0)
    assert np.allclose(np.load(tmp_path / ensemble.MEAN_OUTPUTS), mean)
    assert summary["var_F"] == pytest.approx(np.sum((outputs - mean) ** 2) / (2 * 60), rel=1e-12)
    assert summary["var_F"] > 0  # members differ only by their init seed, and do differ
    assert summary["ensemble_test_error"] == pytest.approx(np.mean(mean * task.y_test <= 0))
    assert summary == artifact.read_json(os.path.join(tmp_path, ensemble.ENSEMBLE))
    with pytest.raises(ConfigError, match="distinct init seeds"):
        ensemble.train_ensemble(config, [0, 0], str(tmp_path / "again"), task=task)


def _rows(output_dir):
    rows_dir = os.path.join(output_dir, grid_point.ROWS)
    return {name: open(os.path.join(rows_dir, name)).read() for name in os.listdir(rows_dir)
            if name.endswith(".json")}


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_task")
def test_beam_sweep_killed_and_resumed(tmp_path):
    out = str(tmp_path / "sweep")
    args = TINY_FLAGS + [f"--output_dir={out}", "--runner=beam", "--workers=2"]
    process = subprocess.Popen([sys.executable, "-m", "pipelines.sweep", *args], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if os.path.isdir(os.path.join(out, grid_point.ROWS)) and _rows(out):
            break
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the driver and its Beam workers, at once
    process.wait()
    before = _rows(out)
    assert 1 <= len(before) < TINY_RUNS, "the sweep should be killed mid-way"
    assert not os.path.exists(os.path.join(out, sweep.RESULTS))

    # The resume runs on Beam too, in this process with one worker (Beam's in-memory mode).
    result = stage_in_process("sweep", *args[:-1], "--workers=1")
    assert result.returncode == 0, result.stderr[-3000:]
    # The console shows only the progress, counting the runs finished before the kill as done.
    estimate, *progress = result.stderr.splitlines()  # the resource estimate, then the progress
    assert estimate.startswith("estimated memory ") and "per trial step" in estimate
    done = f"{TINY_RUNS}/{TINY_RUNS} runs, 0 excluded"
    assert progress[0].startswith(f"{len(before)}/{TINY_RUNS} runs, 0 excluded, "), \
        result.stderr[-3000:]
    assert progress[-1].startswith(done + ", ") and "a2L=" not in result.stderr
    assert all(line.startswith(tuple(f"{n}/{TINY_RUNS} runs, " for n in range(TINY_RUNS + 1)))
               for line in progress)
    after = _rows(out)
    assert {k: after[k] for k in before} == before  # finished runs were not redone
    runs = pd.read_csv(os.path.join(out, sweep.RESULTS))
    assert len(runs) == TINY_RUNS and runs["run_id"].is_unique
    assert set(runs["status"]) == {"done"} and runs["converged"].all()
    assert {"test_error", "t_half", "ntk_drift_test", "frozen_init_test_error",
            "weight_drift", "sqrt_h_alpha"} <= set(runs.columns)
    ensembles = pd.read_csv(os.path.join(out, sweep.ENSEMBLES))
    assert len(ensembles) == 2 and (ensembles["n_members"] == 2).all()
    assert "report: " in result.stdout
    assert os.path.exists(os.path.join(out, "report", "summary.md"))

    # Every finished run has a row, and a rerun (any runner) runs nothing and changes nothing.
    rerun = stage_in_process("sweep", *args[:-2], "--runner=inprocess", "--noreport")
    assert rerun.returncode == 0 and done in rerun.stderr
    assert _rows(out) == after
    # Section 5: the kernel moves less the larger √h·α, here for every init seed.
    drift = runs.pivot(index="init_seed", columns="sqrt_h_alpha", values="ntk_drift_test")
    assert (drift.iloc[:, 0] > 2 * drift.iloc[:, 1]).all(), drift
    for run_dir in runs["run_dir"]:  # each run's status lines went to its train.log
        with open(os.path.join(out, run_dir, artifact.TRAIN_LOG)) as f:
            assert "a2L=" in f.read()
    report = stage_in_process("report", f"--sweep_dir={out}",
                              f"--output_dir={tmp_path / 'report'}")
    assert report.returncode == 0, report.stderr[-3000:]
    assert os.path.exists(tmp_path / "report" / "summary.md")


@pytest.mark.slow
def test_sweep_binary_errors(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    cases = [
        (["--config=fig99", f"--output_dir={tmp_path / 'a'}"], "unknown config 'fig99'"),
        (["--config=tiny", "--seeds=", f"--output_dir={tmp_path / 'b'}"], "empty grid"),
        (["--config=tiny", "--seeds=0,x", f"--output_dir={tmp_path / 'c'}"], "--seeds takes"),
        (["--config=tiny", f"--output_dir={blocker / 'sweep'}"], "cannot write to"),
        (["--config=tiny", "--architecture=cnn", "--pca=10", f"--output_dir={tmp_path / 'd'}"],
         "the cnn needs images"),
        (["--config=tiny", "--dynamics=adam", "--tau=1", f"--output_dir={tmp_path / 'f'}"],
         "are for --dynamics=momentum, not adam"),
        (["--config=tiny", "--integrator=rk4", f"--output_dir={tmp_path / 'g'}"],
         "unknown integrator 'rk4'"),
    ]
    # The real binaries (one subprocess each): exit status 1 and the error line; the other
    # sweep errors in this process, through the same stage main.
    for i, (args, message) in enumerate(cases):
        result = run_stage("sweep", *args, timeout=120) if i == 0 else stage_in_process(
            "sweep", *args)
        assert result.returncode == 1, (args, result.stderr[-2000:])
        assert "sweep: error:" in result.stderr and message in result.stderr, result.stderr
    assert not any((tmp_path / d).exists() for d in "dfg")
    result = stage_in_process("report", f"--sweep_dir={tmp_path / 'missing'}")
    assert result.returncode == 1 and "run the sweep stage first" in result.stderr
    result = stage_in_process("ensemble", "--seeds=3,3", f"--output_dir={tmp_path / 'e'}")
    assert result.returncode == 1 and "ensemble: error:" in result.stderr
    assert "distinct init seeds" in result.stderr and not (tmp_path / "e").exists()


def test_read_tables_refuses_an_empty_sweep(tmp_path):
    (tmp_path / sweep.RESULTS).write_text("")
    with pytest.raises(RunDirError, match="has no run yet"):
        sweep.read_tables(str(tmp_path))


def test_excluded_reasons():
    done = dict(status="done", converged=True, train_loss=0.01, test_loss=0.3)
    assert sweep.excluded_reason(done) == ""
    assert sweep.excluded_reason(dict(done, converged=False)) == "budget"
    # An Adam run that has done its epochs is finished (its length), one a budget stopped not.
    assert sweep.excluded_reason(dict(done, converged=False, stop_reason="max_epochs")) == ""
    assert sweep.excluded_reason(dict(done, converged=False, stop_reason="max_steps")) == "budget"
    assert sweep.excluded_reason(dict(done, converged=False, stop_reason="stalled")) == "stalled"
    assert sweep.excluded_reason(dict(done, test_loss=float("nan"))) == "nan"
    assert sweep.excluded_reason(dict(status="diverged", error="dt collapsed")) == "diverged"
    runs = sweep.mark_used(pd.DataFrame([done, dict(done, converged=False)]))
    assert runs["used"].tolist() == [True, False]
    assert runs["excluded_reason"].tolist() == ["", "budget"]


@pytest.mark.slow
def test_budget_stopped_runs_are_excluded_then_retried(tmp_path, monkeypatch):
    task = _synthetic_task()
    base = TrainConfig(n_train=40, n_test=60, max_steps=3, dtype="float64")
    grid = sweep.SweepConfig(base=base, widths=(16,), sqrt_h_alphas=(1.0,), seeds=(0, 1),
                             ntk=False)
    monkeypatch.setitem(grid_point.TASKS, (base.dataset, base.data_dir, 40, 60, base.data_seed,
                                       base.pca, base.pca_whiten, base.architecture), task)
    out = str(tmp_path / "sweep")
    runs, ensembles = sweep.run_sweep(grid, out, runner="inprocess")
    assert runs["excluded_reason"].tolist() == ["budget", "budget"] and ensembles.empty
    assert (runs["steps"] == 3).all()
    summary = report.write_report(runs, ensembles, str(tmp_path / "report"))[-1]
    assert "2 runs: 0 used, 2 excluded (2 budget)" in open(summary, encoding="utf-8").read()

    runs, ensembles = sweep.run_sweep(grid, out, runner="inprocess", retry_unconverged=1e6)
    assert runs["used"].all() and runs["max_steps"].tolist() == [3_000_000] * 2
    assert len(ensembles) == 1 and ensembles["n_members"].item() == 2
    # A retried run ends exactly where one run without a budget ends.
    config = grid.configs()[0]
    reference = runner.train(dataclasses.replace(config, max_steps=10**6), str(tmp_path / "ref"),
                             task=task)
    retried = runs[runs["run_id"] == config.run_id()].iloc[0]
    assert (retried["steps"], retried["t"]) == (reference["steps"], reference["t"])
    np.testing.assert_array_equal(
        np.load(os.path.join(retried["run_dir"], artifact.TEST_OUTPUTS)),
        np.load(tmp_path / "ref" / artifact.TEST_OUTPUTS))
    with pytest.raises(ConfigError, match="must be > 1"):
        sweep.run_sweep(grid, out, runner="inprocess", retry_unconverged=0.5)


@pytest.mark.slow
def test_a_stalled_run_is_excluded_and_not_retried(tmp_path, monkeypatch):
    # A stall (dt < STALL_RATIO·t for STALL_STEPS steps) made to happen at once: more budget
    # cannot finish such a run, so --retry_unconverged leaves it as it is.
    monkeypatch.setattr(callbacks.GradientFlowStopping, "STALL_RATIO", 1e9)
    monkeypatch.setattr(callbacks.GradientFlowStopping, "STALL_STEPS", 5)
    task = _synthetic_task()
    base = TrainConfig(n_train=40, n_test=60, dtype="float64")
    grid = sweep.SweepConfig(base=base, widths=(16,), sqrt_h_alphas=(1.0,), seeds=(0,),
                             ntk=False)
    monkeypatch.setitem(grid_point.TASKS, (base.dataset, base.data_dir, 40, 60, base.data_seed,
                                       base.pca, base.pca_whiten, base.architecture), task)
    out = str(tmp_path / "sweep")
    runs, _ = sweep.run_sweep(grid, out, runner="inprocess")
    assert runs["excluded_reason"].tolist() == ["stalled"] and runs["steps"].item() == 6
    runs, _ = sweep.run_sweep(grid, out, runner="inprocess", retry_unconverged=10)
    assert runs["excluded_reason"].tolist() == ["stalled"] and runs["steps"].item() == 6


@pytest.mark.slow
def test_an_adam_run_of_its_epochs_is_used_and_one_a_budget_stopped_resumes(tmp_path,
                                                                           monkeypatch, caplog):
    task = _synthetic_task(n_train=30, n_test=60)
    # 30 points in batches of 8: 3 steps an epoch; one epoch does not fit them.
    base = TrainConfig(n_train=30, n_test=60, dtype="float64", dynamics="adam", batch_size=8,
                       learning_rate=0.05)
    grid = sweep.SweepConfig(base=base, widths=(8,), sqrt_h_alphas=(0.5 * 8 ** 0.5,), ntk=False,
                             variants=({"epochs": 1.0}, {"epochs": 100.0, "max_steps": 2}))
    monkeypatch.setitem(grid_point.TASKS, (base.dataset, base.data_dir, 30, 60, base.data_seed,
                                       base.pca, base.pca_whiten, base.architecture), task)
    out = str(tmp_path / "sweep")
    runs = sweep.run_sweep(grid, out, runner="inprocess")[0].set_index("epochs")
    # A run of one epoch has done its length: finished and used, though margins remain < 1.
    assert (runs.loc[1.0, "stop_reason"], runs.loc[1.0, "used"]) == ("max_epochs", True)
    assert not runs.loc[1.0, "converged"] and (runs.loc[1.0, "steps"], runs.loc[1.0, "t"]) == (3, 1.0)
    stopped = runs.loc[100.0]
    assert (stopped["stop_reason"], stopped["excluded_reason"], stopped["steps"]) == (
        "max_steps", "budget", 2)
    with caplog.at_level("INFO", logger="lazy_feature"):
        retried = sweep.run_sweep(grid, out, runner="inprocess",
                                  retry_unconverged=1000)[0].set_index("epochs")
    assert f"resuming {os.path.join(out, stopped['run_dir'])} from step 2" in caplog.text
    assert retried.loc[100.0, "used"] and retried.loc[100.0, "stop_reason"] == "converged"
    assert 1 < retried.loc[100.0, "t"] < 100
    assert retried.loc[1.0].equals(runs.loc[1.0])  # a finished run is not retried


def test_beam_options_pick_the_local_runner_or_pass_through():
    local = sweep.pipeline_options("runs/x", workers=3).get_all_options()
    assert (local["runner"], local["direct_running_mode"], local["direct_num_workers"]) == (
        sweep.LOCAL_RUNNER, "multi_processing", 3)
    # A filesystem of one process (ram://) keeps the runs in this process.
    assert sweep.pipeline_options("ram://x", 2).get_all_options()[
        "direct_running_mode"] == "in_memory"
    # Options given override the local ones; a runner given replaces it, with its options.
    more = sweep.pipeline_options("runs/x", 2, ["--direct_num_workers=5"]).get_all_options()
    assert (more["runner"], more["direct_num_workers"]) == (sweep.LOCAL_RUNNER, 5)
    dataflow = sweep.pipeline_options("gs://b/x", 2, [
        "--runner=DataflowRunner", "--project=p", "--region=europe-west1",
        "--temp_location=gs://b/tmp", "--setup_file=./setup.py"]).get_all_options()
    assert (dataflow["runner"], dataflow["project"], dataflow["region"],
            dataflow["setup_file"]) == ("DataflowRunner", "p", "europe-west1", "./setup.py")
    assert dataflow["direct_running_mode"] != "multi_processing"  # nothing local added


@pytest.mark.slow
@pytest.mark.usefixtures("fashion_task")
def test_tiny_sweep_on_ram_filesystem(monkeypatch):
    # TensorFlow's in-memory filesystem lives in this process: the whole tiny sweep (train,
    # ntk_eval, ensembles, report) runs here on Beam's local runner, which must not try
    # Beam's Prism runner (a download) on the way.
    from apache_beam.runners.portability import prism_runner

    def no_prism(*args, **kwargs):
        raise AssertionError("the sweep tried Beam's Prism runner")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", no_prism)
    monkeypatch.setattr(prism_runner.PrismJobServer, "local_bin", no_prism)
    out = "ram://tiny_sweep"
    grid = dataclasses.replace(configs.get("tiny"), widths=(16,), sqrt_h_alphas=(10.0,))
    runs, ensembles = sweep.run_sweep(grid, out, runner="beam", workers=2)  # 2 of its 8 runs
    assert len(runs) == len(grid.configs()) == 2 and runs["used"].all()
    assert runs["ntk_drift_test"].notna().all() and len(ensembles) == 1
    paths = report.write_report(runs, ensembles, report.default_dir(out))
    assert all(path.startswith(out) and artifact.exists(path) for path in paths)
    assert artifact.read_text(paths[-1]).startswith("#")  # summary.md, read back from ram://
    tables = sweep.read_tables(out)
    assert len(tables[0]) == len(runs) and len(tables[1]) == 1
    run_dir = runs["run_dir"].iloc[0]
    assert artifact.listdir(artifact.join(run_dir, artifact.EVENTS))  # TensorBoard on ram:// too
    assert not [name for name in artifact.listdir(run_dir) if name.endswith(".tmp")]
    assert not os.path.exists("ram:") and not os.path.exists(os.path.join(ROOT, "ram:"))


@pytest.mark.slow
def test_appendix_observables_of_a_sweep(tmp_path, monkeypatch):
    """velocity, fidelity and gram_probe add ż per layer (Appendix D), the distance to the
    ε_∇/100 reference flow with its cost (Appendix G) and Fig. 8's Gram matrices to each run."""
    task = _synthetic_task()
    # A coarse ε_∇ = 1e-2 keeps the reference flow (ε_∇/100) short.
    base = TrainConfig(n_train=40, n_test=60, depth=2, dtype="float64", max_dgrad=1e-2)
    grid = sweep.SweepConfig(base=base, widths=(16,), sqrt_h_alphas=(100.0,), ntk=False,
                             velocity=True, velocity_max_test=30, fidelity=True, gram_probe=12)
    monkeypatch.setitem(grid_point.TASKS, (base.dataset, base.data_dir, 40, 60, base.data_seed,
                                       base.pca, base.pca_whiten, base.architecture), task)
    runs, _ = sweep.run_sweep(grid, str(tmp_path), runner="inprocess")
    row = runs.iloc[0]
    assert row["z_dot_n_probe"] == 30 and row["z_dot_1"] > 0 and row["z_dot_2"] > 0
    assert "z_dot_3" not in runs  # two hidden layers
    assert 0 < row["output_deviation"] < 1e-2
    assert row["reference_wall_seconds"] > 0
    assert row["reference_gradient_evaluations"] > row["gradient_evaluations"]
    assert np.load(os.path.join(row["run_dir"], "gram_init.npy")).shape == (12, 12)
    assert sweep.SweepConfig.from_dict(json.loads(json.dumps(grid.to_dict()))) == grid
    # A rerun of a run that lost its row (killed before writing it) reads every observable
    # back from the run directory: velocity.json untouched, nothing measured again.
    velocity_file = os.path.join(row["run_dir"], "velocity.json")
    written = (os.stat(velocity_file).st_mtime_ns, open(velocity_file).read())
    os.remove(grid_point.row_path(str(tmp_path), row["run_id"]))

    def measured_again(*args, **kwargs):
        raise AssertionError("an observable of the run was measured again")

    for module, name in ((grid_point.z_dot, "preactivation_velocity"),
                         (grid_point.flow_fidelity, "reference_flow"),
                         (grid_point.ntk_eval.ntk, "gram")):
        monkeypatch.setattr(module, name, measured_again)
    again = sweep.run_sweep(grid, str(tmp_path), runner="inprocess")[0].iloc[0]
    assert (os.stat(velocity_file).st_mtime_ns, open(velocity_file).read()) == written
    for key in ("z_dot_1", "z_dot_2", "output_deviation", "reference_wall_seconds"):
        assert again[key] == row[key], key
