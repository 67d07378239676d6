"""Distillation benchmark on digits: distilled student vs the same student alone, and the shrunk
(distilled + 50% pruned + QAT) student against its fully-int8 TFLite file.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/distillation_benchmark.py [--epochs 3 --seeds 3]

Teacher: tfslim.architectures.build_digits_cnn() (75k parameters), trained once. Student:
build_digits_cnn(width=16, dense_units=48), about a quarter of the teacher's parameters. For
each seed the student starts from the same initial weights in both arms (alone / distilled),
with the same optimizer, learning rate, batch size, epochs and data order. Accuracies are on the
held-out split; int8 numbers come from the converted .tflite run in the LiteRT interpreter.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

LOSS = "sparse_categorical_crossentropy"


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=256), -1) == y))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--teacher-epochs", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--temperature", type=float, default=8.0)
    parser.add_argument("--student-loss-weight", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()

    import keras

    import tfslim
    from tfslim.architectures.digits import build_digits_cnn
    from tfslim.datasets import load_digits_data
    from tfslim.distillation import distill

    x_train, y_train, x_test, y_test = load_digits_data(0)
    start = time.time()
    keras.utils.set_random_seed(0)
    teacher = build_digits_cnn()
    teacher.compile(keras.optimizers.Adam(args.lr), LOSS, metrics=["accuracy"])
    teacher.fit(x_train, y_train, epochs=args.teacher_epochs, batch_size=32, verbose=0)
    teacher_acc = accuracy(teacher, x_test, y_test)
    teacher_int8 = tfslim.convert(teacher, target="mcu", calibration_data=x_train[:200])

    def student(seed):
        keras.utils.set_random_seed(seed)
        return build_digits_cnn(width=16, dense_units=48)

    alone, distilled = [], []
    for seed in range(args.seeds):
        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        model.compile(keras.optimizers.Adam(args.lr), LOSS, metrics=["accuracy"])
        model.fit(x_train, y_train, epochs=args.epochs, batch_size=32, verbose=0)
        alone.append(accuracy(model, x_test, y_test))
        model = student(seed)
        keras.utils.set_random_seed(100 + seed)
        model = distill(
            teacher, model, x_train, y_train, epochs=args.epochs,
            optimizer=keras.optimizers.Adam(args.lr), temperature=args.temperature,
            student_loss_weight=args.student_loss_weight,
        )  # fmt: skip
        distilled.append(accuracy(model, x_test, y_test))
        print(f"seed {seed}: alone {alone[-1]:.4f}  distilled {distilled[-1]:.4f}", flush=True)

    # Distilled + 50% pruned + QAT, exported to full int8.
    keras.utils.set_random_seed(0)
    shrunk = distill(
        teacher, student(0), x_train, y_train, epochs=args.epochs,
        optimizer=keras.optimizers.Adam(args.lr), temperature=args.temperature,
        student_loss_weight=args.student_loss_weight, quantize=True, pruning=0.5,
    )  # fmt: skip
    shrunk_keras = accuracy(shrunk, x_test, y_test)
    shrunk_int8 = tfslim.convert(shrunk, target="mcu")
    info = tfslim.inspect(shrunk_int8.flatbuffer)
    shrunk_tflite = tfslim.evaluate(shrunk_int8.flatbuffer, (x_test, y_test))["tflite"]
    sparsity = shrunk.history.history["sparsity"][-1]
    student_params = student(0).count_params()

    def spread(values):
        return f"{np.mean(values):.4f} ± {np.std(values):.4f} (min {min(values):.4f}, " + (
            f"max {max(values):.4f})"
        )

    print()
    print(f"teacher params {teacher.count_params()}, student params {student_params} "
          f"({student_params / teacher.count_params():.1%}); epochs {args.epochs}, "
          f"T={args.temperature}, student_loss_weight={args.student_loss_weight}")  # fmt: skip
    print("| model | test accuracy | int8 .tflite |")
    print("|---|---|---|")
    print(f"| teacher (float Keras) | {teacher_acc:.4f} | {teacher_int8.size_bytes} B |")
    print(f"| student alone, {args.seeds} seeds | {spread(alone)} | |")
    print(f"| student distilled, {args.seeds} seeds | {spread(distilled)} | |")
    print(f"| distilled + pruned {sparsity:.0%} + QAT (Keras) | {shrunk_keras:.4f} | |")
    print(
        f"| same, fully-int8 TFLite (fully_integer={info['fully_integer']}) | "
        f"{shrunk_tflite:.4f} | {shrunk_int8.size_bytes} B |"
    )
    gain = np.mean(distilled) - np.mean(alone)
    print(f"\ndistilled - alone: {100 * gain:+.2f} points (mean over {args.seeds} seeds); "
          f"int8 TFLite - Keras: {100 * (shrunk_tflite - shrunk_keras):+.2f} points; "
          f"wall {time.time() - start:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
