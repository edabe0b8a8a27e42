r"""The paper's CNN (Section 7, `architectures.ConvNet`): a gradient-flow step, its NTK and an
Adam epoch, each against its floating-point lower bound.

Part 1: n = 10 000 Fashion-MNIST images (28×28×1), h in {16, 64}, float32 and float64: the
wall time of one trial step of `AlphaModel.train_step` (one forward and one backward pass over
the full batch) next to the bound flops / (matrix-multiply throughput measured here, now).
Part 2: Θ(x, x) of the CNN on 1000 points by the structured path (`ntk.gram`, per-example
convolution gradients from the patches), against its bound, and the generic path
(`ntk.gram_generic`, per-example Jacobians by tf.vectorized_map, which loops over examples
for a convolution's weight gradient) on a subset, extrapolated to n by the number of
per-example Jacobians it computes there (`generic_jacobians`), which dominate its time.
Part 3: one epoch of Adam (`lazy_feature.flow.adam`, Table 1) at batch size 32 on the n images of
part 1: n // 32 steps of one forward and one backward pass on 32 images each, then the
convergence check and the records' refresh (a forward pass over the n images each), all in
one call of the train function as in a run, against the bound of those flops.

  python benchmarks/cnn_benchmark.py                       # all parts
  python benchmarks/cnn_benchmark.py --part=1 --widths 16 --n=2000
  python benchmarks/cnn_benchmark.py --part=3 --widths 16  # the Adam epoch alone
"""
import argparse
import math
import time

import numpy as np
import tensorflow as tf

from lazy_feature.flow.registry import EULER
from lazy_feature.model import architectures
from lazy_feature.run import data
from lazy_feature.kernel import ntk
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from train_step_benchmark import matmul_throughput  # the sibling benchmark's measurement


def conv_macs(network, image_shape):
    """Multiply-adds of one forward pass of `network` on one image, layer by layer
    (a convolution: output pixels × fan_in × c_out; the readout: h)."""
    inputs, preacts = network.layer_signals(np.zeros((1, *image_shape)))
    return [int(np.prod(pre.shape[1:-1])) * layer.fan_in * int(pre.shape[-1])
            for layer, pre in zip(network.ntk_layers, preacts)]


def step_flops(macs, n):
    """Flops of one forward and one backward pass on n images: forward 2·Σ macs, backward
    twice that (weight and input gradients) less the first layer's input gradient."""
    return n * (3.0 * 2 * sum(macs) - 2.0 * macs[0])


def cnn_points(widths, dtypes, image_shape):
    """(dtype, h, the matmul rate in that dtype, the CNN's multiply-adds by layer) per point."""
    for dtype in dtypes:
        throughput = matmul_throughput(dtype)
        for width in widths:
            macs = conv_macs(architectures.ConvNet(width, dtype=dtype), image_shape)
            yield dtype, width, throughput, macs


def time_step(task, width, dtype, attempts, repeats):
    """(best, worst) seconds per trial step of train_step on the full set, after tracing."""
    # Euler: one forward and one backward pass per trial step, as the bound counts.
    config = TrainConfig(architecture="cnn", n_train=len(task.x_train),
                         n_test=len(task.x_test), width=width, alpha=1.0, dtype=dtype,
                         integrator=EULER)
    model = runner.build_model(config, task.x_train.shape[1:])
    model.start(task.x_train, task.y_train)
    dataset = data.full_batch(task.x_train, task.y_train, dtype)
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)  # trace
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=attempts, verbose=0, shuffle=False)
        timings.append((time.perf_counter() - start) / attempts)
    return min(timings), max(timings)


def part1(widths, dtypes, n, repeats):
    task = data.load_binary_task(n_train=n, n_test=0).shaped(images=True)
    print(f"Part 1: one gradient-flow step of the CNN, n={n}, images {task.image_shape}")
    print(f"{'dtype':>8} {'h':>4} {'step [s]':>9} {'worst [s]':>10} {'bound [s]':>10} "
          f"{'ratio':>6} {'GFLOP/step':>11} {'GFLOP/s mm':>11}")
    for dtype, width, throughput, macs in cnn_points(widths, dtypes, task.image_shape):
        flops = step_flops(macs, n)
        best, worst = time_step(task, width, dtype, attempts=1 if width >= 64 else 3,
                                repeats=repeats)
        bound = flops / throughput
        print(f"{dtype:>8} {width:>4} {best:>9.3f} {worst:>10.3f} {bound:>10.3f} "
              f"{best / bound:>6.2f} {flops / 1e9:>11.1f} {throughput / 1e9:>11.1f}",
              flush=True)


def ntk_flops(macs, params, n):
    """A lower bound on the flops of Θ(x, x) on n points: each example's signals once (a
    forward and a backward pass, then each convolution's J from its patches, 2·macs per
    layer) and the products J1 J2ᵀ of the n(n + 1)/2 pairs on and above the diagonal
    (2·params each). Column blocks' signals are recomputed: the ratio includes that."""
    per_example = 3.0 * 2 * sum(macs) + 2.0 * sum(macs[:-1])
    return n * per_example + n * (n + 1) * params


def generic_jacobians(n, block=ntk.EXAMPLE_BLOCK):
    """Per-example Jacobians `ntk.gram_generic` computes for Θ(x, x) on n points: each row
    block once, and the column block of every tile above the diagonal."""
    blocks = math.ceil(n / block)
    return min(n, block) * (blocks + blocks * (blocks - 1) / 2)


def part2(widths, dtype, n, generic_n):
    x = data.load_binary_task(n_train=n, n_test=0).shaped(images=True).x_train
    throughput = matmul_throughput(dtype)
    print(f"Part 2: Θ(x, x) of the CNN on n={n} images, {dtype}; generic path on {generic_n} "
          f"points, extrapolated by its Jacobian count")
    print(f"{'h':>4} {'params':>8} {'structured [s]':>15} {'bound [s]':>10} "
          f"{'ratio':>6} {'generic [s]':>12} {'generic at n [s]':>17} {'speed-up':>9}")
    for width in widths:
        network = architectures.ConvNet(width, seed=0, dtype=dtype)
        macs = conv_macs(network, x.shape[1:])
        params = sum(int(np.prod(w.shape)) for w in network.weights)
        ntk.gram(network, x[:64])  # trace
        start = time.perf_counter()
        ntk.gram(network, x)
        structured = time.perf_counter() - start
        bound = ntk_flops(macs, params, n) / throughput
        ntk.gram_generic(network, x[:generic_n])  # trace
        start = time.perf_counter()
        ntk.gram_generic(network, x[:generic_n])
        generic = time.perf_counter() - start
        at_n = generic / generic_jacobians(generic_n) * generic_jacobians(n)
        print(f"{width:>4} {params:>8} {structured:>15.2f} {bound:>10.2f} "
              f"{structured / bound:>6.2f} {generic:>12.2f} {at_n:>17.1f} "
              f"{at_n / structured:>9.1f}", flush=True)


def time_adam_epoch(task, width, dtype, batch_size):
    """Seconds of one Adam epoch in one call of the train function, after tracing."""
    n = len(task.x_train)
    config = TrainConfig(architecture="cnn", n_train=n, n_test=len(task.x_test), width=width,
                         alpha=1.0, dtype=dtype, dynamics="adam", batch_size=batch_size)
    model = runner.build_model(config, task.x_train.shape[1:])
    model.start(task.x_train, task.y_train)
    dataset = data.full_batch(task.x_train, task.y_train, dtype)
    model.pause_at(step=1)
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)  # trace
    model.pause_at(step=1 + n // batch_size)
    start = time.perf_counter()
    model.fit(dataset, epochs=1, steps_per_epoch=1, verbose=0, shuffle=False)
    assert int(model.step_count.numpy()) == 1 + n // batch_size
    return time.perf_counter() - start


def part3(widths, dtypes, n, batch_size=32):
    task = data.load_binary_task(n_train=n, n_test=0).shaped(images=True)
    steps = n // batch_size
    print(f"Part 3: one Adam epoch of the CNN, n={n}, batch {batch_size} ({steps} steps), "
          f"images {task.image_shape}")
    print(f"{'dtype':>8} {'h':>4} {'epoch [s]':>10} {'step [ms]':>10} {'bound [s]':>10} "
          f"{'ratio':>6} {'GFLOP/epoch':>12}")
    for dtype, width, throughput, macs in cnn_points(widths, dtypes, task.image_shape):
        flops = step_flops(macs, steps * batch_size) + 2 * n * 2.0 * sum(macs)
        seconds = time_adam_epoch(task, width, dtype, batch_size)
        bound = flops / throughput
        print(f"{dtype:>8} {width:>4} {seconds:>10.2f} {1e3 * seconds / steps:>10.2f} "
              f"{bound:>10.2f} {seconds / bound:>6.2f} {flops / 1e9:>12.1f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=int, choices=(0, 1, 2, 3), default=0,
                        help="0: all; 3: the Adam epoch")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    parser.add_argument("--n", type=int, default=10000, help="parts 1 and 3's training points")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--ntk_n", type=int, default=1000)
    parser.add_argument("--generic_n", type=int, default=32)
    args = parser.parse_args()
    tf.config.experimental.enable_op_determinism()
    if args.part in (0, 1):
        part1(args.widths, args.dtypes, args.n, args.repeats)
    if args.part in (0, 2):
        part2(args.widths, "float32", args.ntk_n, args.generic_n)
    if args.part in (0, 3):
        part3(args.widths, args.dtypes, args.n)


if __name__ == "__main__":
    main()
