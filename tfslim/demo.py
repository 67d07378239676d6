"""`tfslim demo`: the whole path on real data, measured.

Trains a small CNN on scikit-learn's digits (shipped with the package, no download),
shrinks it with each technique tfslim offers, converts every variant for a phone and
a microcontroller, inspects and benchmarks the .tflite files, and writes them with a
report (Markdown + JSON) into one directory.
"""

import json
import time
from pathlib import Path

from tfslim import _io
from tfslim._checks import check_int
from tfslim.architectures.digits import build_digits_cnn
from tfslim.datasets import load_digits_data

__all__ = ["run_demo"]

_BOARDS = ("nano33ble", "stm32f746", "nucleo-l4r5zi", "esp32s3", "rp2040")


def _compile(model, lr=2e-3):
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def _variants(data, epochs: int, log):
    """Yields (name, description, keras model) for every technique available."""
    x_train, y_train, _, _ = data
    float_model = _compile(build_digits_cnn())
    t = time.perf_counter()
    float_model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    log(
        f"trained float CNN ({float_model.count_params()} params) in "
        f"{time.perf_counter() - t:.1f} s"
    )
    yield "float", "float CNN, post-training quantization", float_model
    yield from _technique_variants(float_model, data, epochs, log)


def _technique_variants(float_model, data, epochs, log):
    """QAT and pruning variants of the trained float model (shrink-and-improve)."""
    import keras

    from tfslim.pruning import Pruning, strip_pruning
    from tfslim.quantization import quantize_and_finetune

    x_train, y_train, _, _ = data
    finetune = max(2, epochs // 5)
    t = time.perf_counter()
    qat = quantize_and_finetune(float_model, x_train, y_train, epochs=finetune)
    log(f"QAT fine-tuned {finetune} epochs in {time.perf_counter() - t:.1f} s")
    yield "qat", f"float CNN + {finetune} epochs quantization-aware training", qat

    t = time.perf_counter()
    pruned = keras.models.clone_model(float_model)
    pruned.set_weights(float_model.get_weights())
    _compile(pruned, lr=1e-3)
    pruned.fit(
        x_train, y_train, epochs=2 * finetune, batch_size=32, verbose=0, callbacks=[Pruning(0.8)]
    )
    pruned = strip_pruning(pruned)
    log(f"pruned to 80% sparsity in {time.perf_counter() - t:.1f} s")
    yield "pruned80", "float CNN pruned to 80% sparsity during fine-tuning", pruned

    t = time.perf_counter()
    pruned_qat = quantize_and_finetune(
        pruned, x_train, y_train, epochs=finetune, callbacks=[Pruning(schedule="keep")]
    )
    log(f"pruning-preserving QAT in {time.perf_counter() - t:.1f} s")
    yield "pruned80_qat", "80%-pruned CNN + pruning-preserving QAT", pruned_qat

    # Grow-improve-shrink: the float CNN teaches a quarter-size student that is pruned
    # (50%) and quantization-aware trained in the same fit.
    from tfslim.distillation import distill

    student_kwargs = {"width": 16, "dense_units": 48}
    t = time.perf_counter()
    alone = _compile(build_digits_cnn(**student_kwargs))
    alone.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    log(
        f"trained the student alone ({alone.count_params()} params) in "
        f"{time.perf_counter() - t:.1f} s"
    )
    yield "student", "quarter-size CNN trained alone, post-training quantization", alone
    t = time.perf_counter()
    distilled = distill(
        float_model,
        build_digits_cnn(**student_kwargs),
        x_train,
        y_train,
        epochs=epochs,
        quantize=True,
        pruning=0.5,
        temperature=8.0,
        optimizer=keras.optimizers.Adam(2e-3),
    )
    log(f"distilled + pruned + QAT student in {time.perf_counter() - t:.1f} s")
    yield (
        "distilled",
        "quarter-size CNN distilled from the float CNN, pruned to 50% and "
        "quantization-aware trained in one fit",
        distilled,
    )


def _measure(name, description, model, data, target, out_dir, log):
    from tfslim.benchmarking.benchmark import benchmark
    from tfslim.litert.converter import convert
    from tfslim.litert.inspection import inspect

    x_train, _, x_test, y_test = data
    result = convert(model, target=target, calibration_data=x_train[:200])
    path = out_dir / f"digits_{name}_{target}.tflite"
    result.save(path, overwrite=True)
    targets = list(_BOARDS) if result.target.is_micro else ["mobile"]
    report = inspect(result.flatbuffer, target=targets)
    bench = benchmark(
        result.flatbuffer, data=(x_test, y_test), keras_model=model, runs=50, warmup=5, xnnpack=True
    )
    acc = bench["accuracy"]
    row = {
        "model": name,
        "description": description,
        "target": target,
        "quantization": result.quantization,
        "file": path.name,
        "params": int(model.count_params()),
        "size_bytes": report["size_bytes"],
        "gzip_bytes": report["gzip_bytes"],
        "fully_integer": report["fully_integer"],
        "sparsity": report["sparsity"],
        "macs": report["macs"],
        "ops": report["ops"],
        "keras_accuracy": acc.get("keras"),
        "tflite_accuracy": acc["tflite"],
        "agreement": acc.get("agreement"),
        "latency_ms_median": bench["latency"]["xnnpack"]["latency_ms"]["median"],
        "arena_bytes": report["micro"]["arena_bytes"],
        "boards": {k: v["fits"] for k, v in report["targets"].items()},
        "mcu_latency_estimate_ms": {
            k: v["latency_estimate"]["value_ms"]
            for k, v in report["targets"].items()
            if v["latency_estimate"]
        },
    }
    log(
        f"  {name:>10} {target:>6}: {row['size_bytes']:>7} B, keras {row['keras_accuracy']:.4f}"
        f" -> tflite {row['tflite_accuracy']:.4f}, {row['latency_ms_median']} ms"
    )
    return row


def _markdown(report: dict) -> str:
    lines = [
        "# tfslim demo report",
        "",
        f"Data: {report['dataset']}. Training: {report['epochs']} epochs. "
        f"Total time: {report['seconds']:.0f} s. All sizes, arenas, latencies and accuracies "
        "are measured (LiteRT and TFLite Micro interpreters); MCU latencies are estimates "
        "from MACs (`macs * cycles_per_mac / clock`).",
        "",
        "| model | target | quant | size | gzip | Keras acc | TFLite acc | agree | "
        "latency (ms) | arena | fits |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["models"]:
        fits = ", ".join(k for k, v in r["boards"].items() if v) or "none"
        arena = f"{r['arena_bytes']:,} B" if r["arena_bytes"] else "-"
        lines.append(
            f"| {r['model']} | {r['target']} | {r['quantization']} | {r['size_bytes']:,} B | "
            f"{r['gzip_bytes']:,} B | {r['keras_accuracy']:.4f} | {r['tflite_accuracy']:.4f} | "
            f"{r['agreement']:.4f} | {r['latency_ms_median']} | {arena} | {fits} |"
        )
    lines += ["", "Ops:", ""]
    lines += [
        f"- {r['file']}: " + ", ".join(f"{k} x{v}" for k, v in r["ops"].items())
        for r in report["models"]
    ]
    lines += ["", "Descriptions:", ""]
    lines += [
        f"- **{r['model']}**: {r['description']}"
        for r in report["models"]
        if r["target"] == "mobile"
    ]
    return "\n".join(lines) + "\n"


def run_demo(
    *,
    out_dir: "str | Path" = "tflite_models",
    epochs: int | None = None,
    quick: bool = False,
    as_json: bool = False,
    log=print,
) -> dict:
    """Runs the demo and writes .tflite files plus report.md / report.json.

    Args:
        out_dir: str or Path. Output directory (created if missing; its parent must
            exist). Defaults to `"tflite_models"`.
        epochs: int or None. Training epochs; None means 15 (3 with `quick`).
        quick: bool. Fewer epochs, for smoke tests. Defaults to `False`.
        as_json: bool. Print the JSON report instead of the table. Defaults to `False`.
        log: callable. Progress printer. Defaults to `print`.

    Returns:
        The report dict.
    """
    import keras

    if epochs is None:
        epochs = 3 if quick else 15
    check_int("epochs", epochs)
    out_dir = Path(out_dir)
    if not out_dir.parent.is_dir():
        raise FileNotFoundError(
            "Invalid value for argument `out_dir`. Expected a directory whose parent exists. "
            f"Received: out_dir={str(out_dir)!r}"
        )
    out_dir.mkdir(exist_ok=True)
    quiet = log if not as_json else (lambda *_: None)
    keras.utils.set_random_seed(0)
    start = time.perf_counter()
    data = load_digits_data()
    rows = []
    for name, description, model in _variants(data, epochs, quiet):
        for target in ("mobile", "mcu"):
            rows.append(_measure(name, description, model, data, target, out_dir, quiet))
    report = {
        "dataset": f"scikit-learn digits, {len(data[0])} train / {len(data[2])} test",
        "regenerate": "tfslim demo --out <this directory>",
        "epochs": epochs,
        "seconds": round(time.perf_counter() - start, 1),
        "models": rows,
    }
    _io.atomic_write(out_dir / "report.json", json.dumps(report, indent=2), overwrite=True)
    _io.atomic_write(out_dir / "report.md", _markdown(report), overwrite=True)
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        log("")
        log(_markdown(report))
        log(f"wrote {len(rows)} .tflite files and report.md / report.json to {out_dir}/")
    return report
