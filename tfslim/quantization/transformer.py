"""Transformer-encoder layers (`Embedding`, `LayerNormalization`, `MultiHeadAttention`,
`EinsumDense`) as the TFLite int8 kernels the converter emits for them compute them.

Each replacement quantizes every tensor the converter turns into an int8 op's output:

- `Embedding`: a GATHER from the table, which keeps the output's scale (the converter rounds
  the table to it), so one quantizer follows the lookup.
- `LayerNormalization`: MEAN, SUB, MUL (the square), MEAN, ADD (epsilon), RSQRT, MUL, then
  MUL by gamma and ADD of beta. TFLite has no fused int8 layer-norm kernel; written this way
  every step has one (in LiteRT and TFLite Micro).
- `MultiHeadAttention`: the query, key, value and output projections become int8
  FULLY_CONNECTED ops (kernels quantized per tensor, the query's scaled by 1/sqrt(key_dim)),
  the two attention products int8 BATCH_MATMUL, the softmax an int8 SOFTMAX on its fixed
  output grid.
- `EinsumDense`: one int8 FULLY_CONNECTED (or BATCH_MATMUL), its kernel quantized per tensor,
  the bias added in int32 and a ReLU or ReLU6 fused, so one quantizer follows it.
"""

import keras
import tensorflow as tf

from tfslim import _keras_graph
from tfslim.quantization.quantizers import (
    FIXED_OUTPUT_RANGES,
    ActivationQuantizer,
    fake_quant_weights,
)


def _quantized_operand(value, training):
    """A trained per-tensor MUL/ADD operand (gamma, beta) on its int8 grid, as the converter
    stores it: range [min(v, 0), max(v, 0)]. In training with a straight-through gradient;
    otherwise the bare fake-quant op, whose range the converter reads."""
    value = tf.convert_to_tensor(value)
    low = tf.stop_gradient(tf.minimum(tf.reduce_min(value), 0.0))
    high = tf.stop_gradient(tf.maximum(tf.reduce_max(value), 0.0))
    high = tf.maximum(high, low + 1e-8)
    quantized = tf.quantization.fake_quant_with_min_max_vars(value, low, high, num_bits=8)
    if not training:
        return quantized
    return value + tf.stop_gradient(quantized - value)


def _deserialize(layer):
    if isinstance(layer, dict):
        return keras.saving.deserialize_keras_object(layer)
    return layer


# EinsumDense activations the int8 FULLY_CONNECTED fuses (others need their own layer).
EINSUM_ACTIVATIONS = {"linear": None, "relu": tf.nn.relu, "relu6": tf.nn.relu6}


def einsum_activation(layer) -> str:
    """The name of an EinsumDense's activation (`"linear"` when it has none)."""
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear"
    name = keras.activations.serialize(activation)
    return name if isinstance(name, str) else getattr(activation, "__name__", repr(activation))


def _check_class(layer, expected):
    if type(layer).__name__ != expected:
        raise ValueError(
            f"Invalid value for argument `layer`. Expected a keras.layers.{expected}. "
            f"Received: layer={getattr(layer, 'name', layer)!r} of class {type(layer).__name__}"
        )


def _project(dense, x, training, scale=None):
    """An EinsumDense projection with its kernel (times `scale`) quantized per tensor."""
    kernel = tf.convert_to_tensor(dense.kernel)
    bias = None if dense.bias is None else tf.convert_to_tensor(dense.bias)
    if scale is not None:
        kernel = kernel * scale
        bias = None if bias is None else bias * scale
    y = tf.einsum(dense.equation, x, fake_quant_weights(kernel, training=training))
    return y if bias is None else y + bias


class _Quantized(keras.layers.Layer):
    """Holds the wrapped Keras layer and creates named activation quantizers."""

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        super().__init__(**kwargs)
        self.layer = layer
        self.ema_decay = float(ema_decay)

    def _quantizer(self, name, fixed=None):
        return ActivationQuantizer(ema_decay=self.ema_decay, fixed_range=fixed, name=name)

    def build(self, *shapes):
        for layer in _keras_graph.sublayers(self, recursive=False):
            if isinstance(layer, ActivationQuantizer) and not layer.built:
                layer.build(None)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"layer": keras.saving.serialize_keras_object(self.layer), "ema_decay": self.ema_decay}
        )
        return config


class _QuantizedOneInput(_Quantized):
    """A wrapped layer of one input, whose output shape is the wrapped layer's."""

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        super().build(input_shape)

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeEmbedding(_QuantizedOneInput):
    """Quantization-aware `Embedding`: the lookup's output rounded to int8.

    Args:
        layer: keras.layers.Embedding. Without `mask_zero` (TFLite has no masks).
        ema_decay: float. Decay of the output range moving average. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        layer = _deserialize(layer)
        _check_class(layer, "Embedding")
        if layer.mask_zero:
            raise ValueError(
                "Invalid value for argument `layer`. Expected an Embedding without "
                f"`mask_zero` (an int8 model carries no masks). Received: layer={layer.name!r} "
                "with mask_zero=True"
            )
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self.output_quantizer = self._quantizer("output_quantizer")

    def call(self, inputs, training=None):
        table = tf.convert_to_tensor(self.layer.embeddings)
        y = tf.gather(table, tf.cast(inputs, "int32"))
        return self.output_quantizer(y, training=training)


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeLayerNormalization(_Quantized):
    """Quantization-aware `LayerNormalization` over the last axis, one int8 op per step.

    Args:
        layer: keras.layers.LayerNormalization. Normalising the last axis only, without
            `rms_scaling`.
        ema_decay: float. Decay of the activation range moving averages. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    _STEPS = ("mean", "centered", "square", "variance", "shifted", "rsqrt", "normalized")

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        layer = _deserialize(layer)
        _check_class(layer, "LayerNormalization")
        if layer.rms_scaling:
            raise ValueError(
                "Invalid value for argument `layer`. Expected a LayerNormalization without "
                f"rms_scaling. Received: layer={layer.name!r} with rms_scaling=True"
            )
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self.steps = {step: self._quantizer(f"{step}_quantizer") for step in self._STEPS}
        self.scaled_quantizer = self._quantizer("scaled_quantizer") if layer.scale else None
        self.output_quantizer = self._quantizer("output_quantizer") if layer.center else None

    def build(self, input_shape):
        axes = [self.layer.axis] if isinstance(self.layer.axis, int) else list(self.layer.axis)
        if [a % len(input_shape) for a in axes] != [len(input_shape) - 1]:
            raise ValueError(
                "Invalid value for argument `layer`. Expected a LayerNormalization of the last "
                f"axis. Received: layer={self.layer.name!r} with axis={self.layer.axis} on "
                f"inputs of shape {input_shape}"
            )
        if not self.layer.built:
            self.layer.build(input_shape)
        super().build(input_shape)

    def call(self, inputs, training=None):
        q = {step: lambda t, s=step: self.steps[s](t, training=training) for step in self._STEPS}
        x = tf.cast(inputs, "float32")
        mean = q["mean"](tf.reduce_mean(x, axis=-1, keepdims=True))
        centered = q["centered"](x - mean)
        variance = q["variance"](
            tf.reduce_mean(q["square"](centered * centered), axis=-1, keepdims=True)
        )
        shifted = q["shifted"](variance + self.layer.epsilon)
        y = q["normalized"](centered * q["rsqrt"](tf.math.rsqrt(shifted)))
        if self.layer.scale:
            y = self.scaled_quantizer(
                y * _quantized_operand(self.layer.gamma, training), training=training
            )
        if self.layer.center:
            y = self.output_quantizer(
                y + _quantized_operand(self.layer.beta, training), training=training
            )
        return y

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeMultiHeadAttention(_Quantized):
    """Quantization-aware `MultiHeadAttention` (self- or cross-attention, no masks) on
    (batch, sequence, features) inputs.

    Args:
        layer: keras.layers.MultiHeadAttention. Attending over the sequence axis (the
            default), no gate and no sliding window.
        ema_decay: float. Decay of the activation range moving averages. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        layer = _deserialize(layer)
        _check_class(layer, "MultiHeadAttention")
        config = layer.get_config()
        axes = config["attention_axes"]
        if (
            (axes is not None and tuple(axes) != (1,))
            or config["use_gate"]
            or config.get("sliding_window") is not None
        ):
            raise ValueError(
                "Invalid value for argument `layer`. Expected a MultiHeadAttention attending over "
                "axis 1, with use_gate=False and no sliding_window. Received: "
                f"layer={layer.name!r} with attention_axes={config['attention_axes']}, "
                f"use_gate={config['use_gate']}, sliding_window={config.get('sliding_window')}"
            )
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        for name in ("query", "key", "value", "scores", "attended", "output"):
            setattr(self, f"{name}_quantizer", self._quantizer(f"{name}_quantizer"))
        self.probabilities_quantizer = self._quantizer(
            "probabilities_quantizer", FIXED_OUTPUT_RANGES["softmax"]
        )

    def build(self, query_shape, value_shape=None, key_shape=None):
        if len(query_shape) != 3:
            raise ValueError(
                "Invalid value for argument `query`. Expected a (batch, sequence, features) "
                f"tensor. Received: query of shape {query_shape}"
            )
        if not self.layer.built:
            value_shape = query_shape if value_shape is None else value_shape
            self.layer.build(query_shape, value_shape, key_shape)
        super().build(query_shape)

    def call(self, query, value=None, key=None, training=None):
        mha = self.layer
        value = query if value is None else value
        key = value if key is None else key
        inputs = [tf.cast(t, "float32") for t in (query, key, value)]
        train = training is True  # The cheaper straight-through gradient; same values.
        # The 1/sqrt(key_dim) scale goes into the query projection: one FULLY_CONNECTED.
        q = self.query_quantizer(
            _project(mha._query_dense, inputs[0], train, mha._inverse_sqrt_key_dim),
            training=training,
        )
        k = self.key_quantizer(_project(mha._key_dense, inputs[1], train), training=training)
        v = self.value_quantizer(_project(mha._value_dense, inputs[2], train), training=training)
        scores = self.scores_quantizer(
            tf.einsum(mha._dot_product_equation, k, q), training=training
        )
        probabilities = self.probabilities_quantizer(
            tf.nn.softmax(scores, axis=-1), training=training
        )
        if training and mha._dropout > 0.0:
            probabilities = mha._dropout_layer(probabilities, training=training)
        attended = self.attended_quantizer(
            tf.einsum(mha._combine_equation, probabilities, v), training=training
        )
        return self.output_quantizer(
            _project(mha._output_dense, attended, train), training=training
        )

    def compute_output_shape(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        return self.layer.compute_output_shape(query_shape, value_shape, key_shape)


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeEinsumDense(_QuantizedOneInput):
    """Quantization-aware `EinsumDense`: kernel rounded to int8 per tensor, output to int8.

    Args:
        layer: keras.layers.EinsumDense. Not quantized by Keras itself, with no activation or a
            ReLU / ReLU6 (what the int8 FULLY_CONNECTED fuses).
        ema_decay: float. Decay of the output range moving average. Defaults to `0.99`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(self, layer, *, ema_decay: float = 0.99, **kwargs):
        layer = _deserialize(layer)
        _check_class(layer, "EinsumDense")
        activation = einsum_activation(layer)
        if activation not in EINSUM_ACTIVATIONS:
            raise ValueError(
                "Invalid value for argument `layer`. Expected an EinsumDense without an "
                "activation or with relu / relu6 (the ones int8 FULLY_CONNECTED fuses; put "
                f"another in its own Activation layer). Received: layer={layer.name!r} with "
                f"activation={activation!r}"
            )
        if getattr(layer, "quantization_mode", None):
            raise ValueError(
                "Invalid value for argument `layer`. Expected a float EinsumDense. Received: "
                f"layer={layer.name!r} quantized by Keras ({layer.quantization_mode!r})"
            )
        super().__init__(layer, ema_decay=ema_decay, **kwargs)
        self.output_quantizer = self._quantizer("output_quantizer")

    def call(self, inputs, training=None):
        dense = self.layer
        y = _project(dense, tf.cast(inputs, "float32"), training is True)
        activation = EINSUM_ACTIVATIONS[einsum_activation(dense)]
        if activation is not None:
            y = activation(y)
        return self.output_quantizer(y, training=training)
