"""Section 7: each row of Table 1 as a sweep (`table1_<row>`, `TABLES` for the groups) and
Figs. 6, 7 and 10, at the paper's scale and small (`_quick`).

Each quick config is sized to run within 20 minutes on 2 cores (their times:
benchmarks/results/quick_configs_benchmark.md). A quick figure whose data set is not on the
machine runs on Fashion-MNIST (`FALLBACK`, `fallback`); a Table 1 row's does not (the table
says "data not found" for it).
"""
import dataclasses
from typing import Any

from lazy_feature.run import data
from lazy_feature.study import table1
from lazy_feature.study.sweep import SweepConfig
from pipelines.configs.paper import PAPER, PAPER_SEEDS, decades

# The settings of each row of Table 1 (lazy_feature.study.table1.ROWS) that differ from
# Section 2's. The CNN uses the hinge loss (Fig. 7 (b)'s caption); the paper states no CNN
# width: we take h = 64 channels. Fig. 7 (a)'s FC net on MNIST-PCA10 has width 100 and L = 5.
# An Adam run lasts a fixed number of epochs, ended earlier by the stopping criterion (every
# margin > 1): the paper gives no length, and the authors' Adam runs end at every margin > 1
# or at a wall-clock train_time. We take 1 000 epochs at the paper's scale and 300 in the
# quick configs, which their time budget allows.
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
# range, as the claims do (lazy_feature.study.claims): √h·α = 1e-3 and 1e4 at the paper's
# scale.
_REGIME_RANGES = dict(feature_range=(None, 0.1), lazy_range=(100, None))
_QUICK = dict(n_train=1000, n_test=2000)
_QUICK_SQRT_H_ALPHAS = (1e-2, 1.0, 1e3)
# A quick row has the two levels its verdict compares. The quick CNN has 8 channels and its
# lazy level is √h·α = 100, the largest that the direct form resolves in float32 at h = 8 (the
# precision rule takes its largest fan-in, 25·h): beyond it a run takes the difference form,
# whose evaluation costs about twice as much.
_CNN_QUICK_WIDTH = 8
_TABLE1_QUICK_SQRT_H_ALPHAS = {"fc": (1e-2, 1e3), "cnn": (1e-2, 1e2)}
# The L = 9 net costs some 4 times L = 3, and CIFAR10's 32×32×3 images (3 072 inputs; for
# the CNN, an epoch of n/32 mini-batches) several times Fashion-MNIST's: the quick configs
# of these rows train on n = 500 points to stay within their time budget.
_QUICK_HALF = dict(n_train=500, n_test=2000)
_QUICK_SIZES = {"fc_fashion_mnist": _QUICK_HALF, "cnn_cifar10_adam": _QUICK_HALF,
                "fc_cifar10": _QUICK_HALF}


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
                       depths=_TABLE1_DEPTHS.get(row, ()), sqrt_h_alphas=decades(-3, 4),
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
             f"{len(grid.seeds)} seeds. Where its data set is not on the machine the Table 1 "
             "report says \"data not found\" (no stand-in data set)." if quick else
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
# other (by row name: lazy_feature.study.table1.ROWS), each under <output_dir>/<row>, before
# writing the Table 1 report.
TABLES = {"table1": {row.name: TABLE1[f"table1_{row.name}"] for row in table1.ROWS},
          "table1_quick": {row.name: TABLE1_QUICK[f"table1_{row.name}_quick"]
                           for row in table1.ROWS}}


def fig6():
    """Fig. 6 (a-d): the FC net of Section 2 on binary MNIST, n = 10 000, 20 seeds: test
    error and ensembles vs √h·α and h, the frozen NTK (ntk_eval), the collapse, h·Var F.
      python -m pipelines.sweep --config=fig6 --output_dir=runs/fig6
    """
    return SweepConfig(base=dataclasses.replace(PAPER, dataset="mnist"),
                       widths=(30, 100, 300, 1000), sqrt_h_alphas=decades(-3, 5),
                       seeds=PAPER_SEEDS, ntk_max_test=10000)


def fig6ef():
    """Fig. 6 (e, f): the same on binary CIFAR10, n = 10 000, 20 seeds: test error and
    ensembles vs √h·α at h = 100 (e), h·Var F vs √h·α per width (f).
      python -m pipelines.sweep --config=fig6ef --output_dir=runs/fig6ef
    """
    return SweepConfig(base=dataclasses.replace(PAPER, dataset="cifar10"),
                       widths=(100, 300, 1000), sqrt_h_alphas=decades(-3, 5),
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


_FIG7C_VARIANTS: tuple[dict[str, Any], ...] = (
    {}, {"loss_beta": 10.0, "dynamics": "momentum", "tau": 1e-3, "tau_proportional_to_t": True})


def _fig7(row):
    """A panel of Fig. 7: its Table 1 row's setup over √h·α = 1e-3 … 1e5, 20 seeds."""
    return dataclasses.replace(_table1(row, quick=False), sqrt_h_alphas=decades(-3, 5),
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
    √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs with the NTK); on Fashion-MNIST where MNIST is
    not on the machine (`fallback`, said when it runs).
      python -m pipelines.sweep --config=fig6_quick --output_dir=runs/fig6_quick
    """
    return _quick_figure(fig6, widths=(30, 100), sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS,
                         seeds=(0, 1, 2), ntk_max_test=None)


def fig6ef_quick():
    """Fig. 6 (e, f), small: CIFAR10 at n = 1 000 (2 000 test points), h = 30 and 100,
    √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs); on Fashion-MNIST where CIFAR10 is not on the
    machine (`fallback`).
      python -m pipelines.sweep --config=fig6ef_quick --output_dir=runs/fig6ef_quick
    """
    return _quick_figure(fig6ef, widths=(30, 100), sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS,
                         seeds=(0, 1, 2))


def fig7a_quick():
    """Fig. 7 (a), small: MNIST-PCA10, L = 5, h = 100, n = 1 000 (2 000 test points),
    √h·α = 1e-2, 1, 1e3, 4 seeds (12 runs); on Fashion-MNIST's first 10 principal
    components where MNIST is not on the machine (`fallback`).
      python -m pipelines.sweep --config=fig7a_quick --output_dir=runs/fig7a_quick
    """
    return _quick_figure(fig7a, sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS, seeds=tuple(range(4)))


def fig7b_quick():
    """Fig. 7 (b), small: the CNN (h = 8) with the hinge loss and Adam, n = 1 000 (2 000
    test points), √h·α = 1e-2, 1, 1e2 (float32 throughout), 3 seeds (9 runs), Adam runs of
    300 epochs; on Fashion-MNIST where CIFAR10 is not on the machine (`fallback`).
      python -m pipelines.sweep --config=fig7b_quick --output_dir=runs/fig7b_quick
    """
    return _quick_figure(fig7b, widths=(_CNN_QUICK_WIDTH,), sqrt_h_alphas=(1e-2, 1.0, 1e2),
                         seeds=(0, 1, 2))


def fig7c_quick():
    """Fig. 7 (c), small: EMNIST letters, both setups, h = 100, n = 1 000 (2 000 test
    points), √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs); on Fashion-MNIST where EMNIST is not
    on the machine (`fallback`).
      python -m pipelines.sweep --config=fig7c_quick --output_dir=runs/fig7c_quick
    """
    return _quick_figure(fig7c, sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS, seeds=(0, 1, 2))


def fig7d_quick():
    """Fig. 7 (d), small: L = 3 and 9 on Fashion-MNIST, h = 100, n = 500 (2 000 test
    points; L = 9 is some 4 times L = 3's cost), √h·α = 1e-2, 1, 1e3, 3 seeds (18 runs).
      python -m pipelines.sweep --config=fig7d_quick --output_dir=runs/fig7d_quick
    """
    config = _quick_figure(fig7d, sqrt_h_alphas=_QUICK_SQRT_H_ALPHAS, seeds=(0, 1, 2))
    return dataclasses.replace(config, base=dataclasses.replace(config.base, **_QUICK_HALF))


def fig10_quick():
    """Fig. 10, small: L = 2, h = 30 and 100, √h·α = 1e-2 and 1e-1, n = 1 000 (2 000 test
    points), 3 seeds (12 runs).
      python -m pipelines.sweep --config=fig10_quick --output_dir=runs/fig10_quick
    """
    return _quick_figure(fig10, widths=(30, 100), sqrt_h_alphas=(1e-2, 1e-1), seeds=(0, 1, 2))


FIGURES = {make.__name__: make for make in (
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
