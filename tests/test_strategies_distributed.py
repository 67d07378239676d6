"""`tfslim.shrink` on KerasTuner's distributed mode: candidates as trials of a chief's oracle."""

import json
import textwrap

import numpy as np
import pytest
from _distributed import KERASTUNER_ENV, run_processes

from tfslim.strategies import distributed


@pytest.fixture
def no_kerastuner_env(monkeypatch):
    for name in KERASTUNER_ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_role_follows_kerastuners_environment(no_kerastuner_env):
    assert distributed.role() is None
    no_kerastuner_env.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    no_kerastuner_env.setenv("KERASTUNER_ORACLE_PORT", "8000")
    no_kerastuner_env.setenv("KERASTUNER_TUNER_ID", "chief")
    assert distributed.role() == "chief"
    no_kerastuner_env.setenv("KERASTUNER_TUNER_ID", "tuner1")
    assert distributed.role() == "tuner1"
    no_kerastuner_env.delenv("KERASTUNER_ORACLE_PORT")
    with pytest.raises(ValueError, match="missing KERASTUNER_ORACLE_PORT. Received: .*tuner1"):
        distributed.role()


def test_the_oracle_hands_out_each_candidate_once_then_stops(tmp_path):
    oracle = distributed.CandidateOracle(["original", "qat", "width50"])
    # A tuner's directory, as `BaseTuner` sets it.
    oracle._set_project_dir(str(tmp_path), "keras_tuner")
    first = oracle.create_trial("tuner0")
    second = oracle.create_trial("tuner1")
    # A worker that asks again mid-trial (restarted after an interrupt) gets its trial back.
    assert oracle.create_trial("tuner0").trial_id == first.trial_id
    first.status = "COMPLETED"
    oracle.update_trial(first.trial_id, {"quality": 0.9})
    oracle.end_trial(first)
    third = oracle.create_trial("tuner0")
    handed = [t.hyperparameters.values["candidate"] for t in (first, second, third)]
    assert handed == ["original", "qat", "width50"]
    third.status = "COMPLETED"
    oracle.update_trial(third.trial_id, {"quality": 0.8})
    oracle.end_trial(third)
    assert oracle.create_trial("tuner0").status == "STOPPED"
    assert oracle.create_trial("tuner1").trial_id == second.trial_id
    assert distributed.CandidateOracle([]).create_trial("tuner0").status == "STOPPED"


def _shared_run(directory, key):
    from tfslim.litert.targets import get_target
    from tfslim.strategies.run import Run
    from tfslim.tuning import Budget

    run = Run(directory, "shrink", get_target("nano33ble"), Budget(), False, None, shared=True)
    run.key = key
    return run


def test_processes_sharing_a_manifest_keep_each_others_candidates(tmp_path):
    chief, worker0, worker1 = (_shared_run(tmp_path, "k") for _ in range(3))
    chief.write_manifest(merge=False)
    worker0.join("k")
    worker1.join("k")
    worker0.done["qat"] = {"spec": {"name": "qat"}}
    worker0.write_manifest()
    # worker1 never read worker0's record: writing its own must not drop it.
    worker1.done["width50"] = {"spec": {"name": "width50"}}
    worker1.write_manifest()
    chief.refresh()
    assert sorted(chief.done) == ["qat", "width50"]
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(manifest["candidates"]) == ["qat", "width50"] and manifest["key"] == "k"


def test_a_worker_of_another_run_is_refused(tmp_path):
    _shared_run(tmp_path, "chiefs key").write_manifest(merge=False)
    with pytest.raises(ValueError, match="same model, data and settings.*Received: directory="):
        _shared_run(tmp_path, "another key").join("another key")


def test_grow_refuses_distributed_mode(no_kerastuner_env, small_cnn, digits, tmp_path):
    from tfslim.strategies import grow_improve_shrink

    no_kerastuner_env.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    no_kerastuner_env.setenv("KERASTUNER_ORACLE_PORT", "8000")
    no_kerastuner_env.setenv("KERASTUNER_TUNER_ID", "tuner0")
    x, y, xv, yv = digits
    with pytest.raises(ValueError, match="It runs in one process.*KERASTUNER_TUNER_ID='tuner0'"):
        grow_improve_shrink(small_cnn, (x[:20], y[:20]), (xv[:20], yv[:20]), directory=tmp_path)
    assert not list(tmp_path.iterdir())


_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import keras
    import numpy as np
    import tfslim

    model = keras.saving.load_model(sys.argv[1])
    data = np.load(sys.argv[2])
    who = os.environ.get("KERASTUNER_TUNER_ID", "single")
    result = tfslim.shrink(
        model, (data["x"], data["y"]), (data["xv"], data["yv"]),
        target="nano33ble", techniques=("qat", "channels"), widths=(0.5,), epochs=1,
        latency_runs=2, calibration_samples=50, directory=sys.argv[3],
        log=lambda line: print("LOG", who, line, flush=True),
    )
    records = [
        {"spec": c.spec, "footprint": c.footprint.to_dict()} for c in result.candidates
    ]
    print("RESULT", json.dumps({"candidates": records, "files": sorted(result.files)}))
    """
)


@pytest.mark.slow
def test_chief_and_worker_make_each_candidate_once_as_one_process_would(
    tmp_path, small_cnn, digits
):
    x, y, xv, yv = digits
    small_cnn.save(tmp_path / "m.keras")
    np.savez(tmp_path / "d.npz", x=x[:200], y=y[:200], xv=xv[:100], yv=yv[:100])
    (tmp_path / "shrink.py").write_text(_SCRIPT)
    shared, single = tmp_path / "shared", tmp_path / "single"
    outputs = run_processes(
        tmp_path / "shrink.py",
        {
            "chief": ("chief", ["m.keras", "d.npz", shared]),
            "tuner0": ("tuner0", ["m.keras", "d.npz", shared]),
            "single": (None, ["m.keras", "d.npz", single]),
        },
        timeout=400,
        cwd=tmp_path,
    )
    results, made = {}, {}
    for name, out in outputs.items():
        lines = out.splitlines()
        results[name] = json.loads(next(ln for ln in lines if ln.startswith("RESULT "))[7:])
        logged = [ln.split()[2:] for ln in lines if ln.startswith("LOG ")]
        made[name] = [words[0] for words in logged if words[-1] != "(resumed)"]

    names = ["original", "qat", "width50"]
    # The worker made every candidate, each once; the chief only served and read them back.
    assert made == {"chief": [], "tuner0": names, "single": names}
    trials = sorted((tmp_path / "shared" / "keras_tuner").glob("trial_*/trial.json"))
    trials = [json.loads(path.read_text()) for path in trials]
    assert sorted(t["hyperparameters"]["values"]["candidate"] for t in trials) == names
    assert {t["status"] for t in trials} == {"COMPLETED"}

    def figures(result):
        # Host latency is timed, so it differs run to run; everything else is determined.
        return [
            (r["spec"], {k: v for k, v in r["footprint"].items() if k != "latency_ms"})
            for r in result["candidates"]
        ]

    assert figures(results["chief"]) == figures(results["single"])
    assert figures(results["tuner0"]) == figures(results["single"])
    assert results["chief"]["files"] == results["single"]["files"]
    assert "markdown" in results["chief"]["files"] and results["tuner0"]["files"] == []
    manifest = json.loads((tmp_path / "shared" / "manifest.json").read_text())
    assert sorted(manifest["candidates"]) == names
    report = json.loads((tmp_path / "shared" / "report.json").read_text())
    assert report["best"] == json.loads((tmp_path / "single" / "report.json").read_text())["best"]


@pytest.mark.slow
def test_a_candidate_that_fails_is_marked_failed_and_the_others_still_run(
    tmp_path, small_cnn, digits, no_kerastuner_env
):
    # Outside distributed mode KerasTuner runs the trials in this process, as a worker would.
    from tfslim.strategies.candidates import CandidateSpec

    x, y, xv, yv = digits
    specs = [CandidateSpec(name, qat=False, train=False) for name in ("original", "broken")]
    run = _shared_run(tmp_path, "k")
    lines = []
    run.log = lines.append
    run.write_manifest(merge=False)

    def make(spec):
        if spec.name == "broken":
            raise RuntimeError("out of memory")
        return small_cnn

    settings = {"seed": 0, "calibration_samples": 20, "latency_runs": 0}
    data = ((x[:40], y[:40]), (xv[:40], yv[:40]))
    oracle = distributed.CandidateOracle([s.name for s in specs])
    tuner = distributed._CandidateTuner(oracle, run, specs, make, data, settings, overwrite=True)
    tuner.search()
    trials = {t.hyperparameters.values["candidate"]: t for t in oracle.trials.values()}
    assert {name: t.status for name, t in trials.items()} == {
        "original": "COMPLETED",
        "broken": "FAILED",
    }
    assert "broken: RuntimeError: out of memory" in trials["broken"].message
    assert "broken failed on tuner0: RuntimeError: out of memory" in lines
    assert sorted(json.loads((tmp_path / "manifest.json").read_text())["candidates"]) == [
        "original"
    ]
    assert trials["original"].metrics.get_best_value("quality") > 0.5
