"""`tfslim.shrink`: shrink-and-improve, measured on the target, resumable.

The survey's recipe for a footprint-sensitive model (Menghani 2021, section 4): compress
the trained model with every lever tfslim has, recover quality with learning techniques
(distillation from the original, quantization-aware training), convert each candidate for
the target and measure it with the real interpreters. Each finished candidate is written
(`<name>.keras`, `<name>.tflite`) and recorded in `manifest.json` atomically, so a run
killed half-way resumes where it stopped without recomputing what was finished.

A clustered candidate on a microcontroller target is LUT-compressed (TFLite Micro's DECODE
op): it is judged by the compressed file's flash and arena, and its quality comes from the
same int8 model uncompressed (`<name>.uncompressed.tflite`), since LiteRT cannot run DECODE.
"""

import copy
import dataclasses
import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from tfslim import _io
from tfslim._checks import check_bool, check_float, check_int, invalid_type
from tfslim.benchmarking.footprint import Footprint
from tfslim.strategies import candidates as _candidates
from tfslim.strategies.result import Candidate, StrategyResult
from tfslim.tuning.budget import Budget

__all__ = ["shrink"]

_MANIFEST = "manifest.json"
_FORMAT = 1
_PLAN_SETTINGS = ("techniques", "widths", "sparsity", "clusters", "growth")
_UNCOMPRESSED = ".uncompressed.tflite"


def shrink(
    model,
    train_data: tuple,
    validation_data: tuple,
    *,
    target="mcu",
    budget: Budget | None = None,
    techniques=_candidates.DEFAULT_TECHNIQUES,
    teacher=None,
    widths=(0.5, 0.25),
    sparsity: float = 0.5,
    clusters: int = 16,
    epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    max_candidates: int | None = None,
    directory="tfslim_shrink",
    overwrite: bool = False,
    calibration_samples: int = 200,
    latency_runs: int = 20,
    seed: int = 0,
    log=None,
) -> StrategyResult:
    """Shrinks a trained classifier with every lever, improves each candidate, measures all.

    Candidates, in order: the model as given (post-training int8, the baseline); then each
    technique in `techniques` alone; then narrow and sparse (or narrow and clustered)
    together. Every trained candidate starts from the model's weights and is distilled
    from `teacher` with quantization-aware training in one fit (a clustered one in two:
    clustering, then QAT that keeps the clusters). Each is converted for `target` and
    measured with `tfslim.measure` on `validation_data` (int8 flash, TFLite Micro arena,
    host LiteRT latency, MCU latency estimate, quality of the converted model). Candidates
    over `budget` are kept, marked infeasible.

    `"cluster"` on a microcontroller target: the int8 file is LUT-compressed as
    `tfslim.convert(..., compress=True)` does (kernels as bit-packed indices into value
    tables, expanded by DECODE ops into the arena), so flash shrinks and the arena grows;
    the candidate is judged by the compressed file's flash, arena and MCU estimate. That
    file runs only in TFLite Micro: quality is measured on the same int8 model
    uncompressed (`<name>.uncompressed.tflite`, identical outputs) and it has no host
    latency (a `max_latency_ms` budget rules it out). On `mobile`, LiteRT has no LUT
    decoding: the candidate is a plain int8 file about as large as the unclustered one, and
    clustering only shrinks its gzip size (the download); a note in `result.notes` gives
    both.

    A rerun with the same model, data and training settings in the same `directory`
    resumes: the candidates recorded in its `manifest.json` are read back, not recomputed.
    A changed `budget` only re-judges them; more `widths` or `techniques` (or another
    `clusters`) add candidates.

    Args:
        model: keras.Model. The trained float classifier (integer labels).
        train_data: tuple `(x, y)` of NumPy arrays. Fine-tuning data.
        validation_data: tuple `(x, y)` of NumPy arrays. Quality is measured on it.
        target: str or Target. Where the model runs. Defaults to `"mcu"`.
        budget: Budget or None. Hard limits; None uses the target's flash and RAM.
            Defaults to `None`.
        techniques: sequence of str. Levers from `tfslim.strategies.TECHNIQUES`:
            `"qat"`, `"prune"`, `"m_by_n"`, `"channels"`, `"cluster"`. Defaults to
            `("qat", "prune", "channels")`.
        teacher: keras.Model or None. Distillation teacher; None uses `model`.
            Defaults to `None`.
        widths: sequence of float in (0, 1). Fractions of channels kept by `"channels"`.
            Defaults to `(0.5, 0.25)`.
        sparsity: float in (0, 1). Sparsity of `"prune"`. Defaults to `0.5`.
        clusters: int in [2, 128]. Distinct values per kernel of `"cluster"` (per output
            channel for convolutions); 16 stores 4-bit indices. Defaults to `16`.
        epochs: int. Training epochs of each candidate. Defaults to `3`.
        batch_size: int. Defaults to `32`.
        learning_rate: float. Adam learning rate of the fine-tuning. Defaults to `1e-3`.
        max_candidates: int or None. Make only the first this many. Defaults to `None`.
        directory: str or path-like. Where models, `manifest.json` and the report go
            (created if missing). Defaults to `"tfslim_shrink"`.
        overwrite: bool. Recompute everything in a `directory` holding an earlier or
            different run. Defaults to `False`.
        calibration_samples: int. Training inputs that calibrate post-training int8.
            Defaults to `200`.
        latency_runs: int. Timed LiteRT runs per candidate (0: no host latency).
            Defaults to `20`.
        seed: int. Keras seed set before each candidate, so a resumed run makes what an
            uninterrupted one would. Defaults to `0`.
        log: callable or None. Called with one line per finished candidate.
            Defaults to `None`.

    Returns:
        A `tfslim.strategies.StrategyResult`: `.candidates`, `.front` (per footprint
        figure), `.best` (fits the budget, best quality), `.files` (`report.md`,
        `report.json`, `front.png`).

    Raises:
        TypeError, ValueError: for an invalid argument, checked before any training.
        FileExistsError: if `directory` holds other files or a different run and
            `overwrite` is False.

    Example:

    >>> result = tfslim.shrink(model, (x, y), (x_val, y_val), target="nano33ble",
    ...                        directory="shrunk")  # doctest: +SKIP
    >>> result.best.name, result.best.footprint.flash_bytes  # doctest: +SKIP
    ('width50', 21000)
    """
    settings = dict(
        epochs=check_int("epochs", epochs),
        batch_size=check_int("batch_size", batch_size),
        learning_rate=check_float("learning_rate", learning_rate, minimum=0, min_inclusive=False),
        sparsity=check_float(
            "sparsity", sparsity, minimum=0, maximum=1, min_inclusive=False, max_inclusive=False
        ),
        widths=list(_candidates.check_widths(widths)),
        clusters=_candidates.check_clusters(clusters),
        techniques=list(_candidates.check_techniques(techniques)),
        calibration_samples=check_int("calibration_samples", calibration_samples),
        latency_runs=check_int("latency_runs", latency_runs, minimum=0),
        seed=check_int("seed", seed, minimum=0),
    )
    overwrite = check_bool("overwrite", overwrite)
    train_data = check_data("train_data", train_data)
    validation_data = check_data("validation_data", validation_data)
    if log is not None and not callable(log):
        raise invalid_type("log", "a callable or None", log)
    specs = _candidates.plan_candidates(
        settings["techniques"],
        widths=settings["widths"],
        sparsity=settings["sparsity"],
        clusters=settings["clusters"],
        max_candidates=max_candidates,
    )
    check_model("model", model)
    if teacher is not None:
        check_model("teacher", teacher)
    target, budget = check_target_and_budget(target, budget)
    directory = check_directory(directory)
    run = Run(directory, "shrink", target, budget, overwrite, log)
    run.open(fingerprint(model, teacher, train_data, validation_data, target, settings))
    teacher = model if teacher is None else teacher
    for spec in specs:
        run.candidate(
            spec,
            lambda spec=spec: _make(spec, model, teacher, train_data, settings),
            train_data,
            validation_data,
            settings,
        )
    run.notes += cluster_notes(run.candidates, target)
    return run.finish("original")


def cluster_notes(candidates, target) -> list[str]:
    """What the report says about clustered candidates: compressed ones run only in TFLite
    Micro; on a phone clustering shrinks only the download."""
    notes = []
    compressed = [c.name for c in candidates if c.compressed]
    if compressed:
        notes.append(
            f"LUT-compressed for TFLite Micro: {', '.join(compressed)}. Their `.tflite` holds "
            "clustered kernels as bit-packed indices into value tables, expanded by DECODE ops "
            "into the arena, and runs only in TFLite Micro: flash, arena and MCU estimate are "
            "the compressed file's; quality is the same int8 model uncompressed "
            f"(`<name>{_UNCOMPRESSED}`, identical outputs; LiteRT has no DECODE kernel); "
            "no host latency."
        )
    by_name = {c.name: c for c in candidates}
    for c in candidates:
        if not c.spec.get("clusters") or c.compressed:
            continue
        if target.is_micro:
            notes.append(
                f"{c.name}: no kernel shrank when LUT-compressed, so its file is plain int8."
            )
            continue
        fp = c.footprint
        line = (
            f"{c.name} on {target.name}: LiteRT has no LUT decoding, so the file is plain "
            f"int8 ({fp.flash_bytes:,} B flash); clustering shrinks only the download, gzip "
            f"{fp.gzip_bytes:,} B"
        )
        width = c.spec.get("width", 1.0)
        dense = by_name.get("qat" if width == 1 else f"width{round(100 * width)}")
        if dense is not None:
            line += (
                f" against {dense.name}'s {dense.footprint.gzip_bytes:,} B "
                f"({dense.footprint.flash_bytes:,} B flash)"
            )
        notes.append(line + ".")
    return notes


def _make(spec, model, teacher, train_data, settings):
    x, y = train_data
    return _candidates.train_candidate(
        spec,
        model,
        teacher,
        x,
        y,
        epochs=settings["epochs"],
        batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"],
    )


class Run:
    """The files of one strategy run: candidates' models, the manifest, the report."""

    def __init__(self, directory: Path, strategy: str, target, budget, overwrite: bool, log):
        self.directory, self.strategy = directory, strategy
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
        elif any(self.directory.iterdir()) and not self.overwrite:
            raise FileExistsError(
                "Invalid value for argument `directory`. Expected a new or empty directory, or "
                "one of an earlier run to resume; pass overwrite=True to write into it. "
                f"Received: directory={str(self.directory)!r}"
            )

    def candidate(self, spec, make, train_data, validation_data, settings) -> Candidate:
        """Makes, converts and measures `spec`, or reads it back from the manifest."""
        saved = self.done.get(spec.name)
        keras_path = self.directory / f"{spec.name}.keras"
        tflite_path = self.directory / f"{spec.name}.tflite"
        uncompressed_path = self.directory / f"{spec.name}{_UNCOMPRESSED}"
        finished = saved is not None and saved.get("spec") == spec.to_dict()
        compressed = finished and bool(saved.get("uncompressed"))
        files = (keras_path, tflite_path, *([uncompressed_path] if compressed else []))
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
            _io.atomic_write(tflite_path, result.flatbuffer, overwrite=True)
            compressed = uncompressed is not None
            if compressed:
                _io.atomic_write(uncompressed_path, uncompressed.flatbuffer, overwrite=True)
            else:
                uncompressed_path.unlink(missing_ok=True)  # Left by an overwritten run.
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
            tflite_path=str(tflite_path),
            seconds=seconds,
            uncompressed_path=str(uncompressed_path) if compressed else None,
        )
        self.candidates = [c for c in self.candidates if c.name != spec.name] + [candidate]
        self.done[spec.name] = {
            "spec": candidate.spec,
            "footprint": footprint.to_dict(),
            "seconds": round(seconds, 2),
        }
        if compressed:
            self.done[spec.name]["uncompressed"] = uncompressed_path.name
        self.write_manifest()
        self.log(self.line(candidate, resumed))
        return candidate

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

    def write_manifest(self) -> None:
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

    def finish(self, baseline: str) -> StrategyResult:
        from tfslim.strategies.report import write_strategy_report

        result = StrategyResult(
            strategy=self.strategy,
            target=self.target.name,
            budget=self.budget,
            candidates=list(self.candidates),
            baseline=baseline,
            directory=str(self.directory),
            notes=list(self.notes),
        )
        files = write_strategy_report(result, overwrite=True)
        # The best candidate under fixed names, for scripts; a re-judged run replaces them.
        for suffix in (".keras", ".tflite"):
            path = self.directory / f"best{suffix}"
            if result.best is None:
                path.unlink(missing_ok=True)
                continue
            source = result.best.keras_path if suffix == ".keras" else result.best.tflite_path
            files[f"best{suffix}"] = _io.atomic_write(
                path, Path(source).read_bytes(), overwrite=True
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
    from tfslim.litert.converter import finish

    x = train_data[0]
    quantized = tfslim.is_quantized_model(model)
    calibration = None if quantized else x[: settings["calibration_samples"]]
    result = tfslim.convert(model, target=target, calibration_data=calibration)
    if compress:
        packed = finish(copy.copy(result), compress=True, output_path=None, overwrite=False)
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


def check_data(name: str, data) -> tuple:
    """`(x, y)` of NumPy arrays with as many labels as inputs."""
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise invalid_type(name, "a tuple (x, y) of NumPy arrays", data)
    x, y = (np.asarray(v) for v in data)
    if x.ndim < 2 or y.ndim < 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected (x, y) with the same number of "
            f"samples (at least one). Received: {name} with shapes x={x.shape}, y={y.shape}"
        )
    return x, y


def check_model(name: str, model) -> None:
    import keras

    if not isinstance(model, keras.Model):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a built Keras 3 keras.Model. "
            f"Received: {name} of type {type(model).__name__}"
        )


def check_target_and_budget(target, budget):
    from tfslim.litert.targets import get_target

    target = get_target(target)
    if budget is None:
        budget = Budget.from_target(target)
    elif not isinstance(budget, Budget):
        raise invalid_type("budget", "a tfslim.Budget or None", budget)
    return target, budget


def check_directory(directory) -> Path:
    if not isinstance(directory, str | os.PathLike):
        raise invalid_type("directory", "a directory path", directory)
    path = Path(directory)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(
            "Invalid value for argument `directory`. Expected a directory, not a file. "
            f"Received: directory={str(path)!r}"
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            "Invalid value for argument `directory`. Expected a directory whose parent "
            f"exists. Received: directory={str(path)!r}"
        )
    path.mkdir(exist_ok=True)
    return path


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
