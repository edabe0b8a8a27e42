"""t_{L/2} (eq. 19), the √h·α rescalings and the observables of a run directory."""
import json
import math
import os

import numpy as np
import pytest

from lazy_feature.run import artifact
from lazy_feature.run import config
from lazy_feature.study import observables

TAU = 3.0


def _write_run(run_dir, alpha, width, t, rescaled_loss, metrics=None):
    os.makedirs(run_dir)
    artifact.write_json(os.path.join(run_dir, artifact.CONFIG), {"alpha": alpha, "width": width})
    with open(os.path.join(run_dir, artifact.DYNAMICS), "w") as f:
        for step, (ti, li) in enumerate(zip(t, rescaled_loss)):
            f.write(json.dumps({"step": step, "t": ti, "rescaled_loss": li,
                                "dout": None if step == 0 else 0.01}) + "\n")
    if metrics is not None:
        artifact.write_json(os.path.join(run_dir, artifact.METRICS), metrics)


def test_t_half_of_exponential_decay_is_tau_ln2():
    # α²L = exp(−t/τ) on a log-spaced schedule like the training log's (20 points a decade).
    t = np.concatenate([[0.0], np.logspace(-3, 2, 101)])
    # The chord of a convex curve over a step Δt lies at most Δt²·max L''/8 above it, so the
    # crossing moves by at most Δt²·max L''/(8|L'|) ≈ Δt²/(8τ) (times e^(Δt/τ) ≈ 1.1, covered
    # by over-estimating the step Δt = t_i(1 − 10^-0.05) ≈ 0.109·t_i as 0.122·t_i).
    step = t[np.searchsorted(t, TAU * math.log(2))] * (10 ** 0.05 - 1)
    half = observables.t_half(t, np.exp(-t / TAU))
    assert half == pytest.approx(TAU * math.log(2), abs=step ** 2 / (8 * TAU))
    assert half != TAU * math.log(2)  # the bound above is not vacuous


def test_t_half_is_exact_on_a_piecewise_linear_curve():
    assert observables.t_half([0, 1, 2, 4], [2.0, 1.5, 0.5, 0.1]) == pytest.approx(1.5)
    # The first crossing counts, even if the loss rises again afterwards.
    assert observables.t_half([0, 1, 2, 3], [1.0, 0.4, 0.9, 0.1]) == pytest.approx(5 / 6)
    # A logged point exactly at half the initial value.
    assert observables.t_half([0, 2, 5], [1.0, 0.5, 0.2]) == pytest.approx(2.0)


def test_t_half_is_nan_when_the_loss_never_halves_or_nothing_is_logged():
    assert math.isnan(observables.t_half([0, 1, 2], [1.0, 0.8, 0.51]))
    assert math.isnan(observables.t_half([], []))
    # A NaN first entry is skipped: the first finite point sets the initial value.
    assert math.isnan(observables.t_half([0, 1], [float("nan"), 0.1]))


def test_t_half_ignores_non_finite_points():
    assert observables.t_half([0, 1, np.nan, 2], [1.0, 0.6, 0.1, 0.4]) == pytest.approx(1.5)


def test_rescalings():
    assert config.sqrt_h_alpha(0.5, 100) == pytest.approx(5.0)
    assert observables.rescaled_time(10.0, 0.5, 100) == pytest.approx(2.0)
    assert observables.rescaled_weight_drift(0.01, 400) == pytest.approx(0.2)
    np.testing.assert_allclose(config.sqrt_h_alpha(np.array([1.0, 2.0]), np.array([4, 9])),
                               [2.0, 6.0])


def test_read_dynamics_orders_rows_and_turns_null_into_nan(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_run(run_dir, 1.0, 4, [0.0, 0.5, 1.0], [1.0, 0.7, 0.2])
    path = os.path.join(run_dir, artifact.DYNAMICS)
    lines = open(path).read().splitlines()
    with open(path, "w") as f:
        f.write("\n".join(lines[::-1]) + "\n")
    dynamics = observables.read_dynamics(run_dir)
    assert list(dynamics["step"]) == [0, 1, 2]
    assert list(dynamics["t"]) == [0.0, 0.5, 1.0]
    assert dynamics["t"].dtype == np.float64
    assert np.isnan(dynamics["dout"][0]) and dynamics["dout"][1] == 0.01


def test_observables_of_a_run(tmp_path):
    alpha, width = 0.02, 100  # √h·α = 0.2
    t = np.linspace(0.0, 10.0, 10001)
    run_dir = str(tmp_path / "run")
    _write_run(run_dir, alpha, width, t, np.exp(-t / TAU),
               {"weight_drift": 0.3, "output_norm": 2.5})
    obs = observables.observables(run_dir)
    assert obs["sqrt_h_alpha"] == pytest.approx(0.2)
    assert obs["t_half"] == pytest.approx(TAU * math.log(2), rel=1e-6)
    assert obs["t_half_rescaled"] == pytest.approx(TAU * math.log(2) / 0.2, rel=1e-6)
    assert obs["weight_drift"] == 0.3 and obs["output_norm"] == 2.5


def test_observables_of_an_unfinished_run_are_nan(tmp_path):
    run_dir = str(tmp_path / "run")
    _write_run(run_dir, 1.0, 4, [0.0, 1.0], [1.0, 0.9])  # no metrics.json, never halved
    obs = observables.observables(run_dir)
    assert obs["sqrt_h_alpha"] == 2.0
    assert all(math.isnan(obs[k]) for k in ("t_half", "t_half_rescaled", "weight_drift",
                                            "output_norm"))
    os.remove(os.path.join(run_dir, artifact.DYNAMICS))
    assert math.isnan(observables.observables(run_dir)["t_half"])
