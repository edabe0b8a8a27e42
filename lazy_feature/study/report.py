"""A sweep's report: the paper's figures, the fitted exponents, the claims judged, a summary.

`runs` has one row per run: the config (alpha, width, depth, init_seed, ...), the metrics
(test_error, converged, weight_drift, ...), the observables (t_half_rescaled, ...), a
`run_dir` and, where the NTK was computed, ntk_drift_test, frozen_init_test_error, ...;
`ensembles` one row per (α, h, ...) ensemble of used runs (`sweep.ensembles_table`). Only
the used runs (`sweep.mark_used`: converged, finite) enter a statistic; the summary says how
many runs each (α, h) point used and excluded. The report directory holds
  summary.md          the claims (`claims`), runs per point, performance, exponents, figures;
  claims.csv, fits.csv the claims and the fitted exponents as tables;
  <figure>.png/.svg   each figure of `figures.FIGURES` and `appendix.FIGURES`, and
                      <figure>.csv, the data drawn.
A figure whose columns are absent or all NaN is skipped and the summary says why.
"""

import numpy as np
import pandas as pd

from lazy_feature.run import artifact
from lazy_feature.run.config import sqrt_h_alpha
from lazy_feature.study import appendix, claims, figures, fits, observables, sweep

FORMATS = ("png", "svg")
SUMMARY, FITS, CLAIMS = "summary.md", "fits.csv", "claims.csv"
MIN_RUNS = 3  # fewer used runs at an (α, h) point than this is warned about


def _with_rescalings(df):
    """`df` plus √h·α, its level, √h·‖w − w0‖/‖w0‖ and h·Var F where their inputs exist."""
    df = df.copy()
    if {"alpha", "width"} <= set(df.columns):
        df["sqrt_h_alpha"] = sqrt_h_alpha(df["alpha"], df["width"])
    if "sqrt_h_alpha" in df:
        df["sqrt_h_alpha_level"] = df["sqrt_h_alpha"].astype(float).map(fits.level)
    if {"weight_drift", "width"} <= set(df.columns):
        df["rescaled_weight_drift"] = observables.rescaled_weight_drift(df["weight_drift"],
                                                                         df["width"])
    if {"var_F", "width"} <= set(df.columns):
        df["h_var_F"] = df["width"] * df["var_F"]
    return df


# -- summary ---------------------------------------------------------------------------

def _fmt(value, spec=".3g"):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _counts_table(runs, min_runs):
    """Per (α, h): runs used and excluded (by reason), and a warning below `min_runs`."""
    if not {"alpha", "width"} <= set(runs.columns):
        return "No run has alpha and width columns.", []
    rows, warnings = [], []
    for (alpha, width), part in runs.groupby(["alpha", "width"]):
        used = int(part["used"].sum())
        reasons = part.loc[~part["used"], "excluded_reason"].value_counts()
        excluded = ", ".join(f"{n} {reason}" for reason, n in reasons.items()) or "none"
        rows.append([_fmt(alpha), _fmt(width, "g"), _fmt(sqrt_h_alpha(alpha, width)), used,
                     excluded])
        if used < min_runs:
            warnings.append(f"α = {alpha:.3g}, h = {width:g}: {used} used run(s), fewer than "
                            f"{min_runs}; its statistics are unreliable or absent")
    table = _markdown_table(["α", "h", "√h·α", "used", "excluded"], rows)
    return table, warnings


def _performance_table(runs, ensembles):
    """Per-(α, h) means over the used runs, joined with the ensemble statistics."""
    keys = ["alpha", "width"]
    columns = [("test_error", "test error (mean ± std)"), ("ntk_drift_test", "‖ΔΘ‖/‖Θ0‖"),
               ("weight_drift", "‖w−w0‖/‖w0‖"), ("frozen_init_test_error", "frozen init"),
               ("frozen_final_test_error", "frozen final")]
    table = None
    if set(keys) <= set(runs.columns) and not runs.empty:
        columns = [(c, name) for c, name in columns if c in runs and runs[c].notna().any()]
        table = runs.groupby(keys).size().rename("runs").reset_index()
        for column, _ in columns:
            stats = figures.mean_over_seeds(runs, keys, column)[keys + ["mean", "std"]]
            table = table.merge(stats.rename(columns={"mean": column, "std": column + "_std"}),
                                on=keys, how="left")
    else:
        columns = []
    ensemble_columns = [c for c in ("n_members", "ensemble_test_error", "var_F", "h_var_F")
                        if c in ensembles]
    if set(keys) <= set(ensembles.columns):
        ensemble_table = ensembles[keys + ensemble_columns]
        table = ensemble_table if table is None else table.merge(ensemble_table, on=keys,
                                                                 how="outer")
    if table is None:
        return "No used run or ensemble has alpha and width columns."
    header = ["α", "h", "√h·α", "runs"] + [name for _, name in columns] + [
        {"n_members": "members", "ensemble_test_error": "ensemble error",
         "var_F": "Var F (N − 1)", "h_var_F": "h·Var F"}[c] for c in ensemble_columns]
    rows = []
    for row in table.sort_values(keys).to_dict("records"):
        cells = [_fmt(row["alpha"]), _fmt(row["width"], "g"),
                 _fmt(sqrt_h_alpha(row["alpha"], row["width"])), _fmt(row.get("runs"), "g")]
        cells += [f"{_fmt(row[c], '.4f')} ± {_fmt(row[c + '_std'], '.4f')}"
                  if c == "test_error" else _fmt(row[c]) for c, _ in columns]
        cells += [_fmt(row[c], "g" if c == "n_members" else ".3g") for c in ensemble_columns]
        rows.append(cells)
    return _markdown_table(header, rows)


def _range(low, high):
    low = "" if pd.isna(low) else f"{low:.3g} ≤ "
    high = "" if pd.isna(high) else f" ≤ {high:.3g}"
    return f"{low}√h·α{high}"


def _exponent_table(fit_table):
    header = ["L", "observable vs √h·α", "regime", "range", "levels", "runs",
              "fitted slope ± bootstrap std", "paper", "prediction"]
    rows = [[_fmt(f.depth, "g"), f.observable, f.regime, _range(f.range_low, f.range_high),
             f.n_levels, f.n_runs, f"{_fmt(f.slope, '.3f')} ± {_fmt(f.stderr, '.3f')}",
             _fmt(f.paper, ".3g"), _fmt(f.predicted, ".3g")]
            for f in fit_table.itertuples()]
    return _markdown_table(header, rows)


def _claims_table(table):
    return _markdown_table(["claim", "statement", "ours", "±", "paper", "verdict", "rests on"],
                           table[list(claims.COLUMNS)].itertuples(index=False))


def _summary(runs, used, ensembles, fit_table, claims_table, drawn, skipped, min_runs):
    excluded = runs.loc[~runs["used"], "excluded_reason"].value_counts() if len(runs) else {}
    counts, warnings = _counts_table(runs, min_runs)
    crossovers = fit_table.drop_duplicates("depth")[["depth", "crossover"]]
    parts = [
        "# Lazy vs feature training: summary",
        f"{len(runs)} runs: {len(used)} used, {len(runs) - len(used)} excluded"
        + (f" ({', '.join(f'{n} {r}' for r, n in excluded.items())})" if len(excluded) else "")
        + f"; {len(ensembles)} ensembles. Only converged runs (every training margin > 1, "
        "finite losses) enter a statistic, an ensemble, a fit or a figure.",
        "## The paper's claims on this grid",
        "Verdicts: agrees / disagrees within our uncertainty (± is the half-width of a "
        f"{claims.LEVEL:.0%} interval: Student's t over init seeds or levels with their "
        "degrees of freedom, or a bootstrap over seeds; slopes also within "
        f"{claims.SLOPE_TOLERANCE:g}), or why the grid cannot judge it; n is in \"rests on\".",
        _claims_table(claims_table) if len(claims_table) else "No claim can be tested.",
        "## Runs per (α, h)",
        counts,
    ]
    if warnings:
        parts.append("\n".join(f"- **Warning:** {w}" for w in warnings))
    parts += [
        "## Performance and fluctuations per (α, h)",
        "Used runs only. Test error and drifts: mean over runs (± sample std); ensemble "
        "error: sign of the mean output F̄ (eq. 15); Var F: eq. 16 with the unbiased "
        "estimator (dividing by N − 1 members).",
        _performance_table(used, ensembles),
        "## Power-law exponents",
        "Slopes of log O vs log √h·α on the means over seeds, each over the stated range "
        f"inside one regime: a factor {fits.MARGIN:g} from the crossover √h·α*, where the "
        "kernel drift is 1 (Section 5), unless the sweep states its ranges; ± is the std over "
        f"{fits.N_BOOT} bootstrap resamples of the init seeds. Crossover: "
        + (", ".join(f"{'' if pd.isna(d) else f'L = {d:g}: '}√h·α* = {x:.3g}"
                     for d, x in crossovers.itertuples(index=False)) or "n/a")
        + ". Paper: eq. 18 and Table 2 (−a), eq. 30 and Table 2 (−b), Section 5 and eq. 29 "
        "(lazy −1), eq. 19 (t_{L/2}); prediction: eq. 24, Section 6.",
        _exponent_table(fit_table) if not fit_table.empty else "No exponent could be fitted.",
        "## Figures",
        "\n".join(f"- {', '.join(f'`{name}.{fmt}`' for fmt in FORMATS)} (data: `{name}.csv`): "
                  f"{caption}" for name, caption in drawn) or "None.",
    ]
    if skipped:
        parts += ["## Skipped figures",
                  "\n".join(f"- `{name}`: {why}" for name, why in skipped)]
    return "\n\n".join(parts) + "\n"


def default_dir(sweep_dir: str) -> str:
    """Where a sweep's report goes unless told otherwise."""
    return artifact.join(sweep_dir, "report")


def write_report(runs: pd.DataFrame, ensembles: pd.DataFrame, output_dir: str,
                 feature_range: tuple[float | None, float | None] | None = None,
                 lazy_range: tuple[float | None, float | None] | None = None,
                 min_runs: int = MIN_RUNS) -> list[str]:
    """Write the figures (PNG, SVG and their data as CSV), fits.csv, claims.csv and summary.md.

    `feature_range`, `lazy_range`: explicit √h·α ranges of the fits (`fits.regime_ranges`).
    A figure whose data is missing is not written (an older copy is removed, so the
    directory always matches the summary), and the summary lists it as skipped.
    Returns the paths written, summary.md last.
    """
    artifact.check_writable(output_dir)
    runs = _with_rescalings(sweep.mark_used(runs))
    used = runs[runs["used"]]
    ensembles = _with_rescalings(ensembles)
    fit_table = fits.fit_table(used, feature_range, lazy_range)
    claims_table = claims.judge(used, ensembles, fit_table, feature_range, lazy_range)
    tables = figures.Tables(used, ensembles, fit_table)
    written, drawn, skipped = [], [], []
    for figure in figures.FIGURES + appendix.FIGURES:
        paths = [artifact.join(output_dir, f"{figure.name}.{fmt}") for fmt in FORMATS + ("csv",)]
        try:
            data = figure.data(tables)
        except figures.Missing as why:
            skipped.append((figure.name, str(why)))
            for path in paths:
                artifact.remove(path)
            continue
        fig = figure.render(data)
        for path, fmt in zip(paths, FORMATS):
            artifact.write_figure(path, fig, fmt)
        artifact.write_csv(paths[-1], data)
        written += paths
        drawn.append((figure.name, figure.caption))
    for name, table in ((FITS, fit_table), (CLAIMS, claims_table)):
        artifact.write_csv(artifact.join(output_dir, name), table)
        written.append(artifact.join(output_dir, name))
    summary = artifact.join(output_dir, SUMMARY)
    artifact.write_text(summary, _summary(runs, used, ensembles, fit_table, claims_table, drawn,
                                          skipped, min_runs) + _appendix_summary(used))
    return written + [summary]


# -- the appendices' numbers -------------------------------------------------------------------

def _appendix_summary(used):
    """The summary's sections on the appendices' observables the runs have ("" if none):
    the ReLU kernel drift's three power laws (Appendix F, Fig. 12)."""
    relu = fits.three_power_laws(appendix.relu_runs(used))
    if relu.empty:
        return ""
    rows = [[_fmt(f.depth, "g"), f.regime, _range(f.range_low, f.range_high), f.n_levels,
             f.n_runs, f"{_fmt(f.slope, '.3f')} ± {_fmt(f.stderr, '.3f')}", _fmt(f.paper, ".3g")]
            for f in relu.itertuples()]
    return "\n".join([
        "", "## ReLU kernel drift: three power laws (Appendix F, Fig. 12)", "",
        "‖Θ−Θ0‖/‖Θ0‖ (test) of the ReLU runs vs √h·α, cut into the three consecutive ranges "
        f"(at least {fits.MIN_SEGMENT} levels each) where separate power laws fit best; ± is the "
        f"std over {fits.N_BOOT} bootstrap resamples of the init seeds. Paper: −1/2 where the "
        "network changes differentiable patches, −1 in the lazy regime; feature: eq. 24's −a.",
        "", _markdown_table(["L", "regime", "range", "levels", "runs",
                             "fitted slope ± bootstrap std", "paper"], rows), ""])
