"""Tests for tfslim.quantization.quantize_wrapper (QuantizeWrapper, batch-norm folding)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tfslim.quantization.quantize_wrapper import QuantizeWrapper  # noqa: E402

L = keras.layers


def trained_bn(shape):
    channels = shape[-1]
    bn = L.BatchNormalization()
    bn.build(shape)
    rng = np.random.default_rng(1)
    bn.set_weights(
        [
            rng.uniform(0.5, 2, channels),
            rng.normal(size=channels),
            rng.normal(size=channels),
            rng.uniform(0.5, 2, channels),
        ]
    )
    return bn


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Conv2D(4, 3, use_bias=False), (2, 6, 6, 3)),
        (lambda: L.DepthwiseConv2D(3), (2, 6, 6, 4)),
        (lambda: L.Dense(4), (2, 5)),
        (lambda: L.Conv1D(4, 3), (2, 7, 3)),
        (lambda: L.SeparableConv2D(4, 3), (2, 6, 6, 3)),
        (lambda: L.Conv2DTranspose(4, 3, strides=2), (2, 4, 4, 3)),
    ],
)
def test_folded_inference_matches_float_conv_then_bn(make, shape):
    x = np.random.default_rng(0).uniform(0, 1, shape).astype("float32")
    layer = make()
    out = layer(x)
    bn = trained_bn(out.shape)
    expected = bn(out, training=False).numpy()
    inner = type(layer).from_config(layer.get_config())
    inner_bn = L.BatchNormalization.from_config(bn.get_config())
    wrapper = QuantizeWrapper(inner, batch_norm=inner_bn)
    wrapper.build(shape)
    inner.set_weights(layer.get_weights())
    inner_bn.set_weights(bn.get_weights())
    wrapper.output_quantizer.range_min.assign(float(expected.min()))
    wrapper.output_quantizer.range_max.assign(float(expected.max()))
    if wrapper.depthwise_quantizer is not None:
        mid = keras.ops.depthwise_conv(x, layer.depthwise_kernel, 1, "valid").numpy()
        wrapper.depthwise_quantizer.range_min.assign(float(min(mid.min(), 0)))
        wrapper.depthwise_quantizer.range_max.assign(float(max(mid.max(), 0)))
    got = wrapper(x, training=False).numpy()
    span = expected.max() - expected.min()
    # Only int8 rounding of weights and output separates them.
    assert np.abs(got - expected).max() < 0.06 * span


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: L.Conv2D(4, 3), (3, 6, 6, 3)),
        (lambda: L.DepthwiseConv2D(3, depth_multiplier=2), (3, 6, 6, 2)),
        (lambda: L.Dense(4), (5, 6)),
        (lambda: L.Conv1D(4, 3), (3, 7, 3)),
        (lambda: L.SeparableConv2D(4, 3), (3, 6, 6, 3)),
        (lambda: L.Conv2DTranspose(4, 3, strides=2), (3, 4, 4, 3)),
    ],
)
def test_unfrozen_training_normalises_the_quantized_layer_with_batch_stats(make, shape):
    # Unfrozen, the folded layer computes batch norm (batch statistics) of its unfolded
    # output `conv(x, q(kernel * s)) / s + bias`, where the frozen layer computes the
    # deployed `conv(x, q(kernel * s)) + folded_bias`; the two must describe the same
    # quantized convolution.
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype("float32")
    layer = make()
    out_shape = layer.compute_output_shape(shape)
    wrapper = QuantizeWrapper(layer, batch_norm=trained_bn(out_shape))
    wrapper.build(shape)
    if wrapper.depthwise_quantizer is not None:
        wrapper.depthwise_quantizer.range_min.assign(-3.0)
        wrapper.depthwise_quantizer.range_max.assign(3.0)
        wrapper.depthwise_quantizer.frozen.assign(1.0)
    bn = wrapper.batch_norm
    gamma, beta, mean, var = (v.numpy().copy() for v in bn.weights)
    scale = gamma / np.sqrt(var + bn.epsilon)
    bias = layer.bias.numpy() if layer.use_bias else np.zeros_like(scale)
    folded_bias = beta - mean * scale + bias * scale
    x_in = tf.constant(x)

    wrapper.bn_frozen.assign(1.0)
    deployed = wrapper._folded_call(x_in, wrapper._bias(), training=True).numpy()
    wrapper.bn_frozen.assign(0.0)
    got = wrapper._folded_call(x_in, wrapper._bias(), training=True).numpy()

    raw = (deployed - folded_bias) / scale + bias
    axes = tuple(range(raw.ndim - 1))
    batch_mean, batch_var = raw.mean(axes), raw.var(axes)
    expected = gamma * (raw - batch_mean) / np.sqrt(batch_var + bn.epsilon) + beta
    np.testing.assert_allclose(got, expected, atol=2e-4)
    momentum = bn.momentum
    np.testing.assert_allclose(
        bn.moving_mean.numpy(), mean * momentum + batch_mean * (1 - momentum), atol=1e-5
    )
    np.testing.assert_allclose(
        bn.moving_variance.numpy(), var * momentum + batch_var * (1 - momentum), rtol=1e-4
    )


def test_frozen_bn_training_equals_inference():
    x = np.random.default_rng(0).uniform(0, 1, (4, 6, 6, 3)).astype("float32")
    wrapper = QuantizeWrapper(L.Conv2D(4, 3), batch_norm=L.BatchNormalization(), activation="relu")
    wrapper(x, training=True)
    wrapper.bn_frozen.assign(1.0)
    wrapper.output_quantizer.frozen.assign(1.0)
    moving = wrapper.batch_norm.moving_mean.numpy().copy()
    np.testing.assert_allclose(
        wrapper(x, training=True).numpy(), wrapper(x, training=False).numpy(), atol=1e-6
    )
    np.testing.assert_array_equal(wrapper.batch_norm.moving_mean.numpy(), moving)


def _graph_ops(fn, *specs):
    """Ops of the traced `fn`, its nested functions included, as (name, type, inputs)."""
    graph_def = fn.get_concrete_function(*specs).graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    return [(n.name, n.op, list(n.input)) for n in nodes]


def test_training_step_is_traced_without_a_cond_and_fuses_relu_into_batch_norm():
    wrapper = QuantizeWrapper(
        L.DepthwiseConv2D(3, padding="same"), batch_norm=L.BatchNormalization(), activation="relu"
    )
    wrapper.build((None, 6, 6, 4))
    step = tf.function(lambda x: wrapper(x, training=True))
    ops = _graph_ops(step, tf.TensorSpec((None, 6, 6, 4)))
    assert not [op for _, op, _ in ops if op in ("If", "StatelessIf")]
    # ReLU reads the batch norm's output directly (no reshape in between), the pattern
    # grappler fuses into one kernel.
    [(bn_name, _, _)] = [n for n in ops if n[1] == "FusedBatchNormV3"]
    [(_, _, relu_inputs)] = [n for n in ops if n[1] == "Relu"]
    assert relu_inputs[0].split(":")[0] == bn_name


def test_flipping_the_flag_under_a_traced_step_fails_loudly():
    x = np.random.default_rng(0).uniform(0, 1, (4, 6, 6, 3)).astype("float32")
    wrapper = QuantizeWrapper(L.Conv2D(4, 3), batch_norm=L.BatchNormalization(), activation="relu")
    step = tf.function(lambda x: wrapper(x, training=True))
    step(x)
    wrapper.bn_frozen.assign(1.0)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"`bn_frozen` changed after"):
        step(x)
    # A fresh trace follows the flag: frozen training is the deployed arithmetic.
    moving = wrapper.batch_norm.moving_mean.numpy().copy()
    retraced = tf.function(lambda x: wrapper(x, training=True))
    np.testing.assert_allclose(retraced(x).numpy(), wrapper(x, training=False).numpy(), atol=1e-6)
    np.testing.assert_array_equal(wrapper.batch_norm.moving_mean.numpy(), moving)


def test_unfolded_kernel_gradient_is_the_straight_through_identity():
    # q(k * s) / s stands for k: its gradient is the identity to the kernel and nothing to
    # the batch-norm scale (gamma trains through the batch norm itself).
    wrapper = QuantizeWrapper(L.Conv2D(5, 3), batch_norm=L.BatchNormalization())
    wrapper.build((None, 6, 6, 3))
    scale = tf.constant(np.random.default_rng(0).uniform(0.5, 2, 5).astype("float32"))
    upstream = tf.constant(np.random.default_rng(1).normal(size=(3, 3, 3, 5)).astype("float32"))
    kernel = wrapper.layer.kernel
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(scale)
        unfolded = wrapper._scaled_quant_kernel(scale, True, unfold=True)
        loss = tf.reduce_sum(unfolded * upstream)
    np.testing.assert_array_equal(tape.gradient(loss, kernel).numpy(), upstream.numpy())
    assert tape.gradient(loss, scale) is None
    quantized = wrapper._scaled_quant_kernel(scale, True)
    np.testing.assert_allclose(unfolded.numpy(), (quantized / scale).numpy(), rtol=1e-6)


def test_bias_before_batch_norm_is_not_trained_but_still_counts():
    x = np.random.default_rng(0).uniform(0, 1, (8, 5)).astype("float32")
    wrapper = QuantizeWrapper(L.Dense(3), batch_norm=L.BatchNormalization())
    wrapper.build(x.shape)
    wrapper.layer.bias.assign([1.0, -2.0, 3.0])
    assert wrapper.layer.bias.path not in [w.path for w in wrapper.trainable_weights]
    wrapper(x, training=True)  # Unfrozen: one moving-average step towards the batch mean.
    batch_mean = (x @ wrapper.layer.kernel.numpy()).mean(0) + [1.0, -2.0, 3.0]
    np.testing.assert_allclose(
        wrapper.batch_norm.moving_mean.numpy(),
        batch_mean * (1 - wrapper.batch_norm.momentum),
        atol=1e-3,
    )
    # Frozen, the bias is part of the deployed arithmetic.
    wrapper.bn_frozen.assign(1.0)
    with_bias = wrapper(x, training=True).numpy()
    wrapper.layer.bias.assign([0.0, 0.0, 0.0])
    assert not np.allclose(wrapper(x, training=True).numpy(), with_bias, atol=1e-3)


def test_training_updates_moving_statistics_with_batch_stats():
    x = np.random.default_rng(0).uniform(0, 1, (8, 5)).astype("float32")
    wrapper = QuantizeWrapper(L.Dense(3, use_bias=False), batch_norm=L.BatchNormalization())
    out = wrapper(x, training=True).numpy()
    # Normalised with batch statistics: the (quantized) output has about zero mean per unit.
    assert np.abs(out.mean(0)).max() < 0.05
    assert np.abs(wrapper.batch_norm.moving_mean.numpy()).max() > 0


def test_activations_and_quantizers():
    relu = QuantizeWrapper(L.Dense(3), activation="relu6")
    assert relu.pre_activation_quantizer is None
    assert relu.output_quantizer.nonnegative
    assert not QuantizeWrapper(L.Dense(3)).output_quantizer.nonnegative
    sigmoid = QuantizeWrapper(L.Dense(3), activation="sigmoid")
    assert sigmoid.output_quantizer.fixed_range == (0.0, 255 / 256)
    assert sigmoid.pre_activation_quantizer is not None
    y = relu(np.full((1, 4), 100.0, "float32"), training=True).numpy()
    assert y.min() >= 0 and y.max() <= 6.0


def test_config_and_save_round_trip(tmp_path):
    inputs = keras.Input((6, 6, 3))
    wrapper = QuantizeWrapper(
        L.Conv2D(4, 3, use_bias=False, name="c"),
        batch_norm=L.BatchNormalization(name="bn"),
        activation="relu6",
        name="w",
    )
    model = keras.Model(inputs, wrapper(inputs))
    x = np.random.default_rng(0).uniform(0, 1, (4, 6, 6, 3)).astype("float32")
    model(x, training=True)
    clone = QuantizeWrapper.from_config(wrapper.get_config())
    assert (clone.kind, clone.activation, clone.batch_norm.name) == ("Conv2D", "relu6", "bn")
    model.save(tmp_path / "w.keras")
    loaded = keras.saving.load_model(tmp_path / "w.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_argument_errors():
    with pytest.raises(ValueError, match=r"argument `layer`.*'lstm' of class LSTM"):
        QuantizeWrapper(L.LSTM(2, name="lstm"))
    with pytest.raises(ValueError, match=r"linear activation.*activation=relu"):
        QuantizeWrapper(L.Dense(2, activation="relu"))
    with pytest.raises(ValueError, match=r"argument `activation`.*activation=selu"):
        QuantizeWrapper(L.Dense(2), activation="selu")


def test_qat_conv1d_converts_to_the_ops_of_a_post_training_conv1d():
    """The QAT Conv1D's added axis is an expand-dims, as TFLite lowers a float Conv1D: a slice
    in its place stayed in the int8 graph as one STRIDED_SLICE per layer (flash and arena)."""
    import tfslim

    model = keras.Sequential(
        [keras.Input((16, 2)), L.Conv1D(4, 3, activation="relu"), L.Conv1D(4, 3), L.Flatten()]
    )
    x = np.random.default_rng(0).normal(size=(8, 16, 2)).astype("float32")
    qat = tfslim.quantize_model(model)
    qat(x, training=True)  # Observe the ranges once.
    qat_ops = tfslim.inspect(tfslim.convert(qat, target="mcu"), micro_check=False)["ops"]
    ptq = tfslim.convert(model, target="mcu", calibration_data=x)
    assert qat_ops == tfslim.inspect(ptq, micro_check=False)["ops"]
    assert "STRIDED_SLICE" not in qat_ops
