"""One run end to end: data → AlphaModel → adaptive gradient flow → run artifact.

`train` is what the `train` stage calls; it resumes a killed run from its last checkpoint
and returns at once for a run that is already complete. `load_run` reopens an artifact
for the later stages (NTK evaluation, ensembles).
"""
import collections
import contextlib
import dataclasses
import json
import logging
import math
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.errors import RunDirError
from lazy_feature.flow import registry
from lazy_feature.model import architectures, losses
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.run import (artifact, callbacks, checkpoint, data, distribute, lease, resources,
                              summaries)
from lazy_feature.run.config import TrainConfig

logger = logging.getLogger("lazy_feature")

_FIT_STEPS = 10**15  # fit's step budget: the flow ends through GradientFlowStopping
_EVAL_BATCH = 4096
# Trial steps per call of the train function at most (in-graph stepping); a call returns
# earlier at the steps the callbacks ask for (records, budgets, checkpoints).
STEPS_PER_CALL = 100_000


def build_model(config: TrainConfig, input_shape: int | Sequence[int],
                strategy: tf.distribute.Strategy | None = None,
                steps_per_call: int = STEPS_PER_CALL) -> AlphaModel:
    """The AlphaModel of `config`: its architecture's network at α, trained by the run's
    dynamics (`TrainConfig.make_dynamics`), built for inputs of
    `input_shape` (without the batch axis; an int d for vectors) inside `strategy`'s scope
    (None: the current strategy), `steps_per_call` trial steps per call of its train
    function at most (1: one step per call)."""
    with (strategy or tf.distribute.get_strategy()).scope():
        network = architectures.network(config)
        model = AlphaModel(network, alpha=config.alpha, loss=config.loss,
                           loss_beta=config.loss_beta, centered=config.centered,
                           dynamics=config.make_dynamics())
        model.compile(steps_per_execution=steps_per_call)
        model.build((None, *(int(s) for s in np.atleast_1d(input_shape))))
        model.build_dynamics_state(config.n_train)
    return model


# How many models a process keeps warm for later runs of their settings (`warm_model`).
WARM_MODELS = 2
_warm: "collections.OrderedDict[str, AlphaModel]" = collections.OrderedDict()
_warm_lock = threading.Lock()  # runs in threads of one process (Beam's in-memory runner)


@contextlib.contextmanager
def warm_model(config: TrainConfig, input_shape: int | Sequence[int],
               strategy: tf.distribute.Strategy, steps_per_call: int = STEPS_PER_CALL
               ) -> Iterator[AlphaModel]:
    """`build_model`'s model, run on one this process built before for the same settings
    but the init seed (the same input shape, strategy and steps per call) when it keeps one
    free: that model takes the new one's weights and state (`AlphaModel.restart`) and keeps
    its traced steps, so that an ensemble's or a sweep's next seed starts without tracing
    them. A model is lent to one run at a time, and kept once that run ends well; the last
    WARM_MODELS are kept (`clear_warm_models` frees them)."""
    model = build_model(config, input_shape, strategy, steps_per_call)
    settings = dict(config.resolved().to_dict(), init_seed=None, input_shape=str(input_shape),
                    strategy=id(strategy), steps_per_call=steps_per_call)
    key = json.dumps(settings, sort_keys=True, default=str)
    with _warm_lock:
        warm = _warm.pop(key, None)
    if warm is not None and warm.restart(model):
        model = warm
    yield model
    with _warm_lock:
        _warm[key] = model
        while len(_warm) > WARM_MODELS:
            _warm.popitem(last=False)


def clear_warm_models() -> None:
    """Let go of the models `warm_model` keeps."""
    with _warm_lock:
        _warm.clear()


def load_task(config: TrainConfig, task: data.BinaryTask | None = None) -> data.BinaryTask:
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
    task = task.shaped(images=architectures.takes_images(config.architecture))
    architectures.network(config).check_input_shape(task.x_train.shape[1:])
    return task


def reopen(run_dir: str, config: TrainConfig) -> None:
    """Let the complete run in `run_dir` resume from where it stopped, under `config`.

    `config` is the run's own (the same run id) with other budgets, e.g. larger ones for a
    run a budget stopped; `train(config, run_dir)` then continues its flow exactly.
    """
    artifact.reopen(run_dir, config)


def outputs(network: keras.Model | Callable[..., tf.Tensor], x: np.ndarray,
            batch_size: int = _EVAL_BATCH, dtype: str | None = None) -> np.ndarray:
    """network(x) in float64, in order, called batch by batch: not through Keras' `predict`,
    whose tf.data pipeline and trace per model write TensorFlow's warnings on the console (a
    NodeDef error line, retracing warnings after a few runs in one process). `network` may
    be any function of a batch, given its input `dtype`."""
    if dtype is None:
        assert isinstance(network, keras.Model), "give the dtype of a function's input"
        dtype = network.compute_dtype
    x = x.astype(dtype, copy=False)
    options = dict(training=False) if isinstance(network, keras.Model) else {}
    return np.concatenate([np.asarray(network(x[start:start + batch_size], **options),
                                      np.float64)
                           for start in range(0, len(x), batch_size)] or [np.zeros(0)])


def evaluate(model: AlphaModel, x: np.ndarray, y: np.ndarray,
             per_pattern_loss: Callable[[tf.Tensor, tf.Tensor], tf.Tensor]
             ) -> tuple[np.ndarray, float, float]:
    """F on `x` (in order), its error rate and mean ℓ(F, y) = α² × eq. 7's loss on this set."""
    if len(x) == 0:
        return np.zeros(0), float("nan"), float("nan")
    F = outputs(model, x)
    error = float(losses.error_rate(F, y))
    loss = float(np.mean(per_pattern_loss(tf.constant(F), tf.constant(y, tf.float64)).numpy()))
    return F, error, loss


def output_norms(model: AlphaModel, x: np.ndarray) -> tuple[float, float]:
    """‖f(w) − f(w0)‖ and ‖f(w)‖ on `x`, root mean squares over its points (eq. 31)."""
    if len(x) == 0:
        return float("nan"), float("nan")
    f = outputs(model.network, x)
    if model.difference:  # without cancellation
        change = outputs(model.output_change, x, dtype=model.dtype)
    else:
        change = f - outputs(model.initial_network, x)
    return float(np.sqrt(np.mean(change ** 2))), float(np.sqrt(np.mean(f ** 2)))


def fit_flow(model: AlphaModel, x: np.ndarray, y: np.ndarray,
             callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Run an AlphaModel's gradient flow on the full batch (x, y) until a callback stops it
    (`callbacks.GradientFlowStopping`), in the model's strategy."""
    with model.distribute_strategy.scope():
        model.start(x, y)  # the training set goes to the devices once
        model.fit(data.full_batch(x, y, model.dtype), epochs=1, steps_per_epoch=_FIT_STEPS,
                  verbose=0, shuffle=False, callbacks=callbacks)


def train(config: TrainConfig, output_dir: str, task: data.BinaryTask | None = None,
          checkpoint_seconds: float = 60.0,
          extra_callbacks: Sequence[keras.callbacks.Callback] = (), drift_probe: int = 0,
          strategy: tf.distribute.Strategy | str = "default", cpu_devices: int | None = None,
          steps_per_call: int = STEPS_PER_CALL) -> dict[str, Any]:
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
        TensorBoard too (`summaries.KernelDriftProbe`). Everything TensorBoard shows of
        the run is in one TensorBoard run, events/<summaries.tensorboard_run_name>.
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
    chosen = config.integrator_choice()  # why auto takes its integrator, for config.json
    config = config.resolved()  # its integrator named, as config.json records it
    distribute.check_precision(strategy, [config])
    strategy = distribute.make(strategy, cpu_devices=cpu_devices)
    artifact.check_holds(output_dir, config)
    metrics = complete_metrics(output_dir)
    if metrics is not None:
        logger.info("%s is already complete", output_dir)
        return metrics
    task = load_task(config, task)
    logger.info("%s", resources.check(config, task.x_train.shape[1:]).line())
    # (n must split evenly over the replicas)
    with warm_model(config, task.x_train.shape[1:], strategy, steps_per_call) as model:
        artifact.check_writable(output_dir)
        with lease.held(output_dir) as held:
            metrics = complete_metrics(output_dir)  # another trainer finished it meanwhile
            if metrics is None:
                artifact.claim(output_dir, config, chosen.why if chosen else None)
                metrics = _train(config, output_dir, task, model, held, checkpoint_seconds,
                                 extra_callbacks, drift_probe)
    return metrics


def divergence_advice(config: TrainConfig) -> str:
    """What to try when the run's flow cannot take a step, for the settings it has."""
    if config.dtype != "float64":
        return "use --dtype=float64"
    if config.integrator != registry.EULER:
        return (f"{config.integrator} found no step at all: try --integrator=euler, the "
                "paper's scheme")
    return "lower --dt0, or check the data and the network (a width of a few units cannot fit)"


def complete_metrics(run_dir: str) -> dict[str, Any] | None:
    """The metrics of the complete, whole run in `run_dir`, or None if it must be (re)done.

    A run whose metrics.json, test outputs or labels are damaged (unreadable, or not the
    files metrics.json vouches for) loses metrics.json, so that it finishes again from its
    final checkpoint, and says so in one line. A damaged dynamics log cannot be rebuilt:
    RunDirError naming it.
    """
    if not artifact.is_complete(run_dir):
        return None
    metrics, bad = artifact.check_whole(run_dir)
    if artifact.DYNAMICS in bad:
        raise artifact.damaged(artifact.join(run_dir, artifact.DYNAMICS),
                               f"its checksum differs from the one in {artifact.METRICS}",
                               f"delete {run_dir} to redo the run")
    if not bad:
        return metrics
    logger.warning("%s: %s damaged; the run finishes again from its final checkpoint",
                   run_dir, ", ".join(bad))
    artifact.remove(artifact.join(run_dir, artifact.METRICS))
    return None


def _train(config: TrainConfig, output_dir: str, task: data.BinaryTask, model: AlphaModel,
           held: lease.Lease, checkpoint_seconds: float,
           extra_callbacks: Sequence[keras.callbacks.Callback], drift_probe: int
           ) -> dict[str, Any]:
    """`train` once this process holds the run's lease."""
    strategy = model.distribute_strategy
    tf.config.experimental.enable_op_determinism()  # a run is a function of its seeds

    with strategy.scope():
        saved = checkpoint.TrainingCheckpoint(model, output_dir, guard=held.check)
        restored = saved.restore()
        resumed = restored is not None
        log_records, wall_offset = restored or (0, 0.0)
        # f(w0), f(w) and y on the training set, which the checkpoint leaves out: one
        # forward pass at the restored point on every replica, in a graph as in
        # `train_step` (eager and graph kernels may round differently: a resumed run must
        # see the very f(w) the uninterrupted one holds).
        model.started.assign(False)
        model.start(task.x_train, task.y_train)
        if resumed:  # start also took ∇L at w; the integrator continues with the one it stored
            saved.restore()
            logger.info("resuming %s from step %d", output_dir, int(model.step_count.numpy()))
    artifact.restore_log(output_dir, log_records)
    last_step = int(model.step_count.numpy()) if resumed else -1

    stopping = callbacks.GradientFlowStopping(
        config.max_time, config.max_steps, config.max_wall_seconds, wall_offset=wall_offset,
        max_epochs=config.epochs or math.inf, advice=divergence_advice(config))
    probe = (summaries.KernelDriftProbe(task.x_train[:drift_probe], task.y_train[:drift_probe])
             if drift_probe > 0 else None)
    tensorboard = summaries.TensorBoardRecorder(
        artifact.join(output_dir, artifact.EVENTS), config, probe, last_step=last_step,
        wall_offset=wall_offset)
    log = callbacks.JsonlLogger(artifact.join(output_dir, artifact.PARTIAL_DYNAMICS),
                                records=log_records, last_step=last_step, wall_offset=wall_offset)
    recorders = [
        log, tensorboard,
        callbacks.ProgressLogger(artifact.join(output_dir, artifact.TRAIN_LOG),
                                 last_step=last_step, wall_offset=wall_offset),
    ]
    checkpointer = callbacks.Checkpointer(
        saved, checkpoint_seconds,
        state=lambda: dict(log_records=log.records, wall_seconds=stopping.wall_seconds()))
    if not resumed:
        for recorder in recorders:
            recorder.set_model(model)
            recorder.record_state(model.train_state())
    stopping.reason = stopping.stop_reason(model.train_state())  # a final checkpoint: done
    if stopping.reason is None:
        with checkpointer.saving_on_signals():
            fit_flow(model, task.x_train, task.y_train,
                     [stopping, *recorders, *extra_callbacks, checkpointer])
    checkpointer.save()  # the final state, and the log complete
    held.check()  # publish only while the run is still this trainer's
    metrics = _finish(config, model, task, output_dir, stopping)
    tensorboard.record_result(metrics)
    return metrics


def _finish(config: TrainConfig, model: AlphaModel, task: data.BinaryTask, output_dir: str,
            stopping: callbacks.GradientFlowStopping) -> dict[str, Any]:
    """Write the final files of the artifact, metrics.json last."""
    state = {k: float(np.asarray(v)) for k, v in model.train_state().items()}
    F_test, test_error, test_loss = evaluate(model, task.x_test, task.y_test,
                                             model.per_pattern_loss)
    output_norm_test, f_norm_test = output_norms(model, task.x_test)
    artifact.write_npy(artifact.join(output_dir, artifact.TEST_OUTPUTS), F_test)
    artifact.write_npy(artifact.join(output_dir, artifact.TEST_LABELS), task.y_test)
    artifact.finish_log(output_dir)
    steps = int(state["step"])
    adam = config.adam()
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
        "dynamics": config.dynamics,
        "learning_rate": adam.learning_rate if adam else None,  # Adam's, in use
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
    metrics[artifact.FILES] = artifact.vouch(output_dir)
    artifact.write_json(artifact.join(output_dir, artifact.METRICS), metrics)
    logger.info("%s: %s after %d steps (%d gradient evaluations, %s), t=%.4g, test error %.4f",
                output_dir,
                "converged" if metrics["converged"] else f"stopped ({stopping.reason})",
                steps, metrics["gradient_evaluations"], config.integrator, metrics["t"],
                test_error)
    return metrics


def finished(metrics: Mapping[str, Any]) -> bool:
    """Whether a run (its metrics.json, or a results row) ended as its dynamics intends:
    at the stopping criterion (every training margin > 1), or, for Adam, after its `epochs`
    (stop_reason max_epochs), a fixed length like the authors' Adam runs, which end at
    every margin > 1 or at their train_time. A run a budget stopped is not finished."""
    return bool(metrics["converged"]) or metrics.get("stop_reason") == "max_epochs"


@dataclasses.dataclass(frozen=True)
class LoadedRun:
    """A complete run reopened: its config, its trained AlphaModel (w and w0) and its data."""
    config: TrainConfig
    model: AlphaModel
    task: "data.BinaryTask"


def load_run(run_dir: str, task: data.BinaryTask | None = None,
             strategy: tf.distribute.Strategy | None = None) -> LoadedRun:
    """Reopen the complete run in `run_dir`, with its data set (loaded unless `task` is given),
    its model built in `strategy` (None: the current one).

    Raises RunDirError if the run is missing or incomplete, or if the data set found now is
    not the one it was trained on (its test labels differ).
    """
    config = artifact.load_config(run_dir)
    task = load_task(config, task)
    artifact.check_complete(run_dir, task.y_test)
    model = build_model(config, task.x_train.shape[1:], strategy)
    with model.distribute_strategy.scope():
        checkpoint.TrainingCheckpoint(model, run_dir).restore(fallback=False)
    return LoadedRun(config, model, task)
