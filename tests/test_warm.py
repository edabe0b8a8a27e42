"""A process's warm models (`runner.warm_model`): a later run of the same settings but the
seed takes the model of an earlier one, without tracing its steps again, and gives what a
model built for it gives, bit for bit."""
import concurrent.futures
import threading

import keras
import numpy as np
import pytest

from lazy_feature.model import stepping
from lazy_feature.run import artifact, runner
from lazy_feature.run.config import TrainConfig
from tests.helpers import killed_at, synthetic_task

TASK = synthetic_task(n_train=40, n_test=60)


def _outputs(run_dir):
    return artifact.read_npy(f"{run_dir}/{artifact.TEST_OUTPUTS}")


@pytest.mark.slow
@pytest.mark.parametrize("alpha", [1.0, 1e4])  # the direct form; the difference form
def test_each_seed_on_a_warm_model_runs_as_on_its_own_model(tmp_path, monkeypatch, alpha):
    traced = []
    in_graph_calls = stepping.in_graph_calls
    monkeypatch.setattr(stepping, "in_graph_calls",
                        lambda *args: traced.append(1) or in_graph_calls(*args))
    configs = [TrainConfig(n_train=40, n_test=60, width=8, alpha=alpha, init_seed=seed,
                           max_dgrad=5e-2) for seed in (0, 1, 2)]
    warm = [runner.train(c, str(tmp_path / f"warm{c.init_seed}"), task=TASK) for c in configs]
    assert len(traced) == 1  # one model's steps, traced once, ran the three seeds
    assert warm[0]["t"] != warm[1]["t"]  # the seeds' runs differ: each took its own w0
    # The last seed, on a model of its own (the first seed's run was on one).
    runner.clear_warm_models()
    cold = runner.train(configs[2], str(tmp_path / "cold"), task=TASK)
    assert len(traced) == 2
    for key in ("steps", "gradient_evaluations", "t", "weight_drift", "output_norm"):
        assert warm[2][key] == cold[key], key
    np.testing.assert_array_equal(_outputs(tmp_path / "warm2"), _outputs(tmp_path / "cold"))


@pytest.mark.slow
def test_a_warm_model_resumes_a_killed_run_exactly_and_other_settings_get_their_own(tmp_path):
    config = TrainConfig(n_train=40, n_test=60, width=8, alpha=1e4, max_dgrad=5e-2)
    whole = runner.train(config, str(tmp_path / "whole"), task=TASK)
    cut = str(tmp_path / "cut")
    assert killed_at(15, config, cut, TASK) == 14  # on the warm model of `whole`
    resumed = runner.train(config, cut, task=TASK)  # a killed run's model is not kept
    assert resumed["gradient_evaluations"] == whole["gradient_evaluations"]
    np.testing.assert_array_equal(_outputs(cut), _outputs(tmp_path / "whole"))
    wider = TrainConfig(n_train=40, n_test=60, width=9, alpha=1e4, max_dgrad=5e-2)
    runner.train(wider, str(tmp_path / "wider"), task=TASK)
    assert len(runner._warm) == 2  # pylint: disable=protected-access
    runner.train(TrainConfig(n_train=40, n_test=60, width=10, max_dgrad=5e-2),
                 str(tmp_path / "widest"), task=TASK)
    assert len(runner._warm) == runner.WARM_MODELS  # pylint: disable=protected-access


class _Pause(keras.callbacks.Callback):
    """Holds its run after its first call until `go` is set, `started` set meanwhile."""

    def __init__(self):
        super().__init__()
        self.started, self.go = threading.Event(), threading.Event()

    def on_train_batch_end(self, batch, logs=None):
        if not self.started.is_set():
            self.started.set()
            assert self.go.wait(timeout=120)


@pytest.mark.slow
def test_runs_in_threads_of_one_process_are_never_lent_one_model(tmp_path):
    # Beam's in-memory runner trains a sweep's runs in threads: a run that starts while
    # another of its settings trains on the warm model must not take that model; each ends
    # as it does alone.
    configs = [TrainConfig(n_train=40, n_test=60, width=8, alpha=1e4, init_seed=seed,
                           max_dgrad=5e-2) for seed in (0, 1, 2)]
    runner.train(configs[0], str(tmp_path / "first"), task=TASK)  # a warm model to lend
    pause = _Pause()
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        held = pool.submit(runner.train, configs[1], str(tmp_path / "t1"), task=TASK,
                           extra_callbacks=[pause])  # on the warm model, held after a call
        assert pause.started.wait(timeout=120)
        try:
            meanwhile = runner.train(configs[2], str(tmp_path / "t2"), task=TASK)
        finally:
            pause.go.set()
        together = [held.result(), meanwhile]
    for config, metrics in zip(configs[1:], together):
        runner.clear_warm_models()
        alone = runner.train(config, str(tmp_path / f"a{config.init_seed}"), task=TASK)
        assert (metrics["gradient_evaluations"], metrics["t"]) == (
            alone["gradient_evaluations"], alone["t"])
        np.testing.assert_array_equal(_outputs(tmp_path / f"t{config.init_seed}"),
                                      _outputs(tmp_path / f"a{config.init_seed}"))
