"""The report of a strategy run: `report.md`, `report.json` and `front.png`, all atomic."""

import io
import os

from tfslim import _io
from tfslim.benchmarking.report import (
    Column,
    footprint_columns,
    format_table,
    write_report_files,
)
from tfslim.tuning.budget import BUDGET_FIGURES

__all__ = ["candidate_columns", "plot_front", "write_strategy_report"]

_AXIS_LABELS = {
    "flash_bytes": "int8 flash: .tflite size (KiB)",
    "arena_bytes": "RAM: TFLite Micro arena (KiB)",
    "latency_ms": "host latency (ms, LiteRT on this CPU)",
    "mcu_latency_estimate_ms": "MCU latency (ms, ESTIMATE: per-op cost model)",
}
_KIB = {"flash_bytes", "arena_bytes"}


def candidate_columns(result, *, markdown: bool = True) -> list[Column]:
    """Table columns of a run's candidate records (`StrategyResult.records()`)."""
    fronts = {name for front in result.front.values() for name in (c.name for c in front)}
    best = result.best.name if result.best else None

    def mark(row):
        marks = []
        if row["name"] == best:
            marks.append("best")
        if row["name"] in fronts:
            marks.append("front")
        if row["name"] == result.baseline:
            marks.append("baseline")
        return ", ".join(marks)

    columns = [
        Column("candidate", "name", str, "left"),
        Column("", mark, str, "left"),
        Column("fits", "feasible", align="left"),
    ]
    boards = [result.target] if any(r["board_estimates_ms"] for r in result.records()) else []
    columns += footprint_columns(boards, quality="quality", gzip=markdown)
    if markdown:
        columns.append(Column("levers", "description", str, "left"))
    return columns


def plot_front(result):
    """A matplotlib Figure: quality against int8 flash and against RAM (or latency).

    The baseline (the user's model, converted as given) is a black diamond, the front a
    connected line of stars, other feasible candidates blue dots, infeasible ones grey
    crosses, and each budget limit a dashed red line. LUT-compressed candidates are labelled
    "(LUT, TFLM only)".
    """
    from matplotlib.figure import Figure

    fronts = result.front
    records = result.records()
    second = "arena_bytes" if "arena_bytes" in fronts else "latency_ms"
    axes = [a for a in ("flash_bytes", second) if any(r.get(a) is not None for r in records)]
    limits = {figure: getattr(result.budget, name) for name, figure in BUDGET_FIGURES.items()}
    fig = Figure(figsize=(6 * len(axes), 4.8))
    for i, axis in enumerate(axes):
        ax = fig.add_subplot(1, len(axes), i + 1)
        scale = 1024.0 if axis in _KIB else 1.0

        def xy(rows, axis=axis, scale=scale):
            pts = [(r[axis] / scale, r["quality"]) for r in rows if r.get(axis) is not None]
            return list(zip(*pts, strict=True)) if pts else None

        on_front = {c.name for c in fronts.get(axis, [])}
        groups = (
            (
                "infeasible (over budget)",
                [r for r in records if not r["feasible"]],
                dict(marker="x", color="0.6", s=40),
            ),
            (
                "feasible",
                [r for r in records if r["feasible"] and r["name"] not in on_front],
                dict(marker="o", color="tab:blue", s=30),
            ),
        )
        for label, rows, style in groups:
            pts = xy(rows)
            if pts:
                ax.scatter(*pts, label=label, zorder=2, **style)
        front_rows = sorted((r for r in records if r["name"] in on_front), key=lambda r: r[axis])
        pts = xy(front_rows)
        if pts:
            ax.step(*pts, where="post", color="tab:orange", zorder=1)
            ax.scatter(*pts, marker="*", s=160, color="tab:orange", label="Pareto front", zorder=3)
        baseline = [r for r in records if r["name"] == result.baseline]
        pts = xy(baseline)
        if pts:
            over = not baseline[0]["feasible"]
            ax.scatter(
                *pts,
                marker="D",
                s=90,
                facecolors="none",
                edgecolors="0.6" if over else "black",
                linewidths=2,
                label="baseline (model as given, int8)" + (", over budget" if over else ""),
                zorder=4,
            )
        for r in records:
            if r.get(axis) is not None:
                ax.annotate(
                    # A LUT-compressed file runs only in TFLite Micro.
                    r["name"] + (" (LUT, TFLM only)" if r.get("compressed") else ""),
                    (r[axis] / scale, r["quality"]),
                    fontsize=7,
                    xytext=(4, 3),
                    textcoords="offset points",
                )
        if limits.get(axis) is not None:
            ax.axvline(limits[axis] / scale, color="tab:red", linestyle="--", label="budget")
        ax.set_xlabel(_AXIS_LABELS[axis])
        ax.set_ylabel(f"quality: {_metric(records)} of the int8 model (validation)")
        ax.grid(alpha=0.3)
        ax.margins(0.12)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{result.strategy} on {result.target}: {len(records)} candidates")
    fig.tight_layout()
    return fig


def _metric(records) -> str:
    return next((r["metric"] for r in records if r.get("metric")), "quality")


def write_strategy_report(result, *, overwrite: bool = True) -> dict:
    """Writes `report.md`, `report.json` and `front.png` of `result` into its directory.

    Returns:
        Dict of `markdown`, `json` and `png` to the paths written.
    """
    data = result.to_dict()
    limits = ", ".join(f"{k} {v:,}" for k, v in result.budget.limits().items()) or "none"
    best = result.best
    if best is not None:
        verdict = (
            f"Best within budget: **{best.name}**, quality {best.quality:.4f}, "
            f"{best.footprint.flash_bytes:,} B flash."
        )
    else:
        closest = result.closest
        verdict = (
            "No candidate fits the budget; the closest is "
            f"**{closest.name}** ({'; '.join(closest.violations)})."
        )
    base = result.baseline_candidate
    lines = [
        f"# {result.strategy} on {result.target}",
        "",
        f"Budget: {limits}. {sum(c.feasible for c in result.candidates)} of "
        f"{len(result.candidates)} candidates fit it. Baseline: **{base.name}** (quality "
        f"{base.quality:.4f}, {base.footprint.flash_bytes:,} B flash). {verdict}",
        "",
        "Every figure is measured on the converted model (LiteRT for quality and host "
        "latency, TFLite Micro for the arena) except the MCU latency, an estimate from the "
        "board's per-op cost model (`tfslim targets`). `front`: on the Pareto front of "
        "quality against at least one footprint figure. Plot: `front.png`.",
        "",
        format_table(result.records(), candidate_columns(result)),
        "",
    ]
    lines += [f"- {note}" for note in result.notes]
    # Render the plot before any file is replaced, so a plotting failure changes nothing.
    buffer = io.BytesIO()
    plot_front(result).savefig(buffer, format="png", dpi=80)
    files = write_report_files(
        os.fspath(result.directory),
        "report",
        markdown="\n".join(lines).rstrip() + "\n",
        data=data,
        overwrite=overwrite,
    )
    png = os.path.join(os.fspath(result.directory), "front.png")
    files["png"] = _io.atomic_write(png, buffer.getvalue(), overwrite=overwrite)
    return files
