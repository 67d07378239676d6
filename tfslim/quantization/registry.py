"""Which Keras layers quantize-aware training covers, and how each maps onto TFLite int8.

Every layer in a model belongs to one of these roles:

- weighted: Dense and convolutions, replaced by a `QuantizeWrapper` (fake-quantized kernel,
  folded batch norm, fused activation, quantized output).
- passthrough: ops whose int8 kernel keeps the input's scale and zero point (max pooling,
  reshapes, padding, nearest upsampling, dropout). They keep their input's range, so no
  quantizer follows them.
- requantize: ops that produce a new range (add, multiply, concatenate, global average
  pooling, rescaling, a batch norm not folded into a layer). A quantizer follows them.
- activation: ReLU/ReLU6/Activation/Softmax layers, fused into their producer where TFLite
  fuses them, otherwise quantized after.
"""

from tfslim.quantization import activations as acts
from tfslim.quantization.quantize_wrapper import WEIGHTED_LAYERS

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
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
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
        "Concatenate",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "Rescaling",
        "BatchNormalization",
    }
)

ACTIVATION = frozenset({"Activation", "ReLU", "Softmax"})

# Ops whose TFLite kernel takes a fused ReLU/ReLU6, so the quantizer goes after the ReLU.
FUSES_RELU = frozenset({"Add", "Subtract", "Multiply", "Concatenate"})

SUPPORTED_LAYERS = tuple(sorted(set(WEIGHTED_LAYERS) | PASSTHROUGH | REQUANTIZE | ACTIVATION))


def role(layer) -> str | None:
    """Returns the role of `layer` ("weighted", "passthrough", ...) or `None` if unsupported."""
    cls = type(layer).__name__
    module = type(layer).__module__
    if not module.startswith("keras."):
        return None
    data_format = getattr(layer, "data_format", "channels_last")
    if data_format not in (None, "channels_last"):
        return None
    if cls in WEIGHTED_LAYERS:
        if getattr(layer, "padding", None) == "causal":
            return None
        return "weighted" if acts.activation_name(layer.activation) is not None else None
    if cls in PASSTHROUGH:
        if cls in ("UpSampling2D", "Resizing") and layer.interpolation not in (
            "nearest",
            "bilinear",
        ):
            return None
        if cls == "Resizing" and (layer.crop_to_aspect_ratio or layer.pad_to_aspect_ratio):
            return None
        return "passthrough"
    if cls == "Rescaling":
        scalar = all(isinstance(v, (int, float)) for v in (layer.scale, layer.offset))
        return "requantize" if scalar else None
    if cls in REQUANTIZE:
        return "requantize"
    if cls in ACTIVATION:
        return "activation" if acts.layer_activation_name(layer) is not None else None
    return None
