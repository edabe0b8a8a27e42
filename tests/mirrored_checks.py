"""Runs under MirroredStrategy on 2 logical CPU devices, next to one device, and prints the
figures `test_distribute.test_mirrored_on_two_cpu_devices` judges, as one JSON object.

Its own process: the host CPU must be split before TensorFlow starts its devices.
Usage: python -m tests.mirrored_checks OUTPUT_DIR
"""
import dataclasses
import json
import os
import shutil
import sys

import numpy as np
import tensorflow as tf

from lazy_feature.run import artifact, data
from lazy_feature.run import distribute
from lazy_feature.study import ntk_eval
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import ConfigError
from tests.helpers import StopAtStep, synthetic_task

CONFIG = TrainConfig(n_train=40, n_test=30, width=16, alpha=0.5, dtype="float64", max_steps=120,
                     integrator="bogacki_shampine")
# Adam: 30 points in batches of 8 (3 steps an epoch), each batch spanning both shards of 15.
ADAM = TrainConfig(n_train=30, n_test=30, width=8, alpha=0.5, dtype="float64", dynamics="adam",
                   batch_size=8, learning_rate=0.05)
MOMENTUM = dataclasses.replace(CONFIG, dynamics="momentum", tau=0.5, max_steps=40,
                               integrator="auto")
# ReLU in the feature regime: Euler crosses jumps of ∇L with its half-step probe.
RELU = dataclasses.replace(CONFIG, activation="relu", alpha=0.1, max_steps=150,
                           integrator="auto")


def _run(name, out, task, config=CONFIG, **kwargs):
    metrics = runner.train(config, os.path.join(out, name), task=task, **kwargs)
    return dict(metrics, test_outputs=np.load(
        os.path.join(out, name, artifact.TEST_OUTPUTS)).tolist())


def _saved_state(run_dir):
    """The names of the variables in the run's last checkpoint, and its accepted steps."""
    path = tf.train.latest_checkpoint(os.path.join(run_dir, artifact.CHECKPOINT))
    names = [name for name, _ in tf.train.list_variables(path)]
    return names, int(tf.train.load_variable(path, "model/step_count/.ATTRIBUTES/VARIABLE_VALUE"))


def _killed_at(step, name, out, task, config, strategy):
    """Train `config` under `strategy` and kill it at `step`: only the periodic checkpoint
    (every call here) is on disk. Returns `_saved_state` of its run directory."""
    try:
        runner.train(config, os.path.join(out, name), task=task, strategy=strategy,
                     checkpoint_seconds=0.0,
                     extra_callbacks=[StopAtStep(step, RuntimeError("killed"))])
    except RuntimeError:
        return _saved_state(os.path.join(out, name))
    raise AssertionError(f"{name} ended before its kill at step {step}")


def main(out):
    mirrored = distribute.make("mirrored", cpu_devices=2)
    results = {"replicas": mirrored.num_replicas_in_sync}
    try:
        distribute.split_cpu(3)
    except ConfigError as e:
        results["late_split_error"] = str(e)
    task = synthetic_task(n_train=40, n_test=30)
    results["single"] = _run("single", out, task)
    results["mirrored"] = _run("mirrored", out, task, strategy=mirrored)
    # The default integrator on Fashion-MNIST (n = 400, h = 64) at √h·α = 1 and 1e4: the
    # pair then etdrk4, and etdrk4 throughout; every integrator alone on the synthetic task,
    # in the feature (α = 0.5) and the lazy regime (α = 50).
    fashion = data.load_binary_task("fashion_mnist", None, 400, 200, 0)
    for level in (1.0, 1e4):
        config = TrainConfig(n_train=400, n_test=200, width=64, alpha=level / 8.0,
                             dtype="float64")
        for name, strategy in (("single", "default"), ("mirrored", mirrored)):
            results[f"default_{level:g}_{name}"] = _run(f"default_{level:g}_{name}", out,
                                                        fashion, config, strategy=strategy)
    for integrator in ("rkc", "etdrk4", "bogacki_shampine_rkc"):
        for alpha in (0.5, 50.0):
            config = dataclasses.replace(CONFIG, integrator=integrator, alpha=alpha,
                                         max_steps=300)
            for name, strategy in (("single", "default"), ("mirrored", mirrored)):
                key = f"{integrator}_{alpha:g}_{name}"
                results[key] = _run(key, out, task, config, strategy=strategy)
    # etdrk4 killed at step 20 on the two replicas, and resumed.
    lazy = dataclasses.replace(CONFIG, integrator="etdrk4", alpha=50.0, max_steps=300)
    _, results["etdrk4_saved_step"] = _killed_at(20, "etdrk4_cut", out, task, lazy, mirrored)
    results["etdrk4_resumed"] = _run("etdrk4_cut", out, task, lazy, strategy=mirrored)
    results["saved_names"], results["saved_step"] = _killed_at(40, "cut", out, task, CONFIG,
                                                               mirrored)
    results["resumed"] = _run("cut", out, task, strategy=mirrored)
    # Momentum and Adam on one device against the two replicas (Adam killed mid-epoch at
    # step 10 and resumed from its checkpoint of step 9).
    results["relu_single"] = _run("relu_single", out, task, RELU)
    results["relu_mirrored"] = _run("relu_mirrored", out, task, RELU, strategy=mirrored)
    results["momentum_single"] = _run("momentum_single", out, task, MOMENTUM)
    results["momentum_mirrored"] = _run("momentum_mirrored", out, task, MOMENTUM,
                                        strategy=mirrored)
    adam_task = synthetic_task(n_train=30, n_test=30)
    results["adam_single"] = _run("adam_single", out, adam_task, ADAM)
    _, results["adam_saved_step"] = _killed_at(10, "adam_cut", out, adam_task, ADAM, mirrored)
    results["adam_mirrored"] = _run("adam_cut", out, adam_task, ADAM, strategy=mirrored)
    # The kernels of one run, on one device and spread over the two (tiles of 10 points).
    shutil.copytree(os.path.join(out, "single"), os.path.join(out, "single_ntk_mirrored"))
    for name, strategy in (("single", "default"), ("single_ntk_mirrored", mirrored)):
        ntk = ntk_eval.evaluate(os.path.join(out, name), task=task, save_gram=True,
                                block_size=10, strategy=strategy)
        grams = {f"gram_{when}_{part}": np.load(os.path.join(
            out, name, f"gram_{when}_{part}.npy")).tolist()
            for when in ("init", "final") for part in ("train", "test")}
        results[f"ntk_{name}"] = dict(ntk, **grams)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main(sys.argv[1])
