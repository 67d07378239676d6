"""The demo's output folder: checked, built beside the old one and swapped in whole.

A rerun builds everything in a fresh hidden sibling folder and swaps it in at the end, so an
interrupted run leaves the previous folder whole: never new models beside an old report.
"""

import glob
import json
import os
import shutil
import tempfile
from pathlib import Path

__all__ = ["check_out_dir", "clean_stale", "default_dir_mode", "stale_prefix", "swap_in"]


def check_out_dir(out_dir, overwrite: bool) -> Path:
    if not isinstance(out_dir, str | os.PathLike):
        raise TypeError(
            "Invalid type for argument `out_dir`. Expected a directory path. "
            f"Received: out_dir of type {type(out_dir).__name__}"
        )
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(
            "Invalid value for argument `out_dir`. Expected a directory, not a file. "
            f"Received: out_dir={str(out_dir)!r}"
        )
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(
            "Invalid value for argument `out_dir`. Expected a directory whose parent exists. "
            f"Received: out_dir={str(out_dir)!r}"
        )
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(
            "Invalid value for argument `out_dir`. Expected a new or empty directory; pass "
            f"overwrite=True to replace the demo's files. Received: out_dir={str(out_dir)!r} "
            "(not empty)"
        )
    return out_dir


def stale_prefix(out_dir: Path) -> str:
    return f".{out_dir.name}.demo-"


def clean_stale(out_dir: Path) -> None:
    """Removes the hidden folders of demo runs that were killed (their process is gone).

    A run killed between its two renames leaves the previous output under `old`; it is
    put back first, so no complete output is ever lost.
    """
    prefix = stale_prefix(out_dir)
    for path in sorted(out_dir.parent.glob(f"{glob.escape(prefix)}*")):
        kind, _, rest = path.name[len(prefix) :].partition("-")
        pid = rest.partition("-")[0]
        if not pid.isdigit() or _alive(int(pid)) or not path.is_dir():
            continue
        if kind == "old" and not out_dir.exists():
            os.replace(path, out_dir)
        else:
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _link_tree(src: Path, dst: Path) -> None:
    """Hard-links (or copies) `src` to `dst`, so the old folder keeps its own copy."""
    if src.is_symlink():
        os.symlink(os.readlink(src), dst)
    elif src.is_dir():
        dst.mkdir()
        for child in src.iterdir():
            _link_tree(child, dst / child.name)
    else:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)


def swap_in(new: Path, out_dir: Path) -> None:
    """Makes the complete `new` folder `out_dir`, keeping files the demo does not own."""
    if out_dir.is_dir():
        owned = {"report.md", "report.json", "front.png", "shrink"}
        try:
            old_report = json.loads((out_dir / "report.json").read_text())
            for r in old_report["models"]:
                owned |= {r["file"], r.get("uncompressed_file", r["file"])}
        except (OSError, ValueError, KeyError, TypeError):
            pass
        for entry in out_dir.iterdir():
            if entry.name not in owned and not (new / entry.name).exists():
                _link_tree(entry, new / entry.name)
        old = Path(
            tempfile.mkdtemp(
                prefix=f"{stale_prefix(out_dir)}old-{os.getpid()}-", dir=out_dir.parent
            )
        )
        os.replace(out_dir, old)
        os.replace(new, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, out_dir)


def default_dir_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask
