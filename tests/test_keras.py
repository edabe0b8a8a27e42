"""Keras citizenship: serializable layers and models, a .keras round trip, evaluate, compile."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import ConvNet, FullyConnected, WideResNet
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.errors import ConfigError
from lazy_feature.model.layers import NTKConv2D, NTKDense
from lazy_feature.run import runner
from tests.helpers import sphere_inputs

X = sphere_inputs(20, 6, seed=0)
Y = np.sign(X[:, 0] + 0.2)


def _trained_model(attempts=30):
    model = AlphaModel(FullyConnected(8, depth=2, bias_scale=0.1, readout_bias=True, seed=3,
                                      dtype="float64"),
                       alpha=0.5, loss="soft_hinge", loss_beta=10.0,
                       dynamics=GradientFlowDynamics(GradientFlow(dt0=0.5, max_dgrad=1e-3)))
    model.compile()
    _fit(model, attempts)
    return model


def _fit(model, attempts):
    model.fit(tf.data.Dataset.from_tensors((X, Y)).repeat(), epochs=1, steps_per_epoch=attempts,
              verbose=0, shuffle=False)


def test_ntk_dense_serializes_its_activation():
    layer = NTKDense(3, seed=1, activation="relu", use_bias=True, bias_scale=0.1,
                     dtype="float64")
    z = sphere_inputs(4, 5, seed=1)
    layer.build(z.shape)
    expected = np.sqrt(2.0) * np.maximum(layer.preactivation(z).numpy(), 0.0)  # eq. 10: √2·ReLU
    np.testing.assert_allclose(layer(z).numpy(), expected, rtol=1e-14)
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(copy, NTKDense) and copy.get_config() == layer.get_config()
    np.testing.assert_array_equal(copy(z).numpy(), layer(z).numpy())  # same seed, same w
    softplus = NTKDense(2, seed=0, activation="softplus", beta=2.0).get_config()
    assert softplus["activation"] == "softplus" and softplus["beta"] == 2.0


def test_fully_connected_config_round_trip():
    network = FullyConnected(8, depth=2, activation="tanh", bias_scale=0.1, seed=4,
                             dtype="float64", name="f")
    config = network.get_config()
    assert config["name"] == "f" and config["trainable"]  # Keras' own keys kept
    copy = FullyConnected.from_config(config)
    assert copy.dtype == "float64" and copy.get_config() == config
    np.testing.assert_array_equal(copy(X).numpy(), network(X).numpy())


@pytest.mark.slow
def test_trained_alpha_model_keras_round_trip(tmp_path):
    model = _trained_model()
    assert model.weight_drift().numpy() > 0  # w has left w0, so w0 must come from the file
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, AlphaModel) and loaded.dynamics == model.dynamics
    assert (loaded.alpha, loaded.loss_name, loaded.loss_beta, loaded.centered) == (
        0.5, "soft_hinge", 10.0, True)
    x_new = sphere_inputs(7, 6, seed=9)
    np.testing.assert_array_equal(loaded(x_new).numpy(), model(x_new).numpy())
    np.testing.assert_array_equal(loaded.initial_output(x_new).numpy(),
                                  model.initial_output(x_new).numpy())
    for key, value in model.train_state().items():
        np.testing.assert_array_equal(loaded.train_state()[key].numpy(), value.numpy(), key)
    # The integrator's state came along: both continue along the same flow.
    _fit(model, 10)
    _fit(loaded, 10)
    assert loaded.step_count.numpy() == model.step_count.numpy()
    np.testing.assert_array_equal(loaded(x_new).numpy(), model(x_new).numpy())


@pytest.mark.parametrize("network, shape", [
    (lambda: ConvNet(3, activation="tanh", seed=2, dtype="float64"), (19, 19, 1)),
    (lambda: WideResNet(1, depth=10, seed=3, dtype="float64"), (5, 5, 3))])
def test_image_network_alpha_model_keras_round_trip(network, shape, tmp_path):
    model = AlphaModel(network(), alpha=2.0, centered=False)
    x = np.random.default_rng(0).standard_normal((3, *shape))
    model(x)
    config = model.network.get_config()
    assert type(model.network).from_config(config).get_config() == config
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.network) is type(model.network)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())
    layer = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(model.network.ntk_layers[1]))
    assert isinstance(layer, NTKConv2D) and layer.get_config() == (
        model.network.ntk_layers[1].get_config())


def test_evaluate_averages_over_points_not_batches():
    # Uncentered (F = α f, Appendix I) so that F ≠ 0 at initialization.
    uncentered = AlphaModel(FullyConnected(8, depth=2, seed=0, dtype="float64"), alpha=1.0,
                            centered=False)
    uncentered.compile()
    F = uncentered(X).numpy()
    y = np.sign(F)
    y[3:] *= -1  # batch 1 (3 points) all right, batch 2 (17 points) all wrong
    batches = tf.data.Dataset.from_tensors((X[:3], y[:3])).concatenate(
        tf.data.Dataset.from_tensors((X[3:], y[3:])))
    result = uncentered.evaluate(batches, verbose=0, return_dict=True)
    assert result["error"] == 17 / 20  # a mean of the batch means would say 0.5
    soft_hinge = np.logaddexp(0.0, 20.0 * (1.0 - F * y)) / 20.0
    assert result["rescaled_loss"] == pytest.approx(soft_hinge.mean(), rel=1e-12)
    # A second evaluate starts afresh.
    again = uncentered.evaluate(batches.take(1), verbose=0, return_dict=True)
    assert again["error"] == 0.0


def test_outputs_are_the_models_in_order_batch_by_batch():
    # runner.outputs calls the model on slices of x (not Keras' predict): F on every point,
    # in order, in float64, whatever the batch size (up to the last bits: the matrix
    # products of other batch shapes sum in another order); none for no point.
    model = AlphaModel(FullyConnected(8, depth=2, seed=0, dtype="float64"), alpha=1.0,
                       centered=False)
    whole = model(X).numpy()
    for batch_size in (1, 3, 20, 64):
        F = runner.outputs(model, X, batch_size)
        assert F.dtype == np.float64
        np.testing.assert_allclose(F, whole, rtol=1e-12)
    assert runner.outputs(model, X[:0]).shape == (0,)


def test_compile_attaches_no_optimizer():
    model = AlphaModel(FullyConnected(8, depth=2, seed=0), alpha=1.0)
    model.compile()
    model.build(X.shape)
    assert model.optimizer is None  # fit works without one: see the round trip
    assert {v.path for v in model.variables} == {v.path for v in model.weights}
    with pytest.raises(ConfigError, match="its own gradient flow"):
        model.compile(optimizer="adam")
