"""The TFLite Micro arena search: exact figure, few probes, bounded search."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import tfslim
from tfslim.litert import isolation, micro

REFERENCE = Path(__file__).parents[1] / "tflite_models" / "reference"
MANIFEST = json.loads((REFERENCE / "manifest.json").read_text())["models"]


_PROBES = """
import json, sys
from tflite_micro.python.tflite_micro import runtime
from tfslim.litert import micro
model = open(sys.argv[1], "rb").read()
print(json.dumps([micro._forked_probe(runtime, model, int(a)) for a in sys.argv[2:]]))
"""


def _probe(path: Path, *arenas: int) -> list:
    """(ok, TFLM's log) for each arena, each probed in a fork of a fresh process."""
    out = subprocess.run(
        [sys.executable, "-c", _PROBES, str(path), *map(str, arenas)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout)


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_arena_is_the_smallest_that_runs_and_the_manifest_figure(name):
    path = REFERENCE / MANIFEST[name]["file"]
    result = isolation.run(
        micro.measure_arena_task, path.read_bytes(), max_arena=micro.MAX_ARENA_BYTES
    )
    arena = result["arena_bytes"]
    assert arena == MANIFEST[name]["arena_bytes"] and arena % 16 == 0
    assert result["arena_reported_bytes"] <= arena
    # Starting from TFLM's recorded allocation takes a handful of probes, not a bisection
    # from scratch (which takes ~17 for a 1 MiB start).
    assert result["probes"] <= 10
    (ok, _), (ok_below, log_below) = _probe(path, arena, arena - 16)
    assert ok and not ok_below and "allocate" in log_below.lower()


def test_a_too_small_arena_that_crashes_tflm_is_contained():
    # At 100 bytes this TFLM build segfaults instead of raising; the fork takes the hit.
    ((ok, log),) = _probe(REFERENCE / "ds_cnn_int8.tflite", 100)
    assert ok is False and "Failed to allocate" in log and "SIGSEGV" in log


def test_search_is_bounded_and_says_so():
    model = (REFERENCE / "ds_cnn_int8.tflite").read_bytes()
    facts = tfslim.litert.flatbuffer.analyze(model)
    section = micro.check_micro(model, facts, name="ds_cnn", max_arena=4096)
    assert section["supported"] is False and section["arena_bytes"] is None
    assert section["error"].startswith(
        "TFLite Micro could not run it in a 4096-byte arena (the search bound): "
    )
    assert micro.MAX_ARENA_BYTES == 16 * 1024 * 1024


def test_verdict_gives_the_tflm_error_not_an_empty_op_list(monkeypatch):
    model = REFERENCE / "ds_cnn_int8.tflite"
    real = micro.check_micro
    monkeypatch.setattr(micro, "check_micro", lambda *a, **k: real(*a, **{**k, "max_arena": 4096}))
    verdict = tfslim.inspect(model, target="nano33ble")["targets"]["nano33ble"]
    assert verdict["fits"] is False
    (reason,) = verdict["reasons"]
    assert reason.startswith("TFLite Micro could not run it in a 4096-byte arena")
