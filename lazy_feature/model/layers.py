"""Layers in NTK parametrization (eqs. 12-14): N(0, 1) weights, fan_in^(-1/2) in `call`;
dense (`NTKDense`) and convolutional (`NTKConv2D`, Section 7).

In the difference form (`difference=True`) a layer's weights are w = w0 + δ: the kernel w0 is
frozen at its draw and δ (zero at the start, `delta`) is what trains, so that a small update
of δ is never rounded away against w0. `change` then gives the pre-activation's change
Δz = z(w, u0 + Δu) − z(w0, u0) from the input's change Δu without forming either z, the
step of the pair propagation of `architectures` that makes F = α[f(w) − f(w0)] free of
cancellation (eq. 6).
"""
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np

from lazy_feature.model import activations

if TYPE_CHECKING:
    import tensorflow as tf


@keras.saving.register_keras_serializable(package="lazy_feature")
class StandardNormal(keras.initializers.Initializer):
    """W_ij ~ N(0, 1), drawn in float64 by NumPy from `seed` and then cast.

    Drawing in float64 whatever the layer's dtype makes a float32 and a float64 network
    with the same seed start from the same w0 (up to rounding), so precision can be
    compared run against run.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def __call__(self, shape: Sequence[int], dtype: str | None = None) -> "tf.Tensor":
        w = np.random.default_rng(self.seed).standard_normal(tuple(shape))
        return keras.ops.convert_to_tensor(w, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {"seed": self.seed}


@keras.saving.register_keras_serializable(package="lazy_feature")
class NTKDense(keras.layers.Layer):
    """z̃ = fan_in^(-1/2) · z W (+ β_b · b), with W ~ N(0, 1) (eqs. 12-14).

    Args:
      units: output width.
      seed: seed of the N(0, 1) draw of the kernel (the bias starts at 0).
      activation: None, or a name from `activations.NAMES`: the normalized σ (eq. 10)
        applied after the affine map.
      beta: the softplus sharpness β of that activation.
      use_bias: add a bias b (Appendix J); off by default as in the paper.
      bias_scale: the bias enters as bias_scale · b, so its gradient is O(1) like the
        weights' (the usual NTK convention, Jacot et al. 2018).
      difference: the difference form (module docstring): a frozen kernel w0 and a trainable
        `delta`; the bias, 0 at the start, is its own change.
    """

    def __init__(self, units: int, seed: int, activation: str | None = None,
                 beta: float = activations.SOFTPLUS_BETA, use_bias: bool = False,
                 bias_scale: float = 1.0, difference: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.difference = bool(difference)
        self.units = int(units)
        self.seed = int(seed)
        self.activation, self.beta = activation, float(beta)
        self.sigma = None if activation is None else activations.get(activation, beta)
        self.use_bias = bool(use_bias)
        self.bias_scale = float(bias_scale)

    def build(self, input_shape):
        self.fan_in = int(input_shape[-1])
        _build_kernel(self, (self.fan_in, self.units))
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    @property
    def parameters(self) -> list[keras.Variable]:
        """The weights that train (the NTK's parameters): W, or δ in the difference form,
        and the bias."""
        return _parameters(self)

    def preactivation(self, z: "tf.Tensor") -> "tf.Tensor":
        """z̃ = fan_in^(-1/2) z W (+ bias_scale · b), before the activation."""
        out = keras.ops.matmul(z, _weight(self)) * (1.0 / np.sqrt(self.fan_in))
        if self.use_bias:
            out = out + self.bias_scale * self.bias
        return out

    def initial_preactivation(self, u0: "tf.Tensor") -> "tf.Tensor":
        """z̃ at w0 on the input u0 (difference form; the bias starts at 0)."""
        return keras.ops.matmul(u0, self.kernel) * (1.0 / np.sqrt(self.fan_in))

    def change(self, u0: "tf.Tensor", du: "tf.Tensor | None") -> "tf.Tensor":
        """Δz̃ = fan_in^(-1/2) (Δu·W + u0·δ) (+ bias_scale · b) for the input u0 + Δu (Δu None:
        unchanged), difference form: every term is a product with a change."""
        out = keras.ops.matmul(u0, self.delta)
        if du is not None:
            out = out + keras.ops.matmul(du, _weight(self))
        out = out * (1.0 / np.sqrt(self.fan_in))
        if self.use_bias:
            out = out + self.bias_scale * self.bias
        return out

    def call(self, z: "tf.Tensor") -> "tf.Tensor":
        out = self.preactivation(z)
        return out if self.sigma is None else self.sigma(out)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, seed=self.seed, activation=self.activation,
                      beta=self.beta, use_bias=self.use_bias, bias_scale=self.bias_scale,
                      difference=self.difference)
        return config


def _build_kernel(layer, shape):
    """The layer's kernel W ~ N(0, 1), and in the difference form W frozen as w0 and a
    trainable δ of zeros beside it (`delta`)."""
    layer.kernel = layer.add_weight(name="kernel", shape=shape,
                                    initializer=StandardNormal(layer.seed),
                                    trainable=not layer.difference)
    if layer.difference:
        layer.delta = layer.add_weight(name="delta", shape=shape, initializer="zeros")


def _weight(layer):
    """W = w0 + δ in the difference form (rounded to the dtype, which only a product with a
    change Δu or a whole z̃ reads), the kernel otherwise."""
    return layer.kernel + layer.delta if layer.difference else layer.kernel


def _parameters(layer):
    weight = layer.delta if layer.difference else layer.kernel
    return [weight] + ([layer.bias] if getattr(layer, "use_bias", False) else [])


def conv_output_size(size: int, kernel_size: int, stride: int, padding: int) -> int:
    """The spatial size after a convolution: ⌊(size + 2·padding − kernel_size)/stride⌋ + 1."""
    return (size + 2 * padding - kernel_size) // stride + 1


@keras.saving.register_keras_serializable(package="lazy_feature")
class NTKConv2D(keras.layers.Layer):
    """z̃ = fan_in^(-1/2) · (W ⋆ z), with W ~ N(0, 1) and fan_in = k²·c_in (eqs. 12-13 for
    convolutions, Section 7): every output pixel is a dense layer on its k × k patch, so its
    pre-activation has the variance of the patch's mean square, 1 at init away from borders.

    Channels last; no bias (the paper's CNN has none). The input gets `padding` rows and
    columns of zeros on each side before a 'valid' convolution of stride `strides`.

    Args:
      filters: c_out, the output channels.
      kernel_size: k, the side of the square filter.
      seed: seed of the N(0, 1) draw of the kernel, shape (k, k, c_in, c_out).
      strides: the stride, the same along both axes.
      padding: zero pixels added on each side.
      difference: the difference form (module docstring).
    """

    def __init__(self, filters: int, kernel_size: int, seed: int, strides: int = 1,
                 padding: int = 0, difference: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.difference = bool(difference)
        self.filters, self.kernel_size = int(filters), int(kernel_size)
        self.seed, self.strides, self.padding = int(seed), int(strides), int(padding)

    def build(self, input_shape):
        self.fan_in = self.kernel_size ** 2 * int(input_shape[-1])
        _build_kernel(self, (self.kernel_size, self.kernel_size, int(input_shape[-1]),
                             self.filters))

    @property
    def parameters(self) -> list[keras.Variable]:
        """The weights that train (the NTK's parameters): W, or δ in the difference form."""
        return _parameters(self)

    def output_size(self, size: int) -> int:
        """The spatial size of the output for an input of spatial size `size`."""
        return conv_output_size(size, self.kernel_size, self.strides, self.padding)

    def compute_output_shape(self, input_shape):
        batch, height, width, _ = input_shape
        return (batch, self.output_size(height), self.output_size(width), self.filters)

    def pad(self, z: "tf.Tensor") -> "tf.Tensor":
        """z with `padding` zero pixels on each side (the patches the kernel sees)."""
        p = self.padding
        return keras.ops.pad(z, [[0, 0], [p, p], [p, p], [0, 0]]) if p else z

    def _convolve(self, z, kernel):
        out = keras.ops.conv(self.pad(z), kernel, strides=self.strides, padding="valid")
        return out * (1.0 / np.sqrt(self.fan_in))

    def call(self, z: "tf.Tensor") -> "tf.Tensor":
        return self._convolve(z, _weight(self))

    def initial_preactivation(self, u0: "tf.Tensor") -> "tf.Tensor":
        """z̃ at w0 on the input u0 (difference form)."""
        return self._convolve(u0, self.kernel)

    def change(self, u0: "tf.Tensor", du: "tf.Tensor | None") -> "tf.Tensor":
        """Δz̃ = fan_in^(-1/2) (W ⋆ Δu + δ ⋆ u0) for the input u0 + Δu (Δu None: unchanged),
        difference form."""
        out = self._convolve(u0, self.delta)
        return out if du is None else out + self._convolve(du, _weight(self))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=self.kernel_size, seed=self.seed,
                      strides=self.strides, padding=self.padding, difference=self.difference)
        return config
