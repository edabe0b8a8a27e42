"""What the default integrator, AUTO, takes for a gradient-flow run (`choose`).

auto was measured network by network (benchmarks/results/auto_benchmark.md: binary
Fashion-MNIST, n = 500, h = 64, seed 0, float64; each run at its own stop against a reference
flow whose own error is well below Euler's). For each measured `Family` and band of √h·α it
takes the integrator that ended as close to the reference as the paper's Euler scheme
(eqs. 8-9) in the fewest gradient evaluations, and Euler where none did. A network outside
every measured family gets Euler too: a fast integrator's fidelity is not assumed where it was
not shown. `Choice.why` names the measurement a choice rests on; config.json records it.
"""
import dataclasses
import math
from collections.abc import Callable

from lazy_feature.flow import registry
from lazy_feature.model.activations import SOFTPLUS_BETA

BENCHMARK = "benchmarks/results/auto_benchmark.md"


@dataclasses.dataclass(frozen=True)
class Network:
    """What of a run auto's choice depends on (`TrainConfig.network`): the architecture and
    the ways the FC net was varied (depth L, softplus β, biases, centering, eq. 6)."""
    architecture: str = "fc"
    depth: int = 3
    activation: str = "softplus"
    activation_beta: float = SOFTPLUS_BETA
    biased: bool = False
    centered: bool = True
    kinked: bool = False


@dataclasses.dataclass(frozen=True)
class Band:
    """Below `below` (in √h·α, from the previous band's bound): `integrator`, as `measured`."""
    below: float
    integrator: str
    measured: str


@dataclasses.dataclass(frozen=True)
class Family:
    """Networks measured alike: those `members` accepts, choosing by `bands` (ascending)."""
    name: str
    members: Callable[[Network], bool]
    bands: tuple[Band, ...]


@dataclasses.dataclass(frozen=True)
class Choice:
    """auto's integrator for a run and why (recorded in config.json as integrator_choice)."""
    integrator: str
    why: str


def _fc(network, depths=range(2, 4), beta=SOFTPLUS_BETA, biased=False, centered=True):
    """A softplus FC net of one of `depths`, β from the paper's to `beta`, biased and
    centered as given."""
    return (network.architecture == "fc" and network.activation == "softplus"
            and network.depth in depths and SOFTPLUS_BETA <= network.activation_beta <= beta
            and network.biased == biased and network.centered == centered)


def _image_net(name):
    """Whether a network is the architecture `name` with the paper's softplus, centered."""
    def members(network):
        return (network.architecture == name and network.activation == "softplus"
                and network.activation_beta == SOFTPLUS_BETA and network.centered)
    return members


FAMILIES = (
    Family("FC, L = 2-3, softplus β = 5", _fc, (
        Band(10.0, "bogacki_shampine_etdrk4", "×0.35, ×0.24, ×0.28 and ×0.30 of Euler's "
             "evaluations at √h·α = 1e-4, 1e-3, 1e-2 and 1 (L = 3), deviating 0.31, 0.39, "
             "0.29 and 0.20 of Euler's; ×0.25, ×0.24, ×0.25 and ×0.29 at L = 2, deviating "
             "0.73, 0.67, 0.24 and 0.25 of Euler's"),
        Band(math.inf, registry.ETDRK4, "×0.32-0.33 of Euler's evaluations from √h·α = 10 to "
             "1e6 (L = 3), deviating 0.20-0.70 of Euler's; ×0.34 at 1e4, L = 2, deviating "
             "0.28"))),
    Family("FC, L = 4-9, softplus β = 5", lambda n: _fc(n, depths=range(4, 10)), (
        Band(1e-2, "bogacki_shampine", "×0.43 and ×0.18 of Euler's evaluations at "
             "√h·α = 1e-4, L = 5 and 9, deviating 0.41 and 0.36 of Euler's "
             "(bogacki_shampine_etdrk4 deviated 1.1 and 2.4 times Euler's, dormand_prince "
             "3.3 times at L = 9)"),
        Band(10.0, "bogacki_shampine_etdrk4", "×0.24-0.32 of Euler's evaluations at "
             "√h·α = 1e-2 and 1, L = 5 and 9, deviating 0.24-0.90 of Euler's"),
        Band(math.inf, registry.ETDRK4, "×0.26 and ×0.16 of Euler's evaluations at "
             "√h·α = 1e4, L = 5 and 9, deviating 0.18 and 0.36 of Euler's"))),
    Family("FC, L = 3, softplus β in (5, 10]", lambda n: _fc(n, beta=10.0, depths=(3,)), (
        Band(10.0, "bogacki_shampine_etdrk4", "β = 10: ×0.25-0.29 of Euler's evaluations at "
             "√h·α = 1e-4, 1e-2 and 1, deviating 0.15-0.75 of Euler's (dormand_prince and "
             "bogacki_shampine deviated 9 times Euler's at 1e-4)"),
        Band(math.inf, registry.ETDRK4, "β = 10: ×0.34 of Euler's evaluations at √h·α = 1e4, "
             "deviating 0.22 of Euler's"))),
    Family("FC, L = 3, with biases", lambda n: _fc(n, biased=True, depths=(3,)), (
        Band(1.0, registry.EULER, "β_b = 1: no other integrator came as close as Euler at "
             "√h·α = 1e-4 and 1e-2 (the closest, bogacki_shampine_etdrk4, 2.4e-4 and 5.2e-4 "
             "against 2.3e-4 and 3.3e-4)"),
        Band(10.0, "bogacki_shampine_etdrk4", "β_b = 1: ×0.32 of Euler's evaluations at "
             "√h·α = 1, deviating 0.31 of Euler's"),
        Band(math.inf, registry.ETDRK4, "β_b = 1: ×0.30 of Euler's evaluations at "
             "√h·α = 1e4, deviating 0.16 of Euler's"))),
    Family("FC, L = 3, uncentered (Appendix I)",
           lambda n: _fc(n, centered=False, depths=(3,)), (
        Band(10.0, "bogacki_shampine_etdrk4", "×0.31, ×0.25 and ×0.29 of Euler's evaluations "
             "at √h·α = 1e-4, 1e-2 and 1, deviating 0.22, 0.63 and 0.11 of Euler's"),
        Band(math.inf, "bogacki_shampine_rkc", "×0.23 of Euler's evaluations at √h·α = 1e4, "
             "deviating 2.3e-6 against Euler's 6.7e-6 (etdrk4: 9.3e-5)"))),
    Family("the CNN", _image_net("cnn"), (
        Band(1.0, registry.EULER, "not measured below √h·α = 1 (at 1e-2, h = 4, n = 200, the "
             "paper's scheme itself had not converged after 178 000 steps)"),
        Band(10.0, "bogacki_shampine_etdrk4", "h = 4: ×0.17 of Euler's evaluations at "
             "√h·α = 1, deviating 0.15 of Euler's"),
        Band(math.inf, registry.ETDRK4, "h = 4: ×0.12 of Euler's evaluations at √h·α = 1e4, "
             "deviating 0.76 of Euler's"))),
    Family("the Wide-ResNet", _image_net("wide_resnet"), (
        Band(math.inf, registry.EULER, "10 × 1 (h = k = 1), n = 20: no other integrator came "
             "as close as Euler at √h·α = 1 (bogacki_shampine_etdrk4 7.7e-4 against 6.6e-4) "
             "and 1e4 (etdrk4 2.3e-4, rkc 2.1e-4, bogacki_shampine_rkc 2.8e-4, "
             "bogacki_shampine_etdrk4 2.9e-4 against 1.6e-4); not measured below 1"),)),
)


def _level(value):
    """1e-2, 1, 10, 1e4: a band's bound as the benchmark writes it."""
    if 1 <= value <= 10:
        return f"{value:g}"
    mantissa, exponent = f"{value:.0e}".split("e")
    return f"{mantissa}e{int(exponent)}"


def choose(sqrt_h_alpha, network):
    """auto's `Choice` for a gradient-flow run of `network` at √h·α, at the paper's max_dout
    and max_dgrad (`TrainConfig.resolved`)."""
    if network.kinked:
        crosses = next(name for name, registered in registry.INTEGRATORS.items()
                       if registered.kinks)
        return Choice(crosses, "a kinked activation (ReLU): only Euler's jump rule crosses "
                               "the jumps of ∇L")
    family = next((family for family in FAMILIES if family.members(network)), None)
    if family is None:
        return Choice(registry.EULER, "auto was not measured on this network (it was on: "
                      + "; ".join(family.name for family in FAMILIES) + f"; {BENCHMARK}): "
                      "the paper's scheme; --integrator names another")
    lower = 0.0
    for band in family.bands:
        if sqrt_h_alpha < band.below:
            break
        lower = band.below
    if math.isinf(band.below):
        where = "every √h·α" if lower == 0 else f"√h·α ≥ {_level(lower)}"
    else:
        where = (f"√h·α < {_level(band.below)}" if lower == 0
                 else f"{_level(lower)} ≤ √h·α < {_level(band.below)}")
    return Choice(band.integrator, f"{family.name}, {where}: {band.measured} ({BENCHMARK})")
