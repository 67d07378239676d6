"""The `"cluster"` lever of `tfslim.shrink`: LUT-compressed on a board, judged by that file."""

import json
from pathlib import Path

import numpy as np
import pytest

from tests.test_clustering_cluster_preserve import int8_kernels
from tfslim.benchmarking.footprint import Footprint
from tfslim.litert.targets import get_target
from tfslim.strategies import Candidate, CandidateSpec, candidates
from tfslim.strategies.report import plot_front
from tfslim.strategies.shrink import cluster_notes


@pytest.fixture(scope="module")
def wide_dense_cnn(digits):
    """A digits CNN whose 2,880-weight Dense kernel LUT compression shrinks."""
    import keras

    keras.utils.set_random_seed(0)
    x_train, y_train, _, _ = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    return model


def test_cluster_candidate_is_lut_compressed_and_judged_by_the_compressed_file(
    tmp_path, wide_dense_cnn, digits, monkeypatch
):
    import tfslim
    from tfslim.litert import compression
    from tfslim.strategies import shrink

    x_train, y_train, x_test, y_test = digits
    train, val = (x_train[:300], y_train[:300]), (x_test[:200], y_test[:200])
    kwargs = dict(target="nano33ble", epochs=1, clusters=8, directory=tmp_path, latency_runs=0)
    # A first run makes only the baseline; the rerun adding "cluster" keeps it.
    first = shrink(wide_dense_cnn, train, val, techniques=["qat"], max_candidates=1, **kwargs)
    assert [c.name for c in first.candidates] == ["original"]
    lines = []
    result = shrink(wide_dense_cnn, train, val, techniques=["cluster"], log=lines.append, **kwargs)
    assert [c.name for c in result.candidates] == ["original", "cluster8"]
    assert "(resumed)" in lines[0] and "(resumed)" not in lines[1]
    original, clustered = result.candidates
    assert clustered.compressed and not original.compressed
    assert "LUT-compressed (TFLite Micro only)" in clustered.description
    assert "clustering-preserving QAT" in clustered.description

    # As in the demo: the compressed file is `.lut.tflm`, the `.tflite` its uncompressed twin.
    assert Path(clustered.tflite_path) == tmp_path / "cluster8.lut.tflm"
    assert Path(clustered.uncompressed_path) == tmp_path / "cluster8.tflite"
    assert not (tmp_path / "cluster8.uncompressed.tflite").exists()
    # At most 8 values per kernel (per channel for the per-channel convolution).
    twin = Path(clustered.uncompressed_path).read_bytes()
    for kernel, per_channel in int8_kernels(twin):
        rows = kernel.reshape(kernel.shape[0], -1) if per_channel else kernel.reshape(1, -1)
        assert max(np.unique(row).size for row in rows) <= 8
    # The deployed file is the uncompressed one LUT-compressed as compress=True makes it.
    packed = Path(clustered.tflite_path).read_bytes()
    ram = get_target("nano33ble").ram_bytes
    expected, report = compression.compress_micro(
        twin, ram_budget=ram, measure_arena=compression.measure_arena
    )
    assert packed == expected and report["compressed"]
    fp = clustered.footprint
    assert fp.ops.get("CUSTOM:TFLM_DECODE", 0) >= 1
    # Flash and arena are the compressed file's, not the uncompressed twin's.
    inspected = tfslim.inspect(clustered.tflite_path, target=["nano33ble"])
    assert fp.flash_bytes == len(packed) == inspected["size_bytes"] < len(twin)
    assert fp.arena_bytes == inspected["micro"]["arena_bytes"]
    twin_arena = compression.measure_arena(twin)
    assert fp.arena_bytes > twin_arena  # DECODE expands the kernels into the arena.
    # Quality is the twin's (LiteRT cannot run the compressed file); no host latency.
    assert fp.quality == tfslim.evaluate(twin, val)["tflite"] and 0.3 < fp.quality <= 1
    assert fp.latency_ms is None and "TFLite Micro only" in fp.latency_note
    with pytest.raises(tfslim.errors.InvalidModelError, match="LUT-compressed"):
        tfslim.predict(clustered.tflite_path, x_test[:1])
    notes = " ".join(result.notes)
    assert "LUT-compressed for TFLite Micro: cluster8 (`cluster8.lut.tflm`)" in notes
    record = json.loads((tmp_path / "report.json").read_text())["candidates"][1]
    assert record["compressed"] and record["tflite"] == "cluster8.lut.tflm"
    assert record["uncompressed_tflite"] == "cluster8.tflite"
    report = (tmp_path / "report.md").read_text()
    row = next(r for r in report.splitlines() if "| cluster8 |" in r)
    assert "LUT-compressed (TFLite Micro only)" in row
    assert "cluster8 (`cluster8.lut.tflm`)" in report
    labels = {t.get_text() for t in plot_front(result).axes[0].texts}
    assert labels == {"original", "cluster8 (LUT, TFLM only)"}

    # A rerun resumes it (nothing trains) and judges it by the compressed figures: an arena
    # limit the twin would meet rules it out; a flash limit that the twin and the model as
    # given break lets it in, the only candidate that fits.
    monkeypatch.setattr(candidates, "train_candidate", lambda *a, **k: pytest.fail("trained"))
    flash = min(len(twin), original.footprint.flash_bytes) - 1
    budget = tfslim.Budget(max_flash_bytes=flash, max_arena_bytes=fp.arena_bytes - 1)
    judged = shrink(wide_dense_cnn, train, val, techniques=["cluster"], budget=budget, **kwargs)
    again = judged["cluster8"]
    assert again.footprint == fp and again.uncompressed_path == clustered.uncompressed_path
    assert again.violations == [
        f"arena_bytes {fp.arena_bytes} > max_arena_bytes {fp.arena_bytes - 1}"
    ]
    loose = tfslim.Budget(max_flash_bytes=flash, max_arena_bytes=fp.arena_bytes)
    judged = shrink(wide_dense_cnn, train, val, techniques=["cluster"], budget=loose, **kwargs)
    assert not judged["original"].feasible and judged.best.name == "cluster8"
    assert (tmp_path / "best.lut.tflm").read_bytes() == packed
    assert (tmp_path / "best.tflite").read_bytes() == twin
    assert judged.files["best.lut.tflm"] == str(tmp_path / "best.lut.tflm")


def test_plan_clusters_alone_and_with_channel_pruning_not_with_sparsity():
    specs = candidates.plan_candidates(
        ("qat", "prune", "channels", "cluster"), widths=(0.5,), sparsity=0.5, clusters=32
    )
    assert [s.name for s in specs] == [
        "original",
        "qat",
        "prune50",
        "cluster32",
        "width50",
        "width50_prune50",
        "width50_cluster32",
    ]
    assert specs[-1].width == 0.5 and specs[-1].clusters == 32 and not specs[-1].sparsity
    assert specs[3].description() == (
        "clustered to 32 values per kernel, distilled + clustering-preserving QAT"
    )
    # Unclustered specs keep the dict a manifest written before the lever holds.
    assert "clusters" not in specs[1].to_dict() and specs[3].to_dict()["clusters"] == 32


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(clusters=1), ValueError, r"argument `clusters`.*\[2, 128\].*clusters=1"),
        (dict(clusters=256), ValueError, r"argument `clusters`.*clusters=256"),
        (dict(clusters=16.0), TypeError, r"argument `clusters`.*clusters=16.0"),
        (dict(clusters=16, sparsity=0.5), ValueError, r"argument `clusters`.*sparsity=0.5"),
        (dict(clusters=16, m_by_n=(2, 4)), ValueError, r"not combined with pruning"),
    ],
)
def test_a_bad_cluster_spec_is_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        CandidateSpec("c", **kwargs)


def _candidate(name, spec, flash, gzip, uncompressed=None):
    footprint = Footprint(
        flash_bytes=flash, gzip_bytes=gzip, params=1, macs=1, fully_integer=True, quality=0.9
    )
    return Candidate(
        name=name,
        description=name,
        spec=spec,
        footprint=footprint,
        violations=[],
        keras_path=f"/x/{name}.keras",
        tflite_path=f"/x/{name}.tflite",
        uncompressed_path=uncompressed,
    )


def test_notes_say_a_phone_gets_only_a_smaller_download():
    cands = [
        _candidate("qat", {"width": 1.0}, 4000, 2100),
        _candidate("cluster16", {"width": 1.0, "clusters": 16}, 4000, 1500),
        _candidate("width50_cluster16", {"width": 0.5, "clusters": 16}, 2500, 1000),
    ]
    notes = cluster_notes(cands, get_target("mobile"))
    assert notes == [
        "cluster16 on mobile: LiteRT has no LUT decoding, so the file is plain int8 (4,000 B "
        "flash); clustering shrinks only the download, gzip 1,500 B against qat's 2,100 B "
        "(4,000 B flash).",
        "width50_cluster16 on mobile: LiteRT has no LUT decoding, so the file is plain int8 "
        "(2,500 B flash); clustering shrinks only the download, gzip 1,000 B.",
    ]
    board = cluster_notes(cands[:2], get_target("nano33ble"))
    assert board == [
        "cluster16: nothing was LUT-compressed (no kernel shrank, or its expanded copy would "
        "not fit the board's RAM), so its file is plain int8."
    ]


def _footprint(flash, quality, arena=2000):
    return Footprint(
        flash_bytes=flash,
        gzip_bytes=flash // 2,
        params=flash,
        macs=10 * flash,
        fully_integer=True,
        arena_bytes=arena,
        quality=quality,
        metric="accuracy",
        target="nano33ble",
        board_reasons={"nano33ble": []},
    )


def _old_layout_run(directory):
    """A directory as shrink wrote it when a LUT-compressed file was `<name>.tflite` and its
    twin `<name>.uncompressed.tflite`."""
    from tfslim.strategies.run import Run

    target = get_target("nano33ble")
    specs = [
        CandidateSpec("original", qat=False, train=False),
        CandidateSpec("cluster8", clusters=8),
    ]
    # DECODE expands the compressed kernels into the arena.
    footprints = [_footprint(9000, 0.80), _footprint(4000, 0.85, arena=3000)]
    for name in ("original", "cluster8"):
        (directory / f"{name}.keras").write_bytes(b"keras " + name.encode())
    (directory / "original.tflite").write_bytes(b"plain int8")
    (directory / "cluster8.tflite").write_bytes(b"compressed")
    (directory / "cluster8.uncompressed.tflite").write_bytes(b"twin")
    entries = {
        spec.name: {"spec": spec.to_dict(), "footprint": fp.to_dict(), "seconds": 1.0}
        for spec, fp in zip(specs, footprints, strict=True)
    }
    entries["cluster8"]["uncompressed"] = "cluster8.uncompressed.tflite"
    manifest = {"format": 1, "strategy": "shrink", "key": "k", "target": "nano33ble"}
    (directory / "manifest.json").write_text(json.dumps({**manifest, "candidates": entries}))
    run = Run(directory, "shrink", target, tfslim_budget(), overwrite=False, log=None)
    run.open("k")
    return run, specs


def tfslim_budget():
    from tfslim.tuning import Budget

    return Budget(max_flash_bytes=5000)


@pytest.mark.parametrize("interrupted", [False, True])
def test_a_run_of_the_old_layout_resumes_renamed_as_the_demo_names_files(tmp_path, interrupted):
    run, specs = _old_layout_run(tmp_path)
    if interrupted:  # Killed between the two renames of an earlier resume.
        (tmp_path / "cluster8.tflite").rename(tmp_path / "cluster8.lut.tflm")
    made = [run.candidate(s, lambda: pytest.fail("made again"), None, None, {}) for s in specs]
    original, clustered = made
    assert (tmp_path / "cluster8.lut.tflm").read_bytes() == b"compressed"
    assert (tmp_path / "cluster8.tflite").read_bytes() == b"twin"
    assert not (tmp_path / "cluster8.uncompressed.tflite").exists()
    assert clustered.tflite_path == str(tmp_path / "cluster8.lut.tflm") and clustered.compressed
    assert clustered.uncompressed_path == str(tmp_path / "cluster8.tflite")
    assert original.tflite_path == str(tmp_path / "original.tflite") and not original.compressed
    entry = json.loads((tmp_path / "manifest.json").read_text())["candidates"]["cluster8"]
    assert entry["compressed"] == "cluster8.lut.tflm"
    assert entry["uncompressed"] == "cluster8.tflite"
    result = run.finish("original")
    assert result.best.name == "cluster8"
    assert (tmp_path / "best.lut.tflm").read_bytes() == b"compressed"
    assert (tmp_path / "best.tflite").read_bytes() == b"twin"
    record = json.loads((tmp_path / "report.json").read_text())["candidates"][1]
    assert (record["tflite"], record["uncompressed_tflite"]) == (
        "cluster8.lut.tflm",
        "cluster8.tflite",
    )
    # A budget the compressed candidate misses: best.lut.tflm goes, best.tflite is the plain one.
    from tfslim.tuning import Budget

    run.rejudge(Budget(max_flash_bytes=10_000, max_arena_bytes=1000))
    assert run.finish("original").best is None
    assert not (tmp_path / "best.lut.tflm").exists() and not (tmp_path / "best.tflite").exists()
    run.rejudge(Budget(max_flash_bytes=10_000, max_arena_bytes=2500))
    assert run.finish("original").best.name == "original"
    assert (tmp_path / "best.tflite").read_bytes() == b"plain int8"
    assert not (tmp_path / "best.lut.tflm").exists()


def test_an_old_layout_candidate_whose_files_are_gone_is_made_again(tmp_path, monkeypatch):
    from tfslim.strategies import run as run_module

    run, specs = _old_layout_run(tmp_path)
    (tmp_path / "cluster8.tflite").unlink()

    class Converted:
        def __init__(self, flatbuffer):
            self.flatbuffer = flatbuffer

    def convert(model, target, train, validation, settings, *, compress):
        assert compress
        return Converted(b"new compressed"), _footprint(3000, 0.9), Converted(b"new twin")

    monkeypatch.setattr(run_module, "convert_and_measure", convert)
    monkeypatch.setattr(
        run_module._io, "save_keras_model", lambda m, p, overwrite: p.write_bytes(b"k")
    )
    settings = {"seed": 0}
    clustered = run.candidate(specs[1], lambda: "model", ((np.zeros(1),),), None, settings)
    assert (tmp_path / "cluster8.lut.tflm").read_bytes() == b"new compressed"
    assert (tmp_path / "cluster8.tflite").read_bytes() == b"new twin"
    assert not (tmp_path / "cluster8.uncompressed.tflite").exists()
    assert clustered.footprint.flash_bytes == 3000
