"""Frozen-kernel dynamics (Appendix A, eqs. 25-28): the gradient flow of the model linearized
at w1, integrated in function space with the network's step control and integrators, and its
predictions and test error.

Precision: float64 throughout (see `frozen_kernel_dynamics`).
"""
import functools
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from lazy_feature.flow import integrators, registry
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.kernel.ntk import Kernel, gram, tiles
from lazy_feature.model import losses

if TYPE_CHECKING:
    import keras


def frozen_kernel_dynamics(k_train: npt.ArrayLike, y_train: npt.ArrayLike, loss: str = "soft_hinge",
                           loss_beta: float = losses.SOFT_HINGE_BETA,
                           flow: GradientFlow = GradientFlow(), max_time: float = np.inf,
                           max_steps: int = 1_000_000, max_trials: int = 1_000_000,
                           initial_outputs: npt.ArrayLike | None = None) -> dict[str, Any]:
    """Gradient flow of the model linearized at w1, in function space (eqs. 25-28).

    With the α⁻²-scaled loss of eq. 7, ẇ = −∇L = −(1/(α n)) Σ_μ ℓ'(F_μ, y_μ) ∇f(w1, x_μ), so
    F = α ∇f(w1)·(w − w1) moves as Ḟ(x) = α ∇f(w1, x)·ẇ = −(1/n) Σ_μ ℓ'(F_μ, y_μ) Θ(x, x_μ)
    (eq. 28), whatever α. F starts at 0 (centered, eq. 6), or at α f(w0, x) for a model
    trained uncentered (Appendix I, `initial_outputs`), and stays F(x) = F(0, x) +
    Σ_μ Θ(x, x_μ) a_μ with a = −(1/n) ∫ ℓ'(F_train, y) dt, so `a` gives F anywhere
    (`predict_frozen`).

    Steps follow the network's control and integrator (`GradientFlow`, `registry`) through
    the same accept/reject step (`integrators.advance`): eq. 8 bounds max|ΔF_train| =
    α max|Δf|, and eq. 9 compares weight-space gradients, whose norms the kernel gives: with
    c = ℓ'(F, y), ‖∇L‖² = cᵀΘc / (α² n²) and ‖∇L_i − ∇L_(i+1)‖² =
    (c_i − c_(i+1))ᵀ Θ (c_i − c_(i+1)) / (α² n²); the ratios of eq. 9 and of a Runge–Kutta
    pair's error do not depend on the common factor α² n², which is left out (`_KernelFlow`).
    An integrator that needs the weights' coordinates, which function space lacks, hands the
    flow to its registered substitute (`registry.in_function_space`; an evaluation costs one
    n × n product, not a pass of the network).

    Precision: float64 throughout. F adds up thousands of increments dt·Θc/n and is compared
    with 1 by the stopping rule and, in the lazy limit, with networks whose outputs differ from
    it by ~1/(√h α); a and the increments are larger than F where Θ is ill-conditioned
    (its spectrum spans decades). The cost, one n × n product per evaluation, is the same.
    The loop runs inside one TensorFlow graph: a trial step costs its products, not a call.

    Args:
      k_train: Θ(w1; x_train, x_train), shape (n, n).
      y_train: labels ±1, shape (n,).
      loss, loss_beta: the per-pattern loss ℓ (`losses.get`).
      flow: the step-size control; use the network's to compare with it.
      max_time: stop, not converged, once t reaches this.
      max_steps: stop, not converged, after this many accepted steps (as `TrainConfig`'s).
      max_trials: stop, not converged, after this many trial steps (accepted or rejected).
      initial_outputs: F on the training set at t = 0, shape (n,); None for 0 (centered).

    Returns:
      dict(a, train_outputs=F(x_train), t, steps (accepted), rejected, converged,
      gradient_evaluations (products Θc, the first at t = 0 included)), where converged means
      every margin F_μ y_μ exceeds 1, the network's stopping rule.
    """
    y = tf.constant(y_train, tf.float64)
    problem = _KernelFlow(tf.constant(k_train, tf.float64), y, losses.get(loss, loss_beta))
    flow = registry.in_function_space(flow)
    integrator = registry.get(flow)

    @functools.partial(tf.function, autograph=False)  # its control flow is explicit
    def integrate(state, memory, dt):
        """Trial steps until every margin exceeds 1 or a budget is spent, in one graph
        (no Python between steps): returns the final state, t, the steps accepted, the
        trial steps, the gradient evaluations and whether it converged."""
        def going(state, memory, dt, t, steps, attempts, evaluations, converged):
            return (tf.logical_not(converged) & (t < max_time) & (steps < max_steps)
                    & (attempts < max_trials))

        def step(state, memory, dt, t, steps, attempts, evaluations, converged):
            advanced = integrators.advance(integrator, problem, state, dt, memory,
                                           land=flow.landing_tol)
            accepted, trial = advanced.accepted, advanced.trial
            fitted = tf.reduce_min(trial.state.outputs * y) > 1.0
            return (advanced.state, trial.memory, advanced.next_dt,
                    t + tf.where(accepted, dt, tf.zeros_like(dt)),
                    steps + tf.cast(accepted, tf.int64), attempts + 1,
                    evaluations + trial.evaluations, tf.where(accepted, fitted, converged))

        zero = tf.constant(0, tf.int64)
        state, _, _, t, steps, attempts, evaluations, converged = tf.while_loop(
            going, step, (state, memory, dt, tf.zeros_like(dt), zero, zero, zero,
                          tf.constant(False)))
        return state, t, steps, attempts, evaluations, converged

    F = tf.zeros_like(y) if initial_outputs is None else tf.constant(initial_outputs, tf.float64)
    start = (F, tf.zeros_like(y))  # F and a
    state = integrators.FlowState(start, *problem.evaluate(start))
    state, t, steps, attempts, evaluations, converged = integrate(
        state, integrator.initial_memory(start), tf.constant(flow.dt0, tf.float64))
    (F, a), steps = state.point, int(steps)
    return dict(a=a.numpy(), train_outputs=F.numpy(), t=float(t), steps=steps,
                rejected=int(attempts) - steps, converged=bool(converged),
                gradient_evaluations=1 + int(evaluations))


class _KernelFlow:
    """The frozen-kernel flow (eq. 28) for `integrators`, in function space.

    A point is (F, a) on the training set, a gradient (c, Θc) with c = ℓ'(F, y): the
    weight-space gradient is ∇L ∝ Σ_μ c_μ ∇f(w1, x_μ), so moving w by −dt ∇L moves F by
    −(dt/n) Θc and a by −(dt/n) c, and weight-space inner products are ⟨c, Θc'⟩ (the common
    factor α² n² left out). A displacement (ΔF, Δa) of a point, ΔF = ΘΔa, has the
    weight-space squared norm ⟨ΔF, Δa⟩ (up to a constant factor), which `squared_norm` gives
    too. An evaluation costs one product Θc; the outputs are F itself.
    """

    def __init__(self, theta, y, per_pattern):
        self.theta, self.y = theta, y
        self.n = float(y.shape[0])
        self.derivative = _derivative(per_pattern)

    def evaluate(self, point):
        F = point[0]
        c = self.derivative(F, self.y)
        return F, (c, tf.linalg.matvec(self.theta, c))

    def outputs(self, point):
        return point[0]

    def combine(self, coefficients, grads):
        return tuple(integrators.combination(coefficients, g) for g in zip(*grads))

    def linear_combination(self, coefficients, points, dt, grad_coefficients, grads):
        F, a = (integrators.combination(coefficients, p) for p in zip(*points))
        if not grads:
            return (F, a)
        c, kc = self.combine(grad_coefficients, grads)
        return (F - (dt / self.n) * kc, a - (dt / self.n) * c)

    def difference(self, grad_a, grad_b):
        return tuple(u - v for u, v in zip(grad_a, grad_b))

    def squared_norm(self, grad):
        return tf.tensordot(grad[0], grad[1], 1)

    def output_change(self, F_a, F_b):
        return tf.reduce_max(tf.abs(F_a - F_b))

    def margins(self, F):
        return F * self.y

    def lowest(self, value):
        return value

    def highest(self, value):
        return value


def predict_frozen(network: "keras.Model", x_test: npt.ArrayLike, x_train: npt.ArrayLike,
                   a: npt.ArrayLike, block_size: int | None = None,
                   initial_outputs: npt.ArrayLike | None = None) -> np.ndarray:
    """F(x) = F(0, x) + Σ_μ Θ(w; x, x_μ) a_μ on x_test, streamed over tiles of Θ(test, train).

    initial_outputs: F(0, x) on x_test, None for 0 (centered).
    """
    x_test, x_train = np.asarray(x_test), np.asarray(x_train)
    a = np.asarray(a, np.float64)
    outputs = (np.zeros(len(x_test)) if initial_outputs is None
               else np.array(initial_outputs, np.float64))
    for rows, cols, (block,) in tiles([Kernel(network, x_test, block_size)], x_test, x_train):
        outputs[rows] += tf.linalg.matvec(block, a[cols]).numpy()
    return outputs


def frozen_kernel_test_error(network: "keras.Model", x_train: npt.ArrayLike,
                             y_train: npt.ArrayLike, x_test: npt.ArrayLike,
                             y_test: npt.ArrayLike, block_size: int | None = None,
                             initial_outputs: tuple[npt.ArrayLike, npt.ArrayLike] | None = None,
                             **dynamics: Any) -> dict[str, Any]:
    """Train the frozen kernel Θ(w) of `network` (Appendix A) and evaluate it on the test set.

    Θ(train, train) is held (n_train² floats); the test predictions are streamed.
    initial_outputs: (F(0) on x_train, F(0) on x_test) for a model trained uncentered, None
    for the centered F(0) = 0. `dynamics` goes to `frozen_kernel_dynamics` (loss,
    loss_beta, flow, max_time, max_steps, max_trials).

    Returns:
      `frozen_kernel_dynamics`'s dict plus test_outputs and test_error, the fraction of test
      points misclassified (`losses.error_rate`).
    """
    train0, test0 = (None, None) if initial_outputs is None else initial_outputs
    result = frozen_kernel_dynamics(gram(network, x_train, block_size=block_size), y_train,
                                    initial_outputs=train0, **dynamics)
    test_outputs = predict_frozen(network, x_test, x_train, result["a"], block_size, test0)
    test_error = float(losses.error_rate(test_outputs, y_test))
    return dict(result, test_outputs=test_outputs, test_error=test_error)


def _derivative(per_pattern):
    """ℓ'(F, y) = ∂ℓ/∂F elementwise, by autodiff of the per-pattern loss."""
    def derivative(F, y):
        with tf.GradientTape() as tape:
            tape.watch(F)
            total = tf.reduce_sum(per_pattern(F, y))
        return tape.gradient(total, F)
    return derivative

