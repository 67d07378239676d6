"""The one report writer: tables (Markdown or plain text) and atomic .md / .json / .png files.

The demo's `report.md`, the tuner's `pareto.md` and the command line's tables are rendered
here from the same `Column`s, so a figure has the same header and format everywhere
(`footprint_columns`). Files go through `tfslim._io.atomic_write`: a reader never sees a
half-written report, and an interrupted run leaves the previous one whole.
"""

import dataclasses
import io
import json
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from tfslim import _io

__all__ = [
    "Column",
    "footprint_columns",
    "format_bytes",
    "format_number",
    "format_table",
    "write_report_files",
]


def format_number(value) -> str:
    """A figure as text: `-` for None, ints with thousands separators, floats to 4 digits."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value.is_integer() and abs(value) >= 10:
            return f"{int(value):,}"
        return f"{value:.4g}"
    return str(value)


def format_bytes(value) -> str:
    """A byte count as `12,345 B` (`-` for None)."""
    return "-" if value is None else f"{int(value):,} B"


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a table.

    Args:
        header: str. The column's title.
        value: str or callable. A row key, or `row -> value`.
        format: callable. `value -> str`. Defaults to `format_number`.
        align: str. `"right"` (figures) or `"left"` (names). Defaults to `"right"`.
    """

    header: str
    value: "str | Callable[[Mapping], object]"
    format: Callable[[object], str] = format_number
    align: str = "right"

    def __post_init__(self):
        if self.align not in ("left", "right"):
            raise ValueError(
                "Invalid value for argument `align`. Expected 'left' or 'right'. "
                f"Received: align={self.align!r}"
            )

    def cell(self, row: Mapping) -> str:
        value = row.get(self.value) if isinstance(self.value, str) else self.value(row)
        return self.format(value)


def footprint_columns(
    boards: Sequence[str] = (), *, quality: str | None = "quality", gzip: bool = True
) -> list[Column]:
    """The columns of `tfslim.Footprint` figures, with the same headers in every report.

    Args:
        boards: sequence of str. One "MCU latency estimate" column per board (rows hold
            `mcu_latency_estimate_ms` as a mapping of board to ms, or one number).
            Defaults to `()`.
        quality: str or None. Header of the quality column; None leaves it out.
            Defaults to `"quality"`.
        gzip: bool. Include the gzip size. Defaults to `True`.
    """
    columns = [Column("flash", "flash_bytes", format_bytes)]
    if gzip:
        columns.append(Column("gzip", "gzip_bytes", format_bytes))
    columns += [
        Column("RAM (TFLM arena)", "arena_bytes", format_bytes),
        Column("host latency ms", "latency_ms"),
    ]
    for board in boards:
        columns.append(
            Column(f"{board} ms (estimate)", lambda row, b=board: _board_estimate(row, b))
        )
    if quality:
        columns.append(Column(quality, "quality"))
    return columns


def _board_estimate(row: Mapping, board: str):
    estimate = row.get("mcu_latency_estimate_ms")
    if isinstance(estimate, Mapping):
        return estimate.get(board)
    return estimate


def format_table(
    rows: Sequence[Mapping], columns: Sequence[Column], *, markdown: bool = True
) -> str:
    """Renders rows as a Markdown table or as aligned plain text (for a terminal).

    Args:
        rows: sequence of mappings. One per table row.
        columns: sequence of Column.
        markdown: bool. Markdown (`| a | b |`) or space-aligned text. Defaults to `True`.

    Example:

    >>> print(format_table([{"name": "a", "flash_bytes": 4000}],
    ...                    [Column("name", "name", str, "left"),
    ...                     Column("flash", "flash_bytes", format_bytes)], markdown=False))
    name    flash
    ----  -------
    a     4,000 B
    """
    headers = [c.header for c in columns]
    cells = [[c.cell(r) for c in columns] for r in rows]
    if markdown:
        cells = [[v.replace("|", "\\|") for v in r] for r in cells]
        rule = ["---:" if c.align == "right" else "---" for c in columns]
        lines = [headers, rule, *cells]
        return "\n".join("| " + " | ".join(line) + " |" for line in lines)
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values):
        padded = [
            v.ljust(w) if c.align == "left" else v.rjust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, cells)])


def write_report_files(
    out_dir: "str | os.PathLike",
    stem: str,
    *,
    markdown: str,
    data: Mapping,
    figure=None,
    overwrite: bool = False,
) -> dict:
    """Writes `<stem>.md`, `<stem>.json` and, with a figure, `<stem>.png`, each atomically.

    Args:
        out_dir: str or path-like. An existing directory.
        stem: str. File name without suffix.
        markdown: str. The Markdown text.
        data: mapping. JSON-serializable report.
        figure: matplotlib Figure or None. Saved as PNG. Defaults to `None`.
        overwrite: bool. Replace existing files. Defaults to `False`.

    Returns:
        Dict of `markdown`, `json` (and `png`) to the paths written.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise FileNotFoundError(
            "Invalid value for argument `out_dir`. Expected an existing directory. "
            f"Received: out_dir={str(out_dir)!r}"
        )
    files = {"markdown": str(out_dir / f"{stem}.md"), "json": str(out_dir / f"{stem}.json")}
    if figure is not None:
        files["png"] = str(out_dir / f"{stem}.png")
    # Serialize everything first, so a failure leaves no file of this report changed.
    payloads = {"markdown": markdown, "json": json.dumps(data, indent=1, default=str) + "\n"}
    if figure is not None:
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=80)
        payloads["png"] = buffer.getvalue()
    for kind, path in files.items():
        _io.atomic_write(path, payloads[kind], overwrite=overwrite)
    return files
