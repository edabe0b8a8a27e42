"""The regime probe for any Keras model: `RegimeMonitor` (live kernel drift during `fit`)
and `scan` (drift and test error over α, the crossover α*)."""
from lazy_feature.probe.alpha_scan import scan
from lazy_feature.probe.regime import RegimeMonitor
