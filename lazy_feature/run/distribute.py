"""Where the flow runs: a tf.distribute strategy chosen by name, and logical CPU devices that
let anyone run a multi-replica strategy without an accelerator.

Strategies (`STRATEGIES`):
  default       one device (TensorFlow's default strategy);
  mirrored      tf.distribute.MirroredStrategy over the local GPUs, the devices given, or the
                logical CPU devices of `cpu_devices`;
  multi_worker  tf.distribute.MultiWorkerMirroredStrategy over the cluster that the TF_CONFIG
                environment variable describes;
  tpu           tf.distribute.TPUStrategy on the TPU a TPUClusterResolver finds (`tpu` names
                it; "" is the local one or the TPU_NAME of the environment).
A model built inside `strategy.scope()` (`runner.build_model`) keeps its strategy: its flow
splits the training set over the replicas (`alpha_model.AlphaModel`).

TPUs have no float64. The default runs every α in float32 (`precision`: the difference form
where the direct form would need float64), so only a TPU run given float64 is refused, before
anything starts (`check_precision`). A TPU that cannot be found is a one-line error too.
"""
import json
import os
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.model import difference, precision

if TYPE_CHECKING:
    from lazy_feature.run.config import TrainConfig

STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
# Strategies made by this process, by their arguments: a sweep makes one.
_MADE: dict[tuple[Any, ...], tf.distribute.Strategy] = {}


def split_cpu(count: int) -> None:
    """Split the host CPU into `count` logical devices (tf.config), before TensorFlow starts.

    Raises ConfigError if TensorFlow has already initialized its devices with another count.
    """
    if count < 1:
        raise ConfigError(f"cpu_devices must be >= 1, got {count}")
    cpu = tf.config.list_physical_devices("CPU")[0]
    try:
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)])
    except RuntimeError as e:  # devices initialized: fine if they are already split this way
        have = len(tf.config.list_logical_devices("CPU"))
        if have != count:
            raise ConfigError(
                f"cpu_devices={count} comes too late: TensorFlow already runs on {have} CPU "
                "device(s); give it before TensorFlow starts (first thing in the process)") from e


def check_precision(strategy: tf.distribute.Strategy | str,
                    configs: Iterable["TrainConfig"]) -> None:
    """Refuse, before any TPU is reached, a `tpu` run in float64.

    `strategy` is a name of STRATEGIES or a tf.distribute.Strategy; `configs` the TrainConfigs
    of the runs. The difference form (the default) runs every α in float32; in the direct
    form the error names the largest α that float32 resolves at that width.
    """
    if not (strategy == "tpu" or isinstance(strategy, tf.distribute.TPUStrategy)):
        return
    for config in configs:
        if config.dtype != "float64":
            continue
        if config.form == difference.DIFFERENCE:
            advice = "leave --dtype unset: float32 resolves any alpha in the difference form"
        else:
            largest = precision.largest_alpha(
                "float32", precision.resolution_width(config.architecture, config.width),
                difference.DIRECT)
            advice = (f"the largest alpha --form=direct resolves in float32 at width "
                      f"{config.width} is {largest:.3g} (sqrt(h)*alpha = "
                      f"{largest * np.sqrt(config.width):.3g}): leave --form unset (the "
                      "difference form resolves any alpha in float32)")
        raise ConfigError(f"TPUs have no float64 and alpha={config.alpha:g} at "
                          f"width={config.width} runs in float64: {advice}, or use "
                          "--strategy=mirrored on GPUs")


def _cluster() -> dict[str, Any]:
    """TF_CONFIG, checked: a JSON object with a cluster and this process's task in it."""
    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise ConfigError("--strategy=multi_worker needs the TF_CONFIG environment variable "
                          "(cluster and task of this worker, see tf.distribute docs)")
    try:
        spec = json.loads(raw)
    except json.JSONDecodeError as e:
        raise ConfigError(f"TF_CONFIG is not valid JSON ({e.msg} at character {e.pos})") from e
    cluster = spec.get("cluster") if isinstance(spec, dict) else None
    task = spec.get("task") if isinstance(spec, dict) else None
    if not isinstance(cluster, dict) or not cluster or not isinstance(task, dict):
        raise ConfigError('TF_CONFIG needs "cluster" (job -> addresses) and "task" '
                          '(type, index) for --strategy=multi_worker')
    addresses = cluster.get(task.get("type"))
    if not isinstance(addresses, list) or not 0 <= task.get("index", -1) < len(addresses):
        raise ConfigError(f"TF_CONFIG's task {task} is not in its cluster {cluster}")
    return spec


def check_name(strategy: object) -> None:
    """Raise ConfigError unless `strategy` is one of STRATEGIES."""
    if not (isinstance(strategy, str) and strategy in STRATEGIES):
        raise ConfigError(f"unknown strategy {strategy!r}: choose one of "
                          f"{', '.join(STRATEGIES)}")


def make(strategy: tf.distribute.Strategy | str = "default", devices: Sequence[str] | None = None,
         cpu_devices: int | None = None, tpu: str = "") -> tf.distribute.Strategy:
    """The tf.distribute strategy called `strategy` (one of STRATEGIES), or `strategy` itself
    if it is a tf.distribute.Strategy already.

    Args:
      devices: the devices of `mirrored` (e.g. ["/gpu:0", "/gpu:1"]); None for every local
        GPU, or the logical CPU devices when `cpu_devices` is given.
      cpu_devices: split the host CPU into this many logical devices first (`split_cpu`).
      tpu: the TPU of `tpu` (name or grpc:// address; "" for the local or TPU_NAME's).
    Raises ConfigError for an unknown name, a late cpu_devices or a missing TF_CONFIG.
    """
    if isinstance(strategy, tf.distribute.Strategy):
        return strategy
    check_name(strategy)
    key = (strategy, tuple(devices or ()), cpu_devices, tpu)
    if key not in _MADE:
        if cpu_devices is not None:
            split_cpu(cpu_devices)
        if strategy == "default":
            made = tf.distribute.get_strategy()
        elif strategy == "mirrored":
            if not devices and cpu_devices is not None:
                devices = [d.name for d in tf.config.list_logical_devices("CPU")]
            made = tf.distribute.MirroredStrategy(devices=list(devices) if devices else None)
        elif strategy == "multi_worker":
            _cluster()
            made = tf.distribute.MultiWorkerMirroredStrategy()
        else:
            try:
                resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
            except ValueError as e:  # none named, none local, no TPU_NAME
                raise ConfigError(f"--strategy=tpu found no TPU ({e}): give --tpu=NAME or a "
                                  "grpc:// address, or run on a TPU VM") from e
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            made = tf.distribute.TPUStrategy(resolver)
        _MADE[key] = made
    return _MADE[key]
