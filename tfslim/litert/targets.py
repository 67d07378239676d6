"""Deployment targets: conversion defaults plus the budgets a model must fit in.

A `Target` is the one vocabulary the converter, the inspector, the benchmark and the
tuner share. Boards carry the flash, SRAM and clock of their data sheet, and an
effective int8 cycles-per-MAC figure used only for the labelled latency *estimate*.
"""

import dataclasses

from tfslim._checks import invalid_type, invalid_value

__all__ = ["Target", "get_target", "list_targets"]

_QUANTIZATION_MODES = ("none", "float16", "dynamic", "int8", "int16x8")


@dataclasses.dataclass(frozen=True)
class Target:
    """Where a model will run, and what that implies for conversion.

    Args:
        name: str. Short name used on the command line, e.g. `"nano33ble"`.
        description: str. Human-readable device description.
        kind: str. `"mobile"` (phone CPU, LiteRT) or `"mcu"` (TensorFlow Lite Micro).
        quantization: str. Default quantization mode for `tfslim.convert`.
        io_dtype: str. Default model input/output dtype for full-integer models
            (`"int8"` or `"float32"`).
        sparse_weights: bool. Whether pruned weights are sparse-encoded by default.
        flash_bytes: int or None. Flash (storage) budget; None means no budget.
        ram_bytes: int or None. RAM budget for the tensor arena; None means no budget.
        clock_hz: int or None. CPU clock, for the MCU latency estimate.
        cycles_per_mac: float or None. Effective cycles per int8 multiply-accumulate of
            the optimized kernels (CMSIS-NN / ESP-NN), for the MAC-only latency estimate
            (used when no per-op list is given).
        source: str. Where the figures come from.
        cost_model: str or None. Board class of the per-op-type cost model
            (`tfslim.litert.mcu_latency.COST_MODELS`), used when the op list is known.
    """

    name: str
    description: str
    kind: str
    quantization: str
    io_dtype: str = "float32"
    sparse_weights: bool = False
    flash_bytes: int | None = None
    ram_bytes: int | None = None
    clock_hz: int | None = None
    cycles_per_mac: float | None = None
    source: str = ""
    cost_model: str | None = None

    @property
    def is_micro(self) -> bool:
        """True when the model runs under TensorFlow Lite Micro."""
        return self.kind == "mcu"

    def estimate_latency_ms(self, macs: int, ops: list | None = None) -> dict | None:
        """Estimates MCU latency; None when the target has no clock.

        Args:
            macs: int. The model's multiply-accumulates (`tfslim.inspect(...)["macs"]`).
            ops: list of dict or None. The per-op list of `flatbuffer.analyze` (`op`,
                `macs`, `output_elements`, `input_elements`). With it, and a board with a
                `cost_model`, every op is costed by its type (`mcu_latency`); without it,
                `macs * cycles_per_mac`. Defaults to `None`.

        Returns:
            A dict with `value_ms`, `formula`, `source` and `estimate=True`, so a report
            can never present the figure as a measurement; with `ops`, also `model`,
            `cycles`, `breakdown` (op type -> `count`, `macs`, `ms`, `share`,
            `from_table`) and `fallback_ops` (types missing from the table, costed with
            its stated defaults).
        """
        if self.clock_hz is None or (self.cycles_per_mac is None and self.cost_model is None):
            return None
        if ops is not None and self.cost_model is not None:
            from tfslim.litert.mcu_latency import COST_MODELS, estimate_ops

            model = COST_MODELS.get(self.cost_model)
            if model is None:
                raise invalid_value("cost_model", f"one of {sorted(COST_MODELS)}", self.cost_model)
            result = estimate_ops(model, ops, self.clock_hz)
            return {
                "value_ms": result["value_ms"],
                "estimate": True,
                "model": model.name,
                "formula": (
                    f"sum over ops of (dispatch + macs * cycles_per_mac[op] or elements * "
                    f"cycles_per_element[op]) / clock_hz * 1000 = {result['cycles']} cycles "
                    f"/ {self.clock_hz} * 1000 ms ({model.name} table, dispatch "
                    f"{model.dispatch_cycles:g} cycles per op)"
                ),
                "cycles": result["cycles"],
                "breakdown": result["breakdown"],
                "fallback_ops": result["fallback_ops"],
                "source": model.source,
            }
        if self.cycles_per_mac is None:
            return None
        value = macs * self.cycles_per_mac / self.clock_hz * 1000.0
        return {
            "value_ms": round(value, 3),
            "estimate": True,
            "formula": (
                f"macs * cycles_per_mac / clock_hz * 1000 = {macs} * {self.cycles_per_mac} "
                f"/ {self.clock_hz} * 1000 ms"
            ),
            "source": "MAC-only model: one effective cycles/MAC per board (see `tfslim targets`)",
        }

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_KIB = 1024
_MIB = 1024 * 1024

# The per-op-type model (`cost_model`, tfslim/litert/mcu_latency.py) prices each op by its
# type when the op list is known. The MAC-only `cycles_per_mac` below stays for callers
# that pass a MAC count alone. Cycles per MAC are effective figures for int8 convolution
# kernels including loop and requantization overhead, not peak SIMD throughput: ~2 on Cortex-M4 with
# CMSIS-NN (SMLAD does two MACs per cycle at peak), ~1 on Cortex-M7 (dual issue),
# ~8 on Cortex-M0+ (no DSP extension), ~1 on ESP32-S3 with ESP-NN's vector kernels.
_TARGETS = {
    t.name: t
    for t in (
        Target(
            name="mobile",
            description="Phone CPU (arm64 / x86-64) running LiteRT with XNNPACK",
            kind="mobile",
            quantization="dynamic",
            io_dtype="float32",
            sparse_weights=True,
            source="No budget: phones have gigabytes; latency is measured, not estimated.",
        ),
        Target(
            name="mcu",
            description="Generic Cortex-M4F class microcontroller, TFLite Micro",
            kind="mcu",
            quantization="int8",
            io_dtype="int8",
            flash_bytes=1 * _MIB,
            ram_bytes=256 * _KIB,
            clock_hz=64_000_000,
            cycles_per_mac=2.0,
            cost_model="cortex-m4",
            source="Conservative envelope of common TinyML boards (as nano33ble).",
        ),
        Target(
            name="nano33ble",
            description="Arduino Nano 33 BLE Sense (nRF52840, Cortex-M4F @ 64 MHz)",
            kind="mcu",
            quantization="int8",
            io_dtype="int8",
            flash_bytes=1 * _MIB,
            ram_bytes=256 * _KIB,
            clock_hz=64_000_000,
            cycles_per_mac=2.0,
            cost_model="cortex-m4",
            source="Nordic nRF52840 product specification v1.7; Arduino ABX00031 datasheet.",
        ),
        Target(
            name="stm32f746",
            description="STM32F746 Discovery (Cortex-M7 @ 216 MHz)",
            kind="mcu",
            quantization="int8",
            io_dtype="int8",
            flash_bytes=1 * _MIB,
            ram_bytes=320 * _KIB,
            clock_hz=216_000_000,
            cycles_per_mac=1.0,
            cost_model="cortex-m7",
            source="ST STM32F745xx/STM32F746xx datasheet DS10916.",
        ),
        Target(
            name="nucleo-l4r5zi",
            description="NUCLEO-L4R5ZI (STM32L4R5, Cortex-M4F @ 120 MHz)",
            kind="mcu",
            quantization="int8",
            io_dtype="int8",
            flash_bytes=2 * _MIB,
            ram_bytes=640 * _KIB,
            clock_hz=120_000_000,
            cycles_per_mac=2.0,
            cost_model="cortex-m4",
            source="ST STM32L4R5xx datasheet DS12023 (MLPerf Tiny reference board).",
        ),
        Target(
            name="esp32s3",
            description="ESP32-S3 (Xtensa LX7 dual core @ 240 MHz, 8 MB flash module)",
            kind="mcu",
            quantization="int8",
            io_dtype="int8",
            flash_bytes=8 * _MIB,
            ram_bytes=512 * _KIB,
            clock_hz=240_000_000,
            cycles_per_mac=1.0,
            cost_model="xtensa-lx7",
            source="Espressif ESP32-S3 datasheet v1.9; ESP32-S3-WROOM-1 N8 module.",
        ),
        Target(
            name="rp2040",
            description="Raspberry Pi Pico (RP2040, Cortex-M0+ @ 133 MHz, 2 MB QSPI flash)",
            kind="mcu",
            quantization="int8",
            io_dtype="int8",
            flash_bytes=2 * _MIB,
            ram_bytes=264 * _KIB,
            clock_hz=133_000_000,
            cycles_per_mac=8.0,
            cost_model="cortex-m0plus",
            source="Raspberry Pi RP2040 datasheet; Pico datasheet (W25Q16 2 MB flash).",
        ),
    )
}


def list_targets() -> list[Target]:
    """Returns every known target, `mobile` first."""
    return list(_TARGETS.values())


def get_target(target: "str | Target") -> Target:
    """Looks up a target by name (case-insensitive) or passes a `Target` through.

    Args:
        target: str or Target. A name from `list_targets()` or a `Target` instance.

    Returns:
        The `Target`.

    Raises:
        ValueError: if the name is unknown.
        TypeError: if `target` is neither a string nor a `Target`.
    """
    if isinstance(target, Target):
        return target
    if not isinstance(target, str):
        raise invalid_type("target", "a target name (str) or a tfslim.Target", target)
    found = _TARGETS.get(target.lower())
    if found is None:
        raise invalid_value("target", f"one of {sorted(_TARGETS)}", target)
    return found


def check_quantization(quantization: str) -> str:
    """Validates a quantization mode name and returns it."""
    if quantization not in _QUANTIZATION_MODES:
        raise invalid_value("quantization", f"one of {list(_QUANTIZATION_MODES)}", quantization)
    return quantization


def require_micro(target: "str | Target", *, argument: str = "target", why: str = "") -> Target:
    """Returns the target if it is a microcontroller (one with budgets), else raises."""
    found = get_target(target)
    if not found.is_micro:
        raise ValueError(
            f"Invalid value for argument `{argument}`. {why}Expected a board or 'mcu' "
            f"(see `tfslim targets`). Received: {argument}={found.name!r}"
        )
    return found
