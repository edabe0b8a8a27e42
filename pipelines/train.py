r"""The `train` stage: one network at a point (α, h), trained by adaptive gradient flow.

Defaults are the paper's Section 2 setup (`lazy_feature.TrainConfig`): binary
Fashion-MNIST from the Debian package, 10 000 training and 50 000 test points, L = 3,
h = 100, softplus β = 5, soft hinge β = 20, α = 1:

  python -m pipelines.train --output_dir=runs/train_default

A smaller run, α given through √h·α (here √h·α = 1e-2, the feature regime):

  python -m pipelines.train --n_train=2000 --n_test=5000 --sqrt_h_alpha=1e-2 \
      --output_dir=runs/feature

Rerunning the same command resumes a killed run, and returns at once for a complete one.
With --live_drift=256 the kernel drift on 256 training points is followed in TensorBoard
(`tensorboard --logdir=runs/feature/events`).
"""
import dataclasses
import math

from absl import flags

from lazy_feature import config as config_lib
from lazy_feature import run
from lazy_feature.errors import ConfigError
from pipelines import common

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
    "bias": "Biases in the hidden layers (Appendix J).",
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


def _define_flags():
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
    flags.DEFINE_string("output_dir", None, "The run directory to write.", required=True)
    flags.DEFINE_float("checkpoint_seconds", 60.0, "Wall time between checkpoints.")
    flags.DEFINE_integer("live_drift", 0, "If > 0, write the kernel drift on this many training "
                         "points to TensorBoard while training (Fig. 8 style Gram images too).")


_define_flags()
FLAGS = flags.FLAGS


def config_from_flags():
    """A TrainConfig from the flags that were set, TrainConfig's defaults for the rest."""
    given = {name: FLAGS[name].value for name in _FIELDS if FLAGS[name].value is not None}
    if FLAGS.sqrt_h_alpha is not None:
        if "alpha" in given:
            raise ConfigError("give --alpha or --sqrt_h_alpha, not both")
        width = given.get("width", _FIELDS["width"].default)
        given["alpha"] = FLAGS.sqrt_h_alpha / math.sqrt(max(width, 1))
    return config_lib.TrainConfig(**given)


def main():
    run.train(config_from_flags(), FLAGS.output_dir, checkpoint_seconds=FLAGS.checkpoint_seconds,
              drift_probe=FLAGS.live_drift)


if __name__ == "__main__":
    common.main("train", main)
