import pytest

import tfslim
from tfslim.litert.targets import Target


def test_boards_have_datasheet_budgets():
    boards = {t.name: t for t in tfslim.list_targets()}
    assert {"mobile", "mcu", "nano33ble", "stm32f746", "nucleo-l4r5zi", "esp32s3", "rp2040"} <= set(
        boards
    )
    assert boards["nano33ble"].flash_bytes == 1024 * 1024
    assert boards["nano33ble"].ram_bytes == 256 * 1024
    assert boards["nano33ble"].clock_hz == 64_000_000
    assert boards["stm32f746"].ram_bytes == 320 * 1024
    assert boards["nucleo-l4r5zi"].flash_bytes == 2 * 1024 * 1024
    assert boards["esp32s3"].flash_bytes == 8 * 1024 * 1024
    assert boards["rp2040"].ram_bytes == 264 * 1024
    for t in boards.values():
        assert t.source
        if t.is_micro:
            assert t.quantization == "int8" and t.io_dtype == "int8" and not t.sparse_weights


def test_get_target_is_case_insensitive_and_passes_targets_through():
    assert tfslim.get_target("NANO33BLE").name == "nano33ble"
    custom = Target(name="x", description="x", kind="mcu", quantization="int8")
    assert tfslim.get_target(custom) is custom


def test_unknown_target_names_the_argument():
    with pytest.raises(ValueError, match=r"argument `target`.*Received: target='arduino'"):
        tfslim.get_target("arduino")
    with pytest.raises(TypeError, match="argument `target`"):
        tfslim.get_target(3)


def test_latency_estimate_is_labelled_with_its_formula():
    est = tfslim.get_target("nano33ble").estimate_latency_ms(64_000_000)
    assert est["estimate"] is True
    assert est["value_ms"] == pytest.approx(2000.0)  # 64M MACs * 2 cycles / 64 MHz
    assert "macs * cycles_per_mac / clock_hz" in est["formula"]
    assert tfslim.get_target("mobile").estimate_latency_ms(10) is None
