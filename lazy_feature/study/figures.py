"""The paper's Figs. 3, 4, 5 and 9 from a sweep's tables: each a small function of a table.

Every figure is a `Figure`: a function that turns the sweep's tables into the long table of
exactly what is drawn (one row per point: panel, series, x, y, yerr, linestyle, colour,
label), and the axes it is drawn on. `draw` renders any such table, and the report stores
it beside the image as CSV, so the numbers behind a figure can be read and tested without
looking at pixels. A data function raises `Missing` when its columns are absent.
"""
import dataclasses
import re
import textwrap
from collections.abc import Callable

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import ListedColormap, Normalize
from matplotlib.figure import Figure as MplFigure
from matplotlib.ticker import NullFormatter

from lazy_feature.run import artifact
from lazy_feature.study import observables

DATA_COLUMNS = ("panel", "series", "label", "x", "y", "yerr", "linestyle", "colour")
_LINESTYLES = ("-", "--", ":", "-.")
# viridis without its last tenth: pale yellow lines are hard to see on white.
_CMAP = ListedColormap(matplotlib.colormaps["viridis"](np.linspace(0.0, 0.9, 256)))


class Missing(Exception):
    """The data a figure needs is not in the tables."""


@dataclasses.dataclass(frozen=True)
class Tables:
    """What the figures are drawn from: the used runs, the ensembles and the fitted exponents."""
    runs: pd.DataFrame
    ensembles: pd.DataFrame
    fits: pd.DataFrame


@dataclasses.dataclass(frozen=True)
class Panel:
    xlabel: str
    ylabel: str
    logy: bool = False


@dataclasses.dataclass(frozen=True)
class Figure:
    """A figure: its file name, caption, title, panels and the function giving its data."""
    name: str
    caption: str
    title: str
    panels: tuple
    data: Callable[[Tables], pd.DataFrame]  # Tables -> DataFrame of DATA_COLUMNS
    colorbar: str = ""  # a colour bar with this label for the `colour` values, if given

    def render(self, data):
        """The matplotlib figure of `data` (`draw`)."""
        return draw(self, data)


def require(df, *columns):
    absent = [c for c in columns if c not in df or df[c].isna().all()]
    if absent:
        raise Missing(f"no data in column(s) {', '.join(absent)}")


def mean_over_seeds(df, by, y):
    """Mean, sample std, count and standard error of y over the rows (seeds) of each group."""
    values = df.assign(**{y: df[y].astype(float)}).dropna(subset=[y])
    stats = values.groupby(by)[y].agg(["mean", "std", "count"]).reset_index()
    stats["sem"] = stats["std"] / np.sqrt(stats["count"])
    return stats


def _series(table, by, x, y, yerr=None, panel=0, label="{:.3g}", linestyle="-"):
    """Long rows of one line per value of `by` (coloured by rank) of y against x; `label`
    is a format string of the value or a function of it."""
    values = sorted(table[by].unique())
    rows = []
    for rank, value in enumerate(values):
        part = table[table[by] == value].sort_values(x)
        rows.append(pd.DataFrame(dict(
            panel=panel, series=f"{by}={value:g}{linestyle}",
            label="" if label is None else label(value) if callable(label)
            else label.format(value), x=part[x].to_numpy(float),
            y=part[y].to_numpy(float),
            yerr=np.nan if yerr is None else part[yerr].to_numpy(float),
            linestyle=linestyle, colour=float(rank))))
    return rows


def _level_label(value):
    return f"√h·α = {power_of_ten(value)}"


def _long(rows):
    rows = [r for r in rows if len(r)]
    if not rows:
        raise Missing("nothing to draw")
    return pd.concat(rows, ignore_index=True)[list(DATA_COLUMNS)]


def _reference(panel, x, slope, prefactor, label, linestyle):
    """A black power law prefactor·x^slope over [min x, max x]."""
    x = np.geomspace(np.min(x), np.max(x), 20)
    return pd.DataFrame(dict(panel=panel, series=label, label=label, x=x, y=prefactor * x ** slope,
                             yerr=np.nan, linestyle=linestyle, colour=np.nan))


# -- data of each figure -----------------------------------------------------------------

def fig3b(tables):
    runs = tables.runs
    require(runs, "test_error", "width", "sqrt_h_alpha")
    rows = _series(mean_over_seeds(runs, ["sqrt_h_alpha_level", "width"], "test_error"),
                   "sqrt_h_alpha_level", "width", "mean", "sem", label=_level_label)
    if "frozen_init_test_error" in runs and runs["frozen_init_test_error"].notna().any():
        frozen = mean_over_seeds(runs, ["width"], "frozen_init_test_error").sort_values("width")
        rows.append(pd.DataFrame(dict(panel=0, series="frozen", label="frozen NTK at init",
                                      x=frozen["width"].astype(float), y=frozen["mean"],
                                      yerr=frozen["sem"], linestyle="-", colour=np.nan)))
    return _long(rows)


def fig3c(tables):
    require(tables.runs, "test_error", "alpha", "width")
    return _long(_series(mean_over_seeds(tables.runs, ["width", "alpha"], "test_error"),
                         "width", "alpha", "mean", "sem", label="h = {:g}"))


def fig3d(tables):
    require(tables.runs, "test_error", "alpha", "width")
    means = mean_over_seeds(tables.runs, ["width", "sqrt_h_alpha"], "test_error")
    rescaled = observables.rescaled_test_error(means, column="mean")
    return _long(_series(rescaled, "width", "sqrt_h_alpha", "rescaled", label="h = {:g}"))


def fig4a(tables):
    require(tables.ensembles, "var_F", "width", "sqrt_h_alpha")
    return _long(_series(tables.ensembles, "sqrt_h_alpha_level", "width", "var_F",
                         label=_level_label))


def fig4b(tables):
    require(tables.ensembles, "var_F", "width", "sqrt_h_alpha")
    return _long(_series(tables.ensembles, "width", "sqrt_h_alpha", "h_var_F", label="h = {:g}"))


def _single_and_ensemble(ensembles, by, x, label):
    """Mean single-network error (solid, ± std) and ensemble error (dashed) against x."""
    require(ensembles, "mean_test_error", "ensemble_test_error", x, by)
    std = "std_test_error" if "std_test_error" in ensembles else None
    return _long(_series(ensembles, by, x, "mean_test_error", std, label=label)
                 + _series(ensembles, by, x, "ensemble_test_error", label=None, linestyle="--"))


def fig4c(tables):
    return _single_and_ensemble(tables.ensembles, "width", "sqrt_h_alpha", "h = {:g}")


def fig4d(tables):
    return _single_and_ensemble(tables.ensembles, "sqrt_h_alpha_level", "width",
                                _level_label)


def _drift(tables, column):
    """`column` vs α (panel 0) and vs √h·α (panel 1) per width, with the fits on panel 1:
    the fitted slope in the feature regime, the paper's slope −1 in the lazy regime."""
    runs = tables.runs
    require(runs, column, "alpha", "width")
    rows = _series(mean_over_seeds(runs, ["width", "alpha"], column), "width", "alpha", "mean",
                   "sem", label="h = {:g}")
    rows += _series(mean_over_seeds(runs, ["width", "sqrt_h_alpha"], column), "width",
                    "sqrt_h_alpha", "mean", "sem", panel=1, label="h = {:g}")
    for fit in tables.fits[tables.fits["column"] == column].itertuples():
        depth = "" if pd.isna(fit.depth) else f"L = {fit.depth:g}: "
        x = [fit.x_min, fit.x_max]
        if fit.regime == "feature" and np.isfinite(fit.slope):
            rows.append(_reference(1, x, fit.slope, fit.prefactor,
                                   f"{depth}fit {fit.slope:.2f} ± {fit.stderr:.2f}", "-"))
        elif fit.regime == "lazy" and np.isfinite(fit.paper_prefactor):
            rows.append(_reference(1, x, fit.paper, fit.paper_prefactor,
                                   f"{depth}slope {fit.paper:g} (lazy)", ":"))
    return _long(rows)


def fig5a(tables):
    return _drift(tables, "ntk_drift_test")


def fig9(tables):
    return _drift(tables, "rescaled_weight_drift")


def fig5b(tables):
    """α²L against t (panel 0) and t/(√h·α) (panel 1), one initialization per (h, α);
    colour log10 √h·α, line style the width."""
    runs = tables.runs
    require(runs, "run_dir", "alpha", "width")
    logged = runs[runs["run_dir"].map(
        lambda d: isinstance(d, str) and artifact.exists(artifact.join(d, artifact.DYNAMICS)))]
    if logged.empty:
        raise Missing(f"no {artifact.DYNAMICS} in any run_dir")
    order = ["width", "alpha"] + (["init_seed"] if "init_seed" in logged else [])
    logged = logged.sort_values(order).drop_duplicates(["width", "alpha"])
    widths = sorted(logged["width"].unique())
    labelled, rows = set(), []
    for run in logged.itertuples():
        dynamics = observables.read_dynamics(run.run_dir)
        if not {"t", "rescaled_loss"} <= set(dynamics.columns):
            continue
        t, loss = dynamics["t"].astype(float), dynamics["rescaled_loss"].astype(float)
        keep = (t > 0) & (loss > 0)
        style = _LINESTYLES[widths.index(run.width) % len(_LINESTYLES)]
        for panel, x in ((0, t[keep]),
                         (1, observables.rescaled_time(t[keep], run.alpha, run.width))):
            label = f"h = {run.width:g}" if (panel, run.width) not in labelled else ""
            labelled.add((panel, run.width))
            rows.append(pd.DataFrame(dict(
                panel=panel, series=f"h={run.width:g},alpha={run.alpha:g}", label=label,
                x=x.to_numpy(), y=loss[keep].to_numpy(), yerr=np.nan, linestyle=style,
                colour=float(np.log10(run.sqrt_h_alpha)))))
    return _long(rows)


def fig5c(tables):
    runs = tables.runs
    require(runs, "t_half_rescaled", "alpha", "width")
    return _long(
        _series(mean_over_seeds(runs, ["width", "alpha"], "t_half_rescaled"), "width", "alpha",
                "mean", "sem", label="h = {:g}")
        + _series(mean_over_seeds(runs, ["width", "sqrt_h_alpha"], "t_half_rescaled"), "width",
                  "sqrt_h_alpha", "mean", "sem", panel=1, label="h = {:g}"))


_ERROR = "test error"


def _against_alpha_and_sqrt_h_alpha(ylabel):
    """The two log-log panels of Figs. 5 (a, c) and 9: against α, and against √h·α."""
    return Panel("α", ylabel, logy=True), Panel("√h·α", ylabel, logy=True)


FIGURES = (
    Figure("fig3b_test_error_vs_width", "test error vs h at fixed √h·α, frozen NTK in black",
           "Fig. 3(b): test error vs h at fixed √h·α", (Panel("h", _ERROR),), fig3b),
    Figure("fig3c_test_error_vs_alpha", "test error vs α per width",
           "Fig. 3(c): test error vs α", (Panel("α", _ERROR),), fig3c),
    Figure("fig3d_rescaled_test_error", "rescaled test error vs √h·α per width",
           "Fig. 3(d): rescaled test error vs √h·α",
           (Panel("√h·α", "(err − min) / (max − min)"),), fig3d),
    Figure("fig4a_var_F_vs_width", "Var F vs h at fixed √h·α", "Fig. 4(a): Var F vs h",
           (Panel("h", "Var F (eq. 16, unbiased)", logy=True),), fig4a),
    Figure("fig4b_h_var_F_vs_sqrt_h_alpha", "h·Var F vs √h·α per width",
           "Fig. 4(b): h·Var F vs √h·α", (Panel("√h·α", "h·Var F", logy=True),), fig4b),
    Figure("fig4c_ensemble_error_vs_sqrt_h_alpha", "single and ensemble test error vs √h·α",
           "Fig. 4(c): single (solid, ± std) and ensemble (dashed) test error vs √h·α",
           (Panel("√h·α", _ERROR),), fig4c),
    Figure("fig4d_ensemble_error_vs_width", "single and ensemble test error vs h",
           "Fig. 4(d): single (solid, ± std) and ensemble (dashed) test error vs h",
           (Panel("h", _ERROR),), fig4d),
    Figure("fig5a_kernel_drift", "kernel drift vs α and √h·α with the fitted exponent",
           "Fig. 5(a): kernel drift vs α and √h·α (eq. 18)",
           _against_alpha_and_sqrt_h_alpha("‖Θ(w) − Θ(w0)‖ / ‖Θ(w0)‖"), fig5a),
    Figure("fig5b_rescaled_loss", "α²L vs t and t/(√h·α)",
           "Fig. 5(b): rescaled loss vs t and t/(√h·α)",
           (Panel("t", "α² L", logy=True), Panel("t / (√h·α)", "α² L", logy=True)), fig5b,
           colorbar="log10 √h·α"),
    Figure("fig5c_t_half", "t_{L/2}/(√h·α) vs α and √h·α",
           "Fig. 5(c): loss-halving time over √h·α (eq. 19)",
           _against_alpha_and_sqrt_h_alpha("t_{L/2} / (√h·α)"), fig5c),
    Figure("fig9_weight_drift", "√h‖w−w0‖/‖w0‖ vs α and √h·α with the fitted exponent",
           "Fig. 9: weight drift vs α and √h·α (eqs. 29-30)",
           _against_alpha_and_sqrt_h_alpha("√h ‖w − w0‖ / ‖w0‖"), fig9),
)


# -- drawing -------------------------------------------------------------------------------

def draw(figure, data):
    """A matplotlib figure of `data` (DATA_COLUMNS) on `figure`'s panels, log x everywhere.

    Series are lines with markers (error bars where yerr is given); colour runs along
    viridis over the `colour` values, NaN is black. Panels go in rows of two; each legend
    sits outside its panel's data; an axis spanning less than two decades is labelled at
    each of its x values (every width); sub- and superscripts are rendered (`_math`). Only
    the used runs (converged, `sweep.mark_used`) reach the data.
    """
    columns = min(len(figure.panels), 2)
    rows = -(-len(figure.panels) // columns)
    legends = data["label"].fillna("").astype(str).str.len().gt(0).any()
    fig = MplFigure(figsize=(5 * columns + 1.6 * legends, 4 * rows), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(figure.panels):]:
        ax.set_visible(False)
    colours = data["colour"].dropna()
    norm = Normalize(colours.min(), colours.max() if colours.max() > colours.min()
                     else colours.min() + 1) if len(colours) else Normalize(0, 1)
    for (panel, _), part in data.groupby(["panel", "series"], sort=False):
        ax, first = axes[int(panel)], part.iloc[0]
        keep = np.isfinite(part["x"]) & np.isfinite(part["y"]) & (part["x"] > 0)
        if figure.panels[int(panel)].logy:
            keep &= part["y"] > 0
        part = part[keep]
        if part.empty:
            continue
        colour = "k" if pd.isna(first["colour"]) else _CMAP(norm(first["colour"]))
        yerr = None if part["yerr"].isna().all() else part["yerr"]
        ax.errorbar(part["x"], part["y"], yerr=yerr, color=colour, linestyle=first["linestyle"],
                    marker="o" if figure.colorbar == "" and not pd.isna(first["colour"]) else None,
                    markersize=3, capsize=2, linewidth=1,
                    label=_math(first["label"]) if isinstance(first["label"], str)
                    and first["label"] else None)
    for index, (ax, panel) in enumerate(zip(axes, figure.panels)):
        ax.set(xscale="log", xlabel=_math(panel.xlabel), ylabel=_math(panel.ylabel))
        ax.xaxis.set_minor_formatter(NullFormatter())  # few decades: minor labels would overlap
        xs = np.unique(data.loc[(data["panel"] == index) & (data["x"] > 0), "x"])
        if len(xs) and xs.max() < 100 * xs.min() and len(xs) <= 8:
            ax.set_xticks(xs, [f"{x:g}" for x in xs])  # e.g. every width
        if panel.logy:
            ax.set_yscale("log")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1.0),
                      borderaxespad=0.0)
    if figure.colorbar:
        fig.colorbar(ScalarMappable(norm, _CMAP), ax=list(axes[:len(figure.panels)]),
                     label=_math(figure.colorbar))
    fig.suptitle("\n".join(textwrap.wrap(_math(figure.title), 55 * columns)))
    return fig


_SUPERSCRIPTS = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def power_of_ten(value):
    """`value` as 10ᵏ where it is an exact power of ten beyond 10 and 0.1 (a √h·α level),
    else as %g."""
    exponent = np.log10(value) if value > 0 else np.nan
    if np.isfinite(exponent) and abs(exponent - round(exponent)) < 1e-9 and abs(exponent) > 1:
        return "10" + str(int(round(exponent))).translate(_SUPERSCRIPTS)
    return f"{value:g}"


def _math(text):
    """A label with its TeX sub- and superscripts (t_{L/2}) rendered by matplotlib's mathtext
    and w0, f0, Θ0 as w₀, f₀, Θ₀."""
    text = re.sub(r"(\w+)([_^])\{([^}]*)\}", r"$\1\2{\3}$", text)
    return re.sub(r"(?<=[wfΘ])0\b", "₀", text)
