"""Activation functions normalized so that E[σ(z)²] = 1 for z ~ N(0, 1) (eq. 10).

With that normalization and N(0, 1) weights scaled by fan_in^(-1/2) (eqs. 12-14), every
pre-activation has unit variance at initialization, whatever the depth. The prefactor is
computed by quadrature, never hard-coded, so any β or any function works: for the paper's
a·sp_β with β = 5 it gives a ≈ 1.40438, for ReLU exactly √2.
"""
import functools

import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError

SOFTPLUS_BETA = 5.0  # the paper's activation sharpness (Section 2, "Activation function")


def softplus(x, beta):
    """sp_β(x) = ln(1 + e^{βx}) / β, evaluated without overflow."""
    return tf.nn.softplus(beta * x) / beta


def _softplus_np(x, beta):
    return np.logaddexp(0.0, beta * x) / beta


# name -> (TensorFlow function, NumPy twin used for the normalization integral).
_RAW = {
    "softplus": (softplus, _softplus_np),
    "relu": (lambda x: tf.nn.relu(x), lambda x: np.maximum(x, 0.0)),
    "tanh": (lambda x: tf.tanh(x), np.tanh),
    "swish": (lambda x: x * tf.sigmoid(x), lambda x: x / (1.0 + np.exp(-x))),
    "linear": (lambda x: x, lambda x: x),
}
NAMES = tuple(sorted(_RAW))
# The activations whose derivative jumps (ReLU's at 0): ∇L of their networks is discontinuous
# where a pre-activation crosses the kink, which the flow's step control must allow for
# (`dynamics`, jumps of ∇L).
KINKED = ("relu",)


def second_moment(fn_np):
    """E[fn(z)²] for z ~ N(0, 1), by Gauss-Legendre quadrature on each half-line.

    Splitting at 0 keeps ReLU-like kinks at a node boundary, so the rule converges to
    machine precision for every function here; |z| > 40 carries no mass in float64.
    """
    nodes, weights = np.polynomial.legendre.leggauss(400)
    total = 0.0
    for lo, hi in ((-40.0, 0.0), (0.0, 40.0)):
        z = 0.5 * (hi - lo) * nodes + 0.5 * (hi + lo)
        density = np.exp(-0.5 * z * z) / np.sqrt(2.0 * np.pi)
        total += 0.5 * (hi - lo) * np.sum(weights * fn_np(z) ** 2 * density)
    return float(total)


@functools.lru_cache(maxsize=None)
def normalization(name, beta=SOFTPLUS_BETA):
    """The prefactor a with E[(a·σ(z))²] = 1 (a ≈ 1.40438 for softplus, β = 5)."""
    fn_np = _numpy_fn(name, beta)
    return 1.0 / np.sqrt(second_moment(fn_np))


def _numpy_fn(name, beta):
    if name not in _RAW:
        raise ConfigError(f"unknown activation {name!r}: choose one of {', '.join(NAMES)}")
    fn_np = _RAW[name][1]
    return functools.partial(fn_np, beta=beta) if name == "softplus" else fn_np


def get(name, beta=SOFTPLUS_BETA):
    """The normalized activation a·σ as a TensorFlow callable (eq. 10).

    Args:
      name: one of NAMES ("softplus" is the paper's, "relu" gives √2·ReLU).
      beta: sharpness of the softplus; ignored by the other activations.
    """
    a = normalization(name, beta)
    fn = _RAW[name][0]
    if name == "softplus":
        return lambda x: a * softplus(x, beta)
    return lambda x: a * fn(x)
