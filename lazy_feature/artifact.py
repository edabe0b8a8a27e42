"""The run artifact on disk: file names and atomic writes.

A run directory holds
  config.json        every setting (TrainConfig), the run id and the library version;
  dynamics.jsonl     the log-spaced dynamics records (callbacks.RECORD_KEYS);
  train.log          the same records as status lines, for a person (appended on resume);
  test_outputs.npy   F = α[f(w, x) − f(w0, x)] on every test point, in test-set order;
  test_labels.npy    the ±1 test labels;
  weights.weights.h5 the Keras weights of the AlphaModel: w, w0 and the integrator's state;
  events/<name>/     TensorBoard event files: the run is one TensorBoard run named after α, h,
                     the init seed and the run id (callbacks.tensorboard_run_name);
  metrics.json       the summary, written last: its presence means the run is complete.
The `ntk_eval` stage adds ntk.json (kernel norms and drift, frozen-kernel results),
frozen_{init,final}_test_outputs.npy and, on request, gram_{init,final}_{train,test}.npy;
`fidelity.check_run` adds fidelity.json (the run against its reference flow, Appendix G).
While a run is in flight it also holds checkpoint.weights.h5, checkpoint.json and
dynamics.jsonl.partial; every final file is written under a temporary name and renamed,
so a killed run leaves no file that looks complete.
"""
import contextlib
import json
import os
import shutil
import tempfile

import numpy as np

CONFIG = "config.json"
METRICS = "metrics.json"
DYNAMICS = "dynamics.jsonl"
TRAIN_LOG = "train.log"
TEST_OUTPUTS = "test_outputs.npy"
TEST_LABELS = "test_labels.npy"
WEIGHTS = "weights.weights.h5"
EVENTS = "events"
NTK = "ntk.json"
FIDELITY = "fidelity.json"
CHECKPOINT = "checkpoint.weights.h5"
CHECKPOINT_STATE = "checkpoint.json"


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside `path`; rename it onto `path` only on success."""
    directory, name = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp's 0600 would make shared results unreadable
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_json(path, obj):
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def read_json_line(line):
    """One record of dynamics.jsonl."""
    return json.loads(line)


def write_csv(path, table):
    """A pandas DataFrame as CSV without its index, atomically."""
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def write_npy(path, array):
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, array)


def reopen(run_dir, config_record):
    """Turn a complete run back into an interrupted one that resumes from its final state.

    Its final weights (w, w0 and the integrator's state) become the checkpoint, its dynamics
    log the partial log, config.json becomes `config_record`; then metrics.json goes (from
    here on the run resumes) and so does everything derived from the final state.
    """
    metrics = read_json(os.path.join(run_dir, METRICS))
    with atomic_path(os.path.join(run_dir, CHECKPOINT)) as tmp:
        shutil.copyfile(os.path.join(run_dir, WEIGHTS), tmp)
    write_json(os.path.join(run_dir, CHECKPOINT_STATE),
               {"step": metrics["steps"], "wall_seconds": metrics["wall_seconds"]})
    with atomic_path(os.path.join(run_dir, DYNAMICS + ".partial")) as tmp:
        shutil.copyfile(os.path.join(run_dir, DYNAMICS), tmp)
    write_json(os.path.join(run_dir, CONFIG), config_record)
    os.remove(os.path.join(run_dir, METRICS))
    derived = [WEIGHTS, DYNAMICS, TEST_OUTPUTS, NTK] + [
        name for name in os.listdir(run_dir)
        if name.startswith(("frozen_", "gram_")) and name.endswith(".npy")]
    for name in derived:
        if os.path.exists(os.path.join(run_dir, name)):
            os.remove(os.path.join(run_dir, name))


def is_complete(run_dir):
    """A run is complete once its metrics.json exists (it is written last)."""
    return os.path.exists(os.path.join(run_dir, METRICS))


def save_weights(model, path):
    """model.save_weights(path) atomically (Keras needs the name to end in .weights.h5)."""
    tmp = path[: -len(".weights.h5")] + ".tmp.weights.h5"
    try:
        model.save_weights(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
