"""Pareto report of a footprint search: Markdown table, JSON and a PNG plot."""

import json
import os

from tfslim.tuning.budget import _LIMITS

__all__ = ["write_report"]

_COLUMNS = ("trial_id", "quality", "flash_bytes", "ram_bytes", "latency_ms", "mcu_latency_ms")


def format_table(records: list[dict], front_ids: set) -> str:
    """Markdown table of the trials, front members marked with `*`."""
    header = "| front | feasible | " + " | ".join(_COLUMNS) + " | hyperparameters |"
    lines = [header, "|" + "---|" * (len(_COLUMNS) + 3)]
    for r in records:
        cells = ["*" if r["trial_id"] in front_ids else "", "yes" if r["feasible"] else "no"]
        cells += [_fmt(r.get(c)) for c in _COLUMNS]
        cells.append(", ".join(f"{k}={v}" for k, v in r["hyperparameters"].items()))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _fmt(value):
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) >= 10:
        return str(int(value))
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_report(tuner, out_dir: "str | os.PathLike") -> dict:
    """Writes `pareto.md`, `pareto.json` and `pareto.png` for a finished search.

    Args:
        tuner: FootprintTuner. The search.
        out_dir: str or path-like. Output directory, created if missing.

    Returns:
        Dict with `target`, `budget`, `trials`, `front` (records, best quality first),
        `feasible_trials` and the `files` written.
    """
    from tfslim.tuning.tuner import FOOTPRINT_METRICS, _front_of

    os.makedirs(out_dir, exist_ok=True)
    records = tuner.trial_records()
    front = _front_of(records, FOOTPRINT_METRICS, None)
    front_ids = {r["trial_id"] for r in front}
    report = {
        "target": tuner.target.name,
        "budget": tuner.budget.to_dict(),
        "trials": records,
        "feasible_trials": sum(r["feasible"] for r in records),
        "front": front,
        "front_objectives": ["quality (max)", *(f"{m} (min)" for m in FOOTPRINT_METRICS)],
        "notes": "mcu_latency_ms is an estimate: macs * cycles_per_mac / clock_hz.",
    }
    files = {
        "markdown": os.path.join(out_dir, "pareto.md"),
        "json": os.path.join(out_dir, "pareto.json"),
        "png": os.path.join(out_dir, "pareto.png"),
    }
    with open(files["markdown"], "w") as f:
        f.write(f"# Footprint search on {tuner.target.name}\n\n")
        f.write(f"Budget: {tuner.budget.to_dict()}\n\n")
        f.write(format_table(records, front_ids) + "\n")
    report["files"] = files
    with open(files["json"], "w") as f:
        json.dump(report, f, indent=1)
    _plot(records, front_ids, tuner.budget, files["png"])
    return report


def _plot(records, front_ids, budget, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from tfslim.tuning.tuner import FOOTPRINT_METRICS

    limits = {figure: getattr(budget, name) for name, figure in _LIMITS.items()}
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
            pts = [(r[metric], r["quality"]) for r in records if select(r) and r[metric]]
            if pts:
                ax.scatter(*zip(*pts, strict=True), label=kind, **style)
        if limits[metric] is not None:
            ax.axvline(limits[metric], color="tab:red", linestyle="--", label="budget")
        ax.set_xlabel(metric + (" (estimate)" if metric == "mcu_latency_ms" else ""))
        ax.set_ylabel("quality")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
