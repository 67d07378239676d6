"""`QuantizeActivation`: a standalone activation as its TFLite int8 kernel computes it."""

import keras
import tensorflow as tf

from tfslim.quantization import activations as acts
from tfslim.quantization.quantizers import ActivationQuantizer


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeActivation(keras.layers.Layer):
    """Applies an activation to an (already quantized) tensor and quantizes its output.

    Replaces `Activation`, `ReLU`, `LeakyReLU`, `ELU` layers and `keras.ops` activations
    (`keras.ops.sigmoid(x)`, ...) whose producer could not absorb them. The output range is the
    one TFLite's kernel fixes (sigmoid, tanh, softmax, hard sigmoid) or an observed one.

    Args:
        activation: str. A name from `tfslim.quantization.activations.SUPPORTED` or
            `"leaky_relu(<slope>)"`.
        ema_decay: float. Decay of the output range moving average. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, activation: str, *, ema_decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if not acts.is_supported(activation):
            raise ValueError(
                f"Invalid value for argument `activation`. Expected one of {acts.SUPPORTED} "
                f"or 'leaky_relu(<slope>)'. Received: activation={activation!r}"
            )
        self.activation = activation
        self.ema_decay = float(ema_decay)
        self.output_quantizer = ActivationQuantizer(
            ema_decay=ema_decay,
            fixed_range=acts.fixed_range(activation),
            nonnegative=acts.is_nonnegative(activation),
            name="output_quantizer",
        )

    def build(self, input_shape):
        self.output_quantizer.build(input_shape)

    def call(self, inputs, training=None):
        y = acts.apply_activation(self.activation, tf.cast(inputs, "float32"))
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"activation": self.activation, "ema_decay": self.ema_decay})
        return config
