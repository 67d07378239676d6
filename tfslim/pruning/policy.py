"""Which layers and weights get pruned, with which schedule.

A layer's prunable weights are its own trainable kernels (`kernel`, `depthwise_kernel`,
`pointwise_kernel`, `recurrent_kernel`, `embeddings`; rank >= 2) or, for a custom layer, what its
`get_prunable_weights()` returns (tfmot's `PrunableLayer` protocol). Biases, normalization
parameters and other 1-D weights are never pruned: they are tiny and pruning them hurts accuracy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras

from tfslim import _keras_graph
from tfslim.pruning.schedules import PruningSchedule, _check_sparsity

PRUNABLE_WEIGHT_NAMES = (
    "kernel",
    "depthwise_kernel",
    "pointwise_kernel",
    "recurrent_kernel",
    "embeddings",
)


def own_prunable_weights(layer) -> list:
    """Prunable weights that `layer` itself owns (not its sub-layers')."""
    getter = getattr(layer, "get_prunable_weights", None)
    if callable(getter):
        return list(getter())
    return [
        v
        for v in getattr(layer, "_trainable_variables", [])
        if v.name in PRUNABLE_WEIGHT_NAMES and len(v.shape) >= 2
    ]


def prunable_weights(layer) -> list:
    """Prunable weights of `layer` and its sub-layers (e.g. an LSTM's cell), deduplicated."""
    seen, found = set(), []
    for sub in _keras_graph.sublayers(layer, include_self=True):
        if not sub.trainable:
            continue
        for v in own_prunable_weights(sub):
            if id(v) not in seen:
                seen.add(id(v))
                found.append(v)
    return found


def is_graph_model(model) -> bool:
    """True for Sequential and Functional models (which `clone_model` can rebuild)."""
    return isinstance(model, (keras.Sequential, _keras_graph.functional_class()))


def check_skip_layers(skip_layers) -> tuple:
    """Validates `skip_layers`: layer names (str) or layer classes."""
    if skip_layers is None:
        return ()
    if isinstance(skip_layers, (str, type)):
        skip_layers = (skip_layers,)
    if not isinstance(skip_layers, Iterable):
        raise TypeError(
            "Invalid value for argument `skip_layers`. Expected an iterable of layer names or "
            f"layer classes. Received: skip_layers={skip_layers!r}"
        )
    items = tuple(skip_layers)
    for item in items:
        is_class = isinstance(item, type) and issubclass(item, keras.Layer)
        if not (isinstance(item, str) or is_class):
            raise TypeError(
                "Invalid value for argument `skip_layers`. Expected layer names (str) or "
                f"`keras.Layer` subclasses. Received: skip_layers={skip_layers!r}"
            )
    return items


def check_layer_sparsity(layer_sparsity) -> dict:
    """Validates `layer_sparsity`: {layer name: sparsity in [0, 1) or PruningSchedule}."""
    if layer_sparsity is None:
        return {}
    if not isinstance(layer_sparsity, Mapping):
        raise TypeError(
            "Invalid value for argument `layer_sparsity`. Expected a dict mapping layer names to "
            f"a sparsity or a PruningSchedule. Received: layer_sparsity={layer_sparsity!r}"
        )
    checked = {}
    for name, value in layer_sparsity.items():
        if not isinstance(name, str):
            raise TypeError(
                "Invalid value for argument `layer_sparsity`. Expected layer names (str) as "
                f"keys. Received key: {name!r}"
            )
        if isinstance(value, PruningSchedule):
            checked[name] = value
        else:
            checked[name] = _check_sparsity(f"layer_sparsity['{name}']", value)
    return checked


def is_skipped(layer, skip_layers: tuple) -> bool:
    for item in skip_layers:
        if isinstance(item, str) and layer.name == item:
            return True
        if isinstance(item, type) and isinstance(layer, item):
            return True
    return False


def schedule_for(layer, schedule: PruningSchedule, layer_sparsity: dict) -> PruningSchedule:
    """The schedule of `layer`: its `layer_sparsity` entry, else the model-wide (already
    checked) schedule."""
    value = layer_sparsity.get(layer.name)
    if value is None:
        return schedule
    if isinstance(value, PruningSchedule):
        return value
    return schedule.with_target(value)


def check_names_exist(model, skip_layers: tuple, layer_sparsity: dict) -> None:
    """Raises ValueError for a layer name in `skip_layers`/`layer_sparsity` that isn't in model."""
    names = {layer.name for layer in _keras_graph.sublayers(model)}
    for argument, given in (
        ("skip_layers", [s for s in skip_layers if isinstance(s, str)]),
        ("layer_sparsity", list(layer_sparsity)),
    ):
        unknown = sorted(set(given) - names)
        if unknown:
            raise ValueError(
                f"Invalid value for argument `{argument}`: no layer named {unknown} in model "
                f"'{model.name}'. Expected names among: {sorted(names)}"
            )


def describe_layers(model, limit: int = 8) -> str:
    """'name (Class), ...' for error messages."""
    layers = _keras_graph.sublayers(model)
    text = ", ".join(f"'{layer.name}' ({type(layer).__name__})" for layer in layers[:limit])
    if len(layers) > limit:
        text += f", ... ({len(layers)} layers)"
    return text or "no layers"
