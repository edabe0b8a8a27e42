"""Table 1 (Section 7): its named configs, the verdict rule on hand-made runs, and the
`--config=table1_quick` sweep end to end on tiny sizes, with rows whose data are absent."""
import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from lazy_feature.run import artifact
from lazy_feature.run import data
from lazy_feature.study import claims
from lazy_feature.study import table1
from lazy_feature.run import runner as run_lib
from pipelines import configs
from tests.helpers import (stage_in_process, stage_module, write_class_template_cifar10,
                           write_class_template_emnist_letters, write_class_template_mnist)


def test_every_table1_row_has_a_config_at_the_papers_scale_and_a_quick_one():
    assert [r.name for r in table1.ROWS] == list(configs.TABLES["table1_quick"]) == [
        "cnn_cifar10_adam", "cnn_fashion_mnist_adam", "fc_cifar10_adam", "fc_fashion_mnist",
        "fc_mnist", "fc_emnist_letters", "fc_cifar10", "fc_mnist_pca10"]
    for name in table1.BY_NAME:
        full, quick = configs.get(f"table1_{name}"), configs.get(f"table1_{name}_quick")
        assert {c.n_train for c in full.configs()} == {10000}  # "binary, 10k"
        # The quick rows take n = 1 000, or 500 with L = 9 (4 times L = 3's cost) and for
        # gradient flow or the CNN on CIFAR10's 32×32×3 images.
        halved = name in ("fc_fashion_mnist", "cnn_cifar10_adam", "fc_cifar10")
        assert {c.n_train for c in quick.configs()} == {500 if halved else 1000}
        assert len(quick.widths) == 1 and len(quick.seeds) >= 3
        for grid in (full, quick):  # both regimes are judged: a level inside each range
            levels = set(grid.sqrt_h_alphas)
            assert min(levels) <= grid.feature_range[1] and max(levels) >= grid.lazy_range[0]
    setups = {name: {(c.architecture, c.dataset, c.pca, c.depth, c.dynamics, c.batch_size)
                     for c in configs.get(f"table1_{name}").configs()}
              for name in table1.BY_NAME}
    assert setups["cnn_cifar10_adam"] == {("cnn", "cifar10", 0, 4, "adam", 32)}
    assert setups["cnn_fashion_mnist_adam"] == {("cnn", "fashion_mnist", 0, 4, "adam", 32)}
    assert setups["fc_cifar10_adam"] == {("fc", "cifar10", 0, 3, "adam", 32)}
    assert setups["fc_fashion_mnist"] == {("fc", "fashion_mnist", 0, L, "gradient_flow", 32)
                                          for L in (3, 9)}
    assert setups["fc_mnist_pca10"] == {("fc", "mnist", 10, 5, "gradient_flow", 32)}
    # Fig. 7 (c): Section 2's setup beside soft hinge β = 10 with momentum τ ∝ t.
    fig7c = {(c.loss_beta, c.dynamics, c.tau_proportional_to_t)
             for c in configs.get("fig7c").configs()}
    assert fig7c == {(20.0, "gradient_flow", False), (10.0, "momentum", True)}


def test_figure_quick_configs_fall_back_to_fashion_mnist_only_where_their_data_is_absent(
        tmp_path):
    grid = configs.get("fig6_quick")
    assert grid.base.dataset == "mnist" and data.missing("mnist") is not None
    moved, note = configs.fallback("fig6_quick", grid)
    assert moved.base.dataset == "fashion_mnist" and "runs on Fashion-MNIST instead" in note
    write_class_template_mnist(tmp_path, 1, 1)
    here = dataclasses.replace(grid, base=dataclasses.replace(grid.base, data_dir=str(tmp_path)))
    assert configs.fallback("fig6_quick", here) == (here, None)
    # A Table 1 row never falls back: its report says "data not found" instead.
    row = configs.get("table1_fc_mnist_quick")
    assert configs.fallback("table1_fc_mnist_quick", row) == (row, None)


def _hand_made_runs(tmp_path, feature_error, lazy_error, seeds=5, n_test=400):
    """Runs at √h·α = 0.01 and 1000 whose test outputs err on a random `*_error` fraction of
    the test points (each seed its own points), as the sweep lays them out."""
    return _runs_at_levels(tmp_path, {0.01: feature_error, 1000.0: lazy_error}, seeds, n_test)


def _runs_at_levels(tmp_path, errors, seeds=5, n_test=400):
    """Runs at each √h·α level of `errors` ({level: error}) whose test outputs err on a random
    `error` fraction of the test points (each seed its own points)."""
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(n_test) < 0.5, -1.0, 1.0)
    rows = []
    for level, error in errors.items():
        for seed in range(seeds):
            run_dir = tmp_path / f"{level:g}_{seed}"
            run_dir.mkdir()
            wrong = rng.random(n_test) < error
            np.save(run_dir / artifact.TEST_OUTPUTS, np.where(wrong, -labels, labels))
            np.save(run_dir / artifact.TEST_LABELS, labels)
            rows.append(dict(dataset="mnist", n_train=10000, depth=3, width=100,
                             alpha=level / 10.0, init_seed=seed, run_dir=str(run_dir),
                             test_error=float(wrong.mean()), train_loss=0.0, test_loss=1.0,
                             converged=True, status="done"))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("feature_error, lazy_error, expected, agreement", [
    (0.30, 0.15, table1.LAZY, "agrees"),
    (0.15, 0.30, table1.FEATURE, "disagrees"),
    (0.20, 0.20, table1.NOT_CLEAR, "inconclusive"),
])
def test_verdict_rule_on_hand_made_runs(tmp_path, feature_error, lazy_error, expected,
                                        agreement):
    runs = _hand_made_runs(tmp_path, feature_error, lazy_error)
    [record] = table1.judge_row(table1.BY_NAME["fc_mnist"], runs, (None, 0.1), (100, None))
    assert record["single_network"] == expected and record["ensemble"] == expected
    assert record["agreement"] == agreement  # the paper: lazy training
    single = runs.pivot(index="init_seed", columns="alpha", values="test_error")
    paired = single[0.001] - single[100.0]
    assert record["single_difference"] == pytest.approx(paired.mean())
    assert record["single_stderr"] == pytest.approx(paired.std(ddof=1) / np.sqrt(5))
    # a 95% interval by Student's t with 4 degrees of freedom (5 paired seeds)
    assert record["single_high"] - record["single_difference"] == pytest.approx(
        stats.t.ppf(0.975, 4) * record["single_stderr"])
    assert record["ensemble_low"] <= record["ensemble_difference"] <= record["ensemble_high"]
    # The rule: an interval above 0 or below 0, else not clear.
    assert table1.verdict((0.001, 0.03)) == table1.LAZY
    assert table1.verdict((-0.03, -0.001)) == table1.FEATURE
    assert table1.verdict((-0.001, 0.03)) == table1.NOT_CLEAR
    assert table1.verdict((np.nan, 0.01)) == table1.NOT_TESTABLE


def test_the_papers_not_clear_agrees_only_where_a_difference_would_have_been_seen():
    clear, not_clear = table1.LAZY, table1.NOT_CLEAR
    narrow, wide = [(-0.004, 0.006), (-0.008, 0.002)], [(-0.004, 0.006), (-0.03, 0.02)]
    assert table1.agreement(not_clear, not_clear, not_clear, 10000, narrow) == "agrees"
    assert table1.agreement(not_clear, not_clear, not_clear, 10000, wide) == table1.UNDERPOWERED
    assert table1.agreement(not_clear, clear, not_clear, 10000, narrow) == "disagrees"


@pytest.mark.parametrize("errors, optimum, agreement", [
    ((0.30, 0.20, 0.10, 0.30), claims.INTERMEDIATE, "agrees"),  # the paper's Section 7
    ((0.10, 0.20, 0.25, 0.30), claims.AT_AN_END, "disagrees"),  # best at the smallest level
    ((0.20, 0.20, 0.19, 0.20), "inconclusive", "inconclusive"),  # within the seeds' noise
])
def test_an_optimum_at_intermediate_alpha_is_judged_at_every_level(tmp_path, errors, optimum,
                                                                    agreement):
    levels = (0.01, 0.1, 1.0, 1000.0)  # 2 interior levels
    runs = _runs_at_levels(tmp_path, dict(zip(levels, errors)))
    row = table1.BY_NAME["cnn_fashion_mnist_adam"]
    assert row.paper == table1.NOT_CLEAR and row.optimum
    assert [r.name for r in table1.ROWS if r.optimum] == [row.name]
    [record] = table1.judge_row(row, runs, (None, 0.1), (100, None))
    assert record["optimum"] == optimum and record["agreement"] == agreement
    single = runs.assign(x=(10 * runs["alpha"]).round(6)).pivot(  # √h·α = √100 α
        index="init_seed", columns="x", values="test_error")
    assert single.std().min() > 0.005  # each seed errs on its own points
    best = single[[0.1, 1.0]].mean().idxmin()
    assert record["optimum_level"] == pytest.approx(single.mean().idxmin())
    assert record["optimum_interior"] == pytest.approx(best)
    # Student's t with 4 degrees of freedom, Bonferroni over the 2 interior levels
    t = stats.t.ppf(1 - 0.05 / 2 / 2, 4)
    for end, x in (("smallest", 0.01), ("largest", 1000.0)):
        paired = single[best] - single[x]
        assert record[f"optimum_{end}_difference"] == pytest.approx(paired.mean())
        assert record[f"optimum_{end}_high"] - paired.mean() == pytest.approx(
            t * paired.std(ddof=1) / np.sqrt(5))
    assert record["rests_on"].endswith("√h·α = 0.01 … 1000 (4 levels); 5 seeds")
    markdown = table1.markdown(pd.DataFrame([record], columns=list(table1.COLUMNS)))
    assert f"| {optimum} (lowest at √h·α = " in markdown and table1.OPTIMUM_RULE in markdown
    # below the paper's n the agreement is not judged, the optimum still is
    [small] = table1.judge_row(row, runs.assign(n_train=1000), (None, 0.1), (100, None))
    assert small["optimum"] == optimum and small["agreement"].startswith("not judged")
    # a row whose paper speaks of no optimum keeps its rule and leaves the optimum empty
    [other] = table1.judge_row(table1.BY_NAME["fc_mnist"], runs, (None, 0.1), (100, None))
    assert other["optimum"] == "" and np.isnan(other["optimum_level"])
    assert other["rests_on"].endswith("(2 levels); 5 seeds")
    assert other["agreement"] == table1.agreement(
        table1.LAZY, other["single_network"], other["ensemble"], 10000)


def test_an_optimum_row_without_data_or_runs():
    row = table1.BY_NAME["cnn_fashion_mnist_adam"]
    assert table1.missing_row(row, "absent")["optimum"] == table1.NOT_FOUND
    assert table1.missing_row(table1.BY_NAME["fc_mnist"], "absent")["optimum"] == ""
    [none] = table1.judge_row(row, pd.DataFrame())
    assert none["optimum"] == none["agreement"] == table1.NOT_TESTABLE


# Each data set in its own standard format, tiny: 10 classes of 4 + 4 images (n + test = 72).
_WRITERS = {"mnist": write_class_template_mnist, "fashion_mnist": write_class_template_mnist,
            "emnist_letters": write_class_template_emnist_letters,
            "cifar10": write_class_template_cifar10}
# Each row's architecture, dynamics, input shape and depths (`_TABLE1_SETTINGS` in configs).
_SETUPS = {
    "cnn_cifar10_adam": ("cnn", "adam", (32, 32, 3), {4}),
    "cnn_fashion_mnist_adam": ("cnn", "adam", (28, 28, 1), {4}),
    "fc_cifar10_adam": ("fc", "adam", (3072,), {3}),
    "fc_fashion_mnist": ("fc", "gradient_flow", (784,), {3, 9}),
    "fc_mnist": ("fc", "gradient_flow", (784,), {3}),
    "fc_emnist_letters": ("fc", "gradient_flow", (784,), {3}),
    "fc_cifar10": ("fc", "gradient_flow", (3072,), {3}),
    "fc_mnist_pca10": ("fc", "gradient_flow", (10,), {5}),
}


@pytest.mark.slow
def test_table1_quick_end_to_end_on_every_row(tmp_path):
    # Every row runs on tiny synthetic files of its data set, one seed at the two levels the
    # verdict compares (the fixed cost of a run, a few CPU seconds, times 18 runs), and Adam's
    # flags reach the Adam rows only (the gradient-flow rows would refuse them). The paper's
    # Euler scheme traces fastest (the integrators are tested on their own).
    folders = {name: tmp_path / name for name in _WRITERS}
    for seed, (name, write) in enumerate(_WRITERS.items()):
        write(folders[name], 4, 4, seed=seed)
    out = tmp_path / "table1"
    args = ["--config=table1_quick", f"--output_dir={out}", "--runner=inprocess", "--noreport",
            "--widths=8", "--sqrt_h_alphas=0.1,100", "--seeds=0", "--n_train=32",
            "--n_test=40", "--epochs=40", "--learning_rate=0.05", "--integrator=euler",
            "--data_dirs=" + ",".join(f"{name}={folder}" for name, folder in folders.items())]
    result = stage_in_process("sweep", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / table1.CSV)
    # One record per row and depth, in the paper's order, judged from its own runs.
    assert list(table["row"]) == [name for name in _SETUPS
                                  for _ in _SETUPS[name][3]]
    assert table1.NOT_FOUND not in set(table["single_network"])
    assert (table["single_network"] == table1.NOT_TESTABLE).all()  # one seed: no pairs
    assert (table["width"] == 8).all() and (table["n_train"] == 32).all()
    assert table["rests_on"].str.endswith("√h·α = 0.1 … 100 (2 levels); 1 seeds").all()
    assert (table["paper"] == [table1.BY_NAME[name].paper for name in table["row"]]).all()
    markdown = (out / table1.MARKDOWN).read_text()
    for row in table1.ROWS:
        assert markdown.count(f"| {row.architecture} | {row.dataset} | {row.algorithm} | "
                              f"{row.paper} |") == len(_SETUPS[row.name][3])
    # Each row's runs used its architecture, dynamics, data set, input shape and depths.
    for name, (architecture, dynamics, shape, depths) in _SETUPS.items():
        runs = pd.read_csv(out / name / "results.csv")
        grid = configs.TABLES["table1_quick"][name]()
        assert len(runs) == 2 * len(depths) and runs["converged"].all()
        assert set(runs["depth"]) == depths
        assert set(runs["architecture"]) == {architecture}
        assert set(runs["dynamics"]) == {dynamics}
        assert set(runs["dataset"]) == {grid.base.dataset}
        assert set(runs["pca"]) == {grid.base.pca}
        assert set(runs["epochs"].dropna()) == ({40.0} if dynamics == "adam" else set())
        for run_dir in runs["run_dir"]:
            task = run_lib.load_task(artifact.load_config(str(out / name / run_dir)))
            assert task.x_train.shape == (32, *shape)
    assert "table 1, fc_mnist: to run" in result.stderr
    # A rerun resumes: no run is trained again, the table is the same.
    stamps = {p: p.stat().st_mtime for p in out.glob("*/runs/*/metrics.json")}
    again = stage_in_process("sweep", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / table1.CSV), table, check_dtype=False)
    assert {p: p.stat().st_mtime for p in out.glob("*/runs/*/metrics.json")} == stamps
    # Kubeflow's last step: the table from the rows done, training nothing; a row whose data
    # are now absent reads "data not found".
    (out / table1.CSV).unlink()
    only = stage_in_process("sweep", *args[:-1], "--report_only",
                            f"--data_dirs=cifar10={tmp_path / 'absent'},"
                            + ",".join(f"{n}={f}" for n, f in folders.items() if n != "cifar10"))
    assert only.returncode == 0, only.stderr[-3000:]
    found = pd.read_csv(out / table1.CSV)
    cifar10 = found["row"].str.contains("cifar10")
    assert (found.loc[cifar10, "single_network"] == table1.NOT_FOUND).all()
    pd.testing.assert_frame_equal(found[~cifar10].reset_index(drop=True),
                                  table[~table["row"].str.contains("cifar10")]
                                  .reset_index(drop=True), check_dtype=False)
    assert {p: p.stat().st_mtime for p in out.glob("*/runs/*/metrics.json")} == stamps


def test_table1_report_only_trains_nothing(tmp_path):
    write_class_template_mnist(tmp_path / "mnist", 4, 4)
    out = tmp_path / "table1"
    result = stage_in_process("sweep", "--config=table1_quick", f"--output_dir={out}",
                              "--report_only", "--noreport", f"--data_dirs=mnist={tmp_path / 'mnist'},"
                              f"fashion_mnist={tmp_path / 'absent'}")
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / table1.CSV)
    mnist = table["row"].isin(["fc_mnist", "fc_mnist_pca10"])
    assert (table.loc[mnist, "rests_on"] == "no finished run").all()
    assert (table.loc[~mnist, "single_network"] == table1.NOT_FOUND).all()
    assert not list(out.glob("*/runs"))


def _table1_quick_plan(*args):
    """The plan of --config=table1_quick under the sweep's flags `args`, run nowhere."""
    stage = stage_module("sweep", "--config=table1_quick", "--output_dir=unused", *args)
    return {row.name: grid for row, grid, _ in table1.plan(
        configs.TABLES["table1_quick"], stage["settings_from_flags"](), "table1_quick")}


def test_table1_dynamics_flags_apply_to_the_rows_of_their_dynamics():
    adam = {"cnn_cifar10_adam", "cnn_fashion_mnist_adam", "fc_cifar10_adam"}
    plan = _table1_quick_plan("--epochs=7", "--learning_rate=0.01", "--batch_size=16")
    for name, grid in plan.items():
        expected = ("adam", 7.0, 0.01, 16) if name in adam else ("gradient_flow", None, None, 32)
        assert {(c.dynamics, c.epochs, c.learning_rate, c.batch_size)
                for c in grid.configs()} == {expected}, name
    # --dynamics sets every row's, and the flags of that dynamics then apply to all.
    plan = _table1_quick_plan("--dynamics=momentum", "--tau=0.1", "--tau_proportional_to_t")
    assert {(c.dynamics, c.tau, c.tau_proportional_to_t)
            for grid in plan.values() for c in grid.configs()} == {("momentum", 0.1, True)}


@pytest.mark.parametrize("flag, owner", [("--tau=0.1", "momentum"),
                                         ("--tau_proportional_to_t", "momentum")])
def test_a_dynamics_flag_no_table1_row_takes_is_a_one_line_error_and_writes_nothing(
        tmp_path, flag, owner):
    out = tmp_path / "table1"
    result = stage_in_process("sweep", "--config=table1_quick", f"--output_dir={out}", flag,
                              "--epochs=3")
    assert result.returncode == 1
    name = flag[2:].partition("=")[0]
    assert result.stderr.strip().splitlines()[-1] == (
        f"sweep: error: --{name} is a setting of --dynamics={owner}, and no row of "
        "--config=table1_quick is trained by momentum: drop it, or give --dynamics to set "
        "every row's")
    assert not out.exists()


def test_a_malformed_data_dirs_pair_is_a_one_line_error_and_writes_nothing(tmp_path):
    out = tmp_path / "table1"
    result = stage_in_process("sweep", "--config=table1_quick", f"--output_dir={out}",
                              "--data_dirs=mnist")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "sweep: error: --data_dirs takes dataset=DIR pairs separated by commas, got 'mnist'")
    assert not out.exists()
