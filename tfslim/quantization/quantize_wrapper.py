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


def _nonzero(scale):
    """`scale` with entries of magnitude below 1e-12 replaced by 1e-12 (safe to divide by)."""
    return tf.where(tf.abs(scale) < 1e-12, tf.ones_like(scale) * 1e-12, scale)


def _depthwise_quant(kernel, training):
    """Per-channel quantization of a (kh, kw, in, mult) kernel over its in*mult channels."""
    shape = tf.shape(kernel)
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
        **kwargs: Base layer keyword arguments (`name`, ...).
    """

    def __init__(
        self,
        layer,
        *,
        batch_norm=None,
        activation: str = "linear",
        ema_decay: float = 0.99,
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
        if activation not in acts.SUPPORTED:
            raise ValueError(
                f"Invalid value for argument `activation`. Expected one of {acts.SUPPORTED}. "
                f"Received: activation={activation}"
            )
        self.layer = layer
        self.batch_norm = batch_norm
        self.activation = activation
        self.ema_decay = float(ema_decay)
        self.kind = cls
        fixed = acts.fixed_range(activation)
        self.output_quantizer = ActivationQuantizer(
            ema_decay=ema_decay, fixed_range=fixed, name="output_quantizer"
        )
        self.pre_activation_quantizer = None
        if activation in acts.STANDALONE:
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
            self.bn_frozen = self.add_weight(
                name="bn_frozen",
                shape=(),
                initializer="zeros",
                trainable=False,
                aggregation="only_first_replica",
            )
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

    def _scaled_quant_kernel(self, scale, training, *, with_unfolded=False):
        """Returns the kernel(s) with the per-output-channel `scale` applied, fake-quantized.

        `training` (a Python bool) selects the cheaper straight-through gradient; the values
        are the same. With `with_unfolded`, returns `(quantized, quantized / scale)`: the
        second kernel computes the unfolded output `conv(x, q(k * scale)) / scale` without a
        pass over the (much larger) output tensor.
        """
        layer = self.layer
        kernel = tf.convert_to_tensor(
            layer.pointwise_kernel if self.kind == "SeparableConv2D" else layer.kernel
        )
        if scale is not None:
            if self.kind == "DepthwiseConv2D":
                scale = tf.reshape(scale, tf.shape(kernel)[2:])
            elif self.kind == "Conv2DTranspose":
                scale = scale[:, None]
            kernel = kernel * scale
        if self.kind == "DepthwiseConv2D":
            quantized = _depthwise_quant(kernel, training)
        else:
            if self.kind == "Conv1D":
                # TFLite runs Conv1D as a 2D convolution on a (1, k, in, out) kernel;
                # quantizing after that reshape keeps the per-channel axis where the
                # converter expects it.
                kernel = kernel[None]
            quantized = fake_quant_weights(
                kernel, axis=WEIGHTED_LAYERS[self.kind], training=training
            )
        if with_unfolded:
            return quantized, quantized / _nonzero(scale)
        return quantized

    def _linear(self, x, kernel, training):
        """The layer's op without bias."""
        layer = self.layer
        if self.kind == "Dense":
            return keras.ops.matmul(x, kernel)
        common = dict(strides=layer.strides, padding=layer.padding, data_format="channels_last")
        if self.kind == "Conv1D":
            y = keras.ops.conv(
                x[:, None],
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
        else:
            y = self._folded_call(x, bias, training)
        y = self._activate(y, training)
        if self.kind == "Conv1D":
            # Bias, batch norm, activation and range act on the 2D-conv layout TFLite uses,
            # so the converter fuses them into one int8 CONV_2D; dropping the extra axis only
            # after quantization keeps that op integer (a slice before it left it float).
            y = keras.ops.squeeze(y, axis=1)
        return y

    def _folded_call(self, x, bias, training):
        bn = self.batch_norm
        scale = self._bn_scale()
        beta = tf.convert_to_tensor(bn.beta) if bn.center else 0.0
        folded_bias = beta - tf.convert_to_tensor(bn.moving_mean) * scale
        if bias is not None:
            folded_bias = folded_bias + bias * scale

        def deployed():
            kernel = self._scaled_quant_kernel(scale, training is True)
            return tf.nn.bias_add(self._linear(x, kernel, training), folded_bias)

        if not (training and bn.trainable):
            return deployed()

        momentum = bn.momentum
        if tf.distribute.has_strategy():
            # Cross-replica reductions cannot sit inside a `tf.cond`: compute both results
            # from one convolution and select (a frozen flag keeps the moving statistics).
            frozen = self.bn_frozen
            y = self._linear(x, self._scaled_quant_kernel(scale, True), training)
            normalized, batch_mean, batch_var = self._batch_normalize(
                y * (1.0 / _nonzero(scale)), bias
            )
            keep = momentum + (1.0 - momentum) * frozen
            bn.moving_mean.assign(bn.moving_mean * keep + batch_mean * (1.0 - keep))
            bn.moving_variance.assign(bn.moving_variance * keep + batch_var * (1.0 - keep))
            return tf.where(frozen > 0.5, y + folded_bias, normalized)

        # Both kernels are small; computing them outside the branches keeps what crosses
        # into the `tf.cond` (and its gradient) to a few tensors.
        kernel, unfolded = self._scaled_quant_kernel(scale, True, with_unfolded=True)

        moving_mean = tf.convert_to_tensor(bn.moving_mean)
        moving_var = tf.convert_to_tensor(bn.moving_variance)

        def frozen_branch():
            y = tf.nn.bias_add(self._linear(x, kernel, training), folded_bias)
            return y, moving_mean, moving_var

        def train_branch():
            # The same quantized folded kernel, unfolded: batch statistics normalise the
            # layer's float output while the weights see the deployed rounding.
            raw = self._linear(x, unfolded, training)
            normalized, batch_mean, batch_var = self._batch_normalize(raw, bias)
            new_mean = moving_mean * momentum + batch_mean * (1.0 - momentum)
            new_var = moving_var * momentum + batch_var * (1.0 - momentum)
            return normalized, new_mean, new_var

        # A variable flag chooses the branch at run time: freezing needs no retrace, and a
        # frozen step runs only the deployed arithmetic. The moving statistics are written
        # after the cond (the frozen branch returns them unchanged), which keeps the cond
        # free of variable writes except a separable layer's depthwise range observer.
        y, new_mean, new_var = tf.cond(self.bn_frozen > 0.5, frozen_branch, train_branch)
        bn.moving_mean.assign(new_mean)
        bn.moving_variance.assign(new_var)
        return y

    def _batch_normalize(self, raw, bias):
        """Batch norm of the unfolded output `raw + bias` with batch statistics.

        Returns (normalized output, batch mean, biased batch variance). Under a distribution
        strategy the statistics are synchronised across replicas (like
        SyncBatchNormalization), so the folded statistics stay identical on every replica.
        """
        bn = self.batch_norm
        if bias is not None:
            raw = raw + bias
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
        return tf.reshape(out, shape), batch_mean, batch_var

    def _activate(self, y, training):
        if self.pre_activation_quantizer is not None:
            y = self.pre_activation_quantizer(y, training=training)
        y = acts.apply_activation(self.activation, y)
        return self.output_quantizer(y, training=training)

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
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**dict(config))
