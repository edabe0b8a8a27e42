"""The one interface through which the α-model (`model.alpha_model.AlphaModel`) is trained:
`Dynamics`, implemented by gradient flow with any integrator (`network_flow`), continuous
momentum (`momentum`) and Adam (`adam`).

The α-model keeps the clock of a run (t, dt, the accepted steps, the trial steps, the gradient
evaluations, t_end) and its cached outputs on the training set; its dynamics keeps the rest
of the state, in variables the model creates from the dynamics' `Slot`s and checkpoints with
its own. Each `train_step` of the model is one `Dynamics.step`, which moves the weights through
the model's public methods (its loss and gradient, its outputs, its state) and reports a
`Step`; the model advances its clock from it and logs it.
"""
import collections
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from lazy_feature.model.alpha_model import AlphaModel

Slot = collections.namedtuple("Slot", ["name", "shape", "dtype"])
Slot.__doc__ = """One variable of a dynamics' state: its name, shape and dtype (zero at the
start)."""

Step = collections.namedtuple("Step", ["accepted", "attempts", "t", "dt", "evaluations",
                                       "logs"])
Step.__doc__ = """What one train step reports to the α-model: whether it moved w (a bool
tensor), the trial steps it made (int64), the new t and dt (float64), the gradient
evaluations it used (int64), and logs of its own (name: tensor), logged after the model's."""


class Dynamics:
    """How the α-model is trained: one step at a time, on the model's whole training set.

    Subclasses set:
      dt0: the model's dt at the start.
      tracks_outputs: whether each step leaves f(w) on the training set in the model's cache;
        if not, the model refreshes it (`AlphaModel.observe`) before it reports its state.
      vectors: the weight-sized vectors its state and steps keep besides gradient flow's
        five (`run.resources`).
      across_replicas: whether, under a strategy with several replicas, its `step` runs in
        the cross-replica context (running its evaluations on the replicas itself, x the
        replicas' shards) instead of on each replica.
    and implement `variables`, `start`, `step` and `converged`, and `get_config` (the model
    saves its dynamics with it; `from_config` is the constructor on that dict).
    """
    dt0 = 1.0
    tracks_outputs = True
    vectors = 0
    across_replicas = False

    def check_strategy(self, strategy: "tf.distribute.Strategy") -> None:
        """Refuse, in one line (ConfigError), a tf.distribute strategy it cannot run under."""

    def variables(self, weights: Sequence["keras.Variable"]) -> dict[str, list[Slot] | Slot]:
        """{attribute: [Slot, ...] or Slot} of its state, in the order they are created, for
        a network of trainable `weights`; the model holds each under that attribute (its
        checkpoint's name for it) and gives them back as `AlphaModel.dynamics_state`."""
        raise NotImplementedError

    def start(self, model: "AlphaModel", x: "tf.Tensor", y: "tf.Tensor") -> None:
        """Set up its state at the current w on this replica's training points (x, y), whose
        f(w0) and y the model has cached; called once per run, before the first step."""
        raise NotImplementedError

    def step(self, model: "AlphaModel", x: "tf.Tensor") -> Step:
        """One step from the model's current state on this replica's training inputs x;
        returns a `Step`. A converged model (`converged`) stands still."""
        raise NotImplementedError

    def converged(self, model: "AlphaModel") -> "tf.Tensor":
        """Whether the run met its stopping criterion (every training margin > 1), a bool
        tensor, the same on every replica."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Dynamics":
        return cls(**config)

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash((type(self), repr(self.get_config())))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.get_config()})"
