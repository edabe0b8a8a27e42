"""One point of a sweep's grid: its run trained, its NTK evaluated and its row written
(`execute_run`), under the run's lease, so that two sweeps, two Beam workers or a retried
bundle never train it at once (`lazy_feature.run.lease`).

A sweep directory holds runs/<run_id>/ (the run artifact) and rows/<run_id>.json (its row:
config, metrics, observables and NTK scalars, written last and atomically, so a row exists
exactly for each finished run).
"""
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from lazy_feature.errors import DivergenceError, RunDirError
from lazy_feature.flow import training
from lazy_feature.run import artifact, distribute, lease, runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask
from lazy_feature.study import fidelity as flow_fidelity, ntk_eval, observables, velocity as z_dot

if TYPE_CHECKING:
    import tensorflow as tf

logger = logging.getLogger("lazy_feature")

RUNS, ROWS = "runs", "rows"
TASKS: dict[tuple[Any, ...], BinaryTask] = {}  # data sets loaded in this process, by settings


def task_for(config: TrainConfig) -> BinaryTask:
    """The data set of `config`, loaded once per process (`TASKS`)."""
    key = (config.dataset, config.data_dir, config.n_train, config.n_test, config.data_seed,
           config.pca, config.pca_whiten, config.architecture)
    if key not in TASKS:
        TASKS[key] = runner.load_task(config)
    return TASKS[key]


def _limit_threads(threads: int | None) -> None:
    """Give TensorFlow `threads` threads in this process, if it has not started yet."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel
    if threads and tf.config.threading.get_intra_op_parallelism_threads() != threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # TensorFlow already runs: keep its pools
            pass


def row_path(output_dir: str, run_id: str) -> str:
    return artifact.join(output_dir, ROWS, f"{run_id}.json")


def appendix_observables(run_dir: str, task: BinaryTask, velocity: bool = False,
                         velocity_max_test: int | None = None, fidelity: bool = False,
                         gram_probe: int = 0, strategy: "tf.distribute.Strategy | str | None" = None
                         ) -> dict[str, Any]:
    """The columns of the appendices' observables of the complete run in `run_dir` that are
    asked for (`SweepConfig`); each is stored in the run directory, so a rerun reads it.
    `fidelity` checks gradient-flow runs only (momentum runs are compared with each other,
    Fig. 13 (b, d))."""
    columns = {}
    if velocity:
        columns.update(z_dot.evaluate(run_dir, task, velocity_max_test))
    if fidelity and artifact.load_config(run_dir).dynamics == training.GRADIENT_FLOW:
        columns.update(flow_fidelity.check_run(run_dir, task))
    if gram_probe:
        with distribute.make(strategy or "default").scope():
            ntk_eval.save_gram_probe(run_dir, task, gram_probe)
    return columns


def execute_run(config: TrainConfig | dict[str, Any], output_dir: str, ntk: bool = True,
                ntk_max_train: int | None = None, ntk_max_test: int | None = None,
                threads: int | None = None, strategy: "tf.distribute.Strategy | str" = "default",
                strategy_options: Mapping[str, Any] | None = None,
                appendix: Mapping[str, Any] | None = None, wait: bool = True) -> dict[str, Any]:
    """Train one grid point, evaluate its NTK, and write its row; return the row.

    A point that already has a row returns it. The run's lease is held throughout
    (`lease.held`): a point another trainer holds is waited for (`wait`), or raises
    lease.Busy (`wait` False). A run that diverges gets a row with
    status "diverged" and its error, so that the sweep goes on and the table shows it.
    `config` may be a TrainConfig or its dict (what Beam sends to a worker); `strategy`
    is a tf.distribute.Strategy, or a name that `distribute.make` makes with
    `strategy_options` (devices, cpu_devices, tpu) once per process (in a Beam worker);
    `appendix`: the keyword arguments of `appendix_observables` (none by default).
    """
    if isinstance(config, dict):
        config = TrainConfig.from_dict(config)
    run_id = config.run_id()
    run_dir = artifact.join(output_dir, RUNS, run_id)
    row = read_row(output_dir, run_id)
    if row is not None:
        return row
    with lease.held(run_dir, wait=wait):  # one trainer per run (two sweeps, retried bundles)
        row = read_row(output_dir, run_id)  # the other trainer's, if one held the run
        if row is not None:
            return row
        _limit_threads(threads)
        strategy = distribute.make(strategy, **(strategy_options or {}))
        task = task_for(config)
        row = dict(config.to_dict(), run_id=run_id, run_dir=artifact.join(RUNS, run_id))
        try:
            metrics = runner.train(config, run_dir, task=task, strategy=strategy)
        except DivergenceError as e:
            logger.warning("%s diverged: %s", run_id, e)
            row.update(status="diverged", error=str(e))
        else:
            row.update({k: v for k, v in metrics.items() if k != artifact.FILES}, status="done")
            row.update(observables.observables(run_dir))
            if ntk:
                row.update(ntk_eval.evaluate(run_dir, task=task, max_train=ntk_max_train,
                                             max_test=ntk_max_test, strategy=strategy))
            row.update(appendix_observables(run_dir, task, strategy=strategy, **(appendix or {})))
        artifact.makedirs(artifact.join(output_dir, ROWS))
        artifact.write_json(row_path(output_dir, run_id), row)
    return row


def read_row(output_dir: str, run_id: str) -> dict[str, Any] | None:
    """The row of run `run_id`, or None when it has none yet.

    A damaged row (not valid JSON) is deleted, saying so in one line, so that the run's row
    is made again from its run directory (which the train stage finds complete).
    """
    path = row_path(output_dir, run_id)
    if not artifact.exists(path):
        return None
    try:
        return artifact.read_json(path)
    except RunDirError as e:
        logger.warning("%s; it is made again from %s", e, artifact.join(RUNS, run_id))
        artifact.remove(path)
        return None
