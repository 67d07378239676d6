"""Quantization-aware training for Keras 3 models that deploy as fully-int8 TFLite."""

from tfslim._deployment import deployed_graph
from tfslim.quantization.batch_norm import QuantizeBatchNormalization
from tfslim.quantization.callbacks import (
    FreezeQuantization,
    activation_ranges,
    set_batch_norm_frozen,
    set_quantizers_frozen,
)
from tfslim.quantization.finetune import quantize_and_finetune
from tfslim.quantization.quantize import float_layers, is_quantized_model, quantize_model
from tfslim.quantization.quantize_activation import QuantizeActivation, QuantizePReLU
from tfslim.quantization.quantize_wrapper import QuantizeWrapper
from tfslim.quantization.quantizers import ActivationQuantizer, RoundToInputGrid
from tfslim.quantization.rescaling import QuantizeRescaling
from tfslim.quantization.transformer import (
    QuantizeEinsumDense,
    QuantizeEmbedding,
    QuantizeLayerNormalization,
    QuantizeMultiHeadAttention,
)

__all__ = [
    "ActivationQuantizer",
    "RoundToInputGrid",
    "FreezeQuantization",
    "activation_ranges",
    "deployed_graph",
    "quantize_and_finetune",
    "set_batch_norm_frozen",
    "set_quantizers_frozen",
    "QuantizeActivation",
    "QuantizeBatchNormalization",
    "QuantizeEinsumDense",
    "QuantizeEmbedding",
    "QuantizeLayerNormalization",
    "QuantizeMultiHeadAttention",
    "QuantizePReLU",
    "QuantizeRescaling",
    "QuantizeWrapper",
    "float_layers",
    "is_quantized_model",
    "quantize_model",
]
