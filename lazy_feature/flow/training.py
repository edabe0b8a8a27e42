"""The α-model's training dynamics, each registered once (`DYNAMICS`): its name
(TrainConfig.dynamics, --dynamics), its class (a `interface.Dynamics`), the settings only it
takes, and the integrators that may step it. `TrainConfig` checks and builds a run's dynamics
here, `run.resources` asks the built one what it keeps, the stage flags list the names.
"""
import dataclasses

from lazy_feature.flow import registry
from lazy_feature.flow.adam import AdamDynamics
from lazy_feature.flow.momentum import MomentumDynamics
from lazy_feature.flow.network_flow import GradientFlowDynamics


@dataclasses.dataclass(frozen=True)
class Kind:
    """One training dynamics.

    name: its name in TrainConfig.dynamics and --dynamics.
    summary: what it is, for --dynamics's help.
    method: its class, built on the run's `GradientFlow` and its own settings (if any).
    settings: the TrainConfig fields only it takes.
    integrators: the integrators a run of it may name: None for any.
    flow_steps: whether its steps are the gradient flow's (eqs. 8-9 and the tolerances); a
      dynamics that steps itself takes none of the flow's step settings (its recorded
      integrator is then Euler, whose state slots it keeps).
    """
    name: str
    summary: str
    method: type
    settings: tuple = ()
    integrators: tuple | None = None
    flow_steps: bool = True


GRADIENT_FLOW = "gradient_flow"
MOMENTUM = "momentum"
ADAM = "adam"

DYNAMICS = {kind.name: kind for kind in (
    Kind(GRADIENT_FLOW, "eq. 7, the default", GradientFlowDynamics),
    Kind(ADAM, "mini-batches", AdamDynamics,
         settings=("batch_size", "learning_rate", "epochs"), integrators=(registry.EULER,),
         flow_steps=False),
    Kind(MOMENTUM, "continuous momentum with time constant --tau", MomentumDynamics,
         settings=("tau", "tau_proportional_to_t"), integrators=(registry.EULER,)),
)}
