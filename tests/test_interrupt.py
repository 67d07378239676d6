"""Ctrl-C, native crashes and stale temporaries: the `tfslim` command and tfslim's files.

The command tests run the real command (`python -m tfslim.cli`, the console script's
`console_main`) in a subprocess with a private TMPDIR, and signal it at chosen moments.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tfslim import _cleanup, _io
from tfslim._supervisor import crash_stage

_ROOT = Path(__file__).resolve().parents[1]
_OLD = time.time() - 3600  # Before this test process started.
_DAYS_OLD = time.time() - 3 * 86400


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _touch(path: Path, mtime: float, *, folder: bool = False) -> Path:
    if folder:
        path.mkdir()
        (path / "saved_model.pb").write_bytes(b"x")
    else:
        path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))
    return path


def test_stale_temporaries_beside_an_output_are_removed_by_the_next_write(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    stale = [
        _touch(tmp_path / f".x.tflite.{dead}.abcd_123.tmp", _OLD),
        _touch(tmp_path / f".x.tflite.{dead}.zzzzzzzz.tmp.keras", _OLD),
        _touch(tmp_path / ".x.tflite.q1w2e3r4.tmp", _DAYS_OLD),  # Named before the pid was.
    ]
    kept = [
        _touch(tmp_path / f".x.tflite.{live}.abcdefgh.tmp", _OLD),  # Its writer is alive.
        _touch(tmp_path / f".x.tflite.{os.getpid()}.abcdefgh.tmp", _OLD),
        _touch(tmp_path / ".x.tflite.q1w2e3r5.tmp", time.time()),  # Unnamed, but recent.
        _touch(tmp_path / f".y.tflite.{dead}.abcdefgh.tmp", _OLD),  # Another output's.
        _touch(tmp_path / f"x.tflite.{dead}.tmp", _OLD),  # Not hidden: not ours.
        _touch(tmp_path / ".x.tflite.notes", _OLD),
        _touch(tmp_path / f".x.tflite.{dead}.abcdefgh.tmp.bak", _OLD),
    ]
    assert _io.atomic_write(tmp_path / "x.tflite", b"new") == str(tmp_path / "x.tflite")
    assert (tmp_path / "x.tflite").read_bytes() == b"new"
    assert sorted(tmp_path.iterdir()) == sorted([*kept, tmp_path / "x.tflite"])
    assert not any(p.exists() for p in stale)


def test_stale_export_folders_are_removed_only_when_their_owner_is_dead(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    stale = [
        _touch(tmp_path / f"tfslim-export-{dead}-abcdefgh", _OLD, folder=True),
        _touch(tmp_path / "tfslim-export-k9_j8h7g", _DAYS_OLD, folder=True),
    ]
    kept = [
        _touch(tmp_path / f"tfslim-export-{live}-abcdefgh", _OLD, folder=True),
        # Its owner is dead, but it is newer than this process: left for a later run.
        _touch(tmp_path / f"tfslim-export-{dead}-bbbbbbbb", time.time(), folder=True),
        _touch(tmp_path / "tfslim-export-k9_j8h7h", time.time(), folder=True),
        _touch(tmp_path / f"tfslim-export-{dead}-notes.txt", _OLD),
        _touch(tmp_path / f"tfslim-export-{dead}-cccccccc", _OLD),  # A file, not a folder.
        _touch(tmp_path / f"other-export-{dead}-abcdefgh", _OLD, folder=True),
    ]
    removed = _cleanup.remove_stale_exports(tmp_path)
    assert sorted(removed) == sorted(str(p) for p in stale)
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert _cleanup.export_prefix() == f"tfslim-export-{os.getpid()}-"


def test_stale_isolated_run_folders_are_removed_like_export_folders(tmp_path):
    dead, live = _dead_pid(), os.getppid()
    stale = _touch(tmp_path / f"tfslim-run-{dead}-abcdefgh", _OLD, folder=True)
    kept = [
        _touch(tmp_path / f"tfslim-run-{live}-abcdefgh", _OLD, folder=True),
        _touch(tmp_path / f"tfslim-runner-{dead}-abcdefgh", _OLD, folder=True),
    ]
    assert _cleanup.remove_stale_exports(tmp_path) == [str(stale)]
    assert sorted(tmp_path.iterdir()) == sorted(kept)
    assert _cleanup.run_prefix() == f"tfslim-run-{os.getpid()}-"


def test_the_record_of_a_dead_worker_removes_only_its_own_temporaries(tmp_path):
    dead = _dead_pid()
    ours = [
        _touch(tmp_path / f"tfslim-export-{dead}-abcdefgh", time.time(), folder=True),
        _touch(tmp_path / f".m.tflite.{dead}.abcdefgh.tmp", time.time()),
    ]
    foreign = [
        _touch(tmp_path / "data.npz", time.time()),
        _touch(tmp_path / f".m.tflite.{dead + 1}.abcdefgh.tmp", time.time()),
    ]
    with open(tmp_path / "record", "w+b") as record:
        _cleanup.record_to(record.fileno())
        try:
            for path in [*ours, *foreign, tmp_path / "gone"]:
                _cleanup.track(path)
        finally:
            _cleanup.record_to(None)
        _cleanup.track(tmp_path / "not recorded")
        record.seek(0)
        assert len(record.read().splitlines()) == 5
        removed = _cleanup.remove_recorded(record, dead)
    assert sorted(removed) == sorted(str(p) for p in ours)
    assert all(p.exists() for p in foreign) and not any(p.exists() for p in ours)


_CRASHING = """import os, signal
def convert():
    os.kill(os.getpid(), signal.SIGSEGV)
convert()
"""


@pytest.mark.parametrize(
    "where, stage",
    [
        ("site-packages/tensorflow/lite/python/convert.py", "the TFLite converter"),
        ("site-packages/tflite_micro/python/tflite_micro/runtime.py", "TFLite Micro"),
        ("site-packages/ai_edge_litert/interpreter.py", "the LiteRT interpreter"),
        ("site-packages/keras/src/saving/saving_api.py", "Keras"),
        ("work/script.py", None),
    ],
)
def test_the_crash_report_names_the_stage_from_the_dumped_stack(tmp_path, where, stage):
    script = tmp_path / where
    script.parent.mkdir(parents=True)
    script.write_text(_CRASHING)
    dump = tmp_path / "dump.txt"
    code = (
        f"import faulthandler, runpy; f = open({str(dump)!r}, 'w'); "
        f"faulthandler.enable(file=f, all_threads=True); runpy.run_path({str(script)!r})"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGSEGV
    found = crash_stage(dump.read_text())
    assert found == stage if stage is None else stage in found


def _command(tmp_path: Path, *argv: str, env: "dict | None" = None, group: bool = False):
    """Starts `python -m tfslim.cli ARGV` with TMPDIR=tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    return subprocess.Popen(
        [sys.executable, "-m", "tfslim.cli", *argv],
        cwd=_ROOT,
        env=dict(os.environ, TMPDIR=str(tmp_path / "tmp"), PYTHONPATH=str(_ROOT), **(env or {})),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # Its own process group: killpg is a terminal's Ctrl-C.
        preexec_fn=_default_signals,
    )


def _default_signals() -> None:
    # A test run started in the background by a non-interactive shell (CI, nohup) ignores
    # SIGINT, and the command keeps signals it was started ignoring ignored, as a shell's
    # background job expects: the commands under test get a terminal's default instead.
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def _tfslim_temporaries(tmp_path: Path) -> list[str]:
    names = [p.name for p in (tmp_path / "tmp").iterdir() if p.name.startswith("tfslim-")]
    return sorted(names + [p.name for p in tmp_path.glob(".*.tmp*")])


def _finish(proc) -> tuple[int, list[str], str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, [ln for ln in err.splitlines() if ln.strip()], out


def test_a_crashing_worker_is_one_line_with_the_signal(tmp_path):
    proc = _command(
        tmp_path, "inspect", str(tmp_path / "m.tflite"), env={"TFSLIM_TEST_CRASH": "SIGSEGV"}
    )
    code, lines, _ = _finish(proc)
    assert code == 128 + signal.SIGSEGV
    assert len(lines) == 1 and lines[0].startswith("tfslim inspect: error: "), lines
    assert "crashed" in lines[0] and "(SIGSEGV)" in lines[0]


def _worker(proc) -> "int | None":
    """The pid of the command's worker process, once it has started (Linux's /proc)."""
    try:
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def test_a_worker_crashing_with_a_temporary_made_leaves_nothing(tmp_path):
    """The worker dies by SIGSEGV the moment its atomic write has made the hidden temporary
    beside the output (the test-only hook): nothing in the worker can remove it any more;
    the supervisor does, from the worker's record."""
    model = _ROOT / "tflite_models" / "digits_student_mcu.tflite"
    out = tmp_path / "model_data.cc"
    env = {"TFSLIM_TEST_CRASH": "SIGSEGV@temporary"}
    code, lines, _ = _finish(_command(tmp_path, "export-c", str(model), "-o", str(out), env=env))
    assert code == 128 + signal.SIGSEGV and len(lines) == 1, lines
    assert lines[0].startswith("tfslim export-c: error: ") and "(SIGSEGV)" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]
    assert _tfslim_temporaries(tmp_path) == []


def test_the_export_folders_of_a_dead_worker_are_removed_by_pid(tmp_path):
    dead = _dead_pid()
    ours = _touch(tmp_path / f"tfslim-export-{dead}-abcdefgh", time.time(), folder=True)
    kept = [
        _touch(tmp_path / f"tfslim-export-{dead + 1}-abcdefgh", time.time(), folder=True),
        _touch(tmp_path / f"tfslim-export-{dead}0-abcdefgh", time.time(), folder=True),
        _touch(tmp_path / f"other-{dead}-abcdefgh", time.time(), folder=True),
    ]
    assert _cleanup.remove_exports_of(dead, tmp_path) == [str(ours)]
    assert sorted(tmp_path.iterdir()) == sorted(kept)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the worker in /proc")
def test_ctrl_c_while_inspect_starts_is_exit_130_and_one_line(tmp_path):
    """SIGINT to the command, its whole process group (a terminal's Ctrl-C) or the worker
    alone, while the worker starts Python and imports its runtimes."""
    model = _ROOT / "tflite_models" / "digits_student_mcu.tflite"
    # Seconds after the worker starts; on a quiet machine `inspect` is done within ~1 s, so
    # the moments stay early, and one run at a time keeps each run's own timing.
    moments = [(0.0, "command"), (0.05, "group"), (0.1, "worker"), (0.2, "command")]
    signalled = 0
    for i, (delay, to) in enumerate(moments):
        folder = tmp_path / str(i)
        folder.mkdir()
        proc = _command(folder, "inspect", str(model), "--target", "nano33ble")
        assert _when(lambda p=proc: _worker(p), proc), "the worker never started"
        time.sleep(delay)
        if proc.poll() is not None:  # Finished first: this moment tested nothing.
            _finish(proc)
            continue
        if to == "group":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid if to == "command" else _worker(proc), signal.SIGINT)
        code, lines, _ = _finish(proc)
        if code == 0 and not lines:  # The signal came as the command exited by itself.
            continue
        signalled += 1
        assert code == 130 and lines == ["tfslim inspect: interrupted"], (delay, to, lines)
        assert _tfslim_temporaries(folder) == []
    assert signalled >= 2, f"only {signalled} of {len(moments)} runs were still running"


def _when(predicate, proc, timeout=120.0) -> bool:
    """Waits until `predicate()` holds (True) or the process exits (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if predicate():
            return True
        time.sleep(0.005)
    return False


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory):
    import keras

    path = tmp_path_factory.mktemp("model") / "m.keras"
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)]).save(path)
    return path


@pytest.mark.slow
def test_convert_interrupted_while_converting_or_after_its_output_leaves_nothing(
    tmp_path, keras_file
):
    """Two real conversions side by side: Ctrl-C to the process group while converting
    (checking its file), and SIGINT to the command after the output is written."""
    folders = {name: tmp_path / name for name in ("converting", "written")}
    dead = _dead_pid()
    for folder in folders.values():
        (folder / "tmp").mkdir(parents=True)
    # A folder a killed conversion left: the next isolated run removes it; a live one's stays.
    stale = folders["converting"] / "tmp" / f"tfslim-export-{dead}-abcdefgh"
    _touch(stale, _OLD, folder=True)
    live = folders["converting"] / "tmp" / f"tfslim-export-{os.getpid()}-abcdefgh"
    _touch(live, _OLD, folder=True)

    def convert(folder):
        # Calibrated, so the conversion checks its file in an isolated run: that run's folder
        # in TMPDIR shows the conversion under way (it converts in memory, leaving no trace).
        calibration = folder / "x.npy"
        np.save(calibration, np.random.default_rng(0).random((16, 4), dtype=np.float32))
        return _command(
            folder,
            "convert",
            str(keras_file),
            "-o",
            str(folder / "m.tflite"),
            "--calibration",
            str(calibration),
        )

    procs = {name: convert(folder) for name, folder in folders.items()}
    results = {}

    def drive(name):
        proc, folder = procs[name], folders[name]
        if name == "converting":
            checking = lambda: list((folder / "tmp").glob("tfslim-run-*-*"))  # noqa: E731
            assert _when(checking, proc), "the conversion never reached its check"
            os.killpg(proc.pid, signal.SIGINT)
        elif _when((folder / "m.tflite").exists, proc):
            os.kill(proc.pid, signal.SIGINT)
        results[name] = _finish(proc)

    threads = [threading.Thread(target=drive, args=(name,)) for name in procs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(results) == set(procs)

    code, lines, _ = results["converting"]
    assert code == 130 and lines == ["tfslim convert: interrupted"], lines
    # The interrupt takes effect when the converter's native call returns to Python, so the
    # output may have been completed by then; it is never a partial file.
    output = folders["converting"] / "m.tflite"
    assert not output.exists() or output.read_bytes()[4:8] == b"TFL3"
    assert not stale.exists() and live.exists()
    live.rename(tmp_path / "kept")
    assert _tfslim_temporaries(folders["converting"]) == []

    code, lines, out = results["written"]
    assert code == 130 and lines == ["tfslim convert: interrupted"], (lines, out)
    assert (folders["written"] / "m.tflite").stat().st_size > 0
    assert _tfslim_temporaries(folders["written"]) == []
