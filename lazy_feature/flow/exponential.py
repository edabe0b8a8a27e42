"""Exponential Runge–Kutta on a deflated Hessian (`DeflatedExponential`): the few stiff
directions of gradient flow, the Hessian's top eigenspace, integrated exactly, the rest by a
fourth-order Runge–Kutta method.

Gradient flow ẇ = −∇L (eq. 7) turns stiff in long flows: the Hessian's largest eigenvalues
hold an explicit method's dt (RKC pays √(dt·ρ) stages a step for them), but its spectrum
falls off fast (docs/integrators.md). So the flow is split as

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
(`runge_kutta.LocalErrorControl`, order 4); ESTIMATE_WEIGHT is calibrated together with the
default output_tol (`registry`).

Vectors are flat (the problem's `flatten` and `unflatten`: the network's weights in
Euclidean coordinates); the frozen-kernel flow, whose points live in function space, has
none and takes a substitute (`registry.Integrator.function_space`). Precision: Λ, the
Rayleigh quotients and the φ-functions of −dt Λ are float64 (RANK numbers; −dt λ reaches
10³ in the lazy regime, where φ's closed forms need expm1 and its series cancellation-free),
the vectors in the weights' dtype; the stages and the error estimate are displacements from
w_n, so in float32 the estimate carries no rounding of w itself.
"""
import math

import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.flow.integrators import FlowState, Trial
from lazy_feature.flow.runge_kutta import LocalErrorControl
from lazy_feature.model.replicas import squared_norm

_SERIES_TERMS = 20
# 1/(k + j)!, the series' coefficients: a row for each j = 1, 2, 3, a column for each power k.
_SERIES = np.array([[1.0 / math.factorial(k + j) for k in range(_SERIES_TERMS)]
                    for j in (1, 2, 3)])


def phi_functions(z):
    """(φ₁, φ₂, φ₃)(z) = Σ_k z^k/(k + j)!, j = 1, 2, 3, of a float64 tensor: e.g. φ₁(z) =
    (e^z − 1)/z. Below |z| = 1 by their series (20 terms: the closed forms cancel there, φ₃'s
    by ε/|z|³), above by the closed forms on expm1. The series are one product of their
    coefficients with the powers z^k, a few ops in a step's graph where a loop over the terms
    would put hundreds."""
    z = tf.convert_to_tensor(z, tf.float64)
    small = tf.abs(z) < 1.0
    zs = tf.where(small, z, tf.zeros_like(z))
    zb = tf.where(small, tf.ones_like(z), z)
    expm1 = tf.math.expm1(zb)
    closed = (expm1 / zb, (expm1 - zb) / zb**2, (expm1 - zb - zb**2 / 2) / zb**3)
    powers = tf.math.cumprod(tf.repeat(zs[tf.newaxis], _SERIES_TERMS, axis=0), axis=0,
                             exclusive=True)  # z^k, k = 0 … _SERIES_TERMS − 1
    series = tf.tensordot(tf.constant(_SERIES), powers, axes=1)
    return tuple(tf.where(small, series[j], exact) for j, exact in enumerate(closed))


def orthonormal_rows(matrix):
    """Orthonormal rows, the j-th spanning with those before it what `matrix`'s first j rows
    span (Gram–Schmidt, each row orthogonalized twice: the rows of QR's Q for its transpose,
    up to signs); a zero row stays zero. Unrolled over the few rows, it costs a third of
    TensorFlow's QR of the tall P × RANK transpose (benchmarks/results/flow_benchmark.md)."""
    rows = []
    for row in tf.unstack(matrix):
        for _ in range(2):
            for done in rows:
                row -= tf.reduce_sum(done * row) * done
        rows.append(tf.math.divide_no_nan(row, tf.norm(row)))
    return tf.stack(rows)


class DeflatedExponential(LocalErrorControl):
    """ETDRK4 on the Hessian's top-RANK eigenspace (module docstring): four gradient
    evaluations a trial step (three stages and the next step's first), one forward pass for
    the error estimate, and the basis's Hessian-vector products when it is built or
    refreshed.

    Its memory is (basis V, RANK × P, rows orthonormal; Λ, float64; accepted steps until the
    next refresh; 1 once V is built; the finite-difference size δ of the last Hessian-vector
    product; the step-size controller's), all zero at the start.
    """
    order = 4  # of the error estimate: the method is fourth order
    RANK = 8
    REFRESH_EVERY = 8
    ESTIMATE_WEIGHT = 0.1
    # The smallest δ is ε^RESOLVED_POWER ‖w‖, ε^(−1/4) times w's rounding (8 000 ε‖w‖ in
    # float64, 53 ε‖w‖ in float32): below it w + δv loses δv to rounding.
    RESOLVED_POWER = 0.75
    # The P-sized vectors it keeps besides Euler's (`run.resources`): its basis of RANK
    # directions, and while it is built the Krylov space's 2·RANK directions and their
    # Hessian products (more than a step's eight stage vectors).
    vectors = 5 * RANK

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
        """The trial step and whether its error is within tolerance (`LocalErrorControl`),
        after building or refreshing the basis when due."""
        if not hasattr(problem, "flatten"):
            raise ConfigError(
                "the etdrk4 integrator needs the weights' coordinates (a problem with flatten "
                "and unflatten): this flow has none")
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
        new = FlowState(point, *problem.evaluate(point))
        estimate = self.ESTIMATE_WEIGHT * hd * (nonlinear(y, new.grad) - after_c)
        embedded = problem.linear_combination((1.0, 1.0), (point, problem.unflatten(estimate)),
                                              0.0, (), ())
        ok, measures, control = self._judge(problem, state, new, embedded,
                                            squared_norm([estimate]), squared_norm([y]),
                                            control)
        return Trial(new, ok, measures, tf.constant(4, tf.int64), control)

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
    def _product(problem, state, grad, vector, sizes):
        """(H v, the next sizes): H v ≈ (∇L(w + δ v) − ∇L(w))/δ for a unit `vector`, one
        gradient evaluation, `grad` ∇L(w) flat, `sizes` = (δ, its floor). The next δ is
        rescaled (by at most 10 either way) to change α·f by √ε, where the difference of
        gradients is linear in δ (the loss bends on a scale ~1/β of F, which large α reaches
        with tiny weight changes; as in RKC's power iteration, `rkc.RungeKuttaChebyshev.
        spectral_radius`), but kept at its floor (RESOLVED_POWER) above w's rounding."""
        dtype = vector.dtype
        root_eps = float(np.sqrt(np.finfo(dtype.as_numpy_dtype).eps))
        size, floor = sizes
        moved = problem.linear_combination(
            (1.0, 1.0), (state.point, problem.unflatten(tf.cast(size, dtype) * vector)), 0.0,
            (), ())
        outputs, moved_grad = problem.evaluate(moved)
        product = (problem.flatten(moved_grad) - grad) / tf.cast(size, dtype)
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
        # A product that overflowed (a flow at rest, dt huge: --width=1) would make eigh
        # fail; without it the basis is empty, and the step's error estimate judges the step.
        quotient = tf.where(tf.math.is_finite(quotient), quotient, tf.zeros_like(quotient))
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
            product, sizes = self._product(problem, state, grad, direction, sizes)
            new = product
            for _ in range(2):
                new -= tf.linalg.matvec(rows, tf.linalg.matvec(rows, new), transpose_a=True)
            return (j + 1, tf.math.divide_no_nan(new, tf.norm(new)), rows,
                    products.write(j, product), sizes)

        _, _, rows, products, (delta, _) = tf.while_loop(
            lambda j, *_: j < krylov, extend,
            (tf.constant(0), tf.math.divide_no_nan(grad, tf.norm(grad)), rows,
             tf.TensorArray(basis.dtype, krylov, element_shape=(size,)), sizes))
        values, vectors = self._ritz(rows, products.stack(), rank)
        return (tf.matmul(vectors, rows, transpose_a=True), values, delta,
                tf.constant(krylov, tf.int64))

    def _iterate(self, problem, state, basis, sizes):
        """(V, Λ, δ, evaluations): Λ the Ritz values on the span of `basis`, V an orthonormal
        basis of H times their vectors (one step of subspace iteration, RANK products)."""
        rank, size = basis.shape
        grad = problem.flatten(state.grad)

        def apply(j, products, sizes):
            product, sizes = self._product(problem, state, grad, basis[j], sizes)
            return j + 1, products.write(j, product), sizes

        _, products, (delta, _) = tf.while_loop(
            lambda j, *_: j < rank, apply,
            (tf.constant(0), tf.TensorArray(basis.dtype, rank, element_shape=(size,)), sizes))
        products = products.stack()
        values, vectors = self._ritz(basis, products, rank)
        rotated = orthonormal_rows(tf.matmul(vectors, products, transpose_a=True))
        return rotated, values, delta, tf.constant(rank, tf.int64)
