"""`tfslim.measure`: inspect, benchmark and evaluate one converted model into a `Footprint`.

The one place where a converted model's figures are taken: the demo, the tuner, the
recipes and the benchmark scripts call it, so they report the same figure under the same
name. It uses only the public converter-stage functions (`tfslim.inspect`,
`tfslim.benchmark`, `tfslim.evaluate`).
"""

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from tfslim._checks import check_int
from tfslim.benchmarking.footprint import Footprint

if TYPE_CHECKING:
    import keras

    from tfslim.litert.converter import ConversionResult
    from tfslim.litert.targets import Target

__all__ = ["measure"]


def measure(
    result: "ConversionResult | bytes | str | os.PathLike",
    *,
    target: "str | Target | None" = None,
    data: tuple | None = None,
    keras_model: "keras.Model | None" = None,
    boards: "Sequence[str | Target] | None" = None,
    latency_runs: int = 50,
    warmup: int = 5,
) -> Footprint:
    """Measures a converted model: sizes, TFLite Micro arena, latency and quality.

    Every figure is measured (the LiteRT interpreter for latency and quality, the TFLite
    Micro interpreter for the arena) except `mcu_latency_estimate_ms`, the per-board
    estimate from the board's per-op-type cost model (`tfslim targets`).

    Args:
        result: ConversionResult, bytes, str or path-like. The output of
            `tfslim.convert`, or a .tflite model.
        target: str, Target or None. What the model is measured for; a microcontroller
            target also measures the TFLite Micro arena. None takes the conversion's
            target (`"mobile"` for a bare .tflite model). Defaults to `None`.
        data: tuple or None. `(x, y)` for `quality` (accuracy for integer labels, MSE
            otherwise). Defaults to `None` (no quality).
        keras_model: keras.Model or None. With `data`, adds `keras_quality` and the class
            `agreement` of the two models. Defaults to `None`.
        boards: sequence of str or Target, or None. Boards to check the model against and
            estimate MCU latency for. None means the target itself. Defaults to `None`.
        latency_runs: int. Timed LiteRT invocations (XNNPACK where it accepts the model);
            0 skips the latency measurement. Defaults to `50`.
        warmup: int. Untimed invocations first. Defaults to `5`.

    Returns:
        A `tfslim.Footprint`.

    Raises:
        InvalidModelError: for a corrupted or non-TFLite model.
        ValueError: for an unknown target or board, or `data` that does not match.

    Example:

    >>> result = tfslim.convert(model, target="nano33ble")  # doctest: +SKIP
    >>> fp = tfslim.measure(result, data=(x_test, y_test))  # doctest: +SKIP
    >>> fp.flash_bytes, fp.arena_bytes, fp.mcu_latency_estimate_ms  # doctest: +SKIP
    (4000, 2272, {'nano33ble': 0.086})
    """
    import tfslim

    check_int("latency_runs", latency_runs, minimum=0)
    check_int("warmup", warmup, minimum=0)
    converted = hasattr(result, "flatbuffer") and hasattr(result, "target")
    model = result.flatbuffer if converted else result
    if target is None:
        target = result.target if converted else "mobile"
    target = tfslim.get_target(target)
    if boards is None:
        boards = [target]
    elif isinstance(boards, str) or not isinstance(boards, Sequence) or not boards:
        raise TypeError(
            "Invalid type for argument `boards`. Expected a non-empty list of target names "
            f"or None. Received: boards={boards!r}"
        )
    boards = [tfslim.get_target(b) for b in boards]
    if data is not None and (not isinstance(data, tuple | list) or len(data) != 2):
        raise ValueError(
            "Invalid value for argument `data`. Expected a tuple (x, y) of NumPy arrays or "
            f"None. Received: data of type {type(data).__name__}"
        )
    # The arena is a TFLite Micro figure: measured for a microcontroller or for boards.
    micro = target.is_micro or any(b.is_micro for b in boards)
    report = tfslim.inspect(model, target=list(boards), micro_check=micro)
    figures = {}
    if data is not None:
        scores = tfslim.evaluate(model, tuple(data), keras_model=keras_model)
        figures = {
            "quality": scores["tflite"],
            "metric": scores["metric"],
            "keras_quality": scores.get("keras"),
            "agreement": scores.get("agreement"),
        }
    if latency_runs:
        bench = tfslim.benchmark(model, runs=latency_runs, warmup=warmup, xnnpack=True)
        run = bench["latency"]["xnnpack"]
        figures.update(
            latency_ms=run["latency_ms"]["median"],
            latency_runtime=run.get("delegate"),
            latency_note=run.get("note"),
        )
    verdicts = report.get("targets", {})
    micro_report = report.get("micro") or {}
    return Footprint(
        flash_bytes=report["size_bytes"],
        gzip_bytes=report["gzip_bytes"],
        params=report["params"],
        macs=report["macs"],
        fully_integer=report["fully_integer"],
        arena_bytes=micro_report.get("arena_bytes") if micro_report.get("supported") else None,
        mcu_latency_estimate_ms={
            name: v["latency_estimate"]["value_ms"]
            for name, v in verdicts.items()
            if v.get("latency_estimate")
        },
        sparsity=report["sparsity"],
        sparse_tensors=report.get("sparse_tensors", 0),
        ops=report["ops"],
        target=target.name,
        quantization=getattr(result, "quantization", None) if converted else None,
        board_reasons={name: list(v["reasons"]) for name, v in verdicts.items()},
        **figures,
    )
