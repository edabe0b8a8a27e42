"""Exponential Runge–Kutta on a deflated Hessian (`DeflatedExponential`, integrator "etdrk4"):
the few stiff directions of gradient flow, the Hessian's top eigenspace, integrated exactly,
the rest by a fourth-order Runge–Kutta method.

Gradient flow ẇ = −∇L (eq. 7) turns stiff in long flows: the Hessian's largest eigenvalues
hold an explicit method's dt (RKC pays √(dt·ρ) stages a step for it). But its spectrum
falls off fast: along the default flow at n = 2 000, h = 100, √h·α = 1 (Lanczos, t = 60 and
120), λ₁ = 14-19, λ₈ ≈ 0.9 and λ₁₆ ≈ 0.45. So the flow is split as

    ẇ = −M (w − w_n) + N_n(w),   N_n(w) = −∇L(w) + M (w − w_n),

M = V Λ Vᵀ the Hessian on the span of RANK orthonormal directions V (Ritz pairs), and each
step is Cox & Matthews' ETDRK4 (J. Comput. Phys. 176, 430, 2002; Kassam & Trefethen, SIAM
J. Sci. Comput. 26, 1214, 2005): the linear part exactly, through φ-functions of −dt Λ, and
N_n by the classical fourth-order stages. Where V spans nothing it is the classical RK4; on
a quadratic loss whose Hessian V spans it is exact. The explicit part is stable while dt
times the largest eigenvalue outside V's span stays below RK4's 2.78.

V comes from the Krylov space of ∇L (2·RANK Hessian-vector products, Rayleigh–Ritz) at the
first step, and is refreshed every REFRESH_EVERY accepted steps and after a rejected one by
one step of subspace iteration (RANK products): the Ritz values of the current V make Λ, and
V moves to the span of HV. M need not be exact for the method's order (only for its
stability): the products are differences of gradients, (∇L(w + δv) − ∇L(w))/δ, one gradient
evaluation each, counted like every stage.

The step's error estimate is that of an embedded third-order solution from the same stages
and the first-same-as-last gradient at the new point, ESTIMATE_WEIGHT·dt·(N(w_{n+1}) −
N(c)), c the fourth stage: O(dt⁴), accepted in the paper's quantities on α·f
(`integrators._LocalErrorControl`, order 4).

Vectors are flat (the problem's `flatten` and `unflatten`: the network's weights in
Euclidean coordinates); the frozen-kernel dynamics, whose points live in function space,
has none (`frozen.frozen_kernel_dynamics` integrates an etdrk4 flow by rkc). Precision: Λ, the Rayleigh quotients and the
φ-functions of −dt Λ are float64 (RANK numbers; −dt λ reaches 10³ in the lazy regime, where
φ's closed forms need expm1 and its series cancellation-free), the vectors in the weights'
dtype; the stages and the error estimate are displacements from w_n, so in float32 the
estimate carries no rounding of w itself (as RKC's, `integrators` module docstring).
"""
import math

import numpy as np
import tensorflow as tf

from lazy_feature.flow import integrators
from lazy_feature.errors import ConfigError

_SERIES_TERMS = 20


def phi_functions(z):
    """(φ₁, φ₂, φ₃)(z) = Σ_k z^k/(k + j)!, j = 1, 2, 3, of a float64 tensor: e.g. φ₁(z) =
    (e^z − 1)/z. Below |z| = 1 by their series (20 terms: the closed forms cancel there, φ₃'s
    by ε/|z|³), above by the closed forms on expm1."""
    z = tf.convert_to_tensor(z, tf.float64)
    small = tf.abs(z) < 1.0
    zs = tf.where(small, z, tf.zeros_like(z))
    zb = tf.where(small, tf.ones_like(z), z)
    expm1 = tf.math.expm1(zb)
    closed = (expm1 / zb, (expm1 - zb) / zb**2, (expm1 - zb - zb**2 / 2) / zb**3)
    phis = []
    for j, exact in zip((1, 2, 3), closed):
        series, power = tf.zeros_like(z), tf.ones_like(z)
        for k in range(_SERIES_TERMS):
            series += power / float(math.factorial(k + j))
            power *= zs
        phis.append(tf.where(small, series, exact))
    return tuple(phis)


class DeflatedExponential(integrators._LocalErrorControl):  # pylint: disable=protected-access
    """ETDRK4 on the Hessian's top-RANK eigenspace (module docstring): four gradient
    evaluations a trial step (three stages and the next step's first), one forward pass for
    the error estimate, and the basis's Hessian-vector products when it is built or
    refreshed.

    Its memory is (basis V, RANK × P, rows orthonormal; Λ, float64; accepted steps until the
    next refresh; 1 once V is built; the finite-difference size δ of the last Hessian-vector
    product; the step-size controller's), all zero at the start.

    Measured with a prototype of this scheme (n = 2 000, h = 100, float64, seed 0, output_tol
    1e-2; evaluations to Euler's t, deviation from the benchmark's reference flows). As the
    stiff phase of the switching pair at √h·α = 1 (the pair up to its switch at t = 8.9):
    RANK 8 refreshed every 15 steps, 637 at 2.5e-4; RANK 12, 660 at 3.2e-4; RANK 6 every 30
    steps, 708 at 2.1e-4 (the default, its RKC phase: 753 at 1.3e-4). At √h·α = 1e4 from
    the start, RANK 16: 812 at 1.7e-4 (this class, RANK 8: 601 at 1.8e-4). In ETDRK4's place
    at √h·α = 1, not adopted: a Rosenbrock W-method (ROS2, second order for any M), 1 447 at
    1.0e-4, its first-order error estimate holding dt to a third of RKC's; Cox & Matthews'
    ETDRK3, 757 at 2.1e-4. ESTIMATE_WEIGHT scales the estimate, so it is calibrated with
    output_tol (`dynamics.TOLERANCES`).

    REFRESH_EVERY was then set on this class, as the default's stiff phase at its
    tolerances (n = 2 000, h = 100, float64, seeds 0-2, evaluations summed to Euler's t). A
    stale basis costs more than its refresh: after a refresh the accepted dt jumps (1.1 to
    1.8 at √h·α = 1, seed 0) and the estimate falls from ~0.9 to ~0.3 of its bound, then
    both drift back as the top eigenspace turns. At √h·α = 1, switching at STIFF_RATIO 0.9:
    every 15 steps, 2 140; every 25, 2 256; every 12, 2 112; every 10, 2 088; every 8,
    2 108; every 7, 2 096; also when dt fell below 0.7 (0.8) of its largest since the last
    refresh, 2 132 (2 204). Every 8 steps, switching at half the boundary
    (`integrators.StiffnessSwitching`): 2 039. Fewer directions took fewer there (RANK 6
    every 8 steps, 1 969; RANK 4 every 6, 1 951) but more where more eigenvalues stand above
    the explicit part's bound: at √h·α = 1e4, RANK 4 2 335, RANK 6 2 063, RANK 8 2 055; at
    n = 10 000, √h·α = 1e-2, seed 0, RANK 6 1 748 against RANK 8's 1 468.
    """
    name = "etdrk4"
    order = 4  # of the error estimate: the method is fourth order
    RANK = 8
    REFRESH_EVERY = 8
    ESTIMATE_WEIGHT = 0.1
    # The smallest δ is ε^RESOLVED_POWER ‖w‖, ε^(−1/4) times w's rounding (8 000 ε‖w‖ in
    # float64, 53 ε‖w‖ in float32): below it w + δv loses δv to rounding. (At √h·α = 1e6, n =
    # 500, the bound on α·f's change alone took δ to 5e-14, a product 5 000 times off, and
    # the run to 8.8e-3 from the reference flow; with the floor, 3e-6 and 1.1e-4.)
    RESOLVED_POWER = 0.75

    def __init__(self, flow):
        self.flow = flow

    def initial_memory(self, point):
        leaves = tf.nest.flatten(point)
        size = sum(int(np.prod(leaf.shape)) for leaf in leaves)
        rank = min(self.RANK, size)
        return (tf.zeros((rank, size), leaves[0].dtype), tf.zeros((rank,), tf.float64),
                tf.zeros((), tf.int64), tf.zeros((), tf.int64), tf.zeros((), tf.float64),
                self._initial_control())

    @tf.autograph.experimental.do_not_convert  # graph control flow is explicit (tf.cond)
    def trial(self, problem, state, dt, memory):
        """The trial step and whether its error is within tolerance (`_LocalErrorControl`),
        after building or refreshing the basis when due."""
        if not hasattr(problem, "flatten"):
            raise ConfigError(
                "the etdrk4 integrator integrates a network's flow in weight space: the "
                "frozen-kernel dynamics takes euler, the Runge–Kutta pairs or rkc")
        basis, eigenvalues, until_refresh, built, delta, control = memory
        due = until_refresh <= 0
        basis, eigenvalues, delta, evaluations = tf.cond(
            due, lambda: self.refresh(problem, state, basis, built, delta),
            lambda: (basis, eigenvalues, delta, tf.zeros((), tf.int64)))
        built = tf.where(due, tf.ones_like(built), built)
        until_refresh = tf.where(due, tf.constant(self.REFRESH_EVERY, tf.int64), until_refresh)
        trial = self.step(problem, state, dt, basis, eigenvalues, control)
        until_refresh = tf.where(trial.accepted, until_refresh - 1,
                                 tf.zeros_like(until_refresh))
        return trial._replace(evaluations=trial.evaluations + evaluations,
                              memory=(basis, eigenvalues, until_refresh, built, delta,
                                      trial.memory))

    def step(self, problem, state, dt, basis, eigenvalues, control):
        """One ETDRK4 trial from the accepted `state` with M = Vᵀ Λ V (its memory: the
        controller's)."""
        dtype = basis.dtype
        h = tf.cast(dt, tf.float64)
        phi1, phi2, phi3 = phi_functions(-h * eigenvalues)
        half_phi1 = phi_functions(-h * eigenvalues / 2)[0]
        half_decay = tf.exp(-h * eigenvalues / 2)

        def apply(plain, on_basis, x):
            """φ(−dt M) x for the function φ that is `plain` at 0 and `on_basis` at −dt Λ."""
            return plain * x + tf.linalg.matvec(
                basis, tf.cast(on_basis - plain, dtype) * tf.linalg.matvec(basis, x),
                transpose_a=True)

        def nonlinear(y, grad):  # N_n(w_n + y) = −∇L + M y
            return -problem.flatten(grad) + apply(0.0, eigenvalues, y)

        def at(y):
            return problem.linear_combination((1.0, 1.0), (state.point, problem.unflatten(y)),
                                              0.0, (), ())

        hd = tf.cast(h, dtype)
        first = -problem.flatten(state.grad)
        a = hd / 2 * apply(1.0, half_phi1, first)
        after_a = nonlinear(a, problem.evaluate(at(a))[1])
        b = hd / 2 * apply(1.0, half_phi1, after_a)
        after_b = nonlinear(b, problem.evaluate(at(b))[1])
        c = apply(1.0, half_decay, a) + hd / 2 * apply(1.0, half_phi1, 2 * after_b - first)
        after_c = nonlinear(c, problem.evaluate(at(c))[1])
        y = hd * (apply(1 / 6, phi1 - 3 * phi2 + 4 * phi3, first)
                  + apply(1 / 3, 2 * (phi2 - 2 * phi3), after_a + after_b)
                  + apply(1 / 6, 4 * phi3 - phi2, after_c))
        point = at(y)
        new = integrators.FlowState(point, *problem.evaluate(point))
        estimate = self.ESTIMATE_WEIGHT * hd * (nonlinear(y, new.grad) - after_c)
        embedded = problem.linear_combination((1.0, 1.0), (point, problem.unflatten(estimate)),
                                              0.0, (), ())
        ok, measures, control = self._judge(problem, state, new, embedded,
                                            tf.reduce_sum(estimate**2), tf.reduce_sum(y**2),
                                            control)
        return integrators.Trial(new, ok, measures, tf.constant(4, tf.int64), control)

    def refresh(self, problem, state, basis, built, delta):
        """(V, Λ, δ, evaluations): built from the Krylov space of ∇L if `built` is 0, else one
        step of subspace iteration from `basis`; δ the finite-difference size, carried from
        product to product (`_product`; 0: start at √ε max(‖w‖, 1))."""
        point = problem.flatten(state.point)
        eps = float(np.finfo(point.dtype.as_numpy_dtype).eps)
        norm = tf.maximum(tf.norm(tf.cast(point, tf.float64)), 1.0)
        sizes = (tf.where(delta > 0, delta, np.sqrt(eps) * norm),
                 eps**self.RESOLVED_POWER * norm)
        return tf.cond(built > 0, lambda: self._iterate(problem, state, basis, sizes),
                       lambda: self._build(problem, state, basis, sizes))

    @staticmethod
    def _product(problem, state, vector, sizes):
        """(H v, the next sizes): H v ≈ (∇L(w + δ v) − ∇L(w))/δ for a unit `vector`, one
        gradient evaluation, `sizes` = (δ, its floor). The next δ is rescaled (by at most 10
        either way) to change α·f by √ε, where the difference of gradients is linear in δ
        (the loss bends on a scale ~1/β of F, which large α reaches with tiny weight
        changes; as in RKC's power iteration, `integrators.RungeKuttaChebyshev.
        spectral_radius`), but kept at its floor (RESOLVED_POWER) above w's rounding."""
        dtype = vector.dtype
        root_eps = float(np.sqrt(np.finfo(dtype.as_numpy_dtype).eps))
        size, floor = sizes
        moved = problem.linear_combination(
            (1.0, 1.0), (state.point, problem.unflatten(tf.cast(size, dtype) * vector)), 0.0,
            (), ())
        outputs, grad = problem.evaluate(moved)
        product = (problem.flatten(grad) - problem.flatten(state.grad)) / tf.cast(size, dtype)
        dout = tf.cast(problem.output_change(outputs, state.outputs), tf.float64)
        scale = tf.clip_by_value(tf.math.divide_no_nan(root_eps, dout), 0.1, 10.0)
        scale = tf.where(dout > 0, scale, 10.0)
        return product, (tf.maximum(size * scale, floor), floor)

    @staticmethod
    def _ritz(rows, products, rank):
        """The `rank` largest Ritz values of the Hessian on the span of orthonormal `rows`
        (H applied to them: `products`), and their vectors' coordinates in `rows`."""
        quotient = tf.matmul(tf.cast(rows, tf.float64), tf.cast(products, tf.float64),
                             transpose_b=True)
        values, vectors = tf.linalg.eigh((quotient + tf.transpose(quotient)) / 2)
        return values[::-1][:rank], tf.cast(vectors[:, ::-1][:, :rank], rows.dtype)

    def _build(self, problem, state, basis, sizes):
        """(V, Λ, δ, evaluations) from the Krylov space of ∇L at the accepted point: 2·RANK
        Hessian-vector products, each new direction orthogonalized (twice) against the
        others, and the RANK largest Ritz pairs."""
        rank, size = basis.shape
        krylov = min(2 * rank, size)
        grad = problem.flatten(state.grad)
        rows = tf.zeros((krylov, size), basis.dtype)

        def extend(j, direction, rows, products, sizes):
            rows = tf.tensor_scatter_nd_update(rows, [[j]], direction[None])
            product, sizes = self._product(problem, state, direction, sizes)
            products = tf.tensor_scatter_nd_update(products, [[j]], product[None])
            new = product
            for _ in range(2):
                new -= tf.linalg.matvec(rows, tf.linalg.matvec(rows, new), transpose_a=True)
            return j + 1, tf.math.divide_no_nan(new, tf.norm(new)), rows, products, sizes

        _, _, rows, products, (delta, _) = tf.while_loop(
            lambda j, *_: j < krylov, extend,
            (tf.constant(0), tf.math.divide_no_nan(grad, tf.norm(grad)), rows, rows, sizes))
        values, vectors = self._ritz(rows, products, rank)
        return (tf.matmul(vectors, rows, transpose_a=True), values, delta,
                tf.constant(krylov, tf.int64))

    def _iterate(self, problem, state, basis, sizes):
        """(V, Λ, δ, evaluations): Λ the Ritz values on the span of `basis`, V an orthonormal
        basis of H times their vectors (one step of subspace iteration, RANK products)."""
        rank = basis.shape[0]

        def apply(j, products, sizes):
            product, sizes = self._product(problem, state, basis[j], sizes)
            return j + 1, tf.tensor_scatter_nd_update(products, [[j]], product[None]), sizes

        _, products, (delta, _) = tf.while_loop(lambda j, *_: j < rank, apply,
                                                (tf.constant(0), tf.zeros_like(basis), sizes))
        values, vectors = self._ritz(basis, products, rank)
        rotated, _ = tf.linalg.qr(tf.transpose(tf.matmul(vectors, products, transpose_a=True)))
        return tf.transpose(rotated), values, delta, tf.constant(rank, tf.int64)
