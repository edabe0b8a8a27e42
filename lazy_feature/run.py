"""One run end to end: data → AlphaModel → adaptive gradient flow → run artifact.

`train` is what the `train` stage calls; it resumes a killed run from its last checkpoint
and returns at once for a run that is already complete. `load_run` reopens an artifact
for the later stages (NTK evaluation, ensembles).
"""
import dataclasses
import json
import logging
import os

import numpy as np
import tensorflow as tf

from lazy_feature import architectures, artifact, callbacks, data, distribute, losses
from lazy_feature.alpha_model import AlphaModel
from lazy_feature.config import VERSION, TrainConfig
from lazy_feature.errors import RunDirError

logger = logging.getLogger("lazy_feature")

_FIT_STEPS = 10**15  # fit's step budget: the flow ends through GradientFlowStopping
_EVAL_BATCH = 4096
# Trial steps per call of the train function at most (in-graph stepping); a call returns
# earlier at the steps the callbacks ask for (records, budgets, checkpoints).
STEPS_PER_CALL = 100_000


def build_model(config, input_shape, strategy=None, steps_per_call=STEPS_PER_CALL):
    """The AlphaModel of `config`: its architecture's network at α, built for inputs of
    `input_shape` (without the batch axis; an int d for vectors) inside `strategy`'s scope
    (None: the current strategy), `steps_per_call` trial steps per call of its train
    function at most (1: one step per call)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        network = architectures.network(config)
        model = AlphaModel(network, alpha=config.alpha, loss=config.loss,
                           loss_beta=config.loss_beta, centered=config.centered,
                           flow=config.flow())
        model.compile(steps_per_execution=steps_per_call)
        model.build((None, *(int(s) for s in np.atleast_1d(input_shape))))
        model.build_dynamics_state(config.n_train)
    return model


def load_config(run_dir):
    """The TrainConfig stored in `run_dir`/config.json."""
    path = os.path.join(run_dir, artifact.CONFIG)
    if not os.path.exists(path):
        raise RunDirError(f"no run artifact in {run_dir}: {artifact.CONFIG} is missing "
                          "(run the train stage first)")
    stored = artifact.read_json(path)
    stored.pop("run_id", None)
    stored.pop("lazy_feature_version", None)
    stored.setdefault("integrator", "euler")  # runs made before there was a choice
    return TrainConfig.from_dict(stored)


def load_task(config, task=None):
    """The data set `config` trains on (`task` if given), checked against its sizes, its x
    shaped for the architecture (images for cnn and wide_resnet, vectors for fc).

    Raises ConfigError when the architecture cannot take these inputs.
    """
    if task is None:
        task = data.load_binary_task(config.dataset, config.data_dir, config.n_train,
                                     config.n_test, config.data_seed, config.pca,
                                     config.pca_whiten)
    if task.x_train.shape[0] != config.n_train or task.x_test.shape[0] != config.n_test:
        raise RunDirError(
            f"the task has {task.x_train.shape[0]} training and {task.x_test.shape[0]} test "
            f"points, the config asks for {config.n_train} and {config.n_test}")
    task = task.shaped(images=config.architecture != "fc")
    architectures.network(config).check_input_shape(task.x_train.shape[1:])
    return task


def _check_output_dir(config, output_dir):
    """Raise unless `output_dir` is new, empty of runs, or holds this very run."""
    path = os.path.join(output_dir, artifact.CONFIG)
    if os.path.exists(path):
        stored = artifact.read_json(path).get("run_id")
        if stored != config.run_id():
            raise RunDirError(
                f"{output_dir} holds run {stored}, not {config.run_id()} (other settings): "
                "choose another output directory")


def _config_record(config):
    """What config.json holds: every setting, the run id and the library version."""
    return dict(config.to_dict(), run_id=config.run_id(), lazy_feature_version=VERSION)


def _claim(config, output_dir):
    """Create `output_dir` with this run's config.json (once the data is known to load)."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, artifact.CONFIG)
    if not os.path.exists(path):
        artifact.write_json(path, _config_record(config))


def reopen(run_dir, config):
    """Let the complete run in `run_dir` resume from where it stopped, under `config`.

    `config` is the run's own (the same run id) with other budgets, e.g. larger ones for a
    run a budget stopped; `train(config, run_dir)` then continues its flow exactly.
    """
    stored = load_config(run_dir)
    if stored.run_id() != config.run_id():
        raise RunDirError(f"{run_dir} holds run {stored.run_id()}, not {config.run_id()}")
    artifact.reopen(run_dir, _config_record(config))


def _restore(model, output_dir, partial_log):
    """Load the last checkpoint if there is one; return (step, wall seconds) it stands at."""
    ckpt = os.path.join(output_dir, artifact.CHECKPOINT)
    if not os.path.exists(ckpt):
        if os.path.exists(partial_log):
            os.remove(partial_log)
        return -1, 0.0
    model.load_weights(ckpt)
    step = int(model.step_count.numpy())
    state_path = os.path.join(output_dir, artifact.CHECKPOINT_STATE)
    wall = artifact.read_json(state_path)["wall_seconds"] if os.path.exists(state_path) else 0.0
    if os.path.exists(partial_log):  # drop the records made after the checkpoint
        with open(partial_log) as f:
            kept = [line for line in f if json.loads(line)["step"] <= step]
        with open(partial_log, "w") as f:
            f.writelines(kept)
    logger.info("resuming %s from step %d", output_dir, step)
    return step, wall


def evaluate(model, x, y, per_pattern_loss):
    """F on `x` (in order), its error rate and mean ℓ(F, y) = α² × eq. 7's loss on this set."""
    if len(x) == 0:
        return np.zeros(0), float("nan"), float("nan")
    F = np.asarray(model.predict(data.batches(x, _EVAL_BATCH, model.dtype), verbose=0),
                   dtype=np.float64)
    error = float(losses.error_rate(F, y))
    loss = float(np.mean(per_pattern_loss(tf.constant(F), tf.constant(y, tf.float64)).numpy()))
    return F, error, loss


def output_norms(model, x):
    """‖f(w) − f(w0)‖ and ‖f(w)‖ on `x`, root mean squares over its points (eq. 31)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    inputs = data.batches(x, _EVAL_BATCH, model.dtype)
    f, f0 = (np.asarray(net.predict(inputs, verbose=0), dtype=np.float64)
             for net in (model.network, model.initial_network))
    return float(np.sqrt(np.mean((f - f0) ** 2))), float(np.sqrt(np.mean(f ** 2)))


def fit_flow(model, x, y, callbacks):
    """Run an AlphaModel's gradient flow on the full batch (x, y) until a callback stops it
    (`callbacks.GradientFlowStopping`), in the model's strategy."""
    with model.distribute_strategy.scope():
        model.start(x, y)  # the training set goes to the devices once
        model.fit(data.full_batch(x, y, model.dtype), epochs=1, steps_per_epoch=_FIT_STEPS,
                  verbose=0, shuffle=False, callbacks=callbacks)


def train(config, output_dir, task=None, checkpoint_seconds=60.0, extra_callbacks=(),
          drift_probe=0, strategy="default", cpu_devices=None, steps_per_call=STEPS_PER_CALL):
    """Train one network per `config` and write its run artifact in `output_dir`.

    Args:
      config: a TrainConfig.
      output_dir: the run directory (see `artifact`). A complete run there is not redone;
        a killed one resumes from its last checkpoint.
      task: a `data.BinaryTask` to use instead of loading `config.dataset` (tests, or
        ensembles sharing one data set).
      checkpoint_seconds: wall time between checkpoints.
      extra_callbacks: more Keras callbacks.
      drift_probe: if > 0, the live kernel drift on that many training points goes to
        TensorBoard too (`callbacks.KernelDriftProbe`). Everything TensorBoard shows of
        the run is in one TensorBoard run, events/<callbacks.tensorboard_run_name>.
      strategy: where to run: a name of `distribute.STRATEGIES` or a tf.distribute.Strategy.
      cpu_devices: split the host CPU into this many logical devices first (to run a
        multi-replica strategy without an accelerator; before TensorFlow starts).
      steps_per_call: trial steps per call of the train function at most (in-graph
        stepping; 1 is one step per call). The flow takes the same steps either way.
    Returns:
      the metrics dict, also written to metrics.json.
    Raises:
      errors.DivergenceError if the flow cannot proceed; RunDirError for a directory
      that holds another run; errors.DataError for missing or corrupt data.
    """
    distribute.check_precision(strategy, [config])
    strategy = distribute.make(strategy, cpu_devices=cpu_devices)
    _check_output_dir(config, output_dir)
    if artifact.is_complete(output_dir):
        logger.info("%s is already complete", output_dir)
        return artifact.read_json(os.path.join(output_dir, artifact.METRICS))
    task = load_task(config, task)
    model = build_model(config, task.x_train.shape[1:], strategy, steps_per_call)  # n must split evenly
    _claim(config, output_dir)
    tf.config.experimental.enable_op_determinism()  # a run is a function of its seeds

    partial_log = os.path.join(output_dir, artifact.DYNAMICS + ".partial")
    with strategy.scope():
        resumed_step, wall_offset = _restore(model, output_dir, partial_log)
        model.start(task.x_train, task.y_train)  # a restored flow keeps its state

    stopping = callbacks.GradientFlowStopping(
        config.max_time, config.max_steps, config.max_wall_seconds, wall_offset=wall_offset)
    probe = (callbacks.KernelDriftProbe(task.x_train[:drift_probe], task.y_train[:drift_probe])
             if drift_probe > 0 else None)
    tensorboard = callbacks.TensorBoardRecorder(
        os.path.join(output_dir, artifact.EVENTS), config, probe, last_step=resumed_step,
        wall_offset=wall_offset)
    recorders = [
        callbacks.JsonlLogger(partial_log, last_step=resumed_step, wall_offset=wall_offset),
        tensorboard,
        callbacks.ProgressLogger(os.path.join(output_dir, artifact.TRAIN_LOG),
                                 last_step=resumed_step, wall_offset=wall_offset),
    ]
    checkpointer = callbacks.Checkpointer(
        os.path.join(output_dir, artifact.CHECKPOINT), checkpoint_seconds,
        on_save=lambda step: artifact.write_json(
            os.path.join(output_dir, artifact.CHECKPOINT_STATE),
            {"step": step, "wall_seconds": stopping.wall_seconds()}))
    if resumed_step < 0:
        for recorder in recorders:
            recorder.set_model(model)
            recorder.record_state(model.train_state())
    try:
        fit_flow(model, task.x_train, task.y_train,
                 [stopping, *recorders, checkpointer, *extra_callbacks])
    except KeyboardInterrupt:
        checkpointer.save()
        raise
    metrics = _finish(config, model, task, output_dir, stopping, partial_log)
    tensorboard.record_result(metrics)
    return metrics


def _finish(config, model, task, output_dir, stopping, partial_log):
    """Write the final files of the artifact, metrics.json last."""
    state = {k: float(np.asarray(v)) for k, v in model.train_state().items()}
    F_test, test_error, test_loss = evaluate(model, task.x_test, task.y_test,
                                             model.per_pattern_loss)
    output_norm_test, f_norm_test = output_norms(model, task.x_test)
    artifact.write_npy(os.path.join(output_dir, artifact.TEST_OUTPUTS), F_test)
    artifact.write_npy(os.path.join(output_dir, artifact.TEST_LABELS), task.y_test)
    artifact.save_weights(model, os.path.join(output_dir, artifact.WEIGHTS))
    os.replace(partial_log, os.path.join(output_dir, artifact.DYNAMICS))
    steps = int(state["step"])
    metrics = {
        "run_id": config.run_id(),
        "alpha": config.alpha,
        "width": config.width,
        "depth": config.depth,
        "sqrt_h_alpha": config.sqrt_h_alpha,
        "dtype": config.dtype,
        "converged": bool(state["converged"]),
        "stop_reason": stopping.reason,
        "steps": steps,
        "rejected_steps": int(state["attempts"]) - steps,
        "integrator": config.integrator,
        # forward + backward passes of the training set, rejected steps and stages included
        "gradient_evaluations": int(state["evaluations"]),
        "t": state["t"],
        "wall_seconds": stopping.wall_seconds(),
        "train_error": state["train_error"],
        "train_loss": state["rescaled_loss"],  # α² L (eq. 7)
        "test_error": test_error,
        "test_loss": test_loss,  # mean ℓ(F, y) on the test set, i.e. α² × eq. 7's loss
        "weight_drift": state["weight_drift"],
        # ‖f(w) − f(w0)‖ and ‖f(w)‖, root mean squares over the training (output_norm,
        # f_norm_train) and the test set (eq. 31; Fig. 10 (b) needs ‖f‖ too).
        "output_norm": state["output_norm"],
        "output_norm_test": output_norm_test,
        "f_norm_train": state["f_norm"],
        "f_norm_test": f_norm_test,
    }
    artifact.write_json(os.path.join(output_dir, artifact.METRICS), metrics)
    for name in (artifact.CHECKPOINT, artifact.CHECKPOINT_STATE):
        path = os.path.join(output_dir, name)
        if os.path.exists(path):
            os.remove(path)
    logger.info("%s: %s after %d steps (%d gradient evaluations, %s), t=%.4g, test error %.4f",
                output_dir,
                "converged" if metrics["converged"] else f"stopped ({stopping.reason})",
                steps, metrics["gradient_evaluations"], config.integrator, metrics["t"],
                test_error)
    return metrics


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A complete run reopened: its config, its trained AlphaModel (w and w0) and its data."""
    config: TrainConfig
    model: AlphaModel
    task: "data.BinaryTask"


def load_run(run_dir, task=None, strategy=None):
    """Reopen the complete run in `run_dir`, with its data set (loaded unless `task` is given),
    its model built in `strategy` (None: the current one).

    Raises RunDirError if the run is missing or incomplete, or if the data set found now is
    not the one it was trained on (its test labels differ).
    """
    config = load_config(run_dir)
    if not artifact.is_complete(run_dir):
        raise RunDirError(f"the run in {run_dir} is not complete ({artifact.METRICS} is missing)")
    task = load_task(config, task)
    labels = np.load(os.path.join(run_dir, artifact.TEST_LABELS))
    if labels.shape != task.y_test.shape or not np.array_equal(labels, task.y_test):
        raise RunDirError(f"the data set found now is not the one the run in {run_dir} was "
                          "trained on (test labels differ): check --dataset and --data_dir")
    model = build_model(config, task.x_train.shape[1:], strategy)
    with model.distribute_strategy.scope():
        model.load_weights(os.path.join(run_dir, artifact.WEIGHTS))
    return LoadedRun(config, model, task)
