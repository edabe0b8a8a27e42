"""What the default integrator, AUTO, takes for a gradient-flow run (`choose`).

auto rests on a benchmark run network by network (benchmarks/results/auto_benchmark.md:
binary Fashion-MNIST, float64, each run at its own stop against a reference flow whose own
error is well below Euler's). For each `Family` of networks it was run on, and each band of
√h·α, it takes the integrator that ended as close to the reference as the paper's Euler
scheme (eqs. 8-9) in the fewest gradient evaluations, and Euler where none did. A network
outside every family gets Euler too: a fast integrator's fidelity is not assumed where it was
not shown. `Choice.why` names the evidence a choice rests on; config.json records it.
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
    """Below `below` (in √h·α, from the previous band's bound): `integrator`, as `evidence`
    (the benchmark's points that show it) says."""
    below: float
    integrator: str
    evidence: str


@dataclasses.dataclass(frozen=True)
class Family:
    """Networks benchmarked alike: those `members` accepts, choosing by `bands` (ascending)."""
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


_FIDELITY = "at Euler's fidelity in"
FAMILIES = (
    Family("FC, L = 2-3, softplus β = 5", _fc, (
        Band(10.0, "bogacki_shampine_etdrk4", f"{_FIDELITY} about a third of its evaluations "
             "or less at √h·α = 1e-4, 1e-3, 1e-2 and 1, L = 2 and 3 (dormand_prince, the "
             "choice below 1e-2 before, missed it at L = 2)"),
        Band(math.inf, registry.ETDRK4, f"{_FIDELITY} about a third of its evaluations from "
             "√h·α = 10 to 1e6 (L = 3) and at 1e4 (L = 2)"))),
    Family("FC, L = 4-9, softplus β = 5", lambda n: _fc(n, depths=range(4, 10)), (
        Band(1e-2, "bogacki_shampine", f"{_FIDELITY} under half its evaluations at "
             "√h·α = 1e-4, L = 5 and 9, where bogacki_shampine_etdrk4 and (at L = 9) "
             "dormand_prince missed it"),
        Band(10.0, "bogacki_shampine_etdrk4", f"{_FIDELITY} under a third of its evaluations "
             "at √h·α = 1e-2 and 1, L = 5 and 9"),
        Band(math.inf, registry.ETDRK4, f"{_FIDELITY} under a third of its evaluations at "
             "√h·α = 1e4, L = 5 and 9"))),
    Family("FC, L = 3, softplus β in (5, 10]", lambda n: _fc(n, beta=10.0, depths=(3,)), (
        Band(10.0, "bogacki_shampine_etdrk4", f"{_FIDELITY} under a third of its evaluations "
             "at √h·α = 1e-4, 1e-2 and 1, β = 10, where dormand_prince and bogacki_shampine "
             "missed it at 1e-4"),
        Band(math.inf, registry.ETDRK4, f"{_FIDELITY} about a third of its evaluations at "
             "√h·α = 1e4, β = 10"))),
    Family("FC, L = 3, with biases", lambda n: _fc(n, biased=True, depths=(3,)), (
        Band(1.0, registry.EULER, "no other integrator reached Euler's fidelity at "
             "√h·α = 1e-4 and 1e-2, β_b = 1"),
        Band(10.0, "bogacki_shampine_etdrk4", f"{_FIDELITY} under a third of its evaluations "
             "at √h·α = 1, β_b = 1"),
        Band(math.inf, registry.ETDRK4, f"{_FIDELITY} under a third of its evaluations at "
             "√h·α = 1e4, β_b = 1"))),
    Family("FC, L = 3, uncentered (Appendix I)",
           lambda n: _fc(n, centered=False, depths=(3,)), (
        Band(10.0, "bogacki_shampine_etdrk4", f"{_FIDELITY} about a third of its evaluations "
             "or less at √h·α = 1e-4, 1e-2 and 1"),
        Band(math.inf, "bogacki_shampine_rkc", f"{_FIDELITY} under a third of its evaluations "
             "at √h·α = 1e4, where etdrk4 missed it (the uncentered lazy flow barely moves F: "
             "Euler's own deviation is tiny)"))),
    Family("the CNN", _image_net("cnn"), (
        Band(1.0, registry.EULER, "not compared below √h·α = 1: at 1e-2 (h = 4) Euler itself "
             "did not converge within the benchmark's time"),
        Band(10.0, "bogacki_shampine_etdrk4", f"{_FIDELITY} under a third of its evaluations "
             "at √h·α = 1, h = 4"),
        Band(math.inf, registry.ETDRK4, f"{_FIDELITY} under a third of its evaluations at "
             "√h·α = 1e4, h = 4"))),
    Family("the Wide-ResNet", _image_net("wide_resnet"), (
        Band(math.inf, registry.EULER, "no other integrator reached Euler's fidelity at "
             "√h·α = 1 and 1e4 (10 × 1, h = k = 1); not compared below 1"),)),
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
        return Choice(registry.EULER, "auto was not benchmarked on this network (it was on: "
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
    return Choice(band.integrator, f"{family.name}, {where}: {band.evidence} ({BENCHMARK})")
