import numpy as np
import pytest

import tfslim
from tfslim.errors import InvalidModelError


def test_latency_with_and_without_xnnpack(mcu_tflite):
    result = tfslim.benchmark(mcu_tflite, runs=20, warmup=2, target="nano33ble")
    assert set(result["latency"]) == {"xnnpack", "builtin"}
    assert result["latency"]["xnnpack"]["delegate"] == "xnnpack"
    assert result["latency"]["builtin"]["delegate"] == "builtin"
    for stats in result["latency"].values():
        lat = stats["latency_ms"]
        assert 0 < lat["min"] <= lat["median"] <= lat["p90"]
        assert stats["runs"] == 20 and stats["init_ms"] > 0
        # The interpreter's own working set, measured in a child without TensorFlow: a
        # 10 kB model takes well under the 775 MB a TensorFlow process reported.
        assert 0 < stats["model_memory_bytes"] <= stats["invoke_peak_memory_bytes"]
        assert stats["invoke_peak_memory_bytes"] < stats["process_peak_rss_bytes"] < 400e6
    est = result["mcu_latency_estimate"]["nano33ble"]
    assert est["estimate"] is True and "formula" in est


def test_accuracy_side_by_side_with_keras(mcu_tflite, small_cnn, digits):
    _, _, x_test, y_test = digits
    result = tfslim.benchmark(
        mcu_tflite, data=(x_test, y_test), keras_model=small_cnn, runs=5, xnnpack=True
    )
    acc = result["accuracy"]
    keras_acc = float(np.mean(small_cnn.predict(x_test, verbose=0).argmax(1) == y_test))
    assert acc["keras"] == pytest.approx(keras_acc, abs=1e-6)
    assert acc["n"] == len(x_test)
    assert abs(acc["delta"]) <= 0.03 and acc["agreement"] >= 0.95
    assert list(result["latency"]) == ["xnnpack"]


def test_predict_dequantizes_int8_outputs(mcu_tflite, small_cnn, digits):
    x = digits[2][:16]
    got = tfslim.predict(mcu_tflite, x)
    assert got.dtype == np.float32 and got.shape == (16, 10)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=0.05)  # softmax survives int8
    np.testing.assert_allclose(got, small_cnn.predict(x, verbose=0), atol=0.1)


def test_bad_arguments(mcu_tflite):
    with pytest.raises(ValueError, match=r"argument `runs`.*Received: runs=0"):
        tfslim.benchmark(mcu_tflite, runs=0)
    with pytest.raises(ValueError, match=r"argument `data`.*10 samples and 3 labels"):
        tfslim.benchmark(mcu_tflite, data=(np.zeros((10, 8, 8, 1)), np.zeros(3)), runs=1)
    with pytest.raises(InvalidModelError, match="does not match the input"):
        tfslim.predict(mcu_tflite, np.zeros((2, 4, 4, 1)))
    with pytest.raises(ValueError, match=r"argument `data`.*\(N, \*\(8, 8, 1\)\)"):
        tfslim.benchmark(mcu_tflite, data=(np.zeros((3, 5)), np.zeros(3)), runs=1)
    with pytest.raises(ValueError, match="argument `max_seconds`"):
        tfslim.benchmark(mcu_tflite, max_seconds=-1)


def test_corrupted_model_error_names_the_file(tmp_path, mcu_tflite):
    path = tmp_path / "broken.tflite"
    path.write_bytes(mcu_tflite[:200])
    with pytest.raises(InvalidModelError, match="broken.tflite"):
        tfslim.benchmark(path, runs=1)


def test_model_memory_tracks_the_model_not_the_process(mcu_tflite):
    from pathlib import Path

    big = Path(__file__).parents[1] / "tflite_models" / "reference" / "mobilenet_v1_int8.tflite"
    small = tfslim.benchmark(mcu_tflite, runs=2, warmup=1, xnnpack=False)["latency"]["builtin"]
    large = tfslim.benchmark(big, runs=2, warmup=1, xnnpack=False)["latency"]["builtin"]
    assert small["memory_source"] == large["memory_source"] is not None
    # LiteRT's arena holds at least the activations TFLite Micro plans into its 103,536 B.
    assert 103_536 <= large["model_memory_bytes"] <= large["invoke_peak_memory_bytes"] < 10e6
    assert 0 < small["model_memory_bytes"] < large["model_memory_bytes"]
