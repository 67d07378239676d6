"""Activation functions as TFLite's int8 kernels see them.

ReLU and ReLU6 fuse into the op that produces their input (conv, dense, add, ...), so only their
output is quantized. The others are separate int8 kernels with a quantized input and a fixed
(sigmoid, tanh, softmax, hard sigmoid) or observed (hard swish, swish, GELU, leaky ReLU)
output range. GELU has an int8 LiteRT kernel but none in TFLite Micro (the `mcu` check names it).
Swish is LOGISTIC followed by MUL and hard sigmoid ADD (with a fused ReLU6)
followed by MUL, so their intermediate tensors are rounded to the fixed ranges the LOGISTIC
and RELU6 outputs take.

ELU is trained with a quantized input and an observed output range too. TF's converter
declares its ELU op without quantized types, so it writes DEQUANTIZE, ELU, QUANTIZE; the
converter stage then closes that island into the int8 ELU LiteRT and TFLite Micro both have
(`tfslim.litert.integer_islands`), so such a model is fully integer for `mcu` too.

An activation is named by a string: `"leaky_relu"` has Keras's default slope 0.2, other
slopes are written `"leaky_relu(0.1)"`; `"gelu"` is the exact GELU, `"gelu_tanh"` its tanh
approximation; `"elu"` is ELU with Keras's default alpha 1 (the only one TFLite's ELU computes).
"""

import re

import keras
import tensorflow as tf

from tfslim.quantization.quantizers import FIXED_OUTPUT_RANGES, attach_logits

# Activations TFLite fuses into the producing op.
FUSABLE = ("linear", "relu", "relu6")
# Activations with their own int8 kernel(s) (input quantized, then output quantized).
STANDALONE = (
    "sigmoid",
    "tanh",
    "softmax",
    "hard_swish",
    "hard_sigmoid",
    "swish",
    "gelu",
    "gelu_tanh",
    "leaky_relu",
)
# Activations the converter keeps float between int8 tensors (see the module docstring): their
# input and output are quantized, so only the activation itself runs in float.
FLOAT_KERNEL = ("elu",)
SUPPORTED = FUSABLE + STANDALONE + FLOAT_KERNEL

_ALIASES = {"hard_silu": "hard_swish", "silu": "swish", None: "linear"}
_LEAKY = re.compile(r"leaky_relu\((-?[0-9.eE+-]+)\)")
_DEFAULT_SLOPE = 0.2  # keras.activations.leaky_relu's default.

# The output range the RELU6 inside hard sigmoid (relu6(x + 3) / 6) is rounded to.
_RELU6_RANGE = (0.0, 6.0)


def is_supported(name) -> bool:
    """Whether the canonical activation `name` has int8 kernels tfslim trains for."""
    return name in SUPPORTED or (isinstance(name, str) and _LEAKY.fullmatch(name) is not None)


def leaky_name(slope: float) -> str:
    """The canonical name of a leaky ReLU with negative slope `slope`."""
    slope = float(slope)
    return "leaky_relu" if slope == _DEFAULT_SLOPE else f"leaky_relu({slope!r})"


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
    return name if is_supported(name) else None


def describe(activation) -> str:
    """The activation as a user wrote it, for messages."""
    if isinstance(activation, str) or activation is None:
        return repr(activation)
    return repr(getattr(activation, "__name__", type(activation).__name__))


def layer_activation_name(layer) -> str | None:
    """Returns the activation a standalone activation layer computes, or `None`."""
    cls = type(layer).__name__
    if cls == "Activation":
        return activation_name(layer.activation)
    if cls == "ReLU":
        if float(layer.threshold) != 0.0:
            return None
        slope = float(layer.negative_slope)
        if slope != 0.0:
            return leaky_name(slope) if layer.max_value is None and slope > 0 else None
        if layer.max_value is None:
            return "relu"
        return "relu6" if float(layer.max_value) == 6.0 else None
    if cls == "LeakyReLU":
        return leaky_name(layer.negative_slope)
    if cls == "Softmax":
        axis = layer.axis if isinstance(layer.axis, int) else None
        return "softmax" if axis == -1 else None
    if cls == "ELU":
        return "elu" if float(layer.alpha) == 1.0 else None
    return None


def op_activation_name(op) -> str | None:
    """Returns the activation a `keras.ops` operation (`keras.ops.sigmoid`, ...) computes."""
    cls = type(op).__name__
    simple = {
        "Relu": "relu",
        "Relu6": "relu6",
        "Sigmoid": "sigmoid",
        "Tanh": "tanh",
        "Silu": "swish",
        "HardSilu": "hard_swish",
        "HardSigmoid": "hard_sigmoid",
    }
    if cls in simple:
        return simple[cls]
    if cls == "Gelu":
        return "gelu_tanh" if op.approximate else "gelu"
    if cls == "LeakyRelu":
        return leaky_name(op.negative_slope)
    if cls == "Softmax":
        return "softmax" if op.axis in (-1, None) else None
    if cls == "Elu":
        return "elu" if float(op.alpha) == 1.0 else None
    return None


def _fixed(x, low_high):
    return tf.quantization.fake_quant_with_min_max_args(
        x, min=low_high[0], max=low_high[1], num_bits=8
    )


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
    if name == "hard_sigmoid":
        # ADD with a fused RELU6, then MUL: the ADD's int8 output has the fixed range [0, 6].
        return _fixed(tf.nn.relu6(x + 3.0), _RELU6_RANGE) * (1.0 / 6.0)
    if name == "swish":
        # LOGISTIC (int8 output on its fixed grid), then MUL with the activation's input.
        return x * _fixed(tf.sigmoid(x), FIXED_OUTPUT_RANGES["sigmoid"])
    if name in ("gelu", "gelu_tanh"):
        return tf.nn.gelu(x, approximate=name == "gelu_tanh")
    if name == "elu":
        return tf.nn.elu(x)
    if name == "leaky_relu":
        return tf.nn.leaky_relu(x, alpha=_DEFAULT_SLOPE)
    match = _LEAKY.fullmatch(name) if isinstance(name, str) else None
    if match:
        return tf.nn.leaky_relu(x, alpha=float(match.group(1)))
    raise ValueError(
        f"Invalid value for argument `activation`. Expected one of {SUPPORTED} or "
        f"'leaky_relu(<slope>)'. Received: activation={name}"
    )


# Hard sigmoid's output is a MUL by 1/6 of the RELU6 output: always in [0, 1].
_FIXED = {**FIXED_OUTPUT_RANGES, "hard_sigmoid": (0.0, 1.0)}


def fixed_range(name: str):
    """Returns the output range TFLite imposes on (or tfslim fixes for) `name`, or `None`."""
    return _FIXED.get(name)


def is_nonnegative(name: str) -> bool:
    """Whether the activation's output is never negative (its range observer skips the min)."""
    return name in ("relu", "relu6")
