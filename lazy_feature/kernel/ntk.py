"""The empirical neural tangent kernel Θ(w; x, x') = ∇_w f(w, x) · ∇_w f(w, x') (eq. 5).

Θ is over the parameters w of f: its trainable weights (a frozen copy of one of the package's
architectures, which has none, is over all its layers' weights). It comes in tiles (blocks of
examples × blocks of examples), so that no function here holds more than a tile and the
signals of its rows and columns, except `gram`, which returns the whole matrix. Inside the
scope of a MirroredStrategy with several replicas (`run.distribute`) the tiles are spread over
them, one tile per replica at a time. A `Kernel` computes a tile two ways at once:
  * the structured path (`structured`) for the layers it knows: exact, from each layer's
    inputs and back-propagated signals;
  * per-example Jacobians for every other parameter (any Keras model whose f(x_μ) depends on
    x_μ alone), blocked over examples and parameters; `gram_generic` takes this path alone.
Θ is a sum over parameters, so the two parts add up.

Precision. A tile is computed in the network's compute dtype: its entries are sums of O(h)
products, rounded to ~ε√h relatively (float32's own ε: TensorFloat-32 is turned off,
`precision.exact_float32`). That resolves the lazy drift ~1/(√h α) (Section 5) to ~ε h α,
which float32 keeps below 1e-3 only in the direct form's float32 range: the drift
(`drift`) therefore takes the kernels of a float32 network of the package's architectures
from its float64 copy at the same weights (`float64_copy`). Tiles are cast to float64 before
they are subtracted, summed or stored: a norm over 50 000 test points adds 2.5e9 squares,
and the difference of two close kernels must not be rounded again.
"""
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from lazy_feature.kernel import structured
from lazy_feature.model import precision

if TYPE_CHECKING:
    import keras

# Per-example Jacobians: a tile's Jacobian holds at most JACOBIAN_ENTRIES entries (128 MiB in
# float64): EXAMPLE_BLOCK examples by default, the parameters cut into chunks of at most
# JACOBIAN_ENTRIES / (examples per tile), unless a single weight tensor is larger.
EXAMPLE_BLOCK = 64
PARAM_BLOCK = 2 ** 18
JACOBIAN_ENTRIES = EXAMPLE_BLOCK * PARAM_BLOCK


def gram(network: "keras.Model", x1: npt.ArrayLike, x2: npt.ArrayLike | None = None,
         block_size: int | None = None) -> np.ndarray:
    """Θ(w; x1, x2) (eq. 5) as a float64 array (n1, n2); Θ(x1, x1) when x2 is None.

    block_size: examples per tile, None for as many as memory allows (`Kernel`).
    """
    return _gram(Kernel(network, x1, block_size), x1, x2)


def gram_generic(network: "keras.Model", x1: npt.ArrayLike, x2: npt.ArrayLike | None = None,
                 example_block: int = EXAMPLE_BLOCK, param_block: int = PARAM_BLOCK
                 ) -> np.ndarray:
    """Θ(w; x1, x2) of any Keras model f returning (batch,) from per-example Jacobians alone,
    float64 (n1, n2): the slow exact reference of the structured path.

    Sums J1 J2ᵀ over chunks of at most `param_block` parameters (a larger weight tensor is a
    chunk of its own), each J holding the per-example gradients of `example_block` examples
    or fewer, so that a Jacobian tile stays within example_block × param_block entries.
    """
    precision.exact_float32()  # as `Kernel`
    network = built(network, x1)
    return _gram(_Jacobians(network, example_block, param_block, parameters(network)), x1, x2)


class Kernel:
    """Tiles of Θ of one network: the structured terms of the layers `structured` knows,
    per-example Jacobians (`_Jacobians`) for the other parameters.

    Args:
      network: a Keras model f returning (batch,), built on x[:1] if it is not yet.
      x: inputs of the shape the tiles will see.
      block_size: examples per tile; None for `structured.block_size` with structured
        terms (structured.BLOCK_SIZE, fewer with convolutions) or EXAMPLE_BLOCK without, at most
        `examples`. Per-example Jacobians cut their parameters so that a tile of that many
        examples stays within JACOBIAN_ENTRIES.
      positions: indices into network.weights of the parameters Θ is over (`parameters`).
      examples: the most examples a tile needs (a probe's), None for no bound.
    """

    def __init__(self, network: "keras.Model", x: npt.ArrayLike, block_size: int | None = None,
                 positions: Sequence[int] | None = None, examples: int | None = None) -> None:
        precision.exact_float32()  # a tile's entries resolve the lazy drift (above)
        self.network = network = built(network, x)
        positions = parameters(network) if positions is None else positions
        self.terms = structured.terms(network, x, positions)
        covered = structured.covered_weights(self.terms)
        rest = [i for i in positions if id(network.weights[i]) not in covered]
        size = block_size or (structured.block_size(self.terms) if self.terms
                              else EXAMPLE_BLOCK)
        if block_size is None and examples:
            size = min(size, examples)
        self.jacobians = None
        if rest:
            self.jacobians = _Jacobians(network, size, max(1, JACOBIAN_ENTRIES // size), rest)
            size = min(size, self.jacobians.block_size)
        self.block_size = int(size)

    def signals(self, x, with_outputs=False):
        """The signals of a block x, the structured terms' and x for the Jacobians; with
        outputs, (f(x), signals) from the same pass."""
        x = tf.convert_to_tensor(x, self.network.compute_dtype)
        if self.terms:
            f, signals = structured.signals(self.network, self.terms, x, with_outputs)
        else:
            f, signals = (self.network(x) if with_outputs else None), []
        return (f, (signals, x)) if with_outputs else (signals, x)

    def block(self, signals1, signals2):
        """Θ(x1, x2) on two blocks, in the compute dtype."""
        theta = structured.block(self.terms, signals1[0], signals2[0]) if self.terms else 0.0
        if self.jacobians is not None:
            theta += self.jacobians.block(signals1[1], signals2[1])
        return theta


def parameters(network: "keras.Model") -> list[int]:
    """The positions in network.weights of the parameters Θ is over: the trainable weights,
    or, for a frozen copy of one of the package's architectures (`ntk_layers`), all its
    layers' weights, which are its parameters. ValueError if there are none."""
    positions = [i for i, w in enumerate(network.weights) if w.trainable]
    if not positions and hasattr(network, "ntk_layers"):
        layer_weights = {id(w) for layer in network.ntk_layers for w in layer.parameters}
        positions = [i for i, w in enumerate(network.weights) if id(w) in layer_weights]
    if not positions:
        raise ValueError(f"{network.name} has no trainable weight: Θ is over the trainable "
                         "weights (for a frozen copy use kernel_drift or "
                         "gram_difference_norm, which follow the trained network)")
    return positions


class ProbeKernel:
    """f(w, x) and Θ(w; x, x) (eq. 5) of a network on a probe x of fixed shape: float64
    tensors (n,) and (n, n).

    The whole probe is one tile of `Kernel` when memory allows, computed by one graph traced
    at the first call (without autograph: it has no data-dependent Python control flow, and
    autograph converting Keras's layer calls takes seconds); otherwise Θ takes `gram`'s tiles
    and f a pass of its own.
    """

    def __init__(self, network, x):
        n = int(np.shape(x)[0])
        self.kernel = Kernel(network, x, examples=n)
        self.network = self.kernel.network
        self.tiled = self.kernel.block_size < n
        self._pass = tf.function(self._outputs_and_gram, autograph=False)

    def __call__(self, x):
        x = tf.convert_to_tensor(x, self.network.compute_dtype)
        if self.tiled:
            f = tf.cast(self.network(x), tf.float64)
            return f, tf.constant(_gram(self.kernel, x.numpy(), None))
        return self._pass(x)

    def _outputs_and_gram(self, x):
        f, signals = self.kernel.signals(x, with_outputs=True)
        return (tf.cast(f, tf.float64),
                tf.cast(self.kernel.block(signals, signals), tf.float64))


def _gram(kernel, x1, x2):
    x1 = np.asarray(x1)
    x2 = None if x2 is None else np.asarray(x2)
    theta = np.empty((len(x1), len(x1 if x2 is None else x2)))
    for rows, cols, (block,) in tiles([kernel], x1, x2):
        theta[rows, cols] = block
        if x2 is None:
            theta[cols, rows] = block.numpy().T
    return theta


def tiles(kernels, x1, x2=None):
    """(rows, cols, [float64 tile of each kernel]) over Θ(x1, x2); x2 None: tiles with rows ≤ cols.

    The signals of a row block are computed once and kept while the column blocks pass, so
    memory is O(tile) whatever the number of examples. Under a MirroredStrategy of several
    replicas, `_spread_tiles`.
    """
    size = kernels[0].block_size
    symmetric = x2 is None
    others = x1 if symmetric else x2
    strategy = tf.distribute.get_strategy()
    if (isinstance(strategy, tf.distribute.MirroredStrategy)
            and strategy.num_replicas_in_sync > 1):
        yield from _spread_tiles(strategy, kernels, x1, others, symmetric)
        return
    for i in range(0, len(x1), size):
        rows = slice(i, min(i + size, len(x1)))
        row_signals = [kernel.signals(x1[rows]) for kernel in kernels]
        for j in range(i if symmetric else 0, len(others), size):
            cols = slice(j, min(j + size, len(others)))
            col_signals = (row_signals if symmetric and i == j
                           else [kernel.signals(others[cols]) for kernel in kernels])
            yield rows, cols, [tf.cast(kernel.block(s1, s2), tf.float64)
                               for kernel, s1, s2 in zip(kernels, row_signals, col_signals)]


def _spread_tiles(strategy, kernels, x1, x2, symmetric):
    """`tiles` computed one tile per replica at a time (memory: one tile per replica).

    Each replica computes the signals of its tile's rows and columns; the last round's
    spare replicas repeat its last tile.
    """
    size = kernels[0].block_size
    dtype = kernels[0].network.compute_dtype
    pairs = [(slice(i, min(i + size, len(x1))), slice(j, min(j + size, len(x2))))
             for i in range(0, len(x1), size)
             for j in range(i if symmetric else 0, len(x2), size)]

    def tile(rows_x, cols_x):
        return [tf.cast(kernel.block(kernel.signals(rows_x), kernel.signals(cols_x)), tf.float64)
                for kernel in kernels]

    spread = tf.function(lambda inputs: strategy.run(tile, args=inputs), reduce_retracing=True)
    replicas = strategy.num_replicas_in_sync
    for first in range(0, len(pairs), replicas):
        group = pairs[first:first + replicas]

        def inputs(context, group=group):
            rows, cols = group[min(context.replica_id_in_sync_group, len(group) - 1)]
            return tf.constant(x1[rows], dtype), tf.constant(x2[cols], dtype)

        blocks = strategy.experimental_local_results(
            spread(strategy.experimental_distribute_values_from_function(inputs)))
        for (rows, cols), replica_blocks in zip(group, blocks):
            yield rows, cols, replica_blocks


def built(network: "keras.Model", x: npt.ArrayLike) -> "keras.Model":
    """The network, built by a first call on x[:1] if it was not yet."""
    if not network.built:
        network(np.asarray(x)[:1])
    return network


def float64_copy(network: "keras.Model", x: npt.ArrayLike) -> "keras.Model":
    """A float32 network of the package's architectures (`ntk_layers`) as a float64 network at
    its current weights (float32 values are float64 values: nothing is rounded), for kernels
    whose differences float32 would not resolve (module docstring); any other network
    itself. The copy is made once per network and refreshed at each call."""
    network = built(network, x)
    if network.compute_dtype != "float32" or not hasattr(network, "ntk_layers"):
        return network
    copy = _FLOAT64_COPIES.get(network)
    if copy is None:
        copy = built(network.__class__.from_config(dict(network.get_config(),
                                                        dtype="float64")), x)
        for twin, w in zip(copy.weights, network.weights):
            twin.trainable = w.trainable
        _FLOAT64_COPIES[network] = copy
    for twin, w in zip(copy.weights, network.weights):
        twin.assign(np.asarray(w, np.float64))
    return copy


_FLOAT64_COPIES: "weakref.WeakKeyDictionary[keras.Model, keras.Model]" = \
    weakref.WeakKeyDictionary()


class _Jacobians:
    """Tiles of Θ over some parameters of any Keras model: Σ over parameter chunks of J1 J2ᵀ,
    J the per-example gradients.

    Reverse mode forms an example's whole gradient of a weight tensor, so weights are grouped
    whole into chunks of at most param_block entries (a larger tensor alone), and a tile's
    examples are cut so that its Jacobian stays within example_block × param_block entries.
    """

    def __init__(self, network, example_block, param_block, positions):
        weights = network.weights
        self.network = network
        self.chunks, chunk, filled = [], [], 0
        for i in positions:
            size = int(np.prod(weights[i].shape))
            if chunk and filled + size > param_block:
                self.chunks.append(tuple(chunk))
                chunk, filled = [], 0
            chunk.append(i)
            filled += size
        self.chunks.append(tuple(chunk))
        largest = max(sum(int(np.prod(weights[i].shape)) for i in c) for c in self.chunks)
        self.block_size = max(1, min(example_block, example_block * param_block // largest))

    def signals(self, x):
        return tf.convert_to_tensor(x, self.network.compute_dtype)

    def block(self, x1, x2):
        theta = 0.0
        for chunk in self.chunks:
            j1 = _outputs_and_gradients(self.network, chunk, x1)[1]
            j2 = j1 if x2 is x1 else _outputs_and_gradients(self.network, chunk, x2)[1]
            theta += tf.matmul(j1, j2, transpose_b=True)
        return theta


@tf.function(reduce_retracing=True)
def _outputs_and_gradients(network, positions, x):
    """f(w, x_μ) and J[μ] = ∂f(w, x_μ)/∂w over network.weights[positions], flattened: shapes
    (batch,) and (batch, Σ sizes), from one vectorized forward and backward pass."""
    variables = [network.weights[i] for i in positions]

    def gradient(x_mu):
        with tf.GradientTape() as tape:
            tape.watch([v.value for v in variables])  # frozen copies are not watched by default
            f = network(x_mu[None])[0]
        grads = tape.gradient(f, variables, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return f, tf.concat([tf.reshape(g, [-1]) for g in grads], axis=0)

    return tf.vectorized_map(gradient, x)
