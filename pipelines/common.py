"""What the stage binaries share: the app.run wrapper with one-line errors and a quiet
console, the TrainConfig flags, the strategy flags, the --data_dirs flag."""
import dataclasses
import sys

from absl import app
from absl import flags

from lazy_feature.flow import registry, training
from lazy_feature.run import config as config_lib
from lazy_feature.run import distribute
from lazy_feature import errors
from lazy_feature.errors import ConfigError
from pipelines import console


def main(stage, fn, progress=False):
    """Run `fn()` as the stage `stage`; a library error becomes one line and exit status 1.

    An interrupt exits with status 130 after the run has saved its checkpoint, so the
    same command resumes it. The console shows no library chatter (Beam, TensorFlow) at
    the default --verbosity=0; 1 shows INFO logs, 2 and more absl's debug levels
    (`console.set_verbosity`). A stage of many runs (`progress`) gets `fn(stream)`, a stream
    on the console for its progress display; at verbosity 0 the runs' status lines stay in
    their train.log files and all else written to stderr, by this process or its
    subprocesses (Beam's workers), is dropped. --helpshort lists the stage's own flags, the
    shared ones it defined from here, and --verbosity.
    """
    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        verbosity = flags.FLAGS.verbosity
        console.set_verbosity(verbosity, progress)
        try:
            if progress:
                with console.progress_stream(quiet=verbosity < 1) as stream:
                    fn(stream)
            else:
                fn()
        except errors.USER_ERRORS as e:
            print(f"{stage}: error: {e}", file=sys.stderr)
            sys.exit(1)
        except Exception as e:  # pylint: disable=broad-except
            if not _is_file_error(e):
                raise
            print(f"{stage}: error: {_first_line(e)}: check the path's permissions and free "
                  "space, then rerun to resume", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print(f"{stage}: interrupted; run the same command again to resume", file=sys.stderr)
            sys.exit(130)
    _declare_key_flags()
    app.run(_main)


def _is_file_error(error):
    """Whether `error` is one of TensorFlow's file-system errors (a directory made unwritable
    while a run writes in it, a disk full), which the library did not turn into a RunDirError
    where it happened."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel  # (loaded by now)
    return isinstance(error, (tf.errors.PermissionDeniedError, tf.errors.NotFoundError,
                              tf.errors.ResourceExhaustedError, tf.errors.DataLossError,
                              tf.errors.FailedPreconditionError))


def _first_line(error):
    message = getattr(error, "message", None) or str(error) or type(error).__name__
    return message.strip().splitlines()[0]


def _declare_key_flags():
    """Make the flags the binary defined through this module, and --verbosity (its help
    saying what each level shows here), key flags of the binary (absl's main module, named by
    sys.argv[0]), which --helpshort lists."""
    verbosity = flags.FLAGS["verbosity"]
    verbosity.help = ("0 (unset): the package's lines (a stage of many runs: its progress "
                      "only) and errors; 1: INFO logs, TensorFlow's and Beam's too; 2 and "
                      "more: absl's debug levels.")
    for flag in [*flags.FLAGS.get_flags_for_module(__name__), verbosity]:
        flags.FLAGS.register_key_flag_for_module(sys.argv[0], flag)


_FIELDS = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
_HELP = {
    "dataset": "fashion_mnist, mnist, emnist_letters, cifar10 or tfds:<name>.",
    "data_dir": "Folder with the data set's original files (default: the Debian package's).",
    "n_train": "Training-set size n (class-balanced).",
    "n_test": "Test-set size.",
    "data_seed": "Seed of the train/test draw.",
    "pca": "K > 0: project the pooled images on their first K principal components (fc only; "
           "MNIST-PCA10 is --dataset=mnist --pca=10).",
    "pca_whiten": "With --pca: divide each component by its standard deviation "
                  "(--nopca_whiten keeps their ratios).",
    "architecture": "fc (the paper's FC net), cnn (its 4-layer CNN, on images) or wide_resnet "
                    "(Wide-ResNet depth x k without batch norm, on images).",
    "width": "Width h: fc neurons per hidden layer, cnn channels, wide_resnet widening k.",
    "depth": "Hidden layers L of fc (default 3); wide_resnet depth 6n+4 (default 28); not cnn.",
    "activation": "softplus, relu, tanh, swish or linear (normalized, eq. 10).",
    "activation_beta": "Softplus sharpness β.",
    "bias_scale": "Multiplier β_b of the hidden layers' biases (Appendix J); 0 = no bias; "
                  "fc only.",
    "readout_bias": "A bias on the readout too (needs --bias_scale > 0); fc only.",
    "alpha": "The output scale α of eq. 6 (give this or --sqrt_h_alpha).",
    "centered": "Train α[f(w) − f(w0)] (eq. 6); --nocentered trains α f(w) (Appendix I).",
    "init_seed": "Seed of the N(0, 1) initial weights.",
    "loss": "soft_hinge, hinge, quadratic_hinge or logistic.",
    "loss_beta": "Soft-hinge sharpness β.",
    "form": "difference (δ = w - w0 trains and f(w) - f(w0) is propagated without "
            "cancellation: float32 resolves any α) or direct (the paper's: w trains, F from two "
            "outputs); unset: direct where float32 resolves it (α·h·ε32 <= 1e-3), else "
            "difference (lazy_feature.model.precision).",
    "dtype": "float32 or float64; unset: float32, or float64 where --form=direct at large α "
             "needs it (lazy_feature.model.precision).",
    "max_dgrad": "ε_∇ of eq. 9.",
    "max_dout": "Bound of eq. 8 on α·max|Δf| per step.",
    "dt0": "First time step tried.",
    "landing_tol": "How far past the stopping criterion a run may end: the step that crosses "
                   "it is re-taken shorter until the smallest margin is <= 1 + landing_tol (0: "
                   "the first accepted point past it, the paper's rule).",
    "integrator": f"{registry.AUTO} (unset: the fastest at the paper's fidelity for the run, "
                  "lazy_feature.flow.auto.choose); "
                  + "; ".join(f"{name}: {registered.summary}"
                              for name, registered in registry.INTEGRATORS.items()) + ".",
    "output_tol": "Runge-Kutta: bound on a step's local error of alpha*f at the training "
                  "points (eq. 8's scale); unset: the integrator's calibrated one.",
    "direction_tol": "Runge-Kutta: bound on a step's relative local error of its mean "
                     "gradient (eq. 9's scale); unset: the integrator's calibrated one.",
    "stiff_output_tol": ", ".join(name for name, registered in registry.INTEGRATORS.items()
                                  if registered.switching)
                        + ": output_tol of the stiff phase; unset: the integrator's stiff_factor "
                          "(lazy_feature.flow.registry) times --output_tol.",
    "dynamics": "; ".join(f"{name}: {kind.summary}" for name, kind in training.DYNAMICS.items())
                + ".",
    "batch_size": "Examples per mini-batch: adam's (Table 1: 32), or probe's Keras fit's.",
    "learning_rate": "The step size: adam's (unset: 1e-3*min(1, 1/alpha), "
                     "lazy_feature.flow.adam), or probe's Keras fit's (unset: Keras's).",
    "epochs": "Passes over the training set: an adam run's length (adam's t counts epochs; "
              "it ends earlier at every margin > 1), or probe's Keras fit's at each α (whole "
              "epochs).",
    "tau": "momentum: the time constant tau (0 = gradient flow).",
    "tau_proportional_to_t": "momentum: use tau*t as the time constant (Fig. 7(c)'s EMNIST "
                             "setup).",
    "max_time": "Budget in gradient-flow time t.",
    "max_steps": "Budget in accepted steps (probe: of each α).",
    "max_wall_seconds": "Budget in wall-clock seconds.",
}


def define_train_config_flags(names=tuple(_FIELDS), help_prefix="", config_defaults=True):
    """One flag per TrainConfig field of `names` (all: and --sqrt_h_alpha), its default
    TrainConfig's (the paper's Section 2 setup), or unset where not `config_defaults` (the
    sweep's, which replace a named config's settings)."""
    for name in names:
        kind = getattr(_FIELDS[name].type, "__name__", str(_FIELDS[name].type))  # "str | None"
        define = (flags.DEFINE_boolean if "bool" in kind
                  else flags.DEFINE_integer if kind.startswith("int")
                  else flags.DEFINE_float if kind.startswith("float") else flags.DEFINE_string)
        define(name, _FIELDS[name].default if config_defaults else None,
               help_prefix + _HELP[name])
    if set(names) == set(_FIELDS):
        flags.DEFINE_float("sqrt_h_alpha", None, "√h·α; sets α = sqrt_h_alpha / √width.")


def given_flags(names):
    """{name: value} of the flags among `names` that were set."""
    return {name: flags.FLAGS[name].value for name in names
            if flags.FLAGS[name].value is not None}


def train_config_from_flags():
    """The TrainConfig of the flags (`define_train_config_flags`, all of them); --sqrt_h_alpha
    sets α."""
    values = flags.FLAGS
    settings = {name: values[name].value for name in _FIELDS}
    if values.sqrt_h_alpha is not None:
        if values["alpha"].present:
            raise ConfigError("give --alpha or --sqrt_h_alpha, not both")
        settings["alpha"] = config_lib.alpha_from_sqrt_h_alpha(values.sqrt_h_alpha,
                                                               max(settings["width"], 1))
    return config_lib.TrainConfig(**settings)


def define_strategy_flags():
    """--strategy, --devices, --cpu_devices and --tpu: where the stage runs (`distribute`)."""
    flags.DEFINE_string("strategy", "default", "Where to run: "
                        f"{', '.join(distribute.STRATEGIES)} (tf.distribute; multi_worker "
                        "reads TF_CONFIG; tpu runs float32 only).")
    flags.DEFINE_list("devices", None, "The devices of --strategy=mirrored (default: all local "
                      "GPUs, or the logical CPU devices of --cpu_devices).")
    flags.DEFINE_integer("cpu_devices", None, "Split the host CPU into this many logical "
                         "devices, to run --strategy=mirrored without an accelerator.")
    flags.DEFINE_string("tpu", "", "The TPU of --strategy=tpu (name or grpc:// address; "
                        "empty: the local one or $TPU_NAME).")


def strategy_options():
    """The strategy flags as `distribute.make`'s arguments (strategy and its options)."""
    values = flags.FLAGS
    return dict(strategy=values.strategy, devices=values.devices,
                cpu_devices=values.cpu_devices, tpu=values.tpu)


def strategy_from_flags(configs):
    """The strategy of the flags, made once `configs` are known to suit it (a TPU run that
    needs float64 is refused before any TPU is reached)."""
    options = strategy_options()
    distribute.check_precision(options["strategy"], configs)
    return distribute.make(**options)


def define_data_dirs_flag(effect):
    """--data_dirs, dataset=DIR pairs separated by commas; `effect` says what DIR is used for."""
    flags.DEFINE_list("data_dirs", None, "Where data sets lie, as dataset=DIR pairs (e.g. "
                      "mnist=~/data/mnist,cifar10=~/data/cifar10): " + effect)


def data_dirs(pairs):
    """{dataset: folder} of --data_dirs's dataset=DIR `pairs` (None: none), or a ConfigError
    naming the malformed pair."""
    found = {}
    for pair in pairs or ():
        dataset, equals, folder = pair.partition("=")
        if not (equals and dataset and folder):
            raise ConfigError(f"--data_dirs takes dataset=DIR pairs separated by commas, got "
                              f"{pair!r}")
        found[dataset] = folder
    return found


def integers(flag, values):
    """The integers of a list flag, or a ConfigError naming the flag."""
    return _numbers(flag, values, int, "integers")


def floats(flag, values):
    """The numbers of a list flag, or a ConfigError naming the flag."""
    return _numbers(flag, values, float, "numbers")


def _numbers(flag, values, kind, what):
    try:
        return [kind(v) for v in values]
    except ValueError as e:
        raise ConfigError(f"--{flag} takes {what} separated by commas, got "
                          f"{','.join(values)}") from e
