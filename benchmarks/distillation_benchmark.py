"""Distillation benchmark: distilled students vs the same students alone, on digits and MNIST-1D.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/distillation_benchmark.py [--task mnist1d --seeds 3]

Both sections use tfslim's defaults (`tfslim.distill(teacher, student, x, y, epochs=...)`:
temperature 1, student_loss_weight 0.5) unless --temperature / --student-loss-weight are given.
For each seed every arm starts from the same initial student weights, with the same optimizer,
learning rate, batch size, epochs and data order. Accuracies are on the held-out split; int8
numbers come from the `.tflite` made by `tfslim.convert(..., target="mcu")`, scored by
`tfslim.evaluate` in the LiteRT interpreter. Rows give mean ± standard deviation over seeds.

- digits: teacher `build_digits_cnn()` (75k parameters); student
  `build_digits_cnn(width=16, dense_units=48)`; softmax outputs; 3 epochs.
- mnist1d: teacher `build_mnist1d_cnn(width=48, batch_norm=True, dropout=0.2)` (29k
  parameters); student `build_mnist1d_cnn(width=8)` (1.5k); logits outputs; 30 epochs. Adds
  `keras.distillation.Distiller` with its defaults (`LogitsDistillation()`, student_loss_weight
  0.5) compiled with the Keras-recommended `SparseCategoricalCrossentropy(from_logits=True)`,
  and the distilled + QAT + 50%-pruned student as fully-int8 TFLite.
"""

import argparse
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def spread(values) -> str:
    return (
        f"{np.mean(values):.4f} ± {np.std(values):.4f} "
        f"(min {min(values):.4f}, max {max(values):.4f})"
    )


def distill_kwargs(args) -> dict:
    kwargs = {}
    if args.temperature is not None:
        kwargs["temperature"] = args.temperature
    if args.student_loss_weight is not None:
        kwargs["student_loss_weight"] = args.student_loss_weight
    return kwargs


def shrunk_int8(teacher, student, data, args, lr, batch_size, epochs):
    """Distilled + QAT + 50% pruned student: (Keras accuracy, int8 TFLite accuracy, bytes)."""
    import keras

    import tfslim
    from tfslim.distillation import distill

    x_train, y_train, x_test, y_test = data
    shrunk = distill(
        teacher,
        student,
        x_train,
        y_train,
        epochs=epochs,
        batch_size=batch_size,
        optimizer=keras.optimizers.Adam(lr),
        quantize=True,
        pruning=0.5,
        **distill_kwargs(args),
    )
    result = tfslim.convert(shrunk, target="mcu")
    assert tfslim.inspect(result.flatbuffer)["fully_integer"]
    tflite = tfslim.evaluate(result.flatbuffer, (x_test, y_test))["tflite"]
    sparsity = shrunk.history.history["sparsity"][-1]
    return accuracy(shrunk, x_test, y_test), tflite, result.size_bytes, sparsity


def digits(args):
    import keras

    import tfslim
    from tfslim.architectures import build_digits_cnn
    from tfslim.datasets import load_digits_data
    from tfslim.distillation import distill

    loss, lr, epochs = "sparse_categorical_crossentropy", 2e-3, args.epochs or 3
    data = load_digits_data(0)
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(0)
    teacher = build_digits_cnn()
    teacher.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=20, batch_size=32, verbose=0)
    teacher_int8 = tfslim.convert(teacher, target="mcu", calibration_data=x_train[:200])

    def student(seed):
        keras.utils.set_random_seed(seed)
        return build_digits_cnn(width=16, dense_units=48)

    alone, distilled = [], []
    for seed in range(args.seeds):
        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        model.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=epochs, batch_size=32, verbose=0)
        alone.append(accuracy(model, x_test, y_test))
        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        model = distill(
            teacher,
            model,
            x_train,
            y_train,
            epochs=epochs,
            optimizer=keras.optimizers.Adam(lr),
            **distill_kwargs(args),
        )
        distilled.append(accuracy(model, x_test, y_test))
        print(f"digits seed {seed}: alone {alone[-1]:.4f}  distilled {distilled[-1]:.4f}")
    keras.utils.set_random_seed(100)
    shrunk_keras, shrunk_tflite, size, sparsity = shrunk_int8(
        teacher, student(0), data, args, lr, 32, epochs
    )
    params = student(0).count_params()
    print(
        f"\n## digits: teacher {teacher.count_params()} params, student {params} "
        f"({params / teacher.count_params():.1%}); {epochs} epochs, Adam({lr}), batch 32"
    )
    print("| model | test accuracy | int8 .tflite |")
    print("|---|---|---|")
    print(
        f"| teacher (float Keras) | {accuracy(teacher, x_test, y_test):.4f} | "
        f"{teacher_int8.size_bytes} B |"
    )
    print(f"| student alone, {args.seeds} seeds | {spread(alone)} | |")
    print(f"| student distilled (tfslim defaults), {args.seeds} seeds | {spread(distilled)} | |")
    print(f"| distilled + pruned {sparsity:.0%} + QAT (Keras), seed 0 | {shrunk_keras:.4f} | |")
    print(f"| same, fully-int8 TFLite | {shrunk_tflite:.4f} | {size} B |")
    gain = np.mean(distilled) - np.mean(alone)
    print(f"\ndigits distilled - alone: {100 * gain:+.2f} points (mean over {args.seeds} seeds)")


def mnist1d(args):
    import keras
    from keras.distillation import Distiller, LogitsDistillation

    import tfslim
    from tfslim.architectures import build_mnist1d_cnn
    from tfslim.datasets import load_mnist1d
    from tfslim.distillation import distill

    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    lr, epochs, batch_size = 1e-3, args.epochs or 30, 32
    data = load_mnist1d()
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(0)
    teacher = build_mnist1d_cnn(width=48, batch_norm=True, dropout=0.2)
    teacher.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, batch_size=batch_size, verbose=0)
    teacher_int8 = tfslim.convert(teacher, target="mcu", calibration_data=x_train[:500])

    def student(seed):
        keras.utils.set_random_seed(seed)
        return build_mnist1d_cnn(width=args.student_width)

    rows = {"alone": [], "tfslim": [], "keras": [], "shrunk": [], "int8": []}
    size = sparsity = None
    for seed in range(args.seeds):
        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        model.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
        rows["alone"].append(accuracy(model, x_test, y_test))

        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        model = distill(
            teacher,
            model,
            x_train,
            y_train,
            epochs=epochs,
            batch_size=batch_size,
            optimizer=keras.optimizers.Adam(lr),
            **distill_kwargs(args),
        )
        rows["tfslim"].append(accuracy(model, x_test, y_test))

        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        distiller = Distiller(teacher, model, LogitsDistillation())
        distiller.compile(keras.optimizers.Adam(lr), loss, metrics=["accuracy"])
        distiller.fit(x_train, y_train, epochs=epochs, batch_size=batch_size, verbose=0)
        rows["keras"].append(accuracy(distiller.student, x_test, y_test))

        keras.utils.set_random_seed(100 + seed)
        shrunk, int8, size, sparsity = shrunk_int8(
            teacher, student(seed), data, args, lr, batch_size, epochs
        )
        rows["shrunk"].append(shrunk)
        rows["int8"].append(int8)
        print(f"mnist1d seed {seed}: " + "  ".join(f"{k} {v[-1]:.4f}" for k, v in rows.items()))

    params = student(0).count_params()
    print(
        f"\n## mnist1d: teacher {teacher.count_params()} params, student {params} "
        f"({params / teacher.count_params():.1%}); {epochs} epochs, Adam({lr}), "
        f"batch {batch_size}, {args.seeds} seeds"
    )
    print("| model | test accuracy, mean ± std over seeds | int8 .tflite |")
    print("|---|---|---|")
    print(
        f"| teacher (float Keras) | {accuracy(teacher, x_test, y_test):.4f} | "
        f"{teacher_int8.size_bytes} B |"
    )
    print(f"| student alone | {spread(rows['alone'])} | |")
    print(f"| distilled, tfslim.distill defaults | {spread(rows['tfslim'])} | |")
    print(f"| distilled, keras.distillation.Distiller defaults | {spread(rows['keras'])} | |")
    print(
        f"| tfslim distilled + pruned {sparsity:.0%} + QAT (Keras) | {spread(rows['shrunk'])} | |"
    )
    print(f"| same, fully-int8 TFLite (tfslim.evaluate) | {spread(rows['int8'])} | {size} B |")
    alone = np.array(rows["alone"])
    for name in ("tfslim", "keras"):
        gain = np.array(rows[name]) - alone
        print(
            f"mnist1d {name} - alone: {100 * gain.mean():+.2f} points (paired per seed: "
            + ", ".join(f"{100 * g:+.1f}" for g in gain)
            + f"); spread of alone: {100 * alone.std():.2f} points"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("all", "digits", "mnist1d"), default="all")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="digits 3, mnist1d 30")
    parser.add_argument("--teacher-epochs", type=int, default=40, help="mnist1d teacher")
    parser.add_argument("--student-width", type=int, default=8, help="mnist1d student")
    parser.add_argument("--temperature", type=float, default=None)
    parser.add_argument("--student-loss-weight", type=float, default=None)
    args = parser.parse_args()
    start = time.time()
    if args.task in ("all", "digits"):
        digits(args)
    if args.task in ("all", "mnist1d"):
        mnist1d(args)
    print(f"\nwall {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
