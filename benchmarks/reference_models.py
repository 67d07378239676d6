"""Regenerates tflite_models/reference/: the MLPerf Tiny reference models as int8 TFLite.

    python benchmarks/reference_models.py            # all four, writes files + manifest
    python benchmarks/reference_models.py --check    # exit 1 if a model misses a target
    python benchmarks/reference_models.py --models ds_cnn   # update one entry

Each model is built with its reference defaults, given trained-like biases and batch-norm
statistics (`tfslim.architectures.randomize_weights`; the weights are untrained, which is
fine for sizing), converted with `tfslim.convert(target="mcu")` calibrated on random
inputs, and inspected with `tfslim.inspect` against every microcontroller target. The
manifest records, per model: file size against the published MLPerf Tiny file, tensor
arena measured with the TFLite Micro interpreter, ops, and a verdict per board. With
`tfslim.quantization` available, each model is also QAT-wrapped and converted without
calibration data, and that result is recorded too.

The output is deterministic for a given seed and software stack, so a diff of the
manifest shows what a change did to the models.
"""

import argparse
import json
import os
import pathlib
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import tfslim  # noqa: E402
from tfslim.architectures import MLPERF_TINY_MODELS, randomize_weights  # noqa: E402

TOLERANCE = 0.10  # Allowed relative deviation from the published int8 file size.
CALIBRATION_SAMPLES = 32


def _calibration_data(spec, seed):
    return np.random.default_rng(seed).random((CALIBRATION_SAMPLES, *spec.input_shape), "float32")


def _build(spec, seed):
    import keras

    keras.utils.set_random_seed(seed)
    return randomize_weights(spec.build(), seed=seed)


def _qat_result(spec, seed, boards):
    """QAT-wraps the reference, converts it without calibration data, inspects it."""
    try:
        from tfslim.quantization import quantize_model
    except ImportError as e:
        return {"status": "unavailable", "error": str(e)}
    try:
        qat = quantize_model(_build(spec, seed))
        # One training-mode pass gives the range observers values, as `fit` would.
        qat(_calibration_data(spec, seed), training=True)
        result = tfslim.convert(qat, target="mcu")
        report = tfslim.inspect(result.flatbuffer, target=boards)
    except Exception as e:  # Record the failure in the manifest; the float path still runs.
        return {"status": "failed", "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    return {
        "status": "ok",
        "size_bytes": report["size_bytes"],
        "size_deviation": round(report["size_bytes"] / spec.int8_bytes - 1, 4),
        "fully_integer": report["fully_integer"],
        "micro_supported": report["micro"]["supported"],
        "arena_bytes": report["micro"].get("arena_bytes"),
    }


def build_entry(name, *, seed, output_dir, boards, qat):
    """Converts one reference model, writes its .tflite file and returns its manifest entry."""
    spec = MLPERF_TINY_MODELS[name]
    model = _build(spec, seed)
    result = tfslim.convert(model, target="mcu", calibration_data=_calibration_data(spec, seed))
    filename = f"{name}_int8.tflite"
    result.save(output_dir / filename, overwrite=True)
    report = tfslim.inspect(result.flatbuffer, target=boards)
    micro = report["micro"]
    deviation = report["size_bytes"] / spec.int8_bytes - 1
    entry = {
        "file": filename,
        "task": spec.task,
        "builder": f"tfslim.architectures.{name}()",
        "input_shape": list(spec.input_shape),
        "keras_params": model.count_params(),
        "reference_params": spec.params,
        "size_bytes": report["size_bytes"],
        "reference_size_bytes": spec.int8_bytes,
        "size_deviation": round(deviation, 4),
        "within_tolerance": abs(deviation) <= TOLERANCE,
        "fully_integer": report["fully_integer"],
        "io_dtypes": sorted({t["dtype"] for t in report["inputs"] + report["outputs"]}),
        "arena_bytes": micro.get("arena_bytes"),
        "micro_supported": micro["supported"],
        "micro_error": micro.get("error"),
        "ops": report["ops"],
        "macs": report["macs"],
        "boards": {
            board: {
                "fits": verdict["fits"],
                "reasons": verdict["reasons"],
                "latency_estimate_ms": (verdict["latency_estimate"] or {}).get("value_ms"),
            }
            for board, verdict in report["targets"].items()
        },
    }
    if qat:
        entry["qat"] = _qat_result(spec, seed, boards)
    return entry


def _passes(entry):
    return (
        entry["keras_params"] == entry["reference_params"]
        and entry["within_tolerance"]
        and entry["fully_integer"]
        and entry["micro_supported"]
    )


def render_markdown(manifest):
    boards = manifest["boards"]
    lines = [
        "# MLPerf Tiny reference models, int8",
        "",
        "Generated by `python benchmarks/reference_models.py`; do not edit by hand.",
        f"Weights: {manifest['weights']}.",
        f"Stack: {', '.join(f'{k} {v}' for k, v in manifest['versions'].items())}.",
        "",
        "| model | task | params (ref) | int8 bytes | reference | deviation | arena bytes "
        "| TFLM | QAT int8 | " + " | ".join(boards) + " |",
        "|---" * (9 + len(boards)) + "|",
    ]
    for name, e in manifest["models"].items():
        params = f"{e['keras_params']:,} ({e['reference_params']:,})"
        arena = f"{e['arena_bytes']:,}" if e["arena_bytes"] else "-"
        qat = e.get("qat", {"status": "skipped"})
        qat_cell = qat["status"]
        if qat["status"] == "ok":
            tflm = "" if qat["micro_supported"] else ", TFLM fails"
            qat_cell = f"{qat['size_bytes']:,} ({qat['size_deviation']:+.1%}{tflm})"
        verdicts = ["yes" if e["boards"][b]["fits"] else "no" for b in boards]
        lines.append(
            f"| {name} | {e['task']} | {params} | {e['size_bytes']:,} | "
            f"{e['reference_size_bytes']:,} | {e['size_deviation']:+.1%} | {arena} | "
            f"{'yes' if e['micro_supported'] else 'no'} | {qat_cell} | "
            + " | ".join(verdicts)
            + " |"
        )
    lines += ["", "Ops:", ""]
    for name, e in manifest["models"].items():
        ops = ", ".join(f"{op} x{n}" for op, n in e["ops"].items())
        lines.append(f"- {name}: {ops}")
    problems = [
        f"- {name}: {reason}" for name, e in manifest["models"].items() for reason in _problems(e)
    ]
    if problems:
        lines += ["", "Problems:", "", *problems]
    return "\n".join(lines) + "\n"


def _problems(entry):
    problems = []
    if not entry["within_tolerance"]:
        problems.append(
            f"size {entry['size_bytes']} is {entry['size_deviation']:+.1%} from the reference"
        )
    if not entry["micro_supported"]:
        problems.append(f"TFLite Micro: {entry['micro_error']}")
    qat = entry.get("qat")
    if qat and qat["status"] != "ok":
        problems.append(f"QAT path {qat['status']}: {qat.get('error')}")
    elif qat and not (qat["fully_integer"] and qat["micro_supported"]):
        problems.append("QAT int8 file is not fully integer or TFLite Micro cannot run it")
    if qat and qat["status"] == "ok" and abs(qat["size_deviation"]) > TOLERANCE:
        problems.append(
            f"QAT int8 size {qat['size_bytes']} is {qat['size_deviation']:+.1%} from the reference"
        )
    return problems


def _versions():
    import keras
    import tensorflow as tf

    return {"tfslim": tfslim.__version__, "tensorflow": tf.__version__, "keras": keras.__version__}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output-dir", type=pathlib.Path, default=ROOT / "tflite_models" / "reference"
    )
    parser.add_argument("--models", nargs="+", choices=sorted(MLPERF_TINY_MODELS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-qat", action="store_true", help="skip the QAT conversion")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if a model misses its reference figures"
    )
    args = parser.parse_args(argv)

    names = args.models or list(MLPERF_TINY_MODELS)
    boards = [t.name for t in tfslim.list_targets() if t.is_micro]
    args.output_dir.mkdir(parents=True, exist_ok=True)
    manifest_path = args.output_dir / "manifest.json"
    # A partial run (--models) updates its models' entries and keeps the others.
    models = {}
    if args.models and manifest_path.exists():
        models = json.loads(manifest_path.read_text()).get("models", {})
    for name in names:
        print(f"{name}: converting...", file=sys.stderr, flush=True)
        models[name] = build_entry(
            name, seed=args.seed, output_dir=args.output_dir, boards=boards, qat=not args.no_qat
        )
    models = {name: models[name] for name in MLPERF_TINY_MODELS if name in models}
    manifest = {
        "description": "MLPerf Tiny reference models converted to fully-int8 TFLite by tfslim",
        "command": "python benchmarks/reference_models.py",
        "weights": (
            f"untrained (seed {args.seed}) with trained-like biases and batch-norm statistics "
            "from tfslim.architectures.randomize_weights; for sizing only, not for accuracy"
        ),
        "calibration": f"{CALIBRATION_SAMPLES} uniform random samples in [0, 1)",
        "tolerance": TOLERANCE,
        "versions": _versions(),
        "boards": boards,
        "models": models,
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    (args.output_dir / "manifest.md").write_text(render_markdown(manifest))
    print(render_markdown(manifest))
    failed = [name for name in names if not _passes(models[name])]
    if args.check and failed:
        print(f"Missed the reference figures: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
