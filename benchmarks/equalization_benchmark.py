"""Post-training int8 with batch-norm folding, cross-layer equalization and bias correction.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/equalization_benchmark.py [--seeds 0 1 2]

Part 1, MNIST-1D (`tfslim.datasets.load_mnist1d`): a depthwise-separable stack (Conv1D, then
blocks of DepthwiseConv1D -> BN -> ReLU -> Conv1D 1x1 -> BN -> ReLU, no ReLU6), trained
briefly per seed. Each model is measured twice:

- "as trained": the model itself.
- "wide ranges": the same function with each depthwise channel's scale spread log-uniformly
  over [1/S, S] (BN gamma and beta of output channel i times a_i, the next 1x1 convolution's
  input channel i divided by a_i; exact for ReLU). Float accuracy is identical; this is the
  per-channel range spread of trained MobileNets (Nagel et al. 2019, fig. 2) that TFLite's
  per-tensor activation grid after a depthwise layer cannot represent.

For each, the int8 test accuracy (LiteRT, int8 kernels, float I/O) of `tfslim.convert` with
plain calibration, `equalize=True`, `bias_correction=True` and both, all from the same float
model and the same 200 calibration samples, side by side.

Part 2: `keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), classes=10)`
trained briefly on a learnable synthetic task (10 smooth random templates plus noise): int8 vs
float class agreement and relative output error before and after (ReLU6 kept, so equalization
skips the pairs around it; and with ReLU6 replaced by ReLU via `equalize_model(...,
relu6_to_relu=True)`, against that float model).
"""

import argparse
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

_VARIANTS = (
    ("plain", {}),
    ("cle", {"equalize": True}),
    ("bias corr.", {"bias_correction": True}),
    ("cle + bias corr.", {"equalize": True, "bias_correction": True}),
)


def build_separable(channels: int = 32, blocks: int = 4, kernel: int = 5):
    import keras

    layers = keras.layers
    inputs = keras.Input((40, 1))
    x = layers.Conv1D(channels, kernel, padding="same", use_bias=False)(inputs)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    for block in range(blocks):
        x = layers.DepthwiseConv1D(
            kernel, padding="same", use_bias=False, strides=2 if block % 2 else 1
        )(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        x = layers.Conv1D(channels, 1, use_bias=False)(x)
        x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(10)(x), name="separable_mnist1d")


def widen(model, spread: float, seed: int) -> None:
    """Spreads each depthwise channel's scale over [1/spread, spread], keeping the function."""
    rng = np.random.default_rng(seed)
    layers = model.layers
    for i, layer in enumerate(layers):
        if type(layer).__name__ != "DepthwiseConv1D":
            continue
        bn, relu, pointwise = layers[i + 1 : i + 4]
        assert type(relu).__name__ == "ReLU" and type(pointwise).__name__ == "Conv1D"
        a = np.exp(rng.uniform(-np.log(spread), np.log(spread), bn.gamma.shape[0]))
        bn.gamma.assign(bn.gamma.numpy() * a)
        bn.beta.assign(bn.beta.numpy() * a)
        pointwise.kernel.assign(pointwise.kernel.numpy() / a[:, None])


def tflite_outputs(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    from tfslim.litert.interpreter import make_interpreter, run_batches

    interp, _ = make_interpreter(model_content=flatbuffer)
    return run_batches(interp, x.astype(np.float32))[0]


def int8_variants(model, calibration, x_test):
    """{variant: int8 outputs on x_test} for each convert option set."""
    import tfslim

    outputs = {}
    for name, options in _VARIANTS:
        result = tfslim.convert(
            model,
            quantization="int8",
            calibration_data=calibration,
            io_dtype="float32",
            verify=False,
            **options,
        )
        outputs[name] = tflite_outputs(result.flatbuffer, x_test)
    return outputs


def mnist1d_part(seeds, epochs, spread):
    import keras

    from tfslim.datasets import load_mnist1d

    x_train, y_train, x_test, y_test = load_mnist1d()
    rows = []
    for seed in seeds:
        keras.utils.set_random_seed(seed)
        model = build_separable()
        model.compile(
            keras.optimizers.Adam(3e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x_train, y_train, epochs=epochs, batch_size=64, verbose=0)
        calibration = x_train[:200]
        for case in ("as trained", "wide ranges"):
            if case == "wide ranges":
                widen(model, spread, seed)
            accuracy = {"float": np.mean(model.predict(x_test, verbose=0).argmax(1) == y_test)}
            for name, out in int8_variants(model, calibration, x_test).items():
                accuracy[name] = np.mean(out.argmax(1) == y_test)
            rows.append((seed, case, accuracy))
            print(
                f"  seed {seed} {case}: " + ", ".join(f"{k} {v:.3f}" for k, v in accuracy.items()),
                flush=True,
            )
    return rows


def print_mnist1d(rows, spread):
    columns = ["float"] + [name for name, _ in _VARIANTS]
    print(f"\nMNIST-1D depthwise-separable model, int8 test accuracy (%), spread S={spread:g}")
    print(f"{'seed':>5} {'model':<12}" + "".join(f"{c:>18}" for c in columns))
    for seed, case, accuracy in rows:
        print(f"{seed:>5} {case:<12}" + "".join(f"{100 * accuracy[c]:>18.1f}" for c in columns))
    for case in ("as trained", "wide ranges"):
        chosen = [a for _, c, a in rows if c == case]
        mean = {c: 100 * np.mean([a[c] for a in chosen]) for c in columns}
        print(f"{'mean':>5} {case:<12}" + "".join(f"{mean[c]:>18.1f}" for c in columns))
        drop = {c: mean["float"] - mean[c] for c in columns[1:]}
        print(f"{'drop':>5} {case:<12}{'':>18}" + "".join(f"{drop[c]:>18.1f}" for c in columns[1:]))


def synthetic_images(n: int, seed: int):
    """10 classes: smooth random 32x32x3 templates, randomly scaled, plus noise."""
    rng = np.random.default_rng(seed)
    templates = np.random.default_rng(1234).normal(size=(10, 8, 8, 3))
    templates = templates.repeat(4, axis=1).repeat(4, axis=2)
    y = rng.integers(0, 10, n)
    scale = rng.uniform(0.5, 1.5, (n, 1, 1, 1))
    x = templates[y] * scale + rng.normal(scale=1.0, size=(n, 32, 32, 3))
    return x.astype(np.float32), y


def mobilenet_part(epochs):
    import keras

    import tfslim

    keras.utils.set_random_seed(0)
    x_train, y_train = synthetic_images(2000, 0)
    x_test, y_test = synthetic_images(500, 1)
    model = keras.applications.MobileNetV2(
        weights=None, input_shape=(32, 32, 3), classes=10, classifier_activation=None
    )
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            # Keras's 0.999 leaves the moving statistics at their initial values after a few
            # hundred steps, and the inference-mode model then predicts one class.
            layer.momentum = 0.9
    model.compile(
        keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
    train_s = time.perf_counter() - start
    calibration = x_train[:200]
    rows = []

    def row(label, reference, out, seconds):
        error = np.linalg.norm(out - reference) / np.linalg.norm(reference)
        agreement = np.mean(out.argmax(1) == reference.argmax(1))
        accuracy = np.mean(out.argmax(1) == y_test)
        rows.append((label, accuracy, agreement, error, seconds))
        print(f"  {label}: accuracy {accuracy:.3f}, agreement {agreement:.3f}", flush=True)

    reference = model.predict(x_test, verbose=0)
    rows.append(("float (ReLU6)", np.mean(reference.argmax(1) == y_test), 1.0, 0.0, 0.0))
    for name, options in _VARIANTS:
        start = time.perf_counter()
        result = tfslim.convert(
            model,
            quantization="int8",
            calibration_data=calibration,
            io_dtype="float32",
            verify=False,
            **options,
        )
        row(
            f"int8 {name}",
            reference,
            tflite_outputs(result.flatbuffer, x_test),
            time.perf_counter() - start,
        )
    relu = tfslim.equalize_model(model, cross_layer=False, relu6_to_relu=True)
    relu_reference = relu.predict(x_test, verbose=0)
    rows.append(("float (ReLU)", np.mean(relu_reference.argmax(1) == y_test), 1.0, 0.0, 0.0))
    for name, options in _VARIANTS[3:]:
        start = time.perf_counter()
        prepared = tfslim.equalize_model(
            model,
            calibration,
            bias_correction=options.get("bias_correction", False),
            cross_layer=options.get("equalize", False),
            relu6_to_relu=True,
        )
        result = tfslim.convert(
            prepared,
            quantization="int8",
            calibration_data=calibration,
            io_dtype="float32",
            verify=False,
        )
        row(
            f"int8 ReLU {name}",
            relu_reference,
            tflite_outputs(result.flatbuffer, x_test),
            time.perf_counter() - start,
        )
    print(
        f"\nMobileNetV2 32x32, synthetic 10 classes, {epochs} epoch(s) ({train_s:.0f} s): "
        "int8 vs its float model, 500 test images"
    )
    print(f"{'model':<28}{'accuracy %':>12}{'agreement %':>13}{'rel. error':>12}{'convert s':>11}")
    for label, accuracy, agreement, error, seconds in rows:
        print(
            f"{label:<28}{100 * accuracy:>12.1f}{100 * agreement:>13.1f}{error:>12.4f}"
            f"{seconds:>11.1f}"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8, help="MNIST-1D training epochs")
    parser.add_argument("--spread", type=float, default=8.0, help="channel scale spread S")
    parser.add_argument("--mobilenet-epochs", type=int, default=3)
    parser.add_argument("--skip-mobilenet", action="store_true")
    parser.add_argument("--skip-mnist1d", action="store_true")
    args = parser.parse_args()
    start = time.perf_counter()
    if not args.skip_mnist1d:
        rows = mnist1d_part(args.seeds, args.epochs, args.spread)
        print_mnist1d(rows, args.spread)
    if not args.skip_mobilenet:
        mobilenet_part(args.mobilenet_epochs)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
