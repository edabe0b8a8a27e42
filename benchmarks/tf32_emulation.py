r"""What TensorFloat-32 would do to a float32 run (issue 31, item 2), emulated in NumPy.

On NVIDIA GPUs from Ampere on, TensorFlow by default runs float32 matrix products in
TensorFloat-32: each input rounded to 10 bits of mantissa (ε = 2⁻¹⁰ ≈ 9.8e-4 against
float32's 2⁻²³), products summed in float32. It rounds to nearest; hardware that truncates
would err up to about twice as much. This script rounds the inputs of every product of the
paper's FC net (L = 3, h = 100, softplus β = 5 normalized, N(0, 1) weights, Fashion-MNIST
inputs) the same way and prints,
for weights moved by a relative δ from w0, the error of Δf = f(w0 + δ) − f(w0) in float32 and
in TensorFloat-32 against float64 (F = αΔf, so |Δf| ~ 1/α at convergence), and the relative
error of a Gram matrix of the last hidden layer (one term of Θ, eq. 5). No GPU is needed;
`precision.exact_float32` is what keeps TensorFloat-32 off.

  python benchmarks/tf32_emulation.py
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lazy_feature.model import activations  # noqa: E402
from lazy_feature.run import data  # noqa: E402

WIDTH, N = 100, 200
NORMALIZATION = activations.normalization("softplus", activations.SOFTPLUS_BETA)


def tensor_float_32(a):
    """a rounded to TensorFloat-32 (10 bits of mantissa, to nearest), as float32."""
    bits = np.ascontiguousarray(a, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


PRODUCTS = {
    "float64": lambda a, b: a.astype(np.float64) @ b.astype(np.float64),
    "float32": lambda a, b: a.astype(np.float32) @ b.astype(np.float32),
    "tf32": lambda a, b: tensor_float_32(a) @ tensor_float_32(b),
}


def sigma(z):
    return NORMALIZATION * np.logaddexp(0.0, activations.SOFTPLUS_BETA * z) / (
        activations.SOFTPLUS_BETA)


def forward(weights, x, product):
    """(f, the last hidden layer) with every matrix product done by `product`."""
    dtype = np.float64 if product is PRODUCTS["float64"] else np.float32
    z = x.astype(dtype)
    for weight in weights[:-1]:
        z = sigma(product(z, weight) / np.sqrt(weight.shape[0])).astype(dtype)
    return (product(z, weights[-1]) / np.sqrt(weights[-1].shape[0]))[:, 0], z


def rms(v):
    return float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))


def main():
    x = data.load_binary_task("fashion_mnist", None, N, 1, 0).x_train
    rng = np.random.default_rng(0)
    shapes = [(x.shape[1], WIDTH), (WIDTH, WIDTH), (WIDTH, WIDTH), (WIDTH, 1)]
    # w0 exactly representable in float32, so the float32 runs start where float64 does
    w0 = [rng.standard_normal(s).astype(np.float32).astype(np.float64) for s in shapes]
    print(f"FC L = 3, h = {WIDTH}, n = {N}; errors relative to float64's")
    print("relative δ | RMS Δf | float32 error of Δf | TF32 error of Δf")
    for size in (1e-1, 1e-2, 1e-3, 1e-4, 1e-6):
        w = [(w_ + size * rng.standard_normal(w_.shape)).astype(np.float32).astype(np.float64)
             for w_ in w0]
        change = {name: forward(w, x, p)[0].astype(np.float64) - forward(w0, x, p)[0]
                  for name, p in PRODUCTS.items()}
        exact = change["float64"]
        print(f"{size:g} | {rms(exact):.2e} | {rms(change['float32'] - exact) / rms(exact):.2e}"
              f" | {rms(change['tf32'] - exact) / rms(exact):.2e}")
    hidden = forward(w0, x, PRODUCTS["float64"])[1]
    gram = {name: p(hidden, hidden.T) / WIDTH for name, p in PRODUCTS.items()}
    print("Gram of the last hidden layer: relative error float32 "
          f"{rms(gram['float32'] - gram['float64']) / rms(gram['float64']):.2e}, TF32 "
          f"{rms(gram['tf32'] - gram['float64']) / rms(gram['float64']):.2e}")


if __name__ == "__main__":
    main()
