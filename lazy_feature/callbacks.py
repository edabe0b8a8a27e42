"""Keras callbacks around the gradient flow: stopping, log-spaced records, checkpoints.

Each `AlphaModel.train_step` is one trial step; its logs carry the integrator's state
(step = accepted steps, t = gradient-flow time of eq. 7, dt, dout of eq. 8, dgrad of eq. 9,
rescaled_loss = α²L, train_error, unfitted, weight_drift, output_norm, converged).
"""
import json
import logging
import math
import time

import keras
import numpy as np
import tensorflow as tf

from lazy_feature import artifact
from lazy_feature.errors import DivergenceError

logger = logging.getLogger("lazy_feature")

RECORD_KEYS = ("step", "t", "dt", "dgrad", "dout", "rescaled_loss", "train_error", "unfitted",
               "weight_drift", "output_norm", "f_norm")
POINTS_PER_DECADE = 20


def is_log_step(step, per_decade=POINTS_PER_DECADE):
    """Whether accepted step `step` is on the log-spaced schedule (every step below 10)."""
    if step < 10:
        return True
    return math.floor(per_decade * math.log10(step)) > math.floor(per_decade * math.log10(step - 1))


def _python(logs):
    return {k: (v.item() if isinstance(v, np.generic) else float(np.asarray(v)))
            for k, v in logs.items()}


class GradientFlowStopping(keras.callbacks.Callback):
    """Stops `fit` when every margin exceeds 1 (converged) or a budget is spent.

    Budgets: `max_time` in gradient-flow time, `max_steps` accepted steps, and
    `max_wall_seconds` of wall clock (counting `wall_offset` seconds spent before a
    resume). Raises DivergenceError when dt falls below `min_dt` (a step that no dt makes
    obey eqs. 8-9, e.g. a non-finite loss). `reason` says why training stopped.
    """

    def __init__(self, max_time=math.inf, max_steps=math.inf, max_wall_seconds=math.inf,
                 wall_offset=0.0, min_dt=1e-30):
        super().__init__()
        self.max_time, self.max_steps = max_time, max_steps
        self.max_wall_seconds, self.wall_offset, self.min_dt = max_wall_seconds, wall_offset, min_dt
        self.reason = None

    def on_train_begin(self, logs=None):
        self._start = time.monotonic()
        self.reason = None

    def wall_seconds(self):
        return self.wall_offset + time.monotonic() - self._start

    def on_train_batch_end(self, batch, logs=None):
        logs = _python(logs)
        if logs["converged"]:
            self.reason = "converged"
        elif logs["t"] >= self.max_time:
            self.reason = "max_time"
        elif logs["step"] >= self.max_steps:
            self.reason = "max_steps"
        elif self.wall_seconds() >= self.max_wall_seconds:
            self.reason = "max_wall_seconds"
        elif not (logs["dt"] > self.min_dt and math.isfinite(logs["rescaled_loss"])):
            raise DivergenceError(
                f"gradient flow diverged at step {int(logs['step'])} (dt={logs['dt']:.3g}, "
                f"rescaled loss={logs['rescaled_loss']:.3g}): lower dt0 or use dtype float64")
        if self.reason:
            self.model.stop_training = True


class LogSpaced(keras.callbacks.Callback):
    """Base of the callbacks that act on the log-spaced schedule of accepted steps.

    Subclasses implement `record(entry)`, called with a dict of RECORD_KEYS (plus
    `wall_seconds`, counted from the first record plus `wall_offset`) at every step on the
    schedule and at the end of training. A resumed run passes the step it resumes from as
    `last_step`, so no step is recorded twice.
    """

    def __init__(self, per_decade=POINTS_PER_DECADE, last_step=-1, wall_offset=0.0):
        super().__init__()
        self.per_decade, self.last_step, self.wall_offset = per_decade, last_step, wall_offset
        self._start = None

    def _emit(self, logs):
        if self._start is None:
            self._start = time.monotonic() - self.wall_offset
        entry = {k: logs.get(k) for k in RECORD_KEYS}  # dout, dgrad: None before any step
        entry["step"] = int(entry["step"])
        entry["unfitted"] = int(entry["unfitted"])
        entry["wall_seconds"] = time.monotonic() - self._start
        self.last_step = entry["step"]
        self.record(entry)

    def on_train_batch_end(self, batch, logs=None):
        logs = _python(logs)
        self._logs = logs
        step = int(logs["step"])
        if step > self.last_step and is_log_step(step, self.per_decade):
            self._emit(logs)

    def on_train_end(self, logs=None):
        last = getattr(self, "_logs", None)
        if last is not None and int(last["step"]) > self.last_step:
            self._emit(last)

    def record_state(self, state):
        """Record a state given outside `fit` (e.g. `AlphaModel.train_state()` at t = 0)."""
        self._emit(_python(state))

    def record(self, entry):
        raise NotImplementedError


class JsonlLogger(LogSpaced):
    """Appends each record as one JSON line to `path` (the dynamics log)."""

    def __init__(self, path, **kwargs):
        super().__init__(**kwargs)
        self.path = path

    def record(self, entry):
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")


class TensorBoardScalars(LogSpaced):
    """Writes each record as TensorBoard scalars, indexed by the accepted step."""

    def __init__(self, logdir, **kwargs):
        super().__init__(**kwargs)
        self.writer = tf.summary.create_file_writer(logdir)

    def record(self, entry):
        with self.writer.as_default():
            for k, v in entry.items():
                if k != "step" and v is not None:
                    tf.summary.scalar(k, v, step=entry["step"])
        self.writer.flush()


class ProgressLogger(LogSpaced):
    """One status line per record through the `lazy_feature` logger."""

    def record(self, entry):
        logger.info(
            "step %d  t=%.4g  dt=%.3g  a2L=%.4g  train_err=%.4f  unfitted=%d  wall=%.1fs",
            entry["step"], entry["t"], entry["dt"], entry["rescaled_loss"], entry["train_error"],
            entry["unfitted"], entry["wall_seconds"])


class Checkpointer(keras.callbacks.Callback):
    """Saves the whole model (w, w0 and the integrator's state) every `every_seconds`.

    The file is written under a temporary name and renamed, so a kill never leaves a
    half-written checkpoint; `on_save(step)` runs after each save (e.g. to note the wall
    time spent so far).
    """

    def __init__(self, path, every_seconds=60.0, on_save=None):
        super().__init__()
        self.path, self.every_seconds, self.on_save = path, every_seconds, on_save

    def on_train_begin(self, logs=None):
        self._last = time.monotonic()

    def save(self):
        artifact.save_weights(self.model, self.path)
        if self.on_save is not None:
            self.on_save(int(self.model.step_count.numpy()))

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self._last >= self.every_seconds:
            self.save()
            self._last = time.monotonic()


class KernelDriftMonitor(LogSpaced):
    """Live kernel drift in TensorBoard (Section 5, Fig. 8 (a, b)).

    On the log-spaced schedule it computes ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ on a fixed probe set and
    writes it with α²L and ‖w − w0‖/‖w0‖, plus an image of the probe's Gram matrix at
    initialization and now, examples sorted by label, on one shared color scale so that the
    kernel's inflation shows.

    Args:
      x_probe, y_probe: the probe inputs and their ±1 labels (a few hundred points).
      logdir: the TensorBoard directory.
    """

    def __init__(self, x_probe, y_probe, logdir, **kwargs):
        super().__init__(**kwargs)
        order = np.argsort(-np.asarray(y_probe), kind="stable")  # y = +1 first, as in Fig. 8
        self.x_probe = np.asarray(x_probe)[order]
        self.writer = tf.summary.create_file_writer(logdir)
        self._gram0 = None

    def record(self, entry):
        from lazy_feature import ntk  # ntk builds on the model; import it only when used
        if self._gram0 is None:
            self._gram0 = ntk.gram(self.model.initial_network, self.x_probe)
        gram = ntk.gram(self.model.network, self.x_probe)
        drift = np.linalg.norm(gram - self._gram0) / np.linalg.norm(self._gram0)
        lo, hi = min(gram.min(), self._gram0.min()), max(gram.max(), self._gram0.max())
        images = (np.stack([self._gram0, gram])[..., None] - lo) / max(hi - lo, 1e-300)
        with self.writer.as_default():
            step = entry["step"]
            tf.summary.scalar("ntk_drift", drift, step=step)
            tf.summary.scalar("rescaled_loss", entry["rescaled_loss"], step=step)
            tf.summary.scalar("weight_drift", entry["weight_drift"], step=step)
            tf.summary.image("ntk_gram_init_and_now", images.astype(np.float32), step=step,
                             max_outputs=2)
        self.writer.flush()
