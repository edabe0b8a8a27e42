"""Shared fixtures: small synthetic tasks and the real Fashion-MNIST where installed."""
import os

import numpy as np
import pytest

from lazy_feature import data

FASHION_MNIST = data.DEFAULT_DATA_DIRS["fashion_mnist"]


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
