import json

import pytest

from tfslim.architectures.digits import build_digits_cnn
from tfslim.demo import run_demo


def test_demo_cnn_is_big_enough_for_the_size_claims():
    assert build_digits_cnn().count_params() >= 50_000


@pytest.mark.slow
def test_quick_demo_writes_models_and_reports(tmp_path):
    out = tmp_path / "models"
    report = run_demo(out_dir=out, quick=True, log=lambda *_: None)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    assert "| model | target |" in (out / "report.md").read_text()
    rows = {(r["model"], r["target"]): r for r in report["models"]}
    assert {m for m, _ in rows} >= {
        "float",
        "qat",
        "pruned80",
        "pruned80_qat",
        "student",
        "distilled",
    }
    assert rows[("distilled", "mcu")]["fully_integer"]
    assert rows[("pruned80_qat", "mcu")]["fully_integer"]
    assert rows[("pruned80_qat", "mcu")]["sparsity"] >= 0.7  # zeros survive QAT into int8
    assert rows[("distilled", "mcu")]["sparsity"] >= 0.4
    assert rows[("student", "mcu")]["params"] < 0.3 * rows[("float", "mcu")]["params"]
    assert rows[("qat", "mobile")]["quantization"] == "int8"
    assert rows[("pruned80", "mcu")]["sparsity"] >= 0.7
    # Sparse encoding shrinks the phone file; the board file stays dense but gzips small.
    assert (
        rows[("pruned80", "mobile")]["size_bytes"] < 0.8 * rows[("float", "mobile")]["size_bytes"]
    )
    assert rows[("pruned80", "mcu")]["gzip_bytes"] < 0.6 * rows[("float", "mcu")]["gzip_bytes"]
    for row in report["models"]:
        path = out / row["file"]
        assert path.stat().st_size == row["size_bytes"]
        assert 0.5 < row["tflite_accuracy"] <= 1.0
        assert row["agreement"] >= 0.9
    mcu = rows[("float", "mcu")]
    assert mcu["fully_integer"] and mcu["arena_bytes"] > 0
    assert mcu["boards"]["nano33ble"] is True
    assert not list(out.glob("*.tmp"))
