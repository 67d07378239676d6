"""Deployment budgets: hard limits a trial's measured footprint must respect."""

import dataclasses
import math

__all__ = ["Budget"]

# Budget field -> trial figure it limits.
_LIMITS = {
    "max_flash_bytes": "flash_bytes",
    "max_ram_bytes": "ram_bytes",
    "max_latency_ms": "latency_ms",
    "max_mcu_latency_ms": "mcu_latency_ms",
}


@dataclasses.dataclass(frozen=True)
class Budget:
    """Hard limits on what a converted model may cost; None means no limit.

    Args:
        max_flash_bytes: int or None. Largest .tflite file (flash). Defaults to `None`.
        max_ram_bytes: int or None. Largest TFLite Micro tensor arena. Defaults to `None`.
        max_latency_ms: float or None. Largest median LiteRT latency measured on this
            host. Defaults to `None`.
        max_mcu_latency_ms: float or None. Largest estimated microcontroller latency
            (MACs * cycles_per_mac / clock). Defaults to `None`.

    Example:

    >>> budget = Budget(max_flash_bytes=20_000)
    >>> budget.violations({"flash_bytes": 25_000, "ram_bytes": 4_000})
    ['flash_bytes 25000 > max_flash_bytes 20000']
    """

    max_flash_bytes: int | None = None
    max_ram_bytes: int | None = None
    max_latency_ms: float | None = None
    max_mcu_latency_ms: float | None = None

    def __post_init__(self):
        for name in _LIMITS:
            value = getattr(self, name)
            if value is None:
                continue
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(
                    f"Invalid value for argument `{name}`. Expected a positive number or None. "
                    f"Received: {name}={value!r}"
                )

    @classmethod
    def from_target(cls, target, **overrides) -> "Budget":
        """The flash and RAM of a `tfslim.Target`, tightened or extended by `overrides`."""
        from tfslim.litert.targets import get_target

        target = get_target(target)
        values = {"max_flash_bytes": target.flash_bytes, "max_ram_bytes": target.ram_bytes}
        unknown = sorted(set(overrides) - set(_LIMITS))
        if unknown:
            raise TypeError(
                f"Invalid keyword arguments {unknown}. Expected some of {sorted(_LIMITS)}. "
                f"Received: {overrides}"
            )
        values.update(overrides)
        return cls(**values)

    def violations(self, figures: dict) -> list[str]:
        """Every limit the figures break; a limited figure that is missing breaks it too."""
        broken = []
        for name, figure in _LIMITS.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            value = figures.get(figure)
            if value is None:
                broken.append(f"{figure} not measured, {name} {limit}")
            elif value > limit:
                broken.append(f"{figure} {value} > {name} {limit}")
        return broken

    def overshoot(self, figures: dict, *, missing: float = 1.0) -> float:
        """Largest relative excess over a limit (0 within budget, `missing` for a limited
        figure that is not in `figures`)."""
        worst = 0.0
        for name, figure in _LIMITS.items():
            limit = getattr(self, name)
            if limit is None:
                continue
            value = figures.get(figure)
            worst = max(worst, missing if value is None else (value - limit) / limit)
        return worst

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
