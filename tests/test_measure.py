"""`tfslim.measure`: one Footprint from the public inspect, benchmark and evaluate."""

import pytest

import tfslim


def test_footprint_matches_inspect_and_evaluate(mcu_tflite, digits):
    data = (digits[2][:100], digits[3][:100])
    fp = tfslim.measure(
        mcu_tflite, target="nano33ble", boards=["nano33ble", "rp2040"], data=data, latency_runs=3
    )
    report = tfslim.inspect(mcu_tflite, target=["nano33ble", "rp2040"])
    assert isinstance(fp, tfslim.Footprint)
    assert fp.flash_bytes == report["size_bytes"] == len(mcu_tflite)
    assert fp.gzip_bytes == report["gzip_bytes"] < fp.flash_bytes
    assert fp.arena_bytes == report["micro"]["arena_bytes"] > 0
    assert (fp.params, fp.macs, fp.fully_integer) == (
        report["params"],
        report["macs"],
        True,
    )
    assert fp.mcu_latency_estimate_ms == {
        b: report["targets"][b]["latency_estimate"]["value_ms"] for b in ("nano33ble", "rp2040")
    }
    # rp2040 (Cortex-M0+) is estimated slower than nano33ble (Cortex-M4F).
    assert fp.worst_mcu_latency_estimate_ms == fp.mcu_latency_estimate_ms["rp2040"]
    assert fp.quality == tfslim.evaluate(mcu_tflite, data)["tflite"]
    assert fp.metric == "accuracy" and fp.keras_quality is None
    assert fp.latency_ms > 0 and fp.latency_runtime in ("xnnpack", "builtin")
    assert fp.target == "nano33ble" and fp.fits()
    assert tfslim.Budget.from_target("nano33ble").violations(fp) == []

    # On a phone there is no arena to measure and no board to estimate.
    phone = tfslim.measure(mcu_tflite, target="mobile", latency_runs=0)
    assert phone.flash_bytes == fp.flash_bytes and phone.arena_bytes is None
    assert phone.mcu_latency_estimate_ms == {} and phone.latency_ms is None
    assert phone.quality is None and phone.board_reasons == {"mobile": []}


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"latency_runs": -1}, ValueError, "argument `latency_runs`"),
        ({"boards": "nano33ble"}, TypeError, "argument `boards`"),
        ({"boards": []}, TypeError, "argument `boards`"),
        ({"data": 3}, ValueError, "argument `data`"),
        ({"target": "toaster"}, ValueError, "argument `target`"),
    ],
)
def test_arguments_are_checked_before_measuring(kwargs, error, message):
    with pytest.raises(error, match=message):
        tfslim.measure(b"not checked before the arguments", **kwargs)
