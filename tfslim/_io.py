"""Atomic file output: a reader never sees a half-written model or report.

The temporary beside an output carries the writer's pid (`tfslim._cleanup`), so a write
killed by SIGKILL leaves a file the next write of the same output removes.
"""

import os
import tempfile
from pathlib import Path

from tfslim import _cleanup


def check_output_path(path, *, overwrite: bool = False, argument: str = "output_path") -> Path:
    """Validates an output path before any expensive work is done."""
    if not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"Invalid type for argument `{argument}`. Expected a file path. Received: "
            f"{argument} of type {type(path).__name__}"
        )
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(
            f"Invalid value for argument `{argument}`. Expected a file path, not a directory. "
            f"Received: {argument}={str(path)!r}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Invalid value for argument `{argument}`. Expected a path in an existing "
            f"directory. Received: {argument}={str(path)!r} (directory "
            f"{str(path.parent)!r} does not exist)"
        )
    if not os.access(path.parent, os.W_OK):
        raise PermissionError(
            f"Invalid value for argument `{argument}`. Expected a path in a directory this "
            f"process may write to. Received: {argument}={str(path)!r} (directory "
            f"{str(path.parent)!r} is not writable)"
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Invalid value for argument `{argument}`. The file exists; pass overwrite=True "
            f"to replace it. Received: {argument}={str(path)!r}"
        )
    return path


def atomic_write(path, data: bytes | str, *, overwrite: bool = False) -> str:
    """Writes `data` to a temporary file beside `path`, then renames it into place."""
    path = check_output_path(path, overwrite=overwrite)
    if isinstance(data, str):
        data = data.encode()
    _cleanup.remove_stale_beside(path)
    fd, tmp = tempfile.mkstemp(
        prefix=_cleanup.hidden_prefix(path.name), suffix=".tmp", dir=path.parent
    )
    _cleanup.track(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())  # mkstemp makes 0600; outputs get the usual mode.
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)


def _default_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def save_keras_model(model, path, *, overwrite: bool = False) -> str:
    """Saves a Keras model to a temporary `.keras` file beside `path`, then renames it.

    Keras writes `.keras` archives in place, so a process killed mid-save would leave the
    previous file destroyed; this way the old file stays whole until the new one is complete.
    """
    path = check_output_path(path, overwrite=overwrite)
    _cleanup.remove_stale_beside(path)
    fd, tmp = tempfile.mkstemp(
        prefix=_cleanup.hidden_prefix(path.name), suffix=".tmp.keras", dir=path.parent
    )
    _cleanup.track(tmp)
    os.close(fd)
    try:
        model.save(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _default_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return str(path)
