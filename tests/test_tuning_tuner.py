import json
import os
import pathlib

import keras
import numpy as np
import pytest

import tfslim
from tfslim.tuning import (
    Budget,
    FootprintTuner,
    estimate_footprint,
    pareto_front,
    write_report,
)


def _build(hp):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(hp.Choice("filters", [2, 8]), 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def _tuner(directory, **kwargs):
    kwargs.setdefault("qat", (False,))
    kwargs.setdefault("sparsities", (0.0, 0.5))
    kwargs.setdefault("latency_runs", 3)
    kwargs.setdefault("target", "nano33ble")
    return FootprintTuner(
        _build,
        epochs=1,
        directory=str(directory),
        project_name="t",
        **kwargs,
    )


@pytest.fixture(scope="module")
def searched(digits, tmp_path_factory):
    """A 4-trial search whose flash budget (4.5 kB) the 8-filter model exceeds."""
    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = digits
    tuner = _tuner(
        tmp_path_factory.mktemp("tune"),
        budget=Budget.from_target("nano33ble", max_flash_bytes=4500),
        max_trials=4,
        seed=3,
        qat=(False, True),
        sparsities=(0.0,),  # 4 candidates for 4 trials: both sides of the budget are drawn.
    )
    tuner.search(x_train, y_train, validation_data=(x_test, y_test), verbose=0)
    return tuner


@pytest.mark.slow
def test_infeasible_trials_are_recorded_and_the_search_goes_on(searched):
    records = searched.trial_records()
    assert len(records) == 4
    infeasible = [r for r in records if not r["feasible"]]
    assert infeasible and len(infeasible) < 4
    for r in records:
        assert r["flash_bytes"] > 0 and r["arena_bytes"] > 0 and r["latency_ms"] > 0
        assert r["mcu_latency_estimate_ms"]["nano33ble"] > 0 and 0 <= r["quality"] <= 1
        assert isinstance(r["flash_bytes"], int) and isinstance(r["arena_bytes"], int)
        assert r["feasible"] == (r["flash_bytes"] <= 4500)
        # Every infeasible trial scores below every feasible one.
        if not r["feasible"]:
            assert r["score"] < min(q["quality"] for q in records if q["feasible"])
            assert r["violations"][0].startswith("flash_bytes ")
        # The records carry what the trial wrote, target verdict included.
        figures = json.loads(
            pathlib.Path(searched.get_trial_dir(r["trial_id"]), "figures.json").read_text()
        )
        assert r["violations"] == figures["violations"]
        assert r["feasible"] == (not figures["violations"])
        # The figures file is a Footprint, the same one the record carries.
        footprint = tfslim.Footprint.from_dict(figures)
        assert footprint.to_dict() == {k: r[k] for k in footprint.to_dict()}
        # Trial files were saved atomically: no temporaries beside them.
        trial_dir = pathlib.Path(searched.get_trial_dir(r["trial_id"]))
        assert not [p.name for p in trial_dir.iterdir() if ".tmp" in p.name]
    assert searched.oracle.get_best_trials(1)[0].metrics.get_last_value("feasible") == 1.0


@pytest.mark.slow
def test_front_models_fit_when_inspected(searched, digits):
    records = searched.trial_records()
    front = searched.pareto_records()
    feasible = [r for r in records if r["feasible"]]
    metrics = ["flash_bytes", "arena_bytes", "latency_ms", "mcu_latency_estimate_ms"]
    points = [
        {**r, "mcu_latency_estimate_ms": r["mcu_latency_estimate_ms"]["nano33ble"]}
        for r in feasible
    ]
    expected = {feasible[i]["trial_id"] for i in pareto_front(points, minimize=metrics)}
    assert {r["trial_id"] for r in front} == expected
    models = searched.pareto_front()
    assert len(models) == len(front)
    for r, model in zip(front, models, strict=True):
        report = tfslim.inspect(searched.tflite_path(r["trial_id"]), target="nano33ble")
        assert report["size_bytes"] == r["flash_bytes"] <= 4500
        assert report["targets"]["nano33ble"]["fits"]
        assert model.predict(digits[2][:4], verbose=0).shape == (4, 10)


@pytest.mark.slow
def test_min_quality_keeps_unusable_models_off_the_front(searched):
    records = [r for r in searched.trial_records() if r["feasible"]]
    floor = sorted(r["quality"] for r in records)[len(records) // 2]
    front = searched.pareto_records(min_quality=floor)
    assert front and all(r["quality"] >= floor for r in front)
    best = max(records, key=lambda r: r["quality"])
    assert front[0]["trial_id"] == best["trial_id"]
    with pytest.raises(ValueError, match="argument `min_quality`"):
        searched.pareto_records(min_quality="high")


@pytest.mark.slow
def test_report_files(searched, tmp_path):
    report = write_report(searched, tmp_path)
    assert os.path.getsize(tmp_path / "pareto.png") > 1000
    saved = json.loads((tmp_path / "pareto.json").read_text())
    assert saved["front"] == report["front"]
    assert len(saved["trials"]) == 4
    table = (tmp_path / "pareto.md").read_text()
    assert table.count("\n| ") == 2 + 4  # Header, rule and one row per trial.
    for header in ("flash", "RAM (TFLM arena)", "host latency ms", "nano33ble ms (estimate)"):
        assert f"| {header} |" in table
    best = report["front"][0]
    assert f"| {best['flash_bytes']:,} B |" in table


@pytest.mark.slow
def test_resumes_an_interrupted_search_and_all_infeasible_does_not_stop_it(digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    data = (x_train[:300], y_train[:300])
    # RAM is not predicted before a trial, so every candidate runs and is measured over budget.
    budget = Budget(max_arena_bytes=100)

    class Interrupted(FootprintTuner):
        calls = 0

        def run_trial(self, trial, *args, **kwargs):
            Interrupted.calls += 1
            if Interrupted.calls == 3:
                raise KeyboardInterrupt
            return super().run_trial(trial, *args, **kwargs)

    first = Interrupted(
        _build,
        epochs=1,
        max_trials=4,
        seed=0,
        budget=budget,
        qat=(False,),
        sparsities=(0.0, 0.5),
        latency_runs=3,
        directory=str(tmp_path),
        project_name="t",
    )
    with pytest.raises(KeyboardInterrupt):
        first.search(*data, validation_data=(x_test, y_test), verbose=0)
    assert len(first.trial_records()) == 2

    resumed = _tuner(tmp_path, budget=budget, max_trials=4, seed=0)
    done = []
    original = resumed.run_trial

    def counting(trial, *args, **kwargs):
        done.append(trial.trial_id)
        return original(trial, *args, **kwargs)

    resumed.run_trial = counting
    resumed.search(*data, validation_data=(x_test, y_test), verbose=0)
    records = resumed.trial_records()
    assert len(records) == 4
    assert len(done) == 2  # Only the missing trials ran again.
    assert len({r["trial_id"] for r in records}) == 4
    # KerasTuner stops after 3 failed trials in a row; infeasible trials are not failures.
    assert not any(r["feasible"] for r in records)
    assert all(r["violations"][0].startswith("arena_bytes ") for r in records)
    assert resumed.pareto_records() == []


@pytest.mark.slow
def test_estimated_macs_match_the_converted_model(searched):
    import keras_tuner

    for r in searched.trial_records():
        hp = keras_tuner.HyperParameters()
        hp.values.update(r["hyperparameters"])
        estimate = estimate_footprint(_build(hp))
        assert estimate["macs"] == r["macs"]
        assert estimate["params"] == pytest.approx(r["params"], rel=0.01)


def test_candidates_predicted_over_budget_are_skipped(tmp_path):
    # filters=8: 5472 MACs -> 0.171 ms on nano33ble (2 cycles/MAC, 64 MHz); filters=2: 0.043 ms.
    tuner = _tuner(tmp_path, budget=Budget(max_mcu_latency_estimate_ms=0.1), max_trials=4, seed=0)
    assert tuner.predicted_feasible({"filters": 2})
    assert not tuner.predicted_feasible({"filters": 8})
    drawn = [tuner.oracle.populate_space(str(i))["values"]["filters"] for i in range(6)]
    assert drawn == [2] * 6
    assert tuner.oracle.skipped == 1  # 8 was drawn once, then marked as tried.


def test_argument_errors(tmp_path):
    with pytest.raises(TypeError, match="argument `budget`.*Received: budget=100"):
        _tuner(tmp_path, budget=100)
    with pytest.raises(ValueError, match=r"argument `sparsities`.*Received: sparsities=\(1.0,\)"):
        _tuner(tmp_path, sparsities=(1.0,))
    with pytest.raises(ValueError, match="argument `teacher`.*Received: teacher=None"):
        _tuner(tmp_path, temperatures=(0.0, 2.0))
    with pytest.raises(ValueError, match="argument `epochs`.*Received: epochs=0"):
        FootprintTuner(_build, epochs=0, directory=str(tmp_path))
    with pytest.raises(ValueError, match="argument `target`"):
        _tuner(tmp_path, target="toaster")
    import keras_tuner

    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    with pytest.raises(ValueError, match="argument `oracle`.*Objective\\('score', 'max'\\)"):
        _tuner(tmp_path, oracle=oracle)
    assert np.isfinite(Budget.from_target("nano33ble").max_arena_bytes)
