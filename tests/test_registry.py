"""The flow layer's registries (integrators, training dynamics) against what the config checks,
the resource estimate, the frozen-kernel flow and the α-model enforce; and the α-model trained
by a dynamics of its own through the one interface it calls."""

import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.flow import auto, registry, training
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.integrators import FlowState
from lazy_feature.flow.interface import Dynamics, Slot, Step
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.kernel import frozen
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import FullyConnected
from lazy_feature.run import checkpoint, resources
from lazy_feature.run.config import TrainConfig
from tests.helpers import X, Y, LinearFlow, sphere_inputs


@pytest.mark.parametrize("name", list(registry.INTEGRATORS))
def test_every_registered_integrator_builds_with_its_defaults(name):
    registered = registry.INTEGRATORS[name]
    flow = GradientFlow(integrator=name)
    assert (flow.output_tol, flow.direction_tol) == registered.tolerances
    assert flow.stiff_output_tol == (registered.stiff_factor * flow.output_tol
                                     if registered.switching else None)
    assert (registered.pair is None) == (registered.stiff is None) == (not registered.switching)
    integrator = registry.get(flow)
    problem, w = LinearFlow(), tf.zeros(X.shape[1], tf.float64)
    state = FlowState(w, *problem.evaluate(w))
    trial = integrator.trial(problem, state, tf.constant(0.01, tf.float64),
                             integrator.initial_memory(w))
    assert int(trial.evaluations) >= 1 and np.all(np.isfinite(trial.state.point.numpy()))
    # The config takes the name and records the same tolerances; the resource estimate
    # counts the vectors the built integrator says it keeps.
    config = TrainConfig(integrator=name).resolved()
    assert (config.integrator, config.output_tol, config.direction_tol,
            config.stiff_output_tol) == (name, *registered.tolerances, flow.stiff_output_tol)
    assert resources.dynamics_vectors(config) == integrator.vectors


def test_unregistered_names_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="unknown integrator 'heun': choose one of euler"):
        GradientFlow(integrator="heun")
    with pytest.raises(ConfigError, match=f"choose one of .*{registry.AUTO}"):
        TrainConfig(integrator="heun")
    with pytest.raises(ConfigError, match="unknown dynamics 'sgd'"):
        TrainConfig(dynamics="sgd")


@pytest.mark.slow
@pytest.mark.parametrize("name", list(registry.INTEGRATORS))
def test_function_space_capability_is_what_the_frozen_kernel_takes(name):
    # A flow without weight coordinates runs every integrator but those with a function-space
    # substitute, which the frozen-kernel flow takes in their place, at its own tolerances
    # but for its RKC's.
    registered = registry.INTEGRATORS[name]
    flow = GradientFlow(integrator=name)
    substituted = registry.in_function_space(flow)
    if registered.function_space is None:
        assert substituted is flow
    else:
        tol = registry.FUNCTION_SPACE_RKC_TOL
        assert substituted == (GradientFlow(integrator="rkc", output_tol=tol)
                               if registered.function_space == "rkc" else
                               GradientFlow(integrator=registered.function_space,
                                            stiff_output_tol=tol))
        assert registry.INTEGRATORS[registered.function_space].function_space is None
    kernel, labels = X @ X.T, np.sign(X[:, 0])
    by_name = frozen.frozen_kernel_dynamics(kernel, labels, flow=flow)
    by_substitute = frozen.frozen_kernel_dynamics(kernel, labels, flow=substituted)
    assert by_name["converged"] and by_name["steps"] == by_substitute["steps"]


def test_kinks_capability_is_what_auto_takes_for_relu():
    kinked = TrainConfig(activation="relu", alpha=1e3).resolved().integrator
    assert registry.INTEGRATORS[kinked].kinks
    assert auto.choose(1e3, auto.Network(kinked=True)).integrator == kinked
    assert TrainConfig(activation="relu").flow().jumps


@pytest.mark.parametrize("name", list(training.DYNAMICS))
def test_every_registered_dynamics_builds_from_its_config(name):
    kind = training.DYNAMICS[name]
    config = TrainConfig(dynamics=name)
    built = config.make_dynamics()
    assert isinstance(built, kind.method) and isinstance(built, Dynamics)
    assert type(built).from_config(built.get_config()) == built
    values = dict(tau=1.0, tau_proportional_to_t=True, batch_size=3, learning_rate=0.1,
                  epochs=3.0)
    for other in training.DYNAMICS.values():
        for setting in other.settings if other is not kind else ():
            given = dict(tau=1.0) if setting == "tau_proportional_to_t" else {}
            with pytest.raises(ConfigError, match=f"are for --dynamics={other.name}, not {name}"):
                TrainConfig(dynamics=name, **given, **{setting: values[setting]})
    for integrator in registry.INTEGRATORS:
        allowed = kind.integrators is None or integrator in kind.integrators
        if allowed:
            TrainConfig(dynamics=name, integrator=integrator)
        else:
            with pytest.raises(ConfigError, match="takes no --integrator"):
                TrainConfig(dynamics=name, integrator=integrator)


class _FixedStep(Dynamics):
    """Plain gradient descent w ← w − dt ∇L at a fixed dt, every step accepted: a dynamics the
    α-model knows nothing of. It keeps the last loss, and stops at every margin > 1."""

    def __init__(self, dt=0.5):
        self.dt = dt
        self.dt0 = dt

    def get_config(self):
        return dict(dt=self.dt)

    def variables(self, weights):
        return dict(last_loss=Slot("last_loss", (), "float64"))

    def start(self, model, x, y):
        model.observe(x)

    def converged(self, model):
        return tf.reduce_min(model.margins()) > 1.0

    def step(self, model, x):
        cache = model.cache
        _, loss, grads = model.loss_and_grad(x, cache.y_train, cache.f0_train)
        for w, g in zip(model.network.trainable_weights, grads):
            w.assign(w - self.dt * g)
        model.observe(x)
        model.dynamics_state["last_loss"].assign(tf.cast(loss, tf.float64))
        return Step(accepted=tf.constant(True), attempts=tf.constant(1, tf.int64),
                    t=model.t + self.dt, dt=tf.constant(self.dt, tf.float64),
                    evaluations=tf.constant(1, tf.int64), logs=dict(last_loss=loss))


def _fit(dynamics, steps):
    x = sphere_inputs(12, 5, seed=3)
    y = np.sign(x[:, 0] + 0.3)
    model = AlphaModel(FullyConnected(6, depth=2, seed=0, dtype="float64"), alpha=0.5,
                       dynamics=dynamics)
    model.compile()
    history = model.fit(tf.data.Dataset.from_tensors((x, y)).repeat(), epochs=1,
                        steps_per_epoch=steps, verbose=0, shuffle=False)
    return model, history.history


def test_the_alpha_model_runs_a_dynamics_it_does_not_know():
    model, logs = _fit(_FixedStep(0.125), 6)
    state = model.train_state()
    assert (int(state["step"]), int(state["attempts"]), int(state["evaluations"]),
            float(state["t"])) == (6, 6, 7, 0.75)
    assert bool(model.converged()) == bool(tf.reduce_min(model.margins()) > 1.0)
    assert "last_loss" in logs and "last_loss" in checkpoint.model_state(model)
    assert float(model.last_loss.numpy()) == pytest.approx(logs["last_loss"][-1], rel=1e-12)
    # The Euler scheme with every step accepted at the same fixed dt takes the same steps.
    euler, _ = _fit(GradientFlowDynamics(GradientFlow(dt0=0.125, grow=1.0, max_dout=1e9,
                                                      max_dgrad=1e9)), 6)
    assert (int(euler.step_count.numpy()), float(euler.t.numpy())) == (6, 0.75)
    for a, b in zip(model.network.trainable_weights, euler.network.trainable_weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-12)


def test_an_alpha_model_without_dynamics_is_not_trained():
    model = AlphaModel(FullyConnected(6, depth=2, seed=0, dtype="float64"), alpha=0.5)
    model.compile()
    with pytest.raises(ConfigError, match="no dynamics to train it"):
        model.fit(tf.data.Dataset.from_tensors((X, Y)).repeat(), epochs=1, steps_per_epoch=1,
                  verbose=0)
