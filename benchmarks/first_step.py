r"""How long a `train` process takes to start (issue 31, item 4): the baseline to beat.

Times, each the median of --repeats fresh processes on real Fashion-MNIST:
  import      `python -c "import lazy_feature"` (TensorFlow and Keras included);
  helpshort   `python -m pipelines.train --helpshort`;
  first step  from starting `python -m pipelines.train` to its first accepted step, i.e. to
              the moment the status line of step 1 appears in the run's train.log (polled
              every 20 ms);
  whole run   the same process to its exit, stopped by --max_steps=1 (writing the artifact).

  python benchmarks/first_step.py                    # the paper's n = 10 000, 50 000 test points
  python benchmarks/first_step.py --n_train=2000 --n_test=5000 --repeats=5
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLL_SECONDS = 0.02


def _timed(command, check=True):
    """Seconds `command` (run in the repository root) takes to exit; it must succeed if
    `check` (absl's --helpshort exits with status 1)."""
    start = time.monotonic()
    subprocess.run(command, cwd=ROOT, check=check, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return time.monotonic() - start


def _first_step(args, output_dir):
    """(seconds to the first accepted step, seconds to exit) of one `train` process."""
    log = os.path.join(output_dir, "train.log")
    command = [sys.executable, "-m", "pipelines.train", f"--n_train={args.n_train}",
               f"--n_test={args.n_test}", f"--width={args.width}",
               f"--sqrt_h_alpha={args.sqrt_h_alpha}", "--max_steps=1",
               f"--output_dir={output_dir}"]
    start = time.monotonic()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    first = None
    while process.poll() is None:
        if first is None and os.path.exists(log):
            with open(log) as f:
                if " step 1 " in f.read():
                    first = time.monotonic() - start
        time.sleep(POLL_SECONDS)
    if process.returncode != 0:
        raise SystemExit(f"first_step: {' '.join(command)} exited {process.returncode}")
    whole = time.monotonic() - start
    return (whole if first is None else first), whole


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n_train", type=int, default=10000)
    parser.add_argument("--n_test", type=int, default=50000)
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--sqrt_h_alpha", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    imports = [_timed([sys.executable, "-c", "import lazy_feature"])
               for _ in range(args.repeats)]
    helps = [_timed([sys.executable, "-m", "pipelines.train", "--helpshort"], check=False)
             for _ in range(args.repeats)]
    runs = []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            runs.append(_first_step(args, os.path.join(tmp, f"run{repeat}")))
    print(f"n = {args.n_train}, {args.n_test} test points, h = {args.width}, "
          f"√h·α = {args.sqrt_h_alpha:g}; median of {args.repeats} processes, load "
          f"{os.getloadavg()[0]:.2f}")
    for name, values in (("import lazy_feature", imports), ("train --helpshort", helps),
                         ("train: start to first step", [r[0] for r in runs]),
                         ("train --max_steps=1: start to exit", [r[1] for r in runs])):
        print(f"  {name:<36} {statistics.median(values):6.2f} s  "
              f"({', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
