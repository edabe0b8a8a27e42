"""Integrators of gradient flow ẇ = −∇L (eq. 7): what they share, the paper's adaptive Euler
scheme (eqs. 8-9), and the accept/reject step that drives every flow (`advance`).

An integrator takes one *trial step* of a flow problem from an accepted `FlowState` and its own
`memory` (a structure of tensors it carries from trial to trial, `initial_memory`), and returns
a `Trial`: the trial state, whether to accept it, its measures, the gradient evaluations it used
and the new memory. `advance` keeps the trial or restores the accepted state and asks the
integrator for the next dt; the network (`network_flow.GradientFlowDynamics`) and the
frozen-kernel flow (`kernel.frozen`) both step through it. A problem provides:

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
  flatten(d), unflatten(v) (optional) a displacement (or a gradient) as one vector of the
                                      weights' coordinates and back, for `exponential`
  margins(outputs), lowest(v), highest(v) (optional)
                                      the training margins F·y of some outputs, and the min
                                      and max of a tensor over every training point, for
                                      `landing`

The error-controlled methods (`runge_kutta`, `rkc`, `exponential`, `switching`) and the
registry that names them (`registry`) build on this module. Their figures: docs/integrators.md.
"""
import collections

import tensorflow as tf

FlowState = collections.namedtuple("FlowState", ["point", "outputs", "grad"])
FlowState.__doc__ = """An accepted point of the flow, its training outputs and its gradient ∇L."""

Trial = collections.namedtuple("Trial", ["state", "accepted", "measures", "evaluations",
                                         "memory"])
Trial.__doc__ = """A trial step: the trial state, whether it is accepted, its measures (dout,
dgrad, error, ...), the gradient evaluations it used (int64) and the integrator's new memory."""

Advance = collections.namedtuple("Advance", ["state", "accepted", "next_dt", "trial"])
Advance.__doc__ = """One step of the accept/reject loop: the accepted state after it (the
trial's, or the one it started from), whether the trial was kept, the next dt, the trial."""

# How many times one half of a step's change of ∇L must exceed the other's to count as a jump
# (`Euler`, with `GradientFlow.jumps`).
JUMP_RATIO = 100.0
# The most dt grows after a step accepted across a jump (`Euler.next_dt`).
JUMP_GROWTH = 2.0
# The most the curvature memory c of the jump rule grows from one observed step to the next
# (`Euler._across_jumps`): a jump below ε_∇ in a step eq. 9 accepts would otherwise read as a
# curvature many orders too high. A change of ∇L rising more than JUMP_RATIO times within a
# step reads as a jump anyway; the steepest smooth rise measured is twentyfold.
CURVATURE_GROWTH = JUMP_RATIO


def as_written():
    """Turn off Grappler, TensorFlow's graph optimizer, in this process, so that a traced
    step runs as written. Its rewrites of a step of the default integrator (evaluations that
    assign the network's weights between sums of matrix-vector products) made the result
    differ in its last digits from one call to the next at n = 2 000 (TensorFlow 2.21): the
    same command gave different runs. Called before any step is traced (it holds for graphs
    optimized afterwards); it costs a few percent of a run's time
    (benchmarks/results/reproducibility.md)."""
    tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})


def advance(integrator, problem, state, dt, memory, hold=False, store_memory=None, land=0.0):
    """A trial step of `integrator` from the accepted `state`, kept when the integrator accepts
    it and the flow is not on `hold` (a bool tensor: a flow that stands still), else `state`
    restored exactly; the next dt follows the verdict. The integrator's new memory is
    `trial.memory`, whatever the verdict.

    store_memory: for a memory held in variables (the network's flow), a function that
    assigns `trial.memory` to them; it runs before the next dt is chosen, and a measure that
    is one of those variables is then read as the trial left it. For the step-size controller
    of a pair or etdrk4 run alone, that makes e_prev the trial's own e after an accepted step,
    with no cap after a rejection (`LocalErrorControl.next_dt` reads both from the measures):
    the controller every recorded run of the network took. Inside the switching pairs, whose
    measures come out of a tf.cond, and in the frozen-kernel flow (tensors in a loop), the
    measures hold the memory the trial started from.

    land > 0: a trial that meets the stopping criterion (every margin > 1) but ends more than
    `land` past it is rejected, and the next dt is the one that lands on it (`landing`).
    """
    trial = integrator.trial(problem, state, dt, memory)
    accepted = tf.logical_and(trial.accepted, tf.logical_not(hold))
    if store_memory is not None:
        store_memory(trial.memory)
    next_dt = integrator.next_dt(dt, accepted, trial.measures)
    if land > 0:
        overshot, landing_dt = landing(problem, state.outputs, trial.state.outputs, dt, land)
        overshot = tf.logical_and(overshot, accepted)
        accepted = tf.logical_and(accepted, tf.logical_not(overshot))
        next_dt = tf.where(overshot, landing_dt, next_dt)
    kept = tf.nest.map_structure(lambda new, old: tf.where(accepted, new, old),
                                 trial.state, state)
    return Advance(kept, accepted, next_dt, trial)


# The shortest landing step, as a fraction of the step it replaces (a margin of exactly 1
# before the step would ask for 0).
LANDING_FLOOR = 1e-3


def landing(problem, outputs, new_outputs, dt, land):
    """(whether a step from `outputs` to `new_outputs` crosses the stopping criterion and
    ends more than `land` past it, the dt that lands on it).

    The run stops at the first point where every training margin m = F·y exceeds 1, and it
    reports its outputs there: a step that crosses the criterion early in a long step
    (a Runge–Kutta pair's, etdrk4's) would report outputs from later in the flow. The
    crossing is located by interpolating each margin linearly over the step: point μ, below
    1 before, crosses at the fraction s_μ = (1 − m_μ)/(m'_μ − m_μ), and the criterion holds
    from s = max_μ s_μ. Near convergence the margins rise ever more slowly (ℓ' shrinks), so
    the interpolation puts s slightly late and the re-taken step of s·dt ends just past the
    criterion: within `land`, or it is re-taken again from a far smaller overshoot.
    """
    old, new = problem.margins(outputs), problem.margins(new_outputs)
    overshot = tf.logical_and(problem.lowest(tf.reduce_min(old)) <= 1.0,
                              problem.lowest(tf.reduce_min(new)) > 1.0 + land)
    crossing = tf.where(tf.logical_and(old <= 1.0, new > old),
                        tf.math.divide_no_nan(1.0 - old, new - old), tf.zeros_like(old))
    fraction = tf.cast(problem.highest(tf.reduce_max(crossing)), tf.float64)
    return overshot, tf.cast(dt, tf.float64) * tf.clip_by_value(fraction, LANDING_FLOOR, 1.0)


def gradient_change(problem, grad, new_grad):
    """Eq. 9's left side ‖∇L_i − ∇L_{i+1}‖² / (‖∇L_i‖ ‖∇L_{i+1}‖) between ∇L_i = `grad` and
    ∇L_(i+1) = `new_grad`, in `problem`'s norm.

    Zero when both gradients vanish (nothing left to learn), so such a step is accepted.
    """
    return tf.math.divide_no_nan(problem.squared_norm(problem.difference(grad, new_grad)),
                                 tf.sqrt(problem.squared_norm(grad)
                                         * problem.squared_norm(new_grad)))


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


def evaluation_count(count):
    """A number of gradient evaluations, as a Trial holds it (int64)."""
    return tf.constant(count, tf.int64)


class Euler:
    """The paper's scheme: w_{i+1} = w_i − dt ∇L_i, accepted under eqs. 8 and 9 (`GradientFlow`).

    One gradient evaluation per trial step; the gradient at the trial point is the next
    step's ∇L_i when accepted. With `flow.jumps` (a kinked activation, ReLU) it crosses the
    jumps of ∇L that a training point's pre-activation crossing zero makes (Appendix F: w ↦
    f(w, x_μ) is differentiable on patches only), where eq. 9 alone would reject every step
    that reaches a kink, whatever dt: a trial that eq. 9 alone rejects also takes ∇L at its
    half step (one more evaluation), and eq. 9 judges the step's smooth change
    (`_across_jumps`). The memory is then the curvature c = d/dt² of the last step whose
    smooth change d was seen, at most CURVATURE_GROWTH times the one before (0 before the
    first), and otherwise empty.
    """
    def __init__(self, flow):
        self.flow = flow

    @property
    def vectors(self):
        """The P-sized vectors it keeps besides the five of every flow (`run.resources`):
        across jumps, the gradient at the half step of a trial eq. 9 rejects."""
        return 1 if self.flow.jumps else 0

    def initial_memory(self, point):  # pylint: disable=unused-argument
        return (tf.zeros((), tf.float64),) if self.flow.jumps else ()

    def trial(self, problem, state, dt, memory=()):
        """The trial step and whether eqs. 8-9 accept it (measures dout, dgrad, error)."""
        point = move(problem, state.point, dt, (1.0,), (state.grad,))
        outputs, grad = problem.evaluate(point)
        dout = problem.output_change(outputs, state.outputs)
        dgrad = gradient_change(problem, state.grad, grad)
        ok = self.flow.accept(dout, dgrad)
        error = tf.maximum(tf.cast(dout, tf.float64) / self.flow.max_dout,
                           tf.cast(dgrad, tf.float64) / self.flow.max_dgrad)
        measures, evaluations = dict(dout=dout, dgrad=dgrad, error=error), evaluation_count(1)
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
        both exceed JUMP_RATIO·c·(dt/2)², both hold jumps and the smooth change is c·dt²;
        else if one half's d exceeds the other's JUMP_RATIO times, the other half is smooth
        and the smooth change is 4·min(d₁, d₂). Eq. 9 judges that smooth change. In that
        order: a flow sliding along several kinks at once crosses a large jump in one half
        and a small one in the other, and 4·min(d₁, d₂) would read the small jump as the
        step's smooth change. And c grows at most CURVATURE_GROWTH times from one
        observed step to the next: a step eq. 9 accepts may hold a jump below ε_∇.
        """
        (curvature,) = memory
        dt, dgrad = tf.cast(dt, tf.float64), tf.cast(dgrad, tf.float64)
        probe = tf.logical_and(tf.logical_not(ok),
                               tf.cast(dout, tf.float64) < self.flow.max_dout)

        def halves():
            half = move(problem, state.point, 0.5 * dt, (1.0,), (state.grad,))
            half_grad = problem.evaluate(half)[1]
            return tf.stack([
                tf.cast(gradient_change(problem, state.grad, half_grad), tf.float64),
                tf.cast(gradient_change(problem, half_grad, grad), tf.float64)])

        d, evaluated = tf.cond(probe, halves, lambda: tf.zeros(2, tf.float64)), probe
        clean, jumpy = tf.reduce_min(d), tf.reduce_max(d)
        predicted = curvature * dt * dt  # the smooth change c·dt² of the whole step
        both_jump = probe & (curvature > 0) & (clean > JUMP_RATIO * predicted / 4.0)
        one_jump = probe & tf.logical_not(both_jump) & (jumpy > JUMP_RATIO * clean)
        smooth = tf.where(both_jump, predicted, tf.where(one_jump, 4.0 * clean, dgrad))
        jump = (both_jump | one_jump) & (smooth < self.flow.max_dgrad)
        seen = tf.math.divide_no_nan(smooth, dt * dt)
        seen = tf.where(curvature > 0, tf.minimum(seen, CURVATURE_GROWTH * curvature), seen)
        curvature = tf.where(ok | (jump & one_jump), seen, curvature)
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
