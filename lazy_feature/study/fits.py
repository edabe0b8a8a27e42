"""The exponents of a sweep as data: each fitted over a stated √h·α range inside one regime.

The paper's power laws hold deep inside a regime, not across the crossover: eq. 18 (kernel
drift, −a) and eq. 30 (weight drift, −b) for √h·α ≪ 1, the slope −1 of both drifts for
√h·α ≫ 1 (Section 5, eq. 29), t_{L/2} ~ √h·α (eq. 19) in the feature regime. The crossover
√h·α* is located where the kernel has moved as much as its size, ‖Θ − Θ0‖/‖Θ0‖ =
`drift.CROSSOVER_DRIFT` = 1 (Section 5), and each regime's range keeps a factor MARGIN away
from it, unless a sweep states its ranges (`SweepConfig.feature_range`, `lazy_range`).
`fit_table` is what the report writes to fits.csv and reads back for its summary and figures.
"""
import dataclasses

import numpy as np
import pandas as pd

from lazy_feature.kernel import drift
from lazy_feature.study import exponents

MARGIN = 10.0  # a regime's fit range ends this factor away from the crossover
NOMINAL_CROSSOVER = 1.0  # √h·α* = O(1) (Section 3), used where the drift cannot place it
N_BOOT = 200
REGIMES = ("feature", "lazy")
DRIFT = "ntk_drift_test"  # the kernel drift on the test set, as in the paper (Section 5)


def level(x):
    """√h·α to 3 significant digits: runs designed at one √h·α share one level."""
    return float(f"{x:.3g}")


def crossover(runs):
    """(√h·α*, how) where the mean kernel drift over the runs at each level falls through
    `drift.CROSSOVER_DRIFT` (`drift.crossover`).

    `how` is "kernel drift = 1", or says why NOMINAL_CROSSOVER is used instead.
    """
    threshold = drift.CROSSOVER_DRIFT
    if DRIFT not in runs or "sqrt_h_alpha_level" not in runs or runs[DRIFT].isna().all():
        return NOMINAL_CROSSOVER, "nominal (no kernel drift measured)"
    means = exponents.per_x_means(runs, "sqrt_h_alpha_level", DRIFT)
    x_star = drift.crossover(means.index, means, threshold)
    if x_star is None:
        return (NOMINAL_CROSSOVER,
                f"nominal (the kernel drift does not cross {threshold:g} on this grid)")
    return x_star, f"kernel drift = {threshold:g}"


def regime_ranges(runs, feature=None, lazy=None):
    """{regime: (low, high)}, the closed √h·α range of each regime's fits, and the crossover.

    `feature` and `lazy` are explicit (low, high) ranges (None sides are open); a regime
    without one gets √h·α ≤ √h·α*/MARGIN (feature) or ≥ MARGIN·√h·α* (lazy).
    Returns (ranges, (crossover, how)).
    """
    x_star, how = crossover(runs)
    ranges = {"feature": tuple(feature) if feature else (None, x_star / MARGIN),
              "lazy": tuple(lazy) if lazy else (MARGIN * x_star, None)}
    return ranges, (x_star, how)


@dataclasses.dataclass(frozen=True)
class Fit:
    """A power law against √h·α in one regime, with the paper's slope for depth L."""
    column: str
    observable: str
    regime: str
    paper: object  # depth -> (slope measured in the paper or None, predicted slope or None)


def _decaying(paper_exponent):
    """Depth -> the slopes (−measured, −predicted) of O ~ x^(-exponent); None without L."""
    def slopes(depth):
        if depth is None:
            return None, None
        return tuple(None if e is None else -e for e in paper_exponent(depth))
    return slopes


def _constant(slope):
    """Depth -> (slope, slope): the paper's slope, measured and predicted, at every depth."""
    return lambda depth: (slope, slope)


FITS = (
    Fit(DRIFT, "‖Θ−Θ0‖/‖Θ0‖ (test), −a", "feature", _decaying(exponents.paper_drift_exponent)),
    Fit(DRIFT, "‖Θ−Θ0‖/‖Θ0‖ (test)", "lazy", _constant(exponents.LAZY_DRIFT_SLOPE)),
    Fit("rescaled_weight_drift", "√h‖w−w0‖/‖w0‖, −b", "feature",
        _decaying(exponents.paper_weight_drift_exponent)),
    Fit("rescaled_weight_drift", "√h‖w−w0‖/‖w0‖", "lazy", _constant(exponents.LAZY_DRIFT_SLOPE)),
    Fit("t_half", "t_{L/2}", "feature", _constant(exponents.T_HALF_SLOPE)),
)

COLUMNS = ("depth", "column", "observable", "regime", "slope", "stderr", "prefactor", "paper",
           "predicted", "paper_prefactor", "range_low", "range_high", "crossover", "x_min",
           "x_max", "n_levels", "n_runs", "n_seeds")


def by_depth(runs):
    """(L, rows) for each depth L in `runs`, or (None, runs) without a depth column."""
    if "depth" not in runs or runs["depth"].isna().all():
        return [(None, runs)]
    return [(int(depth), rows) for depth, rows in runs.groupby("depth")]


def _bound(value):
    return np.nan if value is None else float(value)


def fit_table(runs, feature=None, lazy=None):
    """The slopes of FITS per depth over the runs given (the used ones), as a DataFrame.

    `runs` needs init_seed, sqrt_h_alpha_level and the fitted columns. Each row says the
    range it was fitted over (range_low/high, NaN = open), the crossover it was placed
    from, the √h·α levels and runs inside it, the slope with its bootstrap error over init
    seeds, the paper's slope, and the prefactors that anchor both slopes to the same
    points (the figures' reference lines). A fit with fewer than 2 levels has a NaN slope.
    """
    rows = []
    if {"init_seed", "sqrt_h_alpha_level"} <= set(runs.columns):
        for depth, part in by_depth(runs):
            ranges, (x_star, _) = regime_ranges(part, feature, lazy)
            for fit in FITS:
                if fit.column not in part or part[fit.column].isna().all():
                    continue
                x_range = ranges[fit.regime]
                slope, stderr = exponents.bootstrap_exponent(
                    part, "sqrt_h_alpha_level", fit.column, "init_seed", N_BOOT,
                    x_range=x_range)
                means = exponents.per_x_means(part, "sqrt_h_alpha_level", fit.column, x_range)
                paper, predicted = fit.paper(depth)
                rows.append(dict(
                    depth=depth, column=fit.column, observable=fit.observable,
                    regime=fit.regime, slope=slope, stderr=stderr,
                    prefactor=exponents.fit_power_law(means.index, means, slope)[1],
                    paper=paper, predicted=predicted,
                    paper_prefactor=(exponents.fit_power_law(means.index, means, paper)[1]
                                     if paper is not None else np.nan),
                    range_low=_bound(x_range[0]), range_high=_bound(x_range[1]),
                    crossover=x_star,
                    x_min=means.index.min() if len(means) else np.nan,
                    x_max=means.index.max() if len(means) else np.nan,
                    n_levels=len(means),
                    n_runs=len(inside := exponents.in_range(part, "sqrt_h_alpha_level",
                                                            fit.column, x_range)),
                    n_seeds=int(inside["init_seed"].nunique())))
    return pd.DataFrame(rows, columns=list(COLUMNS))


# -- Appendix F: the ReLU kernel drift's three power laws ---------------------------------

MIN_SEGMENT = 3  # √h·α levels each power law of `three_power_laws` is fitted on, at least
# The slope of each of the three ReLU regimes, from small to large √h·α (Appendix F, Fig. 12):
# the feature regime's −a (depth dependent), the patch-changing −1/2, the lazy −1.
RELU_REGIMES = (("feature", None), ("patches", -0.5), ("lazy", exponents.LAZY_DRIFT_SLOPE))
RELU_COLUMNS = ("depth", "regime", "range_low", "range_high", "n_levels", "n_runs", "slope",
                "stderr", "prefactor", "paper")


def _split_sse(logx, logy, cuts):
    """The summed squared residuals of separate lines through the pieces of (logx, logy) cut at
    `cuts` (indices)."""
    total = 0.0
    for lo, hi in zip((0,) + cuts, cuts + (len(logx),)):
        coefficients = np.polyfit(logx[lo:hi], logy[lo:hi], 1)
        total += float(np.sum((np.polyval(coefficients, logx[lo:hi]) - logy[lo:hi]) ** 2))
    return total


def three_power_laws(runs, column=DRIFT):
    """The three power laws of the ReLU kernel drift against √h·α (Appendix F), per depth.

    The means over seeds at each √h·α level are cut into three consecutive ranges of at least
    MIN_SEGMENT levels each where separate lines in log-log fit best (least squares over every
    pair of cuts); each range's slope is then fitted with its bootstrap error over init seeds
    (`exponents.bootstrap_exponent`). Rows (RELU_COLUMNS) name the regime the range stands
    for in the paper (`RELU_REGIMES`: feature, patches with slope −1/2, lazy with −1; the
    feature slope's paper value is eq. 24's −a). Depths with fewer than 3·MIN_SEGMENT levels
    give no row.
    """
    rows = []
    if not {"init_seed", "sqrt_h_alpha_level", column} <= set(runs.columns):
        return pd.DataFrame(rows, columns=list(RELU_COLUMNS))
    for depth, part in by_depth(runs):
        means = exponents.per_x_means(part, "sqrt_h_alpha_level", column)
        means = means[means > 0]
        if len(means) < 3 * MIN_SEGMENT:
            continue
        logx, logy = np.log(means.index.to_numpy(float)), np.log(means.to_numpy(float))
        cuts = min(((i, j) for i in range(MIN_SEGMENT, len(means) - 2 * MIN_SEGMENT + 1)
                    for j in range(i + MIN_SEGMENT, len(means) - MIN_SEGMENT + 1)),
                   key=lambda c: _split_sse(logx, logy, c))
        x = means.index.to_numpy(float)
        for (regime, paper), lo, hi in zip(RELU_REGIMES, (0,) + cuts, cuts + (len(means),)):
            x_range = (x[lo], x[hi - 1])
            slope, stderr = exponents.bootstrap_exponent(
                part, "sqrt_h_alpha_level", column, "init_seed", N_BOOT, x_range=x_range)
            if paper is None and depth is not None:
                paper = -exponents.predicted_drift_exponent(depth)
            rows.append(dict(
                depth=depth, regime=regime, range_low=x_range[0], range_high=x_range[1],
                n_levels=hi - lo,
                n_runs=len(exponents.in_range(part, "sqrt_h_alpha_level", column, x_range)),
                slope=slope, stderr=stderr,
                prefactor=exponents.fit_power_law(x[lo:hi], means.iloc[lo:hi], slope)[1],
                paper=np.nan if paper is None else paper))
    return pd.DataFrame(rows, columns=list(RELU_COLUMNS))
