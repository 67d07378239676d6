"""Which layers `quantize_model(skip=...)` keeps float, and the tf_keras route to tfmot."""

import re
from collections.abc import Callable, Iterable

from tfslim._compat import import_tfmot, is_tf_keras

__all__ = ["all_layer_names", "is_tf_keras_model", "quantize_tf_keras", "skip_predicate"]


def is_tf_keras_model(model) -> bool:
    if not is_tf_keras(model):
        return False
    import tf_keras

    return isinstance(model, tf_keras.Model)


def quantize_tf_keras(model, skip):
    """Routes a legacy tf_keras model to tfmot's `quantize_model` (same call, same converter)."""
    qk = import_tfmot().quantization.keras
    if skip is None:
        return qk.quantize_model(model)
    skip_fn = skip_predicate(skip, all_layer_names(model))

    def annotate(layer):
        if skip_fn(layer) or type(layer).__name__ == "InputLayer":
            return layer.__class__.from_config(layer.get_config())
        return qk.quantize_annotate_layer(layer)

    import tf_keras

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    return qk.quantize_apply(annotated)


def all_layer_names(model) -> set[str]:
    """Names of every layer and `keras.ops` operation of `model`, nested models included."""
    names = set()
    for op in getattr(model, "operations", None) or model.layers:
        names.add(op.name)
        if hasattr(op, "layers"):
            names |= all_layer_names(op)
    return names


def skip_predicate(skip, names: set[str]) -> Callable:
    if skip is None:
        return lambda layer: False
    if callable(skip) and not isinstance(skip, re.Pattern):
        return lambda layer: bool(skip(layer))
    items = [skip] if isinstance(skip, (str, re.Pattern)) else skip
    if not isinstance(items, Iterable) or not all(isinstance(s, (str, re.Pattern)) for s in items):
        raise TypeError(
            "Invalid value for argument `skip`. Expected layer names, regular expressions or a "
            f"callable taking a layer and returning a bool. Received: skip={skip!r}"
        )
    patterns = [re.compile(re.escape(s) if s in names else s) for s in items]
    for item, pattern in zip(items, patterns, strict=True):
        if not any(pattern.fullmatch(n) for n in names):
            raise ValueError(
                f"Invalid value for argument `skip`. Expected names or patterns matching layers "
                f"of the model. Received: skip entry {item!r}, which matches no layer "
                f"(layers: {sorted(names)})"
            )
    return lambda layer: any(p.fullmatch(layer.name) for p in patterns)
