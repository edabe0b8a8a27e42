"""Where does a user's model sit between lazy and feature training? A scan over α (eq. 6).

`scan` trains the centered α-model F = α[f̂(w, x) − f̂(w0, x)] of the user's network, with
f̂ = f/σ0 normalized by its initial output scale σ0 = RMS over the training inputs of f(w0, x),
at a few α on a log grid by the package's gradient flow (eqs. 7-9), or by a plain Keras fit
with the user's optimizer on the same α⁻²-scaled loss, the model being the package's
`AlphaModel` either way, and measures at each the kernel drift on a probe of test points
(Section 5) and the test error. The crossover α* is where the drift falls through
`regime.FEATURE_DRIFT` (`drift.crossover`), where the verdicts turn from feature learning.
The user's own setting, training f itself with margin 1, is F = f = σ0 f̂: α_user = σ0, read
on the same curve (up to centering: their f starts at f(w0), not 0, Appendix I; and their
optimizer is not gradient flow).
"""
import dataclasses
import importlib
import math
from collections.abc import Callable, Sequence
from typing import TextIO

import keras
import numpy as np
import numpy.typing as npt
import pandas as pd
import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lazy_feature.errors import ConfigError, DataError
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.kernel import drift, frozen
from lazy_feature.model import losses
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.probe.regime import FEATURE_DRIFT, RegimeMonitor, scalar_output
from lazy_feature.run import artifact, callbacks, distribute, progress, runner
from lazy_feature.run.data import BinaryTask

DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)
# Activations whose derivative jumps (∇L jumps where a pre-activation crosses the kink), by
# their function's name, and layers that take a max (max-pooling) or are such an activation.
KINKED_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "selu", "hard_sigmoid", "hard_silu",
                      "hard_swish", "hard_tanh", "hard_shrink", "soft_shrink", "abs")
KINKED_LAYERS = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.PReLU,
                 keras.layers.MaxPooling1D, keras.layers.MaxPooling2D, keras.layers.MaxPooling3D,
                 keras.layers.GlobalMaxPooling1D, keras.layers.GlobalMaxPooling2D,
                 keras.layers.GlobalMaxPooling3D)
# The flow of a smooth model: the pair, then etdrk4 once stiff (its regime, h, is unknown here).
SMOOTH_INTEGRATOR = "bogacki_shampine_etdrk4"
# Each α's default budget in accepted steps: a plain Keras ReLU MLP with biases on
# Fashion-MNIST (n = 300) takes about 11 400 at α = 0.01, sliding along kinks (the paper's
# runs have 10 000, `TrainConfig.max_steps`).
MAX_STEPS = 30_000
TABLE, FIGURE, SUMMARY, RESULT = "table.csv", "scan.png", "summary.md", "scan.json"
GRADIENT_FLOW = "gradient flow (eqs. 7-9)"
# What to try when an α's flow stops short of fitting the training set, by its stop reason.
ADVICE = {
    "max_steps": "raise --max_steps (or --max_wall_seconds)",
    "max_wall_seconds": "raise --max_wall_seconds",
    "max_time": "raise the time budget",
    "stalled": ("the steps shrank to nothing: a kink the probe did not see (pass a flow with "
                "jumps=True), or try --optimizer=sgd or a smoother activation"),
}
OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam}


@dataclasses.dataclass(frozen=True)
class ScanResult:
    """The scan's table (one row per α; `converged` False where the α did not train), the
    crossover α* located from the converged α alone (None if they do not bracket it), the
    user's α = σ0 and their drift read on the curve (None outside the grid), the test error
    of the frozen kernel Θ(w0) trained on the training set (None if not asked), and how each
    α was trained."""
    table: pd.DataFrame
    alpha_star: float | None
    user_alpha: float
    user_drift: float | None
    kernel_test_error: float | None
    training: str = GRADIENT_FLOW

    def summary(self) -> str:
        """A markdown summary: the table, the α that did not converge and what to try, α*
        (from the converged α alone), where the user's setting lies."""
        columns = ["alpha", "converged", "kernel_drift", "weight_drift", "alignment_init",
                   "alignment", "train_error", "test_error", "steps", "stop_reason"]
        rows = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        for _, r in self.table.iterrows():
            rows.append("| " + " | ".join(_cell(r[c]) for c in columns) + " |")
        lines = ["# Regime scan", "",
                 "F = α[f̂(w, x) − f̂(w0, x)] (eq. 6) with f̂ = f/σ0, trained by "
                 f"{self.training} on the α⁻²-scaled loss of eq. 7; kernel drift "
                 "‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ on a probe of test points (Section 5).", "", *rows, ""]
        failed = self.table[~self.table["converged"]]
        for _, r in failed.iterrows():
            lines.append(f"**α = {r['alpha']:.3g} did not converge** ({r['stop_reason']}, "
                         f"train error {r['train_error']:.3g}): its drift is not the regime "
                         f"of a trained network; {ADVICE.get(r['stop_reason'], 'see its row')}.")
        if len(failed):
            lines.append("")
        converged = int(self.table["converged"].sum())
        if self.alpha_star is None and converged < 2:
            lines.append(f"No crossover: only {converged} of {len(self.table)} α converged, "
                         "so the scan locates none; fix the runs above first.")
        elif self.alpha_star is None:
            lines.append(f"No crossover on this grid: the drift of the converged α does not "
                         f"cross {FEATURE_DRIFT:g}; widen --alphas.")
        else:
            lines.append(f"Crossover α* = {self.alpha_star:.3g} (drift = {FEATURE_DRIFT:g}, "
                         "log-log interpolation): lazy above, feature learning below.")
        where = ("" if self.alpha_star is None else
                 f", on the {'lazy' if self.user_alpha > self.alpha_star else 'feature'} side "
                 "of α*")
        reading = ("outside the grid" if self.user_drift is None
                   else f"drift ≈ {self.user_drift:.3g} read on the curve")
        lines.append(f"Your setting: α_user = σ0 = RMS f(w0) = {self.user_alpha:.3g} "
                     f"({reading}){where}.")
        if self.kernel_test_error is not None:
            lines.append(f"Frozen kernel Θ(w0) (the lazy limit, Appendix A): test error "
                         f"{self.kernel_test_error:.4f}.")
        return "\n".join(lines) + "\n"


def kinked(model: keras.Model) -> bool:
    """Whether `model` has a kink: a layer of KINKED_LAYERS, or a layer whose `activation`
    is named in KINKED_ACTIVATIONS (ReLU and its kin), anywhere in it. A kink inside a
    Lambda or a custom `call` is not seen."""
    for layer in model._flatten_layers(include_self=True):  # pylint: disable=protected-access
        activation = getattr(layer, "activation", None)
        name = getattr(activation, "__name__", "") or getattr(activation, "name", "")
        if isinstance(layer, KINKED_LAYERS) or str(name) in KINKED_ACTIVATIONS:
            return True
    return False


def flow_for(model: keras.Model, **settings: object) -> GradientFlow:
    """The gradient flow a scan trains `model` by: the paper's Euler scheme with its jump
    rule (`integrators.Euler`, GradientFlow.jumps) for a `kinked` model, whose ∇L jumps where
    a smooth integrator's error estimate would stall; SMOOTH_INTEGRATOR for a smooth one.
    `settings` are further GradientFlow fields (e.g. max_dgrad)."""
    if kinked(model):
        return GradientFlow(jumps=True, **settings)  # type: ignore[arg-type]
    return GradientFlow(integrator=SMOOTH_INTEGRATOR, **settings)  # type: ignore[arg-type]


def load_builder(spec: str) -> Callable[[], keras.Model]:
    """The function named by 'module:function' (e.g. 'my_models:build_model')."""
    module_name, _, name = spec.partition(":")
    if not module_name or not name:
        raise ConfigError(f"--model takes module:function, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"cannot import {module_name!r} for --model={spec} ({e}); check "
                          "the name and PYTHONPATH") from e
    if not callable(getattr(module, name, None)):
        raise ConfigError(f"{module_name} has no function {name!r} (--model={spec})")
    return getattr(module, name)


def keras_optimizer(name: str, learning_rate: float | None = None
                    ) -> Callable[[], keras.optimizers.Optimizer] | None:
    """A function returning a fresh Keras optimizer `name` (one of OPTIMIZERS) at
    `learning_rate` (None: Keras's default), for `scan`'s optimizer; None for "flow"."""
    if name == "flow":
        return None
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}: choose flow, {', '.join(OPTIMIZERS)}")
    if learning_rate is not None and not learning_rate > 0:
        raise ConfigError(f"the learning rate must be > 0, got {learning_rate}")
    options = {} if learning_rate is None else {"learning_rate": learning_rate}
    return lambda: OPTIMIZERS[name](**options)


def scan(build_model: Callable[[], keras.Model], task: BinaryTask | Sequence[npt.ArrayLike],
         alphas: Sequence[float] = DEFAULT_ALPHAS, output_dir: str | None = None,
         input_shape: Sequence[int] | None = None, output: int | str | None = None,
         probe_size: int = 64, seed: int = 0, loss: str = "soft_hinge",
         max_steps: int = MAX_STEPS,
         max_time: float = math.inf, max_wall_seconds: float = math.inf,
         flow: GradientFlow | None = None, frozen_kernel: bool = True,
         optimizer: Callable[[], keras.optimizers.Optimizer] | None = None, epochs: int = 10,
         batch_size: int = 32, strategy: tf.distribute.Strategy | str | None = None,
         progress_stream: TextIO | None = None) -> ScanResult:
    """Train F = α(f̂ − f̂0) at each α, measure drift and test error, place the user on the curve.

    Args:
      build_model: a function with no argument returning a Keras model f (one scalar per
        example, or a vector with `output` chosen); called with Keras' seed set to `seed`, so
        every α starts from the same w0.
      task: a `data.BinaryTask`, or arrays (x_train, y_train, x_test, y_test), labels ±1.
      alphas: the α grid (for f̂, whose initial outputs have RMS 1).
      output_dir: if given, the run directory: table.csv, scan.png, summary.md, scan.json,
        and each α's `RegimeMonitor` records (TensorBoard and regime.jsonl) in alpha=<α>/.
      input_shape: the shape of one input the model takes (e.g. (28, 28, 1)); None keeps x's.
      output: which scalar of a vector output f is (`regime.scalar_output`).
      probe_size: test points the kernel drift is computed on (P, see `RegimeMonitor`).
      seed: Keras' seed for the initial weights.
      loss: the per-pattern loss of eq. 7 (`losses.NAMES`).
      max_steps, max_time, max_wall_seconds: each α's budget (`GradientFlowStopping`).
      flow: the `GradientFlow` step control and integrator; None: `flow_for` the model (the
        jump rule for ReLU and its kin, the fast integrator for smooth models).
      frozen_kernel: also train the frozen kernel Θ(w0) on the training set (n_train² floats).
      optimizer: None for the gradient flow; or a function returning a fresh Keras optimizer
        (e.g. `lambda: keras.optimizers.SGD(0.1)`, or `keras_optimizer("adam", 1e-3)`): each α
        is then a plain Keras `fit` of the `AlphaModel` on eq. 7's α⁻²-scaled loss
        (`losses.keras_alpha_loss`), for `epochs` epochs of mini-batches of `batch_size` (the
        flow's budgets do not apply).
        With SGD, F moves at the same rate at every α and the weights by ~1/α (lazy at large
        α); Adam normalizes the gradient's scale away, so its weights move by ~lr a step at
        every α and a large α is not lazy at a fixed learning rate.
      strategy: a tf.distribute.Strategy to train in, or a name of `distribute.STRATEGIES`
        (made by `distribute.make` with its defaults; for MirroredStrategy over logical CPU
        devices pass the strategy made with cpu_devices: TensorFlow's collectives take one
        MirroredStrategy per process); None for the current one. The flow needs n_train to
        split evenly over the replicas.
      progress_stream: where to show the progress (`progress.counted`: α done of the grid,
        how many did not converge, elapsed time and ETA); None shows nothing.

    Returns:
      a `ScanResult`.
    """
    x_train, y_train, x_test, y_test = _arrays(task, input_shape)
    tf.config.experimental.enable_op_determinism()  # a scan is a function of its seeds
    user_model = _network(build_model, x_train, output, seed)
    sigma0 = float(np.sqrt(np.mean(runner.outputs(user_model, x_train) ** 2)))
    flow = flow_for(user_model) if flow is None else flow
    if not sigma0 > 0:
        raise ConfigError("f(w0) = 0 on every training input: the initial output scale, and "
                          "with it the user's α, is undefined")
    if optimizer is not None and not callable(optimizer):
        raise ConfigError("optimizer takes a function returning a fresh Keras optimizer for "
                          "each α, e.g. lambda: keras.optimizers.SGD(0.1)")
    if optimizer is not None and not (epochs >= 1 and batch_size >= 1):
        raise ConfigError(f"epochs={epochs} and batch_size={batch_size} must be >= 1")
    strategy = (tf.distribute.get_strategy() if strategy is None
                else distribute.make(strategy))
    probe_x, probe_y = x_test[:probe_size], y_test[:probe_size]
    done = _Done(len(alphas))
    rows = done.rows
    with progress.counted(done, progress_stream, label="α", failures="unconverged"):
        for alpha in alphas:
            monitor = RegimeMonitor(probe_x, probe_y, log_dir=output_dir and artifact.join(
                output_dir, f"alpha={alpha:.3g}"))
            with strategy.scope():  # type: ignore[union-attr]  # a Strategy, made above
                network, initial = (_network(build_model, x_train, output, seed, 1 / sigma0)
                                    for _ in range(2))
            if optimizer is None:
                model, row = _train_flow(strategy, network, initial, alpha, x_train, y_train,
                                         monitor, loss, flow,
                                         (max_time, max_steps, max_wall_seconds))
            else:
                model, row = _train_optimizer(strategy, network, initial, alpha, x_train,
                                              y_train, monitor, loss, optimizer, epochs,
                                              batch_size)
            verdict = monitor.verdict()
            rows.append(dict(
                alpha=float(alpha), kernel_drift=verdict.kernel_drift,
                weight_drift=verdict.weight_drift, alignment_init=verdict.alignment_init,
                alignment=verdict.alignment, regime=verdict.regime,
                train_error=row["train_error"],
                test_error=runner.evaluate(model, x_test, y_test, losses.get(loss))[1],
                steps=row["steps"], t=row["t"], stop_reason=row["stop_reason"],
                converged=_converged(row["stop_reason"], optimizer)))

    table = pd.DataFrame(rows)
    kernel_error = None
    if frozen_kernel:
        reference = _network(build_model, x_train, output, seed, 1 / sigma0)
        kernel_error = frozen.frozen_kernel_test_error(
            reference, x_train.astype(reference.compute_dtype), y_train,
            x_test.astype(reference.compute_dtype), y_test, loss=loss, flow=flow)["test_error"]
    training = (GRADIENT_FLOW if optimizer is None else
                f"{type(optimizer()).__name__} ({epochs} epochs of batch {batch_size})")
    fitted = table[table["converged"]]
    alpha_star = drift.crossover(fitted.alpha, fitted.kernel_drift, FEATURE_DRIFT)
    result = ScanResult(table, alpha_star, sigma0, _read_drift(fitted, sigma0), kernel_error,
                        training)
    if output_dir is not None:
        _write(result, output_dir)
    return result


def _converged(stop_reason, optimizer):
    """Whether an α trained: its flow met the stopping criterion (every margin > 1), or its
    optimizer ran its epochs without diverging."""
    if optimizer is None:
        return stop_reason == "converged"
    return not stop_reason.startswith("diverged")


def _train_flow(strategy, network, initial, alpha, x, y, monitor, loss, flow, budget):
    """The AlphaModel at α trained by gradient flow until `budget` (max_time, max_steps,
    max_wall_seconds) or convergence; returns it and its row's training figures."""
    with strategy.scope():
        model = AlphaModel(network, alpha, loss=loss, dynamics=GradientFlowDynamics(flow),
                           initial_network=initial)
        model.compile()
    stopping = callbacks.GradientFlowStopping(*budget)
    runner.fit_flow(model, x, y, [stopping, monitor])
    state = model.train_state()
    return model, dict(train_error=float(state["train_error"]), steps=int(state["step"]),
                       t=float(state["t"]), stop_reason=stopping.reason)


def _train_optimizer(strategy, network, initial, alpha, x, y, monitor, loss, optimizer, epochs,
                     batch_size):
    """The AlphaModel at α trained by a plain Keras fit with optimizer(); returns it and its
    row's training figures (t: none, the optimizer has no time).

    The fit is Keras' own, of a functional model around the AlphaModel's F (the AlphaModel's
    own `fit` runs its dynamics), on eq. 7's loss per pattern, which Keras averages over each
    mini-batch.
    """
    with strategy.scope():
        model = AlphaModel(network, alpha, loss=loss, initial_network=initial)
        inputs = keras.Input(x.shape[1:], dtype=network.compute_dtype)
        trainer = keras.Model(inputs, model(inputs))
        trainer.compile(optimizer=optimizer(),
                        loss=losses.keras_alpha_loss(model.per_pattern_loss, model.alpha))
    x = x.astype(network.compute_dtype)
    trainer.fit(x, y.astype(network.compute_dtype), epochs=epochs, batch_size=batch_size,
                verbose=0, callbacks=[monitor])
    outputs, train_error, _ = runner.evaluate(model, x, y, losses.get(loss))
    stop_reason = (f"{epochs} epochs" if np.all(np.isfinite(outputs)) else
                   "diverged (F not finite): lower the learning rate")
    return model, dict(train_error=train_error, steps=epochs * -(-len(x) // batch_size),
                       t=math.nan, stop_reason=stop_reason)


def _arrays(task, input_shape):
    """(x_train, y_train, x_test, y_test) from a BinaryTask or a 4-tuple, x reshaped."""
    arrays = ((task.x_train, task.y_train, task.x_test, task.y_test)
              if hasattr(task, "x_train") else tuple(task))
    if len(arrays) != 4:
        raise DataError("give a data.BinaryTask or (x_train, y_train, x_test, y_test)")
    x_train, y_train, x_test, y_test = (np.asarray(a) for a in arrays)
    if len(x_test) < 2:
        raise DataError(f"the scan needs test points for its probe and error, got {len(x_test)}")
    if input_shape is not None:
        try:
            x_train, x_test = (x.reshape((len(x),) + tuple(input_shape))
                               for x in (x_train, x_test))
        except ValueError as e:
            raise DataError(f"inputs of shape {x_train.shape[1:]} cannot take the shape "
                            f"{tuple(input_shape)}") from e
    return x_train, y_train, x_test, y_test


def _network(build_model, x, output, seed, scale=1.0):
    """The user's model at Keras seed `seed`, as a `ScalarOutput` times `scale`."""
    keras.utils.set_random_seed(seed)
    model = build_model()
    if not isinstance(model, keras.Model):
        raise ConfigError(f"{getattr(build_model, '__name__', build_model)} returned "
                          f"{type(model).__name__}, not a keras.Model")
    return scalar_output(model, x, output, scale)


class _Done:
    """The α of a scan done so far, counted for `progress.Display` as its `Counter` would."""

    def __init__(self, total):
        self.total, self.rows = total, []

    def poll(self):
        """(done, unconverged) so far."""
        return len(self.rows), sum(not row["converged"] for row in self.rows)


def _read_drift(table, alpha):
    """The drift at `alpha`, interpolated in log-log on the grid; None outside it."""
    a, d = np.log(table.alpha.to_numpy(float)), table.kernel_drift.to_numpy(float)
    order = np.argsort(a)
    if not a.size or not (a.min() <= math.log(alpha) <= a.max()) or np.any(d <= 0):
        return None
    return float(np.exp(np.interp(math.log(alpha), a[order], np.log(d[order]))))


def _cell(value):
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _write(result, output_dir):
    """table.csv, scan.png, summary.md and scan.json, each written atomically."""
    artifact.makedirs(output_dir)
    artifact.write_csv(artifact.join(output_dir, TABLE), result.table)
    artifact.write_figure(artifact.join(output_dir, FIGURE), _figure(result), "png", dpi=120)
    artifact.write_text(artifact.join(output_dir, SUMMARY), result.summary())
    artifact.write_json(artifact.join(output_dir, RESULT), dict(
        alpha_star=result.alpha_star, user_alpha=result.user_alpha,
        user_drift=result.user_drift, kernel_test_error=result.kernel_test_error,
        crossover_drift=FEATURE_DRIFT, rows=result.table.to_dict("records")))


def _figure(result):
    """Drift and test error against α, log α axis; α* and the user's α marked."""
    fig = Figure(figsize=(9, 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    drift_ax, error_ax = fig.subplots(1, 2)
    table = result.table.sort_values("alpha")
    failed = table[~table["converged"]]
    drift_ax.loglog(table.alpha, table.kernel_drift, "o-", label="kernel drift")
    drift_ax.axhline(FEATURE_DRIFT, color="grey", ls=":", label=f"drift = {FEATURE_DRIFT:g}")
    drift_ax.set_ylabel("‖Θ(w) − Θ(w0)‖ / ‖Θ(w0)‖")
    error_ax.semilogx(table.alpha, table.test_error, "o-", label="network")
    if result.kernel_test_error is not None:
        error_ax.axhline(result.kernel_test_error, color="grey", ls="--",
                         label="frozen kernel Θ(w0)")
    error_ax.set_ylabel("test error")
    if len(failed):  # marked, not hidden: their values are not those of trained networks
        drift_ax.plot(failed.alpha, failed.kernel_drift, "x", color="C3", ms=10, mew=2,
                      label="not converged")
        error_ax.plot(failed.alpha, failed.test_error, "x", color="C3", ms=10, mew=2,
                      label="not converged")
    for ax in (drift_ax, error_ax):
        if result.alpha_star is not None:
            ax.axvline(result.alpha_star, color="grey", ls=":", label=f"α* = "
                       f"{result.alpha_star:.3g}")
        ax.axvline(result.user_alpha, color="C3", label=f"your α = σ0 = {result.user_alpha:.3g}")
        ax.set_xlabel("α  (F = α[f̂ − f̂0], f̂ = f/σ0)")
        ax.legend(fontsize=7)
    if result.user_drift is not None:
        drift_ax.plot([result.user_alpha], [result.user_drift], "*", color="C3", ms=12)
    fig.suptitle("Lazy (large α) vs feature learning (small α)")
    return fig
