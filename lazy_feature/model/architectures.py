"""Networks f(w, x) in NTK parametrization, each returning f of shape (batch,).

`FullyConnected` is the paper's constant-width net (eqs. 11-14, Fig. 2):
z̃¹ = d^(-1/2) W⁰ x, z^ℓ = σ(z̃^ℓ), z̃^(ℓ+1) = h^(-1/2) W^ℓ z^ℓ, f = h^(-1/2) W^L z^L.
`ConvNet` is Section 7's CNN and `WideResNet` Appendix A's residual net (Fig. 8); both take
images (height, width, channels), average their last activations over space and read them
out like eq. 14, f = h^(-1/2) W^L z^L with h the readout's channels, so that α keeps the
meaning it has for the FC net.

Each computes f(w0 + δ, x) − f(w0, x) in the difference form (`difference=True`,
`lazy_feature.model.difference`) without forming either value (`change`).

`network(config)` builds the network a `TrainConfig` names (`ARCHITECTURES`).
"""
import dataclasses
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import keras

from lazy_feature.errors import ConfigError
from lazy_feature.model import activations
from lazy_feature.model.difference import DIFFERENCE, PairPropagation
from lazy_feature.model.layers import NTKConv2D, NTKDense

if TYPE_CHECKING:
    import tensorflow as tf


def _settings(config: Any) -> dict[str, Any]:
    """The settings of a `TrainConfig` that every network takes: σ, its β, seed, dtype and
    form."""
    return dict(activation=config.activation, beta=config.activation_beta,
                seed=config.init_seed, dtype=config.dtype,
                difference=config.form == DIFFERENCE)


@keras.saving.register_keras_serializable(package="lazy_feature")
class FullyConnected(PairPropagation, keras.Model):
    """The fully-connected network f(w, x) with L hidden layers of width h; f has shape (batch,).

    Args:
      width: h, the number of neurons of every hidden layer.
      depth: L, the number of hidden layers (the paper's default is 3).
      activation: a name from `activations.NAMES`; normalized so E[σ(z)²] = 1.
      beta: softplus sharpness (the paper's β = 5).
      bias_scale: β_b, the multiplier of the hidden layers' biases (Appendix J); 0 (the
        default, the paper's main setup) means no bias.
      readout_bias: a bias on the readout too, entering as bias_scale·b.
      seed: the init seed; layer ℓ draws its N(0, 1) weights from seed·1000 + ℓ.
      dtype: "float32" or "float64" (see `precision`), for weights and computation.
      difference: the difference form (module docstring): w = w0 + δ, δ trains.
    """
    DEFAULT_DEPTH = 3

    @classmethod
    def check_depth(cls, depth: int | None) -> int:
        """L (the default for None), or a ConfigError."""
        depth = cls.DEFAULT_DEPTH if depth is None else int(depth)
        if depth < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        return depth

    @classmethod
    def of_config(cls, config: Any) -> "FullyConnected":
        """The network a `TrainConfig` names."""
        return cls(config.width, depth=config.depth, bias_scale=config.bias_scale,
                   readout_bias=config.readout_bias, **_settings(config))

    def __init__(self, width: int, depth: int | None = DEFAULT_DEPTH, activation: str = "softplus",
                 beta: float = activations.SOFTPLUS_BETA, bias_scale: float = 0.0,
                 readout_bias: bool = False, seed: int = 0, difference: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width, self.depth = _check_width(width), self.check_depth(depth)
        self.difference = bool(difference)
        self.seed = int(seed)
        if float(bias_scale) < 0 or (readout_bias and not float(bias_scale) > 0):
            raise ConfigError(f"need bias_scale >= 0 (0 = no bias) and bias_scale > 0 for a "
                              f"readout bias, got {bias_scale} and readout_bias={readout_bias}")
        self.activation_name, self.beta = activation, float(beta)
        self.bias_scale, self.readout_bias = float(bias_scale), bool(readout_bias)
        self.sigma = activations.get(activation, beta)
        self.sigma_change = activations.get_change(activation, beta)
        self.hidden = [
            NTKDense(self.width, seed=self.seed * 1000 + ell, use_bias=self.bias_scale > 0,
                     bias_scale=self.bias_scale, difference=self.difference,
                     dtype=self.dtype_policy, name=f"hidden_{ell}")
            for ell in range(self.depth)
        ]
        self.readout = NTKDense(1, seed=self.seed * 1000 + self.depth,
                                use_bias=self.readout_bias, bias_scale=self.bias_scale,
                                difference=self.difference, dtype=self.dtype_policy,
                                name="readout")

    @property
    def ntk_layers(self) -> list[keras.layers.Layer]:
        """The NTK layers in the order `layer_signals` reports them."""
        return self.hidden + [self.readout]

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` (without the batch axis) is a vector (d,)."""
        if len(shape) != 1:
            raise ConfigError(f"the fc network takes vectors, got inputs of shape {tuple(shape)}: "
                              "flatten them (the data pipeline does for --architecture=fc)")

    def build(self, input_shape):
        self.check_input_shape(input_shape[1:])
        shape = (None, int(input_shape[-1]))
        for layer in self.hidden:
            layer.build(shape)
            shape = (None, self.width)
        self.readout.build(shape)

    def layer_signals(self, x: "tf.Tensor") -> tuple[list["tf.Tensor"], list["tf.Tensor"]]:
        """The inputs z^ℓ of every NTKDense (z⁰ = x) and its pre-activations z̃^(ℓ+1).

        Returns (inputs, preactivations), two lists of L + 1 tensors; the last
        pre-activation is f itself with shape (batch, 1). The fast NTK uses these.
        """
        if not self.built:
            self.build(x.shape)
        inputs, preacts = [], []
        z = keras.ops.cast(x, self.compute_dtype)
        for layer in self.hidden + [self.readout]:
            inputs.append(z)
            pre = layer.preactivation(z)
            preacts.append(pre)
            z = self.sigma(pre)
        return inputs, preacts

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        z = keras.ops.cast(x, self.compute_dtype)
        for layer in self.hidden:
            z = self.sigma(layer.preactivation(z))
        return self.readout.preactivation(z)[:, 0]

    def _body(self, z, record, sigma):
        for ell, layer in enumerate(self.hidden):
            z = record(layer, z if ell == 0 else sigma(z))
        return z

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(width=self.width, depth=self.depth, activation=self.activation_name,
                      beta=self.beta, bias_scale=self.bias_scale,
                      readout_bias=self.readout_bias, seed=self.seed, difference=self.difference)
        return config


def _check_width(width: int) -> int:
    if int(width) < 1:
        raise ConfigError(f"width must be >= 1, got {width}")
    return int(width)


class _ImageNetwork(PairPropagation, keras.Model):
    """What `ConvNet` and `WideResNet` share: channels-last images in; the last pre-activations
    z̃ through σ, averaged over space, then the readout f = h^(-1/2) W·mean_p σ(z̃_p) (eq. 14).

    Subclasses set `self.main_path` (the convolutions an image goes through one after the other,
    which set its spatial size) and `self.readout`, and implement `_body(z, record, sigma)`:
    it returns the last pre-activations and applies every convolution `layer` to its input
    `z` as `record(layer, z)`, the activation as `sigma(z)` and linear maps by + and * (so
    that z may be a `Pair`).
    """

    def __init__(self, width: int, activation: str = "softplus",
                 beta: float = activations.SOFTPLUS_BETA, seed: int = 0,
                 difference: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.width, self.seed = _check_width(width), int(seed)
        self.difference = bool(difference)
        self.activation_name, self.beta = activation, float(beta)
        self.sigma = activations.get(activation, beta)
        self.sigma_change = activations.get_change(activation, beta)

    def _conv(self, filters: int, kernel_size: int, **kwargs: Any) -> NTKConv2D:
        return NTKConv2D(filters, kernel_size, difference=self.difference,
                         dtype=self.dtype_policy, **kwargs)

    def _readout(self, index: int) -> NTKDense:
        return NTKDense(1, seed=self.seed * 1000 + index, difference=self.difference,
                        dtype=self.dtype_policy, name="readout")

    def check_input_shape(self, shape: Sequence[int]) -> None:
        """Raise ConfigError unless `shape` (no batch axis) is an image this network can take."""
        name = type(self).__name__
        if len(shape) != 3 or not all(int(s) >= 1 for s in shape):
            raise ConfigError(f"{name} takes images (height, width, channels), got inputs of "
                              f"shape {tuple(shape)}: use --architecture=fc for vectors "
                              "(e.g. with --pca)")
        for side in shape[:2]:
            sizes = [int(side)]
            for layer in self.main_path:
                sizes.append(layer.output_size(sizes[-1]))
            if min(sizes) < 1:
                raise ConfigError(f"{name} cannot take images of shape {tuple(shape)}: its "
                                  f"convolutions shrink a side of {side} to {sizes[1:]}; use "
                                  "larger images")

    def build(self, input_shape):
        """Check the image shape, then build every layer by a pass on one zero image."""
        self.check_input_shape(input_shape[1:])
        self._signals(keras.ops.zeros((1, *input_shape[1:]), self.compute_dtype))

    def layer_signals(self, x: "tf.Tensor") -> tuple[list["tf.Tensor"], list["tf.Tensor"]]:
        """The input of every NTK layer (the convolutions in the order they are applied, then
        the readout) and its pre-activation; the last pre-activation is f, shape (batch, 1)."""
        if not self.built:
            self.build(x.shape)
        return self._signals(keras.ops.cast(x, self.compute_dtype))

    def _signals(self, x):
        inputs, preacts = [], []

        def record(layer, z):
            inputs.append(z)
            preacts.append(layer(z))
            return preacts[-1]

        pooled = self._pool(self.sigma(self._body(x, record, self.sigma)))
        if not self.readout.built:
            self.readout.build(pooled.shape)
        inputs.append(pooled)
        preacts.append(self.readout.preactivation(pooled))
        return inputs, preacts

    def call(self, x: "tf.Tensor") -> "tf.Tensor":
        return self.layer_signals(x)[1][-1][:, 0]

    def _pool(self, z: "tf.Tensor") -> "tf.Tensor":
        """The spatial average the readout reads."""
        return keras.ops.mean(z, axis=(1, 2))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.update(width=self.width, activation=self.activation_name, beta=self.beta,
                      seed=self.seed, difference=self.difference)
        return config


@keras.saving.register_keras_serializable(package="lazy_feature")
class ConvNet(_ImageNetwork):
    """The paper's CNN (Section 7, Table 1): 4 hidden 5 × 5 convolutions of h channels, zero
    padding 1, stride 2 at the first and the third ("before the first layer and in the
    middle"), σ after each, no bias, the spatial average, then a perceptron readout.

    Weights N(0, 1) scaled by fan_in^(-1/2) (`NTKConv2D`), so pre-activations are O(1) at
    init; h (`width`) plays the FC width's role in √h·α, the readout carrying h^(-1/2).
    Filter and padding are the authors' (github.com/mariogeiger/feature_lazy, `CV` with
    L1 = L2 = 2, fsz = 5, pad = 1); images need sides of at least 19.

    Args:
      width: h, the channels of every hidden layer.
      activation, beta: the normalized σ (eq. 10), softplus β = 5 by default.
      seed: the init seed; layer ℓ draws from seed·1000 + ℓ, the readout from seed·1000 + 4.
      dtype: "float32" or "float64".
      difference: the difference form (module docstring).
    """
    KERNEL_SIZE, PADDING, STRIDES = 5, 1, (2, 1, 2, 1)
    DEFAULT_DEPTH = 4  # fixed: its hidden layers

    @classmethod
    def check_depth(cls, depth: int | None) -> int:
        """Its 4 hidden layers (given or None), or a ConfigError."""
        if depth is not None and int(depth) != cls.DEFAULT_DEPTH:
            raise ConfigError(f"the cnn has the paper's 4 hidden layers, got depth={depth}: "
                              "leave --depth unset (it applies to fc and wide_resnet)")
        return cls.DEFAULT_DEPTH

    @classmethod
    def of_config(cls, config: Any) -> "ConvNet":
        """The network a `TrainConfig` names."""
        return cls(config.width, **_settings(config))

    def __init__(self, width: int, activation: str = "softplus",
                 beta: float = activations.SOFTPLUS_BETA, seed: int = 0,
                 difference: bool = False, **kwargs: Any) -> None:
        super().__init__(width, activation, beta, seed, difference, **kwargs)
        self.main_path = [self._conv(self.width, self.KERNEL_SIZE, seed=self.seed * 1000 + ell,
                                     strides=stride, padding=self.PADDING, name=f"conv_{ell}")
                          for ell, stride in enumerate(self.STRIDES)]
        self.readout = self._readout(len(self.main_path))

    def _body(self, z, record, sigma):
        for ell, layer in enumerate(self.main_path):
            z = record(layer, z if ell == 0 else sigma(z))
        return z

    @property
    def ntk_layers(self) -> list[keras.layers.Layer]:
        """The NTK layers in the order `layer_signals` reports them."""
        return self.main_path + [self.readout]


@keras.saving.register_keras_serializable(package="lazy_feature")
class WideResNet(_ImageNetwork):
    """Wide-ResNet depth × k (Zagoruyko and Komodakis 2016) without batch normalization,
    initialized like the FC net (Appendix A, Fig. 8: the paper's is 28 × 10 on CIFAR10).

    A 3 × 3 stem of 16 channels, then three stages of n = (depth − 4)/6 residual blocks of
    16k, 32k and 64k channels, the first block of the second and third stages of stride 2.
    A block maps z to (s(z) + r(z))/√2, with r(z) = conv₂(σ(conv₁(σ(z)))) (3 × 3, padding 1,
    the stride on conv₂, as in the authors' code) and s the identity, or a 1 × 1 convolution
    of z where the shape changes (the authors' shortcut); the authors' 45° mix is this 1/√2.
    Every convolution is an `NTKConv2D` (N(0, 1) weights, fan_in^(-1/2)), no bias (the
    authors' convolutions and readout carry biases initialized at 0; this package keeps the
    bias-free model of the paper's main text, where α scales every trainable parameter's
    effect alike, and takes biases for the FC net only, Appendix J): s(z) and r(z) then have the mean square of z at init and are
    uncorrelated (conv₂'s weights are independent with mean 0), so the 1/√2 keeps the
    residual stream at unit variance through all blocks, as the FC net keeps its
    pre-activations. The readout is f = (64k)^(-1/2) W·mean_p σ(z_p) (eq. 14).

    h = k, the widening factor, as in the authors' code (its width argument is k), is the
    width of √h·α.

    Args:
      width: k, the widening factor (≥ 1).
      depth: 6n + 4 with n ≥ 1 (10, 16, 22, 28, ...); 28 by default.
      activation, beta: the normalized σ (eq. 10), softplus β = 5 by default.
      seed: the init seed; the ℓ-th convolution (stem, then each block's conv₁, conv₂ and
        shortcut) draws from seed·1000 + ℓ, the readout after the last.
      dtype: "float32" or "float64".
      difference: the difference form (module docstring).
    """
    STEM_CHANNELS, STAGE_CHANNELS, STAGE_STRIDES = 16, (16, 32, 64), (1, 2, 2)
    convs: list[NTKConv2D]
    blocks: list[tuple[int, int, int]]

    DEFAULT_DEPTH = 28

    @classmethod
    def check_depth(cls, depth: int | None) -> int:
        """6n + 4 (the default for None), or a ConfigError."""
        depth = cls.DEFAULT_DEPTH if depth is None else int(depth)
        if depth < 10 or (depth - 4) % 6:
            raise ConfigError("a wide_resnet's depth is 6n + 4 (10, 16, 22, 28, ...), "
                              f"got {depth}")
        return depth

    @classmethod
    def of_config(cls, config: Any) -> "WideResNet":
        """The network a `TrainConfig` names."""
        return cls(config.width, depth=config.depth, **_settings(config))

    def __init__(self, width: int, depth: int | None = DEFAULT_DEPTH,
                 activation: str = "softplus", beta: float = activations.SOFTPLUS_BETA,
                 seed: int = 0, difference: bool = False, **kwargs: Any) -> None:
        super().__init__(width, activation, beta, seed, difference, **kwargs)
        self.depth = self.check_depth(depth)
        blocks_per_stage = (self.depth - 4) // 6
        self.convs, self.blocks = [], []  # blocks: (conv₁, conv₂, shortcut or -1) indices

        def conv(channels, kernel_size, strides, padding):
            self.convs.append(self._conv(channels, kernel_size,
                                         seed=self.seed * 1000 + len(self.convs),
                                         strides=strides, padding=padding,
                                         name=f"conv_{len(self.convs)}"))
            return len(self.convs) - 1

        channels = self.STEM_CHANNELS
        conv(channels, 3, 1, 1)
        for base, stage_stride in zip(self.STAGE_CHANNELS, self.STAGE_STRIDES):
            for block in range(blocks_per_stage):
                stride, out = (stage_stride if block == 0 else 1), base * self.width
                first, second = conv(out, 3, 1, 1), conv(out, 3, stride, 1)
                shortcut = conv(out, 1, stride, 0) if stride != 1 or out != channels else -1
                self.blocks.append((first, second, shortcut))
                channels = out
        self.main_path = [self.convs[0]] + [self.convs[i] for b in self.blocks for i in b[:2]]
        self.readout = self._readout(len(self.convs))

    def _body(self, z, record, sigma):
        z = record(self.convs[0], z)
        for first, second, shortcut in self.blocks:
            residual = record(self.convs[second], sigma(record(self.convs[first], sigma(z))))
            skip = z if shortcut < 0 else record(self.convs[shortcut], z)
            z = (skip + residual) * (1.0 / math.sqrt(2.0))
        return z

    @property
    def ntk_layers(self) -> list[keras.layers.Layer]:
        """The NTK layers in the order `layer_signals` reports them."""
        return self.convs + [self.readout]

    def get_config(self) -> dict[str, Any]:
        return dict(super().get_config(), depth=self.depth)


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One family of networks f, registered once (`ARCHITECTURES`).

    name: its name in TrainConfig.architecture and --architecture.
    network: its class (its DEFAULT_DEPTH, check_depth and of_config).
    fan_in_per_width: its largest fan-in per unit of the width h of √h·α (`precision`).
    images: whether it takes images (height, width, channels) rather than vectors.
    biases: whether it takes `bias_scale` and `readout_bias` (Appendix J).
    version: bumped whenever the function its networks compute changes, so that runs of the
      new definition get new run ids (`TrainConfig.run_id`); 0 adds nothing to them.
    """
    name: str
    network: type[FullyConnected] | type[ConvNet] | type[WideResNet]
    fan_in_per_width: int
    images: bool
    biases: bool = False
    version: int = 0


# The paper's FC net; its CNN, whose widest layers are 5 × 5 kernels on h channels; the
# Wide-ResNet of Fig. 8, whose widest are 3 × 3 kernels on 64·k channels.
FC = Architecture("fc", FullyConnected, fan_in_per_width=1, images=False, biases=True)
ARCHITECTURES = {a.name: a for a in (
    FC,
    Architecture("cnn", ConvNet, fan_in_per_width=ConvNet.KERNEL_SIZE ** 2, images=True),
    # version 1: a block's stride on its second convolution, as in the authors' code
    Architecture("wide_resnet", WideResNet,
                 fan_in_per_width=3 * 3 * WideResNet.STAGE_CHANNELS[-1], images=True,
                 version=1),
)}


def takes_images(architecture: str) -> bool:
    """Whether `architecture` takes images rather than vectors (an unknown name does not:
    `check_options` refuses it)."""
    return architecture in ARCHITECTURES and ARCHITECTURES[architecture].images


def check_depth(architecture: str, depth: int | None) -> int:
    """The depth `architecture` takes (its default for None), or a ConfigError saying which."""
    return ARCHITECTURES[architecture].network.check_depth(depth)


def check_options(architecture: str, depth: int | None = None, bias_scale: float = 0.0,
                  readout_bias: bool = False) -> int:
    """The depth `architecture` gets, after refusing the options it does not take.

    Raises ConfigError for an unknown architecture, a depth it cannot have, or biases
    (`bias_scale`, `readout_bias`, Appendix J) given to the cnn or the wide_resnet.
    """
    if architecture not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {architecture!r}: choose one of "
                          f"{', '.join(ARCHITECTURES)}")
    if not ARCHITECTURES[architecture].biases and (bias_scale or readout_bias):
        raise ConfigError(f"bias_scale and readout_bias apply to fc only; the {architecture} "
                          "has no bias (Section 7, Appendix A): leave them unset")
    return check_depth(architecture, depth)


def network(config):
    """The network f of a `TrainConfig` (its architecture, width, depth, σ, seed and dtype)."""
    return ARCHITECTURES[config.architecture].network.of_config(config)
