"""Integrators of gradient flow ẇ = −∇L (eq. 7): the paper's adaptive Euler scheme (eqs. 8-9)
and embedded explicit Runge–Kutta pairs with first-same-as-last (FSAL) reuse.

One abstraction drives both flows of the package: the network (`AlphaModel.train_step`) and
the frozen-kernel dynamics (`ntk.frozen_kernel_dynamics`). An integrator takes one *trial
step* of a flow problem from an accepted `FlowState` and says whether to accept it; the
caller keeps or restores its state (Keras variables, or a tf.while_loop's tensors) and asks
the integrator for the next dt. A problem provides:

  evaluate(point) -> (outputs, grad)  one gradient evaluation: the training outputs and ∇L
  outputs(point) -> outputs           the training outputs alone (a forward pass)
  move(point, dt, coefs, grads)       point − dt Σ_j coefs_j grads_j
  combine(coefs, grads)               Σ_j coefs_j grads_j
  difference(g1, g2), squared_norm(g) gradients in weight space (eq. 9's norm)
  output_change(o1, o2)               α max_μ |f_1 − f_2| over the training set (eq. 8's scale)

Error control of the Runge–Kutta pairs, in the paper's own quantities: a trial step from w
to w_new has the embedded lower-order solution ŵ, and is accepted when both
  α max_μ |f(w_new, x_μ) − f(ŵ, x_μ)| ≤ output_tol      (the local error of α·f, eq. 8's scale)
  ‖w_new − ŵ‖ / ‖w_new − w‖ ≤ direction_tol             (of the step's mean gradient, eq. 9's)
and eq. 8's max_dout still bounds α max|Δf| of the step. ŵ = w_new + dt Σ_j e_j k_j is formed
from w_new, so in float32 an error below the rounding of w reads as zero instead of as noise:
the estimate is never swamped by rounding, and resolves what the weights can hold.
"""
import collections
import dataclasses

import tensorflow as tf

from lazy_feature.dynamics import gradient_change

FlowState = collections.namedtuple("FlowState", ["point", "outputs", "grad"])
FlowState.__doc__ = """An accepted point of the flow, its training outputs and its gradient ∇L."""


def combination(coefficients, tensors):
    """Σ_j c_j t_j over the nonzero c_j; a single coefficient 1 returns its tensor as it is."""
    terms = [(c, t) for c, t in zip(coefficients, tensors) if c != 0]
    if len(terms) == 1 and terms[0][0] == 1:
        return terms[0][1]
    return tf.add_n([tf.constant(c, t.dtype) * t for c, t in terms])


class Euler:
    """The paper's scheme: w_{i+1} = w_i − dt ∇L_i, accepted under eqs. 8 and 9 (`GradientFlow`).

    One gradient evaluation per trial step; the gradient at the trial point is the next
    step's ∇L_i when accepted.
    """
    name = "euler"
    evaluations_per_trial = 1

    def __init__(self, flow):
        self.flow = flow

    def trial(self, problem, state, dt):
        """(the trial state, whether eqs. 8-9 accept it, {dout, dgrad, error})."""
        point = problem.move(state.point, dt, (1.0,), (state.grad,))
        outputs, grad = problem.evaluate(point)
        dout = problem.output_change(outputs, state.outputs)
        dgrad = gradient_change(problem.squared_norm(problem.difference(state.grad, grad)),
                                problem.squared_norm(state.grad), problem.squared_norm(grad))
        ok = self.flow.accept(dout, dgrad)
        error = tf.maximum(tf.cast(dout, tf.float64) / self.flow.max_dout,
                           tf.cast(dgrad, tf.float64) / self.flow.max_dgrad)
        return FlowState(point, outputs, grad), ok, dict(dout=dout, dgrad=dgrad, error=error)

    def next_dt(self, dt, accepted, measures):
        return self.flow.next_dt(dt, accepted, tf.cast(measures["dout"], tf.float64),
                                 tf.cast(measures["dgrad"], tf.float64))


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


class EmbeddedRungeKutta:
    """An embedded explicit Runge–Kutta pair (`Tableau`) with FSAL and error control.

    A trial step costs the tableau's evaluations (stage 1 is the stored ∇L) and one forward
    pass at the embedded solution. Its error ratio is the larger of the two local errors
    (module docstring) over their tolerances; a step is accepted when it is at most 1 and
    eq. 8's change is below max_dout. The next dt is dt · 0.9 ratio^(−1/q) for the more
    demanding criterion (q = order for α·f's error, which goes as dt^order, order − 1 for the
    relative one of the mean gradient), kept within [dt/5, 5 dt] and below 0.9 max_dout of
    eq. 8's change; a non-finite step divides dt by 5.
    """
    SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 5.0

    def __init__(self, name, tableau, flow):
        self.name, self.tableau, self.flow = name, tableau, flow
        self.evaluations_per_trial = tableau.evaluations

    def trial(self, problem, state, dt):
        """(the trial state, whether its error is within tolerance, {dout, dgrad, error})."""
        grads = [state.grad]
        for row in self.tableau.a:
            point = problem.move(state.point, dt, row, grads[:len(row)])
            outputs, grad = problem.evaluate(point)
            grads.append(grad)
        new = FlowState(point, outputs, grad)
        negated = tuple(-e for e in self.tableau.error)
        embedded = problem.outputs(problem.move(point, dt, negated, grads))
        output_error = tf.cast(problem.output_change(outputs, embedded), tf.float64)
        direction_error = tf.sqrt(tf.math.divide_no_nan(
            tf.cast(problem.squared_norm(problem.combine(self.tableau.error, grads)), tf.float64),
            tf.cast(problem.squared_norm(problem.combine(self.tableau.a[-1], grads)), tf.float64)))
        output_ratio = output_error / self.flow.output_tol
        direction_ratio = direction_error / self.flow.direction_tol
        dout = problem.output_change(outputs, state.outputs)
        dgrad = gradient_change(problem.squared_norm(problem.difference(state.grad, grad)),
                                problem.squared_norm(state.grad), problem.squared_norm(grad))
        error = tf.maximum(output_ratio, direction_ratio)
        ok = tf.logical_and(error <= 1.0, dout < self.flow.max_dout)
        return new, ok, dict(dout=dout, dgrad=dgrad, error=error, output_ratio=output_ratio,
                             direction_ratio=direction_ratio)

    def next_dt(self, dt, accepted, measures):
        del accepted  # the error sets the next dt whether the step was taken or not
        error, dout = measures["error"], tf.cast(measures["dout"], tf.float64)
        # The local error of α·f goes as dt^order, the relative one of the mean gradient as
        # dt^(order − 1): each criterion's ratio gets its own root.
        order = self.tableau.order
        factor = self.SAFETY * tf.minimum(tf.pow(measures["output_ratio"], -1.0 / order),
                                          tf.pow(measures["direction_ratio"], -1.0 / (order - 1)))
        within_eq8 = tf.where(dout > 0, self.SAFETY * self.flow.max_dout / dout, self.MAX_FACTOR)
        factor = tf.clip_by_value(tf.minimum(factor, within_eq8), self.MIN_FACTOR,
                                  self.MAX_FACTOR)
        finite = tf.math.is_finite(error) & tf.math.is_finite(dout)
        return dt * tf.where(finite, factor, self.MIN_FACTOR)


_TABLEAUS = {"bogacki_shampine": BOGACKI_SHAMPINE, "dormand_prince": DORMAND_PRINCE}


def get(flow):
    """The integrator a `GradientFlow` names (flow.integrator)."""
    if flow.integrator == "euler":
        return Euler(flow)
    return EmbeddedRungeKutta(flow.integrator, _TABLEAUS[flow.integrator], flow)
