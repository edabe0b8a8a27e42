"""What the stage binaries share: one-line errors with a non-zero exit, the TrainConfig flags."""
import dataclasses
import logging
import sys

from absl import app
from absl import flags

from lazy_feature import config as config_lib
from lazy_feature import errors
from lazy_feature.errors import ConfigError


def main(stage, fn):
    """Run `fn()` as the stage `stage`; a library error becomes one line and exit status 1.

    An interrupt exits with status 130 after the run has saved its checkpoint, so the
    same command resumes it.
    """
    def _main(argv):
        if len(argv) > 1:
            raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
        logging.getLogger("lazy_feature").setLevel(logging.INFO)
        try:
            fn()
        except errors.USER_ERRORS as e:
            print(f"{stage}: error: {e}", file=sys.stderr)
            sys.exit(1)
        except KeyboardInterrupt:
            print(f"{stage}: interrupted; run the same command again to resume", file=sys.stderr)
            sys.exit(130)
    app.run(_main)


_FIELDS = {f.name: f for f in dataclasses.fields(config_lib.TrainConfig)}
_HELP = {
    "dataset": "fashion_mnist, mnist, emnist_letters, cifar10 or tfds:<name>.",
    "data_dir": "Folder with the data set's original files (default: the Debian package's).",
    "n_train": "Training-set size n (class-balanced).",
    "n_test": "Test-set size.",
    "data_seed": "Seed of the train/test draw.",
    "width": "Width h of every hidden layer.",
    "depth": "Number L of hidden layers.",
    "activation": "softplus, relu, tanh, swish or linear (normalized, eq. 10).",
    "activation_beta": "Softplus sharpness β.",
    "bias_scale": "Multiplier β_b of the hidden layers' biases (Appendix J); 0 = no bias.",
    "readout_bias": "A bias on the readout too (needs --bias_scale > 0).",
    "alpha": "The output scale α of eq. 6 (give this or --sqrt_h_alpha).",
    "centered": "Train α[f(w) − f(w0)] (eq. 6); --nocentered trains α f(w) (Appendix I).",
    "init_seed": "Seed of the N(0, 1) initial weights.",
    "loss": "soft_hinge, hinge, quadratic_hinge or logistic.",
    "loss_beta": "Soft-hinge sharpness β.",
    "dtype": "float32 or float64; unset picks what α·h needs (lazy_feature.precision).",
    "max_dgrad": "ε_∇ of eq. 9.",
    "max_dout": "Bound of eq. 8 on α·max|Δf| per step.",
    "dt0": "First time step tried.",
    "max_time": "Budget in gradient-flow time t.",
    "max_steps": "Budget in accepted steps.",
    "max_wall_seconds": "Budget in wall-clock seconds.",
}


def define_train_config_flags():
    """One flag per TrainConfig field, and --sqrt_h_alpha."""
    for name, field in _FIELDS.items():
        kind = getattr(field.type, "__name__", str(field.type))  # "float", "str | None", ...
        default = None  # unset flags take TrainConfig's defaults
        if "bool" in kind:
            flags.DEFINE_boolean(name, default, _HELP[name])
        elif kind.startswith("int"):
            flags.DEFINE_integer(name, default, _HELP[name])
        elif kind.startswith("float"):
            flags.DEFINE_float(name, default, _HELP[name])
        else:
            flags.DEFINE_string(name, default, _HELP[name])
    flags.DEFINE_float("sqrt_h_alpha", None, "√h·α; sets α = sqrt_h_alpha / √width.")


def train_config_from_flags():
    """A TrainConfig from the flags that were set, TrainConfig's defaults for the rest."""
    values = flags.FLAGS
    given = {name: values[name].value for name in _FIELDS if values[name].value is not None}
    if values.sqrt_h_alpha is not None:
        if "alpha" in given:
            raise ConfigError("give --alpha or --sqrt_h_alpha, not both")
        width = given.get("width", _FIELDS["width"].default)
        given["alpha"] = config_lib.alpha_from_sqrt_h_alpha(values.sqrt_h_alpha, max(width, 1))
    return config_lib.TrainConfig(**given)


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
