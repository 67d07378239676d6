"""Tests for tfslim.litert.compression and `convert(..., compress=True)`."""

from pathlib import Path

import keras
import numpy as np
import pytest

import tfslim
from tfslim.litert import compression


@pytest.fixture(scope="module")
def clustered_int8(digits):
    """A digits CNN whose kernels hold 16 values, as int8 for a board: (dense flatbuffer, x)."""
    keras.utils.set_random_seed(0)
    model = tfslim.architectures.build_digits_cnn(width=16, dense_units=64)
    plain = tfslim.strip_clustering(tfslim.cluster_weights(model, 16))
    result = tfslim.convert(plain, target="mcu", calibration_data=digits[0][:64])
    return bytes(result.flatbuffer), digits[2][:40]


def _run_micro(flatbuffer, x):
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(bytes(flatbuffer), arena_size=2_000_000)
    params = interpreter.get_input_details(0)["quantization_parameters"]
    scale, zero = params["scales"][0], params["zero_points"][0]
    outputs = []
    for sample in x:
        interpreter.set_input(np.round(sample[None] / scale + zero).astype(np.int8), 0)
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).copy())
    return np.concatenate(outputs)


def test_compressed_model_is_smaller_and_computes_identical_outputs(clustered_int8):
    dense, x = clustered_int8
    compressed, report = compression.compress_micro(dense)
    assert len(compressed) == report["compressed_bytes"] < 0.65 * len(dense)
    assert report["dense_bytes"] == len(dense)
    np.testing.assert_array_equal(_run_micro(compressed, x), _run_micro(dense, x))


def test_tiny_and_many_valued_tensors_stay_dense(clustered_int8):
    dense, _ = clustered_int8
    names = {c["name"] for c in compression.compression_candidates(dense)}
    candidates = compression.compression_candidates(dense)
    assert all(c["estimated_bytes"] < c["bytes"] for c in candidates)
    assert all(c["bits"] == 4 for c in candidates)  # 16 values -> 4-bit indices
    # The first convolution (16 x 3 x 3 x 1 = 144 bytes) would grow: left dense.
    assert all(c["bytes"] > 200 for c in candidates) and names


def test_unclustered_model_has_nothing_to_compress(mcu_tflite):
    out, report = compression.compress_micro(mcu_tflite)
    assert out == bytes(mcu_tflite)
    assert report["compressed"] == [] and report["compressed_bytes"] == len(mcu_tflite)


def test_ram_budget_leaves_the_largest_tensor_dense_with_a_warning(clustered_int8):
    dense, _ = clustered_int8
    full, full_report = compression.compress_micro(dense)
    arena = compression.measure_arena(full)
    dense_arena = compression.measure_arena(dense)
    assert arena > dense_arena  # DECODE expands kernels into the arena.
    largest = compression.compression_candidates(dense)[0]["name"]
    with pytest.warns(tfslim.errors.TfslimWarning, match="uncompressed.*RAM budget"):
        out, report = compression.compress_micro(
            dense, ram_budget=arena - 1, measure_arena=compression.measure_arena
        )
    assert report["left_dense"][0] == largest
    assert largest not in report["compressed"]
    assert len(full) < len(out) <= len(dense)
    assert report["arena_bytes"] is None or report["arena_bytes"] < arena


def test_convert_compress_argument(small_cnn, digits):
    with pytest.raises(ValueError, match="compress.*target='mobile'.*Received: compress=True"):
        tfslim.convert(small_cnn, target="mobile", compress=True)
    with pytest.raises(TypeError, match="Received: compress='yes'"):
        tfslim.convert(small_cnn, target="mcu", compress="yes")


@pytest.mark.slow
def test_convert_compresses_for_a_board(digits):
    keras.utils.set_random_seed(0)
    model = tfslim.architectures.build_digits_cnn(width=16, dense_units=64)
    plain = tfslim.strip_clustering(tfslim.cluster_weights(model, 16))
    dense = tfslim.convert(plain, target="nano33ble", calibration_data=digits[0][:64])
    result = tfslim.convert(
        plain, target="nano33ble", calibration_data=digits[0][:64], compress=True
    )
    assert result.size_bytes < 0.65 * dense.size_bytes
    assert result.compression["left_dense"] == []
    assert result.compression["arena_bytes"] > compression.measure_arena(dense.flatbuffer)


def test_inspect_and_export_c_take_a_compressed_model(clustered_int8, tmp_path):
    dense, _ = clustered_int8
    compressed, _ = compression.compress_micro(dense)
    report = tfslim.inspect(compressed, target="nano33ble")
    assert report["ops"]["CUSTOM:TFLM_DECODE"] >= 1
    assert report["size_bytes"] == len(compressed)
    assert report["micro"]["supported"] and not report["micro"]["problems"]
    # DECODE writes the expanded kernels into the arena: measured, larger than dense.
    dense_arena = tfslim.inspect(dense)["micro"]["arena_bytes"]
    assert report["micro"]["arena_bytes"] > dense_arena
    assert report["targets"]["nano33ble"]["ram_bytes"] == report["micro"]["arena_bytes"]
    source, _ = tfslim.export_c(compressed, tmp_path / "model_data.cc")
    assert f"{len(compressed)}" in Path(source).read_text()


def test_litert_refusing_a_compressed_model_says_why(clustered_int8):
    """LiteRT has no DECODE kernel; its own refusal ("num_scales must be 1") hides that."""
    from tfslim.errors import InvalidModelError

    dense, x = clustered_int8
    compressed, _ = compression.compress_micro(dense)
    with pytest.raises(InvalidModelError, match=r"LUT-compressed for TFLite Micro.*no DECODE"):
        tfslim.predict(compressed, x[:1])
