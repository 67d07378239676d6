import json
import math

import numpy as np
import pytest

import tfslim
from tfslim.benchmarking.quantization_report import LayerRecord, QuantizationReport


def _build(x_train, y_train):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1), name="image"),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv_a"),
            keras.layers.Conv2D(16, 3, name="conv_b"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="act"),
            keras.layers.Dropout(0.1, name="drop"),
            keras.layers.GlobalAveragePooling2D(name="pool"),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ],
        name="qr_cnn",
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def reports(digits):
    """(model, converted, healthy report, broken model, broken report), made once."""
    import keras

    x_train, y_train, x_test, _ = digits
    model = _build(x_train, y_train)
    converted = tfslim.convert(model, quantization="int8", calibration_data=x_train[:100])
    healthy = tfslim.quantization_report(model, x_test, converted=converted, max_samples=48)
    broken = keras.models.clone_model(model)
    broken.set_weights(model.get_weights())
    kernel, bias = broken.get_layer("conv_a").get_weights()
    kernel[..., 0] *= 1000.0  # One output channel with a 1000x wider range.
    bias[0] *= 1000.0
    broken.get_layer("conv_a").set_weights([kernel, bias])
    broken_report = tfslim.quantization_report(
        broken, (x_test, None), calibration_data=x_train[:100], max_samples=48
    )
    return model, converted, healthy, broken, broken_report


def test_the_broken_layer_ranks_first_by_its_own_error(reports):
    _, _, healthy, _, broken = reports
    worst = broken.worst()
    assert worst.name == "conv_a"
    assert worst.alone_channel_snr_db < 10
    # One wide channel dominates the whole-tensor SNR: it hides what per-channel SNR shows.
    assert worst.alone_snr_db > worst.alone_channel_snr_db + 15
    assert healthy.worst().alone_channel_snr_db > 25
    assert broken.get("conv_a").float_range > 100 * healthy.get("conv_a").float_range


def test_records_name_keras_layers_and_measure_the_output_like_predict(reports, digits):
    model, converted, report, _, _ = reports
    x = digits[2][:48]
    names = [r.name for r in report.layers]
    assert sorted(names) == sorted(["image", "conv_a", "act", "pool", "head"])
    head = report.get("head")
    # The accumulated error of the last layer is the converted model's output error: for a
    # mobile target the report runs XNNPACK, as tfslim.predict does.
    reference = model.predict(x, verbose=0).astype(np.float64)
    got = tfslim.predict(converted, x).astype(np.float64)
    expected = np.linalg.norm(got - reference) / np.linalg.norm(reference)
    assert report.kernels == "xnnpack"
    assert head.rel_error == pytest.approx(expected, rel=1e-3)
    assert head.shape == [10] and head.op == "SOFTMAX" and head.scale == pytest.approx(1 / 256)
    assert report.get("act").fused == ["conv_b", "bn"] and report.get("act").op == "CONV_2D"
    assert report.samples == 48 and report.quantization == "int8" and report.target == "mobile"
    for r in report.layers:
        assert isinstance(r, LayerRecord) and 20 < r.snr_db <= math.inf
        assert 0.99 < r.cosine <= 1.0 and r.alone_snr_db is not None
    keys = [(r.alone_channel_snr_db, r.alone_snr_db) for r in report.layers]
    assert keys == sorted(keys)  # Worst first.
    by_accumulated = [r.channel_snr_db for r in report.ranked("accumulated")]
    assert by_accumulated == sorted(by_accumulated)


def test_unmatched_layers_are_listed_with_their_reason(reports):
    report = reports[2]
    reasons = {u["name"]: u["reason"] for u in report.unmatched}
    assert set(reasons) == {"conv_b", "bn", "drop"}
    assert "fused into act" in reasons["conv_b"] and "fused into act" in reasons["bn"]
    assert "identity" in reasons["drop"]
    table = report.table()
    for name in ("conv_b", "bn", "drop"):
        assert f"  {name} (" in table


def test_table_shows_the_worst_first(reports):
    broken = reports[4]
    lines = broken.table(top=2).splitlines()
    assert "qr_cnn: int8 for mobile on xnnpack kernels, 48 samples" in lines[0]
    assert lines[3].split()[:2] == ["1", "conv_a"] and lines[4].split()[0] == "2"
    assert not lines[5].strip()  # Only two rows, then the unmatched list.
    assert "note: calibrated" not in broken.table()  # calibration_data was given.


def test_json_round_trip(reports, tmp_path):
    report = reports[4]
    path = tmp_path / "qreport.json"
    assert report.to_json(path) == str(path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert data["layers"][0]["name"] == "conv_a"
    again = QuantizationReport.from_json(path)
    assert again.to_dict() == report.to_dict()
    assert [r.name for r in again.layers] == [r.name for r in report.layers]
    with pytest.raises(FileExistsError, match="pass overwrite=True"):
        report.to_json(path)


def test_plot_is_written_atomically(reports, tmp_path):
    report = reports[4]
    path = tmp_path / "qreport.png"
    assert report.plot(path, top=4) == str(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in tmp_path.iterdir()] == ["qreport.png"]  # No temporary left.
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="Received: path="):
        report.plot(path)
    assert path.read_bytes() == before
    report.plot(path, overwrite=True)
    assert path.read_bytes()[:4] == b"\x89PNG" and [p.name for p in tmp_path.iterdir()] == [
        "qreport.png"
    ]


def test_a_tflite_path_gives_the_same_report(reports, digits, tmp_path):
    model, converted, report, _, _ = reports
    path = converted.save(tmp_path / "m.tflite")
    again = tfslim.quantization_report(model, digits[2], converted=path, max_samples=48)
    assert [(r.name, r.snr_db) for r in again.layers] == [(r.name, r.snr_db) for r in report.layers]
    assert again.quantization == "int8"


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"max_samples": 0},
            ValueError,
            "Invalid value for argument `max_samples`. Expected an int >= 1. Received: "
            "max_samples=0",
        ),
        (
            {"quantization": "float16"},
            ValueError,
            r"argument `quantization`. Expected one of \['int8', 'int16x8'\] or None. "
            "Received: quantization='float16'",
        ),
        ({"target": "nowhere"}, ValueError, "Received: target='nowhere'"),
        (
            {"data": np.zeros((4, 8, 8, 2))},
            ValueError,
            r"argument `data`. Expected numeric samples of shape \(N, \*\(8, 8, 1\)\)",
        ),
        ({"data": "x.npz"}, TypeError, "Invalid type for argument `data`"),
        (
            {"data": np.full((2, 8, 8, 1), np.nan)},
            ValueError,
            "Expected finite numbers. Received: 128 non-finite values",
        ),
        ({"converted": b"nope"}, tfslim.errors.InvalidModelError, "not a TFLite model"),
        (
            {"kernels": "gpu"},
            ValueError,
            r"`kernels`. Expected one of \['builtin', 'xnnpack', 'reference'\] or None. Received: "
            "kernels='gpu'",
        ),
    ],
)
def test_bad_arguments_are_refused(reports, kwargs, error, message):
    model = reports[0]
    kwargs = {"data": np.zeros((4, 8, 8, 1), "float32"), **kwargs}
    data = kwargs.pop("data")
    with pytest.raises(error, match=message):
        tfslim.quantization_report(model, data, **kwargs)


def test_models_without_a_graph_and_mixed_options_are_refused(reports, tmp_path):
    import keras

    model, converted = reports[0], reports[1]
    x = np.zeros((2, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="`quantization`. It applies to the conversion"):
        tfslim.quantization_report(model, x, converted=converted, quantization="int8")

    class Sub(keras.Model):
        def call(self, inputs):
            return inputs * 2

    with pytest.raises(TypeError, match="Expected a Sequential or Functional model"):
        tfslim.quantization_report(Sub(), x)
    with pytest.raises(FileNotFoundError, match="no such file"):
        tfslim.quantization_report(tmp_path / "absent.keras", x)
    with pytest.raises(ValueError, match="Received: by='worst'"):
        reports[2].ranked("worst")
    with pytest.raises(ValueError, match="Received: top=0"):
        reports[2].table(top=0)


@pytest.mark.slow
def test_a_qat_hard_sigmoid_is_compared_op_by_op_not_against_its_quantizer():
    """Squeeze-and-excite with `relu6(x + 3) * (1 / 6)`: each activation quantizer shares its
    producer's tensor, so the `* (1 / 6)` MUL is paired with the multiply, not with the
    quantizer after ReLU6 (which made that quantizer and the SE multiply look 6x off)."""
    import keras

    layers = keras.layers
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU(name="c1_relu")(layers.Conv2D(8, 3, padding="same", name="c1")(inputs))
    s = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = layers.Conv2D(8, 1, name="excite")(layers.Conv2D(4, 1, activation="relu")(s))
    s = layers.ReLU(6.0, name="hs_relu6")(s + 3.0) * (1.0 / 6.0)
    x = layers.Multiply(name="se_mul")([x, s])
    outputs = layers.Dense(4, name="head")(layers.GlobalAveragePooling2D()(x))
    data = np.random.default_rng(0).uniform(0, 1, (32, 8, 8, 3)).astype("float32")
    qat = tfslim.quantize_model(keras.Model(inputs, outputs))
    qat.compile("adam", "mse")
    qat.fit(data, np.zeros((32, 4), "float32"), epochs=1, verbose=0)
    report = tfslim.quantization_report(qat, data, target="mcu", max_samples=16)
    reasons = {u["name"]: u["reason"] for u in report.unmatched}
    assert "hs_relu6_quantizer" not in [r.name for r in report.layers]
    assert "rounds hs_relu6's output onto its int8 grid" in reasons["hs_relu6_quantizer"]
    third = next(r for r in report.layers if r.class_name == "Multiply" and r.name != "se_mul")
    assert third.op == "MUL" and third.match == "shape+order"
    assert third.float_range < 1.01  # The hard sigmoid's output, not ReLU6's (up to 6).
    for name in ("hs_relu6", third.name, "se_mul"):
        assert report.get(name).alone_rel_error < 0.05, name


def _qat_squeeze_excite():
    """A small QAT model with a global average (MEAN), a sigmoid gate and a Multiply whose
    rounding is a quantizer layer of its own, trained a little."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(1)
    inputs = keras.Input((8, 8, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu", name="conv")(inputs)
    s = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    s = layers.Conv2D(16, 1, activation="sigmoid", name="gate")(s)
    x = layers.Multiply(name="excite")([x, s])
    outputs = layers.Dense(4, name="head")(layers.GlobalAveragePooling2D(name="pool")(x))
    data = np.random.default_rng(0).uniform(0, 1, (64, 8, 8, 3)).astype("float32")
    qat = tfslim.quantize_model(keras.Model(inputs, outputs))
    qat.compile("adam", "mse")
    qat.fit(data, np.random.default_rng(1).normal(size=(64, 4)), epochs=2, verbose=0)
    return qat, data


def test_kernels_are_chosen_and_a_qat_layer_is_compared_with_what_qat_rounded(tmp_path):
    """Every compared tensor is read back from the kernels asked for (XNNPACK included, whose
    fused subgraphs hide their inner tensors otherwise). On a QAT model each layer is
    compared with the value QAT trained, its separate quantizer's rounding included: the
    convolutions and the Multiply agree with QAT on nearly every integer, on every kernel
    set; the builtin MEAN's truncation shows as its flips."""
    qat, data = _qat_squeeze_excite()
    converted = tfslim.convert(qat, verify=False)
    reports = {
        k: tfslim.quantization_report(qat, data, converted=converted, kernels=k, max_samples=32)
        for k in ("builtin", "xnnpack", "reference")
    }
    for kernels, report in reports.items():
        assert report.kernels == kernels
        assert f"on {kernels} kernels" in report.table().splitlines()[0]
        assert {r.name for r in report.layers} >= {"conv", "squeeze", "gate", "excite", "head"}
        for name in ("conv", "gate", "excite"):
            record = report.get(name)
            assert record.alone_flipped is not None and record.alone_flipped < 0.02, (
                kernels,
                name,
                record.alone_flipped,
            )
            # Against the quantizer's output, a Multiply's alone error is a few flips, not
            # the half-step rounding of every value.
            assert record.alone_rel_error < 0.01, (kernels, name, record.alone_rel_error)
    # Measured: 55% of the builtin MEAN's outputs flipped, none of XNNPACK's, 0.8% of the
    # reference kernel's.
    assert reports["builtin"].get("squeeze").alone_flipped > 0.2
    assert reports["xnnpack"].get("squeeze").alone_flipped < 0.05
    again = QuantizationReport.from_json(reports["xnnpack"].to_json(tmp_path / "r.json"))
    assert again.kernels == "xnnpack"
    assert again.get("squeeze").alone_flipped == reports["xnnpack"].get("squeeze").alone_flipped
