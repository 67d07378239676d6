"""Quantization-aware training for Keras 3 models that deploy as fully-int8 TFLite."""

from tfslim.quantization.quantize import float_layers, is_quantized_model, quantize_model
from tfslim.quantization.quantize_wrapper import QuantizeWrapper
from tfslim.quantization.quantizers import ActivationQuantizer

__all__ = [
    "ActivationQuantizer",
    "QuantizeWrapper",
    "float_layers",
    "is_quantized_model",
    "quantize_model",
]
