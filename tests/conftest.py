"""Shared fixtures: small synthetic tasks, IDX files, and the real Fashion-MNIST where installed."""
import gzip
import os
import struct
import subprocess
import sys

import numpy as np
import pytest

from lazy_feature import data

FASHION_MNIST = data.DEFAULT_DATA_DIRS["fashion_mnist"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_stage(name, *args, timeout=600, **kwargs):
    """Run `python -m pipelines.<name> args` from the repository root; its CompletedProcess."""
    return subprocess.run([sys.executable, "-m", f"pipelines.{name}", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, **kwargs)
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


def class_template_images(classes, seed):
    """28x28 float images whose class k is bright on rows 2k, 2k + 1, plus uniform noise.

    Centering on the pooled mean and scaling each image (`data.binary_task`) keep those
    rows the brightest, so `image_class` reads the class back from a task's inputs.
    """
    images = np.random.default_rng(seed).uniform(0, 40, size=(len(classes), 28, 28))
    for image, k in zip(images, classes):
        image[2 * k: 2 * k + 2] += 200
    return images


def image_class(x):
    """The class of each flattened `class_template_images` row of x (N, 784)."""
    return x.reshape(len(x), 28, 28)[:, :20].reshape(len(x), 10, 56).mean(axis=2).argmax(axis=1)


def write_class_template_mnist(path, per_class_train, per_class_test, seed=0):
    """An MNIST-format folder of `class_template_images`; returns the train images (N, 28, 28)."""
    path.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for per_class in (per_class_train, per_class_test):
        classes = rng.permutation(np.repeat(np.arange(10, dtype=np.uint8), per_class))
        arrays += [class_template_images(classes, rng.integers(1 << 30)), classes]
    for name, array in zip(MNIST_FILES, arrays):
        write_idx(path / name, array, gz=False)
    return arrays[0]
