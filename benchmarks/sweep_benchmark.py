r"""Wall time of the quick study (pipelines.configs `quick`) and runs per hour, Beam vs loop.

  1. The whole quick study on Apache Beam's DirectRunner (2 worker processes), then its
     report: wall time, runs per hour, and the report's summary table.
  2. The same subset of the grid (one seed, the two smaller widths) through Beam and
     through the in-process loop, each in a fresh directory: runs per hour of each.

  python benchmarks/sweep_benchmark.py --output_dir=/tmp/sweep_benchmark   # ~40 min, 2 cores
"""
import argparse
import dataclasses
import logging
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from lazy_feature.study import report  # noqa: E402
from lazy_feature.study import sweep  # noqa: E402
from pipelines import configs  # noqa: E402


def timed_sweep(grid, output_dir, runner, workers):
    """(wall seconds, runs, ensembles) of a sweep run from scratch in output_dir."""
    shutil.rmtree(output_dir, ignore_errors=True)
    start = time.perf_counter()
    runs, ensembles = sweep.run_sweep(grid, output_dir, runner=runner, workers=workers)
    return time.perf_counter() - start, runs, ensembles


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", default="/tmp/sweep_benchmark")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--skip_full", action="store_true", help="only part 2")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    quick = configs.get("quick")
    lines = []
    if not args.skip_full:
        full = os.path.join(args.output_dir, "quick")
        wall, runs, ensembles = timed_sweep(quick, full, "beam", args.workers)
        summary = report.write_report(runs, ensembles, report.default_dir(full))[-1]
        lines.append(f"quick study, Beam {args.workers} workers: {len(runs)} runs in "
                     f"{wall / 60:.1f} min = {3600 * len(runs) / wall:.0f} runs/hour "
                     f"({int(runs['converged'].sum())} converged); report: {summary}")
    subset = dataclasses.replace(quick, widths=quick.widths[:2], seeds=quick.seeds[:1])
    for runner in ("beam", "inprocess"):
        wall, runs, _ = timed_sweep(subset, os.path.join(args.output_dir, runner), runner,
                                    args.workers)
        lines.append(f"subset ({len(runs)} runs), {runner:9s}: {wall:.0f} s = "
                     f"{3600 * len(runs) / wall:.0f} runs/hour")
    print("\n".join(lines))
    if not args.skip_full:
        with open(summary, encoding="utf-8") as f:
            print(f.read())


if __name__ == "__main__":
    main()
