"""`ClusterWeights`: a layer wrapper that trains a layer's kernels as shared centroids.

Each clustered weight of the wrapped layer keeps its own float values (the "original"
weights) plus two new weights of the wrapper: `<name>_centroids` (trainable, one row per
channel or a single row) and `<name>_assignments` (int32, the centroid index of every weight).
In a training step the wrapper

1. recomputes every weight's assignment: the nearest centroid to its original value. This
   runs on every step, as in tfmot: it places each weight among the midpoints of the
   sorted centroids in one XLA-compiled computation (TensorFlow's own search and gather
   kernels made it most of the step's extra cost), and it lets a weight whose original
   value has moved past the midpoint between two centroids change cluster at once instead
   of waiting for a schedule;
2. builds the clustered weight `centroids[assignments]` and runs the wrapped layer's own
   `call` with it in place of the variable (a `keras.StatelessScope` maps the variable to
   that tensor), so any layer that reads its kernel works, with no per-layer code.

Gradients: the gather sends each weight's gradient to its assigned centroid (the sum over
the cluster, tfmot's default), and a straight-through term sends the same gradient to the
original weight, so assignments can follow training. Outside training the saved
assignments are used as they are, so predictions, `strip_clustering` and the converted model
agree exactly. Everything is graph code inside the compiled step.

With `preserve_sparsity`, weights that are zero when the layer is clustered (e.g. after
pruning) stay exactly zero: they are assigned to centroid 0, which is pinned to zero and
gets no gradient, and the others are clustered over the remaining `k - 1` centroids.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfslim import _keras_graph
from tfslim._checks import check_bool
from tfslim._wrapping import InnerBuildConfig
from tfslim.clustering import centroids as centroids_lib

CLUSTERABLE_WEIGHT_NAMES = (
    "kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "recurrent_kernel",
    "embeddings",
)
_TRANSPOSED = ("Conv1DTranspose", "Conv2DTranspose", "Conv3DTranspose")


def clusterable_weights(layer) -> list:
    """Trainable kernels (rank >= 2) of `layer` and its sub-layers, deduplicated."""
    if not isinstance(layer, keras.Layer):  # An operation node (`x * 2.0`) of a graph.
        return []
    seen, found = set(), []
    for sub in _keras_graph.sublayers(layer, include_self=True):
        if not sub.trainable:
            continue
        getter = getattr(sub, "get_clusterable_weights", None)
        if callable(getter):
            own = list(getter())
        else:
            own = [
                v
                for v in getattr(sub, "_trainable_variables", [])
                if v.name in CLUSTERABLE_WEIGHT_NAMES and len(v.shape) >= 2
            ]
        for v in own:
            if id(v) not in seen:
                seen.add(id(v))
                found.append((sub, v))
    return found


class Layout:
    """How a weight is laid out as rows of values sharing one set of centroids.

    Per tensor: one row. Per channel: one row per output channel, the channel TFLite
    quantizes per channel (the last axis; `in * multiplier` for depthwise kernels; axis -2
    for transposed convolutions).
    """

    def __init__(self, shape, *, per_channel: bool, depthwise: bool, transposed: bool):
        self.shape = tuple(int(d) for d in shape)
        self.per_channel = per_channel
        self.depthwise = depthwise and per_channel
        self.axis = len(self.shape) - 2 if (transposed and per_channel) else len(self.shape) - 1
        if not per_channel:
            self.rows = 1
        elif self.depthwise:
            self.rows = self.shape[-1] * self.shape[-2]
        else:
            self.rows = self.shape[self.axis]

    def _perm(self):
        rank = len(self.shape)
        return [i for i in range(rank) if i != self.axis] + [self.axis]

    def to_rows(self, value, xp=tf):
        """(rows, n) view of a weight (graph tensor, or NumPy array with `xp=np`)."""
        if not self.per_channel:
            return xp.reshape(value, (1, -1))
        if self.depthwise:
            return xp.transpose(xp.reshape(value, (-1, self.rows)))
        moved = xp.transpose(value, self._perm())
        return xp.transpose(xp.reshape(moved, (-1, self.rows)))

    def from_rows(self, rows, xp=tf):
        """Inverse of `to_rows`."""
        if not self.per_channel:
            return xp.reshape(rows, self.shape)
        if self.depthwise:
            return xp.reshape(xp.transpose(rows), self.shape)
        perm = self._perm()
        moved_shape = [self.shape[i] for i in perm]
        moved = xp.reshape(xp.transpose(rows), moved_shape)
        inverse = [perm.index(i) for i in range(len(self.shape))]
        return xp.transpose(moved, inverse)


class _ClusteredWeight:
    """The state of one clustered weight: the variable, its centroids and assignments."""

    def __init__(self, variable, layout, centroids, assignments, mask):
        self.variable = variable
        self.layout = layout
        self.centroids = centroids
        self.assignments = assignments
        self.mask = mask


@keras.saving.register_keras_serializable(package="tfslim")
class ClusterWeights(InnerBuildConfig, keras.layers.Wrapper):
    """Clusters the kernels of `layer` into `number_of_clusters` trainable centroids.

    Args:
        layer: `keras.Layer` with at least one clusterable weight (trainable kernels of rank
            >= 2: `Dense`, `Conv*`, `DepthwiseConv2D`, `SeparableConv*`, `Embedding`, RNN
            layers, `EinsumDense`, or a layer defining `get_clusterable_weights()`).
        number_of_clusters: int >= 2, distinct values per kernel (per channel with
            `per_channel`).
        init: "kmeans++", "linear", "density" or "random": how the centroids start.
            Defaults to `"kmeans++"`.
        preserve_sparsity: bool, keep zero weights exactly zero. Defaults to `False`.
        per_channel: bool, one set of centroids per output channel (what per-channel int8
            kernels need to keep `number_of_clusters` values per channel after folding a
            batch norm). Defaults to `False`.
        **kwargs: base layer arguments (`name`, ...).

    Raises:
        TypeError: if `layer` is not a Keras 3 layer.
        ValueError: for a bad argument, an already clustered layer, or a layer with no
            clusterable weight.

    Example:

    >>> import keras
    >>> from tfslim import clustering
    >>> dense = clustering.ClusterWeights(keras.layers.Dense(8), 4)
    >>> model = keras.Sequential([keras.Input((16,)), dense])
    >>> [w.name for w in dense.weights if "kernel_" in w.name]
    ['kernel_centroids', 'kernel_assignments']
    """

    def __init__(
        self,
        layer: keras.Layer,
        number_of_clusters: int,
        *,
        init: str = "kmeans++",
        preserve_sparsity: bool = False,
        per_channel: bool = False,
        **kwargs,
    ):
        if not isinstance(layer, keras.Layer):
            raise TypeError(
                "Invalid value for argument `layer`. Expected a Keras 3 `keras.Layer`. "
                f"Received: layer={layer!r} of type {type(layer).__name__}"
            )
        if isinstance(layer, ClusterWeights):
            raise ValueError(
                f"Invalid value for argument `layer`: layer '{layer.name}' is already wrapped "
                "in ClusterWeights."
            )
        self.number_of_clusters = centroids_lib.check_number_of_clusters(number_of_clusters)
        self.init = centroids_lib.check_init(init)
        preserve_sparsity = check_bool("preserve_sparsity", preserve_sparsity)
        per_channel = check_bool("per_channel", per_channel)
        if preserve_sparsity and self.number_of_clusters < 3:
            raise ValueError(
                "Invalid value for argument `number_of_clusters` with preserve_sparsity=True. "
                "Expected an int >= 3 (one centroid is the pinned zero). "
                f"Received: number_of_clusters={number_of_clusters}"
            )
        self.preserve_sparsity = preserve_sparsity
        self.per_channel = per_channel
        kwargs.setdefault("name", f"cluster_{layer.name}")
        super().__init__(layer, **kwargs)
        self.clustered: list[_ClusteredWeight] = []

    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as error:
                raise ValueError(
                    f"ClusterWeights cannot build layer '{self.layer.name}' "
                    f"({type(self.layer).__name__}) from one input shape {input_shape} "
                    f"({error}). Build the layer before wrapping it, e.g. by calling it once."
                ) from error
        targets = clusterable_weights(self.layer)
        if not targets:
            raise ValueError(
                f"Invalid value for argument `layer`: layer '{self.layer.name}' "
                f"({type(self.layer).__name__}) has no clusterable weight. Clusterable weights "
                "are trainable kernels of rank >= 2, or those a custom layer returns from "
                "`get_clusterable_weights()`."
            )
        k = self.number_of_clusters
        for owner, variable in targets:
            layout = Layout(
                variable.shape,
                per_channel=self.per_channel,
                depthwise=variable.name == "depthwise_kernel",
                transposed=type(owner).__name__ in _TRANSPOSED,
            )
            centroids = self.add_weight(
                name=f"{variable.name}_centroids",
                shape=(layout.rows, k),
                initializer="zeros",
                trainable=True,
            )
            # Every replica computes the same assignments from mirrored values.
            assignments = self.add_weight(
                name=f"{variable.name}_assignments",
                shape=variable.shape,
                dtype="int32",
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
            mask = None
            if self.preserve_sparsity:
                mask = self.add_weight(
                    name=f"{variable.name}_sparsity_mask",
                    shape=variable.shape,
                    initializer="ones",
                    trainable=False,
                    aggregation="only_first_replica",
                )
            self.clustered.append(_ClusteredWeight(variable, layout, centroids, assignments, mask))
        self.initialize_clusters()

    def initialize_clusters(self) -> None:
        """Sets centroids, assignments (and the sparsity mask) from the current weights.

        Called when the layer is built and by `cluster_weights` after it copies trained
        weights in; call it again after loading other weights into the wrapped layer.
        """
        k = self.number_of_clusters
        for state in self.clustered:
            # `init_scope`: a layer first built inside a traced step (a subclassed model's
            # `call`) still reads its concrete initial weights.
            with tf.init_scope():
                value = np.asarray(keras.ops.convert_to_numpy(state.variable))
            layout = state.layout
            rows = layout.to_rows(value, xp=np)
            mask_rows = None
            if state.mask is not None:
                nonzero = (value != 0).astype(value.dtype)
                with tf.init_scope():
                    state.mask.assign(nonzero)
                mask_rows = layout.to_rows(nonzero, xp=np) > 0
            table = np.zeros((layout.rows, k), np.float32)
            index = np.zeros(rows.shape, np.int32)
            for r, row in enumerate(rows):
                if mask_rows is None:
                    table[r] = centroids_lib.initial_centroids(row, k, self.init)
                    index[r] = centroids_lib.nearest_numpy(row, table[r])
                else:
                    keep = mask_rows[r]
                    table[r, 1:] = centroids_lib.initial_centroids(row[keep], k - 1, self.init)
                    index[r] = np.where(keep, 1 + centroids_lib.nearest_numpy(row, table[r, 1:]), 0)
            with tf.init_scope():
                state.centroids.assign(table)
                state.assignments.assign(layout.from_rows(index, xp=np))

    def _centroid_table(self, state):
        table = tf.convert_to_tensor(state.centroids)
        if state.mask is not None:
            # Column 0 is the pinned zero: multiplying by 0 keeps it at 0 with no gradient.
            keep = np.ones((1, self.number_of_clusters), np.float32)
            keep[0, 0] = 0.0
            table = table * keep
        return table

    def clustered_value(self, state, training: bool = False):
        """The clustered weight `centroids[assignments]` (recomputed when `training`)."""
        layout = state.layout
        table = self._centroid_table(state)
        if training:
            original = tf.convert_to_tensor(state.variable)
            mask = None if state.mask is None else tf.convert_to_tensor(state.mask)
            if mask is not None:
                original = original * mask
            rows = layout.to_rows(tf.stop_gradient(original))
            if mask is None:
                index = centroids_lib.nearest(rows, table, compiled=True)
            else:
                index = 1 + centroids_lib.nearest(rows, table[:, 1:], compiled=True)
                index = tf.where(layout.to_rows(mask) > 0, index, 0)
            state.assignments.assign(layout.from_rows(index))
        else:
            index = layout.to_rows(tf.convert_to_tensor(state.assignments))
        value = layout.from_rows(centroids_lib.lookup(table, index, compiled=training))
        if training:
            # Straight-through: the original weight gets the clustered weight's gradient.
            value = value + (original - tf.stop_gradient(original))
            if state.mask is not None:
                value = value * mask
        return value

    def call(self, inputs, *args, training=None, **kwargs):
        mapping = [(s.variable, self.clustered_value(s, bool(training))) for s in self.clustered]
        return run_with_values(
            lambda: self.layer(inputs, *args, training=training, **kwargs),
            self.layer.variables,
            mapping,
        )

    def strip_values(self) -> dict:
        """{variable path: clustered NumPy value} for `strip_clustering`."""
        return {
            s.variable.path: np.asarray(keras.ops.convert_to_numpy(self.clustered_value(s)))
            for s in self.clustered
        }

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "number_of_clusters": self.number_of_clusters,
                "init": self.init,
                "preserve_sparsity": self.preserve_sparsity,
                "per_channel": self.per_channel,
            }
        )
        return config


def run_with_values(fn, variables, mapping):
    """Runs `fn()` with some variables read as the given tensors; returns its result.

    `keras.StatelessScope` makes every read of a mapped variable return its tensor, so a
    layer's own `call` runs unchanged. Variables assigned inside the scope (batch norm
    statistics, range observers) are recorded by the scope, not written: those among
    `variables` are written back here. Values an enclosing scope maps (e.g. Keras's
    `stateless_call`) stay visible inside.

    Args:
        fn: callable taking no argument.
        variables: the variables `fn` may assign.
        mapping: list of (variable, tensor) pairs.
    """
    outer = _keras_graph.stateless_scope()
    mapped = {id(variable) for variable, _ in mapping}
    with keras.StatelessScope(state_mapping=mapping, initialize_variables=False) as scope:
        if outer is not None:
            for key, value in outer.state_mapping.items():
                scope.state_mapping.setdefault(key, value)
        outputs = fn()
    for variable in variables:
        if id(variable) in mapped:
            continue
        value = scope.get_current_value(variable)
        if value is not None and (outer is None or outer.get_current_value(variable) is not value):
            variable.assign(value)
    return outputs


def find_wrappers(model) -> list[ClusterWeights]:
    """Every `ClusterWeights` layer of `model`, nested models included."""
    return [layer for layer in _keras_graph.sublayers(model) if isinstance(layer, ClusterWeights)]
