"""The centered α-model F(w, x) = α[f(w, x) − f(w0, x)] (eq. 6) trained by adaptive gradient flow.

α is the article's α: it multiplies f − f0 of a network whose readout already carries
h^(-1/2) (eq. 14), so √h·α is the parameter that separates the lazy (√h·α ≫ 1) and
feature (√h·α ≪ 1) regimes. Time t is the gradient-flow time of eq. 7's α⁻²-scaled loss.
"""
import dataclasses
import math
import time

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.flow import adam as adam_lib
from lazy_feature.flow import integrators
from lazy_feature.model import losses
from lazy_feature.flow.dynamics import (EXPONENTIAL_FROM_SQRT_H_ALPHA, ContinuousMomentum,
                                   GradientFlow)
from lazy_feature.flow.integrators import FlowState
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


def _outside_replicas(strategy):
    """Whether code that reduces over the replicas of `strategy` runs outside them (in its
    cross-replica context, or outside its scope), so that it must go through strategy.run."""
    if tf.distribute.has_strategy():
        return tf.distribute.in_cross_replica_context()
    return strategy is not tf.distribute.get_strategy()  # not the default strategy


def _first_replica(strategy, values):
    """The first replica's values of a structure returned by strategy.run (the train
    state and the logs are all-reduced, hence the same on every replica)."""
    return tf.nest.map_structure(lambda v: strategy.experimental_local_results(v)[0], values)


def shard(strategy, x, dtype):
    """x split along its first axis into one contiguous shard per replica of `strategy`,
    placed once on the replicas' devices (a PerReplica value; x itself on one replica)."""
    x = tf.convert_to_tensor(np.asarray(x), dtype)
    replicas = strategy.num_replicas_in_sync
    if replicas == 1:
        return tf.identity(x)  # a copy on the default device (the GPU, if there is one)
    size = x.shape[0] // replicas
    return strategy.experimental_distribute_values_from_function(
        lambda context: x[context.replica_id_in_sync_group * size:
                          (context.replica_id_in_sync_group + 1) * size])


@keras.saving.register_keras_serializable(package="lazy_feature")
class _TrainingSetCache(keras.layers.Layer):
    """f(w_i), f(w0) and the labels y of the training points, built once their number is known.

    Replica-local (synchronization on_read): under tf.distribute each replica keeps the
    shard of the training set it holds. Saved and loaded whole: the shards are
    concatenated in replica order (the order of the training set) and split again on load.
    """

    def build(self, shape):
        def local(name):
            with keras.name_scope(self.name, caller=self):
                variable = keras.Variable(
                    initializer=keras.initializers.Zeros(), shape=shape,
                    dtype=self.variable_dtype, trainable=False, name=name,
                    synchronization="on_read", aggregation="none")
            self._track_variable(variable)
            return variable
        self.f_train = local("f_train")
        self.f0_train = local("f0_train")
        self.y_train = local("y_train")

    def save_own_variables(self, store):
        for i, v in enumerate(self.non_trainable_variables):
            store[f"{i}"] = np.concatenate([np.asarray(part) for part in _shards(v)])

    def load_own_variables(self, store):
        for i, v in enumerate(self.non_trainable_variables):
            parts = _shards(v)
            for part, values in zip(parts, np.split(np.asarray(store[f"{i}"]), len(parts))):
                part.assign(values)


def _shards(variable):
    """The replicas' copies of a replica-local variable (the variable alone on one device)."""
    value = variable.value
    return tuple(value.values) if isinstance(value, tf.distribute.DistributedValues) else (value,)


class _NetworkFlow:
    """The flow of eq. 7 on the network for `integrators`: a point is the list of w's
    trainable tensors, its outputs f on this replica's training points.

    Evaluating a point assigns it to the network's weights; the caller assigns the accepted
    point afterwards.
    """

    def __init__(self, model, x):
        self.model, self.x = model, x
        self.weights = model.network.trainable_weights
        self.branches = model.distribute_strategy.num_replicas_in_sync == 1
        # Traced once and called at every evaluation of a trial step (a Runge–Kutta pair's
        # stages, RKC's loops), so the step's graph holds one forward and backward pass, not
        # one per call: the trace of a switching pair's step fell from 5.2 s to 1.5 s. The
        # sum over the replicas stays outside (a tf.function cannot hold it).
        self._local_gradient = tf.function(self._evaluate_here, autograph=False)

    def _assign(self, point):
        for w, value in zip(self.weights, point):
            w.assign(value)

    def evaluate(self, point):
        f, grads = self._local_gradient(point)
        return f, _sum_replicas(grads)

    def _evaluate_here(self, point):
        """f and this replica's part of ∇L at `point`."""
        self._assign(point)
        f, _, grads = self.model._local_loss_and_grad(self.x, self.model.cache.y_train,
                                                      self.model.cache.f0_train)
        return f, grads

    def outputs(self, point):
        self._assign(point)
        return self.model.network(self.x)

    def linear_combination(self, coefficients, points, dt, grad_coefficients, grads):
        combined = [integrators.combination(coefficients, w) for w in zip(*points)]
        if not grads:
            return combined
        dt = tf.cast(dt, self.model.dtype)
        return [w - dt * step for w, step in zip(combined, self.combine(grad_coefficients, grads))]

    def combine(self, coefficients, grads):
        return [integrators.combination(coefficients, g) for g in zip(*grads)]

    def difference(self, grad_a, grad_b):
        return [a - b for a, b in zip(grad_a, grad_b)]

    def squared_norm(self, grad):
        return _squared_norm(grad)

    def output_change(self, f_a, f_b):
        return self.model.alpha * _max_replicas(tf.reduce_max(tf.abs(f_a - f_b)))

    def flatten(self, displacement):
        """A point, gradient or displacement as one vector of the weights' coordinates."""
        return tf.concat([tf.reshape(d, [-1]) for d in displacement], 0)

    def unflatten(self, vector):
        """The inverse of `flatten`: a displacement shaped as the weights."""
        sizes = [int(np.prod(w.shape)) for w in self.weights]
        return [tf.reshape(part, w.shape)
                for part, w in zip(tf.split(vector, sizes), self.weights)]


class _MomentumFlow(_NetworkFlow):
    """Continuous momentum on the network (`dynamics.ContinuousMomentum`) for the Euler
    integrator: a point is w's tensors followed by the velocity v's, the gradient ∇L (of w).

    A move from the accepted point at time t integrates v exactly with ∇L frozen, then moves
    w with the new v; eqs. 8-9 then judge the trial as for gradient flow.
    """

    def linear_combination(self, coefficients, points, dt, grad_coefficients, grads):
        """Euler's move from one point (`integrators.move`), the only one momentum takes."""
        if tuple(coefficients) != (1.0,) or len(points) != 1:
            raise ValueError("continuous momentum is stepped by the euler integrator only")
        point, coefficients = points[0], grad_coefficients
        n = len(self.weights)
        decay = tf.cast(self.model.momentum.decay(self.model.t, dt), self.model.dtype)
        dt = tf.cast(dt, self.model.dtype)
        velocity = [decay * v - (1.0 - decay) * g
                    for v, g in zip(point[n:], self.combine(coefficients, grads))]
        return [w + dt * v for w, v in zip(point[:n], velocity)] + velocity


@keras.saving.register_keras_serializable(package="lazy_feature")
class AlphaModel(keras.Model):
    """F(w, x) = α[f(w, x) − f(w0, x)] (eq. 6), or α f(w, x) when `centered` is False (App. I).

    f(w0, ·) is a frozen copy of the network at its initial weights, so F is defined on any
    input. `fit` runs full-batch gradient flow on L = (α² n)⁻¹ Σ ℓ(F, y) (eq. 7): every
    `train_step` is one trial step of the flow's integrator (`GradientFlow.integrator`: the
    paper's Euler scheme or a Runge–Kutta pair, `integrators`), or of continuous momentum
    (`momentum`, with Euler), or one step of Adam on a mini-batch (`adam`,
    `lazy_feature.flow.adam`); give it a dataset that yields the whole training set as one batch
    of static size, repeated (`data.full_batch`), and stop with
    `callbacks.GradientFlowStopping`. All integrator state (t, dt, the stored gradient, the
    step counts, f(w_i) and f(w0) on the training set) lives in Keras variables, so
    `save_weights`/`load_weights` checkpoint and resume a run exactly, and
    `save("m.keras")`/`keras.models.load_model` restore the whole model, w0 included.
    `compile()` takes no optimizer (the flow is the optimizer); `evaluate` reports the
    rescaled loss α²·mean ℓ and the error of F, averaged over all the points it saw.

    Under a tf.distribute strategy (build the model inside `strategy.scope()`) the training
    set is split in one contiguous shard per replica (n must be a multiple of the number
    of replicas, and the integrator neither rkc nor etdrk4, whose loops of evaluations cannot
    all-reduce); each replica keeps f(w_i), f(w0) and y of its shard, and the gradient,
    the loss, the counts and eq. 8's max are reduced over the replicas, so the flow takes
    the same steps as on one device (Adam too: each replica takes the points of the global
    mini-batch its shard holds, `adam`). `compile(steps_per_execution=K)` with K > 1 runs up
    to K trial steps per call in one graph (`make_train_function`).

    Args:
      network: a Keras model f(w, x) returning shape (batch,), e.g. `FullyConnected`.
      alpha: the output scale α > 0.
      loss: a name from `losses.NAMES` (the paper's soft hinge by default).
      loss_beta: sharpness of the soft hinge (β = 20 in the paper).
      centered: subtract f(w0, x) (eq. 6); False trains α f(w, x) (Appendix I).
      flow: the `GradientFlow` thresholds, dt policy and integrator.
      momentum: a `dynamics.ContinuousMomentum`: train by continuous momentum (τ v̇ = −v − ∇L,
        ẇ = v) instead of gradient flow, stepped by the Euler integrator under eqs. 8-9.
      adam: an `adam.Adam`: train by Adam on mini-batches instead.
      initial_network: a second instance of the network's architecture to hold w0 (its
        weights are overwritten by w's when the model is built); None clones `network`
        through its config. Give one for a network whose config cannot rebuild it (e.g. a
        subclassed Keras model); such a model's `save`/`load_model` needs its config anyway.
    """

    def __init__(self, network, alpha, loss="soft_hinge", loss_beta=losses.SOFT_HINGE_BETA,
                 centered=True, flow=GradientFlow(), initial_network=None, momentum=None,
                 adam=None, **kwargs):
        super().__init__(dtype=network.dtype_policy, **kwargs)
        if not alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {alpha}")
        if momentum is not None and (adam is not None or flow.integrator != "euler"):
            raise ConfigError("continuous momentum is stepped by the euler integrator, "
                              "without adam")
        if (adam is not None and self.distribute_strategy.num_replicas_in_sync > 1
                and isinstance(self.distribute_strategy, tf.distribute.TPUStrategy)):
            raise ConfigError("adam's per-replica batches have data-dependent sizes, which "
                              "TPUs cannot compile: use --strategy=mirrored on GPUs")
        self.momentum, self.adam = momentum, adam
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
        self._training_set = None  # (x, y), sharded over the replicas by `start`
        self._pause = None  # limits of the next call of the train function (`pause_at`)
        self._seconds_per_attempt = math.inf  # measured wall time of one trial step
        self._state_function = None  # `train_state` on every replica, from outside them
        self._observe_function = None  # Adam's refresh of f(w) on the training set
        # Means over every evaluated point, however the points are batched.
        self.loss_tracker = keras.metrics.Mean(name="rescaled_loss", dtype="float64")
        self.error_tracker = keras.metrics.Mean(name="error", dtype="float64")

    def get_config(self):
        config = super().get_config()
        config.pop("dtype")  # the network's
        config.update(network=keras.saving.serialize_keras_object(self.network),
                      alpha=self.alpha, loss=self.loss_name, loss_beta=self.loss_beta,
                      centered=self.centered, flow=dataclasses.asdict(self.flow),
                      momentum=self.momentum and dataclasses.asdict(self.momentum),
                      adam=self.adam and dataclasses.asdict(self.adam))
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config, network=keras.saving.deserialize_keras_object(config["network"]),
                      flow=GradientFlow(**config["flow"]))
        if config.get("momentum"):
            config["momentum"] = ContinuousMomentum(**config["momentum"])
        if config.get("adam"):
            config["adam"] = adam_lib.Adam(**config["adam"])
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

    # -- the calls `fit` makes ---------------------------------------------------------------

    def pause_at(self, step=math.inf, t=math.inf, seconds=math.inf):
        """Ask the next call of the train function to return at the latest after the trial
        step at which `step` steps are accepted or t reaches `t`, and after about `seconds`
        of wall time: how a callback sees the steps it needs under in-graph stepping.

        Requests made before a call add up (the earliest limit wins) and hold for that call,
        which always makes at least one trial step.
        """
        if self._pause is not None:
            step, t, seconds = (min(a, b) for a, b in zip((step, t, seconds), self._pause))
        self._pause = (step, t, seconds)

    def make_train_function(self, force=False):
        """The function `fit` calls: trial steps (`train_step`) under the model's strategy.

        With steps_per_execution = 1 a call makes one trial step (Keras' own loop, on each
        batch of the dataset). With K > 1 it makes up to K trial steps in one tf.while_loop
        on the training set that `start` placed on the devices (no transfer from the host),
        and returns after the first step at which the flow converged, its loss is not
        finite, or a limit of `pause_at` is met; its logs are the last step's. The steps
        are the same either way. A model not started yet starts on the first batch of
        `fit`'s dataset (on one replica; call `start` first under a strategy).
        """
        if self.train_function is not None and not force:
            return self.train_function
        if self.steps_per_execution == 1:
            super().make_train_function(force=True)
            keras_function = self.train_function
            calls = lambda iterator, pause: keras_function(iterator)  # noqa: E731
        else:
            calls = self._in_graph_steps()

        def train_function(iterator):
            if self._training_set is None:
                if self.distribute_strategy.num_replicas_in_sync > 1:
                    raise ConfigError("under a strategy with several replicas, call "
                                      "model.start(x, y) with the whole training set before fit")
                self.start(*next(iterator))
            pause, self._pause = self._pause, None
            logs = calls(iterator, pause or (math.inf, math.inf, math.inf))
            return logs if self.adam is None else self._observed(logs)

        self.train_function = train_function
        return train_function

    def _observed(self, logs):
        """Adam's logs with the observables of the training set refreshed (`adam.observe`)."""
        if self._observe_function is None:
            strategy = self.distribute_strategy
            self._observe_function = tf.function(
                lambda x: strategy.run(lambda shard: adam_lib.observe(self, shard), args=(x,)),
                autograph=False)
        self._observe_function(self._training_set[0])
        return dict(logs, **self.train_state())

    def _in_graph_steps(self):
        """A function of the `pause_at` limits that makes the trial steps of one call."""
        strategy = self.distribute_strategy

        def one_step(data):
            return _first_replica(strategy, strategy.run(self.train_step, args=(data,)))

        def steps(data, no_logs, max_attempts, until_step, until_t):
            def going(attempts, logs):
                return (attempts == 0) | (
                    (attempts < max_attempts) & (logs["converged"] == 0)
                    & (logs["step"] < until_step) & (logs["t"] < until_t)
                    & tf.math.is_finite(logs["rescaled_loss"]))

            def step(attempts, logs):
                return attempts + 1, one_step(data)

            return tf.while_loop(going, step, (tf.constant(0, tf.int64), no_logs))

        # Its control flow is explicit (tf.cond, tf.while_loop): autograph's conversion of
        # every function the step calls cost each new process about 2 s of tracing.
        traced = tf.function(one_step, reduce_retracing=True, jit_compile=self.jit_compile,
                             autograph=False)
        if not self.run_eagerly:
            one_step, steps = traced, tf.function(steps, autograph=False)
        no_logs = []  # zeros of the logs' structure: the loop's values before its first step

        def call(iterator, pause):  # pylint: disable=unused-argument
            until_step, until_t, seconds = pause
            attempts = self.steps_per_execution
            if seconds < math.inf:  # from the wall time the last call took per trial step
                attempts = min(attempts, int(seconds / self._seconds_per_attempt))
            if not no_logs:
                outputs = traced.get_concrete_function(self._training_set).structured_outputs
                no_logs.append(tf.nest.map_structure(lambda v: tf.zeros(v.shape, v.dtype),
                                                     outputs))
            began = time.monotonic()
            made, logs = steps(self._training_set, no_logs[0],
                               tf.constant(max(attempts, 1), tf.int64),
                               tf.constant(min(until_step, 2**62), tf.int64),
                               tf.constant(until_t, tf.float64))
            self._seconds_per_attempt = max(time.monotonic() - began, 1e-9) / int(made)
            return logs

        return call

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
        # What the integrator carries from trial to trial (RKC's ρ and eigenvector), zero at
        # the start: in variables, so that a resumed run continues exactly.
        self._memory_structure = self.integrator.initial_memory(self.network.trainable_weights)
        self.integrator_memory = [
            self.add_weight(name=f"integrator_memory_{i}", shape=m.shape, initializer="zeros",
                            trainable=False, dtype=m.dtype)
            for i, m in enumerate(tf.nest.flatten(self._memory_structure))
        ]
        if self.momentum is not None:  # v of continuous momentum, starting at rest
            self.velocity = [
                self.add_weight(name=f"velocity_{i}", shape=w.shape, initializer="zeros",
                                trainable=False, dtype=w.dtype)
                for i, w in enumerate(self.network.trainable_weights)]
        if self.adam is not None:
            adam_lib.build(self)

    def get_build_config(self):
        """The input shape and, once known, the number of training points of the flow."""
        config = super().get_build_config()
        if config is not None and self.cache.built:
            config["n_train"] = (self.n_local_points()
                                 * self.distribute_strategy.num_replicas_in_sync)
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

    def build_dynamics_state(self, n_train):
        """Create the per-pattern state of n_train training points, split over the replicas."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        if n_train % replicas:
            raise ConfigError(f"n_train={n_train} does not split evenly over the {replicas} "
                              f"replicas of the strategy: use a multiple of {replicas}")
        if replicas > 1 and self.flow.integrator in ("rkc", "etdrk4"):
            # Their stages or Hessian-vector products run in a tf.while_loop, where
            # tf.distribute cannot all-reduce.
            default = (f" (the default from √h·α = {EXPONENTIAL_FROM_SQRT_H_ALPHA:g})"
                       if self.flow.integrator == "etdrk4" else "")
            raise ConfigError(f"the {self.flow.integrator} integrator{default} runs on one "
                              "replica: pass --integrator=euler or bogacki_shampine under a "
                              "strategy with several replicas")
        if not self.cache.built:
            with self.distribute_strategy.scope():
                self.cache.build((n_train // replicas,))
        self._check_shard(n_train // replicas)

    def _check_shard(self, n_local):
        if self.cache.f_train.shape[0] != n_local:
            raise ConfigError(
                f"this model's gradient flow runs on {self.n_local_points()} training points, "
                f"got {n_local} per replica: the flow is full-batch, give fit the same set")

    def n_local_points(self):
        """The number of training points each replica holds (their total is n_train)."""
        return int(self.cache.f_train.shape[0])

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

    def _loss_and_grad(self, x, y, f0, n=None):
        """f(w, x), eq. 7's loss and its gradient, the loss's mean over n points (default:
        the training set's n; Adam's mini-batch gives its own), summed over the replicas."""
        f, loss, grads = self._local_loss_and_grad(x, y, f0, n)
        return f, _sum_replicas(loss), _sum_replicas(grads)

    def _local_loss_and_grad(self, x, y, f0, n=None):
        """`_loss_and_grad` of this replica's points alone."""
        weights = self.network.trainable_weights
        with tf.GradientTape() as tape:
            f = self.network(x)
            F = self._output(f, f0=f0)
            loss = losses.alpha_loss(self.per_pattern_loss, F, y, self.alpha,
                                     self.n_train if n is None else n)
        return f, loss, tape.gradient(loss, weights)

    def start(self, x, y):
        """Put the training set (x, y) on the devices, one shard per replica, and start the
        flow there: cache f(w0), f(w) and y and ∇L at the current w on every replica.

        A flow that has started already (restored from a checkpoint) keeps its state: only
        the training set is placed. `fit` trains on this set (it calls `start` on its
        dataset's first batch when the model has none, on one replica). Call it before
        `fit` to see the state at t = 0 (`train_state`).
        """
        strategy = self.distribute_strategy
        if not self.built:
            with strategy.scope():
                self.build(x.shape)
        self.build_dynamics_state(int(x.shape[0]))
        self._training_set = (shard(strategy, x, self.dtype), shard(strategy, y, self.dtype))
        if not bool(self.started.numpy()):
            self.n_train.assign(float(x.shape[0]))
            tf.function(lambda data: strategy.run(self._start_replica, args=data),
                        autograph=False)(self._training_set)

    def _start_replica(self, x, y):
        """`start` on this replica's shard (Adam, which takes no full-batch gradient, only
        its forward pass)."""
        self.cache.y_train.assign(y)
        self.cache.f0_train.assign(self.initial_network(x))
        if self.adam is not None:
            adam_lib.observe(self, x)
        else:
            f, _, grads = self._loss_and_grad(x, y, self.cache.f0_train)
            self.cache.f_train.assign(f)
            for g_var, g in zip(self.stored_grad, grads):
                g_var.assign(g)
        self.evaluations.assign_add(1)
        self.started.assign(True)

    def train_step(self, data):
        """One trial step of the flow's integrator (`integrators`) from the accepted state.

        Euler costs one forward and one backward pass: the gradient at the accepted point is
        stored, so the trial point's forward pass gives eq. 8 and, through its backward pass,
        eq. 9 and the next step's ∇L. A Runge–Kutta pair costs its stages (the stored ∇L is
        its first) and one forward pass for its error estimate; RKC a number of stages that
        varies per step, and the power iterations that estimate its spectral radius (the
        integrator reports the evaluations each trial used, `integrators.Trial`).
        Continuous momentum steps the augmented point (w, v) the same way (`_MomentumFlow`).
        Under `adam` it is one Adam step instead (`adam.train_step`).
        Runs on each replica's shard (`start` must have run).
        """
        if self.adam is not None:
            return adam_lib.train_step(self, data)
        x, y = data
        self._check_shard(x.shape[0])
        x = tf.cast(x, self.dtype)
        # A converged flow stands still, unless it runs to a set time t_end.
        done = tf.logical_or(self.t >= self.t_end,
                             tf.logical_and(self.converged(), tf.math.is_inf(self.t_end)))

        weights = self.network.trainable_weights
        problem = _NetworkFlow(self, x)
        if self.momentum is not None:
            weights, problem = weights + self.velocity, _MomentumFlow(self, x)
        state = FlowState([tf.identity(w) for w in weights], tf.identity(self.cache.f_train),
                          [tf.identity(g) for g in self.stored_grad])
        landing = self.dt >= self.t_end - self.t  # the last step, cut to land on t_end
        dt = tf.where(landing, self.t_end - self.t, self.dt)
        memory = tf.nest.pack_sequence_as(self._memory_structure,
                                          [m.value for m in self.integrator_memory])
        trial = self.integrator.trial(problem, state, dt, memory)
        new, measures = trial.state, trial.measures
        accepted = tf.logical_and(trial.accepted, tf.logical_not(done))
        for m, value in zip(self.integrator_memory, tf.nest.flatten(trial.memory)):
            m.assign(value)

        # Accept or restore w (and v) exactly; no branch, so the step is the same on every
        # replica.
        for w, w_new, w_old in zip(weights, new.point, state.point):
            w.assign(tf.where(accepted, w_new, w_old))
        for g_var, g in zip(self.stored_grad, new.grad):
            g_var.assign(tf.where(accepted, g, g_var))
        self.cache.f_train.assign(tf.where(accepted, new.outputs, self.cache.f_train))
        self.t.assign(tf.where(accepted, tf.where(landing, self.t_end, self.t + dt), self.t))
        self.step_count.assign_add(tf.cast(accepted, "int64"))
        self.attempts.assign_add(1)
        self.evaluations.assign_add(trial.evaluations)
        # Standing still keeps dt, and so does the step that lands on t_end.
        keep = tf.logical_or(done, tf.logical_and(landing, accepted))
        self.dt.assign(tf.where(keep, self.dt, self.integrator.next_dt(dt, accepted, measures)))
        logs = self.train_state()
        logs.update(accepted=tf.cast(accepted, "int64"), dout=measures["dout"],
                    dgrad=measures["dgrad"], error=measures["error"])
        return logs

    # -- state and observables -------------------------------------------------------------

    def margins(self):
        """F(w_i, x_μ) y_μ on this replica's training points, from the cached outputs."""
        return self._output(self.cache.f_train, f0=self.cache.f0_train) * self.cache.y_train

    def converged(self):
        """The paper's stopping criterion: every training margin F·y exceeds 1.

        Before the first step nothing is cached and the answer is False. Under Adam it is
        the last check's, made at the end of an epoch (`adam`).
        """
        if self.adam is not None:
            return self.margins_exceed_one.value
        min_margin = -_max_replicas(-tf.reduce_min(self.margins()))
        return tf.logical_and(self.started, min_margin > 1.0)

    def train_state(self):
        """The integrator's state and the training observables at the current point.

        output_norm and f_norm are ‖f(w) − f(w0)‖ and ‖f(w)‖ on the training set (eq. 31);
        converged is 1 or 0. Called outside the replicas, it runs on each of them.
        """
        strategy = self.distribute_strategy
        if _outside_replicas(strategy):
            if self._state_function is None:  # traced once: eager replicas are slow
                self._state_function = tf.function(lambda: strategy.run(self.train_state),
                                                   autograph=False)
            return _first_replica(strategy, self._state_function())
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
            "converged": tf.cast(self.converged(), "int64"),
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
