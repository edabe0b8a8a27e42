r"""The default integrator on one device against MirroredStrategy on N logical CPU devices
(issue 28, item 6): the integrator each records, its steps and gradient evaluations, the test
outputs' largest relative difference, and the overhead of the replicas (the training's own
wall time, `metrics.json`, side by side).

Each run is `python -m pipelines.train` in its own process (the CPU is split before
TensorFlow starts). On a machine whose cores the logical devices share, the ratio measures
what the cross-replica structure costs (a strategy.run, a reduction and a gather per
evaluation), not a speed-up.

  python benchmarks/replicas_benchmark.py        # n = 400, h = 64, √h·α = 1 and 1e4
  python benchmarks/replicas_benchmark.py --n_train=2000 --width=100
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _train(args, sqrt_h_alpha, output_dir, replicas):
    flags = [f"--n_train={args.n_train}", f"--n_test={args.n_test}", f"--width={args.width}",
             f"--sqrt_h_alpha={sqrt_h_alpha}", "--dtype=float64", f"--output_dir={output_dir}"]
    if replicas > 1:
        flags += ["--strategy=mirrored", f"--cpu_devices={replicas}"]
    subprocess.run([sys.executable, "-m", "pipelines.train"] + flags, cwd=ROOT, check=True,
                   capture_output=True)
    with open(os.path.join(output_dir, "metrics.json")) as f:
        metrics = json.load(f)
    return metrics, np.load(os.path.join(output_dir, "test_outputs.npy"))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=400)
    parser.add_argument("--n_test", type=int, default=1000)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--sqrt_h_alphas", default="1,1e4")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(f"n = {args.n_train}, h = {args.width}, float64; 1 device against {args.replicas} "
          f"replicas (load average {os.getloadavg()[0]:.2f})")
    print("| √h·α | integrator | steps | evaluations | max rel. difference | wall one | "
          "wall replicas | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for level in args.sqrt_h_alphas.split(","):
            walls = {1: [], args.replicas: []}
            for repeat in range(args.repeats):  # alternating, side by side
                runs = {}
                for replicas in walls:
                    runs[replicas] = _train(args, level, os.path.join(
                        tmp, f"{level}_{replicas}_{repeat}"), replicas)
                    walls[replicas].append(runs[replicas][0]["wall_seconds"])
            (one, f_one), (many, f_many) = runs[1], runs[args.replicas]
            same = [one[k] == many[k] for k in ("integrator", "steps", "gradient_evaluations")]
            difference = np.abs(f_one - f_many).max() / np.abs(f_one).max()
            wall_one, wall_many = np.median(walls[1]), np.median(walls[args.replicas])
            print(f"| {level} | {one['integrator']}{'' if same[0] else ' / ' + many['integrator']}"
                  f" | {one['steps']}{'' if same[1] else ' / ' + str(many['steps'])}"
                  f" | {one['gradient_evaluations']}"
                  f"{'' if same[2] else ' / ' + str(many['gradient_evaluations'])}"
                  f" | {difference:.1e} | {wall_one:.1f} s | {wall_many:.1f} s"
                  f" | {wall_many / wall_one:.2f} |")


if __name__ == "__main__":
    main()
