"""The report renders every figure from a tiny table and skips what it has no data for."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from lazy_feature import artifact, report

WIDTHS, ALPHAS, SEEDS = (16, 64), (0.01, 0.1, 1.0), (0, 1)
ALL_FIGURES = [name for name, _, _ in report.FIGURES]
NTK_FIGURES = {"fig5a_kernel_drift"}


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
                    dataset="fashion_mnist", width=width, depth=3, alpha=alpha,
                    init_seed=seed, activation="softplus", loss="soft_hinge", run_dir=run_dir,
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


def test_every_figure_renders_from_a_tiny_table(full_report):
    output_dir, written = full_report
    _assert_rendered(output_dir, ALL_FIGURES)
    expected = {os.path.join(output_dir, f"{name}.{fmt}")
                for name in ALL_FIGURES for fmt in report.FORMATS}
    assert set(written) == expected | {os.path.join(output_dir, report.SUMMARY)}
    assert not [f for f in os.listdir(output_dir) if f.endswith(".tmp")]


def test_summary_lists_exponents_next_to_the_paper(full_report):
    output_dir, _ = full_report
    summary = open(os.path.join(output_dir, report.SUMMARY), encoding="utf-8").read()
    lines = summary.splitlines()
    # The synthetic drift has slope −1.3 in the feature regime, exactly, for every seed.
    feature = [line for line in lines if "‖Θ−Θ0‖" in line and "feature" in line]
    assert len(feature) == 1
    assert "-1.300 ± 0.000" in feature[0] and "| -1.3 | -1.5 |" in feature[0]
    lazy = [line for line in lines if "‖Θ−Θ0‖" in line and "lazy" in line]
    assert "-1.000 ± 0.000" in lazy[0]
    assert any("t_{L/2}" in line and "1.000 ± 0.000" in line for line in lines)
    # One row per (α, h) in the performance table, and every figure listed.
    assert sum(line.startswith("| 0.01 | 16 |") for line in lines) == 1
    assert all(f"`{name}.png`" in summary for name in ALL_FIGURES)
    assert "Skipped" not in summary


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


def test_all_nan_columns_and_absent_logs_skip_every_figure(tiny, tmp_path):
    runs, ensembles = tiny
    measured = [c for c in runs if c not in ("dataset", "width", "depth", "alpha", "init_seed",
                                             "activation", "loss", "run_dir")]
    runs = runs.assign(run_dir=str(tmp_path / "nowhere"), **{c: np.nan for c in measured})
    ensembles = ensembles.assign(ensemble_test_error=np.nan, mean_test_error=np.nan,
                                 var_F=np.nan)
    written = report.write_report(runs, ensembles, str(tmp_path))
    assert written == [os.path.join(tmp_path, report.SUMMARY)]
    summary = open(written[0], encoding="utf-8").read()
    assert all(f"- `{name}`: no" in summary for name in ALL_FIGURES)
    assert "No exponent could be fitted" in summary


def test_empty_tables_give_a_summary_and_no_figure(tmp_path):
    written = report.write_report(pd.DataFrame(), pd.DataFrame(), str(tmp_path))
    assert written == [os.path.join(tmp_path, report.SUMMARY)]
    assert "No exponent could be fitted" in open(written[0], encoding="utf-8").read()
