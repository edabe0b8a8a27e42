"""Networks f(w, x) in NTK parametrization.

`FullyConnected` is the paper's constant-width net (eqs. 11-14, Fig. 2):
z̃¹ = d^(-1/2) W⁰ x, z^ℓ = σ(z̃^ℓ), z̃^(ℓ+1) = h^(-1/2) W^ℓ z^ℓ, f = h^(-1/2) W^L z^L.
"""
import keras

from lazy_feature import activations
from lazy_feature.errors import ConfigError
from lazy_feature.layers import NTKDense


@keras.saving.register_keras_serializable(package="lazy_feature")
class FullyConnected(keras.Model):
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
    """

    def __init__(self, width, depth=3, activation="softplus", beta=activations.SOFTPLUS_BETA,
                 bias_scale=0.0, readout_bias=False, seed=0, **kwargs):
        super().__init__(**kwargs)
        if int(width) < 1:
            raise ConfigError(f"width must be >= 1, got {width}")
        if int(depth) < 1:
            raise ConfigError(f"depth must be >= 1, got {depth}")
        self.width, self.depth, self.seed = int(width), int(depth), int(seed)
        if float(bias_scale) < 0 or (readout_bias and not float(bias_scale) > 0):
            raise ConfigError(f"need bias_scale >= 0 (0 = no bias) and bias_scale > 0 for a "
                              f"readout bias, got {bias_scale} and readout_bias={readout_bias}")
        self.activation_name, self.beta = activation, float(beta)
        self.bias_scale, self.readout_bias = float(bias_scale), bool(readout_bias)
        self.sigma = activations.get(activation, beta)
        self.hidden = [
            NTKDense(self.width, seed=self.seed * 1000 + ell, use_bias=self.bias_scale > 0,
                     bias_scale=self.bias_scale, dtype=self.dtype_policy, name=f"hidden_{ell}")
            for ell in range(self.depth)
        ]
        self.readout = NTKDense(1, seed=self.seed * 1000 + self.depth,
                                use_bias=self.readout_bias, bias_scale=self.bias_scale,
                                dtype=self.dtype_policy, name="readout")

    def build(self, input_shape):
        shape = (None, int(input_shape[-1]))
        for layer in self.hidden:
            layer.build(shape)
            shape = (None, self.width)
        self.readout.build(shape)

    def layer_signals(self, x):
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

    def call(self, x):
        z = keras.ops.cast(x, self.compute_dtype)
        for layer in self.hidden:
            z = self.sigma(layer.preactivation(z))
        return self.readout.preactivation(z)[:, 0]

    def get_config(self):
        config = super().get_config()
        config.update(width=self.width, depth=self.depth, activation=self.activation_name,
                      beta=self.beta, bias_scale=self.bias_scale,
                      readout_bias=self.readout_bias, seed=self.seed)
        return config
