"""Many trial steps of an `AlphaModel` in one graph (`compile(steps_per_execution=K)`): a
tf.while_loop of its one-step function on the training set placed on the devices, which
returns at the first step where the flow converged, its loss is not finite, or a limit of
`AlphaModel.pause_at` is met."""
import math
import time
from collections.abc import Callable
from typing import Any

import tensorflow as tf


def in_graph_calls(one_step: Callable[[Any], dict[str, tf.Tensor]],
                   training_set: Callable[[], Any], steps_per_execution: int,
                   jit_compile: bool, run_eagerly: bool
                   ) -> Callable[[Any, tuple[float, float, float]], dict[str, tf.Tensor]]:
    """A function (iterator, (until_step, until_t, seconds)) -> logs that makes up to
    `steps_per_execution` trial steps `one_step(training_set())`; the logs are the last
    step's. A limit of `seconds` caps the steps by the wall time the last call took per step.
    """
    def steps(data, no_logs, max_attempts, until_step, until_t):
        def going(attempts, logs):
            return (attempts == 0) | (
                (attempts < max_attempts) & (logs["converged"] == 0)
                & (logs["step"] < until_step) & (logs["t"] < until_t)
                & tf.math.is_finite(logs["rescaled_loss"]))

        def step(attempts, logs):
            return attempts + 1, one_step(data)

        return tf.while_loop(going, step, (tf.constant(0, tf.int64), no_logs))

    # Its control flow is explicit (tf.cond, tf.while_loop): autograph's conversion of
    # every function the step calls cost each new process about 2 s of tracing.
    traced = tf.function(one_step, reduce_retracing=True, jit_compile=jit_compile,
                         autograph=False)
    if not run_eagerly:
        one_step, steps = traced, tf.function(steps, autograph=False)
    no_logs: list[Any] = []  # zeros of the logs' structure: the loop's values before its first step
    seconds_per_attempt = [math.inf]  # the wall time of one trial step, timed

    def call(iterator, pause):  # pylint: disable=unused-argument
        until_step, until_t, seconds = pause
        attempts = steps_per_execution
        if seconds < math.inf:
            attempts = min(attempts, int(seconds / seconds_per_attempt[0]))
        if not no_logs:
            outputs = traced.get_concrete_function(training_set()).structured_outputs
            no_logs.append(tf.nest.map_structure(lambda v: tf.zeros(v.shape, v.dtype),
                                                 outputs))
        began = time.monotonic()
        made, logs = steps(training_set(), no_logs[0], tf.constant(max(attempts, 1), tf.int64),
                           tf.constant(min(until_step, 2**62), tf.int64),
                           tf.constant(until_t, tf.float64))
        seconds_per_attempt[0] = max(time.monotonic() - began, 1e-9) / int(made)
        return logs

    return call
