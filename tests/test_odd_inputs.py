"""Odd inputs refused, or ended, with a reason: too few training points, a flow at rest, and a
precision no dtype has."""
import keras
import numpy as np
import pytest

from lazy_feature.errors import ConfigError
from lazy_feature.model import precision
from lazy_feature.run import callbacks
from lazy_feature.run import runner
from lazy_feature.run.config import MIN_N_TRAIN, TrainConfig
from tests.helpers import small_task


@pytest.mark.parametrize("n_train", [1, MIN_N_TRAIN - 1])
def test_too_few_training_points_are_refused_naming_the_limit(n_train):
    with pytest.raises(ConfigError, match=f"n_train={n_train} is too small to mean anything: "
                                          f"a binary task needs at least {MIN_N_TRAIN} "
                                          r"training points \(both classes\); raise --n_train"):
        TrainConfig(n_train=n_train)


def test_the_limit_itself_is_accepted():
    assert TrainConfig(n_train=MIN_N_TRAIN).n_train == MIN_N_TRAIN


def _state(step, t, loss, converged=False):
    """The logs of accepted step `step` at time t, its next dt as large as t."""
    return dict(step=step, t=t, dt=t, converged=converged, rescaled_loss=loss)


def _first_stop(stopping, states):
    """(index, reason) of the first of `states` at which `stopping` stops, or None."""
    for i, state in enumerate(states):
        reason = stopping.stop_reason(state)
        if reason is not None:
            return i, reason
    return None


REST_STEPS = callbacks.GradientFlowStopping.REST_STEPS
# dt and t double with each step: 300 steps take t to 2e90, short of REST_TIME.
DOUBLING = range(1, 301)


def test_a_flow_at_rest_stalls_within_rest_steps():
    # The loss stays put while dt and t grow geometrically (a --width=1 run's ∇L vanishing);
    # the first state, at t = 0, starts no window (no factor grows t from 0).
    states = [dict(_state(0, 0.0, 0.3), dt=1.0)] + [_state(k, 2.0 ** k, 0.3) for k in DOUBLING]
    stopping = callbacks.GradientFlowStopping()
    index, reason = _first_stop(stopping, states)
    assert reason == "stalled" and states[index]["step"] == 1 + REST_STEPS
    assert states[index]["t"] < stopping.REST_TIME  # the rest rule, not REST_TIME's
    # A resume's fresh callback starts its window again, at the state it resumes from.
    resumed = callbacks.GradientFlowStopping()
    index, _ = _first_stop(resumed, states[100:])
    assert states[100 + index]["step"] == states[100]["step"] + REST_STEPS


def test_a_flow_still_converging_does_not_stall():
    # dt grows geometrically as in a flow at rest, but α²L ~ 1/t, as in a flow that fits.
    assert _first_stop(callbacks.GradientFlowStopping(),
                       [_state(k, 2.0 ** k, 2.0 ** -k) for k in DOUBLING]) is None
    # Past convergence (a flow run to a set time) a flow at rest goes on to its budget.
    ahead = callbacks.GradientFlowStopping(stop_when_converged=False, max_steps=DOUBLING[-1])
    index, reason = _first_stop(ahead, [_state(k, 2.0 ** k, 1e-3, converged=True)
                                        for k in DOUBLING])
    assert (index, reason) == (len(DOUBLING) - 1, "max_steps")


def test_the_healthy_sequence_of_the_stall_test_does_not_stall():
    # test_alpha_model's dip of dt one step short of STALL_STEPS, at a constant loss and t:
    # t does not grow, so the flow is not at rest.
    stopping = callbacks.GradientFlowStopping()
    ratio, steps = stopping.STALL_RATIO, stopping.STALL_STEPS
    states = ([dict(_state(100, 1.0, 0.5), dt=1e-3)]
              + [dict(_state(step, 1.0, 0.5), dt=0.5 * ratio) for step in range(101, 101 + steps)]
              + [dict(_state(101 + steps, 1.0, 0.5), dt=2 * ratio)])
    assert _first_stop(stopping, states) is None


class _EveryStep(keras.callbacks.Callback):
    """The logs of every accepted step (under in-graph stepping, a pause after each)."""

    def __init__(self):
        super().__init__()
        self.states = []

    def on_train_batch_begin(self, batch, logs=None):
        self.model.pause_at(step=int(self.states[-1]["step"]) + 1 if self.states else 1)

    def on_train_batch_end(self, batch, logs=None):
        self.states.append({k: float(np.asarray(logs[k]))
                            for k in ("step", "t", "dt", "rescaled_loss", "converged")})


def test_a_real_flow_past_convergence_is_not_at_rest():
    # The logistic loss keeps falling after the fit, α²L ~ 1/t, while dt grows geometrically:
    # t goes from 1 to 1e40 in some 450 steps, a millionfold in under REST_STEPS. Replayed as
    # if unconverged it does not stall; with its loss frozen it does.
    task = small_task()
    config = TrainConfig(n_train=10, n_test=200, width=8, depth=2, alpha=1.0, dtype="float64",
                         loss="logistic")
    model = runner.build_model(config, task.x_train.shape[1:])
    model.t_end.assign(1e40)  # past convergence, to t_end (`AlphaModel.t_end`)
    every = _EveryStep()
    stopping = callbacks.GradientFlowStopping(max_time=1e40, stop_when_converged=False)
    runner.fit_flow(model, task.x_train, task.y_train, [stopping, every])
    assert stopping.reason == "max_time" and len(every.states) > 2 * REST_STEPS
    unconverged = [dict(state, converged=False) for state in every.states]
    assert _first_stop(callbacks.GradientFlowStopping(), unconverged) is None
    frozen = [dict(state, rescaled_loss=0.1) for state in unconverged]
    assert _first_stop(callbacks.GradientFlowStopping(), frozen)[1] == "stalled"


def test_float32_refusal_advises_float64():
    above = 1.01 * precision.largest_alpha("float32", 100, "direct")
    with pytest.raises(ConfigError, match="float32 cannot resolve") as refused:
        TrainConfig(width=100, alpha=above, dtype="float32", form="direct")
    assert str(refused.value).endswith(
        "use --dtype=float64 or leave --dtype unset (or leave --form unset: the difference "
        "form resolves it in float32)")


@pytest.mark.parametrize("dtype", ["float64", None])
@pytest.mark.parametrize("architecture, width, form, sqrt_h_alpha", [
    ("fc", 100, "direct", 1e30), ("cnn", 4, "direct", 1e30), ("fc", 100, "difference", 1e200)])
def test_float64_refusal_names_the_largest_alpha(dtype, architecture, width, form,
                                                 sqrt_h_alpha):
    # Not even float64 resolves it, given or picked by default.
    rule_h = precision.resolution_width(architecture, width)  # the CNN's: 25·h
    largest = precision.largest_alpha("float64", rule_h, form)
    with pytest.raises(ConfigError, match="float64 cannot resolve") as refused:
        TrainConfig(architecture=architecture, width=width,
                    alpha=sqrt_h_alpha / np.sqrt(width), dtype=dtype, form=form)
    message = str(refused.value)
    assert message.endswith(
        f"float64 is the most precise dtype available: lower --alpha below {largest:.3g} "
        f"(--sqrt_h_alpha below {largest * np.sqrt(width):.3g})")
    assert "use --dtype" not in message and "unset" not in message and "\n" not in message
    assert TrainConfig(architecture=architecture, width=width, alpha=largest, dtype=dtype,
                       form=form).dtype == "float64"


def test_the_divergence_advice_matches_the_run():
    assert runner.divergence_advice(
        TrainConfig(width=16, dtype="float32", integrator="euler")) == "use --dtype=float64"
    advice = runner.divergence_advice(TrainConfig(width=16, dtype="float64").resolved())
    assert "--integrator=euler" in advice and "float64" not in advice
    advice = runner.divergence_advice(TrainConfig(width=16, dtype="float64", integrator="euler"))
    assert "--dt0" in advice and "float64" not in advice
