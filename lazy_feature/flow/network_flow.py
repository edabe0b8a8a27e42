"""Gradient flow of the α-model's loss (eq. 7) on the network, by any registered integrator:
`GradientFlowDynamics`, and the network as a flow problem of `integrators` (`NetworkFlow`).

Each step is one trial step of the integrator from the accepted state (`integrators.advance`):
Euler costs one forward and one backward pass (the gradient at the accepted point is stored,
so the trial point's forward pass gives eq. 8 and its backward pass eq. 9 and the next
step's ∇L); a Runge–Kutta pair costs its stages (the stored ∇L is its first) and one forward
pass for its error estimate; RKC and etdrk4 a number of evaluations that varies per step. The
integrator reports the evaluations each trial used. Under a tf.distribute strategy with
several replicas the step runs in the cross-replica context and each evaluation on every
replica (`NetworkFlow`), so every integrator takes the steps it takes on one device.
"""
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
import tensorflow as tf

from lazy_feature.flow import registry
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.integrators import FlowState, advance, as_written, combination
from lazy_feature.flow.interface import Dynamics, Slot, Step
from lazy_feature.model.replicas import max_replicas, squared_norm

if TYPE_CHECKING:
    from lazy_feature.model.alpha_model import AlphaModel


class NetworkFlow:
    """The flow of eq. 7 on the network for `integrators`: a point is the list of w's
    trainable tensors (δ's in the difference form), its outputs the model's tracked outputs
    on every training point (`AlphaModel.tracked_outputs`, in the order of the training set).

    Evaluating a point assigns it to the network's weights; the caller assigns the accepted
    point afterwards. On one device it runs where it is called. Under a strategy with several
    replicas it runs in the strategy's cross-replica context (`across_replicas`): each
    evaluation is one `strategy.run` of the forward and backward pass on every replica's
    shard x, its gradient summed and its outputs gathered, so the integrator's loops (RKC's
    stages, etdrk4's Hessian products, the jump rule's probe) sit outside the replicas and
    every integrator takes the steps it takes on one device.
    """

    def __init__(self, model: "AlphaModel", x: tf.Tensor) -> None:
        self.model, self.x = model, x
        self.weights = model.network.trainable_weights
        self.strategy = model.distribute_strategy
        self.across_replicas = self.strategy.num_replicas_in_sync > 1
        # Traced once and called at every evaluation of a trial step (a Runge–Kutta pair's
        # stages, RKC's loops), so the step's graph holds one forward and backward pass per
        # replica, not one per call.
        self._local_gradient = tf.function(self._gradient_here, autograph=False)
        self._local_outputs = tf.function(self._outputs_here, autograph=False)
        cache = model.cache
        self._f0, self._y = self._read(cache.f0_train), self._read(cache.y_train)

    def _gathered(self, per_replica: Any) -> tf.Tensor:
        """A value of strategy.run, every replica's shard in training-set order."""
        return self.strategy.gather(per_replica, axis=0)

    def _read(self, variable: Any) -> tf.Tensor:
        """A replica-local variable of the training set (the model's cache), whole."""
        if not self.across_replicas:
            return tf.identity(variable)
        return self._gathered(self.strategy.run(lambda: tf.identity(variable)))

    def _assign(self, point: Sequence[tf.Tensor]) -> None:
        for w, value in zip(self.weights, point):
            w.assign(value)

    def evaluate(self, point: Sequence[tf.Tensor]) -> tuple[tf.Tensor, list[tf.Tensor]]:
        self._assign(point)
        if not self.across_replicas:
            return self._local_gradient(self.x)
        f, grads = self.strategy.run(self._local_gradient, args=(self.x,))
        return self._gathered(f), [self.strategy.reduce(tf.distribute.ReduceOp.SUM, g,
                                                        axis=None) for g in grads]

    def _gradient_here(self, x: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """The outputs and this replica's part of ∇L at the network's weights."""
        cache = self.model.cache
        f, _, grads = self.model.local_loss_and_grad(x, cache.y_train, cache.f0_train,
                                                     initial=self.model.initial_signals())
        return f, grads

    def _outputs_here(self, x: tf.Tensor) -> tf.Tensor:
        return self.model.tracked_outputs(x, self.model.initial_signals())

    def outputs(self, point: Sequence[tf.Tensor]) -> tf.Tensor:
        self._assign(point)
        if not self.across_replicas:
            return self._local_outputs(self.x)
        return self._gathered(self.strategy.run(self._local_outputs, args=(self.x,)))

    def cached_outputs(self) -> tf.Tensor:
        """The tracked outputs on the training set as the model's cache holds it."""
        return self._read(self.model.cache.f_train)

    def store_outputs(self, f: tf.Tensor) -> None:
        """Put the tracked outputs on the training set in the model's cache, each replica its
        shard."""
        if not self.across_replicas:
            self.model.cache.f_train.assign(f)
            return
        size = self.model.n_local_points()

        def store(f: tf.Tensor) -> None:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            self.model.cache.f_train.assign(f[replica * size:(replica + 1) * size])

        self.strategy.run(store, args=(f,))

    def linear_combination(self, coefficients: Sequence[float | tf.Tensor],
                           points: Sequence[Sequence[tf.Tensor]], dt: tf.Tensor,
                           grad_coefficients: Sequence[float | tf.Tensor],
                           grads: Sequence[Sequence[tf.Tensor]]) -> list[tf.Tensor]:
        combined = [combination(coefficients, w) for w in zip(*points)]
        if not grads:
            return combined
        dt = tf.cast(dt, self.model.dtype)
        return [w - dt * step for w, step in zip(combined, self.combine(grad_coefficients, grads))]

    def combine(self, coefficients: Sequence[float | tf.Tensor],
                grads: Sequence[Sequence[tf.Tensor]]) -> list[tf.Tensor]:
        return [combination(coefficients, g) for g in zip(*grads)]

    def difference(self, grad_a: Sequence[tf.Tensor], grad_b: Sequence[tf.Tensor]
                   ) -> list[tf.Tensor]:
        return [a - b for a, b in zip(grad_a, grad_b)]

    def squared_norm(self, grad: Sequence[tf.Tensor]) -> tf.Tensor:
        return squared_norm(grad)

    def output_change(self, f_a: tf.Tensor, f_b: tf.Tensor) -> tf.Tensor:
        return self.model.alpha * tf.reduce_max(tf.abs(f_a - f_b))

    def margins(self, f: tf.Tensor) -> tf.Tensor:
        """F·y on the training points for tracked outputs f there."""
        return self.model._output(f, f0=self._f0) * self._y  # pylint: disable=protected-access

    def lowest(self, value: tf.Tensor) -> tf.Tensor:
        return tf.reduce_min(value)

    def highest(self, value: tf.Tensor) -> tf.Tensor:
        return tf.reduce_max(value)

    def flatten(self, displacement: Sequence[tf.Tensor]) -> tf.Tensor:
        """A point, gradient or displacement as one vector of the weights' coordinates."""
        return tf.concat([tf.reshape(d, [-1]) for d in displacement], 0)

    def unflatten(self, vector: tf.Tensor) -> list[tf.Tensor]:
        """The inverse of `flatten`: a displacement shaped as the weights."""
        sizes = [int(np.prod(w.shape)) for w in self.weights]
        return [tf.reshape(part, w.shape)
                for part, w in zip(tf.split(vector, sizes), self.weights)]


@keras.saving.register_keras_serializable(package="lazy_feature")
class GradientFlowDynamics(Dynamics):
    """Full-batch gradient flow on L = (α² n)⁻¹ Σ ℓ(F, y) (eq. 7), stepped by the integrator
    that `flow` names under its step control (`GradientFlow`). Its state: ∇L at the accepted
    point (`stored_grad`) and what the integrator carries from trial to trial
    (`integrator_memory`: its controller's, RKC's ρ and eigenvector, ...). A converged flow
    stands still, unless the model runs it to a set time t_end (`AlphaModel.t_end`), where
    its last step is cut to land."""

    across_replicas = True

    def __init__(self, flow: GradientFlow = GradientFlow()) -> None:
        self.flow = flow
        self.integrator = registry.get(flow)
        as_written()  # before any step is traced: the same command, the same run

    @property
    def dt0(self) -> float:  # type: ignore[override]  # read-only here
        return self.flow.dt0

    @property
    def vectors(self) -> int:  # type: ignore[override]  # read-only here
        return self.integrator.vectors

    def get_config(self) -> dict[str, Any]:
        return dict(flow=dataclasses.asdict(self.flow))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "GradientFlowDynamics":
        return cls(GradientFlow(**config["flow"]))

    def variables(self, weights: Sequence[keras.Variable]) -> dict[str, list[Slot] | Slot]:
        memory = tf.nest.flatten(self.integrator.initial_memory(weights))
        return dict(
            stored_grad=[Slot(f"grad_{i}", w.shape, w.dtype) for i, w in enumerate(weights)],
            integrator_memory=[Slot(f"integrator_memory_{i}", m.shape, m.dtype)
                               for i, m in enumerate(memory)])

    def start(self, model: "AlphaModel", x: tf.Tensor, y: tf.Tensor) -> None:
        f, _, grads = model.loss_and_grad(x, y, model.cache.f0_train)
        model.cache.f_train.assign(f)
        for g_var, g in zip(model.dynamics_state["stored_grad"], grads):
            g_var.assign(g)

    def converged(self, model: "AlphaModel") -> tf.Tensor:
        min_margin = -max_replicas(-tf.reduce_min(model.margins()))
        return tf.logical_and(model.started, min_margin > 1.0)

    def point(self, model: "AlphaModel") -> list[keras.Variable]:
        """The variables a point of the flow is assigned to: w's trainable tensors."""
        return model.network.trainable_weights

    def problem(self, model: "AlphaModel", x: tf.Tensor) -> NetworkFlow:
        """The flow problem on this replica's training inputs x."""
        return NetworkFlow(model, x)

    def step(self, model: "AlphaModel", x: tf.Tensor) -> Step:
        """One trial step of the integrator from the accepted state; w, ∇L, f(w) on the
        training set and the integrator's memory are kept or restored exactly. Under several
        replicas it runs in the cross-replica context, x the replicas' shards
        (`NetworkFlow`)."""
        state_variables = model.dynamics_state
        t, t_end = model.t, model.t_end
        problem = self.problem(model, x)
        point = self.point(model)
        stored_grad, memory_variables = (state_variables["stored_grad"],
                                         state_variables["integrator_memory"])
        state = FlowState([tf.identity(w) for w in point], problem.cached_outputs(),
                          [tf.identity(g) for g in stored_grad])
        # A converged flow stands still, unless it runs to a set time t_end.
        converged = tf.logical_and(model.started,
                                   problem.lowest(problem.margins(state.outputs)) > 1.0)
        done = tf.logical_or(t >= t_end, tf.logical_and(converged, tf.math.is_inf(t_end)))
        landing = model.dt >= t_end - t  # the last step, cut to land on t_end
        dt = tf.where(landing, t_end - t, model.dt)
        memory = tf.nest.pack_sequence_as(self.integrator.initial_memory(point),
                                          [m.value for m in memory_variables])

        def store_memory(new_memory: Any) -> None:  # the integrator's memory, a nest
            for m, value in zip(memory_variables, tf.nest.flatten(new_memory)):
                m.assign(value)

        step = advance(self.integrator, problem, state, dt, memory, hold=done,
                       store_memory=store_memory, land=self.flow.landing_tol)
        for w, value in zip(point, step.state.point):
            w.assign(value)
        for g_var, g in zip(stored_grad, step.state.grad):
            g_var.assign(g)
        problem.store_outputs(step.state.outputs)
        # Standing still keeps dt, and so does the step that lands on t_end.
        keep = tf.logical_or(done, tf.logical_and(landing, step.accepted))
        measures = step.trial.measures
        return Step(accepted=step.accepted, attempts=tf.constant(1, tf.int64),
                    t=tf.where(step.accepted, tf.where(landing, t_end, t + dt), t),
                    dt=tf.where(keep, model.dt, step.next_dt),
                    evaluations=step.trial.evaluations,
                    logs=dict(dout=measures["dout"], dgrad=measures["dgrad"],
                              error=measures["error"]))
