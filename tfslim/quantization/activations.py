"""Activation functions as TFLite's int8 kernels see them.

ReLU and ReLU6 fuse into the op that produces their input (conv, dense, add, ...), so only their
output is quantized. Sigmoid, tanh and softmax are separate int8 kernels with a quantized input
and a fixed output range; hard swish is a separate kernel with a free output range.
"""

import keras
import tensorflow as tf

from tfslim.quantization.quantizers import FIXED_OUTPUT_RANGES, attach_logits

# Activations TFLite fuses into the producing op.
FUSABLE = ("linear", "relu", "relu6")
# Activations with their own int8 kernel (input quantized, then output quantized).
STANDALONE = ("sigmoid", "tanh", "softmax", "hard_swish")
SUPPORTED = FUSABLE + STANDALONE

_ALIASES = {"hard_silu": "hard_swish", None: "linear"}


def activation_name(activation) -> str | None:
    """Returns the canonical name of a Keras activation, or `None` if it has no int8 kernel."""
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        name = activation
    else:
        name = getattr(activation, "__name__", None)
        if name is None:
            try:
                name = keras.activations.serialize(activation)
            except (ValueError, TypeError):
                return None
            if isinstance(name, dict):
                name = name.get("config")
    name = _ALIASES.get(name, name)
    return name if name in SUPPORTED else None


def layer_activation_name(layer) -> str | None:
    """Returns the activation a standalone activation layer computes, or `None`."""
    cls = type(layer).__name__
    if cls == "Activation":
        return activation_name(layer.activation)
    if cls == "ReLU":
        if float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            return None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if cls == "Softmax":
        axis = layer.axis if isinstance(layer.axis, int) else None
        return "softmax" if axis == -1 else None
    return None


def apply_activation(name: str, x):
    """Applies the activation `name` with the TF ops the converter maps to TFLite kernels."""
    if name == "linear":
        return x
    if name == "relu":
        return tf.nn.relu(x)
    if name == "relu6":
        return tf.nn.relu6(x)
    if name == "sigmoid":
        return attach_logits(tf.sigmoid(x), x)
    if name == "tanh":
        return tf.tanh(x)
    if name == "softmax":
        return attach_logits(tf.nn.softmax(x, axis=-1), x)
    if name == "hard_swish":
        return x * tf.nn.relu6(x + 3.0) * (1.0 / 6.0)
    raise ValueError(
        f"Invalid value for argument `activation`. Expected one of {SUPPORTED}. "
        f"Received: activation={name}"
    )


def fixed_range(name: str):
    """Returns the output range TFLite imposes on activation `name`, or `None`."""
    return FIXED_OUTPUT_RANGES.get(name)
