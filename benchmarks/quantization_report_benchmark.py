"""Per-layer int8 error reports: run time on the MLPerf Tiny models and MobileNetV2, SNRs on
trained models, and a deliberately broken layer found first.

    python benchmarks/quantization_report_benchmark.py [--samples 32] [--epochs 8]
        [--models ds_cnn,mobilenet_v1,resnet8,fc_autoencoder,mobilenet_v2] [--json out.json]

1. Each MLPerf Tiny reference model (untrained, batch-norm statistics and biases given
   trained-like values by `randomize_weights`) and MobileNetV2 (`weights=None`, 32x32x3,
   10 classes) gets a full `tfslim.quantization_report` on random inputs: its per-layer
   SNR table is printed and its run time (conversion included) measured.
2. ResNet-8 (the MLPerf Tiny image classifier) trained on scikit-learn digits: the per-layer
   SNRs of a trained model, calibrated on training images, measured on test images.
3. A digits CNN is trained, then one convolution gets huge-range weights: the kernel and
   bias of its output channel 0 are multiplied by 1000. The report must rank that
   convolution first by the error it adds alone (per-channel SNR: the whole-tensor SNR is
   dominated by the one wide channel and stays high).
4. The same CNN trained quantization-aware (`tfslim.quantize_model`): layers matched through
   the QAT wrappers' names, its int8 model close to its Keras model.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _ROOT)
# Child processes (the isolated LiteRT runs) import this checkout too, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))

_DEFAULT_MODELS = "ds_cnn,mobilenet_v1,resnet8,fc_autoencoder,mobilenet_v2"


def _build(name):
    import keras

    from tfslim.architectures import MLPERF_TINY_MODELS, randomize_weights

    if name == "mobilenet_v2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)
        return randomize_weights(model)
    return randomize_weights(MLPERF_TINY_MODELS[name].build())


def _summary(name, report, float_acc=None, int8_acc=None) -> dict:
    import numpy as np

    alone = [r.alone_channel_snr_db for r in report.layers if r.alone_snr_db is not None]
    finite = [v for v in alone if np.isfinite(v)]
    worst = report.worst()
    return {
        "model": name,
        "layers": len(report.layers),
        "unmatched": len(report.unmatched),
        "worst alone": f"{worst.name} ({worst.alone_channel_snr_db:.1f} dB)" if worst else "-",
        "median alone dB": round(float(np.median(finite)), 1) if finite else None,
        "min accumulated dB": round(float(min(r.channel_snr_db for r in report.layers)), 1),
        "output SNR dB": round(float(_output_snr(report)), 1),
        "float acc": float_acc,
        "int8 acc": int8_acc,
        "seconds": report.seconds,
        "convert s": report.timings["convert_s"],
        "report s": round(report.seconds - report.timings["convert_s"], 2),
    }


def _output_snr(report):
    """Accumulated SNR of the model's last compared layer (its output)."""
    return max(report.layers, key=lambda r: r.index).snr_db


def _train_digits(model, x, y, epochs):
    import keras

    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    return model


def _accuracies(model, converted, x, y):
    import numpy as np

    import tfslim

    float_acc = float(np.mean(model.predict(x, verbose=0).argmax(1) == y))
    int8_acc = float(np.mean(tfslim.predict(converted, x).argmax(1) == y))
    return round(float_acc, 4), round(int8_acc, 4)


def _break_channel(model, conv_name, channel=0, factor=1000.0):
    """Multiplies the kernel and bias of one output channel of `conv_name` by `factor`: one
    channel's range 1000x wider than its neighbours', as a badly trained or badly merged
    layer can have. The int8 output, one scale for all channels, keeps that channel and
    rounds the others away."""
    conv = model.get_layer(conv_name)
    kernel, bias = conv.get_weights()
    kernel[..., channel] *= factor
    bias[channel] *= factor
    conv.set_weights([kernel, bias])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="samples per report")
    parser.add_argument("--epochs", type=int, default=8, help="epochs of the trained models")
    parser.add_argument("--models", default=_DEFAULT_MODELS, help="comma-separated, or none")
    parser.add_argument("--json", help="also write the summary rows to this file")
    parser.add_argument("--quiet", action="store_true", help="summary only, no layer tables")
    args = parser.parse_args()

    import keras
    import numpy as np

    import tfslim
    from tfslim.architectures import build_digits_cnn, resnet8
    from tfslim.benchmarking.report import Column, format_table
    from tfslim.datasets import load_digits_data

    rows = []
    rng = np.random.default_rng(0)
    models = [m for m in args.models.split(",") if m and m != "none"]
    for name in models:
        keras.utils.set_random_seed(0)
        model = _build(name)
        x = rng.normal(0.0, 1.0, (args.samples, *model.inputs[0].shape[1:])).astype("float32")
        report = tfslim.quantization_report(model, x, max_samples=args.samples)
        if not args.quiet:
            print(report.table(), "\n")
        rows.append(_summary(f"{name} (untrained)", report))

    keras.utils.set_random_seed(0)
    x_train, y_train, x_test, y_test = load_digits_data()
    t = time.perf_counter()
    trained = _train_digits(
        resnet8(input_shape=(8, 8, 1), num_classes=10), x_train, y_train, args.epochs
    )
    print(f"resnet8 on digits trained in {time.perf_counter() - t:.1f} s")
    converted = tfslim.convert(trained, quantization="int8", calibration_data=x_train[:200])
    report = tfslim.quantization_report(
        trained, x_test, converted=converted, max_samples=args.samples
    )
    if not args.quiet:
        print(report.table(), "\n")
    rows.append(
        _summary(
            "resnet8 (digits, trained)", report, *_accuracies(trained, converted, x_test, y_test)
        )
    )

    keras.utils.set_random_seed(0)
    cnn = _train_digits(build_digits_cnn(width=16, dense_units=64), x_train, y_train, args.epochs)
    conv = [layer.name for layer in cnn.layers if isinstance(layer, keras.layers.Conv2D)][-1]
    for label in ("digits CNN", f"digits CNN, {conv} broken"):
        if label != "digits CNN":
            _break_channel(cnn, conv)
        converted = tfslim.convert(cnn, quantization="int8", calibration_data=x_train[:200])
        report = tfslim.quantization_report(
            cnn, x_test, converted=converted, max_samples=args.samples
        )
        if not args.quiet:
            print(report.table(), "\n")
        rows.append(_summary(label, report, *_accuracies(cnn, converted, x_test, y_test)))
    broken_first = report.worst().name == conv

    keras.utils.set_random_seed(0)
    qat = tfslim.quantize_model(build_digits_cnn(width=16, dense_units=64))
    qat = _train_digits(qat, x_train, y_train, max(1, args.epochs // 2))
    converted = tfslim.convert(qat)  # Learned ranges: no calibration.
    report = tfslim.quantization_report(qat, x_test, converted=converted, max_samples=args.samples)
    if not args.quiet:
        print(report.table(), "\n")
    rows.append(_summary("digits CNN, QAT", report, *_accuracies(qat, converted, x_test, y_test)))
    columns = [
        Column("model", "model", str, "left"),
        Column("layers", "layers"),
        Column("unmatched", "unmatched"),
        Column("worst layer alone (ch-SNR)", "worst alone", str, "left"),
        Column("median alone ch-SNR dB", "median alone dB"),
        Column("min accumulated ch-SNR dB", "min accumulated dB"),
        Column("output SNR dB", "output SNR dB"),
        Column("float acc", "float acc"),
        Column("int8 acc", "int8 acc"),
        Column("total s", "seconds"),
        Column("of which convert s", "convert s"),
        Column("report s (no conversion)", "report s"),
    ]
    print(format_table(rows, columns, markdown=False))
    print(
        f"\nbroken layer {conv} ranked first by its own error: {broken_first}; "
        f"{args.samples} samples per report; the trained models were converted beforehand "
        "(once, also for the accuracy columns)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "broken_layer_first": broken_first}, f, indent=1)


if __name__ == "__main__":
    main()
