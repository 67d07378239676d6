"""`QuantizeWrapper`: a weighted layer (plus a folded batch norm and a fused activation)
computed exactly as TFLite's int8 kernel will compute it.
"""

import keras
import tensorflow as tf

from tfslim.quantization import activations as acts
from tfslim.quantization.quantizers import ActivationQuantizer, fake_quant_weights

# Layer class -> per-channel axis of the kernel (None: per-tensor).
WEIGHTED_LAYERS = {
    "Dense": None,
    "Conv1D": -1,
    "Conv2D": -1,
    "DepthwiseConv2D": -1,
    "SeparableConv2D": -1,
    # TFLite stores transposed-conv kernels as (out, kh, kw, in); the converter cannot move a
    # per-channel axis through that transpose, so (like tfmot) these are per tensor.
    "Conv2DTranspose": None,
}


def _in_xla_function() -> bool:
    """Whether the graph being traced is compiled by XLA (`jit_compile=True`).

    XLA's dynamic padder rejects `FusedBatchNormGradV3` on a batch of unknown size (the last,
    partial batch of a `tf.data` pipeline), and XLA fuses the plain moments ops anyway.
    """
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - private module moved: keep the fused path.
        return False
    return control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph())


def _depthwise_quant(kernel, training):
    """Per-channel quantization of a (kh, kw, in, mult) kernel over its in*mult channels."""
    # Static shapes where known: an unknown channel count downstream stops grappler from
    # fusing the batch norm and ReLU that follow a depthwise convolution.
    shape = kernel.shape.as_list() if kernel.shape.is_fully_defined() else tf.shape(kernel)
    flat = tf.reshape(kernel, [shape[0], shape[1], 1, -1])
    return tf.reshape(fake_quant_weights(flat, axis=-1, training=training), shape)


@keras.saving.register_keras_serializable(package="tfslim")
class QuantizeWrapper(keras.layers.Layer):
    """Quantization-aware version of a Dense or convolution layer.

    The wrapped layer's kernel is fake-quantized like TFLite's int8 kernels (per channel for
    convolutions, per tensor for Dense). A following `BatchNormalization` is folded into the
    kernel and bias: during training the batch statistics normalise the output (synchronised
    across replicas) while the folded, quantized kernel uses the moving statistics; once the
    batch norm is frozen the layer computes exactly the deployed
    `conv(x, quant(kernel * scale)) + folded_bias`. ReLU/ReLU6 are fused before the output
    quantizer; sigmoid/tanh/softmax/hard swish get a quantized input and their own output range.

    Args:
        layer: keras.layers.Layer. A Dense, Conv1D, Conv2D, DepthwiseConv2D, SeparableConv2D
            or Conv2DTranspose layer with a linear activation, channels-last.
        batch_norm: keras.layers.BatchNormalization or `None`. A batch norm applied to the
            layer's output, to fold. Defaults to `None`.
        activation: str. Activation applied after the (folded) layer. Defaults to `"linear"`.
        ema_decay: float. Decay of the activation range moving averages. Defaults to `0.99`.
        quantize_output: bool. Whether to quantize the output. `False` when only a
            concatenation reads it: TFLite's int8 CONCATENATION keeps one scale for its inputs
            and output, and the converter gives a tensor read only by it the concatenation's
            scale, so the concatenation's quantizer is the one the int8 kernel applies (only
            with a linear, ReLU or ReLU6 activation). Defaults to `True`.
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(
        self,
        layer,
        *,
        batch_norm=None,
        activation: str = "linear",
        ema_decay: float = 0.99,
        quantize_output: bool = True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(layer, dict):
            layer = keras.saving.deserialize_keras_object(layer)
        if isinstance(batch_norm, dict):
            batch_norm = keras.saving.deserialize_keras_object(batch_norm)
        cls = type(layer).__name__
        if cls not in WEIGHTED_LAYERS:
            raise ValueError(
                f"Invalid value for argument `layer`. Expected one of {sorted(WEIGHTED_LAYERS)}. "
                f"Received: layer={layer.name!r} of class {cls}"
            )
        if acts.activation_name(layer.activation) != "linear":
            raise ValueError(
                "Invalid value for argument `layer`. Expected a layer with a linear activation "
                f"(pass the activation as `activation`). Received: layer={layer.name!r} with "
                f"activation={acts.activation_name(layer.activation)}"
            )
        if not acts.is_supported(activation):
            raise ValueError(
                f"Invalid value for argument `activation`. Expected one of {acts.SUPPORTED} "
                f"or 'leaky_relu(<slope>)'. Received: activation={activation}"
            )
        if not isinstance(quantize_output, bool) or (
            not quantize_output and (activation not in acts.FUSABLE or cls == "Conv1D")
        ):
            raise ValueError(
                "Invalid value for argument `quantize_output`. Expected a bool, and `True` "
                "unless the activation is linear, relu or relu6 and the layer is not a Conv1D "
                f"(their int8 output range is their own). Received: quantize_output="
                f"{quantize_output!r} with activation={activation!r} on a {cls}"
            )
        self.layer = layer
        self.batch_norm = batch_norm
        self.activation = activation
        self.ema_decay = float(ema_decay)
        self.quantize_output = quantize_output
        self.kind = cls
        fixed = acts.fixed_range(activation)
        self.output_quantizer = None
        if quantize_output:
            self.output_quantizer = ActivationQuantizer(
                ema_decay=ema_decay,
                fixed_range=fixed,
                nonnegative=acts.is_nonnegative(activation),
                name="output_quantizer",
            )
        self.pre_activation_quantizer = None
        # The converter leaves a TRANSPOSE_CONV with a fused ReLU and no (or an all-zero)
        # bias in float: quantized before the ReLU, it is an int8 TRANSPOSE_CONV and RELU.
        # A folded batch norm's bias is computed, so that one fuses.
        unfusable = cls == "Conv2DTranspose" and batch_norm is None and activation != "linear"
        if activation not in acts.FUSABLE or unfusable:
            self.pre_activation_quantizer = ActivationQuantizer(
                ema_decay=ema_decay, name="pre_activation_quantizer"
            )
        self.depthwise_quantizer = None
        if cls == "SeparableConv2D":
            self.depthwise_quantizer = ActivationQuantizer(
                ema_decay=ema_decay, name="depthwise_quantizer"
            )

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        output_shape = self.layer.compute_output_shape(input_shape)
        if self.batch_norm is not None:
            if not self.batch_norm.built:
                self.batch_norm.build(output_shape)
            if self._bias() is not None:
                # A bias before batch norm adds nothing to train: batch statistics cancel
                # it, and once they are frozen its gradient is a scaled copy of beta's. It
                # stays in the folded bias (and shifts the moving mean) with its value.
                self.layer.bias.trainable = False
            self.bn_frozen = self.add_weight(
                name="bn_frozen",
                shape=(),
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
        if self.output_quantizer is not None:
            self.output_quantizer.build(output_shape)
        if self.pre_activation_quantizer is not None:
            self.pre_activation_quantizer.build(output_shape)
        if self.depthwise_quantizer is not None:
            self.depthwise_quantizer.build(None)

    # Kernel handling per layer kind -----------------------------------------------------

    def _bn_scale(self):
        bn = self.batch_norm
        inv = tf.math.rsqrt(tf.convert_to_tensor(bn.moving_variance) + bn.epsilon)
        return inv * bn.gamma if bn.scale else inv

    def _scaled_quant_kernel(self, scale, training, *, unfold=False):
        """Returns the kernel with the per-output-channel `scale` applied, fake-quantized.

        `training` (a Python bool) selects the cheaper straight-through gradient; the values
        are the same. With `unfold`, returns `q(kernel * scale) / scale` instead: it computes
        the unfolded output `conv(x, q(kernel * scale)) / scale` without a pass over the
        (much larger) output tensor.
        """
        layer = self.layer
        kernel = tf.convert_to_tensor(
            layer.pointwise_kernel if self.kind == "SeparableConv2D" else layer.kernel
        )
        if self.kind == "Conv1D":
            # TFLite runs Conv1D as a 2D convolution on a (1, k, in, out) kernel; quantizing
            # after that reshape keeps the per-channel axis where the converter expects it.
            kernel = kernel[None]
        unscaled = kernel
        if scale is not None:
            if self.kind == "DepthwiseConv2D":
                static = kernel.shape.is_fully_defined()
                scale = tf.reshape(scale, kernel.shape[2:] if static else tf.shape(kernel)[2:])
            elif self.kind == "Conv2DTranspose":
                scale = scale[:, None]
            kernel = kernel * scale
        if self.kind == "DepthwiseConv2D":
            quantized = _depthwise_quant(kernel, training)
        else:
            quantized = fake_quant_weights(
                kernel, axis=WEIGHTED_LAYERS[self.kind], training=training
            )
        if not unfold:
            return quantized
        # A zero scale (gamma = 0) zeroes its channel, which batch norm maps to beta anyway.
        unfolded = tf.math.divide_no_nan(quantized, scale)
        # The straight-through estimator treats q(k * s) / s as k, so the gradient is the
        # identity to the float kernel and nothing to the scale: gamma is then trained
        # through the batch norm alone, as in float training, and the graph skips the
        # division's gradient.
        return unscaled + tf.stop_gradient(unfolded - unscaled)

    def _linear(self, x, kernel, training):
        """The layer's op without bias."""
        layer = self.layer
        if self.kind == "Dense":
            return keras.ops.matmul(x, kernel)
        common = dict(strides=layer.strides, padding=layer.padding, data_format="channels_last")
        if self.kind == "Conv1D":
            y = keras.ops.conv(
                keras.ops.expand_dims(x, 1),  # A slice `x[:, None]` stays in the int8 graph.
                kernel,
                strides=(1, layer.strides[0]),
                padding=layer.padding,
                dilation_rate=(1, layer.dilation_rate[0]),
                data_format="channels_last",
            )
            return y  # (batch, 1, steps, channels): squeezed after quantization, see call.
        if self.kind == "Conv2D":
            return keras.ops.conv(x, kernel, dilation_rate=layer.dilation_rate, **common)
        if self.kind == "DepthwiseConv2D":
            return keras.ops.depthwise_conv(x, kernel, dilation_rate=layer.dilation_rate, **common)
        if self.kind == "Conv2DTranspose":
            return keras.ops.conv_transpose(
                x,
                kernel,
                output_padding=layer.output_padding,
                dilation_rate=layer.dilation_rate,
                **common,
            )
        # SeparableConv2D: depthwise, quantized intermediate tensor, then pointwise 1x1 conv.
        depthwise = _depthwise_quant(tf.convert_to_tensor(layer.depthwise_kernel), training is True)
        y = keras.ops.depthwise_conv(x, depthwise, dilation_rate=layer.dilation_rate, **common)
        y = self.depthwise_quantizer(y, training=training)
        return keras.ops.conv(y, kernel, strides=1, padding="valid", data_format="channels_last")

    def _bias(self):
        if self.layer.use_bias:
            return tf.convert_to_tensor(self.layer.bias)
        return None

    # Forward pass -------------------------------------------------------------------------

    def call(self, inputs, training=None):
        x = tf.cast(inputs, "float32")
        bias = self._bias()
        if self.batch_norm is None:
            y = self._linear(x, self._scaled_quant_kernel(None, training is True), training)
            if bias is not None:
                y = tf.nn.bias_add(y, bias)
            y = self._fused_activation(y)
        else:
            y = self._folded_call(x, bias, training)
        if self.pre_activation_quantizer is not None:
            y = self.pre_activation_quantizer(y, training=training)
            y = acts.apply_activation(self.activation, y)
        if self.output_quantizer is not None:
            y = self.output_quantizer(y, training=training)
        if self.kind == "Conv1D":
            # Bias, batch norm, activation and range act on the 2D-conv layout TFLite uses,
            # so the converter fuses them into one int8 CONV_2D; dropping the extra axis only
            # after quantization keeps that op integer (a slice before it left it float).
            y = keras.ops.squeeze(y, axis=1)
        return y

    def _fused_activation(self, y):
        """The activation, if it takes the layer's output unquantized (ReLU, ReLU6, linear).

        Applied right where `y` is made (inside a batch-norm branch too), so grappler fuses it
        into the convolution or the batch norm. An activation with its own input range
        (sigmoid, tanh, ...) is applied after that range's quantizer instead, in `call`.
        """
        if self.pre_activation_quantizer is not None:
            return y
        return acts.apply_activation(self.activation, y)

    def _folded_call(self, x, bias, training):
        bn = self.batch_norm
        scale = self._bn_scale()
        if not (training and bn.trainable) or self._traced_bn_frozen():
            # The deployed arithmetic: conv(x, q(kernel * scale)) + folded_bias.
            beta = tf.convert_to_tensor(bn.beta) if bn.center else 0.0
            folded_bias = beta - tf.convert_to_tensor(bn.moving_mean) * scale
            if bias is not None:
                folded_bias = folded_bias + bias * scale
            kernel = self._scaled_quant_kernel(scale, training is True)
            y = tf.nn.bias_add(self._linear(x, kernel, training), folded_bias)
            return self._fused_activation(y)
        # Unfrozen: the same quantized folded kernel, unfolded, so batch statistics normalise
        # the layer's float output while the weights see the deployed rounding.
        unfolded = self._scaled_quant_kernel(scale, True, unfold=True)
        raw = self._linear(x, unfolded, training)
        normalized, batch_mean, batch_var = self._batch_normalize(raw, bias)
        momentum = bn.momentum
        bn.moving_mean.assign(bn.moving_mean * momentum + batch_mean * (1.0 - momentum))
        bn.moving_variance.assign(bn.moving_variance * momentum + batch_var * (1.0 - momentum))
        return self._fused_activation(normalized)

    def _traced_bn_frozen(self) -> bool:
        """The `bn_frozen` flag as a Python bool, read when the training step is traced.

        Choosing the arithmetic at trace time keeps a `tf.cond` (about 10% of a QAT step)
        out of the step. A traced step checks that the flag still has the value it was
        traced with, so flipping the variable by hand fails loudly instead of training in the
        wrong mode; `set_batch_norm_frozen` (and `FreezeQuantization`) retrace `fit`'s step.
        """
        with tf.init_scope():
            value = self.bn_frozen.numpy()
        # Empty while the step that creates the variable is first traced: it starts at 0.
        frozen = bool(value.size and value > 0.5)
        if not tf.executing_eagerly():
            tf.debugging.Assert(
                tf.equal(tf.convert_to_tensor(self.bn_frozen) > 0.5, frozen),
                [
                    f"QuantizeWrapper {self.name!r}: `bn_frozen` changed after this training "
                    f"step was traced with bn_frozen={float(frozen)}. Change it with "
                    "tfslim.quantization.set_batch_norm_frozen(model), which retraces "
                    "model.fit's step, or retrace your own tf.function."
                ],
            )
        return frozen

    def _batch_normalize(self, raw, bias):
        """Batch norm of the unfolded output `raw + bias` with batch statistics.

        Returns (normalized output, batch mean, biased batch variance). Under a distribution
        strategy the statistics are synchronised across replicas (like
        SyncBatchNormalization), so the folded statistics stay identical on every replica.
        """
        normalized, batch_mean, batch_var = self._batch_normalize_centered(raw)
        if bias is not None:
            # Normalising with batch statistics cancels a per-channel bias exactly, so it only
            # shifts the mean; adding it to the (large) output tensor would cost a pass over
            # it plus a reduction for a gradient that is zero.
            batch_mean = batch_mean + bias
        return normalized, batch_mean, batch_var

    def _batch_normalize_centered(self, raw):
        bn = self.batch_norm
        channels = raw.shape[-1]
        gamma = tf.convert_to_tensor(bn.gamma) if bn.scale else tf.ones([channels])
        beta = tf.convert_to_tensor(bn.beta) if bn.center else tf.zeros([channels])
        rank = len(raw.shape)
        if tf.distribute.has_strategy() or rank not in (2, 3, 4) or _in_xla_function():
            axes = list(range(rank - 1))
            has_strategy = tf.distribute.has_strategy()
            batch_mean, batch_var = keras.ops.moments(raw, axes, synchronized=has_strategy)
            factor = gamma * tf.math.rsqrt(batch_var + bn.epsilon)
            return raw * factor + (beta - batch_mean * factor), batch_mean, batch_var
        # One fused kernel (and one fused gradient) instead of a dozen elementwise ops.
        shape = tf.shape(raw)
        raw4 = tf.reshape(raw, [shape[0], 1, -1, channels]) if rank < 4 else raw
        out, batch_mean, unbiased_var = tf.compat.v1.nn.fused_batch_norm(
            raw4, gamma, beta, epsilon=bn.epsilon, is_training=True
        )
        count = tf.cast(tf.size(raw) // channels, "float32")
        batch_var = unbiased_var * ((count - 1.0) / tf.maximum(count, 1.0))
        if rank < 4:
            # Only around a reshape: one between the batch norm and a ReLU stops grappler
            # from fusing the two.
            out = tf.reshape(out, shape)
        return out, batch_mean, batch_var

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "layer": keras.saving.serialize_keras_object(self.layer),
                "batch_norm": (
                    None
                    if self.batch_norm is None
                    else keras.saving.serialize_keras_object(self.batch_norm)
                ),
                "activation": self.activation,
                "ema_decay": self.ema_decay,
                "quantize_output": self.quantize_output,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**dict(config))
