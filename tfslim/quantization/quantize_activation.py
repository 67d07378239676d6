"""`QuantizeActivation` and `QuantizePReLU`: standalone activations as their TFLite int8
kernels compute them."""

import keras
import tensorflow as tf

from tfslim.quantization import activations as acts
from tfslim.quantization.quantizers import ActivationQuantizer


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeActivation(keras.layers.Layer):
    """Applies an activation to an (already quantized) tensor and quantizes its output.

    Replaces `Activation`, `ReLU`, `LeakyReLU`, `ELU` layers and `keras.ops` activations
    (`keras.ops.sigmoid(x)`, ...) whose producer could not absorb them. The output range is the
    one TFLite's kernel fixes (sigmoid, tanh, softmax, hard sigmoid) or an observed one. ELU
    stays a float kernel between its int8 input and output (see
    `tfslim.quantization.activations`).

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


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizePReLU(keras.layers.Layer):
    """A `PReLU` as TFLite's int8 PRELU kernel computes it.

    The input is already quantized (by the layer producing it). The trainable slopes `alpha`
    are rounded as the converter stores them, per tensor and symmetrically: int8 in
    [-127, 127] with scale `max(|alpha|) / 127`, zero point 0 (a straight-through gradient
    trains the float slopes). The output range is observed. The layer computes
    `relu(x) + (-alpha) * relu(-x)`, the form the converter fuses into one PRELU (Keras's own
    `relu(x) - alpha * relu(-x)` stays NEG, RELU, MUL and SUB in float).

    Args:
        layer: keras.layers.PReLU. The float layer, whose `alpha` (with its initializer,
            regularizer, constraint and `shared_axes`) this layer trains.
        ema_decay: float. Decay of the output range moving average. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).

    Example:

    >>> import numpy as np
    >>> layer = QuantizePReLU(keras.layers.PReLU(alpha_initializer="ones"))
    >>> y = layer(np.array([[-2.0, 3.0]], "float32"), training=True)
    >>> [round(float(v), 3) for v in y[0]]
    [-2.0, 3.0]
    """

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if type(layer).__name__ != "PReLU":
            raise ValueError(
                "Invalid value for argument `layer`. Expected a keras.layers.PReLU. Received: "
                f"layer={getattr(layer, 'name', layer)!r} of class {type(layer).__name__}"
            )
        self.layer = layer
        self.ema_decay = float(ema_decay)
        self.output_quantizer = ActivationQuantizer(ema_decay=ema_decay, name="output_quantizer")

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        self.output_quantizer.build(input_shape)

    def quantized_alpha(self, training=False):
        """The slopes on the int8 grid the converter stores them on.

        Plain arithmetic, not a fake-quant op: the frozen graph folds it into a constant
        already on its grid, which the converter fuses into an int8 PRELU (and quantizes
        again to the same values); a fake-quant op on the slopes leaves the PRELU float.
        """
        alpha = tf.convert_to_tensor(self.layer.alpha)
        scale = tf.stop_gradient(tf.reduce_max(tf.abs(alpha)) / 127.0)
        rounded = tf.round(tf.math.divide_no_nan(alpha, scale)) * scale
        if not training:
            return rounded
        return alpha + tf.stop_gradient(rounded - alpha)

    def call(self, inputs, training=None):
        x = tf.cast(inputs, "float32")
        alpha = self.quantized_alpha(training=training is True)
        y = tf.nn.relu(x) + (-alpha) * tf.nn.relu(-x)
        return self.output_quantizer(y, training=training)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {"layer": keras.saving.serialize_keras_object(self.layer), "ema_decay": self.ema_decay}
        )
        return config
