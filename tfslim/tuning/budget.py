"""Deployment budgets: hard limits a measured `Footprint` must respect."""

import dataclasses
import math
from collections.abc import Mapping

from tfslim.benchmarking.footprint import Footprint

__all__ = ["BUDGET_FIGURES", "Budget"]

# Budget field -> the Footprint figure it limits. Byte counts are ints, times floats.
BUDGET_FIGURES = {
    "max_flash_bytes": "flash_bytes",
    "max_arena_bytes": "arena_bytes",
    "max_latency_ms": "latency_ms",
    "max_mcu_latency_estimate_ms": "mcu_latency_estimate_ms",
}
_BYTE_LIMITS = ("max_flash_bytes", "max_arena_bytes")


def limited_figures(footprint: "Footprint | Mapping") -> dict:
    """The figures a budget limits, one number each (None when not measured).

    A footprint measured for several boards is held to the MCU latency budget on its
    slowest board. A plain mapping of figures (as in a tuner record) is read as it is.
    """
    if isinstance(footprint, Footprint):
        values = {
            figure: getattr(footprint, figure)
            for figure in BUDGET_FIGURES.values()
            if figure != "mcu_latency_estimate_ms"
        }
        values["mcu_latency_estimate_ms"] = footprint.worst_mcu_latency_estimate_ms
        return values
    if not isinstance(footprint, Mapping):
        raise TypeError(
            "Invalid type for argument `footprint`. Expected a tfslim.Footprint or a mapping "
            f"of its figures. Received: footprint of type {type(footprint).__name__}"
        )
    values = {figure: footprint.get(figure) for figure in BUDGET_FIGURES.values()}
    estimate = values["mcu_latency_estimate_ms"]
    if isinstance(estimate, Mapping):
        values["mcu_latency_estimate_ms"] = max(estimate.values(), default=None)
    return values


@dataclasses.dataclass(frozen=True)
class Budget:
    """Hard limits on what a converted model may cost; None means no limit.

    Each field limits the `tfslim.Footprint` figure of the same name.

    Args:
        max_flash_bytes: int or None. Largest .tflite file (`flash_bytes`).
            Defaults to `None`.
        max_arena_bytes: int or None. Largest TFLite Micro tensor arena, the model's RAM
            (`arena_bytes`). Defaults to `None`.
        max_latency_ms: float or None. Largest median LiteRT latency measured on this
            host (`latency_ms`). Defaults to `None`.
        max_mcu_latency_estimate_ms: float or None. Largest estimated microcontroller
            latency (`mcu_latency_estimate_ms`, per-op cost model), on every
            board the footprint was measured for. Defaults to `None`.

    Example:

    >>> budget = Budget(max_flash_bytes=20_000)
    >>> budget.violations({"flash_bytes": 25_000, "arena_bytes": 4_000})
    ['flash_bytes 25000 > max_flash_bytes 20000']
    """

    max_flash_bytes: int | None = None
    max_arena_bytes: int | None = None
    max_latency_ms: float | None = None
    max_mcu_latency_estimate_ms: float | None = None

    def __post_init__(self):
        for name in BUDGET_FIGURES:
            value = getattr(self, name)
            if value is None:
                continue
            if name in _BYTE_LIMITS:
                ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
                expected = "a positive int (a byte count) or None"
            else:
                ok = (
                    isinstance(value, int | float)
                    and not isinstance(value, bool)
                    and math.isfinite(value)
                    and value > 0
                )
                expected = "a positive number or None"
            if not ok:
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected {expected}. "
                    f"Received: {name}={value!r}"
                )

    @classmethod
    def from_target(cls, target, **overrides) -> "Budget":
        """The flash and RAM of a `tfslim.Target`, tightened or extended by `overrides`."""
        from tfslim.litert.targets import get_target

        target = get_target(target)
        values = {"max_flash_bytes": target.flash_bytes, "max_arena_bytes": target.ram_bytes}
        unknown = sorted(set(overrides) - set(BUDGET_FIGURES))
        if unknown:
            raise TypeError(
                f"Invalid keyword arguments {unknown}. Expected some of "
                f"{sorted(BUDGET_FIGURES)}. Received: {overrides}"
            )
        values.update(overrides)
        return cls(**values)

    def limits(self) -> dict:
        """Footprint figure -> its limit, for the limits that are set."""
        return {
            figure: getattr(self, name)
            for name, figure in BUDGET_FIGURES.items()
            if getattr(self, name) is not None
        }

    def violations(self, footprint: "Footprint | Mapping") -> list[str]:
        """Every limit the footprint breaks; a limited figure not measured breaks it too.

        Args:
            footprint: Footprint or mapping of figure name to value.
        """
        figures = limited_figures(footprint)
        broken = []
        for name, figure in BUDGET_FIGURES.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            value = figures[figure]
            if value is None:
                broken.append(f"{figure} not measured, {name} {limit}")
            elif value > limit:
                broken.append(f"{figure} {value} > {name} {limit}")
        return broken

    def overshoot(self, footprint: "Footprint | Mapping", *, missing: float = 1.0) -> float:
        """Largest relative excess over a limit (0 within budget, `missing` for a limited
        figure that was not measured)."""
        figures = limited_figures(footprint)
        worst = 0.0
        for name, figure in BUDGET_FIGURES.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            value = figures[figure]
            worst = max(worst, missing if value is None else (value - limit) / limit)
        return worst

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
