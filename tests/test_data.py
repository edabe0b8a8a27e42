"""Tests of lazy_feature.run.data: the sources, Section 2's binary task and the tf.data pipelines.

Each test writes tiny files in the real formats (IDX, CIFAR10 pickles) under tmp_path.
"""
import gzip
import os
import pickle
import sys
import types

import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.run import data
from tests.helpers import (CIFAR10_FILES, EMNIST_LETTERS_FILES, MNIST_DIR_CLASSES,
                           MNIST_DIR_PER_CLASS, MNIST_FILES, class_template_images, idx_bytes,
                           image_class, write_idx, write_mnist_dir)

K = MNIST_DIR_CLASSES  # classes
TRAIN_PER_CLASS, TEST_PER_CLASS = MNIST_DIR_PER_CLASS


def reference_rows(images):
    """Every pooled image flattened, minus the pooled mean, on the sphere Σ x² = d."""
    x = images.reshape(len(images), -1).astype(np.float64)
    x = x - x.mean(axis=0)
    return x * np.sqrt(x.shape[1]) / np.linalg.norm(x, axis=1, keepdims=True)


def pool_index(x, rows):
    """For each row of x, the index of the reference row it equals (asserting one exists)."""
    dist = ((x[:, None, :] - rows[None, :, :]) ** 2).sum(-1)
    index = dist.argmin(axis=1)
    np.testing.assert_allclose(x, rows[index], rtol=0, atol=1e-12)
    return index


@pytest.fixture
def mnist_dir(tmp_path):
    raw_images, raw_labels = write_mnist_dir(tmp_path / "mnist")
    return tmp_path / "mnist", raw_images, raw_labels


# --- read_idx ---------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("array", [
    np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4),
    np.array([-5, 0, 7, 2 ** 30], dtype=np.int32),
    np.linspace(-1, 1, 6).reshape(3, 2),
])
def test_read_idx_raw_and_gz(tmp_path, gz, array):
    out = data.read_idx(write_idx(tmp_path / "a.idx", array, gz))
    assert out.dtype == array.dtype and out.dtype.isnative
    np.testing.assert_array_equal(out, array)


@pytest.mark.parametrize("gz", [False, True])
def test_read_idx_truncated_file_names_it(tmp_path, gz):
    blob = idx_bytes(np.ones((3, 28, 28), np.uint8))
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(blob)[:-30] if gz else blob[:-1])
    with pytest.raises(data.DataError, match="cut.gz"):
        data.read_idx(path)


@pytest.mark.parametrize("blob", [
    b"\x01\x00\x08\x01\x00\x00\x00\x01\x00",  # wrong magic
    b"\x00\x00\x07\x01\x00\x00\x00\x01\x00",  # unknown type code
    b"\x00\x00\x08\x03\x00\x00\x00\x01",      # header cut short
    b"\x00\x00\x08\x01\x00\x00\x00\x01\x00\x00",  # one byte too many
    b"",
])
def test_read_idx_corrupt_raises(tmp_path, blob):
    path = tmp_path / "bad-idx"
    path.write_bytes(blob)
    with pytest.raises(data.DataError, match="bad-idx"):
        data.read_idx(path)


# --- load_pool --------------------------------------------------------------------------

@pytest.mark.parametrize("gz", [False, True])
def test_load_pool_idx_pools_train_then_test(tmp_path, gz):
    raw_images, raw_labels = write_mnist_dir(tmp_path / "d", gz=gz)
    images, labels = data.load_pool("mnist", tmp_path / "d")
    assert images.dtype == np.float64
    assert images.shape == (K * (TRAIN_PER_CLASS + TEST_PER_CLASS), 784)
    assert np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(images, raw_images.reshape(len(raw_images), -1))
    np.testing.assert_array_equal(labels, raw_labels)


def test_emnist_images_are_transposed_back(tmp_path):
    raw_images, _ = write_mnist_dir(tmp_path / "e", names=EMNIST_LETTERS_FILES)
    images, _ = data.load_pool("emnist_letters", tmp_path / "e")
    upright = raw_images.transpose(0, 2, 1).reshape(len(raw_images), -1)
    np.testing.assert_array_equal(images, upright)
    # A known asymmetric image: one bright pixel at row 0, column 5 once transposed back.
    stored = raw_images[:K * TRAIN_PER_CLASS].copy()
    stored[0] = 0
    stored[0, 5, 0] = 255
    write_idx(tmp_path / "e" / (EMNIST_LETTERS_FILES[0] + ".gz"), stored)
    images, _ = data.load_pool("emnist_letters", tmp_path / "e")
    assert images[0].reshape(28, 28)[0, 5] == 255 and images[0].sum() == 255


@pytest.mark.parametrize("dataset, names", [("mnist", MNIST_FILES),
                                            ("emnist_letters", EMNIST_LETTERS_FILES)])
def test_load_pool_rejects_swapped_files(tmp_path, dataset, names):
    write_mnist_dir(tmp_path / "d", names=names)
    images, labels = (tmp_path / "d" / (name + ".gz") for name in names[2:])
    os.replace(labels, tmp_path / "tmp.gz")
    os.replace(images, labels)
    os.replace(tmp_path / "tmp.gz", images)
    with pytest.raises(data.DataError):
        data.load_pool(dataset, tmp_path / "d")


def test_fashion_mnist_missing_default_dir_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(data.DEFAULT_DATA_DIRS, "fashion_mnist", str(tmp_path / "nowhere"))
    with pytest.raises(data.DataError, match="apt-get install dataset-fashion-mnist") as err:
        data.load_pool("fashion_mnist")
    assert "nowhere" in str(err.value) and "\n" not in str(err.value)


def test_missing_file_is_named(tmp_path):
    write_mnist_dir(tmp_path / "d")
    os.remove(tmp_path / "d" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(data.DataError, match="t10k-labels-idx1-ubyte.*apt-get install"):
        data.load_pool("fashion_mnist", tmp_path / "d")


@pytest.mark.parametrize("dataset", ["mnist", "emnist_letters", "cifar10"])
def test_sources_without_default_need_data_dir(dataset):
    with pytest.raises(data.DataError, match="data_dir"):
        data.load_pool(dataset)


@pytest.mark.parametrize("dataset", ["svhn", "tfds:", "Fashion-MNIST"])
def test_unknown_dataset(dataset):
    with pytest.raises(data.DataError, match="choose one of"):
        data.load_pool(dataset)


def write_cifar10(folder, per_batch=3):
    """Six tiny CIFAR10 python batches; image i of the pool has all pixels equal to i."""
    folder.mkdir(parents=True, exist_ok=True)
    index = 0
    for name in CIFAR10_FILES:
        pixels = np.repeat(np.arange(index, index + per_batch, dtype=np.uint8)[:, None], 3072, 1)
        labels = [(index + j) % K for j in range(per_batch)]
        with open(folder / name, "wb") as f:
            pickle.dump({b"data": pixels, b"labels": labels, b"batch_label": b"x"}, f)
        index += per_batch
    return index


@pytest.mark.parametrize("subfolder", ["", "cifar-10-batches-py"])
def test_cifar10_pickle_batches(tmp_path, subfolder):
    n = write_cifar10(tmp_path / subfolder)
    images, labels = data.load_pool("cifar10", tmp_path)
    assert images.dtype == np.float64 and images.shape == (n, 3072)
    np.testing.assert_array_equal(images[:, 0], np.arange(n))
    np.testing.assert_array_equal(labels, np.arange(n) % K)


def test_cifar10_corrupt_batch(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "data_batch_3").write_bytes(b"\x80\x04garbage")
    with pytest.raises(data.DataError, match="data_batch_3"):
        data.load_pool("cifar10", tmp_path)


def test_tfds_not_installed_says_pip_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import now fails
    with pytest.raises(data.DataError, match="pip install"):
        data.load_pool("tfds:foo")


def fake_tfds(load):
    module = types.ModuleType("tensorflow_datasets")
    module.load = load
    return module


def test_tfds_reads_prepared_data_without_download(monkeypatch):
    calls = []

    def load(name, **kwargs):
        calls.append((name, kwargs))
        return {"image": tf.ones((5, 4, 4, 1), tf.uint8), "label": tf.range(5, dtype=tf.int64)}

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(load))
    images, labels = data.load_pool("tfds:fashion_mnist", "/some/dir")
    assert calls == [("fashion_mnist", dict(split="train+test", data_dir="/some/dir",
                                            download=False, batch_size=-1))]
    assert images.shape == (5, 16) and images.dtype == np.float64
    np.testing.assert_array_equal(labels, np.arange(5))


def test_tfds_unprepared_says_tfds_build(monkeypatch):
    def load(name, **kwargs):
        raise AssertionError("Dataset foo: could not find data")

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake_tfds(load))
    with pytest.raises(data.DataError, match="tfds build foo"):
        data.load_pool("tfds:foo")


# --- binary_task ------------------------------------------------------------------------

@pytest.mark.parametrize("n_train, n_test", [(25, 33), (80, 40), (1, 0), (10, 110)])
def test_binary_task_section2(mnist_dir, n_train, n_test):
    folder, raw_images, raw_labels = mnist_dir
    task = data.load_binary_task("mnist", folder, n_train=n_train, n_test=n_test, data_seed=3)
    assert task.d == 784
    assert task.x_train.shape == (n_train, 784) and task.x_test.shape == (n_test, 784)
    assert task.x_train.dtype == task.y_train.dtype == np.float64
    # Each row is a pooled image minus the POOLED mean, on the sphere: recomputed from the raw
    # files (the test images are brighter, so a train-only mean would not match).
    rows = reference_rows(raw_images)
    train, test = pool_index(task.x_train, rows), pool_index(task.x_test, rows)
    for x in (task.x_train, task.x_test):
        np.testing.assert_allclose((x ** 2).sum(axis=1), 784, rtol=1e-10)
    # Disjoint, no repeats, classes and labels those of the pooled images.
    assert len(set(train) | set(test)) == n_train + n_test
    np.testing.assert_array_equal(task.classes_train, raw_labels[train])
    np.testing.assert_array_equal(task.classes_test, raw_labels[test])
    for y, classes in ((task.y_train, task.classes_train), (task.y_test, task.classes_test)):
        np.testing.assert_array_equal(y, np.where(classes % 2 == 0, 1.0, -1.0))
    # Balanced over the original classes.
    for n, classes in ((n_train, task.classes_train), (n_test, task.classes_test)):
        counts = np.bincount(classes, minlength=K)
        assert set(counts) <= {n // K, n // K + 1} and counts.sum() == n


def test_pooled_mean_is_removed(mnist_dir):
    folder, raw_images, _ = mnist_dir
    n = len(raw_images)
    task = data.load_binary_task("mnist", folder, n_train=n // 2, n_test=n - n // 2)
    x = np.concatenate([task.x_train, task.x_test])
    raw = raw_images.reshape(n, -1).astype(np.float64)[pool_index(x, reference_rows(raw_images))]
    # The whole pool is drawn: undoing each row's scale gives the centered images, of zero mean.
    centered = raw - raw_images.reshape(n, -1).mean(axis=0)
    unscaled = x * (np.linalg.norm(centered, axis=1) / np.sqrt(784))[:, None]
    np.testing.assert_allclose(unscaled, centered, atol=1e-9)
    np.testing.assert_allclose(unscaled.mean(axis=0), 0, atol=1e-10)
    # The training images alone have another mean (the test images are brighter).
    train_mean = raw_images[:K * TRAIN_PER_CLASS].reshape(-1, 784).mean(axis=0)
    assert np.abs(train_mean - raw_images.reshape(n, -1).mean(axis=0)).min() > 1


def test_parity_labels():
    np.testing.assert_array_equal(data.parity_labels([0, 1, 2, 3, 9, 26]), [1, -1, 1, -1, -1, 1])


def test_each_label_is_the_parity_of_the_class_its_image_shows():
    # The class is read back from each input (its bright rows), not from classes_train.
    classes = np.repeat(np.arange(K), 12)
    task = data.binary_task(class_template_images(classes, seed=0).reshape(len(classes), -1),
                            classes, 60, 40, seed=2)
    for x, y, classes_drawn in ((task.x_train, task.y_train, task.classes_train),
                                (task.x_test, task.y_test, task.classes_test)):
        shown = image_class(x)
        np.testing.assert_array_equal(shown, classes_drawn)
        np.testing.assert_array_equal(y, np.where(shown % 2 == 0, 1.0, -1.0))
        assert set(shown) == set(range(K))


def test_binary_task_deterministic_and_seeded(mnist_dir):
    folder = mnist_dir[0]
    a, b = (data.load_binary_task("mnist", folder, 25, 33, data_seed=0) for _ in range(2))
    c = data.load_binary_task("mnist", folder, 25, 33, data_seed=1)
    for field in ("x_train", "y_train", "x_test", "y_test", "classes_train", "classes_test"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    assert not np.array_equal(a.x_train, c.x_train)
    # Shuffled by the seed: not grouped by class.
    assert np.any(np.diff(a.classes_train) < 0)


def test_remainder_goes_to_seeded_classes():
    images = np.random.default_rng(0).normal(size=(100, 5))
    classes = np.arange(100) % K
    chosen = {tuple(np.flatnonzero(np.bincount(
        data.binary_task(images, classes, 13, 0, seed).classes_train, minlength=K) == 2))
        for seed in range(20)}
    assert all(len(c) == 3 for c in chosen) and len(chosen) > 1


@pytest.mark.parametrize("n_train, n_test, match", [
    (100, 21, "exceeds the 120 pooled"),
    (0, 10, "n_train"),
    (10, -1, "n_test"),
])
def test_binary_task_bad_sizes(mnist_dir, n_train, n_test, match):
    folder = mnist_dir[0]
    with pytest.raises(data.DataError, match=match):
        data.load_binary_task("mnist", folder, n_train, n_test)


def test_binary_task_class_too_small():
    images = np.random.default_rng(0).normal(size=(100, 5))
    classes = np.r_[np.zeros(4, int), np.arange(96) % 9 + 1]  # class 0 has only 4 images
    with pytest.raises(data.DataError, match="class 0 has 4 images but the balanced draw needs 5"):
        data.binary_task(images, classes, 30, 20, seed=0)


# --- tf.data ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_full_batch_is_one_static_batch_repeated(dtype):
    x, y = np.arange(12.0).reshape(4, 3), np.array([1.0, -1.0, 1.0, -1.0])
    ds = data.full_batch(x, y, dtype)
    assert ds.element_spec[0].shape == (4, 3) and ds.element_spec[1].shape == (4,)
    assert ds.element_spec[0].dtype == ds.element_spec[1].dtype == tf.as_dtype(dtype)
    elements = list(ds.take(3))
    assert len(elements) == 3
    for xb, yb in elements:
        np.testing.assert_array_equal(xb.numpy(), x)
        np.testing.assert_array_equal(yb.numpy(), y)


# --- the real data ------------------------------------------------------------------------

def test_real_fashion_mnist():
    if not os.path.isdir(data.DEFAULT_DATA_DIRS["fashion_mnist"]) and not os.environ.get("CI"):
        pytest.skip("apt-get install dataset-fashion-mnist to run this test")
    task = data.load_binary_task(n_train=200, n_test=300)
    assert task.x_train.shape == (200, 784) and task.x_test.shape == (300, 784)
    np.testing.assert_array_equal(np.bincount(task.classes_train, minlength=10), [20] * 10)
    np.testing.assert_array_equal(np.bincount(task.classes_test, minlength=10), [30] * 10)
    np.testing.assert_allclose((task.x_train ** 2).sum(axis=1), 784, rtol=1e-10)


# --- images in their shape, PCA (Section 7) ---------------------------------------------

def test_images_keep_their_natural_shape(mnist_dir, tmp_path):
    folder, raw_images, _ = mnist_dir
    images, _ = data.load_images("mnist", folder)
    assert images.shape == (len(raw_images), 28, 28, 1)
    np.testing.assert_array_equal(images[..., 0], raw_images)
    task = data.load_binary_task("mnist", folder, n_train=20, n_test=10)
    assert task.image_shape == (28, 28, 1) and task.x_train.shape == (20, 784)
    as_images = task.shaped(images=True)
    assert as_images.x_train.shape == (20, 28, 28, 1) and as_images.x_test.shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(as_images.x_train.reshape(20, -1), task.x_train)
    assert as_images.shaped(images=False).x_test.shape == (10, 784) and as_images.d == 784
    # CIFAR10 rows hold the red, green, then blue 32 × 32 planes: channels go last.
    rows = np.arange(3072, dtype=np.int64).reshape(1, 3072) % 251
    for name in CIFAR10_FILES:
        with open(tmp_path / name, "wb") as f:
            pickle.dump({b"data": rows.astype(np.uint8), b"labels": [0]}, f)
    cifar, _ = data.load_images("cifar10", tmp_path)
    assert cifar.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(cifar[0, 1, 2], rows[0, [34, 1024 + 34, 2048 + 34]])


def test_pca_projects_on_the_leading_components():
    # Anisotropic Gaussian data of known covariance, rotated: the components are found back.
    rng = np.random.default_rng(0)
    scales = np.array([5.0, 3.0, 2.0, 1.0, 0.5, 0.2])
    rotation, _ = np.linalg.qr(rng.standard_normal((6, 6)))
    x = (rng.standard_normal((4000, 6)) * scales) @ rotation.T + 7.0
    for whiten in (True, False):
        u = data.pca(x, 3, whiten)
        assert u.shape == (4000, 3)
        np.testing.assert_allclose(u.mean(axis=0), 0, atol=1e-10)
        # The projections on the top right singular vectors of the centered data, computed
        # independently here by an SVD, scaled to unit variance or by the mean variance:
        # uncorrelated, largest variance first, each up to its sign.
        centered = x - x.mean(axis=0)
        _, singular, vt = np.linalg.svd(centered, full_matrices=False)
        variances = singular[:3] ** 2 / len(x)
        expected = centered @ vt[:3].T / np.sqrt(variances if whiten else variances.mean())
        signs = np.sign(np.sum(u * expected, axis=0))
        np.testing.assert_allclose(u * signs, expected, atol=1e-9)
        # The sign makes each component's largest entry positive (reproducible across LAPACKs).
        largest = vt[np.arange(3), np.argmax(np.abs(vt[:3]), axis=1)]
        np.testing.assert_array_equal(signs, np.sign(largest))
        np.testing.assert_allclose(np.cov(u.T, bias=True),
                                   np.diag(np.ones(3) if whiten else variances / variances.mean()),
                                   atol=1e-10)
        assert np.allclose(np.abs(rotation[:, :3].T @ vt[:3].T), np.eye(3), atol=0.05)


def test_pca_task_has_k_components(mnist_dir):
    folder, _, _ = mnist_dir
    task = data.load_binary_task("mnist", folder, n_train=30, n_test=20, pca_components=10)
    assert task.d == 10 and task.image_shape is None
    assert task.x_train.shape == (30, 10) and task.shaped(images=True).x_train.shape == (30, 10)
    np.testing.assert_allclose((task.x_train ** 2).sum(axis=1), 10, rtol=1e-10)  # the sphere
    with pytest.raises(data.DataError, match="1 <= K <= d"):
        data.load_binary_task("mnist", folder, n_train=30, n_test=20, pca_components=785)
