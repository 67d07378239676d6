"""Which Keras layers and `keras.ops` operations quantization-aware training covers, and how
each maps onto TFLite int8.

Every operation in a model's graph (a layer call or a `keras.ops` call such as `x + 3.0`)
belongs to one of these roles:

- weighted: Dense and convolutions, replaced by a `QuantizeWrapper` (fake-quantized kernel,
  folded batch norm, fused activation, quantized output).
- passthrough: ops whose int8 kernel keeps the input's scale and zero point (max pooling,
  reshapes, transposes, slices, padding, nearest upsampling, dropout). They keep their input's
  range, so no quantizer follows them; average pooling and bilinear resizing, which compute
  values between the input's steps, are rounded back onto its grid (`RoundToInputGrid`).
- requantize: ops that produce a new range (add, subtract, multiply, concatenate, mean, global
  average pooling). A quantizer follows them.
- affine: `Rescaling` and `Normalization`, a `QuantizeRescaling` (int8 MUL and ADD).
- batch_norm: a `BatchNormalization` no layer absorbed, a `QuantizeBatchNormalization`.
- activation: activation layers and `keras.ops` activations, fused into their producer where
  TFLite fuses them, otherwise quantized after.
- transformer: `Embedding`, `EinsumDense`, `LayerNormalization` and `MultiHeadAttention`, each
  replaced by its `tfslim.quantization.transformer` layer (one quantizer per int8 op it
  converts to).
- prelu: `PReLU`, a `QuantizePReLU` (int8 PRELU with slopes quantized as the converter stores
  them, observed output range).
"""

import keras

from tfslim import _keras_graph
from tfslim.quantization import activations as acts
from tfslim.quantization.quantize_wrapper import WEIGHTED_LAYERS
from tfslim.quantization.rescaling import affine_of
from tfslim.quantization.transformer import EINSUM_ACTIVATIONS, einsum_activation

PASSTHROUGH = frozenset(
    {
        "MaxPooling1D",
        "MaxPooling2D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "AveragePooling1D",
        "AveragePooling2D",
        "Reshape",
        "Flatten",
        "Permute",
        "Cropping1D",
        "Cropping2D",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "GaussianNoise",
        "GaussianDropout",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "UpSampling1D",
        "UpSampling2D",
        "Resizing",
        "Identity",
    }
)

REQUANTIZE = frozenset(
    {
        "Add",
        "Subtract",
        "Multiply",
        "Average",
        "Maximum",
        "Minimum",
        "Concatenate",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
    }
)

ACTIVATION = frozenset({"Activation", "ReLU", "LeakyReLU", "Softmax", "ELU"})

# keras.ops operations whose int8 kernel stores a constant tensor operand as int8 (on its own
# range widened to hold zero, see `quantizers.constant_on_int8_grid`).
CONSTANT_OPERAND_OPS = frozenset({"Add", "Subtract", "Multiply"})

# keras.ops operations (class names in keras.src.ops) by role.
PASSTHROUGH_OPS = frozenset(
    {
        "Reshape",
        "Transpose",
        "Squeeze",
        "ExpandDims",
        "GetItem",
        "Slice",
        "Max",
        "Amax",
        "MaxPool",
        "Pad",
        "Tile",
        "BroadcastTo",
        "Flip",
        "Ravel",
        # MINIMUM/MAXIMUM with constants keep the scale (TFLite fuses a clip into its
        # producer's output range).
        "Clip",
        "Identity",
        "Copy",
        # AVERAGE_POOL_2D keeps its input's scale: its output is rounded onto the input's
        # grid (`averages_between_steps`), not given a range of its own (which the
        # converter meets with a QUANTIZE after it: two roundings where QAT has one).
        "AveragePool",
    }
)
REQUANTIZE_OPS = frozenset(
    {
        "Add",
        "Subtract",
        "Multiply",
        "Maximum",
        "Minimum",
        "Concatenate",
        "Stack",
        "Mean",
        "Average",
        "Negative",
        "Abs",
        "Absolute",
        "Square",
        "Matmul",
    }
)
# Division becomes an int8 MUL only by a constant: TFLite has no int8 DIV kernel.
DIVIDE_OPS = frozenset({"Divide", "TrueDivide"})

# Ops whose TFLite kernel takes a fused ReLU/ReLU6, so the quantizer goes after the ReLU.
FUSES_RELU = frozenset({"Add", "Subtract", "Multiply", "Concatenate", "Divide", "TrueDivide"})

AFFINE = frozenset({"Rescaling", "Normalization"})

TRANSFORMER = frozenset({"Embedding", "EinsumDense", "LayerNormalization", "MultiHeadAttention"})

PRELU = frozenset({"PReLU"})

SUPPORTED_LAYERS = tuple(
    sorted(
        set(WEIGHTED_LAYERS)
        | PASSTHROUGH
        | REQUANTIZE
        | ACTIVATION
        | AFFINE
        | TRANSFORMER
        | PRELU
        | {"BatchNormalization"}
    )
)
SUPPORTED_OPS = tuple(sorted(PASSTHROUGH_OPS | REQUANTIZE_OPS | DIVIDE_OPS))


def is_layer(operation) -> bool:
    """Whether `operation` is a layer (as opposed to a `keras.ops` operation node)."""
    return isinstance(operation, keras.layers.Layer)


def activation_of(operation) -> str | None:
    """The activation an activation layer or `keras.ops` activation computes, or `None`."""
    if is_layer(operation):
        return acts.layer_activation_name(operation)
    return acts.op_activation_name(operation)


# Average pooling layers and ops: int8 AVERAGE_POOL_2D, which rounds ties half away from the
# int8 zero on every LiteRT kernel set.
AVERAGE_POOLING = frozenset({"AveragePooling1D", "AveragePooling2D", "AveragePool"})


def averages_between_steps(layer) -> bool:
    """Whether a pass-through layer or `keras.ops` operation computes values between its
    input's int8 steps, which its int8 kernel (AVERAGE_POOL_2D, RESIZE_BILINEAR) rounds onto
    that grid: average pooling and bilinear resizing (nearest resizing and max pooling pick
    input values)."""
    cls = type(layer).__name__
    if cls in AVERAGE_POOLING:
        return True
    return cls in ("Resizing", "UpSampling2D") and layer.interpolation == "bilinear"


def averages_one_value(operation, shape) -> bool:
    """Whether a global average pooling or `keras.ops.mean` of an input of `shape` reduces
    only axes of size 1 (the squeeze of a 1x1 map): an identity, which the converter may
    drop together with the rounding onto a range of its own (a MEAN followed by a reshape
    back to 1x1, as squeeze-and-excite writes it, leaves no op at all), so its output keeps
    its input's grid."""
    cls = type(operation).__name__
    if shape is None:
        return False
    if cls in ("GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D"):
        rank = len(shape)
        first = getattr(operation, "data_format", "channels_last") == "channels_first"
        axes = range(2, rank) if first else range(1, rank - 1)
    elif not is_layer(operation) and cls == "Mean" and operation.axis is not None:
        axis = operation.axis
        axes = [axis] if isinstance(axis, int) else list(axis)
        axes = [a % len(shape) for a in axes]
        if 0 in axes:
            return False
    else:
        return False
    return all(shape[a] == 1 for a in axes)


def role(operation) -> str | None:
    """Returns the role of a layer or operation ("weighted", ...) or `None` if unsupported."""
    return _role_and_reason(operation)[0]


def reason(operation) -> str:
    """Why `operation` is unsupported, naming its class, name and the cause."""
    return _role_and_reason(operation)[1] or ""


def _role_and_reason(operation):
    cls = type(operation).__name__
    if not is_layer(operation):
        return _op_role(operation)
    what = f"{cls} {operation.name!r}"
    if not _keras_graph.is_keras_operation(operation):
        return None, f"{what}: a custom layer (not a Keras layer tfslim knows)"
    data_format = getattr(operation, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        return None, f"{what} with data_format={data_format!r} (only channels_last)"
    if cls in WEIGHTED_LAYERS:
        if getattr(operation, "padding", None) == "causal":
            return None, f"{what} with padding='causal'"
        if acts.activation_name(operation.activation) is None:
            return None, f"{what} with activation={acts.describe(operation.activation)}"
        return "weighted", None
    if cls in PASSTHROUGH:
        if cls in ("UpSampling2D", "Resizing") and operation.interpolation not in (
            "nearest",
            "bilinear",
        ):
            return None, f"{what} with interpolation={operation.interpolation!r}"
        if cls == "Resizing" and (operation.crop_to_aspect_ratio or operation.pad_to_aspect_ratio):
            return None, f"{what} cropping or padding to an aspect ratio"
        return "passthrough", None
    if cls in AFFINE:
        if affine_of(operation) is None:
            return None, f"{what}: not per tensor or per last-axis channel (or not adapted)"
        return "affine", None
    if cls in TRANSFORMER:
        problem = _transformer_problem(operation)
        return (None, f"{what} {problem}") if problem else ("transformer", None)
    if cls in PRELU:
        return "prelu", None
    if cls == "BatchNormalization":  # The rewriter checks that it normalises the last axis.
        return "batch_norm", None
    if cls in REQUANTIZE:
        return "requantize", None
    if cls in ACTIVATION:
        if acts.layer_activation_name(operation) is None:
            if cls == "ELU":
                return None, f"{what} with alpha={operation.alpha} (TFLite's ELU has alpha 1)"
            detail = getattr(operation, "activation", None)
            return None, f"{what} computing {acts.describe(detail) if detail else 'this'}"
        return "activation", None
    return None, f"{what}: no int8 TFLite kernel tfslim trains for"


def _transformer_problem(layer) -> str | None:
    """What keeps a transformer layer from its int8 form, or `None`."""
    cls = type(layer).__name__
    if cls == "Embedding" and layer.mask_zero:
        return "with mask_zero=True (an int8 model carries no masks)"
    if cls == "LayerNormalization":
        if layer.rms_scaling:
            return "with rms_scaling=True"
        axes = [layer.axis] if isinstance(layer.axis, int) else list(layer.axis)
        if len(axes) != 1 or (axes[0] != -1 and not layer.built):
            return f"with axis={layer.axis} (only the last axis)"
    if cls == "EinsumDense":
        activation = einsum_activation(layer)
        if activation not in EINSUM_ACTIVATIONS:
            return (
                f"with activation={activation!r} (int8 FULLY_CONNECTED fuses only relu and "
                "relu6: put it in its own Activation layer)"
            )
        if getattr(layer, "quantization_mode", None):
            return f"already quantized by Keras ({layer.quantization_mode!r})"
    if cls == "MultiHeadAttention":
        config = layer.get_config()
        # A built layer records the default (the sequence axis) as (1,).
        axes = config.get("attention_axes")
        if axes is not None and tuple(axes) != (1,):
            return f"with attention_axes={axes!r} (only attention over the sequence axis 1)"
        if config.get("use_gate"):
            return "with use_gate=True"
        if config.get("sliding_window") is not None:
            return f"with sliding_window={config['sliding_window']!r}"
    return None


def _op_role(op):
    cls = type(op).__name__
    what = f"keras.ops operation {cls} {op.name!r}"
    if not _keras_graph.is_keras_operation(op):
        return None, f"{what}: a custom operation"
    if acts.op_activation_name(op) is not None:
        return "activation", None
    if cls in PASSTHROUGH_OPS:
        return "passthrough", None
    if cls in REQUANTIZE_OPS:
        return "requantize", None
    if cls in DIVIDE_OPS:
        return "divide", None
    return None, f"{what}: no int8 TFLite kernel tfslim trains for"
