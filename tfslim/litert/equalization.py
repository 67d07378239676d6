"""Better post-training int8 without training: batch-norm folding, cross-layer equalization
(CLE) and empirical bias correction, applied to a float Keras model before conversion.

Cross-layer equalization follows Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction". For a pair of layers `A -> f -> B` where `f` is positively
homogeneous (`f(x / s) = f(x) / s` for `s > 0`: ReLU, leaky ReLU, identity, max / average
pooling, zero padding, dropout), output channel `i` of `A` is divided by `s_i` and input channel
`i` of `B` multiplied by it, with `s_i = sqrt(r1_i * r2_i) / r2_i` (`r1_i`, `r2_i` the channel's
weight ranges). The float function is unchanged; both ranges become `sqrt(r1_i * r2_i)`, so no
channel is left with a tiny range on a per-tensor grid. Repeating the rescaling over every pair
equalizes a whole depthwise-separable chain.

ReLU6 is not homogeneous (the clip at 6 does not scale). By default pairs joined by a ReLU6 are
skipped, leaving the float model exactly as it was; `relu6_to_relu=True` replaces every ReLU6
by ReLU first, as the paper and AIMET do for MobileNetV2, which changes the float outputs
wherever an activation exceeded 6.

Bias correction: each layer's weights are quantized as TFLite does (symmetric int8, per output
channel for convolutions, per tensor for Dense), and its bias is shifted by the expected output
error `E[W x] - E[Q(W) x]`, where `x` are the layer's inputs in the float model on the
calibration data.

The rewrite walks a Functional graph's nodes through `tfslim._keras_graph`, which holds the
Keras internals that needs; batch-norm folding, and the graph and weight helpers all three
steps share, are in `tfslim.litert.batch_norm_folding`.
"""

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import numpy as np

from tfslim import _keras_graph, _model_facts
from tfslim.litert.batch_norm_folding import (
    _activation_name,
    _assign,
    _channels_last,
    _copy,
    _Facts,
    _graph,
    _kind,
    _out_channels,
    _weighted,
    _weights,
    fold_batch_norm,
)
from tfslim.litert.calibration import calibration_samples

if TYPE_CHECKING:
    import keras

__all__ = ["equalize_model", "fold_batch_norm"]

# Layers between two weighted layers that keep channels apart and commute with a positive
# per-channel scale.
_PASS_THROUGH = (
    "Dropout",
    "Identity",
    "MaxPooling1D",
    "MaxPooling2D",
    "AveragePooling1D",
    "AveragePooling2D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "ZeroPadding1D",
    "ZeroPadding2D",
)
_HOMOGENEOUS_ACTIVATIONS = ("linear", "relu", "leaky_relu")
_CLE_ITERATIONS = 20


# --- Cross-layer equalization ---------------------------------------------------------------


def _homogeneous(layer) -> bool:
    """Whether `layer` between two weighted layers commutes with positive channel scales."""
    kind = _kind(layer)
    if kind in _PASS_THROUGH:
        return _channels_last(layer)
    if kind == "ReLU":
        return layer.max_value is None and float(layer.threshold) == 0.0
    if kind == "LeakyReLU":
        return True
    if kind == "Activation":
        return _activation_name(layer) in _HOMOGENEOUS_ACTIVATIONS
    return False


def _cle_pairs(graph) -> list:
    """(A, B) weighted-layer pairs joined by homogeneous layers only, in graph order."""
    facts = _Facts(graph)
    pairs = []
    for node in facts.nodes:
        first = node.operation
        if not _weighted(first) or _activation_name(first) not in _HOMOGENEOUS_ACTIVATIONS:
            continue
        nxt = facts.next_node(node)
        while nxt is not None and _homogeneous(nxt.operation):
            nxt = facts.next_node(nxt)
        if nxt is not None and _weighted(nxt.operation):
            pairs.append((first, nxt.operation))
    return pairs


def _equalize_pair(first, second) -> float:
    """Rescales one pair in place; returns the largest relative change of a scale."""
    k1, b1 = _weights(first)
    k2, b2 = _weights(second)
    out1 = _out_channels(first, k1)
    r1 = np.abs(out1).reshape(-1, out1.shape[-1]).max(axis=0)
    in2 = np.moveaxis(k2, -2, 0)
    r2 = np.abs(in2).reshape(in2.shape[0], -1).max(axis=1)
    if r1.shape != r2.shape:
        return 0.0  # Channel counts differ (a reshape in between): not a per-channel pair.
    scale = np.ones_like(r1)
    ok = (r1 > 0) & (r2 > 0)
    scale[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
    k1 = (out1 / scale).reshape(k1.shape)
    k2 = np.moveaxis(in2 * scale.reshape(-1, *([1] * (in2.ndim - 1))), 0, -2)
    _assign(first, k1, b1 / scale)
    _assign(second, k2, b2)
    return float(np.max(np.abs(scale - 1.0)))


def _equalize_graph(model) -> int:
    """CLE over every pair of `model` and its nested models; returns the number of pairs."""
    import keras

    graph = _graph(model)
    pairs = _cle_pairs(graph)
    for _ in range(_CLE_ITERATIONS):
        if max((_equalize_pair(a, b) for a, b in pairs), default=0.0) < 1e-6:
            break
    nested = [
        n.operation for n in _keras_graph.nodes(graph) if isinstance(n.operation, keras.Model)
    ]
    return len(pairs) + sum(_equalize_graph(m) for m in nested)


# --- Bias correction ------------------------------------------------------------------------


def quantize_kernel(layer, kernel: np.ndarray) -> np.ndarray:
    """`kernel` on TFLite's symmetric int8 grid: per output channel, per tensor for Dense."""
    if _kind(layer) == "Dense":
        scale = np.full(kernel.shape[-1:], np.abs(kernel).max() / 127.0)
        view = kernel
    else:
        view = _out_channels(layer, kernel)
        scale = np.abs(view).reshape(-1, view.shape[-1]).max(axis=0) / 127.0
    scale = np.where(scale > 0, scale, 1.0)
    return (np.clip(np.round(view / scale), -127, 127) * scale).reshape(kernel.shape)


def _error_layer(layer, error: np.ndarray):
    """A copy of `layer` computing only `error * x` (no bias, no activation)."""
    config = layer.get_config()
    config.update(use_bias=False, activation="linear", name=f"{layer.name}_error")
    probe = type(layer).from_config(config)
    probe.build(layer.input.shape)
    probe.kernel.assign(error.astype("float32"))
    return probe


def _bias_correct_graph(model, x_batches: list) -> int:
    """Corrects every weighted layer's bias in `model` (and nested models) in place."""
    import keras

    graph = _graph(model)
    facts = _Facts(graph)
    targets = [
        n.operation
        for n in facts.nodes
        if id(n.operation) in facts.node_of
        and (
            _weighted(n.operation) and n.operation.use_bias or isinstance(n.operation, keras.Model)
        )
        and len(n.input_tensors) == 1
    ]
    if not targets:
        return 0
    probe_inputs = graph.inputs[0] if len(graph.inputs) == 1 else graph.inputs
    probe = keras.Model(probe_inputs, [facts.node_of[id(t)].input_tensors[0] for t in targets])
    inputs = [[] for _ in targets]
    sums = [None] * len(targets)
    errors = {}
    for t in targets:
        if not isinstance(t, keras.Model):
            kernel = _weights(t)[0]
            errors[id(t)] = _error_layer(t, kernel - quantize_kernel(t, kernel))
    for batch in x_batches:
        values = probe(batch, training=False)
        values = values if isinstance(values, list | tuple) else [values]
        for i, (t, v) in enumerate(zip(targets, values, strict=True)):
            if isinstance(t, keras.Model):
                inputs[i].append(np.asarray(v))
                continue
            shift = np.asarray(errors[id(t)](v)).reshape(-1, t.bias.shape[0])
            total = shift.sum(axis=0, dtype=np.float64)
            sums[i] = (
                (total, len(shift))
                if sums[i] is None
                else (sums[i][0] + total, sums[i][1] + len(shift))
            )
    corrected = 0
    for i, t in enumerate(targets):
        if isinstance(t, keras.Model):
            corrected += _bias_correct_graph(t, inputs[i])
            continue
        total, count = sums[i]
        t.bias.assign((t.bias.numpy() + total / count).astype(t.bias.dtype))
        corrected += 1
    return corrected


# --- Public entry point ---------------------------------------------------------------------


def equalize_model(
    model: "keras.Model",
    calibration_data: "np.ndarray | tuple | list | Iterable | Callable | None" = None,
    *,
    bias_correction: bool = False,
    cross_layer: bool = True,
    relu6_to_relu: bool = False,
    calibration_steps: int = 200,
) -> "keras.Model":
    """Prepares a float model for post-training int8: folds batch norms, equalizes, corrects.

    Steps: batch norms are folded into the layers they follow (`fold_batch_norm`); with
    `cross_layer`, output channel ranges of consecutive weighted layers joined by ReLU (or
    another positively homogeneous layer) are equalized (Nagel et al. 2019), which leaves the
    float outputs unchanged; with `bias_correction`, each weighted layer's bias absorbs the mean
    output shift its int8 weights cause on `calibration_data`. Convert the result with
    `tfslim.convert(..., quantization="int8", calibration_data=...)`, or pass `equalize=True` /
    `bias_correction=True` to `tfslim.convert` to do both at once.

    Args:
        model: keras.Model. A built Sequential or Functional float Keras 3 model (nested
            Sequential / Functional models are handled; not a QAT model).
        calibration_data: Representative inputs (as for `tfslim.convert`): an array, an
            `(x, y)` tuple, a `tf.data.Dataset` or an iterable of batches. Needed for
            `bias_correction`. Defaults to `None`.
        bias_correction: bool. Correct biases for the int8 weight error. Defaults to `False`.
        cross_layer: bool. Run cross-layer equalization. Defaults to `True`.
        relu6_to_relu: bool. Replace ReLU6 by ReLU first so pairs around it are equalized too
            (changes the float outputs where activations exceeded 6). When False, pairs joined
            by a ReLU6 are left alone. Defaults to `False`.
        calibration_steps: int. Maximum number of calibration samples. Defaults to `200`.

    Returns:
        A new float model; `model` is not modified.

    Raises:
        ValueError: for a QAT model, or `bias_correction` without calibration data.
        UnsupportedOpError: for a subclassed model.

    Example:

    >>> import keras, numpy as np, tfslim
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3),
    ...     keras.layers.BatchNormalization(), keras.layers.ReLU(),
    ...     keras.layers.DepthwiseConv2D(3), keras.layers.GlobalAveragePooling2D(),
    ...     keras.layers.Dense(2)])
    >>> x = np.random.rand(16, 8, 8, 3).astype("float32")
    >>> new = tfslim.equalize_model(model, x, bias_correction=True)
    >>> [type(layer).__name__ for layer in new.layers][:2]
    ['Conv2D', 'ReLU']
    """
    import keras

    for name, value in (
        ("bias_correction", bias_correction),
        ("cross_layer", cross_layer),
        ("relu6_to_relu", relu6_to_relu),
    ):
        if not isinstance(value, bool):
            raise TypeError(
                f"Invalid value for argument `{name}`. Expected a bool. Received: {name}={value!r}"
            )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid type for argument `model`. Expected a Keras 3 model. Received: model of "
            f"type {type(model).__name__}"
        )
    if _model_facts.is_qat_model(model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a float model: a quantization-aware "
            "(QAT) model has learned int8 ranges, and equalization or bias correction would "
            f"invalidate them. Received: QAT model {model.name!r}"
        )
    if bias_correction and calibration_data is None:
        raise ValueError(
            "Invalid value for argument `calibration_data`. Bias correction measures each "
            "layer's output shift on representative inputs; expected calibration data. "
            "Received: calibration_data=None"
        )
    graph = _graph(model)
    batches = None
    if bias_correction:
        shapes = [tuple(t.shape[1:]) for t in graph.inputs]
        samples = calibration_samples(calibration_data, shapes, calibration_steps)
        if isinstance(samples[0], list):
            raise ValueError(
                "Invalid value for argument `model`. Bias correction supports models with one "
                f"input. Received: a model with {len(samples[0])} inputs"
            )
        x = np.concatenate(samples)
        batches = [x[i : i + 64] for i in range(0, len(x), 64)]
    new = _copy(model, relu6_to_relu=relu6_to_relu, add_bias=bias_correction)
    if cross_layer:
        _equalize_graph(new)
    if bias_correction:
        _bias_correct_graph(new, batches)
    return new


def prepare_for_conversion(
    model, samples, *, equalize: bool, bias_correction: bool, quantization: str, qat: bool
):
    """`tfslim.convert`'s `equalize` / `bias_correction`: checks them, returns the model to export.

    Args:
        model: The Keras model being converted, or None for a SavedModel directory.
        samples: The validated calibration samples (one per batch), or None.
        equalize: bool. Fold batch norms and run cross-layer equalization.
        bias_correction: bool. Correct biases for the int8 weight error.
        quantization: str. The conversion's quantization mode.
        qat: bool. Whether `model` is a quantization-aware model.
    """
    import keras

    for name, value in (("equalize", equalize), ("bias_correction", bias_correction)):
        if not isinstance(value, bool):
            raise TypeError(
                f"Invalid value for argument `{name}`. Expected a bool. Received: {name}={value!r}"
            )
    name = "equalize" if equalize else "bias_correction"
    if qat:
        raise ValueError(
            f"Invalid value for argument `{name}`. Equalization and bias correction prepare a "
            "float model for post-training quantization; a quantization-aware model has "
            f"learned its int8 ranges. Expected False for a QAT model. Received: {name}=True"
        )
    if quantization not in ("int8", "int16x8"):
        raise ValueError(
            f"Invalid value for argument `{name}` with quantization={quantization!r}. It "
            "needs a calibrated full-integer conversion; expected quantization='int8' or "
            f"'int16x8', or {name}=False. Received: {name}=True"
        )
    if samples is None:
        raise ValueError(
            f"Invalid value for argument `{name}`. It needs `calibration_data` (the float "
            f"model's activations on representative inputs). Received: {name}=True with "
            "calibration_data=None"
        )
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"Invalid value for argument `{name}`. It rewrites a Keras 3 model; expected a "
            "Keras 3 model or .keras file, not a SavedModel directory or tf_keras model. "
            f"Received: {name}=True"
        )
    if isinstance(samples[0], list):  # Several inputs: one array per input.
        data = [np.concatenate(arrays) for arrays in zip(*samples, strict=True)]
    else:
        data = np.concatenate(samples)
    return equalize_model(
        model,
        data,
        bias_correction=bias_correction,
        cross_layer=equalize,
        calibration_steps=len(samples),
    )
