"""KerasTuner's own distributed mode: a chief oracle and two workers over gRPC on loopback."""

import os
import textwrap

import pytest
from _distributed import run_processes

_SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    from tfslim.datasets import load_digits_data
    from tfslim.tuning import Budget, FootprintTuner

    def build(hp):
        return keras.Sequential([
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(hp.Choice("filters", [2, 8]), 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ])

    runs = []

    class Counting(FootprintTuner):
        def run_trial(self, trial, *args, **kwargs):
            runs.append(trial.trial_id)
            return super().run_trial(trial, *args, **kwargs)

    x, y, xv, yv = load_digits_data()
    tuner = Counting(build, target="nano33ble", budget=Budget(max_flash_bytes=4500),
                     max_trials=4, seed=0, qat=(False,), sparsities=(0.0, 0.5), epochs=1,
                     latency_runs=3, directory=sys.argv[1], project_name="dist")
    tuner.search(x[:300], y[:300], validation_data=(xv, yv), verbose=0)
    print("RAN", os.environ["KERASTUNER_TUNER_ID"], len(runs), flush=True)
    """
)


@pytest.mark.slow
def test_chief_and_two_workers_fill_one_front(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(_SCRIPT)
    directory = tmp_path / "search"
    outputs = run_processes(
        script,
        {tuner_id: (tuner_id, [directory]) for tuner_id in ("chief", "tuner0", "tuner1")},
        timeout=240,
    )
    ran = {
        line.split()[1]: int(line.split()[2])
        for out in outputs.values()
        for line in out.splitlines()
        if line.startswith("RAN ")
    }
    assert sum(ran[w] for w in ("tuner0", "tuner1")) == 4

    # A fresh tuner on the shared directory sees every trial of both workers.
    import keras

    from tfslim.tuning import Budget, FootprintTuner

    def build(hp):
        raise AssertionError("no trial should run")

    merged = FootprintTuner(
        build,
        target="nano33ble",
        budget=Budget(max_flash_bytes=4500),
        max_trials=4,
        qat=(False,),
        sparsities=(0.0, 0.5),
        directory=str(directory),
        project_name="dist",
    )
    records = merged.trial_records()
    assert len(records) == 4
    front = merged.pareto_records()
    assert front and all(r["feasible"] for r in front)
    assert all(os.path.exists(merged.tflite_path(r["trial_id"])) for r in records)
    assert isinstance(merged.pareto_front()[0], keras.Model)
