import json
import os

import pytest

from tfslim import demo
from tfslim.architectures.digits import build_digits_cnn
from tfslim.benchmarking.footprint import Footprint
from tfslim.demo import output as demo_output
from tfslim.demo import report as demo_report
from tfslim.demo import run_demo
from tfslim.demo.boards import BOARDS


def test_demo_cnn_is_big_enough_for_the_size_claims():
    assert build_digits_cnn().count_params() >= 50_000


def _row(model, target, **figures):
    """A demo report row: the demo's own keys plus every Footprint field."""
    values = dict(
        flash_bytes=80_000,
        gzip_bytes=70_000,
        params=75_000,
        macs=100_000,
        fully_integer=True,
        arena_bytes=7_000 if target == "mcu" else None,
        latency_ms=0.006,
        latency_runtime="xnnpack",
        mcu_latency_estimate_ms={"nano33ble": 3.1, "rp2040": 6.0} if target == "mcu" else {},
        quality=0.98,
        keras_quality=0.98,
        agreement=1.0,
        sparsity=0.01,
        target=target,
        quantization="int8",
        board_reasons={"nano33ble": [], "rp2040": []} if target == "mcu" else {"mobile": []},
    )
    values.update(figures)
    return {
        "model": model,
        "description": f"{model} described",
        "file": f"digits_{model}_{target}.tflite",
        **Footprint(**values).to_dict(),
    }


def _report(rows):
    return {
        "dataset": "digits",
        "epochs": 1,
        "seconds": 1.0,
        "test_samples": 360,
        "models": rows,
    }


def test_report_labels_host_latency_and_mcu_estimates_apart():
    rows = [_row("float", "mobile"), _row("float", "mcu")]
    text = demo_report.markdown(_report(rows))
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    for column in ("host latency ms", "nano33ble ms (estimate)", "RAM (TFLM arena)", "agree"):
        assert f"| {column} |" in header
    mcu = next(line for line in text.splitlines() if line.startswith("| float | mcu |"))
    assert "| 0.006 |" in mcu and "| 3.1 |" in mcu and "| 6 |" in mcu
    mobile = next(line for line in text.splitlines() if line.startswith("| float | mobile |"))
    assert mobile.count("| - |") >= 3  # No arena and no board estimates for a phone file.
    assert "predicts the same class as the Keras model" in text and "360 test images" in text
    assert "Pruned and clustered models:" not in text


def test_pruned_rows_are_explained_from_their_figures():
    rows = [
        _row("float", "mobile"),
        _row("float", "mcu"),
        _row(
            "pruned",
            "mobile",
            flash_bytes=50_000,
            gzip_bytes=33_000,
            sparsity=0.8,
            sparse_tensors=4,
            latency_ms=0.0235,
            latency_runtime="builtin",
        ),
        _row("pruned", "mcu", gzip_bytes=28_000, sparsity=0.8),
        # Same architecture, sparse but as fast as dense: no XNNPACK claim for it.
        _row(
            "pruned_fast",
            "mobile",
            flash_bytes=60_000,
            sparsity=0.5,
            sparse_tensors=2,
            latency_ms=0.005,
        ),
    ]
    rows.append(_row("pruned_dense", "mobile", gzip_bytes=35_000, sparsity=0.8))
    notes = demo_report.pruning_notes(rows, {"mcu"})
    assert len(notes) == 4
    dense_phone = notes.pop()
    assert dense_phone.startswith("- **pruned_dense** (mobile): 80,000 B, 1.00x dense float")
    assert "stores its tensors dense" in dense_phone and "gzip 35,000 B, 0.50x dense" in dense_phone
    assert "TFLite Micro" not in dense_phone
    mobile, mcu, fast = notes
    assert mobile.startswith("- **pruned** (mobile): 50,000 B, 0.62x dense float")
    assert "4 tensors in TFLite's sparse format" in mobile
    assert "host latency 0.0235 ms vs 0.006 ms dense" in mobile
    assert "XNNPACK refused the sparse model" in mobile
    assert mcu.startswith("- **pruned** (mcu): 80,000 B, 1.00x dense float")
    assert "80% of its weights are zero" in mcu and "TFLite Micro reads only dense" in mcu
    assert "gzip 28,000 B, 0.40x dense" in mcu
    assert "XNNPACK" not in fast and "host latency 0.005 ms vs 0.006 ms dense" in fast
    assert "Pruned and clustered models:" in demo_report.markdown(_report(rows))


def test_channel_pruned_and_clustered_rows_are_explained_against_their_reference():
    float_mcu = _row("float", "mcu")
    channels = {
        **_row(
            "channels50",
            "mcu",
            flash_bytes=24_000,
            params=19_000,
            macs=30_000,
            arena_bytes=4_000,
            latency_ms=0.003,
            mcu_latency_estimate_ms={"nano33ble": 1.2, "rp2040": 2.0},
        ),
        "structure": "channels",
        "reference": "float",
    }
    clustered = {
        **_row(
            "clustered16",
            "mcu",
            flash_bytes=48_000,
            gzip_bytes=40_000,
            arena_bytes=60_000,
            ops={"CUSTOM:TFLM_DECODE": 2, "CONV_2D": 2},
        ),
        "structure": "clusters",
        "reference": "float",
    }
    rows = [_row("float", "mobile"), float_mcu, channels, clustered]
    notes = demo_report.pruning_notes(rows, {"mcu"})
    assert len(notes) == 2
    channel_note, cluster_note = notes
    assert channel_note.startswith("- **channels50** (mcu): 24,000 B, 0.30x dense float")
    assert "params 19,000 vs 75,000 (0.25x)" in channel_note
    assert "arena 4,000 B vs 7,000 B (0.57x)" in channel_note
    assert "host latency 0.003 ms vs 0.006 ms (0.50x)" in channel_note
    assert "nano33ble estimate 1.2 ms vs 3.1 ms" in channel_note
    assert cluster_note.startswith("- **clustered16** (mcu): 48,000 B, 0.60x dense float")
    assert "LUT compression" in cluster_note and "gzip 40,000 B vs 70,000 B" in cluster_note
    assert "needs more RAM: arena 60,000 B vs 7,000 B (8.57x)" in cluster_note
    assert "accuracy is the uncompressed int8 file's" in cluster_note


def _fake_variants(data, epochs, log, quick):
    import keras

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    yield demo._Variant("tiny", "an untrained tiny model", model)


def _fake_measure(name, description, model, data, target, out_dir, log, **options):
    (out_dir / f"digits_{name}_{target}.tflite").write_bytes(b"new " + target.encode())
    if target == "mcu" and os.environ.get("TFSLIM_TEST_INTERRUPT"):
        raise KeyboardInterrupt
    return _row(name, target)


def _old_output(out):
    out.mkdir()
    (out / "report.json").write_text(json.dumps({"models": [{"file": "digits_old_mcu.tflite"}]}))
    (out / "report.md").write_text("old report")
    (out / "digits_old_mcu.tflite").write_bytes(b"old")
    (out / "reference").mkdir()
    (out / "reference" / "manifest.json").write_text("{}")


def test_existing_output_is_refused_without_overwrite(tmp_path):
    out = tmp_path / "models"
    _old_output(out)
    with pytest.raises(FileExistsError, match="argument `out_dir`.*overwrite=True"):
        run_demo(out_dir=out, quick=True, log=lambda *_: None)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="argument `out_dir`"):
        run_demo(out_dir=tmp_path / "file", log=lambda *_: None)
    with pytest.raises(ValueError, match="argument `epochs`"):
        run_demo(out_dir=tmp_path / "new", epochs=0, log=lambda *_: None)
    assert (out / "report.md").read_text() == "old report"


def test_interrupted_rerun_leaves_the_old_folder_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_variants", _fake_variants)
    monkeypatch.setattr(demo, "_measure", _fake_measure)
    monkeypatch.setenv("TFSLIM_TEST_INTERRUPT", "1")
    out = tmp_path / "models"
    _old_output(out)
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(KeyboardInterrupt):
        run_demo(out_dir=out, overwrite=True, log=lambda *_: None)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]  # no hidden leftovers


def test_rerun_swaps_in_a_complete_folder_and_keeps_foreign_files(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "_variants", _fake_variants)
    monkeypatch.setattr(demo, "_measure", _fake_measure)
    out = tmp_path / "models"
    _old_output(out)
    # A folder left by a killed run (its process is gone) is cleaned up.
    stale = tmp_path / f".models.demo-new-{2**22 + 12345}-x"
    stale.mkdir()
    report = run_demo(out_dir=out, overwrite=True, log=lambda *_: None)
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "digits_tiny_mcu.tflite",
        "digits_tiny_mobile.tflite",
        "reference",
        "report.json",
        "report.md",
    ]
    assert (out / "reference" / "manifest.json").read_text() == "{}"
    assert json.loads((out / "report.json").read_text()) == report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["models"]
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)


def test_a_run_killed_between_the_renames_gets_its_old_output_back(tmp_path):
    out = tmp_path / "models"
    old = tmp_path / f".models.demo-old-{2**22 + 12345}-x"
    old.mkdir()
    (old / "report.md").write_text("complete old output")
    demo_output.clean_stale(out)
    assert (out / "report.md").read_text() == "complete old output"
    assert not old.exists()


@pytest.mark.slow
def test_quick_demo_writes_models_and_reports(tmp_path):
    out = tmp_path / "models"
    report = run_demo(out_dir=out, quick=True, log=lambda *_: None)
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    markdown = (out / "report.md").read_text()
    assert "| model | target |" in markdown and "| host latency ms |" in markdown
    rows = {(r["model"], r["target"]): r for r in report["models"]}
    # Quick stops unstructured pruning before pruning-preserving QAT and the students.
    assert {m for m, _ in rows} == {"float", "qat", "pruned80", "channels50", "clustered16"}
    for row in report["models"]:
        # Every row is a Footprint plus the demo's own keys.
        assert Footprint.from_dict(row).to_dict() == {
            k: row[k] for k in Footprint.from_dict(row).to_dict()
        }
    assert rows[("qat", "mobile")]["quantization"] == "int8"
    assert rows[("pruned80", "mcu")]["sparsity"] >= 0.7
    # A sparse-encoded phone file is smaller; a dense file (every board file, and the
    # converter's choice for integer phone files) is as large as the unpruned one but
    # gzips small.
    for target in ("mobile", "mcu"):
        pruned, dense = rows[("pruned80", target)], rows[("float", target)]
        if pruned["sparse_tensors"]:
            assert pruned["flash_bytes"] < 0.8 * dense["flash_bytes"]
        else:
            assert pruned["flash_bytes"] == pytest.approx(dense["flash_bytes"], rel=0.02)
            assert pruned["gzip_bytes"] < 0.6 * dense["gzip_bytes"]
    assert rows[("pruned80", "mcu")]["sparse_tensors"] == 0
    # Each pruned row gets its one explaining line.
    assert markdown.count("- **pruned80** (") == 2
    # Channel pruning removes weights physically; LUT compression trades flash for arena.
    dense, channels = rows[("float", "mcu")], rows[("channels50", "mcu")]
    clustered = rows[("clustered16", "mcu")]
    assert channels["fully_integer"] and clustered["fully_integer"]
    assert channels["params"] < 0.5 * dense["params"]
    assert channels["flash_bytes"] < dense["flash_bytes"]
    assert channels["arena_bytes"] <= dense["arena_bytes"]
    assert clustered["flash_bytes"] < dense["flash_bytes"]
    assert clustered["arena_bytes"] >= dense["arena_bytes"]
    assert clustered["ops"].get("CUSTOM:TFLM_DECODE", 0) >= 1
    assert clustered["latency_ms"] is None  # LiteRT cannot run DECODE: no host figure
    # The compressed file is not a .tflite a phone could load; its uncompressed twin is.
    assert clustered["file"] == "digits_clustered16_mcu.lut.tflm"
    assert clustered["uncompressed_file"] == "digits_clustered16_mcu.tflite"
    assert (out / clustered["uncompressed_file"]).stat().st_size > clustered["flash_bytes"]
    assert not [p.name for p in out.glob("*.tflite") if b"TFLM_DECODE" in p.read_bytes()]
    assert markdown.count("- **channels50** (mcu): ") == 1
    assert markdown.count("- **clustered16** (mcu): ") == 1
    assert ("channels50", "mobile") not in rows and ("clustered16", "mobile") not in rows
    for row in report["models"]:
        path = out / row["file"]
        assert path.stat().st_size == row["flash_bytes"]
        assert 0.5 < row["quality"] <= 1.0
        assert row["agreement"] >= 0.9
    mcu = rows[("float", "mcu")]
    assert mcu["fully_integer"] and mcu["arena_bytes"] > 0
    assert mcu["board_reasons"]["nano33ble"] == []
    assert set(mcu["mcu_latency_estimate_ms"]) == set(BOARDS)
    assert rows[("float", "mobile")]["mcu_latency_estimate_ms"] == {}
    assert not list(out.glob("*.tmp"))
    # The shrink section: the model as given is over half its own flash, a student fits.
    front = report["shrink"]
    shrunk = {c["name"]: c for c in front["candidates"]}
    assert front["budget"]["max_flash_bytes"] == rows[("float", "mcu")]["flash_bytes"] // 2
    assert not shrunk["original"]["feasible"] and shrunk["original"]["violations"]
    assert shrunk["width25"]["flash_bytes"] <= front["budget"]["max_flash_bytes"]
    assert front["best"] == "width25" and front["front"]["flash_bytes"] == ["width25"]
    assert (out / "front.png").read_bytes()[:4] == b"\x89PNG"
    assert (out / "shrink" / "width25.tflite").stat().st_size == shrunk["width25"]["flash_bytes"]
    assert "## Pareto front: `tfslim.shrink`" in markdown and "](front.png)" in markdown
