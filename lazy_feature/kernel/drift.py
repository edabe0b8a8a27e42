"""The kernel's relative change ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ (Section 5): streamed over a data set,
live on a probe during training, and the crossover α* where it reaches order one.

Norms are Frobenius norms of Gram matrices, ‖Θ‖² = Σ_μν Θ(x_μ, x_ν)², summed in float64 from
the tiles of `ntk` (see its precision note); the kernels of a float32 network of the
package's architectures come from its float64 copy (`ntk.float64_copy`), since the lazy
drift ~1/(√h·α) falls below what float32 kernels resolve.
"""
from collections.abc import Sequence

import keras
import numpy as np
import numpy.typing as npt
import tensorflow as tf

from lazy_feature.kernel import ntk
from lazy_feature.model.alpha_model import AlphaModel

# The drift at the crossover α* (Section 5): "the crossover α* ~ h^(-1/2) precisely
# corresponds to the point where the change of the kernel is of the order of the norm of the
# kernel at initialization", read as ‖Θ(w) − Θ(w0)‖ = ‖Θ(w0)‖. √h·α* ~ 1 follows: the kernel
# starts to move at t_1 ~ √h·α (eq. 23), and training ends at t ~ 1.
CROSSOVER_DRIFT = 1.0


def gram_norm(network: keras.Model, x: npt.ArrayLike, block_size: int | None = None) -> float:
    """‖Θ(x, x)‖ = (Σ_μν Θ(w; x_μ, x_ν)²)^(1/2), streamed tile by tile."""
    x = np.asarray(x)
    return _frobenius_norms([ntk.Kernel(network, x, block_size)], x, [lambda theta: theta])[0]


def gram_difference_norm(network_a: keras.Model, network_b: keras.Model, x: npt.ArrayLike,
                         block_size: int | None = None) -> float:
    """‖Θ_a(x, x) − Θ_b(x, x)‖ of two networks of the same architecture, streamed."""
    x = np.asarray(x)
    kernels = _kernel_pair(network_a, network_b, x, block_size)
    return _frobenius_norms(kernels, x, [lambda a, b: a - b])[0]


def kernel_drift(model_or_networks: AlphaModel | Sequence[keras.Model], x: npt.ArrayLike,
                 block_size: int | None = None) -> dict[str, float]:
    """The kernel's relative change ‖Θ(w) − Θ(w0)‖ / ‖Θ(w0)‖ over the set x (Section 5).

    The paper takes x to be the test set. One streamed pass gives all three norms.

    Args:
      model_or_networks: an `AlphaModel` (its .network and .initial_network), or a pair
        (network at w, network at w0).
      x: the inputs the norms sum over.
      block_size: examples per tile, None for the default (`ntk.Kernel`).

    Returns:
      dict(norm0=‖Θ(w0)‖, norm=‖Θ(w)‖, difference=‖Θ(w) − Θ(w0)‖, drift=difference / norm0).
    """
    x = np.asarray(x)
    if isinstance(model_or_networks, AlphaModel):
        model = ntk.built(model_or_networks, x)
        network, initial = model.network, model.initial_network
    else:
        network, initial = model_or_networks
    kernels = _kernel_pair(network, initial, x, block_size)
    norm, norm0, difference = _frobenius_norms(
        kernels, x, [lambda theta, theta0: theta, lambda theta, theta0: theta0,
                     lambda theta, theta0: theta - theta0])
    return dict(norm0=norm0, norm=norm, difference=difference, drift=difference / norm0)


def _frobenius_norms(kernels, x, terms):
    """‖term(Θ_1(x, x), Θ_2(x, x), …)‖ for each term, from the tiles on and above the diagonal.

    Every term is symmetric, so a tile above the diagonal stands for its mirror too.
    """
    sums = np.zeros(len(terms))
    for rows, cols, blocks in ntk.tiles(kernels, x):
        weight = 1.0 if rows == cols else 2.0
        for k, term in enumerate(terms):
            sums[k] += weight * float(tf.reduce_sum(tf.square(term(*blocks))))
    return np.sqrt(sums)


def _kernel_pair(network_a, network_b, x, block_size):
    """Kernels of two networks of one architecture over the same parameters.

    A frozen copy (`AlphaModel.initial_network`) has no trainable weight: a weight counts
    when it is trainable in either network.
    """
    network_a, network_b = (ntk.float64_copy(net, x) for net in (network_a, network_b))
    weights = zip(network_a.weights, network_b.weights)
    positions = [i for i, (wa, wb) in enumerate(weights) if wa.trainable or wb.trainable]
    return [ntk.Kernel(net, x, block_size, positions) for net in (network_a, network_b)]


def signs(y):
    """Labels as ±1 (float64): > 0 is +1, anything else −1."""
    return np.where(np.asarray(y, np.float64) > 0, 1.0, -1.0)


class LiveDrift:
    """The kernel drift on a fixed probe set, followed during training (Section 5, Fig. 8).

    `start` keeps f(w0) and Θ(w0) on the probe; each call gives f(w), Θ(w), the drift
    ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ and the inflation ‖Θ(w)‖/‖Θ(w0)‖, all float64, from one graph per
    network (`ntk.ProbeKernel`). With labels the probe is sorted y = +1 first, as in Fig. 8.

    Args:
      x: the probe inputs (a few hundred points).
      y: their labels (> 0 is +1, else −1), or None.
    """

    def __init__(self, x, y=None):
        self.x, self.y = np.asarray(x), None
        if y is not None:
            y = signs(y)
            order = np.argsort(-y, kind="stable")
            self.x, self.y = self.x[order], y[order]
        self.f0 = self.gram0 = None
        self._kernels = {}

    def start(self, network):
        """Keep f(w0) and Θ(w0) of `network`, at w0 (or a frozen copy at w0); returns them."""
        self.f0, self.gram0 = self._outputs_and_gram(network)
        self.norm0 = np.linalg.norm(self.gram0)
        return self.f0, self.gram0

    def __call__(self, network):
        """dict(f, gram, drift, norm_ratio) of `network` at its current weights."""
        f, gram = self._outputs_and_gram(network)
        return dict(f=f, gram=gram, drift=float(np.linalg.norm(gram - self.gram0) / self.norm0),
                    norm_ratio=float(np.linalg.norm(gram) / self.norm0))

    def _outputs_and_gram(self, network):
        """f and Θ on the probe, from the float64 copy of a float32 network (the module's
        precision note), refreshed to its current weights."""
        copy = ntk.float64_copy(network, self.x)
        if id(network) not in self._kernels:
            self._kernels[id(network)] = (network, ntk.ProbeKernel(copy, self.x))
        f, gram = self._kernels[id(network)][1](self.x.astype(copy.compute_dtype))
        return f.numpy(), gram.numpy()


def crossover(x: npt.ArrayLike, drifts: npt.ArrayLike, level: float) -> float | None:
    """x* where the kernel drift falls through `level` as x (α, or √h·α) grows, or None.

    The drift at each x is positive, and largest in the feature regime (small x): x* is
    interpolated linearly in (log x, log drift) between the first two neighbouring points,
    among those with a positive drift, where it goes from ≥ level to < level.

    The level is each caller's, both of order one: CROSSOVER_DRIFT = 1 for a sweep's fits
    (the paper's reading, `study.fits`), the probe's FEATURE_DRIFT = 0.5 for its α scan, where
    α* is the edge of the verdicts its table shows (`probe.regime`).
    """
    x, drifts = np.asarray(x, float), np.asarray(drifts, float)
    positive = drifts > 0
    order = np.argsort(x[positive])
    a = np.log(x[positive][order])
    y = np.log(drifts[positive][order]) - np.log(level)
    for i in range(len(a) - 1):
        if y[i] >= 0 > y[i + 1]:
            return float(np.exp(a[i] + (a[i + 1] - a[i]) * y[i] / (y[i] - y[i + 1])))
    return None
