r"""The `ensemble` stage: N networks at one (α, h) that differ only in their init seed (Section 4).

Takes every flag of `train` for the common settings (their --init_seed is replaced by
--seeds) and writes, in --output_dir, the members as ordinary run artifacts under members/,
ensemble.json (the test error of the ensemble average F̄ of eq. 15, the mean and spread of
the members' test errors, Var F of eq. 16) and mean_test_outputs.npy (F̄ on the test set):

  python -m pipelines.ensemble --n_train=2000 --n_test=5000 --width=100 \
      --sqrt_h_alpha=1e-1 --seeds=0,1,2,3,4 --output_dir=runs/ensemble

Rerunning the same command skips the finished members and resumes an interrupted one.
"""
from pipelines import console

if __name__ == "__main__":
    console.quiet_tensorflow()  # first: the imports below load TensorFlow

import json

from absl import flags

from lazy_feature.study import ensemble
from pipelines import common

common.define_train_config_flags()
flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "The members' init seeds.")
flags.DEFINE_string("output_dir", None, "The ensemble directory to write.", required=True)
common.define_strategy_flags()
FLAGS = flags.FLAGS


def main(console):
    config, seeds = common.train_config_from_flags(), common.integers("seeds", FLAGS.seeds)
    strategy = common.strategy_from_flags(ensemble.member_configs(config, seeds))
    summary = ensemble.train_ensemble(config, seeds, FLAGS.output_dir, progress_stream=console,
                                      strategy=strategy)
    print(json.dumps({k: v for k, v in summary.items() if k != "members"}, indent=1))


if __name__ == "__main__":
    common.main("ensemble", main, progress=True)
