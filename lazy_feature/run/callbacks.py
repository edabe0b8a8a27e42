"""Keras callbacks around the gradient flow: stopping, log-spaced records, checkpoints, TensorBoard.

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
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp_summary

from lazy_feature.errors import DivergenceError
from lazy_feature.kernel import drift
from lazy_feature.run import artifact
from lazy_feature.flow import training
from lazy_feature.model import architectures
from lazy_feature.run.config import FLOW_SETTINGS, INTEGRATOR_SETTINGS, NOT_IDENTITY

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


# -- TensorBoard ---------------------------------------------------------------------------
# TensorBoard groups tags by their prefix, sorts the groups by name and opens the first two:
# drift (with --live_drift), observables, result, solver.
_GROUPS = {"rescaled_loss": "observables", "train_error": "observables",
           "unfitted": "observables", "weight_drift": "observables",
           "output_norm": "observables", "f_norm": "observables",
           "t": "solver", "dt": "solver", "dout": "solver", "dgrad": "solver",
           "error": "solver", "evaluations": "solver", "wall_seconds": "solver"}
LOG_T_STEPS_PER_DECADE = 100
DESCRIPTIONS = {
    "observables/rescaled_loss": "α²L, eq. 7's training loss times α²: the mean loss per "
                                 "pattern ℓ(F, y) over the training set (dimensionless).",
    "observables/train_error": "Fraction of training points misclassified: F·y ≤ 0, F = "
                               "α[f(w) − f(w0)] of eq. 6 (a NaN output counts as an error).",
    "observables/unfitted": "Number of training points with margin F·y ≤ 1; the flow stops at "
                            "0 (the paper's stopping criterion, Section 2).",
    "observables/weight_drift": "‖w − w0‖/‖w0‖ over all trainable weights (Appendix B; "
                                "dimensionless).",
    "observables/output_norm": "‖f(w) − f(w0)‖ on the training set: root mean square over "
                               "its points, as in eq. 31 (units of f).",
    "observables/f_norm": "‖f(w)‖ on the training set: root mean square over its points, "
                          "eq. 31 (units of f).",
    "solver/t": "Gradient-flow time t = Σ dt of ẇ = −∇L with eq. 7's loss (continuous "
                "momentum: the time of its ODE; Adam: epochs done).",
    "solver/dt": "Time step of the next trial step (adaptive: shrunk after a step rejected by "
                 "eq. 8 or 9, grown after an easy one); in units of t.",
    "solver/dout": "Eq. 8's left side for the last trial step: α·max|f(w_i) − f(w_i+1)| over "
                   "the training set; a step is accepted below max_dout (0.1 by default).",
    "solver/dgrad": "Eq. 9's left side for the last trial step: ‖∇L_i − ∇L_i+1‖² / "
                    "(‖∇L_i‖‖∇L_i+1‖); a step is accepted below ε_∇ = max_dgrad (1e-4 by "
                    "default).",
    "solver/error": "The last trial step's error over its tolerance; it is accepted below 1. "
                    "Euler: the larger of eqs. 8 and 9's left sides over their bounds; a "
                    "Runge-Kutta pair: the larger of its local errors of α·f (over "
                    "output_tol) and of the step's mean gradient (over direction_tol).",
    "solver/evaluations": "Gradient evaluations so far: forward + backward passes of the "
                          "training set, rejected steps and Runge-Kutta stages included.",
    "solver/wall_seconds": "Wall-clock seconds spent training, counting those before a "
                           "resume.",
    "drift/ntk_drift": "Kernel drift ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ on the probe set (Frobenius "
                       "norms of the Gram matrices of eq. 5; Section 5; dimensionless).",
    "drift/log10_ntk_drift": "log10 of the kernel drift ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖: its whole "
                             "range (1e-6 lazy to ~1 feature) on one linear axis; from the "
                             "first step (at w0 the drift is 0).",
    "drift/ntk_drift_vs_log_t": "The kernel drift ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ against "
                                "gradient-flow time: step = round(100·log10 t), so 0 is t = 1, "
                                "100 is t = 10, 200 is t = 100, −100 is t = 0.1.",
    "drift/ntk_norm_ratio": "‖Θ(w)‖/‖Θ(w0)‖ on the probe set: how much the kernel inflated "
                            "(dimensionless).",
    "drift/gram_init": "Gram matrix Θ(w0, x_μ, x_ν) of eq. 5 on the probe set at "
                       "initialization (Fig. 8 (a)); points with y = +1 first; viridis from "
                       "its own minimum (dark) to its own maximum (yellow).",
    "drift/gram_now": "Gram matrix Θ(w, x_μ, x_ν) of eq. 5 on the probe set now (Fig. 8 (b)); "
                      "points with y = +1 first; viridis from its own minimum (dark) to its "
                      "own maximum (yellow), so compare shapes, and sizes through "
                      "drift/ntk_norm_ratio.",
    "result/test_error": "Test error of the trained network, F·y ≤ 0 on the test set.",
    "result/test_loss": "Mean loss per pattern ℓ(F, y) on the test set (α² × eq. 7's loss).",
    "result/converged": "1 if every training margin exceeds 1 (converged), 0 if a budget "
                        "stopped the run.",
}
_HPARAMS_METRICS = ("result/test_error", "result/converged", "observables/rescaled_loss",
                    "observables/train_error", "observables/weight_drift",
                    "observables/output_norm", "observables/f_norm", "drift/ntk_drift",
                    "solver/t", "result/test_loss")
_RESULT_KEYS = ("test_error", "test_loss", "converged")


def record_tag(key):
    """The TensorBoard tag of a record key: `group/key`, or the bare key if it has no group."""
    return f"{_GROUPS[key]}/{key}" if key in _GROUPS else key


def _scalar(tag, value, step):
    tf.summary.scalar(tag, value, step=step, description=DESCRIPTIONS.get(tag))


def _scalars(values, step):
    """Each of `values` ({tag: value}) at `step`. Traced once (`TensorBoardRecorder`): run
    eagerly, each scalar dispatches a dozen ops one by one, a share of a small run's wall
    time worth saving."""
    for tag, value in values.items():
        _scalar(tag, value, step)


def _domain(value):
    """The HParams domain of a setting's value, so that the HParams table can filter on it.

    Numbers get an open real interval, booleans both values, strings none (their values
    are not known in advance, and each run declares the domains anew).
    """
    if isinstance(value, bool):
        return hp.Discrete([False, True])
    if isinstance(value, (int, float)):
        return hp.RealInterval(-math.inf, math.inf)
    return None


def tensorboard_run_name(config):
    """A run's TensorBoard run: α, width, init seed and the run id's first 8 characters.

    For example `a=0.1_h=100_seed=0_1f3c9a2b`.
    """
    return f"a={config.alpha:.3g}_h={config.width}_seed={config.init_seed}_{config.run_id()[:8]}"


# The HParams a person reads first: the regime of the run (Section 3), in this order; and
# the five of them TensorBoard's HParams table shows as its first columns (it shows five by
# default: depth, the same in most studies, is left to tick).
REGIME_HPARAMS = ("sqrt_h_alpha", "alpha", "width", "depth", "init_seed", "n_train")
DEFAULT_COLUMNS = ("sqrt_h_alpha", "alpha", "width", "init_seed", "n_train")


def run_hparams(config):
    """A run's HParams: REGIME_HPARAMS first (the HParams table's leftmost columns; depth
    as the architecture takes it), then the other identity settings that apply to the run's
    dynamics, then the run id. Another dynamics' settings, and under Adam the flow's step
    settings and integrator, are left out; so are unset ones."""
    kind = training.DYNAMICS[config.dynamics]
    skip = set(NOT_IDENTITY) | {name for other in training.DYNAMICS.values()
                                if other.name != config.dynamics for name in other.settings}
    if not kind.flow_steps:  # (it steps itself)
        skip |= set(FLOW_SETTINGS) | set(INTEGRATOR_SETTINGS)
    settings = {k: v for k, v in config.to_dict().items() if k not in skip and v is not None}
    settings.update(sqrt_h_alpha=config.sqrt_h_alpha,
                    depth=architectures.check_depth(config.architecture, config.depth))
    regime = {k: settings.pop(k) for k in REGIME_HPARAMS}
    return {**regime, **settings, "run_id": config.run_id()}


def _hparams_config(hparams, metrics):
    """`hp.hparams_config` with the DEFAULT_COLUMNS marked as differing from run to run:
    TensorBoard lists the HParams that differ first (then by name) and shows the first five
    as its table's columns by default."""
    summary = hp_summary.hparams_config_pb(hparams=hparams, metrics=metrics)
    data = summary.value[0].metadata.plugin_data
    plugin_data = plugin_data_pb2.HParamsPluginData.FromString(data.content)
    for info in plugin_data.experiment.hparam_infos:
        info.differs = info.name in DEFAULT_COLUMNS
    data.content = plugin_data.SerializeToString()
    with tf.summary.experimental.summary_scope("hparams_config"):
        tf.summary.experimental.write_raw_pb(summary.SerializeToString(), step=0)


def log_t_step(t):
    """The step of `drift/ntk_drift_vs_log_t` at gradient-flow time t > 0: round(100·log10 t).

    TensorBoard's steps are integers and its x axis is linear; this one is t on a log scale
    with 100 points per decade.
    """
    return round(LOG_T_STEPS_PER_DECADE * math.log10(t))


_DPI = 80  # of a Gram image


def gram_image(gram, pixels=320):
    """A Gram matrix as an RGB uint8 image (pixels × 1.3·pixels × 3): viridis on its own
    range (its minimum viridis' darkest colour, its maximum its brightest), with a colour bar
    labelled in the Gram's values beside it."""
    fig = MplFigure(figsize=(1.3 * pixels / _DPI, pixels / _DPI), dpi=_DPI,
                    layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    shown = ax.imshow(gram, cmap="viridis", interpolation="nearest")
    ax.set_axis_off()
    fig.colorbar(shown, ax=ax, shrink=0.9)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


class KernelDriftProbe:
    """The live kernel drift of an `AlphaModel` on a fixed probe set, in TensorBoard (Section 5,
    Fig. 8 (a, b)), from `drift.LiveDrift`.

    `write` takes Θ(w0) from the model's frozen copy the first time, Θ(w) each time, and writes
    the drift ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ against the accepted step and against log t, the
    inflation ‖Θ(w)‖/‖Θ(w0)‖, and the Gram images `drift/gram_now` (each time) and
    `drift/gram_init` (once), examples sorted by label (y = +1 first, as in Fig. 8).

    Args:
      x_probe, y_probe: the probe inputs and their ±1 labels (a few hundred points).
    """

    def __init__(self, x_probe, y_probe):
        self.live = drift.LiveDrift(x_probe, y_probe)
        self._last_log_t_step = -math.inf

    def write(self, model, entry):
        """Write the drift at record `entry` into the default summary writer."""
        step = entry["step"]
        if self.live.gram0 is None:
            self.live.start(model.initial_network)
            tf.summary.image("drift/gram_init", gram_image(self.live.gram0)[None], step=step,
                             description=DESCRIPTIONS["drift/gram_init"])
        now = self.live(model.network)
        _scalar("drift/ntk_drift", now["drift"], step)
        if now["drift"] > 0:
            _scalar("drift/log10_ntk_drift", math.log10(now["drift"]), step)
        _scalar("drift/ntk_norm_ratio", now["norm_ratio"], step)
        if entry["t"] > 0 and log_t_step(entry["t"]) > self._last_log_t_step:
            self._last_log_t_step = log_t_step(entry["t"])
            _scalar("drift/ntk_drift_vs_log_t", now["drift"], self._last_log_t_step)
        tf.summary.image("drift/gram_now", gram_image(now["gram"])[None], step=step,
                         description=DESCRIPTIONS["drift/gram_now"])


class TensorBoardRecorder(LogSpaced):
    """All of a run's TensorBoard data in one TensorBoard run, `logdir/<tensorboard_run_name>`.

    Writes the settings once per process through the HParams plugin (`run_hparams`), each
    record's scalars under their group
    (`observables/`, `solver/`, step = accepted step), the live kernel drift if given a
    `KernelDriftProbe` (`drift/`), and the run's result (`result/`) through `record_result`.
    Every tag is written once, with its description (DESCRIPTIONS).

    Args:
      logdir: the run's events directory.
      config: the run's TrainConfig.
      drift_probe: a KernelDriftProbe, or None.
    """

    def __init__(self, logdir, config, drift_probe=None, **kwargs):
        super().__init__(**kwargs)
        self.drift_probe = drift_probe
        self.writer = tf.summary.create_file_writer(
            artifact.join(logdir, tensorboard_run_name(config)))
        hparams = run_hparams(config)
        written = {record_tag(k) for k in RECORD_KEYS} | {f"result/{k}" for k in _RESULT_KEYS}
        if drift_probe is not None:
            written.add("drift/ntk_drift")
        metrics = [hp.Metric(tag, description=DESCRIPTIONS[tag])
                   for tag in _HPARAMS_METRICS if tag in written]
        with self.writer.as_default():
            _hparams_config([hp.HParam(k, _domain(v)) for k, v in hparams.items()], metrics)
            hp.hparams(hparams, trial_id=config.run_id())
        self.writer.flush()
        self._scalars = tf.function(_scalars, autograph=False)  # of this writer's records

    def record(self, entry):
        values = {record_tag(key): tf.constant(float(value), tf.float64)
                  for key, value in entry.items() if key != "step" and value is not None}
        with self.writer.as_default():
            self._scalars(values, tf.constant(entry["step"], tf.int64))
            if self.drift_probe is not None:
                self.drift_probe.write(self.model, entry)
        self.writer.flush()

    def record_result(self, metrics):
        """Write the run's test error, test loss and convergence (metrics.json) at its last step."""
        with self.writer.as_default():
            for key in _RESULT_KEYS:
                _scalar(f"result/{key}", float(metrics[key]), metrics["steps"])
        self.writer.flush()
