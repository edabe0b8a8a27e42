r"""The `ntk_eval` stage: kernel drift and frozen-kernel test errors of a trained run.

Adds ntk.json to a run artifact written by `train` (Section 5, Appendix A):

  python -m pipelines.ntk_eval --run_dir=runs/quickstart

On the paper's 50 000 test points the drift is streamed in blocks; to keep it short, or to
store the Gram matrices on a subset:

  python -m pipelines.ntk_eval --run_dir=runs/quickstart --max_test=5000 --save_gram
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

from absl import flags

from lazy_feature.run import artifact
from lazy_feature.study import ntk_eval
from pipelines import common

flags.DEFINE_string("run_dir", None, "A complete run directory written by train.", required=True)
flags.DEFINE_integer("max_train", None, "Training points the train-set drift sums over.")
flags.DEFINE_integer("max_test", None, "Test points for the drift and frozen-kernel error.")
flags.DEFINE_boolean("save_gram", False, "Also store the Gram matrices (n² floats each).")
flags.DEFINE_integer("block_size", None, "Examples per kernel tile (memory ~ block²).")
common.define_strategy_flags()
FLAGS = flags.FLAGS


def main():
    ntk_eval.evaluate(FLAGS.run_dir, max_train=FLAGS.max_train, max_test=FLAGS.max_test,
                      save_gram=FLAGS.save_gram, block_size=FLAGS.block_size,
                      strategy=common.strategy_from_flags([artifact.load_config(FLAGS.run_dir)]))


if __name__ == "__main__":
    common.main("ntk_eval", main)
