"""Named sweeps: the paper's experiments at its scale, and small versions of the whole study.

Each function returns a `sweep.SweepConfig`; its docstring gives the command that runs it.
At the paper's scale (Section 2: n = 10 000 training and 50 000 test points of binary
Fashion-MNIST, L = 3, softplus β = 5, soft hinge β = 20) a run takes minutes to hours; such
sweeps are meant for many machines (`--beam_options`, see pipelines/sweep.py).
"""
import dataclasses

import numpy as np

from lazy_feature.config import TrainConfig
from lazy_feature.errors import ConfigError
from lazy_feature.sweep import SweepConfig

PAPER = TrainConfig()  # Section 2's setup
PAPER_SEEDS = tuple(range(20))  # "20 initializations per point"


def _decades(low, high, per_decade=1):
    """Powers of ten from 10^low to 10^high, `per_decade` points a decade."""
    return tuple(float(x) for x in np.logspace(low, high, (high - low) * per_decade + 1))


def fig3():
    """Fig. 3 (b-d) and Fig. 4 (c, d): test error over the (α, h) plane, 20 seeds.

    (b) fixes √h·α and varies h; (c, d) vary α at fixed h (the same grid read by √h·α).
      python -m pipelines.sweep --config=fig3 --output_dir=runs/fig3
    """
    return SweepConfig(base=PAPER, widths=(30, 100, 300, 1000, 3000),
                       sqrt_h_alphas=_decades(-4, 6), seeds=PAPER_SEEDS, ntk_max_test=10000)


def fig4():
    """Fig. 4 (a, b): h·Var F vs h and √h·α; panel (a) on n = 1 000 (its caption), 20 seeds.
      python -m pipelines.sweep --config=fig4 --output_dir=runs/fig4
    """
    return SweepConfig(base=dataclasses.replace(PAPER, n_train=1000),
                       widths=(10, 30, 100, 300, 1000, 3000), sqrt_h_alphas=_decades(-3, 5),
                       seeds=PAPER_SEEDS, ntk=False)


def fig5():
    """Fig. 5 and Fig. 9: kernel drift, α²L(t), t_{L/2} and weight drift, 10 seeds.

    α over 11 decades at three widths; the drift is summed over all 50 000 test points.
      python -m pipelines.sweep --config=fig5 --output_dir=runs/fig5
    """
    return SweepConfig(base=PAPER, widths=(100, 300, 1000), alphas=_decades(-6, 4, 2),
                       seeds=tuple(range(10)))


def table2():
    """Table 2: the drift exponent a for depths L = 2 and 5 (L = 3 is fig5), 10 seeds.
      python -m pipelines.sweep --config=table2 --output_dir=runs/table2
    """
    return SweepConfig(base=PAPER, depths=(2, 5), widths=(100, 300, 1000),
                       sqrt_h_alphas=_decades(-3, 3, 2), seeds=tuple(range(10)))


def quick():
    """The whole study, small: about 30 minutes on 2 cores; the README's main job.

    n = 1 000 training and 2 000 test points, widths 30 to 300, √h·α over 5 decades,
    5 seeds (90 runs), with NTK drift, frozen-kernel errors and ensembles; then the report.
      python -m pipelines.sweep --config=quick --output_dir=runs/quick
    """
    base = dataclasses.replace(PAPER, n_train=1000, n_test=2000, max_wall_seconds=600)
    return SweepConfig(base=base, widths=(30, 100, 300), sqrt_h_alphas=_decades(-2, 3),
                       seeds=tuple(range(5)))


def tiny():
    """A sweep of seconds that exercises every stage (tests, a first look).
      python -m pipelines.sweep --config=tiny --output_dir=runs/tiny
    """
    base = dataclasses.replace(PAPER, n_train=60, n_test=120, max_wall_seconds=120)
    return SweepConfig(base=base, widths=(16, 32), sqrt_h_alphas=(0.1, 10.0), seeds=(0, 1))


CONFIGS = {"fig3": fig3, "fig4": fig4, "fig5": fig5, "table2": table2, "quick": quick,
           "tiny": tiny}


def get(name):
    """The SweepConfig of the named config."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}: choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name]()
