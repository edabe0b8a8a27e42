"""A run's checkpoint: every variable of its AlphaModel (w, w0, the integrator's state) in one
tf.train.Checkpoint under run_dir/checkpoint/, that falls back when damaged (`TrainingCheckpoint`).
"""
import logging

import keras
import tensorflow as tf

from lazy_feature.errors import RunDirError
from lazy_feature.run.artifact import CHECKPOINT, error_reason, gfile, join, listdir

logger = logging.getLogger("lazy_feature")

KEEP_CHECKPOINTS = 2  # the last one and the one before, should the last be unreadable


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
    whole, so a kill during a save leaves the previous checkpoint in force; `restore` falls
    back to the previous one when the last cannot be read, and starts the run over (saying
    so) when none can. `guard` is called before each save (a lease's check). Create it after
    the model (under a tf.distribute strategy, inside its scope).
    """

    def __init__(self, model, run_dir, guard=None):
        self.run_dir = run_dir
        self.log_records = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.wall_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self._variables = [*model_state(model).values(), self.log_records, self.wall_seconds]
        self._checkpoint = tf.train.Checkpoint(model=model_state(model),
                                               log_records=self.log_records,
                                               wall_seconds=self.wall_seconds)
        self._guard = guard or (lambda: None)
        self._chosen = None  # the checkpoint restored ("" after a fresh start)
        self._manager = self._open()

    def _open(self):
        directory = join(self.run_dir, CHECKPOINT)
        try:
            return tf.train.CheckpointManager(self._checkpoint, directory,
                                              max_to_keep=KEEP_CHECKPOINTS)
        except Exception as e:  # pylint: disable=broad-except  # its index file is damaged
            logger.warning("%s cannot be read (%s): the run starts over", directory,
                           str(e).splitlines()[0] if str(e) else type(e).__name__)
            gfile.rmtree(directory)
            return tf.train.CheckpointManager(self._checkpoint, directory,
                                              max_to_keep=KEEP_CHECKPOINTS)

    def restore(self, fallback=True):
        """Load the newest readable checkpoint into the model and return (log records, wall
        seconds), or None when there is none to resume from (then the run starts over).

        A second call loads the same checkpoint again. `fallback` False loads the latest
        checkpoint (a complete run's final state) or raises RunDirError.
        """
        if not fallback:
            path = self._manager.latest_checkpoint
            try:
                self._checkpoint.restore(path).assert_consumed()
            except (AssertionError, ValueError, tf.errors.OpError, IndexError, OSError) as e:
                raise RunDirError(f"the final checkpoint of {self.run_dir} cannot be read "
                                  f"({error_reason(e)}): delete {self.run_dir} to redo the "
                                  "run") from None
            return int(self.log_records.numpy()), float(self.wall_seconds.numpy())
        if self._chosen is None:
            self._chosen = self._choose()
        elif self._chosen:
            self._checkpoint.restore(self._chosen).assert_consumed()
        if not self._chosen:
            return None
        return int(self.log_records.numpy()), float(self.wall_seconds.numpy())

    def _candidates(self):
        """The checkpoints to try, newest first: those the index file lists, and those on
        disk it does not (an index file that cannot be parsed lists none)."""
        directory = join(self.run_dir, CHECKPOINT)
        listed = list(self._manager.checkpoints)
        found = [join(directory, name[:-len(".index")]) for name in listdir(directory)
                 if name.startswith("ckpt-") and name.endswith(".index")]
        unlisted = [p for p in found if p not in listed]
        if unlisted and not listed:
            logger.warning("the index of %s cannot be read: trying the checkpoints on disk",
                           directory)

        def number(path):
            tail = path.rsplit("-", 1)[-1]
            return int(tail) if tail.isdigit() else -1
        return sorted(set(listed + unlisted), key=number, reverse=True)

    def _choose(self):
        """The newest checkpoint that loads whole ("" for none), loaded."""
        start = [v.numpy() for v in self._variables]  # a failed restore may assign some
        failures = []
        for path in self._candidates():
            try:
                self._checkpoint.restore(path).assert_consumed()
            except (AssertionError, ValueError) as e:  # (ValueError: a variable of another
                # shape, e.g. an integrator's memory saved by a version with another layout)
                failures.append((path, e, True))
            except (tf.errors.OpError, IndexError, OSError) as e:  # missing or cut files
                failures.append((path, e, False))
            else:
                for skipped, error, _ in failures:
                    logger.warning("%s cannot be read (%s): resuming from %s", skipped,
                                   error_reason(error), path)
                return path
        for variable, value in zip(self._variables, start):
            variable.assign(value)
        if failures and all(fits for _, _, fits in failures):
            path, error, _ = failures[0]
            raise RunDirError(f"the checkpoint {path} does not fit this run's model "
                              f"({error_reason(error)}): delete the run directory to redo it")
        if failures:
            logger.warning("no checkpoint of %s can be read (%s): the run starts over",
                           self.run_dir, error_reason(failures[0][1]))
            gfile.rmtree(join(self.run_dir, CHECKPOINT))
            self._manager = self._open()
        return ""

    def save(self, log_records, wall_seconds):
        self._guard()
        self.log_records.assign(log_records)
        self.wall_seconds.assign(wall_seconds)
        try:
            self._manager.save()
        except tf.errors.OpError as e:
            raise RunDirError(f"cannot write a checkpoint in {self.run_dir} ({error_reason(e)}): "
                              "check the directory's permissions and free space, then rerun "
                              "to resume") from None
