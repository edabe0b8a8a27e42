"""Activation functions normalized so that E[σ(z)²] = 1 for z ~ N(0, 1) (eq. 10).

With that normalization and N(0, 1) weights scaled by fan_in^(-1/2) (eqs. 12-14), every
pre-activation has unit variance at initialization, whatever the depth. The prefactor is
computed by quadrature, never hard-coded, so any β or any function works: for the paper's
a·sp_β with β = 5 it gives a ≈ 1.40438, for ReLU exactly √2.
"""
import functools
from collections.abc import Callable, Sequence
from typing import Any

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


# Beyond this |change| (βΔz for softplus) expm1 or sinh of it could overflow: tanh's change is
# then taken directly, σ(z0 + Δz) − σ(z0), no longer small against σ, so nothing cancels;
# softplus's by an exact identity without expm1 (`_softplus_change`).
_LARGE_CHANGE = 20.0


def _tanh_factors(z0):
    """What tanh's change needs of z0 alone: sech z0 (0 past float's range, where tanh is flat)."""
    return (1.0 / tf.cosh(z0),)


def _tanh_change(z0, dz, sech0):
    """tanh(z0 + Δz) − tanh(z0) = sinh(Δz)·sech z0 / cosh(z0 + Δz): a product, no difference
    of nearly equal numbers, whatever z0; past |Δz| = _LARGE_CHANGE (computed only when some
    |Δz| is that large) directly."""
    small = tf.abs(dz) < _LARGE_CHANGE
    safe = tf.where(small, dz, tf.zeros_like(dz))
    near = tf.sinh(safe) * sech0 / tf.cosh(z0 + safe)
    return tf.cond(tf.reduce_all(small), lambda: near,
                   lambda: tf.where(small, near, tf.tanh(z0 + dz) - tf.tanh(z0)))


def _softplus_factors(z0, *, beta):
    """What sp_β's change needs of z0 alone (`_softplus_change`): s = sigmoid(−β|z0|) and the
    side of z0, −1 where βz0 > 0, else +1."""
    c = beta * z0
    return tf.sigmoid(-tf.abs(c)), tf.where(c > 0, -tf.ones_like(c), tf.ones_like(c))


def _softplus_change(z0, dz, s, side, *, beta):
    """sp_β(z0 + Δz) − sp_β(z0) with c = βz0, a = βΔz, seen from the flat side of sp: for c ≤ 0
    it is log1p(s·expm1(a))/β, s = sigmoid(−|c|) ≤ ½; for c > 0, sp(u) = u + sp(−u) makes it
    (a + log1p(s·expm1(−a)))/β. With b = side·a (`_softplus_factors`) both read
    ((a − b)/2 + log1p(s·expm1(b)))/β. The argument of log1p stays ≥ −½, so nothing cancels;
    past b > _LARGE_CHANGE, where expm1 would overflow, log1p(s·expm1(b)) is taken as its
    equal b − sp(|c|) + sp(|c| − b), computed only when some b is that large."""
    a = beta * dz
    b = side * a
    bent = tf.math.log1p(s * tf.math.expm1(tf.minimum(b, _LARGE_CHANGE)))

    def with_far():
        c = tf.abs(beta * z0)
        far = b + tf.nn.softplus(c - b) - tf.nn.softplus(c)
        return tf.where(b > _LARGE_CHANGE, far, bent)

    bent = tf.cond(tf.reduce_any(b > _LARGE_CHANGE), with_far, lambda: bent)
    return (0.5 * (a - b) + bent) / beta


def _swish_factors(z0):
    """What swish's change needs of z0 alone: tanh's factors at z0/2."""
    return _tanh_factors(0.5 * z0)


def _swish_change(z0, dz, sech_half):
    """(z0 + Δz)s(z0 + Δz) − z0 s(z0) = Δz·s(z0 + Δz) + z0·(s(z0 + Δz) − s(z0)), s the
    sigmoid, with s(z0 + Δz) − s(z0) = ½(tanh((z0 + Δz)/2) − tanh(z0/2))."""
    return dz * tf.sigmoid(z0 + dz) + z0 * 0.5 * _tanh_change(0.5 * z0, 0.5 * dz, sech_half)


def _relu_change(z0, dz):
    """max(z0 + Δz, 0) − max(z0, 0): max(Δz, −z0) where z0 > 0, else max(z0 + Δz, 0) (which
    errs by ε|z0| only where it is positive, i.e. where Δz > |z0|)."""
    return tf.where(z0 > 0, tf.maximum(dz, -z0), tf.maximum(z0 + dz, 0.0))


def _swish_derivative(z):
    s = tf.sigmoid(z)
    return s + z * s * (1.0 - s)


# name -> (σ(z0 + Δz) − σ(z0) of the raw function computed without cancellation, from z0, Δz
# and the factors of z0 alone that the third function gives (none: no factors), σ').
_Formula = Callable[..., Any]
_CHANGES: dict[str, tuple[_Formula, _Formula, _Formula | None]] = {
    "softplus": (_softplus_change, lambda z, beta: tf.sigmoid(beta * z), _softplus_factors),
    "relu": (_relu_change, lambda z: tf.cast(z > 0, z.dtype), None),
    "tanh": (_tanh_change, lambda z: 1.0 - tf.square(tf.tanh(z)), _tanh_factors),
    "swish": (_swish_change, _swish_derivative, _swish_factors),
    "linear": (lambda z0, dz: dz, tf.ones_like, None),
}


class Change:
    """(z0, Δz) -> a·σ(z0 + Δz) − a·σ(z0), the change of the normalized activation (eq. 10),
    computed from Δz itself: its error is a few ε·|Δz|, where the difference of the two
    values errs by ε·|σ(z0)| (the difference form, `lazy_feature.model.difference`). Both
    arguments are tensors of one shape and dtype.

    What the formula needs of z0 alone (softplus: sigmoid(−β|z0|) and the side of z0; tanh:
    sech z0) comes from `factors(z0)`; a caller that evaluates the change at the same z0 many
    times (the flow, on its training set) computes them once and passes them (`factors=`),
    the same values either way.

    Its gradient is given in closed form, a·σ'(z0 + Δz) for Δz, and none for z0 or the
    factors (signals at w0, which nothing that trains moves): the backward pass then keeps
    z0 and Δz alone, not the formula's branches.
    """

    def __init__(self, name: str, beta: float = SOFTPLUS_BETA) -> None:
        a = normalization(name, beta)
        change, derivative, factors = _CHANGES[name]
        if name == "softplus":
            change, derivative, factors = (functools.partial(fn, beta=beta)
                                           for fn in (change, derivative, _softplus_factors))
        self._factors = factors

        @tf.custom_gradient
        def normalized_change(z0, dz, *factors):
            def gradient(upstream):  # z0 and its factors are w0's: nothing that trains moves
                return (None, upstream * a * derivative(z0 + dz)) + (None,) * len(factors)
            return a * change(z0, dz, *factors), gradient

        self._change = normalized_change

    def factors(self, z0: tf.Tensor) -> tuple[tf.Tensor, ...]:
        """What the change at z0 needs of z0 alone (empty for σ whose formula needs none)."""
        return () if self._factors is None else tuple(self._factors(z0))

    def __call__(self, z0: tf.Tensor, dz: tf.Tensor,
                 factors: Sequence[tf.Tensor] | None = None) -> tf.Tensor:
        return self._change(z0, dz, *(self.factors(z0) if factors is None else factors))


def get_change(name: str, beta: float = SOFTPLUS_BETA) -> Change:
    """The `Change` of the normalized activation `name` (softplus with sharpness β)."""
    if name not in _RAW:
        raise ConfigError(f"unknown activation {name!r}: choose one of {', '.join(NAMES)}")
    return Change(name, beta)


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
