import doctest

import keras
import numpy as np
import pytest

from tfslim.architectures import blocks as blocks_module
from tfslim.architectures import (
    depthwise_separable_block,
    inverted_residual_block,
    make_divisible,
    scale_filters,
    squeeze_excite_block,
)


def _model(block, input_shape=(16, 16, 16), **kwargs):
    inputs = keras.Input(shape=input_shape)
    return keras.Model(inputs, block(inputs, **kwargs))


def _layer_types(model):
    return [type(layer).__name__ for layer in model.layers]


def test_docstring_examples_run():
    result = doctest.testmod(blocks_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize(
    "value, divisor, min_value, expected",
    [
        (8, 8, None, 8),
        (32 * 0.25, 8, None, 8),
        (12, 8, None, 16),  # Rounds half up.
        (9.6, 8, None, 16),  # 8 would lose more than 10%.
        (3, 8, None, 8),  # Never below the divisor.
        (3, 8, 4, 4),  # An explicit min_value may undercut the divisor.
        (100, 4, None, 100),
        (6.4, 1, None, 6),
    ],
)
def test_make_divisible(value, divisor, min_value, expected):
    assert make_divisible(value, divisor=divisor, min_value=min_value) == expected


@pytest.mark.parametrize(
    "filters, alpha, expected",
    [(12, 1.0, 12), (64, 0.5, 32), (32, 0.25, 8), (64, 0.1, 8), (16, 2.0, 32), (24, 0.35, 8)],
)
def test_scale_filters(filters, alpha, expected):
    assert scale_filters(filters, alpha=alpha) == expected


@pytest.mark.parametrize("alpha", [0, -0.5, float("nan"), float("inf")])
def test_scale_filters_rejects_non_positive_alpha(alpha):
    with pytest.raises(
        ValueError, match=r"argument `alpha`. Expected a float > 0. Received: alpha="
    ):
        scale_filters(32, alpha=alpha)


def test_scale_filters_rejects_bad_types():
    with pytest.raises(TypeError, match=r"argument `alpha`.*Received: alpha='half'"):
        scale_filters(32, alpha="half")
    with pytest.raises(TypeError, match=r"argument `filters`.*Received: filters=3.5"):
        scale_filters(3.5)
    with pytest.raises(ValueError, match=r"argument `filters`. Expected an int >= 1.*filters=0"):
        scale_filters(0)


def test_make_divisible_rejects_bad_values():
    with pytest.raises(ValueError, match=r"argument `value`. Expected a float > 0.*value=0"):
        make_divisible(0)
    with pytest.raises(ValueError, match=r"argument `divisor`.*divisor=0"):
        make_divisible(8, divisor=0)


def test_depthwise_separable_block_shape_and_params():
    model = _model(depthwise_separable_block, filters=64, alpha=0.5, strides=2)
    assert model.output_shape == (None, 8, 8, 32)
    # 3x3 depthwise on 16 channels, BN, 1x1 to 32 channels, BN; no biases by default.
    assert model.count_params() == 9 * 16 + 4 * 16 + 16 * 32 + 4 * 32
    assert _layer_types(model)[1:] == [
        "DepthwiseConv2D",
        "BatchNormalization",
        "Activation",
        "Conv2D",
        "BatchNormalization",
        "Activation",
    ]


def test_depthwise_separable_block_width_multiplier_scales_params():
    counts = [
        _model(depthwise_separable_block, filters=64, alpha=a).count_params()
        for a in (0.25, 0.5, 1.0)
    ]
    assert counts[0] < counts[1] < counts[2]


def test_depthwise_separable_block_names_and_bias():
    model = _model(depthwise_separable_block, filters=8, use_bias=True, name="ds1")
    names = [layer.name for layer in model.layers[1:]]
    assert names == [
        "ds1_dw",
        "ds1_dw_bn",
        "ds1_dw_relu",
        "ds1_pw_conv",
        "ds1_pw_bn",
        "ds1_pw_relu",
    ]
    assert model.get_layer("ds1_dw").use_bias and model.get_layer("ds1_pw_conv").use_bias


def test_weight_decay_adds_l2_losses():
    model = _model(depthwise_separable_block, filters=8, weight_decay=1e-4)
    assert len(model.losses) == 2
    assert _model(depthwise_separable_block, filters=8).losses == []


def test_inverted_residual_block_adds_shortcut_when_shapes_match():
    model = _model(inverted_residual_block, filters=16, expansion=6)
    assert model.output_shape == (None, 16, 16, 16)
    assert "Add" in _layer_types(model)
    expand = model.get_layer(index=1)
    assert isinstance(expand, keras.layers.Conv2D) and expand.filters == 96


@pytest.mark.parametrize(
    "kwargs, shape", [({"filters": 16, "strides": 2}, (None, 8, 8, 16)), ({"filters": 24}, None)]
)
def test_inverted_residual_block_no_shortcut_when_shapes_differ(kwargs, shape):
    model = _model(inverted_residual_block, **kwargs)
    assert "Add" not in _layer_types(model)
    if shape is not None:
        assert model.output_shape == shape


def test_inverted_residual_block_projection_is_linear_and_expansion_one_skips_expand():
    model = _model(inverted_residual_block, filters=32, expansion=1, name="ir")
    types = _layer_types(model)
    assert types[1] == "DepthwiseConv2D"
    assert types[-1] == "BatchNormalization"  # Linear bottleneck: no activation after project.
    assert model.get_layer("ir_dw_relu6") is not None


def test_inverted_residual_block_with_squeeze_excite():
    model = _model(inverted_residual_block, filters=16, se_ratio=0.25, name="ir")
    assert "Multiply" in _layer_types(model)
    # The SE squeezes the 96 expanded channels to a quarter of them.
    assert model.get_layer("ir_se_reduce").filters == 24
    assert model.get_layer("ir_se_expand").filters == 96


def test_inverted_residual_block_width_multiplier():
    model = _model(inverted_residual_block, filters=64, alpha=0.5)
    assert model.output_shape == (None, 16, 16, 32)


def test_squeeze_excite_gates_each_channel_by_a_factor_in_0_1():
    model = _model(squeeze_excite_block, input_shape=(4, 4, 16), ratio=0.5)
    assert model.output_shape == (None, 4, 4, 16)
    x = np.random.default_rng(0).uniform(0.1, 1.0, (2, 4, 4, 16)).astype("float32")
    gate = model.predict(x, verbose=0) / x
    assert np.all((gate > 0) & (gate < 1))
    # One factor per (sample, channel), shared by every spatial position.
    np.testing.assert_allclose(gate, np.broadcast_to(gate[:, :1, :1, :], gate.shape), rtol=1e-5)


@pytest.mark.parametrize("ratio", [0, 1.5, -0.1])
def test_squeeze_excite_rejects_bad_ratio(ratio):
    inputs = keras.Input(shape=(4, 4, 16))
    with pytest.raises(ValueError, match=r"argument `ratio`. Expected a float"):
        squeeze_excite_block(inputs, ratio=ratio)


@pytest.mark.parametrize("block", [depthwise_separable_block, inverted_residual_block])
def test_blocks_reject_non_tensor_and_wrong_rank(block):
    with pytest.raises(TypeError, match=r"argument `inputs`. Expected a KerasTensor"):
        block(np.zeros((1, 8, 8, 3)), 8)
    with pytest.raises(ValueError, match=r"argument `inputs`. Expected a rank-4 tensor"):
        block(keras.Input(shape=(16,)), 8)


def test_inverted_residual_block_rejects_bad_expansion():
    with pytest.raises(ValueError, match=r"argument `expansion`. Expected a float >= 1.*=0.5"):
        inverted_residual_block(keras.Input(shape=(8, 8, 8)), 8, expansion=0.5)


def test_blocks_reject_negative_weight_decay():
    with pytest.raises(ValueError, match=r"argument `weight_decay`.*weight_decay=-1"):
        depthwise_separable_block(keras.Input(shape=(8, 8, 8)), 8, weight_decay=-1)


def test_model_of_blocks_saves_and_loads_with_plain_keras(tmp_path):
    inputs = keras.Input(shape=(8, 8, 3))
    x = depthwise_separable_block(inputs, 16, strides=2, name="ds")
    x = inverted_residual_block(x, 16, expansion=4, se_ratio=0.25, name="ir")
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "blocks.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    x = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.slow
def test_blocks_convert_to_int8_ops_tflite_micro_runs(digits):
    import tfslim
    from tfslim.architectures import randomize_weights

    x_train = digits[0]
    inputs = keras.Input(shape=(8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same")(inputs)
    x = depthwise_separable_block(x, 16, strides=2)
    x = inverted_residual_block(x, 16, expansion=4, se_ratio=0.25)
    x = inverted_residual_block(x, 24, strides=2, activation="relu")
    x = squeeze_excite_block(x, gate_activation="hard_sigmoid")
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = randomize_weights(keras.Model(inputs, keras.layers.Dense(10)(x)))
    result = tfslim.convert(model, target="mcu", calibration_data=x_train[:32])
    report = tfslim.inspect(result.flatbuffer)
    assert report["fully_integer"]
    assert report["micro"]["supported"], report["micro"]
    assert {"DEPTHWISE_CONV_2D", "ADD", "MUL", "MEAN"} <= set(report["ops"])
