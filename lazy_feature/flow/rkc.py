"""Second-order Runge–Kutta–Chebyshev (RKC): a stabilized explicit method for stiff flows."""
import numpy as np
import tensorflow as tf

from lazy_feature.flow.integrators import FlowState, Trial, move
from lazy_feature.flow.runge_kutta import LocalErrorControl


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


class RungeKuttaChebyshev(LocalErrorControl):
    """Second-order Runge–Kutta–Chebyshev (RKC2, `chebyshev_coefficients`): an explicit
    method whose stability interval grows as the square of its stages, β(s) ≈ 0.65 s², for
    flows whose step is limited by stability rather than accuracy — the lazy regime, where
    the kernel dynamics Ḟ = −Θ ℓ'(F)/n (eq. 28) has stiff modes and runs to t ~ 10³-10⁴.

    Each trial step takes s = 1 + ⌊√(1 + 1.54 dt ρ)⌋ stages (2 ≤ s ≤ MAX_STAGES), ρ the
    spectral radius of the Jacobian of −∇L (the Hessian's largest |eigenvalue|) times
    RHO_SAFETY (RKC's own 1.2), and costs s gradient evaluations: s − 1 inner stages and ∇L
    at the new point, which is the next step's first stage. Its local error estimate
    (Sommeijer et al. 1997)
      est = (12 (w_n − w_{n+1}) + 6 dt (F_n + F_{n+1})) / 15,   F = −∇L,
    is O(dt³); the step is accepted in the paper's quantities (`LocalErrorControl`, order 3)
    with ŵ = w_{n+1} + est, one extra forward pass. The stages are carried as displacements
    from w_n, so est and ŵ − w_{n+1} carry no rounding of w itself (float32). dt is kept
    below the largest step MAX_STAGES stages make stable.

    ρ comes from a nonlinear power iteration on gradient evaluations (`spectral_radius`),
    warm-started from the last eigenvector, redone every REESTIMATE_EVERY accepted steps
    and after a rejected one; every evaluation it takes is counted. Its memory is
    (ρ, eigenvector, accepted steps until the next estimate, the controller's memory), all
    zero at the start.
    """
    order = 3  # of the error estimate: the method is second order
    DAMPING = 2 / 13
    MAX_STAGES = 100
    RHO_SAFETY = 1.2
    REESTIMATE_EVERY = 25
    MAX_POWER_ITERATIONS = 20
    POWER_TOLERANCE = 0.01  # relative change of two successive estimates of ρ
    STABLE_DT_RHO = 0.99 * (MAX_STAGES**2 - 1) / 1.54  # dt·ρ that MAX_STAGES stages make stable

    # The P-sized vectors it keeps besides Euler's (`run.resources`): the eigenvector of its
    # power iteration (kept, and the trial's new estimate), and the four its trial carries
    # (the stage recursion's Z_(j−2), Z_(j−1), Z_j and its zero start; at the error estimate
    # w_(n+1), its displacement, est and ŵ).
    vectors = 6

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
