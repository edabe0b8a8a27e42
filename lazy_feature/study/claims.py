"""The paper's claims that a sweep can test, each judged with our number and its uncertainty.

  (i)   the rescaled test error collapses against √h·α (Section 3, Fig. 3 (d));
  (ii)  which regime has the lower test error, for single networks and for ensembles
        (Table 1, Fig. 4 (c, d)), and where the paper speaks of an optimum at intermediate
        α (Section 7), whether one is there (`optimum`);
  (iii) Var F ~ 1/h in both regimes (eq. 17, Fig. 4 (a)), and the ensemble's test error is
        nearly independent of h (Section 4, remark (i));
  (iv)  the exponents of the kernel and weight drifts and of t_{L/2} (eqs. 18, 19, 29, 30).
A verdict is "agrees", "disagrees", "inconclusive" (our uncertainty covers both), "not
testable on this grid" (too few widths, levels or seeds), or, for (ii), which the paper
states at n = 10 000 (which regime wins depends on n, Section 7), a sentence saying why no
verdict is given at a smaller n. The other claims do not depend on n in the paper's argument
and are judged at any n, which `rests_on` states (docs/claims.md).

Uncertainty: every verdict rests on a LEVEL (95%) two-sided confidence interval: Student's t
with the actual degrees of freedom for a mean over seeds or levels (`half_width`, e.g. 3 for
4 seeds: 3.18 standard errors, not 2), the percentiles of a bootstrap over the seeds for the
ensembles' errors and the collapse.
"""
import numpy as np
import pandas as pd
from scipy import stats

from lazy_feature.model import losses
from lazy_feature.study import ensemble, fits

N_BOOT = 400
LEVEL = 0.95  # the two-sided confidence of every interval a verdict rests on
PAPER_N = 10000  # the training-set size of Sections 3-5 and of Table 1
# Table 1: the regime that performs better for the FC network trained by gradient flow.
BETTER_REGIME = {"fashion_mnist": "lazy", "mnist": "lazy", "emnist_letters": "lazy",
                 "cifar10": "lazy"}
# Tolerances for slopes read off a few decades of points: the paper's own fitted and
# predicted exponents differ by up to 0.17 (Table 2), so ours agrees when its interval reaches
# within 0.2 of the paper's.
SLOPE_TOLERANCE = 0.2
COLUMNS = ("claim", "statement", "ours", "uncertainty", "paper", "verdict", "rests_on")


def _num(value, spec):
    """`value` formatted, or "n/a" where it is not a finite number."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def half_width(stderr, dof, confidence=LEVEL):
    """Half the width of the two-sided `confidence` interval (LEVEL unless given) of an
    estimate with this standard error and `dof` degrees of freedom (Student's t; NaN without
    any)."""
    if not (np.isfinite(stderr) and dof >= 1):
        return float("nan")
    return float(stats.t.ppf(0.5 + confidence / 2, dof) * stderr)


def percentile_interval(boot):
    """The LEVEL interval of a bootstrap distribution (its percentiles), NaN without one."""
    boot = np.asarray(boot, float)
    boot = boot[np.isfinite(boot)]
    if boot.size < 2:
        return float("nan"), float("nan")
    tail = 100 * (1 - LEVEL) / 2
    return float(np.percentile(boot, tail)), float(np.percentile(boot, 100 - tail))


def _verdict(difference, stderr, dof, tolerance=0.0):
    """Whether `difference` (ours − expected) is compatible with 0: its interval (± the
    half-width of `stderr` at `dof`, widened by `tolerance`) holds 0. Without an uncertainty
    (dof < 1) only the tolerance counts."""
    if not np.isfinite(difference):
        return "not testable on this grid"
    spread = half_width(stderr, dof)
    bound = tolerance + (spread if np.isfinite(spread) else 0.0)
    return "agrees" if abs(difference) <= bound else "disagrees"


def at_paper_n(verdict, n_train, paper_n=PAPER_N):
    """The verdict where the grid has the paper's n or more, else why none is given."""
    if n_train >= paper_n or verdict == "not testable on this grid":
        return verdict
    return f"not judged: the paper states it at n = {paper_n}, this grid has n = {n_train}"


def _at_small_n(verdict, n_train, paper_n=1000):
    """Var F ~ 1/h is stated at n = 1 000; at larger n the lazy regime is preasymptotic."""
    if n_train <= paper_n or verdict == "not testable on this grid":
        return verdict
    return (f"not judged: the paper states it at n = {paper_n}; at n = {n_train} the lazy "
            "regime needs larger h (Fig. 4 (b), Appendix H)")


def rests_on(runs, levels=None):
    depths = sorted({int(v) for v in runs["depth"].dropna()}) if "depth" in runs else []
    n = sorted({int(v) for v in runs.get("n_train", pd.Series(dtype=float)).dropna()})
    widths = sorted({int(v) for v in runs["width"].dropna()}) if "width" in runs else []
    levels = sorted(levels if levels is not None else runs["sqrt_h_alpha_level"].unique())
    seeds = runs["init_seed"].nunique() if "init_seed" in runs else 0
    span = f"{levels[0]:g} … {levels[-1]:g}" if levels else "none"
    depth = f"L = {', '.join(map(str, depths))}; " if depths else ""
    return (f"{depth}n = {', '.join(map(str, n)) or '?'}; h = {', '.join(map(str, widths)) or '?'}; "
            f"√h·α = {span} ({len(levels)} levels); {seeds} seeds")


def _n_train(runs):
    return int(runs["n_train"].min()) if "n_train" in runs and runs["n_train"].notna().any() else 0


def _row(claim, statement, ours, uncertainty, paper, verdict, rests_on):
    return dict(zip(COLUMNS, (claim, statement, ours, uncertainty, paper, verdict, rests_on)))


# -- (i) the collapse ------------------------------------------------------------------------

def _per_seed_curves(runs, x_col):
    """{width: (log x, seeds, test error of each seed at each x)}, x sorted, NaN where a seed
    lacks an x."""
    curves = {}
    for width, part in runs.groupby("width"):
        table = part.pivot_table(index=x_col, columns="init_seed", values="test_error")
        curves[width] = (np.log(table.index.to_numpy(float)), list(table.columns),
                         table.to_numpy(float))
    return curves


def _spread(curves, weights):
    """RMS distance between the rescaled test-error curves of every two widths.

    Each width's curve (`_per_seed_curves`) is its mean error over seeds at each x, each
    seed weighted by `weights` ({seed: weight}, as a bootstrap resample draws them), rescaled
    to [0, 1] (Fig. 3 (d)); two curves are compared by linear interpolation in log x over the
    x range they share. NaN without two widths that share a range of two points.
    """
    rescaled = {}
    for width, (log_x, seeds, errors) in curves.items():
        w = np.array([weights.get(s, 0.0) for s in seeds])
        mean = np.nansum(errors * w, axis=1) / np.sum(np.isfinite(errors) * w, axis=1)
        span = np.nanmax(mean) - np.nanmin(mean)
        rescaled[width] = (log_x, (mean - np.nanmin(mean)) / span if span > 0 else mean * np.nan)
    distances = []
    widths = sorted(rescaled)
    for i, a in enumerate(widths):
        for b in widths[i + 1:]:
            (xa, ya), (xb, yb) = rescaled[a], rescaled[b]
            grid = np.union1d(xa, xb)
            grid = grid[(grid >= max(xa.min(), xb.min())) & (grid <= min(xa.max(), xb.max()))]
            if grid.size >= 2:
                distances.append(np.sqrt(np.mean((np.interp(grid, xa, ya)
                                                  - np.interp(grid, xb, yb)) ** 2)))
    return float(np.mean(distances)) if distances else float("nan")


def _collapse(runs):
    statement = "the rescaled test error collapses against √h·α (better than against α)"
    if runs["width"].nunique() < 2 or runs["sqrt_h_alpha_level"].nunique() < 3:
        return _row("(i) collapse", statement, "n/a", "", "collapse", "not testable on this "
                    "grid", rests_on(runs))

    against_alpha = _per_seed_curves(runs, "alpha")
    against_sqrt_h_alpha = _per_seed_curves(runs, "sqrt_h_alpha_level")

    def gain(weights):  # how much closer the curves are against √h·α than against α
        return _spread(against_alpha, weights) - _spread(against_sqrt_h_alpha, weights)

    seeds = runs["init_seed"].unique()
    rng = np.random.default_rng(0)
    observed = gain({s: 1.0 for s in seeds})
    boot = [gain(dict(zip(*np.unique(rng.choice(seeds, len(seeds)), return_counts=True))))
            for _ in range(N_BOOT)]
    low, high = percentile_interval(boot) if len(seeds) > 1 else (np.nan, np.nan)
    spread = _spread(against_sqrt_h_alpha, {s: 1.0 for s in seeds})
    if not np.isfinite(observed * low * high):  # one seed leaves no uncertainty to judge by
        verdict = "not testable on this grid"
    elif low <= 0 <= high:
        verdict = "inconclusive"
    else:
        verdict = "agrees" if observed > 0 else "disagrees"
    return _row("(i) collapse", statement,
                f"spread {_num(spread, '.3f')} vs √h·α, {_num(spread + observed, '.3f')} vs α",
                f"difference in [{_num(low, '.3f')}, {_num(high, '.3f')}]",
                "curves overlap vs √h·α", verdict, rests_on(runs))


# -- (ii) which regime is better -------------------------------------------------------------

def _deepest_levels(part, ranges):
    """The smallest level in the feature range and the largest in the lazy range, or None."""
    levels = np.sort(part["sqrt_h_alpha_level"].unique())

    def inside(regime):
        low, high = ranges[regime]
        return [x for x in levels if (low is None or x >= low) and (high is None or x <= high)]

    feature, lazy = inside("feature"), inside("lazy")
    return (feature[0], lazy[-1]) if feature and lazy else None


def _paired(part, levels):
    """Per-seed rows of the feature and lazy level, paired on the init seed (same w0)."""
    by_level = [part[part["sqrt_h_alpha_level"] == x].set_index("init_seed") for x in levels]
    seeds = sorted(set(by_level[0].index) & set(by_level[1].index))
    return [b.loc[seeds] for b in by_level], seeds


def _ensemble_difference(feature, lazy, seeds, rng):
    """Ensemble error at the feature level minus at the lazy level, its bootstrap stderr and
    its LEVEL percentile interval (members resampled over the seeds)."""
    outputs_f, labels = ensemble.load_member_outputs(feature["run_dir"])
    outputs_l, labels_l = ensemble.load_member_outputs(lazy["run_dir"])
    if not np.array_equal(labels, labels_l):
        return float("nan"), float("nan")

    def difference(index):
        return (losses.error_rate(outputs_f[index].mean(axis=0), labels)
                - losses.error_rate(outputs_l[index].mean(axis=0), labels))

    all_members = np.arange(len(seeds))
    boot = [difference(rng.integers(len(seeds), size=len(seeds))) for _ in range(N_BOOT)]
    return float(difference(all_members)), float(np.std(boot, ddof=1)), percentile_interval(boot)


def better(interval):
    """"feature" or "lazy", the regime with the lower test error once the LEVEL interval of
    err_feature − err_lazy excludes 0, else None."""
    low, high = interval
    return "lazy" if low > 0 else "feature" if high < 0 else None


def regime_differences(runs, ranges):
    """err_feature − err_lazy per width, for single networks and for ensembles.

    Compares the smallest √h·α level in the feature range with the largest in the lazy range
    (`ranges`, from `fits.regime_ranges`), the runs paired on their init seed (same w0):
    single networks by the mean paired difference ± its SEM, its interval from Student's t
    with (seeds − 1) degrees of freedom; ensembles (the mean of the members' outputs, eq. 15)
    by the difference of their errors, its bootstrap stderr and percentile interval over the
    seeds. Yields dicts with width, kind ("single network" or "ensemble"), levels ((feature,
    lazy), None where a regime has no level), part (that width's runs), seeds (the paired
    ones), difference, stderr and interval (NaN with fewer than two paired seeds).
    `runs` needs run_dir for the ensembles.
    """
    rng = np.random.default_rng(0)
    nan = float("nan")
    for width, part in runs.groupby("width"):
        levels = _deepest_levels(part, ranges)
        for kind in ("single network", "ensemble"):
            result = dict(width=width, kind=kind, levels=levels, part=part, seeds=[],
                          difference=nan, stderr=nan, interval=(nan, nan))
            if levels is not None:
                (feature, lazy), result["seeds"] = _paired(part, levels)
            if len(result["seeds"]) < 2:
                pass  # no uncertainty to judge by: NaN
            elif kind == "single network":
                paired = feature["test_error"].to_numpy() - lazy["test_error"].to_numpy()
                mean, stderr = _mean_and_stderr(paired)
                spread = half_width(stderr, len(paired) - 1)
                result.update(difference=mean, stderr=stderr,
                              interval=(mean - spread, mean + spread))
            else:
                result["difference"], result["stderr"], result["interval"] = \
                    _ensemble_difference(feature, lazy, result["seeds"], rng)
            yield result


def _better_regime(runs, ranges):
    rows = []
    dataset = runs["dataset"].iloc[0] if "dataset" in runs and len(runs) else None
    paper = BETTER_REGIME.get(dataset)
    for found in regime_differences(runs, ranges):
        part, levels = found["part"], found["levels"]
        difference, stderr = found["difference"], found["stderr"]
        statement = (f"{found['kind']}, h = {found['width']:g}: the lazy regime has the lower "
                     "test error")
        if levels is None:
            rows.append(_row("(ii) better regime", statement, "n/a", "", paper or "not "
                             "stated", "not testable on this grid", rests_on(part)))
            continue
        if not np.isfinite(difference):
            verdict, ours = "not testable on this grid", "n/a"
        else:
            regime = better(found["interval"])
            ours = f"{regime or 'neither'} (err_feature − err_lazy = {difference:+.4f})"
            verdict = ("inconclusive" if regime is None else
                       "agrees" if regime == paper else
                       "disagrees" if paper else "not stated by the paper")
        low, high = found["interval"]
        rows.append(_row("(ii) better regime", statement, ours,
                         f"± {_num(stderr, '.4f')}, in [{_num(low, '.4f')}, {_num(high, '.4f')}]",
                         paper or "not stated", at_paper_n(verdict, _n_train(part)),
                         rests_on(part, levels)))
    return rows


INTERMEDIATE = "intermediate optimum"
AT_AN_END = "an end level is better (no intermediate optimum)"


def optimum(part):
    """Where one width's test error is lowest over √h·α, every level counted (Section 7:
    "for Fashion-MNIST, the optimal performance occurs in a narrow range of intermediate α").

    `level` is the level of lowest mean test error over seeds, `interior` whether it is
    neither the smallest nor the largest level. The interior level of lowest mean
    (`interior_level`) is compared with each end, the runs paired by init seed (the seeds run
    at all three): err_interior − err_smallest and err_interior − err_largest, each the mean
    of the paired differences ± its SEM, its interval from Student's t with (paired seeds − 1)
    degrees of freedom. That level is picked from the data among the k interior ones, so each
    interval is Bonferroni-corrected to `confidence` 1 − (1 − LEVEL)/k, which holds for all k
    at once. Verdict: INTERMEDIATE when both intervals lie below 0 (both must hold: no
    correction for the two ends), AT_AN_END when either lies above 0 (its false-alarm rate
    at most twice 1 − LEVEL), else "inconclusive";
    "not testable on this grid" with fewer than 3 levels or 2 paired seeds.

    `part` has sqrt_h_alpha_level, init_seed and test_error. Returns a dict of verdict,
    level, interior, interior_level, confidence, seeds (the paired ones) and, for end in
    "smallest" and "largest", {end}_difference, {end}_stderr and {end}_interval (NaN where
    not testable).
    """
    nan = float("nan")
    result = dict(verdict="not testable on this grid", level=nan, interior=False,
                  interior_level=nan, confidence=nan, seeds=[])
    for end in ("smallest", "largest"):
        result.update({f"{end}_difference": nan, f"{end}_stderr": nan,
                       f"{end}_interval": (nan, nan)})
    table = part.pivot_table(index="init_seed", columns="sqrt_h_alpha_level",
                             values="test_error")
    levels = np.sort(table.columns.to_numpy(float))
    if levels.size < 3:
        return result
    means = table.mean()
    best = float(means.loc[levels[1:-1]].idxmin())
    result.update(level=float(means.idxmin()), interior_level=best,
                  confidence=1 - (1 - LEVEL) / (levels.size - 2))
    result["interior"] = bool(levels[0] < result["level"] < levels[-1])
    paired = table[[best, levels[0], levels[-1]]].dropna()
    result["seeds"] = list(paired.index)
    if len(paired) < 2:
        return result
    for end, x in (("smallest", levels[0]), ("largest", levels[-1])):
        difference, stderr = _mean_and_stderr((paired[best] - paired[x]).to_numpy(float))
        spread = half_width(stderr, len(paired) - 1, result["confidence"])
        result.update({f"{end}_difference": difference, f"{end}_stderr": stderr,
                       f"{end}_interval": (difference - spread, difference + spread)})
    intervals = [result["smallest_interval"], result["largest_interval"]]
    result["verdict"] = (INTERMEDIATE if all(high < 0 for _, high in intervals) else
                         AT_AN_END if any(low > 0 for low, _ in intervals) else
                         "inconclusive")
    return result


# -- (iii) fluctuations and ensembles ---------------------------------------------------------

def _in(ranges, regime, x):
    low, high = ranges[regime]
    return (low is None or x >= low) and (high is None or x <= high)


def _slopes_against_width(table, column, ranges, regime, log_y):
    """The slope of column (or its log) against log h at each level of the regime."""
    slopes = []
    for x, part in table.groupby("sqrt_h_alpha_level"):
        part = part[np.isfinite(part[column].astype(float))]
        if not _in(ranges, regime, x) or part["width"].nunique() < 2:
            continue
        y = part[column].to_numpy(float)
        if log_y:
            if np.any(y <= 0):
                continue
            y = np.log(y)
        slopes.append(np.polyfit(np.log(part["width"].to_numpy(float)), y, 1)[0])
    return np.array(slopes)


def _mean_and_stderr(values):
    if values.size == 0:
        return float("nan"), float("nan")
    stderr = float(values.std(ddof=1) / np.sqrt(values.size)) if values.size > 1 else float("nan")
    return float(values.mean()), stderr


def _fluctuations(runs, ensembles, ranges):
    rows = []
    if ensembles.empty or "var_F" not in ensembles:
        return rows
    ensembles = ensembles.assign(sqrt_h_alpha_level=ensembles["sqrt_h_alpha"].map(fits.level))
    n_train = _n_train(runs)
    for regime in fits.REGIMES:
        levels = [x for x in ensembles["sqrt_h_alpha_level"].unique() if _in(ranges, regime, x)]
        var_slopes = _slopes_against_width(ensembles, "var_F", ranges, regime, log_y=True)
        slope, stderr = _mean_and_stderr(var_slopes)
        rows.append(_row("(iii) Var F ~ 1/h", f"{regime} regime: slope of log Var F vs log h",
                         _num(slope, ".2f"),
                         f"± {_num(half_width(stderr, var_slopes.size - 1), '.2f')} over levels "
                         f"({LEVEL:.0%})", "-1",
                         _at_small_n(_verdict(slope + 1.0, stderr, var_slopes.size - 1,
                                              SLOPE_TOLERANCE), n_train),
                         rests_on(runs, levels)))
        single, _ = _mean_and_stderr(np.abs(_slopes_against_width(
            ensembles, "mean_test_error", ranges, regime, log_y=False)))
        flat = np.abs(_slopes_against_width(ensembles, "ensemble_test_error", ranges, regime,
                                            log_y=False))
        averaged, averaged_stderr = _mean_and_stderr(flat)
        spread = half_width(averaged_stderr, flat.size - 1)
        rows.append(_row("(iii) ensemble error vs h",
                         f"{regime} regime: the ensemble's error is nearly independent of h "
                         "(|d err/d ln h| at most half the single networks')",
                         f"{_num(averaged, '.4f')} (single networks: {_num(single, '.4f')})",
                         f"± {_num(spread, '.4f')} over levels ({LEVEL:.0%})", "≈ 0",
                         _flat(averaged, spread, single), rests_on(runs, levels)))
    return rows


def _flat(averaged, spread, single):
    """The verdict on "the ensemble's |slope| is at most half the single networks'": agrees
    when its whole interval is below that bound, disagrees when it is wholly above, else
    inconclusive (untestable with fewer than two levels: no interval)."""
    if not np.isfinite(averaged * single * spread):
        return "not testable on this grid"
    bound = 0.5 * single
    return ("agrees" if averaged + spread <= bound else
            "disagrees" if averaged - spread > bound else "inconclusive")


# -- (iv) exponents ------------------------------------------------------------------------

def _exponents(fit_table, runs):
    rows = []
    for fit in fit_table.itertuples():
        depth = "" if pd.isna(fit.depth) else f"L = {fit.depth:g}, "
        statement = f"{depth}{fit.regime} regime: slope of {fit.observable} vs √h·α"
        if fit.paper is None or pd.isna(fit.paper) or fit.n_levels < 3:
            verdict = "not testable on this grid" if fit.n_levels < 3 else "no paper value"
        else:
            verdict = _verdict(fit.slope - fit.paper, fit.stderr, _seed_dof(fit),
                               SLOPE_TOLERANCE)
        low = "" if pd.isna(fit.range_low) else f"{fit.range_low:.3g} ≤ "
        high = "" if pd.isna(fit.range_high) else f" ≤ {fit.range_high:.3g}"
        rows.append(_row("(iv) exponent", statement, _num(fit.slope, ".3f"),
                         f"± {_num(half_width(fit.stderr, _seed_dof(fit)), '.3f')} "
                         f"({LEVEL:.0%})",
                         "n/a" if fit.paper is None or pd.isna(fit.paper) else f"{fit.paper:g}",
                         verdict, f"{low}√h·α{high}: {fit.n_levels} levels, {fit.n_runs} runs; "
                         + rests_on(runs)))
    return rows


def _seed_dof(fit):
    """The degrees of freedom of a fitted slope's bootstrap error over init seeds: seeds − 1
    (a fits table without n_seeds: levels − 2, those of the straight line alone)."""
    seeds = getattr(fit, "n_seeds", np.nan)
    return int(seeds) - 1 if pd.notna(seeds) else int(fit.n_levels) - 2


def judge(runs, ensembles, fit_table, feature=None, lazy=None):
    """The claims table: one row per testable statement (COLUMNS), in the order (i)-(iv).

    `runs` and `ensembles` hold the used runs only, with sqrt_h_alpha_level; `fit_table`
    is `fits.fit_table`'s, and `feature`, `lazy` the explicit regime ranges it was given.
    Each depth is judged on its own.
    """
    if runs.empty or not {"width", "sqrt_h_alpha_level", "test_error", "init_seed"} <= set(runs):
        return pd.DataFrame(columns=list(COLUMNS))
    rows = []
    for depth, part in fits.by_depth(runs):
        ranges, _ = fits.regime_ranges(part, feature, lazy)
        same_depth = (ensembles if depth is None or "depth" not in ensembles
                      else ensembles[ensembles["depth"] == depth])
        rows.append(_collapse(part))
        if "run_dir" in part:
            rows += _better_regime(part, ranges)
        rows += _fluctuations(part, same_depth, ranges)
    rows += _exponents(fit_table, runs)
    return pd.DataFrame(rows, columns=list(COLUMNS))
