"""Overhead of `RegimeMonitor` on a `model.fit` of a small CNN (issue 10's target: < 10%).

10 000 binary Fashion-MNIST images (28×28×1), 2 epochs of Adam at batch 64 (314 steps),
with and without a 256-point probe recorded 20 times (at w0, at 18 log-spaced steps and at
the end), side by side in one process; each fit starts from the same weights after a
warm-up fit (the monitored fit still traces its own model's per-example gradients).

  python benchmarks/regime_benchmark.py
"""
import time

import keras
import numpy as np

from lazy_feature import data, regime

EPOCHS, BATCH, PROBE, PER_DECADE = 2, 64, 256, 6


def cnn():
    keras.utils.set_random_seed(0)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(8, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(1)])


def fit(x, y, callbacks):
    model = cnn()
    model.compile(optimizer="adam", loss=keras.losses.Hinge())
    start = time.perf_counter()
    model.fit(x, y, epochs=EPOCHS, batch_size=BATCH, shuffle=False, verbose=0,
              callbacks=callbacks)
    return time.perf_counter() - start, model


def main():
    task = data.load_binary_task("fashion_mnist", n_train=10_000, n_test=0)
    x = task.x_train.reshape(-1, 28, 28, 1).astype("float32")
    y = task.y_train.astype("float32")
    warm = regime.RegimeMonitor(x[:PROBE], y[:PROBE], every=PER_DECADE)
    fit(x[:BATCH * 4], y[:BATCH * 4], [warm])  # traces the fit and the per-example gradients
    plain, _ = fit(x, y, [])
    monitor = regime.RegimeMonitor(x[:PROBE], y[:PROBE], every=PER_DECADE)
    monitored, model = fit(x, y, [monitor])
    records = len(monitor.history())
    params = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    print(f"small CNN ({params} parameters), {len(x)} images, {EPOCHS} epochs of batch {BATCH}")
    print(f"fit without the monitor: {plain:.2f} s")
    print(f"fit with the monitor:    {monitored:.2f} s  ({records} records of a {PROBE}-point "
          f"probe, {(monitored - plain) / max(records, 1):.3f} s each)")
    print(f"overhead: {(monitored - plain) / plain:.1%} of the training time (target < 10%)")
    print(monitor.verdict())


if __name__ == "__main__":
    main()
