"""The appendices' figures (Figs. 8, 11-16) from synthetic tables with known laws, and the
report drawing each only when the sweep has what it compares."""
import itertools
import json
import os

import numpy as np
import pandas as pd
import pytest

from lazy_feature.study import appendix
from lazy_feature.run import artifact
from lazy_feature.study import figures
from lazy_feature.study import fits
from lazy_feature.study import grid_point
from lazy_feature.study import ntk_eval
from lazy_feature.study import report
from lazy_feature.study import sweep
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask
from tests.helpers import sphere_inputs

WIDTHS, SEEDS = (16, 64), (0, 1, 2)
# A ReLU kernel drift with three power laws (Appendix F), continuous at the breaks 0.05, 50,
# which fall between the levels.
RELU_LEVELS = np.logspace(-3, 5, 17)


def _relu_drift(x):
    if x <= 0.05:
        return 0.05 ** -0.5 * (x / 0.05) ** -1.6
    if x <= 50:
        return x ** -0.5
    return 50 ** -0.5 * (x / 50) ** -1.0


def _run(width, alpha, seed, **columns):
    return dict(width=width, depth=5, alpha=alpha, init_seed=seed, n_train=100, status="done",
                converged=True, train_loss=0.01, test_loss=0.2, test_error=0.1, **columns)


def _runs():
    rows = []
    for width in WIDTHS:
        for seed in SEEDS:
            noise = 1 + 0.01 * (seed - 1)
            rows.append(_run(width, 1.0, seed, activation="softplus",
                             z_dot_1=noise / np.sqrt(width), z_dot_2=2 * noise / np.sqrt(width)))
            for x in RELU_LEVELS:
                rows.append(_run(width, x / np.sqrt(width), seed, activation="relu",
                                 ntk_drift_test=noise * _relu_drift(x)))
            for x in (0.1, 10.0):
                rows.append(_run(width, x / np.sqrt(width), seed, activation="softplus",
                                 output_deviation=1e-4 * x, wall_seconds=10.0 * width,
                                 reference_wall_seconds=30.0 * width))
    return pd.DataFrame(rows)


def _ensembles():
    """The ensembles of three sweeps, told apart by n_train: 100 and 1000 (Fig. 14), 500
    (Fig. 15) and 200 (Fig. 16)."""
    rows = []
    for width in WIDTHS:
        for n in (100, 1000):  # Fig. 14: Var F ∝ √n / h at √h·α = 1e6, and more at 1e5
            for x in (1e5, 1e6):
                rows.append(dict(width=width, n_train=n, alpha=x / np.sqrt(width), centered=True,
                                 bias_scale=0.0, var_F=np.sqrt(n) / width * (2 if x < 1e6 else 1),
                                 mean_test_error=0.1, ensemble_test_error=0.08))
        for alpha in (0.1, 1.0, 10.0):  # Fig. 15: both models; αf worse at large α
            for centered in (True, False):
                rows.append(dict(width=width, n_train=500, alpha=alpha, centered=centered,
                                 bias_scale=0.0, var_F=1.0 / width,
                                 mean_test_error=0.1 + (0 if centered else 0.02 * alpha),
                                 ensemble_test_error=0.08))
        for x in (0.01, 1.0, 100.0):  # Fig. 16: with and without biases
            for scale in (0.0, 0.1):
                rows.append(dict(width=width, n_train=200, alpha=x / np.sqrt(width),
                                 centered=True, bias_scale=scale, readout_bias=scale > 0,
                                 var_F=(1 + scale) / width, mean_test_error=0.1 + scale,
                                 ensemble_test_error=0.08))
    return pd.DataFrame(rows)


def _tables(runs, ensembles):
    runs, ensembles = report._with_rescalings(runs), report._with_rescalings(ensembles)
    return figures.Tables(runs, ensembles, fits.fit_table(runs))


def _run_tables(runs):
    """Tables of `runs` alone, without the fits (Fig. 13 needs none)."""
    return figures.Tables(report._with_rescalings(runs), pd.DataFrame(), pd.DataFrame())


@pytest.fixture(scope="module")
def tables():
    return _tables(_runs(), _ensembles())


def _slope(part):
    return np.polyfit(np.log(part["x"]), np.log(part["y"]), 1)[0]


def test_fig11_velocity_per_layer_against_width(tables):
    data = appendix.fig11(tables)
    for label, factor in (("ℓ = 1", 1.0), ("ℓ = 2", 2.0)):
        line = data[data["label"] == label]
        assert line["x"].tolist() == list(WIDTHS)
        assert line["y"].to_numpy() == pytest.approx(factor / np.sqrt(WIDTHS))
    assert _slope(data[data["label"] == "h^(-1/2) (eq. 22)"]) == pytest.approx(-0.5)


def test_three_power_laws_of_the_relu_drift(tables):
    laws = fits.three_power_laws(appendix.relu_runs(tables.runs))
    assert laws["regime"].tolist() == ["feature", "patches", "lazy"]
    assert laws["slope"].to_numpy() == pytest.approx([-1.6, -0.5, -1.0], abs=1e-3)
    assert laws["paper"].tolist() == pytest.approx([-2 / (1 + 1 / 5), -0.5, -1.0])
    # (levels are √h·α to 3 digits, hence the 1e-3.) The cuts fall on the breaks: each range
    # holds only levels of one law.
    assert laws["range_high"].tolist() == pytest.approx([0.0316, 31.6, 1e5])
    assert laws["range_low"].tolist() == pytest.approx([1e-3, 0.1, 100.0])
    assert (laws["n_runs"] == laws["n_levels"] * len(WIDTHS) * len(SEEDS)).all()
    data = appendix.fig12(tables)
    fitted = data[data["label"].str.contains("±")]
    assert [_slope(line) for _, line in fitted.groupby("series", sort=False)] == pytest.approx(
        [-1.6, -0.5, -1.0], abs=1e-3)


def test_fig13_fig14_fig15_fig16_data(tables):
    fig13 = appendix.fig13(tables)
    deviation = fig13[fig13["panel"] == 0]
    assert deviation["y"].to_numpy() == pytest.approx(1e-4 * deviation["x"].to_numpy())
    reference = fig13[fig13["label"] == "h = 16, ε_∇/100"]
    assert reference["y"].tolist() == pytest.approx([480.0, 480.0])
    fig14 = appendix.fig14(tables)  # the largest √h·α only, one line per n
    for n in (100, 1000):
        line = fig14[fig14["label"] == f"n = {n}"]
        assert line["y"].to_numpy() == pytest.approx(np.sqrt(n) / line["x"].to_numpy())
    ensembles = tables.ensembles
    fig15 = appendix.fig15(figures.Tables(tables.runs, ensembles[ensembles["n_train"] == 500],
                                          tables.fits))
    worse = fig15[fig15["label"] == "h = 64, α f, single"]
    assert worse["x"].tolist() == pytest.approx([0.1, 1.0, 10.0])
    assert worse["y"].tolist() == pytest.approx([0.102, 0.12, 0.3])
    assert set(fig15.loc[fig15["panel"] == 1, "y"]) == {1.0}  # h·Var F
    fig16 = appendix.fig16(figures.Tables(tables.runs, ensembles[ensembles["n_train"] == 200],
                                          tables.fits))
    assert set(fig16["label"]) >= {"h = 16, no bias, single",
                                   "h = 16, biases β_b = 0.1 (readout too), ensemble"}
    assert set(fig16.loc[fig16["panel"] == 1, "y"].round(6)) == {1.0, 1.1}


TAUS = (0.001, 0.01)


def _momentum_runs(tmp_path, proportional):
    """Momentum runs at the two TAUS (τ or τ·t) for each (h, √h·α, seed), random final test
    outputs in each run_dir, and a run of the other kind, τ = 0.5 (·t), that pairs with none."""
    rng = np.random.default_rng(0)
    rows = []
    for width, x, seed, tau in itertools.product(WIDTHS, (0.1, 10.0), SEEDS, TAUS + (0.5,)):
        run_dir = str(tmp_path / f"h{width}x{x}s{seed}tau{tau}")
        os.makedirs(run_dir)
        artifact.write_npy(os.path.join(run_dir, artifact.TEST_OUTPUTS), rng.standard_normal(20))
        rows.append(_run(width, x / np.sqrt(width), seed, activation="softplus",
                         dynamics="momentum", tau=tau,
                         tau_proportional_to_t=proportional != (tau == 0.5),
                         run_dir=run_dir, wall_seconds=rng.uniform(1.0, 100.0)))
    return pd.DataFrame(rows)


def _fig13_momentum_brute_force(runs):
    """{(h, √h·α): mean over seeds of ‖F_τ1 − F_τ0‖/‖F_τ0‖} (TAUS = τ0, τ1) and {(h, √h·α, τ): mean wall
    time} of the runs at TAUS, looping over the runs' own artifacts."""
    differences, times = {}, {}
    for run in runs[runs["tau"].isin(TAUS)].itertuples():
        x = round(run.alpha * np.sqrt(run.width), 9)
        times.setdefault((run.width, x, run.tau), []).append(run.wall_seconds)
        if run.tau == TAUS[1]:
            reference = runs[(runs["width"] == run.width) & (runs["alpha"] == run.alpha)
                             & (runs["init_seed"] == run.init_seed) & (runs["tau"] == TAUS[0])]
            F, F_ref = (np.load(os.path.join(d, artifact.TEST_OUTPUTS))
                        for d in (run.run_dir, reference["run_dir"].item()))
            differences.setdefault((run.width, x), []).append(
                np.linalg.norm(F - F_ref) / np.linalg.norm(F_ref))
    return ({k: np.mean(v) for k, v in differences.items()},
            {k: np.mean(v) for k, v in times.items()})


def _check_fig13_momentum(data, runs, t=""):
    differences, times = _fig13_momentum_brute_force(runs)
    for panel, expected, label in ((0, differences, f"h = {{:g}}, τ = {TAUS[1]:g}{t} vs {TAUS[0]:g}{t}"),
                                   (1, times, f"h = {{:g}}, τ = {{:g}}{t}")):
        part = data[data["panel"] == panel]
        assert len(part) == len(expected)
        for key, value in expected.items():
            line = part[part["label"] == label.format(key[0], *key[2:])]
            assert line.loc[np.isclose(line["x"], key[1]), "y"].item() == pytest.approx(
                value, rel=1e-12), (panel, key)


@pytest.mark.parametrize("proportional", [False, True])
def test_fig13_momentum_against_brute_force(tmp_path, proportional):
    momentum = _momentum_runs(tmp_path, proportional)
    data = appendix.fig13_momentum(_run_tables(momentum))
    _check_fig13_momentum(data, momentum, "·t" if proportional else "")


def test_fig13_panels_a_c_take_the_gradient_flow_runs_and_b_d_need_two_tau(tmp_path):
    momentum = _momentum_runs(tmp_path, False)
    both = pd.concat([_runs().assign(dynamics="gradient_flow", tau=0.0), momentum])
    assert appendix.fig13(_run_tables(both)).equals(appendix.fig13(_run_tables(_runs())))
    for runs, message in (
            (both[both["dynamics"] == "gradient_flow"], "no run of continuous momentum"),
            (momentum[momentum["tau"] == 0.01], r"one momentum τ only \(tau = 0.01\)"),
            (momentum[(momentum["tau"] == TAUS[0]) & (momentum["width"] == 16)
                      | (momentum["tau"] == TAUS[1]) & (momentum["width"] == 64)],
             "no two momentum runs differ in τ alone")):
        with pytest.raises(figures.Missing, match=message):
            appendix.fig13_momentum(_run_tables(runs))


@pytest.mark.slow
def test_fig13_quick_momentum_variants_in_a_sweep_with_fidelity(tmp_path, monkeypatch):
    """fig13_quick's two momentum runs on a tiny task in a sweep asking fidelity: they get no
    reference flow (Appendix G checks the gradient-flow runs), and the report's panels (b, d)
    are those of their artifacts."""
    from pipelines import configs  # pylint: disable=import-outside-toplevel
    variants = [v for v in configs.get("fig13_quick").variants if v.get("dynamics") == "momentum"]
    assert sorted(v["tau"] for v in variants) == list(TAUS)
    proportional = {v.get("tau_proportional_to_t", False) for v in variants}
    x = sphere_inputs(100, 10, seed=7)
    y = np.sign(x[:, 0] + 0.5 * x[:, 1])
    task = BinaryTask(x[:40], y[:40], x[40:], y[40:], np.zeros(40, int), np.zeros(60, int))
    base = TrainConfig(n_train=40, n_test=60, depth=2, dtype="float64", max_dgrad=1e-2)
    grid = sweep.SweepConfig(base=base, widths=(16,), sqrt_h_alphas=(100.0,), ntk=False,
                             fidelity=True, variants=tuple(variants))
    monkeypatch.setitem(grid_point.TASKS, (base.dataset, base.data_dir, 40, 60, base.data_seed,
                                       base.pca, base.pca_whiten, base.architecture), task)
    runs, _ = sweep.run_sweep(grid, str(tmp_path), runner="inprocess")
    assert len(runs) == 2 and "output_deviation" not in runs
    assert not any(os.path.exists(os.path.join(d, artifact.FIDELITY)) for d in runs["run_dir"])
    data = appendix.fig13_momentum(_run_tables(runs))
    _check_fig13_momentum(data, runs, "·t" if proportional == {True} else "")
    assert data.loc[data["panel"] == 0, "y"].item() > 0


def test_figures_comparing_two_settings_need_both(tables):
    ensembles = tables.ensembles
    one_model = figures.Tables(tables.runs, ensembles[ensembles["centered"]], tables.fits)
    with pytest.raises(figures.Missing, match="one model only"):
        appendix.fig15(one_model)
    one_n = figures.Tables(tables.runs, ensembles[ensembles["n_train"] == 100], tables.fits)
    with pytest.raises(figures.Missing, match="one training-set size only"):
        appendix.fig14(one_n)
    softplus = tables.runs[tables.runs["activation"] == "softplus"]
    with pytest.raises(figures.Missing, match="no ReLU run"):
        appendix.fig12(figures.Tables(softplus, ensembles, tables.fits))


def test_fig10_norms_against_t_over_t1(tmp_path):
    """Synthetic logs with eq. 32's ‖f − f0‖ = √h·t/t1 and α²L = exp(−t/√h·α): at fixed √h·α
    α‖f − f0‖ against t/t1 is one curve for every h (Fig. 10 (d))."""
    rows = []
    for width, alpha in ((16, 0.025), (64, 0.0125), (64, 0.125)):
        run_dir = str(tmp_path / f"h{width}a{alpha}")
        os.makedirs(run_dir)
        scale = np.sqrt(width) * alpha
        t = np.logspace(-3, 1, 30) * scale
        with open(os.path.join(run_dir, artifact.DYNAMICS), "w") as f:
            for step, ti in enumerate(np.concatenate([[0.0], t])):
                norm = np.sqrt(width) * ti / (scale * np.log(2))
                f.write(json.dumps(dict(step=step, t=ti, rescaled_loss=np.exp(-ti / scale),
                                        output_norm=norm, f_norm=1 + norm)) + "\n")
        rows.append(dict(run_dir=run_dir, width=width, alpha=alpha, init_seed=0))
    runs = report._with_rescalings(pd.DataFrame(rows))
    data = appendix.fig10(figures.Tables(runs, pd.DataFrame(), pd.DataFrame()))
    assert sorted(data.loc[data["panel"] == 0, "label"].unique()) == ["α = 0.0125", "α = 0.125"]
    collapsed = data[data["panel"] == 3]
    assert collapsed["label"].nunique() == 2  # h = 16 and 64 at √h·α = 0.1
    (_, h16), (_, h64) = collapsed.groupby("label")
    assert h16["x"].to_numpy() == pytest.approx(h64["x"].to_numpy(), rel=1e-9)
    assert h16["y"].to_numpy() == pytest.approx(h64["y"].to_numpy(), rel=1e-9)
    # α‖f − f0‖ = √h·α·t/t1 (t1 interpolated on the log, within a few %).
    assert h16["y"].to_numpy() == pytest.approx(0.1 * h16["x"].to_numpy(), rel=0.05)


def test_fig8_images_from_stored_gram_matrices(tmp_path):
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    init = np.arange(9.0).reshape(3, 3)
    for name, array in ((ntk_eval.GRAM_INIT, init), (ntk_eval.GRAM_END, 2 * init),
                        (ntk_eval.GRAM_LABELS, np.array([1.0, 1.0, -1.0]))):
        artifact.write_npy(os.path.join(run_dir, name), array)
    runs = pd.DataFrame([dict(run_dir=run_dir, width=16, alpha=0.1, sqrt_h_alpha=0.4),
                         dict(run_dir=str(tmp_path / "none"), width=16, alpha=0.01,
                              sqrt_h_alpha=0.04)])
    data = appendix.fig8(figures.Tables(runs, pd.DataFrame(), pd.DataFrame()))
    for panel, matrix in ((0, init), (1, 2 * init)):
        part = data[data["panel"] == panel]
        assert np.array_equal(part["value"].to_numpy().reshape(3, 3), matrix)
    assert data["label"].iloc[0].startswith("Θ(w0), h = 16, α = 0.1, first 2 points y = +1")
    figure = next(f for f in appendix.FIGURES if f.name == "fig8_gram_matrices")
    path = os.path.join(tmp_path, "fig8.png")
    artifact.write_figure(path, figure.render(data), "png")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_report_draws_the_appendix_figures_and_the_relu_fits(tmp_path, monkeypatch):
    # Fig. 12 drawn (matplotlib takes seconds a figure here; the data of every figure is
    # tested above), Fig. 15 skipped for want of the uncentered model.
    monkeypatch.setattr(report, "FORMATS", ("png",))
    monkeypatch.setattr(figures, "FIGURES", ())
    monkeypatch.setattr(appendix, "FIGURES", tuple(
        f for f in appendix.FIGURES
        if f.name in ("fig12_relu_kernel_drift", "fig13_momentum",
                      "fig15_centered_vs_uncentered")))
    ensembles = _ensembles()
    written = report.write_report(_runs(), ensembles[ensembles["centered"]], str(tmp_path))
    assert {os.path.basename(p) for p in written} >= {"fig12_relu_kernel_drift.png",
                                                      "fig12_relu_kernel_drift.csv"}
    assert not os.path.exists(tmp_path / "fig15_centered_vs_uncentered.png")
    summary = open(os.path.join(tmp_path, report.SUMMARY), encoding="utf-8").read()
    assert "`fig15_centered_vs_uncentered`: one model only (centered = True)" in summary
    assert "`fig13_momentum`: no run of continuous momentum (dynamics = momentum)" in summary
    assert "## ReLU kernel drift: three power laws (Appendix F, Fig. 12)" in summary
    assert "| 5 | patches | 0.1 ≤ √h·α ≤ 31.6 | 6 | 36 | -0.500 ± 0.000 | -0.5 |" in summary


@pytest.mark.parametrize("suffix", ["", "_quick"])
def test_appendix_configs_hold_what_their_figures_compare(suffix):
    from pipelines import configs  # pylint: disable=import-outside-toplevel
    get = lambda name: configs.get(name + suffix)  # noqa: E731
    assert get("fig11").velocity and {c.depth for c in get("fig11").configs()} == {5}
    relu = get("fig12").configs()
    assert {c.activation for c in relu} == {"relu"}
    assert len({fits.level(c.sqrt_h_alpha) for c in relu}) >= 3 * fits.MIN_SEGMENT
    assert get("fig13").fidelity
    taus = {}  # Fig. 13 (b, d): gradient flow and two momentum τ at every (h, α, seed)
    for c in get("fig13").configs():
        taus.setdefault((c.width, c.alpha, c.init_seed), set()).add((c.dynamics, c.tau))
    assert set(map(frozenset, taus.values())) == {frozenset(
        {("gradient_flow", 0.0)} | {("momentum", tau) for tau in configs.FIG13_MOMENTUM_TAUS})}
    lazy = get("fig14").configs()
    assert {fits.level(c.sqrt_h_alpha) for c in lazy} == {1e6} and len(
        {c.n_train for c in lazy}) >= 2 and all(
            (c.form, c.dtype) == ("difference", "float32") for c in lazy)
    for name, setting in (("fig15", "centered"), ("fig16", "bias_scale")):
        points = get(name).configs()
        by_point = {}
        for c in points:
            by_point.setdefault((c.width, c.alpha, c.init_seed), set()).add(getattr(c, setting))
        assert all(len(values) == 2 for values in by_point.values()), name
        assert len({c.init_seed for c in points}) >= 2, name  # ensembles need two members
