"""Many trial steps of an `AlphaModel` in one graph (`compile(steps_per_execution=K)`): a
tf.while_loop of its one-step function on the training set placed on the devices, which
returns at the first step where the flow converged, its loss is not finite, a limit of
`AlphaModel.pause_at` is met, or its dynamics' phase changed (`Dynamics.phase`)."""
import functools
import math
import time
from collections.abc import Callable, Hashable
from typing import Any

import tensorflow as tf


def in_graph_calls(one_step: Callable[[Any, Hashable], dict[str, tf.Tensor]],
                   training_set: Callable[[], Any], steps_per_execution: int,
                   jit_compile: bool, run_eagerly: bool,
                   phase: Callable[[], Any] = lambda: None
                   ) -> Callable[[Any, tuple[float, float, float]], dict[str, tf.Tensor]]:
    """A function (iterator, (until_step, until_t, seconds)) -> logs that makes up to
    `steps_per_execution` trial steps `one_step(training_set(), phase)`; the logs are the last
    step's. A limit of `seconds` caps the steps by the wall time the last call took per step.

    `phase()`: None, or a scalar integer tensor (a variable's value) telling which part of its
    step the dynamics takes next (`Dynamics.phase`). The steps are traced once per phase, each
    graph with that phase's method alone, and a call returns after the step that changes the
    phase: a switching integrator's stiff method is traced only once a run reaches it.
    """
    # Its control flow is explicit (tf.cond, tf.while_loop): autograph's conversion of
    # every function the step calls cost each new process about 2 s of tracing.
    by_phase: dict[Hashable, Any] = {}  # phase: (one step, the loop, zeros of the logs)

    def functions(current):
        if current in by_phase:
            return by_phase[current]

        def steps(data, no_logs, max_attempts, until_step, until_t):
            def going(attempts, logs):
                same = True if current is None else tf.equal(
                    tf.convert_to_tensor(phase()), current)
                return (attempts == 0) | (
                    (attempts < max_attempts) & (logs["converged"] == 0)
                    & (logs["step"] < until_step) & (logs["t"] < until_t)
                    & tf.math.is_finite(logs["rescaled_loss"]) & same)

            def step(attempts, logs):
                return attempts + 1, stepped(data)

            return tf.while_loop(going, step, (tf.constant(0, tf.int64), no_logs))

        stepped = functools.partial(one_step, phase=current)
        traced = tf.function(stepped, reduce_retracing=True, jit_compile=jit_compile,
                             autograph=False)
        if not run_eagerly:
            stepped, steps = traced, tf.function(steps, autograph=False)
        outputs = traced.get_concrete_function(training_set()).structured_outputs
        no_logs = tf.nest.map_structure(lambda v: tf.zeros(v.shape, v.dtype), outputs)
        by_phase[current] = steps, no_logs
        return by_phase[current]

    seconds_per_attempt = [math.inf]  # the wall time of one trial step, timed

    def call(iterator, pause):  # pylint: disable=unused-argument
        until_step, until_t, seconds = pause
        attempts = steps_per_execution
        if seconds < math.inf:
            attempts = min(attempts, int(seconds / seconds_per_attempt[0]))
        current = phase()  # read on the host (a mirrored variable's primary copy)
        steps, no_logs = functions(
            None if current is None else int(tf.convert_to_tensor(current).numpy()))
        began = time.monotonic()
        made, logs = steps(training_set(), no_logs, tf.constant(max(attempts, 1), tf.int64),
                           tf.constant(min(until_step, 2**62), tf.int64),
                           tf.constant(until_t, tf.float64))
        seconds_per_attempt[0] = max(time.monotonic() - began, 1e-9) / int(made)
        return logs

    return call
