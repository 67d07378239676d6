"""QAT benchmark on the digits CNN: parity, quality, and tfslim against tfmot side by side.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/qat_benchmark.py [--epochs 12 --qat-epochs 4]

The same architecture is built once in Keras 3 (tfslim.architectures.build_digits_cnn) and once in
tf_keras; both get the same data split, float epochs, QAT epochs, batch size and learning rate.
Every accuracy is measured on the held-out split; int8 numbers come from the converted
.tflite run in the LiteRT interpreter.

Training steps are then timed on the digits CNN and, with `--architectures` (default
ds_cnn,resnet8), on MLPerf Tiny classifiers built in Keras 3 and copied layer for layer,
weights included, to tf_keras (`to_tf_keras`): QAT in both frameworks and both float steps,
interleaved.
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

from tfslim._compat import is_tf_keras  # noqa: E402

# Config keys of Keras 3 layers that tf_keras layers don't take, or that don't matter here
# (the weights are copied, so initializers, regularizers and constraints are dropped).
_KERAS3_ONLY = ("dtype", "seed", "synchronized", "quantization_config", "lora_rank", "lora_alpha")
_DROPPED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")


def to_tf_keras(model):
    """The same Functional graph, layer configs and weights as Keras 3 `model`, in tf_keras.

    For the MLPerf Tiny builders (`tfslim.architectures`): every layer exists under the same
    class name in `tf_keras.layers`. Keras 3 records `training=False` on some symbolic calls
    (Dropout); that is dropped, so tf_keras applies dropout in training like Keras 3 does.
    """
    import keras
    import tf_keras

    made = {id(t): tf_keras.Input(t.shape[1:], name=t.name) for t in model.inputs}

    def mapped(value):
        return made[id(value)] if isinstance(value, keras.KerasTensor) else value

    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        config = {
            k: v
            for k, v in layer.get_config().items()
            if k not in _KERAS3_ONLY and not k.endswith(_DROPPED_SUFFIXES)
        }
        clone = getattr(tf_keras.layers, type(layer).__name__).from_config(config)
        for node in layer._inbound_nodes:
            args = keras.tree.map_structure(mapped, node.arguments.args)
            kwargs = {
                k: keras.tree.map_structure(mapped, v)
                for k, v in node.arguments.kwargs.items()
                if k != "training"
            }
            outputs = clone(*args, **kwargs)
            flat = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            for old, new in zip(node.outputs, flat, strict=True):
                made[id(old)] = new
        clone.set_weights(layer.get_weights())
    return tf_keras.Model(
        [made[id(t)] for t in model.inputs], [made[id(t)] for t in model.outputs], name=model.name
    )


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

        if is_tf_keras(model):
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


def time_steps(runs, *, rounds=7, epochs=4):
    """Milliseconds per training step of each run, interleaved.

    `runs` maps a name to `(model, fit_kwargs, steps_per_epoch)`. Each round fits every
    model for `epochs` epochs in turn, so load from other jobs on the machine hits all
    models alike. The first epoch of each fit (set-up, tracing) is not counted; the fastest
    remaining epoch divided by its steps is the round's value (on this shared 2-core machine
    whole epochs of a run are sometimes 1.5-2x slower, so the minimum is the stable figure).
    Returns ({name: [ms per step per round]}, {name: median over rounds}).
    """
    import statistics

    per_round = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (model, fit_kwargs, steps) in runs.items():
            package = "tf_keras" if is_tf_keras(model) else "keras"
            times = []
            timer = _epoch_timer(package, times)
            model.fit(epochs=epochs, verbose=0, callbacks=[timer], **fit_kwargs)
            per_round[name].append(1000 * min(times[1:]) / steps)
    return per_round, {name: statistics.median(v) for name, v in per_round.items()}


def round_ratios(per_round, a, b):
    """Per-round ratios of run `a`'s step time to run `b`'s (same round, same load)."""
    return [x / y for x, y in zip(per_round[a], per_round[b], strict=True)]


def timing_models(float_model, tk_float, *, lr, steps_per_execution, jit_compile):
    """Fresh QAT copies of both trained float models and the float models, compiled alike.

    "tfslim QAT" starts with batch-norm statistics and ranges updating (tfmot's only state);
    "tfslim QAT, BN frozen" runs the deployed folded arithmetic, the state of the later QAT
    epochs under `FreezeQuantization`. Both frameworks get the same optimizer, loss,
    `steps_per_execution` and `jit_compile`.
    """
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from tfslim.quantization import quantize_model, set_batch_norm_frozen

    frozen_bn = quantize_model(float_model)
    set_batch_norm_frozen(frozen_bn)
    models = {
        "tfslim QAT": quantize_model(float_model),
        "tfslim QAT, BN frozen": frozen_bn,
        "tfmot QAT": tfmot.quantization.keras.quantize_model(tk_float),
        "Keras 3 float": keras.models.clone_model(float_model),
        "tf_keras float": tf_keras.models.clone_model(tk_float),
    }
    for model in models.values():
        package = tf_keras if is_tf_keras(model) else keras
        model.compile(
            package.optimizers.Adam(lr),
            "sparse_categorical_crossentropy",
            steps_per_execution=steps_per_execution,
            jit_compile=jit_compile,
        )
    return models


def time_architectures(names, *, batch_size, lr, rounds, steps=40):
    """QAT and float training steps of both frameworks on MLPerf Tiny architectures.

    Each architecture is built once in Keras 3 (`tfslim.architectures`) and once in tf_keras
    by `to_tf_keras` (same graph and weights); random inputs and labels, since only step time
    is measured. Returns {architecture: (per-round ms, median ms)} as `time_steps` does.
    """
    import keras
    import tensorflow as tf

    from tfslim.architectures import MLPERF_TINY_MODELS

    results = {}
    for name in names:
        spec = MLPERF_TINY_MODELS[name]
        keras.utils.set_random_seed(0)
        model = spec.build()
        models = timing_models(
            model, to_tf_keras(model), lr=lr, steps_per_execution=1, jit_compile=False
        )
        rng = np.random.default_rng(0)
        x = rng.random((steps * batch_size, *spec.input_shape), dtype=np.float32)
        y = rng.integers(0, model.outputs[0].shape[-1], len(x))
        data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).prefetch(1)
        runs = {run: (m, dict(x=data), steps) for run, m in models.items()}
        results[name] = time_steps(runs, rounds=rounds, epochs=3)
    return results


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
    import tfslim

    preds = tfslim.predict(flatbuffer, x).argmax(1)
    return preds, tfslim.inspect(flatbuffer, micro_check=False)["fully_integer"]


def compare_accuracy(seed, data, args):
    """Float, post-training int8 and QAT int8 accuracy of both frameworks for one seed.

    The float model is trained once, in Keras 3, and copied with its weights to tf_keras
    (`to_tf_keras`), so tfslim and tfmot start QAT from the same float model: what differs
    between the rows is the quantization-aware training alone. tfslim follows its usual
    schedule (`FreezeQuantization`: batch norm frozen after the first QAT epoch, ranges for
    the last); tfmot has no such schedule. Returns {"tfslim": row, "tfmot": row, ...}.
    """
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    from tfslim.architectures.digits import build_digits_cnn
    from tfslim.quantization import FreezeQuantization, quantize_model

    x_train, y_train, x_test, y_test = data
    fit = dict(batch_size=args.batch_size, verbose=0)
    keras.utils.set_random_seed(seed)
    float_model = build_digits_cnn()
    float_model.compile(keras.optimizers.Adam(args.lr), "sparse_categorical_crossentropy")
    float_model.fit(x_train, y_train, epochs=args.epochs, **fit)
    tk_float = to_tf_keras(float_model)

    def accuracy(pred):
        return float((pred == y_test).mean())

    qat = quantize_model(float_model)
    qat.compile(keras.optimizers.Adam(args.qat_lr), "sparse_categorical_crossentropy")
    tk_qat = tfmot.quantization.keras.quantize_model(tk_float)
    tk_qat.compile(tf_keras.optimizers.Adam(args.qat_lr), "sparse_categorical_crossentropy")
    schedule = FreezeQuantization(
        freeze_batch_norm_epoch=1, freeze_ranges_epoch=max(1, args.qat_epochs - 1)
    )
    run_times = {"tfslim": [], "tfmot": []}
    result = {"models": (float_model, tk_float), "run_times": run_times}
    for name, f, q, callbacks in (
        ("tfslim", float_model, qat, [schedule]),
        ("tfmot", tk_float, tk_qat, []),
    ):
        package = "tf_keras" if is_tf_keras(q) else "keras"
        float_pred = f.predict(x_test, verbose=0).argmax(1)
        ptq, _ = to_tflite(f, calibration=x_train[:200])
        q.fit(
            x_train,
            y_train,
            epochs=args.qat_epochs,
            callbacks=[*callbacks, _epoch_timer(package, run_times[name])],
            **fit,
        )
        keras_pred = q.predict(x_test, verbose=0).argmax(1)
        flat, route = to_tflite(q)
        int8_pred, integer = run_tflite(flat, x_test)
        if name == "tfslim":
            result["route"] = route
        result[name] = {
            "float": accuracy(float_pred),
            "ptq": accuracy(run_tflite(ptq, x_test)[0]),
            "qat_keras": accuracy(keras_pred),
            "qat_int8": accuracy(int8_pred),
            "agree": float((keras_pred == int8_pred).mean()),
            "size": len(flat),
            "integer": integer,
        }
    return result


_ACCURACIES = ("float", "ptq", "qat_keras", "qat_int8", "agree")


def summarize(seed_rows):
    """Means of the accuracies over seeds; the largest file; fully integer on every seed."""
    import statistics

    row = {k: statistics.mean(r[k] for r in seed_rows) for k in _ACCURACIES}
    row["size"] = max(r["size"] for r in seed_rows)
    row["integer"] = all(r["integer"] for r in seed_rows)
    row["seeds"] = seed_rows
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs")
    parser.add_argument("--qat-epochs", type=int, default=4, help="QAT fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=2e-3, help="float learning rate")
    parser.add_argument("--qat-lr", type=float, default=5e-4, help="QAT learning rate")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--seeds", type=int, default=3, help="accuracy runs (seeds 0..N-1), reported as means"
    )
    parser.add_argument("--rounds", type=int, default=7, help="interleaved timing rounds")
    parser.add_argument(
        "--timing-repeat",
        type=int,
        default=4,
        help="timing epochs repeat the training split this many times",
    )
    parser.add_argument(
        "--steps-per-execution", type=int, default=1, help="compile setting, both frameworks"
    )
    parser.add_argument(
        "--jit-compile",
        action="store_true",
        help="XLA for both frameworks (default off: Keras 3's 'auto' is off on CPU-only hosts)",
    )
    parser.add_argument(
        "--architectures",
        default="ds_cnn,resnet8",
        help="MLPerf Tiny classifiers to time QAT steps on as well, comma-separated "
        "(ds_cnn, resnet8, mobilenet_v1); empty to skip",
    )
    parser.add_argument(
        "--architecture-rounds", type=int, default=5, help="interleaved rounds per architecture"
    )
    args = parser.parse_args()
    architectures = [a for a in args.architectures.split(",") if a]
    known = ("ds_cnn", "resnet8", "mobilenet_v1")
    unknown = [a for a in architectures if a not in known]
    if unknown:
        parser.error(f"--architectures: expected names from {known}, received {unknown}")

    import statistics

    import tensorflow as tf

    from tfslim.datasets import load_digits_data

    x_train, y_train, x_test, y_test = load_digits_data()
    data = (x_train, y_train, x_test, y_test)
    per_seed = [compare_accuracy(seed, data, args) for seed in range(args.seeds)]
    rows = {name: summarize([r[name] for r in per_seed]) for name in ("tfslim", "tfmot")}
    float_model, tk_float = per_seed[0]["models"]
    run_times = per_seed[0]["run_times"]
    route = per_seed[0]["route"]

    # Timing after evaluation: extra epochs no longer change the reported accuracies. Step
    # times use long epochs of one tf.data pipeline, so a fixed per-epoch cost of the
    # framework's `fit` loop (iterator set-up) is not counted as step time; the float models
    # also run on the plain numpy 45-step epochs that the accuracy runs use.
    models = timing_models(
        float_model,
        tk_float,
        lr=args.qat_lr,
        steps_per_execution=args.steps_per_execution,
        jit_compile=args.jit_compile,
    )
    # The same tf.data pipeline for both frameworks: the training split repeated, batched,
    # no per-batch Python work.
    long_data = (
        tf.data.Dataset.from_tensor_slices((x_train, y_train))
        .repeat(args.timing_repeat)
        .batch(args.batch_size)
        .prefetch(1)
    )
    steps_per_epoch = int(np.ceil(len(x_train) / args.batch_size))
    long_steps = int(np.ceil(len(x_train) * args.timing_repeat / args.batch_size))
    runs = {name: (model, dict(x=long_data), long_steps) for name, model in models.items()}
    for name in ("Keras 3 float", "tf_keras float"):
        short = dict(x=x_train, y=y_train, batch_size=args.batch_size)
        runs[f"{name}, numpy, short epochs"] = (models[name], short, steps_per_epoch)
    per_round, step_ms = time_steps(runs, rounds=args.rounds)
    rows["tfslim"]["step"], rows["tfmot"]["step"] = step_ms["tfslim QAT"], step_ms["tfmot QAT"]

    print(
        f"\ndigits CNN ({float_model.count_params()} params), {len(x_train)} train / "
        f"{len(x_test)} test, float {args.epochs} ep lr {args.lr} (trained in Keras 3, copied "
        f"to tf_keras), QAT {args.qat_epochs} ep lr {args.qat_lr}, batch {args.batch_size}; "
        f"accuracies are means over seeds 0-{args.seeds - 1}; QAT .tflite via {route}\n"
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
            f"{100 * r['agree']:6.2f} | {r['size']:9d} | {r['step']:7.2f} | {r['integer']}"
        )
    print("\nPer seed, accuracy % (float / PTQ int8 / QAT keras / QAT int8):")
    for seed in range(args.seeds):
        line = "; ".join(
            f"{name} "
            + " / ".join(f"{100 * rows[name]['seeds'][seed][k]:.2f}" for k in _ACCURACIES[:4])
            for name in rows
        )
        print(f"  seed {seed}: {line}")

    def paired(a, b):
        return statistics.median(round_ratios(per_round, a, b))

    def spread(a, b):
        ratios = round_ratios(per_round, a, b)
        return f"(rounds {min(ratios):.3f}-{max(ratios):.3f})"

    def paired_ms(a, b):
        return statistics.median(x - y for x, y in zip(per_round[a], per_round[b], strict=True))

    s, t = rows["tfslim"], rows["tfmot"]
    step_ratio = paired("tfslim QAT", "tfmot QAT")
    print("\nChecks (tfslim):")
    checks = [
        ("|int8 - QAT keras| <= 0.3 pt", abs(s["qat_int8"] - s["qat_keras"]) * 100 <= 0.3),
        ("int8/keras class agreement >= 99%", s["agree"] >= 0.99),
        ("QAT int8 >= PTQ int8", s["qat_int8"] >= s["ptq"]),
        ("QAT int8 within 0.5 pt of float", (s["float"] - s["qat_int8"]) * 100 <= 0.5),
        ("int8 accuracy >= tfmot", s["qat_int8"] >= t["qat_int8"]),
        ("size ratio tfslim/tfmot <= 1", s["size"] <= t["size"]),
        (
            "QAT step tfslim/tfmot <= 1 (BN and ranges updating; median of per-round ratios)",
            step_ratio <= 1,
        ),
        ("fully integer", s["integer"]),
    ]
    for label, ok in checks:
        print(f"  [{'x' if ok else ' '}] {label}")
    print(
        f"\nTraining step, ms (median of {args.rounds} interleaved rounds; fit, batch "
        f"{args.batch_size}, {long_steps}-step tf.data epochs unless noted, "
        f"steps_per_execution={args.steps_per_execution}, jit_compile={args.jit_compile}, "
        "both frameworks):"
    )
    for name, values in per_round.items():
        print(f"  {name:35} {step_ms[name]:6.2f}   rounds: {' '.join(f'{v:.2f}' for v in values)}")
    print("  Ratios and differences (medians of per-round ratios and differences):")
    print(
        f"    tfslim/tfmot QAT step, BN and ranges updating: {step_ratio:.3f} "
        f"{spread('tfslim QAT', 'tfmot QAT')}"
    )
    print(
        f"    tfslim/tfmot QAT step, tfslim BN frozen:       "
        f"{paired('tfslim QAT, BN frozen', 'tfmot QAT'):.3f} "
        f"{spread('tfslim QAT, BN frozen', 'tfmot QAT')}"
    )
    print(
        f"    Keras 3/tf_keras float step:                   "
        f"{paired('Keras 3 float', 'tf_keras float'):.3f} "
        f"{spread('Keras 3 float', 'tf_keras float')}"
    )
    print(
        f"    QAT over own float step: tfslim x{paired('tfslim QAT', 'Keras 3 float'):.3f} "
        f"({paired_ms('tfslim QAT', 'Keras 3 float'):+.2f} ms), BN frozen "
        f"x{paired('tfslim QAT, BN frozen', 'Keras 3 float'):.3f} "
        f"({paired_ms('tfslim QAT, BN frozen', 'Keras 3 float'):+.2f} ms); tfmot "
        f"x{paired('tfmot QAT', 'tf_keras float'):.3f} "
        f"({paired_ms('tfmot QAT', 'tf_keras float'):+.2f} ms)"
    )
    if args.qat_epochs > 1:  # The first epoch traces; the others are steps.
        per_epoch = {
            k: " ".join(f"{1000 * t / steps_per_epoch:.2f}" for t in v[1:])
            for k, v in run_times.items()
        }
        print(
            f"  The QAT runs above, ms/step of epochs 2-{args.qat_epochs} ({steps_per_epoch} "
            f"steps each): tfslim {per_epoch['tfslim']}; tfmot {per_epoch['tfmot']}. tfslim "
            "runs its FreezeQuantization schedule: freezing batch norm at epoch 2 retraces the "
            "step once, which that epoch pays."
        )
    print(
        f"ratios tfslim/tfmot: int8 accuracy {s['qat_int8'] / t['qat_int8']:.4f}, "
        f"size {s['size'] / t['size']:.4f}"
    )
    if not architectures:
        return
    timed = time_architectures(
        architectures, batch_size=args.batch_size, lr=args.qat_lr, rounds=args.architecture_rounds
    )
    print(
        f"\nQAT training step on MLPerf Tiny architectures, ms (same graph and weights in both "
        f"frameworks, random data; fit, batch {args.batch_size}, 40-step tf.data epochs, "
        f"median of {args.architecture_rounds} interleaved rounds; ratios are medians of "
        "per-round ratios):"
    )
    header = (
        f"  {'':13}| {'tfslim':>7} | {'BN frozen':>9} | {'tfmot':>7} | {'tfslim/tfmot':>12} | "
        f"{'frozen/tfmot':>12} | {'K3 float':>8} | {'tk float':>8} | {'K3/tk float':>11}"
    )
    print(header)
    print("  " + "-" * (len(header) - 2))
    for name, (rounds, medians) in timed.items():

        def ratio(a, b, rounds=rounds):
            return statistics.median(round_ratios(rounds, a, b))

        print(
            f"  {name:13}| {medians['tfslim QAT']:7.2f} | {medians['tfslim QAT, BN frozen']:9.2f}"
            f" | {medians['tfmot QAT']:7.2f} | {ratio('tfslim QAT', 'tfmot QAT'):12.3f} | "
            f"{ratio('tfslim QAT, BN frozen', 'tfmot QAT'):12.3f} | "
            f"{medians['Keras 3 float']:8.2f} | {medians['tf_keras float']:8.2f} | "
            f"{ratio('Keras 3 float', 'tf_keras float'):11.3f}"
        )


if __name__ == "__main__":
    main()
