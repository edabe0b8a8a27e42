"""Wall time of one gradient evaluation in the direct and the difference form (issue 31).

One evaluation of ∇L on the whole training set (`NetworkFlow.evaluate`, forward and backward),
the paper's FC net (L = 3, width h) on n inputs of dimension d on the sphere, each of
direct/float64 (the paper's scheme), direct/float32 and difference/float32 (and
difference/float64), for each activation asked. Best of --repeats rounds of --calls calls,
side by side in one process, after one untimed call that traces the graph.

  python benchmarks/difference_form.py                      # n = 2 000, h = 100, d = 784
  python benchmarks/difference_form.py --n=10000 --activations=softplus
"""
import argparse
import time

import numpy as np
import tensorflow as tf

from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics, NetworkFlow
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import FullyConnected

VARIANTS = (("direct", "float64"), ("direct", "float32"), ("difference", "float32"),
            ("difference", "float64"))


def evaluation_seconds(n, d, width, activation, form, dtype, calls, repeats):
    """The best wall time per call of one gradient evaluation."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, d))
    x *= np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)
    network = FullyConnected(width, activation=activation, difference=form == "difference",
                             dtype=dtype)
    model = AlphaModel(network, 1.0, dynamics=GradientFlowDynamics(GradientFlow()))
    model.start(x, np.sign(x[:, 0]))
    problem = NetworkFlow(model, model._training_set[0])  # pylint: disable=protected-access
    point = [tf.identity(w) for w in network.trainable_weights]
    evaluate = tf.function(problem.evaluate, autograph=False)
    evaluate(point)[0].numpy()
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            outputs = evaluate(point)[0]
        outputs.numpy()
        best = min(best, (time.perf_counter() - start) / calls)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=784)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--activations", default="softplus,relu,tanh,swish")
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"n = {args.n}, d = {args.d}, h = {args.width}, L = 3: ms per gradient evaluation "
          f"(best of {args.repeats} x {args.calls}), and relative to direct/float64")
    for activation in args.activations.split(","):
        base = None
        for form, dtype in VARIANTS:
            seconds = evaluation_seconds(args.n, args.d, args.width, activation, form, dtype,
                                         args.calls, args.repeats)
            base = base or seconds
            print(f"{activation:>9} {form:>10} {dtype:>7} {seconds * 1e3:8.2f} ms  "
                  f"x{seconds / base:.2f}")


if __name__ == "__main__":
    main()
