"""Figures 3, 4, 5 and 9 of the paper and a markdown summary, from tables of runs and ensembles.

`runs` has one row per run: the config (alpha, width, depth, init_seed, ...), the metrics
(test_error, converged, weight_drift, ...), the observables (t_half_rescaled, ...), a
`run_dir` and, where the NTK was measured, ntk_drift_test, ntk_drift_train,
frozen_init_test_error and frozen_final_test_error. `ensembles` has one row per (alpha,
width) ensemble with the statistics of `ensemble.ensemble_statistics`. A figure whose
columns are absent or all NaN is skipped and the summary says why.
"""
import dataclasses
import os

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import NullFormatter

from lazy_feature import artifact, exponents, observables
from lazy_feature.config import sqrt_h_alpha

FORMATS = ("png", "svg")
SUMMARY = "summary.md"
FEATURE = (None, 1.0)  # √h·α < 1
LAZY = (1.0, None)  # √h·α > 1
N_BOOT = 200
_LINESTYLES = ("-", "--", ":", "-.")


class _Missing(Exception):
    """The data a figure needs is not in the tables."""


def _require(df, *columns):
    absent = [c for c in columns if c not in df or df[c].isna().all()]
    if absent:
        raise _Missing(f"no data in column(s) {', '.join(absent)}")


def _level(x):
    """√h·α to 3 significant digits: runs designed at one √h·α share one level."""
    return float(f"{x:.3g}")


def _with_rescalings(df):
    """`df` plus √h·α, its level, √h·‖w − w0‖/‖w0‖ and h·Var F where their inputs exist."""
    df = df.copy()
    if {"alpha", "width"} <= set(df.columns):
        df["sqrt_h_alpha"] = sqrt_h_alpha(df["alpha"], df["width"])
    if "sqrt_h_alpha" in df:
        df["sqrt_h_alpha_level"] = df["sqrt_h_alpha"].astype(float).map(_level)
    if {"weight_drift", "width"} <= set(df.columns):
        df["rescaled_weight_drift"] = observables.rescaled_weight_drift(df["weight_drift"],
                                                                         df["width"])
    if {"var_F", "width"} <= set(df.columns):
        df["h_var_F"] = df["width"] * df["var_F"]
    return df


def _mean(df, by, y):
    """Mean, sample std and standard error of y over the rows (seeds) of each `by` group."""
    values = df.assign(**{y: df[y].astype(float)}).dropna(subset=[y])
    stats = values.groupby(by)[y].agg(["mean", "std", "count"]).reset_index()
    stats["sem"] = stats["std"] / np.sqrt(stats["count"])
    return stats


def _lines(ax, table, by, x, y, yerr=None, label="{:.3g}", linestyle="-", logy=False):
    """One line per value of `by` against log x, coloured by rank along viridis."""
    values = sorted(table[by].unique())
    cmap = matplotlib.colormaps["viridis"]
    for k, value in enumerate(values):
        part = table[table[by] == value].sort_values(x)
        keep = np.isfinite(part[x]) & np.isfinite(part[y]) & (part[x] > 0)
        if logy:
            keep &= part[y] > 0
        part = part[keep]
        if part.empty:
            continue
        ax.errorbar(part[x], part[y], yerr=None if yerr is None else part[yerr],
                    color=cmap(0.9 * k / max(len(values) - 1, 1)), linestyle=linestyle,
                    marker="o", markersize=3, capsize=2,
                    label=None if label is None else label.format(value))
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())  # few decades: minor labels would overlap
    if logy:
        ax.set_yscale("log")


def _legend(ax, title=None):
    if ax.get_legend_handles_labels()[0]:
        ax.legend(title=title, fontsize="small", title_fontsize="small")


def _figure(ncols=1):
    fig = Figure(figsize=(5 * ncols, 4), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(1, ncols, squeeze=False)[0]


# -- fits ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Fit:
    """A power law against √h·α in one regime, with the paper's slope for depth L."""
    column: str
    observable: str
    regime: str
    x_range: tuple
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


_FITS = (
    _Fit("ntk_drift_test", "‖Θ−Θ0‖/‖Θ0‖ (test), −a", "feature", FEATURE,
         _decaying(exponents.paper_drift_exponent)),
    _Fit("ntk_drift_test", "‖Θ−Θ0‖/‖Θ0‖ (test)", "lazy", LAZY,
         _constant(exponents.LAZY_DRIFT_SLOPE)),
    _Fit("rescaled_weight_drift", "√h‖w−w0‖/‖w0‖, −b", "feature", FEATURE,
         _decaying(exponents.paper_weight_drift_exponent)),
    _Fit("rescaled_weight_drift", "√h‖w−w0‖/‖w0‖", "lazy", LAZY,
         _constant(exponents.LAZY_DRIFT_SLOPE)),
    _Fit("t_half", "t_{L/2}", "feature", FEATURE, _constant(exponents.T_HALF_SLOPE)),
)


def _by_depth(runs):
    """(L, rows) for each depth L in `runs`, or (None, runs) without a depth column."""
    if "depth" not in runs or runs["depth"].isna().all():
        return [(None, runs)]
    return [(int(depth), rows) for depth, rows in runs.groupby("depth")]


_FIT_COLUMNS = ("depth", "column", "observable", "regime", "slope", "stderr", "prefactor",
                "paper", "predicted", "paper_prefactor", "x_min", "x_max", "n_points")


def _fit_exponents(runs):
    """The slopes of `_FITS` per depth, with bootstrap errors over init seeds.

    `prefactor` belongs to the fitted slope, `paper_prefactor` anchors the paper's slope
    to the same points (the reference lines of the figures).
    """
    rows = []
    if {"init_seed", "sqrt_h_alpha_level"} <= set(runs.columns):
        for depth, part in _by_depth(runs):
            for fit in _FITS:
                if fit.column not in part or part[fit.column].isna().all():
                    continue
                # Levels, not raw √h·α: a design value of exactly 1 is in neither regime.
                slope, stderr = exponents.bootstrap_exponent(
                    part, "sqrt_h_alpha_level", fit.column, "init_seed", N_BOOT,
                    x_range=fit.x_range)
                means = exponents.per_x_means(part, "sqrt_h_alpha_level", fit.column,
                                              fit.x_range)
                paper, predicted = fit.paper(depth)
                rows.append((depth, fit.column, fit.observable, fit.regime, slope, stderr,
                              exponents.fit_power_law(means.index, means, slope)[1],
                              paper, predicted,
                              exponents.fit_power_law(means.index, means, paper)[1]
                              if paper is not None else float("nan"),
                              means.index.min(), means.index.max(), len(means)))
    return pd.DataFrame(rows, columns=list(_FIT_COLUMNS))


# -- figures ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Tables:
    runs: pd.DataFrame
    ensembles: pd.DataFrame
    fits: pd.DataFrame


def _fig3b(tables):
    runs = tables.runs
    _require(runs, "test_error", "width", "sqrt_h_alpha")
    fig, (ax,) = _figure()
    _lines(ax, _mean(runs, ["sqrt_h_alpha_level", "width"], "test_error"),
           "sqrt_h_alpha_level", "width", "mean", "sem", label="√h·α = {:.3g}")
    if "frozen_init_test_error" in runs and runs["frozen_init_test_error"].notna().any():
        frozen = _mean(runs, ["width"], "frozen_init_test_error").sort_values("width")
        ax.errorbar(frozen["width"], frozen["mean"], yerr=frozen["sem"], color="k",
                    capsize=2, label="frozen NTK at init")
    ax.set(xlabel="h", ylabel="test error", title="Fig. 3(b): test error vs h at fixed √h·α")
    _legend(ax)
    return fig


def _fig3c(tables):
    _require(tables.runs, "test_error", "alpha", "width")
    fig, (ax,) = _figure()
    _lines(ax, _mean(tables.runs, ["width", "alpha"], "test_error"), "width", "alpha", "mean",
           "sem", label="h = {:g}")
    ax.set(xlabel="α", ylabel="test error", title="Fig. 3(c): test error vs α")
    _legend(ax)
    return fig


def _fig3d(tables):
    _require(tables.runs, "test_error", "alpha", "width")
    errors = _mean(tables.runs, ["width", "alpha", "sqrt_h_alpha"], "test_error")
    by_width = errors.groupby("width")["mean"]
    low, high = by_width.transform("min"), by_width.transform("max")
    errors["rescaled"] = (errors["mean"] - low) / (high - low)
    fig, (ax,) = _figure()
    _lines(ax, errors, "width", "sqrt_h_alpha", "rescaled", label="h = {:g}")
    ax.set(xlabel="√h·α", ylabel="(err − min) / (max − min)",
           title="Fig. 3(d): rescaled test error vs √h·α")
    _legend(ax)
    return fig


def _fig4a(tables):
    _require(tables.ensembles, "var_F", "width", "sqrt_h_alpha")
    fig, (ax,) = _figure()
    _lines(ax, tables.ensembles, "sqrt_h_alpha_level", "width", "var_F",
           label="√h·α = {:.3g}", logy=True)
    ax.set(xlabel="h", ylabel="Var F (eq. 16)", title="Fig. 4(a): Var F vs h")
    _legend(ax)
    return fig


def _fig4b(tables):
    _require(tables.ensembles, "var_F", "width", "sqrt_h_alpha")
    fig, (ax,) = _figure()
    _lines(ax, tables.ensembles, "width", "sqrt_h_alpha", "h_var_F", label="h = {:g}",
           logy=True)
    ax.set(xlabel="√h·α", ylabel="h·Var F", title="Fig. 4(b): h·Var F vs √h·α")
    _legend(ax)
    return fig


def _single_and_ensemble(ensembles, by, x, label, legend_title):
    """Mean single-network error (solid, ± std) and ensemble error (dashed) against x."""
    _require(ensembles, "mean_test_error", "ensemble_test_error", x, by)
    fig, (ax,) = _figure()
    _lines(ax, ensembles, by, x, "mean_test_error",
           "std_test_error" if "std_test_error" in ensembles else None, label=label)
    _lines(ax, ensembles, by, x, "ensemble_test_error", label=None, linestyle="--")
    ax.set(ylabel="test error")
    ax.set_title("solid: single network (± std), dashed: ensemble average", fontsize="small")
    _legend(ax, legend_title)
    return fig, ax


def _fig4c(tables):
    fig, ax = _single_and_ensemble(tables.ensembles, "width", "sqrt_h_alpha", "h = {:g}", None)
    ax.set(xlabel="√h·α")
    fig.suptitle("Fig. 4(c): single and ensemble test error vs √h·α")
    return fig


def _fig4d(tables):
    fig, ax = _single_and_ensemble(tables.ensembles, "sqrt_h_alpha_level", "width",
                                   "{:.3g}", "√h·α")
    ax.set(xlabel="h")
    fig.suptitle("Fig. 4(d): single and ensemble test error vs h")
    return fig


def _power_law_line(ax, x, slope, prefactor, label, style):
    x = np.geomspace(np.min(x), np.max(x), 20)
    ax.plot(x, prefactor * x ** slope, "k" + style, linewidth=1, label=label)


def _drift_figure(tables, column, ylabel, title):
    """`column` vs α and vs √h·α per width, with the feature fit and the lazy slope −1."""
    runs = tables.runs
    _require(runs, column, "alpha", "width")
    fig, (left, right) = _figure(2)
    _lines(left, _mean(runs, ["width", "alpha"], column), "width", "alpha", "mean", "sem",
           label="h = {:g}", logy=True)
    _lines(right, _mean(runs, ["width", "sqrt_h_alpha"], column), "width", "sqrt_h_alpha",
           "mean", "sem", label="h = {:g}", logy=True)
    fits = tables.fits
    for fit in fits[fits["column"] == column].itertuples():
        depth = "" if pd.isna(fit.depth) else f"L = {fit.depth:g}: "
        x = [fit.x_min, fit.x_max]
        if fit.regime == "feature" and np.isfinite(fit.slope):
            _power_law_line(right, x, fit.slope, fit.prefactor,
                            f"{depth}fit {fit.slope:.2f} ± {fit.stderr:.2f}", "-")
        elif fit.regime == "lazy" and np.isfinite(fit.paper_prefactor):
            _power_law_line(right, x, fit.paper, fit.paper_prefactor,
                            f"{depth}slope {fit.paper:g} (lazy)", ":")
    left.set(xlabel="α", ylabel=ylabel)
    right.set(xlabel="√h·α", ylabel=ylabel)
    _legend(left)
    _legend(right)
    fig.suptitle(title)
    return fig


def _fig5a(tables):
    return _drift_figure(tables, "ntk_drift_test", "‖Θ(w) − Θ(w0)‖ / ‖Θ(w0)‖",
                         "Fig. 5(a): kernel drift vs α and √h·α (eq. 18)")


def _fig9(tables):
    return _drift_figure(tables, "rescaled_weight_drift", "√h ‖w − w0‖ / ‖w0‖",
                         "Fig. 9: weight drift vs α and √h·α (eqs. 29-30)")


def _fig5b(tables):
    runs = tables.runs
    _require(runs, "run_dir", "alpha", "width")
    logged = runs[runs["run_dir"].map(
        lambda d: isinstance(d, str) and os.path.exists(os.path.join(d, artifact.DYNAMICS)))]
    if logged.empty:
        raise _Missing(f"no {artifact.DYNAMICS} in any run_dir")
    # One initialization per (h, α) keeps the curves readable.
    order = ["width", "alpha"] + (["init_seed"] if "init_seed" in logged else [])
    logged = logged.sort_values(order).drop_duplicates(["width", "alpha"])
    scale = np.log10(logged["sqrt_h_alpha"])
    norm, cmap = Normalize(scale.min(), scale.max()), matplotlib.colormaps["viridis"]
    widths = sorted(logged["width"].unique())
    fig, (left, right) = _figure(2)
    for run in logged.itertuples():
        dynamics = observables.read_dynamics(run.run_dir)
        if not {"t", "rescaled_loss"} <= set(dynamics.columns):
            continue
        t, loss = dynamics["t"].astype(float), dynamics["rescaled_loss"].astype(float)
        keep = (t > 0) & (loss > 0)
        style = dict(color=cmap(norm(np.log10(run.sqrt_h_alpha))), linewidth=1,
                     linestyle=_LINESTYLES[widths.index(run.width) % len(_LINESTYLES)])
        left.plot(t[keep], loss[keep], **style)
        right.plot(observables.rescaled_time(t[keep], run.alpha, run.width), loss[keep], **style)
    for ax, xlabel in ((left, "t"), (right, "t / (√h·α)")):
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel="α² L")
    left.legend([Line2D([], [], color="k", linestyle=_LINESTYLES[k % len(_LINESTYLES)])
                 for k in range(len(widths))], [f"h = {w:g}" for w in widths],
                fontsize="small")
    fig.colorbar(ScalarMappable(norm, cmap), ax=[left, right], label="log10 √h·α")
    fig.suptitle("Fig. 5(b): rescaled loss vs t and t/(√h·α)")
    return fig


def _fig5c(tables):
    runs = tables.runs
    _require(runs, "t_half_rescaled", "alpha", "width")
    fig, (left, right) = _figure(2)
    _lines(left, _mean(runs, ["width", "alpha"], "t_half_rescaled"), "width", "alpha", "mean",
           "sem", label="h = {:g}", logy=True)
    _lines(right, _mean(runs, ["width", "sqrt_h_alpha"], "t_half_rescaled"), "width",
           "sqrt_h_alpha", "mean", "sem", label="h = {:g}", logy=True)
    for ax, xlabel in ((left, "α"), (right, "√h·α")):
        ax.set(xlabel=xlabel, ylabel="t_{L/2} / (√h·α)")
        _legend(ax)
    fig.suptitle("Fig. 5(c): loss-halving time over √h·α (eq. 19)")
    return fig


FIGURES = (
    ("fig3b_test_error_vs_width", "test error vs h at fixed √h·α, frozen NTK in black", _fig3b),
    ("fig3c_test_error_vs_alpha", "test error vs α per width", _fig3c),
    ("fig3d_rescaled_test_error", "rescaled test error vs √h·α per width", _fig3d),
    ("fig4a_var_F_vs_width", "Var F vs h at fixed √h·α", _fig4a),
    ("fig4b_h_var_F_vs_sqrt_h_alpha", "h·Var F vs √h·α per width", _fig4b),
    ("fig4c_ensemble_error_vs_sqrt_h_alpha", "single and ensemble test error vs √h·α", _fig4c),
    ("fig4d_ensemble_error_vs_width", "single and ensemble test error vs h", _fig4d),
    ("fig5a_kernel_drift", "kernel drift vs α and √h·α with the fitted exponent", _fig5a),
    ("fig5b_rescaled_loss", "α²L vs t and t/(√h·α)", _fig5b),
    ("fig5c_t_half", "t_{L/2}/(√h·α) vs α and √h·α", _fig5c),
    ("fig9_weight_drift", "√h‖w−w0‖/‖w0‖ vs α and √h·α with the fitted exponent", _fig9),
)


# -- summary ---------------------------------------------------------------------------


def _fmt(value, spec=".3g"):
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "n/a"
    return format(value, spec)


def _markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _performance_table(runs, ensembles):
    """Per-(α, h) means over seeds of the runs, joined with the ensemble statistics."""
    keys = ["alpha", "width"]
    columns = [("test_error", "test error (mean ± std)"), ("ntk_drift_test", "‖ΔΘ‖/‖Θ0‖"),
               ("weight_drift", "‖w−w0‖/‖w0‖"), ("frozen_init_test_error", "frozen init"),
               ("frozen_final_test_error", "frozen final")]
    table = None
    if set(keys) <= set(runs.columns):
        columns = [(c, name) for c, name in columns if c in runs and runs[c].notna().any()]
        table = runs.groupby(keys).size().rename("runs").reset_index()
        for column, _ in columns:
            stats = _mean(runs, keys, column)[keys + ["mean", "std"]]
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
        return "No run or ensemble has alpha and width columns."
    header = ["α", "h", "√h·α", "runs"] + [name for _, name in columns] + [
        {"n_members": "members", "ensemble_test_error": "ensemble error", "var_F": "Var F",
         "h_var_F": "h·Var F"}[c] for c in ensemble_columns]
    rows = []
    for row in table.sort_values(keys).to_dict("records"):
        cells = [_fmt(row["alpha"]), _fmt(row["width"], "g"),
                 _fmt(sqrt_h_alpha(row["alpha"], row["width"])),
                 _fmt(row.get("runs"), "g")]
        cells += [f"{_fmt(row[c], '.4f')} ± {_fmt(row[c + '_std'], '.4f')}"
                  if c == "test_error" else _fmt(row[c]) for c, _ in columns]
        cells += [_fmt(row[c], "g" if c == "n_members" else ".3g") for c in ensemble_columns]
        rows.append(cells)
    return _markdown_table(header, rows)


def _exponent_table(fits):
    header = ["L", "observable vs √h·α", "regime", "fitted slope ± bootstrap std", "paper",
              "prediction", "points"]
    rows = [[_fmt(f.depth, "g"), f.observable, f.regime,
             f"{_fmt(f.slope, '.3f')} ± {_fmt(f.stderr, '.3f')}", _fmt(f.paper, ".3g"),
             _fmt(f.predicted, ".3g"), str(f.n_points)]
            for f in fits.itertuples()]
    return _markdown_table(header, rows)


def _summary(tables, drawn, skipped):
    runs, ensembles = tables.runs, tables.ensembles
    converged = int(runs["converged"].eq(True).sum()) if "converged" in runs else "n/a"
    parts = [
        "# Lazy vs feature training: summary",
        f"{len(runs)} runs ({converged} converged), {len(ensembles)} ensembles.",
        "## Performance and fluctuations per (α, h)",
        "Test error and drifts: mean over runs (± sample std); ensemble error: sign of the "
        "mean output F̄ (eq. 15); Var F: eq. 16 (divided by the number of members).",
        _performance_table(runs, ensembles),
        "## Power-law exponents",
        f"Slopes of log O vs log √h·α on the means over seeds, in the feature (√h·α < 1) or "
        f"lazy (√h·α > 1) regime; ± is the std over {N_BOOT} bootstrap resamples of the "
        "init seeds. Paper: eq. 18 and Table 2 (−a), eq. 30 and Table 2 (−b), Section 5 and "
        "eq. 29 (lazy −1), eq. 19 (t_{L/2}); prediction: eq. 24, Section 6.",
        _exponent_table(tables.fits) if not tables.fits.empty else "No exponent could be fitted.",
        "## Figures",
        "\n".join(f"- {', '.join(f'`{name}.{fmt}`' for fmt in FORMATS)}: {caption}"
                  for name, caption in drawn) or "None.",
    ]
    if skipped:
        parts += ["## Skipped figures",
                  "\n".join(f"- `{name}`: {why}" for name, why in skipped)]
    return "\n\n".join(parts) + "\n"


def default_dir(sweep_dir):
    """Where a sweep's report goes unless told otherwise."""
    return os.path.join(sweep_dir, "report")


def write_report(runs, ensembles, output_dir):
    """Write the figures (PNG and SVG) and summary.md under output_dir; return their paths.

    A figure whose data is missing is not written (an older copy is removed, so the
    directory always matches the summary), and the summary lists it as skipped.
    """
    os.makedirs(output_dir, exist_ok=True)
    runs = _with_rescalings(runs)
    tables = _Tables(runs, _with_rescalings(ensembles), _fit_exponents(runs))
    written, drawn, skipped = [], [], []
    for name, caption, draw in FIGURES:
        paths = [os.path.join(output_dir, f"{name}.{fmt}") for fmt in FORMATS]
        try:
            fig = draw(tables)
        except _Missing as why:
            skipped.append((name, str(why)))
            for path in paths:
                if os.path.exists(path):
                    os.remove(path)
            continue
        for path, fmt in zip(paths, FORMATS):
            with artifact.atomic_path(path) as tmp:
                fig.savefig(tmp, format=fmt)
            written.append(path)
        drawn.append((name, caption))
    summary = os.path.join(output_dir, SUMMARY)
    with artifact.atomic_path(summary) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(_summary(tables, drawn, skipped))
    return written + [summary]
