"""Continuous momentum (Section 7, Figs. 7 (c) and 13): τ v̇ = −v − ∇L, ẇ = v, stepped under
the paper's accept rule (eqs. 8-9) by the Euler scheme: `ContinuousMomentum` (its settings) and
`MomentumDynamics` (the α-model trained by it).
"""
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.flow import registry
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.interface import Slot
from lazy_feature.flow.network_flow import GradientFlowDynamics, NetworkFlow

if TYPE_CHECKING:
    from lazy_feature.model.alpha_model import AlphaModel


@dataclasses.dataclass(frozen=True)
class ContinuousMomentum:
    """Continuous momentum τ v̇ = −v − ∇L, ẇ = v, with the time constant τ = `tau`, or
    τ = tau·t when `proportional_to_t`; v starts at 0, and τ = 0 is gradient flow (v = −∇L at
    once).

    The authors' definition (github.com/mariogeiger/feature_lazy, dynamics.py,
    `ContinuousMomentum`: "d/dt velocity = −1/tau (velocity + grad), d/dt parameters =
    velocity", or −μ/t (velocity + grad)), their μ = 1/tau the EMNIST setup of Fig. 7 (c).

    Stepped as the authors do: over a step dt with ∇L frozen at the accepted point, v is
    integrated exactly, v ← x v − (1 − x) ∇L with x = `decay(t, dt)`, then w ← w + dt v. At
    τ = 0 (x = 0) this is the Euler step w − dt ∇L of gradient flow, bit for bit; as τ → 0
    it tends to it. The step's only errors come from ∇L changing along it and from w moving
    with the step's final v; eqs. 8 and 9 bound exactly these (α max|Δf| over the step, the
    relative change of ∇L between accepted points), so the paper's accept rule carries over
    to the augmented state (w, v) unchanged, and t = Σ dt is the time of this ODE.
    """
    tau: float = 0.0
    proportional_to_t: bool = False

    def __post_init__(self) -> None:
        if not self.tau >= 0:
            raise ConfigError(f"tau must be >= 0 (0 = gradient flow), got {self.tau}")

    def decay(self, t: float | tf.Tensor, dt: float | tf.Tensor) -> tf.Tensor:
        """x = exp(−dt/τ) for a constant τ, (t/(t + dt))^(1/tau) for τ = tau·t (float64);
        0 when τ = 0."""
        if self.tau == 0:
            return tf.constant(0.0, tf.float64)
        t, dt = _float64(t), _float64(dt)
        if self.proportional_to_t:
            return tf.pow(t / (t + dt), 1.0 / self.tau)
        return tf.exp(-dt / self.tau)


def _float64(value: float | tf.Tensor) -> tf.Tensor:
    """A number or tensor as a float64 tensor (a Python float is never rounded to float32)."""
    return tf.cast(value, tf.float64) if hasattr(value, "dtype") else tf.constant(value,
                                                                                  tf.float64)


class MomentumFlow(NetworkFlow):
    """Continuous momentum on the network for the Euler integrator: a point is w's tensors
    followed by the velocity v's, the gradient ∇L (of w).

    A move from the accepted point at time t integrates v exactly with ∇L frozen, then moves
    w with the new v; eqs. 8-9 then judge the trial as for gradient flow.
    """

    def __init__(self, model: "AlphaModel", x: tf.Tensor, momentum: ContinuousMomentum
                 ) -> None:
        super().__init__(model, x)
        self.momentum = momentum

    def linear_combination(self, coefficients: Sequence[float | tf.Tensor],
                           points: Sequence[Sequence[tf.Tensor]], dt: tf.Tensor,
                           grad_coefficients: Sequence[float | tf.Tensor],
                           grads: Sequence[Sequence[tf.Tensor]]) -> list[tf.Tensor]:
        """Euler's move from one point (`integrators.move`), the only one momentum takes."""
        if tuple(coefficients) != (1.0,) or len(points) != 1:
            raise ValueError("continuous momentum is stepped by the Euler scheme only")
        point, n = points[0], len(self.weights)
        decay = tf.cast(self.momentum.decay(self.model.t, dt), self.model.dtype)
        dt = tf.cast(dt, self.model.dtype)
        velocity = [decay * v - (1.0 - decay) * g
                    for v, g in zip(point[n:], self.combine(grad_coefficients, grads))]
        return [w + dt * v for w, v in zip(point[:n], velocity)] + velocity


@keras.saving.register_keras_serializable(package="lazy_feature")
class MomentumDynamics(GradientFlowDynamics):
    """The α-model trained by continuous `momentum` (`ContinuousMomentum`) under `flow`'s
    accept rule and dt policy, which must name the Euler scheme. Its state is gradient
    flow's and the velocity v (`velocity`), starting at rest."""
    # v, and the copy of it a rejected step goes back to.
    vectors = 2

    def __init__(self, flow: GradientFlow = GradientFlow(),
                 momentum: ContinuousMomentum = ContinuousMomentum()) -> None:
        if flow.integrator != registry.EULER:
            raise ConfigError(f"continuous momentum is stepped by the {registry.EULER} "
                              "integrator, without adam")
        super().__init__(flow)
        self.momentum = momentum

    def get_config(self) -> dict[str, Any]:
        return dict(flow=dataclasses.asdict(self.flow),
                    momentum=dataclasses.asdict(self.momentum))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "MomentumDynamics":
        return cls(GradientFlow(**config["flow"]), ContinuousMomentum(**config["momentum"]))

    def variables(self, weights: Sequence[keras.Variable]) -> dict[str, list[Slot] | Slot]:
        return dict(super().variables(weights),
                    velocity=[Slot(f"velocity_{i}", w.shape, w.dtype)
                              for i, w in enumerate(weights)])

    def point(self, model: "AlphaModel") -> list[keras.Variable]:
        return model.network.trainable_weights + model.dynamics_state["velocity"]

    def problem(self, model: "AlphaModel", x: tf.Tensor) -> MomentumFlow:
        return MomentumFlow(model, x, self.momentum)
