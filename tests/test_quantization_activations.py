"""Tests for tfslim.quantization.activations and tfslim.quantization.registry."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tfslim.quantization import activations as acts  # noqa: E402
from tfslim.quantization import registry  # noqa: E402

L = keras.layers


@pytest.mark.parametrize(
    "activation, name",
    [
        (None, "linear"),
        ("relu", "relu"),
        ("hard_silu", "hard_swish"),
        ("silu", "swish"),
        ("gelu", "gelu"),
        ("leaky_relu", "leaky_relu"),
        ("elu", "elu"),
        ("selu", None),
    ],
)
def test_activation_name(activation, name):
    layer = L.Dense(2, activation=activation)
    assert acts.activation_name(layer.activation) == name


@pytest.mark.parametrize(
    "layer, name",
    [
        (L.ReLU(), "relu"),
        (L.ReLU(max_value=6.0), "relu6"),
        (L.ReLU(negative_slope=0.1), "leaky_relu(0.1)"),
        (L.ReLU(negative_slope=0.1, max_value=6.0), None),
        (L.LeakyReLU(negative_slope=0.2), "leaky_relu"),
        (L.ELU(), "elu"),
        (L.ELU(alpha=0.5), None),
        (L.Activation("tanh"), "tanh"),
        (L.Softmax(), "softmax"),
        (L.Softmax(axis=1), None),
    ],
)
def test_layer_activation_name(layer, name):
    assert acts.layer_activation_name(layer) == name


# Swish and hard sigmoid round an internal tensor to int8 (as their TFLite kernels do).
_INTERNAL_STEP = {"swish": 8 / 256, "hard_sigmoid": 1 / 255 / 2 + 1e-6}


@pytest.mark.parametrize("name", [*acts.SUPPORTED, "leaky_relu(0.1)"])
def test_apply_activation_matches_keras(name):
    x = np.linspace(-8, 8, 33, dtype="float32")[None]
    keras_fn = {
        "hard_swish": keras.activations.hard_silu,
        "gelu_tanh": lambda v: keras.activations.gelu(v, approximate=True),
        "leaky_relu(0.1)": lambda v: keras.activations.leaky_relu(v, negative_slope=0.1),
    }.get(name) or keras.activations.get(name)
    atol = _INTERNAL_STEP.get(name, 1e-5)
    np.testing.assert_allclose(acts.apply_activation(name, x), keras_fn(x), atol=atol)


def test_apply_activation_rejects_unknown():
    with pytest.raises(ValueError, match=r"argument `activation`.*activation=selu"):
        acts.apply_activation("selu", np.zeros((1, 2), "float32"))


@pytest.mark.parametrize(
    "fn, name",
    [
        (keras.ops.sigmoid, "sigmoid"),
        (keras.ops.hard_silu, "hard_swish"),
        (lambda x: keras.ops.gelu(x, approximate=True), "gelu_tanh"),
        (lambda x: keras.ops.leaky_relu(x, negative_slope=0.3), "leaky_relu(0.3)"),
        (keras.ops.elu, "elu"),
        (lambda x: keras.ops.elu(x, alpha=0.5), None),
        (keras.ops.exp, None),
    ],
)
def test_op_activation_name(fn, name):
    inputs = keras.Input((2,))
    op = keras.Model(inputs, fn(inputs)).operations[-1]
    assert acts.op_activation_name(op) == name


@pytest.mark.parametrize(
    "layer, role",
    [
        (L.Conv2D(2, 3), "weighted"),
        (L.Conv1D(2, 3, padding="causal"), None),
        (L.Dense(2, activation="gelu"), "weighted"),
        (L.Dense(2, activation="selu"), None),
        (L.Normalization(mean=[1.0, 2.0], variance=[4.0, 1.0]), "affine"),
        (L.BatchNormalization(), "batch_norm"),
        (L.MaxPooling2D(), "passthrough"),
        (L.UpSampling2D(interpolation="bicubic"), None),
        (L.Add(), "requantize"),
        (L.Rescaling(1 / 255), "affine"),
        (L.Activation("relu6"), "activation"),
        (L.ELU(), "activation"),
        (L.ELU(alpha=0.5), None),
        (L.PReLU(), "prelu"),
        (L.Conv2D(2, 3, data_format="channels_first"), None),
        (L.LSTM(2), None),
    ],
)
def test_registry_roles(layer, role):
    if isinstance(layer, L.Normalization):
        layer.build((None, 2))
    assert registry.role(layer) == role


def test_supported_layers_cover_the_issue_list():
    required = {
        "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
        "BatchNormalization", "ReLU", "Activation", "Add", "Multiply", "Concatenate",
        "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "Reshape", "Flatten", "Dropout",
        "ZeroPadding2D", "UpSampling2D", "Rescaling", "Softmax", "PReLU", "ELU",
    }  # fmt: skip
    assert required <= set(registry.SUPPORTED_LAYERS)


def test_quantize_activation_docstring_examples_run():
    import doctest

    from tfslim.quantization import quantize_activation

    result = doctest.testmod(quantize_activation, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


def test_quantize_prelu_refuses_another_layer():
    from tfslim.quantization import QuantizePReLU

    with pytest.raises(ValueError, match=r"argument `layer`.*PReLU.*of class LeakyReLU"):
        QuantizePReLU(L.LeakyReLU())
