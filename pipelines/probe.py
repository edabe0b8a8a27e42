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
example, or --output=INDEX or --output=sum for a vector of logits). A model with ReLU (or
max-pooling, or another kink) is trained by the paper's Euler scheme with its jump rule, a
smooth one by the fast integrator (`alpha_scan.flow_for`); --max_dgrad takes the paper's
scheme at that ε_∇ for either. The flow's flags
(--max_steps, --max_wall_seconds, --max_dgrad) and the fit's (--learning_rate, --epochs,
--batch_size) are refused with the other --optimizer, before anything runs. The console shows
one progress display (α done of the grid, unconverged, elapsed, ETA) and ends with the path of
summary.md.
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.run import artifact, data
from lazy_feature.run import distribute
from lazy_feature.probe import alpha_scan
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.errors import ConfigError
from pipelines import common

flags.DEFINE_string("model", None, "module:function returning the Keras model.", required=True)
flags.DEFINE_string("output_dir", None, "The run directory to write.", required=True)
flags.DEFINE_list("input_shape", None, "Shape of one input, e.g. 28,28,1 (default: flat).")
flags.DEFINE_string("output", None, "For a vector output: an index, or sum (of the logits).")
flags.DEFINE_list("alphas", [str(a) for a in alpha_scan.DEFAULT_ALPHAS], "The α grid.")
flags.DEFINE_integer("probe_size", 64, "Test points the kernel drift is computed on.")
flags.DEFINE_integer("seed", 0, "Keras seed of the initial weights.")
flags.DEFINE_string("optimizer", "flow", "flow (the package's gradient flow), or sgd or adam "
                    "(a plain Keras fit of the centered α-model on the α⁻²-scaled loss).")
# The flags of one way of training: given with the other --optimizer they would be ignored.
FLOW_ONLY = ("max_steps", "max_wall_seconds", "max_dgrad")
FIT_ONLY = ("learning_rate", "epochs", "batch_size")
common.define_train_config_flags(("dataset", "data_dir", "n_train", "n_test", "data_seed",
                                  *FLOW_ONLY, *FIT_ONLY))
# A scan trains one network per α, each on a user's model: less data than a run, and more
# steps (alpha_scan.MAX_STEPS: ReLU flows slide along kinks).
for name, default in (("n_train", 1000), ("n_test", 2000),
                      ("max_steps", alpha_scan.MAX_STEPS), ("epochs", 10)):
    flags.FLAGS.set_default(name, default)
common.define_strategy_flags()
FLAGS = flags.FLAGS


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


def fit_epochs():
    """--epochs as the whole number of epochs each α's Keras fit takes, or a ConfigError."""
    if FLAGS.epochs != int(FLAGS.epochs):
        raise ConfigError(f"--epochs: a Keras fit takes whole epochs, got {FLAGS.epochs:g}")
    return int(FLAGS.epochs)


def main(stream):
    output = FLAGS.output
    if output not in (None, "sum"):
        output = common.integers("output", [output])[0]
    optimizer = alpha_scan.keras_optimizer(FLAGS.optimizer, FLAGS.learning_rate)
    check_training_flags()
    epochs = fit_epochs()
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
                    flow=(GradientFlow(max_dgrad=FLAGS.max_dgrad, jumps=True)
                          if FLAGS["max_dgrad"].present else None), optimizer=optimizer,
                    epochs=epochs, batch_size=FLAGS.batch_size, strategy=strategy,
                    progress_stream=stream)
    stream.write(artifact.join(FLAGS.output_dir, alpha_scan.SUMMARY) + "\n")


if __name__ == "__main__":
    common.main("probe", main, progress=True)
