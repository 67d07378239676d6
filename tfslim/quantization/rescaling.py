"""`QuantizeRescaling`: an affine preprocessing step (`Rescaling`, `Normalization`) as TFLite's
int8 MUL and ADD kernels compute it.
"""

import keras
import numpy as np
import tensorflow as tf

from tfslim.quantization.quantizers import ActivationQuantizer


def quantized_constant(value):
    """A constant rounded to the per-tensor int8 grid of [min(v, 0), max(v, 0)].

    A scalar is exact on that grid. The converter keeps the range of the fake-quant op, so the
    int8 MUL/ADD operand holds exactly these values.
    """
    value = np.asarray(value, "float32")
    low, high = min(float(value.min()), 0.0), max(float(value.max()), 0.0)
    if low == high:
        high = 1.0
    return tf.quantization.fake_quant_with_min_max_args(
        tf.constant(value), min=low, max=high, num_bits=8
    )


def _as_config(value):
    value = np.asarray(value, "float32")
    if value.ndim == 0 or np.all(value == value.flat[0]):
        return float(value.flat[0])
    return [float(v) for v in value.reshape(-1)]


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeRescaling(keras.layers.Layer):
    """Quantization-aware `x * scale + offset`, per tensor or per channel (last axis).

    `Rescaling` and `Normalization` layers (and a `Rescaling` followed by a `Normalization`,
    as `keras.applications` preprocess) become this one layer: an int8 MUL by the scale and,
    when the offset is not zero, an int8 ADD, each with a quantized output. An identity
    (scale 1, offset 0) computes nothing, so the input quantizer alone remains.

    Args:
        scale: float or list of floats. Multiplier (one per channel for a list).
            Defaults to `1.0`.
        offset: float or list of floats. Added after scaling. Defaults to `0.0`.
        ema_decay: float. Decay of the activation range moving averages. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, *, scale=1.0, offset=0.0, ema_decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.scale = _as_config(scale)
        self.offset = _as_config(offset)
        self.ema_decay = float(ema_decay)
        self.identity = self.scale == 1.0 and self.offset == 0.0
        self.scaled_quantizer = None
        if self.offset != 0.0 and self.scale != 1.0:
            self.scaled_quantizer = ActivationQuantizer(
                ema_decay=ema_decay, name="scaled_quantizer"
            )
        self.output_quantizer = None
        if not self.identity:
            self.output_quantizer = ActivationQuantizer(
                ema_decay=ema_decay, name="output_quantizer"
            )

    def build(self, input_shape):
        for quantizer in (self.scaled_quantizer, self.output_quantizer):
            if quantizer is not None:
                quantizer.build(input_shape)

    def call(self, inputs, training=None):
        y = tf.cast(inputs, "float32")
        if self.identity:
            return y
        if self.scale != 1.0:
            y = y * quantized_constant(self.scale)
        if self.scaled_quantizer is not None:
            y = self.scaled_quantizer(y, training=training)
        if self.offset != 0.0:
            y = y + quantized_constant(self.offset)
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "offset": self.offset, "ema_decay": self.ema_decay})
        return config


def affine_of(layer):
    """Returns `(scale, offset)` of a `Rescaling` or `Normalization` layer, or `None`.

    Per-channel values must lie along the last axis; `Normalization` must be adapted (or
    given its statistics) and not inverted.
    """
    cls = type(layer).__name__
    if cls == "Rescaling":
        scale, offset = np.asarray(layer.scale, "float32"), np.asarray(layer.offset, "float32")
    elif cls == "Normalization":
        if layer.invert or not layer.built:
            return None
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), "float32")
        std = np.sqrt(np.asarray(keras.ops.convert_to_numpy(layer.variance), "float32"))
        scale = 1.0 / np.maximum(std, keras.config.epsilon())
        offset = -mean * scale
    else:
        return None
    for value in (scale, offset):
        if value.ndim and int(np.prod(value.shape[:-1])) != 1:
            return None  # Not a per-channel vector on the last axis.
    return scale.reshape(-1) if scale.ndim else scale, offset.reshape(-1) if offset.ndim else offset
