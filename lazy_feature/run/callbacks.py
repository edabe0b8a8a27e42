"""Keras callbacks around the gradient flow: stopping, log-spaced records, checkpoints (the
TensorBoard recorder is in `summaries`).

Each `AlphaModel.train_step` is one trial step; its logs carry the integrator's state
(step = accepted steps, t = gradient-flow time of eq. 7, dt, dout of eq. 8, dgrad of eq. 9,
error = the trial's error over its tolerance, evaluations = gradient evaluations so far,
rescaled_loss = α²L, train_error, unfitted, weight_drift, output_norm, converged).
"""
import contextlib
import logging
import math
import signal
import threading
import time

import keras
import numpy as np

from lazy_feature.errors import DivergenceError
from lazy_feature.run import artifact

logger = logging.getLogger("lazy_feature")

RECORD_KEYS = ("step", "t", "dt", "dgrad", "dout", "error", "evaluations", "rescaled_loss",
               "train_error", "unfitted", "weight_drift", "output_norm", "f_norm")
POINTS_PER_DECADE = 20


def is_log_step(step, per_decade=POINTS_PER_DECADE):
    """Whether accepted step `step` is on the log-spaced schedule (every step below 10)."""
    if step < 10:
        return True
    return math.floor(per_decade * math.log10(step)) > math.floor(per_decade * math.log10(step - 1))


def next_log_step(step, per_decade=POINTS_PER_DECADE):
    """The first step after `step` on the log-spaced schedule (`is_log_step`)."""
    following = step + 1
    if step >= 10:  # start just below the schedule's next point 10^(k/per_decade) > step
        k = math.floor(per_decade * math.log10(step)) + 1
        following = max(following, math.floor(10 ** (k / per_decade)) - 1)
    while not is_log_step(following, per_decade):
        following += 1
    return following


def _python(logs):
    return {k: (v.item() if isinstance(v, np.generic) else float(np.asarray(v)))
            for k, v in logs.items()}


class GradientFlowStopping(keras.callbacks.Callback):
    """Stops `fit` when every margin exceeds 1 (converged) or a budget is spent.

    Budgets: `max_time` in gradient-flow time, `max_steps` accepted steps, and
    `max_wall_seconds` of wall clock (counting `wall_offset` seconds spent before a resume);
    `max_epochs` is an Adam run's length in t (its t counts epochs), which ends it finished
    (`runner.finished`). Raises DivergenceError when dt falls below `min_dt` (a step that no
    dt makes obey eqs. 8-9, e.g. a non-finite loss), with `advice` on what to try. `reason` says why training stopped.

    "stalled": dt stayed below STALL_RATIO·t for STALL_STEPS accepted steps in a row, so t
    would take over 10^7 more steps to double. A ReLU network does this in the feature regime:
    ∇L jumps where a pre-activation crosses zero (Appendix F) by more than eq. 9's ε_∇ allows,
    so every step that reaches the kink is rejected and dt falls towards 0; healthy runs keep
    dt/t orders of magnitude above STALL_RATIO (docs/integrators.md). So does a flow that
    came to rest short of the criterion (a ReLU network whose units died on the unfitted
    points: ∇L vanishes and dt grows without bound) once t passes REST_TIME, far beyond any
    convergence, before it overflows. Long before that, it stalls at rest: short of
    convergence, α²L fell by under REST_FALL of itself over REST_STEPS accepted steps or more
    in which t grew over REST_GROWTH-fold (a --width=1 run otherwise spent its whole step
    budget, dt growing to 3e19). A flow still converging loses a share of its loss with each
    decade of t (α²L ~ 1/t as it fits); at under a billionth per six decades it would need a
    million such spans to lose a thousandth. The span restarts wherever α²L falls by more,
    and on a resume. A stalled run is unfinished, like a budget-stopped one, but more budget
    cannot help it.
    `stop_when_converged=False` goes on past convergence, to a budget (a flow run to a set
    time, `AlphaModel.t_end`).
    """

    STALL_RATIO, STALL_STEPS, REST_TIME = 1e-7, 1000, 1e100
    REST_STEPS, REST_GROWTH, REST_FALL = 200, 1e6, 1e-9

    def __init__(self, max_time=math.inf, max_steps=math.inf, max_wall_seconds=math.inf,
                 wall_offset=0.0, min_dt=1e-30, stop_when_converged=True, max_epochs=math.inf,
                 advice="lower --dt0 or use --dtype=float64"):
        super().__init__()
        self._slow_since = None  # the accepted step from which dt < STALL_RATIO·t
        self._rest_from = None  # (step, t, α²L) from which α²L fell by under REST_FALL
        self.max_time, self.max_steps, self.max_epochs = max_time, max_steps, max_epochs
        self.max_wall_seconds, self.wall_offset, self.min_dt = max_wall_seconds, wall_offset, min_dt
        self.stop_when_converged = stop_when_converged
        self.advice = advice  # what to try when the flow cannot take a step
        self.reason = None
        self._start = time.monotonic()

    def wall_seconds(self):
        """Wall-clock seconds spent: those before a resume and those since this was made."""
        return self.wall_offset + time.monotonic() - self._start

    def on_train_batch_begin(self, batch, logs=None):
        self.model.pause_at(step=self.max_steps, t=min(self.max_time, self.max_epochs),
                            seconds=self.max_wall_seconds - self.wall_seconds())

    def stop_reason(self, logs):
        """Why the flow at state `logs` stops ("converged" or a budget's name), or None."""
        logs = _python(logs)
        if logs["converged"] and self.stop_when_converged:
            return "converged"
        if logs["t"] >= self.max_epochs:
            return "max_epochs"
        if logs["t"] >= self.max_time:
            return "max_time"
        if logs["step"] >= self.max_steps:
            return "max_steps"
        if self.wall_seconds() >= self.max_wall_seconds:
            return "max_wall_seconds"
        if not (logs["dt"] > self.min_dt and math.isfinite(logs["rescaled_loss"])):
            raise DivergenceError(
                f"gradient flow diverged at step {int(logs['step'])} (dt={logs['dt']:.3g}, "
                f"rescaled loss={logs['rescaled_loss']:.3g}): {self.advice}")
        if self._stalled(logs):
            logger.warning("the flow stalled at step %d: dt = %.3g at t = %.6g", int(logs["step"]),
                           logs["dt"], logs["t"])
            return "stalled"
        return None

    def _stalled(self, logs):
        """Whether dt has stayed below STALL_RATIO·t for STALL_STEPS accepted steps, or t has
        passed REST_TIME, or the flow is at rest (`_at_rest`)."""
        if logs["t"] >= self.REST_TIME or self._at_rest(logs):
            return True
        if not logs["dt"] < self.STALL_RATIO * logs["t"]:
            self._slow_since = None
            return False
        if self._slow_since is None:
            self._slow_since = logs["step"]
        return logs["step"] - self._slow_since >= self.STALL_STEPS

    def _at_rest(self, logs):
        """Whether, short of convergence, α²L has fallen by under REST_FALL of itself over at
        least REST_STEPS accepted steps in which t grew over REST_GROWTH-fold. The window
        starts at t > 0 (no factor grows t from 0) and again wherever α²L falls by more."""
        step, t, loss = logs["step"], logs["t"], logs["rescaled_loss"]
        start = self._rest_from
        if start is None or start[1] <= 0 or loss < (1 - self.REST_FALL) * start[2]:
            self._rest_from = (step, t, loss)
            return False
        return (not logs["converged"] and step - start[0] >= self.REST_STEPS
                and t > self.REST_GROWTH * start[1])

    def on_train_batch_end(self, batch, logs=None):
        self.reason = self.stop_reason(logs)
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
        entry["evaluations"] = int(entry["evaluations"])
        entry["wall_seconds"] = time.monotonic() - self._start
        self.last_step = entry["step"]
        self.record(entry)

    def on_train_batch_begin(self, batch, logs=None):
        self.model.pause_at(step=next_log_step(max(self.last_step, 0), self.per_decade))

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
    """Appends each record as one JSON line to `path` (the dynamics log); `records` counts
    the lines the log holds (those already there on a resume included)."""

    def __init__(self, path, records=0, **kwargs):
        super().__init__(**kwargs)
        self.path, self.records = path, records

    def record(self, entry):
        artifact.append_line(self.path, artifact.json_line(entry))
        self.records += 1


class ProgressLogger(LogSpaced):
    """One status line per record through the `lazy_feature` logger, and appended to the
    file `path` if given (a run's train.log, written whatever the logger's level)."""

    def __init__(self, path=None, **kwargs):
        super().__init__(**kwargs)
        self.path = path

    def record(self, entry):
        line = ("step %d  evals=%d  t=%.4g  dt=%.3g  a2L=%.4g  train_err=%.4f  unfitted=%d  "
                "wall=%.1fs" % (entry["step"], entry["evaluations"], entry["t"], entry["dt"],
                                entry["rescaled_loss"], entry["train_error"], entry["unfitted"],
                                entry["wall_seconds"]))
        logger.info("%s", line)
        if self.path is not None:
            artifact.append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}")


class Checkpointer(keras.callbacks.Callback):
    """Saves an `checkpoint.TrainingCheckpoint` every `every_seconds`, and on SIGTERM or SIGINT.

    `state()` gives the rest of the checkpoint: dict(log_records, wall_seconds). Put it
    last among the callbacks, so that each save follows the records of its step. Inside
    `saving_on_signals()`, SIGTERM (a preempted machine) or SIGINT (Ctrl-C) makes it save when
    the current call of the train function returns (under in-graph stepping it returns at
    least every `every_seconds`) and raise KeyboardInterrupt; a second signal interrupts at
    once, like a kill (the run then resumes from its last checkpoint).
    """

    def __init__(self, checkpoint, every_seconds=60.0, state=dict):
        super().__init__()
        self.checkpoint, self.every_seconds, self.state = checkpoint, every_seconds, state
        self._signal = None
        self._last = time.monotonic()

    def save(self):
        self.checkpoint.save(**self.state())
        self._last = time.monotonic()

    def on_train_batch_begin(self, batch, logs=None):
        self.model.pause_at(seconds=self.every_seconds - (time.monotonic() - self._last))

    def on_train_batch_end(self, batch, logs=None):
        if self._signal is not None:
            self.save()
            raise KeyboardInterrupt(f"{signal.Signals(self._signal).name}: checkpoint saved")
        if time.monotonic() - self._last >= self.every_seconds:
            self.save()

    @contextlib.contextmanager
    def saving_on_signals(self):
        """Within this block SIGTERM and SIGINT save a checkpoint before stopping (main thread
        only: a worker thread, e.g. Beam's, leaves the signals to its process)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def handler(signum, frame):
            if self._signal is not None:
                raise KeyboardInterrupt(signal.Signals(signum).name)
            self._signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
