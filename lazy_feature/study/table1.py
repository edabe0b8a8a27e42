"""Table 1: which regime performs better in each setup of Section 7, the paper's verdict
beside ours.

Each row of the paper's Table 1 (`ROWS`) is a sweep of its own (`table1_<row>` in
pipelines/configs/section7.py). For a row whose runs are done, `judge_row` gives per depth
and width, for single networks and for ensembles, the difference err_feature − err_lazy
between the smallest √h·α level of the feature range and the largest of the lazy range,
paired by init seed (`claims.regime_differences`: a Student's t interval over seeds;
ensembles a bootstrap over seeds), and our verdict by `RULE`. Where the paper speaks of an
optimum at intermediate α (`Row.optimum`: the CNN on Fashion-MNIST, Section 7), every level
counts (`claims.optimum`) and the agreement follows `OPTIMUM_RULE`. A row whose data set is
not on the machine reads "data not found" (`missing_row`). `write` puts table1.md and
table1.csv in a directory. `plan` gives a group's rows with the settings that replace theirs,
before any runs.
"""
import dataclasses

import numpy as np
import pandas as pd

from lazy_feature.run import artifact, data
from lazy_feature.run.config import sqrt_h_alpha
from lazy_feature.study import claims, fits, overrides, sweep

FEATURE, LAZY, NOT_CLEAR = "feature training", "lazy training", "not clear"
NOT_TESTABLE, NOT_FOUND = "not testable on this grid", "data not found"
UNDERPOWERED = "underpowered"
# The smallest difference of test error that "not clear" must rule out: one point.
DETECTABLE = 0.01
RULE = (f"the {claims.LEVEL:.0%} interval of err_feature − err_lazy above 0: {LAZY}; below 0: "
        f"{FEATURE}; holding 0: {NOT_CLEAR}. The paper's \"{NOT_CLEAR}\", where it speaks of "
        f"no optimum, agrees when our intervals lie within ±{DETECTABLE:g} (a difference of "
        f"one point would have been seen), else the grid is {UNDERPOWERED}")
OPTIMUM_RULE = (
    "where the paper speaks of an optimum at intermediate α, the single networks' test error "
    "at every √h·α level counts: the interior level of lowest mean error is compared with the "
    "smallest and the largest level, paired by init seed (Student's t, Bonferroni-corrected "
    f"over the k interior levels: {claims.LEVEL:.0%} becomes 1 − {1 - claims.LEVEL:.2g}/k). "
    f"Both intervals below 0: {claims.INTERMEDIATE}, the paper's (agrees); either above 0: "
    f"{claims.AT_AN_END} (disagrees); else inconclusive")
MARKDOWN, CSV = "table1.md", "table1.csv"


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the paper's Table 1: its setup as the paper names it, and its verdict."""
    name: str
    architecture: str
    dataset: str
    algorithm: str
    paper: str
    figure: str
    optimum: bool = False  # the paper speaks of an optimum at intermediate α


ROWS = (
    Row("cnn_cifar10_adam", "CNN (4 hidden layers)", "CIFAR10", "ADAM (batch size 32)",
        FEATURE, "Fig. 7 (b)"),
    Row("cnn_fashion_mnist_adam", "CNN (4 hidden layers)", "Fashion-MNIST",
        "ADAM (batch size 32)", NOT_CLEAR, "Section 7", optimum=True),
    Row("fc_cifar10_adam", "FC (3 hidden layers)", "CIFAR10", "ADAM (batch size 32)", LAZY,
        "Table 1"),
    Row("fc_fashion_mnist", "FC (3, 9 hidden layers)", "Fashion-MNIST", "Gradient flow", LAZY,
        "Fig. 7 (d)"),
    Row("fc_mnist", "FC (3 hidden layers)", "MNIST", "Gradient flow", LAZY, "Fig. 6 (a-d)"),
    Row("fc_emnist_letters", "FC (3 hidden layers)", "EMNIST letters", "Gradient flow", LAZY,
        "Fig. 7 (c)"),
    Row("fc_cifar10", "FC (3 hidden layers)", "CIFAR10", "Gradient flow", LAZY, "Fig. 6 (e)"),
    Row("fc_mnist_pca10", "FC (5 hidden layers)", "MNIST 10 PCA", "Gradient flow", FEATURE,
        "Fig. 7 (a)"),
)
BY_NAME = {row.name: row for row in ROWS}
COLUMNS = ("row", "architecture", "dataset", "algorithm", "paper", "depth", "width",
           "n_train", "single_network", "single_difference", "single_stderr", "single_low",
           "single_high", "ensemble", "ensemble_difference", "ensemble_stderr", "ensemble_low",
           "ensemble_high", "optimum", "optimum_level", "optimum_interior",
           "optimum_smallest_difference", "optimum_smallest_low", "optimum_smallest_high",
           "optimum_largest_difference", "optimum_largest_low", "optimum_largest_high",
           "agreement", "rests_on")


def plan(rows, settings, group):
    """[(row, grid, why)] of the Table 1 group `group` ({row name: config function}), in
    ROWS order: each row's SweepConfig with `settings` applied (the dynamics settings to the
    rows of their dynamics, `overrides.route_dynamics`), and why its data set is missing
    (None when present). Every row is checked before any runs."""
    grids = {name: make() for name, make in rows.items()}
    routed = overrides.route_dynamics(grids, settings, group)
    found = []
    for row in ROWS:
        grid = overrides.apply(grids[row.name], routed[row.name])
        found.append((row, grid, data.missing(grid.base.dataset, grid.base.data_dir)))
    return found


def verdict(interval):
    """Our verdict on the interval (low, high) of err_feature − err_lazy (`RULE`),
    NOT_TESTABLE where NaN."""
    if not np.all(np.isfinite(interval)):
        return NOT_TESTABLE
    return {"feature": FEATURE, "lazy": LAZY, None: NOT_CLEAR}[claims.better(interval)]


def agreement(paper, single, ensemble, n_train, intervals=()):
    """"agrees" when both our verdicts are the paper's, "disagrees" when one is another
    (a clear verdict where the paper's is "not clear", too), else "inconclusive". The
    paper's "not clear" agrees only where our `intervals` (low, high) lie within
    ±DETECTABLE, else the grid is UNDERPOWERED. Not judged below the paper's n = 10 000
    (`claims.at_paper_n`)."""
    ours = (single, ensemble)
    if NOT_TESTABLE in ours:
        found = NOT_TESTABLE
    elif any(v not in (paper, NOT_CLEAR) for v in ours):
        found = "disagrees"
    elif paper == NOT_CLEAR:
        found = ("agrees" if intervals and all(-DETECTABLE <= low and high <= DETECTABLE
                                               for low, high in intervals)
                 else UNDERPOWERED)
    elif all(v == paper for v in ours):
        found = "agrees"
    else:
        found = "inconclusive"
    return claims.at_paper_n(found, n_train)


def optimum_agreement(optimum, n_train):
    """The agreement of a row whose paper speaks of an optimum at intermediate α, from our
    `optimum` verdict (`claims.optimum`, `OPTIMUM_RULE`); not judged below the paper's
    n = 10 000 (`claims.at_paper_n`)."""
    found = {claims.INTERMEDIATE: "agrees", claims.AT_AN_END: "disagrees"}.get(optimum, optimum)
    return claims.at_paper_n(found, n_train)


def judge_row(row, runs, feature_range=None, lazy_range=None):
    """The records (dicts of COLUMNS) of a Table 1 row from its sweep's runs (the rows of
    results.csv, with run_dir located), one per depth and width; only the used runs count
    (`sweep.mark_used`). The regime ranges are the sweep's (`fits.regime_ranges`). A row
    with `optimum` is also judged at every level (`claims.optimum`), and rests on them all."""
    runs = sweep.mark_used(runs)
    used = runs[runs["used"]] if len(runs) else runs
    if used.empty:
        return [_record(row, verdicts={}, rests_on="no finished run")]
    used = used.assign(sqrt_h_alpha_level=sqrt_h_alpha(used["alpha"], used["width"])
                       .astype(float).map(fits.level))
    records = []
    for depth, part in fits.by_depth(used):
        ranges, _ = fits.regime_ranges(part, feature_range, lazy_range)
        by_width = {}
        for found in claims.regime_differences(part, ranges):
            by_width.setdefault(found["width"], {})[found["kind"]] = found
        for width, kinds in by_width.items():
            part, levels = kinds["single network"]["part"], kinds["single network"]["levels"]
            if row.optimum:  # every level counts
                best, levels = claims.optimum(part), None
            records.append(_record(row, kinds, depth=depth, width=width,
                                   n_train=int(part["n_train"].min()),
                                   rests_on=claims.rests_on(part, levels),
                                   optimum=best if row.optimum else None))
    return records


def missing_row(row, reason):
    """The record of a row whose data set is absent: "data not found", and why."""
    return _record(row, verdicts={}, rests_on=f"{NOT_FOUND}: {reason}", missing=True)


def _record(row, verdicts, depth=None, width=None, n_train=None, rests_on="", missing=False,
            optimum=None):
    record = dict(row=row.name, architecture=row.architecture, dataset=row.dataset,
                  algorithm=row.algorithm, paper=row.paper, depth=depth, width=width,
                  n_train=n_train, rests_on=rests_on)
    intervals = []
    for kind, prefix in (("single network", "single"), ("ensemble", "ensemble")):
        found = verdicts.get(kind, {})
        difference, stderr = found.get("difference", np.nan), found.get("stderr", np.nan)
        low, high = found.get("interval", (np.nan, np.nan))
        intervals.append((low, high))
        record.update({f"{prefix}_difference": difference, f"{prefix}_stderr": stderr,
                       f"{prefix}_low": low, f"{prefix}_high": high,
                       "single_network" if prefix == "single" else "ensemble":
                           NOT_FOUND if missing else verdict((low, high))})
    # A row whose paper speaks of no optimum leaves the optimum's columns empty.
    found = optimum or {}
    record.update(optimum="" if not row.optimum else NOT_FOUND if missing else
                  found.get("verdict", NOT_TESTABLE),
                  optimum_level=found.get("level", np.nan),
                  optimum_interior=found.get("interior_level", np.nan))
    for end in ("smallest", "largest"):
        low, high = found.get(f"{end}_interval", (np.nan, np.nan))
        record.update({f"optimum_{end}_difference": found.get(f"{end}_difference", np.nan),
                       f"optimum_{end}_low": low, f"optimum_{end}_high": high})
    if missing:
        record["agreement"] = ""
    elif row.optimum:
        record["agreement"] = optimum_agreement(record["optimum"], n_train or 0)
    else:
        record["agreement"] = agreement(row.paper, record["single_network"],
                                        record["ensemble"], n_train or 0, intervals)
    return record


def _cell(verdict_text, difference, low, high):
    if not np.isfinite(difference):
        return verdict_text
    return f"{verdict_text} ({difference:+.4f}, in [{low:+.4f}, {high:+.4f}])"


def _optimum_cell(r):
    """Our optimum verdict, the level of lowest mean error, and the best interior level
    against each end with its interval; empty where the paper speaks of no optimum."""
    verdict_text = r["optimum"] if isinstance(r["optimum"], str) else ""
    if not np.isfinite(r["optimum_level"]):
        return verdict_text
    ends = "".join(f"; √h·α = {r['optimum_interior']:g} vs the {end}: "
                   f"{r[f'optimum_{end}_difference']:+.4f} in [{r[f'optimum_{end}_low']:+.4f}, "
                   f"{r[f'optimum_{end}_high']:+.4f}]"
                   for end in ("smallest", "largest")
                   if np.isfinite(r[f"optimum_{end}_difference"]))
    return f"{verdict_text} (lowest at √h·α = {r['optimum_level']:g}{ends})"


def markdown(table):
    """Table 1 as markdown: the paper's verdict beside ours, with the rule stated."""
    header = ["Architecture", "Dataset (binary)", "Algorithm", "Paper", "L", "h", "n",
              "Ours: single network", "Ours: ensemble", "Ours: optimum over √h·α",
              "Agreement", "Rests on"]
    lines = ["# Table 1: which regime performs better", "",
             f"Ours: err_feature − err_lazy and its {claims.LEVEL:.0%} interval over init "
             "seeds (single networks: paired by seed, Student's t; ensembles: bootstrap "
             "percentiles over seeds), between the smallest √h·α level of the feature range "
             "and the largest of the lazy range. "
             f"Rule: {RULE}. Optimum: {OPTIMUM_RULE}. The agreement is judged at the "
             f"paper's n = {claims.PAPER_N} only.", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in table.to_dict("records"):
        cells = [r["architecture"], r["dataset"], r["algorithm"], r["paper"],
                 _int(r["depth"]), _int(r["width"]), _int(r["n_train"]),
                 _cell(r["single_network"], r["single_difference"], r["single_low"],
                       r["single_high"]),
                 _cell(r["ensemble"], r["ensemble_difference"], r["ensemble_low"],
                       r["ensemble_high"]),
                 _optimum_cell(r), r["agreement"], r["rests_on"]]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _int(value):
    return "" if value is None or pd.isna(value) else f"{int(value)}"


def write(output_dir, records):
    """Write table1.csv and table1.md (records: dicts of COLUMNS, in ROWS order) to
    output_dir; return their paths, table1.md last."""
    table = pd.DataFrame.from_records(records, columns=list(COLUMNS))
    paths = artifact.join(output_dir, CSV), artifact.join(output_dir, MARKDOWN)
    artifact.write_csv(paths[0], table)
    artifact.write_text(paths[1], markdown(table))
    return list(paths)
