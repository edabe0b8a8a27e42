import numpy as np
import pytest

from lazy_feature.alpha_model import AlphaModel
from lazy_feature.architectures import FullyConnected
from lazy_feature.errors import ConfigError
from tests.conftest import sphere_inputs


def _numpy_forward(net, x):
    """Brute-force float64 forward pass of eqs. 11-14 from the weights alone."""
    from lazy_feature import activations
    a = activations.normalization(net.activation_name, net.beta)
    z = x
    for layer in net.hidden:
        pre = z @ layer.kernel.numpy() / np.sqrt(z.shape[1])
        if layer.use_bias:
            pre = pre + net.bias_scale * layer.bias.numpy()
        z = a * np.logaddexp(0.0, net.beta * pre) / net.beta
    out = (z @ net.readout.kernel.numpy())[:, 0] / np.sqrt(z.shape[1])
    return out + net.bias_scale * net.readout.bias.numpy()[0] if net.readout_bias else out


@pytest.mark.parametrize("bias_scale, readout_bias", [(0.0, False), (0.1, False), (0.5, True)])
def test_forward_matches_numpy_brute_force(bias_scale, readout_bias):
    x = sphere_inputs(7, 11, seed=0)
    net = FullyConnected(width=13, depth=3, bias_scale=bias_scale, readout_bias=readout_bias,
                         seed=3, dtype="float64")
    net.build(x.shape)
    rng = np.random.default_rng(4)
    for layer in net.hidden + [net.readout]:  # biases start at 0; move them so they show
        if layer.use_bias:
            layer.bias.assign(rng.standard_normal(layer.bias.shape))
    assert [layer.use_bias for layer in net.hidden + [net.readout]] == (
        [bias_scale > 0] * 3 + [readout_bias])
    np.testing.assert_allclose(net(x).numpy(), _numpy_forward(net, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("width", [200, 1000])
def test_preactivations_have_unit_variance(width):
    # z̃^ℓ | z^(ℓ-1) ~ N(0, |z^(ℓ-1)|²/fan_in) with E = 1; |z|²/h fluctuates by ~√(2/h) per
    # input and seed, so the mean over 8 inputs x 10 seeds is within ~0.02 at h = 200.
    x = sphere_inputs(8, 100, seed=1)
    for layer_index in range(3):
        second_moments = []
        for seed in range(10):
            net = FullyConnected(width=width, depth=3, seed=seed, dtype="float64")
            _, preacts = net.layer_signals(x)
            second_moments.append(np.mean(preacts[layer_index].numpy() ** 2))
        assert np.mean(second_moments) == pytest.approx(1.0, abs=0.08), layer_index


@pytest.mark.parametrize("width", [50, 400])
def test_output_variance_over_seeds_is_one(width):
    # Var f(w0, x) = E|z^L|²/h = 1 (NTK scaling). 150 seeds: the sample variance of one input
    # has relative std √(2/150) ≈ 0.12; averaging 16 weakly correlated inputs brings it to ~0.04.
    x = sphere_inputs(16, 50, seed=2)
    outputs = np.stack([FullyConnected(width=width, depth=3, seed=s, dtype="float64")(x).numpy()
                        for s in range(150)])
    assert np.mean(outputs.var(axis=0)) == pytest.approx(1.0, abs=0.2)


def test_F_is_zero_at_initialization_on_unseen_inputs():
    net = FullyConnected(width=30, depth=3, seed=0, dtype="float32")
    model = AlphaModel(net, alpha=1e3)
    x_new = sphere_inputs(50, 20, seed=9)
    assert np.all(model(x_new).numpy() == 0.0)  # f(w) and f(w0) are computed identically
    assert np.any(model.initial_output(x_new).numpy() != 0.0)


def test_uncentered_model_is_alpha_f():
    net = FullyConnected(width=30, depth=2, seed=0, dtype="float64")
    model = AlphaModel(net, alpha=3.0, centered=False)
    x = sphere_inputs(5, 20, seed=9)
    np.testing.assert_allclose(model(x).numpy(), 3.0 * net(x).numpy(), rtol=1e-14)


def test_same_seed_same_init_across_precisions():
    x = sphere_inputs(4, 10, seed=0)
    f32 = FullyConnected(width=20, seed=5, dtype="float32")(x).numpy()
    f64 = FullyConnected(width=20, seed=5, dtype="float64")(x).numpy()
    np.testing.assert_allclose(f32, f64, rtol=1e-5)


@pytest.mark.parametrize("kwargs", [dict(width=0), dict(width=10, depth=0)])
def test_bad_shapes(kwargs):
    with pytest.raises(ConfigError):
        FullyConnected(**kwargs)


@pytest.mark.parametrize("bias_scale, readout_bias", [(-0.1, False), (0.0, True)])
def test_impossible_bias_settings_are_refused(bias_scale, readout_bias):
    with pytest.raises(ConfigError, match="bias_scale"):
        FullyConnected(width=4, bias_scale=bias_scale, readout_bias=readout_bias)
