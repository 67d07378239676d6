"""QAT benchmark on the digits CNN: parity, quality, and tfslim against tfmot side by side.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/qat_benchmark.py [--epochs 12 --qat-epochs 4]

The same architecture is built once in Keras 3 (tfslim.demo.build_digits_cnn) and once in
tf_keras; both get the same data split, float epochs, QAT epochs, batch size and learning rate.
Every accuracy is measured on the held-out split; int8 numbers come from the converted
.tflite run in the LiteRT interpreter.
"""

import argparse
import contextlib
import io
import os
import pathlib
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))


def load_data():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = (data.images / 16.0).astype("float32")[..., None]
    y = data.target.astype("int64")
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.2, random_state=0, stratify=y
    )
    return x_train, y_train, x_test, y_test


def build_tf_keras_cnn(width=32, dense_units=96, dropout=0.25):
    """tfslim.demo.build_digits_cnn, layer for layer, in tf_keras."""
    import tf_keras

    layers = tf_keras.layers
    inputs = tf_keras.Input((8, 8, 1), name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.ReLU()(x)
    x = layers.Conv2D(2 * width, 3, padding="valid", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dropout(dropout)(x)
    x = layers.Dense(dense_units, activation="relu")(x)
    outputs = layers.Dense(10, activation="softmax")(x)
    return tf_keras.Model(inputs, outputs, name="digits_cnn")


def to_tflite(model, calibration=None):
    """Converts like `tfslim.convert(model, target="mcu")`: batch of one, int8 I/O.

    Returns (flatbuffer, route). The QAT models go through `tfslim.convert` when it accepts
    them; otherwise through the same settings minus `supported_ops=[TFLITE_BUILTINS_INT8]`,
    which TF 2.21 rejects for QAT models before converting ("a representative_dataset must be
    specified").
    """
    import tensorflow as tf

    import tfslim

    if calibration is not None:
        return tfslim.convert(model, target="mcu", calibration_data=calibration).flatbuffer, ""
    try:
        return tfslim.convert(model, target="mcu").flatbuffer, "tfslim.convert"
    except ValueError as e:
        if "representative_dataset" not in str(e):
            raise
    with tempfile.TemporaryDirectory() as export_dir:
        spec = tf.TensorSpec((1, *model.inputs[0].shape[1:]), tf.float32)

        def serve(x):
            return model(x, training=False)

        if type(model).__module__.startswith("tf_keras"):
            module = tf.Module()
            module.model = model
            module.serve = tf.function(serve, input_signature=[spec])
            tf.saved_model.save(module, export_dir, signatures={"serving_default": module.serve})
        else:
            import keras

            archive = keras.export.ExportArchive()
            archive.track(model)
            archive.add_endpoint("serve", serve, input_signature=[spec])
            with contextlib.redirect_stdout(io.StringIO()):
                archive.write_out(export_dir, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(export_dir)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        with contextlib.redirect_stdout(io.StringIO()):
            flatbuffer = converter.convert()
    return flatbuffer, "converter settings minus supported_ops=INT8 (batch 1)"


def time_steps(models, x, y, batch_size, rounds=3, epochs=4):
    """Seconds per training step of each model.

    Each round fits every model for `epochs` epochs in turn (sharing the machine's load
    fairly); an epoch timer skips each fit's first epoch, so `fit` set-up and tracing are
    not counted. Returns the fastest epoch per step of each model.
    """
    best = {name: float("inf") for name in models}
    steps = int(np.ceil(len(x) / batch_size))
    for _ in range(rounds):
        for name, model in models.items():
            base = model.__class__.__mro__
            callback_base = next(c.__module__.split(".")[0] for c in base if c.__name__ == "Model")
            times = []
            timer = _epoch_timer(callback_base, times)
            model.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[timer])
            best[name] = min(best[name], min(times[1:]) / steps)
    return best


def _epoch_timer(package, times):
    """An epoch-timing callback for `package` ("keras" or "tf_keras")."""
    import importlib

    base = importlib.import_module(package).callbacks.Callback

    class EpochTimer(base):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    return EpochTimer()


def run_tflite(flatbuffer, x):
    """Returns (predicted classes, fully_integer flag) for the int8 model on `x`."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    q = np.clip(np.round(x / scale + zero), -128, 127).astype("int8")
    preds = []
    for sample in q:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        preds.append(int(interpreter.get_tensor(out["index"]).argmax()))
    tensors = interpreter.get_tensor_details()
    integer = True
    for op in interpreter._get_ops_details():
        ids = [i for i in [*op["inputs"], *op["outputs"]] if i >= 0]
        if op["op_name"] == "DEQUANTIZE" or any(
            tensors[i]["dtype"].__name__ not in ("int8", "int32") for i in ids
        ):
            integer = False
    return np.array(preds), integer


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs")
    parser.add_argument("--qat-epochs", type=int, default=4, help="QAT fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=2e-3, help="float learning rate")
    parser.add_argument("--qat-lr", type=float, default=5e-4, help="QAT learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from tfslim.demo import build_digits_cnn
    from tfslim.quantization import FreezeQuantization, quantize_model

    x_train, y_train, x_test, y_test = load_data()
    fit = dict(batch_size=args.batch_size, verbose=0)
    rows = {}

    # Keras 3 + tfslim.
    keras.utils.set_random_seed(0)
    float_model = build_digits_cnn()
    float_model.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy")
    float_model.fit(x_train, y_train, epochs=args.epochs, **fit)
    float_acc = float((float_model.predict(x_test, verbose=0).argmax(1) == y_test).mean())
    ptq, _ = to_tflite(float_model, calibration=x_train[:200])
    ptq_acc = float((run_tflite(ptq, x_test)[0] == y_test).mean())

    qat = quantize_model(float_model)
    qat.compile(keras.optimizers.Adam(args.qat_lr), "sparse_categorical_crossentropy")
    schedule = FreezeQuantization(
        freeze_batch_norm_epoch=1, freeze_ranges_epoch=max(1, args.qat_epochs - 1)
    )
    qat.fit(x_train, y_train, epochs=args.qat_epochs, callbacks=[schedule], **fit)
    qat_keras_pred = qat.predict(x_test, verbose=0).argmax(1)
    qat_flat, route = to_tflite(qat)
    qat_int8_pred, qat_integer = run_tflite(qat_flat, x_test)
    rows["tfslim"] = {
        "float": float_acc,
        "ptq": ptq_acc,
        "qat_keras": float((qat_keras_pred == y_test).mean()),
        "qat_int8": float((qat_int8_pred == y_test).mean()),
        "agree": float((qat_keras_pred == qat_int8_pred).mean()),
        "size": len(qat_flat),
        "integer": qat_integer,
    }

    # tf_keras + tfmot, same architecture, data, epochs and learning rates.
    tf.keras.utils.set_random_seed(0)
    tk_float = build_tf_keras_cnn()
    tk_float.compile(tf_keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy")
    tk_float.fit(x_train, y_train, epochs=args.epochs, **fit)
    tk_float_acc = float((tk_float.predict(x_test, verbose=0).argmax(1) == y_test).mean())
    tk_ptq, _ = to_tflite(tk_float, calibration=x_train[:200])
    tk_ptq_acc = float((run_tflite(tk_ptq, x_test)[0] == y_test).mean())
    tk_qat = tfmot.quantization.keras.quantize_model(tk_float)
    tk_qat.compile(tf_keras.optimizers.Adam(args.qat_lr), "sparse_categorical_crossentropy")
    tk_qat.fit(x_train, y_train, epochs=args.qat_epochs, **fit)
    tk_keras_pred = tk_qat.predict(x_test, verbose=0).argmax(1)
    tk_flat, _ = to_tflite(tk_qat)
    tk_int8_pred, tk_integer = run_tflite(tk_flat, x_test)
    rows["tfmot"] = {
        "float": tk_float_acc,
        "ptq": tk_ptq_acc,
        "qat_keras": float((tk_keras_pred == y_test).mean()),
        "qat_int8": float((tk_int8_pred == y_test).mean()),
        "agree": float((tk_keras_pred == tk_int8_pred).mean()),
        "size": len(tk_flat),
        "integer": tk_integer,
    }

    # Timing after evaluation: extra epochs no longer change the reported accuracies.
    step_times = time_steps(
        {"tfslim": qat, "tfmot": tk_qat, "keras3 float": float_model, "tf_keras float": tk_float},
        x_train,
        y_train,
        args.batch_size,
    )
    rows["tfslim"]["step"], rows["tfmot"]["step"] = step_times["tfslim"], step_times["tfmot"]
    rows["tfslim"]["float_step"] = step_times["keras3 float"]
    rows["tfmot"]["float_step"] = step_times["tf_keras float"]

    print(
        f"\ndigits CNN ({float_model.count_params()} params), {len(x_train)} train / "
        f"{len(x_test)} test, float {args.epochs} ep lr {args.lr}, QAT {args.qat_epochs} ep "
        f"lr {args.qat_lr}, batch {args.batch_size}; QAT .tflite via {route}\n"
    )
    header = (
        f"{'':8}| {'float':>6} | {'PTQ int8':>8} | {'QAT keras':>9} | {'QAT int8':>8} | "
        f"{'agree':>6} | {'.tflite B':>9} | {'ms/step':>7} | fully int8"
    )
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(
            f"{name:8}| {100 * r['float']:6.2f} | {100 * r['ptq']:8.2f} | "
            f"{100 * r['qat_keras']:9.2f} | {100 * r['qat_int8']:8.2f} | "
            f"{100 * r['agree']:6.2f} | {r['size']:9d} | {1000 * r['step']:7.2f} | {r['integer']}"
        )
    s, t = rows["tfslim"], rows["tfmot"]
    print("\nChecks (tfslim):")
    checks = [
        ("|int8 - QAT keras| <= 0.3 pt", abs(s["qat_int8"] - s["qat_keras"]) * 100 <= 0.3),
        ("int8/keras class agreement >= 99%", s["agree"] >= 0.99),
        ("QAT int8 >= PTQ int8", s["qat_int8"] >= s["ptq"]),
        ("QAT int8 within 0.5 pt of float", (s["float"] - s["qat_int8"]) * 100 <= 0.5),
        ("int8 accuracy >= tfmot", s["qat_int8"] >= t["qat_int8"]),
        ("size ratio tfslim/tfmot <= 1", s["size"] <= t["size"]),
        ("step-time ratio tfslim/tfmot <= 1", s["step"] <= t["step"]),
        ("fully integer", s["integer"]),
    ]
    for label, ok in checks:
        print(f"  [{'x' if ok else ' '}] {label}")
    s_over, t_over = s["step"] - s["float_step"], t["step"] - t["float_step"]
    print(
        f"\nfloat training step (same fit loop, no QAT): Keras 3 {1000 * s['float_step']:.2f} ms, "
        f"tf_keras {1000 * t['float_step']:.2f} ms (framework ratio "
        f"{s['float_step'] / t['float_step']:.3f}); QAT overhead over float: tfslim "
        f"{1000 * s_over:.2f} ms, tfmot {1000 * t_over:.2f} ms"
    )
    print(
        f"ratios tfslim/tfmot: int8 accuracy {s['qat_int8'] / t['qat_int8']:.4f}, "
        f"size {s['size'] / t['size']:.4f}, QAT step time {s['step'] / t['step']:.3f}"
    )


if __name__ == "__main__":
    main()
