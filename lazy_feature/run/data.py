"""The binary classification task of Section 2 ("Dataset"), and its tf.data pipelines.

The paper splits the 10 classes of Fashion-MNIST into two sets and classifies them (y = ±1).
All original train and test images are pooled, the pooled mean image is removed and every
image x is put on the sphere Σ_i x_i² = d, so that each component has unit variance. The
training set holds 1000 images of each class (n = 10000) and the test set 5000 of each
(50000), drawn disjointly from the pool. Section 7's other data sets (MNIST, EMNIST
letters, CIFAR10, or any prepared TFDS data set) go through the same steps, and any of them
can first be reduced to its first K principal components (`pca`, Section 7's MNIST-PCA10).
A task keeps its images flat (n, d) for the FC net and knows their natural shape
(height, width, channels) for the convolutional nets (`BinaryTask.shaped`).

Nothing is downloaded here: each source reads files the user already has.
"""
import dataclasses
import gzip
import os
import pickle
import struct
import zlib

import numpy as np
import numpy.typing as npt
import tensorflow as tf

from lazy_feature.errors import DataError

TFDS_PREFIX = "tfds:"
SOURCES = ("fashion_mnist", "mnist", "emnist_letters", "cifar10", TFDS_PREFIX + "<name>")
DEFAULT_DATA_DIRS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}

# (train images, train labels, test images, test labels) of each IDX source.
_MNIST_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
_IDX_FILES = {
    "fashion_mnist": _MNIST_FILES,
    "mnist": _MNIST_FILES,
    "emnist_letters": tuple(f"emnist-letters-{split}-{kind}-ubyte" for split in ("train", "test")
                            for kind in ("images-idx3", "labels-idx1")),
}
_CIFAR10_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
# Where each file may lie in data_dir: the IDX files gzipped or not, CIFAR10's batches in
# data_dir or in the folder its archive unpacks to.
_IDX_VARIANTS, _CIFAR10_VARIANTS = ("{}.gz", "{}"), ("{}", "cifar-10-batches-py/{}")
_HOW_TO_GET = {
    "fashion_mnist": "apt-get install dataset-fashion-mnist, or pass --data_dir=DIR holding "
                     "the four IDX files",
    "mnist": "pass --data_dir=DIR holding the four MNIST IDX files (.gz or uncompressed)",
    "emnist_letters": "unzip the 'gzip' release of EMNIST and pass --data_dir=DIR holding its "
                      "emnist-letters-* IDX files",
    "cifar10": "unpack cifar-10-python.tar.gz and pass --data_dir=DIR holding data_batch_1..5 "
               "and test_batch (or their cifar-10-batches-py folder)",
}

# IDX type code -> big-endian numpy dtype.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array stored in an IDX file (the format of MNIST and Fashion-MNIST), gzipped or raw.

    Raises DataError naming the file when it cannot be read, its magic number or type code
    is wrong, or its size does not match its header (truncated or corrupt).
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an IDX file: bad magic number {raw[:4].hex() or 'none'}")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"IDX file {path} is truncated inside its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"IDX file {path} has {len(raw)} bytes, its header {dims} says "
                        f"{expected}: the file is truncated or corrupt, fetch it again")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _paths(dataset, data_dir, names, variants):
    """The first existing variant of each file name in data_dir; DataError if any is missing."""
    data_dir = DEFAULT_DATA_DIRS.get(dataset) if data_dir is None else data_dir
    if data_dir is None:
        raise DataError(f"{dataset} has no default location: {_HOW_TO_GET[dataset]}")
    found, missing = [], []
    for name in names:
        candidates = [os.path.join(data_dir, v.format(name)) for v in variants]
        path = next((p for p in candidates if os.path.isfile(p)), None)
        if path is None:
            missing.append(variants[0].format(name))
        found.append(path)
    if missing:
        where = data_dir if os.path.isdir(data_dir) else f"{data_dir} (no such directory)"
        raise DataError(f"{dataset}: {', '.join(missing)} not found in {where}; "
                        f"{_HOW_TO_GET[dataset]}")
    return found


def _pool(parts):
    """Float64 images (N, height, width, channels) and int labels (N,) of (images, labels,
    path) parts whose images are (n, height, width) or (n, height, width, channels)."""
    for images, labels, path in parts:
        if images.ndim not in (3, 4) or labels.ndim != 1 or len(images) != len(labels):
            raise DataError(f"{path}: {images.shape} images do not match {labels.shape} labels")
    shapes = {images.shape[1:] + ((1,) if images.ndim == 3 else ()) for images, _, _ in parts}
    if len(shapes) != 1:
        raise DataError(f"{', '.join(p for _, _, p in parts)}: images of different shapes {shapes}")
    x = np.concatenate([images.reshape(images.shape[:3] + (-1,)) for images, _, _ in parts],
                       dtype=np.float64)
    return x, np.concatenate([labels for _, labels, _ in parts]).astype(np.int64)


def _load_idx(dataset, data_dir):
    """Train and test images and labels of an IDX source (EMNIST images transposed back)."""
    paths = _paths(dataset, data_dir, _IDX_FILES[dataset], _IDX_VARIANTS)
    parts = []
    for images_path, labels_path in (paths[:2], paths[2:]):
        images = read_idx(images_path)
        if images.ndim != 3:
            raise DataError(f"{images_path} holds an array of shape {images.shape}, not images")
        if dataset == "emnist_letters":  # EMNIST stores each image transposed
            images = images.transpose(0, 2, 1)
        parts.append((images, read_idx(labels_path), images_path))
    return _pool(parts)


def _load_cifar10(data_dir):
    """The five training batches and the test batch of CIFAR10's python version."""
    parts = []
    for path in _paths("cifar10", data_dir, _CIFAR10_FILES, _CIFAR10_VARIANTS):
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            images = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as e:  # pickle raises many types on a corrupt file (see its docs)
            raise DataError(f"{path} is not a CIFAR10 python batch ({type(e).__name__}: {e}); "
                            f"{_HOW_TO_GET['cifar10']}") from e
        if images.ndim != 2 or images.shape[1] != 3072:
            raise DataError(f"{path}: CIFAR10 images must be (N, 3072), got {images.shape}")
        # Each row holds the red, green and blue 32 × 32 planes: move channels last.
        parts.append((images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels, path))
    return _pool(parts)


def _load_tfds(name, data_dir):
    """split='train+test' of a TFDS data set the user prepared; never downloads."""
    hint = f"prepare it with `tfds build {name}`" + (f" --data_dir={data_dir}" if data_dir else "")
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DataError(f"{TFDS_PREFIX}{name} needs tensorflow_datasets: pip install -e .[tfds], "
                        f"then {hint}") from e
    try:
        data = tfds.load(name, split="train+test", data_dir=data_dir, download=False,
                         batch_size=-1)
    except Exception as e:  # an unknown or unprepared data set raises various types
        raise DataError(f"TFDS data set {name!r} is not available ({type(e).__name__}); "
                        f"{hint}") from e
    if not isinstance(data, dict) or not {"image", "label"} <= data.keys():
        raise DataError(f"TFDS data set {name!r} has no 'image' and 'label' features")
    images, labels = np.asarray(data["image"]), np.asarray(data["label"])
    return _pool([(images, labels, f"{TFDS_PREFIX}{name}")])


def missing(dataset: str, data_dir: str | None = None) -> str | None:
    """Why the files of `dataset` are not in data_dir (its default location for None), or
    None when they all are there. Reads no file: a corrupt one is found when it loads, and
    so is an unprepared TFDS data set."""
    try:
        if dataset in _IDX_FILES:
            _paths(dataset, data_dir, _IDX_FILES[dataset], _IDX_VARIANTS)
        elif dataset == "cifar10":
            _paths(dataset, data_dir, _CIFAR10_FILES, _CIFAR10_VARIANTS)
    except DataError as e:
        return str(e)
    return None


def load_pool(dataset: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All original train and test images pooled (Section 2), flattened: float64 (N, d) and
    int labels (N,). See `load_images`."""
    images, labels = load_images(dataset, data_dir)
    return images.reshape(len(images), -1), labels


def load_images(dataset: str, data_dir: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """All original train and test images pooled (Section 2) in their natural shape: float64
    (N, height, width, channels), e.g. (N, 28, 28, 1) or (N, 32, 32, 3), and int labels (N,).

    `dataset` is one of SOURCES; data_dir defaults to DEFAULT_DATA_DIRS[dataset] where there
    is one. Raises DataError, saying how to get them, when files are missing or corrupt.
    """
    if dataset.startswith(TFDS_PREFIX) and len(dataset) > len(TFDS_PREFIX):
        return _load_tfds(dataset[len(TFDS_PREFIX):], data_dir)
    if dataset in _IDX_FILES:
        return _load_idx(dataset, data_dir)
    if dataset == "cifar10":
        return _load_cifar10(data_dir)
    raise DataError(f"unknown dataset {dataset!r}: choose one of {', '.join(SOURCES)}")


@dataclasses.dataclass(frozen=True)
class BinaryTask:
    """Training and test sets of the binary task (Section 2).

    x: float64 (n, d), pooled mean removed, every row on the sphere Σ_i x_i² = d; or the
    same numbers as images (n, height, width, channels) (`shaped`).
    y: float64 (n,) in {−1, +1}. classes: the original class of each point.
    image_shape: (height, width, channels) of the images, None for vectors (e.g. after PCA).
    """
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes_train: np.ndarray
    classes_test: np.ndarray
    image_shape: tuple[int, ...] | None = None

    @property
    def d(self) -> int:
        """The input dimension d (784 for Fashion-MNIST)."""
        return int(np.prod(self.x_train.shape[1:]))

    def shaped(self, images: bool) -> "BinaryTask":
        """This task with x as images (n, height, width, channels) if `images` and it has an
        image shape, else flat (n, d): the convolutional nets take the first, the FC net the
        second. The arrays are views of the same numbers."""
        shape = (self.image_shape if images and self.image_shape is not None
                 else (self.d,))
        return dataclasses.replace(self, x_train=self.x_train.reshape((-1, *shape)),
                                   x_test=self.x_test.reshape((-1, *shape)))


def parity_labels(classes: npt.ArrayLike) -> np.ndarray:
    """y = +1 for an even class index, −1 for an odd one: the split of the classes in two sets."""
    return np.where(np.asarray(classes) % 2 == 0, 1.0, -1.0)


def _quotas(n, n_classes, rng):
    """n split evenly over the classes; the remainder goes one each to classes drawn by rng."""
    quotas = np.full(n_classes, n // n_classes)
    quotas[rng.choice(n_classes, n % n_classes, replace=False)] += 1
    return quotas


def _on_sphere(images, index, mean):
    """images[index] minus the pooled mean, each row scaled to Σ_i x_i² = d."""
    x = images[index].astype(np.float64, copy=False)
    x -= mean
    norms = np.sqrt(np.einsum("ij,ij->i", x, x))
    if np.any(norms == 0):
        raise DataError(f"pooled image {index[np.argmin(norms)]} equals the pooled mean image "
                        "and cannot be put on the sphere")
    x *= (np.sqrt(x.shape[1]) / norms)[:, None]
    return x


def binary_task(images: npt.ArrayLike, classes: npt.ArrayLike, n_train: int, n_test: int,
                seed: int | None) -> BinaryTask:
    """Draw the disjoint, class-balanced training and test sets of Section 2 from a pool.

    The pooled mean image (over all N images) is removed and each image put on the sphere
    Σ_i x_i² = d. Each original class gets n // K points of a set (K classes) and the
    remainder goes one each to classes chosen by the seed; both sets are shuffled by it.
    Labels are `parity_labels`. Same inputs and seed give identical arrays. Images
    (N, height, width, channels) give a task that knows that shape, vectors (N, d) one
    without (`BinaryTask.image_shape`); its x is flat either way.
    """
    images, classes = np.asarray(images), np.asarray(classes)
    image_shape = tuple(images.shape[1:]) if images.ndim == 4 else None
    if images.ndim == 4:
        images = images.reshape(len(images), -1)
    if (images.ndim != 2 or classes.shape != images.shape[:1]
            or not np.issubdtype(classes.dtype, np.integer)):
        raise DataError(f"need images (N, d) or (N, height, width, channels) and integer "
                        f"classes (N,), got {images.shape} and {classes.dtype} {classes.shape}")
    if n_train < 1 or n_test < 0:
        raise DataError(f"need n_train >= 1 and n_test >= 0, got {n_train} and {n_test}")
    if n_train + n_test > len(images):
        raise DataError(f"n_train + n_test = {n_train + n_test} exceeds the {len(images)} pooled "
                        "images; lower n_train or n_test")
    rng = np.random.default_rng(seed)
    names, members = np.unique(classes, return_inverse=True)
    quota_train, quota_test = _quotas(n_train, len(names), rng), _quotas(n_test, len(names), rng)
    train: list[np.ndarray] | np.ndarray  # each class's draws, then all of them shuffled
    test: list[np.ndarray] | np.ndarray
    train, test = [], []
    for k, name in enumerate(names):
        pool_k = np.flatnonzero(members == k)
        need = quota_train[k] + quota_test[k]
        if need > len(pool_k):
            raise DataError(f"class {name} has {len(pool_k)} images but the balanced draw needs "
                            f"{need} ({quota_train[k]} train + {quota_test[k]} test); "
                            "lower n_train or n_test")
        drawn = rng.choice(pool_k, need, replace=False)
        train.append(drawn[:quota_train[k]])
        test.append(drawn[quota_train[k]:])
    train, test = rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))
    mean = images.mean(axis=0, dtype=np.float64)
    classes_train, classes_test = classes[train], classes[test]
    return BinaryTask(
        x_train=_on_sphere(images, train, mean), y_train=parity_labels(classes_train),
        x_test=_on_sphere(images, test, mean), y_test=parity_labels(classes_test),
        classes_train=classes_train, classes_test=classes_test, image_shape=image_shape)


def pca(x: npt.ArrayLike, k: int, whiten: bool = True) -> np.ndarray:
    """x (N, d) projected on its first k principal components: float64 (N, k), mean 0.

    The components are the eigenvectors of the covariance of the N rows with the k largest
    eigenvalues λ_1 ≥ … ≥ λ_k, signed so that each one's largest entry is positive.
    Whitened, component i is divided by √λ_i and has unit variance over the N rows; not
    whitened, all are divided by (mean_i λ_i)^(1/2) (the authors' code), so their mean
    square is 1 on average and their variances keep the ratios of the λ_i. Float64:
    the covariance is formed as E[x xᵀ] − E[x]E[x]ᵀ, which cancels about one digit on
    pixel values.
    """
    x = np.asarray(x)
    if x.ndim != 2 or not 1 <= int(k) <= x.shape[1]:
        raise DataError(f"pca needs 1 <= K <= d = {x.shape[1:]} (the input dimension), got "
                        f"K={k}")
    mean = x.mean(axis=0, dtype=np.float64)
    covariance = (x.T @ x) / len(x) - np.outer(mean, mean)
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)
    order = np.argsort(eigenvalues)[::-1][:int(k)]
    eigenvalues, components = eigenvalues[order], eigenvectors[:, order]
    largest = np.argmax(np.abs(components), axis=0)
    components *= np.sign(components[largest, np.arange(int(k))])
    if eigenvalues[-1] <= 0:
        raise DataError(f"the pooled images span fewer than {k} dimensions: lower --pca")
    scale = np.sqrt(eigenvalues if whiten else np.mean(eigenvalues))
    return (x @ components - mean @ components) / scale


def load_binary_task(dataset: str = "fashion_mnist", data_dir: str | None = None,
                     n_train: int = 10000, n_test: int = 50000, data_seed: int = 0,
                     pca_components: int = 0, pca_whiten: bool = True) -> BinaryTask:
    """The paper's task: `load_images`, then `pca` of the pooled images if pca_components
    = K > 0 (Section 7's MNIST-PCA10: mnist and K = 10), then `binary_task` (defaults:
    Section 2's Fashion-MNIST)."""
    images, classes = load_images(dataset, data_dir)
    if pca_components:
        images = pca(images.reshape(len(images), -1), pca_components, pca_whiten)
    return binary_task(images, classes, n_train, n_test, data_seed)


def full_batch(x: np.ndarray, y: np.ndarray, dtype: npt.DTypeLike) -> tf.data.Dataset:
    """The whole training set as one batch of static shape, repeated forever.

    The adaptive gradient flow (eqs. 8-9) is full-batch: every step sees all n points.
    """
    return tf.data.Dataset.from_tensors((x.astype(dtype), y.astype(dtype))).repeat()
