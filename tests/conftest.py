"""Shared fixtures: small synthetic tasks, IDX files, and the real Fashion-MNIST where installed."""
import contextlib
import gzip
import io
import logging
import os
import pickle
import runpy
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import pytest
from absl import flags
from absl import logging as absl_logging

from lazy_feature.run import data

FASHION_MNIST = data.DEFAULT_DATA_DIRS["fashion_mnist"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The longest tests (about half a minute to two minutes each under `-n 2`), longest first:
# collected ahead of the others, so that pytest-xdist, which hands out tests in collection
# order, starts them first and the short ones fill in around them (measured: 11 min 18 s
# collected where their modules fall, 10 min 52 s first).
LONGEST_FIRST = ("test_mirrored_on_two_cpu_devices", "test_beam_sweep_killed_and_resumed",
                 "test_table1_quick_end_to_end_on_every_row", "test_gradient_flow_fidelity",
                 "test_monitor_and_scan_under_a_mirrored_strategy_match_one_device",
                 "test_kill_9_at_two_moments_then_rerun_ends_as_an_uninterrupted_run",
                 "test_tiny_sweep_on_ram_filesystem",
                 "test_budget_stopped_runs_are_excluded_then_retried",
                 "test_sweep_console_is_one_progress_display")


def pytest_collection_modifyitems(items):
    """Move the LONGEST_FIRST tests to the front, in that order; the rest keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.originalname, len(rank)))


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
    The root and lazy_feature loggers' levels, absl's handler and os.environ are restored.
    """
    _remove_stage_flags()
    loggers = {logger: logger.level for logger in (logging.root,
                                                   logging.getLogger("lazy_feature"))}
    handlers, environ, argv = list(logging.root.handlers), dict(os.environ), list(sys.argv)
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
MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
               "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
IDX_CODES = {np.dtype("uint8"): 0x08, np.dtype("int32"): 0x0C, np.dtype("float64"): 0x0E}


def sphere_inputs(n, d, seed):
    """n Gaussian inputs put on the sphere Σ x_i² = d (the paper's normalization)."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x * np.sqrt(d) / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="session")
def fashion_task():
    """A small binary Fashion-MNIST task from the Debian package (required under CI)."""
    if not os.path.isdir(FASHION_MNIST) and not os.environ.get("CI"):
        pytest.skip(f"{FASHION_MNIST} missing: apt-get install dataset-fashion-mnist")
    return data.load_binary_task("fashion_mnist", n_train=200, n_test=1000, data_seed=0)


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
