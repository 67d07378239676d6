"""tfslim's own temporaries: named so that a later run can tell them apart and clean them.

A process killed by SIGKILL (or a native crash) runs no cleanup, so every temporary
tfslim makes carries its owner's pid in its name:

- `.NAME.PID.XXXXXXXX.tmp` (and `.tmp.keras`) beside an output `NAME` (`tfslim._io`);
- `tfslim-run-PID-XXXXXXXX` folders in the temporary directory holding a model and its
  data for an isolated runtime check (`tfslim.litert.isolation`), and
  `tfslim-export-PID-XXXXXXXX` SavedModel folders there, which earlier
  versions' converter made for each conversion (it now converts in memory).

A later write of `NAME` removes the stale ones beside it, and a later isolated run removes
the stale folders: those whose owner is dead and that are older than the current
process. Nothing else is touched: a live owner's temporaries, files of other names and
folders of other programs stay. Names from before the pid was part of them (`.NAME.
XXXXXXXX.tmp`, `tfslim-export-XXXXXXXX`) are removed once they are a day old.

The `tfslim` command also records each temporary as it is made (`record_to`), so when the
command's worker process dies, the command removes what it left at once.
"""

import contextlib
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

__all__ = [
    "EXPORT_PREFIX",
    "export_prefix",
    "run_prefix",
    "hidden_prefix",
    "record_to",
    "remove_exports_of",
    "remove_recorded",
    "remove_stale_beside",
    "remove_stale_exports",
    "track",
]

EXPORT_PREFIX = "tfslim-export-"
RUN_PREFIX = "tfslim-run-"
# mkstemp / mkdtemp draw 8 characters from this alphabet.
_RANDOM = r"[a-z0-9_]{8}"
_EXPORT = re.compile(rf"(?:{EXPORT_PREFIX}|{RUN_PREFIX})(?:(?P<pid>\d+)-)?{_RANDOM}")
# Temporaries without an owner's pid in their name are this old before they are removed.
_LEGACY_AGE_S = 24 * 3600
_STARTED = time.time()
_RECORD_FD: "int | None" = None
_AFTER_TRACK = None


def export_prefix() -> str:
    """The prefix of a SavedModel export folder this process makes in TMPDIR."""
    return f"{EXPORT_PREFIX}{os.getpid()}-"


def run_prefix() -> str:
    """The prefix of an isolated-run folder this process makes in TMPDIR."""
    return f"{RUN_PREFIX}{os.getpid()}-"


def hidden_prefix(name: str) -> str:
    """The prefix of a temporary file written beside the output `name`."""
    return f".{name}.{os.getpid()}."


def _hidden(name: str) -> "re.Pattern[str]":
    return re.compile(rf"\.{re.escape(name)}\.(?:(?P<pid>\d+)\.)?{_RANDOM}\.tmp(?:\.keras)?")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except PermissionError:  # Another user's process.
        return True
    except (ProcessLookupError, OverflowError):
        return False
    return True


def _stale(path: Path, pid: "str | None", now: float) -> bool:
    try:
        mtime = path.lstat().st_mtime
    except OSError:
        return False
    if pid is None:
        return now - mtime > _LEGACY_AGE_S
    return mtime < _STARTED and not _alive(int(pid))


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def remove_stale_beside(path: "str | os.PathLike") -> list[str]:
    """Removes the stale temporaries of earlier writes of `path`; returns what it removed."""
    path = Path(path)
    pattern, now, removed = _hidden(path.name), time.time(), []
    with contextlib.suppress(OSError), os.scandir(path.parent) as entries:
        for entry in entries:
            match = pattern.fullmatch(entry.name)
            if match and _stale(Path(entry.path), match["pid"], now):
                _remove(Path(entry.path))
                removed.append(entry.path)
    return removed


def remove_stale_exports(folder: "str | os.PathLike | None" = None) -> list[str]:
    """Removes export and run folders that dead tfslim processes left in `folder` (TMPDIR)."""
    folder = Path(folder or tempfile.gettempdir())
    now, removed = time.time(), []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _EXPORT.fullmatch(entry.name)
            if (
                match
                and entry.is_dir(follow_symlinks=False)
                and _stale(Path(entry.path), match["pid"], now)
            ):
                _remove(Path(entry.path))
                removed.append(entry.path)
    return removed


def remove_exports_of(pid: int, folder: "str | os.PathLike | None" = None) -> list[str]:
    """Removes the export and run folders of process `pid`, which the caller knows is dead."""
    folder = Path(folder or tempfile.gettempdir())
    removed = []
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            match = _EXPORT.fullmatch(entry.name)
            if match and match["pid"] == str(pid) and entry.is_dir(follow_symlinks=False):
                _remove(Path(entry.path))
                removed.append(entry.path)
    return removed


def record_to(fd: "int | None", *, after=None) -> None:
    """Appends the path of every temporary this process makes to file descriptor `fd`;
    `after()`, if given, is called once each is recorded (the supervisor's test-only
    crash hook)."""
    global _RECORD_FD, _AFTER_TRACK
    _RECORD_FD, _AFTER_TRACK = fd, after


def track(path: "str | os.PathLike") -> None:
    """Records a temporary just made (see `record_to`); a no-op unless recording."""
    if _RECORD_FD is not None:
        with contextlib.suppress(OSError):
            os.write(_RECORD_FD, b"tmp " + os.fsencode(os.path.abspath(path)) + b"\n")
        if _AFTER_TRACK is not None:
            _AFTER_TRACK()


def remove_recorded(record, pid: int) -> list[str]:
    """Removes the temporaries of dead process `pid` that `record` (a binary file that
    process wrote with `track`) lists and that still exist; returns what it removed.

    Only paths named like tfslim's temporaries of that pid are touched, whatever the
    record says.
    """
    record.seek(0)
    removed = []
    for line in record.read().splitlines():
        if not line.startswith(b"tmp "):  # The supervisor's other notes.
            continue
        path = Path(os.fsdecode(line[4:]))
        name = path.name
        ours = name.startswith(f"{EXPORT_PREFIX}{pid}-") or (
            name.startswith(".") and f".{pid}." in name and ".tmp" in name
        )
        if ours and (path.exists() or path.is_symlink()):
            _remove(path)
            removed.append(str(path))
    return removed
