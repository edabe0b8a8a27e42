"""Step-size control of the adaptive discretization of gradient flow (eqs. 8-9): `GradientFlow`.

A step w_{i+1} = w_i − dt ∇L_i is accepted only if
  eq. 8:  α max_μ |f(w_i, x_μ) − f(w_{i+1}, x_μ)| < max_dout   (0.1 in the paper),
  eq. 9:  ‖∇L_i − ∇L_{i+1}‖² / (‖∇L_i‖ ‖∇L_{i+1}‖) < max_dgrad (ε_∇ = 1e-4).
A rejected step leaves w_i as it was and shrinks dt; a step well inside both bounds grows
dt. That is the paper's Euler scheme; `integrator` names a higher-order alternative
(`registry`), whose local error is controlled in the same quantities, eq. 8's α·f and eq. 9's
gradient, by `output_tol` and `direction_tol`. The same control drives the network
(`network_flow`) and the frozen-kernel flow (`kernel.frozen`), so both integrate the same flow
with the same fidelity. Time t = Σ dt is the gradient-flow time of eq. 7's loss.
"""
import dataclasses

import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.flow import registry


@dataclasses.dataclass(frozen=True)
class GradientFlow:
    """Thresholds and dt policy of the adaptive gradient flow, and its integrator.

    Attributes:
      max_dout: the bound of eq. 8 on α·max|Δf| over the training set in one step.
      max_dgrad: ε_∇, the bound of eq. 9 on the relative change of the gradient.
      dt0: the first time step tried.
      grow: dt is multiplied by this after a step inside `well_inside` of both bounds.
      shrink: dt is multiplied by this after a rejected step.
      well_inside: the fraction of each bound below which a step counts as easy.
      integrator: a name of `registry.INTEGRATORS`: euler is the paper's scheme (eqs. 8-9
        and the dt policy above); the others use dt0 and set dt from their error estimate.
      jumps: the Euler scheme accepts a step across a jump of ∇L (`integrators.Euler`);
        `TrainConfig.flow` sets it for networks whose activation has a kink (ReLU).
      output_tol: an error-controlled step's bound on the local error of α·f at the training
        points (absolute, eq. 8's scale); None: the integrator's registered default.
      direction_tol: its bound on the relative local error of its mean gradient
        ‖Δw − Δŵ‖/‖Δw‖ (eq. 9's scale); None: the integrator's registered default.
      stiff_output_tol: a switching integrator's output_tol once in its stiff phase (with
        that method's direction_tol, off); None: its registered stiff_factor times
        output_tol. Other integrators have none (it resolves to None).
      landing_tol: how far past the stopping criterion (every margin F·y > 1) the flow may end: the
        step that crosses it is re-taken shorter until the smallest margin is at most
        1 + landing_tol (`integrators.landing`); 0 ends at the first accepted point past it,
        however far (the paper's rule, whose small Euler steps land within ~1e-3).
    """
    max_dout: float = 0.1
    max_dgrad: float = 1e-4
    dt0: float = 1.0
    grow: float = 1.1
    shrink: float = 0.5
    well_inside: float = 0.5
    integrator: str = registry.EULER
    output_tol: float | None = None
    direction_tol: float | None = None
    stiff_output_tol: float | None = None
    jumps: bool = False
    landing_tol: float = 1e-4

    def __post_init__(self) -> None:
        if not (self.max_dout > 0 and self.max_dgrad > 0 and self.dt0 > 0):
            raise ConfigError("max_dout, max_dgrad and dt0 must be > 0")
        if not self.landing_tol >= 0:
            raise ConfigError(f"landing_tol must be >= 0, got {self.landing_tol}")
        registry.entry(self.integrator)  # a registered name
        output_tol, direction_tol = registry.tolerances(self.integrator, self.output_tol,
                                                        self.direction_tol)
        object.__setattr__(self, "output_tol", output_tol)
        object.__setattr__(self, "direction_tol", direction_tol)
        object.__setattr__(self, "stiff_output_tol", registry.stiff_output_tol(
            self.integrator, self.output_tol, self.stiff_output_tol))
        if not all(tol is None or tol > 0
                   for tol in (self.output_tol, self.direction_tol, self.stiff_output_tol)):
            raise ConfigError("output_tol, direction_tol and stiff_output_tol must be > 0")
        if not (0 < self.shrink < 1 <= self.grow and 0 < self.well_inside <= 1):
            raise ConfigError("need 0 < shrink < 1 <= grow and 0 < well_inside <= 1")

    def accept(self, dout: tf.Tensor, dgrad: tf.Tensor) -> tf.Tensor:
        """Whether a trial step obeys eqs. 8 and 9 (NaN or inf never does)."""
        return tf.logical_and(dout < self.max_dout, dgrad < self.max_dgrad)

    def next_dt(self, dt: tf.Tensor, accepted: tf.Tensor, dout: tf.Tensor, dgrad: tf.Tensor
                ) -> tf.Tensor:
        """The next time step: shrunk after a rejection, grown after an easy step."""
        easy = tf.logical_and(dout < self.well_inside * self.max_dout,
                              dgrad < self.well_inside * self.max_dgrad)
        grown = tf.where(easy, dt * self.grow, dt)
        return tf.where(accepted, grown, dt * self.shrink)
