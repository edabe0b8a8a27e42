"""Sweeps of the (α, h) plane (Section 3): a grid of runs through train → ntk_eval → ensemble.

A sweep directory holds
  runs/<run_id>/     one run artifact per grid point (`runner.train`, then ntk.json);
  rows/<run_id>.json the run's row, written last (`grid_point`);
  sweep.json         the SweepConfig (grid, fit ranges), for the report stage;
  results.csv        the tidy table, one row per run of the grid (pandas.read_csv), with
                     `used` and `excluded_reason` (see `excluded_reason`);
  ensembles.csv      one row per (α, h, ...) over the used runs' init seeds (eqs. 15-16);
  tables.json        the SHA-256 of both tables, by which a damaged one is rebuilt from rows.
A rerun skips the runs that have a row and resumes an interrupted run from its checkpoint,
so a killed sweep loses at most the work since the last checkpoint of the runs in flight.

Only converged runs count: the paper fits every training point (Section 4 (i)), so a run
stopped by a budget, diverged, or with a non-finite loss is kept in results.csv but left out
of every ensemble, statistic, fit and figure. `run_sweep(retry_unconverged=FACTOR)` resumes
the budget-stopped runs from where they stopped with FACTOR times their budgets.

Runs fan out on Apache Beam (`runner="beam"`): by default Beam's local runner (the
FnApiRunner the DirectRunner runs batch pipelines on, named so that nothing is downloaded)
with one process per worker, or in this process for a sweep directory on ram://; any other
runner (Dataflow, Flink, Spark) through Beam pipeline options (`pipeline_options`), with the
sweep directory on storage every worker sees (gs://, s3://, hdfs://: every file goes through
tf.io.gfile, see `artifact`). `runner="inprocess"` is the plain loop.
Each run's status lines go to its train.log; `run_sweep` shows its progress (runs done,
excluded runs, ETA) on a stream it is given.
"""
import dataclasses
import itertools
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import pandas as pd

from lazy_feature.errors import ConfigError, RunDirError
from lazy_feature.flow import registry, training
from lazy_feature.run import artifact, distribute, lease, progress, resources, runner
from lazy_feature.run.config import NOT_IDENTITY, TrainConfig, alpha_from_sqrt_h_alpha, sqrt_h_alpha
from lazy_feature.study import ensemble, grid_point

if TYPE_CHECKING:
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

logger = logging.getLogger("lazy_feature")

RESULTS, ENSEMBLES, SWEEP = "results.csv", "ensembles.csv", "sweep.json"
TABLES = "tables.json"  # the SHA-256 of results.csv and ensembles.csv as written
RUNNERS = ("beam", "inprocess")
# The columns that say which runs form one ensemble: every setting but the init seed.
_NOT_ENSEMBLE_KEYS = {"init_seed", "run_id", *NOT_IDENTITY}


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """A grid depths × widths × (alphas or sqrt_h_alphas) × seeds around the settings of `base`.

    Give α directly (Fig. 3 (c), 5 (a, left)) or through √h·α, α = sqrt_h_alpha/√h
    (Figs. 3 (b), 4 (a, d)); both at once adds both grids. `ntk` adds the ntk_eval stage
    with its drift summed over the first ntk_max_train / ntk_max_test points (None: all).
    `form` and `dtype` None pick each point's (`precision.default_form`: the direct form
    where float32 resolves F, the difference form beyond; `precision.default_dtype`: then
    float32); base.form and base.dtype are ignored, since they were resolved for base's α.
    `feature_range` and `lazy_range` are the closed (low, high) ranges of √h·α over which
    the report fits each regime's exponents (None: a factor `fits.MARGIN` from the measured
    crossover, see `lazy_feature.study.fits`).
    `variants` repeats the grid for each of its dicts of TrainConfig settings that differ from
    base (e.g. `({"centered": True}, {"centered": False})` for Appendix I); () is base alone.
    The appendices' observables of each run, off by default (`appendix_observables`):
    `velocity` the pre-activation velocity at t = 0 on the first velocity_max_test test points
    (Appendix D); `fidelity` the distance of each gradient-flow run to its ε_∇/100 reference
    flow and its cost (Appendix G; momentum runs are not checked, Fig. 13 (b, d) compares two
    τ with each other; Adam runs are refused); `gram_probe` > 0 the Gram matrices at w0 and at
    the end on that many test points sorted by label (Fig. 8).
    """
    base: TrainConfig = TrainConfig()
    widths: tuple[int, ...] = (100,)
    depths: tuple[int, ...] = ()  # () keeps base.depth
    alphas: tuple[float, ...] = ()
    sqrt_h_alphas: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    ntk: bool = True
    ntk_max_train: int | None = None
    ntk_max_test: int | None = None
    form: str | None = None
    dtype: str | None = None
    feature_range: tuple[float | None, float | None] | None = None
    lazy_range: tuple[float | None, float | None] | None = None
    variants: tuple[dict[str, Any], ...] = ()
    velocity: bool = False
    velocity_max_test: int | None = 1000
    fidelity: bool = False
    gram_probe: int = 0

    def appendix_options(self) -> dict[str, Any]:
        """The keyword arguments of `appendix_observables` this sweep asks for."""
        return dict(velocity=self.velocity, velocity_max_test=self.velocity_max_test,
                    fidelity=self.fidelity, gram_probe=self.gram_probe)

    def configs(self) -> list[TrainConfig]:
        """The TrainConfig of every grid point, without duplicates, in a fixed order.

        Raises ConfigError for an empty grid or a grid point that is not a valid run.
        """
        if not self.widths or not self.seeds or not (self.alphas or self.sqrt_h_alphas):
            raise ConfigError("empty grid: a sweep needs at least one width, one seed and one "
                              "alpha or sqrt_h_alpha")
        points = [(h, a) for h, a in itertools.product(self.widths, self.alphas)]
        points += [(h, alpha_from_sqrt_h_alpha(s, h))
                   for h, s in itertools.product(self.widths, self.sqrt_h_alphas)]
        if self.fidelity and any(dict(vars(self.base), **v)["dynamics"] == training.ADAM
                                 for v in self.variants or ({},)):
            raise ConfigError("fidelity compares a run with its reference gradient flow, and "
                              "an adam run has none: drop fidelity or --dynamics=adam")
        configs: dict[str, TrainConfig] = {}
        for variant, depth, (width, alpha), seed in itertools.product(
                self.variants or ({},), self.depths or (None,), points, self.seeds):
            config = dataclasses.replace(self.base, **variant)
            config = dataclasses.replace(config, depth=int(depth or cast(int, config.depth)),
                                         width=int(width),
                                         alpha=float(alpha), init_seed=int(seed),
                                         form=self.form, dtype=self.dtype)
            configs.setdefault(config.run_id(), config.resolved())  # its own integrator
        return list(configs.values())

    def to_dict(self) -> dict[str, Any]:
        return dict(dataclasses.asdict(self), base=self.base.to_dict())

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "SweepConfig":
        base = dict(d["base"])
        base.setdefault("integrator", registry.EULER)  # sweeps made before there was a choice
        d = dict(d, base=TrainConfig.from_dict(base))
        fields: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v
                                  for k, v in d.items()}
        return cls(**fields)


# -- which runs count ------------------------------------------------------------------------

EXCLUDED_REASONS = ("budget", "stalled", "diverged", "nan")


def excluded_reason(row: Mapping[str, Any]) -> str:
    """Why a run stays out of every statistic ("" when it is used).

    "diverged": the flow could not take a step; "nan": a non-finite training or test loss
    (a NaN output); "budget": stopped by max_time, max_steps or max_wall_seconds before every
    training margin exceeded 1 (an Adam run that has done its `epochs` is finished,
    `runner.finished`); "stalled": its dt fell towards 0 (`callbacks.GradientFlowStopping`), so
    larger budgets would not finish it. A row of an older table without status counts as done.
    """
    if row.get("status", "done") != "done":
        return "diverged"
    losses = [row.get(k) for k in ("train_loss", "test_loss") if k in row]
    if any(v is None or not math.isfinite(float(v)) for v in losses):
        return "nan"
    if not runner.finished(dict(row, converged=row.get("converged", False))):
        return "stalled" if row.get("stop_reason") == "stalled" else "budget"
    return ""


def mark_used(runs: pd.DataFrame) -> pd.DataFrame:
    """`runs` with the columns excluded_reason and used (excluded_reason == "")."""
    if runs.empty:
        return runs.assign(excluded_reason=pd.Series(dtype=str), used=pd.Series(dtype=bool))
    reasons = [excluded_reason(row) for row in runs.to_dict("records")]
    return runs.assign(excluded_reason=reasons, used=[r == "" for r in reasons])


# -- the sweep ---------------------------------------------------------------------------

LOCAL_RUNNER = "FnApiRunner"
IN_PROCESS_SCHEMES = ("ram://",)  # filesystems that exist in one process only


def pipeline_options(output_dir: str, workers: int = 2, options: Iterable[str] | None = ()
                     ) -> "PipelineOptions":
    """The Beam PipelineOptions of a sweep: `options` (strings) on top of the local runner's.

    Without a --runner among `options`, the sweep runs on the engine of Beam's DirectRunner
    for batch pipelines, the FnApiRunner, named explicitly: Beam 2.77's "DirectRunner" first
    tries to download and start its Prism runner. It runs `workers` processes
    (--direct_running_mode=multi_processing), or works in this process (in_memory) for one
    worker or a sweep directory on a filesystem that lives in one process (ram://). Any
    option given (--direct_num_workers=4, --runner=DataflowRunner, --project=..., ...)
    overrides these.
    """
    from apache_beam.options.pipeline_options import (  # pylint: disable=import-outside-toplevel
        PipelineOptions, StandardOptions)
    options = list(options or ())
    if PipelineOptions(options).view_as(StandardOptions).runner is not None:
        return PipelineOptions(options)
    in_process = workers == 1 or output_dir.startswith(IN_PROCESS_SCHEMES)
    mode = "in_memory" if in_process else "multi_processing"
    return PipelineOptions([f"--runner={LOCAL_RUNNER}", f"--direct_running_mode={mode}",
                            f"--direct_num_workers={workers}"] + options)


def _run_beam(configs: Sequence[TrainConfig], output_dir: str, stage_options: Mapping[str, Any],
              options: "PipelineOptions | None") -> None:
    import apache_beam as beam  # pylint: disable=import-outside-toplevel
    with beam.Pipeline(options=options) as pipeline:
        _ = (pipeline
             | "grid" >> beam.Create([c.to_dict() for c in configs])
             | "spread" >> beam.Reshuffle()  # one run per bundle, spread over the workers
             | "run" >> beam.Map(grid_point.execute_run, output_dir, **stage_options))


def run_sweep(sweep: SweepConfig, output_dir: str, runner: str = "beam", workers: int = 2,
              beam_options: Sequence[str] | None = None, retry_unconverged: float | None = None,
              progress_stream: IO[str] | None = None,
              strategy: "tf.distribute.Strategy | str" = "default", cpu_devices: int | None = None,
              devices: Sequence[str] | None = None, tpu: str = ""
              ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run every grid point of `sweep` without a row yet, then write the tables.

    Args:
      sweep: a SweepConfig.
      output_dir: the sweep directory (created; reruns resume it), on any filesystem
        tf.io.gfile knows (gs://... for a cluster's workers).
      runner: "beam" (Apache Beam) or "inprocess" (a loop in this process).
      workers: processes of Beam's local runner, each given cpu_count/workers TF threads.
      beam_options: Beam pipeline options (strings), passed through (`pipeline_options`).
      retry_unconverged: a factor > 1: the runs a budget stopped resume from where they
        stopped, with their budgets multiplied by it (`scaled_budgets`).
      progress_stream: a stream (e.g. sys.stderr) to show the resource estimate and then
        runs done, runs excluded (`excluded_reason`) and the ETA on while the sweep runs
        (`progress.Display`); None shows nothing.
      strategy, cpu_devices, devices, tpu: where each run trains and its NTK is evaluated:
        a name of `distribute.STRATEGIES` and its options (`distribute.make`; made once
        per process: here, or in each Beam worker), or a tf.distribute.Strategy with
        runner="inprocess".
    Returns:
      (runs, ensembles) DataFrames, also written to results.csv and ensembles.csv.
    Raises:
      ConfigError for a bad option or a run too large for this machine's memory;
      RunDirError for an output_dir that cannot be written.
    """
    if runner not in RUNNERS:
        raise ConfigError(f"unknown runner {runner!r}: choose one of {', '.join(RUNNERS)}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if retry_unconverged is not None and not retry_unconverged > 1:
        raise ConfigError(f"retry_unconverged multiplies the budgets: it must be > 1, got "
                          f"{retry_unconverged}")
    configs = sweep.configs()
    distribute.check_precision(strategy, configs)
    where: dict[str, Any] | None  # where each run makes its strategy (None: made here)
    where = dict(devices=devices, cpu_devices=cpu_devices, tpu=tpu)
    if runner == "inprocess":
        strategy, where = distribute.make(strategy, **where), None
    else:  # each Beam worker makes it from its name
        distribute.check_name(strategy)
    options = pipeline_options(output_dir, workers, beam_options) if runner == "beam" else None
    local = options is None or options.get_all_options()["runner"] == LOCAL_RUNNER
    copies = (options.get_all_options()["direct_num_workers"]  # type: ignore[union-attr]
              if runner == "beam" and local else 1)
    artifact.check_writable(output_dir)
    pending = [c for c in configs if not _has_whole_row(output_dir, c)]
    if pending:  # a missing data set or a run too large fails here, before anything starts
        found = resources.check(pending, grid_point.task_for(pending[0]).x_train.shape[1:],
                                 sweep.ntk, copies, local)
        logger.info("%s", found.line(copies))
        if progress_stream is not None:
            progress_stream.write(found.line(copies) + "\n")
    artifact.makedirs(artifact.join(output_dir, grid_point.ROWS))
    artifact.write_json(artifact.join(output_dir, SWEEP), sweep.to_dict())
    if retry_unconverged is not None:
        configs = _reopen_budget_stopped(configs, output_dir, retry_unconverged)
        pending = [c for c in configs if not _has_whole_row(output_dir, c)]
    logger.info("sweep %s: %d runs, %d finished, %d to run (%s)", output_dir, len(configs),
                len(configs) - len(pending), len(pending), runner)
    stage_options: dict[str, Any] = dict(ntk=sweep.ntk, ntk_max_train=sweep.ntk_max_train,
                                         ntk_max_test=sweep.ntk_max_test, strategy=strategy,
                                         strategy_options=where,
                                         appendix=sweep.appendix_options())
    with progress.shown([grid_point.row_path(output_dir, c.run_id()) for c in configs],
                        progress_stream, failed=excluded_reason, failures="excluded"):
        if runner == "inprocess":
            _run_in_process(pending, output_dir, stage_options)
        elif pending:
            threads = max(1, (os.cpu_count() or 1) // copies) if local else None
            _run_beam(pending, output_dir, dict(stage_options, threads=threads), options)
    return write_tables(output_dir, configs)


def _has_whole_row(output_dir: str, config: TrainConfig) -> bool:
    """Whether the run has a row and its run directory still holds the files its metrics.json
    vouches for; a run found damaged loses its row, so that the sweep redoes what is needed
    (`runner.complete_metrics`)."""
    row = grid_point.read_row(output_dir, config.run_id())
    if row is None:
        return False
    run_dir = artifact.join(output_dir, grid_point.RUNS, config.run_id())
    if row.get("status") != "done":
        return True
    _, bad = artifact.check_whole(run_dir)
    if not bad:
        return True
    logger.warning("%s: %s damaged; the run and its row are made again", run_dir,
                   ", ".join(bad))
    artifact.remove(grid_point.row_path(output_dir, config.run_id()))
    return False


def _run_in_process(configs: Sequence[TrainConfig], output_dir: str,
                    stage_options: Mapping[str, Any]) -> None:
    """Run each grid point here in turn; one that another trainer holds (another sweep on this
    directory) goes to the back of the queue, and is waited for once only such remain."""
    queue = list(configs)
    while queue:
        busy = []
        for config in queue:
            try:
                grid_point.execute_run(config, output_dir, wait=False, **stage_options)
            except lease.Busy:
                busy.append(config)
        if busy and len(busy) == len(queue):
            grid_point.execute_run(busy.pop(0), output_dir, **stage_options)
        queue = busy


def scaled_budgets(config: TrainConfig, factor: float) -> TrainConfig:
    """`config` with max_time, max_steps and max_wall_seconds multiplied by `factor`."""
    return dataclasses.replace(config, max_time=config.max_time * factor,
                               max_steps=math.ceil(config.max_steps * factor),
                               max_wall_seconds=config.max_wall_seconds * factor)


def _reopen_budget_stopped(configs: Sequence[TrainConfig], output_dir: str, factor: float
                           ) -> list[TrainConfig]:
    """The grid's configs, a budget-stopped run's with factor × the budgets it stopped at.

    Each such run loses its row first (so a kill from here on reruns it) and is reopened
    to resume where it stopped (`runner.reopen`).
    """
    retried = []
    for config in configs:
        path = grid_point.row_path(output_dir, config.run_id())
        row = artifact.read_json(path) if artifact.exists(path) else None
        if row is None or excluded_reason(row) != "budget":
            retried.append(config)
            continue
        stopped = dataclasses.replace(config, max_time=float(row["max_time"]),
                                      max_steps=int(row["max_steps"]),
                                      max_wall_seconds=float(row["max_wall_seconds"]))
        retried.append(scaled_budgets(stopped, factor))
        run_dir = artifact.join(output_dir, grid_point.RUNS, config.run_id())
        with lease.held(run_dir):
            artifact.remove(path)
            runner.reopen(run_dir, retried[-1])
        logger.info("%s: resumes with %g times its budgets", config.run_id(), factor)
    return retried


def read_sweep_config(output_dir: str) -> SweepConfig | None:
    """The SweepConfig a sweep directory was run with (sweep.json), or None."""
    path = artifact.join(output_dir, SWEEP)
    return SweepConfig.from_dict(artifact.read_json(path)) if artifact.exists(path) else None


def load_rows(output_dir: str, configs: Iterable[TrainConfig]) -> pd.DataFrame:
    """The rows of the grid points that have one, as a DataFrame in grid order (`mark_used`)."""
    rows = [artifact.read_json(grid_point.row_path(output_dir, c.run_id())) for c in configs
            if artifact.exists(grid_point.row_path(output_dir, c.run_id()))]
    return mark_used(pd.DataFrame.from_records(rows))


def ensembles_table(runs: pd.DataFrame, output_dir: str) -> pd.DataFrame:
    """One row per group of two or more used runs that differ only in init_seed (Section 4).

    Each row holds the group's settings, `ensemble.summarize`'s scalars (not the per-member
    errors), and sqrt_h_alpha. Runs excluded by `mark_used` are no members.
    """
    if runs.empty:
        return pd.DataFrame()
    done = runs[mark_used(runs)["used"]]
    keys = [c for c in TrainConfig().to_dict() if c not in _NOT_ENSEMBLE_KEYS]
    records = []
    for values, members in done.groupby(keys, dropna=False, sort=True):
        if len(members) < 2:
            continue
        summary, _ = ensemble.summarize([artifact.join(output_dir, d) for d in members["run_dir"]])
        summary.pop("test_errors")
        records.append(dict(zip(keys, values), sqrt_h_alpha=float(
            sqrt_h_alpha(members["alpha"].iloc[0], members["width"].iloc[0])),
            **summary))
    return pd.DataFrame.from_records(records)


def write_tables(output_dir: str, configs: Sequence[TrainConfig]
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write results.csv (one row per finished run) and ensembles.csv; return both.

    The files hold run_dir relative to the sweep directory; the returned runs table has it
    joined to output_dir.
    """
    runs = load_rows(output_dir, configs)
    ensembles = ensembles_table(runs, output_dir)
    sums = {}
    for name, table in ((RESULTS, runs), (ENSEMBLES, ensembles)):
        text = table.to_csv(index=False)
        artifact.write_text(artifact.join(output_dir, name), text)
        sums[name] = artifact.file_record(text.encode("utf-8"), name)
    artifact.write_json(artifact.join(output_dir, TABLES), sums)
    logger.info("sweep %s: %d of %d runs in %s", output_dir, len(runs), len(configs),
                artifact.join(output_dir, RESULTS))
    return _located(runs, output_dir), ensembles


def _located(runs: pd.DataFrame, output_dir: str) -> pd.DataFrame:
    if "run_dir" in runs:
        runs = runs.assign(run_dir=[artifact.join(output_dir, d) for d in runs["run_dir"]])
    return runs


def read_tables(output_dir: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, ensembles) from a sweep directory's results.csv and ensembles.csv.

    Tables that differ from the checksums tables.json keeps of them (damaged, cut short) are
    made again from the rows (`write_tables`), saying so in one line.
    """
    path = artifact.join(output_dir, RESULTS)
    if not artifact.exists(path):
        raise RunDirError(f"no sweep results in {output_dir}: {RESULTS} is missing (run the "
                          "sweep stage first)")
    if not _tables_whole(output_dir):
        sweep = read_sweep_config(output_dir)
        if sweep is None:
            raise artifact.damaged(path, f"it differs from {TABLES}",
                                   "rerun the sweep stage to make it again")
        logger.warning("%s is damaged: it is made again from %s/", path, grid_point.ROWS)
        write_tables(output_dir, sweep.configs())
    runs = artifact.read_csv(path)
    ensembles = artifact.read_csv(artifact.join(output_dir, ENSEMBLES))
    if runs.empty:
        raise RunDirError(f"{path} has no run yet: run the sweep stage to completion")
    return _located(runs, output_dir), ensembles


def _tables_whole(output_dir: str) -> bool:
    """Whether results.csv and ensembles.csv are the files tables.json vouches for (a sweep
    without tables.json, made before it, counts as whole)."""
    path = artifact.join(output_dir, TABLES)
    if not artifact.exists(path):
        return True
    try:
        sums = artifact.read_json(path)
    except RunDirError:
        return False
    for name, record in sums.items():
        table = artifact.join(output_dir, name)
        if (not artifact.exists(table) or artifact.file_record(artifact.read_bytes(table), name)
                != record):
            return False
    return True
