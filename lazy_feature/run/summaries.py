"""A run's TensorBoard data: its run name, its HParams, its records' scalars under their group,
the live kernel drift and the Gram images (`TensorBoardRecorder`, `KernelDriftProbe`).
Every tag is written once, with its description (DESCRIPTIONS).
"""
import math

import numpy as np
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure as MplFigure
from tensorboard.plugins.hparams import api as hp
from tensorboard.plugins.hparams import plugin_data_pb2
from tensorboard.plugins.hparams import summary_v2 as hp_summary

from lazy_feature.flow import training
from lazy_feature.kernel import drift
from lazy_feature.model import architectures
from lazy_feature.run import artifact
from lazy_feature.run.callbacks import RECORD_KEYS, LogSpaced
from lazy_feature.run.config import FLOW_SETTINGS, INTEGRATOR_SETTINGS, NOT_IDENTITY

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
