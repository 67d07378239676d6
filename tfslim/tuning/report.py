"""Pareto report of a footprint search: Markdown table, JSON and a PNG plot, all atomic."""

import os

from tfslim.benchmarking.report import Column, footprint_columns, format_table, write_report_files
from tfslim.tuning.budget import BUDGET_FIGURES

__all__ = ["trial_columns", "write_report"]

# Axis label of each front objective in the plot (the table headers, `footprint_columns`).
_AXIS_LABELS = {
    "flash_bytes": "flash (bytes)",
    "arena_bytes": "RAM: TFLite Micro arena (bytes)",
    "latency_ms": "host latency (ms, LiteRT)",
    "mcu_latency_estimate_ms": "MCU latency (ms, ESTIMATE: per-op cost model)",
}


def trial_columns(target: str, front_ids=None) -> list[Column]:
    """Table columns of a search's trial records: the footprint figures of `target`."""
    columns = []
    if front_ids is not None:
        columns.append(Column("front", lambda r: "*" if r["trial_id"] in front_ids else "", str))
        columns.append(Column("feasible", "feasible", align="left"))
    columns.append(Column("trial", "trial_id", str, "left"))
    columns += footprint_columns([target], quality="quality", gzip=False)
    return columns


def write_report(tuner, out_dir: "str | os.PathLike", *, overwrite: bool = True) -> dict:
    """Writes `pareto.md`, `pareto.json` and `pareto.png` for a finished search.

    Args:
        tuner: FootprintTuner. The search.
        out_dir: str or path-like. Output directory, created if missing.
        overwrite: bool. Replace the report files of an earlier run. Defaults to `True`.

    Returns:
        Dict with `target`, `budget`, `trials`, `front` (records, best quality first),
        `feasible_trials` and the `files` written.
    """
    from tfslim.tuning.tuner import FOOTPRINT_METRICS, front_records

    os.makedirs(out_dir, exist_ok=True)
    records = tuner.trial_records()
    front = front_records(records, objectives=FOOTPRINT_METRICS)
    front_ids = {r["trial_id"] for r in front}
    target = tuner.target.name
    report = {
        "target": target,
        "budget": tuner.budget.to_dict(),
        "trials": records,
        "feasible_trials": sum(r["feasible"] for r in records),
        "front": front,
        "front_objectives": ["quality (max)", *(f"{m} (min)" for m in FOOTPRINT_METRICS)],
        "notes": "mcu_latency_estimate_ms is an estimate from each op's MACs or elements "
        "with the board's per-op-type cycle costs (tfslim targets); "
        "latency_ms is measured with LiteRT on the host CPU.",
    }
    columns = [
        *trial_columns(target, front_ids),
        Column(
            "hyperparameters",
            lambda r: ", ".join(f"{k}={v}" for k, v in r["hyperparameters"].items()),
            str,
            "left",
        ),
    ]
    budget = ", ".join(f"{k} {v}" for k, v in tuner.budget.limits().items()) or "none"
    markdown = (
        f"# Footprint search on {target}\n\n"
        f"Budget: {budget}. {report['feasible_trials']} of {len(records)} trials within it; "
        "the Pareto front (`*`) trades quality against every figure. Host latency is "
        "measured with LiteRT on this machine's CPU; the MCU latency is an estimate "
        "(each op's MACs or elements times the board's per-op-type cycle cost, "
        "`tfslim targets`).\n\n" + format_table(records, columns) + "\n"
    )
    report["files"] = write_report_files(
        out_dir,
        "pareto",
        markdown=markdown,
        data=report,
        figure=_plot(records, front_ids, tuner.budget),
        overwrite=overwrite,
    )
    return report


def _plot(records, front_ids, budget):
    from matplotlib.figure import Figure

    from tfslim.tuning.tuner import FOOTPRINT_METRICS

    limits = {figure: getattr(budget, name) for name, figure in BUDGET_FIGURES.items()}

    def figure_of(record, metric):
        value = record.get(metric)
        return max(value.values(), default=None) if isinstance(value, dict) else value

    fig = Figure(figsize=(10, 8))
    for i, metric in enumerate(FOOTPRINT_METRICS):
        ax = fig.add_subplot(2, 2, i + 1)
        for kind, select, style in (
            ("infeasible", lambda r: not r["feasible"], dict(marker="x", color="tab:red")),
            (
                "feasible",
                lambda r: r["feasible"] and r["trial_id"] not in front_ids,
                dict(marker="o", color="tab:gray"),
            ),
            ("Pareto front", lambda r: r["trial_id"] in front_ids, dict(marker="*", s=120)),
        ):
            pts = [
                (figure_of(r, metric), r["quality"])
                for r in records
                if select(r) and figure_of(r, metric)
            ]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=kind, **style)
        if limits[metric] is not None:
            ax.axvline(limits[metric], color="tab:red", linestyle="--", label="budget")
        ax.set_xlabel(_AXIS_LABELS.get(metric, metric), fontsize=8)
        ax.set_ylabel("quality")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
