"""Which floating-point precision a run at (α, h) needs.

In the difference form (`difference`; the default where the direct form in float32 does not
resolve F, `default_form`) float32 resolves every α up to 9.2e12:
δ = w − w0 is what trains, so an update is rounded against δ, not against w0, and F = α·Δf
comes from Δf itself, to a few ε of its own size (tests/test_difference_form.py checks
outputs, gradients and kernels against float64 at √h·α up to 1e6). Its only limit is the
range: the loss's scale 1/(α² n) (eq. 7) must stay well above float32's smallest normal
number (`largest_alpha`); squared norms are summed in float64 (`replicas.squared_norm`).
float32 is its default and float64 an option.

In the direct form, large α makes everything the integrator resolves tiny relative to the
weights:
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
from lazy_feature.model.difference import DIFFERENCE, DIRECT


def resolution_width(architecture, width):
    """The h of the rule α·h·ε ≤ RESOLUTION: the largest fan-in among the layers of width h
    (the FC net's hidden layers: h itself; `Architecture.fan_in_per_width`)."""
    return ARCHITECTURES[architecture].fan_in_per_width * width

RESOLUTION = 1e-3  # the largest α·h·ε we accept (see the module docstring)
DTYPES = ("float32", "float64")
# The difference form's range: the loss's scale 1/(α² n) (eq. 7) stays a million times above
# the dtype's smallest normal number for n up to a million (float32: α ≤ 9.2e12).
HEADROOM, LARGEST_N = 1e6, 1e6


def resolves(dtype, alpha, width, form=DIFFERENCE):
    """Whether `dtype` resolves the weight updates and F of a run at (α, h) in `form`."""
    return alpha <= largest_alpha(dtype, width, form)


def largest_alpha(dtype, width, form=DIFFERENCE):
    """The largest α that `dtype` resolves at width h: in the direct form α·h·ε = RESOLUTION;
    in the difference form 1/(α² n) = HEADROOM·tiny at n = LARGEST_N (whatever h)."""
    info = np.finfo(dtype)
    if form == DIFFERENCE:
        return float(1.0 / np.sqrt(float(info.tiny) * HEADROOM * LARGEST_N))
    return RESOLUTION / (width * float(info.eps))


def default_form(dtype, alpha, width):
    """The direct form where `dtype` (float32 when None) resolves it, α·h·ε ≤ RESOLUTION: it
    costs about half the difference form's evaluation (benchmarks/results/difference_form.md);
    the difference form beyond, in float32."""
    return DIRECT if resolves(dtype or "float32", alpha, width, DIRECT) else DIFFERENCE


def default_dtype(alpha, width, form=DIFFERENCE):
    """float32 where it resolves the run (it is about twice as fast; in the difference form
    every α up to 9.2e12), float64 otherwise."""
    return "float32" if resolves("float32", alpha, width, form) else "float64"


def check(dtype, alpha, width, network_width=None, form=DIFFERENCE):
    """Return the dtype to use: `dtype`, or the default for (α, h) when dtype is None.

    `width` is the rule's h (`resolution_width`); `network_width`, the h of √h·α (default
    `width`, the FC net's), lets a refusal name its limit in √h·α too; `form`, how F is
    computed (`difference.FORMS`). Raises ConfigError, saying what to do, when the dtype,
    given or default, cannot resolve the run.
    """
    if dtype is not None and dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}: choose one of {', '.join(DTYPES)}")
    chosen = default_dtype(alpha, width, form) if dtype is None else dtype
    if resolves(chosen, alpha, width, form):
        return chosen
    if chosen == "float32" and resolves("float64", alpha, width, form):
        advice = "use --dtype=float64 or leave --dtype unset"
        if form != DIFFERENCE:
            advice += " (or leave --form unset: the difference form resolves it in float32)"
    else:
        largest = largest_alpha(chosen, width, form)
        h = width if network_width is None else network_width
        advice = (f"{chosen} is the most precise dtype available: lower --alpha below "
                  f"{largest:.3g} (--sqrt_h_alpha below {largest * np.sqrt(h):.3g})")
    if form == DIFFERENCE:
        reason = f"the loss's scale 1/(alpha^2 n) nears {chosen}'s smallest numbers"
    else:
        reason = (f"alpha*h*eps={alpha * width * np.finfo(chosen).eps:.2g} > {RESOLUTION:g} "
                  "(f - f0 ~ 1/alpha cancels in --form=direct)")
    raise ConfigError(f"{chosen} cannot resolve alpha={alpha:g} at h={width} (the network's "
                      f"widest fan-in): {reason}; {advice}")


def exact_float32():
    """Turn off TensorFloat-32 in this process (TensorFlow's default on NVIDIA GPUs from
    Ampere on; float64 never uses it): with it F = α[f(w) − f(w0)] errs far more than Euler
    does from √h·α ~ 60 on, and a kernel's entries by about the lazy drift at √h·α ~ 1e4
    (benchmarks/results/tf32.md). It also asks XLA for the highest precision of float32
    products (on TPUs too). Every `AlphaModel` and every kernel of `kernel.ntk` calls it: it
    holds for the package's runs and kernels, and for a user's model in the process."""
    tf.config.experimental.enable_tensor_float_32_execution(False)
