"""The paper's main experiments (Sections 2-6: Figs. 3, 4, 5 and 9, Table 2, the claims) at its
scale, and the whole study small (`quick`, `tiny`).

At the paper's scale (Section 2: n = 10 000 training and 50 000 test points of binary
Fashion-MNIST, L = 3, softplus β = 5, soft hinge β = 20) a run takes minutes to hours; such
sweeps are meant for many machines (`--beam_options`, see pipelines/sweep.py).
"""
import dataclasses

import numpy as np

from lazy_feature.run.config import TrainConfig
from lazy_feature.study.sweep import SweepConfig

PAPER = TrainConfig()  # Section 2's setup
PAPER_SEEDS = tuple(range(20))  # "20 initializations per point"


def decades(low, high, per_decade=1):
    """Powers of ten from 10^low to 10^high, `per_decade` points a decade."""
    return tuple(float(x) for x in np.logspace(low, high, (high - low) * per_decade + 1))


def fig3():
    """Fig. 3 (b-d) and Fig. 4 (c, d): test error over the (α, h) plane, n = 10 000, 20 seeds.

    (b) fixes √h·α and varies h; (c, d) vary α at fixed h (the same grid read by √h·α);
    Fig. 4 (c, d) are its ensembles.
      python -m pipelines.sweep --config=fig3 --output_dir=runs/fig3
    """
    return SweepConfig(base=PAPER, widths=(30, 100, 300, 1000, 3000),
                       sqrt_h_alphas=decades(-4, 6), seeds=PAPER_SEEDS, ntk_max_test=10000)


FIG4_WIDTHS = (10, 30, 100, 300, 1000, 3000)
_FIG4_SQRT_H_ALPHAS = decades(-3, 5)


def fig4a():
    """Fig. 4 (a): Var F vs h at fixed √h·α, on n = 1 000 as its caption says, 20 seeds.
      python -m pipelines.sweep --config=fig4a --output_dir=runs/fig4a
    """
    return SweepConfig(base=dataclasses.replace(PAPER, n_train=1000), widths=FIG4_WIDTHS,
                       sqrt_h_alphas=_FIG4_SQRT_H_ALPHAS, seeds=PAPER_SEEDS, ntk=False)


def fig4b():
    """Fig. 4 (b): h·Var F vs √h·α per width on the paper's n = 10 000, 20 seeds (in the lazy
    regime the curves do not overlap at this n, the preasymptotic effect the panel shows).
      python -m pipelines.sweep --config=fig4b --output_dir=runs/fig4b
    """
    return SweepConfig(base=PAPER, widths=FIG4_WIDTHS, sqrt_h_alphas=_FIG4_SQRT_H_ALPHAS,
                       seeds=PAPER_SEEDS, ntk=False)


def fig5():
    """Fig. 5 (a-c) and Fig. 9: kernel drift, α²L(t), t_{L/2} and weight drift, n = 10 000,
    10 seeds, √h·α from 1e-4 to 1e7 (the paper's span), two points a decade, three widths;
    the drift is summed over all 50 000 test points.
      python -m pipelines.sweep --config=fig5 --output_dir=runs/fig5
    """
    return SweepConfig(base=PAPER, widths=(100, 300, 1000), sqrt_h_alphas=decades(-4, 7, 2),
                       seeds=tuple(range(10)))


def table2():
    """Table 2: the drift exponents a and b for depths L = 2 and 5 (L = 3 is fig5), n = 10 000,
    10 seeds.
      python -m pipelines.sweep --config=table2 --output_dir=runs/table2
    """
    return SweepConfig(base=PAPER, depths=(2, 5), widths=(100, 300, 1000),
                       sqrt_h_alphas=decades(-3, 3, 2), seeds=tuple(range(10)))


def claims():
    """Claim (ii) at the paper's n = 10 000 (Table 1, Fig. 4 (c, d)): which regime has the
    lower test error, for single networks and for 5-member ensembles, at h = 100 with
    √h·α = 1e-2 (feature) and 1e3 (lazy).
      python -m pipelines.sweep --config=claims --output_dir=runs/claims
    """
    return SweepConfig(base=PAPER, widths=(100,), sqrt_h_alphas=(1e-2, 1e3),
                       seeds=tuple(range(5)), ntk=False)


def quick():
    """The whole study, small: the README's main job (its time on 2 cores:
    benchmarks/results/quick_study.md).

    Figs. 3, 4, 5 and 9 and the claims at n = 1 000 training and 2 000 test points, widths
    30 and 100, √h·α = 1e-3 … 1e4, 5 seeds (70 runs), with NTK drift, frozen-kernel errors
    and ensembles; then the report. Each regime's exponents are fitted over three levels
    (√h·α ≤ 0.1 and ≥ 100). The step budget is far above what any run needs, so that no run
    is excluded; a run it stops can finish with --retry_unconverged. Wider (h = 300) or
    narrower (h = 10, whose lazy kernel is ill-conditioned) nets cost several times more
    per run.
      python -m pipelines.sweep --config=quick --output_dir=runs/quick
    """
    base = dataclasses.replace(PAPER, n_train=1000, n_test=2000, max_steps=100_000)
    return SweepConfig(base=base, widths=(30, 100),
                       sqrt_h_alphas=(1e-3, 1e-2, 1e-1, 1.0, 1e2, 1e3, 1e4),
                       seeds=tuple(range(5)), feature_range=(None, 0.1), lazy_range=(100, None))


def tiny():
    """A sweep of seconds that exercises every stage (tests, a first look).
      python -m pipelines.sweep --config=tiny --output_dir=runs/tiny
    """
    base = dataclasses.replace(PAPER, n_train=60, n_test=120, max_wall_seconds=120)
    return SweepConfig(base=base, widths=(16, 32), sqrt_h_alphas=(0.1, 10.0), seeds=(0, 1))


CONFIGS = {make.__name__: make for make in (fig3, fig4a, fig4b, fig5, table2, claims, quick,
                                            tiny)}
