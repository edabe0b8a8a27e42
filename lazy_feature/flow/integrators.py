"""Integrators of gradient flow ẇ = −∇L (eq. 7): the paper's adaptive Euler scheme (eqs. 8-9),
embedded explicit Runge–Kutta pairs with first-same-as-last (FSAL) reuse, the stabilized
second-order Runge–Kutta–Chebyshev method (RKC), and a pair that hands the flow to RKC once
stability holds its steps (`StiffnessSwitching`).

One abstraction drives both flows of the package: the network (`AlphaModel.train_step`) and
the frozen-kernel dynamics (`frozen.frozen_kernel_dynamics`). An integrator takes one *trial
step* of a flow problem from an accepted `FlowState` and its own `memory` (a structure of
tensors it carries from trial to trial, `initial_memory`: its step-size controller's,
RKC's spectral radius, the switching pair's phase), and returns a `Trial`: the trial state, whether to accept it, its
measures, the gradient evaluations it used and the new memory. The caller keeps or restores
its state (Keras variables, or a tf.while_loop's tensors), stores the memory whatever the
verdict, and asks the integrator for the next dt. A problem provides:

  evaluate(point) -> (outputs, grad)  one gradient evaluation: the training outputs and ∇L
  outputs(point) -> outputs           the training outputs alone (a forward pass)
  linear_combination(c, points, dt, d, grads)
                                      Σ_i c_i points_i − dt Σ_j d_j grads_j (a point, or a
                                      displacement of one); c, d Python numbers or tensors
  combine(coefs, grads)               Σ_j coefs_j grads_j
  difference(g1, g2), squared_norm(g) gradients in weight space (eq. 9's norm); squared_norm
                                      also measures displacements of points (any fixed
                                      multiple of the weight-space norm: only ratios are used)
  output_change(o1, o2)               α max_μ |f_1 − f_2| over the training set (eq. 8's scale)
  branches (optional attribute)       False where an evaluation cannot sit in a tf.cond (its
                                      gradient all-reduced over several replicas); Euler's
                                      half-step probe is then taken on every trial
  flatten(d), unflatten(v) (optional) a displacement (or a gradient) as one vector of the
                                      weights' coordinates and back, for `exponential`

Error control of the Runge–Kutta methods, in the paper's own quantities: a trial step from w
to w_new has an embedded solution ŵ (a lower-order one, or w_new plus RKC's error estimate),
and is accepted when both
  α max_μ |f(w_new, x_μ) − f(ŵ, x_μ)| ≤ output_tol      (the local error of α·f, eq. 8's scale)
  ‖w_new − ŵ‖ / ‖w_new − w‖ ≤ direction_tol             (of the step's mean gradient, eq. 9's)
(eq. 8's max_dout, an accuracy criterion of the Euler scheme, the change of α·f within one
step, does not bound their steps: the local error of α·f replaces it). ŵ is formed from
w_new and a displacement, so in float32 an error below the rounding of w reads as zero
instead of as noise: the estimate is never swamped by rounding, and resolves what the weights
can hold.
"""
import collections
import dataclasses
import functools

import numpy as np
import tensorflow as tf

from lazy_feature.flow.dynamics import (JUMP_GROWTH, JUMP_RATIO, SWITCHING, gradient_change,
                                   pair_of, stiff_of)

FlowState = collections.namedtuple("FlowState", ["point", "outputs", "grad"])
FlowState.__doc__ = """An accepted point of the flow, its training outputs and its gradient ∇L."""

Trial = collections.namedtuple("Trial", ["state", "accepted", "measures", "evaluations",
                                         "memory"])
Trial.__doc__ = """A trial step: the trial state, whether it is accepted, its measures (dout,
dgrad, error, ...), the gradient evaluations it used (int64) and the integrator's new memory."""


def combination(coefficients, tensors):
    """Σ_j c_j t_j over the c_j that are not a Python 0; a single Python 1 returns its tensor
    as it is. A coefficient may be a tensor (cast to the tensors' dtype)."""
    def number(c):
        return isinstance(c, (int, float))

    terms = [(c, t) for c, t in zip(coefficients, tensors) if not (number(c) and c == 0)]
    if len(terms) == 1 and number(terms[0][0]) and terms[0][0] == 1:
        return terms[0][1]
    return tf.add_n([(tf.constant(c, t.dtype) if number(c) else tf.cast(c, t.dtype)) * t
                     for c, t in terms])


def move(problem, point, dt, coefficients, grads):
    """point − dt Σ_j coefficients_j grads_j."""
    return problem.linear_combination((1.0,), (point,), dt, coefficients, grads)


def _evaluations(count):
    return tf.constant(count, tf.int64)


class Euler:
    """The paper's scheme: w_{i+1} = w_i − dt ∇L_i, accepted under eqs. 8 and 9 (`GradientFlow`).

    One gradient evaluation per trial step; the gradient at the trial point is the next
    step's ∇L_i when accepted. With `flow.jumps` (ReLU), a trial that eq. 9 alone rejects
    also takes ∇L at its half step (one more evaluation) to tell jumps of ∇L from its smooth
    change (`dynamics` module docstring); the memory is then the curvature c = d/dt² of the
    last step whose smooth change d was measured (0 before the first), and otherwise empty.
    """
    name = "euler"

    def __init__(self, flow):
        self.flow = flow

    def initial_memory(self, point):  # pylint: disable=unused-argument
        return (tf.zeros((), tf.float64),) if self.flow.jumps else ()

    def trial(self, problem, state, dt, memory=()):
        """The trial step and whether eqs. 8-9 accept it (measures dout, dgrad, error)."""
        point = move(problem, state.point, dt, (1.0,), (state.grad,))
        outputs, grad = problem.evaluate(point)
        dout = problem.output_change(outputs, state.outputs)
        dgrad = _dgrad(problem, state.grad, grad)
        ok = self.flow.accept(dout, dgrad)
        error = tf.maximum(tf.cast(dout, tf.float64) / self.flow.max_dout,
                           tf.cast(dgrad, tf.float64) / self.flow.max_dgrad)
        measures, evaluations = dict(dout=dout, dgrad=dgrad, error=error), _evaluations(1)
        if self.flow.jumps:
            ok, probed, measures["jump"], measures["smooth_dgrad"], memory = \
                self._across_jumps(problem, state, dt, grad, ok, dout, dgrad, memory)
            evaluations += tf.cast(probed, tf.int64)
        return Trial(FlowState(point, outputs, grad), ok, measures, evaluations, memory)

    def _across_jumps(self, problem, state, dt, grad, ok, dout, dgrad, memory):
        """(accepted, whether the half step was evaluated, whether it is accepted across
        jumps, the smooth part of eq. 9's left side, new memory) of a trial that eqs. 8-9
        judged `ok`, `grad` ∇L at its end.

        A trial eq. 9 alone rejects takes ∇L at its half step, and eq. 9's left side over
        each half, d₁ and d₂. Where ∇L is smooth both are about d/4 (d goes as dt²), close
        to c·(dt/2)²; a jump of ∇L is whole in the half that holds it, whatever dt. So if
        one half's d exceeds the other's JUMP_RATIO times, the other half is smooth and the
        step's smooth change is 4·min(d₁, d₂); if both exceed JUMP_RATIO·c·(dt/2)², both
        hold jumps and the smooth change is c·dt². Eq. 9 judges that smooth change.
        """
        (curvature,) = memory
        dt, dgrad = tf.cast(dt, tf.float64), tf.cast(dgrad, tf.float64)
        probe = tf.logical_and(tf.logical_not(ok),
                               tf.cast(dout, tf.float64) < self.flow.max_dout)

        def halves():
            half = move(problem, state.point, 0.5 * dt, (1.0,), (state.grad,))
            half_grad = problem.evaluate(half)[1]
            return tf.stack([tf.cast(_dgrad(problem, state.grad, half_grad), tf.float64),
                             tf.cast(_dgrad(problem, half_grad, grad), tf.float64)])

        if getattr(problem, "branches", True):
            d, evaluated = tf.cond(probe, halves, lambda: tf.zeros(2, tf.float64)), probe
        else:  # an evaluation all-reduced over replicas cannot sit in a branch: always taken
            d, evaluated = tf.where(probe, halves(), tf.zeros(2, tf.float64)), True
        clean, jumpy = tf.reduce_min(d), tf.reduce_max(d)
        one_smooth_half = jumpy > JUMP_RATIO * clean
        predicted = curvature * dt * dt  # the smooth change c·dt² of the whole step
        both_jump = (curvature > 0) & (clean > JUMP_RATIO * predicted / 4.0)
        smooth = tf.where(probe & one_smooth_half, 4.0 * clean,
                          tf.where(probe & both_jump, predicted, dgrad))
        jump = probe & (one_smooth_half | both_jump) & (smooth < self.flow.max_dgrad)
        measured = tf.logical_or(ok, jump & one_smooth_half)
        curvature = tf.where(measured, tf.math.divide_no_nan(smooth, dt * dt), curvature)
        return tf.logical_or(ok, jump), evaluated, jump, smooth, (curvature,)

    def next_dt(self, dt, accepted, measures):
        """The paper's dt policy (`GradientFlow.next_dt`); after a step accepted across
        jumps, dt grows to where its smooth part would reach `well_inside`·ε_∇ (it goes as
        dt²), at most JUMP_GROWTH times: the jump-free steps' growth of 1.1 would not make
        up for the halving after a trial whose jumps the half step cannot separate, where
        the flow slides along several kinks at once."""
        dout = tf.cast(measures["dout"], tf.float64)
        if "jump" not in measures:
            return self.flow.next_dt(dt, accepted, dout,
                                     tf.cast(measures["dgrad"], tf.float64))
        smooth = measures["smooth_dgrad"]
        room = tf.sqrt(tf.math.divide_no_nan(self.flow.well_inside * self.flow.max_dgrad,
                                             smooth))
        grown = dt * tf.where(smooth > 0, tf.clip_by_value(room, 1.0, JUMP_GROWTH),
                              JUMP_GROWTH)
        return tf.where(measures["jump"], grown, self.flow.next_dt(dt, accepted, dout, smooth))


def _dgrad(problem, grad, new_grad):
    """Eq. 9's left side between ∇L_i = `grad` and ∇L_(i+1) = `new_grad`."""
    return gradient_change(problem.squared_norm(problem.difference(grad, new_grad)),
                           problem.squared_norm(grad), problem.squared_norm(new_grad))


class _LocalErrorControl:
    """Acceptance and step size of a Runge–Kutta method from its local error (module
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

    Measured (`benchmarks/flow_benchmark.py`, n = 500, h = 64, √h·α = 1, Bogacki–Shampine at
    output_tol/direction_tol 1e-3/1e-2): the plain controller rejected 23 of 213 trials, the
    PI controller 11 of 204. Eq. 8's max_dout, which bounded the pairs' steps before, rejected
    every other trial of the early phase, where α·f grows faster than linearly in dt: at
    3e-3/3e-2, 610 evaluations with it and 493 without, at deviations from the reference flow
    of 6.7e-5 and 8.8e-5 (Euler's: 3.3e-4). Where the flow speeds up (√h·α = 1e-2, the
    switching pair's early phase), dt falls step after step and every other trial of the pair
    is rejected just above tolerance (e = 1.01-1.2). Gustafsson's predictive controller (1994;
    Hairer & Wanner IV.8), dt held below dt · SAFETY (dt/dt_prev) e_prev/e² after an accepted
    step whose dt fell, cut the rejected trials from 29 to 14 (n = 2 000, h = 100, seed 0) but
    took 1 136 evaluations to convergence against 1 144, its accepted steps being shorter: not
    adopted. The RMS of α·f's local error over the training points, in place of its max,
    reads as a looser output_tol (README: at n = 500 it deviated more than Euler at the
    default tolerances; held to the max's deviation at n = 2 000 it costs as much at √h·α =
    1e4 and 1, 10% less at 1e-2).
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
        dgrad = _dgrad(problem, state.grad, new.grad)
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


class EmbeddedRungeKutta(_LocalErrorControl):
    """An embedded explicit Runge–Kutta pair (`Tableau`) with FSAL and error control.

    A trial step costs the tableau's evaluations (stage 1 is the stored ∇L) and one forward
    pass at the embedded solution; it is accepted when its error ratio (the larger of the two
    local errors over their tolerances) is at most 1.
    """

    def __init__(self, name, tableau, flow):
        self.name, self.tableau, self.flow = name, tableau, flow
        self.order = tableau.order

    def trial(self, problem, state, dt, memory):
        """The trial step and whether its error is within tolerance (`_LocalErrorControl`)."""
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
        return Trial(new, ok, measures, _evaluations(self.tableau.evaluations), memory)


def chebyshev_coefficients(stages, damping=2 / 13):
    """RKC's damped Chebyshev recurrence of `stages` stages (Sommeijer, Shampine & Verwer 1997;
    Verwer et al. 2004): arrays mu, nu, mu_tilde, gamma_tilde over j = 0..stages (j = 0 unused,
    mu_tilde[1] the first stage's), with w0 = 1 + ε/s², w1 = T_s'(w0)/T_s''(w0),
    b_j = T_j''(w0)/T_j'(w0)² (b_0 = b_1 = b_2), and
      Y_1 = Y_0 + mũ_1 dt F_0,
      Y_j = (1 − μ_j − ν_j) Y_0 + μ_j Y_{j−1} + ν_j Y_{j−2} + mũ_j dt F_{j−1} + γ̃_j dt F_0,
    μ_j = 2 b_j w0/b_{j−1}, ν_j = −b_j/b_{j−2}, mũ_j = 2 b_j w1/b_{j−1},
    γ̃_j = −(1 − b_{j−1} T_{j−1}(w0)) mũ_j. Second order; stable for dt·ρ ≤ β(s) ≈ 0.65 s².
    """
    s = stages
    w0 = 1 + damping / s**2
    T, dT, ddT = np.zeros(s + 1), np.zeros(s + 1), np.zeros(s + 1)
    T[0], T[1], dT[1] = 1.0, w0, 1.0
    for j in range(2, s + 1):
        T[j] = 2 * w0 * T[j - 1] - T[j - 2]
        dT[j] = 2 * T[j - 1] + 2 * w0 * dT[j - 1] - dT[j - 2]
        ddT[j] = 4 * dT[j - 1] + 2 * w0 * ddT[j - 1] - ddT[j - 2]
    w1 = dT[s] / ddT[s]
    b = np.zeros(s + 1)
    b[2:] = ddT[2:] / dT[2:] ** 2
    b[0] = b[1] = b[2]
    mu, nu, mu_tilde, gamma_tilde = (np.zeros(s + 1) for _ in range(4))
    mu_tilde[1] = b[1] * w1
    for j in range(2, s + 1):
        mu[j] = 2 * b[j] * w0 / b[j - 1]
        nu[j] = -b[j] / b[j - 2]
        mu_tilde[j] = 2 * b[j] * w1 / b[j - 1]
        gamma_tilde[j] = -(1 - b[j - 1] * T[j - 1]) * mu_tilde[j]
    return mu, nu, mu_tilde, gamma_tilde


class RungeKuttaChebyshev(_LocalErrorControl):
    """Second-order Runge–Kutta–Chebyshev (RKC2, `chebyshev_coefficients`): an explicit
    method whose stability interval grows as the square of its stages, β(s) ≈ 0.65 s², for
    flows whose step is limited by stability rather than accuracy — the lazy regime, where
    the kernel dynamics Ḟ = −Θ ℓ'(F)/n (eq. 28) has stiff modes and runs to t ~ 10³-10⁴.

    Each trial step takes s = 1 + ⌊√(1 + 1.54 dt ρ)⌋ stages (2 ≤ s ≤ MAX_STAGES), ρ the
    spectral radius of the Jacobian of −∇L (the Hessian's largest |eigenvalue|) times 1.2, and
    costs s gradient evaluations: s − 1 inner stages and ∇L at the new point, which is the
    next step's first stage. Its local error estimate (Sommeijer et al. 1997)
      est = (12 (w_n − w_{n+1}) + 6 dt (F_n + F_{n+1})) / 15,   F = −∇L,
    is O(dt³); the step is accepted in the paper's quantities (`_LocalErrorControl`, order 3)
    with ŵ = w_{n+1} + est, one extra forward pass. The stages are carried as displacements
    from w_n, so est and ŵ − w_{n+1} carry no rounding of w itself (float32).

    Eq. 8's max_dout does not bound RKC's steps (module docstring); measured at √h·α = 1e4
    (n = 500, h = 64, default tolerances) it changes nothing there either way (1 255
    evaluations with it, 1 283 without; accepted steps move α·f by ~0.03 < 0.1). dt is kept
    below the largest step MAX_STAGES stages make stable.

    ρ comes from a nonlinear power iteration on gradient evaluations (`spectral_radius`),
    warm-started from the last eigenvector, redone every REESTIMATE_EVERY accepted steps
    and after a rejected one; every evaluation it takes is counted. Its memory is
    (ρ, eigenvector, accepted steps until the next estimate, the controller's memory), all
    zero at the start. RHO_SAFETY is RKC's own 1.2; 1.05 (the iteration stops within 1%)
    took 4% fewer evaluations at √h·α = 1e4 and about 1% fewer at 1 and 1e-2, at the same
    deviations (n = 2 000, h = 100, seeds 0-2): not adopted, for so little against the
    stability margin where ρ moves between estimates (the feature regime). Nor does skipping
    the re-estimate after a rejection that is not far out (normalized error ≤ 2) pay: 1.5%
    more evaluations at √h·α = 1, 0.7% fewer at 1e-2, 0.9% more at 1e4 (same runs); with
    RHO_SAFETY 1.05 (and at 1 and 1e-2 an earlier switch, `StiffnessSwitching`) it took 4%
    fewer at all three, ×0.36, ×0.34 and ×0.32 of Euler's: no third at 1 and 1e-2 either.

    A longer stability interval at second order, measured and not adopted: the longest on
    which a degree-s polynomial R(z) = 1 + z + z²/2 + O(z³) keeps |R| ≤ 0.95 (a linear
    program) is 0.80 s², ROCK2's, against RKC's 0.65 s². Realized by the Chebyshev
    recurrence on that interval, with each stage's gradient taken where its abscissa is at
    most 0.5 (beyond it, the local error was 2.3 times RKC's), its local error and its
    estimate matched RKC's at equal dt on a nonlinear stiff flow. But its R swings between
    −0.95 and 0.95 where RKC's stays within [0, 0.95], and in the default (n = 2 000, h = 100,
    seeds 0-2) it took 14% more evaluations at √h·α = 1e4, 7% more at 1 and 2% fewer at 1e-2,
    deviating 0.55, 0.75 and 0.94 times as much: 0-3.5% fewer at equal deviation
    (evaluations ∝ deviation^(−1/4), README). Held to 0 ≤ R ≤ 0.95, the interval is 0.70 s²
    (4% fewer stages). Nor is the estimate swamped by stiff components: along the flow at
    √h·α = 1e4 (n = 2 000, t = 100 to 1e4, one step of dt·ρ = 20 to 400 against 32 of dt/32)
    it read 2 to 4 times α·f's true local error. A tolerance per evaluation (a step of s stages
    accepted at s times a fixed error, which splits a global error budget optimally between
    steps when their errors add up) took 2% fewer evaluations at √h·α = 1e4 (seeds 0-2) and
    deviated 8% more: nothing at equal deviation.
    """
    name = "rkc"
    order = 3  # of the error estimate: the method is second order
    DAMPING = 2 / 13
    MAX_STAGES = 100
    RHO_SAFETY = 1.2
    REESTIMATE_EVERY = 25
    MAX_POWER_ITERATIONS = 20
    POWER_TOLERANCE = 0.01  # relative change of two successive estimates of ρ
    STABLE_DT_RHO = 0.99 * (MAX_STAGES**2 - 1) / 1.54  # dt·ρ that MAX_STAGES stages make stable

    def __init__(self, flow):
        self.flow = flow
        table = np.zeros((4, self.MAX_STAGES + 1, self.MAX_STAGES + 1))
        for s in range(2, self.MAX_STAGES + 1):
            table[:, s, :s + 1] = chebyshev_coefficients(s, self.DAMPING)
        self._table = table

    def initial_memory(self, point):
        """(ρ, eigenvector shaped as a gradient, accepted steps until re-estimating, the
        step-size controller's memory)."""
        return (tf.zeros((), tf.float64), tf.nest.map_structure(tf.zeros_like, point),
                tf.zeros((), tf.int64), self._initial_control())

    def stages_for(self, dt, rho):
        """The number of stages that make a step dt stable for spectral radius ρ (safety
        included), within [2, MAX_STAGES]."""
        stages = 1 + tf.floor(tf.sqrt(1 + 1.54 * dt * rho))
        stages = tf.where(tf.math.is_nan(stages), tf.constant(2.0, tf.float64), stages)  # NaN ρ
        return tf.cast(tf.clip_by_value(stages, 2, self.MAX_STAGES), tf.int32)

    @tf.autograph.experimental.do_not_convert  # graph control flow is explicit (while_loop)
    def trial(self, problem, state, dt, memory):
        """The trial step and whether its error is within tolerance; measures add `stages`,
        `spectral_radius` (safety included) and `max_dt`, the largest stable dt."""
        memory, evaluations = self.estimate(problem, state, memory)
        trial = self.step(problem, state, dt, memory)
        return trial._replace(evaluations=trial.evaluations + evaluations)

    def estimate(self, problem, state, memory, due=None):
        """The memory with ρ re-estimated at the accepted point when `due` (by default when
        REESTIMATE_EVERY steps have been accepted since the last estimate, or after a
        rejection), and the evaluations that took (`spectral_radius`)."""
        rho, vector, until_estimate, control = memory
        due = until_estimate <= 0 if due is None else due
        rho, vector, evaluations = self.spectral_radius(problem, state, rho, vector, due)
        until_estimate = tf.where(due, tf.constant(self.REESTIMATE_EVERY, tf.int64),
                                  until_estimate)
        return (rho, vector, until_estimate, control), evaluations

    @tf.autograph.experimental.do_not_convert  # graph control flow is explicit (while_loop)
    def step(self, problem, state, dt, memory):
        """`trial` from a memory whose ρ is estimated (`estimate`): its stages alone."""
        rho, vector, until_estimate, control = memory
        safe_rho = self.RHO_SAFETY * rho
        stages = self.stages_for(dt, safe_rho)
        new, displacement = self._stages(problem, state, dt, stages)
        # est = −0.8 (w_{n+1} − w_n) − 0.4 dt (∇L_n + ∇L_{n+1})
        estimate = problem.linear_combination((-0.8,), (displacement,), dt, (0.4, 0.4),
                                              (state.grad, new.grad))
        embedded = problem.linear_combination((1.0, 1.0), (new.point, estimate), 0.0, (), ())
        ok, measures, control = self._judge(problem, state, new, embedded,
                                            problem.squared_norm(estimate),
                                            problem.squared_norm(displacement), control)
        measures.update(stages=stages, spectral_radius=safe_rho,
                        max_dt=tf.where(safe_rho > 0, self.STABLE_DT_RHO / safe_rho,
                                        tf.constant(np.inf, tf.float64)))
        until_estimate = tf.where(ok, until_estimate - 1, tf.zeros_like(until_estimate))
        return Trial(new, ok, measures, tf.cast(stages, tf.int64),
                     (rho, vector, until_estimate, control))

    def _stages(self, problem, state, dt, stages):
        """The new state after `stages` stages, and its displacement w_{n+1} − w_n."""
        mu, nu, mu_tilde, gamma_tilde = (tf.gather(tf.constant(row), stages)
                                         for row in self._table)
        zero = tf.nest.map_structure(tf.zeros_like, state.point)
        # Z_j = Y_j − Y_0 = μ_j Z_{j−1} + ν_j Z_{j−2} − dt (mũ_j ∇L_{j−1} + γ̃_j ∇L_0)
        first = problem.linear_combination((1.0,), (zero,), dt, (mu_tilde[1],), (state.grad,))

        def stage(j, previous, before):
            _, grad = problem.evaluate(self._at(problem, state, previous))
            following = problem.linear_combination(
                (mu[j], nu[j]), (previous, before), dt, (mu_tilde[j], gamma_tilde[j]),
                (grad, state.grad))
            return j + 1, following, previous

        _, displacement, _ = tf.while_loop(lambda j, *_: j <= stages, stage,
                                           (tf.constant(2, tf.int32), first, zero))
        point = self._at(problem, state, displacement)
        return FlowState(point, *problem.evaluate(point)), displacement

    @staticmethod
    def _at(problem, state, displacement):
        return problem.linear_combination((1.0, 1.0), (state.point, displacement), 0.0, (), ())

    def spectral_radius(self, problem, state, rho, vector, due):
        """(ρ, eigenvector, evaluations): when `due`, the largest |eigenvalue| of the Hessian
        of L at the accepted point by a nonlinear power iteration, v ← (∇L(w − δ v̂) −
        ∇L(w))/δ, from `vector` (or ∇L if it is zero), until two estimates agree within
        POWER_TOLERANCE or MAX_POWER_ITERATIONS; else the ones given and 0 evaluations.

        The perturbation δ starts at √ε max(‖w‖, 1) (ε of the weights' dtype, as in RKC) and
        shrinks so that it changes α·f by at most √ε: the difference of gradients stays
        linear in δ (the loss bends on a scale ~1/β of F, which large α reaches with tiny
        weight changes) and well above their rounding.
        """
        dtype = tf.nest.flatten(state.grad)[0].dtype
        root_eps = float(np.sqrt(np.finfo(dtype.as_numpy_dtype).eps))
        start = tf.equal(tf.cast(problem.squared_norm(vector), tf.float64), 0.0)
        vector = tf.nest.map_structure(lambda v, g: tf.where(start, g, v), vector, state.grad)
        size = root_eps * tf.maximum(tf.sqrt(tf.abs(tf.cast(problem.squared_norm(state.point),
                                                            tf.float64))), 1.0)

        def going(k, vector, estimate, previous, size):
            converged = (k >= 2) & (tf.abs(estimate - previous)
                                    <= self.POWER_TOLERANCE * estimate)
            return due & (k < self.MAX_POWER_ITERATIONS) & tf.logical_not(converged)

        def iterate(k, vector, estimate, previous, size):
            norm = tf.sqrt(tf.cast(problem.squared_norm(vector), tf.float64))
            step = tf.math.divide_no_nan(size, norm)
            outputs, grad = problem.evaluate(move(problem, state.point, step, (1.0,), (vector,)))
            change = problem.difference(grad, state.grad)
            new_estimate = tf.sqrt(tf.cast(problem.squared_norm(change), tf.float64)) / size
            dout = tf.cast(problem.output_change(outputs, state.outputs), tf.float64)
            # ×min(1, √ε/dout), and ×1 when the outputs did not move
            size = size * tf.minimum(tf.constant(1.0, tf.float64),
                                     tf.where(dout > 0, root_eps / dout, tf.ones_like(dout)))
            return k + 1, change, new_estimate, estimate, size

        k, found, estimate, _, _ = tf.while_loop(
            going, iterate, (tf.constant(0, tf.int64), vector, rho, rho, size))
        # A vanishing change (a flat loss) keeps the old vector and reads ρ = 0.
        keep = tf.equal(tf.cast(problem.squared_norm(found), tf.float64), 0.0)
        vector = tf.nest.map_structure(lambda f, v: tf.where(keep, v, f), found, vector)
        return estimate, vector, k


class StiffnessSwitching:
    """A Runge–Kutta pair that hands the flow to RKC once stability holds its steps.

    Gradient flow is accuracy-limited early, where the pair's higher order pays, and in
    long flows becomes stiff: the Hessian's largest eigenvalue λ holds the pair's dt at its
    stability boundary (dt·λ ≤ 2.51 for Bogacki–Shampine, `Tableau.stability_boundary`) long
    after its mode has decayed, where RKC's s stages are stable up to dt·ρ ≈ 0.65 s².

    Every CHECK_EVERY accepted steps of the pair, the Hessian's spectral radius ρ is
    estimated at the accepted point (`RungeKuttaChebyshev.spectral_radius`, warm from the last
    eigenvector, its evaluations counted); once an accepted step's dt reaches STIFF_RATIO of
    the boundary, dt·ρ ≥ STIFF_RATIO·boundary, the rest of the flow is RKC's, which starts
    from this ρ and eigenvector. (A free estimate from the pair's last two stages, DOPRI5's
    test (Hairer & Wanner, Solving ODEs I, II.10), needs two stages at the same time, which
    Bogacki–Shampine lacks: on a stiff linear flow held at dt·λ = 2.51 its stages read
    dt·ρ̂ ≈ 0.005.) The pair takes the flow's output_tol and direction_tol, RKC the flow's
    stiff_output_tol and its own direction_tol (off; `get`).

    Switching at half the boundary (STIFF_RATIO 0.5), or checking every 10 accepted steps,
    changed the evaluations by −2% to +2% at √h·α = 1 and 1e-2 (n = 2 000, h = 100, seeds
    0-2), at like deviations or (STIFF_RATIO 0.5, √h·α = 1) 1.8 times more: not adopted.

    The stiff phase may be another method, `stiff` (etdrk4, `exponential`): RKC's power
    iteration still tells when to switch, and the other method takes the rest of the flow
    with its own memory (no more power iterations). It switches at DEFLATED_STIFF_RATIO of
    the boundary: etdrk4 integrates the stiff directions exactly, so no stability bound
    awaits it and the pair's steps, shortened near their boundary, are better left early.
    At 0.5 rather than 0.9: 2 039 evaluations at √h·α = 1 against 2 108 (n = 2 000, h = 100,
    seeds 0-2, summed), deviating at most 0.32 of Euler's against 0.36; with a basis of 6
    directions, 1 969 against 2 010, and at n = 10 000, √h·α = 1e-2, seed 0, 1 748 against
    1 751.

    Its memory is (1 once stiff, accepted pair steps since the last estimate, the pair's
    memory, RKC's, and the other stiff method's if there is one), zero at the start, so a
    resumed run goes on with the method it stopped with. Where an evaluation cannot sit in a
    branch (several replicas, `branches`) the pair runs alone.
    """
    STIFF_RATIO = 0.9
    DEFLATED_STIFF_RATIO = 0.5
    CHECK_EVERY = 25

    def __init__(self, name, pair, rkc, stiff=None):
        self.name, self.pair, self.rkc, self.flow = name, pair, rkc, pair.flow
        self.stiff = stiff
        self.boundary = pair.tableau.stability_boundary
        self.stiff_ratio = self.STIFF_RATIO if stiff is None else self.DEFLATED_STIFF_RATIO

    def initial_memory(self, point):
        own = () if self.stiff is None else (self.stiff.initial_memory(point),)
        return (tf.zeros((), tf.int64), tf.zeros((), tf.int64), self.pair.initial_memory(point),
                self.rkc.initial_memory(point)) + own

    @tf.autograph.experimental.do_not_convert  # graph control flow is explicit (tf.cond)
    def trial(self, problem, state, dt, memory):
        """The pair's trial step, or RKC's once the flow is stiff, with the measures both
        share (`_LocalErrorControl`) and `max_dt` (infinite for the pair)."""
        stiff, since_check, pair_memory, rkc_memory, *own = memory
        own = tuple(own)
        if not getattr(problem, "branches", True):
            trial = self.pair.trial(problem, state, dt, pair_memory)
            return self._shared(trial, (stiff, since_check, trial.memory, rkc_memory) + own,
                                tf.constant(np.inf, tf.float64))
        # One power iteration serves both: the pair's check, RKC's re-estimate.
        reestimate = rkc_memory[2] <= 0 if self.stiff is None else tf.constant(False)
        due = tf.where(stiff > 0, reestimate, since_check >= self.CHECK_EVERY)
        rkc_memory, evaluations = self.rkc.estimate(problem, state, rkc_memory, due)
        since_check = tf.where(due, tf.zeros_like(since_check), since_check)

        def by_pair():
            trial = self.pair.trial(problem, state, dt, pair_memory)
            rho = rkc_memory[0]
            held = trial.accepted & (rho > 0) & (
                tf.cast(dt, tf.float64) * rho >= self.stiff_ratio * self.boundary)
            return self._shared(trial, (tf.cast(held, tf.int64),
                                        since_check + tf.cast(trial.accepted, tf.int64),
                                        trial.memory, rkc_memory) + own,
                                tf.constant(np.inf, tf.float64))

        def by_rkc():
            trial = self.rkc.step(problem, state, dt, rkc_memory)
            return self._shared(trial, (stiff, since_check, pair_memory, trial.memory),
                                trial.measures["max_dt"])

        def by_stiff():
            trial = self.stiff.trial(problem, state, dt, own[0])
            return self._shared(trial, (stiff, since_check, pair_memory, rkc_memory,
                                        trial.memory), tf.constant(np.inf, tf.float64))

        trial = tf.cond(stiff > 0, by_rkc if self.stiff is None else by_stiff, by_pair)
        return trial._replace(evaluations=trial.evaluations + evaluations)

    @staticmethod
    def _shared(trial, memory, max_dt):
        keys = ("dout", "dgrad", "error", "output_ratio", "direction_ratio", "normalized_error",
                "previous_error", "after_rejection")
        measures = {key: trial.measures[key] for key in keys}
        measures["max_dt"] = max_dt
        return trial._replace(measures=measures, memory=memory)

    def next_dt(self, dt, accepted, measures):
        return self.pair.next_dt(dt, accepted, measures)


TABLEAUS = {"bogacki_shampine": BOGACKI_SHAMPINE, "dormand_prince": DORMAND_PRINCE}


def get(flow):
    """The integrator a `GradientFlow` names (flow.integrator)."""
    if flow.integrator == "euler":
        return Euler(flow)
    if flow.integrator == "rkc":
        return RungeKuttaChebyshev(flow)
    if flow.integrator == "etdrk4":
        # (imported here: `exponential` builds on this module)
        from lazy_feature.flow import exponential  # pylint: disable=import-outside-toplevel
        return exponential.DeflatedExponential(flow)
    if flow.integrator in SWITCHING:
        pair, stiff = pair_of(flow.integrator), stiff_of(flow.integrator)
        stiff_flow = dataclasses.replace(flow, integrator=stiff, direction_tol=None,
                                         output_tol=flow.stiff_output_tol)
        return StiffnessSwitching(flow.integrator, EmbeddedRungeKutta(pair, TABLEAUS[pair], flow),
                                  RungeKuttaChebyshev(dataclasses.replace(stiff_flow,
                                                                          integrator="rkc")),
                                  None if stiff == "rkc" else get(stiff_flow))
    return EmbeddedRungeKutta(flow.integrator, TABLEAUS[flow.integrator], flow)
