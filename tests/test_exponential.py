"""The deflated exponential integrator (etdrk4): its φ-functions against the matrix
exponential, exactness on a quadratic loss its basis spans, fourth order outside it, the
Hessian's top eigenpairs found, a stiff flow crossed in far fewer evaluations than RKC, the
switching pair's hand-over to it, and its runs' fidelity, precision and checkpoints."""
import dataclasses

import numpy as np
import pytest
import scipy.linalg
import tensorflow as tf

from lazy_feature.flow import exponential
from lazy_feature.study import fidelity
from lazy_feature.flow import integrators, registry, runge_kutta
from lazy_feature.kernel import frozen
from lazy_feature.run import artifact, runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.registry import INTEGRATORS
from lazy_feature.errors import ConfigError
from tests.helpers import (D, T_END, X, LinearFlow, StopAtStep, exact_outputs,
                           relative_distance, small_task, stiff_linear_flow, tight_reference)

EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR = INTEGRATORS["bogacki_shampine_etdrk4"].stiff_factor


@pytest.mark.parametrize("z", [-1e3, -50.0, -1.001, -0.999, -1e-3, 0.0, 1e-3, 0.5, 2.0])
def test_phi_functions_match_the_matrix_exponential(z):
    # φ_j(z) is the (0, j) entry of exp of the 4×4 matrix [[z, 1, 0, 0], [0, 0, 1, 0],
    # [0, 0, 0, 1], 0] (Sidje 1998), float64 brute force; the series below |z| = 1 and the
    # closed forms above agree with it to rounding on both sides of that switch.
    augmented = np.diag([1.0, 1.0, 1.0], 1)
    augmented[0, 0] = z
    expected = scipy.linalg.expm(augmented)[0, 1:]
    found = [float(phi) for phi in exponential.phi_functions(tf.constant(z, tf.float64))]
    np.testing.assert_allclose(found, expected, rtol=1e-14, atol=0)


def test_phi_functions_of_a_vector_are_those_of_each_entry():
    # A step takes them of −dt Λ, a vector across the switch at |z| = 1.
    z = np.array([-1e3, -1.001, -0.999, 0.0, 0.5])
    together = np.stack(exponential.phi_functions(tf.constant(z)))
    alone = np.array([[float(phi) for phi in exponential.phi_functions(tf.constant(v))]
                      for v in z]).T
    np.testing.assert_allclose(together, alone, rtol=1e-15, atol=0)  # to rounding


def test_orthonormal_rows_are_qr_up_to_signs():
    # The refreshed basis: row j spans with those before it what the first j rows span, as
    # QR's Q of the transpose does (float64 brute force); a zero row stays zero.
    scales = np.array([[1.0], [1e-3], [5.0], [1.0]])
    rows = np.random.default_rng(0).normal(size=(4, 50)) * scales
    found = exponential.orthonormal_rows(tf.constant(rows, tf.float32)).numpy()
    q = np.linalg.qr(rows.T)[0].T
    np.testing.assert_allclose(np.abs(np.sum(found * q, axis=1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(found @ found.T, np.eye(4), atol=1e-6)
    zero_last = np.vstack([rows[:2], np.zeros((1, 50))])
    with_zero = exponential.orthonormal_rows(tf.constant(zero_last, tf.float32)).numpy()
    np.testing.assert_array_equal(with_zero[2], 0.0)


def _fixed_steps(steps, rank):
    """(max |F(T_END) − exact|, output_ratio of the first step) after `steps` equal steps of
    etdrk4 with a basis of `rank` directions on the quadratic loss of a linear model."""
    problem = LinearFlow()
    integrator = registry.get(GradientFlow(integrator="etdrk4"))
    integrator.RANK = rank
    w = tf.zeros(D, tf.float64)
    state, memory = integrators.FlowState(w, *problem.evaluate(w)), integrator.initial_memory(w)
    dt, first = tf.constant(T_END / steps, tf.float64), None
    for _ in range(steps):
        trial = integrator.trial(problem, state, dt, memory)
        state, memory = trial.state, trial.memory
        first = trial.measures["output_ratio"].numpy() if first is None else first
    return np.max(np.abs(state.outputs.numpy() - exact_outputs(T_END))), first


def test_exact_on_a_quadratic_loss_whose_hessian_its_basis_spans():
    # Rank D: the basis spans the Hessian XᵀX/N, whose flow ETDRK4 then integrates exactly
    # (its linear part by φ-functions, N_n constant), whatever dt; rounding and the
    # finite-difference Hessian-vector products leave ~1e-12.
    error, _ = _fixed_steps(2, D)
    assert error < 1e-10


@pytest.mark.parametrize("rank", [1, 2])
def test_fourth_order_outside_its_basis(rank):
    # With fewer directions than the Hessian has, the rest is the classical RK4: halving dt
    # divides the global error by 16, and the error estimate (an embedded third-order
    # solution's) by 16 too.
    coarse, coarse_estimate = _fixed_steps(4, rank)
    fine, fine_estimate = _fixed_steps(8, rank)
    assert 0.75 * 16 < coarse / fine < 1.35 * 16
    assert 0.75 * 16 < coarse_estimate / fine_estimate < 1.35 * 16


def test_the_basis_holds_the_hessians_top_eigenpairs():
    # Built from the Krylov space of ∇L (2·RANK products, each one gradient evaluation), then
    # refreshed by subspace iteration (RANK products): on a quadratic loss whose Hessian has
    # eigenvalues 100, 30, 3, 1, 0.3, the Ritz values are its two largest, the basis is
    # orthonormal and holds their eigenvectors.
    rng = np.random.default_rng(1)
    eigenvalues = np.array([100.0, 30.0, 3.0, 1.0, 0.3])
    u, _ = np.linalg.qr(rng.normal(size=(12, D)))
    v, _ = np.linalg.qr(rng.normal(size=(D, D)))
    problem = LinearFlow((u * np.sqrt(12 * eigenvalues)) @ v.T, np.sign(rng.normal(size=12)))
    w = tf.constant(np.linspace(-1, 1, D))
    state = integrators.FlowState(w, *problem.evaluate(w))
    integrator = registry.get(GradientFlow(integrator="etdrk4"))
    integrator.RANK = 2
    basis, delta = integrator.initial_memory(w)[0], tf.constant(0.0, tf.float64)
    for built, evaluations in ((0, 4), (1, 2)):
        basis, values, delta, count = integrator.refresh(problem, state, basis,
                                                         tf.constant(built), delta)
        assert int(count) == evaluations
        np.testing.assert_allclose(values.numpy(), eigenvalues[:2], rtol=1e-6)
        np.testing.assert_allclose(basis.numpy() @ basis.numpy().T, np.eye(2), atol=1e-12)
        held = np.linalg.norm(basis.numpy() @ v[:, :2], axis=0)
        np.testing.assert_allclose(held, 1.0, atol=1e-6)


def test_crosses_a_stiff_flow_in_far_fewer_evaluations_than_rkc():
    # Hessian eigenvalues from 0.1 to 300 over 12 directions: the top 8 integrated exactly,
    # RK4 is stable on the rest (≤ 0.9) at dt ~ 3, where RKC pays √(dt·300) stages a step
    # (measured: 177 evaluations at 7.6e-7 against RKC's 1 182 at 2.0e-5).
    error, evaluations, _ = stiff_linear_flow("etdrk4", 1e-5)
    rkc_error, rkc_evaluations, _ = stiff_linear_flow("rkc", 1e-5)
    assert error < rkc_error < 1e-3
    assert evaluations < rkc_evaluations / 4


@pytest.mark.slow
def test_the_frozen_kernel_takes_rkc_for_it():
    # The frozen-kernel flow lives in function space, with no weight coordinates for a basis:
    # a run integrated by etdrk4 has its frozen kernel integrated by rkc at
    # FUNCTION_SPACE_RKC_TOL; any other problem without them is refused in one line.
    k, y = X @ X.T, np.sign(X[:, 0])
    by_etdrk4 = frozen.frozen_kernel_dynamics(k, y, flow=GradientFlow(integrator="etdrk4"))
    by_rkc = frozen.frozen_kernel_dynamics(k, y, flow=GradientFlow(
        integrator="rkc", output_tol=registry.FUNCTION_SPACE_RKC_TOL))
    assert by_etdrk4["converged"] and by_etdrk4["steps"] == by_rkc["steps"]
    np.testing.assert_array_equal(by_etdrk4["a"], by_rkc["a"])
    problem, w = _WithoutCoordinates(), tf.zeros(D, tf.float64)
    integrator = registry.get(GradientFlow(integrator="etdrk4"))
    with pytest.raises(ConfigError, match="needs the weights' coordinates"):
        integrator.trial(problem, integrators.FlowState(w, *problem.evaluate(w)),
                         tf.constant(0.1, tf.float64), integrator.initial_memory(w))


class _WithoutCoordinates:
    """`LinearFlow` without flatten and unflatten, as a flow in function space."""

    def __init__(self):
        self.flow = LinearFlow()

    def __getattr__(self, name):
        if name in ("flatten", "unflatten"):
            raise AttributeError(name)
        return getattr(self.flow, name)


@pytest.mark.slow
def test_float32_is_as_faithful_as_float64_euler(tmp_path):
    # In float32 (the precision policy's choice where α·h·ε₃₂ < 1e-3) the finite-difference
    # size keeps to its floor above w's rounding, and the error estimate holds no rounding of
    # w. Against a float64 reference that resolves float32's rounding (its own error ~2e-9,
    # float32's ε ~1e-7), each run at its own stop: the float32 etdrk4 run and the default in
    # float32 are as close as the paper's scheme in float64, and float32 costs etdrk4 little.
    task = small_task()
    base = TrainConfig(n_train=10, n_test=200, width=8, depth=2, alpha=1.0)
    reference = fidelity.reference_flow(base, task, reference=tight_reference(base))
    deviation = {}
    for name, dtype in (("euler", "float64"), ("etdrk4", "float32"), ("etdrk4", "float64"),
                        ("auto", "float32")):
        config = dataclasses.replace(base, dtype=dtype, integrator=name)
        run_dir = str(tmp_path / f"{name}_{dtype}")
        assert runner.train(config, run_dir, task=task)["converged"]
        deviation[name, dtype] = relative_distance(
            np.load(f"{run_dir}/{artifact.TEST_OUTPUTS}"), reference.test_outputs)
    euler = deviation["euler", "float64"]
    assert 3e-4 < euler < 3e-3  # (measured 1.1e-3; etdrk4 9.4e-4 in float64)
    for run in (("etdrk4", "float32"), ("etdrk4", "float64"), ("auto", "float32")):
        assert deviation[run] <= euler, run
    assert deviation["etdrk4", "float32"] < 1.5 * deviation["etdrk4", "float64"]


@pytest.mark.slow
def test_a_checkpoint_with_a_basis_of_another_rank_is_refused_in_one_line(tmp_path,
                                                                         monkeypatch):
    # A run killed under a version whose basis had 6 directions, resumed under one with 8:
    # its checkpoint does not fit, which is said in one line (not a shape traceback).
    task = small_task()
    config = TrainConfig(n_train=10, n_test=200, width=8, depth=2, alpha=1.0, dtype="float64",
                         max_dgrad=5e-2, integrator="etdrk4")
    monkeypatch.setattr(exponential.DeflatedExponential, "RANK", 6)
    with pytest.raises(RuntimeError, match="killed"):
        runner.train(config, str(tmp_path), task=task, checkpoint_seconds=0.0,
                     extra_callbacks=[StopAtStep(3, RuntimeError("killed"))])
    monkeypatch.setattr(exponential.DeflatedExponential, "RANK", 8)
    with pytest.raises(runner.RunDirError, match="does not fit this run's model .*shape"):
        runner.train(config, str(tmp_path), task=task)


@pytest.mark.slow
def test_a_pair_hands_a_stiff_flow_to_etdrk4():
    # Held at dt·λ_max = 2.51 by the stiff modes, Bogacki–Shampine switches (RKC's power
    # iteration tells when) to etdrk4 at EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR times its
    # tolerance (measured: 344 evaluations at 2.9e-6; switching to RKC 767 at 1.1e-4, the pair
    # alone 3 754 at 3.5e-6).
    pair = stiff_linear_flow("bogacki_shampine", 1e-5)
    to_rkc = stiff_linear_flow("bogacki_shampine_rkc", 1e-5)
    error, evaluations, _ = stiff_linear_flow("bogacki_shampine_etdrk4", 1e-5)
    assert error < 2 * pair[0] and error < to_rkc[0]
    assert evaluations < to_rkc[1] / 1.5 and evaluations < pair[1] / 5


@pytest.mark.parametrize("name, switches", [("bogacki_shampine_etdrk4", True),
                                            ("bogacki_shampine_rkc", False)])
def test_the_pair_hands_over_to_etdrk4_at_half_its_boundary(name, switches):
    # An accepted pair step at dt·ρ = 0.7 of Bogacki–Shampine's boundary (ρ as RKC's power
    # iteration left it): etdrk4, which has no stability bound to wait for, takes over
    # (DEFLATED_STIFF_RATIO 0.5); RKC waits for 0.9 of it (STIFF_RATIO).
    problem, w = LinearFlow(), tf.zeros(D, tf.float64)
    integrator = registry.get(GradientFlow(integrator=name))
    stiff, since_check, pair_memory, rkc_memory, *own = integrator.initial_memory(w)
    rho = tf.constant(1e3, tf.float64)
    memory = (stiff, since_check, pair_memory, (rho,) + tuple(rkc_memory[1:]), *own)
    dt = 0.7 * runge_kutta.BOGACKI_SHAMPINE.stability_boundary / rho
    trial = integrator.trial(problem, integrators.FlowState(w, *problem.evaluate(w)), dt, memory)
    assert bool(trial.accepted)
    assert int(trial.memory[0]) == int(switches)


def test_a_switching_pairs_etdrk4_phase_takes_its_own_factor():
    config = TrainConfig(integrator="bogacki_shampine_etdrk4", width=100, alpha=1e-3)
    output_tol = config.resolved().output_tol
    assert config.resolved().stiff_output_tol == pytest.approx(
        EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR * output_tol)
    switching = registry.get(config.flow())
    assert isinstance(switching.stiff, exponential.DeflatedExponential)
    assert switching.stiff.flow.output_tol == pytest.approx(
        EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR * output_tol)
    assert switching.rkc.flow.integrator == "rkc"  # (its power iteration tells when)


@pytest.mark.slow
def test_the_frozen_kernel_takes_the_pair_switching_to_rkc_for_the_one_switching_to_etdrk4():
    k, y = X @ X.T, np.sign(X[:, 0])
    by_etdrk4 = frozen.frozen_kernel_dynamics(
        k, y, flow=GradientFlow(integrator="bogacki_shampine_etdrk4"))
    by_rkc = frozen.frozen_kernel_dynamics(k, y, flow=GradientFlow(
        integrator="bogacki_shampine_rkc", stiff_output_tol=registry.FUNCTION_SPACE_RKC_TOL))
    assert by_etdrk4["converged"] and by_etdrk4["steps"] == by_rkc["steps"]
    np.testing.assert_array_equal(by_etdrk4["a"], by_rkc["a"])
