"""Table 1 (Section 7): its named configs, the verdict rule on hand-made runs, and the
`--config=table1_quick` sweep end to end on tiny sizes, with rows whose data are absent."""
import dataclasses

import numpy as np
import pandas as pd
import pytest

from lazy_feature import artifact, data, table1
from pipelines import configs
from tests.conftest import MNIST_FILES, stage_in_process, write_class_template_mnist
from tests.test_data import EMNIST_LETTERS_FILES


def test_every_table1_row_has_a_config_at_the_papers_scale_and_a_quick_one():
    assert [r.name for r in table1.ROWS] == list(configs.TABLES["table1_quick"]) == [
        "cnn_cifar10_adam", "cnn_fashion_mnist_adam", "fc_cifar10_adam", "fc_fashion_mnist",
        "fc_mnist", "fc_emnist_letters", "fc_cifar10", "fc_mnist_pca10"]
    for name in table1.BY_NAME:
        full, quick = configs.get(f"table1_{name}"), configs.get(f"table1_{name}_quick")
        assert {c.n_train for c in full.configs()} == {10000}  # "binary, 10k"
        assert {c.n_train for c in quick.configs()} == {1000}
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
    rng = np.random.default_rng(0)
    labels = np.where(rng.random(n_test) < 0.5, -1.0, 1.0)
    rows = []
    for level, error in ((0.01, feature_error), (1000.0, lazy_error)):
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
    assert record["ensemble_stderr"] > 0
    # The rule: beyond 2 standard errors either way, else not clear.
    assert table1.verdict(0.021, 0.01) == table1.LAZY
    assert table1.verdict(-0.021, 0.01) == table1.FEATURE
    assert table1.verdict(0.019, 0.01) == table1.NOT_CLEAR
    assert table1.verdict(np.nan, 0.01) == table1.NOT_TESTABLE


def test_table1_quick_end_to_end_with_absent_data(tmp_path):
    # n_train=32: the Adam rows are built too (then skipped), and their batch is 32.
    # Synthetic EMNIST letters files (MNIST-format class templates under EMNIST's names): only
    # the fc_emnist_letters row has its data; Fashion-MNIST is pointed away from the machine's.
    emnist = tmp_path / "emnist"
    write_class_template_mnist(emnist, 10, 10)
    for mnist_name, emnist_name in zip(MNIST_FILES, EMNIST_LETTERS_FILES):
        (emnist / mnist_name).rename(emnist / emnist_name)
    out = tmp_path / "table1"
    args = ["--config=table1_quick", f"--output_dir={out}", "--runner=inprocess", "--noreport",
            "--widths=8", "--sqrt_h_alphas=0.1,100", "--seeds=0,1", "--n_train=32",
            "--n_test=40",
            f"--data_dirs=emnist_letters={emnist},fashion_mnist={tmp_path / 'absent'}"]
    result = stage_in_process("sweep", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    table = pd.read_csv(out / table1.CSV)
    assert list(table["row"]) == [r.name for r in table1.ROWS]  # one record per depth and width
    [judged] = table[table["row"] == "fc_emnist_letters"].to_dict("records")
    assert (judged["depth"], judged["width"], judged["n_train"]) == (3, 8, 32)
    verdicts = {table1.LAZY, table1.FEATURE, table1.NOT_CLEAR}
    assert judged["single_network"] in verdicts and judged["ensemble"] in verdicts
    assert np.isfinite([judged["single_difference"], judged["single_stderr"]]).all()
    assert judged["agreement"].startswith("not judged: the paper states it at n = 10000")
    absent = table[table["row"] != "fc_emnist_letters"]
    assert (absent["single_network"] == table1.NOT_FOUND).all()
    assert absent["rests_on"].str.startswith("data not found: ").all()
    for name in table["row"]:
        assert (out / name / "results.csv").exists() == (name == "fc_emnist_letters")
    markdown = (out / table1.MARKDOWN).read_text()
    assert markdown.count("| data not found |") == 7 and "Rule: " in markdown
    assert "fc_mnist: skipped, data not found" in result.stderr
    # A rerun resumes: every run is done, the table is the same.
    again = stage_in_process("sweep", *args)
    assert again.returncode == 0, again.stderr[-3000:]
    pd.testing.assert_frame_equal(pd.read_csv(out / table1.CSV), table)


def test_a_malformed_data_dirs_pair_is_a_one_line_error_and_writes_nothing(tmp_path):
    out = tmp_path / "table1"
    result = stage_in_process("sweep", "--config=table1_quick", f"--output_dir={out}",
                              "--data_dirs=mnist")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "sweep: error: --data_dirs takes dataset=DIR pairs separated by commas, got 'mnist'")
    assert not out.exists()
