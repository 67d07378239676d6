"""`tfslim.inspect`: what a .tflite model costs on a device, measured."""

import gzip
import os
from typing import TYPE_CHECKING

from tfslim.litert import flatbuffer, interpreter, isolation, micro, sparsity
from tfslim.litert.targets import Target, get_target

if TYPE_CHECKING:
    from tfslim.litert.converter import ConversionResult

__all__ = ["inspect"]


def inspect(
    model: "bytes | str | os.PathLike | ConversionResult",
    *,
    target: "str | Target | list | None" = None,
    micro_check: bool = True,
) -> dict:
    """Inspects a TFLite model: ops, dtypes, parameters, MACs, TFLM arena, board fit.

    Works on any .tflite model, including ones tfslim did not make.

    Args:
        model: bytes, str, path-like or ConversionResult. The .tflite model.
        target: str, Target, list of them, or None. Adds a `targets.<name>` verdict
            (fits, flash and RAM use against the budget, latency estimate) for each.
            Defaults to `None`.
        micro_check: bool. Run the TFLite Micro interpreter to measure the tensor arena.
            Defaults to `True`.

    Returns:
        A JSON-safe dict with `size_bytes`, `gzip_bytes`, `ops`, `fully_integer`,
        `params`, `nonzero_params`, `sparsity`, `macs`, `inputs`, `outputs`, `micro`
        and, with a target, `targets`.

    Raises:
        InvalidModelError: for an empty, truncated, corrupted or non-TFLite input: the
            file identifier is checked before a file is read whole, and LiteRT's
            flatbuffer verifier (run in a child process) must accept the file.
        FileNotFoundError: for a path that does not exist.

    Example:

    >>> import tfslim
    >>> report = tfslim.inspect("model.tflite", target="nano33ble")  # doctest: +SKIP
    >>> report["targets"]["nano33ble"]["fits"]  # doctest: +SKIP
    True
    """
    data, name = flatbuffer.read_model_bytes(model)
    isolation.start()  # The runtime host starts while the flatbuffer is analysed.
    targets = [] if target is None else target if isinstance(target, list) else [target]
    targets = [get_target(t) for t in targets]
    facts = flatbuffer.analyze(data, name)
    report = {k: v for k, v in facts.items() if k != "op_list"}
    report["gzip_bytes"] = len(gzip.compress(data, compresslevel=9, mtime=0))
    report["sparsity"] = (
        round(1 - facts["nonzero_params"] / facts["params"], 4) if facts["params"] else 0.0
    )
    report.update(sparsity.report_entries(data, report))  # xnnpack_sparse, notes
    if micro_check:  # Verifies the file with LiteRT first.
        report["micro"] = micro.check_micro(data, facts, name=name)
    else:
        interpreter.check_verified(data, name=name)
    if targets:
        report["targets"] = {t.name: _verdict(t, report, facts["op_list"]) for t in targets}
    return report


def _verdict(target: Target, report: dict, ops: list | None = None) -> dict:
    """Whether a model fits a target, with every figure the verdict rests on.

    With the op list, the latency estimate uses the per-op-type cost model and carries a
    breakdown per op type.
    """
    flash = report["size_bytes"]
    reasons = []
    verdict = {
        "fits": True,
        "flash_bytes": flash,
        "flash_budget": target.flash_bytes,
        "ram_bytes": None,
        "ram_budget": target.ram_bytes,
        "latency_estimate": target.estimate_latency_ms(report["macs"], ops=ops),
    }
    if target.flash_bytes is not None and flash > target.flash_bytes:
        reasons.append(f"model is {flash} bytes, flash budget {target.flash_bytes}")
    if target.is_micro:
        m = report.get("micro")
        if m is None:
            reasons.append("not checked with TFLite Micro (micro_check=False)")
        elif m.get("error"):
            reasons.append(m["error"])
        elif not m["supported"]:
            reasons.append(f"ops TFLite Micro cannot run: {', '.join(m['unsupported_ops'])}")
        else:
            verdict["ram_bytes"] = m["arena_bytes"]
            if target.ram_bytes is not None and m["arena_bytes"] > target.ram_bytes:
                reasons.append(
                    f"tensor arena is {m['arena_bytes']} bytes, RAM budget {target.ram_bytes}"
                )
        verdict["gzip_bytes"] = report["gzip_bytes"]  # Over-the-air update size.
    verdict["fits"] = not reasons
    verdict["reasons"] = reasons
    return verdict
