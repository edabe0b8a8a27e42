"""RegimeMonitor and alpha_scan.scan under MirroredStrategy on 2 logical CPU devices, next to one
device: prints the figures `test_regime.test_monitor_and_scan_under_a_mirrored_strategy`
judges, as one JSON object.

Its own process: the host CPU must be split before TensorFlow starts its devices.
Usage: python -m tests.mirrored_regime
"""
import json
import os
import pathlib
import sys
import tempfile

import keras
import numpy as np
import pandas as pd

from lazy_feature.run import distribute
from lazy_feature.probe import alpha_scan
from lazy_feature.probe import regime
from lazy_feature.flow.dynamics import GradientFlow
from tests import probe_models
from tests.helpers import stage_in_process, write_class_template_mnist

_RNG = np.random.default_rng(0)
_X = _RNG.standard_normal((96, 8))
_Y = np.sign(_X[:, 3] + 0.1)
TASK = (_X[:48], _Y[:48], _X[48:], _Y[48:])  # 48 training points: 24 per replica


def _fit(strategy):
    """A plain Keras fit of a small CNN (float64) compiled and fitted in the strategy's
    scope, monitored; its kernel drifts."""
    x = np.random.default_rng(1).standard_normal((64, 8, 8, 1))
    y = np.sign(x[:, 3, 3, 0])
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = probe_models.cnn("float64")
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
        monitor = regime.RegimeMonitor(x[:16], y[:16], every=2)
        model.fit(x[:32], y[:32, None], epochs=3, batch_size=8, verbose=0, shuffle=False,
                  callbacks=[monitor])
    return monitor.history()


def _scans(strategy):
    """Kernel drift and test error of a float64 MLP's scan at one α by gradient flow (the
    stage below runs scan by SGD under the strategy)."""
    flow = alpha_scan.scan(probe_models.mlp64, TASK, alphas=(0.1,), probe_size=8, max_steps=10,
                           flow=GradientFlow(max_dgrad=1e-1, max_dout=0.3, grow=1.5),
                           frozen_kernel=False, strategy=strategy)
    return {"flow": {k: flow.table[k].tolist() for k in ("kernel_drift", "test_error", "steps")}}


def _stage(tmp):
    """The probe stage by SGD under --strategy=mirrored: its exit status and summary."""
    data_dir, out = pathlib.Path(tmp) / "mnist", os.path.join(tmp, "scan")
    write_class_template_mnist(data_dir, per_class_train=6, per_class_test=4)
    stage = stage_in_process(
        "probe", "--model=tests.probe_models:mlp64", f"--output_dir={out}", "--dataset=mnist",
        f"--data_dir={data_dir}", "--n_train=40", "--n_test=20", "--alphas=0.1",
        "--probe_size=8", "--optimizer=sgd", "--learning_rate=0.01", "--epochs=1",
        "--batch_size=8", "--strategy=mirrored", "--cpu_devices=2")
    if stage.returncode:
        return {"returncode": stage.returncode, "stderr": stage.stderr[-3000:]}
    return {"returncode": 0, "rows": len(pd.read_csv(os.path.join(out, alpha_scan.TABLE)))}


def main():
    mirrored = distribute.make("mirrored", cpu_devices=2)
    results = {"replicas": mirrored.num_replicas_in_sync}
    for name in ("default", "mirrored"):
        strategy = distribute.make(name, cpu_devices=2)  # the same mirrored object as above
        history = _fit(strategy)
        results[name] = {k: history[k].tolist() for k in ("step", "kernel_drift",
                                                          "weight_drift", "alignment")}
        results[name]["scan"] = _scans(strategy)
    with tempfile.TemporaryDirectory() as tmp:
        results["stage"] = _stage(tmp)
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
