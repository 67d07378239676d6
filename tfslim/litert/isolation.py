"""Runs a task on a model in a child process, so a bad model never takes the caller down.

`run(task, model, ...)` writes the model (and input data, if any) into a temporary folder
and calls `task(model_path, **options)` in a child process; the child imports only NumPy,
ai-edge-litert and tflite-micro, never TensorFlow or Keras. A task is a module-level
function of a module that is cheap to import; it returns a dict of JSON values and NumPy
arrays (or lists of arrays). A task that raises `RuntimeError` or `ValueError` (an
interpreter refusing the model) becomes an `InvalidModelError` in the caller; so do a
child killed by a signal, a child that exits without a result, and a child that runs past
the timeout, each as one line.

Where the OS can fork, the child is a fork of a warm host process: started on the first
call, it imports the runtimes once and forks one process per task, so a task costs a fork
instead of a Python start and the host survives any crash of a task. The host lives in
its own session (a Ctrl-C reaches the caller only, which then kills it) and exits when the
caller closes its pipe or exits. Elsewhere each task gets a fresh Python.
"""

import atexit
import contextlib
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tfslim import _cleanup
from tfslim.errors import InvalidModelError

__all__ = ["TIMEOUT_S", "last_error_line", "main", "run", "serve", "start", "stop"]

TIMEOUT_S = 600
# The folder holding the caller's `tfslim` goes last on the child's path: it only matters
# when tfslim is not installed (a checkout on the caller's sys.path).
_PATH = f"import sys; sys.path.append({str(Path(__file__).resolve().parents[2])!r}); "
_CHILD = _PATH + "from tfslim.litert.isolation import main; main()"
_HOST = _PATH + "from tfslim.litert.isolation import serve; serve()"


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
    _cleanup.remove_stale_exports()
    with tempfile.TemporaryDirectory(prefix=_cleanup.run_prefix()) as tmp:
        _cleanup.track(tmp)
        tmp = Path(tmp)
        (tmp / "model.tflite").write_bytes(model)
        if data is not None:
            np.save(tmp / "data.npy", np.asarray(data), allow_pickle=False)
        request = {"task": target, "options": options, "has_data": data is not None}
        (tmp / "request.json").write_text(json.dumps(request))
        try:
            status, stderr = _execute(tmp / "request.json", timeout)
        except TimeoutError:
            raise InvalidModelError(
                f"{name}: the {runtime} did not finish within {timeout:g} s"
            ) from None
        result_path = tmp / "result.json"
        if status < 0:
            raise InvalidModelError(
                f"{name}: the {runtime} crashed on it (killed by {_signal_name(-status)})"
            )
        if status != 0 or not result_path.exists():
            detail = last_error_line(stderr) or f"exit code {status}"
            raise InvalidModelError(f"{name}: the {runtime} could not run it ({detail})")
        result = json.loads(result_path.read_text())
        if "error" in result:
            raise InvalidModelError(f"{name}: the {runtime} refused it ({result['error']})")
        return _load_arrays(result, tmp)


def _child_env() -> dict:
    # PYTHONSAFEPATH keeps the caller's working directory off the child's path: a stray
    # numpy.py there must not shadow the real one.
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONSAFEPATH="1")


def _execute(request: Path, timeout: float) -> tuple[int, str]:
    """Runs one request; returns (exit status, negative for a signal; its stderr)."""
    if not hasattr(os, "fork"):
        try:
            proc = subprocess.run(
                [sys.executable, "-c", _CHILD, str(request)],
                capture_output=True,
                text=True,
                errors="replace",
                timeout=timeout,
                env=_child_env(),
            )
        except subprocess.TimeoutExpired:
            raise TimeoutError from None
        return proc.returncode, proc.stderr
    with _HOST_LOCK:
        status = _host().call(request, timeout)
    stderr_path = request.parent / "stderr.txt"
    stderr = stderr_path.read_text(errors="replace") if stderr_path.exists() else ""
    return status, stderr


class _Host:
    """The caller's side of the warm host process (see the module docstring)."""

    def __init__(self):
        self.owner = os.getpid()
        # The host's own errors (a failed import, say); open as long as the host, closed
        # in close(), so no context manager.
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _HOST],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=_child_env(),
            start_new_session=True,
        )

    closed = False

    def usable(self) -> bool:
        return self.owner == os.getpid() and not self.closed and self.proc.poll() is None

    def call(self, request: Path, timeout: float) -> int:
        """Runs one request; returns its exit status (negative: the signal's number)."""
        try:
            self.proc.stdin.write(f"{timeout:g}\t{request}\n".encode())
            self.proc.stdin.flush()
            # The host kills a task at `timeout`; this only guards against a lost host.
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout + 60)
            line = self.proc.stdout.readline().decode() if ready else ""
        except BaseException:  # Ctrl-C or a broken pipe: the host's state is unknown.
            self.close()
            raise
        kind, _, value = line.strip().partition(" ")
        if kind == "exit":
            return int(value)
        if kind == "signal":
            if int(value) == signal.SIGALRM:
                raise TimeoutError
            return -int(value)
        if not ready:
            self.close()
            raise TimeoutError
        # The host died: say why; a fresh one serves the next call.
        self.log.seek(0)
        detail = last_error_line(self.log.read().decode(errors="replace"))
        self.close()
        (request.parent / "stderr.txt").write_text(detail or "the runtime host exited")
        return 1

    def close(self) -> None:
        if self.owner != os.getpid() or self.closed:
            return
        with contextlib.suppress(OSError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # The host and its running task.
        self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout, self.log):
            with contextlib.suppress(OSError):
                pipe.close()
        self.closed = True


_HOST_LOCK = threading.Lock()
_HOSTS: list[_Host] = []


def _host() -> _Host:
    if not (_HOSTS and _HOSTS[-1].usable()):
        for old in _HOSTS:
            old.close()  # Its pipes and any task it left; a no-op in a forked caller.
        _HOSTS[:] = [_Host()]
    return _HOSTS[-1]


def start() -> None:
    """Starts the warm host now, if the OS can fork and none runs, without waiting for
    it: its start-up then overlaps the caller's own work before the first `run`."""
    if hasattr(os, "fork"):
        with _HOST_LOCK:
            _host()


@atexit.register
def stop() -> None:
    """Stops the warm host (and any task it runs); the next `run` starts a new one."""
    for host in _HOSTS:
        host.close()
    _HOSTS.clear()


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


def serve() -> None:
    """The warm host: imports the runtimes, then forks one process per request line
    (`TIMEOUT<TAB>REQUEST.json`) and answers `exit N` or `signal N` on stdout."""
    for module in ("ai_edge_litert.interpreter", "tflite_micro.python.tflite_micro.runtime"):
        with contextlib.suppress(ImportError):  # A task needing it reports it missing.
            importlib.import_module(module)
    answers = sys.stdout.buffer
    for line in sys.stdin:
        timeout, _, request = line.rstrip("\n").partition("\t")
        pid = os.fork()
        if pid == 0:
            _run_forked(request, float(timeout))
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status):
            answers.write(f"signal {os.WTERMSIG(status)}\n".encode())
        else:
            answers.write(f"exit {os.WEXITSTATUS(status)}\n".encode())
        answers.flush()


def _run_forked(request: str, timeout: float) -> None:
    """One task in a fork of the host; never returns."""
    code = 1
    try:
        log = os.open(Path(request).parent / "stderr.txt", os.O_WRONLY | os.O_CREAT, 0o600)
        os.dup2(log, 2)
        os.dup2(log, 1)  # Never onto the host's answer pipe.
        signal.alarm(max(1, int(timeout + 0.999)))
        main([request])
        code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
