"""Ensembles of networks trained from independent initializations (Section 4).

The members F_i(x) = α[f(w_i, x) − f(w_{i,0}, x)] of an ensemble differ only by their
initial weights. Their average F̄ (eq. 15) removes the fluctuations δF = F_i − F̄, whose
size Var F (eq. 16) decays as 1/h in both regimes (eq. 17).
"""
import dataclasses
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from lazy_feature.errors import ConfigError
from lazy_feature.model import losses
from lazy_feature.run import artifact, distribute, progress, runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask

if TYPE_CHECKING:
    import tensorflow as tf

VAR_F_ESTIMATOR = "unbiased (N - 1)"


def ensemble_statistics(outputs: npt.ArrayLike, labels: npt.ArrayLike) -> dict[str, Any]:
    """Single-network and ensemble-averaged performance and the fluctuations of F.

    Args:
      outputs: shape (N, P), F_i(x_μ) of N members on P test points.
      labels: shape (P,), the ±1 test labels.

    Returns a dict with
      n_members: N;
      test_errors: shape (N,), the test error of each member;
      mean_test_error, std_test_error: their mean and sample standard deviation (ddof=1,
        NaN for one member);
      ensemble_test_error: the test error of sign F̄, F̄ = mean over members (eq. 15);
      var_F: eq. 16 with the unbiased estimator: Σ_i,μ (F_i(x_μ) − F̄(x_μ))² / ((N − 1) P),
        since F̄ is itself estimated from the N members (eq. 16 read literally divides by N,
        20% low at N = 5); NaN for one member;
      var_F_estimator: "unbiased (N - 1)", said beside the number wherever it is stored.
    NaN outputs count as errors and make var_F NaN.
    """
    outputs = np.asarray(outputs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    if outputs.ndim != 2 or labels.shape != outputs.shape[1:]:
        raise ValueError(f"need outputs of shape (N, P) and labels of shape (P,), got "
                         f"{outputs.shape} and {labels.shape}")
    if not np.all(np.abs(labels) == 1):
        raise ValueError("labels must be ±1")
    n = outputs.shape[0]
    if n == 0:
        raise ValueError("an ensemble needs at least one member")
    mean_output = outputs.mean(axis=0)  # F̄, eq. 15
    errors = losses.error_rate(outputs, labels)
    squares = float(np.sum(np.square(outputs - mean_output)))  # eq. 16, summed
    return {
        "n_members": n,
        "test_errors": errors,
        "mean_test_error": float(errors.mean()),
        "std_test_error": float(errors.std(ddof=1)) if n > 1 else float("nan"),
        "ensemble_test_error": float(losses.error_rate(mean_output, labels)),
        "var_F": squares / ((n - 1) * outputs.shape[1]) if n > 1 else float("nan"),
        "var_F_estimator": VAR_F_ESTIMATOR,
    }


def load_member_outputs(run_dirs: Iterable[str]) -> tuple[np.ndarray, np.ndarray]:
    """Stack test_outputs.npy of several runs: returns (outputs of shape (N, P), labels).

    Raises ValueError unless every run was evaluated on the same test labels, in the
    same order.
    """
    run_dirs = list(run_dirs)
    if not run_dirs:
        raise ValueError("no run directories given")
    labels = artifact.read_run_npy(run_dirs[0], artifact.TEST_LABELS)
    outputs = []
    for run_dir in run_dirs:
        member_labels = artifact.read_run_npy(run_dir, artifact.TEST_LABELS)
        if not np.array_equal(member_labels, labels):
            raise ValueError(f"{run_dir} was evaluated on other test labels than {run_dirs[0]} "
                             "(another test set, size or order): they cannot form an ensemble")
        member = artifact.read_run_npy(run_dir, artifact.TEST_OUTPUTS)
        if member.shape != labels.shape:
            raise ValueError(f"{run_dir}: test_outputs.npy has shape {member.shape}, "
                             f"test_labels.npy {labels.shape}")
        outputs.append(member)
    return np.stack(outputs).astype(np.float64), labels


ENSEMBLE = "ensemble.json"
MEAN_OUTPUTS = "mean_test_outputs.npy"


def summarize(run_dirs: Iterable[str]) -> tuple[dict[str, Any], np.ndarray]:
    """`ensemble_statistics` of complete runs, as JSON-ready scalars, and F̄ on the test set.

    Returns (summary dict, F̄ of shape (P,)); summary holds every scalar of
    `ensemble_statistics` and test_errors as a list.
    """
    outputs, labels = load_member_outputs(run_dirs)
    stats = ensemble_statistics(outputs, labels)
    summary = dict(stats, test_errors=[float(e) for e in stats["test_errors"]])
    return summary, outputs.mean(axis=0)


def member_configs(config: TrainConfig, seeds: Iterable[int]) -> list[TrainConfig]:
    """The members of an ensemble at one (α, h): `config` with each init seed in turn."""
    seeds = list(seeds)
    if len(set(seeds)) != len(seeds) or not seeds:
        raise ConfigError(f"an ensemble needs distinct init seeds, got {seeds}")
    return [dataclasses.replace(config, init_seed=int(seed)) for seed in seeds]


def train_ensemble(config: TrainConfig, seeds: Iterable[int], output_dir: str,
                   task: BinaryTask | None = None, progress_stream: IO[str] | None = None,
                   strategy: "tf.distribute.Strategy | str" = "default",
                   cpu_devices: int | None = None) -> dict[str, Any]:
    """Train one network per init seed at `config`'s (α, h) on one data set (Section 4).

    Members are ordinary run artifacts in output_dir/members/<run_id> (a rerun skips the
    finished ones and resumes a killed one); ensemble.json holds `summarize`'s statistics
    with alpha, width, sqrt_h_alpha and the member run ids, mean_test_outputs.npy holds F̄
    (eq. 15). `progress_stream`, if given, shows members done and ETA (`progress.Display`).
    `strategy` and `cpu_devices` as in `runner.train`, for every member.
    Returns the ensemble.json dict.
    """
    configs = member_configs(config, seeds)
    distribute.check_precision(strategy, configs)
    strategy = distribute.make(strategy, cpu_devices=cpu_devices)
    task = runner.load_task(config, task)
    run_ids = [member.run_id() for member in configs]
    run_dirs = [artifact.join(output_dir, "members", run_id) for run_id in run_ids]
    with progress.shown([artifact.join(d, artifact.METRICS) for d in run_dirs], progress_stream,
                        "members", failed=lambda metrics: not runner.finished(metrics),
                        failures="unconverged"):
        for member, run_dir in zip(configs, run_dirs):
            runner.train(member, run_dir, task=task, strategy=strategy)
    summary, mean_output = summarize(run_dirs)
    summary.update(alpha=config.alpha, width=config.width, sqrt_h_alpha=config.sqrt_h_alpha,
                   members=run_ids)
    artifact.write_npy(artifact.join(output_dir, MEAN_OUTPUTS), mean_output)
    artifact.write_json(artifact.join(output_dir, ENSEMBLE), summary)
    return summary
