"""Facts about a model that several stages need, decided without importing any tfslim package.

The converter needs to know whether a model is quantization-aware (it then converts to int8
without calibration data) and how many of its kernel weights are zero (to choose sparse
encoding); the technique packages and the reports need the same answers. Living here, below
every stage, these facts let the converter take a model and nothing above it.

Layers are recognised by the name they are registered under for saving (`tfslim>QuantizeWrapper`,
`tfslim>ActivationQuantizer`, ...), looked up along each layer's class hierarchy so subclasses
count too, and tfmot's QAT layers by their class names, so neither tfslim.quantization nor
tfmot is imported. This module imports only the standard library and NumPy; Keras is imported
lazily, and only for Keras 3 models.
"""

from collections import Counter

import numpy as np

__all__ = [
    "QAT_LAYERS",
    "TFMOT_QAT_LAYERS",
    "is_qat_model",
    "kernel_zero_fraction",
    "layers_of",
    "registered_names",
    "tfslim_layers",
    "zero_fraction",
]

# A tfslim QAT model holds fake-quant range observers; every quantized layer, input and
# rescaling carries one (`tfslim.quantization.quantizers.ActivationQuantizer`).
QAT_LAYERS = frozenset({"tfslim>ActivationQuantizer"})

# tfmot's QAT layers (tf_keras models), as `tfmot.quantization.keras.quantize_model` builds them.
TFMOT_QAT_LAYERS = frozenset({"QuantizeLayer", "QuantizeWrapper", "QuantizeWrapperV2"})

_PACKAGE_PREFIX = "tfslim>"


def _is_tf_keras(obj) -> bool:
    return any(c.__module__.startswith("tf_keras") for c in type(obj).__mro__)


def layers_of(model) -> list:
    """Every layer inside `model` (nested models, wrapped and wrapper-owned layers included).

    Keras 3 keeps a layer's tracked sub-layers behind `_flatten_layers`, the only walk that
    reaches the quantizers a wrapper owns; tf_keras models expose the same as `submodules`.
    """
    if _is_tf_keras(model):
        return list(getattr(model, "submodules", ()))
    flatten = getattr(model, "_flatten_layers", None)
    if flatten is None:
        return []
    return list(flatten(include_self=False, recursive=True))


def registered_names(layer) -> set[str]:
    """Names under which `layer`'s class and its bases are registered for Keras saving.

    Unregistered classes appear under their plain class name (`Dense`), as Keras names them.
    """
    import keras

    return {keras.saving.get_registered_name(c) for c in type(layer).__mro__ if c is not object}


def tfslim_layers(model) -> dict[str, int]:
    """How many layers of each tfslim class `model` holds, by registered name.

    Returns:
        A dict such as `{"tfslim>ActivationQuantizer": 5, "tfslim>QuantizeWrapper": 2}`, sorted
        by name; empty for a plain Keras model or a tf_keras model.
    """
    if _is_tf_keras(model):
        return {}
    counts = Counter()
    for layer in layers_of(model):
        own = {n for n in registered_names(layer) if n.startswith(_PACKAGE_PREFIX)}
        counts.update(own)
    return dict(sorted(counts.items()))


def is_qat_model(model) -> bool:
    """Whether `model` carries learned fake-quant ranges: a tfslim or a tfmot QAT model.

    Args:
        model: A Keras 3 or tf_keras model; anything else is not a QAT model.

    Returns:
        True for a model made by `tfslim.quantize_model` (also after a `.keras` round trip) or
        by tfmot's `quantize_model` / `quantize_apply`.
    """
    if _is_tf_keras(model):
        classes = (c for layer in layers_of(model) for c in type(layer).__mro__)
        return any(c.__name__ in TFMOT_QAT_LAYERS for c in classes)
    if not hasattr(model, "_flatten_layers"):
        return False
    return any(registered_names(layer) & QAT_LAYERS for layer in layers_of(model))


def zero_fraction(variables) -> float:
    """Fraction of exact zeros over `variables` (0.0 when there are none).

    Args:
        variables: An iterable of Keras / TensorFlow variables or arrays.
    """
    total = zeros = 0
    for variable in variables:
        value = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
        total += value.size
        zeros += value.size - np.count_nonzero(value)
    return float(zeros / total) if total else 0.0


def kernel_zero_fraction(model) -> float:
    """Fraction of exact zeros over `model`'s kernels (its weights of rank >= 2).

    Biases and batch-norm statistics are left out: pruning never zeroes them, and sparse
    encoding only ever applies to kernels.
    """
    return zero_fraction(w for w in model.weights if len(w.shape) >= 2)
