"""`QuantizeRescaling`: a `Rescaling` layer as TFLite's int8 MUL and ADD kernels compute it."""

import keras
import tensorflow as tf

from tfslim.quantization.quantizers import ActivationQuantizer


def _const(value: float):
    """A scalar constant on the int8 grid of [min(v, 0), max(v, 0)] (v itself is exact).

    The converter only quantizes a MUL/ADD whose constant operand carries a range.
    """
    low, high = min(value, 0.0), max(value, 0.0)
    if low == high:
        high = 1.0
    return tf.quantization.fake_quant_with_min_max_args(
        tf.constant(value, "float32"), min=low, max=high, num_bits=8
    )


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeRescaling(keras.layers.Layer):
    """Quantization-aware `x * scale + offset` with scalar `scale` and `offset`.

    Args:
        scale: float. Multiplier. Defaults to `1.0`.
        offset: float. Added after scaling. Defaults to `0.0`.
        ema_decay: float. Decay of the activation range moving averages. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(
        self, *, scale: float = 1.0, offset: float = 0.0, ema_decay: float = 0.99, **kwargs
    ):
        super().__init__(**kwargs)
        self.scale = float(scale)
        self.offset = float(offset)
        self.ema_decay = float(ema_decay)
        self.scaled_quantizer = None
        if self.offset != 0.0:
            self.scaled_quantizer = ActivationQuantizer(
                ema_decay=ema_decay, name="scaled_quantizer"
            )
        self.output_quantizer = ActivationQuantizer(ema_decay=ema_decay, name="output_quantizer")

    def build(self, input_shape):
        if self.scaled_quantizer is not None:
            self.scaled_quantizer.build(input_shape)
        self.output_quantizer.build(input_shape)

    def call(self, inputs, training=None):
        y = tf.cast(inputs, "float32") * _const(self.scale)
        if self.scaled_quantizer is not None:
            y = self.scaled_quantizer(y, training=training) + _const(self.offset)
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"scale": self.scale, "offset": self.offset, "ema_decay": self.ema_decay})
        return config
