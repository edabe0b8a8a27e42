"""The centered α-model F(w, x) = α[f(w, x) − f(w0, x)] (eq. 6) and its training state.

α is the article's α: it multiplies f − f0 of a network whose readout already carries
h^(-1/2) (eq. 14), so √h·α is the parameter that separates the lazy (√h·α ≫ 1) and
feature (√h·α ≪ 1) regimes. Time t is the gradient-flow time of eq. 7's α⁻²-scaled loss.
The model is trained by a dynamics it is given (`lazy_feature.flow.interface.Dynamics`:
gradient flow with any integrator, continuous momentum, Adam), which it calls without
knowing which.
"""
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.model import losses, precision, stepping
from lazy_feature.model.difference import Initial
from lazy_feature.model.replicas import (LocalValues, TrainingSetCache, first_replica,
                                         outside_replicas, shard, shards, squared_norm,
                                         sum_replicas)


@keras.saving.register_keras_serializable(package="lazy_feature")
class AlphaModel(keras.Model):
    """F(w, x) = α[f(w, x) − f(w0, x)] (eq. 6), or α f(w, x) when `centered` is False (App. I).

    f(w0, ·) is a frozen copy of the network at w0, so F is defined on any input. A network
    in the difference form (`architectures`, w = w0 + δ, δ trained) gives f(w) − f(w0) without
    cancellation (`network.change`), and the flow follows those changes on the training set;
    any other network gives f(w) and f(w0), whose difference float32 resolves only for
    α·h·ε ≤ 1e-3 (`precision`). `fit` trains it by its `dynamics` on L = (α² n)⁻¹ Σ ℓ(F, y)
    (eq. 7), one `Dynamics.step` per `train_step`, on a dataset that yields the whole training
    set as one batch (`run.data.full_batch`), stopped by `run.callbacks.GradientFlowStopping`.
    The whole training state (t, dt, the step counts, f(w_i) and f(w0) on the training set,
    the dynamics' state) lives in Keras variables: `save_weights`/`load_weights` resume a run
    exactly, `save`/`load_model` restore the whole model. `compile()` takes no optimizer;
    `evaluate` reports α²·mean ℓ and the error of F.

    Under a tf.distribute strategy (build it in `strategy.scope()`) each replica holds a shard
    of the training set (n a multiple of the replicas); ∇L, L, the counts and eq. 8's max are
    reduced over them. `compile(steps_per_execution=K)`: up to K trial steps per call.

    Args:
      network: a Keras model f(w, x) returning shape (batch,), e.g. `FullyConnected`.
      alpha: the output scale α > 0.
      loss, loss_beta: a name from `losses.NAMES` and its sharpness (the paper's soft hinge,
        β = 20).
      centered: subtract f(w0, x) (eq. 6); False trains α f(w, x) (Appendix I).
      dynamics: how `fit` trains it (a `flow.interface.Dynamics`, e.g. the paper's
        `GradientFlowDynamics()`); None: for outputs and kernels only (`fit` refuses).
      initial_network: another instance of the architecture to hold w0 (None: cloned from
        `network`'s config; give one where the config cannot rebuild the network).
    """
    # The types of the attributes `__init__` sets to None or () (PEP 526).
    _training_set: tuple[tf.Tensor, tf.Tensor] | None
    _pause: tuple[float, float, float] | None
    _state_function: Callable[[], dict[str, tf.Tensor]] | None
    _observe_function: Callable[[tf.Tensor], Any] | None
    _state_attributes: tuple[str, ...]

    def __init__(self, network: keras.Model, alpha: float, loss: str = "soft_hinge",
                 loss_beta: float = losses.SOFT_HINGE_BETA, centered: bool = True,
                 dynamics: Any = None, initial_network: keras.Model | None = None,
                 **kwargs: Any) -> None:
        super().__init__(dtype=network.dtype_policy, **kwargs)
        if not alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {alpha}")
        if dynamics is not None:
            dynamics.check_strategy(self.distribute_strategy)
        self.dynamics = dynamics
        precision.exact_float32()  # F = α(f − f0) cancels: float32 must be float32
        self.network = network
        self.difference = bool(getattr(network, "difference", False))
        self.alpha = float(alpha)
        self.loss_name, self.loss_beta = loss, float(loss_beta)
        self.per_pattern_loss = losses.get(loss, loss_beta)
        self.centered = bool(centered)
        self.initial_network = initial_network or network.__class__.from_config(
            dict(network.get_config(), name=f"{network.name}_initial"))
        self.initial_network.trainable = False
        self.cache = TrainingSetCache(dtype=network.dtype_policy, name="training_set_cache")
        self._training_set = None  # (x, y), sharded over the replicas by `start`
        self._initial_signals = LocalValues(self.distribute_strategy)  # at w0, by `start`
        self._pause = None  # limits of the next call of the train function (`pause_at`)
        # `train_state` and `observe` on every replica, from outside them
        self._state_function = self._observe_function = None
        self._state_attributes = ()  # the attributes that hold the dynamics' state
        # means over every evaluated point, however batched
        self.loss_tracker = keras.metrics.Mean(name="rescaled_loss", dtype="float64")
        self.error_tracker = keras.metrics.Mean(name="error", dtype="float64")

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("dtype")  # the network's
        config.update(network=keras.saving.serialize_keras_object(self.network),
                      alpha=self.alpha, loss=self.loss_name, loss_beta=self.loss_beta,
                      centered=self.centered,
                      dynamics=keras.saving.serialize_keras_object(self.dynamics))
        return config

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "AlphaModel":
        return cls(**dict(config,
                          network=keras.saving.deserialize_keras_object(config["network"]),
                          dynamics=keras.saving.deserialize_keras_object(config["dynamics"])))

    def compile(self, optimizer: None = None, **kwargs: Any) -> None:
        """Keras' compile without an optimizer (the dynamics updates w): takes `run_eagerly`,
        `jit_compile` and `steps_per_execution`."""
        if optimizer is not None or kwargs.keys() - {"run_eagerly", "jit_compile",
                                                     "steps_per_execution"}:
            raise ConfigError("AlphaModel is trained by its own gradient flow: compile it "
                              "without optimizer, loss or metrics")
        super().compile(optimizer=None, **kwargs)

    def compile_from_config(self, config: Mapping[str, Any]) -> None:
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**{k: config[k] for k in ("run_eagerly", "jit_compile",
                                               "steps_per_execution") if k in config})

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return [self.loss_tracker, self.error_tracker]

    # -- the calls `fit` makes ---------------------------------------------------------------

    def pause_at(self, step: float = math.inf, t: float = math.inf,
                 seconds: float = math.inf) -> None:
        """Ask the next call of the train function to return at the latest after the trial
        step at which `step` steps are accepted or t reaches `t`, and after about `seconds`
        of wall time: how a callback sees the steps it needs under in-graph stepping.

        Requests made before a call add up (the earliest limit wins) and hold for that call,
        which always makes at least one trial step.
        """
        if self._pause is not None:
            step, t, seconds = (min(a, b) for a, b in zip((step, t, seconds), self._pause))
        self._pause = (step, t, seconds)

    def make_train_function(self, force: bool = False
                            ) -> Callable[[Iterator[Any]], dict[str, tf.Tensor]]:
        """The function `fit` calls: trial steps (`train_step`) under the model's strategy.

        With steps_per_execution = 1 a call makes one trial step (Keras' own loop, on each
        batch of the dataset; in-graph where the dynamics steps across several replicas,
        `Dynamics.across_replicas`). With K > 1 it makes up to K trial steps in one tf.while_loop
        on the training set that `start` placed on the devices (no transfer from the host),
        and returns after the first step at which the flow converged, its loss is not
        finite, or a limit of `pause_at` is met; its logs are the last step's. The steps
        are the same either way. A model not started yet starts on the first batch of
        `fit`'s dataset (on one replica; call `start` first under a strategy).
        """
        if self.train_function is not None and not force:
            return self.train_function
        if self.dynamics is None:
            raise ConfigError("this AlphaModel has no dynamics to train it: give it one, "
                              "e.g. dynamics=lazy_feature.GradientFlowDynamics()")
        if self.steps_per_execution == 1 and not self._across_replicas():
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
            return logs if self.dynamics.tracks_outputs else self._observed(logs)

        self.train_function: Callable[[Iterator[Any]], dict[str, tf.Tensor]] = train_function
        return train_function

    def _observed(self, logs):
        """The logs of a dynamics that does not track f(w) on the training set at every step
        (`Dynamics.tracks_outputs`), with it refreshed (`observe`)."""
        if self._observe_function is None:
            strategy = self.distribute_strategy
            self._observe_function = tf.function(
                lambda x: strategy.run(self.observe, args=(x,)), autograph=False)
        self._observe_function(self._training_set[0])
        return dict(logs, **self.train_state())

    def _in_graph_steps(self):
        """A function of the `pause_at` limits that makes the trial steps of one call."""
        strategy = self.distribute_strategy

        def one_step(data):
            if self._across_replicas():  # `train_step` on the shards `start` placed
                return self._advance_clock(self.dynamics.step(self, data[0]))
            return first_replica(strategy, strategy.run(self.train_step, args=(data,)))

        return stepping.in_graph_calls(one_step, lambda: self._training_set,
                                       self.steps_per_execution, self.jit_compile,
                                       self.run_eagerly)

    # -- construction ------------------------------------------------------------------

    def restart(self, other: "AlphaModel") -> bool:
        """Take the weights and whole state of `other`, built the same way (another seed's),
        keeping this model's traced steps (False, nothing taken, if their variables differ)."""
        mine, theirs = self.variables, other.variables  # each gathered from every layer
        if [(v.shape, v.dtype) for v in mine] != [(v.shape, v.dtype) for v in theirs]:
            return False
        for variable, value in zip(mine, theirs):
            for copy, part in zip(shards(variable), shards(value)):
                copy.assign(part)
        self._training_set, self._pause = None, None  # `start` places the new training set
        return True

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build f and f(w0, ·) and copy w into w0."""
        shape = (None,) + tuple(input_shape[1:])
        for network in (self.network, self.initial_network):
            if not network.built:  # a network given built, or rebuilt by `load_model`
                network.build(shape)
        for w0, w in zip(self.initial_network.weights, self.network.weights):
            w0.assign(w)
        if self.dynamics is not None:
            self._build_training_state()

    def _build_training_state(self):
        """The clock of a run and its dynamics' state (`Dynamics.variables`), zero at the
        start, in variables."""
        # Time and dt accumulate many small numbers: float64 whatever the network's dtype.
        scalar = dict(shape=(), trainable=False)
        self.t = self.add_weight(name="t", initializer="zeros", dtype="float64", **scalar)
        self.dt = self.add_weight(name="dt",
                                  initializer=keras.initializers.Constant(self.dynamics.dt0),
                                  dtype="float64", **scalar)
        self.step_count = self.add_weight(name="step", initializer="zeros", dtype="int64", **scalar)
        self.attempts = self.add_weight(name="attempts", initializer="zeros", dtype="int64",
                                        **scalar)
        # Forward + backward passes of the training set, rejected steps and stages included.
        self.evaluations = self.add_weight(name="gradient_evaluations", initializer="zeros",
                                           dtype="int64", **scalar)
        # The flow runs to t_end exactly and past convergence when finite (`study.fidelity`).
        self.t_end = self.add_weight(name="t_end", dtype="float64",
                                     initializer=keras.initializers.Constant(float("inf")),
                                     **scalar)
        self.started = self.add_weight(name="started", initializer="zeros", dtype="bool", **scalar)
        self.n_train = self.add_weight(name="n_train", initializer="zeros", dtype=self.dtype,
                                       **scalar)

        def made(slot):
            return self.add_weight(name=slot.name, shape=slot.shape, initializer="zeros",
                                   dtype=slot.dtype, trainable=False)

        # Each under its attribute: a checkpoint names the variables by their attributes.
        state = self.dynamics.variables(self.network.trainable_weights)
        for attribute, slots in state.items():
            setattr(self, attribute,
                    [made(s) for s in slots] if isinstance(slots, list) else made(slots))
        self._state_attributes = tuple(state)

    @property
    def dynamics_state(self) -> dict[str, Any]:
        """{attribute: variable or list of variables} of its dynamics' state."""
        return {attribute: getattr(self, attribute) for attribute in self._state_attributes}

    def get_build_config(self) -> dict[str, Any] | None:
        """The input shape and, once known, the number of training points of the flow."""
        config = super().get_build_config()
        if config is not None and self.cache.built:
            config["n_train"] = (self.n_local_points()
                                 * self.distribute_strategy.num_replicas_in_sync)
        return config

    def build_from_config(self, config: Mapping[str, Any]) -> None:
        self.build(config["input_shape"])
        if "n_train" in config:
            self.build_dynamics_state(config["n_train"])

    def load_own_variables(self, store: Mapping[str, Any]) -> None:
        """Keras' loading of the model's own variables; a weights file written before the
        integrator choice, which lacks `gradient_evaluations` and `t_end`, loads too: its run
        was the paper's Euler scheme, so its evaluations were one at w0 and one per trial
        step, and it had no set end time (t_end = ∞)."""
        own = self._trainable_variables + self._non_trainable_variables
        added = (self.evaluations, self.t_end) if self.dynamics is not None else ()
        if not added or len(store.keys()) != len(own) - len(added):
            return super().load_own_variables(store)
        for i, v in enumerate(v for v in own if all(v is not a for a in added)):
            v.assign(store[f"{i}"])
        self.t_end.assign(float("inf"))
        self.evaluations.assign(self.attempts + tf.cast(self.started, "int64"))

    def build_dynamics_state(self, n_train: int) -> None:
        """Create the per-pattern state of n_train training points, split over the replicas."""
        replicas = self.distribute_strategy.num_replicas_in_sync
        if n_train % replicas:
            raise ConfigError(f"n_train={n_train} does not split evenly over the {replicas} "
                              f"replicas of the strategy: use a multiple of {replicas}")
        if not self.cache.built:
            with self.distribute_strategy.scope():
                self.cache.build((n_train // replicas,))
        self._check_shard(n_train // replicas)

    def _check_shard(self, n_local):
        if self.cache.f_train.shape[0] != n_local:
            raise ConfigError(
                f"this model's gradient flow runs on {self.n_local_points()} training points, "
                f"got {n_local} per replica: the flow is full-batch, give fit the same set")

    def n_local_points(self) -> int:
        """The number of training points each replica holds (their total is n_train)."""
        return int(self.cache.f_train.shape[0])

    # -- the model -------------------------------------------------------------------------

    def call(self, x: tf.Tensor) -> tf.Tensor:
        """F(w, x) on any input."""
        return self._output(self.tracked_outputs(x), x)

    def initial_output(self, x: tf.Tensor) -> tf.Tensor:
        """f(w0, x), the network at its initial weights, on any input."""
        return self.initial_network(x)

    def output_change(self, x: tf.Tensor) -> tf.Tensor:
        """f(w, x) − f(w0, x) on any input (cancellation-free in the difference form)."""
        if self.difference:
            return self.network.change(x)
        return self.network(x) - self.initial_network(x)

    def initial_signals(self) -> Initial | None:
        """This replica's training set's signals at w0 (`start`) in the difference form, or None."""
        return self._initial_signals.read() if self.difference else None

    def tracked_outputs(self, x: tf.Tensor, initial: Initial | None = None) -> tf.Tensor:
        """What the flow follows on the training set and the cache holds: f(w) − f(w0) in the
        difference form (`initial`: x's signals at w0, `difference.Initial`, when at hand),
        else f(w)."""
        return self.network.change(x, initial) if self.difference else self.network(x)

    def _output(self, tracked, x=None, f0=None):
        """F from tracked outputs (`tracked_outputs`) and f(w0) = f0 (from x if needed)."""
        if self.difference == self.centered:  # tracked is Δf (centered) or f (uncentered)
            return self.alpha * tracked
        if f0 is None:
            f0 = self.initial_network(x)
        return self.alpha * (f0 + tracked if self.difference else tracked - f0)

    # -- what its dynamics calls -----------------------------------------------------------

    def loss_and_grad(self, x: tf.Tensor, y: tf.Tensor, f0: tf.Tensor, n: float | None = None
                      ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """The tracked outputs at x (`tracked_outputs`), eq. 7's loss and its gradient in the
        trainable weights (w, or δ in the difference form), for inputs x, labels y and
        f(w0, x) = f0, the loss's mean over n points (default: the training set's n; a
        mini-batch gives its own), summed over the replicas."""
        f, loss, grads = self.local_loss_and_grad(x, y, f0, n)
        return f, sum_replicas(loss), sum_replicas(grads)

    def local_loss_and_grad(self, x: tf.Tensor, y: tf.Tensor, f0: tf.Tensor,
                            n: float | None = None, initial: Initial | None = None
                            ) -> tuple[tf.Tensor, tf.Tensor, list[tf.Tensor]]:
        """`loss_and_grad` of this replica's points alone (`initial`: see `tracked_outputs`)."""
        weights = self.network.trainable_weights
        with tf.GradientTape() as tape:
            f = self.tracked_outputs(x, initial)
            F = self._output(f, f0=f0)
            loss = losses.alpha_loss(self.per_pattern_loss, F, y, self.alpha,
                                     self.n_train if n is None else n)
        return f, loss, tape.gradient(loss, weights)

    def start(self, x: np.ndarray | tf.Tensor, y: np.ndarray | tf.Tensor) -> None:
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
        if self.difference:  # the signals at w0 the flow reads at every evaluation, once
            self._initial_signals.hold(tf.function(
                lambda x: strategy.run(self.network.initial_signals, args=(x,)),
                autograph=False)(self._training_set[0]))
        if not bool(self.started.numpy()):
            self.n_train.assign(float(x.shape[0]))
            tf.function(lambda data: strategy.run(self._start_replica, args=data),
                        autograph=False)(self._training_set)

    def _start_replica(self, x, y):
        """`start` on this replica's shard: f(w0) and y cached, then the dynamics'
        `start`."""
        self.cache.y_train.assign(y)
        self.cache.f0_train.assign(self.initial_network(x))
        self.dynamics.start(self, x, y)
        self.evaluations.assign_add(1)
        self.started.assign(True)

    def observe(self, x: tf.Tensor) -> None:
        """Refresh the tracked outputs on the training points x this replica holds (the cache
        the margins, the loss and the records read)."""
        self.cache.f_train.assign(self.tracked_outputs(tf.cast(x, self.dtype)))

    def _across_replicas(self) -> bool:
        """Whether its steps run in the cross-replica context (`Dynamics.across_replicas`,
        under several replicas)."""
        return self.dynamics.across_replicas and self.distribute_strategy.num_replicas_in_sync > 1

    def train_step(self, data: tuple[tf.Tensor, tf.Tensor]) -> dict[str, tf.Tensor]:
        """One step of the dynamics (`Dynamics.step`) on this replica's shard of the training
        set (`start` must have run), then the clock advanced by what it reports: t and dt,
        the accepted steps, the trial steps and the gradient evaluations. Its logs are the
        state (`train_state`), whether the step was accepted, and the dynamics' own."""
        x, _ = data
        self._check_shard(x.shape[0])
        return self._advance_clock(self.dynamics.step(self, tf.cast(x, self.dtype)))

    def _advance_clock(self, step):
        """The clock advanced by what a `Step` reports; the logs of `train_step`."""
        self.t.assign(step.t)
        self.step_count.assign_add(tf.cast(step.accepted, "int64"))
        self.attempts.assign_add(step.attempts)
        self.evaluations.assign_add(step.evaluations)
        self.dt.assign(step.dt)
        logs = self.train_state()
        logs.update(accepted=tf.cast(step.accepted, "int64"), **step.logs)
        return logs

    # -- state and observables -------------------------------------------------------------

    def margins(self) -> tf.Tensor:
        """F(w_i, x_μ) y_μ on this replica's training points, from the cached outputs."""
        return self._output(self.cache.f_train, f0=self.cache.f0_train) * self.cache.y_train

    def converged(self) -> tf.Tensor:
        """The paper's stopping criterion: every training margin F·y exceeds 1, as its
        dynamics checks it (`Dynamics.converged`). Before the first step it is False."""
        return self.dynamics.converged(self)

    def train_state(self) -> dict[str, tf.Tensor]:
        """The clock of the run and the training observables at the current point.

        output_norm and f_norm are ‖f(w) − f(w0)‖ and ‖f(w)‖ on the training set (eq. 31);
        converged is 1 or 0. Called outside the replicas, it runs on each of them.
        """
        strategy = self.distribute_strategy
        if outside_replicas(strategy):
            if self._state_function is None:  # traced once: eager replicas are slow
                self._state_function = tf.function(lambda: strategy.run(self.train_state),
                                                   autograph=False)
            return first_replica(strategy, self._state_function())
        margins = self.margins()
        loss = sum_replicas(tf.reduce_sum(self.per_pattern_loss(margins, 1.0))) / self.n_train
        return {
            "step": self.step_count.value, "t": self.t.value, "dt": self.dt.value,
            "attempts": self.attempts.value, "evaluations": self.evaluations.value,
            "rescaled_loss": loss,  # α² L of eq. 7
            "train_error": sum_replicas(tf.reduce_sum(tf.cast(losses.misclassified(margins, 1.0),
                                                               self.dtype)))
            / self.n_train,
            "unfitted": sum_replicas(tf.reduce_sum(tf.cast(margins <= 1, "int64"))),
            "converged": tf.cast(self.converged(), "int64"),
            "weight_drift": self.weight_drift(),
            **self._output_norms(),
        }

    def _output_norms(self):
        """output_norm and f_norm: ‖f(w) − f(w0)‖ and ‖f(w)‖ on the training set, from the
        cache."""
        tracked, f0 = self.cache.f_train, self.cache.f0_train
        change, f = (tracked, f0 + tracked) if self.difference else (tracked - f0, tracked)
        return {"output_norm": self._rms(change), "f_norm": self._rms(f)}

    def weight_drift(self) -> tf.Tensor:
        """‖w − w0‖ / ‖w0‖ over all trainable weights (Appendix B); ‖δ‖ itself in the
        difference form."""
        w = self.network.trainable_weights
        w0 = self.initial_network.weights  # with δ = 0 in the difference form
        change = w if self.difference else [a - b for a, b in zip(w, w0)]
        return tf.sqrt(squared_norm(change) / squared_norm(w0))

    def _rms(self, values):
        """The root mean square over the training set (eq. 31's norm) of per-point values."""
        return tf.sqrt(sum_replicas(tf.reduce_sum(tf.square(values))) / self.n_train)

    def test_step(self, data: tuple[tf.Tensor, tf.Tensor]
                  ) -> dict[str, tf.Tensor]:
        """Add a batch of (x, y) to the means of ℓ(F, y) (α² × eq. 7's loss) and of the error."""
        x, y = data
        margins = self(tf.cast(x, self.dtype)) * tf.cast(y, self.dtype)
        self.loss_tracker.update_state(self.per_pattern_loss(margins, 1.0))
        self.error_tracker.update_state(tf.cast(losses.misclassified(margins, 1.0), "float64"))
        return {m.name: m.result() for m in self.metrics}
