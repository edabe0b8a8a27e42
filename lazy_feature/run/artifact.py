"""The run artifact: its files, its storage, its checkpoint. One module owns the on-disk format.

A run directory holds
  config.json        every setting (TrainConfig), the run id and the library version;
  dynamics.jsonl     the log-spaced dynamics records (callbacks.RECORD_KEYS);
  train.log          the same records as status lines, for a person (appended on resume);
  test_outputs.npy   F = α[f(w, x) − f(w0, x)] on every test point, in test-set order;
  test_labels.npy    the ±1 test labels;
  checkpoint/        one tf.train.Checkpoint (`TrainingCheckpoint`): w, w0, the integrator's
                     state and the length of the dynamics log; the last one is the final state;
  events/<name>/     TensorBoard event files: the run is one TensorBoard run named after α, h,
                     the init seed and the run id (callbacks.tensorboard_run_name);
  metrics.json       the summary, written last: its presence means the run is complete.
The `ntk_eval` stage adds ntk.json (kernel norms and drift, frozen-kernel results),
frozen_{init,final}_test_outputs.npy and, on request, gram_{init,final}_{train,test}.npy;
`fidelity.check_run` adds fidelity.json (the run against its reference flow, Appendix G);
`velocity.evaluate` adds velocity.json (ż per hidden layer at t = 0, Appendix D) and
`ntk_eval.save_gram_probe` gram_init.npy, gram_end.npy, gram_labels.npy (Fig. 8).
While a run is in flight its log is dynamics.partial.jsonl.

Storage: every path goes through tf.io.gfile, so a directory may be on any filesystem
TensorFlow knows: local, gs://, s3:// (with tensorflow-io), hdfs://, or ram:// (one
process's memory). Each file is written whole under a unique temporary name (.<name>.<hex>.tmp)
and renamed onto its name; where a rename is a copy and a delete (object stores), the copy
creates the object at once, so a reader (or a rerun after a kill) never finds a final name
with half its contents, and metrics.json still marks a complete run.
"""
import io
import json
import os
import uuid

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.errors import RunDirError
from lazy_feature.flow import registry
from lazy_feature.run.config import VERSION, TrainConfig

gfile = tf.io.gfile

CONFIG = "config.json"
METRICS = "metrics.json"
DYNAMICS = "dynamics.jsonl"
# Not "dynamics.jsonl.partial": ram:// finds a file by any longer name it begins (exists()).
PARTIAL_DYNAMICS = "dynamics.partial.jsonl"
TRAIN_LOG = "train.log"
TEST_OUTPUTS = "test_outputs.npy"
TEST_LABELS = "test_labels.npy"
CHECKPOINT = "checkpoint"
EVENTS = "events"
NTK = "ntk.json"
FIDELITY = "fidelity.json"
KEEP_CHECKPOINTS = 2  # the last one and the one before, should the last be unreadable

join = os.path.join  # "gs://bucket/sweep" + "runs" -> "gs://bucket/sweep/runs"


# -- files on any filesystem ---------------------------------------------------------------

def exists(path):
    """Whether `path` exists; RunDirError if its filesystem cannot be reached or is unknown."""
    try:
        return gfile.exists(path)
    except tf.errors.OpError as e:
        raise RunDirError(f"cannot reach {path} ({_reason(e)}): choose another path") from None


def _reason(error):
    return (getattr(error, "message", None) or str(error) or type(error).__name__).splitlines()[0]


def makedirs(path):
    gfile.makedirs(path)


def remove(path):
    """Delete the file `path` if it exists."""
    if gfile.exists(path):
        gfile.remove(path)


def listdir(path):
    return gfile.listdir(path) if gfile.isdir(path) else []


def write_bytes(path, data):
    """Write `data` to `path` whole: to a unique temporary name beside it, then renamed."""
    directory, name = os.path.split(path)
    tmp = join(directory, f".{name}.{uuid.uuid4().hex}.tmp")
    try:
        with gfile.GFile(tmp, "wb") as f:
            f.write(data)
        gfile.rename(tmp, path, overwrite=True)
    finally:
        if gfile.exists(tmp):
            gfile.remove(tmp)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def read_text(path):
    with gfile.GFile(path, "rb") as f:
        return f.read().decode("utf-8")


def write_json(path, obj):
    write_text(path, json.dumps(obj, indent=2, sort_keys=True))


def read_json(path):
    return json.loads(read_text(path))


def read_json_line(line):
    """One record of dynamics.jsonl."""
    return json.loads(line)


def read_jsonl(path):
    """The records of a JSON-lines file (e.g. dynamics.jsonl), in order."""
    return [json.loads(line) for line in read_text(path).splitlines() if line.strip()]


def append_line(path, line):
    """Append one line to `path` (a log; created if missing)."""
    with gfile.GFile(path, "a") as f:
        f.write(line + "\n")


def write_csv(path, table):
    """A pandas DataFrame as CSV without its index."""
    write_text(path, table.to_csv(index=False))


def read_csv(path):
    """A CSV file as a pandas DataFrame; an empty DataFrame for an empty or missing file."""
    import pandas as pd  # pylint: disable=import-outside-toplevel
    text = read_text(path) if exists(path) else ""
    return pd.read_csv(io.StringIO(text)) if text.strip() else pd.DataFrame()


def write_npy(path, array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    write_bytes(path, buffer.getvalue())


def read_npy(path):
    with gfile.GFile(path, "rb") as f:
        return np.load(io.BytesIO(f.read()))


def write_figure(path, figure, fmt, **savefig_args):
    """A matplotlib figure rendered in format `fmt` ("png", "svg"), written as one file."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format=fmt, **savefig_args)
    write_bytes(path, buffer.getvalue())


def check_writable(directory, flag="--output_dir"):
    """Create `directory` and write and delete a file in it, or raise a RunDirError.

    An unknown scheme, a path under a file or a bucket out of reach fails here, before
    anything else is written.
    """
    try:
        gfile.makedirs(directory)
        probe = join(directory, f".write_test.{uuid.uuid4().hex}")
        with gfile.GFile(probe, "wb") as f:
            f.write(b"")
        gfile.remove(probe)
    except (tf.errors.OpError, OSError) as e:
        raise RunDirError(f"cannot write to {directory} ({_reason(e)}): choose a writable "
                          f"{flag}") from None


# -- the run directory -----------------------------------------------------------------------

def config_record(config):
    """What config.json holds: every setting (the integrator and tolerances the run uses,
    `TrainConfig.resolved`), the run id and the library version."""
    config = config.resolved()
    return dict(config.to_dict(), run_id=config.run_id(), lazy_feature_version=VERSION)


def load_config(run_dir):
    """The TrainConfig stored in `run_dir`/config.json."""
    path = join(run_dir, CONFIG)
    if not exists(path):
        raise RunDirError(f"no run artifact in {run_dir}: {CONFIG} is missing "
                          "(run the train stage first)")
    stored = read_json(path)
    stored.pop("run_id", None)
    stored.pop("lazy_feature_version", None)
    stored.setdefault("integrator", registry.EULER)  # runs made before there was a choice
    return TrainConfig.from_dict(stored)


def check_holds(run_dir, config):
    """Raise unless `run_dir` is new, empty of runs, or holds this very run."""
    path = join(run_dir, CONFIG)
    if exists(path):
        stored = read_json(path).get("run_id")
        if stored != config.run_id():
            raise RunDirError(
                f"{run_dir} holds run {stored}, not {config.run_id()} (other settings): "
                "choose another output directory")


def claim(run_dir, config):
    """Create `run_dir` with this run's config.json (once the data is known to load)."""
    makedirs(run_dir)
    path = join(run_dir, CONFIG)
    if not exists(path):
        write_json(path, config_record(config))


def is_complete(run_dir):
    """A run is complete once its metrics.json exists (it is written last)."""
    return exists(join(run_dir, METRICS))


def check_complete(run_dir, test_labels):
    """Raise RunDirError unless `run_dir` holds a complete run evaluated on `test_labels`."""
    if not is_complete(run_dir):
        raise RunDirError(f"the run in {run_dir} is not complete ({METRICS} is missing)")
    if not exists(join(run_dir, CHECKPOINT)):
        raise RunDirError(f"the run in {run_dir} has no {CHECKPOINT}/: it was written by "
                          "lazy_feature < 0.3 (weights.weights.h5), whose format is not read; "
                          "rerun it")
    labels = read_npy(join(run_dir, TEST_LABELS))
    if labels.shape != test_labels.shape or not np.array_equal(labels, test_labels):
        raise RunDirError(f"the data set found now is not the one the run in {run_dir} was "
                          "trained on (test labels differ): check --dataset and --data_dir")


def reopen(run_dir, config):
    """Turn a complete run back into an interrupted one that resumes from its final state.

    `config` is the run's own (the same run id), e.g. with larger budgets. The final
    checkpoint stays (it is where the run resumes), the dynamics log becomes the partial
    log, config.json becomes `config`'s; then metrics.json goes (from here on the run
    resumes) and so does everything derived from the final state.
    """
    stored = load_config(run_dir)
    if stored.run_id() != config.run_id():
        raise RunDirError(f"{run_dir} holds run {stored.run_id()}, not {config.run_id()}")
    write_text(join(run_dir, PARTIAL_DYNAMICS), read_text(join(run_dir, DYNAMICS)))
    write_json(join(run_dir, CONFIG), config_record(config))
    remove(join(run_dir, METRICS))
    derived = [DYNAMICS, TEST_OUTPUTS, NTK] + [
        name for name in listdir(run_dir)
        if name.startswith(("frozen_", "gram_")) and name.endswith(".npy")]
    for name in derived:
        remove(join(run_dir, name))


def restore_log(run_dir, records):
    """Keep the first `records` lines of the run's dynamics log as its partial log.

    The log may hold records made after the checkpoint (and a half-written last line)
    when a run was killed; they go, by writing the kept lines to a new file, never by
    editing the log in place. `records` 0 starts an empty log.
    """
    partial, final = join(run_dir, PARTIAL_DYNAMICS), join(run_dir, DYNAMICS)
    source = partial if exists(partial) else final  # final: killed between its rename and metrics
    lines = read_text(source).splitlines(keepends=True)[:records] if exists(source) else []
    if len(lines) < records:
        raise RunDirError(f"the dynamics log of {run_dir} has {len(lines)} records, its "
                          f"checkpoint counts {records}: delete the run directory to redo it")
    write_text(partial, "".join(lines))
    remove(final)


def finish_log(run_dir):
    """The partial dynamics log becomes dynamics.jsonl (before metrics.json is written)."""
    gfile.rename(join(run_dir, PARTIAL_DYNAMICS), join(run_dir, DYNAMICS), overwrite=True)


# -- the checkpoint ------------------------------------------------------------------------

def _named_variables(layer, prefix, skip, found):
    """Add the variables reachable from `layer` through its public attributes to `found`,
    keyed by attribute path ("network/hidden/0/kernel"), skipping the layers in `skip`."""
    for name, value in sorted(vars(layer).items()):
        if name.startswith("_") or any(value is s for s in skip):
            continue
        items = (list(value.items()) if isinstance(value, dict)
                 else list(enumerate(value)) if isinstance(value, (list, tuple))
                 else [(None, value)])
        for key, item in items:
            path = f"{prefix}{name}" if key is None else f"{prefix}{name}/{key}"
            if isinstance(item, keras.Variable):
                if not any(item is v for v in found.values()):
                    found[path] = item
            elif isinstance(item, keras.layers.Layer) and not any(item is s for s in skip):
                _named_variables(item, path + "/", skip, found)


def model_state(model):
    """Every variable of an AlphaModel but its training-set cache, by attribute path.

    That is w, w0 and all the integrator's state (t, dt, the stored gradient, the counts,
    and whatever state a flow adds as attributes). The cache (f(w_i), f(w0) and y on the
    training set) is left out: `AlphaModel.start` recomputes it by one forward pass, and
    under tf.distribute each replica holds its own shard of it.
    """
    skip = [model.cache]
    found = {}
    _named_variables(model, "", skip, found)
    cached = [v for layer in skip for v in layer.weights]
    missing = [v.path for v in model.weights
               if not any(v is w for w in list(found.values()) + cached)]
    if missing:  # a variable kept out of reach of the attributes would be lost on resume
        raise TypeError(f"variables not reachable through attributes: {missing}")
    return found


class TrainingCheckpoint:
    """A run's state in one tf.train.Checkpoint under `run_dir`/checkpoint/.

    Holds `model_state(model)` (w, w0, the integrator), the number of records in the
    dynamics log at that moment and the wall-clock seconds spent so far, so a resumed run
    continues the flow exactly and its log where it was. tf.train.CheckpointManager keeps
    the last KEEP_CHECKPOINTS and switches its `checkpoint` index file only once a save is
    whole, so a kill during a save leaves the previous checkpoint in force. Create it after
    the model (under a tf.distribute strategy, inside its scope).
    """

    def __init__(self, model, run_dir):
        self.run_dir = run_dir
        self.log_records = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self._checkpoint = tf.train.Checkpoint(model=model_state(model),
                                               log_records=self.log_records,
                                               wall_seconds=self.wall_seconds)
        self._manager = tf.train.CheckpointManager(self._checkpoint, join(run_dir, CHECKPOINT),
                                                   max_to_keep=KEEP_CHECKPOINTS)

    def exists(self):
        return self._manager.latest_checkpoint is not None

    def restore(self):
        """Load the latest checkpoint into the model; return (log records, wall seconds)."""
        path = self._manager.latest_checkpoint
        if path is None:
            raise RunDirError(f"no checkpoint in {join(self.run_dir, CHECKPOINT)}")
        try:
            self._checkpoint.restore(path).assert_consumed()
        except (AssertionError, ValueError) as e:  # (ValueError: a variable of another shape,
            # e.g. an integrator's memory saved by a version that kept another layout)
            raise RunDirError(f"the checkpoint {path} does not fit this run's model "
                              f"({str(e).splitlines()[0]}): delete the run directory to redo "
                              "it") from None
        return int(self.log_records.numpy()), float(self.wall_seconds.numpy())

    def save(self, log_records, wall_seconds):
        self.log_records.assign(log_records)
        self.wall_seconds.assign(wall_seconds)
        self._manager.save()
