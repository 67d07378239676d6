"""What a strategy returns: its candidates, the Pareto front per footprint axis, the best one.

Pure Python (no TensorFlow until a model is loaded), so a finished run's `manifest.json`
can be read back into a `StrategyResult` cheaply, e.g. by the command line.
"""

import dataclasses
import os
from collections.abc import Mapping

from tfslim.benchmarking.footprint import Footprint
from tfslim.tuning.budget import Budget, limited_figures
from tfslim.tuning.tuner import FOOTPRINT_METRICS, front_records

__all__ = ["Candidate", "StrategyResult"]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One compressed model: how it was made, its files and its measured `Footprint`.

    Args:
        name: str. Unique within a run (`"width50_prune50"`); the stem of its files.
        description: str. The levers applied, in words.
        spec: mapping. The levers as values (`width`, `sparsity`, `m_by_n`, `qat`, ...).
        footprint: Footprint. Measured on the converted model (`tfslim.measure`).
        violations: list of str. Budget limits it breaks (empty: it fits).
        keras_path: str. The trained Keras model (`.keras`).
        tflite_path: str. The converted model, the file to deploy and the one its
            footprint is measured on: `<name>.tflite`, or `<name>.lut.tflm` when
            LUT-compressed (runs only in TFLite Micro).
        seconds: float. Time spent training, converting and measuring it.
        uncompressed_path: str or None. For a LUT-compressed candidate (clustered, on a
            microcontroller target): `<name>.tflite`, the same int8 model uncompressed,
            which LiteRT runs with identical outputs; its quality is this file's. None for
            every other candidate. Defaults to `None`.
    """

    name: str
    description: str
    spec: Mapping
    footprint: Footprint
    violations: list
    keras_path: str
    tflite_path: str
    seconds: float = 0.0
    uncompressed_path: str | None = None

    @property
    def compressed(self) -> bool:
        """Whether `tflite_path` is LUT-compressed (TFLite Micro only, no LiteRT)."""
        return self.uncompressed_path is not None

    @property
    def feasible(self) -> bool:
        """Whether it fits the budget (and the target accepts it)."""
        return not self.violations

    @property
    def quality(self) -> float | None:
        """The converted model's quality on the validation data."""
        return self.footprint.quality

    def load_model(self):
        """The trained Keras model."""
        import keras

        return keras.saving.load_model(self.keras_path)

    def record(self) -> dict:
        """A flat JSON-safe row: name, description, feasibility and every Footprint field.

        `tflite` names the file to deploy (`<name>.lut.tflm` when `compressed`),
        `uncompressed_tflite` the LiteRT-loadable twin of a compressed one (else None).
        """
        return {
            "name": self.name,
            "description": self.description,
            "spec": dict(self.spec),
            "feasible": self.feasible,
            "violations": list(self.violations),
            "keras": os.path.basename(self.keras_path),
            "tflite": os.path.basename(self.tflite_path),
            "compressed": self.compressed,
            "uncompressed_tflite": (
                os.path.basename(self.uncompressed_path) if self.compressed else None
            ),
            "seconds": round(self.seconds, 1),
            **self.footprint.to_dict(),
        }


@dataclasses.dataclass(frozen=True)
class StrategyResult:
    """The candidates of a `tfslim.shrink` or `tfslim.grow_improve_shrink` run.

    Args:
        strategy: str. `"shrink"` or `"grow"`.
        target: str. The target every candidate was converted and measured for.
        budget: Budget. The limits feasibility is judged by.
        candidates: list of Candidate. In the order they were made.
        baseline: str. Name of the candidate that stands for the user's model as given.
        directory: str. Where the models and the report are.
        files: mapping of str to str. The report files written (`markdown`, `json`, `png`).
        notes: list of str. What the strategy found (e.g. quality at equal footprint).
    """

    strategy: str
    target: str
    budget: Budget
    candidates: list
    baseline: str
    directory: str
    files: Mapping = dataclasses.field(default_factory=dict)
    notes: list = dataclasses.field(default_factory=list)

    def __getitem__(self, name: str) -> Candidate:
        for candidate in self.candidates:
            if candidate.name == name:
                return candidate
        raise KeyError(
            f"Invalid value for argument `name`. Expected one of "
            f"{[c.name for c in self.candidates]}. Received: name={name!r}"
        )

    @property
    def baseline_candidate(self) -> Candidate:
        """The user's model as given, converted for the target."""
        return self[self.baseline]

    @property
    def front(self) -> dict:
        """Footprint figure -> the feasible candidates no other beats on quality and that
        figure, best quality first. Only figures measured for every candidate are axes."""
        records = self.records()
        by_name = {c.name: c for c in self.candidates}
        fronts = {}
        for axis in FOOTPRINT_METRICS:
            usable = [r for r in records if r.get(axis) is not None]
            if not usable or len(usable) < len(records):
                continue
            fronts[axis] = [by_name[r["name"]] for r in front_records(usable, objectives=[axis])]
        return fronts

    @property
    def best(self) -> Candidate | None:
        """The feasible candidate of highest quality (the smaller flash on a tie), or None."""
        feasible = [c for c in self.candidates if c.feasible and c.quality is not None]
        if not feasible:
            return None
        return max(feasible, key=lambda c: (c.quality, -c.footprint.flash_bytes))

    @property
    def closest(self) -> Candidate | None:
        """The candidate nearest to the budget (smallest overshoot, then best quality)."""
        if not self.candidates:
            return None
        return min(
            self.candidates,
            key=lambda c: (self.budget.overshoot(c.footprint), -(c.quality or 0.0)),
        )

    def records(self) -> list[dict]:
        """One row per candidate: `Candidate.record()` with the limited figures flattened
        (`mcu_latency_estimate_ms` of the slowest board) for the front."""
        rows = []
        for candidate in self.candidates:
            row = candidate.record()
            row["board_estimates_ms"] = row["mcu_latency_estimate_ms"]
            row.update(limited_figures(candidate.footprint))
            rows.append(row)
        return rows

    def to_dict(self) -> dict:
        """The JSON report: settings, every candidate, the fronts, best and baseline."""
        best = self.best
        return {
            "strategy": self.strategy,
            "target": self.target,
            "budget": self.budget.to_dict(),
            "baseline": self.baseline,
            "best": best.name if best else None,
            "closest": None if best else (self.closest.name if self.closest else None),
            "front": {axis: [c.name for c in front] for axis, front in self.front.items()},
            "candidates": self.records(),
            "notes": list(self.notes),
            "directory": self.directory,
        }
