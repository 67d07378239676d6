"""`cluster_weights` and `strip_clustering`: weight clustering, tfmot's API on Keras 3."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np

from tfslim import _keras_graph
from tfslim._compat import is_tf_keras
from tfslim._wrapping import build_like, copy_layer
from tfslim.clustering import centroids as centroids_lib
from tfslim.clustering import tfmot_routing
from tfslim.clustering.cluster_wrapper import ClusterWeights, clusterable_weights, find_wrappers


def is_graph_model(model) -> bool:
    """True for Sequential and Functional models (which `clone_model` can rebuild)."""
    return isinstance(model, (keras.Sequential, _keras_graph.functional_class()))


def skip_predicate(skip) -> Callable:
    """`skip` (None, names, layer classes, or a callable) as a predicate on layers."""
    if skip is None:
        return lambda layer: False
    if callable(skip) and not isinstance(skip, type):
        return lambda layer: bool(skip(layer))
    items = (skip,) if isinstance(skip, (str, type)) else skip
    valid = isinstance(items, Iterable) and all(
        isinstance(i, str) or (isinstance(i, type) and issubclass(i, keras.Layer)) for i in items
    )
    if not valid:
        raise TypeError(
            "Invalid value for argument `skip`. Expected layer names, `keras.Layer` classes, or "
            f"a callable taking a layer and returning a bool. Received: skip={skip!r}"
        )
    items = tuple(items)
    names = {i for i in items if isinstance(i, str)}
    classes = tuple(i for i in items if isinstance(i, type))
    return lambda layer: layer.name in names or (bool(classes) and isinstance(layer, classes))


def _check_skip_names(model, skip) -> None:
    if skip is None or callable(skip) and not isinstance(skip, type):
        return
    items = (skip,) if isinstance(skip, str) else skip
    names = {layer.name for layer in _keras_graph.sublayers(model)}
    unknown = sorted({i for i in items if isinstance(i, str)} - names)
    if unknown:
        raise ValueError(
            f"Invalid value for argument `skip`: no layer named {unknown} in model "
            f"'{model.name}'. Expected names among: {sorted(names)}"
        )


def cluster_weights(
    model,
    number_of_clusters: int,
    *,
    init: str = "kmeans++",
    preserve_sparsity: bool = False,
    skip: str | type | Iterable | Callable | None = None,
    per_channel: bool = False,
):
    """Clusters the kernels of a layer, or of every clusterable layer of a model.

    A Sequential or Functional model (nested ones included) is cloned: layers with trainable
    kernels are wrapped in `ClusterWeights`, the others copied, trained weights copied over
    and the centroids initialized from them; the original model is left untouched. Compile
    and `fit` the result as usual: the centroids train inside the compiled step (each
    weight's gradient flows to its centroid), and assignments follow the weights on every
    step. Then `strip_clustering` gives a plain model whose kernels hold at most
    `number_of_clusters` distinct values. A `tf_keras` model or layer goes to
    `tfmot.clustering.keras.cluster_weights`.

    Args:
        model: `keras.Layer`, or Sequential/Functional `keras.Model` (or tf_keras ones).
        number_of_clusters: int >= 2. Distinct values per kernel (per channel with
            `per_channel`).
        init: "kmeans++", "linear", "density" or "random": initial centroids. Defaults to
            `"kmeans++"`.
        preserve_sparsity: bool. Zero weights (e.g. after pruning) stay exactly zero: one
            centroid is pinned to zero. Defaults to `False`.
        skip: layer names, layer classes, or a callable `layer -> bool`: layers left
            unclustered (models only). Defaults to `None`.
        per_channel: bool. One set of centroids per output channel. Defaults to `False`.

    Returns:
        The wrapped layer, or a new model with wrapped layers.

    Raises:
        TypeError: if `model` is neither a Keras layer nor a model, or `skip` is malformed.
        ValueError: for a bad argument, a subclassed model, an already clustered model, an
            unknown layer name in `skip`, or a model without clusterable layers.

    Example:

    >>> import keras
    >>> import tfslim
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
    ...                           keras.layers.Dense(4, name="logits")])
    >>> clustered = tfslim.cluster_weights(model, 4, skip=["logits"])
    >>> [type(layer).__name__ for layer in clustered.layers]
    ['ClusterWeights', 'Dense']
    """
    number_of_clusters = centroids_lib.check_number_of_clusters(number_of_clusters)
    init = centroids_lib.check_init(init)
    is_skipped = skip_predicate(skip)
    options = dict(init=init, preserve_sparsity=preserve_sparsity, per_channel=per_channel)
    if is_tf_keras(model):
        return tfmot_routing.cluster_tf_keras(model, number_of_clusters, skip=skip, **options)
    if not isinstance(model, keras.Layer):
        raise TypeError(
            "Invalid value for argument `model`. Expected a Keras 3 layer or model (or a "
            f"tf_keras one). Received: model={model!r} of type {type(model).__name__}"
        )
    if not isinstance(model, keras.Model):
        if skip is not None:
            raise ValueError(
                f"Argument `skip` only applies to models. Received layer '{model.name}' with "
                f"skip={skip!r}"
            )
        return ClusterWeights(model, number_of_clusters, **options)
    if not is_graph_model(model):
        raise ValueError(
            f"Invalid value for argument `model`: model '{model.name}' is a subclassed model "
            f"({type(model).__name__}), which cannot be cloned with wrappers. Cluster its "
            "layers where they are built (`tfslim.cluster_weights(layer, ...)` in `__init__`) "
            "or rebuild it with the functional API."
        )
    if find_wrappers(model):
        raise ValueError(
            f"Invalid value for argument `model`: model '{model.name}' is already clustered "
            "(it contains ClusterWeights layers). Call `tfslim.strip_clustering` first."
        )
    _check_skip_names(model, skip)

    pairs, wrapped = [], []

    def clone(layer):
        copy = copy_layer(layer)
        if not isinstance(layer, keras.Layer):  # An operation node: nothing to copy.
            return copy
        pairs.append((copy, layer))
        if is_skipped(layer) or not clusterable_weights(layer):
            return copy
        build_like(copy, layer)
        wrapper = ClusterWeights(copy, number_of_clusters, **options)
        wrapped.append(wrapper)
        return wrapper

    clustered = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not wrapped:
        raise ValueError(
            f"Invalid value for argument `model`: model '{model.name}' has no clusterable layer "
            "(layers with trainable kernels of rank >= 2) outside `skip`."
        )
    for copy, original in pairs:
        copy.set_weights(original.get_weights())
    for wrapper in wrapped:
        wrapper.initialize_clusters()
    return clustered


def strip_clustering(model):
    """Returns a plain model whose kernels hold the clustered values.

    `ClusterWeights` wrappers are replaced by copies of the layers they wrap, with each
    clustered kernel set to `centroids[assignments]` (the values the clustered model computes
    with in inference), in a new Sequential/Functional model whose `.keras` file needs no
    tfslim. A model without wrappers is returned as it is. `tf_keras` models go to tfmot's
    `strip_clustering`.

    Args:
        model: a Keras 3 (or tf_keras) model, clustered or not.

    Returns:
        A plain Keras model.

    Raises:
        TypeError: if `model` is not a Keras model.

    Example:

    >>> import keras, numpy as np
    >>> import tfslim
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16)])
    >>> plain = tfslim.strip_clustering(tfslim.cluster_weights(model, 4))
    >>> [type(layer).__name__ for layer in plain.layers], len(np.unique(plain.layers[0].kernel))
    (['Dense'], 4)
    """
    if is_tf_keras(model):
        return tfmot_routing.strip_tf_keras(model)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid value for argument `model`. Expected a Keras model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    if not find_wrappers(model):
        return model
    pairs = []

    def clone(layer):
        if isinstance(layer, ClusterWeights):
            copy = copy_layer(layer.layer)
            pairs.append((copy, layer.layer, layer.strip_values()))
        else:
            copy = copy_layer(layer)
            if isinstance(layer, keras.Layer):
                pairs.append((copy, layer, {}))
        return copy

    stripped = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for copy, source, values in pairs:
        copy.set_weights([values.get(v.path, v) for v in source.weights])
    return stripped


def distinct_values(kernel, *, per_channel: bool = False, depthwise: bool = False) -> int:
    """Largest number of distinct values in `kernel` (per output channel with `per_channel`)."""
    kernel = np.asarray(kernel)
    if not per_channel:
        return int(np.unique(kernel).size)
    channels = kernel.shape[-1] * (kernel.shape[-2] if depthwise else 1)
    rows = kernel.reshape(-1, channels).T
    return max(int(np.unique(row).size) for row in rows)
