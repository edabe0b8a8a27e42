"""The α-model under tf.distribute: its training set split in one contiguous shard per replica
(`shard`, `TrainingSetCache`), and the reductions over the replicas that make a step the same
as on one device.
"""
from typing import Any

import keras
import numpy as np
import tensorflow as tf


def sum_replicas(value):
    """Σ over the replicas of a tf.distribute strategy (identity on one device)."""
    return tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, value)


def max_replicas(value):
    """max over the replicas of a tf.distribute strategy (identity on one device)."""
    gathered = tf.distribute.get_replica_context().all_gather(tf.reshape(value, [1]), axis=0)
    return tf.reduce_max(gathered)


def squared_norm(tensors):
    """Σ of the squares of all entries of a list of tensors (this replica's), in float64:
    gradients and displacements scale as 1/α, and in float32 the squares of their changes
    underflow (below 1e-38) from √h·α ~ 1e8 on."""
    return tf.add_n([tf.reduce_sum(tf.square(tf.cast(t, tf.float64))) for t in tensors])


def outside_replicas(strategy):
    """Whether code that reduces over the replicas of `strategy` runs outside them (in its
    cross-replica context, or outside its scope), so that it must go through strategy.run."""
    if tf.distribute.has_strategy():
        return tf.distribute.in_cross_replica_context()
    return strategy is not tf.distribute.get_strategy()  # not the default strategy


def first_replica(strategy, values):
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


class LocalValues:
    """A nest of tensors, one value per replica (a value of `strategy.run`), held in
    replica-local variables that neither Keras nor a checkpoint tracks: a traced function
    that reads them (`read`, on a replica) sees what the last `hold` put there, so that it
    can be traced once and run on other values."""

    def __init__(self, strategy: tf.distribute.Strategy) -> None:
        self.strategy = strategy
        self._structure: Any = None
        self._variables: list[tf.Variable] = []

    def hold(self, values: Any) -> None:
        """Put `values` in the variables (made anew if their shapes changed)."""
        parts = [self.strategy.experimental_local_results(v) for v in tf.nest.flatten(values)]
        specs = [(p[0].shape, p[0].dtype) for p in parts]
        if specs != [(v.shape, v.dtype) for v in self._variables] or self._structure is None:
            with self.strategy.scope():
                self._variables = [tf.Variable(
                    tf.zeros(shape, dtype), trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.NONE) for shape, dtype in specs]
        self._structure = tf.nest.map_structure(lambda _: 0, values)
        for variable, values_of_replicas in zip(self._variables, parts):
            for copy, value in zip(self.strategy.experimental_local_results(variable),
                                   values_of_replicas):
                copy.assign(value)

    def read(self) -> Any:
        """The nest held, this replica's values (on one replica: the values)."""
        return tf.nest.pack_sequence_as(self._structure,
                                        [v.read_value() for v in self._variables])


@keras.saving.register_keras_serializable(package="lazy_feature")
class TrainingSetCache(keras.layers.Layer):
    """The tracked outputs (f(w_i), or f(w_i) − f(w0) in the difference form:
    `AlphaModel.tracked_outputs`), f(w0) and the labels y of the training points, built once
    their number is known.

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
            store[f"{i}"] = np.concatenate([np.asarray(part) for part in shards(v)])

    def load_own_variables(self, store):
        for i, v in enumerate(self.non_trainable_variables):
            parts = shards(v)
            for part, values in zip(parts, np.split(np.asarray(store[f"{i}"]), len(parts))):
                part.assign(values)


def shards(variable):
    """The replicas' copies of a replica-local variable (the variable alone on one device)."""
    value = variable.value
    return tuple(value.values) if isinstance(value, tf.distribute.DistributedValues) else (value,)
