"""The structured path of the NTK Θ (eq. 5): each affine layer's term from its inputs and signals.

A layer z = c_w·(u ⋆ W) + c_b·b contributes to Θ(x1, x2) through its inputs u and the signals
g = ∂f/∂z at its pre-activation (f(x_μ) depends on x_μ alone, so one backward pass of Σ_μ f_μ
gives every example's g), never through the Jacobian of a dense layer:
  * dense: ∂f/∂W = c_w u ⊗ g, ∂f/∂b = c_b g, so it adds (c_w² U1 U2ᵀ + c_b²) ∘ (G1 G2ᵀ);
  * convolution: ∂f/∂W = c_w Σ_p u_p ⊗ g_p over output pixels p, u_p the input patch of p,
    and ∂f/∂b = Σ_p g_p: it adds J1 J2ᵀ + B1 B2ᵀ, J the per-example ∂f/∂W.
The layers it knows: the package's `NTKDense` (c_w = fan_in^(-1/2), c_b = β_b) and `NTKConv2D`
(c_w = fan_in^(-1/2), no bias), and Keras' plain `Dense` and `Conv2D` (c_w = c_b = 1). The
package's architectures report every layer's u and z themselves (`layer_signals`); in any
other model the layers are found by a trial pass that replaces, for its duration, the method
computing z by one that also hands (u, z) over (`_capturing`). Products are taken in the
network's compute dtype.
"""
import weakref

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.model.layers import NTKConv2D, NTKDense

# Dense layers only: a float32 tile of 4096² is 64 MiB and the signals of a 4096-example block
# of the paper's net (d = 784, L = 3, h = 1000) about 110 MiB.
BLOCK_SIZE = 4096
# With convolutions: a block's J of every convolution and the patches of its largest layer
# hold at most this many entries (256 MiB in float32); every tile recomputes its column
# block's J, so blocks are as large as memory allows.
CONV_BLOCK_ENTRIES = 2 ** 26


class _Dense:
    """The term of a dense layer, from (c_w U, G) per block."""

    def __init__(self, layer, weight_scale, bias_square, method, keras_layer):
        self.layer, self.weight_scale, self.bias_square = layer, weight_scale, bias_square
        self.method, self.keras_layer = method, keras_layer

    def signals(self, u, g):
        return (u if self.weight_scale is None else u * self.weight_scale, g)

    def block(self, s1, s2):
        return ((tf.matmul(s1[0], s2[0], transpose_b=True) + self.bias_square)
                * tf.matmul(s1[1], s2[1], transpose_b=True))


class _Conv:
    """The term of a 2-d convolution, channels last, one group, from (J,) or (J, B) per block.

    J[μ] = c_w Σ_p u_μp ⊗ g_μp flattened like W, u_μp the input patch of output pixel p
    (`tf.image.extract_patches` on the input padded as the layer pads it, flattened (row,
    column, channel) like W's first three axes).
    """

    def __init__(self, layer, weight_scale, use_bias, method, keras_layer, input_shape,
                 output_shape):
        self.layer, self.weight_scale, self.use_bias = layer, weight_scale, use_bias
        self.method, self.keras_layer = method, keras_layer
        if keras_layer:
            (kh, kw), (sh, sw), (dh, dw) = (layer.kernel_size, layer.strides,
                                            layer.dilation_rate)
        else:
            (kh, kw), (sh, sw), (dh, dw) = (layer.kernel_size,) * 2, (layer.strides,) * 2, (1, 1)
        self.sizes, self.strides, self.rates = [1, kh, kw, 1], [1, sh, sw, 1], [1, dh, dw, 1]
        out_h, out_w = output_shape[1], output_shape[2]
        self.pads = None
        if keras_layer and layer.padding == "same":
            total = [max((out - 1) * s + (k - 1) * d + 1 - size, 0) for out, s, k, d, size in
                     ((out_h, sh, kh, dh, input_shape[1]), (out_w, sw, kw, dw, input_shape[2]))]
            self.pads = [[0, 0], [total[0] // 2, total[0] - total[0] // 2],
                         [total[1] // 2, total[1] - total[1] // 2], [0, 0]]
        self.filter_entries = int(np.prod(layer.kernel.shape))  # J's, per example
        self.patch_entries = out_h * out_w * kh * kw * int(input_shape[-1])

    def signals(self, u, g):
        if not self.keras_layer:
            u = self.layer.pad(u)
        elif self.pads is not None:
            u = tf.pad(u, self.pads)
        patches = tf.image.extract_patches(u, self.sizes, self.strides, self.rates, "VALID")
        j = tf.einsum("nhwi,nhwo->nio", patches, g)
        if self.weight_scale is not None:
            j = j * self.weight_scale
        j = tf.reshape(j, [tf.shape(u)[0], -1])
        return (j, tf.reduce_sum(g, axis=[1, 2])) if self.use_bias else (j,)

    def block(self, s1, s2):
        theta = tf.matmul(s1[0], s2[0], transpose_b=True)
        if self.use_bias:
            theta += tf.matmul(s1[1], s2[1], transpose_b=True)
        return theta


def _layer_weights(layer):
    """The weights a layer's term is over: an NTK layer's parameters (δ in the difference
    form, where W = w0 + δ and ∂z/∂δ = ∂z/∂W), a Keras layer's kernel and bias."""
    if isinstance(layer, (NTKDense, NTKConv2D)):
        return layer.parameters
    return [layer.kernel] + ([layer.bias] if getattr(layer, "use_bias", False) else [])


def _method(layer):
    """The name of the method of `layer` that returns its pre-activation z from its input u,
    and whether z must be recomputed (a Keras layer, which applies its activation in `call`);
    None for a layer this path does not know."""
    kind = type(layer)
    if isinstance(layer, NTKDense) and kind.preactivation is NTKDense.preactivation:
        return "preactivation", False
    if isinstance(layer, NTKConv2D) and kind.call is NTKConv2D.call:
        return "call", False
    if (kind.call in (keras.layers.Dense.call, keras.layers.Conv2D.call)
            and getattr(layer, "quantization_mode", None) is None
            and not getattr(layer, "lora_enabled", False)
            and (isinstance(layer, keras.layers.Dense)
                 or (isinstance(layer, keras.layers.Conv2D)  # Conv1D/3D share its call
                     and layer.data_format == "channels_last" and layer.groups == 1))):
        return "call", True
    return None


class _capturing:
    """Within the block, each term's layer hands (term, u, z) to record(term, u, z), which
    returns z (or a watched copy), before it goes on (a Keras layer to its activation)."""

    def __init__(self, terms, record):
        self.terms, self.record = terms, record

    def __enter__(self):
        for term in self.terms:
            object.__setattr__(term.layer, term.method, self._replacement(term))

    def __exit__(self, *exc):
        for term in self.terms:
            object.__delattr__(term.layer, term.method)

    def _replacement(self, term):
        layer = term.layer
        if term.keras_layer:
            def call(inputs, training=None):
                if isinstance(layer, keras.layers.Dense):
                    z = keras.ops.matmul(inputs, layer.kernel)
                else:
                    z = layer.convolution_op(inputs, layer.kernel)
                if layer.use_bias:
                    z = keras.ops.add(z, layer.bias)
                z = self.record(term, inputs, z)
                return z if layer.activation is None else layer.activation(z)
            return call
        original = getattr(type(layer), term.method)

        def method(inputs, *args, **kwargs):
            return self.record(term, inputs, original(layer, inputs, *args, **kwargs))
        return method


class _Trial:
    """A stand-in term for the trial pass: it notes each call's input and output shapes."""

    def __init__(self, layer, method, keras_layer):
        self.layer, self.method, self.keras_layer = layer, method, keras_layer
        self.calls = []


# network -> {(weights, input shape): terms}
_TERMS: weakref.WeakKeyDictionary[keras.Model, dict[tuple[tuple[int, ...], tuple[int, ...]],
                                                    tuple[_Dense | _Conv, ...]]] = (
    weakref.WeakKeyDictionary())


def terms(network, x, positions):
    """The structured terms of `network`'s layers, in the order of the forward pass.

    A layer qualifies when `_method` knows it, its weights are all among network.weights
    [positions], and a trial pass on x[:1] calls it once, on rank-2 inputs for a dense layer.
    The same network, weights and input shape give the same terms, so the graphs traced for
    them are reused.
    """
    key = (tuple(positions), tuple(np.shape(x)[1:]))
    cached = _TERMS.setdefault(network, {})
    if key not in cached:
        cached[key] = tuple(_find_terms(network, x, positions))
    return cached[key]


def _find_terms(network, x, positions):
    counted = {id(network.weights[i]) for i in positions}
    if hasattr(network, "layer_signals") and all(
            id(w) in counted for layer in network.ntk_layers for w in _layer_weights(layer)):
        inputs, preactivations = network.layer_signals(np.asarray(x)[:1])
        return [_term(layer, "layer_signals", False, tuple(u.shape), tuple(z.shape))
                for layer, u, z in zip(network.ntk_layers, inputs, preactivations)]
    trials = []
    for layer in network._flatten_layers(include_self=False):
        method = _method(layer)
        if method and all(id(w) in counted for w in _layer_weights(layer)):
            trials.append(_Trial(layer, *method))
    order = []

    def record(trial, u, z):
        trial.calls.append((tuple(u.shape), tuple(z.shape)))
        if trial not in order:
            order.append(trial)
        return z

    with _capturing(trials, record):
        network(np.asarray(x)[:1])
    found = [_term(trial.layer, trial.method, trial.keras_layer, *trial.calls[0])
             for trial in order if len(trial.calls) == 1]
    return [term for term in found if term is not None]


def _term(layer, method, keras_layer, input_shape, output_shape):
    """The term of a dense layer (None unless its inputs have rank 2) or a convolution."""
    scale = None if keras_layer else 1.0 / np.sqrt(layer.fan_in)
    if isinstance(layer, (NTKDense, keras.layers.Dense)):
        if len(input_shape) != 2:
            return None
        use_bias = bool(getattr(layer, "use_bias", False))
        bias_square = (1.0 if keras_layer else layer.bias_scale ** 2) if use_bias else 0.0
        return _Dense(layer, scale, bias_square, method, keras_layer)
    return _Conv(layer, scale, bool(keras_layer and layer.use_bias), method, keras_layer,
                 input_shape, output_shape)


def covered_weights(found):
    """The ids of the weights the terms account for."""
    return {id(w) for term in found for w in _layer_weights(term.layer)}


def block_size(found):
    """Examples per tile: BLOCK_SIZE for dense layers only; with convolutions, few enough
    that a block's J of every convolution and the patches of its largest layer hold at most
    CONV_BLOCK_ENTRIES entries."""
    convolutions = [term for term in found if isinstance(term, _Conv)]
    if not convolutions:
        return BLOCK_SIZE
    per_example = (sum(term.filter_entries for term in convolutions)
                   + max(term.patch_entries for term in convolutions))
    return max(1, min(BLOCK_SIZE, CONV_BLOCK_ENTRIES // per_example))


@tf.function(reduce_retracing=True, autograph=False)
def signals(network, found, x, with_outputs=False):
    """(f(x) if with_outputs else None, per term its signals): one forward pass keeping each
    layer's u and z, one backward pass of Σ_μ f_μ to the z's (watched from x, or from each z,
    so that a frozen copy's pass is recorded too). Without outputs the graph leaves out what
    only f needs (the readout's forward value), which then changes no rounding of the rest."""
    if found and found[0].method == "layer_signals":
        with tf.GradientTape() as tape:
            tape.watch(x)
            inputs, preactivations = network.layer_signals(x)
            total = tf.reduce_sum(preactivations[-1])
        grads = tape.gradient(total, preactivations)
        return (preactivations[-1][:, 0] if with_outputs else None,
                [term.signals(u, g) for term, u, g in zip(found, inputs, grads)])
    captured = {}
    with tf.GradientTape() as tape:
        def record(term, u, z):
            tape.watch(z)
            captured[id(term)] = (u, z)
            return z

        with _capturing(found, record):
            f = network(x)
        total = tf.reduce_sum(f)
    pairs = [captured[id(term)] for term in found]
    grads = tape.gradient(total, [z for _, z in pairs])
    return (f if with_outputs else None,
            [term.signals(u, g) for term, (u, _), g in zip(found, pairs, grads)])


def block(found, signals1, signals2):
    """Σ over the terms of their blocks of Θ(x1, x2), in the compute dtype."""
    theta = 0.0
    for term, s1, s2 in zip(found, signals1, signals2):
        theta += term.block(s1, s2)
    return theta
