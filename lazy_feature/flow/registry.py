"""The integrators of gradient flow, each registered once with its class, default tolerances and
capabilities; `get` builds the one a `GradientFlow` names.

Everything that names an integrator asks here: `GradientFlow` and `TrainConfig` check names and
resolve tolerances (`tolerances`, `stiff_output_tol`; `auto.choose` for AUTO), the
frozen-kernel flow takes a function-space substitute for those
that need weight coordinates (`Integrator.function_space`), `run.resources` counts the vectors
an integrator keeps (its class's `vectors`), and the stage flags list the names and summaries.
Every integrator runs in float32 as in float64: their error estimates are displacements from
the accepted point, so rounding of w never reads as error. The figures behind the defaults:
docs/integrators.md.
"""
import dataclasses

from lazy_feature.errors import ConfigError
from lazy_feature.flow.exponential import DeflatedExponential
from lazy_feature.flow.integrators import Euler
from lazy_feature.flow.rkc import RungeKuttaChebyshev
from lazy_feature.flow.runge_kutta import (BOGACKI_SHAMPINE, DORMAND_PRINCE, EmbeddedRungeKutta,
                                           Tableau)
from lazy_feature.flow.switching import StiffnessSwitching

# The integrator name `TrainConfig` resolves per run (`auto.choose`): its default.
AUTO = "auto"


@dataclasses.dataclass(frozen=True)
class Integrator:
    """One integrator of gradient flow ẇ = −∇L (eq. 7).

    name: its name in TrainConfig.integrator, config.json and --integrator.
    summary: what it is, for --integrator's help.
    tolerances: its default (output_tol, direction_tol), about the loosest that keep its runs
      as close to the reference flow as the paper's Euler scheme's where `auto.choose`
      takes it; (None, None) for euler, whose steps obey eqs. 8-9 instead. A direction_tol of
      1e3 is off (RKC's and etdrk4's error is held by α·f's alone).
    pair, stiff: a switching integrator's Runge–Kutta pair and the integrator it hands the
      stiff flow to (`switching.StiffnessSwitching`); None for the others.
    stiff_factor: a switching integrator's stiff_output_tol per unit of its output_tol.
    kinks: whether it crosses the jumps of ∇L of a kinked activation (ReLU): Euler's jump
      rule (`integrators.Euler`); `auto.choose` takes it for such networks.
    function_space: the integrator that takes its flow where points have no weight
      coordinates (the frozen-kernel flow, in function space), with its RKC at
      FUNCTION_SPACE_RKC_TOL; None: itself.
    method: its class, built on a `GradientFlow`; tableau: a Runge–Kutta pair's
      (`runge_kutta.EmbeddedRungeKutta`). A switching integrator has neither: `get` builds
      it from its pair and stiff partner.
    """
    name: str
    summary: str
    method: type | None = None
    tableau: Tableau | None = None
    tolerances: tuple = (None, None)
    pair: str | None = None
    stiff: str | None = None
    stiff_factor: float | None = None
    kinks: bool = False
    function_space: str | None = None

    @property
    def switching(self):
        return self.stiff is not None


EULER = "euler"
RKC = "rkc"
ETDRK4 = "etdrk4"
_BOGACKI_SHAMPINE = "bogacki_shampine"
_DORMAND_PRINCE = "dormand_prince"
_BOGACKI_SHAMPINE_RKC = "bogacki_shampine_rkc"
_BOGACKI_SHAMPINE_ETDRK4 = "bogacki_shampine_etdrk4"
_SWITCHING_RKC_FACTOR = 20.0  # the RKC phase's output_tol per unit of the pair's
_SWITCHING_ETDRK4_FACTOR = 6.0  # the etdrk4 phase's: 3e-3 for the pair's 5e-4

INTEGRATORS = {entry.name: entry for entry in (
    Integrator(EULER, "the paper's scheme, eqs. 8-9", method=Euler, kinks=True),
    Integrator(_BOGACKI_SHAMPINE, "3(2) embedded Runge-Kutta pair with error control",
               tableau=BOGACKI_SHAMPINE, tolerances=(1e-3, 1e-2)),
    Integrator(_DORMAND_PRINCE, "5(4) embedded Runge-Kutta pair with error control",
               tableau=DORMAND_PRINCE, tolerances=(1e-3, 1e-2)),
    Integrator(RKC, "stabilized second-order Runge-Kutta-Chebyshev for stiff (lazy) flows",
               method=RungeKuttaChebyshev, tolerances=(1e-2, 1e3)),
    Integrator(_BOGACKI_SHAMPINE_RKC, "the pair until stability holds its steps, then rkc",
               tolerances=(5e-4, 5e-3), pair=_BOGACKI_SHAMPINE, stiff=RKC,
               stiff_factor=_SWITCHING_RKC_FACTOR),
    Integrator("dormand_prince_rkc", "the pair until stability holds its steps, then rkc",
               tolerances=(1e-3, 1e-2), pair=_DORMAND_PRINCE, stiff=RKC,
               stiff_factor=_SWITCHING_RKC_FACTOR),
    Integrator(ETDRK4, "fourth-order exponential Runge-Kutta with the Hessian's few stiff "
               "directions integrated exactly", method=DeflatedExponential,
               tolerances=(3e-3, 1e3), function_space=RKC),
    Integrator(_BOGACKI_SHAMPINE_ETDRK4, "the pair, then etdrk4", tolerances=(5e-4, 5e-3),
               pair=_BOGACKI_SHAMPINE, stiff=ETDRK4, stiff_factor=_SWITCHING_ETDRK4_FACTOR,
               function_space=_BOGACKI_SHAMPINE_RKC),
)}

# The output_tol of the RKC that a substitute runs in function space (`in_function_space`),
# tighter than RKC's own: there the frozen-kernel flow keeps Euler's fidelity
# (docs/integrators.md).
FUNCTION_SPACE_RKC_TOL = 3e-3

def entry(name):
    """The registered integrator `name`; ConfigError naming the choices if there is none."""
    if name not in INTEGRATORS:
        raise ConfigError(f"unknown integrator {name!r}: choose one of "
                          f"{', '.join(INTEGRATORS)}")
    return INTEGRATORS[name]


def tolerances(integrator, output_tol=None, direction_tol=None):
    """(output_tol, direction_tol) of `integrator`: those given, the unset ones (None) from
    its registered defaults (None for euler, which takes none)."""
    return tuple(default if given is None else given
                 for given, default in zip((output_tol, direction_tol),
                                           INTEGRATORS[integrator].tolerances))


def stiff_output_tol(integrator, output_tol, given=None):
    """The output_tol of a switching integrator's stiff phase: `given`, or its stiff_factor
    times its (resolved) output_tol; None for the other integrators, which have no such
    phase."""
    registered = INTEGRATORS[integrator]
    if not registered.switching:
        return None
    return registered.stiff_factor * output_tol if given is None else given


def in_function_space(flow):
    """`flow` with its integrator replaced by its function-space substitute
    (`Integrator.function_space`: RKC, or a pair switching to RKC) at the substitute's own
    tolerances but for its RKC's output_tol, FUNCTION_SPACE_RKC_TOL; or `flow` itself."""
    substitute = INTEGRATORS[flow.integrator].function_space
    if substitute is None:
        return flow
    if substitute == RKC:
        return dataclasses.replace(flow, integrator=RKC, output_tol=FUNCTION_SPACE_RKC_TOL,
                                   direction_tol=None, stiff_output_tol=None)
    return dataclasses.replace(flow, integrator=substitute, output_tol=None,
                               direction_tol=None, stiff_output_tol=FUNCTION_SPACE_RKC_TOL)


def get(flow):
    """The integrator a `GradientFlow` names (flow.integrator), built on its settings."""
    registered = INTEGRATORS[flow.integrator]
    if registered.switching:
        stiff_flow = dataclasses.replace(flow, integrator=registered.stiff, direction_tol=None,
                                         output_tol=flow.stiff_output_tol)
        return StiffnessSwitching(
            EmbeddedRungeKutta(INTEGRATORS[registered.pair].tableau, flow),
            RungeKuttaChebyshev(dataclasses.replace(stiff_flow, integrator=RKC)),
            None if registered.stiff == RKC else get(stiff_flow))
    if registered.tableau is not None:
        return EmbeddedRungeKutta(registered.tableau, flow)
    return registered.method(flow)

