"""The appendices' figures (Figs. 8, 11-16) from a sweep's tables, like `figures` does Figs. 3-5.

Each is a `figures.Figure` whose data function raises `figures.Missing` unless the sweep has
what the figure compares (two training-set sizes for Fig. 14, both models for Fig. 15, runs
with and without biases for Fig. 16, ...), so the report draws it only then:
  Fig. 10  Appendix C's norms ‖f − f0‖, ‖f‖/√h, α‖f − f0‖ against t/t1 from the dynamics logs;
  Fig. 8   the Gram matrices Θ(w0) and Θ(w) on a probe of the test set sorted by label
           (`ntk_eval.save_gram_probe`), drawn as two images (`ImageFigure`);
  Fig. 11  the pre-activation velocity ż^ℓ at t = 0 per hidden layer against h (`velocity`);
  Fig. 12  the ReLU kernel drift against √h·α with its three fitted power laws
           (`fits.three_power_laws`);
  Fig. 13  (a, c) of Appendix G: the output difference to the ε_∇/100 reference flow and the
           compute time of both flows against √h·α (`fidelity`); (b, d): the output
           difference between runs of continuous momentum at two τ, and their compute times;
  Fig. 14  Var F (eq. 33, unbiased) against h for several n at the largest √h·α (Appendix H);
  Fig. 15  α(f − f0) against αf: test errors and h·Var F against α (Appendix I);
  Fig. 16  with and without biases: test errors and h·Var F against √h·α (Appendix J).
"""
import dataclasses
import textwrap
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure

from lazy_feature.flow import training
from lazy_feature.run import artifact
from lazy_feature.run.config import NOT_IDENTITY, TrainConfig
from lazy_feature.study import fits, ntk_eval, observables
from lazy_feature.study.figures import (_LINESTYLES, Figure, Missing, Panel, Tables, _long,
                                        _reference, _series, mean_over_seeds, power_of_ten,
                                        require)

_ERROR = "test error"
_SQRT_H_ALPHA = "√h·α"


def _rows(table, x, y, label, panel=0, linestyle="-", colour=np.nan, yerr=None):
    """The long rows of one line of y against x, sorted by x."""
    table = table.sort_values(x)
    return pd.DataFrame(dict(
        panel=panel, series=f"{label}{linestyle}{panel}", label=label,
        x=table[x].to_numpy(float), y=table[y].to_numpy(float),
        yerr=np.nan if yerr is None else table[yerr].to_numpy(float),
        linestyle=linestyle, colour=colour))


def _distinct(table, column, what):
    """The sorted distinct values of `column`, or Missing unless there are two at least."""
    require(table, column)
    values = sorted(table[column].dropna().unique())
    if len(values) < 2:
        raise Missing(f"one {what} only ({column} = {', '.join(map(str, values))}): the figure "
                      "compares two or more")
    return values


# -- Fig. 10: the output's norms against t/t1 ---------------------------------------------

def _norm_curves(run):
    """(t/t1, ‖f − f0‖, ‖f‖) of one run's dynamics log, t1 = t_{L/2} (eq. 19), or None."""
    path = artifact.join(run.run_dir, artifact.DYNAMICS) if isinstance(run.run_dir, str) else ""
    if not path or not artifact.exists(path):
        return None
    log = observables.read_dynamics(run.run_dir)
    if not {"t", "rescaled_loss", "output_norm", "f_norm"} <= set(log.columns):
        return None
    t1 = observables.t_half(log["t"], log["rescaled_loss"])
    keep = log["t"] > 0
    if not np.isfinite(t1) or not keep.any():
        return None
    return (log.loc[keep, "t"].to_numpy(float) / t1, log.loc[keep, "output_norm"].to_numpy(float),
            log.loc[keep, "f_norm"].to_numpy(float))


def fig10(tables):
    """Appendix C's norms against t/t1, one initialization per (h, α): (a) ‖f − f0‖ at the
    widest h for each α; at the smallest √h·α run at two widths or more, (b) ‖f‖/√h,
    (c) ‖f − f0‖ and (d) α‖f − f0‖ for each h. Norms are RMS over the training set (eq. 31
    takes the test set; the dynamics log holds the training set's)."""
    runs = tables.runs
    require(runs, "run_dir", "alpha", "width", "sqrt_h_alpha_level")
    runs = runs.sort_values([c for c in ("width", "alpha", "init_seed") if c in runs])
    runs = runs.drop_duplicates(["width", "alpha"])
    curves = {(r.width, r.alpha): c for r in runs.itertuples() if (c := _norm_curves(r))}
    if not curves:
        raise Missing(f"no {artifact.DYNAMICS} with t, output_norm and f_norm in any run_dir")
    logged = runs[[(r.width, r.alpha) in curves for r in runs.itertuples()]]
    widest = logged[logged["width"] == logged["width"].max()]
    per_level = logged.groupby("sqrt_h_alpha_level")["width"].nunique()
    levels = per_level[per_level >= 2].index
    fixed = logged[logged["sqrt_h_alpha_level"] == levels.min()] if len(levels) else logged.iloc[:0]
    rows = []
    for rank, run in enumerate(widest.sort_values("alpha").itertuples()):
        x, df, _ = curves[(run.width, run.alpha)]
        rows.append(pd.DataFrame(dict(panel=0, series=f"a{run.alpha}",
                                      label=f"α = {power_of_ten(run.alpha)}", x=x, y=df,
                                      yerr=np.nan, linestyle="-", colour=float(rank))))
    for rank, run in enumerate(fixed.sort_values("width").itertuples()):
        x, df, f = curves[(run.width, run.alpha)]
        for panel, y in ((1, f / np.sqrt(run.width)), (2, df), (3, run.alpha * df)):
            rows.append(pd.DataFrame(dict(panel=panel, series=f"h{run.width}",
                                          label=f"h = {run.width:g}, √h·α = "
                                                f"{power_of_ten(run.sqrt_h_alpha)}",
                                          x=x, y=y, yerr=np.nan, linestyle="-",
                                          colour=float(rank))))
    return _long(rows)


# -- Fig. 11: pre-activation velocity ----------------------------------------------------

def velocity_columns(runs):
    """The z_dot_ℓ columns of `runs` in layer order."""
    found = [c for c in runs if c.startswith("z_dot_") and c[6:].isdigit()]
    return sorted(found, key=lambda c: int(c[6:]))


def fig11(tables):
    """ż^ℓ at t = 0 against h, one line per hidden layer ℓ (and α), with eq. 22's h^(-1/2)."""
    runs = tables.runs
    layers = velocity_columns(runs)
    if not layers:
        raise Missing("no data in column(s) z_dot_1 (sweep with velocity=True)")
    require(runs, "width", "alpha", layers[0])
    runs = runs[runs[layers[0]].notna()]
    rows = []
    alphas = sorted(runs["alpha"].unique())
    for ell, column in enumerate(layers, start=1):
        stats = mean_over_seeds(runs, ["alpha", "width"], column)
        for alpha in alphas:
            label = f"ℓ = {ell}" + (f", α = {alpha:.3g}" if len(alphas) > 1 else "")
            rows.append(_rows(stats[stats["alpha"] == alpha], "width", "mean", label,
                              colour=float(ell), yerr="sem"))
    data = _long(rows)
    anchor = data[np.isfinite(data["y"]) & (data["y"] > 0)]
    if len(anchor):
        prefactor = float(np.exp(np.mean(np.log(anchor["y"]) + 0.5 * np.log(anchor["x"]))))
        rows.append(_reference(0, anchor["x"], -0.5, prefactor, "h^(-1/2) (eq. 22)", ":"))
    return _long(rows)


# -- Fig. 12: ReLU kernel drift ----------------------------------------------------------

def relu_runs(runs):
    """The runs with the ReLU activation (Appendix F)."""
    if "activation" not in runs:
        return runs.iloc[:0]
    return runs[runs["activation"] == "relu"]


def fig12(tables):
    """The ReLU kernel drift against √h·α per width, with the three fitted power laws."""
    runs = relu_runs(tables.runs)
    if runs.empty:
        raise Missing("no ReLU run (activation = relu)")
    require(runs, fits.DRIFT, "width", "sqrt_h_alpha")
    rows = _series(mean_over_seeds(runs, ["width", "sqrt_h_alpha"], fits.DRIFT), "width",
                   "sqrt_h_alpha", "mean", "sem", label="h = {:g}")
    for fit in fits.three_power_laws(runs).itertuples():
        if np.isfinite(fit.slope):
            depth = "" if pd.isna(fit.depth) else f"L = {fit.depth:g}, "
            rows.append(_reference(0, [fit.range_low, fit.range_high], fit.slope, fit.prefactor,
                                   f"{depth}{fit.regime}: {fit.slope:.2f} ± {fit.stderr:.2f}",
                                   "-"))
    return _long(rows)


# -- Fig. 13 (a, c): gradient-flow verification ------------------------------------------

def fig13(tables):
    """The output difference to the ε_∇/100 reference (panel 0) and the wall time of the run
    (solid) and of the reference (dashed, panel 1) against √h·α, per width, over the runs
    checked against a reference (the gradient-flow runs of a sweep)."""
    runs = tables.runs
    require(runs, "output_deviation", "reference_wall_seconds", "wall_seconds", "width",
            "sqrt_h_alpha")
    runs = runs[runs["output_deviation"].notna()]
    keys = ["width", "sqrt_h_alpha"]
    rows = _series(mean_over_seeds(runs, keys, "output_deviation"), "width", "sqrt_h_alpha",
                   "mean", "sem", label="h = {:g}")
    rows += _series(mean_over_seeds(runs, keys, "wall_seconds"), "width", "sqrt_h_alpha",
                    "mean", "sem", panel=1, label="h = {:g}, ε_∇")
    rows += _series(mean_over_seeds(runs, keys, "reference_wall_seconds"), "width",
                    "sqrt_h_alpha", "mean", "sem", panel=1, label="h = {:g}, ε_∇/100",
                    linestyle="--")
    return _long(rows)


# -- Fig. 13 (b, d): two momentum time constants -----------------------------------------

def momentum_pairs(runs):
    """The runs of continuous momentum, each paired with the run of the smallest τ (the
    closest to gradient flow, its reference) that shares every other setting (h, α, seed,
    constant τ or τ ∝ t, ...): one row per run of a larger τ, with the reference's tau,
    run_dir and wall_seconds as tau_ref, run_dir_ref and wall_seconds_ref. Missing unless
    two runs differ in τ alone."""
    momentum = runs[runs["dynamics"] == training.MOMENTUM] if "dynamics" in runs else runs.iloc[:0]
    if momentum.empty:
        raise Missing("no run of continuous momentum (dynamics = momentum): sweep two τ as "
                      "variants, as the fig13 configs do")
    _distinct(momentum, "tau", "momentum τ")
    require(momentum, "run_dir", "wall_seconds")
    keys = [c for c in TrainConfig().to_dict()
            if c in momentum and c not in NOT_IDENTITY and c != "tau"]
    reference = momentum.loc[momentum.groupby(keys, dropna=False)["tau"].idxmin()]
    pairs = momentum.merge(reference[keys + ["tau", "run_dir", "wall_seconds"]], on=keys,
                           suffixes=("", "_ref"))
    pairs = pairs[pairs["tau"] > pairs["tau_ref"]]
    if pairs.empty:
        raise Missing("no two momentum runs differ in τ alone (the same h, α, seed and other "
                      "settings)")
    return pairs


def _relative_difference(run_dir, reference_dir):
    """‖F − F_ref‖/‖F_ref‖ of two runs' final test outputs (float64)."""
    F, F_ref = (np.asarray(artifact.read_run_npy(d, artifact.TEST_OUTPUTS), np.float64)
                for d in (run_dir, reference_dir))
    return float(np.linalg.norm(F - F_ref) / np.linalg.norm(F_ref))


def _tau_label(tau, proportional_to_t):
    return f"{tau:g}" + ("·t" if proportional_to_t else "")


def fig13_momentum(tables):
    """(b) ‖F_τ − F_τref‖/‖F_τref‖ of the final test outputs (each run at its own convergence)
    of each larger τ against the smallest, and (d) the wall time of each τ, against √h·α per
    width: means over the seeds of the pairs (`momentum_pairs`)."""
    pairs = momentum_pairs(tables.runs)
    require(pairs, "width", "sqrt_h_alpha")
    pairs = pairs.assign(output_difference=[_relative_difference(p.run_dir, p.run_dir_ref)
                                            for p in pairs.itertuples()],
                         proportional=pairs["tau_proportional_to_t"].astype(bool)
                         if "tau_proportional_to_t" in pairs else False)
    times = pd.concat([pairs, pairs.assign(tau=pairs["tau_ref"], run_dir=pairs["run_dir_ref"],
                                           wall_seconds=pairs["wall_seconds_ref"])])
    times = times.drop_duplicates("run_dir")  # a reference paired with several τ counts once
    widths, taus = sorted(pairs["width"].unique()), sorted(times["tau"].unique())
    rows = []
    for (width, proportional, tau, tau_ref), part in pairs.groupby(
            ["width", "proportional", "tau", "tau_ref"]):
        stats = mean_over_seeds(part, ["sqrt_h_alpha"], "output_difference")
        rows.append(_rows(stats, "sqrt_h_alpha", "mean", f"h = {width:g}, τ = "
                          f"{_tau_label(tau, proportional)} vs {_tau_label(tau_ref, proportional)}",
                          linestyle=_LINESTYLES[taus.index(tau) % 4],
                          colour=float(widths.index(width)), yerr="sem"))
    for (width, proportional, tau), part in times.groupby(["width", "proportional", "tau"]):
        stats = mean_over_seeds(part, ["sqrt_h_alpha"], "wall_seconds")
        rows.append(_rows(stats, "sqrt_h_alpha", "mean",
                          f"h = {width:g}, τ = {_tau_label(tau, proportional)}", panel=1,
                          linestyle=_LINESTYLES[taus.index(tau) % 4],
                          colour=float(widths.index(width)), yerr="sem"))
    return _long(rows)


# -- Fig. 14: variance against the training-set size -------------------------------------

def fig14(tables):
    """Var F against h, one line per n, at the largest √h·α of the ensembles (10^6 in the
    paper), with a reference slope −1."""
    ensembles = tables.ensembles
    require(ensembles, "var_F", "width", "sqrt_h_alpha_level")
    _distinct(ensembles, "n_train", "training-set size")
    lazy = ensembles[ensembles["sqrt_h_alpha_level"] == ensembles["sqrt_h_alpha_level"].max()]
    rows = _series(lazy, "n_train", "width", "var_F", label="n = {:g}")
    data = _long(rows)
    rows.append(_reference(0, data["x"], -1.0, float(np.exp(np.mean(
        np.log(data["y"]) + np.log(data["x"])))), "h^(-1)", ":"))
    return _long(rows)


# -- Figs. 15, 16: two models compared ---------------------------------------------------

def _compared(ensembles, variant, names, x, reverse=False):
    """Single and ensemble test error (panel 0) and h·Var F (panel 1) against x, one colour
    per width; the first value of `variant` (sorted, descending if `reverse`) solid (single)
    and dashed (ensemble), the second dotted and dash-dotted. names maps a value to its
    label."""
    require(ensembles, "mean_test_error", "ensemble_test_error", "h_var_F", "width", x)
    values = sorted(_distinct(ensembles, variant, "model"), reverse=reverse)
    widths = sorted(ensembles["width"].unique())
    styles = ("-", "--", ":", "-.")
    rows = []
    for rank, value in enumerate(values):
        for width in widths:
            part = ensembles[(ensembles[variant] == value) & (ensembles["width"] == width)]
            label = f"h = {width:g}, {names(value)}"
            colour = float(widths.index(width))
            rows.append(_rows(part, x, "mean_test_error", f"{label}, single",
                              linestyle=styles[2 * rank % 4], colour=colour))
            rows.append(_rows(part, x, "ensemble_test_error", f"{label}, ensemble",
                              linestyle=styles[(2 * rank + 1) % 4], colour=colour))
            rows.append(_rows(part, x, "h_var_F", label, panel=1,
                              linestyle=styles[2 * rank % 4], colour=colour))
    return _long(rows)


def fig15(tables):
    return _compared(tables.ensembles, "centered",
                     lambda centered: "α(f − f0)" if centered else "α f", "alpha", reverse=True)


def _bias_label(ensembles):
    """A label per bias_scale: "no bias" or "biases β_b" (with the readout's if it has one)."""
    def label(scale):
        if scale == 0:
            return "no bias"
        readout = ensembles.loc[ensembles["bias_scale"] == scale, "readout_bias"] \
            if "readout_bias" in ensembles else pd.Series(dtype=bool)
        return f"biases β_b = {scale:g}" + (" (readout too)" if readout.astype(bool).any() else "")
    return label


def fig16(tables):
    return _compared(tables.ensembles, "bias_scale", _bias_label(tables.ensembles),
                     "sqrt_h_alpha")


# -- Fig. 8: Gram matrices as images -----------------------------------------------------

IMAGE_COLUMNS = ("panel", "label", "row", "col", "value")


@dataclasses.dataclass(frozen=True)
class ImageFigure:
    """A figure of matrices: its data is the long table IMAGE_COLUMNS, one row per entry."""
    name: str
    caption: str
    title: str
    panels: tuple  # panel titles
    data: Callable[[Tables], pd.DataFrame]

    def render(self, data):
        """One image per panel, each with its colour bar."""
        fig = MplFigure(figsize=(4.5 * len(self.panels), 4), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1, len(self.panels), squeeze=False)[0]
        for ax, (panel, part), title in zip(axes, data.groupby("panel"), self.panels):
            size = int(part["row"].max()) + 1
            matrix = np.full((size, size), np.nan)
            matrix[part["row"].to_numpy(int), part["col"].to_numpy(int)] = part["value"]
            image = ax.imshow(matrix, cmap="viridis", interpolation="nearest")
            ax.set(title=title, xlabel="μ (test, sorted by label)", ylabel="ν")
            fig.colorbar(image, ax=ax)
        fig.suptitle("\n".join(textwrap.wrap(self.title, 50 * len(self.panels))))
        return fig


def _gram_files(run_dir):
    return [artifact.join(run_dir, name)
            for name in (ntk_eval.GRAM_INIT, ntk_eval.GRAM_END, ntk_eval.GRAM_LABELS)]


def fig8(tables):
    """Θ(w0) and Θ(w) of the run with the smallest √h·α that stored them (the most learning)."""
    runs = tables.runs
    require(runs, "run_dir", "sqrt_h_alpha")
    stored = runs[runs["run_dir"].map(lambda d: isinstance(d, str) and all(
        artifact.exists(p) for p in _gram_files(d)))]
    if stored.empty:
        raise Missing(f"no {ntk_eval.GRAM_INIT} in any run_dir (sweep with gram_probe > 0)")
    chosen = stored.sort_values(["sqrt_h_alpha", "width"]).iloc[0]
    init, end, labels = (artifact.read_npy(p) for p in _gram_files(chosen["run_dir"]))
    n_positive = int(np.sum(labels > 0))
    rows = []
    for panel, (matrix, when) in enumerate(((init, "Θ(w0)"), (end, "Θ(w)"))):
        row, col = np.indices(matrix.shape)
        rows.append(pd.DataFrame(dict(
            panel=panel, label=f"{when}, h = {chosen['width']:g}, α = {chosen['alpha']:.3g}, "
                               f"first {n_positive} points y = +1",
            row=row.ravel(), col=col.ravel(), value=matrix.ravel())))
    return pd.concat(rows, ignore_index=True)[list(IMAGE_COLUMNS)]


_T_OVER_T1 = "t / t1"
_FIG13_PANELS = (Panel(_SQRT_H_ALPHA, "relative output difference", logy=True),
                 Panel(_SQRT_H_ALPHA, "compute time (s)", logy=True))
FIGURES = (
    Figure("fig10_output_norms", "‖f − f0‖, ‖f‖/√h and α‖f − f0‖ vs t/t1 (training set)",
           "Fig. 10: (a) ‖f − f0‖ per α at the largest h; (b) ‖f‖/√h, (c) ‖f − f0‖, "
           "(d) α‖f − f0‖ per h at fixed √h·α, vs t/t1 (t1 = t_{L/2})",
           (Panel(_T_OVER_T1, "‖f − f0‖", logy=True), Panel(_T_OVER_T1, "‖f‖ / √h", logy=True),
            Panel(_T_OVER_T1, "‖f − f0‖", logy=True), Panel(_T_OVER_T1, "α‖f − f0‖", logy=True)),
           fig10),
    ImageFigure("fig8_gram_matrices", "Gram matrices at init and at the end, test probe sorted "
                "by label (y = +1 first)",
                "Fig. 8 (a, b): Θ(w0, x_μ, x_ν) and Θ(w, x_μ, x_ν) on test points sorted by label",
                ("(a) Θ(w0)", "(b) Θ(w) at the end"), fig8),
    Figure("fig11_preactivation_velocity", "ż^ℓ at t = 0 vs h per hidden layer, eq. 22's slope",
           "Fig. 11: pre-activation velocity at t = 0 vs h (finite difference, one gradient step)",
           (Panel("h", "ż at t = 0", logy=True),), fig11),
    Figure("fig12_relu_kernel_drift", "ReLU kernel drift vs √h·α with its three fitted power laws",
           "Fig. 12: ReLU kernel drift vs √h·α, three power laws (Appendix F)",
           (Panel(_SQRT_H_ALPHA, "‖Θ − Θ0‖ / ‖Θ0‖", logy=True),), fig12),
    Figure("fig13_gradient_flow_verification", "output difference to the ε_∇/100 flow and "
           "compute time vs √h·α",
           "Fig. 13 (a, c): ‖F − F_ref‖/‖F_ref‖ against the ε_∇/100 reference (max_dout/10, "
           "float64) and wall time of both vs √h·α",
           _FIG13_PANELS, fig13),
    Figure("fig13_momentum", "output difference between two momentum τ and compute time of "
           "each vs √h·α",
           "Fig. 13 (b, d): ‖F_τ − F_τref‖/‖F_τref‖ of the final test outputs for two momentum τ "
           "(τref the smaller) and wall time of each τ vs √h·α",
           _FIG13_PANELS, fig13_momentum),
    Figure("fig14_var_F_vs_width_per_n", "Var F vs h per training-set size n in the lazy regime",
           "Fig. 14: Var F (eq. 33, unbiased) vs h per n at the largest √h·α",
           (Panel("h", "Var F", logy=True),), fig14),
    Figure("fig15_centered_vs_uncentered", "α(f − f0) (solid/dashed) vs αf (dotted/dash-dot): "
           "test error and h·Var F vs α",
           "Fig. 15: α(f − f0) vs αf: single and ensemble test error (a), h·Var F (b) vs α",
           (Panel("α", _ERROR), Panel("α", "h·Var F", logy=True)), fig15),
    Figure("fig16_biases", "without (solid/dashed) and with biases (dotted/dash-dot): test "
           "error and h·Var F vs √h·α",
           "Fig. 16: biases: single and ensemble test error (a), h·Var F (b) vs √h·α",
           (Panel(_SQRT_H_ALPHA, _ERROR), Panel(_SQRT_H_ALPHA, "h·Var F", logy=True)), fig16),
)
