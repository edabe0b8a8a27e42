"""The NTK evaluation of a finished run: kernel norms and drift (Section 5) and the frozen-kernel
dynamics at initialization and at the end of training (Appendix A, Fig. 8 (c, d)).

Its results are the columns the sweep table and the report use, stored in the run's ntk.json.
"""
import logging

import numpy as np

from lazy_feature.kernel import drift, frozen, ntk
from lazy_feature.run import artifact, distribute, runner

logger = logging.getLogger("lazy_feature")


def _initial_outputs(model, x_train, x_test):
    """F at t = 0 on the training and test points: None (0) for a centered model, α f(w0, x)
    for one trained uncentered (Appendix I), where the frozen-kernel function starts too."""
    if model.centered:
        return None
    return tuple(model.alpha * np.asarray(model.initial_output(x), np.float64)
                 for x in (x_train, x_test))


def evaluate(run_dir, task=None, max_train=None, max_test=None, save_gram=False,
             block_size=None, strategy="default", cpu_devices=None):
    """Add ntk.json to the complete run in `run_dir` and return its contents.

    The drift ‖Θ(w) − Θ(w0)‖/‖Θ(w0)‖ is streamed over the first `max_test` test points and the
    first `max_train` training points (all by default). The frozen-kernel dynamics trains the
    kernel Θ(w1) on the whole training set, with the run's loss, step control and budgets of
    time and accepted steps, for w1 = w0 (the lazy limit's kernel) and w1 = w (the learned
    kernel), from the function the network started from (0, or α f(w0) for an uncentered
    run), and predicts the same test points. With `save_gram`, the Gram matrices on those
    points are stored as .npy too.
    A run that already has ntk.json is not evaluated again. `strategy` and `cpu_devices`
    as in `runner.train`: a MirroredStrategy spreads the kernel tiles over its replicas.
    """
    distribute.check_precision(strategy, [artifact.load_config(run_dir)])
    strategy = distribute.make(strategy, cpu_devices=cpu_devices)
    path = artifact.join(run_dir, artifact.NTK)
    if artifact.exists(path):
        return artifact.read_json(path)
    with strategy.scope():
        results = _evaluate(run_dir, task, max_train, max_test, save_gram, block_size)
    artifact.write_json(path, results)
    logger.info("%s: kernel drift %.3g (test), frozen-kernel test error %.4f at init, %.4f at "
                "the end", run_dir, results["ntk_drift_test"], results["frozen_init_test_error"],
                results["frozen_final_test_error"])
    return results


def _evaluate(run_dir, task, max_train, max_test, save_gram, block_size):
    """`evaluate`'s results, in the current strategy, with the .npy files written."""
    loaded = runner.load_run(run_dir, task)
    config, model, task = loaded.config, loaded.model, loaded.task
    x_train, x_test = task.x_train[:max_train], task.x_test[:max_test]
    y_test = task.y_test[:max_test]
    results = {"ntk_n_train": len(x_train), "ntk_n_test": len(x_test)}
    for name, x in (("train", x_train), ("test", x_test)):
        norms = drift.kernel_drift(model, x, block_size) if len(x) else {}
        results.update({f"ntk_norm0_{name}": norms.get("norm0", np.nan),
                        f"ntk_norm_{name}": norms.get("norm", np.nan),
                        f"ntk_drift_{name}": norms.get("drift", np.nan)})
    dynamics = dict(loss=config.loss, loss_beta=config.loss_beta, flow=config.flow(),
                    max_time=config.max_time, max_steps=config.max_steps,
                    initial_outputs=_initial_outputs(model, task.x_train, x_test))
    for when, network in (("init", model.initial_network), ("final", model.network)):
        kernel_flow = frozen.frozen_kernel_test_error(network, task.x_train, task.y_train,
                                                      x_test, y_test, block_size, **dynamics)
        results.update({f"frozen_{when}_test_error": kernel_flow["test_error"],
                        f"frozen_{when}_steps": kernel_flow["steps"],
                        f"frozen_{when}_t": kernel_flow["t"],
                        f"frozen_{when}_converged": kernel_flow["converged"]})
        artifact.write_npy(artifact.join(run_dir, f"frozen_{when}_test_outputs.npy"),
                           kernel_flow["test_outputs"])
        if save_gram:
            for name, x in (("train", x_train), ("test", x_test)):
                artifact.write_npy(artifact.join(run_dir, f"gram_{when}_{name}.npy"),
                                   ntk.gram(network, x, block_size=block_size))
    return results


# Fig. 8 (a, b): the Gram matrices of a probe of the test set, sorted by label.
GRAM_INIT, GRAM_END, GRAM_LABELS = "gram_init.npy", "gram_end.npy", "gram_labels.npy"


def label_order(y):
    """The indices that sort ±1 labels y = +1 first, each class in its original order (Fig. 8:
    "the first half of the indices has label y = 1")."""
    return np.argsort(-np.asarray(y), kind="stable")


def save_gram_probe(run_dir, task=None, n_probe=500, block_size=None):
    """Store Θ(w0) and Θ(w) on the first `n_probe` test points of the complete run in `run_dir`,
    sorted by label (`label_order`), as gram_init.npy and gram_end.npy, and their labels in that
    order as gram_labels.npy (Fig. 8 (a, b)), in the current strategy. A run that has them
    keeps them. Returns the three paths.
    """
    paths = [artifact.join(run_dir, name) for name in (GRAM_INIT, GRAM_END, GRAM_LABELS)]
    if all(artifact.exists(p) for p in paths):
        return paths
    loaded = runner.load_run(run_dir, task)
    order = label_order(loaded.task.y_test[:n_probe])
    x = loaded.task.x_test[:n_probe][order]
    for path, network in zip(paths, (loaded.model.initial_network, loaded.model.network)):
        artifact.write_npy(path, ntk.gram(network, x, block_size=block_size))
    artifact.write_npy(paths[2], loaded.task.y_test[:n_probe][order])
    return paths
