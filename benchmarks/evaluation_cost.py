r"""What one gradient evaluation costs under each execution setting (issue 31, item 3).

Each setting runs in fresh processes, alternated, --repeats times: a `train` model of the
paper's FC net (L = 3, h = 100, Fashion-MNIST) at √h·α = 1 makes --steps accepted steps, and
the wall time of its flow (tracing included) is divided by its gradient evaluations. The
settings are the run's own (`default`), XLA compilation of the step (`jit`, the model
compiled with jit_compile=True), one inter-op thread (`inter_op_1`) and TensorFlow's oneDNN
kernels off (`no_onednn`, TF_ENABLE_ONEDNN_OPTS=0), each for Euler in float64 (the paper's
scheme) and for bogacki_shampine_etdrk4 in float32.

  python benchmarks/evaluation_cost.py                      # n = 2 000, 3 repeats
  python benchmarks/evaluation_cost.py --n_train=10000 --steps=300
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = {"default": {}, "jit": {}, "inter_op_1": {},
            "no_onednn": {"TF_ENABLE_ONEDNN_OPTS": "0"}}
RUNS = (("euler", "float64"), ("bogacki_shampine_etdrk4", "float32"))


def one(args):
    """In a child process: run one setting and print its figures as JSON."""
    # pylint: disable=import-outside-toplevel  (the parent process needs no TensorFlow)
    import numpy as np
    import tensorflow as tf
    sys.path.insert(0, ROOT)
    from lazy_feature.flow import integrators
    from lazy_feature.run import callbacks, data, runner
    from lazy_feature.run.config import TrainConfig
    integrators.as_written()  # as `train` runs
    if args.setting == "inter_op_1":
        tf.config.threading.set_inter_op_parallelism_threads(1)
    config = TrainConfig(n_train=args.n_train, n_test=1, width=100, alpha=1 / 10.0,
                         integrator=args.integrator, dtype=args.dtype)
    task = runner.load_task(config, data.load_binary_task("fashion_mnist", None, args.n_train,
                                                          1, 0))
    model = runner.build_model(config, task.x_train.shape[1:])
    model.compile(steps_per_execution=runner.STEPS_PER_CALL, jit_compile=args.setting == "jit")
    stopping = callbacks.GradientFlowStopping(np.inf, args.steps, np.inf)
    start = time.monotonic()
    runner.fit_flow(model, task.x_train, task.y_train, [stopping])
    wall = time.monotonic() - start
    state = model.train_state()
    print(json.dumps(dict(wall=wall, evaluations=int(state["evaluations"]),
                          steps=int(state["step"]), t=float(state["t"]))))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--setting", choices=SETTINGS, help=argparse.SUPPRESS)
    parser.add_argument("--integrator", help=argparse.SUPPRESS)
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setting:
        return one(args)
    per_evaluation = {}
    for _ in range(args.repeats):
        for integrator, dtype in RUNS:
            for setting, env in SETTINGS.items():
                out = subprocess.run(
                    [sys.executable, __file__, f"--setting={setting}",
                     f"--integrator={integrator}", f"--dtype={dtype}",
                     f"--n_train={args.n_train}", f"--steps={args.steps}"],
                    env=dict(os.environ, **env), cwd=ROOT, check=True, capture_output=True,
                    text=True).stdout
                figures = json.loads(out.strip().splitlines()[-1])
                per_evaluation.setdefault((integrator, dtype, setting), []).append(
                    (1000 * figures["wall"] / figures["evaluations"], figures))
    print(f"n = {args.n_train}, {args.steps} steps, "
          f"load average {os.getloadavg()[0]:.2f} at the end")
    print("integrator | dtype | setting | ms per evaluation (median) | each | evaluations | t")
    for (integrator, dtype, setting), runs in per_evaluation.items():
        ms = [m for m, _ in runs]
        last = runs[-1][1]
        print(f"{integrator} | {dtype} | {setting} | {statistics.median(ms):.2f} | "
              f"{', '.join(f'{m:.2f}' for m in ms)} | {last['evaluations']} | {last['t']:.6g}")
    return None


if __name__ == "__main__":
    main()
