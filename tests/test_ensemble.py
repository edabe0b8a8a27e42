"""Ensemble average (eq. 15), single and ensemble errors, and Var F (eq. 16)."""
import math
import os

import numpy as np
import pytest

from lazy_feature.run import artifact
from lazy_feature.study import ensemble


def test_var_F_of_gaussian_fluctuations():
    # F_i(x) = m(x) + σξ: the unbiased estimator has mean σ². Each point contributes
    # σ²χ²_{N−1}/(N − 1), so the mean over P points has standard error σ²√(2/((N − 1)P)).
    # At N = 5 the N-divided eq. 16 would sit 20% low: 0.8σ², 28 standard errors away.
    n, p, sigma = 5, 20000, 0.3
    rng = np.random.default_rng(0)
    labels = rng.choice([-1.0, 1.0], size=p)
    outputs = 2.0 * labels + sigma * rng.standard_normal((n, p))
    stats = ensemble.ensemble_statistics(outputs, labels)
    standard_error = sigma ** 2 * math.sqrt(2 / ((n - 1) * p))
    assert stats["n_members"] == n and stats["var_F_estimator"] == "unbiased (N - 1)"
    assert abs(stats["var_F"] - sigma ** 2) < 4 * standard_error


def test_var_F_is_eq_16_with_the_unbiased_estimator():
    outputs = np.array([[1.0, -2.0], [3.0, 0.0]])  # F̄ = (2, −1); deviations ±1 everywhere
    stats = ensemble.ensemble_statistics(outputs, np.array([1.0, -1.0]))
    assert stats["var_F"] == 2.0  # Σ of 4 unit squares / ((N − 1) P) = 4 / 2


def test_ensemble_corrects_errors_that_members_do_not_share():
    labels = np.array([1.0, 1.0, 1.0, -1.0])
    outputs = np.array([
        [-1.0, 2.0, 2.0, -1.0],   # wrong on point 0
        [2.0, -1.0, 2.0, -1.0],   # wrong on point 1
        [2.0, 2.0, -1.0, 0.0],    # wrong on point 2 (F = 0 is a tie: an error) and point 3
    ])
    stats = ensemble.ensemble_statistics(outputs, labels)
    np.testing.assert_array_equal(stats["test_errors"], [0.25, 0.25, 0.5])
    assert stats["mean_test_error"] == pytest.approx(1 / 3)
    assert stats["std_test_error"] == pytest.approx(np.std([0.25, 0.25, 0.5], ddof=1))
    assert stats["ensemble_test_error"] == 0.0  # F̄ = (1, 1, 1, −2/3)


def test_a_tie_of_the_ensemble_average_is_an_error():
    stats = ensemble.ensemble_statistics(np.array([[1.0, 1.0], [-1.0, 1.0]]), np.array([1, 1]))
    assert stats["ensemble_test_error"] == 0.5  # F̄ = (0, 1)


def test_a_nan_output_counts_as_an_error():
    stats = ensemble.ensemble_statistics(np.array([[np.nan, 1.0], [1.0, 1.0]]), np.ones(2))
    np.testing.assert_array_equal(stats["test_errors"], [0.5, 0.0])
    assert stats["ensemble_test_error"] == 0.5 and math.isnan(stats["var_F"])


def test_one_member():
    stats = ensemble.ensemble_statistics(np.array([[1.0, -1.0]]), np.array([1.0, 1.0]))
    assert stats["ensemble_test_error"] == 0.5
    assert math.isnan(stats["var_F"]) and math.isnan(stats["std_test_error"])


def test_shapes_and_labels_are_checked():
    with pytest.raises(ValueError, match="shape"):
        ensemble.ensemble_statistics(np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="shape"):
        ensemble.ensemble_statistics(np.ones((2, 3)), np.ones(4))
    with pytest.raises(ValueError, match="±1"):
        ensemble.ensemble_statistics(np.ones((2, 3)), np.array([1, 0, 1]))


def _member(path, outputs, labels):
    os.makedirs(path)
    np.save(os.path.join(path, artifact.TEST_OUTPUTS), np.asarray(outputs, dtype=np.float64))
    np.save(os.path.join(path, artifact.TEST_LABELS), np.asarray(labels, dtype=np.float64))
    return str(path)


def test_load_member_outputs_stacks_runs(tmp_path):
    labels = [1.0, -1.0, 1.0]
    dirs = [_member(tmp_path / f"s{i}", [i, -i, 0.5], labels) for i in range(3)]
    outputs, loaded = ensemble.load_member_outputs(dirs)
    assert outputs.shape == (3, 3) and outputs.dtype == np.float64
    np.testing.assert_array_equal(outputs[2], [2.0, -2.0, 0.5])
    np.testing.assert_array_equal(loaded, labels)


def test_load_member_outputs_rejects_other_test_sets(tmp_path):
    a = _member(tmp_path / "a", [1.0, 2.0], [1.0, -1.0])
    b = _member(tmp_path / "b", [1.0, 2.0], [-1.0, 1.0])
    c = _member(tmp_path / "c", [1.0, 2.0, 3.0], [1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="other test labels"):
        ensemble.load_member_outputs([a, b])
    with pytest.raises(ValueError, match="other test labels"):
        ensemble.load_member_outputs([a, c])
    with pytest.raises(ValueError, match="no run"):
        ensemble.load_member_outputs([])
