r"""The `appendix` stage: the appendices' observables of a trained run, as a sweep adds them.

Computes what a sweep's `velocity`, `fidelity` and `gram_probe` ask of each run
(`lazy_feature.study.grid_point.appendix_observables`, the same call a sweep run makes) and stores it
in the run directory, where the sweep's row reads it back: the pre-activation velocity at
t = 0 (velocity.json, Appendix D), the distance to the ε_∇/100 reference flow
(fidelity.json, Appendix G), the Gram matrices at w0 and at the end on K test points sorted
by label (Fig. 8). The Kubeflow pipeline runs it after each run's train:

  python -m pipelines.appendix --run_dir=runs/quickstart --velocity --gram_probe=100
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.run import artifact
from lazy_feature.run import runner
from lazy_feature.study import grid_point
from pipelines import common

flags.DEFINE_string("run_dir", None, "A complete run directory written by train.", required=True)
flags.DEFINE_boolean("velocity", False, "The pre-activation velocity at t = 0 (Appendix D).")
flags.DEFINE_integer("velocity_max_test", None, "Test points the velocity is computed on "
                     "(default: all).")
flags.DEFINE_boolean("fidelity", False, "The distance to the reference flow (Appendix G).")
flags.DEFINE_integer("gram_probe", 0, "K > 0: the Gram matrices at w0 and at the end on K "
                     "test points sorted by label (Fig. 8).")
common.define_strategy_flags()
FLAGS = flags.FLAGS


def main():
    config = artifact.load_config(FLAGS.run_dir)
    columns = grid_point.appendix_observables(
        FLAGS.run_dir, runner.load_task(config), velocity=FLAGS.velocity,
        velocity_max_test=FLAGS.velocity_max_test, fidelity=FLAGS.fidelity,
        gram_probe=FLAGS.gram_probe, strategy=common.strategy_from_flags([config]))
    for name, value in columns.items():
        print(f"{name}: {value}")


if __name__ == "__main__":
    common.main("appendix", main)
