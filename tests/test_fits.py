"""Fit ranges inside one regime, the measured crossover, and the fits table (fits.csv)."""
import math

import numpy as np
import pandas as pd
import pytest

from lazy_feature.study import fits

LEVELS = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4)
CROSSOVER = 3.0  # where the synthetic drift below equals 1


def _drift(x):
    """(x/x*)^-1.3 in the feature regime and (x/x*)^-1 in the lazy one: 1 at x = x*."""
    return (x / CROSSOVER) ** (-1.3 if x < CROSSOVER else -1.0)


def _runs(levels=LEVELS, seeds=(0, 1, 2), depth=3):
    return pd.DataFrame([
        dict(depth=depth, init_seed=s, sqrt_h_alpha_level=x, ntk_drift_test=_drift(x),
             rescaled_weight_drift=0.5 * x ** -0.25, t_half=2.0 * x)
        for x in levels for s in seeds])


def test_crossover_is_where_the_kernel_drift_is_one():
    x_star, how = fits.crossover(_runs())
    # The drift crosses 1 between the levels 1 and 10; x* is where the straight log-log
    # line through those two points reaches 1.
    assert 1.0 < x_star < 10.0 and how == "kernel drift = 1"
    low, high = _drift(1.0), _drift(10.0)
    t = math.log(x_star)
    expected = math.exp(math.log(low) + (math.log(high) - math.log(low)) * t / math.log(10.0))
    assert expected == pytest.approx(1.0)


def test_crossover_falls_back_to_the_nominal_one():
    assert fits.crossover(_runs().drop(columns="ntk_drift_test"))[0] == fits.NOMINAL_CROSSOVER
    deep_lazy = _runs(levels=(1e2, 1e3, 1e4))
    x_star, how = fits.crossover(deep_lazy)
    assert x_star == fits.NOMINAL_CROSSOVER and "does not cross 1" in how


def test_ranges_keep_a_margin_from_the_crossover_unless_given():
    ranges, (x_star, _) = fits.regime_ranges(_runs())
    assert ranges["feature"] == (None, pytest.approx(x_star / fits.MARGIN))
    assert ranges["lazy"] == (pytest.approx(fits.MARGIN * x_star), None)
    ranges, _ = fits.regime_ranges(_runs(), feature=(1e-3, 0.1), lazy=(100, None))
    assert ranges == {"feature": (1e-3, 0.1), "lazy": (100, None)}


def test_fit_table_states_its_range_levels_and_runs():
    table = fits.fit_table(_runs(), feature=(None, 0.1), lazy=(100, None)).set_index(
        ["column", "regime"])
    feature = table.loc[("ntk_drift_test", "feature")]
    assert feature["slope"] == pytest.approx(-1.3) and feature["stderr"] == pytest.approx(0)
    assert (feature["n_levels"], feature["n_runs"]) == (3, 9)
    assert math.isnan(feature["range_low"]) and feature["range_high"] == 0.1
    assert feature["paper"] == -1.3 and feature["predicted"] == pytest.approx(-1.5)
    lazy = table.loc[("ntk_drift_test", "lazy")]
    assert lazy["slope"] == pytest.approx(-1.0) and (lazy["x_min"], lazy["x_max"]) == (100, 1e4)
    assert table.loc[("rescaled_weight_drift", "feature"), "slope"] == pytest.approx(-0.25)
    assert table.loc[("t_half", "feature"), "slope"] == pytest.approx(1.0)
    assert list(fits.fit_table(_runs()).columns) == list(fits.COLUMNS)


def test_a_range_across_the_crossover_would_mix_the_slopes():
    # The point of fitting inside one regime: across x* the fitted slope is neither.
    mixed = fits.fit_table(_runs(), feature=(None, 1e4)).set_index(["column", "regime"])
    assert -1.3 < mixed.loc[("ntk_drift_test", "feature"), "slope"] < -1.0


def test_one_level_gives_no_slope():
    table = fits.fit_table(_runs(), feature=(None, 1e-3)).set_index(["column", "regime"])
    row = table.loc[("ntk_drift_test", "feature")]
    assert row["n_levels"] == 1 and np.isnan(row["slope"])
