"""`tfslim.shrink`: shrink-and-improve, measured on the target, resumable.

The survey's recipe for a footprint-sensitive model (Menghani 2021, section 4): compress
the trained model with every lever tfslim has, recover quality with learning techniques
(distillation from the original, quantization-aware training), convert each candidate for
the target and measure it with the real interpreters. Each finished candidate is written
(`<name>.keras`, `<name>.tflite`) and recorded in `manifest.json` atomically, so a run
killed half-way resumes where it stopped without recomputing what was finished.

A clustered candidate on a microcontroller target is LUT-compressed (TFLite Micro's DECODE
op) into `<name>.lut.tflm`: it is judged by that file's flash and arena, and its quality
comes from the same int8 model uncompressed, `<name>.tflite` beside it, since LiteRT cannot
run DECODE (the naming of `tfslim demo`).
"""

import os
from pathlib import Path

import numpy as np

from tfslim._checks import check_bool, check_float, check_int, invalid_type
from tfslim.strategies import candidates as _candidates
from tfslim.strategies import distributed
from tfslim.strategies.result import StrategyResult
from tfslim.strategies.run import LUT_SUFFIX, Run, fingerprint
from tfslim.tuning.budget import Budget

__all__ = ["shrink"]


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
    file runs only in TFLite Micro, so it is `<name>.lut.tflm` (`Candidate.tflite_path`,
    the file to deploy), not a `.tflite` a phone app would try to load: quality is
    measured on the same int8 model uncompressed, `<name>.tflite` beside it
    (`Candidate.uncompressed_path`, identical outputs), and it has no host latency (a
    `max_latency_ms` budget rules it out). A LUT-compressed best candidate is copied to
    `best.lut.tflm`, with its twin as `best.tflite`. On `mobile`, LiteRT has no LUT
    decoding: the candidate is a plain int8 file about as large as the unclustered one, and
    clustering only shrinks its gzip size (the download); a note in `result.notes` gives
    both.

    A rerun with the same model, data and training settings in the same `directory`
    resumes: the candidates recorded in its `manifest.json` are read back, not recomputed.
    A changed `budget` only re-judges them; more `widths` or `techniques` (or another
    `clusters`) add candidates.

    Distributed, as KerasTuner's own search is: run the same script in several processes
    on one shared `directory` with `KERASTUNER_ORACLE_IP`, `KERASTUNER_ORACLE_PORT` and
    `KERASTUNER_TUNER_ID` set (`"chief"` for one, `"tuner0"`, `"tuner1"`, ... for the
    others). Each candidate is then one trial of an oracle the chief serves over gRPC: the
    workers make them, each once, and return only their own (no report); the chief makes
    none while serving, then returns the whole result and writes the report, as one
    process would have (see `tfslim.strategies.distributed`). `overwrite` is the chief's
    to give; workers ignore it.

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
        ValueError: in distributed mode, if KerasTuner's environment is incomplete, or a
            worker's model, data or settings differ from the chief's.

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
    role = distributed.role()
    run = Run(directory, "shrink", target, budget, overwrite, log, shared=role is not None)
    key = fingerprint(model, teacher, train_data, validation_data, target, settings)
    teacher = model if teacher is None else teacher

    def make(spec):
        return _make(spec, model, teacher, train_data, settings)

    data = (train_data, validation_data)
    if role not in (None, "chief"):
        return distributed.work(run, key, specs, make, data, settings, "original")
    run.open(key)
    if role == "chief":
        distributed.serve(run, specs, make, data, settings)
    for spec in specs:
        # The chief's candidates were made by the workers: read back, unless one failed.
        run.candidate(spec, lambda spec=spec: make(spec), *data, settings)
    run.notes += cluster_notes(run.candidates, target)
    return run.finish("original")


def cluster_notes(candidates, target) -> list[str]:
    """What the report says about clustered candidates: compressed ones run only in TFLite
    Micro; on a phone clustering shrinks only the download."""
    notes = []
    compressed = [c.name for c in candidates if c.compressed]
    if compressed:
        notes.append(
            "LUT-compressed for TFLite Micro: "
            + ", ".join(f"{name} (`{name}{LUT_SUFFIX}`)" for name in compressed)
            + ". Each holds clustered kernels as bit-packed indices into value tables, "
            "expanded by DECODE ops into the arena, and runs only in TFLite Micro: flash, "
            "arena and MCU estimate are that file's; quality is the same int8 model "
            "uncompressed (`<name>.tflite` beside it, identical outputs; LiteRT has no DECODE "
            "kernel); no host latency."
        )
    by_name = {c.name: c for c in candidates}
    for c in candidates:
        if not c.spec.get("clusters") or c.compressed:
            continue
        if target.is_micro:
            notes.append(
                f"{c.name}: nothing was LUT-compressed (no kernel shrank, or its expanded "
                "copy would not fit the board's RAM), so its file is plain int8."
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
