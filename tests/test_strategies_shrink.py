import json

import numpy as np
import pytest

from tfslim.benchmarking.footprint import Footprint
from tfslim.strategies import Candidate, StrategyResult, candidates
from tfslim.strategies.report import write_strategy_report
from tfslim.tuning import Budget


def _candidate(name, quality, flash, arena=3000, latency=0.01, violations=()):
    footprint = Footprint(
        flash_bytes=flash,
        gzip_bytes=flash // 2,
        params=flash,
        macs=10 * flash,
        fully_integer=True,
        arena_bytes=arena,
        latency_ms=latency,
        mcu_latency_estimate_ms={"nano33ble": flash / 1e4},
        quality=quality,
        metric="accuracy",
        target="nano33ble",
        board_reasons={"nano33ble": []},
    )
    return Candidate(
        name=name,
        description=f"{name} levers",
        spec={"name": name},
        footprint=footprint,
        violations=list(violations),
        keras_path=f"/x/{name}.keras",
        tflite_path=f"/x/{name}.tflite",
    )


def _result(directory="/x", budget=None):
    budget = budget or Budget(max_flash_bytes=9000)
    cands = [
        _candidate(
            "original", 0.95, 12000, violations=["flash_bytes 12000 > max_flash_bytes 9000"]
        ),
        _candidate("qat", 0.94, 8800),
        _candidate("width50", 0.93, 5000, arena=2000),
        _candidate("width25", 0.80, 3000, arena=2500),
        _candidate("worse", 0.70, 6000, arena=4000),
    ]
    return StrategyResult("shrink", "nano33ble", budget, cands, "original", str(directory))


def test_front_per_axis_holds_only_feasible_undominated_candidates():
    result = _result()
    front = {axis: [c.name for c in cands] for axis, cands in result.front.items()}
    assert set(front) == {"flash_bytes", "arena_bytes", "latency_ms", "mcu_latency_estimate_ms"}
    assert front["flash_bytes"] == ["qat", "width50", "width25"]
    # width25 is smaller in flash, but its arena is larger than width50's: off that front.
    assert front["arena_bytes"] == ["qat", "width50"]
    assert result.best.name == "qat"
    assert not result["original"].feasible
    assert result.baseline_candidate.name == "original"
    with pytest.raises(KeyError, match="argument `name`.*Received: name='nope'"):
        result["nope"]


def test_nothing_fits_reports_the_closest_candidate():
    result = _result(budget=Budget(max_flash_bytes=1000))
    result = StrategyResult(
        "shrink",
        "nano33ble",
        Budget(max_flash_bytes=1000),
        [
            _candidate(c.name, c.quality, c.footprint.flash_bytes, violations=["over"])
            for c in result.candidates
        ],
        "original",
        "/x",
    )
    assert result.best is None and result.front["flash_bytes"] == []
    assert result.closest.name == "width25"
    assert result.to_dict()["closest"] == "width25"


def test_report_files_table_and_plot(tmp_path):
    result = _result(tmp_path)
    files = write_strategy_report(result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["front.png", "report.json", "report.md"]
    assert (tmp_path / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["best"] == "qat" and data["baseline"] == "original"
    assert data["front"]["flash_bytes"] == ["qat", "width50", "width25"]
    assert [r["name"] for r in data["candidates"]] == [c.name for c in result.candidates]
    markdown = (tmp_path / "report.md").read_text()
    assert "Best within budget: **qat**" in markdown and "4 of 5 candidates fit" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith("| original |"))
    assert "| baseline |" in row and "| no |" in row and "12,000 B" in row
    assert files["png"] == str(tmp_path / "front.png")


def test_plot_labels_units_and_marks_baseline_and_infeasible():
    fig = write_strategy_report.__globals__["plot_front"](_result())
    flash, arena = fig.axes
    assert flash.get_xlabel() == "int8 flash: .tflite size (KiB)"
    assert arena.get_xlabel() == "RAM: TFLite Micro arena (KiB)"
    assert "accuracy of the int8 model" in flash.get_ylabel()
    labels = [t.get_text() for t in flash.get_legend().get_texts()]
    assert labels == [
        "infeasible (over budget)",
        "feasible",
        "Pareto front",
        "baseline (model as given, int8), over budget",
        "budget",
    ]
    # The infeasible original is grey and sits at 12000 B = 11.7 KiB.
    grey = flash.collections[0]
    assert np.allclose(grey.get_offsets(), [[12000 / 1024, 0.95]])
    assert np.allclose(grey.get_facecolor()[0][:3], [0.6, 0.6, 0.6])


def test_plan_starts_with_the_baseline_and_combines_levers():
    specs = candidates.plan_candidates(
        ("qat", "prune", "m_by_n", "channels"), widths=(0.5, 0.25), sparsity=0.75
    )
    assert [s.name for s in specs] == [
        "original",
        "qat",
        "prune75",
        "prune2of4",
        "width50",
        "width25",
        "width50_prune75",
        "width25_prune75",
    ]
    assert not specs[0].train and specs[-1].width == 0.25 and specs[-1].sparsity == 0.75
    assert specs[3].description() == "2:4 sparsity, distilled + QAT"
    short = candidates.plan_candidates(("channels",), widths=(0.5,), sparsity=0.5, max_candidates=1)
    assert [s.name for s in short] == ["original"]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(techniques=("qat", "dither")), ValueError, "argument `techniques`"),
        (dict(techniques="qat"), TypeError, "argument `techniques`"),
        (dict(widths=(0.5, 1.0)), ValueError, r"argument `widths`.*\(0, 1\).*widths=1.0"),
        (dict(sparsity=1.0), ValueError, "argument `sparsity`"),
        (dict(clusters=1), ValueError, r"argument `clusters`.*\[2, 128\].*clusters=1"),
        (dict(clusters="16"), TypeError, "argument `clusters`.*Received: clusters='16'"),
        (dict(epochs=0), ValueError, "argument `epochs`.*Received: epochs=0"),
        (dict(max_candidates=0), ValueError, "argument `max_candidates`"),
        (dict(budget={"max_flash_bytes": 1}), TypeError, "argument `budget`.*tfslim.Budget"),
        (dict(target="toaster"), ValueError, "toaster"),
        (dict(overwrite="yes"), TypeError, "argument `overwrite`"),
        (
            dict(validation_data=(np.zeros((3, 8, 8, 1)), np.zeros(2))),
            ValueError,
            r"argument `validation_data`.*x=\(3, 8, 8, 1\), y=\(2,\)",
        ),
        (dict(model="model.keras"), TypeError, "argument `model`.*keras.Model"),
    ],
)
def test_arguments_are_checked_before_any_work(tmp_path, kwargs, error, match):
    import keras

    from tfslim.strategies import shrink

    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    args = dict(
        model=model,
        train_data=(np.zeros((4, 8, 8, 1)), np.zeros(4)),
        validation_data=(np.zeros((4, 8, 8, 1)), np.zeros(4)),
        directory=tmp_path / "run",
    )
    args.update(kwargs)
    with pytest.raises(error, match=match):
        shrink(args.pop("model"), args.pop("train_data"), args.pop("validation_data"), **args)
    assert not (tmp_path / "run" / "manifest.json").exists()


def test_a_directory_of_other_files_is_refused(tmp_path):
    import keras

    from tfslim.strategies import shrink

    (tmp_path / "notes.txt").write_text("mine")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    data = (np.zeros((4, 4)), np.zeros(4))
    with pytest.raises(FileExistsError, match="argument `directory`.*overwrite=True"):
        shrink(model, data, data, directory=tmp_path)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match="argument `directory`"):
        shrink(model, data, data, directory=tmp_path / "file")


@pytest.mark.slow
def test_shrink_on_digits_resumes_and_its_front_fits_when_reinspected(
    tmp_path, small_cnn, digits, monkeypatch
):
    import keras

    import tfslim
    from tfslim.strategies import shrink

    x_train, y_train, x_test, y_test = digits
    train, val = (x_train[:600], y_train[:600]), (x_test[:200], y_test[:200])
    kwargs = dict(
        target="nano33ble",
        techniques=("channels",),
        widths=(0.5,),
        epochs=1,
        directory=tmp_path,
        latency_runs=5,
    )
    # Interrupt the run in the second candidate's training.
    real = candidates.train_candidate

    def interrupted(spec, *args, **kw):
        if spec.train:
            raise KeyboardInterrupt
        return real(spec, *args, **kw)

    monkeypatch.setattr(candidates, "train_candidate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        shrink(small_cnn, train, val, **kwargs)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert list(manifest["candidates"]) == ["original"]
    original_flash = manifest["candidates"]["original"]["footprint"]["flash_bytes"]
    monkeypatch.setattr(candidates, "train_candidate", real)

    # The resumed run, with a budget the model as given breaks: it stays, infeasible.
    lines = []
    budget = tfslim.Budget(max_flash_bytes=original_flash - 1, max_arena_bytes=64 * 1024)
    result = shrink(small_cnn, train, val, budget=budget, log=lines.append, **kwargs)
    assert [c.name for c in result.candidates] == ["original", "width50"]
    assert "(resumed)" in lines[0] and "(resumed)" not in lines[1]
    original, narrow = result.candidates
    assert not original.feasible
    assert original.violations == [
        f"flash_bytes {original_flash} > max_flash_bytes {original_flash - 1}"
    ]
    assert narrow.feasible and narrow.footprint.params < 0.7 * original.footprint.params
    assert narrow.footprint.fully_integer and 0.3 < narrow.quality <= 1.0
    assert result.best is narrow
    for front in result.front.values():
        for candidate in front:
            report = tfslim.inspect(candidate.tflite_path, target=["nano33ble"])
            assert report["size_bytes"] == candidate.footprint.flash_bytes
            assert report["size_bytes"] <= budget.max_flash_bytes
            assert report["micro"]["arena_bytes"] <= budget.max_arena_bytes
            assert report["targets"]["nano33ble"]["fits"]
    assert {c.name for f in result.front.values() for c in f} == {"width50"}
    # The saved Keras model is the one that was converted: same predictions.
    loaded = keras.saving.load_model(narrow.keras_path)
    pred = tfslim.predict(narrow.tflite_path, x_test[:50])
    agree = np.mean(np.argmax(pred, -1) == np.argmax(loaded.predict(x_test[:50], verbose=0), -1))
    assert agree >= 0.9
    assert (tmp_path / "front.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "report.json").read_text())["best"] == "width50"
    assert not list(tmp_path.glob(".*tmp*"))
    # Another model in the same directory is refused, not mixed in.
    with pytest.raises(FileExistsError, match="another model, data or settings"):
        shrink(small_cnn, train, val, **{**kwargs, "epochs": 2})
