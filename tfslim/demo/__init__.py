"""`tfslim demo`: the whole path on real data, measured.

Trains a small CNN on scikit-learn's digits (shipped with the package, no download),
shrinks it with each technique tfslim offers, converts every variant for a phone and
a microcontroller, inspects and benchmarks the .tflite files, runs a small `tfslim.shrink`
for a board's budget (its Pareto plot is `front.png`), and writes them with a report
(Markdown + JSON) into one directory.

A rerun builds everything in a fresh hidden sibling folder and swaps it in at the end, so an
interrupted run leaves the previous folder whole: never new models beside an old report.
"""

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

from tfslim import _io
from tfslim._checks import check_int
from tfslim.demo import output
from tfslim.demo import report as report_text
from tfslim.demo.boards import BOARDS

__all__ = ["run_demo"]


def _build_cnn(**kwargs):
    from tfslim.architectures.digits import build_digits_cnn

    return build_digits_cnn(**kwargs)


def _compile(model, lr=2e-3):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


_BOTH = {"mobile": {}, "mcu": {}}
_MCU = {"mcu": {}}


class _Variant(NamedTuple):
    """A model of the demo, the targets it is converted for and how it was made smaller."""

    name: str
    description: str
    model: object
    targets: dict = _BOTH  # target -> extra `tfslim.convert` keyword arguments
    structure: str | None = None  # "channels" or "clusters": explained by its own note
    reference: str | None = None  # the unshrunk model its note compares it with


def _variants(data, epochs: int, log, quick: bool = False):
    """Yields a `_Variant` for every technique.

    The clustered and channel-pruned models are converted for the microcontroller only: what
    they change (LUT-compressed flash and the arena it costs; fewer channels) is measured
    there, int8 with its arena.
    """
    x_train, y_train, _, _ = data
    float_model = _compile(_build_cnn())
    t = time.perf_counter()
    float_model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    log(
        f"trained float CNN ({float_model.count_params()} params) in "
        f"{time.perf_counter() - t:.1f} s"
    )
    yield _Variant("float", "float CNN, post-training quantization", float_model)
    yield from _technique_variants(float_model, data, epochs, log, quick)
    yield from _structured_variants(float_model, data, epochs, log, quick)


def _fine_tune_epochs(epochs: int, quick: bool) -> int:
    return 1 if quick else max(2, epochs // 5)


def _epochs(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _technique_variants(float_model, data, epochs, log, quick):
    """QAT and pruning variants of the trained float model (shrink-and-improve).

    `quick` fine-tunes one epoch and stops after unstructured pruning: pruning-preserving
    QAT and the distilled student have their own tests, and the quick demo's `shrink`
    still distills a narrow student with QAT.
    """
    import keras

    from tfslim.pruning import Pruning, strip_pruning
    from tfslim.quantization import quantize_and_finetune

    x_train, y_train, _, _ = data
    finetune = _fine_tune_epochs(epochs, quick)
    t = time.perf_counter()
    qat = quantize_and_finetune(float_model, x_train, y_train, epochs=finetune)
    log(f"QAT fine-tuned {_epochs(finetune)} in {time.perf_counter() - t:.1f} s")
    yield _Variant("qat", f"float CNN + {_epochs(finetune)} quantization-aware training", qat)

    t = time.perf_counter()
    pruned = keras.models.clone_model(float_model)
    pruned.set_weights(float_model.get_weights())
    _compile(pruned, lr=1e-3)
    pruned.fit(
        x_train, y_train, epochs=2 * finetune, batch_size=32, verbose=0, callbacks=[Pruning(0.8)]
    )
    pruned = strip_pruning(pruned)
    log(f"pruned to 80% sparsity in {time.perf_counter() - t:.1f} s")
    yield _Variant("pruned80", "float CNN pruned to 80% sparsity during fine-tuning", pruned)

    if quick:
        return
    t = time.perf_counter()
    pruned_qat = quantize_and_finetune(
        pruned, x_train, y_train, epochs=finetune, callbacks=[Pruning(schedule="keep")]
    )
    log(f"pruning-preserving QAT in {time.perf_counter() - t:.1f} s")
    yield _Variant("pruned80_qat", "80%-pruned CNN + pruning-preserving QAT", pruned_qat)

    # Grow-improve-shrink: the float CNN teaches a quarter-size student that is pruned
    # (50%) and quantization-aware trained in the same fit.
    from tfslim.distillation import distill

    student_kwargs = {"width": 16, "dense_units": 48}
    t = time.perf_counter()
    alone = _compile(_build_cnn(**student_kwargs))
    alone.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    log(
        f"trained the student alone ({alone.count_params()} params) in "
        f"{time.perf_counter() - t:.1f} s"
    )
    yield _Variant("student", "quarter-size CNN trained alone, post-training quantization", alone)
    t = time.perf_counter()
    distilled = distill(
        float_model,
        _build_cnn(**student_kwargs),
        x_train,
        y_train,
        epochs=epochs,
        quantize=True,
        pruning=0.5,
        temperature=8.0,
        optimizer=keras.optimizers.Adam(2e-3),
    )
    log(f"distilled + pruned + QAT student in {time.perf_counter() - t:.1f} s")
    yield _Variant(
        "distilled",
        "quarter-size CNN distilled from the float CNN, pruned to 50% and "
        "quantization-aware trained in one fit",
        distilled,
    )


def _structured_variants(float_model, data, epochs, log, quick):
    """Channel-pruned and clustered variants of the float model, for the microcontroller."""
    import keras

    import tfslim

    x_train, y_train, _, _ = data
    finetune = _fine_tune_epochs(epochs, quick)
    t = time.perf_counter()
    wide = keras.models.clone_model(float_model)
    wide.set_weights(float_model.get_weights())
    _compile(wide, lr=1e-3)
    # The schedule masks channels over the first 70% of the steps; the rest fine-tunes.
    wide.fit(
        x_train,
        y_train,
        epochs=2 * finetune,
        batch_size=32,
        verbose=0,
        callbacks=[tfslim.callbacks.ChannelPruning(0.5)],
    )
    narrow = tfslim.strip_channels(wide, batch_norm_data=x_train)
    log(
        f"channel-pruned to 50% ({narrow.count_params()} params) in {time.perf_counter() - t:.1f} s"
    )
    yield _Variant(
        "channels50",
        f"float CNN with 50% of its channels pruned during {_epochs(2 * finetune)} of "
        "fine-tuning (`ChannelPruning`), then removed (`strip_channels`), post-training int8",
        narrow,
        _MCU,
        "channels",
        "float",
    )

    t = time.perf_counter()
    clustered = tfslim.cluster_weights(float_model, 16)
    _compile(clustered, lr=1e-3)
    clustered.fit(x_train, y_train, epochs=finetune, batch_size=32, verbose=0)
    clustered = tfslim.strip_clustering(clustered)
    log(f"clustered to 16 values per kernel in {time.perf_counter() - t:.1f} s")
    yield _Variant(
        "clustered16",
        f"float CNN clustered to 16 values per kernel ({_epochs(finetune)}), post-training "
        "int8, kernels LUT-compressed for TFLite Micro (`compress=True`)",
        clustered,
        {"mcu": {"compress": True}},
        "clusters",
        "float",
    )
    if quick:
        return
    t = time.perf_counter()
    clustered_qat = tfslim.quantize_model(clustered, preserve="clusters")
    _compile(clustered_qat, lr=1e-3)
    clustered_qat.fit(x_train, y_train, epochs=finetune, batch_size=32, verbose=0)
    log(f"clustering-preserving QAT in {time.perf_counter() - t:.1f} s")
    yield _Variant(
        "clustered16_qat",
        f"16-cluster CNN + {_epochs(finetune)} clustering-preserving QAT "
        '(`quantize_model(preserve="clusters")`), LUT-compressed for TFLite Micro',
        clustered_qat,
        {"mcu": {"compress": True}},
        "clusters",
        "qat",
    )


def _measure(
    name, description, model, data, target, out_dir, log, *, latency_runs=50, compress=False
):
    import tfslim
    from tfslim.litert.converter import compressed_copy

    x_train, _, x_test, y_test = data
    dense = tfslim.convert(model, target=target, calibration_data=x_train[:200])
    result = dense
    if compress:  # The dense file with its kernels LUT-compressed, as `compress=True` makes it.
        result = compressed_copy(dense)
    path = out_dir / f"digits_{name}_{target}.tflite"
    row = {"model": name, "description": description, "file": path.name}
    if compress:
        # A LUT-compressed file is not a TFLite file a phone can load (LiteRT has no DECODE
        # op), so it gets its own suffix; the same int8 model uncompressed, which LiteRT
        # and TFLite Micro both run, keeps the .tflite name beside it.
        dense.save(path, overwrite=True)
        row.update(uncompressed_file=path.name, file=path.with_suffix(".lut.tflm").name)
        path = out_dir / row["file"]
    result.save(path, overwrite=True)
    boards = list(BOARDS) if result.target.is_micro else None
    if not compress:
        footprint = tfslim.measure(
            result,
            data=(x_test, y_test),
            keras_model=model,
            boards=boards,
            latency_runs=latency_runs,
            warmup=5,
        ).to_dict()
    else:
        # LiteRT has no DECODE op, so the LUT-compressed file runs only in TFLite Micro:
        # its flash, arena and board figures are its own; accuracy comes from the same int8
        # file uncompressed (the tables hold its exact int8 values); no host latency.
        footprint = tfslim.measure(result, boards=boards, latency_runs=0).to_dict()
        accuracy = tfslim.measure(
            dense, data=(x_test, y_test), keras_model=model, latency_runs=0
        ).to_dict()
        footprint.update(
            {k: accuracy[k] for k in ("quality", "metric", "keras_quality", "agreement")}
        )
    row.update(footprint)
    log(
        f"  {name:>12} {target:>6}: {row['flash_bytes']:>7} B, keras {row['keras_quality']:.4f}"
        f" -> tflite {row['quality']:.4f}, host {row['latency_ms']} ms"
    )
    return row


def _front(model, data, rows, out_dir: Path, quick: bool, log) -> dict:
    """A small `tfslim.shrink` of the float CNN for the nano33ble at half its int8 flash.

    The model as given is over that budget (kept, greyed in the plot); a channel-narrowed
    student distilled from it with QAT is the front. Its files go to `shrink/`, the plot
    to `front.png`.
    """
    import tfslim
    from tfslim.strategies import shrink

    x_train, y_train, x_test, y_test = data
    float_mcu = next(r for r in rows if r["model"] == "float" and r["target"] == "mcu")
    budget = tfslim.Budget.from_target("nano33ble", max_flash_bytes=float_mcu["flash_bytes"] // 2)
    # Quick: one epoch on a third of the data; the candidate still fits the same budget.
    train = (x_train[:480], y_train[:480]) if quick else (x_train, y_train)
    t = time.perf_counter()
    result = shrink(
        model,
        train,
        (x_test, y_test),
        target="nano33ble",
        budget=budget,
        techniques=["channels"],
        widths=[0.25],
        epochs=1 if quick else 3,
        directory=out_dir / "shrink",
        latency_runs=5 if quick else 10,
        log=lambda line: log(f"  shrink {line}"),
    )
    seconds = time.perf_counter() - t
    _io.atomic_write(out_dir / "front.png", Path(result.files["png"]).read_bytes())
    log(f"shrink: {len(result.candidates)} candidates in {seconds:.1f} s")
    best = result.best
    return {
        "target": result.target,
        "budget": result.budget.to_dict(),
        "best": best.name if best else None,
        "front": {axis: [c.name for c in front] for axis, front in result.front.items()},
        "candidates": [
            {
                k: r[k]
                for k in (
                    "name",
                    "description",
                    "feasible",
                    "flash_bytes",
                    "arena_bytes",
                    "quality",
                    "violations",
                )
            }
            for r in result.records()
        ],
        "plot": "front.png",
        "directory": "shrink",
        "seconds": round(seconds, 1),
    }


def run_demo(
    *,
    out_dir: "str | Path" = "tflite_models",
    epochs: int | None = None,
    quick: bool = False,
    overwrite: bool = False,
    as_json: bool = False,
    log=print,
) -> dict:
    """Runs the demo and writes .tflite files plus report.md / report.json.

    Everything is written into a fresh hidden folder beside `out_dir` and swapped in when
    complete; files in `out_dir` that the demo did not write (e.g. `reference/`) are kept.

    Args:
        out_dir: str or Path. Output directory (created if missing; its parent must
            exist). Defaults to `"tflite_models"`.
        epochs: int or None. Training epochs; None means 15 (3 with `quick`).
        quick: bool. For smoke tests: fewer epochs, a smaller `shrink`, and no
            pruning- or clustering-preserving QAT or students. Defaults to `False`.
        overwrite: bool. Replace the demo files of an earlier run in a non-empty
            `out_dir`. Defaults to `False`.
        as_json: bool. Print the JSON report instead of the table. Defaults to `False`.
        log: callable. Progress printer. Defaults to `print`.

    Returns:
        The report dict; each of its `models` rows holds the `tfslim.Footprint` fields.

    Raises:
        FileExistsError: if `out_dir` is not empty and `overwrite` is False.
    """
    if epochs is None:
        epochs = 3 if quick else 15
    check_int("epochs", epochs)
    out_dir = output.check_out_dir(out_dir, overwrite)
    shown, out_dir = out_dir, out_dir.resolve()  # A symlinked folder is swapped at its target.

    import keras

    from tfslim.datasets import load_digits_data

    output.clean_stale(out_dir)
    quiet = log if not as_json else (lambda *_: None)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    data = load_digits_data()
    new = Path(
        tempfile.mkdtemp(
            prefix=f"{output.stale_prefix(out_dir)}new-{os.getpid()}-", dir=out_dir.parent
        )
    )
    try:
        os.chmod(new, output.default_dir_mode())  # mkdtemp makes 0700; outputs get the usual mode.
        rows, float_model = [], None
        for variant in _variants(data, epochs, quiet, quick):
            for target, options in variant.targets.items():
                row = _measure(
                    variant.name,
                    variant.description,
                    variant.model,
                    data,
                    target,
                    new,
                    quiet,
                    latency_runs=20 if quick else 50,
                    **options,
                )
                rows.append({**row, "structure": variant.structure, "reference": variant.reference})
            if variant.name == "float":
                float_model = variant.model
        front = None if float_model is None else _front(float_model, data, rows, new, quick, quiet)
        report = {
            "dataset": f"scikit-learn digits, {len(data[0])} train / {len(data[2])} test",
            "regenerate": "tfslim demo --out <this directory> --overwrite",
            "epochs": epochs,
            "test_samples": int(len(data[2])),
            "seconds": round(time.perf_counter() - start, 1),
            "models": rows,
            "shrink": front,
        }
        from tfslim.benchmarking.report import write_report_files

        write_report_files(new, "report", markdown=report_text.markdown(report), data=report)
        output.swap_in(new, out_dir)
    except BaseException:
        shutil.rmtree(new, ignore_errors=True)
        raise
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        log("")
        log(report_text.markdown(report))
        log(f"wrote {len(rows)} model files and report.md / report.json to {shown}/")
    return report
