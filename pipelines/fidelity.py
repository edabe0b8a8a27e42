r"""The `fidelity` stage: how faithfully complete runs integrated gradient flow (Appendix G).

Adds fidelity.json to each run written by `train`: its test outputs against a reference flow
(Euler with ε_∇/100 and max_dout/10, float64, from the same w0, `lazy_feature.study.fidelity`),
compared at the run's final t. Runs from the same w0 share one reference flow:

  python -m pipelines.fidelity --run_dirs=runs/euler,runs/bogacki_shampine
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.study import fidelity
from pipelines import common

flags.DEFINE_list("run_dirs", None, "Complete run directories written by train.", required=True)
FLAGS = flags.FLAGS


def main():
    for run_dir, result in zip(FLAGS.run_dirs, fidelity.check_runs(FLAGS.run_dirs)):
        print(f"{run_dir}: deviation {result['output_deviation']:.3g}, test error "
              f"{result['test_error_difference']:+.4f}, t {result['t_difference']:+.4g} "
              "from the reference flow")


if __name__ == "__main__":
    common.main("fidelity", main)
