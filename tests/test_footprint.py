"""`tfslim.Footprint`, the budgets that check it and the one report writer (pure Python)."""

import json
import os

import pytest

from tfslim.benchmarking.footprint import Footprint
from tfslim.benchmarking.report import (
    Column,
    footprint_columns,
    format_bytes,
    format_table,
    write_report_files,
)
from tfslim.tuning.budget import Budget


def _footprint(**overrides):
    values = dict(
        flash_bytes=4000,
        gzip_bytes=2663,
        params=1486,
        macs=2736,
        fully_integer=True,
        arena_bytes=2272,
        latency_ms=0.0042,
        mcu_latency_estimate_ms={"nano33ble": 0.086, "rp2040": 0.165},
        quality=0.95,
        metric="accuracy",
        board_reasons={"nano33ble": [], "rp2040": ["model is 4000 bytes, flash budget 10"]},
    )
    values.update(overrides)
    return Footprint(**values)


def test_round_trip_through_json():
    fp = _footprint(ops={"CONV_2D": 1})
    restored = Footprint.from_dict(json.loads(json.dumps(fp.to_dict())))
    assert restored == fp
    assert restored.mcu_latency_estimate_ms == {"nano33ble": 0.086, "rp2040": 0.165}
    # Keys that are not fields (a trial id in a tuner record) are ignored.
    assert Footprint.from_dict({**fp.to_dict(), "trial_id": "00"}) == fp
    with pytest.raises(ValueError, match=r"without \['macs'\]"):
        Footprint.from_dict({k: v for k, v in fp.to_dict().items() if k != "macs"})


def test_is_frozen_and_owns_its_mappings():
    estimates = {"nano33ble": 0.5}
    fp = _footprint(mcu_latency_estimate_ms=estimates)
    estimates["nano33ble"] = 99.0
    assert fp.mcu_latency_estimate_ms == {"nano33ble": 0.5}
    with pytest.raises(AttributeError):
        fp.flash_bytes = 1


def test_worst_estimate_and_fits():
    fp = _footprint()
    assert fp.worst_mcu_latency_estimate_ms == 0.165
    assert _footprint(mcu_latency_estimate_ms={}).worst_mcu_latency_estimate_ms is None
    assert fp.fits("nano33ble") and not fp.fits("rp2040") and not fp.fits()
    with pytest.raises(ValueError, match="argument `board`.*Received: board='esp32s3'"):
        fp.fits("esp32s3")


@pytest.mark.parametrize(
    "field, value",
    [("flash_bytes", 1.5), ("flash_bytes", -1), ("arena_bytes", "2k"), ("macs", True)],
)
def test_rejects_non_int_byte_counts(field, value):
    with pytest.raises(TypeError, match=f"argument `{field}`.*Received: {field}="):
        _footprint(**{field: value})


def test_rejects_bad_estimates_and_latency():
    with pytest.raises(TypeError, match="argument `mcu_latency_estimate_ms`"):
        _footprint(mcu_latency_estimate_ms={"nano33ble": "fast"})
    with pytest.raises(TypeError, match="argument `latency_ms`"):
        _footprint(latency_ms=float("nan"))


def test_budget_checks_a_footprint_on_its_slowest_board():
    fp = _footprint()
    assert Budget(max_flash_bytes=4000, max_arena_bytes=2272).violations(fp) == []
    budget = Budget(max_arena_bytes=2000, max_mcu_latency_estimate_ms=0.1)
    assert budget.violations(fp) == [
        "arena_bytes 2272 > max_arena_bytes 2000",
        "mcu_latency_estimate_ms 0.165 > max_mcu_latency_estimate_ms 0.1",
    ]
    assert budget.overshoot(fp) == pytest.approx(0.65)
    # A phone footprint has no arena: a RAM limit counts it as not measured.
    phone = _footprint(arena_bytes=None, mcu_latency_estimate_ms={})
    assert Budget(max_arena_bytes=10**6).violations(phone) == [
        "arena_bytes not measured, max_arena_bytes 1000000"
    ]
    assert Budget(max_latency_ms=0.001).violations(fp) == [
        "latency_ms 0.0042 > max_latency_ms 0.001"
    ]


@pytest.mark.parametrize("field", ["max_flash_bytes", "max_arena_bytes"])
@pytest.mark.parametrize("value", [1.5, 1000.0, 0, -5, True, "1"])
def test_budget_byte_limits_are_positive_ints(field, value):
    with pytest.raises(ValueError, match=f"argument `{field}`. Expected a positive int"):
        Budget(**{field: value})


def test_budget_time_limits_take_floats():
    assert Budget(max_latency_ms=1.5, max_mcu_latency_estimate_ms=2).max_latency_ms == 1.5
    with pytest.raises(ValueError, match="argument `max_latency_ms`"):
        Budget(max_latency_ms=float("inf"))


def test_footprint_columns_have_one_header_per_figure():
    row = _footprint().to_dict()
    columns = footprint_columns(["nano33ble", "rp2040"])
    headers = [c.header for c in columns]
    assert headers == [
        "flash",
        "gzip",
        "RAM (TFLM arena)",
        "host latency ms",
        "nano33ble ms (estimate)",
        "rp2040 ms (estimate)",
        "quality",
    ]
    assert [c.cell(row) for c in columns] == [
        "4,000 B",
        "2,663 B",
        "2,272 B",
        "0.0042",
        "0.086",
        "0.165",
        "0.95",
    ]
    # A row without the board, or without an arena, shows "-".
    missing = _footprint(arena_bytes=None, mcu_latency_estimate_ms={}).to_dict()
    assert [c.cell(missing) for c in columns][2:6] == ["-", "0.0042", "-", "-"]


def test_markdown_and_text_tables():
    rows = [{"name": "a|b", "flash_bytes": 4000}, {"name": "long name", "flash_bytes": None}]
    columns = [Column("name", "name", str, "left"), Column("flash", "flash_bytes", format_bytes)]
    assert format_table(rows, columns).splitlines() == [
        "| name | flash |",
        "| --- | ---: |",
        "| a\\|b | 4,000 B |",
        "| long name | - |",
    ]
    text = format_table(
        rows,
        columns,
        markdown=False,
    ).splitlines()
    assert text == [
        "name         flash",
        "---------  -------",
        "a|b        4,000 B",
        "long name        -",
    ]
    assert format_table([], columns, markdown=False).splitlines()[0] == "name  flash"
    with pytest.raises(ValueError, match="argument `align`"):
        Column("x", "x", align="centre")


def test_report_files_are_written_atomically(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.add_subplot(1, 1, 1).plot([0, 1], [1, 0])
    files = write_report_files(tmp_path, "r", markdown="# hi\n", data={"a": 1}, figure=fig)
    assert (tmp_path / "r.md").read_text() == "# hi\n"
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 1}
    assert (tmp_path / "r.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files == {
        k: str(tmp_path / f"r.{e}")
        for k, e in [("markdown", "md"), ("json", "json"), ("png", "png")]
    }
    # Existing files are refused without overwrite, and none of the three is touched.
    with pytest.raises(FileExistsError, match="overwrite"):
        write_report_files(tmp_path, "r", markdown="# new\n", data={"a": 2})
    assert (tmp_path / "r.md").read_text() == "# hi\n"
    write_report_files(tmp_path, "r", markdown="# new\n", data={"a": 2}, overwrite=True)
    assert json.loads((tmp_path / "r.json").read_text()) == {"a": 2}
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.md", "r.png"]  # no temporaries left


def test_unserializable_report_leaves_earlier_files_whole(tmp_path):
    write_report_files(tmp_path, "r", markdown="# old\n", data={"a": 1})
    with pytest.raises(AttributeError):  # not a figure: fails before any file is replaced
        write_report_files(
            tmp_path, "r", markdown="# new\n", data={"a": 1}, figure=object(), overwrite=True
        )
    assert (tmp_path / "r.md").read_text() == "# old\n"
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.md"]
