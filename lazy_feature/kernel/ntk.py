"""The empirical neural tangent kernel Θ (eq. 5), its drift (Section 5) and the frozen-kernel
dynamics (Appendix A, eqs. 25-28).

Θ(w; x, x') = ∇_w f(w, x) · ∇_w f(w, x') over the trainable weights w of f. Kernels come in
tiles (blocks of examples × blocks of examples), so no function here holds more than a tile
and the signals of its rows and columns, except `gram`, which returns the whole matrix.
Inside the scope of a MirroredStrategy with several replicas (`distribute`), the tiles are
spread over them, one tile per replica at a time.
Two ways to compute a tile:
  * the networks of `architectures` (`FullyConnected`, `ConvNet`, `WideResNet`): exact,
    from each layer's inputs and back-propagated signals, never forming the Jacobian of a
    dense layer (`gram_structured`);
  * any Keras model with outputs of shape (batch,) whose f(x_μ) depends on x_μ alone:
    per-example Jacobians, blocked over examples and parameters (`gram_generic`).
A probe's whole Θ(x, x) and f(x) (`ProbeKernel`, for `regime.RegimeMonitor`) takes the
structured way for plain `keras.layers.Dense` and `Conv2D` layers too, and per-example
Jacobians for the other weights.

Precision. A tile is computed in the network's compute dtype: its entries are sums of O(h)
products, rounded to ~ε√h relatively. The lazy regime's drift ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ ~
1/(√h α) (Section 5) is then resolved to ~ε h α relatively, the α·h·ε that `precision`
already bounds by 1e-3 when it picks the network's dtype. Tiles are cast to float64 before
they are subtracted, summed or stored: a norm over 50 000 test points adds 2.5e9 squares,
and the difference of two close kernels must not be rounded again. The frozen-kernel
dynamics runs in float64 (see `frozen_kernel_dynamics`).
"""

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.layers import NTKConv2D

# Fast path: a float32 tile of 4096² is 64 MiB and the signals of a 4096-example block of the
# paper's net (d = 784, L = 3, h = 1000) about 110 MiB, so the drift over 50 000 test points,
# two networks at once, needs about 1-2 GiB; larger tiles would only save recomputed signals.
BLOCK_SIZE = 4096
# Generic path: a Jacobian tile holds at most EXAMPLE_BLOCK × PARAM_BLOCK entries (128 MiB in
# float64), unless a single weight tensor is larger, in which case it holds one example.
EXAMPLE_BLOCK = 64
PARAM_BLOCK = 2 ** 18
# Structured path with convolutions: a block's per-example gradients J of every convolution and
# the patches of its largest layer hold at most this many entries (256 MiB in float32). Every
# tile recomputes its column block's J, so blocks are as large as memory allows: 133 examples
# on the paper's CNN at h = 64 on Fashion-MNIST (3·10⁵ weights).
CONV_BLOCK_ENTRIES = 2 ** 26


# -- Gram matrices -------------------------------------------------------------------------

def gram(network, x1, x2=None, block_size=None):
    """Θ(w; x1, x2) (eq. 5) as a float64 array (n1, n2); Θ(x1, x1) when x2 is None.

    Takes the exact fast path of `gram_structured` for the networks of `architectures` and
    the per-example Jacobians of `gram_generic` otherwise. block_size: examples per tile, None for the path's default.
    """
    return _gram(_kernel(network, x1, block_size), x1, x2)


def gram_structured(network, x1, x2=None, block_size=None):
    """Θ(w; x1, x2) of a network of `architectures`, exact: float64 (n1, n2).

    From each layer's inputs Z and back-propagated signals G (`_LayerKernel`): a dense layer
    adds (Z1 Z2ᵀ / fan_in + β_b²) ∘ (G1 G2ᵀ) without forming its Jacobian, a convolution
    J1 J2ᵀ with its per-example gradient J formed from the patches in one batched pass.
    """
    return _gram(_LayerKernel(_built(network, x1), x1, block_size), x1, x2)


def gram_generic(network, x1, x2=None, example_block=EXAMPLE_BLOCK, param_block=PARAM_BLOCK):
    """Θ(w; x1, x2) of any Keras model f returning (batch,), float64 (n1, n2).

    Sums J1 J2ᵀ over chunks of at most `param_block` parameters (a larger weight tensor is a
    chunk of its own), each J holding the per-example gradients of `example_block` examples
    or fewer, so that a Jacobian tile stays within example_block × param_block entries.
    """
    return _gram(_GenericKernel(_built(network, x1), example_block, param_block), x1, x2)


class ProbeKernel:
    """f(w, x) and Θ(w; x, x) (eq. 5) of any Keras model f returning (batch,), on a probe x of
    fixed shape: float64 tensors (n,) and (n, n), from one graph traced at the first call.

    Plain `keras.layers.Dense` and `keras.layers.Conv2D` layers (standard parametrization, with
    or without bias, channels last, one group, called once per pass) take the structured path
    of `_LayerKernel`, from one forward pass that keeps each such layer's input u and
    pre-activation z = u ⋆ W + b and one backward pass of Σ_μ f_μ to the z's (f(x_μ) depends
    on x_μ alone, so it gives every example's g = ∂f/∂z):
      * Dense: ∂f/∂W = u ⊗ g, ∂f/∂b = g, so it adds (U Uᵀ + 1) ∘ (G Gᵀ), never forming J;
      * Conv2D: ∂f/∂W = Σ_p u_p ⊗ g_p over output pixels p, u_p the input patch of p (with
        the layer's padding, strides and dilation, `_filter_gradients`), and ∂f/∂b = Σ_p g_p:
        it adds J Jᵀ + B Bᵀ, J the n per-example ∂f/∂W.
    A layer it does not know, one called twice (shared weights), or a convolution whose J
    would exceed CONV_BLOCK_ENTRIES keeps its weights on the generic path: per-example
    gradients by one vectorized pass per chunk of at most EXAMPLE_BLOCK × PARAM_BLOCK / n
    parameters (`gram_generic`'s bound), added to Θ in the same graph; a single weight tensor
    larger than that takes `gram_generic`'s tiles, outside the graph. Θ is a sum over weights,
    so the two paths add up. Products are taken in the compute dtype and cast to float64, as
    `gram_generic`'s tiles. The graph is traced without autograph (it has no data-dependent
    Python control flow; autograph converting Keras's layer calls takes seconds).
    """

    def __init__(self, network, x):
        self.network = network = _built(network, x)
        n = int(np.shape(x)[0])
        self.layers = _structured_layers(network, x, n)
        covered = {id(w) for layer in self.layers for w in _layer_weights(layer)}
        positions = [i for i, w in enumerate(network.weights)
                     if w.trainable and id(w) not in covered]
        self.generic = None
        if positions:
            self.generic = _GenericKernel(network, n, max(1, EXAMPLE_BLOCK * PARAM_BLOCK // n),
                                          positions)
        self.tiled = self.generic is not None and self.generic.block_size < n
        self._pass = tf.function(self._outputs_and_gram, autograph=False)

    def __call__(self, x):
        x = tf.convert_to_tensor(x, self.network.compute_dtype)
        f, theta = self._pass(x)
        if self.tiled:
            theta += _gram(self.generic, x.numpy(), None)
        return f, theta

    def _outputs_and_gram(self, x):
        theta = tf.zeros([tf.shape(x)[0]] * 2, tf.float64)
        if self.layers:
            f, signals = _keras_layer_signals(self.network, self.layers, x)
            for layer, (u, g) in zip(self.layers, signals):
                theta += _keras_layer_gram(layer, u, g)
        else:
            f = self.network(x)
        if self.generic is not None and not self.tiled:
            for chunk in self.generic.chunks:
                f, j = _outputs_and_gradients(self.network, chunk, x)
                theta += tf.cast(tf.matmul(j, j, transpose_b=True), tf.float64)
        return tf.cast(f, tf.float64), theta


def _layer_weights(layer):
    return [layer.kernel] + ([layer.bias] if layer.use_bias else [])


def _structured_layers(network, x, n):
    """The layers of `network` that `ProbeKernel` treats from their inputs and signals.

    A plain Dense or Conv2D qualifies when its call is Keras's own (no subclass override, no
    LoRA or quantization), its weights are trainable, and a trial pass on x[:1] calls it once,
    on rank-2 inputs for a Dense.
    """
    candidates = [layer for layer in network._flatten_layers(include_self=False)
                  if (type(layer).call in (keras.layers.Dense.call, keras.layers.Conv2D.call)
                      and getattr(layer, "quantization_mode", None) is None
                      and not getattr(layer, "lora_enabled", False)
                      and all(w.trainable for w in _layer_weights(layer))
                      and (isinstance(layer, keras.layers.Dense)
                           or (isinstance(layer, keras.layers.Conv2D)  # Conv1D/3D share its call
                               and layer.data_format == "channels_last" and layer.groups == 1)))]
    calls = {id(layer): [] for layer in candidates}

    def record(layer, u, z):
        calls[id(layer)].append(u.shape)
        return z

    with _capturing(candidates, record):
        network(np.asarray(x)[:1])
    chosen = []
    for layer in candidates:
        if len(calls[id(layer)]) != 1:
            continue
        if isinstance(layer, keras.layers.Dense):
            if len(calls[id(layer)][0]) == 2:
                chosen.append(layer)
        elif n * int(np.prod(layer.kernel.shape)) <= CONV_BLOCK_ENTRIES:
            chosen.append(layer)
    return chosen


class _capturing:
    """Within the block, each of `layers` computes z = u ⋆ W + b itself, passes (layer, u, z)
    to record(layer, u, z), which returns z (or a watched copy), and applies its activation."""

    def __init__(self, layers, record):
        self.layers, self.record = layers, record

    def __enter__(self):
        for layer in self.layers:
            object.__setattr__(layer, "call", self._call(layer))

    def __exit__(self, *exc):
        for layer in self.layers:
            object.__delattr__(layer, "call")

    def _call(self, layer):
        def call(inputs, training=None):
            if isinstance(layer, keras.layers.Dense):
                z = keras.ops.matmul(inputs, layer.kernel)
            else:
                z = layer.convolution_op(inputs, layer.kernel)
            if layer.use_bias:
                z = keras.ops.add(z, layer.bias)
            z = self.record(layer, inputs, z)
            return z if layer.activation is None else layer.activation(z)
        return call


def _keras_layer_signals(network, layers, x):
    """f(x) and, per layer of `layers`, (u, g): its input and g = ∂(Σ_μ f_μ)/∂z at its
    pre-activation z, from one forward and one backward pass."""
    captured = {}
    with tf.GradientTape() as tape:
        def record(layer, u, z):
            tape.watch(z)
            captured[id(layer)] = (u, z)
            return z

        with _capturing(layers, record):
            f = network(x)
        total = tf.reduce_sum(f)
    pairs = [captured[id(layer)] for layer in layers]
    grads = tape.gradient(total, [z for _, z in pairs])
    return f, [(u, g) for (u, _), g in zip(pairs, grads)]


def _keras_layer_gram(layer, u, g):
    """A plain Dense or Conv2D's term of Θ(x, x) from its inputs u and signals g (float64)."""
    bias = 1.0 if layer.use_bias else 0.0
    if isinstance(layer, keras.layers.Dense):
        theta = ((tf.matmul(u, u, transpose_b=True) + bias) * tf.matmul(g, g, transpose_b=True))
        return tf.cast(theta, tf.float64)
    j = tf.reshape(_filter_gradients(layer, u, g), [tf.shape(u)[0], -1])
    theta = tf.matmul(j, j, transpose_b=True)
    if layer.use_bias:
        b = tf.reduce_sum(g, axis=[1, 2])
        theta += tf.matmul(b, b, transpose_b=True)
    return tf.cast(theta, tf.float64)


def _filter_gradients(layer, u, g):
    """Per-example ∂f/∂W = Σ_p u_p ⊗ g_p of a Conv2D, shaped (n,) + W's shape: for each filter
    offset (a, b), the input pixels that offset meets (u padded as the layer pads, then sliced
    with its strides and dilation) contracted with g over the output pixels. Slices beat
    `tf.image.extract_patches`, several times slower on CPU for small filters."""
    (kh, kw), (sh, sw), (dh, dw) = layer.kernel_size, layer.strides, layer.dilation_rate
    out_h, out_w = g.shape[1], g.shape[2]
    if layer.padding == "same":
        pads = [max((out - 1) * s + (k - 1) * d + 1 - size, 0) for out, s, k, d, size in
                ((out_h, sh, kh, dh, u.shape[1]), (out_w, sw, kw, dw, u.shape[2]))]
        u = tf.pad(u, [[0, 0], [pads[0] // 2, pads[0] - pads[0] // 2],
                       [pads[1] // 2, pads[1] - pads[1] // 2], [0, 0]])
    return tf.stack([tf.stack([
        tf.einsum("nhwc,nhwo->nco",
                  u[:, a * dh:a * dh + (out_h - 1) * sh + 1:sh,
                    b * dw:b * dw + (out_w - 1) * sw + 1:sw], g)
        for b in range(kw)], axis=1) for a in range(kh)], axis=1)


def _gram(kernel, x1, x2):
    x1 = np.asarray(x1)
    x2 = None if x2 is None else np.asarray(x2)
    theta = np.empty((len(x1), len(x1 if x2 is None else x2)))
    for rows, cols, (block,) in _tiles([kernel], x1, x2):
        theta[rows, cols] = block
        if x2 is None:
            theta[cols, rows] = block.numpy().T
    return theta


# -- streamed norms and the kernel drift ---------------------------------------------------

def gram_norm(network, x, block_size=None):
    """‖Θ(x, x)‖ = (Σ_μν Θ(w; x_μ, x_ν)²)^(1/2), streamed tile by tile."""
    x = np.asarray(x)
    return _frobenius_norms([_kernel(network, x, block_size)], x, [lambda theta: theta])[0]


def gram_difference_norm(network_a, network_b, x, block_size=None):
    """‖Θ_a(x, x) − Θ_b(x, x)‖ of two networks of the same architecture, streamed."""
    x = np.asarray(x)
    kernels = _kernel_pair(network_a, network_b, x, block_size)
    return _frobenius_norms(kernels, x, [lambda a, b: a - b])[0]


def kernel_drift(model_or_networks, x, block_size=None):
    """The kernel's relative change ‖Θ(w) − Θ(w0)‖ / ‖Θ(w0)‖ over the set x (Section 5).

    The paper takes x to be the test set. One streamed pass gives all three norms.

    Args:
      model_or_networks: an `AlphaModel` (its .network and .initial_network), or a pair
        (network at w, network at w0).
      x: the inputs the norms sum over.
      block_size: examples per tile, None for the path's default.

    Returns:
      dict(norm0=‖Θ(w0)‖, norm=‖Θ(w)‖, difference=‖Θ(w) − Θ(w0)‖, drift=difference / norm0).
    """
    x = np.asarray(x)
    if isinstance(model_or_networks, AlphaModel):
        model = _built(model_or_networks, x)
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
    for rows, cols, blocks in _tiles(kernels, x):
        weight = 1.0 if rows == cols else 2.0
        for k, term in enumerate(terms):
            sums[k] += weight * float(tf.reduce_sum(tf.square(term(*blocks))))
    return np.sqrt(sums)


# -- frozen-kernel dynamics ----------------------------------------------------------------

def _tiles(kernels, x1, x2=None):
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
    """`_tiles` computed one tile per replica at a time (memory: one tile per replica).

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


def _built(network, x):
    """The network, built by a first call on x[:1] if it was not yet."""
    if not network.built:
        network(np.asarray(x)[:1])
    return network


def _kernel(network, x, block_size=None, positions=None):
    network = _built(network, x)
    if hasattr(network, "ntk_layers"):  # the networks of `architectures`
        return _LayerKernel(network, x, block_size)
    return _GenericKernel(network, block_size or EXAMPLE_BLOCK, PARAM_BLOCK, positions)


def _kernel_pair(network_a, network_b, x, block_size):
    """Kernels of two networks of one architecture over the same parameters.

    A frozen copy (`AlphaModel.initial_network`) has no trainable weight: a weight counts
    when it is trainable in either network.
    """
    weights = zip(_built(network_a, x).weights, _built(network_b, x).weights)
    positions = [i for i, (wa, wb) in enumerate(weights) if wa.trainable or wb.trainable]
    return [_kernel(net, x, block_size, positions) for net in (network_a, network_b)]


class _LayerKernel:
    """Tiles of Θ for a network of `architectures` from each NTK layer's inputs Z and signals
    G = ∂f/∂z̃ (`network.layer_signals`; f(x_μ) depends on x_μ alone, so one backward pass of
    Σ_μ f_μ gives every example's G).

    A dense layer z̃ = fan_in^(-1/2) z W + β_b b (`NTKDense`) has ∂f/∂W_ij = z_i g_j / √fan_in
    and ∂f/∂b_j = β_b g_j, so it adds (Z1 Z2ᵀ / fan_in + β_b²) ∘ (G1 G2ᵀ) to Θ(x1, x2) (∘ the
    elementwise product). A convolution (`NTKConv2D`) shares W over the output pixels p, so
    ∂f/∂W = fan_in^(-1/2) Σ_p u_p ⊗ g_p with u_p the (zero-padded) input patch of p: it adds
    J1 J2ᵀ, J that per-example gradient. Θ sums every layer's term.

    Blocks: BLOCK_SIZE examples for dense layers only; with convolutions, few enough that a
    block's J of every convolution and patches of one layer hold at most CONV_BLOCK_ENTRIES
    entries.
    """

    def __init__(self, network, x, block_size=None):
        self.network = network
        self.bias_squares = [layer.bias_scale ** 2 if getattr(layer, "use_bias", False) else 0.0
                             for layer in network.ntk_layers]
        _, preacts = network.layer_signals(np.asarray(x)[:1])
        convolutions = [(layer, int(np.prod(z.shape[1:-1])))  # (layer, output pixels)
                        for layer, z in zip(network.ntk_layers, preacts)
                        if isinstance(layer, NTKConv2D)]
        per_example = (sum(layer.fan_in * layer.filters for layer, _ in convolutions)  # J
                       + max([pixels * layer.fan_in for layer, pixels in convolutions],
                             default=0))  # the largest layer's patches
        default = (BLOCK_SIZE if not per_example
                   else max(1, min(BLOCK_SIZE, CONV_BLOCK_ENTRIES // per_example)))
        self.block_size = int(block_size or default)

    def signals(self, x):
        """Per layer, (Z / √fan_in, G) for a dense layer or (J,) for a convolution."""
        return _layer_signals(self.network, tf.convert_to_tensor(x, self.network.compute_dtype))

    def block(self, signals1, signals2):
        theta = 0.0
        for s1, s2, bias_sq in zip(signals1, signals2, self.bias_squares):
            if len(s1) == 1:  # a convolution's J
                theta += tf.matmul(s1[0], s2[0], transpose_b=True)
            else:
                theta += ((tf.matmul(s1[0], s2[0], transpose_b=True) + bias_sq)
                          * tf.matmul(s1[1], s2[1], transpose_b=True))
        return theta


class _GenericKernel:
    """Tiles of Θ for any Keras model: Σ over parameter chunks of J1 J2ᵀ, J per-example gradients.

    Reverse mode forms an example's whole gradient of a weight tensor, so weights are grouped
    whole into chunks of at most param_block entries (a larger tensor alone), and a tile's
    examples are cut so that its Jacobian stays within example_block × param_block entries.
    """

    def __init__(self, network, example_block, param_block, positions=None):
        weights = network.weights
        if positions is None:
            positions = [i for i, w in enumerate(weights) if w.trainable]
        if not positions:
            raise ValueError(f"{network.name} has no trainable weight: Θ is over the trainable "
                             "weights (for a frozen copy use kernel_drift or "
                             "gram_difference_norm, which follow the trained network)")
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


@tf.function(reduce_retracing=True)
def _layer_signals(network, x):
    """`_LayerKernel`'s signals per NTK layer: one forward and one backward pass."""
    with tf.GradientTape() as tape:
        tape.watch(x)  # records the pass even for a frozen copy, whose weights are not watched
        inputs, preactivations = network.layer_signals(x)
        total = tf.reduce_sum(preactivations[-1])
    grads = tape.gradient(total, preactivations)
    return [_convolution_gradient(layer, z, g) if isinstance(layer, NTKConv2D)
            else (z * (1.0 / np.sqrt(layer.fan_in)), g)
            for layer, z, g in zip(network.ntk_layers, inputs, grads)]


def _convolution_gradient(layer, z, g):
    """(J,) with J[μ] = ∂f(x_μ)/∂W = fan_in^(-1/2) Σ_p u_μp ⊗ g_μp flattened like W, for an
    `NTKConv2D` with input z and signals g; u_μp is the zero-padded k × k input patch of
    output pixel p, flattened (row, column, channel) like W's first three axes."""
    k, s = layer.kernel_size, layer.strides
    patches = tf.image.extract_patches(layer.pad(z), [1, k, k, 1], [1, s, s, 1], [1, 1, 1, 1],
                                       "VALID")
    jacobian = tf.einsum("nhwi,nhwo->nio", patches, g) * (1.0 / np.sqrt(layer.fan_in))
    return (tf.reshape(jacobian, [tf.shape(z)[0], -1]),)
