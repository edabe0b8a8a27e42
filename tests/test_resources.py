"""The resource estimate shown before a run: memory within a factor 2 of the measured one, and
the refusal of a run the machine cannot hold."""
import json
import subprocess
import sys

import numpy as np
import pytest

from lazy_feature.run import resources
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig
from lazy_feature.run.data import BinaryTask
from lazy_feature.errors import ConfigError
from tests.helpers import ROOT, sphere_inputs

# A run whose full batch dominates its memory (6·n·h·L = 36e6 numbers, ~0.3 GiB in float64)
# while a trial step stays short (6·n·P ≈ 2.5 GFLOP): its peak anonymous resident memory
# (RssAnon in /proc/self/status, sampled every 2 ms; Linux) above what the process holds once
# TensorFlow's runtime has started is measured against the estimate. Anonymous memory, not
# VmRSS: the total also counts the pages of TensorFlow's shared libraries that the run's
# kernels fault in, which varied from 0.2 to 0.9 GiB with the machine's state.
_MEASURE = """
import json, sys, threading, time
import numpy as np
import tensorflow as tf
from lazy_feature.run import data
from lazy_feature.run import resources
from lazy_feature.run import runner
from lazy_feature.run.config import TrainConfig

def anonymous_rss():
    with open("/proc/self/status") as f:
        return int(next(l for l in f if l.startswith("RssAnon:")).split()[1]) * 1024

n, d = 10000, 20
x = np.random.default_rng(0).standard_normal((n, d))
y = np.sign(x[:, 0])
task = data.BinaryTask(x, y, x[:100], y[:100], np.zeros(n, int), np.zeros(100, int))
config = TrainConfig(n_train=n, n_test=100, width=200, alpha=1.0, dtype="float64", max_steps=2,
                     form=sys.argv[2])
resources.matmul_rate("float64")
(tf.constant(x) @ tf.constant(x.T[:, :2])).numpy()
before, peak, running = anonymous_rss(), [0], [True]
def sample():
    while running[0]:
        peak[0] = max(peak[0], anonymous_rss())
        time.sleep(0.002)
sampler = threading.Thread(target=sample)
sampler.start()
runner.train(config, sys.argv[1], task=task)
running[0] = False
sampler.join()
found = resources.estimate(config, d)
print(json.dumps([peak[0] - before, found.weights + found.activations]))
"""


@pytest.mark.slow
@pytest.mark.parametrize("form", ["direct", "difference"])
def test_estimated_memory_is_within_a_factor_2_of_the_measured(tmp_path, form):
    result = subprocess.run([sys.executable, "-c", _MEASURE, str(tmp_path / "run"), form],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    measured, estimated = json.loads(result.stdout.splitlines()[-1])
    print(f"measured {measured / 2**20:.0f} MiB, estimated {estimated / 2**20:.0f} MiB")
    assert estimated / 2 <= measured <= 2 * estimated, (measured, estimated)


def test_the_estimate_line_and_the_refusal(tmp_path, monkeypatch):
    config = TrainConfig(n_train=60, n_test=40, width=16, alpha=1.0, dtype="float64",
                         integrator="euler")
    found = resources.estimate(config, 10)
    P = 10 * 16 + 2 * 16 ** 2 + 16
    assert found.weights == 5 * P * 8 and found.activations == (60 * 10 + 6 * 60 * 16 * 3) * 8
    assert found.seconds_per_step > 0 and found.available > 0
    line = found.line()
    assert line.startswith("estimated memory ") and "per trial step" in line and "\n" not in line
    # The NTK of a large training set dominates: its n² Gram matrix is what to lower.
    big = TrainConfig(n_train=30000, n_test=40, width=16, alpha=1.0, dtype="float64")
    monkeypatch.setattr(resources, "available_memory", lambda: (2 ** 30, "CPU"))
    with pytest.raises(ConfigError, match=r"needs about .* GiB .* 1.00 GiB available: lower "
                                          r"--n_train \(the NTK's Gram matrix ~ n²\)"):
        resources.check(big, 784, with_ntk=True)
    resources.check(big, 784)  # without the NTK it fits
    # A run that cannot fit is refused before it writes anything.
    monkeypatch.setattr(resources, "available_memory", lambda: (2 ** 16, "GPU:0"))
    x = sphere_inputs(100, 10, seed=0)
    y = np.where(x[:, 0] > 0, 1.0, -1.0)
    task = BinaryTask(x[:60], y[:60], x[60:], y[60:], np.zeros(60, int), np.zeros(40, int))
    with pytest.raises(ConfigError, match="GPU:0 has 64 KiB available: lower --n_train"):
        runner.train(config, str(tmp_path / "run"), task=task)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("architecture, width, depth, shape", [
    ("fc", 7, 3, (784,)), ("cnn", 3, None, (28, 28, 1)), ("cnn", 2, None, (32, 32, 3)),
    ("wide_resnet", 1, 10, (32, 32, 3)), ("wide_resnet", 2, 16, (16, 16, 3))])
def test_layer_sizes_match_the_built_network(architecture, width, depth, shape):
    from lazy_feature.model import architectures  # pylint: disable=import-outside-toplevel
    config = TrainConfig(architecture=architecture, width=width, depth=depth, n_train=20,
                         dtype="float64", integrator="euler")
    model = architectures.network(config)
    model.build((None, *shape))
    assert resources.parameters(config, shape) == model.count_params()
    # Each layer's outputs (positions × channels) are its pre-activations' at one example.
    _, preacts = model.layer_signals(np.zeros((1, *shape)))
    sizes = resources.layer_sizes(config, shape)
    assert sorted(p * c for p, _, c in sizes) == sorted(int(np.prod(z.shape[1:])) for z in preacts)
    found = resources.estimate(config, shape)
    assert found.weights == 5 * model.count_params() * 8
    d = int(np.prod(shape))
    assert found.activations == (20 * d + 6 * 20 * sum(p * c for p, _, c in sizes[:-1])) * 8


def test_the_dynamics_state_and_adams_activations_are_counted():
    from lazy_feature.model import architectures  # pylint: disable=import-outside-toplevel
    base = TrainConfig(n_train=200, n_test=10, width=6, alpha=1.0, dtype="float64")
    model = architectures.network(base)
    model.build((None, 10))
    P, b = model.count_params(), 8
    # Besides gradient flow's 5 P-sized vectors: Adam's m and v, momentum's v and its copy
    # for a rejected step, RKC's eigenvector (kept and new) and the 4 tensors its trial
    # carries; etdrk4's basis of 8 directions and, while it builds them, 16 Krylov directions
    # and their Hessian products; a Runge–Kutta pair's inner stage gradients that its estimate weighs
    # (Bogacki–Shampine's k_2, k_3; Dormand–Prince's k_3 … k_6, its k_2 has b_2 = e_2 = 0)
    # and the 4 tensors of its error estimate (w_(n+1), ŵ, Σ e_j k_j, Σ b_j k_j); a ReLU
    # net's Euler step, the gradient at a rejected trial's half step; a pair that switches
    # to RKC, the larger of the two (one runs at a time), and one that switches to etdrk4,
    # etdrk4's and RKC's eigenvector. The default here (√h·α = 2.4) is Bogacki–Shampine
    # switching to etdrk4; a ReLU net's, Euler's.
    for settings, vectors in ((dict(integrator="euler"), 5), (dict(), 46),
                              (dict(activation="relu"), 6),
                              (dict(dynamics="adam"), 7),
                              (dict(dynamics="momentum", tau=0.1), 7),
                              (dict(integrator="rkc"), 11),
                              (dict(integrator="etdrk4"), 45),
                              (dict(integrator="bogacki_shampine_etdrk4"), 46),
                              (dict(integrator="bogacki_shampine"), 11),
                              (dict(integrator="dormand_prince"), 13),
                              (dict(integrator="bogacki_shampine_rkc"), 11),
                              (dict(integrator="dormand_prince_rkc"), 13)):
        config = TrainConfig(**{**base.to_dict(), **settings})
        assert resources.estimate(config, 10).weights == vectors * P * b, settings
    # Adam's backward pass sees B points (6·B·A over the L = 3 hidden layers of h), its
    # end-of-epoch check the full batch one layer at a time (6·n·h): the larger counts.
    for batch_size, kept in ((32, 6 * 200 * 6), (100, 6 * 100 * 6 * 3)):
        config = TrainConfig(**{**base.to_dict(), "dynamics": "adam", "batch_size": batch_size})
        assert resources.estimate(config, 10).activations == (200 * 10 + kept) * b
