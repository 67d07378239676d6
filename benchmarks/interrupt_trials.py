"""Ctrl-C at evenly spread moments of a real `tfslim convert` (or `inspect`): what is left.

    python benchmarks/interrupt_trials.py [--trials 20] [--command convert] [--checkout DIR]

Each trial starts the command in its own process group with a fresh TMPDIR, sends SIGINT
to the whole group (as a terminal's Ctrl-C does) at moment (i + 0.5) / trials of one
uninterrupted run's wall time, and records the exit code, the stderr lines, any traceback
and the temporaries left (`tfslim-export-*`, `tfslim-run-*` in TMPDIR, hidden `.*.tmp`
beside the output). A trial is "ok" when it exits 130 with one stderr line, no traceback
and nothing left, or when the command had already finished (exit 0) before the signal.

First a table of whole-command wall times, the console script's `console_main()` (a
supervisor and its forked worker) beside `main()` in one process, both started by
`python -c`, interleaved, for a command that imports no TensorFlow, one reading a model
and an argument mistake.

`--checkout` names the tfslim source tree whose `python -m tfslim.cli` is tested (default:
this one); give an older tree (`git archive COMMIT tfslim | tar -x -C DIR`) to measure its
behaviour side by side. The model is a small digits CNN (untrained: conversion is what is
timed), converted for the `mcu` target (full int8, calibration, TFLite Micro check,
fidelity check).
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_ROOT = Path(__file__).resolve().parents[1]


def _make_inputs(folder: Path, checkout: Path) -> None:
    """Writes the model, its calibration data and one .tflite file (for `inspect`)."""
    script = f"""
import os; os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import keras, numpy as np, tfslim
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
    keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
model.save({str(folder / "m.keras")!r})
x = np.random.default_rng(0).random((64, 8, 8, 1), dtype=np.float32)
np.save({str(folder / "calib.npy")!r}, x)
tfslim.convert(model, target="mcu", calibration_data=x, output_path={str(folder / "m.tflite")!r})
"""
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=checkout,
        env=_env(checkout, folder),
        capture_output=True,
    )
    if proc.returncode:
        sys.exit(proc.stderr.decode(errors="replace")[-3000:])


def _env(checkout: Path, tmpdir: Path) -> dict:
    return dict(os.environ, TMPDIR=str(tmpdir), PYTHONPATH=str(checkout))


def _argv(command: str, folder: Path, out: Path) -> list[str]:
    if command == "convert":
        return [
            "convert",
            str(folder / "m.keras"),
            "-o",
            str(out),
            "--target",
            "mcu",
            "--calibration",
            str(folder / "calib.npy"),
            "--overwrite",
        ]
    return ["inspect", str(folder / "m.tflite"), "--target", "nano33ble"]


def _leftovers(tmpdir: Path, out: Path) -> list[str]:
    left = [
        p.name for p in tmpdir.iterdir() if p.name.startswith(("tfslim-export-", "tfslim-run-"))
    ]
    left += [p.name for p in out.parent.glob(f".{out.name}.*tmp*")]
    return sorted(left)


def _trial(checkout: Path, argv: list[str], folder: Path, out: Path, delay: "float | None"):
    tmpdir = Path(tempfile.mkdtemp(dir=folder, prefix="trial-"))
    out.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfslim.cli", *argv],
        cwd=checkout,
        env=_env(checkout, tmpdir),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    finished_first = False
    if delay is not None:
        try:
            proc.wait(timeout=delay)
            finished_first = True
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGINT)
    try:
        stdout, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
    seconds = time.perf_counter() - start
    time.sleep(0.2)  # A process the command left behind would still be cleaning up.
    stderr = stderr.decode(errors="replace")
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    return {
        "delay": delay,
        "seconds": seconds,
        "code": proc.returncode,
        "finished_first": finished_first,
        "lines": lines,
        "traceback": "Traceback" in stderr,
        "left": _leftovers(tmpdir, out),
        "output": out.exists(),
    }


def _verdict(t: dict) -> str:
    if t["finished_first"]:
        return "ok" if t["code"] == 0 and not t["left"] else "FAILED"
    if t["traceback"]:
        return "traceback"
    if t["code"] != 130:
        return f"exit {t['code']}"
    if len(t["lines"]) != 1:
        return "silent" if not t["lines"] else f"{len(t['lines'])} lines"
    return "left files" if t["left"] else "ok"


_IN_PROCESS = "import sys; from tfslim.cli import main; sys.exit(main(sys.argv[1:]))"
_CONSOLE = "import sys; from tfslim.cli import console_main; sys.exit(console_main())"


_BARE = """
import os, statistics, sys, time
start = time.perf_counter()
from tfslim import _supervisor
imported = time.perf_counter() - start


def bare_fork():  # What any forked child costs: the fork, its exit, the wait.
    pid = os.fork()
    if pid == 0:
        raise SystemExit(0)
    os.waitpid(pid, 0)


def supervised():
    assert _supervisor.supervise(["targets"], lambda: 0) == 0


times = {bare_fork: [], supervised: []}
for _ in range(15):
    for way in times:
        start = time.perf_counter()
        way()
        times[way].append(time.perf_counter() - start)
bare, sup = (statistics.median(t) * 1e3 for t in times.values())
print(f"{imported * 1e3:.1f} {bare:.1f} {sup:.1f}")
"""


def _overhead(checkout: Path, folder: Path, rounds: int) -> None:
    """Wall time of a whole command, as the console script runs it and as `main` in one
    process, interleaved; prints the medians."""
    commands = {
        "targets": ["targets"],
        "inspect --no-micro": ["inspect", str(folder / "m.tflite"), "--no-micro"],
        "convert (refused: exists)": ["convert", str(folder / "m.keras"), "-o", str(folder)],
    }
    ways = {"console script": ["-c", _CONSOLE], "main() in process": ["-c", _IN_PROCESS]}
    print(
        f"{'command':<26} {'main() in process':>18} {'console script':>15} {'difference':>11}"
        f"   (seconds: median / fastest of {rounds})"
    )
    for name, argv in commands.items():
        times: dict[str, list[float]] = {way: [] for way in ways}
        for _ in range(rounds):
            for way, prefix in ways.items():
                start = time.perf_counter()
                subprocess.run(
                    [sys.executable, *prefix, *argv],
                    cwd=checkout,
                    env=_env(checkout, folder),
                    capture_output=True,
                )
                times[way].append(time.perf_counter() - start)
        inproc, console = (statistics.median(times[w]) for w in ways)
        fast_inproc, fast_console = (min(times[w]) for w in ways)
        print(
            f"{name:<26} {inproc:>7.3f} / {fast_inproc:>6.3f} "
            f"{console:>6.3f} / {fast_console:>6.3f} "
            f"{console - inproc:>+6.3f} / {fast_console - fast_inproc:>+6.3f}"
        )
    bare = subprocess.run(
        [sys.executable, "-c", _BARE], cwd=checkout, env=_env(checkout, folder), capture_output=True
    )
    if bare.returncode == 0:
        imported, fork, supervised = (float(v) for v in bare.stdout.decode().split())
        print(
            f"the supervisor alone: import {imported:.1f} ms; around a command that does "
            f"nothing {supervised:.1f} ms against {fork:.1f} ms for a bare fork, exit and "
            f"wait (medians of 15): {imported + supervised - fork:+.1f} ms per command"
        )
    print()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--command", choices=["convert", "inspect"], default="convert")
    parser.add_argument("--rounds", type=int, default=9, help="rounds of the overhead table")
    parser.add_argument(
        "--checkout", default=str(_ROOT), help="tfslim source tree to test (default: this one)"
    )
    args = parser.parse_args()
    checkout = Path(args.checkout).resolve()
    with tempfile.TemporaryDirectory(prefix="interrupt-trials-") as folder:
        folder = Path(folder)
        _make_inputs(folder, checkout)
        out = folder / "out.tflite"
        _overhead(checkout, folder, args.rounds)
        argv = _argv(args.command, folder, out)
        full = _trial(checkout, argv, folder, out, None)
        if full["code"] != 0:
            sys.exit(f"the uninterrupted run failed: {full['lines'][-3:]}")
        span = full["seconds"]
        print(f"tfslim {args.command} from {checkout}: uninterrupted run {span:.2f} s")
        print(f"{'trial':>5} {'SIGINT at':>9} {'exit':>5} {'stderr lines':>12}  verdict  last line")
        trials = []
        for i in range(args.trials):
            t = _trial(checkout, argv, folder, out, (i + 0.5) / args.trials * span)
            trials.append(t)
            last = (t["lines"][-1] if t["lines"] else "")[:70]
            print(
                f"{i + 1:>5} {t['delay']:>8.2f}s {t['code']:>5} {len(t['lines']):>12}  "
                f"{_verdict(t):<8} {last}" + (f"  left: {t['left']}" if t["left"] else "")
            )
            if _verdict(t) != "ok":
                for line in t["lines"][-12:]:
                    print(f"{'':>16}| {line[:150]}")
    counts: dict[str, int] = {}
    for t in trials:
        counts[_verdict(t)] = counts.get(_verdict(t), 0) + 1
    interrupted = [t for t in trials if not t["finished_first"]]
    print()
    print(f"{'outcome':<28} trials")
    for name, n in sorted(counts.items()):
        print(f"{name:<28} {n}")
    print(f"{'finished before the signal':<28} {len(trials) - len(interrupted)}")
    if interrupted:
        worst = max(t["seconds"] - t["delay"] for t in interrupted)
        print(f"{'slowest exit after SIGINT':<28} {worst:.2f} s")


if __name__ == "__main__":
    main()
