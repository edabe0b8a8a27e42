r"""The `sweep` stage: a grid over (α or √h·α, h, seed) through train → ntk_eval → ensemble.

Runs a named config of pipelines/configs.py, optionally with its grid replaced by flags,
writes one row per run to <output_dir>/results.csv and the ensembles to ensembles.csv, then
the report (figures and summary.md) to <output_dir>/report. The quick study (the README's
main job, about 30 minutes on 2 cores):

  python -m pipelines.sweep --config=quick --output_dir=runs/quick

Before it starts it shows one line: the memory the largest run needs (weights, full-batch
activations, NTK) times the local workers, and the time of a trial step; a sweep that
cannot fit is refused, naming the size to lower (lazy_feature.resources).

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

The same grid trained by Adam on mini-batches of 32 for at most 100 epochs, or by
continuous momentum (--dynamics=momentum --tau=0.1; any of train's dynamics flags):

  python -m pipelines.sweep --config=quick --dynamics=adam --epochs=100 \
      --output_dir=runs/quick_adam

A rerun of the same command skips finished runs and resumes interrupted ones. Runs that a
budget stopped are kept out of every statistic; to let them finish, from where they stopped:

  python -m pipelines.sweep --config=quick --output_dir=runs/quick --retry_unconverged=4
"""
import dataclasses

from absl import flags

from lazy_feature import report, sweep
from pipelines import common, configs

flags.DEFINE_string("config", "quick", f"A named sweep: {', '.join(configs.CONFIGS)}.")
flags.DEFINE_string("output_dir", None, "The sweep directory.", required=True)
flags.DEFINE_list("widths", None, "Replace the config's widths h.")
flags.DEFINE_list("alphas", None, "Replace the config's α grid (and drop its √h·α grid).")
flags.DEFINE_list("sqrt_h_alphas", None, "Replace the config's √h·α grid (and drop its α grid).")
flags.DEFINE_list("seeds", None, "Replace the config's init seeds.")
flags.DEFINE_string("architecture", None, "Replace the config's network: fc, cnn or wide_resnet "
                    "(with that architecture's default depth).")
flags.DEFINE_integer("pca", None, "Replace the config's --pca: K > 0 principal components of "
                     "the images (fc only), 0 for none.")
common.define_train_config_flags(common.DYNAMICS_FLAGS,
                                 help_prefix="For every run of the grid: ")
flags.DEFINE_enum("runner", "beam", sweep.RUNNERS, "Apache Beam, or a loop in this process.")
flags.DEFINE_integer("workers", 2, "Processes of Beam's local runner.")
flags.DEFINE_list("beam_options", None, "Beam pipeline options, passed through: a --runner "
                  "among them replaces the local runner (Dataflow, Flink, Spark).")
flags.DEFINE_boolean("report", True, "Write the report once the sweep is done.")
flags.DEFINE_float("retry_unconverged", None, "Resume the runs a budget stopped, from where "
                   "they stopped, with their budgets multiplied by this factor (> 1).")
common.define_strategy_flags()
FLAGS = flags.FLAGS


def sweep_from_flags():
    """The named SweepConfig with the grid flags that were given."""
    grid = configs.get(FLAGS.config)
    changes, base = {}, {}
    if FLAGS.architecture is not None:
        base.update(architecture=FLAGS.architecture, depth=None)
    if FLAGS.pca is not None:
        base.update(pca=FLAGS.pca)
    base.update(common.given_flags(common.DYNAMICS_FLAGS))
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


def main(console):
    grid = sweep_from_flags()
    runs, ensembles = sweep.run_sweep(grid, FLAGS.output_dir, runner=FLAGS.runner,
                                      workers=FLAGS.workers, beam_options=FLAGS.beam_options,
                                      retry_unconverged=FLAGS.retry_unconverged,
                                      progress_stream=console,
                                      **common.strategy_options())
    if FLAGS.report:
        paths = report.write_report(runs, ensembles, report.default_dir(FLAGS.output_dir),
                                    grid.feature_range, grid.lazy_range)
        print(f"report: {paths[-1]}")


if __name__ == "__main__":
    common.main("sweep", main, progress=True)
