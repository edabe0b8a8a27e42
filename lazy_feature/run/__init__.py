"""The run layer: one run's config and id, data, artifact directory, training, callbacks,
devices and resources. `train` and `load_run` are the entry points."""
from lazy_feature.run.runner import load_run, train
