"""Runs a script as KerasTuner's distributed mode does: a chief oracle and workers on loopback.

KerasTuner picks its role from the environment (`KERASTUNER_TUNER_ID`, `KERASTUNER_ORACLE_IP`,
`KERASTUNER_ORACLE_PORT`), so every process here is a fresh interpreter with its own copy of
those variables; one started without a tuner id runs outside distributed mode, as a plain
single process to compare against.
"""

import os
import socket
import subprocess
import sys

KERASTUNER_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")


def free_port() -> int:
    """A loopback port nothing listens on now, for the chief's oracle."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_processes(script, processes: dict, *, timeout: float, cwd=None) -> dict:
    """Starts every process at once, waits for all of them and returns their outputs.

    Args:
        script: path. The Python script each process runs.
        processes: dict. `{name: (tuner_id, argv)}`: `tuner_id` is `"chief"`, a worker's id
            (`"tuner0"`, ...) or None for a process outside distributed mode; `argv` the
            script's arguments.
        timeout: float. Seconds each process may take.
        cwd: path or None. The processes' working directory.

    Returns:
        `{name: stdout and stderr}`. A process still running when another fails or times out
        is killed; the test fails naming any process that exited non-zero.
    """
    port = str(free_port())
    base = {k: v for k, v in os.environ.items() if k not in KERASTUNER_ENV}
    base["TF_CPP_MIN_LOG_LEVEL"] = "2"
    procs = {}
    try:
        for name, (tuner_id, argv) in processes.items():
            env = dict(base)
            if tuner_id is not None:
                env |= {
                    "KERASTUNER_TUNER_ID": tuner_id,
                    "KERASTUNER_ORACLE_IP": "127.0.0.1",
                    "KERASTUNER_ORACLE_PORT": port,
                }
            procs[name] = subprocess.Popen(
                [sys.executable, str(script), *map(str, argv)],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        outputs = {}
        for name, proc in procs.items():
            outputs[name], _ = proc.communicate(timeout=timeout)
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in procs.items():
        assert proc.returncode == 0, f"{name} exited {proc.returncode}:\n{outputs[name][-3000:]}"
    return outputs
