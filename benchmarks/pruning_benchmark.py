"""Pruning benchmark: tfslim against tfmot on digits, same architecture, data and schedule.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/pruning_benchmark.py [--seeds 2] [--timing|--channel]

One CNN (Conv2D 24 -> MaxPool -> Flatten (216) -> Dense 512 -> Dense 10, 116k parameters) is built
in Keras 3 and, layer for layer with the same initial weights, in tf_keras. Each configuration
trains for the same number of epochs with the same optimizer, batch size and PolynomialDecay
schedule (0 -> 80% from 15% to 65% of the epochs, masks updated once per epoch, then recovery).
Every pruned run, tfslim's and tfmot's, prunes the two Dense kernels (116k weights) and leaves
the first conv dense (216 weights, 9 per filter: 80% would leave ~2 per filter).
TFLite's sparse format stores one index per non-zero: uint8 while a row has < 256 inputs, uint16
above. With 216 inputs the big Dense layer gets uint8 indices; the same model with 288 inputs
(Conv2D 32) measured 0.703x for tfslim and 0.702x for tfmot, the format's floor there.

- dense:          Keras 3 `fit`, no pruning (the accuracy and size reference)
- tfslim:         Keras 3 `fit` + `tfslim.pruning.Pruning` (unstructured)
- tfslim 1x16:    the same with `block_size=(1, 16)` (TFLite (out, in) layout)
- tfmot:          `tfmot.sparsity.keras.prune_low_magnitude` + `UpdatePruningStep`
- tfmot 16x1:     tfmot `block_size=(16, 1)`, which on the Keras (in, out) kernel is the same
                  TFLite 1x16 block as tfslim's (tfmot's own `(1, 16)` gets no block encoding)
- tfslim + QAT:   the tfslim model, stripped, `quantize_model`, 3 more epochs with
                  `Pruning(schedule="keep")` (pruning-preserving QAT)

Sizes come from `tfslim.convert` (int8, calibrated on 200 training images; QAT needs none): the
mobile file with `sparse=True` (TFLite sparse encoding) and the microcontroller file (dense,
int8 I/O) whose gzip is what an over-the-air update ships. Int8 accuracy is measured by running
the converted file in the LiteRT interpreter. Step time is a whole 8-epoch `fit` after a
warm-up `fit` (so it includes what the callbacks do at the start and end of every `fit`)
divided by its steps; the ratio is against plain `fit` of the same Keras stack in the same
process, one framework per process, median over interleaved rounds (ConstantSparsity, one mask
update per epoch) for plain Keras 3 `fit`, the `Pruning` callback, `ChannelPruning(0.5)`, the
`prune_low_magnitude` wrapper, plain tf_keras `fit` and tfmot. Keras accuracies are means over
seeds.

`--channel` runs the channel-pruning rows instead: MobileNetV2 (alpha 0.35, 32x32x3) and MLPerf
Tiny resnet8 on digits (upsampled 4x to 32x32, grey copied to 3 channels). Each model trains
`--channel-epochs` epochs; copies of it then fine-tune `--prune-epochs` more epochs at a
constant learning rate and `--recover-epochs` epochs of recovery: unpruned (the teacher),
`ChannelPruning(0.5)` (50% of every group's channels) and `ChannelPruning(max_params=0.3,
max_macs=0.3, channel_multiple=--channel-multiple)` (the footprint target: the callback picks
the fraction, every group keeping a multiple of that many channels), the pruned ones
`strip_pruning`, `reestimate_batch_norm`, then recovered (optionally by distillation from the
unpruned model, `--recover-distill`: `tfslim.distillation.Distiller` at `--distill-temperature`,
`--distill-alpha` the weight of the labels); and unstructured `Pruning` to the parameter count
of the footprint-target model (the same epochs in total). Recovery (the unpruned model's too)
runs `--recover-schedule cosine` (from `--recover-lr` to 0) or `constant`. Every model's batch-norm
statistics are re-estimated before it is measured. Params come from Keras, MACs from the int8
file (`tfslim.measure`), latency from LiteRT's default Interpreter (XNNPACK, one thread;
also two) over interleaved rounds, the arena from the TFLite Micro interpreter (mcu file).
Accuracies are means over `--seeds` seeds from `--seed0`; `--seed0` alone gives the footprint
and latency rows.

`--mobile-runtime` times the digits CNN pruned to 80% in LiteRT: dense int8 with XNNPACK (the
default file) against sparse int8 with builtin kernels (the only way it runs) and the float
files, dense and sparse; and an XNNPACK sparse-inference pattern model (`xnnpack_sparse`).
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BATCH = 32
SPARSITY = 0.8


def load_data():
    from tfslim.datasets import load_digits_data

    return load_digits_data()


def build(layers_module, model_cls, input_layer):
    layers = layers_module
    return model_cls(
        [
            input_layer((8, 8, 1)),
            layers.Conv2D(24, 3, activation="relu", name="conv"),
            layers.MaxPooling2D(name="pool"),
            layers.Flatten(name="flatten"),
            layers.Dense(512, activation="relu", name="hidden"),
            layers.Dense(10, name="logits"),
        ]
    )


def keras3_model(seed):
    import keras

    keras.utils.set_random_seed(seed)
    return build(keras.layers, keras.Sequential, keras.Input)


def tf_keras_model(weights, seed):
    import tensorflow as tf
    import tf_keras

    tf.random.set_seed(seed)
    model = build(tf_keras.layers, tf_keras.Sequential, lambda shape: tf_keras.Input(shape))
    model.set_weights(weights)
    return model


def make_timer(base):
    class EpochTimer(base):
        def __init__(self):
            super().__init__()
            self.times = []

            self.cpu_times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._start[0])
            self.cpu_times.append(time.process_time() - self._start[1])

    return EpochTimer()


def polynomial_steps(epochs, steps):
    """Ramp from 15% to 65% of training, one mask update per epoch, then recovery."""
    begin = round(0.15 * epochs) * steps
    return {"begin_step": begin, "end_step": round(0.65 * epochs) * steps, "frequency": steps}


def train_keras3(kind, seed, data, epochs, *, timing=False):
    """Trains one Keras 3 configuration; returns (model, initial weights, accuracy, timer)."""
    import keras

    from tfslim import pruning

    x_train, y_train, x_test, y_test = data
    steps = -(-len(x_train) // BATCH)
    if timing:  # one mask update in every epoch
        schedule = pruning.ConstantSparsity(SPARSITY, 0, frequency=steps)
    else:
        schedule = pruning.PolynomialDecay(0.0, SPARSITY, **polynomial_steps(epochs, steps))
    model = keras3_model(seed)
    init = model.get_weights()
    timer = make_timer(keras.callbacks.Callback)
    callbacks = [timer]
    # The first conv (216 weights, 9 per filter) stays dense in every pruned run, tfmot's too:
    # at 80% it would keep ~2 weights per filter, and a 1x16 block would drop whole filters.
    if kind == "tfslim":
        callbacks.insert(0, pruning.Pruning(schedule=schedule, skip_layers=["conv"]))
    elif kind == "tfslim 1x16":
        callbacks.insert(
            0, pruning.Pruning(schedule=schedule, block_size=(1, 16), skip_layers=["conv"])
        )
    elif kind == "tfslim wrapper":
        model = pruning.prune_low_magnitude(model, pruning_schedule=schedule, skip_layers=["conv"])
    model.compile(
        keras.optimizers.Adam(1e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks)
    accuracy = None if timing else model.evaluate(x_test, y_test, verbose=0)[1]
    return pruning.strip_pruning(model), init, accuracy, timer


def train_tfmot(kind, seed, init, data, epochs, *, timing=False):
    """Trains one tf_keras configuration; returns (stripped model, accuracy, timer)."""
    import tf_keras

    from tfslim.pruning.tfmot_routing import import_tfmot_sparsity

    sparsity = import_tfmot_sparsity()
    x_train, y_train, x_test, y_test = data
    steps = -(-len(x_train) // BATCH)
    if timing:
        schedule = sparsity.ConstantSparsity(SPARSITY, 0, frequency=steps)
    else:
        schedule = sparsity.PolynomialDecay(0.0, SPARSITY, **polynomial_steps(epochs, steps))
    model = tf_keras_model(init, seed)
    timer = make_timer(tf_keras.callbacks.Callback)
    callbacks = [timer]
    if kind != "tf_keras dense":
        block = (16, 1) if kind == "tfmot 16x1" else (1, 1)

        def wrap(layer):
            if isinstance(layer, tf_keras.layers.Dense):  # conv stays dense, as in train_keras3
                return sparsity.prune_low_magnitude(
                    layer, pruning_schedule=schedule, block_size=block
                )
            return layer

        model = tf_keras.models.clone_model(model, clone_function=wrap)
        callbacks.insert(0, sparsity.UpdatePruningStep())
    model.compile(
        tf_keras.optimizers.Adam(1e-3),
        tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks)
    accuracy = None if timing else model.evaluate(x_test, y_test, verbose=0)[1]
    if kind != "tf_keras dense":
        model = sparsity.strip_pruning(model)
    return model, accuracy, timer


def _fit_times(framework, epochs, repeats=5):
    """Seconds (wall, CPU) of one `fit` of `epochs` epochs per configuration of `framework`.

    Each configuration has its own model, fitted once (1 epoch, the same callbacks) to warm
    up; then every configuration's `fit` is timed `repeats` times, the configurations
    alternating, and the median kept (one 8-epoch `fit` of the digits CNN lasts about a
    second, short enough for a scheduler hiccup to move it by 20%). Runs in a child process
    of `step_times`.
    """
    x, y = load_data()[:2]
    steps = -(-len(x) // BATCH)
    if framework == "keras3":
        import keras

        from tfslim import pruning

        schedule = pruning.ConstantSparsity(SPARSITY, 0, frequency=steps)
        configs = {
            "dense": lambda model: (model, list),
            "tfslim": lambda model: (
                model,
                lambda: [pruning.Pruning(schedule=schedule, skip_layers=["conv"])],
            ),
            "tfslim channel": lambda model: (model, lambda: [pruning.ChannelPruning(0.5)]),
            "tfslim wrapper": lambda model: (
                pruning.prune_low_magnitude(model, pruning_schedule=schedule, skip_layers=["conv"]),
                list,
            ),
        }
        make, stack = lambda: keras3_model(0), keras
    else:
        import tf_keras

        from tfslim.pruning.tfmot_routing import import_tfmot_sparsity

        sparsity = import_tfmot_sparsity()
        schedule = sparsity.ConstantSparsity(SPARSITY, 0, frequency=steps)

        def tfmot(model):
            def wrap(layer):
                if isinstance(layer, tf_keras.layers.Dense):  # conv stays dense
                    return sparsity.prune_low_magnitude(layer, pruning_schedule=schedule)
                return layer

            model = tf_keras.models.clone_model(model, clone_function=wrap)
            return model, lambda: [sparsity.UpdatePruningStep()]

        configs = {"tf_keras dense": lambda model: (model, list), "tfmot": tfmot}
        init = keras3_model(0).get_weights()
        make, stack = lambda: tf_keras_model(init, 0), tf_keras
    runs = {}
    for kind, configure in configs.items():
        model, callbacks = configure(make())
        model.compile(
            stack.optimizers.Adam(1e-3),
            stack.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks())
        runs[kind] = model, callbacks
    times = {kind: [] for kind in runs}
    for _ in range(repeats):
        for kind, (model, callbacks) in runs.items():
            start = time.perf_counter(), time.process_time()
            model.fit(x, y, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=callbacks())
            times[kind].append((time.perf_counter() - start[0], time.process_time() - start[1]))
    return {
        kind: tuple(statistics.median(t[i] for t in measured) for i in (0, 1))
        for kind, measured in times.items()
    }


def step_times(data, rounds, epochs=8):
    """Median wall-clock and CPU time per step (ms) of a whole `fit`, per configuration.

    One framework per process (Keras 3 and tf_keras in one process slow each other): each
    round runs a Keras 3 child (plain `fit`, `Pruning`, `ChannelPruning(0.5)`, the
    `prune_low_magnitude` wrapper) and then a tf_keras child (plain `fit`, tfmot), each timing
    warmed-up `fit`s of `epochs` epochs per configuration (see `_fit_times`, which includes
    the callbacks' work at the start and end of `fit`). Load from other processes on a shared
    machine hits both frameworks alike; ratios to plain `fit` are taken within each child and
    their medians over the rounds printed.
    """
    import json
    import subprocess
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([os.path.dirname(here), here]))
    steps = epochs * -(-len(data[0]) // BATCH)
    times, ratios = {}, {}
    base = {"tf_keras dense": "tf_keras dense", "tfmot": "tf_keras dense"}
    for _ in range(rounds):
        for framework in ("keras3", "tf_keras"):
            code = (
                "import json, pruning_benchmark as b; "
                f"print(json.dumps(b._fit_times({framework!r}, {epochs})))"
            )
            child = subprocess.run(
                [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
            )
            measured = json.loads(child.stdout.strip().splitlines()[-1])
            for kind, (wall, cpu) in measured.items():
                times.setdefault(kind, []).append((1000 * wall / steps, 1000 * cpu / steps))
                reference = measured[base.get(kind, "dense")]
                ratios.setdefault(kind, []).append((wall / reference[0], cpu / reference[1]))
    print(
        f"\nwhole fit ({epochs} epochs after a warm-up fit, one framework per process), median "
        f"of {rounds} alternating rounds\n{'fit':<16}{'wall ms/step':>13}{'x plain fit':>12}"
        f"{'cpu ms/step':>12}{'x plain fit':>12}"
    )
    medians = {}
    for kind, values in times.items():
        wall, cpu = (statistics.median(v[i] for v in values) for i in (0, 1))
        ratio = [statistics.median(r[i] for r in ratios[kind]) for i in (0, 1)]
        print(f"{kind:<16}{wall:>13.2f}{ratio[0]:>12.3f}{cpu:>12.2f}{ratio[1]:>12.3f}")
        medians[kind] = (wall, cpu)
    return medians


def kernel_sparsity(model):
    kernels = [w for w in model.get_weights() if w.ndim >= 2]
    return sum(int((k == 0).sum()) for k in kernels) / sum(k.size for k in kernels)


@contextlib.contextmanager
def silenced():
    """Silences the converter's C++ logging, which writes to the process's file descriptors."""
    saved = [os.dup(1), os.dup(2)]
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 1)
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def measure_files(model, data, *, qat=False):
    import tfslim

    x_train, _, x_test, y_test = data
    calibration = None if qat else x_train[:200]
    with silenced():
        mobile = tfslim.convert(
            model, target="mobile", quantization="int8", calibration_data=calibration, sparse=True
        )
        mobile_dense = tfslim.convert(
            model, target="mobile", quantization="int8", calibration_data=calibration, sparse=False
        )
        mcu = tfslim.convert(model, target="mcu", calibration_data=calibration)
    # tfslim.measure's Footprint names: flash_bytes is the file, gzip_bytes its gzip.
    sparse = tfslim.measure(mobile, data=(x_test, y_test), latency_runs=0)
    dense = tfslim.measure(mobile_dense, latency_runs=0)
    board = tfslim.measure(mcu, latency_runs=0)
    return {
        "sparse": sparse.flash_bytes,
        "dense": dense.flash_bytes,
        "sparse_gzip": sparse.gzip_bytes,
        "mcu_gzip": board.gzip_bytes,
        "int8_accuracy": sparse.quality,
    }


def pruned_qat(model, data):
    import keras

    from tfslim import pruning
    from tfslim.quantization import quantize_model

    x_train, y_train, x_test, y_test = data
    qat = quantize_model(model)
    qat.compile(
        keras.optimizers.Adam(2e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    qat.fit(
        x_train,
        y_train,
        batch_size=BATCH,
        epochs=3,
        verbose=0,
        callbacks=[pruning.Pruning(schedule="keep")],
    )
    return qat, qat.evaluate(x_test, y_test, verbose=0)[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2, help="training runs per configuration")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--timing-rounds", type=int, default=2)
    parser.add_argument("--channel", action="store_true", help="channel-pruning rows only")
    parser.add_argument("--channel-epochs", type=int, default=8)
    parser.add_argument("--prune-epochs", type=int, default=4)
    parser.add_argument("--recover-epochs", type=int, default=2)
    parser.add_argument(
        "--channel-models", default="mobilenet_v2,resnet8", help="comma-separated, for --channel"
    )
    parser.add_argument(
        "--recover-distill",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="recover pruned models by distillation from the unpruned one (MobileNetV2, 2 "
        "seeds, cosine lr 4e-3: 93.61/94.31 with it, 96.53/95.00 without)",
    )
    parser.add_argument("--distill-temperature", type=float, default=1.0)
    parser.add_argument(
        "--distill-alpha", type=float, default=0.5, help="weight of the labels when distilling"
    )
    parser.add_argument("--recover-lr", type=float, default=4e-3, help="peak recovery lr")
    parser.add_argument("--recover-schedule", choices=("cosine", "constant"), default="cosine")
    parser.add_argument(
        "--channel-multiple",
        type=int,
        default=1,
        help="kept channels per group of the '<=0.3x' row: a multiple of this (8 suits "
        "XNNPACK's tiles but prunes MobileNetV2 7 points of channels more than 0.3x needs)",
    )
    parser.add_argument("--seed0", type=int, default=0, help="first seed of --channel runs")
    parser.add_argument(
        "--save-tflite", default="", help="--channel: write the int8 files of the rows to this dir"
    )
    parser.add_argument(
        "--channel-configs",
        default="",
        # argparse %-formats help strings; "channel 50%" would break --help.
        help=CHANNEL_CONFIGS_HELP,
    )
    parser.add_argument(
        "--unstructured",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="--channel: also unstructured pruning to the first '<=0.3x' row's parameters",
    )
    parser.add_argument(
        "--latency-files",
        default="",
        help="time the int8 files a --save-tflite run wrote to this dir (several dirs: "
        "comma-separated), each against the unpruned file of its model and seed",
    )
    parser.add_argument("--latency-repeats", type=int, default=3)
    parser.add_argument("--mobile-runtime", action="store_true", help="sparse runtime rows only")
    parser.add_argument(
        "--timing", action="store_true", help="training-overhead table only (--timing-rounds)"
    )
    args = parser.parse_args()
    if args.timing:
        step_times(load_data(), args.timing_rounds)
        return None
    if args.channel:
        # TensorFlow 2.21's oneDNN CPU kernels abort the process ("double free or corruption",
        # "free(): invalid size", a segfault) while training MLPerf Tiny's ResNet-8 at 8/16/32
        # filters, the 50%-channel model, even freshly initialized from its config; the
        # reference kernels train it. Set before TensorFlow is first imported.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
        return channel_main(args)
    if args.latency_files:
        return latency_files_main(args.latency_files.split(","), args.latency_repeats)
    if args.mobile_runtime:
        return mobile_runtime_main()
    data = load_data()
    start = time.perf_counter()
    rows = {}

    def record(name, accuracy, model, files=None):
        row = rows.setdefault(name, {"acc": []})
        row["acc"].append(accuracy)
        row["sparsity"] = kernel_sparsity(model)
        if files is not None:
            row.update(files)

    for seed in range(args.seeds):
        first = seed == 0
        for kind in ("dense", "tfslim", "tfslim 1x16"):
            model, init, acc, _ = train_keras3(kind, seed, data, args.epochs)
            record(kind, acc, model, measure_files(model, data) if first else None)
            if first and kind == "tfslim":
                qat, qat_acc = pruned_qat(model, data)
                record("tfslim + QAT", qat_acc, qat, measure_files(qat, data, qat=True))
        for kind in ("tfmot", "tfmot 16x1"):
            model, acc, _ = train_tfmot(kind, seed, init, data, args.epochs)
            record(kind, acc, model, measure_files(model, data) if first else None)
        print(f"seed {seed} trained at {time.perf_counter() - start:.0f} s", flush=True)
    ms = step_times(data, args.timing_rounds)
    print(f"step times measured at {time.perf_counter() - start:.0f} s", flush=True)
    base = {
        "tfslim": "dense",
        "tfslim channel": "dense",
        "tfslim wrapper": "dense",
        "tfmot": "tf_keras dense",
    }
    ratios = {k: [ms[k][i] / ms[base.get(k, k)][i] for i in (0, 1)] for k in ms}

    reference = rows["dense"]["dense"]
    header = (
        f"{'config':<14}{'sparsity':>9}{'keras acc':>10}{'int8 acc':>9}{'dense B':>9}"
        f"{'sparse B':>9}{'sparse x':>9}{'gzip x':>7}{'mcu gzip x':>11}"
    )
    print(
        f"\n{args.epochs} epochs, batch {BATCH}, keras acc = mean of {args.seeds} seed(s); "
        f"sizes and int8 acc from seed 0; x = / dense int8 file of the unpruned model "
        f"({reference} B)"
    )
    print(header)
    print("-" * len(header))
    for name, row in rows.items():
        print(
            f"{name:<14}{row['sparsity']:>9.3f}{100 * statistics.mean(row['acc']):>10.2f}"
            f"{100 * row['int8_accuracy']:>9.1f}{row['dense']:>9}{row['sparse']:>9}"
            f"{row['sparse'] / reference:>9.3f}{row['sparse_gzip'] / reference:>7.3f}"
            f"{row['mcu_gzip'] / reference:>11.3f}"
        )
    print(
        f"\n{'training step':<16}{'wall ms':>8}{'x plain fit':>12}{'cpu ms':>8}{'x plain fit':>12}"
    )
    for kind, (wall, cpu) in ms.items():
        print(f"{kind:<16}{wall:>8.2f}{ratios[kind][0]:>12.2f}{cpu:>8.2f}{ratios[kind][1]:>12.2f}")

    def acc(name):
        return 100 * statistics.mean(rows[name]["acc"])

    checks = [
        ("tfslim sparse int8 <= 0.70x dense int8", rows["tfslim"]["sparse"] / reference, 0.70),
        ("tfslim sparse int8 gzip <= 0.45x", rows["tfslim"]["sparse_gzip"] / reference, 0.45),
        ("tfslim 1x16 sparse int8 <= 0.40x", rows["tfslim 1x16"]["sparse"] / reference, 0.40),
        ("tfslim accuracy: points below dense", acc("dense") - acc("tfslim"), 1.0),
        ("tfslim fit time / plain fit (wall)", ratios["tfslim"][0], 1.05),
        ("tfslim channel fit time / plain fit (wall)", ratios["tfslim channel"][0], 1.05),
        ("tfslim accuracy: points below tfmot", acc("tfmot") - acc("tfslim"), 0.0),
        (
            "tfslim 1x16 accuracy: points below tfmot 16x1",
            acc("tfmot 16x1") - acc("tfslim 1x16"),
            0.0,
        ),
    ]
    print()
    for label, value, limit in checks:
        ok = value <= limit + 1e-9
        print(f"{'PASS' if ok else 'FAIL'}  {label}: {value:.3f} (limit {limit})")
    print(f"info  tfslim wrapper step time / plain fit (wall): {ratios['tfslim wrapper'][0]:.2f}x")
    print(f"info  tfmot step time / tf_keras fit (wall): {ratios['tfmot'][0]:.2f}x")
    print(f"total {time.perf_counter() - start:.0f} s")


def interleaved_latency(files, rounds=5, runs=100, *, builtin=(), threads=1, sample_ms=0.0):
    """Median ms per invoke of each .tflite (dict name -> bytes), rounds interleaved.

    LiteRT's default op resolver (XNNPACK) with `threads` threads (the Interpreter's default,
    `num_threads=None`, is one), except names in `builtin`, which run on builtin kernels
    (BUILTIN_WITHOUT_DEFAULT_DELEGATES). Each round runs every model in turn, the order
    reversed every other round, `runs // rounds` samples each; a sample times as many
    back-to-back invokes as take `sample_ms` (at least one), so a model of 0.02 ms is not
    timed one invoke at a time at the clock's and the loop's resolution.
    """
    medians, _, _ = latency_rounds(
        files, rounds, runs // rounds, builtin=builtin, threads=threads, sample_ms=sample_ms
    )
    return medians


def latency_rounds(files, rounds, samples, *, builtin=(), threads=1, sample_ms=0.0):
    """Median ms per invoke, {name: [fastest sample of each round]} and the fastest sample.

    Other processes only ever add time to a sample (preempted, the caches refilled), so on a
    loaded machine the fastest samples are the ones that measure the model: there the median
    of a tiny model swung tenfold between repeats and the fastest sample stayed within a few
    percent.
    """
    import numpy as np
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreters, batch = {}, {}
    for name, content in files.items():
        resolver = (
            OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            if name in builtin
            else OpResolverType.AUTO
        )
        interp = Interpreter(
            model_content=content, num_threads=threads, experimental_op_resolver_type=resolver
        )
        interp.allocate_tensors()
        for detail in interp.get_input_details():
            interp.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        for _ in range(10):
            interp.invoke()
        t = time.perf_counter()
        for _ in range(20):
            interp.invoke()
        per_invoke = (time.perf_counter() - t) / 20
        batch[name] = max(1, round(sample_ms / 1000 / per_invoke))
        interpreters[name] = interp
    times = {name: [] for name in files}
    by_round = {name: [] for name in files}
    order = list(interpreters)
    for r in range(rounds):
        for name in order if r % 2 == 0 else order[::-1]:
            interp, n, samples_ms = interpreters[name], batch[name], []
            for _ in range(samples):
                t = time.perf_counter()
                for _ in range(n):
                    interp.invoke()
                samples_ms.append(1000 * (time.perf_counter() - t) / n)
            times[name] += samples_ms
            by_round[name].append(min(samples_ms))
    medians = {name: statistics.median(v) for name, v in times.items()}
    return medians, by_round, {name: min(v) for name, v in times.items()}


def paired_ratios(by_round, reference):
    """Median over rounds of each model's round figure / the reference's in the same round."""
    ref = by_round[reference]
    return {
        name: statistics.median(a / b for a, b in zip(v, ref, strict=True))
        for name, v in by_round.items()
    }


def digits_rgb32(data):
    """Digits upsampled 4x to 32x32 with the grey level in 3 channels."""
    import numpy as np

    def up(x):
        return np.repeat(np.repeat(x, 4, axis=1), 4, axis=2).repeat(3, axis=3)

    x_train, y_train, x_test, y_test = data
    return up(x_train), y_train, up(x_test), y_test


def _mobilenet_v2():
    import keras

    return keras.applications.MobileNetV2(
        alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10
    )


def _resnet8():
    from tfslim.architectures import mlperf_tiny

    return mlperf_tiny.resnet8()


CHANNEL_MODELS = {"mobilenet_v2": _mobilenet_v2, "resnet8": _resnet8}


def channel_model_names(args):
    """`--channel-models` as a list, every name checked before anything trains."""
    names = args.channel_models.split(",")
    unknown = [name for name in names if name not in CHANNEL_MODELS]
    if unknown:
        raise SystemExit(
            f"Invalid value for --channel-models. Expected comma-separated names among "
            f"{list(CHANNEL_MODELS)}. Received: {unknown}"
        )
    return names


# Latency of the --channel rows: 21 interleaved rounds of 20 samples of >= 0.5 ms of
# back-to-back invokes per model, ~0.2 s per model and thread count; the fastest sample is
# reported. The unpruned MobileNetV2 runs in ~0.02 ms: timed one invoke per sample and by the
# median (the former 7 rounds of 30), its ratios ran 0.49x-0.65x from run to run.
LATENCY_ROUNDS = 21
LATENCY_SAMPLES = 20
LATENCY_MS = 0.5

CHANNEL_CONFIGS = {
    "channel 50%": {"target_fraction": 0.5},
    "channel <=0.3x": {"max_params": 0.3, "max_macs": 0.3},
    "importance<=0.3x": {"max_params": 0.3, "max_macs": 0.3, "allocation": "importance"},
}
CHANNEL_CONFIGS_HELP = (
    f"comma-separated rows of --channel among {list(CHANNEL_CONFIGS)} (default: all)"
).replace("%", "%%")


def channel_configs(args):
    """CHANNEL_CONFIGS, the footprint targets rounding kept channels to `--channel-multiple`."""
    chosen = args.channel_configs.split(",") if args.channel_configs else list(CHANNEL_CONFIGS)
    unknown = [label for label in chosen if label not in CHANNEL_CONFIGS]
    if unknown:
        raise SystemExit(
            f"Invalid value for --channel-configs. Expected labels among "
            f"{list(CHANNEL_CONFIGS)}. Received: {unknown}"
        )
    configs = {label: dict(CHANNEL_CONFIGS[label]) for label in chosen}
    for target in configs.values():
        if "max_macs" in target:
            target["channel_multiple"] = args.channel_multiple
    return configs


def channel_rows(name, build, data, args, seed):
    """Rows of one model and seed: unpruned, each CHANNEL_CONFIGS entry, unstructured.

    Every model has its batch-norm statistics re-estimated on the training images before it
    is evaluated or converted: Keras applications use momentum 0.999, which in a few hundred
    steps leaves the moving statistics near their initial values, and an unpruned model
    evaluated with them is no reference. Seeds other than 0 give the accuracies only.
    """
    import keras

    import tfslim

    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(seed)
    # The first seed of the process gives the footprint and latency rows; others accuracies.
    first = seed == args.seed0

    def compiled(model, lr):
        model.compile(
            keras.optimizers.Adam(lr), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model

    def copy(model):
        clone = keras.models.clone_model(model)
        clone.set_weights(model.get_weights())
        return clone

    def fit(model, epochs, callbacks=()):
        model.fit(
            x_train, y_train, batch_size=BATCH, epochs=epochs, verbose=0, callbacks=list(callbacks)
        )
        return model

    def settled(model):
        tfslim.reestimate_batch_norm(model, x_train, steps=len(x_train) // 64 + 1)
        return model

    def recovery_lr():
        if args.recover_schedule == "constant":
            return args.recover_lr
        steps = args.recover_epochs * -(-len(x_train) // BATCH)
        return keras.optimizers.schedules.CosineDecay(args.recover_lr, max(1, steps))

    def recovered(model, teacher=None):
        """`--recover-epochs` epochs of `model`, distilled from `teacher` if one is given."""
        if teacher is None:
            return fit(compiled(model, recovery_lr()), args.recover_epochs)
        distiller = tfslim.distillation.Distiller(
            teacher,
            model,
            temperature=args.distill_temperature,
            student_loss_weight=args.distill_alpha,
        )
        distiller.compile(
            keras.optimizers.Adam(recovery_lr()),
            "sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        distiller.fit(x_train, y_train, batch_size=BATCH, epochs=args.recover_epochs, verbose=0)
        return compiled(distiller.stripped_student(), args.recover_lr)

    base = fit(compiled(build(), 2e-3), args.channel_epochs)
    total = args.prune_epochs + args.recover_epochs
    # The unpruned reference gets the same fine-tuning as the pruned models, without pruning.
    unpruned = settled(recovered(fit(compiled(copy(base), 5e-4), args.prune_epochs)))
    models = {"unpruned": unpruned}
    teacher = unpruned if args.recover_distill else None
    fractions = {}
    for label, target in channel_configs(args).items():
        channel = compiled(copy(base), 5e-4)
        t = time.perf_counter()
        callback = tfslim.callbacks.ChannelPruning(**target)
        fit(channel, args.prune_epochs, [callback])
        fractions[label] = callback.channel_fraction()
        channel = tfslim.strip_pruning(channel)
        tfslim.reestimate_batch_norm(channel, x_train, steps=10)
        models[label] = settled(recovered(channel, teacher))
        print(
            f"{name} seed {seed}: {label} ({100 * fractions[label]:.1f}% of the prunable "
            f"channels) in {time.perf_counter() - t:.0f} s",
            flush=True,
        )
        if callback.planned_channels:
            print(f"  kept per group: {list(callback.planned_channels.values())}", flush=True)
    footprint = next((label for label in models if "0.3x" in label), None)
    if first and args.unstructured and footprint is not None:
        kept = models[footprint].count_params() / models["unpruned"].count_params()
        unstructured = compiled(copy(base), 5e-4)
        fit(unstructured, total, [tfslim.callbacks.Pruning(1 - kept)])
        models["unstructured"] = settled(tfslim.strip_pruning(unstructured))
    rows, files = {}, {}
    for label, model in models.items():
        with silenced():
            mobile = tfslim.convert(model, quantization="int8", calibration_data=x_train[:200])
            mcu = tfslim.convert(model, target="mcu", calibration_data=x_train[:200])
        phone = tfslim.measure(mobile, data=(x_test, y_test), latency_runs=0)
        rows[label] = {
            "params": model.count_params(),
            "macs": phone.macs,
            "keras_acc": model.evaluate(x_test, y_test, verbose=0)[1],
            "int8_acc": phone.quality,
            "fraction": fractions.get(label, 0.0),
            "nonzero": sum(int((w != 0).sum()) for w in model.get_weights() if w.ndim >= 2),
        }
        if first:
            board = tfslim.measure(mcu, latency_runs=0)
            files[label] = mobile.flatbuffer
            rows[label].update(flash=board.flash_bytes, arena=board.arena_bytes)
            if args.save_tflite:
                os.makedirs(args.save_tflite, exist_ok=True)
                stem = f"{name}_seed{seed}_{label.replace(' ', '_').replace('%', 'pct')}"
                with open(os.path.join(args.save_tflite, stem + ".tflite"), "wb") as f:
                    f.write(mobile.flatbuffer)
    if first:
        for threads in (1, 2):
            _, by_round, fastest = latency_rounds(
                files, LATENCY_ROUNDS, LATENCY_SAMPLES, threads=threads, sample_ms=LATENCY_MS
            )
            paired = paired_ratios(by_round, "unpruned")
            for label, ms in fastest.items():
                key = "latency" if threads == 1 else f"latency_{threads}t"
                rows[label].update(
                    {key: ms, key + "_x": ms / fastest["unpruned"], key + "_paired": paired[label]}
                )
    return rows


def channel_main(args):
    names = channel_model_names(args)
    channel_configs(args)  # Checked before anything trains, as the model names are.
    data = digits_rgb32(load_data())
    start = time.perf_counter()
    header = (
        f"{'model':<14}{'config':<16}{'chan%':>6}{'params':>9}{'x':>7}{'nonzero':>9}{'MACs':>11}"
        f"{'x':>7}"
        f"{'flash B':>9}{'arena B':>9}{'x':>7}{'int8 ms':>9}{'x':>7}{'2thr x':>7}{'keras acc':>10}"
        f"{'int8 acc':>9}"
    )
    checks = []
    tables = []
    seeds = range(args.seed0, args.seed0 + args.seeds)
    for name in names:
        runs = [channel_rows(name, CHANNEL_MODELS[name], data, args, seed) for seed in seeds]
        rows = runs[0]
        for label, row in rows.items():
            for key in ("keras_acc", "int8_acc"):
                row[key + "_seeds"] = [run[label][key] for run in runs if label in run]
                row[key] = statistics.mean(row[key + "_seeds"])
        ref = rows["unpruned"]
        lines = []
        for label, row in rows.items():
            nan = float("nan")
            row = {"flash": 0, "arena": 0, "latency": nan, "latency_x": nan, **row}
            row = {"latency_2t_x": nan, **row}
            ref = {"arena": 0, **ref}
            arena = row["arena"] or 0
            lines.append(
                f"{name:<14}{label:<16}{100 * row['fraction']:>6.1f}{row['params']:>9}"
                f"{row['params'] / ref['params']:>7.3f}{row['nonzero']:>9}{row['macs']:>11}"
                f"{row['macs'] / ref['macs']:>7.3f}{row['flash']:>9}"
                f"{arena:>9}{arena / (ref['arena'] or 1):>7.3f}{row['latency']:>9.4f}"
                f"{row['latency_x']:>7.3f}{row['latency_2t_x']:>7.3f}"
                f"{100 * row['keras_acc']:>10.2f}"
                f"{100 * row['int8_acc']:>9.2f}"
            )
            seeds_text = " ".join(f"{100 * v:.2f}" for v in row["int8_acc_seeds"])
            lines.append(f"{'':<14}{'':<16}  int8 acc per seed: {seeds_text}")
        tables.append(lines)
        ref = {"arena": 0, **ref}
        for label in channel_configs(args):
            ch = {"arena": 0, **rows[label]}
            checks += [
                (f"{name} {label} params <= 0.3x", ch["params"] / ref["params"], 0.3),
                (f"{name} {label} MACs <= 0.3x", ch["macs"] / ref["macs"], 0.3),
                (
                    f"{name} {label} int8 acc: points below unpruned (mean of seeds)",
                    100 * (ref["int8_acc"] - ch["int8_acc"]),
                    1.0,
                ),
            ]
            if "latency" in rows[label]:  # measured on the process's first seed only
                checks += [
                    (f"{name} {label} int8 latency <= 0.6x", ch["latency_x"], 0.6),
                    (
                        f"{name} {label} arena <= 0.6x",
                        (ch["arena"] or 0) / (ref["arena"] or 1),
                        0.6,
                    ),
                ]
        print(f"{name} measured at {time.perf_counter() - start:.0f} s", flush=True)
    print(
        f"\ndigits 32x32x3; {args.channel_epochs} epochs, then {args.prune_epochs} + "
        f"{args.recover_epochs} fine-tuning epochs per config (recovery: "
        f"{args.recover_schedule} lr {args.recover_lr:g}"
        + (
            f", distilled from unpruned at T={args.distill_temperature:g}, label weight "
            f"{args.distill_alpha:g}"
            if args.recover_distill
            else ""
        )
        + f"; '<=0.3x' channel_multiple={args.channel_multiple}); accuracies: mean of "
        f"{args.seeds} seeds; chan% = pruned share of the prunable channels; x = / unpruned; "
        f"latency: LiteRT default Interpreter (XNNPACK), 1 thread (2thr: 2 threads), "
        f"fastest of {LATENCY_ROUNDS} interleaved rounds of {LATENCY_SAMPLES} samples of >= "
        f"{LATENCY_MS:g} ms; unstructured: pruned to the parameter count of the first '<=0.3x' "
        "row"
    )
    print(header)
    print("-" * len(header))
    for lines in tables:
        print("\n".join(lines))
    print()
    for label, value, limit in checks:
        print(
            f"{'PASS' if value <= limit + 1e-9 else 'FAIL'}  {label}: {value:.3f} (limit {limit})"
        )
    print(f"total {time.perf_counter() - start:.0f} s")


def latency_files_main(dirs, repeats):
    """Re-times saved --channel files: per model and seed, `repeats` runs of the row timing."""
    import glob

    sets = {}
    for directory in dirs:
        for path in sorted(glob.glob(os.path.join(directory, "*.tflite"))):
            stem = os.path.basename(path).removesuffix(".tflite")
            model_seed, _, label = stem.rpartition("_seed")[2].partition("_")
            key = stem.split("_seed")[0] + "_seed" + model_seed
            with open(path, "rb") as f:
                sets.setdefault(key, {})[f"{label} ({os.path.basename(directory)})"] = f.read()
    for key, files in sets.items():
        reference = next((name for name in files if name.startswith("unpruned")), None)
        if reference is None:
            continue
        for threads in (1, 2):
            runs = []
            for _ in range(repeats):
                medians, by_round, fastest = latency_rounds(
                    files, LATENCY_ROUNDS, LATENCY_SAMPLES, threads=threads, sample_ms=LATENCY_MS
                )
                runs.append((medians, fastest, paired_ratios(by_round, reference)))
            print(
                f"\n{key}, {threads} thread(s), {repeats} repeats of: fastest ms, its ratio to "
                "unpruned, median over rounds of the ratio of round minima (median ms)"
            )
            for name in files:
                cells = "  ".join(
                    f"{fast[name]:.4f} {fast[name] / fast[reference]:.3f}x "
                    f"{paired[name]:.3f}x ({medians[name]:.4f})"
                    for medians, fast, paired in runs
                )
                print(f"  {name:<34}{cells}")


def mobile_runtime_main():
    import keras
    import numpy as np

    import tfslim
    from tfslim.architectures.digits import build_digits_cnn

    x_train, y_train, _, _ = load_data()
    keras.utils.set_random_seed(0)
    model = build_digits_cnn()
    model.compile(keras.optimizers.Adam(2e-3), "sparse_categorical_crossentropy")
    model.fit(
        x_train,
        y_train,
        batch_size=BATCH,
        epochs=4,
        verbose=0,
        callbacks=[tfslim.callbacks.Pruning(SPARSITY, schedule="constant")],
    )
    model = tfslim.strip_pruning(model)
    files = {}
    # sparse=True on int8 warns that only builtin kernels run it: that is what is timed here.
    with silenced(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for quantization in ("int8", "none", "float16"):
            for sparse in (False, True):
                result = tfslim.convert(
                    model,
                    quantization=quantization,
                    sparse=sparse,
                    calibration_data=x_train[:200],
                )
                files[f"{quantization} {'sparse' if sparse else 'dense'}"] = result
    builtin = {"int8 sparse"}
    contents = {name: r.flatbuffer for name, r in files.items()}
    ms = interleaved_latency(contents, rounds=7, runs=700, builtin=builtin)
    ms_builtin = interleaved_latency(contents, rounds=7, runs=700, builtin=set(contents))
    print("\ndigits CNN pruned to 80%, 1 thread, median of 7 interleaved rounds")
    print(
        f"{'file':<16}{'bytes':>8}{'default ms':>12}{'runtime':>10}{'builtin ms':>12}"
        f"{'xnnpack_sparse':>16}"
    )
    for name, result in files.items():
        runtime = "builtin" if name in builtin else "xnnpack"
        print(
            f"{name:<16}{result.size_bytes:>8}{ms[name]:>12.4f}{runtime:>10}"
            f"{ms_builtin[name]:>12.4f}{str(result.xnnpack_sparse):>16}"
        )
    print(
        f"info  sparse int8 (builtin) / dense int8 (XNNPACK): "
        f"{ms['int8 sparse'] / ms['int8 dense']:.2f}x"
    )

    keras.utils.set_random_seed(0)
    inputs = keras.Input((96, 96, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="valid", activation="relu")(x)
    for _ in range(4):
        x = keras.layers.Conv2D(128, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    pattern = keras.Model(inputs, keras.layers.Dense(10)(x))
    for layer in pattern.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[0] == 1:
            w = layer.kernel.numpy()
            w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0
            layer.kernel.assign(w)
    with silenced():
        dense = tfslim.convert(pattern, quantization="none", sparse=False)
        sparse = tfslim.convert(pattern, quantization="none")
    ms = interleaved_latency(
        {"dense": dense.flatbuffer, "sparse": sparse.flatbuffer}, rounds=7, runs=140
    )
    print(
        f"\nXNNPACK sparse pattern (96x96x3 stem, four 90%-zero 1x1 convs), float32: "
        f"auto sparse={sparse.sparse}, xnnpack_sparse={sparse.xnnpack_sparse}; "
        f"dense {ms['dense']:.3f} ms, sparse {ms['sparse']:.3f} ms "
        f"({ms['sparse'] / ms['dense']:.2f}x; CHW sparse kernels are built for ARM, "
        "this host's CPU may not use them)"
    )


if __name__ == "__main__":
    main()
