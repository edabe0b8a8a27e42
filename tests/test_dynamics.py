"""Continuous momentum (momentum.ContinuousMomentum, Section 7, Figs. 7 (c) and 13) against
gradient flow, and the dynamics settings' one-line errors."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.run import artifact, checkpoint
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.flow.momentum import ContinuousMomentum
from lazy_feature.errors import ConfigError
from tests.helpers import StopAtStep, checkpoint_step, synthetic_task

# A flow of ~150 Euler steps (ε_∇ = 5e-2): what is tested does not depend on it. Gradient flow
# by the paper's Euler scheme, which steps momentum too.
_SETUP = dict(n_train=24, n_test=30, width=8, alpha=0.5, dtype="float64", max_dgrad=5e-2,
              integrator="euler")


def _train(path, **settings):
    config = TrainConfig(**dict(_SETUP, **settings))
    metrics = runner.train(config, str(path), task=synthetic_task(n_train=24, n_test=30))
    return metrics, np.load(path / artifact.TEST_OUTPUTS)


@pytest.mark.parametrize("proportional_to_t", [False, True])
def test_the_velocity_step_is_the_exact_solution_for_a_frozen_gradient(proportional_to_t):
    # With ∇L frozen, v + ∇L decays by x(t, dt) over a step: exact iff two steps compose
    # into one, x(t, a)·x(t + a, b) = x(t, a + b), with x → 1 as dt → 0 and, at t = 0 for
    # τ = tau·t, x = 0 (τ = 0 there: v = −∇L at once).
    momentum = ContinuousMomentum(tau=0.7, proportional_to_t=proportional_to_t)
    for t, a, b in [(0.3, 0.2, 1.1), (2.0, 0.01, 5.0)]:
        assert float(momentum.decay(t, a) * momentum.decay(t + a, b)) == pytest.approx(
            float(momentum.decay(t, a + b)), rel=1e-12)
        assert float(momentum.decay(t, 1e-9)) == pytest.approx(1.0, abs=1e-8)
    # τ v̇ = −(v + ∇L) with τ = 0.7 or 0.7 t: ln x = −dt/τ, or −(1/0.7) ln((t + dt)/t).
    expected = (-np.log(2.0) / 0.7) if proportional_to_t else -1.0 / 0.7
    assert float(tf.math.log(momentum.decay(1.0, 1.0))) == pytest.approx(expected, rel=1e-12)
    assert float(momentum.decay(0.0, 0.5)) == (0.0 if proportional_to_t else np.exp(-0.5 / 0.7))
    assert float(ContinuousMomentum(0.0).decay(1.0, 0.1)) == 0.0


@pytest.mark.slow
def test_momentum_at_tau_0_is_gradient_flow_and_tends_to_it_as_tau_shrinks(tmp_path):
    flow, F_flow = _train(tmp_path / "flow")
    zero, F_zero = _train(tmp_path / "tau0", dynamics="momentum", tau=0.0)
    # τ = 0: the very steps of the Euler scheme, bit for bit.
    assert (zero["steps"], zero["rejected_steps"], zero["t"]) == (
        flow["steps"], flow["rejected_steps"], flow["t"])
    np.testing.assert_array_equal(F_zero, F_flow)
    # τ → 0: the converged outputs approach gradient flow's.
    deviation = {}
    for tau in (0.3, 0.03):
        metrics, F = _train(tmp_path / f"tau{tau}", dynamics="momentum", tau=tau)
        assert metrics["converged"]
        deviation[tau] = np.linalg.norm(F - F_flow) / np.linalg.norm(F_flow)
    assert deviation[0.03] < deviation[0.3] / 4 and deviation[0.03] < 0.02, deviation


@pytest.mark.slow
def test_momentum_with_tau_proportional_to_t_converges_and_resumes_exactly(tmp_path):
    # Fig. 7 (c)'s EMNIST setup: τ = tau·t and the soft hinge's β = 10.
    settings = dict(dynamics="momentum", tau=0.5, tau_proportional_to_t=True, loss_beta=10.0)
    whole, F_whole = _train(tmp_path / "whole", **settings)
    assert whole["converged"] and whole["train_error"] == 0.0
    records = artifact.read_jsonl(str(tmp_path / "whole" / artifact.DYNAMICS))
    assert records[-1]["rescaled_loss"] < records[0]["rescaled_loss"] / 10
    config = TrainConfig(**dict(_SETUP, **settings))
    task = synthetic_task(n_train=24, n_test=30)
    cut = str(tmp_path / "cut")
    with pytest.raises(RuntimeError):  # killed at step 30: the checkpoint of step 29 remains
        runner.train(config, cut, task=task, checkpoint_seconds=0.0,
                     extra_callbacks=[StopAtStep(30, RuntimeError("killed"))])
    assert checkpoint_step(cut, config, task) == 29
    resumed = runner.train(config, cut, task=task)  # v and t come back from the checkpoint
    for key in ("steps", "rejected_steps", "t", "gradient_evaluations", "weight_drift"):
        assert resumed[key] == whole[key], key
    np.testing.assert_array_equal(np.load(tmp_path / "cut" / artifact.TEST_OUTPUTS), F_whole)


@pytest.mark.parametrize("settings, message", [
    (dict(tau=1.0), "--tau and --tau_proportional_to_t are for --dynamics=momentum"),
    (dict(dynamics="adam", tau=1.0), "are for --dynamics=momentum, not adam"),
    (dict(dynamics="momentum", tau_proportional_to_t=True), "needs tau > 0"),
    (dict(dynamics="momentum", tau=-1.0), "tau must be >= 0"),
    (dict(learning_rate=0.1), "are for --dynamics=adam, not gradient_flow"),
    (dict(dynamics="momentum", tau=1.0, epochs=3), "are for --dynamics=adam, not momentum"),
    (dict(batch_size=16), "are for --dynamics=adam"),
    (dict(dynamics="adam", batch_size=100, n_train=60), "batch_size=100 exceeds n_train=60"),
    (dict(dynamics="adam", integrator="dormand_prince"), "--dynamics=adam takes no --integrator"),
    (dict(dynamics="momentum", integrator="bogacki_shampine"), "momentum is stepped by euler"),
    (dict(dynamics="sgd"), "unknown dynamics 'sgd'"),
    (dict(dynamics="adam", max_dgrad=1e-3), "set the gradient flow's steps; --dynamics=adam"),
])
def test_bad_dynamics_settings_are_one_line_config_errors(settings, message):
    with pytest.raises(ConfigError, match=message) as error:
        TrainConfig(**settings)
    assert "\n" not in str(error.value)


def test_run_ids_of_the_dynamics():
    adam = TrainConfig(dynamics="adam", learning_rate=0.01)
    assert dataclasses.replace(adam, max_steps=5).run_id() == adam.run_id()  # a budget
    ids = {TrainConfig().run_id(), adam.run_id(), TrainConfig(dynamics="adam").run_id(),
           dataclasses.replace(adam, epochs=5.0).run_id(),  # the length of an Adam run
           TrainConfig(dynamics="momentum", tau=0.1).run_id(),
           TrainConfig(dynamics="momentum", tau=0.1, tau_proportional_to_t=True).run_id()}
    assert len(ids) == 6


@pytest.mark.parametrize("settings", [dict(dynamics="momentum", tau=0.5),
                                      dict(dynamics="adam", batch_size=8, learning_rate=0.1)])
def test_a_saved_model_keeps_its_dynamics_and_their_state(tmp_path, settings):
    flow_only = ("max_dgrad",) if settings["dynamics"] == "adam" else ()  # adam refuses it
    config = TrainConfig(**{k: v for k, v in dict(_SETUP, **settings).items()
                            if k not in flow_only})
    task = synthetic_task(n_train=24, n_test=30)
    model = runner.build_model(config, task.d)
    model.start(task.x_train, task.y_train)
    state = checkpoint.model_state(model)
    extra = [v for name, v in state.items() if name.startswith(("velocity", "adam_"))]
    assert len(extra) == len(model.network.trainable_weights) * (1 if "tau" in settings else 2)
    for i, v in enumerate(extra):  # a velocity, or Adam's moments, in the middle of a run
        v.assign(np.full(v.shape, 0.1 * (i + 1)))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.dynamics == config.make_dynamics()
    for name, v in checkpoint.model_state(loaded).items():
        np.testing.assert_array_equal(np.asarray(v), np.asarray(state[name]), err_msg=name)
