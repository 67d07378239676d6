"""Quantization modes side by side: size, LiteRT latency and accuracy in one run.

    python benchmarks/converter_benchmark.py [--epochs 15] [--json out.json]

Trains the demo CNN (75k parameters) on scikit-learn digits, converts it in each mode
and measures every figure (LiteRT interpreter, one thread, XNNPACK on).
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    import keras

    import tfslim
    from tfslim.architectures.digits import build_digits_cnn
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
        bench = tfslim.benchmark(
            result, data=(x_test, y_test), keras_model=model, runs=args.runs, xnnpack=True
        )
        rows.append(
            {
                "mode": mode if mode != "int8" else f"int8 ({result.io_dtype} I/O)",
                "size_bytes": result.size_bytes,
                "latency_ms": bench["latency"]["xnnpack"]["latency_ms"]["median"],
                "accuracy": bench["accuracy"]["tflite"],
                "keras_accuracy": bench["accuracy"]["keras"],
                "agreement": bench["accuracy"]["agreement"],
                "convert_s": round(seconds, 2),
            }
        )
    base = rows[0]
    print(
        f"\nDigits CNN, {model.count_params():,} parameters, {args.epochs} epochs; "
        f"Keras float accuracy {base['keras_accuracy']:.4f} on {len(x_test)} test images.\n"
    )
    header = (
        f"{'mode':<22}{'size (B)':>10}{'x float32':>11}{'latency ms':>12}{'x float32':>11}"
        f"{'accuracy':>10}{'delta pt':>10}{'agree':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['mode']:<22}{r['size_bytes']:>10,}{r['size_bytes'] / base['size_bytes']:>11.3f}"
            f"{r['latency_ms']:>12.4f}{r['latency_ms'] / base['latency_ms']:>11.2f}"
            f"{r['accuracy']:>10.4f}{100 * (r['accuracy'] - base['accuracy']):>+10.2f}"
            f"{r['agreement']:>8.4f}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
