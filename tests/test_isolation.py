"""The child that runs interpreters: what it imports, and how its failures reach the caller."""

import signal
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from tfslim.errors import InvalidModelError
from tfslim.litert import interpreter, isolation, micro

REFERENCE = Path(__file__).parents[1] / "tflite_models" / "reference"

_TASKS = '''
import os
import signal
import sys
import time

import numpy as np


def modules_after(model_path, *, target, **options):
    """Runs a real tfslim task, then lists what the child process has imported."""
    import importlib

    module, _, name = target.partition(":")
    result = getattr(importlib.import_module(module), name)(model_path, **options)
    return {"modules": sorted(sys.modules), "keys": sorted(result)}


def echo(model_path, *, data, scale):
    return {"size": os.path.getsize(model_path), "y": data * scale, "parts": [data, data + 1]}


def kill_self(model_path, *, sig):
    os.kill(os.getpid(), sig)


def sleep(model_path, *, seconds):
    time.sleep(seconds)
    return {}


def refuse(model_path):
    raise RuntimeError("first line\\nthe interpreter said no")
'''


@pytest.fixture
def tasks(tmp_path, monkeypatch):
    """A module of test tasks, importable by the caller and (via PYTHONPATH) the child."""
    folder = tmp_path / "tasks"
    folder.mkdir()
    (folder / "tfslim_test_tasks.py").write_text(textwrap.dedent(_TASKS))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.setenv("PYTHONPATH", str(folder))
    isolation.stop()  # A host started with this PYTHONPATH finds the module.
    yield __import__("tfslim_test_tasks")
    isolation.stop()
    sys.modules.pop("tfslim_test_tasks", None)


MODEL = (REFERENCE / "ds_cnn_int8.tflite").read_bytes()


@pytest.mark.parametrize(
    "task, options",
    [
        (interpreter.verify_task, {}),
        (micro.measure_arena_task, {"max_arena": micro.MAX_ARENA_BYTES}),
        ("tfslim.benchmarking.timing:time_invokes", None),
    ],
)
def test_child_imports_neither_tensorflow_nor_keras(tasks, task, options):
    if isinstance(task, str):
        options = {"threads": 1, "xnnpack": True, "runs": 2, "warmup": 1, "max_seconds": 5}
    else:
        task = f"{task.__module__}:{task.__qualname__}"
    result = isolation.run(tasks.modules_after, MODEL, target=task, **options)
    heavy = [m for m in result["modules"] if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")]
    assert heavy == []
    assert "numpy" in result["modules"] and result["keys"]


def test_predict_task_runs_in_a_lean_child(tasks):
    x = np.zeros((2, 49, 10, 1), np.float32)
    result = isolation.run(
        tasks.modules_after, MODEL, target="tfslim.litert.interpreter:predict_task", data=x
    )
    assert "ai_edge_litert.interpreter" in result["modules"]
    assert not any(m.startswith(("tensorflow", "keras")) for m in result["modules"])


def test_arrays_and_options_round_trip(tasks):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    result = isolation.run(tasks.echo, b"12345", data=x, scale=2.5)
    assert result["size"] == 5
    np.testing.assert_array_equal(result["y"], x * 2.5)
    assert result["y"].dtype == np.float32
    assert [p.tolist() for p in result["parts"]] == [x.tolist(), (x + 1).tolist()]


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL])
def test_a_crashing_child_is_one_line_naming_the_signal(tasks, sig):
    with pytest.raises(InvalidModelError) as info:
        isolation.run(
            tasks.kill_self, MODEL, name="m.tflite", runtime="LiteRT interpreter", sig=sig
        )
    message = str(info.value)
    assert message == f"m.tflite: the LiteRT interpreter crashed on it (killed by {sig.name})"
    # The host survives its task's crash (or is replaced): the next call works.
    assert isolation.run(tasks.echo, b"x", data=np.ones(1), scale=1.0)["size"] == 1


def test_refusal_and_timeout_are_one_line(tasks):
    with pytest.raises(InvalidModelError, match=r"^m: the LiteRT interpreter refused it") as info:
        isolation.run(tasks.refuse, MODEL, name="m")
    assert "\n" not in str(info.value) and "the interpreter said no" in str(info.value)
    with pytest.raises(InvalidModelError, match=r"^m: the X did not finish within 1 s$"):
        isolation.run(tasks.sleep, MODEL, name="m", runtime="X", timeout=1, seconds=30)
    assert isolation.run(tasks.echo, b"ab", data=np.ones(1), scale=1.0)["size"] == 2


def test_a_task_that_raises_a_bug_names_the_error(tasks):
    with pytest.raises(InvalidModelError, match=r"could not run it \(.*TypeError"):
        isolation.run(tasks.echo, MODEL)  # Missing keyword arguments.


def test_a_host_that_cannot_start_says_why(tmp_path, monkeypatch):
    (tmp_path / "numpy.py").write_text("raise ImportError('numpy broken for this test')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    isolation.stop()
    try:
        with pytest.raises(InvalidModelError, match=r"^m: .* \(.*numpy broken for this test"):
            isolation.run(interpreter.verify_task, MODEL, name="m")
    finally:
        monkeypatch.undo()
        isolation.stop()
    assert isolation.run(interpreter.verify_task, MODEL)["corrupt"] is None


def test_without_fork_each_task_gets_a_fresh_python(tasks, monkeypatch):
    import os

    monkeypatch.delattr(os, "fork")
    x = np.ones((2, 2), np.float32)
    np.testing.assert_array_equal(isolation.run(tasks.echo, b"abc", data=x, scale=3.0)["y"], 3 * x)
    with pytest.raises(InvalidModelError, match=r"crashed on it \(killed by SIGSEGV\)$"):
        isolation.run(tasks.kill_self, MODEL, sig=signal.SIGSEGV)
    with pytest.raises(InvalidModelError, match="did not finish within 1 s"):
        isolation.run(tasks.sleep, MODEL, timeout=1, seconds=30)
