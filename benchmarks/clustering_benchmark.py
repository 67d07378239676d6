"""Clustering benchmark: tfslim (Keras 3) against tfmot (tf_keras) on digits, side by side.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/clustering_benchmark.py [--seeds 3] [--timing]
[--rounds 0] [--tfmot-wrap layers] [--gzip-breakdown]

The digits CNN (`tfslim.architectures.build_digits_cnn`, 75k parameters) is trained once in
Keras 3 and copied layer for layer, with its weights, to tf_keras, so both frameworks cluster
the same float model. For 16 and 32 clusters (per tensor, k-means++ init), each framework

- clusters the model and fine-tunes it (`--cluster-epochs`, same Adam learning rate, batch
  size and data): tfslim with `tfslim.cluster_weights`, tfmot with
  `tfmot.clustering.keras.cluster_weights` on the whole model, as tfmot's clustering example
  does (its wrapper calls every wrapped layer without `training`, so in that fit Dropout is
  off and BatchNormalization normalizes with its frozen moving statistics; `--tfmot-wrap
  layers` wraps only the layers with kernels, so both train Dropout and batch norm alike);
- strips it and runs clustering-preserving QAT (`--qat-epochs`): tfslim's
  `quantize_model(preserve="clusters")`, tfmot's `Default8BitClusterPreserveQuantizeScheme`;
- converts with `tfslim.convert(target="mcu")` (full int8, int8 I/O) and measures the int8
  accuracy in LiteRT, the file size, its gzip size (the phone download) and, compressed with
  TFLite Micro's LUT compression (`convert(..., compress=True)`), the flash size and the
  tensor arena TFLite Micro records (dense and compressed).

The reference is the unclustered model: float, and post-training int8 (calibrated on 200
training images). Step times: a whole 8-epoch `fit` after a warm-up `fit`, plain and
clustered, divided by its steps; one framework per process, the ratio to plain `fit` taken in
the same process, median over interleaved rounds (`--rounds`; 0 skips them). Last, MLPerf Tiny
ds_cnn and resnet8 (untrained weights: sizes and RAM do not depend on training) at 16
clusters: flash and arena dense and compressed, and whether each fits each board.

`--gzip-breakdown` shows where the gzip bytes of each int8 file go: for every int8 kernel of
at least 1 kB, its distinct values (per tensor and per output channel), its zeroth-order
entropy, and what gzip -9 and deflate's Huffman stage alone (no LZ77 matches) spend on it;
the rest of the file gzipped alone; and the file's ratio to the unclustered one if the
kernels were coded at their entropy. For tfslim's files it also measures the file with each
per-channel clustered kernel rewritten onto one int8 grid for the whole tensor (per-channel
scales proportional to one step, so the tensor keeps the kernel's N values). Last, it gzips
every model's float32 file (no quantization): tfmot's published clustering sizes compare those.
"""

import argparse
import contextlib
import gzip
import io
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

BATCH = 32
LR = 1e-3
BOARDS = ("nano33ble", "stm32f746", "nucleo-l4r5zi", "esp32s3", "rp2040")


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stdout(io.StringIO()):
        yield


def compiled(model, lr, optimizers):
    model.compile(optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def int8_accuracy(flatbuffer, x, y):
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=bytes(flatbuffer))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    hits = 0
    for sample, label in zip(x, y, strict=True):
        interpreter.set_tensor(inp["index"], np.round(sample[None] / scale + zero).astype(np.int8))
        interpreter.invoke()
        hits += int(interpreter.get_tensor(out["index"]).argmax() == label)
    return hits / len(y)


def files(model, data, *, calibration=None):
    """int8 file, gzip, compressed flash and arenas of `model` for a microcontroller."""
    import tfslim
    from tfslim.litert import compression

    with quiet():
        dense = tfslim.convert(model, target="mcu", calibration_data=calibration)
    flatbuffer = bytes(dense.flatbuffer)
    compressed, report = compression.compress_micro(flatbuffer)
    return {
        "flatbuffer": flatbuffer,
        "int8_acc": int8_accuracy(flatbuffer, data[2], data[3]),
        "file": len(flatbuffer),
        "gzip": len(gzip.compress(flatbuffer, compresslevel=9, mtime=0)),
        "flash": len(compressed),
        "flash_gzip": len(gzip.compress(compressed, compresslevel=9, mtime=0)),
        "arena": compression.measure_arena(flatbuffer),
        "arena_c": compression.measure_arena(compressed) if report["compressed"] else None,
    }


def float32_gzip(model) -> int:
    """gzip -9 bytes of `model` converted without quantization (float32 weights)."""
    import tfslim

    with quiet():
        flatbuffer = bytes(tfslim.convert(model, quantization="none").flatbuffer)
    return len(gzip.compress(flatbuffer, compresslevel=9, mtime=0))


def run_tfslim(float_model, k, data, args):
    import keras

    import tfslim

    x, y, xt, yt = data
    clustered = compiled(tfslim.cluster_weights(float_model, k), LR, keras.optimizers)
    clustered.fit(x, y, epochs=args.cluster_epochs, batch_size=BATCH, verbose=0)
    acc = clustered.evaluate(xt, yt, verbose=0)[1]
    float32 = float32_gzip(tfslim.strip_clustering(clustered)) if args.gzip_breakdown else None
    cqat = compiled(
        tfslim.quantize_model(clustered, preserve="clusters"), LR / 10, keras.optimizers
    )
    cqat.fit(x, y, epochs=args.qat_epochs, batch_size=BATCH, verbose=0)
    row = {
        "cluster_acc": acc,
        "cqat_acc": cqat.evaluate(xt, yt, verbose=0)[1],
        **files(cqat, data),
    }
    if args.gzip_breakdown:
        row["shared_grid"] = shared_grid_file(row["flatbuffer"], cqat)
        row["float32_gzip"] = float32
    return row


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def shared_grid_file(flatbuffer: bytes, cqat):
    """`flatbuffer` with each clustered Conv2D kernel of `cqat` on one int8 grid per tensor.

    A per-tensor clustered kernel `k` (N values) whose channel c is scaled by `s_c` (a
    folded batch norm, or 1) is stored per channel as round(k * s_c / step_c), step_c =
    max|k * s_c| / 127: up to N values per channel, many more per tensor. With step_c =
    |s_c| * max|k| / 127 instead, every channel stores round(127 * k / max|k|): the tensor's
    N values. Only the stored int8 values are rewritten (the scales are left, so the file
    measures gzip, not accuracy), and only where that grid keeps every centroid distinct (a
    kernel clustered per channel has too many). Returns None when no kernel was rewritten.
    """
    import numpy as np
    from gzip_breakdown import int8_kernels

    from tfslim.clustering.cluster_preserve import ClusterPreservingQuantizeWrapper

    kernels = [k for k in int8_kernels(flatbuffer) if k["axis"] == 0]
    out, changed = bytearray(flatbuffer), False
    for layer in _all_layers(cqat):
        if not isinstance(layer, ClusterPreservingQuantizeWrapper) or layer.kind != "Conv2D":
            continue
        for _, centroids, assignments in layer._clusters:
            table = centroids.numpy()
            grid = np.round(127 * table / max(np.abs(table).max(), 1e-12)).astype(np.int8)
            if np.unique(grid).size < np.unique(table).size:
                continue
            index = assignments.numpy().transpose(3, 0, 1, 2)  # TFLite's (out, kh, kw, in).
            matches = [
                k
                for k in kernels
                if k["values"].shape == index.shape
                # Each channel maps a centroid to one stored value: this tensor is the kernel.
                and all(
                    np.unique(np.stack([i.ravel(), v.ravel()]), axis=1).shape[1]
                    == np.unique(i).size
                    for i, v in zip(index, k["values"], strict=True)
                )
            ]
            if len(matches) != 1:
                continue
            start = matches[0]["offset"]
            out[start : start + index.size] = grid[index].tobytes()
            changed = True
    return bytes(out) if changed else None


def run_tfmot(tk_float, k, data, args):
    import tf_keras

    import tfslim
    from tfslim._compat import import_tfmot

    x, y, xt, yt = data
    clustering = import_tfmot().clustering.keras
    options = dict(
        number_of_clusters=k,
        cluster_centroids_init=clustering.CentroidInitialization.KMEANS_PLUS_PLUS,
    )
    if args.tfmot_wrap == "model":
        clustered = clustering.cluster_weights(tk_float, **options)
    else:

        def clone(layer):
            kernels = ("kernel", "depthwise_kernel")
            if any(getattr(layer, name, None) is not None for name in kernels):
                return clustering.cluster_weights(layer, **options)
            return layer  # `tk_float` is a fresh copy: its layers can be reused.

        clustered = tf_keras.models.clone_model(tk_float, clone_function=clone)
    clustered = compiled(clustered, LR, tf_keras.optimizers)
    clustered.fit(x, y, epochs=args.cluster_epochs, batch_size=BATCH, verbose=0)
    acc = clustered.evaluate(xt, yt, verbose=0)[1]
    stripped = clustering.strip_clustering(clustered)
    float32 = float32_gzip(stripped) if args.gzip_breakdown else None
    cqat = tfslim.quantize_model(stripped, preserve="clusters")
    cqat = compiled(cqat, LR / 10, tf_keras.optimizers)
    cqat.fit(x, y, epochs=args.qat_epochs, batch_size=BATCH, verbose=0)
    return {
        "cluster_acc": acc,
        "cqat_acc": cqat.evaluate(xt, yt, verbose=0)[1],
        "float32_gzip": float32,
        **files(cqat, data),
    }


def _fit_times(framework, path, epochs, repeats=5):
    """Seconds of one `fit` of `epochs` epochs: plain and clustered (16), one framework.

    Each model is fitted once (1 epoch) to warm up; then each `fit` is timed `repeats` times,
    the models alternating, and the median kept (one fit lasts about a second). Runs in a
    child process of `step_ratios`, on the float model saved at `path`.
    """
    import statistics

    import keras

    from tfslim.datasets import load_digits_data

    x, y = load_digits_data()[:2]
    float_model = keras.saving.load_model(path)
    if framework == "keras3":
        import tfslim

        models = {
            "keras3": keras.models.clone_model(float_model),
            "tfslim": tfslim.cluster_weights(float_model, 16),
        }
        optimizers = keras.optimizers
    else:
        import tf_keras
        from qat_benchmark import to_tf_keras

        from tfslim._compat import import_tfmot

        clustering = import_tfmot().clustering.keras
        models = {
            "tf_keras": to_tf_keras(float_model),
            "tfmot": clustering.cluster_weights(to_tf_keras(float_model), number_of_clusters=16),
        }
        optimizers = tf_keras.optimizers
    for model in models.values():
        compiled(model, LR, optimizers).fit(x, y, epochs=1, batch_size=BATCH, verbose=0)
    times = {name: [] for name in models}
    for _ in range(repeats):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(x, y, epochs=epochs, batch_size=BATCH, verbose=0)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(measured) for name, measured in times.items()}


def step_ratios(float_model, data, rounds, epochs=8):
    """Whole-`fit` time per step and its ratio to plain `fit`: medians over `rounds`.

    One framework per process (Keras 3 and tf_keras in one process slow each other): each
    round runs a Keras 3 child (plain, tfslim) and then a tf_keras child (plain, tfmot); each
    times a warmed-up `fit` of `epochs` epochs per model (`_fit_times`). Ratios are taken
    within a child, so load from other processes hits both sides of a ratio alike.

    Returns:
        {name: (seconds per step, ratio to the same framework's plain fit)}.
    """
    import json
    import statistics
    import subprocess
    import tempfile

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here]))
    steps = epochs * -(-len(data[0]) // BATCH)
    per_step, ratios = {}, {}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "float.keras")
        float_model.save(path)
        for _ in range(rounds):
            for framework, plain in (("keras3", "keras3"), ("tf_keras", "tf_keras")):
                code = (
                    "import json, clustering_benchmark as b; "
                    f"print(json.dumps(b._fit_times({framework!r}, {path!r}, {epochs})))"
                )
                child = subprocess.run(
                    [sys.executable, "-c", code],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                measured = json.loads(child.stdout.strip().splitlines()[-1])
                for name, seconds in measured.items():
                    per_step.setdefault(name, []).append(seconds / steps)
                    ratios.setdefault(name, []).append(seconds / measured[plain])
    return {
        name: (statistics.median(per_step[name]), statistics.median(ratios[name]))
        for name in per_step
    }


def mlperf_rows():
    import numpy as np

    import tfslim
    from tfslim.litert import compression

    rows = []
    for name in ("ds_cnn", "resnet8"):
        model = getattr(tfslim.architectures, name)()
        shape = (64, *model.inputs[0].shape[1:])
        calibration = np.random.default_rng(0).random(shape, dtype=np.float32)
        clustered = tfslim.strip_clustering(tfslim.cluster_weights(model, 16))
        with quiet():
            dense = tfslim.convert(clustered, target="mcu", calibration_data=calibration)
        dense = bytes(dense.flatbuffer)
        compressed, _ = compression.compress_micro(dense)
        arena, arena_c = compression.measure_arena(dense), compression.measure_arena(compressed)
        fits = {}
        for board in BOARDS:
            target = tfslim.get_target(board)
            fits[board] = tuple(
                (target.flash_bytes is None or flash <= target.flash_bytes)
                and (target.ram_bytes is None or ram <= target.ram_bytes)
                for flash, ram in ((len(dense), arena), (len(compressed), arena_c))
            )
        rows.append((name, len(dense), arena, len(compressed), arena_c, fits))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12, help="float training epochs")
    parser.add_argument("--cluster-epochs", type=int, default=3)
    parser.add_argument("--qat-epochs", type=int, default=2)
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved step-time rounds (0: no step times)"
    )
    parser.add_argument("--clusters", type=int, nargs="+", default=[16, 32])
    parser.add_argument("--timing", action="store_true", help="the step-time table only")
    parser.add_argument("--seeds", type=int, default=1, help="training runs (accuracy table)")
    parser.add_argument("--seed0", type=int, default=0, help="first seed")
    parser.add_argument(
        "--tfmot-wrap",
        choices=("model", "layers"),
        default="model",
        help="tfmot's cluster_weights on the whole model (every layer wrapped; its wrapper "
        "calls the layer without `training`, so Dropout is off and BatchNormalization uses "
        "its frozen moving statistics in the clustered fit) or on the layers with kernels "
        "only (Dropout and BatchNormalization train as in tfslim)",
    )
    parser.add_argument(
        "--gzip-breakdown",
        action="store_true",
        help="per-kernel distinct values, entropy and gzip bytes of every int8 file",
    )
    args = parser.parse_args()
    if args.rounds < 0:
        parser.error(f"--rounds expects an integer >= 0; received {args.rounds}")
    if args.rounds == 0 and args.timing:
        parser.error("--timing needs --rounds >= 1; received --rounds 0")

    import keras
    from qat_benchmark import to_tf_keras

    import tfslim
    from tfslim.datasets import load_digits_data

    data = load_digits_data()
    x, y, xt, yt = data
    if args.timing:
        args.clusters = []
    header = (
        "| seed | k | framework | clustered acc | CQAT acc | int8 acc | int8 file | gzip | "
        "gzip x dense | TFLM flash | flash x dense | arena (compressed) |"
    )
    accuracies = {}  # (k, framework) -> [int8 accuracy per seed]; k=0: unclustered
    for seed in range(args.seed0, args.seed0 + args.seeds):
        keras.utils.set_random_seed(seed)
        float_model = compiled(tfslim.architectures.build_digits_cnn(), 2e-3, keras.optimizers)
        float_model.fit(x, y, epochs=args.epochs, batch_size=BATCH, verbose=0)
        float_acc = float_model.evaluate(xt, yt, verbose=0)[1]
        reference = files(float_model, data, calibration=x[:200])
        accuracies.setdefault((0, "unclustered"), []).append(reference["int8_acc"])
        print(
            f"seed {seed}: digits CNN, float accuracy {float_acc:.4f}; unclustered int8: "
            f"accuracy {reference['int8_acc']:.4f}, file {reference['file']:,} B, gzip "
            f"{reference['gzip']:,} B, TFLM arena {reference['arena']:,} B\n"
        )
        print(header)
        print("|" + "---|" * 12)
        breakdowns, float32, lut = [], {}, {}
        if args.gzip_breakdown:
            breakdowns.append(("unclustered int8", reference["flatbuffer"]))
            float32["unclustered"] = float32_gzip(float_model)
        for k in args.clusters:
            for framework in ("tfslim", "tfmot"):
                keras.utils.set_random_seed(seed)
                if framework == "tfslim":
                    row = run_tfslim(float_model, k, data, args)
                else:
                    row = run_tfmot(to_tf_keras(float_model), k, data, args)
                accuracies.setdefault((k, framework), []).append(row["int8_acc"])
                print(
                    f"| {seed} | {k} | {framework} | {row['cluster_acc']:.4f} | "
                    f"{row['cqat_acc']:.4f} | {row['int8_acc']:.4f} | {row['file']:,} | "
                    f"{row['gzip']:,} | {row['gzip'] / reference['gzip']:.3f} | "
                    f"{row['flash']:,} | {row['flash'] / reference['file']:.3f} | "
                    f"{row['arena']:,} ({row['arena_c'] or row['arena']:,}) |",
                    flush=True,
                )
                if args.gzip_breakdown:
                    float32[f"{k} clusters, {framework}"] = row["float32_gzip"]
                    lut[f"{k} clusters, {framework}"] = row["flash_gzip"]
                    breakdowns.append((f"{k} clusters, {framework}", row["flatbuffer"]))
                    if row.get("shared_grid") is not None:
                        label = f"{k} clusters, {framework}, one int8 grid per kernel"
                        breakdowns.append((label, row["shared_grid"]))
        for label, flatbuffer in breakdowns:
            from gzip_breakdown import print_gzip_breakdown

            print_gzip_breakdown(label, flatbuffer, reference["gzip"])
        if float32:
            print(
                "\nfloat32 files (no quantization; what tfmot's published clustering sizes "
                "compare), gzip -9: "
                + ", ".join(
                    f"{label} {size:,} B ({size / float32['unclustered']:.3f}x)"
                    for label, size in float32.items()
                )
            )
            print(
                "LUT-compressed TFLite Micro files, gzip -9 (x the unclustered int8 gzip): "
                + ", ".join(
                    f"{label} {size:,} B ({size / reference['gzip']:.3f}x)"
                    for label, size in lut.items()
                )
            )
        print()
    if args.clusters:
        import statistics

        print(f"| int8 accuracy over {args.seeds} seed(s) | mean | spread (stdev) |")
        print("|---|---:|---:|")
        for (k, framework), values in accuracies.items():
            label = framework if k == 0 else f"{k} clusters, {framework}"
            spread = statistics.stdev(values) if len(values) > 1 else float("nan")
            print(f"| {label} | {statistics.mean(values):.4f} | {spread:.4f} |")
    if args.rounds:
        steps = step_ratios(float_model, data, args.rounds)
        print(
            f"\n| step (whole 8-epoch fit after a warm-up fit / steps; median of {args.rounds} "
            "rounds, one framework per process) | ms | x plain fit |\n|---|---:|---:|"
        )
        for name in ("keras3", "tfslim", "tf_keras", "tfmot"):
            print(f"| {name} | {1000 * steps[name][0]:.2f} | {steps[name][1]:.3f} |")
    if args.timing:
        return
    print(
        "\n| MLPerf Tiny, 16 clusters | int8 file | arena | compressed flash | arena | "
        + " | ".join(BOARDS)
        + " |"
    )
    print("|" + "---|" * (5 + len(BOARDS)))
    for name, flash, arena, flash_c, arena_c, fits in mlperf_rows():
        verdicts = " | ".join(
            f"{'fits' if a else 'no'} / {'fits' if b else 'no'}" for a, b in fits.values()
        )
        print(f"| {name} | {flash:,} | {arena:,} | {flash_c:,} | {arena_c:,} | {verdicts} |")
    print("\n(board columns: dense / compressed)")


if __name__ == "__main__":
    main()
