"""Float and int16x8 islands in int8 models, and the accuracy-aware mode of `tfslim.convert`."""

import numpy as np
import pytest

import tfslim
from tfslim.errors import UnsupportedOpError


def _broken_model():
    """Two convs, pooled, then a Dense head with one weight 1000x the others.

    Int8's per-tensor Dense weights leave that head a handful of levels; the float model
    does not mind. Labels are the float model's own classes, so float accuracy is 1.
    """
    import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    head = keras.layers.Dense(10, name="broken")
    model = keras.Model(inputs, head(x))
    # conv_b's first channel is always 0 after its ReLU, so the huge weight reading it
    # changes nothing in float.
    conv_b = model.get_layer("conv_b")
    weights, bias = conv_b.kernel.numpy(), conv_b.bias.numpy()
    weights[..., 0], bias[0] = 0.0, -1.0
    conv_b.kernel.assign(weights)
    conv_b.bias.assign(bias)
    kernel = head.kernel.numpy()
    kernel[0, 0] = 1000.0 * np.abs(kernel).max()
    head.kernel.assign(kernel)
    return model


@pytest.fixture(scope="module")
def case():
    import keras

    keras.utils.set_random_seed(0)
    model = _broken_model()
    x = np.random.default_rng(0).random((96, 8, 8, 1), dtype=np.float32)
    y = model.predict(x, verbose=0).argmax(1)
    return model, x, y


def _tensor_types(model_bytes):
    """Output tensor name -> dtype name of every tensor in the file."""
    from ai_edge_litert.interpreter import Interpreter

    details = Interpreter(model_content=model_bytes).get_tensor_details()
    return {d["name"]: np.dtype(d["dtype"]).name for d in details}


def _layer_types(model_bytes, layer):
    return {
        dtype
        for name, dtype in _tensor_types(model_bytes).items()
        if f"/{layer}_" in name or f"/{layer}/" in name
    }


def test_keep_float_layer_is_float_in_the_file(case):
    model, x, _ = case
    result = tfslim.convert(model, keep_float=["conv_b"], calibration_data=x)
    assert result.mixed_precision["keep_float"] == ["conv_b"]
    from tfslim.litert import flatbuffer

    convs = [o for o in flatbuffer.analyze(result.flatbuffer)["op_list"] if o["op"] == "CONV_2D"]
    (conv_a,) = [o for o in convs if "/conv_a" in o["output"]]
    (conv_b,) = [o for o in convs if "/conv_b" in o["output"]]
    assert conv_b["float"] and not conv_b["hybrid"]  # float weights and activations
    assert not conv_a["float"]
    ops = tfslim.inspect(result.flatbuffer)["ops"]
    assert ops["DEQUANTIZE"] >= 1 and ops["QUANTIZE"] >= 1  # The island's edges.
    assert tfslim.predict(result.flatbuffer, x[:4]).shape == (4, 10)


def test_int16_island_is_int16_and_runs_in_tflite_micro(case):
    model, x, _ = case
    # A regex selects both convolutions; the board model runs in TFLite Micro (checked by
    # convert, whose arena measurement lands in mixed_precision["micro"]).
    result = tfslim.convert(model, target="mcu", int16=["conv_.*"], calibration_data=x)
    info = result.mixed_precision
    assert info["int16"] == ["conv_a", "conv_b"]
    assert info["micro"]["supported"] and info["micro"]["arena_bytes"] > 0
    for layer in ("conv_a", "conv_b"):
        assert "int16" in _layer_types(result.flatbuffer, layer)
    types = _tensor_types(result.flatbuffer)
    weights = [n for n in types if "conv_b" in n and types[n] == "int8"]
    assert weights  # int8 weights inside the int16 island
    assert tfslim.inspect(result.flatbuffer)["fully_integer"]


def test_keep_float_refused_for_a_board(case):
    model, x, _ = case
    with pytest.raises(ValueError, match=r"keep_float.*target='mcu'.*TFLite Micro.*conv_b"):
        tfslim.convert(model, target="mcu", keep_float=["conv_b"], calibration_data=x)


def test_int16_island_without_micro_kernel_refused_by_layer_and_op():
    import keras

    inputs = keras.Input((16,))
    x = keras.layers.Dense(8, name="fc")(inputs)
    x = keras.layers.LeakyReLU(0.1, name="leaky")(x)
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(x))
    data = np.random.default_rng(0).random((16, 16), dtype=np.float32)
    with pytest.raises(
        UnsupportedOpError,
        match=r"int16.*no int16x8 kernel for LEAKY_RELU "
        r"from layer 'leaky'",
    ) as error:
        tfslim.convert(model, target="mcu", int16=["leaky", "fc"], calibration_data=data)
    assert "FULLY_CONNECTED" not in str(error.value).split("Expected")[0]
    assert isinstance(error.value, ValueError)


def test_unknown_layer_refused_with_valid_names(case):
    model, x, _ = case
    with pytest.raises(
        ValueError,
        match=r"`keep_float`.*\['broken', 'conv_a', 'conv_b', "
        r"'pool'\].*'nope' matches none",
    ):
        tfslim.convert(model, keep_float=["nope"], calibration_data=x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"keep_float": ["conv_a"], "quantization": "dynamic"}, "quantization"),
        ({"max_accuracy_drop": 1.5}, r"max_accuracy_drop.*\[0, 1\).*1.5"),
        ({"max_accuracy_drop": 0.01}, r"validation_data=\(x, y\)"),
        ({"keep_float": [3]}, "keep_float"),
    ],
)
def test_invalid_options(case, kwargs, match):
    model, x, _ = case
    with pytest.raises((ValueError, TypeError), match=match):
        tfslim.convert(model, calibration_data=x, **kwargs)


def test_accuracy_aware_keeps_the_broken_layer(case):
    model, x, y = case
    result = tfslim.convert(model, max_accuracy_drop=0.02, validation_data=(x, y))
    info = result.mixed_precision
    assert info["int8_accuracy"] < 0.9  # Plain int8 breaks on the head.
    assert info["kept_layers"] == ["broken"]
    assert info["keep_float"] == ["broken"]
    assert info["met"] and info["accuracy"] >= 0.98
    assert info["kept"][0]["precision"] == "float" and info["kept"][0]["sensitivity"] > 0
    assert info["size_bytes"] == result.size_bytes > info["int8_size_bytes"]
    assert info["size_cost"] == pytest.approx(
        result.size_bytes / info["int8_size_bytes"] - 1, abs=1e-6
    )
    accuracy = np.mean(tfslim.predict(result.flatbuffer, x).argmax(1) == y)
    assert accuracy == pytest.approx(info["accuracy"])


def test_accuracy_aware_on_a_board_keeps_int16_and_runs_in_tflite_micro(case):
    model, x, y = case
    result = tfslim.convert(model, target="mcu", max_accuracy_drop=0.05, validation_data=(x, y))
    info = result.mixed_precision
    assert info["int16"] == ["broken"] and info["keep_float"] == []
    assert info["kept"][0]["precision"] == "int16" and info["met"]
    assert info["micro"]["supported"] and tfslim.inspect(result.flatbuffer)["fully_integer"]


def test_unmet_target_warns_and_returns_the_best_found(case, monkeypatch):
    import importlib

    from tfslim.errors import TfslimWarning

    # The module, not the function `tfslim.litert` exports under the same name.
    sensitivity = importlib.import_module("tfslim.litert.sensitivity")
    model, x, y = case
    monkeypatch.setattr(sensitivity, "_MAX_ROUNDS", 0)  # No search: plain int8 is the best.
    with pytest.warns(TfslimWarning, match=r"could not meet max_accuracy_drop=0.02.*returned"):
        result = tfslim.convert(model, max_accuracy_drop=0.02, validation_data=(x, y))
    info = result.mixed_precision
    assert not info["met"] and info["kept_layers"] == []
    assert info["accuracy"] == info["int8_accuracy"] < 0.9
    assert result.size_bytes == info["int8_size_bytes"]
