r"""Time and memory of the empirical NTK (lazy_feature.kernel.ntk and .drift) on the paper's net, L = 3, h = 1000.

On Fashion-MNIST test points (Section 2's task):
  1. ‖Θ(x, x)‖ over n points by the fast path (`gram_norm`): wall time, peak resident memory
     (and its growth during the computation), and the lower bound flops / (matmul throughput measured in this run).
     Target: within 2x of the bound.
  2. The generic path (per-example Jacobians, `gram_generic`) on a subset, extrapolated to n
     as time ∝ n². Target: the fast path at least 50x faster.
  3. With --drift: ‖Θ(w) − Θ(w0)‖ / ‖Θ(w0)‖ (`kernel_drift`) over 50 000 test points, w a
     perturbed copy of w0: wall time and peak resident memory. Target: below 8 GiB. Long.

  python benchmarks/ntk_benchmark.py --quick     # n = 1000, generic on 32 points: < 1 min
  python benchmarks/ntk_benchmark.py             # n = 10 000, generic on 256 points
  python benchmarks/ntk_benchmark.py --drift     # also part 3
"""
import argparse
import time

import numpy as np
import tensorflow as tf

from lazy_feature.run import data
from lazy_feature.kernel import drift, ntk, structured
from lazy_feature.model.architectures import FullyConnected
from train_step_benchmark import matmul_throughput  # the sibling benchmark's measurement

GIB = 2.0 ** 30


def _status_bytes(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM: kB) in bytes."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1]) * 1024.0
    raise KeyError(field)


def measured(fn):
    """(fn(), wall seconds, peak resident memory during fn, its growth over the start), bytes.

    ru_maxrss never decreases, so a peak reached earlier (loading the data) would hide the
    one of fn: the kernel's high-water mark VmHWM is reset first (clear_refs 5, Linux ≥ 4.0).
    """
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    value = fn()
    seconds = time.perf_counter() - start
    peak = _status_bytes("VmHWM")
    return value, seconds, peak, peak - before


def gram_norm_flops(n, d, width, depth):
    """Flops the fast path cannot avoid for ‖Θ(x, x)‖ on n points.

    Each of the n(n+1)/2 distinct entries costs 2(fan_in + units) per layer (Z Zᵀ and G Gᵀ);
    each point's signals cost one forward pass, 2(d h + (L−1) h² + h), and one backward pass
    to the pre-activations, 2((L−1) h² + h).
    """
    widths = [d] + [width] * depth + [1]
    per_entry = sum(2.0 * (fan_in + units) for fan_in, units in zip(widths[:-1], widths[1:]))
    forward = 2.0 * (d * width + (depth - 1) * width ** 2 + width)
    backward = 2.0 * ((depth - 1) * width ** 2 + width)
    return n * (n + 1) / 2.0 * per_entry + n * (forward + backward)


def network(width, depth, dtype, d, seed=0):
    net = FullyConnected(width, depth=depth, seed=seed, dtype=dtype)
    net.build((None, d))
    return net


def row(name, n, seconds, peak=None, growth=None, note=""):
    memory = "" if peak is None else f"{peak / GIB:>9.2f} {growth / GIB:>9.2f}"
    print(f"{name:<36} {n:>6} {seconds:>9.3f} {memory:>19}  {note}", flush=True)


def gram_norm_parts(args):
    x = data.load_binary_task(n_train=1, n_test=args.n).x_test
    d = x.shape[1]
    net = network(args.width, args.depth, args.dtype, d)
    throughput = matmul_throughput(args.dtype)
    print(f"L={args.depth}, h={args.width}, d={d}, {args.dtype}, block={args.block_size}, "
          f"matmul {throughput / 1e9:.1f} GFLOP/s")
    print(f"{'measurement':<36} {'n':>6} {'time [s]':>9} {'peak GiB':>9} {'growth':>9}  note")

    for size in (64, 65):  # two shapes: the trace generalized to any block size is measured
        drift.gram_norm(net, x[:size], args.block_size)
    norm, fast, peak, growth = measured(lambda: drift.gram_norm(net, x, args.block_size))
    bound = gram_norm_flops(args.n, d, args.width, args.depth) / throughput
    row("fast path ||Theta||", args.n, fast, peak, growth, f"||Theta|| = {norm:.6g}")
    row("lower bound: flops / matmul rate", args.n, bound)

    subset = x[:args.n_generic]
    ntk.gram_generic(net, subset[:ntk.EXAMPLE_BLOCK])  # trace the per-example gradients
    theta, generic, peak, growth = measured(lambda: ntk.gram_generic(net, subset))
    agreement = abs(np.linalg.norm(theta) / drift.gram_norm(net, subset) - 1.0)
    row("generic path ||Theta||", args.n_generic, generic, peak, growth,
        f"differs from the fast path by {agreement:.1e}")
    extrapolated = generic * (args.n / args.n_generic) ** 2
    row("generic path, extrapolated as n^2", args.n, extrapolated)
    print(f"fast vs generic speedup: {extrapolated / fast:10.1f}x   (target >= 50x)")
    print(f"fast vs lower bound:     {fast / bound:10.2f}x   (target <= 2x)")


def drift_part(args):
    x = data.load_binary_task(n_train=1, n_test=args.n_drift).x_test
    initial = network(args.width, args.depth, args.dtype, x.shape[1])
    trained = network(args.width, args.depth, args.dtype, x.shape[1])
    rng = np.random.default_rng(1)
    trained.set_weights([w + 1e-3 * rng.standard_normal(w.shape) for w in initial.get_weights()])
    change, seconds, peak, growth = measured(
        lambda: drift.kernel_drift((trained, initial), x, args.block_size))
    row("drift ||Theta - Theta0||/||Theta0||", args.n_drift, seconds, peak, growth,
        f"drift = {change['drift']:.3g} (target: peak < 8 GiB)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="n=1000, generic on 32 points")
    parser.add_argument("--drift", action="store_true", help="also the drift over n_drift points")
    parser.add_argument("--n", type=int, default=10000)
    parser.add_argument("--n_generic", type=int, default=256)
    parser.add_argument("--n_drift", type=int, default=50000)
    parser.add_argument("--width", type=int, default=1000)
    parser.add_argument("--depth", type=int, default=3)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--block_size", type=int, default=structured.BLOCK_SIZE)
    args = parser.parse_args()
    tf.get_logger().setLevel("ERROR")  # one trace per weight chunk is expected, not a warning
    if args.quick:
        args.n, args.n_generic = 1000, 32
    gram_norm_parts(args)
    if args.drift:
        drift_part(args)


if __name__ == "__main__":
    main()
