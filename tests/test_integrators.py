"""The integrators of gradient flow (eqs. 7-9): orders against the matrix exponential of a
quadratic loss, fidelity against the reference flow (Appendix G), stopping, resume, NaN."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature import artifact, data, fidelity, integrators, ntk, run
from lazy_feature.alpha_model import AlphaModel
from lazy_feature.config import TrainConfig
from lazy_feature.dynamics import GradientFlow
from lazy_feature.errors import ConfigError
from tests.conftest import sphere_inputs

N, D = 12, 5
X = sphere_inputs(N, D, seed=7)
Y = np.sign(X[:, 0] + 0.3 * X[:, 1])


def exact_outputs(t, alpha=1.0):
    """F(t) = y − exp(−K t / n) y with K = X Xᵀ: the flow of a linear model f = x·w from
    F(0) = 0 on the quadratic hinge ½(1 − F y)², while every margin F y stays below 1."""
    eigenvalues, vectors = np.linalg.eigh(X @ X.T)
    return Y - vectors @ (np.exp(-eigenvalues * t / N) * (vectors.T @ Y))


T_END = 1.0  # every margin is below 1 on [0, T_END]: the loss is quadratic throughout


def test_margins_stay_below_one_up_to_t_end():
    margins = np.array([exact_outputs(t) * Y for t in np.linspace(0, T_END, 200)])
    assert margins.max() < 0.99


class LinearFlow:
    """ẇ = −∇L of the linear model on the quadratic hinge, as an `integrators` problem."""

    def __init__(self):
        self.x, self.y = tf.constant(X), tf.constant(Y)

    def evaluate(self, w):
        F = tf.linalg.matvec(self.x, w)
        return F, tf.linalg.matvec(self.x, F - self.y, transpose_a=True) / N

    def outputs(self, w):
        return tf.linalg.matvec(self.x, w)

    def move(self, w, dt, coefficients, grads):
        return w - dt * self.combine(coefficients, grads)

    def combine(self, coefficients, grads):
        return integrators.combination(coefficients, grads)

    def difference(self, a, b):
        return a - b

    def squared_norm(self, g):
        return tf.reduce_sum(g * g)

    def output_change(self, a, b):
        return tf.reduce_max(tf.abs(a - b))


def _fixed_steps(name, steps):
    """F(T_END) after `steps` accepted-or-not trial steps of dt = T_END / steps, and the error
    estimate of the first step."""
    problem = LinearFlow()
    integrator = integrators.get(GradientFlow(integrator=name))
    w = tf.zeros(D, tf.float64)
    state = integrators.FlowState(w, *problem.evaluate(w))
    dt = tf.constant(T_END / steps, tf.float64)
    first_error = None
    for _ in range(steps):
        state, _, measures = integrator.trial(problem, state, dt)
        if first_error is None and name != "euler":
            first_error = measures["output_ratio"].numpy()
    return np.max(np.abs(state.outputs.numpy() - exact_outputs(T_END))), first_error


@pytest.mark.parametrize("name, order", [("euler", 1), ("bogacki_shampine", 3),
                                         ("dormand_prince", 5)])
def test_each_integrator_has_its_order(name, order):
    # Halving dt divides the global error by 2^order, and a Runge–Kutta pair's estimate of
    # the local error of α·f (the embedded solution's, one order lower) by 2^order too.
    coarse, coarse_estimate = _fixed_steps(name, 8)
    fine, fine_estimate = _fixed_steps(name, 16)
    assert 0.75 * 2 ** order < coarse / fine < 1.35 * 2 ** order
    if name != "euler":
        assert 0.75 * 2 ** order < coarse_estimate / fine_estimate < 1.35 * 2 ** order


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
    model = AlphaModel(Linear(dtype="float64"), alpha=1.0, loss="quadratic_hinge", flow=flow)
    model.compile()
    model.build(X.shape)
    model.start(X, Y)
    model.t_end.assign(T_END)
    stopping = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: setattr(
        model, "stop_training", bool(logs["t"] >= T_END)))
    run.fit_flow(model, X, Y, [stopping])
    assert model.t.numpy() == T_END  # landed exactly
    return model(X).numpy(), int(model.step_count.numpy())


@pytest.mark.parametrize("name, tol", [("bogacki_shampine", 1e-5), ("dormand_prince", 1e-9)])
def test_adaptive_steps_match_the_matrix_exponential_to_their_tolerance(name, tol):
    # (Dormand–Prince crosses this problem in a dozen steps below 1e-7: a tighter tol bites.)
    errors = {}
    for tol in (tol, tol / 2):
        F, steps = _linear_model_outputs(GradientFlow(integrator=name, output_tol=tol,
                                                      direction_tol=1.0))
        errors[tol] = np.max(np.abs(F - exact_outputs(T_END)))
        # The flow contracts (K ≥ 0), so the global error is at most the sum of the local ones.
        assert errors[tol] < steps * tol
    # With the local error held at tol per step, the global error is proportional to tol.
    assert 1.3 < errors[2 * tol] / errors[tol] < 3.5


def _task(n_train=20, n_test=200, seed=3):
    x = sphere_inputs(n_train + n_test, 8, seed=seed)
    y = np.sign(x[:, 0] - 0.4 * x[:, 1] + 0.2 * x[:, 2])
    return data.BinaryTask(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                           np.zeros(n_train, int), np.zeros(n_test, int))


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory):
    """A small network trained by Euler and by Bogacki–Shampine, and the Euler run's fidelity
    checked by `fidelity.check_run`, the Runge–Kutta run's against the same reference."""
    task = _task()
    # ε_∇ = 1e-2, looser than the paper's, keeps the reference flow (ε_∇/100) to seconds.
    base = TrainConfig(n_train=20, n_test=200, width=8, depth=2, alpha=1.0, dtype="float64",
                       max_dgrad=1e-2)
    root = tmp_path_factory.mktemp("runs")
    runs = {}
    for name in ("euler", "bogacki_shampine"):
        config = TrainConfig(**dict(base.to_dict(), integrator=name))
        runs[name] = dict(config=config, dir=str(root / name),
                          metrics=run.train(config, str(root / name), task=task))
    runs["euler"]["fidelity"] = fidelity.check_run(runs["euler"]["dir"], task=task)
    rk = runs["bogacki_shampine"]
    reference = fidelity.reference_flow(rk["config"], task, times=[rk["metrics"]["t"]])
    rk["fidelity"] = fidelity.compare(np.load(f"{rk['dir']}/{artifact.TEST_OUTPUTS}"),
                                      rk["metrics"]["t"], rk["metrics"]["test_error"], reference)
    return task, runs


def test_runge_kutta_is_at_least_as_faithful_as_euler(small_runs):
    _, runs = small_runs
    euler, rk = runs["euler"], runs["bogacki_shampine"]
    # Appendix G's bound on the paper's scheme, and the Runge–Kutta pair at its default
    # tolerances at least as close to the reference flow.
    assert 0 < euler["fidelity"]["output_deviation"] < 1e-2
    assert rk["fidelity"]["output_deviation"] <= euler["fidelity"]["output_deviation"]
    # Both runs and the reference converge at the same time to within a few Euler steps.
    assert abs(rk["fidelity"]["t_difference"]) < 0.05 * rk["fidelity"]["reference_t"]
    assert euler["fidelity"] == artifact.read_json(f"{euler['dir']}/{artifact.FIDELITY}")


def test_gradient_evaluations_are_counted_and_recorded(small_runs):
    _, runs = small_runs
    euler, rk = runs["euler"]["metrics"], runs["bogacki_shampine"]["metrics"]
    # One at w0, then one per Euler trial step and three per Bogacki–Shampine trial step.
    assert euler["gradient_evaluations"] == 1 + euler["steps"] + euler["rejected_steps"]
    assert rk["gradient_evaluations"] == 1 + 3 * (rk["steps"] + rk["rejected_steps"])
    assert (euler["integrator"], rk["integrator"]) == ("euler", "bogacki_shampine")
    stored = artifact.read_json(f"{runs['bogacki_shampine']['dir']}/{artifact.CONFIG}")
    assert stored["integrator"] == "bogacki_shampine" and stored["output_tol"] > 0
    log = open(f"{runs['bogacki_shampine']['dir']}/{artifact.TRAIN_LOG}").read().splitlines()
    assert log[-1].split("evals=")[1].split()[0] == str(rk["gradient_evaluations"])


def test_runge_kutta_stops_at_the_papers_criterion(small_runs):
    task, runs = small_runs
    rk = runs["bogacki_shampine"]
    assert rk["metrics"]["converged"] and rk["metrics"]["train_error"] == 0.0
    model = run.load_run(rk["dir"], task=task).model
    assert np.min(model(task.x_train).numpy() * task.y_train) > 1.0  # every margin > 1
    records = [artifact.read_json_line(line) for line in open(f"{rk['dir']}/{artifact.DYNAMICS}")]
    assert records[-1]["unfitted"] == 0 and all(r["unfitted"] > 0 for r in records[:-1])
    assert all(r["error"] <= 1.0 and r["dout"] < 0.1 for r in records[1:])


def test_an_euler_run_keeps_its_id_whatever_the_runge_kutta_tolerances():
    euler = TrainConfig(width=10)
    assert TrainConfig(width=10, output_tol=1e-7).run_id() == euler.run_id()
    rk = TrainConfig(width=10, integrator="bogacki_shampine")
    assert rk.run_id() != euler.run_id()
    assert TrainConfig(width=10, integrator="bogacki_shampine", output_tol=1e-7).run_id() != \
        rk.run_id()


def test_a_config_written_before_the_integrator_choice_loads_as_euler(tmp_path):
    record = {k: v for k, v in TrainConfig(width=10).to_dict().items()
              if k not in ("integrator", "output_tol", "direction_tol")}
    artifact.write_json(str(tmp_path / artifact.CONFIG), record)
    assert artifact.load_config(str(tmp_path)).integrator == "euler"


def test_unknown_integrator_is_refused():
    with pytest.raises(ConfigError, match="unknown integrator 'rk4': choose one of euler"):
        TrainConfig(integrator="rk4")


def test_frozen_kernel_dynamics_runs_the_same_integrators():
    theta = X @ X.T
    euler = ntk.frozen_kernel_dynamics(theta, Y, loss="quadratic_hinge", max_time=T_END)
    rk = ntk.frozen_kernel_dynamics(theta, Y, loss="quadratic_hinge", max_time=T_END,
                                    flow=GradientFlow(integrator="bogacki_shampine"))
    for result in (euler, rk):
        np.testing.assert_allclose(result["train_outputs"], exact_outputs(result["t"]),
                                   atol=2e-3)
    assert rk["gradient_evaluations"] == 1 + 3 * (rk["steps"] + rk["rejected"])
    assert rk["gradient_evaluations"] < euler["gradient_evaluations"] / 3
