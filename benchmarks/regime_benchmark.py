"""Overhead of `RegimeMonitor` on a `model.fit` of a small CNN (issue 10's target: < 10%).

10 000 binary Fashion-MNIST images (28×28×1), Adam at batch 64, without and with a 256-point
probe recorded at least 20 times (at w0, at log-spaced steps and at the end), side by side in one process on the same model and data: a warm-up fit traces
Keras's train step first, and each timed fit starts from the same weights and optimizer
state. The two fits alternate ROUNDS times and the fastest of each is compared (the machine
is shared: the minimum is the least disturbed). The monitor's one-time setup at train begin
(its trial pass, the trace of its probe pass, Θ(w0), f(w0)) and its records are timed inside
the monitored fit, and the overhead is given with and without that setup; the setup's first
probe pass, which traces the graph, is timed apart.

The issue fixes 10 000 images and 20 records, not the fit's length, while the records' cost
is fixed and the fit's grows with its length: the benchmark measures a short fit (2 epochs)
and a usual one (10 epochs) side by side (`--epochs`), with the schedule (records per decade)
that gives at least 20 records in each, and prints, from the costs in training steps (which
the machine's load scales alike), the fit length at which the records cost 10%.

  python benchmarks/regime_benchmark.py [--epochs=2,10]
"""
import argparse
import time

import keras
import numpy as np

from lazy_feature.run import callbacks
from lazy_feature.run import data
from lazy_feature.probe import regime

BATCH, PROBE, RECORDS, ROUNDS = 64, 256, 20, 3


class TimedMonitor(regime.RegimeMonitor):
    """A RegimeMonitor that times its train-begin setup and its per-batch hooks."""

    setup = hooks = first_probe = 0.0

    def _start(self):
        # The first probe pass is the live drift's start at w0 (f(w0), Θ(w0)): it traces the
        # probe's graph and runs it once.
        live_start = self.live.start

        def timed_start(network):
            start = time.perf_counter()
            result = live_start(network)
            self.first_probe = time.perf_counter() - start
            return result

        self.live.start = timed_start
        try:
            super()._start()
        finally:
            self.live.start = live_start

    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        super().on_train_begin(logs)
        self.setup += time.perf_counter() - start

    def on_train_batch_begin(self, batch, logs=None):
        start = time.perf_counter()
        super().on_train_batch_begin(batch, logs)
        self.hooks += time.perf_counter() - start

    def on_train_end(self, logs=None):
        start = time.perf_counter()
        super().on_train_end(logs)
        self.hooks += time.perf_counter() - start


def cnn():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss=keras.losses.Hinge())
    model.optimizer.build(model.trainable_variables)
    return model


def records_per_decade(steps, records=RECORDS):
    """The fewest records per decade (`callbacks.is_log_step`) that give at least `records`
    records over a fit of `steps` steps (w0, the log-spaced steps and the last)."""
    for every in range(1, 100):
        logged = sum(callbacks.is_log_step(s, every) for s in range(1, steps + 1))
        if 1 + logged + (not callbacks.is_log_step(steps, every)) >= records:
            return every
    raise ValueError(f"no schedule gives {records} records in {steps} steps")


def measure(model, start_state, x, y, epochs):
    """Print the fits' times with and without the monitor, and its costs, at `epochs`; every
    fit starts from `start_state` (the model's and its optimizer's variables)."""

    def fit(callbacks, n=len(x)):
        for variables, values in zip((model.variables, model.optimizer.variables), start_state):
            for variable, value in zip(variables, values):
                variable.assign(value)
        start = time.perf_counter()
        model.fit(x[:n], y[:n], epochs=epochs, batch_size=BATCH, shuffle=False, verbose=0,
                  callbacks=callbacks)
        return time.perf_counter() - start

    steps = epochs * -(-len(x) // BATCH)
    every = records_per_decade(steps)
    fit([], n=4 * BATCH)  # warm-up: traces Keras's train step
    plain, runs = [], []
    for _ in range(ROUNDS):
        plain.append(fit([]))
        monitor = TimedMonitor(x[:PROBE], y[:PROBE], every=every)
        runs.append((fit([monitor]), monitor))
    plain = min(plain)
    monitored, monitor = min(runs, key=lambda run: run[0])
    records = len(monitor.history())
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    step = plain / steps
    each = monitor.hooks / (records - 1)
    print(f"small CNN ({params} parameters), {len(x)} images, {epochs} epochs of batch {BATCH} "
          f"({steps} steps); fastest of {ROUNDS} alternating fits each")
    print(f"fit without the monitor: {plain:.2f} s ({step * 1e3:.1f} ms a step)")
    print(f"fit with the monitor:    {monitored:.2f} s  ({records} records of a {PROBE}-point "
          f"probe, {every} a decade)")
    print(f"  setup at train begin (trial pass, trace, Θ(w0), first record): "
          f"{monitor.setup:.2f} s, of which the first probe pass (trace and run) "
          f"{monitor.first_probe:.2f} s")
    print(f"  the other {records - 1} records: {monitor.hooks:.2f} s, {each * 1e3:.0f} ms each "
          f"= {each / step:.1f} training steps")
    overhead = monitored - plain
    print(f"overhead: {overhead / plain:.1%} of the training time (target < 10%); "
          f"{(overhead - monitor.setup) / plain:.1%} without the one-time setup")
    fixed = (monitor.setup + monitor.hooks) / step  # the monitor's cost in training steps
    print(f"the monitor's {records} records cost {fixed:.0f} training steps in all: 10% of a "
          f"fit of {10 * fixed:.0f} steps ({10 * fixed / (steps / epochs):.1f} epochs)")
    return monitor


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", default="2,10",
                        help="the fits' lengths in epochs, separated by commas")
    lengths = [int(e) for e in parser.parse_args().epochs.split(",")]
    task = data.load_binary_task("fashion_mnist", n_train=10_000, n_test=0)
    x = task.x_train.reshape(-1, 28, 28, 1).astype("float32")
    y = task.y_train.astype("float32")
    model = cnn()
    start_state = [[v.numpy() for v in variables]
                   for variables in (model.variables, model.optimizer.variables)]
    for epochs in lengths:
        monitor = measure(model, start_state, x, y, epochs)
        print()
    print(monitor.verdict())


if __name__ == "__main__":
    main()
