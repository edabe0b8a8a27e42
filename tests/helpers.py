"""Helpers the test modules share, imported as `from tests.helpers import ...`.

Sections, in this order:
- inputs and tasks: `sphere_inputs`, `synthetic_task`, `small_task`;
- data files in the released formats (IDX, EMNIST, CIFAR10 pickles): `write_idx`,
  `write_mnist_dir`, `class_template_images` and the `write_class_template_*` folders;
- a linear model's gradient flow, solvable exactly: `X`, `Y`, `exact_outputs`, `LinearFlow`,
  `stiff_linear_flow`;
- runs: `StopAtStep` (a kill or a signal at a given step), `checkpoint_step`, `synthetic_sweep`;
- the stage binaries: `run_stage` (a new process), `stage_in_process`, `stage_module`.

Fixtures and pytest hooks live in conftest.py; test modules import nothing from each other.
"""
import contextlib
import dataclasses
import gzip
import io
import logging
import os
import pickle
import runpy
import signal
import struct
import subprocess
import sys
import tempfile
import traceback

import keras
import numpy as np
import tensorflow as tf
from absl import flags
from absl import logging as absl_logging

from lazy_feature.flow import integrators, registry
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.run import checkpoint
from lazy_feature.run import data
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.study import sweep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# Inputs and tasks

def sphere_inputs(n, d, seed):
    """n Gaussian inputs put on the sphere Σ x_i² = d (the paper's normalization)."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


def synthetic_task(n_train=80, n_test=60, seed=4):
    """A binary task on 12-dimensional `sphere_inputs`, labelled by the sign of a linear form."""
    x = sphere_inputs(n_train + n_test, 12, seed=seed)
    y = np.sign(x[:, 0] - 0.3 * x[:, 2])
    return data.BinaryTask(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                           np.zeros(n_train, int), np.zeros(n_test, int))


def tight_reference(config, scale=1.0):
    """A reference flow far finer than the paper's scheme for `config`: Dormand–Prince at
    output_tol 1e-9·scale in float64, stopping within 1e-8 of the criterion (its own error on
    `small_task`, against scale 0.1, is ~2e-9: a millionth of Euler's deviation)."""
    return dataclasses.replace(config, integrator="dormand_prince", dtype="float64",
                               output_tol=1e-9 * scale, direction_tol=1e-8 * scale,
                               landing_tol=1e-8)


def relative_distance(outputs, reference_outputs):
    """‖F − F_ref‖ / ‖F_ref‖ (fidelity's output deviation)."""
    return float(np.linalg.norm(np.asarray(outputs) - reference_outputs)
                 / np.linalg.norm(reference_outputs))


def small_task(n_train=10, n_test=200, seed=3):
    """A binary task on 8-dimensional `sphere_inputs`: few training points, many test points."""
    x = sphere_inputs(n_train + n_test, 8, seed=seed)
    y = np.sign(x[:, 0] - 0.4 * x[:, 1] + 0.2 * x[:, 2])
    return data.BinaryTask(x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                           np.zeros(n_train, int), np.zeros(n_test, int))


# Data files in the released formats

MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float64"): 0x0E}


def idx_bytes(array):
    """The IDX encoding of `array` (big-endian header and data)."""
    array = np.asarray(array)
    header = bytes([0, 0, IDX_CODES[array.dtype], array.ndim])
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path, array, gz=True):
    blob = idx_bytes(array)
    path.write_bytes(gzip.compress(blob) if gz else blob)
    return path


MNIST_DIR_CLASSES = 10  # the classes of `write_mnist_dir`
MNIST_DIR_PER_CLASS = (8, 4)  # its train and test images of each class


def write_mnist_dir(path, gz=True, names=MNIST_FILES, transpose=False):
    """Four IDX files of MNIST_DIR_CLASSES classes, MNIST_DIR_PER_CLASS images of each, random
    pixels; test images are brighter, so the train and pooled means differ.

    Returns the pooled raw images (N, 28, 28) and labels (N,) as stored (train, then test).
    """
    rng = np.random.default_rng(1)
    path.mkdir(exist_ok=True)
    train_per_class, test_per_class = MNIST_DIR_PER_CLASS
    train_y, test_y = _labels(train_per_class, rng), _labels(test_per_class, rng)
    train_x, test_x = _images(len(train_y), rng), _images(len(test_y), rng, offset=50)
    stored = [train_x, train_y, test_x, test_y]
    for name, array in zip(names, stored):
        write_idx(path / (name + (".gz" if gz else "")), array, gz)
    return np.concatenate([train_x, test_x]), np.concatenate([train_y, test_y])


def _images(n, rng, offset=0):
    """n distinct 28x28 uint8 images (random pixels, brightness shifted by offset)."""
    return rng.integers(0, 200, size=(n, 28, 28)).astype(np.uint8) + np.uint8(offset)


def _labels(per_class, rng):
    return rng.permutation(np.repeat(np.arange(MNIST_DIR_CLASSES, dtype=np.uint8), per_class))


def class_template_images(classes, seed, shape=(28, 28)):
    """Float images of `shape` (28x28 by default) whose class k is bright on rows 2k, 2k + 1,
    plus uniform noise.

    Centering on the pooled mean and scaling each image (`data.binary_task`) keep those
    rows the brightest, so `image_class` reads the class back from a task's inputs.
    """
    images = np.random.default_rng(seed).uniform(0, 40, size=(len(classes), *shape))
    for image, k in zip(images, classes):
        image[2 * k: 2 * k + 2] += 200
    return images


def image_class(x):
    """The class of each flattened `class_template_images` row of x (N, 784)."""
    return x.reshape(len(x), 28, 28)[:, :20].reshape(len(x), 10, 56).mean(axis=2).argmax(axis=1)


def class_template_sets(per_class_train, per_class_test, seed=0, shape=(28, 28)):
    """[train images, train classes, test images, test classes] of `class_template_images`
    of `shape`, classes 0 … 9 (uint8), `per_class_*` of each, shuffled."""
    rng = np.random.default_rng(seed)
    arrays = []
    for per_class in (per_class_train, per_class_test):
        classes = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        arrays += [class_template_images(classes, rng.integers(1 << 30), shape), classes]
    return arrays


def write_class_template_mnist(path, per_class_train, per_class_test, seed=0):
    """An MNIST-format folder of `class_template_images`; returns the train images (N, 28, 28)."""
    path.mkdir(exist_ok=True)
    arrays = class_template_sets(per_class_train, per_class_test, seed)
    for name, array in zip(MNIST_FILES, arrays):
        write_idx(path / name, array, gz=False)
    return arrays[0]


EMNIST_LETTERS_FILES = ("emnist-letters-train-images-idx3-ubyte",
                        "emnist-letters-train-labels-idx1-ubyte",
                        "emnist-letters-test-images-idx3-ubyte",
                        "emnist-letters-test-labels-idx1-ubyte")
CIFAR10_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                 "test_batch")


def write_class_template_emnist_letters(path, per_class_train, per_class_test, seed=0):
    """An EMNIST letters folder as released (gzip IDX, uint8, each image stored transposed,
    letters labelled from 1) of `class_template_images` of the first 10 letters."""
    path.mkdir(exist_ok=True)
    images, classes, test_images, test_classes = class_template_sets(
        per_class_train, per_class_test, seed)
    arrays = [images.astype(np.uint8).transpose(0, 2, 1), classes + 1,
              test_images.astype(np.uint8).transpose(0, 2, 1), test_classes + 1]
    for name, array in zip(EMNIST_LETTERS_FILES, arrays):
        write_idx(path / f"{name}.gz", array)


def write_class_template_cifar10(path, per_class_train, per_class_test, seed=0):
    """A CIFAR10 python folder (data_batch_1 … 5 and test_batch: pickled dicts of uint8 rows
    of red, green and blue 32x32 planes, and labels) of 32x32x3 `class_template_images`."""
    path.mkdir(parents=True, exist_ok=True)
    images, classes, test_images, test_classes = class_template_sets(
        per_class_train, per_class_test, seed, shape=(32, 32, 3))
    batches = list(zip(np.array_split(images, 5), np.array_split(classes, 5)))
    for name, (batch, labels) in zip(CIFAR10_FILES, batches + [(test_images, test_classes)]):
        rows = batch.astype(np.uint8).transpose(0, 3, 1, 2).reshape(len(batch), 3072)
        with open(path / name, "wb") as f:
            pickle.dump({b"data": rows, b"labels": [int(k) for k in labels]}, f)


# A linear model's gradient flow, solvable exactly

N, D = 12, 5
X = sphere_inputs(N, D, seed=7)
Y = np.sign(X[:, 0] + 0.3 * X[:, 1])


def exact_outputs(t, alpha=1.0):
    """F(t) = y − exp(−K t / n) y with K = X Xᵀ: the flow of a linear model f = x·w from
    F(0) = 0 on the quadratic hinge ½(1 − F y)², while every margin F y stays below 1."""
    eigenvalues, vectors = np.linalg.eigh(X @ X.T)
    return Y - vectors @ (np.exp(-eigenvalues * t / N) * (vectors.T @ Y))


T_END = 1.0  # every margin is below 1 on [0, T_END]: the loss is quadratic throughout


class LinearFlow:
    """ẇ = −∇L of the linear model f = x·w on the quadratic loss ½(F − y)² (the quadratic
    hinge while every margin is below 1), as an `integrators` problem."""

    def __init__(self, x=X, y=Y):
        self.x, self.y = tf.constant(x), tf.constant(y)

    def evaluate(self, w):
        F = tf.linalg.matvec(self.x, w)
        return F, tf.linalg.matvec(self.x, F - self.y, transpose_a=True) / self.x.shape[0]

    def outputs(self, w):
        return tf.linalg.matvec(self.x, w)

    def linear_combination(self, coefficients, points, dt, grad_coefficients, grads):
        combined = integrators.combination(coefficients, points)
        return combined - dt * self.combine(grad_coefficients, grads) if grads else combined

    def combine(self, coefficients, grads):
        return integrators.combination(coefficients, grads)

    def difference(self, a, b):
        return a - b

    def squared_norm(self, g):
        return tf.reduce_sum(g * g)

    def output_change(self, a, b):
        return tf.reduce_max(tf.abs(a - b))

    def flatten(self, w):  # a point is already one vector of weights
        return w

    def unflatten(self, w):
        return w


def stiff_linear_flow(name, tol, t_end=10.0, integrator=None):
    """(max |F(t_end) − exact|, gradient evaluations, rejected trials) of the adaptive `name`
    (or `integrator`) on a linear model whose Hessian XᵀX/N has eigenvalues from 0.1 to 300
    (quadratic loss, N = D = 12)."""
    rng = np.random.default_rng(0)
    u, _ = np.linalg.qr(rng.normal(size=(N, N)))
    v, _ = np.linalg.qr(rng.normal(size=(N, N)))
    eigenvalues = np.logspace(-1, np.log10(300), N)
    x = (u * np.sqrt(N * eigenvalues)) @ v.T
    y = np.sign(rng.normal(size=N))
    problem = LinearFlow(x, y)
    integrator = integrator or registry.get(GradientFlow(integrator=name, output_tol=tol,
                                                         direction_tol=1.0))
    w = tf.zeros(N, tf.float64)
    state, memory = integrators.FlowState(w, *problem.evaluate(w)), integrator.initial_memory(w)
    t, dt, evaluations, rejected = 0.0, tf.constant(1e-3, tf.float64), 1, 0

    @tf.function
    def trial(state, step, memory):  # one graph call per trial step
        trial = integrator.trial(problem, state, step, memory)
        return trial, integrator.next_dt(step, trial.accepted, trial.measures)

    while t < t_end:
        step = tf.minimum(dt, t_end - t)
        attempt, dt = trial(state, step, memory)
        memory, evaluations = attempt.memory, evaluations + int(attempt.evaluations)
        if attempt.accepted:
            state, t = attempt.state, t + float(step)
        rejected += not attempt.accepted
    exact = y - u @ (np.exp(-eigenvalues * t_end) * (u.T @ y))  # F = Xw, Ḟ = −XXᵀ(F − y)/N
    return np.max(np.abs(state.outputs.numpy() - exact)), evaluations, rejected


# Runs

class StopAtStep(keras.callbacks.Callback):
    """Once `at_step` steps are accepted, sends this process `error` if it is a signal (SIGTERM
    or SIGINT, which save a checkpoint), or raises it (a kill: only the periodic
    checkpoints remain)."""

    def __init__(self, at_step, error):
        super().__init__()
        self.at_step, self.error = at_step, error

    def on_train_batch_end(self, batch, logs=None):
        if int(logs["step"]) >= self.at_step:
            if isinstance(self.error, signal.Signals):
                os.kill(os.getpid(), self.error)
            else:
                raise self.error


def checkpoint_step(run_dir, config, task):
    """The step of the run's last checkpoint (restored into a fresh model)."""
    model = runner.build_model(config, task.d)
    checkpoint.TrainingCheckpoint(model, run_dir).restore()
    return int(model.step_count.numpy())


def killed_at(step, config, run_dir, task):
    """Train `config` in `run_dir`, checkpointing after every step, until it is killed at
    `step` before that step's save; the step of its last checkpoint."""
    try:
        runner.train(config, run_dir, task=task, checkpoint_seconds=0.0,
                     extra_callbacks=[StopAtStep(step, RuntimeError("killed"))])
    except RuntimeError as error:
        assert str(error) == "killed", error
    else:
        raise AssertionError(f"the run was not killed at step {step}")
    return checkpoint_step(run_dir, config, task)


def synthetic_sweep(data_dir):
    """The sweep config "synthetic": a synthetic MNIST-format data set (tiny needs
    Fashion-MNIST), one seed, width 16, √h·α = 0.1 and 10."""
    base = TrainConfig(dataset="mnist", data_dir=data_dir, n_train=40, n_test=40)
    return sweep.SweepConfig(base=base, widths=(16,), sqrt_h_alphas=(0.1, 10.0))


# The stage binaries

def run_stage(name, *args, timeout=600, **kwargs):
    """Run `python -m pipelines.<name> args` from the repository root; its CompletedProcess.

    A new process pays TensorFlow's import (~7 s): keep it for what is about the process
    (the exit status and one-line error of the real binary, a kill), `stage_in_process` else.
    """
    return subprocess.run([sys.executable, "-m", f"pipelines.{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def stage_in_process(name, *args):
    """`python -m pipelines.<name> args` run inside this process, as `run_stage` reports it.

    The stage module runs as __main__ (runpy), as under `python -m`, on freshly defined flags:
    the flags any earlier stage defined are removed first (absl keeps one global FLAGS, and
    the stages define different sets, some under the same names), all flags are reset to
    their defaults, and the stage parses `args`. Its exit status is that of its SystemExit,
    or 1 with the traceback on stderr for an uncaught exception; stdout and stderr are
    captured from sys.stdout/sys.stderr, absl's log handler and the file descriptors 1 and 2.
    The root and lazy_feature loggers' levels, absl's handler and its format and os.environ
    are restored.
    """
    _remove_stage_flags()
    loggers = {logger: logger.level for logger in (logging.root,
                                                   logging.getLogger("lazy_feature"))}
    handlers, environ, argv = list(logging.root.handlers), dict(os.environ), list(sys.argv)
    formatter = absl_logging.get_absl_handler().python_handler.formatter
    returncode = 0
    with _captured() as (out, err):
        absl_logging.use_absl_handler()  # as app.run does in a new process
        sys.argv = [f"pipelines.{name}", *args]
        try:
            runpy.run_module(f"pipelines.{name}", run_name="__main__", alter_sys=True)
        except SystemExit as e:
            returncode = e.code if isinstance(e.code, int) else int(e.code is not None)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        except Exception:  # as the interpreter would: a traceback and status 1
            traceback.print_exc()
            returncode = 1
        finally:
            sys.argv = argv
    for logger, level in loggers.items():
        logger.setLevel(level)
    logging.root.handlers[:] = handlers
    absl_logging.get_absl_handler().setFormatter(formatter)
    os.environ.clear()
    os.environ.update(environ)
    return subprocess.CompletedProcess([f"pipelines.{name}", *args], returncode,
                                       out.getvalue(), err.getvalue())


def stage_module(name, *args):
    """The namespace of the stage module pipelines.<name>, loaded (not run) on freshly
    defined flags (as `stage_in_process`) that are parsed from `args`: to call its functions
    as its main would, without running it."""
    _remove_stage_flags()
    namespace = runpy.run_module(f"pipelines.{name}", run_name=f"pipelines.{name}",
                                 alter_sys=True)
    flags.FLAGS([f"pipelines.{name}", *args])
    return namespace


def _remove_stage_flags():
    """Remove the flags a stage module defined, and reset all flags to their defaults."""
    for flag in [f for module, defined in flags.FLAGS.flags_by_module_dict().items()
                 if _is_stage_module(module) for f in defined]:
        if flag.name in flags.FLAGS:
            delattr(flags.FLAGS, flag.name)
    flags.FLAGS.unparse_flags()


def _is_stage_module(module):
    return module.startswith("pipelines.") or module.startswith(os.path.join(ROOT, "pipelines"))


@contextlib.contextmanager
def _captured():
    """(stdout, stderr) as StringIO, filled after the block from everything written meanwhile."""
    out, err = io.StringIO(), io.StringIO()
    handler = absl_logging.get_absl_handler().python_handler
    saved = sys.stdout, sys.stderr, handler.stream
    sys.stdout.flush()
    sys.stderr.flush()
    fds = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile("w+") as out_file, tempfile.TemporaryFile("w+") as err_file:
        os.dup2(out_file.fileno(), 1)
        os.dup2(err_file.fileno(), 2)
        sys.stdout = open(1, "w", closefd=False)
        sys.stderr = handler.stream = open(2, "w", closefd=False)
        try:
            yield out, err
        finally:
            sys.stdout.close()
            sys.stderr.close()
            os.dup2(fds[0], 1)
            os.dup2(fds[1], 2)
            for fd in fds:
                os.close(fd)
            sys.stdout, sys.stderr, handler.stream = saved
            for file, buffer in ((out_file, out), (err_file, err)):
                file.seek(0)
                buffer.write(file.read())
