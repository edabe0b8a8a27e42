"""The integrators of gradient flow (eqs. 7-9): orders against the matrix exponential of a
quadratic loss, fidelity against the reference flow (Appendix G), stopping, resume, NaN."""
import dataclasses

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.run import artifact
from lazy_feature.run import callbacks
from lazy_feature.study import fidelity
from lazy_feature.flow import integrators, registry, rkc, runge_kutta
from lazy_feature.kernel import frozen
from lazy_feature.run import runner
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.run.config import TrainConfig
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.flow.registry import AUTO, INTEGRATORS
from lazy_feature.errors import ConfigError
from tests.helpers import (D, N, T_END, X, Y, LinearFlow, exact_outputs, relative_distance,
                           small_task, stage_in_process, stiff_linear_flow, tight_reference)

TOLERANCES = {name: registered.tolerances for name, registered in INTEGRATORS.items()}
STIFF_OUTPUT_TOL_FACTOR = INTEGRATORS["bogacki_shampine_rkc"].stiff_factor
EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR = INTEGRATORS["bogacki_shampine_etdrk4"].stiff_factor


def test_margins_stay_below_one_up_to_t_end():
    margins = np.array([exact_outputs(t) * Y for t in np.linspace(0, T_END, 200)])
    assert margins.max() < 0.99


class KinkedFlow:
    """ẇ = −∇L of L(w) = ½‖w − a‖² + κ|w₁| (a point and its "outputs" are w): ∇L jumps by
    2κ where w₁ crosses 0. With |a₁| < κ the flow from w₁ > 0 reaches w₁ = 0 at
    t* = ln((w₁(0) − a₁ + κ)/(κ − a₁)) and then slides along the kink (Filippov: ∇L points
    towards it from both sides), while w₂ = a₂ + (w₂(0) − a₂) e^(−t) throughout."""
    A, KAPPA, W0 = np.array([0.2, 1.0]), 0.5, np.array([1.0, 0.0])
    T_KINK = np.log((W0[0] - A[0] + KAPPA) / (KAPPA - A[0]))

    def evaluate(self, w):
        return w, w - self.A + self.KAPPA * tf.sign(w[0]) * tf.constant([1.0, 0.0], tf.float64)

    def outputs(self, w):
        return w

    def exact(self, t):
        w1 = max(self.A[0] - self.KAPPA + (self.W0[0] - self.A[0] + self.KAPPA) * np.exp(-t), 0.0)
        return np.array([w1, self.A[1] + (self.W0[1] - self.A[1]) * np.exp(-t)])

    linear_combination, combine = LinearFlow.linear_combination, LinearFlow.combine
    difference, squared_norm = LinearFlow.difference, LinearFlow.squared_norm
    output_change = LinearFlow.output_change


def _euler_until(problem, flow, t_end, max_trials=1000):
    """(w, t, trials) of the Euler integrator of `flow` from problem.W0, run to t_end or
    until max_trials trials."""
    integrator = registry.get(flow)
    w = tf.constant(problem.W0, tf.float64)
    state = integrators.FlowState(w, *problem.evaluate(w))
    memory, dt, t = integrator.initial_memory(w), tf.constant(flow.dt0, tf.float64), 0.0
    for trials in range(1, max_trials + 1):
        trial = integrator.trial(problem, state, dt, memory)
        memory = trial.memory
        if bool(trial.accepted):
            state, t = trial.state, t + float(dt)
        if t >= t_end:
            break
        dt = integrator.next_dt(dt, trial.accepted, trial.measures)
    return state.point.numpy(), t, trials


@pytest.mark.slow
def test_euler_crosses_and_slides_along_a_kink_of_the_gradient():
    problem, flow = KinkedFlow(), GradientFlow(dt0=0.01, max_dgrad=1e-3)
    # Eq. 9 alone: every step that reaches w₁ = 0 is rejected and t stops just short of it.
    _, t, trials = _euler_until(problem, flow, 5.0, max_trials=300)
    assert trials == 300 and problem.T_KINK - 0.05 < t < problem.T_KINK
    # With jumps: the flow crosses the kink and slides along it to t = 5 (in some 400
    # trials), where the exact flow has w₁ = 0 and w₂ = 1 − e^(−5). Euler's error (eq. 9 at
    # ε_∇ = 1e-3: about 3% of a step, O(dt) overall) and the chatter across w₁ = 0 (one step
    # of 2κ·dt) stay below 1e-2.
    w, t, trials = _euler_until(problem, dataclasses.replace(flow, jumps=True), 5.0)
    assert t >= 5.0 and trials < 1000
    np.testing.assert_allclose(w, problem.exact(t), atol=1e-2)


class TwoKinks:
    """∇L = λw + κ·sign(w) + e₃ in three dimensions (a point and its outputs are w):
    a large kink at w₁ = 0 (κ₁ = 1), a small one at w₂ = 0 (κ₂ = 0.05), and a smooth part of
    curvature c = λ² in eq. 9's measure. From W0 a step of DT crosses the large kink in its
    first half and the small one in its second, as a flow sliding along both does."""
    LAMBDA, KAPPA_V = 0.01, np.array([1.0, 0.05, 0.0])
    W0, DT = np.array([0.01, 0.0015, 1.0]), 0.04

    def evaluate(self, w):
        return w, (self.LAMBDA * w + self.KAPPA_V * tf.sign(w)
                   + tf.constant([0.0, 0.0, 1.0], tf.float64))

    linear_combination, combine = LinearFlow.linear_combination, LinearFlow.combine
    difference, squared_norm = LinearFlow.difference, LinearFlow.squared_norm
    output_change = LinearFlow.output_change


def _two_kinks_trial(w0, dt, curvature):
    problem, flow = TwoKinks(), GradientFlow(max_dgrad=1e-2, jumps=True)
    w = tf.constant(w0, tf.float64)
    state = integrators.FlowState(w, *problem.evaluate(w))
    return flow, integrators.Euler(flow).trial(
        problem, state, tf.constant(dt, tf.float64), (tf.constant(curvature, tf.float64),))


def test_a_small_jump_beside_a_large_one_is_not_read_as_smooth_change():
    # The second half holds the small kink's jump (about 5e-3 in eq. 9's measure): 4 times it
    # exceeds ε_∇ = 1e-2, so taken as the smooth change it would reject the step at any dt.
    # Both halves exceed 100·c·(dt/2)²: the step crosses jumps in both, and its smooth change
    # is c·dt² (1.6e-7).
    c = TwoKinks.LAMBDA ** 2
    flow, trial = _two_kinks_trial(TwoKinks.W0, TwoKinks.DT, c)
    assert float(trial.measures["dgrad"]) > 1.0  # the large jump
    assert bool(trial.accepted) and bool(trial.measures["jump"])
    np.testing.assert_allclose(float(trial.measures["smooth_dgrad"]), c * TwoKinks.DT ** 2)
    assert float(trial.measures["smooth_dgrad"]) < flow.max_dgrad


def test_a_jump_below_the_bound_grows_the_curvature_memory_at_most_a_hundredfold():
    # A step across the small kink alone: its jump (about 5e-3) is below ε_∇, so eq. 9
    # accepts it, and d/dt² would read as a curvature 3e4 times c.
    c = TwoKinks.LAMBDA ** 2
    _, trial = _two_kinks_trial([0.5, 0.0015, 1.0], TwoKinks.DT, c)
    assert bool(trial.accepted) and not bool(trial.measures["jump"])
    assert float(trial.measures["dgrad"]) / TwoKinks.DT ** 2 > 1e3 * c
    (curvature,) = trial.memory
    np.testing.assert_allclose(float(curvature), integrators.CURVATURE_GROWTH * c)


def test_the_jump_rule_leaves_a_smooth_flow_as_it_was():
    # The frozen-kernel flow is smooth, and its change of ∇L rises twentyfold from one step to
    # the next at the start: with `jumps` it takes the very same steps (JUMP_RATIO = 100).
    kernel = X @ X.T + 0.5
    plain = frozen.frozen_kernel_dynamics(kernel, Y, flow=GradientFlow())
    jumps = frozen.frozen_kernel_dynamics(kernel, Y, flow=GradientFlow(jumps=True))
    assert (jumps["steps"], jumps["rejected"], jumps["t"]) == (
        plain["steps"], plain["rejected"], plain["t"])
    np.testing.assert_array_equal(jumps["train_outputs"], plain["train_outputs"])


def _fixed_steps(name, steps):
    """F(T_END) after `steps` accepted-or-not trial steps of dt = T_END / steps, and the error
    estimate of the first step."""
    problem = LinearFlow()
    integrator = registry.get(GradientFlow(integrator=name))
    w = tf.zeros(D, tf.float64)
    state = integrators.FlowState(w, *problem.evaluate(w))
    dt = tf.constant(T_END / steps, tf.float64)
    first_error = None
    for _ in range(steps):
        trial = integrator.trial(problem, state, dt, integrator.initial_memory(w))
        state, measures = trial.state, trial.measures
        if first_error is None and name != "euler":
            first_error = measures["output_ratio"].numpy()
    return np.max(np.abs(state.outputs.numpy() - exact_outputs(T_END))), first_error


@pytest.mark.parametrize("name, order, estimate_order", [
    ("euler", 1, None), ("bogacki_shampine", 3, 3), ("dormand_prince", 5, 5), ("rkc", 2, 3)])
def test_each_integrator_has_its_order(name, order, estimate_order):
    # Halving dt divides the global error by 2^order, and a Runge–Kutta pair's estimate of
    # the local error of α·f (the embedded solution's, one order lower) by 2^order too;
    # RKC's estimate of its own local error (second order) goes as dt³.
    coarse, coarse_estimate = _fixed_steps(name, 8)
    fine, fine_estimate = _fixed_steps(name, 16)
    assert 0.75 * 2 ** order < coarse / fine < 1.35 * 2 ** order
    if name != "euler":
        assert 0.75 * 2 ** estimate_order < coarse_estimate / fine_estimate \
            < 1.35 * 2 ** estimate_order


@pytest.mark.parametrize("stages", [2, 3, 7, 40, rkc.RungeKuttaChebyshev.MAX_STAGES])
def test_chebyshev_stages_are_second_order_and_stable_where_rkc_uses_them(stages):
    # RKC's recurrence on ẏ = λy gives y_1 = R_s(z) y_0, z = λ dt: R_s(z) = e^z + O(z³), and
    # |R_s(z)| ≤ 1 on [−(s² − 1)/1.54, 0], the dt·ρ for which `stages_for` picks s stages.
    mu, nu, mu_tilde, gamma_tilde = rkc.chebyshev_coefficients(stages)

    def amplification(z):
        before, previous = np.ones_like(z), 1 + mu_tilde[1] * z
        for j in range(2, stages + 1):
            previous, before = ((1 - mu[j] - nu[j]) + mu[j] * previous + nu[j] * before
                                + mu_tilde[j] * z * previous + gamma_tilde[j] * z), previous
        return previous

    z = -np.linspace(0, (stages**2 - 1) / 1.54, 20001)
    assert np.max(np.abs(amplification(z))) <= 1 + 1e-12
    small = np.array([-1e-3, -2e-3])
    error = amplification(small) - (1 + small + small**2 / 2)
    assert np.all(np.abs(error) < 1e-9)
    if stages > 2:  # (two stages make R exactly 1 + z + z²/2)
        assert 6 < error[1] / error[0] < 10
    rho = 1.0
    dt = (stages**2 - 1) / 1.54 * 0.999
    chosen = rkc.RungeKuttaChebyshev(GradientFlow()).stages_for(
        tf.constant(dt, tf.float64), tf.constant(rho, tf.float64))
    assert int(chosen) == stages


def test_rkc_power_iteration_finds_the_hessians_spectral_radius():
    # On the quadratic loss the Hessian is XᵀX/N; every iteration is one gradient evaluation,
    # and a warm start from the eigenvector found converges in the two it needs at least.
    problem, w = LinearFlow(), tf.constant(np.linspace(-1, 1, D))
    state = integrators.FlowState(w, *problem.evaluate(w))
    method = rkc.RungeKuttaChebyshev(GradientFlow(integrator="rkc"))
    rho, vector, evaluations = method.spectral_radius(problem, state, tf.constant(0.0, tf.float64),
                                                   tf.zeros(D, tf.float64), tf.constant(True))
    largest = np.linalg.eigvalsh(X.T @ X / N).max()
    assert float(rho) == pytest.approx(largest, rel=0.02) and 2 <= int(evaluations) <= 20
    again, _, evaluations = method.spectral_radius(problem, state, rho, vector, tf.constant(True))
    assert float(again) == pytest.approx(largest, rel=0.02) and int(evaluations) <= 3
    kept = method.spectral_radius(problem, state, rho, vector, tf.constant(False))
    assert float(kept[0]) == float(rho) and int(kept[2]) == 0


@pytest.mark.slow
def test_rkc_crosses_a_stiff_flow_in_far_fewer_evaluations_than_bogacki_shampine():
    # Bogacki–Shampine is held at dt·λ_max ≤ 2.5 (over 1000 steps here) long after the stiff
    # modes have decayed; RKC's s stages are stable up to dt·ρ ≈ 0.65 s².
    rk_error, rk_evaluations, _ = stiff_linear_flow("bogacki_shampine", 1e-5)
    rkc_error, rkc_evaluations, _ = stiff_linear_flow("rkc", 1e-5)
    assert rkc_error < 1e-3 and rk_error < 1e-3
    assert rkc_evaluations < rk_evaluations / 3


def test_stability_boundaries_of_the_pairs():
    # On the negative real axis (Hairer & Wanner, Solving ODEs II, IV.2): 2.51 for the
    # third-order three-stage polynomial 1 + z + z²/2 + z³/6, 3.31 for DOPRI5's.
    assert runge_kutta.BOGACKI_SHAMPINE.stability_boundary == pytest.approx(2.5127, abs=1e-3)
    assert runge_kutta.DORMAND_PRINCE.stability_boundary == pytest.approx(3.3066, abs=1e-3)


@pytest.mark.slow
def test_a_pair_hands_a_stiff_flow_to_rkc():
    # Held at dt·λ_max = 2.51 by the stiff modes, Bogacki–Shampine switches to RKC, which
    # runs at STIFF_OUTPUT_TOL_FACTOR times its tolerance: within that RKC's accuracy, in
    # under a third of the pair's evaluations (measured: 821 at 7.5e-5, RKC throughout 759
    # at 7.5e-5, the pair 3 751 at 5.2e-6).
    pair = stiff_linear_flow("bogacki_shampine", 1e-5)
    rkc_error, _, _ = stiff_linear_flow("rkc", STIFF_OUTPUT_TOL_FACTOR * 1e-5)
    error, evaluations, _ = stiff_linear_flow("bogacki_shampine_rkc", 1e-5)
    assert error < 2 * rkc_error < 1e-3
    assert evaluations < pair[1] / 3


@pytest.mark.slow
def test_a_pair_held_by_accuracy_stays_itself():
    # At a tight tolerance dt·λ_max stays near 0.1 over [0, 0.3]: the same flow as the pair,
    # bit for bit, plus the power iterations that checked its dt every 25 steps.
    pair = stiff_linear_flow("bogacki_shampine", 1e-8, t_end=0.3)
    switching = stiff_linear_flow("bogacki_shampine_rkc", 1e-8, t_end=0.3)
    assert switching[0] == pair[0] and switching[2] == pair[2]
    assert pair[1] < switching[1] < 1.05 * pair[1]


class _PlainController(runge_kutta.EmbeddedRungeKutta):
    """Bogacki–Shampine with the plain controller dt · SAFETY/e (no PI memory)."""
    PI_CURRENT, PI_PREVIOUS = 1.0, 0.0


def test_pi_controller_halves_the_rejections_of_a_stability_limited_flow():
    # Held at the edge of its stability region by the stiff modes, a plain controller grows
    # dt past it and is rejected (Hairer & Wanner II, IV.2); the PI controller's memory of the
    # last error damps that, at the same accuracy and about the same evaluations (measured:
    # 6 rejections and 1 198 evaluations plain, 3 and 1 246 PI).
    flow = GradientFlow(integrator="bogacki_shampine", output_tol=1e-5, direction_tol=1.0)
    plain = stiff_linear_flow(None, None, t_end=3.0, integrator=_PlainController(
        runge_kutta.BOGACKI_SHAMPINE, flow))
    pi = stiff_linear_flow("bogacki_shampine", 1e-5, t_end=3.0)
    assert pi[0] < 1e-4 and plain[0] < 1e-4
    assert pi[2] <= plain[2] / 2 and pi[1] < 1.1 * plain[1]


class Linear(keras.Model):
    """f(w, x) = x·w: a model linear in its weights, so the flow has a closed form."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.dense = keras.layers.Dense(1, use_bias=False, dtype=self.dtype_policy,
                                        kernel_initializer=keras.initializers.RandomNormal(seed=1))

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x)[:, 0]


def _linear_model_outputs(flow):
    """F on the training set after the AlphaModel's flow lands on T_END, and its step count."""
    model = AlphaModel(Linear(dtype="float64"), alpha=1.0, loss="quadratic_hinge",
                       dynamics=GradientFlowDynamics(flow))
    model.compile()
    model.build(X.shape)
    model.start(X, Y)
    model.t_end.assign(T_END)
    stopping = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: setattr(
        model, "stop_training", bool(logs["t"] >= T_END)))
    runner.fit_flow(model, X, Y, [stopping])
    assert model.t.numpy() == T_END  # landed exactly
    return model(X).numpy(), int(model.step_count.numpy())


@pytest.mark.slow
@pytest.mark.parametrize("name, tol", [("bogacki_shampine", 1e-5), ("dormand_prince", 1e-9),
                                       ("rkc", 1e-5)])
def test_adaptive_steps_match_the_matrix_exponential_to_their_tolerance(name, tol):
    # (Dormand–Prince crosses this problem in a dozen steps below 1e-7: a tighter tol bites.)
    # Halving tol: a local error held at tol per step of a method of order p gives steps
    # ∝ tol^(−1/(p+1)) and a global error ∝ tol^(p/(p+1)): ×2^(3/4) for Bogacki–Shampine,
    # ×2^(2/3) for RKC, within the bounds below.
    errors = {}
    for tol in (tol, tol / 2):
        F, steps = _linear_model_outputs(GradientFlow(integrator=name, output_tol=tol,
                                                      direction_tol=1.0))
        errors[tol] = np.max(np.abs(F - exact_outputs(T_END)))
        # The flow contracts (K ≥ 0), so the global error is at most the sum of the local ones.
        assert errors[tol] < steps * tol
    assert 1.3 < errors[2 * tol] / errors[tol] < 3.5  # ×2^(p/(p+1)), above


@pytest.mark.slow
def test_eq8_bounds_the_steps_of_euler_only():
    # A max_dout far below the outputs' change over [0, T_END] (~0.5) would take Euler
    # hundreds of steps; the pair's steps are set by its local error alone.
    flow = dict(integrator="bogacki_shampine", output_tol=1e-5, direction_tol=1.0)
    _, steps = _linear_model_outputs(GradientFlow(**flow))
    assert steps < 50
    assert _linear_model_outputs(GradientFlow(max_dout=1e-3, **flow))[1] == steps


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """A small network trained by the paper's Euler scheme at its own thresholds (ε_∇ = 1e-4,
    max_dout = 0.1), Bogacki–Shampine, RKC, etdrk4 and the pairs switching to either at their
    default tolerances, from the same w0; each run's distance at its own stop to a tight
    reference flow's at its stop (and `fidelity.check_runs`, the stage's Euler reference)."""
    task = small_task()
    base = TrainConfig(n_train=10, n_test=200, width=8, depth=2, alpha=1.0, dtype="float64")
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    names = ("euler", "bogacki_shampine", "rkc", "bogacki_shampine_rkc", "etdrk4",
             "bogacki_shampine_etdrk4")
    references = [fidelity.reference_flow(base, task, reference=tight_reference(base, scale))
                  for scale in (1.0, 0.1)]
    reference = references[0]

    def deviation(outputs):
        return relative_distance(outputs, reference.test_outputs)

    for name in names:
        config = dataclasses.replace(base, integrator=name)
        run_dir = str(root / name)
        metrics = runner.train(config, run_dir, task=task)
        runs[name] = dict(config=config, dir=run_dir, metrics=metrics, deviation=deviation(
            np.load(f"{run_dir}/{artifact.TEST_OUTPUTS}")))
    results = fidelity.check_runs([runs[name]["dir"] for name in names], task=task)
    for name, result in zip(names, results):
        runs[name]["fidelity"] = result
    return task, runs, reference, deviation(references[1].test_outputs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bogacki_shampine", "rkc", "bogacki_shampine_rkc", "etdrk4",
                                  "bogacki_shampine_etdrk4"])
def test_runge_kutta_is_at_least_as_faithful_as_euler(small_runs, name):
    _, runs, reference, reference_error = small_runs
    euler, rk = runs["euler"], runs[name]
    # Each run's final test outputs, at its own stop, against the reference's at its stop:
    # the paper's scheme is ~1e-3 away (Appendix G's figure), the reference's own error is
    # below a thousandth of that, and the default tolerances keep every method as close.
    # (measured: Euler 1.1e-3; the others 3.0e-4 to 9.4e-4; the reference 2.4e-9.)
    assert 3e-4 < euler["deviation"] < 3e-3
    assert reference_error < 1e-3 * euler["deviation"]
    assert rk["deviation"] <= euler["deviation"]
    # They stop within a few percent of the reference's time.
    assert abs(rk["metrics"]["t"] - reference.t) < 0.03 * reference.t
    # The stage's check (its Euler reference at ε_∇/100, one for all runs) is written to each
    # run's fidelity.json.
    assert euler["fidelity"]["reference_t"] == rk["fidelity"]["reference_t"]
    for result in (euler, rk):
        assert result["fidelity"] == artifact.read_json(f"{result['dir']}/{artifact.FIDELITY}")


@pytest.mark.slow
def test_gradient_evaluations_are_counted_and_recorded(small_runs):
    _, runs, _, _ = small_runs
    euler, rk = runs["euler"]["metrics"], runs["bogacki_shampine"]["metrics"]
    assert runs["rkc"]["metrics"]["integrator"] == "rkc"
    # One at w0, then one per Euler trial step and three per Bogacki–Shampine trial step.
    assert euler["gradient_evaluations"] == 1 + euler["steps"] + euler["rejected_steps"]
    assert rk["gradient_evaluations"] == 1 + 3 * (rk["steps"] + rk["rejected_steps"])
    assert (euler["integrator"], rk["integrator"]) == ("euler", "bogacki_shampine")
    stored = artifact.read_json(f"{runs['bogacki_shampine']['dir']}/{artifact.CONFIG}")
    assert stored["integrator"] == "bogacki_shampine" and stored["output_tol"] > 0
    log = open(f"{runs['bogacki_shampine']['dir']}/{artifact.TRAIN_LOG}").read().splitlines()
    assert log[-1].split("evals=")[1].split()[0] == str(rk["gradient_evaluations"])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bogacki_shampine", "rkc", "bogacki_shampine_rkc", "etdrk4",
                                  "bogacki_shampine_etdrk4"])
def test_runge_kutta_stops_at_the_papers_criterion(small_runs, name):
    task, runs, _, _ = small_runs
    rk = runs[name]
    assert rk["metrics"]["converged"] and rk["metrics"]["train_error"] == 0.0
    model = runner.load_run(rk["dir"], task=task).model
    assert np.min(model(task.x_train).numpy() * task.y_train) > 1.0  # every margin > 1
    records = [artifact.read_json_line(line) for line in open(f"{rk['dir']}/{artifact.DYNAMICS}")]
    assert records[-1]["unfitted"] == 0 and all(r["unfitted"] > 0 for r in records[:-1])
    assert all(r["error"] <= 1.0 for r in records[1:])  # (eq. 8 bounds neither's steps)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["euler", "bogacki_shampine", "rkc", "bogacki_shampine_rkc",
                                  "etdrk4", "bogacki_shampine_etdrk4"])
def test_every_forward_and_backward_pass_is_counted(name):
    # Counted independently: a wrapper of the model's one gradient evaluation that adds 1 to
    # a variable each time the graph runs it (start, stages, rejected steps, RKC's power
    # iterations). Forward passes alone (the error estimate's) are not gradient evaluations.
    task = small_task()
    config = TrainConfig(n_train=10, n_test=200, width=8, depth=2, alpha=1.0, dtype="float64",
                         max_dgrad=5e-2, max_dout=0.3, integrator=name)
    model = runner.build_model(config, task.x_train.shape[1:])
    passes = tf.Variable(0, dtype=tf.int64)
    evaluate = model.local_loss_and_grad

    def counted(*args, **kwargs):
        passes.assign_add(1)
        return evaluate(*args, **kwargs)

    model.local_loss_and_grad = counted
    runner.fit_flow(model, task.x_train, task.y_train,
                    [callbacks.GradientFlowStopping(max_steps=30)])
    assert int(model.evaluations.numpy()) == int(passes.numpy()) > 30


def test_an_euler_run_keeps_its_id_whatever_the_runge_kutta_tolerances():
    euler = TrainConfig(width=10, integrator="euler")
    assert TrainConfig(width=10, integrator="euler", output_tol=1e-7).run_id() == euler.run_id()
    rk = TrainConfig(width=10, integrator="bogacki_shampine")
    assert rk.run_id() != euler.run_id()
    assert TrainConfig(width=10, integrator="bogacki_shampine", output_tol=1e-7).run_id() != \
        rk.run_id()


@pytest.mark.parametrize("settings, integrator", [
    (dict(alpha=1e-5), "bogacki_shampine_etdrk4"),  # √h·α = 1e-4, deep in the feature regime
    (dict(alpha=1e-3), "bogacki_shampine_etdrk4"),  # √h·α = 1e-2
    (dict(alpha=1e5), "etdrk4"),
    (dict(alpha=1e-3, activation="relu"), "euler"),  # only Euler crosses ∇L's jumps
    (dict(alpha=1e-3, max_dgrad=1e-3), "euler"),  # eqs. 8-9's thresholds: Euler's alone
    (dict(alpha=1e5, max_dout=0.3), "euler"),
    (dict(alpha=1e-3, dynamics="momentum", tau=0.1), "euler"),  # momentum is stepped by euler
    (dict(alpha=1e-3, dynamics="adam", n_train=100), "euler"),  # (no flow at all)
])
def test_auto_resolves_to_the_integrator_chosen_for_the_run(settings, integrator):
    config = TrainConfig(width=100, **settings)
    resolved = config.resolved()
    assert config.integrator == AUTO  # kept as given: a sweep re-chooses at each of its α
    assert resolved.integrator == config.flow().integrator == integrator
    assert (resolved.output_tol, resolved.direction_tol) == TOLERANCES.get(integrator,
                                                                           (None, None))
    assert resolved.run_id() == config.run_id()  # the same run, however it was named
    assert resolved.resolved() is resolved
    lazy = dataclasses.replace(config, alpha=1e5, dtype=None)
    assert lazy.resolved().integrator == ("etdrk4" if integrator != "euler" else "euler")


def test_given_integrator_and_tolerances_are_kept():
    given = TrainConfig(integrator="bogacki_shampine", alpha=1e5, output_tol=3e-5)
    assert given.resolved() == dataclasses.replace(
        given, direction_tol=TOLERANCES["bogacki_shampine"][1])
    assert TrainConfig(integrator="euler").resolved().output_tol is None  # euler takes none
    flow = GradientFlow(integrator="rkc")
    assert (flow.output_tol, flow.direction_tol) == TOLERANCES["rkc"]


@pytest.mark.slow
def test_config_json_records_the_integrator_and_tolerances_a_run_used(tmp_path):
    config = TrainConfig(n_train=10, n_test=200, width=8, depth=2, alpha=0.5, dtype="float64",
                         max_steps=3)
    runner.train(config, str(tmp_path), task=small_task())
    stored = artifact.read_json(str(tmp_path / artifact.CONFIG))
    output_tol, direction_tol = TOLERANCES["bogacki_shampine_etdrk4"]
    assert (stored["integrator"], stored["output_tol"], stored["direction_tol"]) == (
        "bogacki_shampine_etdrk4", output_tol, direction_tol)
    assert stored["stiff_output_tol"] == pytest.approx(
        EXPONENTIAL_STIFF_OUTPUT_TOL_FACTOR * output_tol)
    assert stored["run_id"] == config.run_id()
    assert artifact.load_config(str(tmp_path)).run_id() == config.run_id()
    assert artifact.read_json(str(tmp_path / artifact.METRICS))["integrator"] == \
        "bogacki_shampine_etdrk4"


def test_a_switching_integrators_rkc_phase_takes_stiff_output_tol():
    switching = TrainConfig(width=100, alpha=1e-3, integrator="bogacki_shampine_rkc")
    output_tol = switching.resolved().output_tol
    assert switching.resolved().stiff_output_tol == STIFF_OUTPUT_TOL_FACTOR * output_tol
    given = dataclasses.replace(switching, stiff_output_tol=3e-2)
    stiff_phase = registry.get(given.flow()).rkc.flow
    assert (stiff_phase.integrator, stiff_phase.output_tol) == ("rkc", 3e-2)
    assert registry.get(given.flow()).pair.flow.output_tol == output_tol
    assert given.run_id() != switching.run_id()  # another flow, another run
    # The others have no RKC phase: the setting resolves to None and leaves their id.
    lazy = TrainConfig(width=100, alpha=1e5)  # auto: etdrk4
    assert dataclasses.replace(lazy, stiff_output_tol=1e-2).resolved().stiff_output_tol is None
    assert dataclasses.replace(lazy, stiff_output_tol=1e-2).run_id() == lazy.run_id()
    with pytest.raises(ConfigError, match="stiff_output_tol must be > 0"):
        TrainConfig(stiff_output_tol=0.0)


def test_a_switching_run_recorded_before_stiff_output_tol_loads_with_the_default(tmp_path):
    config = TrainConfig(width=100, alpha=1e-3, integrator="bogacki_shampine_rkc")
    record = {k: v for k, v in config.resolved().to_dict().items() if k != "stiff_output_tol"}
    artifact.write_json(str(tmp_path / artifact.CONFIG), record)
    loaded = artifact.load_config(str(tmp_path)).resolved()
    assert loaded.stiff_output_tol == STIFF_OUTPUT_TOL_FACTOR * loaded.output_tol
    assert loaded.run_id() == config.run_id()
    # Its RKC phase ran at 10 times the pair's tolerance then: another run, another id.
    then = dataclasses.replace(config, stiff_output_tol=10 * loaded.output_tol)
    assert then.run_id() != config.run_id()


def test_a_config_written_before_the_integrator_choice_loads_as_euler(tmp_path):
    record = {k: v for k, v in TrainConfig(width=10).to_dict().items()
              if k not in ("integrator", "output_tol", "direction_tol")}
    artifact.write_json(str(tmp_path / artifact.CONFIG), record)
    assert artifact.load_config(str(tmp_path)).integrator == "euler"


def test_unknown_integrator_is_refused():
    with pytest.raises(ConfigError, match="unknown integrator 'rk4': choose one of euler"):
        TrainConfig(integrator="rk4")


@pytest.mark.slow
def test_frozen_kernel_dynamics_runs_the_same_integrators():
    theta = X @ X.T
    euler = frozen.frozen_kernel_dynamics(theta, Y, loss="quadratic_hinge", max_time=T_END)
    tight = dict(output_tol=1e-4, direction_tol=1e-3)  # within atol on these few steps
    rk = frozen.frozen_kernel_dynamics(theta, Y, loss="quadratic_hinge", max_time=T_END,
                                    flow=GradientFlow(integrator="bogacki_shampine", **tight))
    rkc = frozen.frozen_kernel_dynamics(theta, Y, loss="quadratic_hinge", max_time=T_END,
                                     flow=GradientFlow(integrator="rkc", **tight))
    switching = frozen.frozen_kernel_dynamics(
        theta, Y, loss="quadratic_hinge", max_time=T_END,
        flow=GradientFlow(integrator="bogacki_shampine_rkc", **tight))
    for result in (euler, rk, rkc, switching):
        np.testing.assert_allclose(result["train_outputs"], exact_outputs(result["t"]),
                                   atol=2e-3)
    assert rk["gradient_evaluations"] == 1 + 3 * (rk["steps"] + rk["rejected"])
    assert rk["gradient_evaluations"] < euler["gradient_evaluations"] / 3
    # RKC: at least 2 stages per trial step, and at least 2 power iterations for ρ.
    assert rkc["gradient_evaluations"] >= 1 + 2 * (rkc["steps"] + rkc["rejected"]) + 2
    assert rkc["gradient_evaluations"] < euler["gradient_evaluations"]


@pytest.mark.slow
def test_weights_written_before_the_integrator_choice_load(tmp_path):
    # A Keras weights file of an AlphaModel saved before the integrator choice lacks the
    # variables gradient_evaluations and t_end (the model's own variables 4 and 5); an Euler
    # run's evaluations are 1 + its trial steps.
    task = small_task()
    config = TrainConfig(n_train=10, n_test=200, width=8, depth=2, dtype="float64", max_steps=3,
                         integrator="euler")
    run_dir = str(tmp_path / "run")
    metrics = runner.train(config, run_dir, task=task)
    path = str(tmp_path / "old.weights.h5")
    runner.load_run(run_dir, task=task).model.save_weights(path)
    with h5py.File(path, "r+") as f:
        own = f["vars"]
        kept = [own[str(i)][()] for i in range(len(own)) if i not in (4, 5)]
        for name in list(own):
            del own[name]
        for i, value in enumerate(kept):
            own.create_dataset(str(i), data=value)
    model = runner.build_model(config, task.x_train.shape[1:])
    model.load_weights(path)
    assert int(model.evaluations.numpy()) == metrics["gradient_evaluations"] == \
        1 + metrics["steps"] + metrics["rejected_steps"]
    assert np.isinf(model.t_end.numpy()) and int(model.step_count.numpy()) == 3
    outputs = runner.evaluate(model, task.x_test, task.y_test, model.per_pattern_loss)[0]
    np.testing.assert_array_equal(
        outputs, artifact.read_npy(artifact.join(run_dir, artifact.TEST_OUTPUTS)))


@pytest.mark.slow
def test_fidelity_stage_writes_a_runs_fidelity(fashion_task, tmp_path):
    # A run on the stage's own data (its config.json says where that lies).
    config = TrainConfig(n_train=10, n_test=100, width=8, depth=2, dtype="float64",
                         max_dgrad=5e-2, max_dout=0.3)
    runner.train(config, str(tmp_path))
    result = stage_in_process("fidelity", f"--run_dirs={tmp_path}")
    assert result.returncode == 0, result.stderr
    stored = artifact.read_json(str(tmp_path / artifact.FIDELITY))
    assert result.stdout.startswith(f"{tmp_path}: deviation {stored['output_deviation']:.3g}")
    assert 0 < stored["output_deviation"] < 5e-2
