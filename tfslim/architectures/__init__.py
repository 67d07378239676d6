"""Efficient building blocks and the MLPerf Tiny reference models.

Blocks take a KerasTensor and return one (functional API); builders return uncompiled
`keras.Model`s made only of standard Keras layers, so `tfslim.quantize_model`, the
converter and plain `keras.saving.load_model` all handle them.
"""

from tfslim.architectures.blocks import (
    depthwise_separable_block,
    inverted_residual_block,
    make_divisible,
    scale_filters,
    squeeze_excite_block,
)
from tfslim.architectures.digits import build_digits_cnn
from tfslim.architectures.mlperf_tiny import (
    MLPERF_TINY_MODELS,
    ReferenceModel,
    ds_cnn,
    fc_autoencoder,
    mobilenet_v1,
    resnet8,
)
from tfslim.architectures.mnist1d import build_mnist1d_cnn
from tfslim.architectures.sizing import randomize_weights

__all__ = [
    "MLPERF_TINY_MODELS",
    "ReferenceModel",
    "build_digits_cnn",
    "build_mnist1d_cnn",
    "depthwise_separable_block",
    "ds_cnn",
    "fc_autoencoder",
    "inverted_residual_block",
    "make_divisible",
    "mobilenet_v1",
    "randomize_weights",
    "resnet8",
    "scale_filters",
    "squeeze_excite_block",
]
