import numpy as np
import pytest

from lazy_feature.model import architectures
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import ConvNet, FullyConnected, WideResNet
from lazy_feature.run.config import TrainConfig
from lazy_feature.errors import ConfigError
from lazy_feature.model.layers import NTKConv2D, conv_output_size
from tests.helpers import sphere_inputs


def _numpy_forward(net, x):
    """Brute-force float64 forward pass of eqs. 11-14 from the weights alone."""
    from lazy_feature.model import activations
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


@pytest.mark.slow
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


# -- the CNN and the Wide-ResNet (Section 7, Appendix A) -----------------------------------

def image_inputs(n, shape, seed):
    """n images of `shape` with i.i.d. components, each image on the sphere Σ x² = d."""
    return sphere_inputs(n, int(np.prod(shape)), seed).reshape((n, *shape))


def numpy_patches(layer, z):
    """The zero-padded k × k input patch of every output pixel of an NTKConv2D, as rows
    (batch · pixels, k·k·c_in), by NumPy sliding windows."""
    p, k, s = layer.padding, layer.kernel_size, layer.strides
    z = np.pad(np.asarray(z), [(0, 0), (p, p), (p, p), (0, 0)])
    windows = np.lib.stride_tricks.sliding_window_view(z, (k, k), axis=(1, 2))[:, ::s, ::s]
    return windows.reshape(-1, windows.shape[3] * k * k)


def test_conv_layer_matches_numpy_brute_force():
    layer = NTKConv2D(3, 5, seed=2, strides=2, padding=1, dtype="float64")
    z = image_inputs(2, (11, 9, 4), seed=0)
    out = layer(z).numpy()
    assert out.shape == (2, conv_output_size(11, 5, 2, 1), conv_output_size(9, 5, 2, 1), 3)
    w, padded = layer.kernel.numpy(), np.pad(z, [(0, 0), (1, 1), (1, 1), (0, 0)])
    for i, j in ((0, 0), (2, 3), (4, 2)):
        patch = padded[:, 2 * i:2 * i + 5, 2 * j:2 * j + 5, :]
        expected = np.einsum("nabc,abco->no", patch, w) / np.sqrt(5 * 5 * 4)
        np.testing.assert_allclose(out[:, i, j], expected, rtol=1e-12)


@pytest.mark.parametrize("make, shape", [
    (lambda seed: ConvNet(16, seed=seed, dtype="float64"), (28, 28, 1)),
    (lambda seed: WideResNet(1, depth=10, seed=seed, dtype="float64"), (12, 12, 3))])
def test_preactivations_have_the_variance_of_their_patch(make, shape):
    """N(0, 1) weights and fan_in^(-1/2) keep every pre-activation O(1) at init (Section 7).

    Given its input, a convolution's output channel c is z̃_c = U w_c / √fan_in with U the
    patches (rows: pixels of every input) and w_c ~ N(0, 1): Σ z̃_c² has mean tr M / fan_in
    and variance 2 tr M² / fan_in² (M = UᵀU), independently over channels and seeds. So the
    measured Σ z̃² over all channels and seeds divided by its expectation is 1 within a
    standard error computed exactly from the patches; the expectation is the mean square of
    the patches, 1 for unit-variance inputs, less at borders where the zero padding enters.
    Each layer's inputs are σ of the previous pre-activations, so with E σ(z)² = 1
    (eq. 10) every layer stays at unit variance away from the borders.
    """
    x = image_inputs(4, shape, seed=0)
    layers = None
    totals = None
    for seed in range(8):
        network = make(seed)
        inputs, preacts = network.layer_signals(x)
        layers = network.ntk_layers[:-1]
        stats = []
        for layer, z, pre in zip(layers, inputs, preacts):
            u = numpy_patches(layer, z.numpy())
            expected = layer.filters * np.sum(u ** 2) / layer.fan_in
            variance = layer.filters * 2 * np.sum((u.T @ u) ** 2) / layer.fan_in ** 2
            stats.append((np.sum(pre.numpy() ** 2), expected, variance, np.mean(u ** 2)))
        totals = np.array(stats) if totals is None else totals + np.array(stats)
    for index, (measured, expected, variance, _) in enumerate(totals):
        error = np.sqrt(variance) / expected
        assert error < 0.1, (index, error)  # enough samples to see a wrong scale (≥ 2×)
        assert measured / expected == pytest.approx(1.0, abs=4 * error), index
    # The first layer sees the inputs themselves: unit variance, less the padded border.
    levels = totals[:, 3] / 8
    assert 0.8 < levels[0] <= 1.0
    assert np.all((levels > 0.2) & (levels < 1.5)), levels  # O(1) at every layer


@pytest.mark.parametrize("network, shape", [
    (ConvNet(6, seed=0), (19, 19, 1)), (WideResNet(1, depth=10, seed=0), (8, 8, 3))])
def test_image_networks_start_at_F_zero_on_unseen_inputs(network, shape):
    model = AlphaModel(network, alpha=1e3)
    x_new = image_inputs(5, shape, seed=9)
    assert np.all(model(x_new).numpy() == 0.0)  # f(w) and f(w0) are computed identically
    assert np.all(model.initial_output(x_new).numpy() != 0.0)


def test_wide_resnet_stages():
    network = WideResNet(2, depth=16, seed=0)
    network.build((None, 9, 9, 3))
    # The stem, then 2 blocks a stage of 32, 64, 128 channels; a 1 × 1 shortcut where the
    # shape changes (each stage's first block), the identity elsewhere.
    assert [layer.filters for layer in network.convs] == [16, 32, 32, 32, 32, 32,
                                                          64, 64, 64, 64, 64,
                                                          128, 128, 128, 128, 128]
    assert [shortcut >= 0 for _, _, shortcut in network.blocks] == [True, False] * 3
    assert network.readout.fan_in == 128 and network.readout.seed == 16
    assert network.layer_signals(image_inputs(2, (9, 9, 3), 0))[1][-2].shape == (2, 3, 3, 128)


@pytest.mark.parametrize("network, shape, message", [
    (ConvNet(4), (18, 18, 1), "shrink a side of 18 to \\[8, 6, 2, 0\\]"),
    (ConvNet(4), (784,), "takes images"),
    (WideResNet(1, depth=10), (100,), "takes images"),
    (FullyConnected(4), (28, 28, 1), "takes vectors")])
def test_an_input_shape_the_network_cannot_take_is_refused(network, shape, message):
    with pytest.raises(ConfigError, match=message):
        network.build((None, *shape))


@pytest.mark.parametrize("settings, message", [
    (dict(architecture="cnn", depth=3), "4 hidden layers"),
    (dict(architecture="cnn", bias_scale=0.1), "fc only"),
    (dict(architecture="wide_resnet", readout_bias=True, bias_scale=0.1), "fc only"),
    (dict(architecture="wide_resnet", depth=12), "6n \\+ 4"),
    (dict(architecture="cnn", pca=10), "not images"),
    (dict(architecture="resnet"), "choose one of fc, cnn, wide_resnet")])
def test_options_an_architecture_does_not_take_are_refused(settings, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**settings)


def test_depth_defaults_to_the_architectures_and_keeps_fc_run_ids():
    assert [TrainConfig(architecture=a).depth for a in ("fc", "cnn", "wide_resnet")] == [3, 4, 28]
    # A setting added later enters the id only away from its default: the FC ids of
    # earlier versions stay valid, and another architecture is another run.
    assert TrainConfig().run_id() == TrainConfig(architecture="fc", depth=3).run_id()
    assert TrainConfig(architecture="cnn").run_id() != TrainConfig().run_id()
    # as in version 0.2.0, whose runs were the paper's Euler scheme's (the direct form, which
    # the default keeps where float32 resolves it)
    old_rule = TrainConfig(width=30, depth=5, integrator="euler", landing_tol=0.0)
    assert old_rule.form == "direct" and old_rule.run_id() == "65eaeaf2d0ad3cfc"
    assert TrainConfig(width=30, depth=5, integrator="euler", landing_tol=0.0,
                       form="direct").run_id() == old_rule.run_id()
    # runs that end within landing_tol of the criterion (the default) are other runs, and so
    # are runs in the difference form
    assert TrainConfig(width=30, depth=5, integrator="euler").run_id() != old_rule.run_id()
    assert TrainConfig(width=30, depth=5, integrator="euler", landing_tol=0.0,
                       form="difference").run_id() != old_rule.run_id()


@pytest.mark.parametrize("name", sorted(architectures.ARCHITECTURES))
def test_each_registered_architecture_builds_what_its_entry_says(name):
    entry = architectures.ARCHITECTURES[name]
    config = TrainConfig(architecture=name, width=2, n_train=10, n_test=10)
    net = architectures.network(config)
    assert type(net) is entry.network and config.depth == entry.network.DEFAULT_DEPTH
    assert architectures.takes_images(name) == entry.images == (not isinstance(net, FullyConnected))
    if not entry.biases:  # refused in one line, the others' options
        with pytest.raises(ConfigError, match="apply to fc only"):
            TrainConfig(architecture=name, bias_scale=0.1)
    assert not architectures.takes_images("mlp")
    with pytest.raises(ConfigError, match="unknown architecture 'mlp'"):
        TrainConfig(architecture="mlp")


def test_a_wide_resnet_block_strides_on_its_second_convolution_as_the_authors(monkeypatch):
    net = WideResNet(1, depth=10)
    assert [net.convs[first].strides for first, _, _ in net.blocks] == [1, 1, 1]
    assert [net.convs[second].strides for _, second, _ in net.blocks] == [1, 2, 2]
    assert [net.convs[cut].strides for _, _, cut in net.blocks if cut >= 0] == [2, 2]
    # the definition changed: its runs get new ids, other architectures keep theirs
    config = TrainConfig(architecture="wide_resnet", width=1, depth=10)
    new_ids = config.run_id(), TrainConfig().run_id()
    entry = architectures.ARCHITECTURES["wide_resnet"]
    monkeypatch.setitem(architectures.ARCHITECTURES, "wide_resnet",
                        architectures.dataclasses.replace(entry, version=0))
    assert config.run_id() != new_ids[0] and TrainConfig().run_id() == new_ids[1]
