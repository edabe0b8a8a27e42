"""The difference form: F = α[f(w) − f(w0)] (eq. 6) without cancellation.

The direct form computes f(w) and f(w0) and subtracts: at large α, f − f0 ~ 1/α is tiny
against f = O(1), so float32 loses it (`precision`). The difference form keeps w0 frozen and
trains δ = w − w0 (`layers`), and propagates the pair (u0, Δu) of a signal at w0 and its
change through the network: through a layer Δz = fan_in^(-1/2)(Δu·W + u0·δ)
(`NTKDense.change`), through each activation by a formula without cancellation
(`activations.get_change`), and linearly through skips and averages. Δf comes out with an
error of a few ε·|Δf| where the direct form's is ε·|f|, so float32 resolves F at any α
(tests/test_difference_form.py: outputs, gradients and kernels against float64 brute force
at √h·α up to 1e6).
"""
from collections.abc import Sequence
from typing import TYPE_CHECKING

import keras

if TYPE_CHECKING:
    import tensorflow as tf

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


class PairPass:
    """The pair propagation of one input: `layer` maps a Pair through an NTK layer (taking its
    z̃ at w0 from `initial`, in order, when given), `sigma` through the activation."""

    def __init__(self, network: keras.Model, initial: "Sequence[tf.Tensor] | None") -> None:
        self.sigma_of, self.change_of = network.sigma, network.sigma_change
        self.initial, self.used = initial, 0

    def layer(self, layer: keras.layers.Layer, pair: Pair) -> Pair:
        if self.initial is None:
            z0 = layer.initial_preactivation(pair.u0)
        else:
            z0 = self.initial[self.used]
        self.used += 1
        return Pair(z0, layer.change(pair.u0, pair.du))

    def output(self, readout: keras.layers.Layer, pair: Pair) -> "tf.Tensor":
        """Δf, the readout's Δz̃ for its input `pair`, shape (batch,)."""
        self.used += 1
        return readout.change(pair.u0, pair.du)[:, 0]

    def sigma(self, pair: Pair) -> Pair:
        return Pair(self.sigma_of(pair.u0), self.change_of(pair.u0, pair.du))
