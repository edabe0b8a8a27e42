r"""Wall time of one gradient-flow step against its floating-point lower bound, and whole runs.

Part 1: for L = 3, n = 10 000 Fashion-MNIST points, h in {100, 300, 1000}, float32 and
float64, the wall time of one trial step of `AlphaModel.train_step` (one forward and one
backward pass over the full batch; an accepted step costs exactly one) next to the lower
bound flops / (matrix-multiply throughput measured here, now), and the time of a bare
tf.function forward and backward pass of the same network (TensorFlow's floor for the work).
Targets: within 1.5x of the bound at h = 1000 and 2x at h = 100.
Part 2: n = 2000, h = 100, float64, √h·α in {1e4, 1, 1e-2}: steps, gradient-flow time t,
rejected steps, wall time to convergence and test error (on 10 000 test points).

  python benchmarks/train_step_benchmark.py              # both parts
  python benchmarks/train_step_benchmark.py --part=1 --widths=100
"""
import argparse
import math
import tempfile
import time

import numpy as np
import tensorflow as tf

from lazy_feature import data, run
from lazy_feature.config import TrainConfig


def matmul_throughput(dtype, size=2048, repeats=10):
    """Measured flop/s of a size x size matrix product in `dtype` (best of `repeats`)."""
    rng = np.random.default_rng(0)
    a = tf.constant(rng.standard_normal((size, size)), dtype=dtype)
    b = tf.constant(rng.standard_normal((size, size)), dtype=dtype)
    product = tf.function(lambda: tf.reduce_sum(tf.matmul(a, b)))
    product().numpy()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        product().numpy()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def step_flops(n, d, width, depth):
    """Flops of one forward and one backward pass of the FC net on n points.

    Forward: 2n(d h + (L−1) h² + h). Backward: twice that (gradients with respect to the
    weights and to the layer inputs), less the input gradient of the first layer.
    """
    forward = 2.0 * n * (d * width + (depth - 1) * width**2 + width)
    return 3.0 * forward - 2.0 * n * d * width


def time_step(task, width, dtype, attempts, repeats=3):
    """Seconds per trial step of train_step on the full training set, after tracing.

    The best of `repeats` timings of `attempts` steps: on this 2-vCPU machine a timing now
    and then comes out twice as long (both vCPUs busy elsewhere), as the spread printed shows.
    """
    config = TrainConfig(n_train=len(task.x_train), n_test=len(task.x_test), width=width,
                         alpha=1.0, dtype=dtype)
    model = run.build_model(config, task.d)
    model.start(task.x_train, task.y_train)
    dataset = data.full_batch(task.x_train, task.y_train, dtype)
    model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)  # trace, warm up
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=attempts, verbose=0, shuffle=False)
        timings.append((time.perf_counter() - start) / attempts)
    return min(timings), max(timings), bare_pass(model, task, dtype, attempts, repeats)


def bare_pass(model, task, dtype, attempts, repeats):
    """Seconds of a bare tf.function forward and backward pass of the same network and loss.

    TensorFlow's own floor for the step's work: what the step adds to it is the integrator.
    """
    x = tf.constant(task.x_train, dtype)
    y = tf.constant(task.y_train, dtype)
    weights = model.network.trainable_weights

    @tf.function
    def forward_backward():
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model.per_pattern_loss(model.network(x) * y, 1.0))
        return tape.gradient(loss, weights)

    forward_backward()
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(attempts):
            grads = forward_backward()
        grads[0].numpy()
        best = min(best, (time.perf_counter() - start) / attempts)
    return best


def part1(widths, depth=3, n=10000):
    task = data.load_binary_task(n_train=n, n_test=0)
    print(f"Part 1: one gradient-flow step, L={depth}, n={n}, d={task.d}")
    print(f"{'dtype':>8} {'h':>6} {'step [s]':>10} {'worst [s]':>10} {'bare TF [s]':>12} "
          f"{'bound [s]':>10} {'ratio':>7} {'bare/bound':>11} {'GFLOP/s mm':>11}")
    for dtype in ("float32", "float64"):
        throughput = matmul_throughput(dtype)
        for width in widths:
            flops = step_flops(n, task.d, width, depth)
            seconds, worst, bare = time_step(task, width, dtype,
                                             attempts=5 if width >= 1000 else 20)
            bound = flops / throughput
            print(f"{dtype:>8} {width:>6} {seconds:>10.4f} {worst:>10.4f} {bare:>12.4f} "
                  f"{bound:>10.4f} {seconds / bound:>7.2f} {bare / bound:>11.2f} "
                  f"{throughput / 1e9:>11.1f}", flush=True)


def part2(max_wall_seconds):
    print("Part 2: n=2000, h=100, float64, to convergence (10 000 test points)")
    print(f"{'sqrt(h)a':>9} {'conv':>5} {'steps':>7} {'t':>10} {'rejected':>9} {'wall [s]':>9} "
          f"{'test err':>9}")
    task = data.load_binary_task(n_train=2000, n_test=10000)
    for sqrt_h_alpha in (1e4, 1.0, 1e-2):
        config = TrainConfig(n_train=2000, n_test=10000, width=100, alpha=sqrt_h_alpha / 10.0,
                             dtype="float64", max_wall_seconds=max_wall_seconds)
        with tempfile.TemporaryDirectory() as out:
            m = run.train(config, out, task=task)
        print(f"{sqrt_h_alpha:>9.0e} {str(m['converged']):>5} {m['steps']:>7} {m['t']:>10.4g} "
              f"{m['rejected_steps']:>9} {m['wall_seconds']:>9.1f} {m['test_error']:>9.4f}",
              flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=int, choices=(0, 1, 2), default=0, help="0: both")
    parser.add_argument("--widths", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--max_wall_seconds", type=float, default=3600.0)
    args = parser.parse_args()
    tf.config.experimental.enable_op_determinism()
    if args.part in (0, 1):
        part1(args.widths)
    if args.part in (0, 2):
        part2(args.max_wall_seconds)


if __name__ == "__main__":
    main()
