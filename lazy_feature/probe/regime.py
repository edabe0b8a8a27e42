"""Is a Keras model training lazily or learning features? A callback that watches its NTK.

`RegimeMonitor` follows, on a probe batch, the quantities that tell the two regimes apart
(Section 5): the relative drift of the empirical NTK Θ (eq. 5), the relative weight drift,
the kernel–label alignment and the output scale, and ends with a `Verdict`. It works on any
Keras model with one scalar per example (`ScalarOutput` adapts the others), trained by a
plain `model.fit` with any optimizer, or an `AlphaModel` (eq. 6) by its gradient flow.
"""
import dataclasses
import math
from typing import Any

import keras
import numpy as np
import numpy.typing as npt
import pandas as pd
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.kernel import drift, frozen
from lazy_feature.model import losses
from lazy_feature.run import artifact, callbacks, summaries

# The probe's Gram matrices Θ(w0) (kept) and Θ(w_t) (per record) are P × P float64: at
# P = 2048 they take 2·2048²·8 B = 64 MiB. The tiles behind them stay within `ntk`'s bounds
# whatever P (`ntk.ProbeKernel`).
MAX_PROBE = 2048
# Verdict thresholds on the kernel drift ‖Θ(w_t) − Θ(w0)‖/‖Θ(w0)‖ (Section 5): below LAZY the
# kernel stays within 10% of Θ(w0), so the network is its frozen kernel to that accuracy
# (Appendix A); above FEATURE it has moved by half its size: of order one, the crossover
# (`drift.CROSSOVER_DRIFT`), reached on the feature side; between them, in between. The α
# scan's α* is where the drift crosses FEATURE, so that its verdicts change at α*.
LAZY_DRIFT = 0.1
FEATURE_DRIFT = 0.5
DEFAULT_PER_DECADE = 5

DESCRIPTIONS = {
    "regime/log10_kernel_drift": "log10 of the kernel drift: its whole range, lazy to "
                                 "feature, on one linear axis (from the first record past w0).",
    "regime/kernel_drift": "‖Θ(w_t) − Θ(w0)‖/‖Θ(w0)‖ on the probe batch (Frobenius norms of "
                           "the Gram matrices of eq. 5; Section 5). Lazy below 0.1, feature "
                           "learning above 0.5.",
    "regime/kernel_norm_ratio": "‖Θ(w_t)‖/‖Θ(w0)‖ on the probe batch: how much the kernel "
                                "grew.",
    "regime/weight_drift": "‖w_t − w0‖/‖w0‖ over all trainable weights (Appendix B).",
    "regime/alignment": "Kernel–label alignment ⟨Θ(w_t), yyᵀ⟩/(‖Θ(w_t)‖‖yyᵀ‖) on the probe; "
                        "grows when the kernel learns the task's features.",
    "regime/alignment_init": "The same alignment of Θ(w0), the kernel at initialization.",
    "regime/output_change_rms": "RMS over the probe of f(w_t) − f(w0) (units of f).",
    "regime/output_rms": "RMS over the probe of f(w_t) (units of f).",
    "regime_layers/weight_drift": "‖w_t − w0‖/‖w0‖ of one layer's trainable weights.",
    "regime/gram_init": "Θ(w0) on the probe, points with y = +1 first (if labelled); viridis "
                        "from its own minimum to its own maximum.",
    "regime/gram_now": "Θ(w_t) on the probe, same order; viridis on its own range, so compare "
                       "shapes, and sizes through regime/kernel_norm_ratio.",
}


@keras.saving.register_keras_serializable(package="lazy_feature")
class ScalarOutput(keras.Model):
    """f(x) of shape (batch,) from a Keras model with one scalar per example, or a chosen one.

    Build it with `scalar_output`. `output` picks a column of a (batch, k) output: an index,
    or "sum" for the sum of the k logits; `scale` multiplies f. Its weights are the model's,
    its dtype that of the model's weights.
    """

    def __init__(self, model: keras.Model, output: int | str | None = None, scale: float = 1.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.inner, self.output_choice, self.scale = model, output, float(scale)

    def call(self, x: tf.Tensor) -> tf.Tensor:
        f = self.inner(x)
        if self.output_choice == "sum":
            f = keras.ops.sum(f, axis=-1)
        elif self.output_choice is not None:
            f = f[:, self.output_choice]
        elif len(f.shape) == 2:
            f = f[:, 0]
        return keras.ops.cast(f, self.compute_dtype) * self.scale


def scalar_output(model: keras.Model, x: npt.ArrayLike, output: int | str | None = None,
                  scale: float = 1.0) -> ScalarOutput:
    """`model` as a `ScalarOutput`, built and checked on x[:1].

    output: None for a model whose output is (batch,) or (batch, 1); an index or "sum" for a
    (batch, k) output. Raises ConfigError for any other output, and for a vector output with
    no choice.
    """
    if isinstance(model, ScalarOutput):
        return model
    try:
        out = model(np.asarray(x)[:1])
    except (ValueError, TypeError, tf.errors.InvalidArgumentError) as e:
        said = " ".join(str(e).split())[:300]
        raise ConfigError(f"{model.name} does not take inputs of shape {np.shape(x)[1:]}: give "
                          "the shape of one input it takes (input_shape=(28, 28, 1) in Python, "
                          f"--input_shape=28,28,1 to the probe stage); Keras said: {said}") from e
    if isinstance(out, (list, tuple, dict)):
        raise ConfigError(f"{model.name} returns {len(out)} outputs: give a model with one "
                          "output tensor")
    shape = tuple(out.shape[1:])
    if len(shape) > 1 or (output is None and shape not in ((), (1,))):
        raise ConfigError(
            f"{model.name} returns shape (batch, {', '.join(map(str, shape))}), not one scalar "
            "per example: choose an output (output=INDEX, or output='sum' for the sum of "
            "logits; on the command line --output=INDEX or --output=sum)")
    if output is not None and output != "sum" and not (
            shape and isinstance(output, int) and -shape[0] <= output < shape[0]):
        raise ConfigError(f"output={output!r} is not 'sum' nor an index of {model.name}'s "
                          f"{shape[0] if shape else 1} outputs")
    if not model.trainable_weights:
        raise ConfigError(f"{model.name} has no trainable weight: Θ (eq. 5) is over them")
    dtype = model.trainable_weights[0].dtype
    return ScalarOutput(model, output, scale, dtype=dtype, name=f"{model.name}_scalar")


def alignment(theta: np.ndarray, y: npt.ArrayLike) -> float:
    """Kernel–label alignment ⟨Θ, yyᵀ⟩/(‖Θ‖‖yyᵀ‖) = yᵀΘy / (‖Θ‖_F ‖y‖²)."""
    y = np.asarray(y, np.float64)
    return float(y @ theta @ y / (np.linalg.norm(theta) * (y @ y)))


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The regime a training run is in, with the numbers behind it; str() explains it.

    regime: "lazy", "feature learning" or "in between" (thresholds LAZY_DRIFT, FEATURE_DRIFT
    on kernel_drift). kernel_test_error: the frozen kernel Θ(w0) trained on the probe;
    network_test_error: the network now; both None without test data.
    """
    regime: str
    step: int
    kernel_drift: float
    weight_drift: float
    alignment_init: float
    alignment: float
    kernel_test_error: float | None
    network_test_error: float | None
    lazy_threshold: float = LAZY_DRIFT
    feature_threshold: float = FEATURE_DRIFT

    def __str__(self) -> str:
        lines = [f"{self.regime}: after {self.step} steps the kernel moved by "
                 f"{self.kernel_drift:.3g} of its size (‖Θ(w_t) − Θ(w0)‖/‖Θ(w0)‖, Section 5) "
                 f"and the weights by {self.weight_drift:.3g} (‖w_t − w0‖/‖w0‖)."]
        if not math.isnan(self.alignment):
            change = self.alignment / self.alignment_init - 1
            lines.append(f"Kernel–label alignment {self.alignment_init:.3g} at w0 → "
                         f"{self.alignment:.3g} now ({change:+.0%}).")
        lines.append({
            "lazy": "The network is its linearization at w0: it learns with a fixed kernel.",
            "feature learning": "The kernel changed at order one: the network learns features.",
            "in between": "The kernel changed, but less than at order one: a crossover regime.",
        }[self.regime])
        lines.append(f"Thresholds: lazy below {self.lazy_threshold:g} (Θ within that fraction of "
                     f"Θ(w0)), feature learning above {self.feature_threshold:g} (the crossover "
                     "of Section 5, where the drift reaches order one).")
        if self.kernel_test_error is not None:
            lines.append(f"Test error: network {self.network_test_error:.4f}, frozen kernel "
                         f"Θ(w0) trained on the probe {self.kernel_test_error:.4f}.")
        return "\n".join(lines)


class RegimeMonitor(keras.callbacks.Callback):
    """Follows the regime of a `fit` on a probe batch; `verdict()` says lazy or feature learning.

    At w0 (train begin) it keeps the weights, f(w0) and the Gram matrix Θ(w0) of eq. 5 on the
    probe; then at log-spaced steps (`every` records per decade of batches, every batch below
    10, and the last) it records the kernel drift ‖Θ(w_t) − Θ(w0)‖/‖Θ(w0)‖ (Section 5), the
    weight drift ‖w_t − w0‖/‖w0‖ overall and per layer, the alignment of Θ(w_t) and Θ(w0) with
    yyᵀ (with labels), and the RMS of f(w_t) − f(w0) and of f(w_t) on the probe.

    Cost per record, bounded by the probe size P: f(w_t) and Θ(w_t) from one graph traced
    once at w0 (`drift.LiveDrift`, `ntk.ProbeKernel`): one forward and one backward pass of
    the P points to the pre-activations of the layers the structured path knows, a P × P Gram
    of their inputs and signals per layer, and per-example Jacobians for the other weights.
    Memory: two P × P float64 matrices, P ≤ MAX_PROBE (64 MiB), and tiles within `ntk`'s
    bounds. Its cost against training: benchmarks/regime_benchmark.py.

    Under a tf.distribute strategy (a model compiled and fitted in `strategy.scope()`) the
    probe is computed from the mirrored weights, outside the replicas, and the records are
    those of the same fit on one device.

    With log_dir it writes TensorBoard scalars (`regime/`, `regime_layers/`) and the Gram
    images at w0 and now (sorted by label) into log_dir, and one JSON line per record into
    log_dir/regime.jsonl.

    Args:
      probe_x: the probe inputs, a few hundred points (e.g. drawn from the training data).
      probe_y: their labels ±1 (0/1 are read as −1/+1), or None: no alignment, no errors.
      log_dir: where to write, or None to keep the records in memory only.
      every: records per decade of training steps (batches).
      output: which scalar of a vector output f is (`scalar_output`): an index or "sum".
      test_data: (x_test, y_test) to compare, in the verdict, the network's test error with
        that of the frozen kernel Θ(w0) trained on the probe (eqs. 25-28, the soft hinge);
        class +1 is f > 0. The kernel sees the P probe points only, the network its whole
        training set.
    """

    def __init__(self, probe_x: npt.ArrayLike, probe_y: npt.ArrayLike | None = None,
                 log_dir: str | None = None, every: int = DEFAULT_PER_DECADE,
                 output: int | str | None = None,
                 test_data: tuple[npt.ArrayLike, npt.ArrayLike] | None = None) -> None:
        super().__init__()
        probe_x = np.asarray(probe_x)
        if len(probe_x) > MAX_PROBE:
            raise ConfigError(f"a probe of {len(probe_x)} points exceeds MAX_PROBE = {MAX_PROBE} "
                              f"(two {MAX_PROBE}² float64 Gram matrices, 64 MiB): use fewer")
        if len(probe_x) < 2:
            raise ConfigError("the probe needs at least 2 points")
        self.live = drift.LiveDrift(probe_x, probe_y)  # y = +1 first, as in Fig. 8
        self.probe_x, self.probe_y = self.live.x, self.live.y
        self.log_dir, self.every, self.output = log_dir, every, output
        self.test_data = test_data
        self._records: list[dict[str, Any]] = []

    # -- Keras hooks ----------------------------------------------------------------------

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        """Open the writer; at the first fit, take the snapshot at w0 and the first record.

        A later fit of the same model continues the records, from the same w0.
        """
        self._writer = None
        if self.log_dir is not None:
            artifact.makedirs(self.log_dir)
            self._writer = tf.summary.create_file_writer(self.log_dir)
        if not self._records:
            self._start()

    def _start(self):
        self._step = 0
        self._network = scalar_output(self.model, self.probe_x, self.output)
        self._w0 = [w.numpy() for w in self._network.trainable_weights]
        self._layers = _layer_groups(self._network.trainable_weights)
        self._f0, self._gram0 = self.live.start(self._network)
        self.probe_x = self.live.x  # in the network's dtype
        if self.probe_y is not None:
            self._alignment0 = alignment(self._gram0, self.probe_y)
        self._kernel_test_error = None
        if self.test_data is not None and self.probe_y is not None:
            self._kernel_test_error = self._frozen_kernel_test_error(*self.test_data)
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.image("regime/gram_init", summaries.gram_image(self._gram0)[None],
                                 step=0, description=DESCRIPTIONS["regime/gram_init"])
        self._record(dict(f=self._f0, gram=self._gram0, drift=0.0, norm_ratio=1.0))

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        # A record due after step k is taken as step k + 1 begins (or at train end): Keras
        # then keeps dispatching its batch-end hooks asynchronously, where a batch-end hook of
        # ours would make it wait for every batch's logs. TF orders the probe's reads of the
        # weights after the step's writes, so the record is that of w_k exactly.
        if self._step > self._records[-1]["step"] and callbacks.is_log_step(self._step,
                                                                           self.every):
            self._record()
        self._step += 1  # the step about to run

    def on_train_end(self, logs: dict[str, Any] | None = None) -> None:
        if self._records[-1]["step"] < self._step:
            self._record()
        if self._writer is not None:
            self._writer.close()

    # -- results --------------------------------------------------------------------------

    def kernel_drift(self) -> float:
        """The latest relative kernel drift ‖Θ(w_t) − Θ(w0)‖/‖Θ(w0)‖ (Section 5)."""
        self._check_started()
        return self._records[-1]["kernel_drift"]

    def history(self) -> pd.DataFrame:
        """The records as a pandas DataFrame, one row per recorded step."""
        return pd.DataFrame(self._records)

    def verdict(self) -> Verdict:
        """The `Verdict` on the latest record (and the test errors if test_data was given)."""
        self._check_started()
        last = self._records[-1]
        change = last["kernel_drift"]
        regime = ("lazy" if change < LAZY_DRIFT else
                  "feature learning" if change > FEATURE_DRIFT else "in between")
        network_error = None
        if self._kernel_test_error is not None:
            x_test, y_test = self.test_data  # type: ignore[misc]  # given with the kernel's error
            network_error = float(losses.error_rate(self._outputs(x_test), drift.signs(y_test)))
        return Verdict(regime, last["step"], change, last["weight_drift"],
                       last.get("alignment_init", math.nan), last.get("alignment", math.nan),
                       self._kernel_test_error, network_error)

    # -- internals ------------------------------------------------------------------------

    def _check_started(self):
        if not self._records:
            raise ConfigError("the monitor has no record yet: pass it to fit(callbacks=[...])")

    def _outputs(self, x):
        x = np.asarray(x, self._network.compute_dtype)
        return np.concatenate([self._network(x[i:i + 1024]).numpy() for i in
                               range(0, len(x), 1024)]).astype(np.float64)

    def _frozen_kernel_test_error(self, x_test, y_test):
        """Test error of the frozen kernel Θ(w0) trained on the probe (Appendix A)."""
        a = frozen.frozen_kernel_dynamics(self._gram0, self.probe_y)["a"]
        outputs = frozen.predict_frozen(self._network, np.asarray(x_test, self.probe_x.dtype),
                                        self.probe_x, a)
        return float(losses.error_rate(outputs, drift.signs(y_test)))

    def _record(self, now=None):
        """Record f(w_t) and Θ(w_t) on the probe (`now`, a `drift.LiveDrift` reading, or
        taken now) with the weights' drift."""
        now = now or self.live(self._network)
        f, gram = now["f"], now["gram"]
        w = [v.numpy() for v in self._network.trainable_weights]
        entry = {"step": self._step,
                 "kernel_drift": now["drift"],
                 "kernel_norm_ratio": now["norm_ratio"],
                 "weight_drift": _relative_change(w, self._w0),
                 "output_change_rms": float(np.sqrt(np.mean((f - self._f0) ** 2))),
                 "output_rms": float(np.sqrt(np.mean(f ** 2)))}
        if self.probe_y is not None:
            entry["alignment_init"] = self._alignment0
            entry["alignment"] = alignment(gram, self.probe_y)
        for name, positions in self._layers.items():
            entry[f"weight_drift/{name}"] = _relative_change([w[i] for i in positions],
                                                             [self._w0[i] for i in positions])
        self._records.append(entry)
        if self._writer is not None:
            self._write(entry, gram)

    def _write(self, entry, gram):
        step = entry["step"]
        with self._writer.as_default():
            for key, value in entry.items():
                if key.startswith("weight_drift/"):
                    tf.summary.scalar(f"regime_layers/{key}", value, step=step,
                                      description=DESCRIPTIONS["regime_layers/weight_drift"])
                elif key != "step":
                    tf.summary.scalar(f"regime/{key}", value, step=step,
                                      description=DESCRIPTIONS[f"regime/{key}"])
            if entry["kernel_drift"] > 0:
                tf.summary.scalar("regime/log10_kernel_drift", math.log10(entry["kernel_drift"]),
                                  step=step, description=DESCRIPTIONS["regime/log10_kernel_drift"])
            tf.summary.image("regime/gram_now", summaries.gram_image(gram)[None], step=step,
                             description=DESCRIPTIONS["regime/gram_now"])
        self._writer.flush()
        artifact.append_line(artifact.join(self.log_dir, "regime.jsonl"), artifact.json_line(entry))



def _relative_change(w, w0):
    """‖w − w0‖/‖w0‖ over a list of arrays (NaN when w0 = 0)."""
    change = math.sqrt(sum(float(np.sum((a - b) ** 2)) for a, b in zip(w, w0)))
    norm0 = math.sqrt(sum(float(np.sum(b ** 2)) for b in w0))
    return change / norm0 if norm0 > 0 else math.nan


def _layer_groups(weights):
    """{layer path: positions of its weights}, from each variable's path minus its own name."""
    groups = {}
    for i, w in enumerate(weights):
        groups.setdefault(w.path.rpartition("/")[0] or w.path, []).append(i)
    return groups
