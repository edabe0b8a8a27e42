"""Power-law fits O ~ c·x^e with bootstrap uncertainty, and the paper's exponents.

In the feature-training regime (√h·α ≪ 1) the paper finds
  ‖Θ − Θ0‖/‖Θ0‖ ~ (√h·α)^(-a)         (eq. 18; predicted a = 2/(1 + 1/L), eq. 24),
  ‖w − w0‖/‖w0‖ ~ (√h·α)^(-b)/√h      (eq. 30; predicted b = 1/(L + 1), Section 6),
  t_{L/2} ~ √h·α                       (eq. 19),
while in the lazy regime (√h·α ≫ 1) both drifts go as (√h·α)^(-1) (Section 5, eq. 29).
Fitted exponents are slopes of log O against log x, so they compare with −a and −b.
"""
import numpy as np

# The paper's fitted a in the feature regime, by depth L: eq. 18 (L = 3), Table 2 (L = 5, 2).
DRIFT_EXPONENT_MEASURED = {2: 1.25, 3: 1.3, 5: 1.7}
# The paper's fitted b in the feature regime, by depth L: eq. 30 and Table 2 (L = 5, 2).
WEIGHT_DRIFT_EXPONENT_MEASURED = {2: 0.35, 5: 0.23}
# The slope of both drifts against √h·α in the lazy regime (Section 5, eq. 29).
LAZY_DRIFT_SLOPE = -1.0
# The slope of t_{L/2} against √h·α in the feature regime (eq. 19).
T_HALF_SLOPE = 1.0


def predicted_drift_exponent(depth):
    """a = 2/(1 + 1/L) of ‖Θ − Θ0‖ ~ (√h·α)^(-a) (eq. 24)."""
    return 2.0 / (1.0 + 1.0 / depth)


def predicted_weight_drift_exponent(depth):
    """b = 1/(L + 1) of ‖w − w0‖/‖w0‖ ~ (√h·α)^(-b)/√h (eq. 30, Section 6)."""
    return 1.0 / (depth + 1.0)


def paper_drift_exponent(depth):
    """(the paper's fitted a or None, a predicted) at depth L (eqs. 18, 24, Table 2)."""
    return DRIFT_EXPONENT_MEASURED.get(depth), predicted_drift_exponent(depth)


def paper_weight_drift_exponent(depth):
    """(the paper's fitted b or None, b predicted) at depth L (eq. 30, Table 2)."""
    return WEIGHT_DRIFT_EXPONENT_MEASURED.get(depth), predicted_weight_drift_exponent(depth)


def fit_power_law(x, y, exponent=None):
    """(exponent, prefactor) of y ≈ prefactor·x^exponent by least squares on log y vs log x.

    Points with a non-finite or non-positive x or y have no logarithm and are ignored.
    A given `exponent` is kept fixed and only the prefactor is fitted (a reference slope).
    NaN where the points cannot determine the fit (fewer than two distinct x, or none).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    log_x, log_y = np.log(x[keep]), np.log(y[keep])
    if exponent is None:
        if np.unique(log_x).size < 2:
            return float("nan"), float("nan")
        exponent = np.polyfit(log_x, log_y, 1)[0]
    if log_x.size == 0:
        return float(exponent), float("nan")
    # The least-squares line passes through the centroid of the points in log-log space.
    return float(exponent), float(np.exp(np.mean(log_y - exponent * log_x)))


def in_range(df, x_col, y_col, x_range):
    """Rows with finite x and y and low ≤ x ≤ high, x_range = (low, high); None is unbounded."""
    x, y = df[x_col].astype(float), df[y_col].astype(float)
    keep = np.isfinite(x) & np.isfinite(y)
    low, high = x_range if x_range is not None else (None, None)
    if low is not None:
        keep &= x >= low
    if high is not None:
        keep &= x <= high
    return df[keep]


def per_x_means(df, x_col, y_col, x_range=None):
    """The mean of y over all rows (e.g. seeds) at each x inside x_range, indexed by x."""
    rows = in_range(df, x_col, y_col, x_range)
    return rows.groupby(x_col)[y_col].mean().astype(float)


def bootstrap_exponent(df, x_col, y_col, group_col="init_seed", n_boot=200, seed=0,
                       x_range=None):
    """(exponent, stderr) of y ~ x^exponent, fitted on the means of y at each x.

    The exponent is the fit on all rows; its uncertainty is the standard deviation of the
    fits on `n_boot` resamples that draw the groups (initial conditions) with replacement,
    so it accounts for the correlation between points sharing a seed. Only rows with x
    inside the closed x_range = (low, high) enter (None leaves a side open). stderr is NaN
    with fewer than two groups or fewer than two successful resampled fits.
    """
    rows = in_range(df, x_col, y_col, x_range)
    rows = rows[rows[group_col].notna()]
    means = per_x_means(rows, x_col, y_col)
    exponent, _ = fit_power_law(means.index, means.to_numpy())
    # Sum and count of y per (group, x), x in the order of `means`: a resample weights
    # each group by the number of times it is drawn.
    table = rows.groupby([group_col, x_col])[y_col].agg(["sum", "count"]).unstack(fill_value=0)
    n_groups = len(table)
    if n_groups < 2:
        return exponent, float("nan")
    draws = np.random.default_rng(seed).integers(n_groups, size=(n_boot, n_groups))
    weights = np.stack([np.bincount(d, minlength=n_groups) for d in draws]).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        resampled = (weights @ table["sum"].to_numpy(dtype=float)) / (
            weights @ table["count"].to_numpy(dtype=float))
    fits = np.array([fit_power_law(means.index, m)[0] for m in resampled])
    fits = fits[np.isfinite(fits)]
    stderr = float(np.std(fits, ddof=1)) if fits.size >= 2 else float("nan")
    return exponent, stderr
