"""The appendices: Figs. 11-16 (Appendices D, F, G, H, I, J), at the paper's scale and small
(`_quick`), all on Fashion-MNIST, the paper's data set.

Each quick config is sized to run within 20 minutes on 2 cores with 2 Beam workers (their
times: benchmarks/results/quick_configs_benchmark.md).
"""
import dataclasses
from typing import Any

from lazy_feature.study.sweep import SweepConfig
from pipelines.configs.paper import FIG4_WIDTHS, PAPER, PAPER_SEEDS, decades

_APPENDIX_QUICK = dict(n_train=500, n_test=1000)


def fig11():
    """Fig. 11 (Appendix D): the pre-activation velocity ż^ℓ at t = 0 against h for each of the
    L = 5 hidden layers (softplus), α = 1, n = 10 000, 5 networks per point; ż by finite
    difference over one gradient step on 1 000 test points (eq. 22 predicts h^(-1/2)).
      python -m pipelines.sweep --config=fig11 --output_dir=runs/fig11
    """
    return SweepConfig(base=dataclasses.replace(PAPER, depth=5), widths=(10, 30, 100, 300, 1000),
                       alphas=(1.0,), seeds=tuple(range(5)), ntk=False, velocity=True)


def fig11_quick():
    """Fig. 11 small: L = 5, α = 1, n = 1 000 training and 1 000 test points, h = 10 … 300,
    3 networks per point (12 runs).
      python -m pipelines.sweep --config=fig11_quick --output_dir=runs/fig11_quick
    """
    base = dataclasses.replace(PAPER, depth=5, n_train=1000, n_test=1000)
    return SweepConfig(base=base, widths=(10, 30, 100, 300), alphas=(1.0,), seeds=(0, 1, 2),
                       ntk=False, velocity=True)


def fig12():
    """Fig. 12 (Appendix F): the kernel drift of the ReLU network (L = 5) against √h·α for three
    widths, n = 10 000, 3 networks per point, √h·α from 1e-3 to 1e6 at two points a decade;
    the report fits the three power laws (feature, −1/2, −1) and prints their ranges.
      python -m pipelines.sweep --config=fig12 --output_dir=runs/fig12
    """
    base = dataclasses.replace(PAPER, depth=5, activation="relu")
    return SweepConfig(base=base, widths=(100, 300, 1000), sqrt_h_alphas=decades(-3, 6, 2),
                       seeds=(0, 1, 2), ntk_max_test=10000)


def fig12_quick():
    """Fig. 12 small: ReLU, L = 5, n = 500 training and 1 000 test points, h = 30, √h·α from
    1e-2 to 1e6 (9 levels, the fewest the three power laws take), 2 seeds (18 runs), with the
    kernel drift on the 1 000 test points. Its runs cross the ReLU's jumps of ∇L by the Euler
    integrator's jump rule (`lazy_feature.flow.dynamics`).
      python -m pipelines.sweep --config=fig12_quick --output_dir=runs/fig12_quick
    """
    base = dataclasses.replace(PAPER, depth=5, activation="relu", **_APPENDIX_QUICK)
    return SweepConfig(base=base, widths=(30,), sqrt_h_alphas=decades(-2, 6), seeds=(0, 1))


# Fig. 13 (b, d): continuous momentum at two time constants beside gradient flow (whose ε_∇
# check is panels (a, c)). The paper gives no τ. We take τ proportional to t, τ = c·t (the
# authors' τ ∝ t of Fig. 7 (c)), so that the momentum's lag is the same fraction c of the
# elapsed time at every √h·α: the time of convergence spans some five decades over the grid,
# and a constant τ would be either negligible in the lazy regime or rule the feature regime.
# c = 1e-3 stays close to gradient flow, and c = 1e-2 is 10 times that.
FIG13_MOMENTUM_TAUS = (1e-3, 1e-2)
_FIG13_VARIANTS: tuple[dict[str, Any], ...] = ({},) + tuple(
    {"dynamics": "momentum", "tau": c, "tau_proportional_to_t": True} for c in FIG13_MOMENTUM_TAUS)


def fig13():
    """Fig. 13 (Appendix G), h = 100, n = 10 000, 3 seeds, √h·α = 1e-3 … 1e5:
    (a, c) each gradient-flow run at the paper's ε_∇ = 1e-4 against its reference flow at
    ε_∇/100 (and max_dout/10, float64, `lazy_feature.study.fidelity`): the relative output
    difference at a common time and the compute time of both;
    (b, d) continuous momentum at τ = 1e-3·t and 1e-2·t (`FIG13_MOMENTUM_TAUS`, the choice and
    its reason above them): the relative difference of their final test outputs and the
    compute time of each. The momentum runs get no reference flow.
      python -m pipelines.sweep --config=fig13 --output_dir=runs/fig13
    """
    return SweepConfig(base=PAPER, widths=(100,), sqrt_h_alphas=decades(-3, 5), seeds=(0, 1, 2),
                       ntk=False, fidelity=True, variants=_FIG13_VARIANTS)


def fig13_quick():
    """Fig. 13 small: h = 30, n = 300 training and 1 000 test points, √h·α = 1e-2, 0.1,
    10, 1e3, one seed: 4 gradient-flow runs and their reference flows (a, c), and 8 momentum
    runs (b, d).
      python -m pipelines.sweep --config=fig13_quick --output_dir=runs/fig13_quick
    """
    return SweepConfig(base=dataclasses.replace(PAPER, n_train=300, n_test=1000), widths=(30,),
                       sqrt_h_alphas=(1e-2, 0.1, 10.0, 1e3), seeds=(0,), ntk=False,
                       fidelity=True, variants=_FIG13_VARIANTS)


def _training_set_sizes(sizes):
    return tuple({"n_train": n} for n in sizes)


def fig14():
    """Fig. 14 (Appendix H): Var F (eq. 33, unbiased) against h in the lazy regime, √h·α = 1e6,
    for n = 100, 1 000 and 10 000 training points, 20 seeds.
      python -m pipelines.sweep --config=fig14 --output_dir=runs/fig14
    """
    return SweepConfig(base=PAPER, widths=FIG4_WIDTHS, sqrt_h_alphas=(1e6,), seeds=PAPER_SEEDS,
                       ntk=False, variants=_training_set_sizes((100, 1000, 10000)))


def fig14_quick():
    """Fig. 14 small: √h·α = 1e6, h = 10, 30, 100, n = 100, 300 and 1 000 training points on
    1 000 test points, 4 seeds (36 runs).
      python -m pipelines.sweep --config=fig14_quick --output_dir=runs/fig14_quick
    """
    return SweepConfig(base=dataclasses.replace(PAPER, n_test=1000), widths=(10, 30, 100),
                       sqrt_h_alphas=(1e6,), seeds=(0, 1, 2, 3), ntk=False,
                       variants=_training_set_sizes((100, 300, 1000)))


_MODELS = ({"centered": True}, {"centered": False})  # α(f − f0) and αf (Appendix I)


def fig15():
    """Fig. 15 (Appendix I): α(f − f0) against αf: single and ensemble test error (a) and
    h·Var F (b) against α for h = 100 and 1 000, n = 10 000, 10 seeds. αf does not converge at
    α ≫ 1 (Section 2): those runs stop at max_steps and are reported excluded.
      python -m pipelines.sweep --config=fig15 --output_dir=runs/fig15
    """
    return SweepConfig(base=dataclasses.replace(PAPER, max_steps=200_000), widths=(100, 1000),
                       alphas=decades(-3, 3), seeds=tuple(range(10)), ntk=False,
                       variants=_MODELS)


def fig15_quick():
    """Fig. 15 small: h = 30 and 100, α = 0.01 … 10, n = 500 training and 1 000 test points,
    2 seeds, both models (32 runs; an αf run that a budget of 20 000 steps stops is reported
    excluded).
      python -m pipelines.sweep --config=fig15_quick --output_dir=runs/fig15_quick
    """
    base = dataclasses.replace(PAPER, max_steps=20_000, **_APPENDIX_QUICK)
    return SweepConfig(base=base, widths=(30, 100), alphas=(1e-2, 1e-1, 1.0, 10.0),
                       seeds=(0, 1), ntk=False, variants=_MODELS)


# No bias (the paper's setup) and biases of multiplier 0.1 in the hidden layers (Appendix J,
# the authors' bias runs).
_BIASES = ({"bias_scale": 0.0}, {"bias_scale": 0.1})


def fig16():
    """Fig. 16 (Appendix J): with and without biases: single and ensemble test error (a) and
    h·Var F (d) against √h·α, h = 100, n = 10 000, 20 seeds.
      python -m pipelines.sweep --config=fig16 --output_dir=runs/fig16
    """
    return SweepConfig(base=PAPER, widths=(100,), sqrt_h_alphas=decades(-3, 5),
                       seeds=PAPER_SEEDS, ntk=False, variants=_BIASES)


def fig16_quick():
    """Fig. 16 small: h = 100, √h·α = 1e-2, 1, 1e2, 1e4, n = 500 training and 1 000 test
    points, 3 seeds, with and without biases (24 runs).
      python -m pipelines.sweep --config=fig16_quick --output_dir=runs/fig16_quick
    """
    return SweepConfig(base=dataclasses.replace(PAPER, **_APPENDIX_QUICK), widths=(100,),
                       sqrt_h_alphas=(1e-2, 1.0, 1e2, 1e4), seeds=(0, 1, 2), ntk=False,
                       variants=_BIASES)


CONFIGS = {make.__name__: make for make in (
    fig11, fig11_quick, fig12, fig12_quick, fig13, fig13_quick, fig14, fig14_quick, fig15,
    fig15_quick, fig16, fig16_quick)}
