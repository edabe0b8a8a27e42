"""Adam on mini-batches (lazy_feature.flow.adam, Section 7, Table 1): convergence at the paper's
criterion, exact resume, the batch order, the learning-rate rule across α, the train stage."""
import json

import numpy as np
import pytest

from lazy_feature.flow import adam
from lazy_feature.run import artifact
from lazy_feature.study import ensemble
from lazy_feature.study import fidelity
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import ConfigError
from tests.helpers import (killed_at, stage_in_process, synthetic_task,
                           write_class_template_mnist)

# 30 points in batches of 8: 3 steps per epoch, 6 points sitting each epoch out.
_SETUP = dict(n_train=30, n_test=40, width=8, alpha=0.5, dtype="float64", dynamics="adam",
              batch_size=8, learning_rate=0.05)


@pytest.mark.slow
def test_adam_converges_at_an_epoch_end_and_resumes_exactly_after_a_kill_mid_epoch(tmp_path):
    task = synthetic_task(n_train=30, n_test=40)
    config = TrainConfig(**_SETUP)
    whole = runner.train(config, str(tmp_path / "whole"), task=task)
    per_epoch = 3
    assert whole["converged"] and whole["stop_reason"] == "converged"
    assert whole["steps"] % per_epoch == 0 and whole["t"] == whole["steps"] / per_epoch
    assert whole["rejected_steps"] == 0 and whole["train_error"] == 0.0
    # The criterion holds on the whole training set, recomputed from the saved weights.
    model = runner.load_run(str(tmp_path / "whole"), task=task).model
    assert np.min(model.predict(task.x_train, verbose=0) * task.y_train) > 1.0
    records = artifact.read_jsonl(str(tmp_path / "whole" / artifact.DYNAMICS))
    assert records[-1]["unfitted"] == 0 and records[-1]["step"] == whole["steps"]
    assert records[-1]["rescaled_loss"] < records[0]["rescaled_loss"] / 10
    # Killed at step 10, a third into epoch 4: the checkpoint of step 9 holds m, v and s.
    cut = str(tmp_path / "cut")
    assert killed_at(10, config, cut, task) == 9
    resumed = runner.train(config, cut, task=task)
    for key in ("steps", "t", "gradient_evaluations", "weight_drift", "test_error"):
        assert resumed[key] == whole[key], key
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / artifact.TEST_OUTPUTS),
                                  np.load(tmp_path / "whole" / artifact.TEST_OUTPUTS))


def test_an_adam_run_has_no_reference_flow():
    with pytest.raises(ConfigError, match="no reference flow"):
        fidelity.reference_config(TrainConfig(**_SETUP))


def test_batch_order_is_a_function_of_seed_and_epoch():
    settings = adam.Adam(learning_rate=1e-3, batch_size=4, seed=7)
    epoch = [adam.batch_indices(settings, 10, step).numpy() for step in range(2)]
    visited = np.concatenate(epoch)
    assert len(set(visited)) == 8 and set(visited) <= set(range(10))  # 2 points sit out
    again = [adam.batch_indices(settings, 10, step).numpy() for step in range(2)]
    np.testing.assert_array_equal(np.concatenate(again), visited)
    next_epoch = np.concatenate([adam.batch_indices(settings, 10, s).numpy() for s in (2, 3)])
    other_seed = adam.Adam(learning_rate=1e-3, batch_size=4, seed=8)
    assert not np.array_equal(next_epoch, visited)
    assert not np.array_equal(np.concatenate(
        [adam.batch_indices(other_seed, 10, s).numpy() for s in (0, 1)]), visited)


def _first_step_change(alpha, task):
    """max |ΔF| over the training set after one Adam step at α (default learning rate)."""
    config = TrainConfig(n_train=30, n_test=40, width=8, alpha=alpha, dtype="float64",
                         dynamics="adam", batch_size=30)
    model = runner.build_model(config, task.d, steps_per_call=1)
    model.start(task.x_train, task.y_train)
    model.train_step(model._training_set)  # pylint: disable=protected-access
    return np.max(np.abs(model.predict(task.x_train, verbose=0)))


def test_default_learning_rate_moves_F_alike_at_every_alpha_above_1():
    assert TrainConfig(dynamics="adam", alpha=1e4).adam().learning_rate == pytest.approx(1e-7)
    assert TrainConfig(dynamics="adam", alpha=0.01).adam().learning_rate == 1e-3
    assert TrainConfig(dynamics="adam", alpha=1e4, learning_rate=0.5).adam().learning_rate == 0.5
    # The first Adam step is Δw = −lr·sign(∇L) (m̂/√v̂ = ±1), whose sign does not depend on α
    # (F = 0 at w0): F moves by α·lr·|∇f·sign| = lr0·|∇f·sign| at every α ≥ 1 (to O(lr)),
    # and by α·lr0·|∇f·sign| below.
    task = synthetic_task(n_train=30, n_test=40)
    change = {alpha: _first_step_change(alpha, task) for alpha in (0.1, 1.0, 1e3)}
    assert change[1e3] == pytest.approx(change[1.0], rel=1e-2)
    assert change[0.1] == pytest.approx(0.1 * change[1.0], rel=1e-2)


def test_train_stage_trains_by_adam_and_stops_after_its_epochs(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", per_class_train=6, per_class_test=4)
    common = ["--dataset=mnist", f"--data_dir={tmp_path / 'mnist'}", "--n_train=60",
              "--n_test=40", "--width=16", "--sqrt_h_alpha=2", "--dynamics=adam",
              "--batch_size=10", "--learning_rate=0.01"]
    out = tmp_path / "run"
    result = stage_in_process("train", f"--output_dir={out}", *common)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / artifact.METRICS).read_text())
    assert metrics["converged"] and metrics["steps"] % 6 == 0 and metrics["test_error"] < 0.2
    assert metrics["dynamics"] == "adam" and metrics["learning_rate"] == 0.01
    config = json.loads((out / artifact.CONFIG).read_text())
    assert config["dynamics"] == "adam" and config["batch_size"] == 10
    assert "a2L=" in result.stderr  # the status line
    budget = tmp_path / "budget"
    result = stage_in_process("train", f"--output_dir={budget}", "--epochs=1", *common)
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((budget / artifact.METRICS).read_text())
    assert not metrics["converged"] and metrics["stop_reason"] == "max_epochs"
    assert metrics["steps"] == 6 and metrics["t"] == 1.0
    # --epochs is the run's length, so it is another run.
    assert config["run_id"] != json.loads((budget / artifact.CONFIG).read_text())["run_id"]


def test_an_ensemble_of_adam_runs_differs_by_init_and_batch_order(tmp_path):
    task = synthetic_task(n_train=30, n_test=40)
    summary = ensemble.train_ensemble(TrainConfig(**_SETUP), [0, 1], str(tmp_path), task=task)
    members = [runner.load_run(str(tmp_path / "members" / run_id), task=task)
               for run_id in summary["members"]]
    assert [m.model.dynamics.adam.seed for m in members] == [0, 1]  # each its own batch order
    assert all(artifact.read_json(str(tmp_path / "members" / run_id / artifact.METRICS))[
        "converged"] for run_id in summary["members"])
    assert summary["var_F"] > 0
