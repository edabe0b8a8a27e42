"""Per-pattern losses ℓ(F, y) and the α⁻²-scaled training loss of eq. 7."""
import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.model import activations

SOFT_HINGE_BETA = 20.0  # the paper's compromise between smoothness and the hinge (Fig. 1)


def soft_hinge(F, y, beta=SOFT_HINGE_BETA):
    """ℓ = sp_β(1 − F·y), the paper's loss (Section 2, "Loss function")."""
    return activations.softplus(1.0 - F * y, beta)


def hinge(F, y, beta=None):
    """ℓ = max(0, 1 − F·y), the β → ∞ limit of the soft hinge."""
    return tf.nn.relu(1.0 - F * y)


def quadratic_hinge(F, y, beta=None):
    """ℓ = ½ max(0, 1 − F·y)²."""
    return 0.5 * tf.square(tf.nn.relu(1.0 - F * y))


def logistic(F, y, beta=None):
    """ℓ = ln(1 + e^{−F·y}) (cross-entropy for two classes)."""
    return tf.nn.softplus(-F * y)


_LOSSES = {
    "soft_hinge": soft_hinge,
    "hinge": hinge,
    "quadratic_hinge": quadratic_hinge,
    "logistic": logistic,
}
NAMES = tuple(sorted(_LOSSES))


def get(name, beta=SOFT_HINGE_BETA):
    """The per-pattern loss ℓ(F, y) by name; `beta` sets the soft hinge's sharpness."""
    if name not in _LOSSES:
        raise ConfigError(f"unknown loss {name!r}: choose one of {', '.join(NAMES)}")
    fn = _LOSSES[name]
    return lambda F, y: fn(F, y, beta)


def alpha_loss(per_pattern, F, y, alpha, n):
    """L = (1 / (α² n)) Σ_μ ℓ(F_μ, y_μ) (eq. 7) over the patterns given.

    `n` is the full training-set size, so shards summed across replicas give eq. 7.
    The α⁻² makes the convergence time independent of α as α → ∞.
    """
    return tf.reduce_sum(per_pattern(F, y)) / (alpha * alpha * n)


def misclassified(F, y):
    """Whether each point is an error: unless F·y > 0 it is (a tie F = 0 and a NaN output too).

    The one rule of the package; works on NumPy arrays, and on TensorFlow tensors with y of
    their dtype (or a Python number).
    """
    return ~(F * y > 0)


def error_rate(F, y):
    """The fraction of `misclassified` points along the last axis (shape F.shape[:-1])."""
    return np.mean(misclassified(np.asarray(F), np.asarray(y)), axis=-1)


def keras_alpha_loss(per_pattern, alpha):
    """Eq. 7's loss for a Keras `fit` with its own optimizer: α⁻² ℓ(F, y) per pattern, which
    Keras averages over each mini-batch (L of eq. 7 on that batch)."""
    return lambda y, F: per_pattern(F, tf.cast(y, F.dtype)) / alpha ** 2
