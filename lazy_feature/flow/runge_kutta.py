"""Embedded explicit Runge–Kutta pairs (Bogacki–Shampine 3(2), Dormand–Prince 5(4)) with
first-same-as-last reuse, and the local error control every error-controlled integrator shares.

Error control in the paper's own quantities: a trial step from w to w_new has an embedded
solution ŵ (a lower-order one, or w_new plus an error estimate), and is accepted when both
  α max_μ |f(w_new, x_μ) − f(ŵ, x_μ)| ≤ output_tol      (the local error of α·f, eq. 8's scale)
  ‖w_new − ŵ‖ / ‖w_new − w‖ ≤ direction_tol             (of the step's mean gradient, eq. 9's)
(eq. 8's max_dout, an accuracy bound of the Euler scheme, does not bound these steps: the
local error of α·f replaces it). ŵ is formed from w_new and a displacement, so in float32 an
error below the rounding of w reads as zero instead of as noise: the estimate resolves what
the weights can hold.
"""
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from lazy_feature.flow.integrators import (FlowState, Trial, evaluation_count, gradient_change,
                                          move)


class LocalErrorControl:
    """Acceptance and step size of an error-controlled method from its local error (module
    docstring), which goes as dt^order for α·f and dt^(order − 1) relative to the step for
    its mean gradient. Their normalized error e = max(output_ratio^(1/order),
    direction_ratio^(1/(order − 1))) is the factor by which dt overshoots the more demanding
    tolerance; the step is accepted when e ≤ 1.

    The next dt is a PI controller's (Gustafsson 1991; Hairer & Wanner, Solving ODEs II,
    IV.2): after an accepted step dt · SAFETY e^(−PI_CURRENT) e_prev^(PI_PREVIOUS), e_prev the
    last accepted step's e, which damps the oscillation of a plain dt · SAFETY/e between
    accepted and rejected steps where dt is limited by stability rather than accuracy; after
    a rejection dt · SAFETY/e, and no growth on the step that follows one. The factor is kept
    within [MIN_FACTOR, MAX_FACTOR], and dt below a trial's `max_dt` if it gives one; a
    non-finite step divides dt by 5. The controller's memory is (e_prev, 1 if the last trial
    was rejected), zero at the start.
    """
    SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 5.0
    PI_CURRENT, PI_PREVIOUS = 0.7, 0.4

    def initial_memory(self, point):  # pylint: disable=unused-argument
        return self._initial_control()

    @staticmethod
    def _initial_control():
        return (tf.zeros((), tf.float64), tf.zeros((), tf.float64))

    def _judge(self, problem, state, new, embedded, error_squared, step_squared, control):
        """(accepted, measures, new control memory) of the trial state `new` with embedded
        solution `embedded`; error_squared/step_squared: ‖w_new − ŵ‖² and ‖w_new − w‖² (any
        common scale); control: the controller's memory."""
        output_error = tf.cast(problem.output_change(new.outputs, problem.outputs(embedded)),
                               tf.float64)
        direction_error = tf.sqrt(tf.math.divide_no_nan(tf.cast(error_squared, tf.float64),
                                                        tf.cast(step_squared, tf.float64)))
        output_ratio = output_error / self.flow.output_tol
        direction_ratio = direction_error / self.flow.direction_tol
        dout = problem.output_change(new.outputs, state.outputs)
        dgrad = gradient_change(problem, state.grad, new.grad)
        normalized = tf.maximum(tf.pow(output_ratio, 1.0 / self.order),
                                tf.pow(direction_ratio, 1.0 / (self.order - 1)))
        ok = normalized <= 1.0
        previous, rejected = control
        control = (tf.where(ok, tf.maximum(normalized, 1e-4), previous),
                   tf.where(ok, tf.zeros_like(rejected), tf.ones_like(rejected)))
        return ok, dict(dout=dout, dgrad=dgrad, error=tf.maximum(output_ratio, direction_ratio),
                        output_ratio=output_ratio, direction_ratio=direction_ratio,
                        normalized_error=normalized, previous_error=previous,
                        after_rejection=rejected), control

    def next_dt(self, dt, accepted, measures):
        error, dout = measures["normalized_error"], tf.cast(measures["dout"], tf.float64)
        previous, error = measures["previous_error"], tf.maximum(error, 1e-4)
        plain = self.SAFETY / error
        pi = plain * tf.pow(error, 1.0 - self.PI_CURRENT) * tf.pow(previous, self.PI_PREVIOUS)
        factor = tf.where(accepted & (previous > 0), pi, plain)
        factor = tf.where(accepted & (measures["after_rejection"] > 0),
                          tf.minimum(factor, 1.0), factor)
        factor = tf.clip_by_value(factor, self.MIN_FACTOR, self.MAX_FACTOR)
        finite = tf.math.is_finite(measures["normalized_error"]) & tf.math.is_finite(dout)
        new_dt = dt * tf.where(finite, factor, self.MIN_FACTOR)
        if "max_dt" in measures:
            new_dt = tf.minimum(new_dt, measures["max_dt"])
        return new_dt


@dataclasses.dataclass(frozen=True)
class Tableau:
    """An explicit embedded Runge–Kutta pair with FSAL.

    a: the rows of stages 2..s (stage 1 is ∇L at the accepted point); the last row is the
      weights b of the solution, so its stage is ∇L at the new point, the next step's first.
    error: e = b − b̂ over all s stages, b̂ the embedded lower-order solution.
    order: the order of the embedded solution plus one, the power of dt of the local error
      estimate (the step-size controller takes its root).
    """
    a: tuple
    error: tuple
    order: int

    @property
    def evaluations(self):
        return len(self.a)

    @functools.cached_property
    def stability_boundary(self):
        """The largest x with |R(−y)| ≤ 1 on [0, x], R(z) = 1 + Σ_k z^k bᵀA^(k−1)𝟙 the
        stability polynomial of the solution: a step is stable on a decaying mode of rate λ
        while dt·λ ≤ x (2.51 for Bogacki–Shampine, 3.31 for Dormand–Prince)."""
        weights = np.array(self.a[-1])
        matrix = np.zeros((len(weights), len(weights)))
        for i, row in enumerate(self.a[:-1]):
            matrix[i + 1, :len(row)] = row
        coefficients, vector = [1.0], np.ones(len(weights))
        for _ in weights:
            coefficients.append(weights @ vector)
            vector = matrix @ vector
        y = np.linspace(0.0, 2.0 * len(weights), 200001)
        unstable = np.abs(np.polynomial.polynomial.polyval(-y, coefficients)) > 1 + 1e-12
        return float(y[np.argmax(unstable) - 1])

    @property
    def estimate_stages(self):
        """How many inner stages k_2 … k_(s−1) the solution or the error estimate weighs:
        the gradients a trial still holds when it forms ŵ (a stage that neither weighs is
        last read by a later stage's point)."""
        return sum(1 for b, e in zip(self.a[-1][1:], self.error[1:-1]) if b or e)


BOGACKI_SHAMPINE = Tableau(  # 3(2): 3 evaluations per step
    a=((1 / 2,), (0.0, 3 / 4), (2 / 9, 1 / 3, 4 / 9)),
    error=(2 / 9 - 7 / 24, 1 / 3 - 1 / 4, 4 / 9 - 1 / 3, -1 / 8),
    order=3)
DORMAND_PRINCE = Tableau(  # 5(4): 6 evaluations per step
    a=((1 / 5,), (3 / 40, 9 / 40), (44 / 45, -56 / 15, 32 / 9),
       (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
       (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
       (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)),
    error=(71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40),
    order=5)


class EmbeddedRungeKutta(LocalErrorControl):
    """An embedded explicit Runge–Kutta pair (`Tableau`) with FSAL and error control.

    A trial step costs the tableau's evaluations (stage 1 is the stored ∇L) and one forward
    pass at the embedded solution; it is accepted when its error ratio (the larger of the two
    local errors over their tolerances) is at most 1.
    """

    def __init__(self, tableau, flow):
        self.tableau, self.flow = tableau, flow
        self.order = tableau.order

    @property
    def vectors(self):
        """The P-sized vectors a trial keeps besides Euler's (`run.resources`): the stage
        gradients its solution or error estimate weighs besides k_1 = ∇L_i and the FSAL stage
        k_s = ∇L_(i+1), all held until ŵ is formed, and at the error estimate w_(n+1), ŵ,
        the error Σ_j e_j k_j and the step Σ_j b_j k_j."""
        return self.tableau.estimate_stages + 4

    def trial(self, problem, state, dt, memory):
        """The trial step and whether its error is within tolerance (`LocalErrorControl`)."""
        grads = [state.grad]
        for row in self.tableau.a:
            point = move(problem, state.point, dt, row, grads[:len(row)])
            outputs, grad = problem.evaluate(point)
            grads.append(grad)
        new = FlowState(point, outputs, grad)
        negated = tuple(-e for e in self.tableau.error)
        ok, measures, memory = self._judge(
            problem, state, new, move(problem, point, dt, negated, grads),
            problem.squared_norm(problem.combine(self.tableau.error, grads)),
            problem.squared_norm(problem.combine(self.tableau.a[-1], grads)), memory)
        return Trial(new, ok, measures, evaluation_count(self.tableau.evaluations), memory)

