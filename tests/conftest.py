"""pytest's hooks and the suite's fixtures; the helpers the test modules share are in helpers.py."""
import os

# Under pytest-xdist (`-n 2`, as CI runs it) two workers share the machine's cores: each
# worker's TensorFlow (and the processes it starts) runs one thread per pool, not a pool of
# spinning threads per core in every worker. Set before TensorFlow starts.
if "PYTEST_XDIST_WORKER" in os.environ:
    os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")

import pytest  # noqa: E402  (after the thread settings)

from lazy_feature.run import data, runner  # noqa: E402

FASHION_MNIST = data.DEFAULT_DATA_DIRS["fashion_mnist"]


def pytest_collection_modifyitems(items):
    """The tests marked slow first, the others after them, each in collection order.

    pytest-xdist hands tests out in collection order, so the long tests start first and the
    short ones fill in around them.
    """
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)


@pytest.fixture(scope="session")
def fashion_task():
    """A small binary Fashion-MNIST task from the Debian package (required under CI)."""
    if not os.path.isdir(FASHION_MNIST) and not os.environ.get("CI"):
        pytest.skip(f"{FASHION_MNIST} missing: apt-get install dataset-fashion-mnist")
    return data.load_binary_task("fashion_mnist", n_train=200, n_test=1000, data_seed=0)


@pytest.fixture(autouse=True)
def cold_models():
    """Each test starts with no warm model (`runner.warm_model`): one it patches sees its
    patch traced, not a model an earlier test traced; within a test, runs reuse them."""
    runner.clear_warm_models()
    yield
    runner.clear_warm_models()
