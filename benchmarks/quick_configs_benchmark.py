r"""Time each quick config end to end, as a user runs it, against its 20-minute target.

Each config runs as `python -m pipelines.sweep --config=NAME --output_dir=DIR/NAME` (2 Beam
workers, the stage's default) in a fresh directory; the benchmark prints its wall time, its
runs (used and excluded) and the load average before and after, since a busy machine
inflates the time (a time measured under load is an upper bound of the quiet one). One line
per config is appended to DIR/times.jsonl as it finishes, so a long benchmark that is
stopped keeps what it measured; a rerun skips the configs already there.

  python benchmarks/quick_configs_benchmark.py --output_dir=/tmp/quick_times
  python benchmarks/quick_configs_benchmark.py --output_dir=/tmp/quick_times \
      --configs=fig6_quick,table1_fc_mnist_quick --standins

Table 1 quick rows whose data set is not on the machine are skipped, unless --standins:
then they read stand-in files written in their data set's own format from Fashion-MNIST's
images (MNIST and EMNIST letters: the same 28×28 images; CIFAR10: each image padded to
32×32 and repeated over 3 channels), so the time is that of the row's shapes and sizes, on
data that converge like Fashion-MNIST (not like the row's own data set).
"""
import gzip
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time

import numpy as np
import pandas as pd
from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from lazy_feature.run import data  # noqa: E402  pylint: disable=wrong-import-position
from pipelines import configs  # noqa: E402  pylint: disable=wrong-import-position

flags.DEFINE_string("output_dir", None, "Where the sweeps and times.jsonl go.", required=True)
flags.DEFINE_list("configs", None, "The configs to time (default: every quick config).")
flags.DEFINE_boolean("standins", False, "Time the Table 1 rows of absent data sets on "
                     "stand-in files made from Fashion-MNIST.")
FLAGS = flags.FLAGS

TARGET_MINUTES = 20
QUICK = sorted(name for name in configs.CONFIGS if name.endswith("_quick"))


def _idx(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_standins(folder):
    """{dataset: folder} of stand-in files in MNIST's, EMNIST letters' and CIFAR10's formats."""
    fashion = data.DEFAULT_DATA_DIRS["fashion_mnist"]
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        splits[split] = (data.read_idx(os.path.join(fashion, f"{prefix}-images-idx3-ubyte.gz")),
                         data.read_idx(os.path.join(fashion, f"{prefix}-labels-idx1-ubyte.gz")))
    dirs = {name: os.path.join(folder, name) for name in ("mnist", "emnist_letters", "cifar10")}
    for path in dirs.values():
        os.makedirs(path, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = splits[split]
        for name, blob in ((f"{prefix}-images-idx3-ubyte.gz", _idx(images)),
                           (f"{prefix}-labels-idx1-ubyte.gz", _idx(labels))):
            with open(os.path.join(dirs["mnist"], name), "wb") as f:
                f.write(blob)
        # EMNIST stores images transposed and numbers its letters from 1.
        for kind, array in (("images-idx3", images.transpose(0, 2, 1)),
                            ("labels-idx1", labels + 1)):
            with open(os.path.join(dirs["emnist_letters"],
                                   f"emnist-letters-{split}-{kind}-ubyte.gz"), "wb") as f:
                f.write(_idx(array))
    for split, names in (("train", [f"data_batch_{i}" for i in range(1, 6)]),
                         ("test", ["test_batch"])):
        images, labels = splits[split]
        padded = np.pad(images, ((0, 0), (2, 2), (2, 2)))
        rows = np.repeat(padded[:, None], 3, axis=1).reshape(len(images), 3 * 32 * 32)
        for part, name in zip(np.array_split(np.arange(len(images)), len(names)), names):
            with open(os.path.join(dirs["cifar10"], name), "wb") as f:
                pickle.dump({b"data": rows[part], b"labels": labels[part].tolist()}, f)
    return dirs


def _runs(folder):
    """(runs, used) over every results.csv under folder (a Table 1 group has one per row)."""
    total = used = 0
    for parent, _, files in os.walk(folder):
        if "results.csv" in files:
            rows = pd.read_csv(os.path.join(parent, "results.csv"))
            total += len(rows)
            used += int(rows["used"].sum())
    return total, used


def time_config(name, folder, data_dirs):
    """The wall time and runs of `python -m pipelines.sweep --config=name` in folder."""
    command = [sys.executable, "-m", "pipelines.sweep", f"--config={name}",
               f"--output_dir={folder}"]
    if data_dirs:
        command.append("--data_dirs=" + ",".join(f"{k}={v}" for k, v in data_dirs.items()))
    load_before = os.getloadavg()[0]
    start = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    minutes = (time.monotonic() - start) / 60
    runs, used = _runs(folder)
    return dict(config=name, minutes=round(minutes, 2), runs=runs, used=used,
                returncode=result.returncode, load_before=round(load_before, 1),
                load_after=round(os.getloadavg()[0], 1),
                error=result.stderr.strip().splitlines()[-1] if result.returncode else "")


def _dataset(name):
    if name in configs.TABLES:
        return None
    return configs.get(name).base.dataset


def main(argv):
    del argv
    names = FLAGS.configs or QUICK
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    log = os.path.join(FLAGS.output_dir, "times.jsonl")
    done = {}
    if os.path.exists(log):
        with open(log) as f:
            done = {row["config"]: row for row in map(json.loads, f)}
    standins = write_standins(tempfile.mkdtemp(prefix="standins_")) if FLAGS.standins else {}
    print(f"{'config':32s} {'minutes':>8s} {'runs':>5s} {'used':>5s} {'load':>10s}  verdict")
    for name in names:
        if name not in done:
            dataset = _dataset(name)
            dirs = {}
            # A FALLBACK config runs on Fashion-MNIST by itself when its data set is absent.
            if (dataset and name not in configs.FALLBACK
                    and data.missing(dataset) is not None):
                if dataset not in standins:
                    print(f"{name:32s} skipped: {dataset} is not on this machine")
                    continue
                dirs = {dataset: standins[dataset]}
            row = time_config(name, os.path.join(FLAGS.output_dir, name), dirs)
            row["standin"] = bool(dirs)
            with open(log, "a") as f:
                f.write(json.dumps(row) + "\n")
            done[name] = row
        row = done[name]
        verdict = (f"failed: {row['error']}" if row["returncode"] else
                   "within 20 min" if row["minutes"] <= TARGET_MINUTES else "OVER 20 min")
        load = f"{row['load_before']:.1f}-{row['load_after']:.1f}"
        note = " (stand-in data)" if row.get("standin") else ""
        print(f"{name:32s} {row['minutes']:8.2f} {row['runs']:5d} {row['used']:5d} {load:>10s}  "
              f"{verdict}{note}", flush=True)


if __name__ == "__main__":
    app.run(main)
