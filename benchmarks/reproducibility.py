r"""Whether the same command gives the same run, byte for byte (issue 28, item 5), and what
that costs.

Trains one network by `python -m pipelines.train` (its own process each time) twice
uninterrupted, once killed twice with SIGKILL at random moments and rerun to its end, and
compares `test_outputs.npy`, `metrics.json` and `dynamics.jsonl` with the first run's, wall
times aside. Then times the run with Grappler, TensorFlow's graph optimizer, left on (what
`integrators.as_written` turns off) against the run as it is, side by side, and says whether
two such runs agree.

  python benchmarks/reproducibility.py      # n = 2 000, h = 100, √h·α = 1, float64, seed 3
  python benchmarks/reproducibility.py --integrator=euler --sqrt_h_alpha=1e-2
"""
import argparse
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The run with Grappler left on: `as_written` made a no-op before it is called.
OPTIMIZED = ("import lazy_feature.flow.network_flow as n; n.as_written = lambda: None; "
             "from pipelines import common, train; common.main('train', train.main)")


def _command(args, output_dir, optimized=False):
    flags = [f"--n_train={args.n_train}", f"--n_test={args.n_test}", f"--width={args.width}",
             f"--sqrt_h_alpha={args.sqrt_h_alpha}", "--dtype=float64",
             f"--init_seed={args.init_seed}", f"--integrator={args.integrator}",
             "--checkpoint_seconds=1", f"--output_dir={output_dir}"]
    start = [sys.executable, "-c", OPTIMIZED] if optimized else [
        sys.executable, "-m", "pipelines.train"]
    return start + flags


def _run(args, output_dir, optimized=False):
    subprocess.run(_command(args, output_dir, optimized), cwd=ROOT, check=True,
                   capture_output=True)


def _training_seconds(run_dir):
    with open(os.path.join(run_dir, "metrics.json")) as f:
        return json.load(f)["wall_seconds"]


def _killed(args, output_dir, kills, rng):
    """Start the run, SIGKILL it after a random time `kills` times, then run it to its end."""
    for _ in range(kills):
        process = subprocess.Popen(_command(args, output_dir), cwd=ROOT,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(args.kill_after / 2, args.kill_after))
        process.send_signal(signal.SIGKILL)
        process.wait()
    _run(args, output_dir)


def _without_wall_times(record):
    return {k: v for k, v in record.items() if "wall" not in k and "seconds" not in k}


def _fingerprint(run_dir):
    """SHA-256 of test_outputs.npy, and metrics.json and dynamics.jsonl without wall times."""
    with open(os.path.join(run_dir, "test_outputs.npy"), "rb") as f:
        outputs = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = _without_wall_times(json.load(f))
    metrics.pop("files", None)  # its checksum of dynamics.jsonl holds wall times
    with open(os.path.join(run_dir, "dynamics.jsonl")) as f:
        records = [_without_wall_times(json.loads(line)) for line in f]
    return dict(test_outputs=outputs, metrics=metrics, dynamics=records)


def _same(a, b):
    return {key: a[key] == b[key] for key in a}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--n_test", type=int, default=2000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--sqrt_h_alpha", default="1")
    parser.add_argument("--init_seed", type=int, default=3)
    parser.add_argument("--integrator", default="auto")
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--kill_after", type=float, default=12.0,
                        help="seconds: each kill comes between half of this and this")
    args = parser.parse_args()
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        seconds = {}
        for name in ("first", "second"):
            _run(args, os.path.join(tmp, name))
        _killed(args, os.path.join(tmp, "killed"), args.kills, rng)
        # Timed side by side, alternating, three of each: the training's own wall time.
        for repeat in range(3):
            for name, optimized in (("as_written", False), ("optimized", True)):
                _run(args, os.path.join(tmp, f"{name}_{repeat}"), optimized=optimized)
                seconds.setdefault(name, []).append(_training_seconds(
                    os.path.join(tmp, f"{name}_{repeat}")))
        first = _fingerprint(os.path.join(tmp, "first"))
        print(f"run: {' '.join(_command(args, 'DIR')[1:])}")
        print(f"steps {first['metrics'].get('steps')}, gradient evaluations "
              f"{first['metrics'].get('gradient_evaluations')}")
        for name in ("second", "killed"):
            print(f"{name} run identical to the first: "
                  f"{_same(first, _fingerprint(os.path.join(tmp, name)))}")
        optimized = [_fingerprint(os.path.join(tmp, f"optimized_{i}")) for i in (0, 1)]
        print(f"Grappler on, two runs identical: {_same(optimized[0], optimized[1])}")
        written, on = (float(np.median(seconds[k])) for k in ("as_written", "optimized"))
        print(f"training wall time (median of 3, metrics.json), as written: {written:.1f} s; "
              f"Grappler on: {on:.1f} s; ratio {written / on:.2f} (load average "
              f"{os.getloadavg()[0]:.2f})")

if __name__ == "__main__":
    main()
