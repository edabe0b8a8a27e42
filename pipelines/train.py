r"""The `train` stage: one network at a point (α, h), trained by adaptive gradient flow (or
Adam, or continuous momentum: --dynamics).

Defaults are the paper's Section 2 setup (`lazy_feature.TrainConfig`): binary
Fashion-MNIST from the Debian package, 10 000 training and 50 000 test points, L = 3,
h = 100, softplus β = 5, soft hinge β = 20, α = 1:

  python -m pipelines.train --output_dir=runs/train_default

A smaller run, α given through √h·α (here √h·α = 1e-2, the feature regime):

  python -m pipelines.train --n_train=2000 --n_test=5000 --sqrt_h_alpha=1e-2 \
      --output_dir=runs/feature

Trained by Adam on mini-batches of 32 (Table 1; 100 epochs, fewer where every margin
exceeds 1 sooner), or by continuous momentum with τ = 0.5·t and the soft hinge's β = 10
(Fig. 7 (c)'s EMNIST setup):

  python -m pipelines.train --n_train=2000 --n_test=5000 --sqrt_h_alpha=1 \
      --dynamics=adam --epochs=100 --output_dir=runs/adam
  python -m pipelines.train --n_train=2000 --n_test=5000 --sqrt_h_alpha=1 \
      --dynamics=momentum --tau=0.5 --tau_proportional_to_t --loss_beta=10 \
      --output_dir=runs/momentum

Rerunning the same command resumes a killed run, and returns at once for a complete one.
On several devices (--strategy=mirrored uses every local GPU; without one, split the CPU):

  python -m pipelines.train --n_train=2000 --n_test=5000 --sqrt_h_alpha=1e-2 \
      --strategy=mirrored --cpu_devices=2 --output_dir=runs/feature_mirrored

With --live_drift=256 the kernel drift on 256 training points is followed in TensorBoard
(`tensorboard --logdir=runs/feature/events`).
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.run import runner
from pipelines import common

common.define_train_config_flags()
common.define_strategy_flags()
flags.DEFINE_string("output_dir", None, "The run directory to write.", required=True)
flags.DEFINE_float("checkpoint_seconds", 60.0, "Wall time between checkpoints.")
flags.DEFINE_integer("live_drift", 0, "If > 0, write the kernel drift on this many training "
                     "points to TensorBoard while training (Fig. 8 style Gram images too).")
FLAGS = flags.FLAGS


def main():
    config = common.train_config_from_flags()
    runner.train(config, FLAGS.output_dir, checkpoint_seconds=FLAGS.checkpoint_seconds,
                 drift_probe=FLAGS.live_drift, strategy=common.strategy_from_flags([config]))


if __name__ == "__main__":
    common.main("train", main)
