"""Power-law fits, their bootstrap errors, and the paper's exponents."""
import math

import numpy as np
import pandas as pd
import pytest

from lazy_feature.study import exponents

X = np.logspace(-3, 0, 7, endpoint=False)


def _noisy_power_law(exponent, prefactor, n_seeds, noise, seed):
    """y = prefactor·x^exponent·e^(noise·ξ), ξ ~ N(0, 1) independent per (seed, x)."""
    rng = np.random.default_rng(seed)
    return pd.DataFrame([
        dict(init_seed=s, sqrt_h_alpha=x,
             y=prefactor * x ** exponent * math.exp(noise * rng.standard_normal()))
        for s in range(n_seeds) for x in X])


def test_fit_recovers_a_noiseless_power_law_exactly():
    exponent, prefactor = exponents.fit_power_law(X, 3.0 * X ** -1.3)
    assert exponent == pytest.approx(-1.3, abs=1e-12) and prefactor == pytest.approx(3.0, rel=1e-12)


def test_fit_ignores_points_without_a_logarithm():
    x = np.concatenate([X, [0.0, 1.0, np.nan]])
    y = np.concatenate([2.0 * X ** 0.5, [1.0, -1.0, 1.0]])
    assert exponents.fit_power_law(x, y) == pytest.approx((0.5, 2.0), rel=1e-12)


def test_fit_with_a_fixed_exponent_fits_the_prefactor():
    assert exponents.fit_power_law(X, 5.0 / X, exponent=-1.0) == pytest.approx((-1.0, 5.0))


def test_fit_is_nan_without_two_distinct_x():
    assert all(math.isnan(v) for v in exponents.fit_power_law([2.0, 2.0], [1.0, 3.0]))
    assert all(math.isnan(v) for v in exponents.fit_power_law([], []))


def test_bootstrap_on_noiseless_data_is_exact_with_zero_error():
    exponent, stderr = exponents.bootstrap_exponent(_noisy_power_law(-1.3, 2.0, 5, 0.0, 0),
                                                    "sqrt_h_alpha", "y")
    assert exponent == pytest.approx(-1.3, abs=1e-12) and stderr == pytest.approx(0, abs=1e-12)


def test_bootstrap_error_matches_the_spread_of_fits_over_independent_samples():
    # Over 50 independent data sets the fitted exponents scatter with a std that the
    # bootstrap std (on one data set) must estimate. The ratio of the two has a sampling
    # error of about 10% (50 fits) and the bootstrap std itself ~18% per data set, ~3% in
    # the mean over 50; ±30% is ~3 standard errors.
    results = np.array([exponents.bootstrap_exponent(_noisy_power_law(-1.3, 2.0, 20, 0.05, k),
                                                     "sqrt_h_alpha", "y", n_boot=100, seed=k)
                        for k in range(50)])
    fits, stderrs = results[:, 0], results[:, 1]
    assert np.mean(stderrs) == pytest.approx(np.std(fits, ddof=1), rel=0.3)
    # Each fit lies within 4 of its own bootstrap errors of the truth.
    assert np.all(np.abs(fits + 1.3) < 4 * stderrs)


def test_bootstrap_restricts_to_the_closed_x_range():
    # Slope −1.3 below √h·α = 0.1 and +1 above, continuous at 0.1 (which both sides include):
    # each side is recovered alone.
    df = _noisy_power_law(-1.3, 1.0, 3, 0.0, 0)
    upper = df["sqrt_h_alpha"] >= 0.1
    df.loc[upper, "y"] = 0.1 ** -1.3 * df.loc[upper, "sqrt_h_alpha"] / 0.1
    low, _ = exponents.bootstrap_exponent(df, "sqrt_h_alpha", "y", x_range=(None, 0.1))
    high, _ = exponents.bootstrap_exponent(df, "sqrt_h_alpha", "y", x_range=(0.1, None))
    assert low == pytest.approx(-1.3) and high == pytest.approx(1.0)


def test_bootstrap_error_is_nan_with_one_seed():
    exponent, stderr = exponents.bootstrap_exponent(_noisy_power_law(0.5, 1.0, 1, 0.1, 0),
                                                    "sqrt_h_alpha", "y")
    assert np.isfinite(exponent) and math.isnan(stderr)


def test_bootstrap_is_deterministic():
    df = _noisy_power_law(-1.3, 2.0, 10, 0.1, 3)
    assert (exponents.bootstrap_exponent(df, "sqrt_h_alpha", "y", seed=7)
            == exponents.bootstrap_exponent(df, "sqrt_h_alpha", "y", seed=7))


def test_paper_values():
    assert exponents.paper_drift_exponent(3) == (1.3, pytest.approx(1.5))
    assert exponents.paper_drift_exponent(5) == (1.7, pytest.approx(5 / 3))
    assert exponents.paper_drift_exponent(2) == (1.25, pytest.approx(4 / 3))
    assert exponents.paper_drift_exponent(9) == (None, pytest.approx(1.8))
    assert exponents.paper_weight_drift_exponent(5) == (0.23, pytest.approx(1 / 6))
    assert exponents.paper_weight_drift_exponent(2) == (0.35, pytest.approx(1 / 3))
    assert exponents.LAZY_DRIFT_SLOPE == -1.0
