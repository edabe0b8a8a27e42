r"""Wall time of one gradient-flow step against its floating-point lower bound, and whole runs.

Part 1: for L = 3, n = 10 000 Fashion-MNIST points, h in {100, 300, 1000}, float32 and
float64, and n = 2 000, h = 100 (where per-step overhead shows most), the wall time of one
trial step of `AlphaModel.train_step` (one forward and one backward pass over the full
batch; an accepted step costs exactly one) before and after in-graph stepping: one step per
`fit` call (Keras' loop, x and y sent from the host each step) and many steps per call (one
tf.while_loop, x and y on the device), next to the lower bound flops / (matrix-multiply
throughput measured here, now) and the time of a bare tf.function forward and backward pass
of the same network (TensorFlow's floor for the work). Targets: ≤ 1.3x the bound at
h = 1000 and ≤ 1.5x at h = 100 in float64.
Part 2: n = 2000, h = 100, float64, √h·α in {1e4, 1, 1e-2}: steps, gradient-flow time t,
rejected steps, wall time to convergence and test error (on 10 000 test points).
Part 3: the in-graph step under MirroredStrategy on 2 logical CPU devices against one
device (its overhead: on one host, both replicas share the same cores).

  python benchmarks/train_step_benchmark.py              # all parts
  python benchmarks/train_step_benchmark.py --part=1 --widths=100
  python benchmarks/train_step_benchmark.py --part=3 --repeats=1
"""
import argparse
import math
import tempfile
import time

import numpy as np
import tensorflow as tf

from lazy_feature.flow.registry import EULER
from lazy_feature.run import data
from lazy_feature.run import distribute
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig


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


def time_step(task, width, dtype, attempts, repeats, steps_per_call, strategy=None):
    """Seconds per trial step of train_step on the full training set, after tracing: the
    best and worst of `repeats` timings of `attempts` steps, `steps_per_call` per call.

    On this shared 2-vCPU machine a timing now and then comes out twice as long (both
    vCPUs busy elsewhere), as the spread printed shows.
    """
    # Euler: one forward and one backward pass per trial step, as the bound counts (the
    # default integrator at √h·α ≥ 10 takes several, and runs on one replica only).
    config = TrainConfig(n_train=len(task.x_train), n_test=len(task.x_test), width=width,
                         alpha=1.0, dtype=dtype, integrator=EULER)
    model = runner.build_model(config, task.d, strategy, steps_per_call=steps_per_call)
    model.start(task.x_train, task.y_train)
    dataset = data.full_batch(task.x_train, task.y_train, dtype)

    def steps(count):
        before = int(model.attempts.numpy())
        start = time.perf_counter()
        model.fit(dataset, epochs=1, steps_per_epoch=count, verbose=0, shuffle=False)
        return (time.perf_counter() - start) / (int(model.attempts.numpy()) - before)

    steps(min(2, steps_per_call))  # trace, warm up
    timings = [steps(attempts) for _ in range(repeats)]
    return min(timings), max(timings), model


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


def part1(widths, repeats, depth=3, sizes=(10000, 2000)):
    print(f"Part 1: one gradient-flow step, L={depth}, d=784: one step per call (Keras' loop) "
          "and in-graph (one tf.while_loop per call)")
    print(f"{'dtype':>8} {'n':>6} {'h':>6} {'bound [s]':>10} {'per call [s]':>13} "
          f"{'in-graph [s]':>13} {'worst [s]':>10} {'bare TF [s]':>12} {'per call/bound':>15} "
          f"{'in-graph/bound':>15} {'GFLOP/s mm':>11}")
    tasks = {n: data.load_binary_task(n_train=n, n_test=0) for n in sizes}
    for dtype in ("float32", "float64"):
        throughput = matmul_throughput(dtype)
        for n, width in [(sizes[0], w) for w in widths] + [(sizes[1], 100)]:
            task = tasks[n]
            bound = step_flops(n, task.d, width, depth) / throughput
            attempts = 2 if width >= 1000 else 10 if width >= 300 else 30
            per_call, _, _ = time_step(task, width, dtype, attempts, repeats, 1)
            in_graph, worst, model = time_step(task, width, dtype, attempts, repeats, attempts)
            bare = bare_pass(model, task, dtype, attempts, repeats)
            print(f"{dtype:>8} {n:>6} {width:>6} {bound:>10.4f} {per_call:>13.4f} "
                  f"{in_graph:>13.4f} {worst:>10.4f} {bare:>12.4f} {per_call / bound:>15.2f} "
                  f"{in_graph / bound:>15.2f} {throughput / 1e9:>11.1f}", flush=True)


def part2(max_wall_seconds):
    print("Part 2: n=2000, h=100, float64, to convergence (10 000 test points)")
    print(f"{'sqrt(h)a':>9} {'conv':>5} {'steps':>7} {'t':>10} {'rejected':>9} {'wall [s]':>9} "
          f"{'test err':>9}")
    task = data.load_binary_task(n_train=2000, n_test=10000)
    for sqrt_h_alpha in (1e4, 1.0, 1e-2):
        config = TrainConfig(n_train=2000, n_test=10000, width=100, alpha=sqrt_h_alpha / 10.0,
                             dtype="float64", max_wall_seconds=max_wall_seconds)
        with tempfile.TemporaryDirectory() as out:
            m = runner.train(config, out, task=task)
        print(f"{sqrt_h_alpha:>9.0e} {str(m['converged']):>5} {m['steps']:>7} {m['t']:>10.4g} "
              f"{m['rejected_steps']:>9} {m['wall_seconds']:>9.1f} {m['test_error']:>9.4f}",
              flush=True)


def part3(repeats, sizes=((2000, 100), (10000, 100), (10000, 300))):
    """In-graph step time on one device and under MirroredStrategy on 2 logical CPU devices."""
    mirrored = distribute.make("mirrored", cpu_devices=2)
    print("Part 3: in-graph step, float64, one device against MirroredStrategy on 2 logical "
          "CPU devices (the same 2 cores)")
    print(f"{'n':>6} {'h':>6} {'one device [s]':>15} {'mirrored [s]':>13} {'overhead':>9}")
    for n, width in sizes:
        task = data.load_binary_task(n_train=n, n_test=0)
        attempts = 10 if width >= 300 else 30
        one, _, _ = time_step(task, width, "float64", attempts, repeats, attempts)
        two, _, _ = time_step(task, width, "float64", attempts, repeats, attempts, mirrored)
        print(f"{n:>6} {width:>6} {one:>15.4f} {two:>13.4f} {two / one:>9.2f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", type=int, choices=(0, 1, 2, 3), default=0, help="0: all")
    parser.add_argument("--widths", type=int, nargs="+", default=[100, 300, 1000])
    parser.add_argument("--max_wall_seconds", type=float, default=3600.0)
    parser.add_argument("--repeats", type=int, default=3, help="timings per figure (best kept)")
    args = parser.parse_args()
    if args.part in (0, 3):
        distribute.split_cpu(2)  # before TensorFlow starts; one device stays /cpu:0
    tf.config.experimental.enable_op_determinism()
    if args.part in (0, 1):
        part1(args.widths, args.repeats)
    if args.part in (0, 2):
        part2(args.max_wall_seconds)
    if args.part in (0, 3):
        part3(args.repeats)


if __name__ == "__main__":
    main()
