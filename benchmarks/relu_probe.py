r"""The probe's flow on plain Keras ReLU models with biases (issue 30, item 1).

A user's model on binary Fashion-MNIST, n = 300, trained as the probe trains it
(F = α[f̂ − f̂0], f̂ = f/σ0, Euler with the jump rule, `integrators.Euler`) at each α; the model
is --model=mlp, the probe's tests' MLP (`tests.probe_models.mlp`: Dense(16, relu), Dense(1),
Glorot), or --model=cnn, the Keras CNN of issue 30 (`issue_cnn`):

  steps     accepted steps, trials and gradient evaluations to convergence, t, wall seconds,
            in the model's float32 (what `pipelines.probe` runs);
  fidelity  with --fidelity: the same model and flow in float64 at ε_∇ = 1e-4 (the default) and at
            --reference_dgrad, and the relative RMS distance of their test outputs at each
            run's own stop (the reference's own distance to the flow at a tenth of its ε_∇ is
            printed too, with --check_reference).

  python benchmarks/relu_probe.py
  python benchmarks/relu_probe.py --alphas=0.1,1 --fidelity
  python benchmarks/relu_probe.py --model=cnn
"""
import argparse
import functools
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402  (after the path: the repository's packages)
import tensorflow as tf  # noqa: E402

from lazy_feature.flow.dynamics import GradientFlow  # noqa: E402
from lazy_feature.probe import alpha_scan  # noqa: E402
from lazy_feature.run import data, runner  # noqa: E402
from tests import probe_models  # noqa: E402
from tests.helpers import relative_distance  # noqa: E402


def issue_cnn(dtype="float32"):
    """The plain Keras CNN issue 30 probed: two strided ReLU convolutions and a ReLU layer."""
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, strides=2, activation="relu", dtype=dtype),
        keras.layers.Conv2D(16, 3, strides=2, activation="relu", dtype=dtype),
        keras.layers.Flatten(dtype=dtype), keras.layers.Dense(32, activation="relu", dtype=dtype),
        keras.layers.Dense(1, dtype=dtype)])


MODELS = {"mlp": probe_models.mlp, "cnn": issue_cnn}


def run(alpha, task, build, max_dgrad, max_steps):
    """(train state at the stop, stop reason, test outputs F, wall seconds) of the probe's
    flow at α."""
    x, y = task.x_train, task.y_train
    user = alpha_scan._network(build, x, None, 0)  # pylint: disable=protected-access
    sigma0 = float(np.sqrt(np.mean(runner.outputs(user, x) ** 2)))
    network, initial = (alpha_scan._network(build, x, None, 0, 1 / sigma0)  # noqa
                        for _ in range(2))
    start = time.monotonic()
    model, row = alpha_scan._train_flow(  # pylint: disable=protected-access
        tf.distribute.get_strategy(), network, initial, alpha, x, y, keras.callbacks.Callback(),
        "soft_hinge", GradientFlow(jumps=True, max_dgrad=max_dgrad), (np.inf, max_steps, np.inf))
    wall = time.monotonic() - start
    outputs = runner.outputs(model, task.x_test.astype(network.compute_dtype))
    return model.train_state(), row["stop_reason"], outputs, wall


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="mlp")
    parser.add_argument("--alphas", default="0.01,0.1,1,10,100")
    parser.add_argument("--n_train", type=int, default=300)
    parser.add_argument("--n_test", type=int, default=1000)
    parser.add_argument("--max_steps", type=int, default=alpha_scan.MAX_STEPS)
    parser.add_argument("--fidelity", action="store_true")
    parser.add_argument("--reference_dgrad", type=float, default=1e-6)
    parser.add_argument("--check_reference", action="store_true")
    args = parser.parse_args()
    tf.config.experimental.enable_op_determinism()
    task = data.load_binary_task("fashion_mnist", n_train=args.n_train, n_test=args.n_test,
                                 data_seed=0).shaped(images=args.model == "cnn")
    build = MODELS[args.model]
    print("alpha | dtype | ε_∇ | stop | steps | trials | evaluations | t | wall s | distance")
    for alpha in (float(a) for a in args.alphas.split(",")):
        state, reason, _, wall = run(alpha, task, build, 1e-4, args.max_steps)
        print(f"{alpha:g} | float32 | 1e-4 | {reason} | {int(state['step'])} | "
              f"{int(state['attempts'])} | {int(state['evaluations'])} | "
              f"{float(state['t']):.4f} | {wall:.1f} | —", flush=True)
        if not args.fidelity:
            continue
        build64 = functools.partial(build, dtype="float64")
        runs = {dgrad: run(alpha, task, build64, dgrad, 50 * args.max_steps)
                for dgrad in ((1e-4, args.reference_dgrad, args.reference_dgrad / 10)
                              if args.check_reference else (1e-4, args.reference_dgrad))}
        reference = runs[args.reference_dgrad][2]
        for dgrad, (state, reason, outputs, wall) in runs.items():
            print(f"{alpha:g} | float64 | {dgrad:g} | {reason} | {int(state['step'])} | "
                  f"{int(state['attempts'])} | {int(state['evaluations'])} | "
                  f"{float(state['t']):.4f} | {wall:.1f} | "
                  f"{relative_distance(outputs, reference):.2e}", flush=True)


if __name__ == "__main__":
    main()
