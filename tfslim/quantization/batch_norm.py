"""`QuantizeBatchNormalization`: a batch norm that follows no convolution or Dense layer, as
TFLite's int8 MUL and ADD kernels compute it.
"""

import keras
import tensorflow as tf

from tfslim.quantization.quantizers import ActivationQuantizer


def _fake_quant_vector(v):
    """`v` rounded to the per-tensor int8 grid of [min(v, 0), max(v, 0)] (straight through)."""
    low = tf.stop_gradient(tf.minimum(tf.reduce_min(v), 0.0))
    high = tf.stop_gradient(tf.maximum(tf.reduce_max(v), low + 1e-8))
    return tf.quantization.fake_quant_with_min_max_vars(v, low, high, num_bits=8)


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeBatchNormalization(keras.layers.Wrapper):
    """Quantization-aware `BatchNormalization` (channels last) that no layer absorbed.

    Deployed as an int8 MUL by `gamma / sqrt(var + eps)` and an int8 ADD of
    `beta - mean * scale`, both per channel; the product and the output are quantized. While
    training (with the batch norm trainable) the batch statistics give the scale and offset
    and update the moving statistics, as in Keras's own layer; otherwise the moving ones do.

    Args:
        layer: keras.layers.BatchNormalization. The batch norm, normalising the last axis.
        ema_decay: float. Decay of the activation range moving averages. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        super().__init__(layer, **kwargs)
        if type(self.layer).__name__ != "BatchNormalization":
            raise ValueError(
                "Invalid value for argument `layer`. Expected a BatchNormalization layer. "
                f"Received: layer={self.layer.name!r} of class {type(self.layer).__name__}"
            )
        self.ema_decay = float(ema_decay)
        self.scaled_quantizer = ActivationQuantizer(ema_decay=ema_decay, name="scaled_quantizer")
        self.output_quantizer = ActivationQuantizer(ema_decay=ema_decay, name="output_quantizer")

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.scaled_quantizer.build(input_shape)
        self.output_quantizer.build(input_shape)
        self.built = True

    def call(self, inputs, training=None):
        bn = self.layer
        x = tf.cast(inputs, "float32")
        channels = x.shape[-1]
        gamma = tf.convert_to_tensor(bn.gamma) if bn.scale else tf.ones([channels])
        beta = tf.convert_to_tensor(bn.beta) if bn.center else tf.zeros([channels])
        if training and bn.trainable:
            axes = list(range(len(x.shape) - 1))
            mean, var = keras.ops.moments(x, axes, synchronized=tf.distribute.has_strategy())
            momentum = bn.momentum
            bn.moving_mean.assign(bn.moving_mean * momentum + mean * (1.0 - momentum))
            bn.moving_variance.assign(bn.moving_variance * momentum + var * (1.0 - momentum))
        else:
            mean = tf.convert_to_tensor(bn.moving_mean)
            var = tf.convert_to_tensor(bn.moving_variance)
        scale = gamma * tf.math.rsqrt(var + bn.epsilon)
        offset = beta - mean * scale
        y = self.scaled_quantizer(x * _fake_quant_vector(scale), training=training)
        y = y + _fake_quant_vector(offset)
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"ema_decay": self.ema_decay})
        return config
