"""Mixed precision benchmark: where plain int8 loses points, and what accuracy-aware keeps.

Run: python benchmarks/mixed_precision_benchmark.py [--data digits --epochs 20]

1. A MobileNetV2-style depthwise model (inverted residual blocks, linear bottlenecks, plain
   ReLU instead of ReLU6; 2-D on digits, 1-D on MNIST-1D) is trained briefly. Its classifier
   head starts with one huge weight (1000x the others); training learns around it, so the
   float model does not mind, but int8's per-tensor Dense weights leave every other weight
   of that layer a few levels at most. The table shows, on the same test split, the float
   model, plain post-training int8 (`tfslim.convert`), ai-edge-quantizer's all-int8 from the
   same calibration, and `tfslim.convert(..., max_accuracy_drop=0.005)`, with sizes and the
   layers it kept and why.
2. `tfslim.sensitivity` on MobileNetV2 (32x32x3, untrained, keras.applications,
   `weights=None`): its run time and the top of the ranking.
"""

import argparse
import os
import pathlib
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def build_model(shape, seed: int = 0):
    """MobileNetV2-style classifier (1-D for sequences, 2-D for images), head with one
    huge weight."""
    import keras

    keras.utils.set_random_seed(seed)
    layers = keras.layers
    two_d = len(shape) == 3
    conv = layers.Conv2D if two_d else layers.Conv1D
    depthwise = layers.DepthwiseConv2D if two_d else layers.DepthwiseConv1D
    inputs = keras.Input(shape)
    x = conv(32, 3, padding="same", activation="relu", name="stem")(inputs)
    for i, (expand, stride) in enumerate(((96, 1), (96, 2), (128, 1), (128, 2))):
        y = conv(expand, 1, activation="relu", name=f"expand{i}")(x)
        y = depthwise(3, strides=stride, padding="same", name=f"dw{i}")(y)
        y = layers.ReLU(name=f"relu{i}")(y)
        y = conv(32, 1, name=f"project{i}")(y)  # Linear bottleneck.
        x = layers.Add(name=f"add{i}")([x, y]) if stride == 1 else y
    pool = layers.GlobalAveragePooling2D if two_d else layers.GlobalAveragePooling1D
    x = pool(name="gap")(x)
    head = layers.Dense(10, name="head")
    outputs = head(x)
    model = keras.Model(inputs, outputs)
    kernel = head.kernel.numpy()
    kernel[0, 0] = 1000.0 * np.abs(kernel).max()
    head.kernel.assign(kernel)
    return model


def accuracy(model_bytes, x, y):
    import tfslim

    return float(np.mean(tfslim.predict(model_bytes, x).argmax(1) == y))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--max-drop", type=float, default=0.005)
    parser.add_argument("--mobilenet-samples", type=int, default=64)
    parser.add_argument("--data", choices=("digits", "mnist1d"), default="digits")
    parser.add_argument("--skip-mobilenet", action="store_true")
    args = parser.parse_args(argv)

    import keras

    import tfslim
    from tfslim.datasets import load_digits_data, load_mnist1d
    from tfslim.litert.sensitivity import make_plan

    load = load_digits_data if args.data == "digits" else load_mnist1d
    x_train, y_train, x_test, y_test = load()
    # The search chooses on a validation split held out of training; the table reports
    # the test split, which it never saw.
    x_val, y_val = x_train[-300:], y_train[-300:]
    x_train, y_train = x_train[:-300], y_train[:-300]
    model = build_model(x_train.shape[1:])
    model.compile(
        keras.optimizers.Adam(3e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    t0 = time.perf_counter()
    model.fit(x_train, y_train, epochs=args.epochs, batch_size=64, verbose=0)
    print(f"trained {args.epochs} epochs in {time.perf_counter() - t0:.0f} s")
    calibration = x_train[:200]

    rows = []
    float_acc = float(np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test))
    float_model = tfslim.convert(model, quantization="none")
    rows.append(("float32 (Keras / .tflite)", float_acc, float_model.size_bytes, "-"))
    plain = tfslim.convert(model, quantization="int8", calibration_data=calibration)
    rows.append(
        ("int8, tfslim.convert", accuracy(plain.flatbuffer, x_test, y_test), plain.size_bytes, "-")
    )
    plan = make_plan(model, calibration, calibration_steps=200)
    int8 = plan.quantize()
    rows.append(
        (
            "int8, ai-edge-quantizer (same calibration)",
            accuracy(int8, x_test, y_test),
            len(int8),
            "-",
        )
    )
    searches = {}
    # Chosen on the held-out validation split (what a user does), and on the test split
    # itself (the choice at its best: the figure it is judged by is the one it saw).
    for split, (xs, ys) in (("validation", (x_val, y_val)), ("test", (x_test, y_test))):
        t0 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            mixed = tfslim.convert(
                model,
                max_accuracy_drop=args.max_drop,
                validation_data=(xs, ys),
                calibration_data=calibration,
                calibration_steps=200,
            )
        searches[split] = (mixed, time.perf_counter() - t0, caught)
        rows.append(
            (
                f"accuracy-aware {args.max_drop}, chosen on {split}",
                accuracy(mixed.flatbuffer, x_test, y_test),
                mixed.size_bytes,
                ", ".join(mixed.mixed_precision["kept_layers"]) or "none",
            )
        )

    print(f"\n{args.data} test split ({len(x_test)} samples), MobileNetV2-style model")
    print(f"{'model':<44} {'accuracy':>8} {'vs float':>9} {'bytes':>8} {'vs int8':>8}  kept")
    for name, acc, size, kept in rows:
        print(
            f"{name:<44} {acc:>8.4f} {acc - float_acc:>+9.4f} {size:>8} "
            f"{size / len(int8) - 1:>+8.1%}  {kept}"
        )
    for split, (mixed, seconds, caught) in searches.items():
        info = mixed.mixed_precision
        print(
            f"\naccuracy-aware search on the {split} split ({info['samples']} samples): "
            f"{seconds:.1f} s, {info['rounds']} ranking round(s); {info['metric']} float "
            f"{info['float_accuracy']:.4f}, all-int8 {info['int8_accuracy']:.4f}, reached "
            f"{info['accuracy']:.4f}, met={info['met']}; size cost vs all-int8 "
            f"{info['size_cost']:+.1%}"
        )
        for w in caught:
            print(f"  warning: {w.message}")
        for k in info["kept"]:
            print(f"  kept {k['layer']} ({k['precision']}, ops {k['ops']}): {k['why']}")
        print("  top of the first float_alone ranking:")
        for r in info["ranking"][:4]:
            print(f"    {r['layer']:<10} sensitivity {r['sensitivity']:+.4f}")

    if args.skip_mobilenet:
        return
    mobilenet = keras.applications.MobileNetV2(input_shape=(32, 32, 3), weights=None, classes=10)
    rng = np.random.default_rng(0)
    x = rng.random((args.mobilenet_samples, 32, 32, 3), dtype=np.float32)
    # An untrained MobileNetV2 predicts one class for every input, so accuracy cannot
    # tell layers apart; the metric is the outputs' closeness to the float model's.
    y = mobilenet.predict(x, verbose=0)

    def neg_output_mse(y_true, y_pred):
        return -float(np.mean((y_true - y_pred) ** 2)) / float(np.mean(y_true**2))

    t0 = time.perf_counter()
    ranking = tfslim.sensitivity(
        mobilenet,
        (x, y),
        metric=neg_output_mse,
        samples=args.mobilenet_samples,
        calibration_steps=32,
    )
    total = time.perf_counter() - t0
    per_layer = [r["seconds"] for r in ranking if r["metric"] is not None]
    print(
        f"\nMobileNetV2 32x32x3 (untrained), sensitivity quantize_alone on "
        f"{ranking.samples} samples, metric: -MSE of the outputs vs float / their power"
    )
    print(f"{'layers':>6} {'total s':>8} {'export+calibration s':>21} {'s/layer':>8}")
    print(
        f"{len(ranking):>6} {total:>8.1f} {ranking.setup_seconds:>21.1f} {np.mean(per_layer):>8.2f}"
    )
    print("\n".join(ranking.table().splitlines()[:7]))


if __name__ == "__main__":
    main()
