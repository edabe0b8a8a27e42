"""The difference form: F = α[f(w) − f(w0)] (eq. 6) without cancellation.

The direct form computes f(w) and f(w0) and subtracts: at large α, f − f0 ~ 1/α is tiny
against f = O(1), so float32 loses it (`precision`). The difference form keeps w0 frozen and
trains δ = w − w0 (`layers`), and propagates the pair (u0, Δu) of a signal at w0 and its
change through the network: through a layer Δz = fan_in^(-1/2)(Δu·W + u0·δ)
(`NTKDense.change`), through each activation by a formula without cancellation
(`activations.Change`), and linearly through skips and averages; every network takes these
passes from `PairPropagation`, and a set of inputs' signals at w0 can be computed once
(`Initial`). Δf comes out with an
error of a few ε·|Δf| where the direct form's is ε·|f|, so float32 resolves F at any α
(tests/test_difference_form.py: outputs, gradients and kernels against float64 brute force
at √h·α up to 1e6).
"""
from typing import TYPE_CHECKING, Any, NamedTuple

import keras

if TYPE_CHECKING:
    import tensorflow as tf

    from lazy_feature.model.layers import NTKDense

DIFFERENCE, DIRECT = "difference", "direct"
FORMS = (DIFFERENCE, DIRECT)  # how F = α[f(w) − f(w0)] is computed (module docstring)


class Pair:
    """A signal u0 at w0 and its change Δu at w (None: unchanged, the network's input), with
    the linear maps the networks apply to both (sums, scalings)."""

    def __init__(self, u0: "tf.Tensor", du: "tf.Tensor | None") -> None:
        self.u0, self.du = u0, du

    def __add__(self, other: "Pair") -> "Pair":
        if self.du is None or other.du is None:
            du = other.du if self.du is None else self.du
        else:
            du = self.du + other.du
        return Pair(self.u0 + other.u0, du)

    def __mul__(self, c: float) -> "Pair":
        return Pair(self.u0 * c, None if self.du is None else self.du * c)


class Initial(NamedTuple):
    """A set of inputs' signals at w0, which the difference form reads at every evaluation
    (`initial_signals` of a network): z̃ of every NTK layer, in `ntk_layers` order (the last
    is f(w0, x), shape (batch, 1)); and for every application of σ, in order, its value
    a·σ(z0) and the factors of its change that depend on z0 alone
    (`activations.Change.factors`)."""
    preactivations: list
    activations: list
    factors: list


class PairPass:
    """The pair propagation of one input: `layer` maps a Pair through an NTK layer, `sigma`
    through the activation; each takes its signals at w0 from `initial`, in order, when
    given, and computes them otherwise."""

    def __init__(self, network: keras.Model, initial: Initial | None) -> None:
        self.sigma_of, self.change_of = network.sigma, network.sigma_change
        self.initial, self.layers, self.sigmas = initial, 0, 0

    def layer(self, layer: keras.layers.Layer, pair: Pair) -> Pair:
        if self.initial is None:
            z0 = layer.initial_preactivation(pair.u0)
        else:
            z0 = self.initial.preactivations[self.layers]
        self.layers += 1
        return Pair(z0, layer.change(pair.u0, pair.du))

    def output(self, readout: keras.layers.Layer, pair: Pair) -> "tf.Tensor":
        """Δf, the readout's Δz̃ for its input `pair`, shape (batch,)."""
        self.layers += 1
        return readout.change(pair.u0, pair.du)[:, 0]

    def sigma(self, pair: Pair) -> Pair:
        if self.initial is None:
            return Pair(self.sigma_of(pair.u0), self.change_of(pair.u0, pair.du))
        k, self.sigmas = self.sigmas, self.sigmas + 1
        return Pair(self.initial.activations[k],
                    self.change_of(pair.u0, pair.du, self.initial.factors[k]))


class PairPropagation:
    """The difference form's passes, shared by every network: `_body(z, record, sigma)` (the
    layers before the readout: each NTK layer applied as `record(layer, z)`, the activation as
    `sigma(z)`, linear maps by + and *, so that z may be a `Pair`; it returns the last
    pre-activations), then σ, `_pool` and the readout."""
    compute_dtype: str
    built: bool
    build: Any
    readout: "NTKDense"
    sigma: Any

    def _body(self, z: Any, record: Any, sigma: Any) -> Any:
        raise NotImplementedError

    def _pool(self, z: "tf.Tensor") -> "tf.Tensor":
        """What the readout reads of the last activations: themselves (the FC net)."""
        return z

    def initial_signals(self, x: "tf.Tensor") -> Initial:
        """x's signals at w0 that the difference form reads (`difference.Initial`), to compute
        once for inputs whose change is taken many times (the flow's training set)."""
        if not self.built:
            self.build(x.shape)
        signals = Initial([], [], [])  # z̃ of each NTK layer; σ(z0) and its factors per σ

        def record(layer, z):
            signals.preactivations.append(layer.initial_preactivation(z))
            return signals.preactivations[-1]

        def sigma(z):
            signals.factors.append(self.sigma_change.factors(z))
            signals.activations.append(self.sigma(z))
            return signals.activations[-1]

        z = self._body(keras.ops.cast(x, self.compute_dtype), record, sigma)
        signals.preactivations.append(self.readout.initial_preactivation(self._pool(sigma(z))))
        return signals

    def change(self, x: "tf.Tensor", initial: Initial | None = None) -> "tf.Tensor":
        """Δf = f(w, x) − f(w0, x), shape (batch,), by the pair propagation (difference form);
        `initial`: `initial_signals(x)`, when at hand."""
        if not self.built:
            self.build(x.shape)
        propagation = PairPass(self, initial)
        body = self._body(Pair(keras.ops.cast(x, self.compute_dtype), None),
                          propagation.layer, propagation.sigma)
        last = propagation.sigma(body)
        return propagation.output(self.readout, Pair(self._pool(last.u0), self._pool(last.du)))
