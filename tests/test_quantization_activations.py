"""Tests for tfslim.quantization.activations and tfslim.quantization.registry."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tfslim.quantization import activations as acts  # noqa: E402
from tfslim.quantization import registry  # noqa: E402

L = keras.layers


@pytest.mark.parametrize(
    "activation, name",
    [(None, "linear"), ("relu", "relu"), ("hard_silu", "hard_swish"), ("gelu", None)],
)
def test_activation_name(activation, name):
    layer = L.Dense(2, activation=activation)
    assert acts.activation_name(layer.activation) == name


@pytest.mark.parametrize(
    "layer, name",
    [
        (L.ReLU(), "relu"),
        (L.ReLU(max_value=6.0), "relu6"),
        (L.ReLU(negative_slope=0.1), None),
        (L.Activation("tanh"), "tanh"),
        (L.Softmax(), "softmax"),
        (L.Softmax(axis=1), None),
    ],
)
def test_layer_activation_name(layer, name):
    assert acts.layer_activation_name(layer) == name


@pytest.mark.parametrize("name", acts.SUPPORTED)
def test_apply_activation_matches_keras(name):
    x = np.linspace(-8, 8, 33, dtype="float32")[None]
    expected = keras.activations.get({"hard_swish": "hard_silu"}.get(name, name))(x)
    np.testing.assert_allclose(acts.apply_activation(name, x), expected, atol=1e-6)


def test_apply_activation_rejects_unknown():
    with pytest.raises(ValueError, match=r"argument `activation`.*activation=gelu"):
        acts.apply_activation("gelu", np.zeros((1, 2), "float32"))


@pytest.mark.parametrize(
    "layer, role",
    [
        (L.Conv2D(2, 3), "weighted"),
        (L.Conv1D(2, 3, padding="causal"), None),
        (L.Dense(2, activation="gelu"), None),
        (L.MaxPooling2D(), "passthrough"),
        (L.UpSampling2D(interpolation="bicubic"), None),
        (L.Add(), "requantize"),
        (L.Rescaling(1 / 255), "requantize"),
        (L.Activation("relu6"), "activation"),
        (L.Conv2D(2, 3, data_format="channels_first"), None),
        (L.LSTM(2), None),
    ],
)
def test_registry_roles(layer, role):
    assert registry.role(layer) == role


def test_supported_layers_cover_the_issue_list():
    required = {
        "Dense", "Conv1D", "Conv2D", "DepthwiseConv2D", "SeparableConv2D", "Conv2DTranspose",
        "BatchNormalization", "ReLU", "Activation", "Add", "Multiply", "Concatenate",
        "MaxPooling1D", "MaxPooling2D", "AveragePooling1D", "AveragePooling2D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "Reshape", "Flatten", "Dropout",
        "ZeroPadding2D", "UpSampling2D", "Rescaling", "Softmax",
    }  # fmt: skip
    assert required <= set(registry.SUPPORTED_LAYERS)
