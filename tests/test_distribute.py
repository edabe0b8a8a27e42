"""Strategies (tf.distribute), logical CPU devices, the TPU's float32 rule, in-graph stepping."""
import bisect
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from lazy_feature.run import artifact
from lazy_feature.run import callbacks
from lazy_feature.run import distribute
from lazy_feature.study import ensemble
from lazy_feature.study import ntk_eval
from lazy_feature.model import precision
from lazy_feature.run import runner
from lazy_feature.study import sweep
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import ConfigError
from tests.helpers import ROOT, run_stage, synthetic_task


@pytest.mark.slow
def test_mirrored_on_two_cpu_devices(tmp_path):
    # One process (the CPU must be split before TensorFlow starts): single device against
    # MirroredStrategy on 2 logical CPU devices, a mirrored run killed at step 40 and
    # resumed, the default integrator and every stiff one (RKC, etdrk4, the switching pairs;
    # etdrk4 killed and resumed too), ReLU, momentum and Adam, and ntk_eval's kernels on one
    # device and spread over the two.
    done = subprocess.run([sys.executable, "-m", "tests.mirrored_checks", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(done.stdout)
    assert r["replicas"] == 2
    assert "too late" in r["late_split_error"] and "\n" not in r["late_split_error"]
    single, mirrored, resumed = r["single"], r["mirrored"], r["resumed"]
    for other in (mirrored, resumed):
        assert (other["steps"], other["rejected_steps"], other["stop_reason"]) == (
            single["steps"], single["rejected_steps"], single["stop_reason"])
        assert other["t"] == pytest.approx(single["t"], rel=1e-9)
        np.testing.assert_allclose(other["test_outputs"], single["test_outputs"], rtol=0,
                                   atol=1e-8)
    # The checkpoint holds the flow's state mid-run, not the replicas' shards of the training
    # set (f(w0), f(w) and y: each replica recomputes its own on resume).
    assert 0 < r["saved_step"] <= 40
    assert any(name.startswith("model/stored_grad") for name in r["saved_names"])
    assert not any("cache" in name or "f_train" in name for name in r["saved_names"])
    # Resumed from that checkpoint: where the uninterrupted mirrored run ends, exactly.
    assert resumed["t"] == mirrored["t"] and resumed["test_outputs"] == mirrored["test_outputs"]
    # Every integrator takes on two replicas the steps it takes on one device (its loops of
    # evaluations run from the cross-replica context): the same integrator, steps, trial
    # steps and evaluations, the test outputs within 1e-8 relative (issue 28's bar).
    runs = [key[:-len("_single")] for key in r if key.endswith("_single")
            and (key.startswith("default_") or key.split("_")[0] in ("rkc", "etdrk4",
                                                                      "bogacki"))]
    assert len(runs) == 8
    for run in runs:
        single, mirrored = r[f"{run}_single"], r[f"{run}_mirrored"]
        for key in ("integrator", "steps", "rejected_steps", "stop_reason",
                    "gradient_evaluations"):
            assert mirrored[key] == single[key], (run, key)
        outputs = np.asarray(single["test_outputs"])
        np.testing.assert_allclose(mirrored["test_outputs"], outputs, rtol=0,
                                   atol=1e-8 * np.abs(outputs).max(), err_msg=run)
    assert r["default_1_single"]["integrator"] == "bogacki_shampine_etdrk4"
    assert r["default_10000_single"]["integrator"] == "etdrk4"
    # etdrk4 killed at step 20 on the replicas: its resumed run ends where the uninterrupted
    # one does, bit for bit.
    assert 0 < r["etdrk4_saved_step"] <= 20
    assert r["etdrk4_resumed"]["test_outputs"] == r["etdrk4_50_mirrored"]["test_outputs"]
    # Momentum, and Adam (its batches spanning both replicas' shards), resumed after a kill
    # mid-epoch on the two replicas: the one-device run's steps, to rounding.
    assert r["adam_saved_step"] == 9
    for dynamics in ("momentum", "adam"):
        single, mirrored = r[f"{dynamics}_single"], r[f"{dynamics}_mirrored"]
        for key in ("steps", "rejected_steps", "stop_reason", "gradient_evaluations"):
            assert mirrored[key] == single[key], (dynamics, key)
        assert mirrored["t"] == pytest.approx(single["t"], rel=1e-12)
        np.testing.assert_allclose(mirrored["test_outputs"], single["test_outputs"], rtol=0,
                                   atol=1e-9, err_msg=dynamics)
    assert r["adam_single"]["converged"] and r["momentum_single"]["steps"] == 40
    # ReLU: the same steps across jumps of ∇L, the half-step probe taken on the same trials.
    single, mirrored = r["relu_single"], r["relu_mirrored"]
    for key in ("steps", "rejected_steps", "stop_reason", "gradient_evaluations"):
        assert mirrored[key] == single[key], key
    trials = single["steps"] + single["rejected_steps"]
    assert trials + 1 < single["gradient_evaluations"] < 1 + 2 * trials  # probes taken
    np.testing.assert_allclose(mirrored["test_outputs"], single["test_outputs"], rtol=0,
                               atol=1e-9)
    one, spread = r["ntk_single"], r["ntk_single_ntk_mirrored"]
    for key, value in one.items():
        if key.startswith("gram_"):
            np.testing.assert_allclose(spread[key], value, rtol=1e-12, atol=0, err_msg=key)
        elif key.startswith("ntk_"):
            assert spread[key] == pytest.approx(value, rel=1e-9), key


class _Calls(callbacks.keras.callbacks.Callback):
    """Counts the calls of the train function (one per on_train_batch_end)."""
    calls = 0

    def on_train_batch_end(self, batch, logs=None):
        self.calls += 1


@pytest.mark.slow
def test_in_graph_steps_equal_one_step_per_call(tmp_path):
    task = synthetic_task(n_train=40, n_test=30)
    config = TrainConfig(n_train=40, n_test=30, width=16, alpha=0.5, dtype="float64",
                         max_steps=80)
    outputs, records, calls = {}, {}, {}
    for steps_per_call in (1, 1000):
        out = tmp_path / str(steps_per_call)
        counter = _Calls()
        metrics = runner.train(config, str(out), task=task, steps_per_call=steps_per_call,
                               extra_callbacks=[counter])
        calls[steps_per_call] = counter.calls
        outputs[steps_per_call] = (metrics, np.load(out / artifact.TEST_OUTPUTS))
        records[steps_per_call] = [{k: v for k, v in artifact.read_json_line(line).items()
                                    if k != "wall_seconds"} for line in open(out / artifact.DYNAMICS)]
    (one, F_one), (many, F_many) = outputs[1], outputs[1000]
    for key in ("steps", "rejected_steps", "t", "train_loss", "weight_drift", "stop_reason"):
        assert many[key] == one[key], key
    np.testing.assert_array_equal(F_many, F_one)
    assert records[1000] == records[1]  # every log-spaced record, the same numbers
    # One call per trial step against about one per record (20 per decade).
    assert calls[1] == one["steps"] + one["rejected_steps"]
    assert calls[1000] <= len(records[1]) + 1


def test_next_log_step_follows_the_schedule():
    scheduled = [s for s in range(1, 300_000) if callbacks.is_log_step(s)]
    for step in range(0, 200_000, 7):
        assert callbacks.next_log_step(step) == scheduled[bisect.bisect_right(scheduled, step)]


def test_bad_strategy_and_tpu_float64_are_refused_and_write_nothing(tmp_path):
    task = synthetic_task(n_train=40, n_test=30)
    config = TrainConfig(n_train=40, n_test=30, width=16, alpha=0.5)
    out = tmp_path / "run"
    with pytest.raises(ConfigError, match="unknown strategy 'gpu': choose one of default, "
                                          "mirrored, multi_worker, tpu"):
        runner.train(config, str(out), task=task, strategy="gpu")
    # α·h·ε32 > 1e-3: float32 in the difference form (the default), float64 in the direct one
    assert TrainConfig(n_train=40, n_test=30, width=100, alpha=1e3).dtype == "float32"
    lazy = TrainConfig(n_train=40, n_test=30, width=100, alpha=1e3, form="direct")
    assert lazy.dtype == "float64"
    largest = f"{precision.largest_alpha('float32', 100, 'direct'):.3g}"
    message = f"largest alpha --form=direct resolves in float32 at width 100 is {largest}"
    with pytest.raises(ConfigError, match=message):
        runner.train(lazy, str(out), task=task, strategy="tpu")
    with pytest.raises(ConfigError, match="leave --dtype unset: float32 resolves any alpha"):
        runner.train(dataclasses.replace(lazy, form="difference"), str(out), task=task,
                     strategy="tpu")
    with pytest.raises(ConfigError, match=message):
        ensemble.train_ensemble(lazy, [0, 1], str(out), task=task, strategy="tpu")
    grid = sweep.SweepConfig(base=TrainConfig(n_train=40, n_test=30), widths=(100,),
                             alphas=(1e3,), form="direct")
    with pytest.raises(ConfigError, match=message):
        sweep.run_sweep(grid, str(out), runner="inprocess", strategy="tpu")
    with pytest.raises(ConfigError, match="unknown strategy"):
        sweep.run_sweep(grid, str(out), strategy="cluster")
    with pytest.raises(ConfigError, match="does not split evenly over the 2 replicas"):
        runner.train(TrainConfig(n_train=41, n_test=30, width=16, alpha=0.5), str(out),
                     task=synthetic_task(n_train=41, n_test=30),
                     strategy=_FakeReplicas(2))
    # The default lazy run is float32, which a TPU takes; on a machine without one it stops
    # in one line, before anything is written.
    with pytest.raises(ConfigError, match="--strategy=tpu found no TPU .*give --tpu=NAME"):
        runner.train(dataclasses.replace(lazy, form=None, dtype=None), str(out), task=task,
                     strategy="tpu")
    assert not out.exists()


class _FakeReplicas(distribute.tf.distribute.MirroredStrategy):
    """A one-device MirroredStrategy that reports `replicas` replicas (for the check of n)."""

    def __init__(self, replicas):
        super().__init__(devices=["/cpu:0"])
        self._replicas = replicas

    @property
    def num_replicas_in_sync(self):
        return self._replicas


def test_adam_refuses_several_tpu_replicas_and_writes_nothing(tmp_path, monkeypatch):
    # A fake TPUStrategy of 2 replicas (no TPU here): refused when the model is made.
    monkeypatch.setattr(distribute.tf.distribute, "TPUStrategy", _FakeReplicas)
    config = TrainConfig(n_train=40, n_test=30, width=16, alpha=0.5, dynamics="adam",
                         batch_size=8)
    assert config.dtype == "float32"  # no float64 refusal first
    with pytest.raises(ConfigError, match="adam's per-replica batches have data-dependent "
                                          "sizes, which TPUs cannot compile"):
        runner.train(config, str(tmp_path / "run"), task=synthetic_task(n_train=40, n_test=30),
                     strategy=_FakeReplicas(2))
    assert not (tmp_path / "run").exists()


def test_ntk_eval_refuses_a_float64_run_on_tpu(tmp_path):
    config = TrainConfig(n_train=40, n_test=30, width=100, alpha=1e3, form="direct")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    artifact.write_json(str(run_dir / artifact.CONFIG), config.to_dict())
    with pytest.raises(ConfigError, match="TPUs have no float64"):
        ntk_eval.evaluate(str(run_dir), strategy="tpu")
    assert os.listdir(run_dir) == [artifact.CONFIG]


@pytest.mark.parametrize("tf_config, error", [
    (None, "needs the TF_CONFIG environment variable"),
    ("{cluster", "TF_CONFIG is not valid JSON"),
    ('{"cluster": {"worker": ["a:1"]}}', 'TF_CONFIG needs "cluster"'),
    ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
     "is not in its cluster"),
])
def test_multi_worker_reads_tf_config(monkeypatch, tf_config, error):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ConfigError, match=error) as caught:
        distribute.make("multi_worker")
    assert "\n" not in str(caught.value)


@pytest.mark.slow
def test_train_stage_refuses_tpu_float64_in_one_line(tmp_path):
    out = tmp_path / "run"
    done = run_stage("train", "--strategy=tpu", "--width=100", "--alpha=1e3", "--n_train=40",
                     "--n_test=10", "--form=direct", f"--output_dir={out}")
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: error: TPUs have no float64")
    assert "largest alpha --form=direct resolves in float32 at width 100 is 83.9" in lines[0]
    assert not out.exists()
