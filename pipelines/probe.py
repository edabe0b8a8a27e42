r"""The `probe` stage: is a user's Keras model lazy or learning features? A scan over α.

Trains F = α[f̂(w, x) − f̂(w0, x)] (eq. 6), f̂ = f/σ0 the user's model normalized by its
initial output scale, at each α by gradient flow (or, with --optimizer=sgd|adam, a plain
Keras fit on the α⁻²-scaled loss), and writes table.csv, scan.png, summary.md and scan.json
(`lazy_feature.probe.alpha_scan.scan`):

  python -m pipelines.probe --model=my_models:build_cnn --input_shape=28,28,1 \
      --n_train=1000 --n_test=2000 --output_dir=runs/probe_cnn
  python -m pipelines.probe --model=my_models:build_cnn --input_shape=28,28,1 \
      --optimizer=sgd --learning_rate=0.01 --epochs=20 --output_dir=runs/probe_cnn_sgd

`--model` names a function with no argument that returns the Keras model (one scalar per
example, or --output=INDEX or --output=sum for a vector of logits). The flow's flags
(--max_steps, --max_wall_seconds, --max_dgrad) and the fit's (--learning_rate, --epochs,
--batch_size) are refused with the other --optimizer, before anything runs.
"""
from absl import flags

from lazy_feature.run import data
from lazy_feature.run import distribute
from lazy_feature.probe import alpha_scan
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.errors import ConfigError
from pipelines import common

flags.DEFINE_string("model", None, "module:function returning the Keras model.", required=True)
flags.DEFINE_string("output_dir", None, "The run directory to write.", required=True)
flags.DEFINE_string("dataset", "fashion_mnist", "fashion_mnist, mnist, emnist_letters, "
                    "cifar10 or tfds:<name>.")
flags.DEFINE_string("data_dir", None, "Folder with the data set's files (default: Debian's).")
flags.DEFINE_integer("n_train", 1000, "Training-set size.")
flags.DEFINE_integer("n_test", 2000, "Test-set size.")
flags.DEFINE_integer("data_seed", 0, "Seed of the train/test draw.")
flags.DEFINE_list("input_shape", None, "Shape of one input, e.g. 28,28,1 (default: flat).")
flags.DEFINE_string("output", None, "For a vector output: an index, or sum (of the logits).")
flags.DEFINE_list("alphas", [str(a) for a in alpha_scan.DEFAULT_ALPHAS], "The α grid.")
flags.DEFINE_integer("probe_size", 64, "Test points the kernel drift is measured on.")
flags.DEFINE_integer("seed", 0, "Keras seed of the initial weights.")
flags.DEFINE_integer("max_steps", 10_000, "Budget of each α in gradient-flow steps "
                     "(--optimizer=flow).")
flags.DEFINE_float("max_wall_seconds", float("inf"), "Budget of each α in wall seconds "
                   "(--optimizer=flow).")
flags.DEFINE_float("max_dgrad", 1e-4, "ε_∇ of eq. 9 (looser: fewer steps; --optimizer=flow).")
flags.DEFINE_string("optimizer", "flow", "flow (the package's gradient flow), or sgd or adam "
                    "(a plain Keras fit of the centered α-model on the α⁻²-scaled loss).")
flags.DEFINE_float("learning_rate", None, "The learning rate of --optimizer=sgd|adam "
                   "(default: Keras's).")
flags.DEFINE_integer("epochs", 10, "Epochs of --optimizer=sgd|adam at each α.")
flags.DEFINE_integer("batch_size", 32, "Mini-batch size of --optimizer=sgd|adam.")
common.define_strategy_flags()
FLAGS = flags.FLAGS
# The flags of one way of training: given with the other --optimizer they would be ignored.
FLOW_ONLY = ("max_steps", "max_wall_seconds", "max_dgrad")
FIT_ONLY = ("learning_rate", "epochs", "batch_size")


def check_training_flags():
    """A ConfigError for a flag given that --optimizer does not use."""
    flow = FLAGS.optimizer == "flow"
    ignored = [f"--{name}" for name in (FIT_ONLY if flow else FLOW_ONLY) if FLAGS[name].present]
    if ignored:
        used_by, instead = (("--optimizer=sgd|adam", "the flow's budgets are --max_steps and "
                             "--max_wall_seconds") if flow else
                            ("--optimizer=flow", "sgd and adam train for --epochs"))
        raise ConfigError(f"{', '.join(ignored)}: for {used_by} only, not "
                          f"--optimizer={FLAGS.optimizer} ({instead}); drop "
                          f"{'it' if len(ignored) == 1 else 'them'}")


def main():
    output = FLAGS.output
    if output not in (None, "sum"):
        output = common.integers("output", [output])[0]
    optimizer = alpha_scan.keras_optimizer(FLAGS.optimizer, FLAGS.learning_rate)
    check_training_flags()
    build_model = alpha_scan.load_builder(FLAGS.model)
    strategy = distribute.make(**common.strategy_options())
    task = data.load_binary_task(FLAGS.dataset, FLAGS.data_dir, FLAGS.n_train, FLAGS.n_test,
                                 FLAGS.data_seed)
    alpha_scan.scan(build_model, task,
               alphas=common.floats("alphas", FLAGS.alphas), output_dir=FLAGS.output_dir,
               input_shape=(common.integers("input_shape", FLAGS.input_shape)
                            if FLAGS.input_shape else None),
               output=output, probe_size=FLAGS.probe_size, seed=FLAGS.seed,
               max_steps=FLAGS.max_steps, max_wall_seconds=FLAGS.max_wall_seconds,
               flow=GradientFlow(max_dgrad=FLAGS.max_dgrad), optimizer=optimizer,
               epochs=FLAGS.epochs, batch_size=FLAGS.batch_size, strategy=strategy)


if __name__ == "__main__":
    common.main("probe", main)
