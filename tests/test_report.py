"""The report renders every figure from a tiny table and skips what it has no data for."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from lazy_feature.run import artifact
from lazy_feature.study import figures
from lazy_feature.study import report

WIDTHS, ALPHAS, SEEDS = (16, 64), (0.01, 0.1, 1.0), (0, 1)
ALL_FIGURES = [figure.name for figure in figures.FIGURES]
NTK_FIGURES = {"fig5a_kernel_drift"}
TABLES = (report.FITS, report.CLAIMS, report.SUMMARY)  # written whatever the data


def _drift(scale):
    """Kernel drift with slope −1.3 for √h·α < 1 and −1 above (eq. 18, Section 5)."""
    return float(scale ** -1.3 if scale < 1 else scale ** -1.0)


def _tiny_tables(root):
    runs, ensembles = [], []
    for width in WIDTHS:
        for alpha in ALPHAS:
            scale = np.sqrt(width) * alpha
            for seed in SEEDS:
                run_dir = os.path.join(root, f"h{width}_a{alpha}_s{seed}")
                os.makedirs(run_dir)
                t = np.concatenate([[0.0], np.logspace(-2, 2, 41)])
                with open(os.path.join(run_dir, artifact.DYNAMICS), "w") as f:
                    for step, ti in enumerate(t):
                        f.write(json.dumps({"step": step, "t": ti,
                                            "rescaled_loss": np.exp(-ti / scale)}) + "\n")
                error = 0.1 + 0.05 / (1 + scale) + 0.01 * seed + 0.1 / width
                runs.append(dict(
                    dataset="fashion_mnist", width=width, depth=3, alpha=alpha, n_train=1000,
                    init_seed=seed, activation="softplus", loss="soft_hinge", run_dir=run_dir,
                    status="done", train_loss=0.01, test_loss=0.2,
                    test_error=error, converged=True, t_half=scale * np.log(2),
                    t_half_rescaled=np.log(2), weight_drift=0.1 * _drift(scale) / np.sqrt(width),
                    output_norm=1.0, ntk_drift_test=_drift(scale), ntk_drift_train=_drift(scale),
                    frozen_init_test_error=0.1 + 0.1 / width,
                    frozen_final_test_error=error))
            ensembles.append(dict(alpha=alpha, width=width, sqrt_h_alpha=scale,
                                  n_members=len(SEEDS), ensemble_test_error=0.1,
                                  mean_test_error=0.12, std_test_error=0.01, var_F=1.0 / width))
    return pd.DataFrame(runs), pd.DataFrame(ensembles)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return _tiny_tables(str(tmp_path_factory.mktemp("runs")))


def _assert_rendered(output_dir, names, formats=report.FORMATS):
    for name in names:
        if "png" in formats:
            with open(os.path.join(output_dir, f"{name}.png"), "rb") as f:
                assert f.read(8) == b"\x89PNG\r\n\x1a\n", name
        if "svg" in formats:
            with open(os.path.join(output_dir, f"{name}.svg")) as f:
                assert "<svg" in f.read(), name


@pytest.fixture(scope="module")
def full_report(tiny, tmp_path_factory):
    output_dir = str(tmp_path_factory.mktemp("report"))
    return output_dir, report.write_report(*tiny, output_dir)


@pytest.mark.slow
def test_every_figure_renders_from_a_tiny_table(full_report):
    output_dir, written = full_report
    _assert_rendered(output_dir, ALL_FIGURES)
    expected = {os.path.join(output_dir, f"{name}.{fmt}")
                for name in ALL_FIGURES for fmt in report.FORMATS + ("csv",)}
    expected |= {os.path.join(output_dir, name)
                 for name in (report.SUMMARY, report.FITS, report.CLAIMS)}
    assert set(written) == expected
    assert not [f for f in os.listdir(output_dir) if f.endswith(".tmp")]


def _data(output_dir, name):
    return pd.read_csv(os.path.join(output_dir, f"{name}.csv"))


@pytest.mark.slow
def test_the_data_behind_each_figure(tiny, full_report):
    output_dir, _ = full_report
    runs, ensembles = tiny
    # Fig. 3 (b): the mean test error over seeds at each (√h·α, h), frozen NTK in black.
    fig3b = _data(output_dir, "fig3b_test_error_vs_width")
    means = runs.groupby(["width", "alpha"])["test_error"].mean()
    for width, alpha in means.index:
        point = fig3b[(fig3b["x"] == width)
                      & (fig3b["label"] == f"√h·α = {np.sqrt(width) * alpha:.3g}")]
        assert point["y"].item() == pytest.approx(means[width, alpha])
    frozen = fig3b[fig3b["label"] == "frozen NTK at init"]
    assert frozen["y"].tolist() == pytest.approx([0.1 + 0.1 / w for w in WIDTHS])
    # Fig. 3 (d): each width's curve spans [0, 1].
    fig3d = _data(output_dir, "fig3d_rescaled_test_error")
    assert fig3d.groupby("label")["y"].agg(["min", "max"]).to_numpy().tolist() == [[0, 1]] * 2
    # Fig. 4 (a, b): Var F and h·Var F of the ensembles.
    fig4a = _data(output_dir, "fig4a_var_F_vs_width")
    assert sorted(fig4a["y"]) == pytest.approx(sorted(ensembles["var_F"]))
    assert np.allclose(_data(output_dir, "fig4b_h_var_F_vs_sqrt_h_alpha")["y"], 1.0)
    # Fig. 5 (a): the drift per (h, √h·α) on the right panel, and the fitted feature line
    # with the slope of fits.csv.
    fits_table = pd.read_csv(os.path.join(output_dir, report.FITS))
    feature = fits_table[(fits_table["column"] == "ntk_drift_test")
                         & (fits_table["regime"] == "feature")].iloc[0]
    fig5a = _data(output_dir, "fig5a_kernel_drift")
    line = fig5a[fig5a["label"].str.startswith("L = 3: fit", na=False)]
    slope = np.polyfit(np.log(line["x"]), np.log(line["y"]), 1)[0]
    assert slope == pytest.approx(feature["slope"]) == pytest.approx(-1.3)
    right = fig5a[(fig5a["panel"] == 1) & fig5a["label"].isin(["h = 16", "h = 64"])]
    assert np.allclose(right["y"], [_drift(x) for x in right["x"]])
    # Fig. 5 (b): the logged α²L(t) of one run per (h, α), and t/(√h·α) on the right.
    fig5b = _data(output_dir, "fig5b_rescaled_loss")
    assert fig5b.groupby("panel")["series"].nunique().tolist() == [6, 6]
    left = fig5b[(fig5b["panel"] == 0) & (fig5b["series"] == "h=16,alpha=0.1")]
    assert np.allclose(left["y"], np.exp(-left["x"] / 0.4))


@pytest.mark.slow
def test_excluded_runs_enter_no_statistic_and_are_counted(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "FORMATS", ("png",))
    runs, ensembles = tiny
    stopped = runs.iloc[0].to_dict()
    stopped.update(init_seed=7, converged=False, test_error=0.9, ntk_drift_test=1e6)
    diverged = dict(stopped, init_seed=8, status="diverged", converged=np.nan,
                    test_error=np.nan, train_loss=np.nan)
    report.write_report(pd.concat([runs, pd.DataFrame([stopped, diverged])]), ensembles,
                        str(tmp_path))
    reference = str(tmp_path / "reference")
    report.write_report(runs, ensembles, reference)
    for name in ("fig3b_test_error_vs_width", "fig5a_kernel_drift"):
        pd.testing.assert_frame_equal(_data(str(tmp_path), name), _data(reference, name))
    summary = open(os.path.join(tmp_path, report.SUMMARY), encoding="utf-8").read()
    assert "14 runs: 12 used, 2 excluded (1 budget, 1 diverged)" in summary
    assert "| 0.01 | 16 | 0.04 | 2 | 1 budget, 1 diverged |" in summary
    assert "**Warning:** α = 0.01, h = 16: 2 used run(s), fewer than 3" in summary


@pytest.mark.slow
def test_summary_opens_with_the_claims_and_lists_exponents_with_their_ranges(full_report):
    output_dir, _ = full_report
    summary = open(os.path.join(output_dir, report.SUMMARY), encoding="utf-8").read()
    lines = summary.splitlines()
    sections = [line for line in lines if line.startswith("## ")]
    assert sections[0] == "## The paper's claims on this grid"
    claims_table = pd.read_csv(os.path.join(output_dir, report.CLAIMS))
    assert {"(i) collapse", "(ii) better regime", "(iv) exponent"} <= set(claims_table["claim"])
    # The synthetic drift has slope −1.3 below √h·α = 1 and −1 above; it falls through 1
    # between the levels 0.8 and 4, at √h·α* = 1.06 on the log-log line joining them, and
    # each fit keeps a factor 10 away from it.
    exponents = [line for line in lines if line.startswith("| 3 | ‖Θ−Θ0‖")]
    feature = [line for line in exponents if "feature" in line]
    assert len(feature) == 1
    assert "| √h·α ≤ 0.106 | 2 | 4 | -1.300 ± 0.000 | -1.3 | -1.5 |" in feature[0]
    assert "√h·α* = 1.06" in summary
    # One row per (α, h) in the runs-per-point and the performance tables, and every figure.
    assert sum(line.startswith("| 0.01 | 16 |") for line in lines) == 2
    assert all(f"`{name}.png`" in summary for name in ALL_FIGURES)
    assert not any(f"- `{name}`:" in summary for name in ALL_FIGURES)  # none skipped


@pytest.mark.slow
def test_missing_ntk_columns_skip_only_the_ntk_figure(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(report, "FORMATS", ("png",))  # SVG output is covered above
    runs, ensembles = tiny
    ntk = ["ntk_drift_test", "ntk_drift_train", "frozen_init_test_error",
           "frozen_final_test_error"]
    output_dir = str(tmp_path)
    open(os.path.join(output_dir, "fig5a_kernel_drift.png"), "w").close()  # stale copy
    report.write_report(runs.drop(columns=ntk), ensembles, output_dir)
    _assert_rendered(output_dir, [n for n in ALL_FIGURES if n not in NTK_FIGURES], ("png",))
    assert not os.path.exists(os.path.join(output_dir, "fig5a_kernel_drift.png"))
    summary = open(os.path.join(output_dir, report.SUMMARY), encoding="utf-8").read()
    assert "`fig5a_kernel_drift`: no data in column(s) ntk_drift_test" in summary
    assert "‖Θ−Θ0‖" not in summary


@pytest.mark.slow
def test_all_nan_columns_and_absent_logs_skip_every_figure(tiny, tmp_path):
    runs, ensembles = tiny
    measured = [c for c in runs if c not in ("dataset", "width", "depth", "alpha", "init_seed",
                                             "activation", "loss", "run_dir")]
    runs = runs.assign(run_dir=str(tmp_path / "nowhere"), **{c: np.nan for c in measured})
    ensembles = ensembles.assign(ensemble_test_error=np.nan, mean_test_error=np.nan,
                                 var_F=np.nan)
    written = report.write_report(runs, ensembles, str(tmp_path))
    assert written == [os.path.join(tmp_path, name) for name in TABLES]
    summary = open(written[-1], encoding="utf-8").read()
    assert all(f"- `{name}`: no" in summary for name in ALL_FIGURES)
    assert "No exponent could be fitted" in summary


def test_empty_tables_give_a_summary_and_no_figure(tmp_path):
    written = report.write_report(pd.DataFrame(), pd.DataFrame(), str(tmp_path))
    assert written == [os.path.join(tmp_path, name) for name in TABLES]
    assert "No exponent could be fitted" in open(written[-1], encoding="utf-8").read()


@pytest.mark.slow
def test_a_figure_is_laid_out_for_print():
    # Panels in rows of two, each legend outside its panel's data, an axis of widths labelled
    # at each width, TeX subscripts rendered, √h·α levels as powers of ten.
    figure = figures.Figure("f", "", "Fig.: t_{L/2} of w0",
                            tuple(figures.Panel("h", "t_{L/2}", logy=True) for _ in range(3)),
                            lambda tables: None)
    data = pd.DataFrame([dict(panel=panel, series=level, label=f"√h·α = "
                              f"{figures.power_of_ten(level)}", x=width, y=level * width,
                              yerr=np.nan, linestyle="-", colour=rank)
                         for panel in range(3) for rank, level in enumerate((1e-3, 1e4))
                         for width in (30, 100)])
    fig = figure.render(data)
    fig.canvas.draw()
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 3 and len(fig.axes) == 4  # 2 × 2, the fourth hidden
    positions = [ax.get_position() for ax in axes]
    assert positions[0].y0 == positions[1].y0 > positions[2].y1  # rows of two
    for ax in axes:
        legend = ax.get_legend()
        assert legend.get_window_extent().x0 >= ax.get_window_extent().x1  # outside the data
        assert [text.get_text() for text in legend.get_texts()] == ["√h·α = 10⁻³", "√h·α = 10⁴"]
        assert list(ax.get_xticks()) == [30, 100]
        assert [label.get_text() for label in ax.get_xticklabels()] == ["30", "100"]
        assert ax.get_ylabel() == "$t_{L/2}$"
    assert fig.get_suptitle() == "Fig.: $t_{L/2}$ of w₀"
    assert [figures.power_of_ten(v) for v in (0.5, 0.1, 10, 100.0, 2e4)] == [
        "0.5", "0.1", "10", "10²", "20000"]
