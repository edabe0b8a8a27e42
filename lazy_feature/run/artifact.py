"""The run artifact: its files, its storage, its checkpoint. One module owns the on-disk format.

A run directory holds
  config.json        every setting (TrainConfig), the run id, the library version and why
                     auto took the run's integrator (integrator_choice);
  dynamics.jsonl     the log-spaced dynamics records (callbacks.RECORD_KEYS);
  train.log          the same records as status lines, for a person (appended on resume);
  test_outputs.npy   F = α[f(w, x) − f(w0, x)] on every test point, in test-set order;
  test_labels.npy    the ±1 test labels;
  checkpoint/        one tf.train.Checkpoint (`checkpoint.TrainingCheckpoint`): w, w0, the integrator's
                     state and the length of the dynamics log; the last one is the final state;
  events/<name>/     TensorBoard event files: the run is one TensorBoard run named after α, h,
                     the init seed and the run id (summaries.tensorboard_run_name);
  metrics.json       the summary, written last: its presence means the run is complete. It
                     vouches for test_outputs.npy, test_labels.npy and dynamics.jsonl by
                     their SHA-256 (and shape), under "files"; every reader checks them
                     (`read_vouched`), so a damaged file is found, never used.
  .lease             the lock of the trainer that holds the run (`lease`).
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
import hashlib
import io
import json
import math
import os
import uuid

import numpy as np
import tensorflow as tf

from lazy_feature.errors import RunDirError
from lazy_feature.flow import registry
from lazy_feature.run.config import VERSION, TrainConfig

gfile = tf.io.gfile

CONFIG = "config.json"
INTEGRATOR_CHOICE = "integrator_choice"  # config.json's record of why auto took its integrator
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
FILES = "files"  # metrics.json's record of the files it vouches for
VOUCHED = (TEST_OUTPUTS, TEST_LABELS, DYNAMICS)

join = os.path.join  # "gs://bucket/sweep" + "runs" -> "gs://bucket/sweep/runs"


# -- files on any filesystem ---------------------------------------------------------------

def exists(path):
    """Whether `path` exists; RunDirError if its filesystem cannot be reached or is unknown."""
    try:
        return gfile.exists(path)
    except tf.errors.OpError as e:
        raise RunDirError(f"cannot reach {path} ({error_reason(e)}): choose another path") from None


def error_reason(error):
    """The first line of a TensorFlow or Python error's message."""
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
    except tf.errors.OpError as e:
        raise RunDirError(f"cannot write {path} ({error_reason(e)}): check the directory's "
                          "permissions and free space, then rerun") from None
    finally:
        if gfile.exists(tmp):
            gfile.remove(tmp)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def read_bytes(path):
    try:
        with gfile.GFile(path, "rb") as f:
            return f.read()
    except tf.errors.OpError as e:
        raise RunDirError(f"cannot read {path} ({error_reason(e)}): check that it exists and "
                          "is readable") from None


def read_text(path):
    return read_bytes(path).decode("utf-8", errors="replace")


def jsonable(obj):
    """`obj` with every non-finite float made valid JSON: NaN → null, ±inf → "inf"/"-inf"
    (`TrainConfig.from_dict` reads those back as floats)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    return obj


def json_line(record):
    """One line of a JSON-lines log (valid JSON: no bare NaN or Infinity)."""
    return json.dumps(jsonable(record), allow_nan=False)


def write_json(path, obj):
    write_text(path, json.dumps(jsonable(obj), indent=2, sort_keys=True, allow_nan=False))


def damaged(path, why, fix="delete it and rerun the stage that wrote it"):
    """The RunDirError of a file that cannot be what it claims to be."""
    return RunDirError(f"{path} is damaged ({why}): {fix}")


def parse_json(text, path):
    try:
        return json.loads(text)
    except ValueError as e:
        raise damaged(path, f"not valid JSON: {e}") from None


def read_json(path):
    return parse_json(read_text(path), path)


def read_json_line(line):
    """One record of dynamics.jsonl."""
    return json.loads(line)


def parse_jsonl(text, path):
    return [parse_json(line, path) for line in text.splitlines() if line.strip()]


def read_jsonl(path):
    """The records of a JSON-lines file (e.g. dynamics.jsonl), in order."""
    return parse_jsonl(read_text(path), path)


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


def parse_npy(data, path):
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise damaged(path, f"not a .npy array: {str(e).splitlines()[0]}") from None


def read_npy(path):
    return parse_npy(read_bytes(path), path)


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
        raise RunDirError(f"cannot write to {directory} ({error_reason(e)}): choose a writable "
                          f"{flag}") from None


# -- the run directory -----------------------------------------------------------------------

def config_record(config, integrator_choice=None):
    """What config.json holds: every setting (the integrator and tolerances the run uses,
    `TrainConfig.resolved`), why auto took that integrator (`integrator_choice`: the given
    one, else `TrainConfig.integrator_choice`'s where the config leaves it to auto), the run
    id and the library version."""
    choice = config.integrator_choice()
    integrator_choice = integrator_choice or (choice.why if choice else None)
    resolved = config.resolved()
    record = dict(resolved.to_dict(), run_id=resolved.run_id(), lazy_feature_version=VERSION)
    if integrator_choice:
        record[INTEGRATOR_CHOICE] = integrator_choice
    return record


def load_config(run_dir):
    """The TrainConfig stored in `run_dir`/config.json."""
    path = join(run_dir, CONFIG)
    if not exists(path):
        raise RunDirError(f"no run artifact in {run_dir}: {CONFIG} is missing "
                          "(run the train stage first)")
    stored = read_json(path)
    for key in ("run_id", "lazy_feature_version", INTEGRATOR_CHOICE):
        stored.pop(key, None)
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


def claim(run_dir, config, integrator_choice=None):
    """Create `run_dir` with this run's config.json (once the data is known to load);
    `integrator_choice`: why auto took the run's integrator (`config_record`)."""
    makedirs(run_dir)
    path = join(run_dir, CONFIG)
    if not exists(path):
        write_json(path, config_record(config, integrator_choice))


def is_complete(run_dir):
    """A run is complete once its metrics.json exists (it is written last)."""
    return exists(join(run_dir, METRICS))


def file_record(data, name):
    """What metrics.json records of a file it vouches for: its SHA-256, size and, for an
    array, its shape."""
    record = dict(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    if name.endswith(".npy"):
        record["shape"] = list(parse_npy(data, name).shape)
    return record


def vouch(run_dir, names=VOUCHED):
    """The `FILES` entry of metrics.json: the record of each file `names` as it is stored."""
    return {name: file_record(read_bytes(join(run_dir, name)), name) for name in names}


REDO = "rerun the train stage (or the sweep) to redo it"


def _matches(data, record):
    """Whether the bytes `data` are the file `record` (metrics.json's) vouches for."""
    return hashlib.sha256(data).hexdigest() == record["sha256"]


def read_vouched(run_dir, name, metrics=None):
    """The bytes of the run file `name`, checked against the record metrics.json keeps of it.

    A run made before metrics.json vouched for its files is read unchecked. Raises
    RunDirError naming the file when it is missing or differs from its record.
    """
    path = join(run_dir, name)
    if metrics is None:
        metrics = read_json(join(run_dir, METRICS)) if is_complete(run_dir) else {}
    record = metrics.get(FILES, {}).get(name)
    if not exists(path):
        raise RunDirError(f"{path} is missing: {REDO}")
    data = read_bytes(path)
    if record is not None and not _matches(data, record):
        raise damaged(path, f"its checksum differs from the one in {METRICS}", REDO)
    return data


def read_run_npy(run_dir, name, metrics=None):
    """An array of a run (test_outputs.npy, test_labels.npy), checked (`read_vouched`)."""
    return parse_npy(read_vouched(run_dir, name, metrics), join(run_dir, name))


def read_run_jsonl(run_dir, name=DYNAMICS, metrics=None):
    """A JSON-lines log of a run (dynamics.jsonl), checked (`read_vouched`)."""
    path = join(run_dir, name)
    return parse_jsonl(read_vouched(run_dir, name, metrics).decode("utf-8", "replace"), path)


def damaged_files(run_dir, metrics):
    """The names of the files `metrics` vouches for that are missing or differ from it."""
    bad = []
    for name, record in metrics.get(FILES, {}).items():
        path = join(run_dir, name)
        if not exists(path) or not _matches(read_bytes(path), record):
            bad.append(name)
    return bad


def check_whole(run_dir):
    """(metrics, names of its damaged files) of the complete run in `run_dir`: ({},
    [metrics.json]) when metrics.json itself cannot be read (`damaged_files`)."""
    try:
        metrics = read_json(join(run_dir, METRICS))
    except RunDirError:
        return {}, [METRICS]
    return metrics, damaged_files(run_dir, metrics)


def check_complete(run_dir, test_labels):
    """Raise RunDirError unless `run_dir` holds a complete, whole run evaluated on
    `test_labels`."""
    if not is_complete(run_dir):
        raise RunDirError(f"the run in {run_dir} is not complete ({METRICS} is missing)")
    if not exists(join(run_dir, CHECKPOINT)):
        raise RunDirError(f"the run in {run_dir} has no {CHECKPOINT}/: it was written by "
                          "lazy_feature < 0.3 (weights.weights.h5), whose format is not read; "
                          "rerun it")
    metrics = read_json(join(run_dir, METRICS))
    bad = damaged_files(run_dir, metrics)
    if bad:
        raise damaged(join(run_dir, bad[0]), f"its checksum differs from the one in {METRICS}",
                      REDO)
    labels = read_npy(join(run_dir, TEST_LABELS))  # (checked by damaged_files just above)
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
    chosen = read_json(join(run_dir, CONFIG)).get(INTEGRATOR_CHOICE)
    write_json(join(run_dir, CONFIG), config_record(config, chosen))
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
    parse_jsonl("".join(lines), source)  # each kept record whole, or a one-line error
    write_text(partial, "".join(lines))
    remove(final)


def finish_log(run_dir):
    """The partial dynamics log becomes dynamics.jsonl (before metrics.json is written)."""
    gfile.rename(join(run_dir, PARTIAL_DYNAMICS), join(run_dir, DYNAMICS), overwrite=True)
