"""Adam on mini-batches (Section 7, Table 1: batch size 32) on the α-model's loss.

The loss is the one gradient flow descends, L = (α² B)⁻¹ Σ_batch ℓ(α[f(w, x) − f(w0, x)], y)
(eq. 7 on a mini-batch of B points), and Adam is Kingma and Ba's (2015, Algorithm 1):
m ← β1 m + (1 − β1) g, v ← β2 v + (1 − β2) g², w ← w − lr m̂ / (√v̂ + ε/α) with the bias
corrections m̂ = m/(1 − β1^s), v̂ = v/(1 − β2^s) at step s.

Learning rate across α. Adam's step is invariant to the gradient's scale: Δw ≈ lr per
weight whatever α (∇L ∝ 1/α at a fixed ℓ'), so F = α(f − f0) moves by ~α·lr per step. In
the lazy regime F must move by a bounded amount per step (eq. 8's role for gradient flow),
so lr must go as 1/α; in the feature regime (small α) F needs f − f0 ~ 1/α, which takes
large weight changes, and lr ∝ 1/α would move every weight by lr0/α ≫ lr0 per step: there
lr stays at lr0. The default (`learning_rate=None`) is therefore

    lr = lr0 · min(1, 1/α),   lr0 = 1e-3 (Adam's usual step),

so that at α ≥ 1 the first step moves F by the same amount at every α. (The authors'
main_adam.py, github.com/mariogeiger/feature_lazy, takes lr as a free argument per run;
this rule is ours.) ε is divided by α for the same reason: Adam is scale-invariant only
up to ε, so ε/α keeps ε's weight against ∇L ∝ 1/α the same at every α.

Mini-batches: epoch e visits the training points in the order of a permutation that is a
function of (seed, e) only (stateless), in n // B batches of B (the n mod B points left at
the end of a permutation sit that epoch out), so a run killed anywhere resumes exactly.
The stopping criterion (every training margin > 1) is checked on the whole training set
at the end of every epoch, in the graph; between checks the model stands by its last one.
Time t counts epochs (t = steps / (n // B)); gradient_evaluations counts passes over the
training set (the start's, then one per epoch).

Replicas (tf.distribute, `AlphaModel`): the training set stays split in one contiguous
shard per replica, as for gradient flow, and the batch order stays the one-device one: every
replica draws the same global batch of B indices, takes the gradient of the points of it
that its shard holds (a data-dependent number, B/R on average over R replicas: the batch's
points are not moved between replicas), and the gradients are summed over the replicas.
Their sum is the batch's gradient, so the steps are the one-device steps up to the
summation order's rounding; the end-of-epoch check counts each shard's unfitted points and
sums them. The moments m, v are mirrored like w, so checkpoints and resume are as on one
device. The per-replica batches have dynamic shapes, which XLA on TPUs cannot compile:
Adam refuses a TPU strategy with several replicas.

Precision: the run's dtype (`model.precision`). At large α a step lr0/α must survive against
w ~ 1 and f − f0 ~ 1/α must not cancel: float64, which the precision policy picks there.
"""
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import keras
import tensorflow as tf

from lazy_feature.errors import ConfigError
from lazy_feature.flow.dynamics import GradientFlow
from lazy_feature.flow.interface import Dynamics, Slot, Step
from lazy_feature.flow.network_flow import GradientFlowDynamics

if TYPE_CHECKING:
    from lazy_feature.model.alpha_model import AlphaModel

DEFAULT_LEARNING_RATE = 1e-3  # lr0


def default_learning_rate(alpha: float) -> float:
    """lr0 · min(1, 1/α): Adam's step of F = α(f − f0) bounded at large α (module docstring)."""
    return DEFAULT_LEARNING_RATE * min(1.0, 1.0 / alpha)


@dataclasses.dataclass(frozen=True)
class Adam:
    """Adam's settings: its step `learning_rate`, `batch_size` B, the `seed` of the batch
    order, and Kingma and Ba's β1, β2 and ε (ε is divided by α, module docstring)."""
    learning_rate: float
    batch_size: int = 32
    seed: int = 0
    beta1: float = 0.9
    beta2: float = 0.999
    epsilon: float = 1e-8

    def __post_init__(self) -> None:
        if not (self.learning_rate > 0 and self.batch_size >= 1 and self.epsilon > 0
                and 0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ConfigError("Adam needs learning_rate > 0, batch_size >= 1, epsilon > 0 and "
                              "0 <= beta1, beta2 < 1")

    def steps_per_epoch(self, n_train: int) -> int:
        return n_train // self.batch_size


def batch_indices(settings: Adam, n_train: int, step: int | tf.Tensor) -> tf.Tensor:
    """The training points of Adam step `step` (0-based): a slice of epoch e's permutation,
    a function of (seed, e) only."""
    per_epoch = settings.steps_per_epoch(n_train)
    epoch, k = step // per_epoch, step % per_epoch
    seed = tf.stack([tf.constant(settings.seed, tf.int64), tf.cast(epoch, tf.int64)])
    order = tf.random.experimental.stateless_shuffle(tf.range(n_train, dtype=tf.int64), seed)
    return order[k * settings.batch_size:(k + 1) * settings.batch_size]


def _local_batch(strategy: tf.distribute.Strategy, batch: tf.Tensor, n_local: int
                 ) -> tf.Tensor:
    """The points of the global batch `batch` that this replica's shard of n_local points
    holds, as indices into the shard (all of them on one replica)."""
    if strategy.num_replicas_in_sync == 1:
        return batch
    first = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                    tf.int64) * n_local
    mine = tf.logical_and(batch >= first, batch < first + n_local)
    return tf.boolean_mask(batch, mine) - first


@keras.saving.register_keras_serializable(package="lazy_feature")
class AdamDynamics(Dynamics):
    """The α-model trained by Adam on mini-batches (`adam`: its `Adam` settings, module
    docstring). Its state: the moments m and v of each trainable weight (`adam_m`, `adam_v`)
    and the result of the last convergence check (`margins_exceed_one`), after the slots of
    gradient flow under `flow` (`GradientFlowDynamics.variables`, unused here), so that a
    run's checkpoint has one layout whatever its dynamics. f(w) on the training set is
    refreshed at the end of an epoch only (the check), so the model refreshes it before it
    reports its state."""
    tracks_outputs = False
    # m and v.
    vectors = 2

    def __init__(self, flow: GradientFlow, adam: Adam) -> None:
        self.flow, self.adam = flow, adam

    def check_strategy(self, strategy: tf.distribute.Strategy) -> None:
        if (strategy.num_replicas_in_sync > 1
                and isinstance(strategy, tf.distribute.TPUStrategy)):
            raise ConfigError("adam's per-replica batches have data-dependent sizes, which "
                              "TPUs cannot compile: use --strategy=mirrored on GPUs")

    def get_config(self) -> dict[str, Any]:
        return dict(flow=dataclasses.asdict(self.flow), adam=dataclasses.asdict(self.adam))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "AdamDynamics":
        return cls(GradientFlow(**config["flow"]), Adam(**config["adam"]))

    def variables(self, weights: Sequence[keras.Variable]) -> dict[str, list[Slot] | Slot]:
        return dict(GradientFlowDynamics(self.flow).variables(weights),
                    adam_m=[Slot(f"adam_m_{i}", w.shape, w.dtype) for i, w in enumerate(weights)],
                    adam_v=[Slot(f"adam_v_{i}", w.shape, w.dtype) for i, w in enumerate(weights)],
                    margins_exceed_one=Slot("margins_exceed_one", (), "bool"))

    def start(self, model: "AlphaModel", x: tf.Tensor, y: tf.Tensor) -> None:
        """Adam takes no full-batch gradient: the forward pass alone."""
        model.observe(x)

    def converged(self, model: "AlphaModel") -> tf.Tensor:
        """The last check's, made at the end of an epoch."""
        return model.dynamics_state["margins_exceed_one"].value

    def step(self, model: "AlphaModel", x: tf.Tensor) -> Step:
        """One Adam step on the next mini-batch of the training set, then, at the end of an
        epoch, the convergence check. `x` is this replica's shard of the training set
        (`AlphaModel.start`); each replica takes the gradient of the batch's points it
        holds, and their sum is the batch's gradient (module docstring). A converged model
        stands still."""
        settings, state = self.adam, model.dynamics_state
        strategy = model.distribute_strategy
        n_local = int(x.shape[0])
        n = n_local * strategy.num_replicas_in_sync
        per_epoch = settings.steps_per_epoch(n)
        step = model.step_count.value
        batch = _local_batch(strategy, batch_indices(settings, n, step), n_local)
        xb = tf.gather(x, batch)
        yb, f0b = tf.gather(model.cache.y_train, batch), tf.gather(model.cache.f0_train, batch)
        weights = model.network.trainable_weights
        _, _, grads = model.loss_and_grad(xb, yb, f0b, n=settings.batch_size)

        checked = state["margins_exceed_one"]
        going = tf.logical_not(checked)
        s = tf.cast(step + 1, tf.float64)
        lr = tf.cast(settings.learning_rate * tf.sqrt(1.0 - settings.beta2 ** s)
                     / (1.0 - settings.beta1 ** s), model.dtype)
        epsilon = tf.cast(settings.epsilon / model.alpha * tf.sqrt(1.0 - settings.beta2 ** s),
                          model.dtype)
        for w, m, v, g in zip(weights, state["adam_m"], state["adam_v"], grads):
            m_new = settings.beta1 * m + (1.0 - settings.beta1) * g
            v_new = settings.beta2 * v + (1.0 - settings.beta2) * tf.square(g)
            # lr m̂/(√v̂ + ε) = lr √(1 − β2^s)/(1 − β1^s) · m/(√v + ε √(1 − β2^s))
            w.assign(tf.where(going, w - lr * m_new / (tf.sqrt(v_new) + epsilon), w))
            m.assign(tf.where(going, m_new, m))
            v.assign(tf.where(going, v_new, v))
        steps = step + tf.cast(going, tf.int64)
        epoch_end = tf.logical_and(going, steps % per_epoch == 0)
        # The check: f(w) on each shard at an epoch's end only, its unfitted points summed over
        # the replicas every step (a collective cannot sit in a branch of tf.cond).
        unfitted = tf.cond(epoch_end, lambda: _unfitted(model, x),
                           lambda: tf.zeros((), model.dtype))
        unfitted = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM,
                                                                  unfitted)
        checked.assign(tf.where(epoch_end, unfitted == 0, checked))
        # Eqs. 8-9's dout and dgrad have no meaning here: no logs of its own.
        return Step(accepted=going, attempts=tf.cast(going, tf.int64),
                    t=tf.cast(steps, tf.float64) / per_epoch,
                    dt=tf.constant(1.0 / per_epoch, tf.float64),
                    evaluations=tf.cast(epoch_end, tf.int64), logs={})


def _unfitted(model: "AlphaModel", x: tf.Tensor) -> tf.Tensor:
    """The points of this replica's shard x whose margin is not above 1 (NaN included),
    f(w) refreshed there first."""
    model.observe(x)
    return tf.reduce_sum(tf.cast(tf.logical_not(model.margins() > 1.0), model.dtype))
