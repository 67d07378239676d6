"""Runs a task on a model in a child process, so a bad model never takes the caller down.

`run(task, model, ...)` writes the model (and input data, if any) into a temporary folder,
starts a fresh Python that imports only what the task needs (NumPy and ai-edge-litert or
tflite-micro, never TensorFlow or Keras), calls `task(model_path, **options)` there and
returns its result. A task is a module-level function of a module that is cheap to import;
it returns a dict of JSON values and NumPy arrays (or lists of arrays). A task that raises
`RuntimeError` or `ValueError` (an interpreter refusing the model) becomes an
`InvalidModelError` in the caller; so do a child killed by a signal, a child that exits
without a result, and a child that runs past the timeout, each as one line.

The child side is `main()`; it is started as
`python -c "from tfslim.litert.isolation import main; main()" REQUEST.json`.
"""

import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfslim.errors import InvalidModelError

__all__ = ["run", "main", "TIMEOUT_S"]

TIMEOUT_S = 600
# The folder holding the caller's `tfslim` goes last on the child's path: it only matters
# when tfslim is not installed (a checkout on the caller's sys.path).
_CHILD = (
    f"import sys; sys.path.append({str(Path(__file__).resolve().parents[2])!r}); "
    "from tfslim.litert.isolation import main; main()"
)


def run(
    task: Callable[..., dict],
    model: bytes,
    *,
    name: str = "<model>",
    runtime: str = "LiteRT interpreter",
    data: "np.ndarray | None" = None,
    timeout: float = TIMEOUT_S,
    **options,
) -> dict:
    """Runs `task(model_path, data=data, **options)` in a child process; returns its dict.

    Args:
        task: callable. A module-level function taking the path of the model file.
        model: bytes. The .tflite flatbuffer.
        name: str. How error messages name the model. Defaults to `"<model>"`.
        runtime: str. How error messages name what ran it. Defaults to
            `"LiteRT interpreter"`.
        data: np.ndarray or None. Passed to the task as `data` when given.
            Defaults to `None`.
        timeout: float. Seconds before the child is killed. Defaults to `600`.
        **options: JSON values passed to the task as keyword arguments.

    Returns:
        The task's dict, arrays restored.

    Raises:
        InvalidModelError: when the task refuses the model, or the child dies, exits
            without a result or times out.
    """
    target = f"{task.__module__}:{task.__qualname__}"
    with tempfile.TemporaryDirectory(prefix="tfslim-run-") as tmp:
        tmp = Path(tmp)
        (tmp / "model.tflite").write_bytes(model)
        if data is not None:
            np.save(tmp / "data.npy", np.asarray(data), allow_pickle=False)
        request = {"task": target, "options": options, "has_data": data is not None}
        (tmp / "request.json").write_text(json.dumps(request))
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(tmp / "request.json")],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=_child_env(),
            )
        except subprocess.TimeoutExpired:
            raise InvalidModelError(
                f"{name}: the {runtime} did not finish within {timeout:g} s"
            ) from None
        result_path = tmp / "result.json"
        if proc.returncode < 0:
            raise InvalidModelError(
                f"{name}: the {runtime} crashed on it (killed by {_signal_name(-proc.returncode)})"
            )
        if proc.returncode != 0 or not result_path.exists():
            detail = last_error_line(proc.stderr) or f"exit code {proc.returncode}"
            raise InvalidModelError(f"{name}: the {runtime} could not run it ({detail})")
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise InvalidModelError(f"{name}: the {runtime} refused it ({result['error']})")
        return _load_arrays(result, tmp)


def _child_env() -> dict:
    # PYTHONSAFEPATH keeps the caller's working directory off the child's path: a stray
    # numpy.py there must not shadow the real one.
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONSAFEPATH="1")


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def last_error_line(text: str) -> str:
    """The last line of `text` that reads like an error (else its last line), shortened."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "error" in ln.lower() or "failed" in ln.lower():
            return ln[:300]
    return lines[-1][:300] if lines else ""


def _save_arrays(result: dict, folder: Path) -> dict:
    """Moves NumPy arrays (and lists of them) out of `result` into .npy files."""
    plain = {}
    for key, value in result.items():
        if isinstance(value, np.ndarray):
            np.save(folder / f"{key}.npy", value, allow_pickle=False)
            plain[key] = {"__npy__": None}
        elif isinstance(value, list | tuple) and value and isinstance(value[0], np.ndarray):
            for i, array in enumerate(value):
                np.save(folder / f"{key}.{i}.npy", array, allow_pickle=False)
            plain[key] = {"__npy__": len(value)}
        else:
            plain[key] = value
    return plain


def _load_arrays(result: dict, folder: Path) -> dict:
    for key, value in result.items():
        if isinstance(value, dict) and set(value) == {"__npy__"}:
            n = value["__npy__"]
            if n is None:
                result[key] = np.load(folder / f"{key}.npy")
            else:
                result[key] = [np.load(folder / f"{key}.{i}.npy") for i in range(n)]
    return result


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[-1][:300] if text else type(error).__name__


def main(argv: "list[str] | None" = None) -> None:
    """Child side: runs the request named on the command line, writes `result.json`."""
    request_path = Path((argv or sys.argv)[-1])
    folder = request_path.parent
    request = json.loads(request_path.read_text())
    module, _, qualname = request["task"].partition(":")
    task = importlib.import_module(module)
    for part in qualname.split("."):
        task = getattr(task, part)
    options = request["options"]
    if request["has_data"]:
        options["data"] = np.load(folder / "data.npy", allow_pickle=False)
    try:
        result = _save_arrays(task(str(folder / "model.tflite"), **options), folder)
    except (RuntimeError, ValueError) as e:  # The interpreter refused the model.
        result = {"error": _one_line(e)}
    tmp = folder / "result.json.tmp"
    tmp.write_text(json.dumps(result))
    tmp.replace(folder / "result.json")
