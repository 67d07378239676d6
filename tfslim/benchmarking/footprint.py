"""`Footprint`: what one converted model costs and scores, each figure under one name.

The demo, the tuner, the budgets, the reports and the benchmark scripts all speak in these
names: `flash_bytes` is the .tflite file (what a board stores), `arena_bytes` the TFLite
Micro tensor arena (the RAM it needs), `latency_ms` the median LiteRT latency measured on
this host, and `mcu_latency_estimate_ms` the per-board estimate from MACs, always labelled
an estimate. This module is pure Python, so reading a saved footprint loads no TensorFlow.
"""

import dataclasses
import math
from collections.abc import Mapping

__all__ = ["Footprint"]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclasses.dataclass(frozen=True)
class Footprint:
    """The measured figures of one converted model (see `tfslim.measure`).

    Args:
        flash_bytes: int. Size of the .tflite file: the flash a board stores it in.
        gzip_bytes: int. Size of the gzipped file (an over-the-air update).
        params: int. Weights in the file, zeros included.
        macs: int. Multiply-accumulates of one inference.
        fully_integer: bool. Whether every op runs in integer arithmetic.
        arena_bytes: int or None. Smallest TFLite Micro tensor arena that allocates and
            runs the model (its RAM); None when not measured (phone targets) or when
            TFLite Micro cannot run it. Defaults to `None`.
        latency_ms: float or None. Median LiteRT latency on this host (the CPU running
            the measurement, not a microcontroller). Defaults to `None`.
        latency_runtime: str or None. `"xnnpack"` or `"builtin"`: the kernels that ran
            for `latency_ms`. Defaults to `None`.
        latency_note: str or None. Why LiteRT fell back to builtin kernels, if it did.
            Defaults to `None`.
        mcu_latency_estimate_ms: mapping of board name to float. Estimated latency on
            each board from its per-op-type cost model; an estimate, not a
            measurement. Defaults to `{}`.
        quality: float or None. The converted model's metric on the evaluation data.
            Defaults to `None`.
        metric: str or None. `"accuracy"` or `"mse"`. Defaults to `None`.
        keras_quality: float or None. The same metric of the Keras model. Defaults to
            `None`.
        agreement: float or None. Fraction of samples where the converted model and the
            Keras model predict the same class. Defaults to `None`.
        sparsity: float. Fraction of zero weights in the file. Defaults to `0.0`.
        sparse_tensors: int. Tensors stored in TFLite's sparse format. Defaults to `0`.
        ops: mapping of op name to count. Defaults to `{}`.
        target: str or None. Target the model was converted and measured for.
            Defaults to `None`.
        quantization: str or None. Conversion mode. Defaults to `None`.
        board_reasons: mapping of board name to a list of str. Why the model does not
            fit each board checked (an empty list: it fits). Defaults to `{}`.

    Example:

    >>> fp = Footprint(flash_bytes=4000, gzip_bytes=2663, params=1486, macs=2736,
    ...                fully_integer=True, arena_bytes=2272,
    ...                mcu_latency_estimate_ms={"nano33ble": 0.086})
    >>> fp.worst_mcu_latency_estimate_ms
    0.086
    >>> Footprint.from_dict(fp.to_dict()) == fp
    True
    """

    flash_bytes: int
    gzip_bytes: int
    params: int
    macs: int
    fully_integer: bool
    arena_bytes: int | None = None
    latency_ms: float | None = None
    latency_runtime: str | None = None
    latency_note: str | None = None
    mcu_latency_estimate_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)
    quality: float | None = None
    metric: str | None = None
    keras_quality: float | None = None
    agreement: float | None = None
    sparsity: float = 0.0
    sparse_tensors: int = 0
    ops: Mapping[str, int] = dataclasses.field(default_factory=dict)
    target: str | None = None
    quantization: str | None = None
    board_reasons: Mapping[str, list] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        for name in ("flash_bytes", "gzip_bytes", "params", "macs", "sparse_tensors"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise TypeError(
                    f"Invalid value for argument `{name}`. Expected an int >= 0. "
                    f"Received: {name}={value!r}"
                )
        if self.arena_bytes is not None and (not _is_int(self.arena_bytes) or self.arena_bytes < 0):
            raise TypeError(
                "Invalid value for argument `arena_bytes`. Expected an int >= 0 or None. "
                f"Received: arena_bytes={self.arena_bytes!r}"
            )
        if not isinstance(self.fully_integer, bool):
            raise TypeError(
                "Invalid value for argument `fully_integer`. Expected a bool. "
                f"Received: fully_integer={self.fully_integer!r}"
            )
        for name in ("latency_ms", "quality", "keras_quality", "agreement"):
            value = getattr(self, name)
            if value is not None and not _is_number(value):
                raise TypeError(
                    f"Invalid value for argument `{name}`. Expected a finite number or None. "
                    f"Received: {name}={value!r}"
                )
        estimates = dict(self.mcu_latency_estimate_ms)
        bad = {k: v for k, v in estimates.items() if not isinstance(k, str) or not _is_number(v)}
        if bad:
            raise TypeError(
                "Invalid value for argument `mcu_latency_estimate_ms`. Expected a mapping of "
                f"board name to milliseconds. Received: mcu_latency_estimate_ms={estimates!r}"
            )
        # Own copies, so a frozen footprint cannot change through the caller's dicts.
        object.__setattr__(self, "mcu_latency_estimate_ms", estimates)
        object.__setattr__(self, "ops", dict(self.ops))
        object.__setattr__(
            self, "board_reasons", {k: list(v) for k, v in self.board_reasons.items()}
        )

    # Dict fields make instances unhashable; equality still compares every field.
    __hash__ = None

    @property
    def worst_mcu_latency_estimate_ms(self) -> float | None:
        """The largest per-board MCU latency estimate (None when there is none)."""
        return max(self.mcu_latency_estimate_ms.values(), default=None)

    def fits(self, board: str | None = None) -> bool:
        """Whether the model fits `board` (or every board checked, for None)."""
        if board is None:
            return all(not reasons for reasons in self.board_reasons.values())
        if board not in self.board_reasons:
            raise ValueError(
                f"Invalid value for argument `board`. Expected one of the boards checked, "
                f"{sorted(self.board_reasons)}. Received: board={board!r}"
            )
        return not self.board_reasons[board]

    def to_dict(self) -> dict:
        """A JSON-safe dict with one key per field."""
        return {
            f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, values: Mapping) -> "Footprint":
        """The inverse of `to_dict`; keys that are not fields (a trial id) are ignored."""
        if not isinstance(values, Mapping):
            raise TypeError(
                "Invalid type for argument `values`. Expected a mapping of Footprint fields. "
                f"Received: values of type {type(values).__name__}"
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = [
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        ]
        missing = [n for n in required if n not in values]
        if missing:
            raise ValueError(
                f"Invalid value for argument `values`. Expected the Footprint fields "
                f"{required}. Received: a mapping without {missing}"
            )
        return cls(**{k: v for k, v in values.items() if k in names})
