"""What a run needs, estimated from its sizes before it starts, and whether the machine has it.

A network is a list of NTK layers (`layer_sizes`), each with its output positions p (1 for a
dense layer, the output pixels of a convolution), fan-in and output channels c. With n
training points of dimension d, P = Σ fan_in·c parameters (the FC net: d·h + (L − 1)·h² + h;
its biases' h·L at most besides), A = Σ p·c over the hidden layers (the FC net: h·L) and b
bytes per number of the run's dtype:
  weights      5·P·b: w, w0, the stored gradient ∇L_i, the trial step's ∇L_(i+1) and the copy
               of w a rejected step goes back to (`AlphaModel.train_step`); and the vectors
               its dynamics keeps besides (`dynamics_vectors`: Adam's moments, momentum's
               velocity, an integrator's stages, eigenvector or basis, each class's
               `vectors`). These count what the algorithms hold, not the graph's
               temporaries of their linear combinations, which can run at once;
  activations  (n·d + 6·n·A)·b: the full batch's inputs, and per hidden layer the six
               tensors of its forward pass that the backward pass keeps: the layer's output,
               its fan_in^(-1/2) scaling z̃ (eq. 14), and the activation's steps (β·z̃,
               softplus, 1/β, the normalization of eq. 10); the backward pass's own
               gradients come and go layer by layer. Adam's backward pass sees a mini-batch
               of B points, 6·B·A, and its end-of-epoch check is a forward pass of the full
               batch that keeps nothing for a backward pass: one layer's six tensors at a
               time, 6·n·max(p·c); the larger of the two counts, with the inputs n·d;
  NTK          (ntk_eval, after training) 2·8·n² for the training Gram matrix of the
               frozen-kernel dynamics in float64 (the array and the graph's constant), plus
               one tile B² and the signals of two blocks of B examples, 2·B·(d + 2·A)·b,
               B = min(n, structured.BLOCK_SIZE).
In the difference form (`lazy_feature.model.difference`) the network and its frozen copy hold
w0 and δ each, 7·P·b for the weights; every tensor the forward pass keeps comes as a pair (at
w0 and its change), 12·n·A, and the training set's signals at w0 are cached, 4·n·A (the
pre-activations, σ of them and at most two factors of σ's change, `difference.Initial`).
The peak is the weights plus the larger of the other two. A trial step is one forward and one
backward pass through the full batch (Adam's: its mini-batch of B), about 6·n·M (6·B·M)
floating-point operations with M = Σ
p·fan_in·c multiply-adds per example (= P for the FC net; 2 operations per multiply-add, the
backward pass twice the forward); its time is that over the matmul rate timed here in the
run's dtype.
"""
import dataclasses
import functools
import logging
import os
import time

import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.flow import training
from lazy_feature.kernel import structured
from lazy_feature.model import architectures, difference

logger = logging.getLogger("lazy_feature")

GiB = 2 ** 30
_RATE_SIZE = 512  # the matmul timed: _RATE_SIZE³ multiply-adds, a few milliseconds


def layer_sizes(config, input_shape):
    """(positions, fan_in, channels) of every NTK layer of the network of `config` on inputs of
    `input_shape` ((d,), an int d, or an image (height, width, channels)), the readout last.

    Read off the network's layers (`architectures.network`) without building their weights.
    """
    shape = (int(input_shape),) if np.ndim(input_shape) == 0 else tuple(map(int, input_shape))
    model = architectures.network(config)
    if not architectures.takes_images(config.architecture):
        h, d = config.width, int(np.prod(shape))
        return [(1, d, h)] + [(1, h, h)] * (config.depth - 1) + [(1, h, 1)]
    model.check_input_shape(shape)
    sizes, inputs = [], {}
    height, width, channels = shape
    for layer in model.main_path:  # the convolutions one after the other
        inputs[id(layer)] = (height, width, channels)
        height, width = layer.output_size(height), layer.output_size(width)
        sizes.append((height * width, layer.kernel_size ** 2 * channels, layer.filters))
        channels = layer.filters
    for first, _, shortcut in getattr(model, "blocks", ()):  # a shortcut sees conv₁'s input
        if shortcut >= 0:
            layer, (h_in, w_in, c_in) = model.convs[shortcut], inputs[id(model.convs[first])]
            sizes.append((layer.output_size(h_in) * layer.output_size(w_in),
                          layer.kernel_size ** 2 * c_in, layer.filters))
    return sizes + [(1, channels, 1)]


def parameters(config, input_shape):
    """P = Σ fan_in·channels, the weights of the network of `config` (no biases)."""
    return sum(fan_in * c for _, fan_in, c in layer_sizes(config, input_shape))


@dataclasses.dataclass(frozen=True)
class Estimate:
    """Bytes each part of a run needs, the time of a trial step, and the memory there is."""
    weights: int
    activations: int
    ntk: int
    seconds_per_step: float
    available: int
    device: str

    @property
    def peak(self):
        return self.weights + max(self.activations, self.ntk)

    def line(self, copies=1):
        """The one line shown before a run (or `copies` runs at once, a local sweep)."""
        parts = [f"weights {_size(self.weights)}", f"full-batch activations "
                 f"{_size(self.activations)}"] + ([f"NTK {_size(self.ntk)}"] if self.ntk else [])
        times = f" × {copies} runs at once" if copies > 1 else ""
        return (f"estimated memory {_size(copies * self.peak)}{times} ({', '.join(parts)}) of "
                f"{_size(self.available)} available on {self.device}; about "
                f"{_duration(self.seconds_per_step)} per trial step")

    def largest(self):
        """The size to lower to shrink the largest part: a flag name and why."""
        parts = {"--width (weights ~ h²)": self.weights,
                 "--n_train (activations ~ n·h)": self.activations,
                 "--n_train (the NTK's Gram matrix ~ n²)": self.ntk}
        return max(parts, key=parts.get)


def _size(n_bytes):
    if n_bytes >= GiB / 10:
        return f"{n_bytes / GiB:.2f} GiB"
    return f"{n_bytes / 2 ** 20:.0f} MiB" if n_bytes >= 2 ** 20 else f"{n_bytes / 1024:.0f} KiB"


def _duration(seconds):
    return f"{seconds * 1e3:.2g} ms" if seconds < 1 else f"{seconds:.2g} s"


@functools.lru_cache(maxsize=None)
def matmul_rate(dtype):
    """Floating-point operations per second of a dense matmul in `dtype` on the default device."""
    a = tf.random.stateless_normal((_RATE_SIZE, _RATE_SIZE), (0, 0), dtype=dtype)
    product = tf.function(lambda a: tf.matmul(a, a))
    product(a).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        product(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * _RATE_SIZE ** 3 / best


def available_memory():
    """(bytes, device name): the first GPU's memory if there is one, else the host's available
    memory (MemAvailable, and the cgroup's limit when a container sets one)."""
    if tf.config.list_physical_devices("GPU"):
        from tensorflow.python.client import device_lib  # pylint: disable=import-outside-toplevel
        gpus = [d for d in device_lib.list_local_devices() if d.device_type == "GPU"]
        return int(gpus[0].memory_limit), "GPU:0"
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        available = int(info["MemAvailable"].split()[0]) * 1024
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
        with open("/sys/fs/cgroup/memory.current") as f:
            used = int(f.read())
        if limit != "max":
            available = min(available, int(limit) - used)
    except (OSError, KeyError, ValueError):
        pass
    return int(available), "CPU"


def dynamics_vectors(config):
    """The P-sized vectors the dynamics and integrator of `config` keep besides gradient
    flow's five (module docstring): its dynamics' `vectors` (`flow.interface.Dynamics`:
    under gradient flow, its integrator's)."""
    return config.make_dynamics().vectors


def _parts(config, shape, with_ntk):
    """(weights, activations, NTK) bytes of a run of `config` (the module docstring's sums)."""
    n, d = config.n_train, int(np.prod(shape))
    sizes = layer_sizes(config, shape)
    P = sum(fan_in * c for _, fan_in, c in sizes)
    A = sum(p * c for p, _, c in sizes[:-1])
    b = tf.dtypes.as_dtype(config.dtype).size
    pair = config.form == difference.DIFFERENCE  # each kept tensor a pair (module docstring)
    per_layer = 12 if pair else 6
    ntk_bytes = 0
    if with_ntk:
        B = min(n, structured.BLOCK_SIZE)
        ntk_bytes = 2 * 8 * n ** 2 + 8 * B ** 2 + 2 * B * (d + 2 * A) * b
    kept = per_layer * n * A
    if config.dynamics == training.ADAM:  # a mini-batch's backward pass, or the full batch's check
        kept = max(per_layer * config.batch_size * A,
                   per_layer * n * max(p * c for p, _, c in sizes[:-1]))
    kept += 4 * n * A if pair else 0  # the training set's cached signals at w0
    weights = (7 if pair else 5) + dynamics_vectors(config)
    return weights * P * b, (n * d + kept) * b, ntk_bytes


def _seconds_per_step(config, shape):
    multiply_adds = sum(p * fan_in * c for p, fan_in, c in layer_sizes(config, shape))
    points = config.batch_size if config.dynamics == training.ADAM else config.n_train
    return 6 * points * multiply_adds / matmul_rate(config.dtype)


def estimate(configs, input_shape, with_ntk=False):
    """The Estimate of the largest run among TrainConfigs `configs` (or one config) on
    inputs of `input_shape` (an int d, (d,), or an image's (height, width, channels)): its
    memory, and the longest trial step of them all."""
    configs = [configs] if not isinstance(configs, (list, tuple)) else configs
    weights, activations, ntk_bytes = max(
        (_parts(c, input_shape, with_ntk) for c in configs), key=lambda p: p[0] + max(p[1], p[2]))
    seconds = max(_seconds_per_step(c, input_shape) for c in configs)
    available, device = available_memory()
    return Estimate(weights=weights, activations=activations, ntk=ntk_bytes,
                    seconds_per_step=seconds, available=available, device=device)


def check(configs, input_shape, with_ntk=False, copies=1, local=True):
    """The estimate of the largest of `configs` (or of one config), `copies` of it at once;
    refuse it when it cannot fit.

    `local` False (the runs go to other machines) only estimates. Returns the Estimate,
    whose `line(copies)` is what a stage shows before it starts.
    Raises ConfigError naming the size to lower when the memory needed exceeds what is
    available.
    """
    found = estimate(configs, input_shape, with_ntk)
    if local and copies * found.peak > found.available:
        raise ConfigError(
            f"the run needs about {_size(copies * found.peak)} of memory, {found.device} has "
            f"{_size(found.available)} available: lower {found.largest()}"
            + (" or the number of workers" if copies > 1 else ""))
    return found
