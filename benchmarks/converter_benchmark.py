"""Quantization modes side by side: size, LiteRT latency and accuracy in one run.

    python benchmarks/converter_benchmark.py [--epochs 15] [--json out.json]

Trains the demo CNN (75k parameters) on scikit-learn digits, converts it in each mode
and measures every figure with `tfslim.measure` (LiteRT interpreter, one thread, XNNPACK
where it accepts the model); the columns carry `tfslim.Footprint`'s names.
"""

import argparse
import json
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    import keras

    import tfslim
    from tfslim.architectures.digits import build_digits_cnn
    from tfslim.benchmarking.report import Column, format_bytes, format_table
    from tfslim.datasets import load_digits_data

    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_digits_data()
    model = build_digits_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
    rows = []
    for mode, io in [
        ("none", None),
        ("float16", None),
        ("dynamic", None),
        ("int8", "float32"),
        ("int8", "int8"),
    ]:
        t = time.perf_counter()
        result = tfslim.convert(
            model, quantization=mode, io_dtype=io, calibration_data=x_train[:200]
        )
        seconds = time.perf_counter() - t
        footprint = tfslim.measure(
            result,
            data=(x_test, y_test),
            keras_model=model,
            latency_runs=args.runs,
            warmup=10,
        )
        rows.append(
            {
                "mode": mode if mode != "int8" else f"int8 ({result.io_dtype} I/O)",
                **footprint.to_dict(),
                "convert_s": round(seconds, 2),
            }
        )
    base = rows[0]
    for r in rows:
        r["flash_ratio"] = r["flash_bytes"] / base["flash_bytes"]
        r["latency_ratio"] = r["latency_ms"] / base["latency_ms"]
        r["delta_pt"] = 100 * (r["quality"] - base["quality"])
    print(
        f"\nDigits CNN, {model.count_params():,} parameters, {args.epochs} epochs; "
        f"Keras float accuracy {base['keras_quality']:.4f} on {len(x_test)} test images; "
        "host latency: LiteRT median on this CPU, one thread.\n"
    )
    columns = [
        Column("mode", "mode", str, "left"),
        Column("flash", "flash_bytes", format_bytes),
        Column("x float32", "flash_ratio", lambda v: f"{v:.3f}"),
        Column("host latency ms", "latency_ms", lambda v: f"{v:.4f}"),
        Column("x float32", "latency_ratio", lambda v: f"{v:.2f}"),
        Column("kernels", "latency_runtime", str, "left"),
        Column("quality", "quality", lambda v: f"{v:.4f}"),
        Column("delta pt", "delta_pt", lambda v: f"{v:+.2f}"),
        Column("agree", "agreement", lambda v: f"{v:.4f}"),
    ]
    print(format_table(rows, columns))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
