"""Which floating-point precision a run at (α, h) needs.

Large α makes everything the integrator resolves tiny relative to the weights:
  * F = α[f(w) − f(w0)] with f = O(1): rounding f to ε leaves an error α·ε in F;
  * eq. 8 caps one step's output change at 0.1/α, spread over the O(h²) weights of
    order 1, so one step moves a weight by about 0.1/(α h) (Appendix B finds
    ‖w − w0‖/‖w0‖ ~ 1/(α h) over the whole run). An update below ε·|w| is lost.
Both are controlled by α·h·ε. We require α·h·ε ≤ 1e-3, i.e. that a typical update is
at least a thousand roundings: float32 (ε ≈ 1.2e-7) then covers α·h ≤ ~8e3, and float64
(ε ≈ 2.2e-16) every α of the paper (11 decades, √h·α up to 1e6).

For the convolutional nets the h of this rule is the largest fan-in of a layer
(`resolution_width`), not the width of √h·α: a weight's share of a step is about
Δf/√(fan_in·c_out), which a layer's fan-in ≥ c_out bounds from below by Δf/fan_in, as h does
for the FC net's hidden layers (fan-in = c_out = h). The CNN's 5 × 5 convolutions have
fan-in 25·h; the Wide-ResNet's widest, 3 × 3 on 64·k channels, 576·k.

The rule needs float32's own ε. On NVIDIA GPUs from Ampere on, TensorFlow runs float32
matrix products and convolutions in TensorFloat-32 unless told not to: inputs rounded to 10
bits of mantissa, ε = 2⁻¹⁰ ≈ 9.8e-4, with which the rule would hold only up to α·h ≈ 1.
`exact_float32` turns that off.
"""
import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.model.architectures import ARCHITECTURES


def resolution_width(architecture, width):
    """The h of the rule α·h·ε ≤ RESOLUTION: the largest fan-in among the layers of width h
    (the FC net's hidden layers: h itself; `Architecture.fan_in_per_width`)."""
    return ARCHITECTURES[architecture].fan_in_per_width * width

RESOLUTION = 1e-3  # the largest α·h·ε we accept (see the module docstring)
DTYPES = ("float32", "float64")


def resolves(dtype, alpha, width):
    """Whether `dtype` resolves the weight updates and F of a run at (α, h)."""
    return alpha * width * np.finfo(dtype).eps <= RESOLUTION


def largest_alpha(dtype, width):
    """The largest α that `dtype` resolves at width h: α·h·ε = RESOLUTION."""
    return RESOLUTION / (width * np.finfo(dtype).eps)


def default_dtype(alpha, width):
    """float32 where it resolves the run (it is about twice as fast), float64 otherwise."""
    return "float32" if resolves("float32", alpha, width) else "float64"


def check(dtype, alpha, width, network_width=None):
    """Return the dtype to use: `dtype`, or the default for (α, h) when dtype is None.

    `width` is the rule's h (`resolution_width`); `network_width`, the h of √h·α (default
    `width`, the FC net's), lets a refusal name its limit in √h·α too. Raises ConfigError,
    saying what to do, when the dtype, given or default, cannot resolve the run.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    chosen = default_dtype(alpha, width) if dtype is None else dtype
    if resolves(chosen, alpha, width):
        return chosen
    if chosen == "float32":  # given: the default would have been float64
        advice = "use --dtype=float64 or leave --dtype unset"
    else:
        largest = largest_alpha(chosen, width)
        h = width if network_width is None else network_width
        advice = (f"float64 is the most precise dtype available: lower --alpha below "
                  f"{largest:.3g} (--sqrt_h_alpha below {largest * np.sqrt(h):.3g})")
    raise ConfigError(
        f"{chosen} cannot resolve alpha={alpha:g} at h={width} (the network's widest fan-in): "
        f"alpha*h*eps={alpha * width * np.finfo(chosen).eps:.2g} > {RESOLUTION:g} "
        f"(f - f0 ~ 1/alpha cancels); {advice}")


def exact_float32():
    """Turn off TensorFloat-32 in this process (TensorFlow's default on NVIDIA GPUs from
    Ampere on; float64 never uses it): with it F = α[f(w) − f(w0)] errs far more than Euler
    does from √h·α ~ 60 on, and a kernel's entries by about the lazy drift at √h·α ~ 1e4
    (benchmarks/results/tf32.md). It also asks XLA for the highest precision of float32
    products (on TPUs too). Every `AlphaModel` and every kernel of `kernel.ntk` calls it: it
    holds for the package's runs and kernels, and for a user's model in the process."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
