"""The ntk_eval stage on tiny run artifacts."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.kernel import frozen
from lazy_feature.run import artifact
from lazy_feature.study import ntk_eval
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask
from lazy_feature.errors import RunDirError
from tests.helpers import sphere_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _task(seed=4):
    x = sphere_inputs(150, 12, seed=seed)
    y = np.sign(x[:, 0] - 0.3 * x[:, 2])
    return BinaryTask(x[:60], y[:60], x[60:], y[60:], np.zeros(60, int), np.zeros(90, int))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("run"))
    config = TrainConfig(n_train=60, n_test=90, width=40, alpha=1.0, dtype="float64")
    runner.train(config, out, task=_task())
    return out


@pytest.mark.slow
def test_ntk_json_and_the_learned_kernel(trained):
    results = ntk_eval.evaluate(trained, task=_task(), save_gram=True)
    assert results == artifact.read_json(os.path.join(trained, artifact.NTK))
    assert results["ntk_n_train"] == 60 and results["ntk_n_test"] == 90
    assert results["ntk_drift_test"] > 0 and results["ntk_drift_train"] > 0
    assert results["frozen_init_converged"] and results["frozen_final_converged"]
    gram0 = np.load(os.path.join(trained, "gram_init_test.npy"))
    gram = np.load(os.path.join(trained, "gram_final_test.npy"))
    assert results["ntk_norm0_test"] == pytest.approx(np.linalg.norm(gram0), rel=1e-10)
    assert results["ntk_drift_test"] == pytest.approx(
        np.linalg.norm(gram - gram0) / np.linalg.norm(gram0), rel=1e-10)
    # Appendix A: the kernel at the end of training reproduces the trained network far better
    # than the kernel at initialization (here √h·α ≈ 6 with h = 40, the kernel moved by ~170%).
    network = np.load(os.path.join(trained, artifact.TEST_OUTPUTS))
    frozen = {when: np.load(os.path.join(trained, f"frozen_{when}_test_outputs.npy"))
              for when in ("init", "final")}
    agreement = {when: np.corrcoef(out, network)[0, 1] for when, out in frozen.items()}
    assert agreement["final"] >= 0.95 and agreement["final"] > agreement["init"] + 0.03
    assert np.mean(np.sign(frozen["final"]) == np.sign(network)) >= 0.9


@pytest.mark.slow
def test_mismatched_dataset_is_refused(trained, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(trained, copy, ignore=shutil.ignore_patterns(artifact.NTK))
    with pytest.raises(RunDirError, match="test labels differ"):
        ntk_eval.evaluate(str(copy), task=_task(seed=5))
    assert not (copy / artifact.NTK).exists()


@pytest.mark.slow
def test_ntk_eval_binary_errors(tmp_path):
    result = subprocess.run([sys.executable, "-m", "pipelines.ntk_eval",
                             f"--run_dir={tmp_path / 'missing'}"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 1
    assert "ntk_eval: error:" in result.stderr and "run the train stage first" in result.stderr


@pytest.mark.slow
def test_frozen_kernel_of_an_uncentered_run_starts_where_the_network_did(tmp_path):
    # Appendix I: F = α f(w) starts at α f(w0) ≠ 0. In the lazy regime (√h·α ≈ 17 with
    # h = 300, α = 1, so α f(w0) = O(1)) the network stays close to its linearization at w0,
    # which starts there too: the frozen kernel at init, run from α f(w0), follows the
    # network (measured: 11% apart), three times closer than the same kernel run from 0.
    config = TrainConfig(n_train=60, n_test=90, width=300, alpha=1.0, centered=False,
                         dtype="float64")
    out = str(tmp_path / "run")
    runner.train(config, out, task=_task())
    ntk_eval.evaluate(out, task=_task())
    network = np.load(os.path.join(out, artifact.TEST_OUTPUTS))
    kernel_outputs = np.load(os.path.join(out, "frozen_init_test_outputs.npy"))
    loaded = runner.load_run(out, task=_task())
    task = loaded.task
    from_zero = frozen.frozen_kernel_test_error(
        loaded.model.initial_network, task.x_train, task.y_train, task.x_test, task.y_test,
        flow=loaded.config.flow())["test_outputs"]
    deviation = np.linalg.norm(kernel_outputs - network) / np.linalg.norm(network)
    assert deviation < 0.2
    assert deviation < 0.5 * np.linalg.norm(from_zero - network) / np.linalg.norm(network)


def _brute_force_gram(network, x):
    """Θ(x_μ, x_ν) = ∇_w f(x_μ)·∇_w f(x_ν) from one gradient per point, in float64."""
    rows = []
    for point in x:
        with tf.GradientTape() as tape:
            f = network(tf.constant(point[None], tf.float64))[0]
        rows.append(np.concatenate([np.ravel(g) for g in tape.gradient(f, network.weights)]))
    jacobian = np.stack(rows)
    return jacobian @ jacobian.T


@pytest.mark.slow
def test_gram_probe_sorted_by_label_against_brute_force(trained):
    task = _task()
    paths = ntk_eval.save_gram_probe(trained, task=task, n_probe=25)
    assert [os.path.basename(p) for p in paths] == [ntk_eval.GRAM_INIT, ntk_eval.GRAM_END,
                                                    ntk_eval.GRAM_LABELS]
    y = task.y_test[:25]
    order = np.concatenate([np.flatnonzero(y > 0), np.flatnonzero(y < 0)])
    np.testing.assert_array_equal(np.load(paths[2]), y[order])
    assert 0 < np.sum(y > 0) < 25  # both classes, +1 first
    loaded = runner.load_run(trained, task)
    x = task.x_test[:25][order]
    for path, network in zip(paths, (loaded.model.initial_network, loaded.model.network)):
        np.testing.assert_allclose(np.load(path), _brute_force_gram(network, x), rtol=1e-10)
    # Fig. 8: the kernel moved during training (√h·α ≈ 6 here).
    assert not np.allclose(np.load(paths[0]), np.load(paths[1]), rtol=1e-2)
