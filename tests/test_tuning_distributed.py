"""KerasTuner's own distributed mode: a chief oracle and two workers over gRPC on loopback."""

import os
import socket
import subprocess
import sys
import textwrap

import pytest

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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_chief_and_two_workers_fill_one_front(tmp_path):
    script = tmp_path / "tune.py"
    script.write_text(_SCRIPT)
    directory = tmp_path / "search"
    port = str(_free_port())
    procs = {}
    for tuner_id in ("chief", "tuner0", "tuner1"):
        env = dict(
            os.environ,
            KERASTUNER_TUNER_ID=tuner_id,
            KERASTUNER_ORACLE_IP="127.0.0.1",
            KERASTUNER_ORACLE_PORT=port,
            TF_CPP_MIN_LOG_LEVEL="2",
        )
        procs[tuner_id] = subprocess.Popen(
            [sys.executable, str(script), str(directory)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    outputs = {}
    try:
        for tuner_id, proc in procs.items():
            outputs[tuner_id], _ = proc.communicate(timeout=240)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for tuner_id, proc in procs.items():
        assert proc.returncode == 0, outputs.get(tuner_id, "")[-3000:]
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
