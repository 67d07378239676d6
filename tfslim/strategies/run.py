"""The files of one strategy run: each candidate's models, `manifest.json`, the report.

`Run` makes, converts and measures one candidate at a time and records it atomically, so a
run killed half-way resumes where it stopped; `fingerprint` says whether a directory holds
a run of the same model, data and training settings. A LUT-compressed candidate (clustered,
on a board) is not a file LiteRT can load (it has no DECODE op), so, as in `tfslim demo`, it
is `<name>.lut.tflm`, and `<name>.tflite` beside it is the same int8 model uncompressed, on
which its quality is measured. A directory written when the compressed file was
`<name>.tflite` and its twin `<name>.uncompressed.tflite` is renamed to this layout when
it resumes.

A `shared` run is one of several processes in KerasTuner's distributed mode (see
`tfslim.strategies.distributed`): each records its candidates into the one manifest under
an exclusive lock (`manifest.lock`), merging what the others recorded, so none is lost.
"""

import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from tfslim import _io
from tfslim.benchmarking.footprint import Footprint
from tfslim.strategies.result import Candidate, StrategyResult
from tfslim.tuning.budget import Budget

__all__ = ["Run", "convert_and_measure", "fingerprint"]

_MANIFEST = "manifest.json"
_FORMAT = 1
_PLAN_SETTINGS = ("techniques", "widths", "sparsity", "clusters", "growth")
# A LUT-compressed board file, which only TFLite Micro runs; the demo names its own so too.
LUT_SUFFIX = ".lut.tflm"
# Where a LUT-compressed candidate's uncompressed twin was before it took the .tflite name.
_OLD_UNCOMPRESSED = ".uncompressed.tflite"
_LOCK = "manifest.lock"
# Where KerasTuner keeps the oracle's and tuners' own files in a distributed run.
TUNER_PROJECT = "keras_tuner"


class Run:
    """The files of one strategy run: candidates' models, the manifest, the report."""

    def __init__(
        self, directory: Path, strategy: str, target, budget, overwrite: bool, log, shared=False
    ):
        self.directory, self.strategy, self.shared = directory, strategy, shared
        self.target, self.budget = target, budget
        self.overwrite, self.log = overwrite, log or (lambda *_: None)
        self.done: dict = {}
        self.candidates: list[Candidate] = []
        self.notes: list[str] = []

    def open(self, key: str) -> None:
        """Reads the manifest of an earlier run with the same `key`, or starts afresh."""
        self.key = key
        path = self.directory / _MANIFEST
        if path.exists():
            try:
                manifest = json.loads(path.read_text())
                same = manifest.get("format") == _FORMAT and manifest.get("key") == key
            except (OSError, ValueError, AttributeError):
                manifest, same = {}, False
            if not same and not self.overwrite:
                raise FileExistsError(
                    "Invalid value for argument `directory`. It holds a run with another model, "
                    "data or settings; pass overwrite=True to replace it. Received: "
                    f"directory={str(self.directory)!r}"
                )
            if same and not self.overwrite:
                self.done = manifest.get("candidates", {})
        elif not self.overwrite and any(
            # A worker of a distributed run may have made KerasTuner's folder already.
            p.name not in (TUNER_PROJECT, _LOCK) or not self.shared
            for p in self.directory.iterdir()
        ):
            raise FileExistsError(
                "Invalid value for argument `directory`. Expected a new or empty directory, or "
                "one of an earlier run to resume; pass overwrite=True to write into it. "
                f"Received: directory={str(self.directory)!r}"
            )

    def join(self, key: str) -> None:
        """Takes part in the run the manifest records (a worker): it must have `key`."""
        self.key = key
        if self._recorded() is None:
            raise ValueError(
                "Invalid value for argument `directory`. A worker of a distributed run needs "
                "the chief's manifest, with the same model, data and settings; the chief "
                "writes it before it hands out candidates. Received: "
                f"directory={str(self.directory)!r}"
            )
        self.refresh()

    def refresh(self) -> None:
        """Adds the candidates other processes recorded in the manifest since."""
        self.done = {**self.done, **(self._recorded() or {})}

    def _recorded(self) -> dict | None:
        """The manifest's candidates if it is a run with this key, else None."""
        try:
            manifest = json.loads((self.directory / _MANIFEST).read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or manifest.get("key") != self.key:
            return None
        if manifest.get("format") != _FORMAT:
            return None
        return dict(manifest.get("candidates", {}))

    def finished(self, spec) -> bool:
        """Whether the manifest records `spec` as made, and its files are there."""
        saved = self.done.get(spec.name)
        if saved is None or saved.get("spec") != spec.to_dict():
            return False
        names = [f"{spec.name}.keras", f"{spec.name}.tflite", saved.get("compressed")]
        return all((self.directory / n).exists() for n in names if n)

    def candidate(self, spec, make, train_data, validation_data, settings) -> Candidate:
        """Makes, converts and measures `spec`, or reads it back from the manifest."""
        saved = self.done.get(spec.name)
        keras_path = self.directory / f"{spec.name}.keras"
        tflite_path = self.directory / f"{spec.name}.tflite"
        lut_path = self.directory / f"{spec.name}{LUT_SUFFIX}"
        finished = saved is not None and saved.get("spec") == spec.to_dict()
        compressed = finished and bool(saved.get("uncompressed"))
        if compressed:
            self._rename_old_layout(spec.name, saved)
        files = (keras_path, tflite_path, *([lut_path] if compressed else []))
        if finished and all(path.exists() for path in files):
            footprint = Footprint.from_dict(saved["footprint"])
            seconds, resumed = saved.get("seconds", 0.0), True
        else:
            import keras

            keras.utils.set_random_seed(settings["seed"])
            start = time.perf_counter()
            model = make()
            result, footprint, uncompressed = convert_and_measure(
                model,
                self.target,
                train_data,
                validation_data,
                settings,
                compress=bool(getattr(spec, "clusters", 0)) and self.target.is_micro,
            )
            _io.save_keras_model(model, keras_path, overwrite=True)
            compressed = uncompressed is not None
            plain = uncompressed if compressed else result
            _io.atomic_write(tflite_path, plain.flatbuffer, overwrite=True)
            if compressed:
                _io.atomic_write(lut_path, result.flatbuffer, overwrite=True)
            else:
                lut_path.unlink(missing_ok=True)  # Left by an overwritten run.
            # Left by an overwritten run of the old layout.
            (self.directory / f"{spec.name}{_OLD_UNCOMPRESSED}").unlink(missing_ok=True)
            seconds, resumed = time.perf_counter() - start, False
        description = spec.description() if hasattr(spec, "description") else spec.name
        if compressed:
            description += ", LUT-compressed (TFLite Micro only)"
        candidate = Candidate(
            name=spec.name,
            description=description,
            spec=spec.to_dict(),
            footprint=footprint,
            violations=self.violations(footprint),
            keras_path=str(keras_path),
            tflite_path=str(lut_path if compressed else tflite_path),
            seconds=seconds,
            uncompressed_path=str(tflite_path) if compressed else None,
        )
        self.candidates = [c for c in self.candidates if c.name != spec.name] + [candidate]
        self.done[spec.name] = {
            "spec": candidate.spec,
            "footprint": footprint.to_dict(),
            "seconds": round(seconds, 2),
        }
        if compressed:
            self.done[spec.name]["compressed"] = lut_path.name
            self.done[spec.name]["uncompressed"] = tflite_path.name
        self.write_manifest()
        self.log(self.line(candidate, resumed))
        return candidate

    def _rename_old_layout(self, name: str, saved: dict) -> None:
        """Renames a LUT-compressed candidate written as `<name>.tflite` (compressed) and
        `<name>.uncompressed.tflite` to `<name>.lut.tflm` and `<name>.tflite`.

        Each step is one atomic rename and the steps are told apart by which files exist,
        so a rename interrupted half-way finishes on the next resume.
        """
        old_twin = self.directory / f"{name}{_OLD_UNCOMPRESSED}"
        if saved.get("uncompressed") != old_twin.name or not old_twin.exists():
            return
        tflite = self.directory / f"{name}.tflite"
        lut = self.directory / f"{name}{LUT_SUFFIX}"
        if not lut.exists():
            if not tflite.exists():
                return  # The compressed file is gone: the candidate is made again.
            os.replace(tflite, lut)
        os.replace(old_twin, tflite)
        saved.update(compressed=lut.name, uncompressed=tflite.name)
        self.write_manifest()

    def rejudge(self, budget: Budget) -> None:
        """Holds every candidate (made and to come) to `budget` instead."""
        self.budget = budget
        self.candidates = [
            dataclasses.replace(c, violations=self.violations(c.footprint)) for c in self.candidates
        ]

    def violations(self, footprint: Footprint) -> list[str]:
        # The target's own verdict also catches ops TFLite Micro cannot run.
        return self.budget.violations(footprint) + list(
            footprint.board_reasons.get(self.target.name, [])
        )

    def write_manifest(self, *, merge: bool = True) -> None:
        """Writes the manifest atomically; a shared run merges in what others recorded
        (unless `merge` is False: the chief starting afresh)."""
        if not self.shared:
            self._write_manifest()
            return
        import fcntl  # POSIX; distributed runs need a file system with POSIX locks.

        with open(self.directory / _LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if merge:
                    self._merge_recorded()
                self._write_manifest()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _merge_recorded(self) -> None:
        """Like `refresh`, but this process's own records win over the file's."""
        self.done = {**(self._recorded() or {}), **self.done}

    def _write_manifest(self) -> None:
        manifest = {
            "format": _FORMAT,
            "strategy": self.strategy,
            "key": self.key,
            "target": self.target.name,
            "candidates": self.done,
        }
        _io.atomic_write(
            self.directory / _MANIFEST, json.dumps(manifest, indent=1) + "\n", overwrite=True
        )

    def line(self, c: Candidate, resumed: bool) -> str:
        fp = c.footprint
        arena = "-" if fp.arena_bytes is None else f"{fp.arena_bytes:,} B"
        latency = "-" if fp.latency_ms is None else f"{fp.latency_ms:.3g} ms"
        status = "fits" if c.feasible else "OVER: " + "; ".join(c.violations)
        source = "resumed" if resumed else f"{c.seconds:.1f} s"
        return (
            f"{c.name:<18} quality {fp.quality:.4f}  flash {fp.flash_bytes:>9,} B  "
            f"arena {arena:>9}  host {latency:>9}  {status}  ({source})"
        )

    def result(self, baseline: str, notes=None) -> StrategyResult:
        """The run's candidates so far as a `StrategyResult` (no report files written)."""
        return StrategyResult(
            strategy=self.strategy,
            target=self.target.name,
            budget=self.budget,
            candidates=list(self.candidates),
            baseline=baseline,
            directory=str(self.directory),
            notes=list(self.notes if notes is None else notes),
        )

    def finish(self, baseline: str) -> StrategyResult:
        from tfslim.strategies.report import write_strategy_report

        result = self.result(baseline)
        files = write_strategy_report(result, overwrite=True)
        # The best candidate under fixed names, for scripts; a re-judged run replaces them.
        # A LUT-compressed best is `best.lut.tflm`, its uncompressed twin `best.tflite`.
        best = result.best
        sources = {}
        if best is not None:
            sources = {".keras": best.keras_path, ".tflite": best.tflite_path}
            if best.compressed:
                sources.update({".tflite": best.uncompressed_path, LUT_SUFFIX: best.tflite_path})
        for suffix in (".keras", ".tflite", LUT_SUFFIX):
            path = self.directory / f"best{suffix}"
            if suffix not in sources:
                path.unlink(missing_ok=True)
                continue
            files[f"best{suffix}"] = _io.atomic_write(
                path, Path(sources[suffix]).read_bytes(), overwrite=True
            )
        return StrategyResult(**{**result.__dict__, "files": files})


def convert_and_measure(model, target, train_data, validation_data, settings, *, compress=False):
    """The conversion result, the `Footprint` of one trained candidate and, if `compress`
    LUT-compressed any kernel, the uncompressed conversion (else None).

    The compressed file is the uncompressed one LUT-compressed as `tfslim.convert(...,
    compress=True)` makes it; its flash, arena and MCU estimate are its own, its quality
    is the uncompressed file's (LiteRT has no DECODE kernel; the tables hold the exact
    int8 values, so the outputs are the same), and it has no host latency.
    """
    import tfslim
    from tfslim.litert.converter import compressed_copy

    x = train_data[0]
    quantized = tfslim.is_quantized_model(model)
    calibration = None if quantized else x[: settings["calibration_samples"]]
    result = tfslim.convert(model, target=target, calibration_data=calibration)
    if compress:
        packed = compressed_copy(result)
        if packed.compression["compressed"]:
            footprint = tfslim.measure(packed, target=target, latency_runs=0)
            scores = tfslim.evaluate(result.flatbuffer, tuple(validation_data), keras_model=model)
            footprint = dataclasses.replace(
                footprint,
                quality=scores["tflite"],
                metric=scores["metric"],
                keras_quality=scores.get("keras"),
                agreement=scores.get("agreement"),
                latency_note="LUT-compressed: runs in TFLite Micro only, no LiteRT latency",
            )
            return packed, footprint, result
    footprint = tfslim.measure(
        result,
        target=target,
        data=tuple(validation_data),
        keras_model=model,
        latency_runs=settings["latency_runs"],
        warmup=2,
    )
    return result, footprint, None


def fingerprint(model, teacher, train_data, validation_data, target, settings) -> str:
    """A hash of everything a candidate depends on: weights, data, target and settings."""
    digest = hashlib.sha256()
    for m in (model, teacher):
        if m is None:
            digest.update(b"none")
            continue
        # Weights, not the config: Keras numbers default layer names per process.
        for weight in m.get_weights():
            digest.update(str(weight.shape).encode())
            digest.update(np.ascontiguousarray(weight).tobytes())
    for array in (*train_data, *validation_data):
        digest.update(str((array.shape, array.dtype.str)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    # Which candidates to make is not hashed: each is matched by its name and spec, so a
    # rerun with more widths or techniques adds candidates and keeps the finished ones.
    trained = {k: v for k, v in settings.items() if k not in _PLAN_SETTINGS}
    digest.update(json.dumps({"target": target.name, **trained}, sort_keys=True).encode())
    return digest.hexdigest()
