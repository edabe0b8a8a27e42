"""Tests of lazy_feature.kernel (ntk, structured, drift): Gram matrices against float64 brute
force, streamed norms, drift and the frozen-kernel dynamics against a network trained at large α."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.network_flow import GradientFlowDynamics
from lazy_feature.kernel import drift, frozen, ntk
from lazy_feature.model.alpha_model import AlphaModel
from lazy_feature.model.architectures import ConvNet, FullyConnected, WideResNet
from lazy_feature.run import data

D = 6  # input dimension of every test problem


def inputs(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D))


def relative_error(value, reference):
    return np.max(np.abs(value - reference)) / np.max(np.abs(reference))


def brute_force_gram(network, x1, x2):
    """Θ = J1 J2ᵀ in float64, J the flattened full gradients, one tape per example."""
    def jacobian(x):
        rows = []
        for x_mu in x:
            with tf.GradientTape() as tape:
                f = network(x_mu[None])[0]
            grads = tape.gradient(f, network.trainable_weights)
            rows.append(np.concatenate([np.ravel(g) for g in grads]))
        return np.array(rows, dtype=np.float64)
    return jacobian(x1) @ jacobian(x2).T


def structured_only(network, x):
    """Whether Θ of `network` takes the structured path for every parameter."""
    kernel = ntk.Kernel(network, x)
    return len(kernel.terms) > 0 and kernel.jacobians is None


def fully_connected(depth=2, activation="softplus", use_bias=False, seed=0, dtype="float64"):
    """A built FullyConnected of width 5; with biases (readout too), random ones entering as 0.5·b.

    β_b = 0.5 so that a β_b in place of β_b² would show.
    """
    network = FullyConnected(5, depth=depth, activation=activation,
                             bias_scale=0.5 if use_bias else 0.0, readout_bias=use_bias,
                             seed=seed, dtype=dtype)
    network.build((None, D))
    if use_bias:
        rng = np.random.default_rng(seed + 100)
        for layer in network.hidden + [network.readout]:
            layer.bias.assign(rng.standard_normal(layer.bias.shape))
    return network


class TwoLayer(keras.Model):
    """A model that is not a FullyConnected: Keras Dense layers with biases, f of shape (batch,)."""

    def __init__(self, width=4, **kwargs):
        super().__init__(**kwargs)
        self.width = width
        normal = keras.initializers.RandomNormal
        self.first = keras.layers.Dense(width, activation="tanh", kernel_initializer=normal(seed=1),
                                        bias_initializer=normal(seed=2), dtype=self.dtype_policy)
        self.second = keras.layers.Dense(1, kernel_initializer=normal(seed=3),
                                         dtype=self.dtype_policy)

    def build(self, input_shape):
        self.first.build(input_shape)
        self.second.build((None, self.width))

    def call(self, x):
        return self.second(self.first(x))[:, 0]

    def get_config(self):
        return dict(super().get_config(), width=self.width)


# -- Gram matrices -------------------------------------------------------------------------

@pytest.mark.parametrize("depth, activation, use_bias", [
    (1, "softplus", False), (2, "relu", True), (3, "tanh", False), (3, "softplus", True)])
def test_fast_and_generic_paths_match_brute_force(depth, activation, use_bias):
    network = fully_connected(depth, activation, use_bias)
    x1, x2 = inputs(5), inputs(4, seed=1)
    reference = brute_force_gram(network, x1, x2)
    assert structured_only(network, x1)
    assert relative_error(ntk.gram(network, x1, x2), reference) < 1e-10
    assert relative_error(ntk.gram_generic(network, x1, x2), reference) < 1e-10
    assert relative_error(ntk.gram(network, x1), brute_force_gram(network, x1, x1)) < 1e-10


@pytest.mark.parametrize("network, shape", [
    (lambda: ConvNet(3, seed=1, dtype="float64"), (19, 19, 1)),
    (lambda: WideResNet(1, depth=10, activation="tanh", seed=2, dtype="float64"), (4, 5, 2))])
def test_image_networks_match_brute_force_on_both_paths(network, shape):
    """Images in their shape and convolution weights: per-example Jacobians (generic), and
    the structured path's patches ⊗ signals, against one tape per example."""
    network = network()
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((3, *shape)), rng.standard_normal((2, *shape))
    network(x1)
    reference = brute_force_gram(network, x1, np.concatenate([x1, x2]))
    # One shape per path: tracing the per-example gradients of a convolution is what costs.
    assert relative_error(ntk.gram_generic(network, x1), reference[:, :3]) < 1e-10
    assert structured_only(network, x1)
    assert relative_error(ntk.gram(network, x1, x2), reference[:, 3:]) < 1e-10
    assert relative_error(ntk.gram(network, x1, block_size=2), reference[:, :3]) < 1e-10


def test_both_paths_on_a_custom_model():
    """Keras Dense layers with biases take the structured path too."""
    model = TwoLayer(dtype="float64")
    x1, x2 = inputs(5), inputs(4, seed=1)
    model(x1)
    reference = brute_force_gram(model, x1, x2)
    assert structured_only(model, x1)
    assert relative_error(ntk.gram(model, x1, x2), reference) < 1e-10
    assert relative_error(ntk.gram_generic(model, x1, x2), reference) < 1e-10


def test_float32_network_is_accurate_to_its_precision():
    """Weights drawn in float64 and rounded: Θ agrees to ~ε(float32)·√h with float64."""
    x = inputs(5)
    reference = brute_force_gram(fully_connected(dtype="float64"), x, x)
    theta = ntk.gram(fully_connected(dtype="float32"), x)
    assert theta.dtype == np.float64
    assert relative_error(theta, reference) < 1e-5


def test_blocks_smaller_than_the_set_give_the_same_gram():
    network = fully_connected(depth=2)
    x1, x2 = inputs(7), inputs(5, seed=1)
    for x_other in (None, x2):
        reference = ntk.gram(network, x1, x_other)
        for size in (2, 3):  # neither divides 7 nor 5
            assert relative_error(ntk.gram(network, x1, x_other, block_size=size),
                                  reference) < 1e-13
    # param_block 7 is smaller than every weight tensor: one tensor per chunk, one example per
    # tile; example_block 2 splits the larger ones.
    reference = ntk.gram_generic(network, x1, x2)
    for example_block, param_block in ((2, 7), (2, 10 ** 6), (3, 40)):
        blocked = ntk.gram_generic(network, x1, x2, example_block, param_block)
        assert relative_error(blocked, reference) < 1e-13


def test_gram_is_symmetric_positive_semidefinite():
    theta = ntk.gram(fully_connected(depth=3, activation="relu"), inputs(9), block_size=4)
    np.testing.assert_array_equal(theta, theta.T)
    eigenvalues = np.linalg.eigvalsh(theta)
    assert eigenvalues.min() >= -1e-10 * eigenvalues.max()


def test_frozen_copy_of_a_generic_model_needs_its_trained_network():
    model = AlphaModel(TwoLayer(dtype="float64"), alpha=1.0)
    model(inputs(2))
    with pytest.raises(ValueError, match="no trainable weight"):
        ntk.gram(model.initial_network, inputs(3))


# -- streamed norms and drift --------------------------------------------------------------

def test_streamed_norms_equal_dense_norms():
    network_a, network_b = fully_connected(seed=0), fully_connected(seed=1)
    x = inputs(7)
    theta_a, theta_b = ntk.gram(network_a, x), ntk.gram(network_b, x)
    assert drift.gram_norm(network_a, x, block_size=3) == pytest.approx(
        np.linalg.norm(theta_a), rel=1e-12)
    assert drift.gram_difference_norm(network_a, network_b, x, block_size=3) == pytest.approx(
        np.linalg.norm(theta_a - theta_b), rel=1e-12)
    change = drift.kernel_drift((network_a, network_b), x, block_size=2)
    assert change["norm"] == pytest.approx(np.linalg.norm(theta_a), rel=1e-12)
    assert change["norm0"] == pytest.approx(np.linalg.norm(theta_b), rel=1e-12)
    assert change["drift"] == pytest.approx(
        np.linalg.norm(theta_a - theta_b) / np.linalg.norm(theta_b), rel=1e-12)


@pytest.mark.parametrize("network", [
    lambda: FullyConnected(7, dtype="float64"), lambda: TwoLayer(dtype="float64")])
def test_drift_vanishes_at_initialization(network):
    model = AlphaModel(network(), alpha=1.0)  # not built: kernel_drift builds it, w0 = w
    change = drift.kernel_drift(model, inputs(5), block_size=2)
    assert change["difference"] == 0.0 and change["drift"] == 0.0
    assert change["norm"] == change["norm0"] > 0


def test_drift_of_a_generic_model_follows_its_trained_weights():
    """The frozen copy has no trainable weight; its kernel is over the network's parameters."""
    model = AlphaModel(TwoLayer(dtype="float64"), alpha=1.0)
    x = inputs(5)
    model(x)
    theta0 = ntk.gram(model.network, x)
    for w in model.network.trainable_weights:
        w.assign(w * 1.1)
    theta = ntk.gram(model.network, x)
    change = drift.kernel_drift(model, x, block_size=2)
    assert change["norm0"] == pytest.approx(np.linalg.norm(theta0), rel=1e-12)
    assert change["difference"] == pytest.approx(np.linalg.norm(theta - theta0), rel=1e-12)


# -- frozen-kernel dynamics ----------------------------------------------------------------

WIDTH, ALPHA = 100, 1e4  # √h α = 1e5: deep in the lazy regime, float64 resolves it


def labels(x):
    return np.sign(x[:, 0] + 0.5 * x[:, 1])


class StopWhenConverged(keras.callbacks.Callback):
    def on_train_batch_end(self, batch, logs=None):
        if logs["converged"]:
            self.model.stop_training = True


@pytest.fixture(scope="module")
def lazy_problem():
    """A tiny task learned by the frozen kernel Θ(w0) and by the network trained at large α."""
    x_train, x_test = inputs(8, seed=2), inputs(20, seed=3)
    y_train, y_test = labels(x_train), labels(x_test)
    model = AlphaModel(FullyConnected(WIDTH, depth=2, dtype="float64"), ALPHA,
                       dynamics=GradientFlowDynamics())
    model.compile()
    model.build(x_train.shape)
    kernel_flow = frozen.frozen_kernel_test_error(model.initial_network, x_train, y_train, x_test,
                                                  y_test, flow=model.dynamics.flow, block_size=3)
    data = tf.data.Dataset.from_tensors((x_train, y_train)).repeat()
    model.fit(data, steps_per_epoch=5000, epochs=1, verbose=0, callbacks=[StopWhenConverged()])
    return dict(model=model, frozen=kernel_flow, x_train=x_train, y_train=y_train, x_test=x_test,
                y_test=y_test)


def test_frozen_dynamics_fits_the_training_set(lazy_problem):
    kernel_flow, x_train = lazy_problem["frozen"], lazy_problem["x_train"]
    assert kernel_flow["converged"] and kernel_flow["steps"] > 0
    assert np.min(kernel_flow["train_outputs"] * lazy_problem["y_train"]) > 1.0
    # F(x) = Σ_μ Θ(x, x_μ) a_μ reproduces the integrated outputs on the training set.
    predicted = frozen.predict_frozen(lazy_problem["model"].initial_network, x_train, x_train,
                                      kernel_flow["a"], block_size=3)
    assert relative_error(predicted, kernel_flow["train_outputs"]) < 1e-10


def test_frozen_dynamics_is_the_large_alpha_limit_of_the_network(lazy_problem):
    """Same flow, same step control: the network's kernel moves by ~1/(√h α) = 1e-5 during
    training (Section 5), and its outputs differ from the frozen kernel's by as much."""
    model, kernel_flow = lazy_problem["model"], lazy_problem["frozen"]
    assert model.step_count.numpy() == kernel_flow["steps"]
    assert model.attempts.numpy() == kernel_flow["steps"] + kernel_flow["rejected"]
    outputs = model(lazy_problem["x_test"]).numpy()
    assert relative_error(outputs, kernel_flow["test_outputs"]) < 10.0 / (np.sqrt(WIDTH) * ALPHA)
    assert np.mean(outputs * lazy_problem["y_test"] <= 0) == kernel_flow["test_error"]


def test_frozen_dynamics_stops_at_its_limits(lazy_problem):
    theta = ntk.gram(lazy_problem["model"].initial_network, lazy_problem["x_train"])
    y = lazy_problem["y_train"]
    by_steps = frozen.frozen_kernel_dynamics(theta, y, max_trials=3)
    assert not by_steps["converged"] and by_steps["steps"] + by_steps["rejected"] == 3
    by_time = frozen.frozen_kernel_dynamics(theta, y, max_time=2.0)
    assert not by_time["converged"] and by_time["t"] >= 2.0
    assert by_time["steps"] < lazy_problem["frozen"]["steps"]


@pytest.mark.slow
def test_the_default_frozen_kernel_flow_is_as_faithful_as_eulers(fashion_task):
    # Θ(w0) of the paper's FC network on 500 Fashion-MNIST points: the flow each default
    # integrator hands to function space (etdrk4's RKC, the switching pair's, at
    # FUNCTION_SPACE_RKC_TOL) ends, at its own stop, no farther from a tight reference than
    # the paper's Euler scheme; the reference's own error is ~1e-11. (measured: Euler 3.8e-4,
    # the substitutes 1.6e-4 and below; at RKC's own 1e-2, 3.6e-4)
    del fashion_task  # the data set must be there (CI installs it)
    task = data.load_binary_task("fashion_mnist", n_train=500, n_test=10, data_seed=0)
    network = FullyConnected(100, depth=3, dtype="float64")
    network.build((None, task.x_train.shape[1]))
    theta, y = ntk.gram(network, task.x_train), task.y_train

    def integrate(**settings):
        return frozen.frozen_kernel_dynamics(theta, y, flow=GradientFlow(**settings))

    tight = dict(integrator="dormand_prince", direction_tol=1e-9, landing_tol=1e-9)
    reference, finer = (integrate(output_tol=tol, **tight) for tol in (1e-10, 1e-11))

    def deviation(result):  # of a, which gives F everywhere (eq. 28), and of F on x_train
        return max(relative_error(result["a"], reference["a"]),
                   relative_error(result["train_outputs"], reference["train_outputs"]))

    euler = deviation(integrate(integrator="euler"))
    assert deviation(finer) < 1e-3 * euler
    for name in ("etdrk4", "bogacki_shampine_etdrk4"):
        result = integrate(integrator=name)
        assert result["converged"] and deviation(result) <= euler, name
