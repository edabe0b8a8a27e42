"""Named sweeps: the paper's experiments at its scale, and small versions of the whole study.

Each function returns a `sweep.SweepConfig`; its docstring gives the command that runs it.
At the paper's scale (Section 2: n = 10 000 training and 50 000 test points of binary
Fashion-MNIST, L = 3, softplus β = 5, soft hinge β = 20) a run takes minutes to hours; such
sweeps are meant for many machines (`--beam_options`, see pipelines/sweep.py).
"""
import dataclasses

import numpy as np

from lazy_feature.run import data
from lazy_feature.study import table1
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import ConfigError
from lazy_feature.study.sweep import SweepConfig

PAPER = TrainConfig()  # Section 2's setup
PAPER_SEEDS = tuple(range(20))  # "20 initializations per point"


def _decades(low, high, per_decade=1):
    """Powers of ten from 10^low to 10^high, `per_decade` points a decade."""
    return tuple(float(x) for x in np.logspace(low, high, (high - low) * per_decade + 1))


def fig3():
    """Fig. 3 (b-d) and Fig. 4 (c, d): test error over the (α, h) plane, n = 10 000, 20 seeds.

    (b) fixes √h·α and varies h; (c, d) vary α at fixed h (the same grid read by √h·α);
    Fig. 4 (c, d) are its ensembles.
      python -m pipelines.sweep --config=fig3 --output_dir=runs/fig3
    """
    return SweepConfig(base=PAPER, widths=(30, 100, 300, 1000, 3000),
                       sqrt_h_alphas=_decades(-4, 6), seeds=PAPER_SEEDS, ntk_max_test=10000)


_FIG4_WIDTHS = (10, 30, 100, 300, 1000, 3000)
_FIG4_SQRT_H_ALPHAS = _decades(-3, 5)


def fig4a():
    """Fig. 4 (a): Var F vs h at fixed √h·α, on n = 1 000 as its caption says, 20 seeds.
      python -m pipelines.sweep --config=fig4a --output_dir=runs/fig4a
    """
    return SweepConfig(base=dataclasses.replace(PAPER, n_train=1000), widths=_FIG4_WIDTHS,
                       sqrt_h_alphas=_FIG4_SQRT_H_ALPHAS, seeds=PAPER_SEEDS, ntk=False)


def fig4b():
    """Fig. 4 (b): h·Var F vs √h·α per width on the paper's n = 10 000, 20 seeds (in the lazy
    regime the curves do not overlap at this n, the preasymptotic effect the panel shows).
      python -m pipelines.sweep --config=fig4b --output_dir=runs/fig4b
    """
    return SweepConfig(base=PAPER, widths=_FIG4_WIDTHS, sqrt_h_alphas=_FIG4_SQRT_H_ALPHAS,
                       seeds=PAPER_SEEDS, ntk=False)


def fig5():
    """Fig. 5 (a-c) and Fig. 9: kernel drift, α²L(t), t_{L/2} and weight drift, n = 10 000,
    10 seeds, √h·α from 1e-4 to 1e7 (the paper's span), two points a decade, three widths;
    the drift is summed over all 50 000 test points.
      python -m pipelines.sweep --config=fig5 --output_dir=runs/fig5
    """
    return SweepConfig(base=PAPER, widths=(100, 300, 1000), sqrt_h_alphas=_decades(-4, 7, 2),
                       seeds=tuple(range(10)))


def table2():
    """Table 2: the drift exponents a and b for depths L = 2 and 5 (L = 3 is fig5), n = 10 000,
    10 seeds.
      python -m pipelines.sweep --config=table2 --output_dir=runs/table2
    """
    return SweepConfig(base=PAPER, depths=(2, 5), widths=(100, 300, 1000),
                       sqrt_h_alphas=_decades(-3, 3, 2), seeds=tuple(range(10)))


def claims():
    """Claim (ii) at the paper's n = 10 000 (Table 1, Fig. 4 (c, d)): which regime has the
    lower test error, for single networks and for 5-member ensembles, at h = 100 with
    √h·α = 1e-2 (feature) and 1e3 (lazy); about an hour on 2 cores.
      python -m pipelines.sweep --config=claims --output_dir=runs/claims
    """
    return SweepConfig(base=PAPER, widths=(100,), sqrt_h_alphas=(1e-2, 1e3),
                       seeds=tuple(range(5)), ntk=False)


def quick():
    """The whole study, small: 14.1 minutes on 2 cores (timed end to end by
    `benchmarks/quick_configs_benchmark.py`, load 1.0-1.5); the README's main job.

    Figs. 3, 4, 5 and 9 and the claims at n = 1 000 training and 2 000 test points, widths
    30 and 100, √h·α = 1e-3 … 1e4, 5 seeds (70 runs), with NTK drift, frozen-kernel errors
    and ensembles; then the report. Each regime's exponents are fitted over three levels
    (√h·α ≤ 0.1 and ≥ 100). The step budget is far above what any run needs, so that no run
    is excluded; a run it stops can finish with --retry_unconverged. Measured per run on one
    core: about 35 s at h = 30 and 50 s at h = 100; h = 300 takes about 150 s and h = 10
    up to 160 s in the lazy regime (its kernel is ill-conditioned), so either would double
    the half hour.
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


# -- Section 7: Table 1 and Figs. 6, 7, 10 --------------------------------------------------

# The settings of each row of Table 1 (lazy_feature.study.table1.ROWS) that differ from Section 2's.
# The CNN uses the hinge loss (Fig. 7 (b)'s caption); the paper states no CNN width: we take
# h = 64 channels. Fig. 7 (a)'s FC net on MNIST-PCA10 has width 100 and L = 5.
# An Adam run lasts a fixed number of epochs, ended earlier by the stopping criterion (every
# margin > 1): the paper gives no length, and the authors' Adam runs end at every margin > 1
# or at a wall-clock train_time. We take 1 000 epochs at the paper's scale and 300 in the
# quick configs, where a CNN epoch of n = 1 000 takes about 0.35 s on one core (h = 8) and
# the feature-regime runs still have some 15% of their margins below 1 at 300 epochs.
_ADAM_EPOCHS, _ADAM_QUICK_EPOCHS = 1000.0, 300.0  # floats, as --epochs parses them
_TABLE1_SETTINGS = {
    "cnn_cifar10_adam": dict(architecture="cnn", depth=None, dataset="cifar10", dynamics="adam",
                             loss="hinge", epochs=_ADAM_EPOCHS),
    "cnn_fashion_mnist_adam": dict(architecture="cnn", depth=None, dynamics="adam",
                                   loss="hinge", epochs=_ADAM_EPOCHS),
    "fc_cifar10_adam": dict(dataset="cifar10", dynamics="adam", epochs=_ADAM_EPOCHS),
    "fc_fashion_mnist": dict(),
    "fc_mnist": dict(dataset="mnist"),
    "fc_emnist_letters": dict(dataset="emnist_letters"),
    "fc_cifar10": dict(dataset="cifar10"),
    "fc_mnist_pca10": dict(dataset="mnist", pca=10, depth=5),
}
_TABLE1_DEPTHS = {"fc_fashion_mnist": (3, 9)}  # "FC (3,9 hidden layers)"
_CNN_WIDTH, _FC_WIDTH = 64, 100
# The verdict compares the smallest level of the feature range with the largest of the lazy
# range, as the claims do (lazy_feature.study.claims): √h·α = 1e-3 and 1e4 at the paper's scale.
_REGIME_RANGES = dict(feature_range=(None, 0.1), lazy_range=(100, None))
_QUICK = dict(n_train=1000, n_test=2000)
_QUICK_SQRT_H_ALPHAS = (1e-2, 1.0, 1e3)
# A quick row has the two levels its verdict compares. The quick CNN has 8 channels and its
# lazy level is √h·α = 100, the largest that float32 resolves at h = 8 (the precision rule
# takes its largest fan-in, 25·h): float64 convolutions are some 50 times slower on a CPU.
_CNN_QUICK_WIDTH = 8
_TABLE1_QUICK_SQRT_H_ALPHAS = {"fc": (1e-2, 1e3), "cnn": (1e-2, 1e2)}
# The L = 9 net costs about 4 times L = 3 (200 CPU seconds a run at n = 1 000, √h·α = 1e-2,
# 5 000 steps; some 300 at 1e3 in float64), so the quick configs with L = 9 train on
# n = 500 points to stay well within 20 minutes on 2 cores; so do the rows on CIFAR10's
# 32×32×3 images: the CNN's 8 Adam runs of 300 epochs on n = 1 000 took 29 minutes with
# another sweep beside them (an epoch costs n/32 mini-batches), the FC net's 8 runs (3 072
# inputs, 3 times Fashion-MNIST's first layer) 28.6 minutes on a loaded machine.
_QUICK_HALF = dict(n_train=500, n_test=2000)
_QUICK_SIZES = {"fc_fashion_mnist": _QUICK_HALF, "cnn_cifar10_adam": _QUICK_HALF,
                "fc_cifar10": _QUICK_HALF}
# Minutes of `python -m pipelines.sweep --config=table1_<row>_quick` end to end, timed by
# benchmarks/quick_configs_benchmark.py on a loaded 2-core machine (an upper bound), on
# stand-in files in the row's format made from Fashion-MNIST where its data set was absent.
_QUICK_MINUTES = {
    "cnn_cifar10_adam": "10.9 minutes (timed on stand-in data)",
    "cnn_fashion_mnist_adam": "8.3 minutes (timed)",
    "fc_cifar10_adam": "4.8 minutes (timed on stand-in data)",
    "fc_fashion_mnist": "13.2 minutes (timed)",
    "fc_mnist": "5.0 minutes (timed on stand-in data)",
    "fc_emnist_letters": "5.1 minutes (timed on stand-in data)",
    "fc_cifar10": "8.6 minutes (timed on stand-in data)",
    "fc_mnist_pca10": "11.2 minutes (timed on stand-in data)",
}


def _quick_sizes(base, sizes=None):
    """A quick config's `base`: n = 1 000 (2 000 test points) or `sizes`, and Adam runs of
    300 epochs."""
    epochs = dict(epochs=_ADAM_QUICK_EPOCHS) if base.dynamics == "adam" else {}
    return dataclasses.replace(base, **(sizes or _QUICK), **epochs)


def _table1(row, quick):
    """The SweepConfig of a Table 1 row at the paper's scale, or its quick version."""
    settings = _TABLE1_SETTINGS[row]
    cnn = settings.get("architecture") == "cnn"
    grid = SweepConfig(base=dataclasses.replace(PAPER, **settings),
                       widths=(_CNN_WIDTH if cnn else _FC_WIDTH,),
                       depths=_TABLE1_DEPTHS.get(row, ()), sqrt_h_alphas=_decades(-3, 4),
                       seeds=PAPER_SEEDS, ntk=False, **_REGIME_RANGES)
    if not quick:
        return grid
    return dataclasses.replace(grid, base=_quick_sizes(grid.base, _QUICK_SIZES.get(row)),
                               widths=(_CNN_QUICK_WIDTH if cnn else _FC_WIDTH,),
                               sqrt_h_alphas=_TABLE1_QUICK_SQRT_H_ALPHAS["cnn" if cnn else "fc"],
                               seeds=tuple(range(4)))


def _table1_config(row, quick):
    """The named config of a Table 1 row, with its docstring."""
    spec = table1.BY_NAME[row]
    name = f"table1_{row}" + ("_quick" if quick else "")

    def make():
        return _table1(row, quick)

    grid = make()
    depths = ", ".join(map(str, grid.depths or (grid.base.depth,)))
    scale = (f"small: n = {grid.base.n_train} training and {grid.base.n_test} test points, "
             f"h = {grid.widths[0]}, √h·α = {', '.join(f'{x:g}' for x in grid.sqrt_h_alphas)}, "
             f"{len(grid.seeds)} seeds; {_QUICK_MINUTES[row]} on 2 cores. Where its "
             "data set is not on the machine the Table 1 report says \"data not found\" (no "
             "stand-in data set)." if quick else
             f"the paper's scale: n = {grid.base.n_train} binary training points, "
             f"{grid.base.n_test} test points, h = {grid.widths[0]}, √h·α = 1e-3 … 1e4, "
             f"{len(grid.seeds)} seeds.")
    make.__name__ = make.__qualname__ = name
    make.__doc__ = (f"Table 1, row {spec.architecture} / {spec.dataset} / {spec.algorithm} "
                    f"(paper: {spec.paper}; {spec.figure}), L = {depths}; {scale} Which "
                    "regime has the lower test error, single networks and ensembles.\n"
                    f"  python -m pipelines.sweep --config={name} --output_dir=runs/{name}\n")
    return name, make


TABLE1 = dict(_table1_config(row.name, False) for row in table1.ROWS)
TABLE1_QUICK = dict(_table1_config(row.name, True) for row in table1.ROWS)
# The named groups of sweeps `python -m pipelines.sweep --config=NAME` runs one after the
# other (by row name: lazy_feature.study.table1.ROWS), each under <output_dir>/<row>, before writing
# the Table 1 report.
TABLES = {"table1": {row.name: TABLE1[f"table1_{row.name}"] for row in table1.ROWS},
          "table1_quick": {row.name: TABLE1_QUICK[f"table1_{row.name}_quick"]
                           for row in table1.ROWS}}


def fig6():
    """Fig. 6 (a-d): the FC net of Section 2 on binary MNIST, n = 10 000, 20 seeds: test
    error and ensembles vs √h·α and h, the frozen NTK (ntk_eval), the collapse, h·Var F.
      python -m pipelines.sweep --config=fig6 --output_dir=runs/fig6
    """
    return SweepConfig(base=dataclasses.replace(PAPER, dataset="mnist"),
                       widths=(30, 100, 300, 1000), sqrt_h_alphas=_decades(-3, 5),
                       seeds=PAPER_SEEDS, ntk_max_test=10000)


def fig6ef():
    """Fig. 6 (e, f): the same on binary CIFAR10, n = 10 000, 20 seeds: test error and
    ensembles vs √h·α at h = 100 (e), h·Var F vs √h·α per width (f).
      python -m pipelines.sweep --config=fig6ef --output_dir=runs/fig6ef
    """
    return SweepConfig(base=dataclasses.replace(PAPER, dataset="cifar10"),
                       widths=(100, 300, 1000), sqrt_h_alphas=_decades(-3, 5),
                       seeds=PAPER_SEEDS, ntk=False)


def fig7a():
    """Fig. 7 (a): MNIST reduced to its first 10 principal components, FC net of width 100
    and L = 5, n = 10 000, 20 seeds: test error and ensembles vs √h·α.
      python -m pipelines.sweep --config=fig7a --output_dir=runs/fig7a
    """
    return _fig7("fc_mnist_pca10")


def fig7b():
    """Fig. 7 (b): the CNN on binary CIFAR10 with the hinge loss and Adam (batch 32),
    h = 64 channels, n = 10 000, 20 seeds: test error and ensembles vs √h·α.
      python -m pipelines.sweep --config=fig7b --output_dir=runs/fig7b
    """
    return _fig7("cnn_cifar10_adam")


def fig7c():
    """Fig. 7 (c): EMNIST letters, FC net h = 100, n = 10 000, 20 seeds, two setups: Section
    2's, and soft hinge β = 10 with continuous momentum of time constant τ·t (τ = 1e-3; the
    paper states no value) as `variants`.
      python -m pipelines.sweep --config=fig7c --output_dir=runs/fig7c
    """
    return dataclasses.replace(_fig7("fc_emnist_letters"), variants=_FIG7C_VARIANTS)


def fig7d():
    """Fig. 7 (d): two depths, L = 3 and 9, on Fashion-MNIST, FC net h = 100, n = 10 000,
    20 seeds: test error and ensembles vs √h·α.
      python -m pipelines.sweep --config=fig7d --output_dir=runs/fig7d
    """
    return _fig7("fc_fashion_mnist")


_FIG7C_VARIANTS = ({}, {"loss_beta": 10.0, "dynamics": "momentum", "tau": 1e-3,
                        "tau_proportional_to_t": True})


def _fig7(row):
    """A panel of Fig. 7: its Table 1 row's setup over √h·α = 1e-3 … 1e5, 20 seeds."""
    return dataclasses.replace(_table1(row, quick=False), sqrt_h_alphas=_decades(-3, 5),
                               feature_range=None, lazy_range=None)


def fig10():
    """Fig. 10 (a-d): ‖f(w_t) − f(w0)‖ and ‖f(w_t)‖/√h vs t/t1 in the feature regime,
    L = 2, softplus, n = 10 000, 10 seeds: (a) h = 100 at several α, (b-d) fixed √h·α,
    several h.
      python -m pipelines.sweep --config=fig10 --output_dir=runs/fig10
    """
    return SweepConfig(base=dataclasses.replace(PAPER, depth=2), widths=(100, 300, 1000),
                       sqrt_h_alphas=(1e-3, 1e-2, 1e-1), seeds=tuple(range(10)), ntk=False)


def _quick_figure(full, **grid):
    """`full`'s sweep at n = 1 000 (2 000 test points) with the grid `grid`."""
    config = full()
    return dataclasses.replace(config, base=_quick_sizes(config.base), **grid)


def fig6_quick():
    """Fig. 6 (a-d), small: MNIST at n = 1 000 (2 000 test points), h = 30 and 100,
    √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs with the NTK). On Fashion-MNIST where MNIST is
    not on the machine (`fallback`, said when it runs): 13.2 minutes on 2 cores, timed end to
    end on a loaded machine (benchmarks/quick_configs_benchmark.py).
      python -m pipelines.sweep --config=fig6_quick --output_dir=runs/fig6_quick
    """
    return _quick_figure(fig6, widths=(30, 100), sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS,
                         seeds=(0, 1, 2), ntk_max_test=None)


def fig6ef_quick():
    """Fig. 6 (e, f), small: CIFAR10 at n = 1 000 (2 000 test points), h = 30 and 100,
    √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs). On Fashion-MNIST where CIFAR10 is not on the
    machine (`fallback`): 7.6 minutes on 2 cores, timed end to end on a loaded machine.
      python -m pipelines.sweep --config=fig6ef_quick --output_dir=runs/fig6ef_quick
    """
    return _quick_figure(fig6ef, widths=(30, 100), sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS,
                         seeds=(0, 1, 2))


def fig7a_quick():
    """Fig. 7 (a), small: MNIST-PCA10, L = 5, h = 100, n = 1 000 (2 000 test points),
    √h·α = 1e-2, 1, 1e3, 4 seeds (12 runs). On Fashion-MNIST's first 10 principal components
    where MNIST is not on the machine (`fallback`): 11.0 minutes on 2 cores, timed end to
    end on a quiet machine (benchmarks/quick_configs_benchmark.py).
      python -m pipelines.sweep --config=fig7a_quick --output_dir=runs/fig7a_quick
    """
    return _quick_figure(fig7a, sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS, seeds=tuple(range(4)))


def fig7b_quick():
    """Fig. 7 (b), small: the CNN (h = 8) with the hinge loss and Adam, n = 1 000 (2 000
    test points), √h·α = 1e-2, 1, 1e2 (float32 throughout), 3 seeds (9 runs), Adam runs of
    300 epochs: 10.9 minutes on 2 cores, timed end to end on a loaded machine. On
    Fashion-MNIST where CIFAR10 is not on the machine (`fallback`).
      python -m pipelines.sweep --config=fig7b_quick --output_dir=runs/fig7b_quick
    """
    return _quick_figure(fig7b, widths=(_CNN_QUICK_WIDTH,), sqrt_h_alphas=(1e-2, 1.0, 1e2),
                         seeds=(0, 1, 2))


def fig7c_quick():
    """Fig. 7 (c), small: EMNIST letters, both setups, h = 100, n = 1 000 (2 000 test
    points), √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs). On Fashion-MNIST where EMNIST is not on
    the machine (`fallback`): 12.0 minutes on 2 cores, timed end to end on a loaded machine.
      python -m pipelines.sweep --config=fig7c_quick --output_dir=runs/fig7c_quick
    """
    return _quick_figure(fig7c, sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS, seeds=(0, 1, 2))


def fig7d_quick():
    """Fig. 7 (d), small: L = 3 and 9 on Fashion-MNIST, h = 100, n = 500 (2 000 test
    points; L = 9 is some 4 times L = 3's cost), √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs):
    10.2 minutes on 2 cores, timed end to end on a loaded machine.
      python -m pipelines.sweep --config=fig7d_quick --output_dir=runs/fig7d_quick
    """
    config = _quick_figure(fig7d, sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS, seeds=(0, 1, 2))
    return dataclasses.replace(config, base=dataclasses.replace(config.base, **_QUICK_HALF))


def fig10_quick():
    """Fig. 10, small: L = 2, h = 30 and 100, √h·α = 1e-2 and 1e-1, n = 1 000 (2 000 test
    points), 3 seeds (12 runs): 5.4 minutes on 2 cores, timed end to end on a loaded
    machine with another sweep beside it.
      python -m pipelines.sweep --config=fig10_quick --output_dir=runs/fig10_quick
    """
    return _quick_figure(fig10, widths=(30, 100), sqrt_h_alphas=(1e-2, 1e-1), seeds=(0, 1, 2))


SECTION7 = {make.__name__: make for make in (
    fig6, fig6ef, fig7a, fig7b, fig7c, fig7d, fig10, fig6_quick, fig6ef_quick, fig7a_quick,
    fig7b_quick, fig7c_quick, fig7d_quick, fig10_quick)}
# The quick figure configs whose data set may be absent: they run on Fashion-MNIST then.
FALLBACK = ("fig6_quick", "fig6ef_quick", "fig7a_quick", "fig7b_quick", "fig7c_quick")


def fallback(name, grid):
    """(grid, note): a FALLBACK config whose data set is absent goes to Fashion-MNIST, and the
    note says so; any other grid is returned as it is, with note None."""
    why = data.missing(grid.base.dataset, grid.base.data_dir)
    if name not in FALLBACK or why is None:
        return grid, None
    base = dataclasses.replace(grid.base, dataset="fashion_mnist", data_dir=None)
    return (dataclasses.replace(grid, base=base),
            f"{name}: runs on Fashion-MNIST instead ({why})")


CONFIGS = {"fig3": fig3, "fig4a": fig4a, "fig4b": fig4b, "fig5": fig5, "table2": table2,
           "claims": claims, "quick": quick, "tiny": tiny}
CONFIGS.update(TABLE1, **TABLE1_QUICK, **SECTION7)


# -- The appendices: Figs. 11-16 (Appendices D, F, G, H, I, J) ---------------------------------
# Each quick version runs on 2 cores (2 Beam workers) within 20 minutes; its docstring gives its
# time measured end to end. All run on Fashion-MNIST, the paper's data set.

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
    3 networks per point (12 runs): 6.8 minutes on 2 cores, timed end to end on a loaded
    machine (benchmarks/quick_configs_benchmark.py).
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
    return SweepConfig(base=base, widths=(100, 300, 1000), sqrt_h_alphas=_decades(-3, 6, 2),
                       seeds=(0, 1, 2), ntk_max_test=10000)


def fig12_quick():
    """Fig. 12 small: ReLU, L = 5, n = 500 training and 1 000 test points, h = 30, √h·α from
    1e-2 to 1e6 (9 levels, the fewest the three power laws take), 2 seeds (18 runs), with the
    kernel drift on the 1 000 test points. Its runs cross the ReLU's jumps of ∇L by the Euler
    integrator's jump rule (`lazy_feature.flow.dynamics`): under eq. 9 alone those at √h·α ≤ 10
    stalled (t ≈ 0.001 at 1e-2). 6.98 minutes on 2 cores, all 18 runs converged, timed end
    to end on a loaded machine (benchmarks/quick_configs_benchmark.py).
      python -m pipelines.sweep --config=fig12_quick --output_dir=runs/fig12_quick
    """
    base = dataclasses.replace(PAPER, depth=5, activation="relu", **_APPENDIX_QUICK)
    return SweepConfig(base=base, widths=(30,), sqrt_h_alphas=_decades(-2, 6), seeds=(0, 1))


# Fig. 13 (b, d): continuous momentum at two time constants beside gradient flow (whose ε_∇ check
# is panels (a, c)). The paper gives no τ. We take τ proportional to t, τ = c·t (the authors' τ ∝ t
# of Fig. 7 (c)), so that the momentum's lag is the same fraction c of the elapsed time at every
# √h·α: the time of convergence spans five decades over the grid (t = 0.09 at √h·α = 1e-2 and
# 5 500 at 1e3 in fig13_quick), and a constant τ is either negligible in the lazy regime or rules
# the feature regime (τ = 0.01 moves fig13_quick's final test outputs by 336% from gradient flow's
# at √h·α = 1e-2, by 9e-5 at 1e3). c = 1e-3 is close to gradient flow (fig13_quick's final test
# outputs 0.4% from gradient flow's at √h·α = 1e-2, 0.08% at 0.1), and c = 1e-2 is 10 times that
# (6% and 1.3% from c = 1e-3's).
FIG13_MOMENTUM_TAUS = (1e-3, 1e-2)
_FIG13_VARIANTS = ({},) + tuple({"dynamics": "momentum", "tau": c, "tau_proportional_to_t": True}
                                for c in FIG13_MOMENTUM_TAUS)


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
    return SweepConfig(base=PAPER, widths=(100,), sqrt_h_alphas=_decades(-3, 5), seeds=(0, 1, 2),
                       ntk=False, fidelity=True, variants=_FIG13_VARIANTS)


def fig13_quick():
    """Fig. 13 small: h = 30, n = 300 training and 1 000 test points, √h·α = 1e-2, 0.1,
    10, 1e3, one seed: 4 gradient-flow runs and their reference flows (a, c), and 8 momentum
    runs (b, d): 4.0 minutes on 2 cores, timed end to end on a quiet machine
    (benchmarks/quick_configs_benchmark.py).
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
    return SweepConfig(base=PAPER, widths=_FIG4_WIDTHS, sqrt_h_alphas=(1e6,), seeds=PAPER_SEEDS,
                       ntk=False, variants=_training_set_sizes((100, 1000, 10000)))


def fig14_quick():
    """Fig. 14 small: √h·α = 1e6, h = 10, 30, 100, n = 100, 300 and 1 000 training points on
    1 000 test points, 4 seeds (36 runs): 11.1 minutes on 2 cores, timed end to end on a
    loaded machine.
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
                       alphas=_decades(-3, 3), seeds=tuple(range(10)), ntk=False,
                       variants=_MODELS)


def fig15_quick():
    """Fig. 15 small: h = 30 and 100, α = 0.01 … 10, n = 500 training and 1 000 test points,
    2 seeds, both models (32 runs; an αf run that a budget of 20 000 steps stops is reported
    excluded; on Fashion-MNIST all 32 converged): 3.9 minutes on 2 cores, timed end to end on
    a quiet machine (benchmarks/quick_configs_benchmark.py).
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
    return SweepConfig(base=PAPER, widths=(100,), sqrt_h_alphas=_decades(-3, 5),
                       seeds=PAPER_SEEDS, ntk=False, variants=_BIASES)


def fig16_quick():
    """Fig. 16 small: h = 100, √h·α = 1e-2, 1, 1e2, 1e4, n = 500 training and 1 000 test
    points, 3 seeds, with and without biases (24 runs): 9.0 minutes on 2 cores, timed end to
    end on a loaded machine with another sweep beside it.
      python -m pipelines.sweep --config=fig16_quick --output_dir=runs/fig16_quick
    """
    return SweepConfig(base=dataclasses.replace(PAPER, **_APPENDIX_QUICK), widths=(100,),
                       sqrt_h_alphas=(1e-2, 1.0, 1e2, 1e4), seeds=(0, 1, 2), ntk=False,
                       variants=_BIASES)


CONFIGS.update({make.__name__: make for make in (
    fig11, fig11_quick, fig12, fig12_quick, fig13, fig13_quick, fig14, fig14_quick, fig15,
    fig15_quick, fig16, fig16_quick)})


def get(name):
    """The SweepConfig of the named config."""
    if name not in CONFIGS:
        raise ConfigError(f"unknown config {name!r}: choose one of {', '.join(CONFIGS)}")
    return CONFIGS[name]()
