"""Clustering-preserving quantization-aware training (CQAT; PCQAT with zeros kept).

`tfslim.quantize_model(model, preserve="clusters")` lands here. The clustered model is
stripped, quantized by `tfslim.quantize_model` as usual, and every `QuantizeWrapper` whose
kernel is clustered becomes a `ClusterPreservingQuantizeWrapper`: the kernel's distinct
values become trainable centroids and each weight's index into them a fixed assignment.
The wrapper runs `QuantizeWrapper`'s own arithmetic (batch-norm folding, int8 fake
quantization of the weights, ranges) with the kernel read as `centroids[assignments]`, so
fake quantization rounds the centroids, the gradient of each weight flows to its centroid,
and the assignments never change. A zero centroid (a pruned weight) is pinned at zero.

So the int8 kernel holds at most as many distinct values as there are centroids: per tensor
for per-tensor (Dense) kernels, and per channel for per-channel convolution kernels, even
after a batch norm's per-channel scale is folded in.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from tfslim._compat import is_tf_keras

# A module import, not `from ... import strip_clustering`: the first `tfslim.cluster_weights`
# imports Keras from inside `cluster.py`, which registers this module while `cluster.py` is
# still half-initialised.
from tfslim.clustering import cluster as cluster_lib
from tfslim.clustering import tfmot_routing
from tfslim.clustering.cluster_wrapper import clusterable_weights, run_with_values
from tfslim.quantization.quantize_wrapper import QuantizeWrapper

PRESERVE_CHOICES = ("clusters",)


def is_clustered(kernel: np.ndarray) -> bool:
    """A kernel is clustered when its values are shared: at most half as many distinct
    values as weights (a kernel trained without clustering has all values distinct)."""
    return np.unique(kernel).size <= kernel.size // 2


@keras.saving.register_keras_serializable(package="tfslim")
class ClusterPreservingQuantizeWrapper(QuantizeWrapper):
    """A `QuantizeWrapper` whose clustered kernels train as centroids with fixed assignments.

    Args:
        *args: `QuantizeWrapper` arguments.
        centroids: dict {weight name: number of centroids} of the wrapped layer's clustered
            kernels (e.g. `{"kernel": 16}`). Defaults to `None` (computed from the kernels
            by `ClusterPreservingQuantizeWrapper.from_quantize_wrapper`).
        **kwargs: `QuantizeWrapper` keyword arguments.
    """

    def __init__(self, *args, centroids: dict | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.centroid_counts = {str(k): int(v) for k, v in (centroids or {}).items()}
        self._clusters = []  # (kernel variable, centroids, assignments)

    def build(self, input_shape):
        super().build(input_shape)
        weights = {v.name: v for _, v in clusterable_weights(self.layer)}
        for name, count in self.centroid_counts.items():
            variable = weights[name]
            centroids = self.add_weight(
                name=f"{name}_centroids", shape=(count,), initializer="zeros", trainable=True
            )
            assignments = self.add_weight(
                name=f"{name}_assignments",
                shape=variable.shape,
                dtype="int32",
                initializer="zeros",
                trainable=False,
            )
            # The kernel is read as centroids[assignments]; its own value no longer trains.
            variable.trainable = False
            self._clusters.append((variable, centroids, assignments))

    @classmethod
    def from_quantize_wrapper(cls, wrapper: QuantizeWrapper):
        """A copy of `wrapper` (same config) preserving its clustered kernels, or None."""
        counts = {
            v.name: int(np.unique(v.numpy()).size)
            for _, v in clusterable_weights(wrapper.layer)
            if is_clustered(v.numpy())
        }
        if not counts:
            return None
        return cls.from_config({**wrapper.get_config(), "centroids": counts})

    def initialize_from_kernels(self) -> None:
        """Centroids = each kernel's distinct values; assignments = each weight's index."""
        for variable, centroids, assignments in self._clusters:
            values, index = np.unique(variable.numpy(), return_inverse=True)
            centroids.assign(values.astype(np.float32))
            assignments.assign(index.reshape(variable.shape).astype(np.int32))

    def clustered_kernels(self) -> list:
        """(variable, centroids[assignments]) for each preserved kernel."""
        pairs = []
        for variable, centroids, assignments in self._clusters:
            table = tf.convert_to_tensor(centroids)
            # A zero centroid gets no gradient, so pruned weights stay exactly zero.
            table = tf.where(tf.equal(table, 0.0), tf.zeros_like(table), table)
            pairs.append((variable, tf.gather(table, tf.convert_to_tensor(assignments))))
        return pairs

    def call(self, inputs, training=None):
        return run_with_values(
            lambda: super(ClusterPreservingQuantizeWrapper, self).call(inputs, training=training),
            self.variables,
            self.clustered_kernels(),
        )

    def get_config(self):
        config = super().get_config()
        config["centroids"] = dict(self.centroid_counts)
        return config


def _has_zeros(model) -> bool:
    return any(
        np.any(np.asarray(v) == 0)
        for layer in model.layers
        for v in layer.get_weights()
        if np.ndim(v) >= 2
    )


def quantize_preserving_clusters(model, *, skip=None, ema_decay: float = 0.99):
    """QAT copy of a clustered (or stripped clustered) model that keeps its clusters.

    Called by `tfslim.quantize_model(model, preserve="clusters")`; see the module docstring.
    A `tf_keras` model goes to tfmot's cluster-preserving scheme (`preserve_sparsity` when
    the model has zero weights).

    Raises:
        ValueError: if no kernel of the model is clustered.
    """
    from tfslim.quantization import quantize_model

    if is_tf_keras(model):
        if skip is not None or ema_decay != 0.99:
            raise ValueError(
                "Arguments `skip` and `ema_decay` are not supported with preserve='clusters' "
                "for tf_keras models (quantized by tfmot's cluster-preserving scheme). "
                f"Received: skip={skip!r}, ema_decay={ema_decay}"
            )
        plain = tfmot_routing.strip_tf_keras(model)
        return tfmot_routing.quantize_tf_keras_preserving_clusters(
            plain, preserve_sparsity=_has_zeros(plain)
        )
    qat = quantize_model(cluster_lib.strip_clustering(model), skip=skip, ema_decay=ema_decay)
    replaced = []

    def clone(layer):
        copy = None
        if type(layer) is QuantizeWrapper:
            copy = ClusterPreservingQuantizeWrapper.from_quantize_wrapper(layer)
        if copy is None:
            copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, keras.Layer):
            replaced.append((copy, layer))
        return copy

    preserving = keras.models.clone_model(qat, clone_function=clone, recursive=True)
    if not any(isinstance(new, ClusterPreservingQuantizeWrapper) for new, _ in replaced):
        raise ValueError(
            f"Invalid value for argument `model` with preserve='clusters': model "
            f"'{model.name}' has no clustered kernel (a kernel with at most half as many "
            "distinct values as weights). Cluster it first with `tfslim.cluster_weights`."
        )
    for new, old in replaced:
        added = set()
        if isinstance(new, ClusterPreservingQuantizeWrapper):
            added = {id(v) for _, c, a in new._clusters for v in (c, a)}
        # Variable paths depend on where a layer was first built; the order does not.
        ours = [v for v in new.weights if id(v) not in added]
        for variable, source in zip(ours, old.weights, strict=True):
            variable.assign(source.numpy())
        if added:
            new.initialize_from_kernels()
    return preserving
