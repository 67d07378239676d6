"""The command's argument checks and input files, all before TensorFlow loads."""

import json
import math
import os
import re

__all__ = [
    "check_number",
    "check_out_dir",
    "check_output_file",
    "fmt_bytes",
    "load_npz",
    "parse_size",
    "print_json",
    "table",
]


def print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def table(rows: list[list], header: list[str]) -> str:
    """A plain-text table of ready-made cells, through the one report writer."""
    from tfslim.benchmarking.report import Column, format_table

    columns = [Column(h, lambda r, i=i: r[i], str, "left") for i, h in enumerate(header)]
    return format_table([list(r) for r in rows], columns, markdown=False)


def check_out_dir(path: str, overwrite: bool) -> None:
    """Refuses an output folder that is a file, has no parent, or holds earlier output."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"--out: {path} is a file; expected a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out: the parent directory of {path} does not exist")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"--out: {path} is not empty; pass --overwrite to replace its earlier output"
        )


def check_output_file(path: str, overwrite: bool) -> None:
    """Refuses an output file path before any conversion work is done."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"-o/--output: {path} is a directory; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"-o/--output: directory {parent} does not exist")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"-o/--output: {path} exists; pass --overwrite to replace it")


def check_number(flag: str, value, *, integer: bool, minimum: float, inclusive: bool) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        kind = "an int" if integer else "a number"
        op = ">=" if inclusive else ">"
        raise ValueError(f"{flag}: expected {kind} {op} {minimum:g}, got {value}")


def fmt_bytes(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def load_npz(path: str, argument: str):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument}: no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY" and head[:4] != b"PK\x03\x04":
        raise ValueError(
            f"{argument}: {path} is not a NumPy file; expected a .npy array or a .npz archive "
            f"of arrays (np.save / np.savez). Received: a file starting with {head!r}"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # .npy: a single array of inputs.
            arrays = {"x": loaded}
        else:
            with loaded as f:
                arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"{argument}: {path} is not a readable .npz/.npy file ({e})") from None
    x = arrays.get("x", next(iter(arrays.values()), None))
    y = arrays.get("y")
    if x is None:
        raise ValueError(f"{argument}: {path} holds no arrays")
    return x, y


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def parse_size(flag: str, text: str | None) -> int | None:
    """`256KiB` -> 262144: a byte count with an optional B, KB, KiB, MB or MiB suffix."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _SIZE_UNITS or float(match.group(1)) * _SIZE_UNITS[unit] < 1:
        raise ValueError(
            f"{flag}: expected a size in bytes >= 1, such as 65536, 64KiB or 1MB, got {text!r}"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])
