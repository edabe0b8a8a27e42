r"""The `sweep` stage: a grid over (α or √h·α, h, seed) through train → ntk_eval → ensemble.

Runs a named config of pipelines/configs/, optionally with its settings replaced by flags
(`lazy_feature.study.overrides`), writes one row per run to <output_dir>/results.csv and the
ensembles to ensembles.csv, then the report (figures and summary.md) to <output_dir>/report
(`lazy_feature.study.stage`). The quick study (the README's main job):

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
verdict beside ours in <output_dir>/table1.md and table1.csv (lazy_feature.study.table1);
`--config=table1` at the paper's scale. Data sets outside their default location are named
with --data_dirs:

  python -m pipelines.sweep --config=table1_quick --output_dir=runs/table1_quick \
      --data_dirs=mnist=~/data/mnist,cifar10=~/data/cifar-10-batches-py

The grid flags apply to every row of the group; a dynamics flag only to the rows of its
dynamics (--epochs, --batch_size, --learning_rate to the Adam rows, --tau and
--tau_proportional_to_t to momentum's), unless --dynamics sets every row's; a flag that no
row takes is refused before anything runs. With --report_only nothing is trained: the
tables (and Table 1) are written from the runs that have their row.

The same grid trained by Adam on mini-batches of 32 for 100 epochs (fewer where every
margin exceeds 1 sooner), or by continuous momentum (--dynamics=momentum --tau=0.1; any of
train's dynamics flags):

  python -m pipelines.sweep --config=quick --dynamics=adam --epochs=100 \
      --output_dir=runs/quick_adam

A rerun of the same command skips finished runs and resumes interrupted ones. Runs that a
budget stopped are kept out of every statistic; to let them finish, from where they stopped:

  python -m pipelines.sweep --config=quick --output_dir=runs/quick --retry_unconverged=4
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.study import overrides
from lazy_feature.study import stage
from lazy_feature.study import sweep
from pipelines import common, configs

flags.DEFINE_string("config", "quick", "A named sweep: "
                    f"{', '.join(list(configs.CONFIGS) + list(configs.TABLES))}.")
flags.DEFINE_string("output_dir", None, "The sweep directory.", required=True)
flags.DEFINE_list("widths", None, "Replace the config's widths h.")
flags.DEFINE_list("alphas", None, "Replace the config's α grid (and drop its √h·α grid).")
flags.DEFINE_list("sqrt_h_alphas", None, "Replace the config's √h·α grid (and drop its α grid).")
flags.DEFINE_list("seeds", None, "Replace the config's init seeds.")
# The TrainConfig settings a sweep replaces in every run of its grid (a new --architecture
# with that architecture's default depth), and the dynamics settings (`overrides`).
SETTINGS = ("architecture", "pca", "n_train", "n_test", "integrator")
common.define_train_config_flags(SETTINGS, help_prefix="Replace the config's, in every run: ",
                                 config_defaults=False)
common.define_train_config_flags(overrides.DYNAMICS_NAMES, config_defaults=False,
                                 help_prefix="Replace the config's, in the runs of the grid "
                                 "(of a Table 1 group: the rows of that dynamics, or all with "
                                 "--dynamics): ")
common.define_data_dirs_flag("the runs on that data set read it from DIR.")
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


def settings_from_flags():
    """The settings that replace the named config's (`overrides.apply`): the grid axes, the
    TrainConfig settings and --data_dirs that were given."""
    settings = common.given_flags(SETTINGS + overrides.DYNAMICS_NAMES)
    for axis, kind in overrides.GRID_AXES.items():
        if FLAGS[axis].value is not None:
            parse = common.integers if kind is int else common.floats
            settings[axis] = tuple(parse(axis, FLAGS[axis].value))
    settings["data_dirs"] = common.data_dirs(FLAGS.data_dirs)
    return settings


def main(stream):
    settings = settings_from_flags()
    options = dict(report=FLAGS.report, report_only=FLAGS.report_only, runner=FLAGS.runner,
                   workers=FLAGS.workers, beam_options=FLAGS.beam_options,
                   retry_unconverged=FLAGS.retry_unconverged, **common.strategy_options())
    if FLAGS.config in configs.TABLES:
        stage.run_table1(configs.TABLES[FLAGS.config], FLAGS.output_dir, settings,
                         FLAGS.config, stream, **options)
        return
    grid, note = configs.with_settings(FLAGS.config, settings)
    if note is not None:
        stream.write(note + "\n")
    stage.run(grid, FLAGS.output_dir, stream, **options)


if __name__ == "__main__":
    common.main("sweep", main, progress=True)
