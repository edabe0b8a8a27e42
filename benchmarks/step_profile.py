r"""Where a run's step time goes, op by op (issue 31, item 3).

A `train` run of the paper's FC net (L = 3, h = 100, Fashion-MNIST) at --sqrt_h_alpha makes
--steps accepted steps twice in one process: the first run traces its steps (the time of
its first call of the in-graph loop, tracing and first execution, is printed), the second is
profiled with TensorFlow's profiler. Its ops run one at a time (TF_NUM_INTEROP_THREADS=1, set
before TensorFlow starts), so their times add up instead of overlapping; the profile is
converted by XProf (`pip install xprof`) and printed as the ops' self time by type, split
into the gradient evaluations (the ops inside the network's evaluation functions) and the
rest of the step (the integrator's vector algebra, the error control, the logs).

  python benchmarks/step_profile.py                                  # the default integrator
  python benchmarks/step_profile.py --integrator=euler --dtype=float64 --steps=150
"""
import argparse
import collections
import glob
import json
import os
import shutil
import sys
import tempfile
import time

os.environ["TF_NUM_INTEROP_THREADS"] = "1"
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # noqa: E402  (after the thread setting and the path)

from lazy_feature.model import stepping  # noqa: E402
from lazy_feature.run import runner  # noqa: E402
from lazy_feature.run.config import TrainConfig  # noqa: E402


def _part(operation):
    """Which part of a run an op's name places it in: the in-graph step loop is `while`, each
    traced step a function call in it, and each gradient evaluation or forward pass of the
    network (`NetworkFlow`'s traced functions) a function call within that one."""
    if not operation.startswith("while/"):
        return "outside the step loop"
    if operation.count("StatefulPartitionedCall") >= 2:
        return "evaluations"
    return "rest of the step"


def _first_call_timed():
    """Time the first call of each in-graph loop `stepping.in_graph_calls` makes."""
    made, seconds = stepping.in_graph_calls, []

    def timed(*args, **kwargs):
        call, calls = made(*args, **kwargs), []

        def first_timed(iterator, pause):
            began = time.perf_counter()
            logs = call(iterator, pause)
            if not calls:
                seconds.append(time.perf_counter() - began)
            calls.append(1)
            return logs
        return first_timed

    stepping.in_graph_calls = timed
    return seconds


def _op_stats(profile_dir):
    try:
        from xprof.convert import raw_to_tool_data  # pylint: disable=import-outside-toplevel
    except ImportError:
        sys.exit("step_profile: error: XProf converts the profile: pip install xprof")
    path = glob.glob(os.path.join(profile_dir, "plugins", "profile", "*", "*.xplane.pb"))[0]
    table = json.loads(raw_to_tool_data.xspace_to_tool_data([path], "framework_op_stats",
                                                            {})[0])
    table = table[0] if isinstance(table, list) else table
    columns = [column["id"] for column in table["cols"]]
    return [dict(zip(columns, (cell["v"] for cell in row["c"]))) for row in table["rows"]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n_train", type=int, default=2000)
    parser.add_argument("--sqrt_h_alpha", type=float, default=1.0)
    parser.add_argument("--integrator", default=TrainConfig.integrator)
    parser.add_argument("--dtype", default=None, help="the run's (default: the policy's)")
    parser.add_argument("--steps", type=int, default=60)
    args = parser.parse_args()
    first_calls = _first_call_timed()
    root = tempfile.mkdtemp()
    for seed in (1, 2):
        config = TrainConfig(n_train=args.n_train, n_test=1, width=100,
                             alpha=args.sqrt_h_alpha / 10.0, init_seed=seed,
                             integrator=args.integrator, dtype=args.dtype,
                             max_steps=args.steps)
        profile_dir = os.path.join(root, "profile")
        if seed == 2:
            tf.profiler.experimental.start(profile_dir)
        metrics = runner.train(config, os.path.join(root, f"run{seed}"))
        if seed == 2:
            tf.profiler.experimental.stop()
    resolved = config.resolved()
    print(f"n = {args.n_train}, h = 100, sqrt(h)*alpha = {args.sqrt_h_alpha:g}: "
          f"{resolved.integrator}, {resolved.dtype}, {resolved.form}; "
          f"{metrics['steps']} steps, {metrics['gradient_evaluations']} evaluations")
    print("first call of each run's step loop (the first traces and executes the first "
          "time): " + ", ".join(f"{seconds:.2f} s" for seconds in first_calls))
    rows = [row for row in _op_stats(profile_dir) if row["type"] != "IDLE"]
    total = sum(row["total_self_time"] for row in rows) / 1e3
    by_part = collections.defaultdict(collections.Counter)
    for row in rows:
        by_part[_part(row["operation"])][row["type"]] += row["total_self_time"] / 1e3
    print(f"ops' self time in the profiled run: {total:.0f} ms")
    for part, types in by_part.items():
        share = sum(types.values())
        print(f"  {part}: {share:.0f} ms ({share / total:.0%}); by op type:")
        for op_type, ms in types.most_common(8):
            print(f"    {op_type:24s} {ms:8.1f} ms  {ms / share:6.1%}")
    shutil.rmtree(root)


if __name__ == "__main__":
    main()
