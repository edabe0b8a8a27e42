"""The centered α-model F(w, x) = α[f(w, x) − f(w0, x)] (eq. 6) trained by adaptive gradient flow.

α is the article's α: it multiplies f − f0 of a network whose readout already carries
h^(-1/2) (eq. 14), so √h·α is the parameter that separates the lazy (√h·α ≫ 1) and
feature (√h·α ≪ 1) regimes. Time t is the gradient-flow time of eq. 7's α⁻²-scaled loss.
"""
import dataclasses

import keras
import tensorflow as tf

from lazy_feature import integrators, losses
from lazy_feature.dynamics import GradientFlow
from lazy_feature.integrators import FlowState
from lazy_feature.errors import ConfigError

def _sum_replicas(value):
    """Σ over the replicas of a tf.distribute strategy (identity on one device)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def _max_replicas(value):
    """max over the replicas of a tf.distribute strategy (identity on one device)."""
    gathered = tf.distribute.get_replica_context().all_gather(tf.reshape(value, [1]), axis=0)
    return tf.reduce_max(gathered)


def _squared_norm(tensors):
    return tf.add_n([tf.reduce_sum(tf.square(t)) for t in tensors])


@keras.saving.register_keras_serializable(package="lazy_feature")
class _TrainingSetCache(keras.layers.Layer):
    """f(w_i), f(w0) and the labels y of the training points, built once their number is known.

    Replica-local (on_read): under tf.distribute each replica keeps its own shard.
    """

    def build(self, shape):
        local = dict(shape=shape, initializer="zeros", trainable=False, dtype=self.dtype)
        self.f_train = self.add_weight(name="f_train", **local)
        self.f0_train = self.add_weight(name="f0_train", **local)
        self.y_train = self.add_weight(name="y_train", **local)


class _NetworkFlow:
    """The flow of eq. 7 on the network for `integrators`: a point is the list of w's
    trainable tensors, its outputs f on this replica's training points.

    Evaluating a point assigns it to the network's weights; the caller assigns the accepted
    point afterwards.
    """

    def __init__(self, model, x):
        self.model, self.x = model, x
        self.weights = model.network.trainable_weights

    def _assign(self, point):
        for w, value in zip(self.weights, point):
            w.assign(value)

    def evaluate(self, point):
        self._assign(point)
        f, _, grads = self.model._loss_and_grad(self.x, self.model.cache.y_train,
                                                self.model.cache.f0_train)
        return f, grads

    def outputs(self, point):
        self._assign(point)
        return self.model.network(self.x)

    def move(self, point, dt, coefficients, grads):
        dt = tf.cast(dt, self.model.dtype)
        return [w - dt * step for w, step in zip(point, self.combine(coefficients, grads))]

    def combine(self, coefficients, grads):
        return [integrators.combination(coefficients, g) for g in zip(*grads)]

    def difference(self, grad_a, grad_b):
        return [a - b for a, b in zip(grad_a, grad_b)]

    def squared_norm(self, grad):
        return _squared_norm(grad)

    def output_change(self, f_a, f_b):
        return self.model.alpha * _max_replicas(tf.reduce_max(tf.abs(f_a - f_b)))


@keras.saving.register_keras_serializable(package="lazy_feature")
class AlphaModel(keras.Model):
    """F(w, x) = α[f(w, x) − f(w0, x)] (eq. 6), or α f(w, x) when `centered` is False (App. I).

    f(w0, ·) is a frozen copy of the network at its initial weights, so F is defined on any
    input. `fit` runs full-batch gradient flow on L = (α² n)⁻¹ Σ ℓ(F, y) (eq. 7): every
    `train_step` is one trial step of the flow's integrator (`GradientFlow.integrator`: the
    paper's Euler scheme or a Runge–Kutta pair, `integrators`); give it a dataset that yields the whole
    training set as one batch of static size, repeated (`data.full_batch`), and stop with
    `callbacks.GradientFlowStopping`. All integrator state (t, dt, the stored gradient, the
    step counts, f(w_i) and f(w0) on the training set) lives in Keras variables, so
    `save_weights`/`load_weights` checkpoint and resume a run exactly, and
    `save("m.keras")`/`keras.models.load_model` restore the whole model, w0 included.
    `compile()` takes no optimizer (the flow is the optimizer); `evaluate` reports the
    rescaled loss α²·mean ℓ and the error of F, averaged over all the points it saw.

    Args:
      network: a Keras model f(w, x) returning shape (batch,), e.g. `FullyConnected`.
      alpha: the output scale α > 0.
      loss: a name from `losses.NAMES` (the paper's soft hinge by default).
      loss_beta: sharpness of the soft hinge (β = 20 in the paper).
      centered: subtract f(w0, x) (eq. 6); False trains α f(w, x) (Appendix I).
      flow: the `GradientFlow` thresholds, dt policy and integrator.
      initial_network: a second instance of the network's architecture to hold w0 (its
        weights are overwritten by w's when the model is built); None clones `network`
        through its config. Give one for a network whose config cannot rebuild it (e.g. a
        subclassed Keras model); such a model's `save`/`load_model` needs its config anyway.
    """

    def __init__(self, network, alpha, loss="soft_hinge", loss_beta=losses.SOFT_HINGE_BETA,
                 centered=True, flow=GradientFlow(), initial_network=None, **kwargs):
        super().__init__(dtype=network.dtype_policy, **kwargs)
        if not alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {alpha}")
        self.network = network
        self.alpha = float(alpha)
        self.loss_name, self.loss_beta = loss, float(loss_beta)
        self.per_pattern_loss = losses.get(loss, loss_beta)
        self.centered = bool(centered)
        self.flow = flow
        self.integrator = integrators.get(flow)
        self.initial_network = initial_network or network.__class__.from_config(
            dict(network.get_config(), name=f"{network.name}_initial"))
        self.initial_network.trainable = False
        self.cache = _TrainingSetCache(dtype=network.dtype_policy, name="training_set_cache")
        # Means over every evaluated point, however the points are batched.
        self.loss_tracker = keras.metrics.Mean(name="rescaled_loss", dtype="float64")
        self.error_tracker = keras.metrics.Mean(name="error", dtype="float64")

    def get_config(self):
        config = super().get_config()
        config.pop("dtype")  # the network's
        config.update(network=keras.saving.serialize_keras_object(self.network),
                      alpha=self.alpha, loss=self.loss_name, loss_beta=self.loss_beta,
                      centered=self.centered, flow=dataclasses.asdict(self.flow))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config, network=keras.saving.deserialize_keras_object(config["network"]),
                      flow=GradientFlow(**config["flow"]))
        return cls(**config)

    def compile(self, optimizer=None, **kwargs):
        """Keras' compile without an optimizer: the gradient flow updates w (eqs. 7-9).

        Takes `run_eagerly`, `jit_compile`, `steps_per_execution`.
        """
        if optimizer is not None or kwargs.keys() - {"run_eagerly", "jit_compile",
                                                     "steps_per_execution"}:
            raise ConfigError("AlphaModel is trained by its own gradient flow: compile it "
                              "without optimizer, loss or metrics")
        super().compile(optimizer=None, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**{k: config[k] for k in ("run_eagerly", "jit_compile",
                                               "steps_per_execution") if k in config})

    @property
    def metrics(self):
        return [self.loss_tracker, self.error_tracker]

    # -- construction ------------------------------------------------------------------

    def build(self, input_shape):
        """Build f and f(w0, ·) and copy w into w0."""
        shape = (None,) + tuple(input_shape[1:])
        for network in (self.network, self.initial_network):
            if not network.built:  # a network given built, or rebuilt by `load_model`
                network.build(shape)
        for w0, w in zip(self.initial_network.weights, self.network.weights):
            w0.assign(w)
        # Time and dt accumulate many small numbers: float64 whatever the network's dtype.
        scalar = dict(shape=(), trainable=False)
        self.t = self.add_weight(name="t", initializer="zeros", dtype="float64", **scalar)
        self.dt = self.add_weight(name="dt", initializer=keras.initializers.Constant(self.flow.dt0),
                                  dtype="float64", **scalar)
        self.step_count = self.add_weight(name="step", initializer="zeros", dtype="int64", **scalar)
        self.attempts = self.add_weight(name="attempts", initializer="zeros", dtype="int64",
                                        **scalar)
        # Forward + backward passes of the training set, rejected steps and stages included.
        self.evaluations = self.add_weight(name="gradient_evaluations", initializer="zeros",
                                           dtype="int64", **scalar)
        # The flow runs to t_end exactly and past convergence when finite (`fidelity`).
        self.t_end = self.add_weight(name="t_end", dtype="float64",
                                     initializer=keras.initializers.Constant(float("inf")),
                                     **scalar)
        self.started = self.add_weight(name="started", initializer="zeros", dtype="bool", **scalar)
        self.n_train = self.add_weight(name="n_train", initializer="zeros", dtype=self.dtype,
                                       **scalar)
        self.stored_grad = [
            self.add_weight(name=f"grad_{i}", shape=w.shape, initializer="zeros", trainable=False,
                            dtype=w.dtype)
            for i, w in enumerate(self.network.trainable_weights)
        ]

    def get_build_config(self):
        """The input shape and, once known, the number of training points of the flow."""
        config = super().get_build_config()
        if config is not None and self.cache.built:
            config["n_train"] = int(self.cache.f_train.shape[0])
        return config

    def build_from_config(self, config):
        self.build(config["input_shape"])
        if "n_train" in config:
            self.build_dynamics_state(config["n_train"])

    def load_own_variables(self, store):
        """Keras' loading of the model's own variables; a weights file written before the
        integrator choice, which lacks `gradient_evaluations` and `t_end`, loads too: its run
        was the paper's Euler scheme, so its evaluations were one at w0 and one per trial
        step, and it had no set end time (t_end = ∞)."""
        own = self._trainable_variables + self._non_trainable_variables
        added = (self.evaluations, self.t_end)
        if len(store.keys()) != len(own) - len(added):
            return super().load_own_variables(store)
        for i, v in enumerate(v for v in own if all(v is not a for a in added)):
            v.assign(store[f"{i}"])
        self.t_end.assign(float("inf"))
        self.evaluations.assign(self.attempts + tf.cast(self.started, "int64"))

    def build_dynamics_state(self, n_local):
        """Create the per-pattern state of the n_local training points this replica holds."""
        if not self.cache.built:
            self.cache.build((n_local,))
        elif self.cache.f_train.shape[0] != n_local:
            raise ConfigError(
                f"this model's gradient flow runs on {self.cache.f_train.shape[0]} training "
                f"points, got a batch of {n_local}: the flow is full-batch, give fit the same set")

    # -- the model -------------------------------------------------------------------------

    def call(self, x):
        """F(w, x) on any input."""
        return self._output(self.network(x), x)

    def initial_output(self, x):
        """f(w0, x), the network at its initial weights, on any input."""
        return self.initial_network(x)

    def _output(self, f, x=None, f0=None):
        if not self.centered:
            return self.alpha * f
        if f0 is None:
            f0 = self.initial_network(x)
        return self.alpha * (f - f0)

    # -- adaptive gradient flow ------------------------------------------------------------

    def _loss_and_grad(self, x, y, f0):
        weights = self.network.trainable_weights
        with tf.GradientTape() as tape:
            f = self.network(x)
            F = self._output(f, f0=f0)
            loss = losses.alpha_loss(self.per_pattern_loss, F, y, self.alpha, self.n_train)
        grads = _sum_replicas(tape.gradient(loss, weights))
        return f, _sum_replicas(loss), grads

    def start(self, x, y):
        """Cache f(w0), f(w) and y on the training set and ∇L at the current w.

        `train_step` calls it at the first step; call it before `fit` to see the state at
        t = 0 (`train_state`). Building happens here if the model is not built yet.
        """
        x = tf.cast(x, self.dtype)
        y = tf.cast(y, self.dtype)
        if not self.built:
            self.build(x.shape)
        self.build_dynamics_state(x.shape[0])
        self.cache.y_train.assign(y)
        self.n_train.assign(_sum_replicas(tf.cast(tf.shape(x)[0], self.dtype)))
        self.cache.f0_train.assign(self.initial_network(x))
        f, _, grads = self._loss_and_grad(x, y, self.cache.f0_train)
        self.cache.f_train.assign(f)
        for g_var, g in zip(self.stored_grad, grads):
            g_var.assign(g)
        self.evaluations.assign_add(1)
        self.started.assign(True)
        return tf.constant(True)

    def train_step(self, data):
        """One trial step of the flow's integrator (`integrators`) from the accepted state.

        Euler costs one forward and one backward pass: the gradient at the accepted point is
        stored, so the trial point's forward pass gives eq. 8 and, through its backward pass,
        eq. 9 and the next step's ∇L. A Runge–Kutta pair costs its stages (the stored ∇L is
        its first) and one forward pass for its error estimate.
        """
        x, y = data
        if not self.built:
            self.build(x.shape)
        self.build_dynamics_state(x.shape[0])
        tf.cond(self.started, lambda: tf.constant(False), lambda: self.start(x, y))
        x = tf.cast(x, self.dtype)
        # A converged flow stands still, unless it runs to a set time t_end.
        done = tf.logical_or(self.t >= self.t_end,
                             tf.logical_and(self.converged(), tf.math.is_inf(self.t_end)))

        weights = self.network.trainable_weights
        state = FlowState([tf.identity(w) for w in weights], tf.identity(self.cache.f_train),
                          [tf.identity(g) for g in self.stored_grad])
        landing = self.dt >= self.t_end - self.t  # the last step, cut to land on t_end
        dt = tf.where(landing, self.t_end - self.t, self.dt)
        new, ok, measures = self.integrator.trial(_NetworkFlow(self, x), state, dt)
        accepted = tf.logical_and(ok, tf.logical_not(done))

        # Accept or restore w exactly; no branch, so the step is the same on every replica.
        for w, w_new, w_old in zip(weights, new.point, state.point):
            w.assign(tf.where(accepted, w_new, w_old))
        for g_var, g in zip(self.stored_grad, new.grad):
            g_var.assign(tf.where(accepted, g, g_var))
        self.cache.f_train.assign(tf.where(accepted, new.outputs, self.cache.f_train))
        self.t.assign(tf.where(accepted, tf.where(landing, self.t_end, self.t + dt), self.t))
        self.step_count.assign_add(tf.cast(accepted, "int64"))
        self.attempts.assign_add(1)
        self.evaluations.assign_add(self.integrator.evaluations_per_trial)
        # Standing still keeps dt, and so does the step that lands on t_end.
        keep = tf.logical_or(done, tf.logical_and(landing, accepted))
        self.dt.assign(tf.where(keep, self.dt, self.integrator.next_dt(dt, accepted, measures)))
        logs = self.train_state()
        logs.update(accepted=accepted, dout=measures["dout"], dgrad=measures["dgrad"],
                    error=measures["error"])
        return logs

    # -- state and observables -------------------------------------------------------------

    def margins(self):
        """F(w_i, x_μ) y_μ on this replica's training points, from the cached outputs."""
        return self._output(self.cache.f_train, f0=self.cache.f0_train) * self.cache.y_train

    def converged(self):
        """The paper's stopping criterion: every training margin F·y exceeds 1.

        Before the first step nothing is cached and the answer is False.
        """
        min_margin = -_max_replicas(-tf.reduce_min(self.margins()))
        return tf.logical_and(self.started, min_margin > 1.0)

    def train_state(self):
        """The integrator's state and the training observables at the current point.

        output_norm and f_norm are ‖f(w) − f(w0)‖ and ‖f(w)‖ on the training set (eq. 31).
        """
        margins = self.margins()
        loss = _sum_replicas(tf.reduce_sum(self.per_pattern_loss(margins, 1.0))) / self.n_train
        return {
            "step": self.step_count.value, "t": self.t.value, "dt": self.dt.value,
            "attempts": self.attempts.value, "evaluations": self.evaluations.value,
            "rescaled_loss": loss,  # α² L of eq. 7
            "train_error": _sum_replicas(tf.reduce_sum(tf.cast(losses.misclassified(margins, 1.0),
                                                               self.dtype)))
            / self.n_train,
            "unfitted": _sum_replicas(tf.reduce_sum(tf.cast(margins <= 1, "int64"))),
            "converged": self.converged(),
            "weight_drift": self.weight_drift(),
            "output_norm": self._rms(self.cache.f_train - self.cache.f0_train),
            "f_norm": self._rms(self.cache.f_train),
        }

    def weight_drift(self):
        """‖w − w0‖ / ‖w0‖ over all trainable weights (Appendix B)."""
        w = self.network.trainable_weights
        w0 = self.initial_network.weights
        return tf.sqrt(_squared_norm([a - b for a, b in zip(w, w0)]) / _squared_norm(w0))

    def _rms(self, values):
        """The root mean square over the training set (eq. 31's norm) of per-point values."""
        return tf.sqrt(_sum_replicas(tf.reduce_sum(tf.square(values))) / self.n_train)

    def test_step(self, data):
        """Add a batch of (x, y) to the means of ℓ(F, y) (α² × eq. 7's loss) and of the error."""
        x, y = data
        margins = self(tf.cast(x, self.dtype)) * tf.cast(y, self.dtype)
        self.loss_tracker.update_state(self.per_pattern_loss(margins, 1.0))
        self.error_tracker.update_state(tf.cast(losses.misclassified(margins, 1.0), "float64"))
        return {m.name: m.result() for m in self.metrics}
