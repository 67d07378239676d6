"""The demo's report: the table of every variant, a line per shrunk model, the front."""

from tfslim.demo.boards import BOARDS

__all__ = ["markdown", "pruning_notes"]


def _front_markdown(front: dict) -> list[str]:
    from tfslim.benchmarking.report import Column, format_bytes, format_table

    limit = front["budget"]["max_flash_bytes"]
    columns = [
        Column("candidate", "name", str, "left"),
        Column("fits", "feasible", align="left"),
        Column("flash", "flash_bytes", format_bytes),
        Column("RAM (TFLM arena)", "arena_bytes", format_bytes),
        Column("TFLite acc", "quality"),
        Column("levers", "description", str, "left"),
    ]
    return [
        "",
        "## Pareto front: `tfslim.shrink`",
        "",
        f"`tfslim.shrink` of the float CNN for the {front['target']}, budget "
        f"{limit:,} B flash (half the float CNN's int8 file): the model as given stays in "
        "the table as infeasible (grey in the plot); the best candidate within budget is "
        f"**{front['best']}**. Models and `report.md` in `{front['directory']}/`.",
        "",
        format_table(front["candidates"], columns),
        "",
        f"![Pareto front: quality vs int8 flash and TFLite Micro arena]({front['plot']})",
    ]


def _columns():
    from tfslim.benchmarking.report import Column, footprint_columns

    def fits(row):
        return ", ".join(b for b, reasons in row["board_reasons"].items() if not reasons) or "none"

    return [
        Column("model", "model", str, "left"),
        Column("target", "target", str, "left"),
        Column("quant", "quantization", str, "left"),
        *footprint_columns(BOARDS, quality=None),
        Column("Keras acc", "keras_quality"),
        Column("TFLite acc", "quality"),
        Column("agree", "agreement"),
        Column("fits", fits, str, "left"),
    ]


def _dense_reference(row, rows):
    """The least sparse row of the same target and parameter count (the unpruned model)."""
    same = [
        r
        for r in rows
        if r["target"] == row["target"]
        and r["params"] == row["params"]
        and r is not row
        and not r.get("structure")  # a clustered model is not the dense one
    ]
    # Prefer the unpruned model converted the same way (QAT beside pruned + QAT).
    best = min(
        same, key=lambda r: (r["quantization"] != row["quantization"], r["sparsity"]), default=None
    )
    return best if best is not None and best["sparsity"] < row["sparsity"] - 0.2 else None


def pruning_notes(rows, micro_targets) -> list[str]:
    """One line per pruned row, stating what its measured figures show."""
    notes = []
    for row in rows:
        if row.get("structure"):
            notes.append(_structure_note(row, rows))
            continue
        if row["sparsity"] < 0.25:
            continue
        ref = _dense_reference(row, rows)
        zeros = f"{row['sparsity']:.0%} of its weights are zero"
        head = f"- **{row['model']}** ({row['target']}): {row['flash_bytes']:,} B"
        if ref is not None:
            head += f", {row['flash_bytes'] / ref['flash_bytes']:.2f}x dense {ref['model']}"
        gzip = f"gzip {row['gzip_bytes']:,} B"
        if ref is not None:
            gzip += f", {row['gzip_bytes'] / ref['gzip_bytes']:.2f}x dense"
        if row["target"] in micro_targets:
            if row["sparse_tensors"] == 0:
                line = (
                    f"{head}; {zeros}, but TFLite Micro reads only dense tensors, so the file "
                    f"stores every zero and saves no flash: unstructured zeros only compress "
                    f"({gzip}, what an over-the-air update ships)"
                )
                board = _estimate(row)
                if ref is not None and board is not None and board == _estimate(ref):
                    line += (
                        f", and no int8 kernel skips a zero ({board[0]} estimate "
                        f"{board[1]:.4g} ms, as dense)"
                    )
                notes.append(line + ".")
            else:
                notes.append(f"{head}; {zeros}, {row['sparse_tensors']} tensors sparse ({gzip}).")
            continue
        if row["sparse_tensors"] == 0:
            notes.append(
                f"{head}; {zeros}, but the file stores its tensors dense (none in TFLite's "
                f"sparse format), so the zeros save no flash, only compress ({gzip})."
            )
            continue
        line = f"{head}; {zeros}, {row['sparse_tensors']} tensors in TFLite's sparse format"
        if ref is not None and row["latency_ms"] is not None and ref["latency_ms"] is not None:
            line += f"; host latency {row['latency_ms']} ms vs {ref['latency_ms']} ms dense"
            if row["latency_runtime"] == "builtin" and ref["latency_runtime"] == "xnnpack":
                line += (
                    ": XNNPACK refused the sparse model, so LiteRT ran its builtin sparse "
                    "kernels instead of XNNPACK"
                )
            elif row["latency_ms"] > ref["latency_ms"]:
                line += f" ({row['latency_runtime']} kernels both)"
        notes.append(line + ".")
    return notes


def _estimate(row):
    """(board, ms) of the first board's MCU latency estimate, or None."""
    estimates = row.get("mcu_latency_estimate_ms") or {}
    board = next(iter(estimates), None)
    return None if board is None else (board, estimates[board])


def _versus(label, value, dense, unit=""):
    """`label value vs dense (ratio x)` from two measured figures."""
    from tfslim.benchmarking.report import format_number

    if value is None or dense is None:
        return None
    text = f"{label} {format_number(value)}{unit} vs {format_number(dense)}{unit}"
    return text + (f" ({value / dense:.2f}x)" if dense else "")


def _structure_note(row, rows) -> str:
    """The line explaining a channel-pruned or clustered row against its unshrunk model."""
    from tfslim.litert import interpreter

    ref = next(
        (r for r in rows if r["model"] == row.get("reference") and r["target"] == row["target"]),
        None,
    )
    head = f"- **{row['model']}** ({row['target']}): {row['flash_bytes']:,} B"
    if ref is None:
        return head + "."
    head += f", {row['flash_bytes'] / ref['flash_bytes']:.2f}x dense {ref['model']}"
    arena = _versus("arena", row["arena_bytes"], ref["arena_bytes"], " B")
    if row["structure"] == "channels":
        figures = [
            _versus("params", row["params"], ref["params"]),
            _versus("MACs", row["macs"], ref["macs"]),
            arena,
            _versus("host latency", row["latency_ms"], ref["latency_ms"], " ms"),
        ]
        board = _estimate(row)
        if board is not None and _estimate(ref) is not None:
            figures.append(_versus(f"{board[0]} estimate", board[1], _estimate(ref)[1], " ms"))
        return (
            f"{head}; the pruned channels are removed from the model, so the file holds fewer "
            "weights physically and every int8 kernel does less work: "
            + ", ".join(f for f in figures if f)
            + "."
        )
    line = (
        f"{head}; clustering leaves each kernel a few distinct values, which TFLite "
        "Micro's LUT compression stores as bit-packed indices into a table of them "
        f"(gzip {row['gzip_bytes']:,} B vs {ref['gzip_bytes']:,} B)"
    )
    if interpreter.TFLM_DECODE in row["ops"] and arena:
        more = "more" if row["arena_bytes"] > ref["arena_bytes"] else "no more"
        line += (
            f"; flash goes down, but DECODE ops expand the compressed kernels into the "
            f"arena at run time, so it needs {more} RAM: {arena}"
        )
    elif arena:
        line += f"; no kernel was compressed (no DECODE op): {arena}"
    twin = row.get("uncompressed_file")
    return line + (
        f"; accuracy is the uncompressed int8 file's{f' (`{twin}`)' if twin else ''}: the "
        "same values; LiteRT has no DECODE op, so no host latency, and the compressed file "
        "runs only in TFLite Micro."
    )


def markdown(report: dict) -> str:
    from tfslim.benchmarking.report import format_table

    rows = report["models"]
    micro = {r["target"] for r in rows if r["mcu_latency_estimate_ms"]}
    n_test = report["test_samples"]
    lines = [
        "# tfslim demo report",
        "",
        f"Data: {report['dataset']}. Training: {report['epochs']} epochs. "
        f"Total time: {report['seconds']:.0f} s. Sizes, arenas, latencies and accuracies are "
        "measured (LiteRT and TFLite Micro interpreters).",
        "",
        "- **host latency**: median LiteRT latency of one inference on the CPU that ran this "
        "report (XNNPACK where it accepts the model), not a microcontroller's.",
        "- **<board> ms (estimate)**: microcontroller latency *estimated* op by op: each "
        "op's MACs or elements times its type's cycle cost on the board's kernels, over the "
        "clock (`tfslim targets` shows the cost models and their sources); "
        "shown for the microcontroller files.",
        "- **RAM (TFLM arena)**: the smallest TFLite Micro tensor arena that allocates and runs "
        "the model (measured for the microcontroller files).",
        f"- **agree**: class agreement, the fraction of the {n_test} test images on which the "
        "TFLite model predicts the same class as the Keras model it was converted from.",
        "",
        format_table(rows, _columns()),
    ]
    notes = pruning_notes(rows, micro)
    if notes:
        lines += ["", "Pruned and clustered models:", "", *notes]
    if report.get("shrink"):
        lines += _front_markdown(report["shrink"])
    lines += ["", "Ops:", ""]
    lines += [
        f"- {r['file']}: " + ", ".join(f"{k} x{v}" for k, v in r["ops"].items()) for r in rows
    ]
    lines += ["", "Descriptions:", ""]
    seen = []
    for r in rows:
        if r["model"] not in seen:
            seen.append(r["model"])
            lines.append(f"- **{r['model']}**: {r['description']}")
    return "\n".join(lines) + "\n"
