r"""Gradient evaluations, wall time and fidelity of each integrator of gradient flow (issue 11).

For each √h·α and seed, one network per integrator is trained from the same w0 (`run.train`,
L = 3, binary Fashion-MNIST), and one reference flow (`fidelity.reference_flow`: Euler with
ε_∇/100 and max_dout/10, float64) lands on each integrator's final t, where their test
outputs are compared. Printed per run: gradient evaluations, accepted and rejected steps,
wall time, t at convergence, ‖F − F_ref‖/‖F_ref‖ on the test set and the test error; then
per √h·α the ratios to the paper's Euler scheme (evaluations and wall time; target ≤ 1/3
with a deviation ≤ Euler's). The reference is not timed against anything: it costs about
10-30 Euler runs.

  python benchmarks/flow_benchmark.py              # the issue's spec: n = 2000, 3 seeds
  python benchmarks/flow_benchmark.py --n_train=10000 --sqrt_h_alphas=1e3,1e-2 --seeds=0
  python benchmarks/flow_benchmark.py --n_train=500 --width=64 --seeds=0 --n_test=2000
  python benchmarks/flow_benchmark.py --integrators=euler,bogacki_shampine,rkc \
      --tolerances=1e-4:1e-3,1e-3:1e-2 ...   # each Runge-Kutta method (pairs, rkc) at each
                                             # output:direction tol
"""
import argparse
import collections
import os
import tempfile
import time

import numpy as np

from lazy_feature import artifact, data, fidelity, run
from lazy_feature.config import TrainConfig
from lazy_feature.dynamics import INTEGRATORS


def _floats(text):
    return [float(v) for v in text.split(",")]


def _variants(names, tolerances):
    """(integrator, tolerances or None) for each name: Euler and `default` once, each
    Runge-Kutta pair once per tolerance pair."""
    for name in names:
        for tols in ([None] if name in ("euler", "default") else tolerances):
            yield name, tols


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_test", type=int, default=10000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--sqrt_h_alphas", type=_floats, default=[1e4, 1.0, 1e-2])
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")],
                        default=[0, 1, 2])
    parser.add_argument("--integrators", default=",".join(INTEGRATORS + ("default",)),
                        help="names of dynamics.INTEGRATORS, and `default` for TrainConfig's")
    parser.add_argument("--dtype", default="float64", help="float32, float64 or auto (the "
                        "precision policy's); the reference is always float64")
    parser.add_argument("--tolerances", default=None,
                        help="output_tol:direction_tol pairs, comma-separated: each Runge-Kutta "
                        "integrator runs at each (default: TrainConfig's)")
    args = parser.parse_args()
    tolerances = [None] if args.tolerances is None else [
        tuple(float(v) for v in pair.split(":")) for pair in args.tolerances.split(",")]

    task = data.load_binary_task("fashion_mnist", n_train=args.n_train, n_test=args.n_test,
                                 data_seed=0)
    default = TrainConfig.integrator
    print(f"n = {args.n_train}, h = {args.width}, L = 3, {args.n_test} test points, dtype "
          f"{args.dtype}; default integrator: {default}")
    print(f"{'sqrt_h_alpha':>12} {'seed':>4} {'integrator':>30} {'evals':>7} {'steps':>6} "
          f"{'rejected':>8} {'wall_s':>7} {'t':>10} {'deviation':>9} {'test_err':>8}")
    totals = collections.defaultdict(lambda: np.zeros(3))  # evals, wall, deviation
    for sha in args.sqrt_h_alphas:
        for seed in args.seeds:
            runs = []
            for name, tols in _variants(args.integrators.split(","), tolerances):
                config = TrainConfig(
                    n_train=args.n_train, n_test=args.n_test, width=args.width,
                    alpha=sha / np.sqrt(args.width), init_seed=seed,
                    dtype=None if args.dtype == "auto" else args.dtype,
                    integrator=default if name == "default" else name,
                    **({} if tols is None else dict(output_tol=tols[0], direction_tol=tols[1])))
                if tols is not None:
                    name = f"{name}@{tols[0]:g}/{tols[1]:g}"
                run_dir = tempfile.mkdtemp()
                start = time.perf_counter()
                metrics = run.train(config, run_dir, task=task)
                wall = time.perf_counter() - start
                outputs = np.load(os.path.join(run_dir, artifact.TEST_OUTPUTS))
                runs.append((name, outputs, metrics, wall))
            reference = fidelity.reference_flow(config, task,
                                                times=[m["t"] for _, _, m, _ in runs])
            for name, outputs, metrics, wall in runs:
                result = fidelity.compare(outputs, metrics["t"], metrics["test_error"],
                                          reference)
                totals[sha, name] += (metrics["gradient_evaluations"], wall,
                                      result["output_deviation"])
                print(f"{sha:12.0e} {seed:4d} {name:>30} {metrics['gradient_evaluations']:7d} "
                      f"{metrics['steps']:6d} {metrics['rejected_steps']:8d} {wall:7.1f} "
                      f"{metrics['t']:10.4g} {result['output_deviation']:9.2e} "
                      f"{metrics['test_error']:8.4f}")
            print(f"{sha:12.0e} {seed:4d} {'reference':>30} {reference.gradient_evaluations:7d} "
                  f"{reference.steps:6d} {'':>8} {'':>7} {reference.t:10.4g} {'':>9} "
                  f"{reference.test_error:8.4f}")
    print("\nmeans over seeds, relative to euler: evaluations, wall time; mean deviation")
    for sha in args.sqrt_h_alphas:
        euler = totals[sha, "euler"]
        for name in dict.fromkeys(name for s, name in totals if s == sha):
            value = totals[sha, name]
            print(f"{sha:12.0e} {name:>30} evals x{value[0] / euler[0]:.2f}  wall "
                  f"x{value[1] / euler[1]:.2f}  deviation {value[2] / len(args.seeds):.2e}")


if __name__ == "__main__":
    main()
