r"""The `sweep` stage: a grid over (α or √h·α, h, seed) through train → ntk_eval → ensemble.

Runs a named config of pipelines/configs.py, optionally with its grid replaced by flags,
writes one row per run to <output_dir>/results.csv and the ensembles to ensembles.csv, then
the report (figures and summary.md) to <output_dir>/report. The quick study (the README's
main job, about 30 minutes on 2 cores):

  python -m pipelines.sweep --config=quick --output_dir=runs/quick

Before it starts it shows one line: the memory the largest run needs (weights, full-batch
activations, NTK) times the local workers, and the time of a trial step; a sweep that
cannot fit is refused, naming the size to lower (lazy_feature.run.resources).

Runs fan out on Apache Beam: locally on the engine of Beam's DirectRunner (its FnApiRunner,
named so that Beam downloads nothing), one process per --workers, or in this process for a
--output_dir on ram://. Any other Beam runner through --beam_options (each a Beam option,
passed through), with the sweep directory on storage every worker sees (gs://, s3://,
hdfs://) and the package shipped to the workers; the README gives complete Dataflow and
Flink commands, e.g.

  python -m pipelines.sweep --config=fig3 --output_dir=gs://my-bucket/fig3 \
      --beam_options=--runner=DataflowRunner,--project=my-project,--region=us-central1,\
--temp_location=gs://my-bucket/tmp,--setup_file=./setup.py

The same grid with the paper's CNN in place of its network (any named config):

  python -m pipelines.sweep --config=quick --architecture=cnn --output_dir=runs/quick_cnn

Table 1 (Section 7): every row whose data set is on the machine, each as its own sweep under
<output_dir>/<row> (a row whose data set is absent is skipped, saying why), then the paper's
verdict beside ours in <output_dir>/table1.md and table1.csv (lazy_feature.study.table1); the quick
rows in about 20 minutes each on 2 cores, `--config=table1` at the paper's scale. Data sets
outside their default location are named with --data_dirs:

  python -m pipelines.sweep --config=table1_quick --output_dir=runs/table1_quick \
      --data_dirs=mnist=~/data/mnist,cifar10=~/data/cifar-10-batches-py

The grid flags apply to every row of the group; a dynamics flag only to the rows of its
dynamics (--epochs, --batch_size, --learning_rate to the Adam rows, --tau and
--tau_proportional_to_t to momentum's), unless --dynamics sets every row's; a flag that no
row takes is refused before anything runs. With --report_only nothing is trained: the
tables (and Table 1) are written from the runs that have their row.

The same grid trained by Adam on mini-batches of 32 for 100 epochs (fewer where every
margin exceeds 1 sooner), or by
continuous momentum (--dynamics=momentum --tau=0.1; any of train's dynamics flags):

  python -m pipelines.sweep --config=quick --dynamics=adam --epochs=100 \
      --output_dir=runs/quick_adam

A rerun of the same command skips finished runs and resumes interrupted ones. Runs that a
budget stopped are kept out of every statistic; to let them finish, from where they stopped:

  python -m pipelines.sweep --config=quick --output_dir=runs/quick --retry_unconverged=4
"""
import dataclasses

from absl import flags

from lazy_feature.run import artifact
from lazy_feature.run import data
from lazy_feature.study import report
from lazy_feature.study import sweep
from lazy_feature.study import table1
from lazy_feature.errors import ConfigError
from pipelines import common, configs

flags.DEFINE_string("config", "quick", "A named sweep: "
                    f"{', '.join(list(configs.CONFIGS) + list(configs.TABLES))}.")
flags.DEFINE_string("output_dir", None, "The sweep directory.", required=True)
flags.DEFINE_list("widths", None, "Replace the config's widths h.")
flags.DEFINE_list("alphas", None, "Replace the config's α grid (and drop its √h·α grid).")
flags.DEFINE_list("sqrt_h_alphas", None, "Replace the config's √h·α grid (and drop its α grid).")
flags.DEFINE_list("seeds", None, "Replace the config's init seeds.")
flags.DEFINE_string("architecture", None, "Replace the config's network: fc, cnn or wide_resnet "
                    "(with that architecture's default depth).")
flags.DEFINE_integer("pca", None, "Replace the config's --pca: K > 0 principal components of "
                     "the images (fc only), 0 for none.")
flags.DEFINE_integer("n_train", None, "Replace the config's training-set size n.")
flags.DEFINE_integer("n_test", None, "Replace the config's test-set size.")
common.define_data_dirs_flag("the runs on that data set read it from DIR.")
common.define_train_config_flags(("integrator",), help_prefix="For every run of the grid: ")
common.define_train_config_flags(common.DYNAMICS_FLAGS,
                                 help_prefix="For the runs of the grid (of a Table 1 group: "
                                 "the rows of that dynamics, or all with --dynamics): ")
flags.DEFINE_enum("runner", "beam", sweep.RUNNERS, "Apache Beam, or a loop in this process.")
flags.DEFINE_integer("workers", 2, "Processes of Beam's local runner.")
flags.DEFINE_list("beam_options", None, "Beam pipeline options, passed through: a --runner "
                  "among them replaces the local runner (Dataflow, Flink, Spark).")
flags.DEFINE_boolean("report", True, "Write the report once the sweep is done (for a "
                     "table: each row's; the table's report is always written).")
flags.DEFINE_boolean("report_only", False, "Train nothing: write the tables (and the report) "
                     "from the runs that have their row; for a Table 1 group, each row's and "
                     "table1.md (the last step of its Kubeflow pipeline).")
flags.DEFINE_float("retry_unconverged", None, "Resume the runs a budget stopped, from where "
                   "they stopped, with their budgets multiplied by this factor (> 1).")
common.define_strategy_flags()
FLAGS = flags.FLAGS


def sweep_from_flags(grid=None, dynamics=None):
    """The named SweepConfig (or `grid`) with the grid flags that were given; its base gets
    the settings `dynamics` (default: every dynamics flag given)."""
    grid = configs.get(FLAGS.config) if grid is None else grid
    changes, base = {}, {}
    if FLAGS.architecture is not None:
        base.update(architecture=FLAGS.architecture, depth=None)
    for name in ("pca", "n_train", "n_test", "integrator"):
        if FLAGS[name].value is not None:
            base[name] = FLAGS[name].value
    data_dir = common.data_dirs(FLAGS.data_dirs).get(grid.base.dataset)
    if data_dir is not None:
        base.update(data_dir=data_dir)
    base.update(_dynamics_settings(grid.base, common.given_flags(common.DYNAMICS_FLAGS)
                                   if dynamics is None else dynamics))
    if base:
        changes["base"] = dataclasses.replace(grid.base, **base)
    if FLAGS.widths is not None:
        changes["widths"] = tuple(common.integers("widths", FLAGS.widths))
    if FLAGS.seeds is not None:
        changes["seeds"] = tuple(common.integers("seeds", FLAGS.seeds))
    for name in ("alphas", "sqrt_h_alphas"):
        if FLAGS[name].value is not None:
            other = "sqrt_h_alphas" if name == "alphas" else "alphas"
            changes.update({name: tuple(common.floats(name, FLAGS[name].value)), other: ()})
    return dataclasses.replace(grid, **changes)


def _dynamics_settings(base, given):
    """The dynamics settings `given` for a grid of `base`, and, when they change its dynamics,
    the settings of its own dynamics (e.g. an Adam row's epochs) back to their defaults."""
    if given.get("dynamics", base.dynamics) == base.dynamics:
        return given
    defaults = {f.name: f.default for f in dataclasses.fields(base)}
    own = common.DYNAMICS_SETTINGS.get(base.dynamics, ())
    return dict({name: defaults[name] for name in own}, **given)


def table_dynamics(rows):
    """{row: the dynamics settings of the flags that apply to it} for a Table 1 group's
    {row: SweepConfig}: with --dynamics every flag to every row, else each dynamics' flags
    (common.DYNAMICS_SETTINGS) to the rows trained by it; a flag that no row takes is a
    ConfigError."""
    given = common.given_flags(common.DYNAMICS_FLAGS)
    if "dynamics" in given:
        return {name: given for name in rows}
    applied = {name: {k: v for k, v in given.items()
                      if k in common.DYNAMICS_SETTINGS.get(grid.base.dynamics, ())}
               for name, grid in rows.items()}
    for name in given:
        if not any(name in settings for settings in applied.values()):
            [owner] = [d for d, names in common.DYNAMICS_SETTINGS.items() if name in names]
            raise ConfigError(f"--{name} is a setting of --dynamics={owner}, and no row of "
                              f"--config={FLAGS.config} is trained by {owner}: drop it, or "
                              "give --dynamics to set every row's")
    return applied


def table1_plan(rows):
    """[(row, grid, why)] of a Table 1 group ({row name: config function}), in
    table1.ROWS order: each row's SweepConfig with the flags applied (the dynamics flags to
    the rows they belong to, `table_dynamics`), and why its data set is missing (None when
    present)."""
    grids = {name: make() for name, make in rows.items()}
    dynamics = table_dynamics(grids)
    plan = []
    for row in table1.ROWS:
        grid = sweep_from_flags(grids[row.name], dynamics[row.name])
        plan.append((row, grid, data.missing(grid.base.dataset, grid.base.data_dir)))
    return plan


def _sweep(grid, output_dir, console):
    """Run `grid` in output_dir with the runner flags (with --report_only, only write its
    tables from the runs done); its report too with --report."""
    if FLAGS.report_only:
        artifact.makedirs(output_dir)
        runs, ensembles = sweep.write_tables(output_dir, grid.configs())
    else:
        runs, ensembles = sweep.run_sweep(grid, output_dir, runner=FLAGS.runner,
                                          workers=FLAGS.workers,
                                          beam_options=FLAGS.beam_options,
                                          retry_unconverged=FLAGS.retry_unconverged,
                                          progress_stream=console,
                                          **common.strategy_options())
    if FLAGS.report:
        paths = report.write_report(runs, ensembles, report.default_dir(output_dir),
                                    grid.feature_range, grid.lazy_range)
        print(f"report: {paths[-1]}")
    return runs


def run_table1(rows, console):
    """Run every row of Table 1 whose data set is present, each in <output_dir>/<row>, then
    write table1.md and table1.csv there; rows whose data set is absent read "data not
    found". The data are checked for every row before the first starts (`table1_plan`)."""
    plan = table1_plan(rows)
    for row, _, why in plan:
        console.write(f"table 1, {row.name}: "
                      + (f"skipped, {table1.NOT_FOUND} ({why})" if why else "to run") + "\n")
    records = []
    for row, grid, why in plan:
        if why is not None:
            records.append(table1.missing_row(row, why))
            continue
        console.write(f"table 1, {row.name}:\n")
        runs = _sweep(grid, artifact.join(FLAGS.output_dir, row.name), console)
        records += table1.judge_row(row, runs, grid.feature_range, grid.lazy_range)
    paths = table1.write(FLAGS.output_dir, records)
    print(f"table 1: {paths[-1]}")


def main(console):
    if FLAGS.config in configs.TABLES:
        run_table1(configs.TABLES[FLAGS.config], console)
        return
    grid, note = configs.fallback(FLAGS.config, sweep_from_flags())
    if note is not None:  # the flags again, for Fashion-MNIST's folder in --data_dirs
        grid = sweep_from_flags(grid)
        console.write(note + "\n")
    _sweep(grid, FLAGS.output_dir, console)


if __name__ == "__main__":
    common.main("sweep", main, progress=True)
