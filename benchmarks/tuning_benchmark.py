"""Footprint-aware search vs a plain KerasTuner RandomSearch on digits, nano33ble budget.

Both searches get the same trials, epochs and architecture space
(`tfslim.tuning.build_digits_search_model`). The plain search maximizes float
`val_accuracy` and knows nothing of the device; afterwards every one of its models is
converted to int8 for the target and checked against the same budget, and its best
feasible model is the one it would have shipped. tfslim's search also draws QAT and
sparsity, and scores the converted int8 model under the budget.

Usage: python benchmarks/tuning_benchmark.py [--trials 8] [--epochs 2] [--out DIR]
"""

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def plain_random_search(trials, epochs, budget, target, seed, directory, data):
    import keras
    import keras_tuner

    import tfslim
    from tfslim.tuning import build_digits_search_model

    x_train, y_train, x_test, y_test = data

    def build(hp):
        model = build_digits_search_model(hp)
        model.compile(
            keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
        )
        return model

    class RandomSearch(keras_tuner.RandomSearch):
        # KerasTuner 1.4.8 imports tensorboard in every Keras trial on the TF backend even
        # without a TensorBoard callback; tensorboard is not installed here.
        def _configure_tensorboard_dir(self, callbacks, trial, execution=0):
            pass

    tuner = RandomSearch(
        build,
        objective="val_accuracy",
        max_trials=trials,
        seed=seed,
        directory=directory,
        project_name="plain",
        overwrite=True,
    )
    tuner.search(
        x_train, y_train, epochs=epochs, batch_size=32, validation_data=(x_test, y_test), verbose=0
    )
    rows = []
    for trial in tuner.oracle.get_best_trials(trials):
        model = tuner.load_model(trial)
        result = tfslim.convert(model, target=target, calibration_data=x_train[:100])
        report = tfslim.inspect(result.flatbuffer, target=target)
        estimate = report["targets"][target]["latency_estimate"]
        figures = {
            "flash_bytes": report["size_bytes"],
            "ram_bytes": report["micro"]["arena_bytes"],
            "mcu_latency_ms": estimate["value_ms"],
        }
        violations = budget.violations(figures) + report["targets"][target]["reasons"]
        rows.append(
            {
                "trial_id": trial.trial_id,
                "val_accuracy_float": trial.score,
                "quality": tfslim.evaluate(result.flatbuffer, (x_test, y_test))["tflite"],
                **figures,
                "feasible": not violations,
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--target", default="nano33ble")
    parser.add_argument("--max-mcu-latency-ms", type=float, default=2.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()

    import keras

    import tfslim
    from tfslim.datasets import load_digits_data
    from tfslim.tuning import Budget, run_builtin_search

    out = args.out or tempfile.mkdtemp(prefix="tfslim_tuning_bench_")
    budget = Budget.from_target(args.target, max_mcu_latency_ms=args.max_mcu_latency_ms)
    t0 = time.time()
    report = run_builtin_search(
        target=args.target,
        max_trials=args.trials,
        out_dir=os.path.join(out, "tfslim"),
        epochs=args.epochs,
        max_mcu_latency_ms=args.max_mcu_latency_ms,
        seed=args.seed,
    )
    t_ours = time.time() - t0
    front = report["front"]
    # Re-inspect every front model: the claim is that each one fits.
    fits = []
    for r in front:
        path = os.path.join(out, "tfslim", "search", f"trial_{r['trial_id']}", "model.tflite")
        inspected = tfslim.inspect(path, target=args.target)
        fits.append(
            inspected["targets"][args.target]["fits"]
            and not budget.violations({**r, "flash_bytes": inspected["size_bytes"]})
        )

    keras.utils.set_random_seed(args.seed)
    t0 = time.time()
    plain = plain_random_search(
        args.trials, args.epochs, budget, args.target, args.seed, out, load_digits_data(args.seed)
    )
    t_plain = time.time() - t0
    plain_feasible = [r for r in plain if r["feasible"]]
    # The plain tuner ships its best feasible model by its own objective (float accuracy).
    plain_best = max(plain_feasible, key=lambda r: r["val_accuracy_float"], default=None)
    ours_best = front[0] if front else None

    print(
        f"\nTarget {args.target}, budget {budget.to_dict()}, {args.trials} trials, "
        f"{args.epochs} epochs\n"
    )
    print(
        "| search | trials feasible | best feasible int8 accuracy | flash B | arena B "
        "| MCU ms (est.) | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, rows, best, secs in (
        ("tfslim FootprintTuner", report["trials"], ours_best, t_ours),
        ("plain RandomSearch", plain, plain_best, t_plain),
    ):
        n_ok = sum(r["feasible"] for r in rows)
        if best is None:
            print(f"| {name} | {n_ok}/{len(rows)} | none | - | - | - | {secs:.0f} |")
        else:
            print(
                f"| {name} | {n_ok}/{len(rows)} | {best['quality']:.4f} | "
                f"{best['flash_bytes']:.0f} | {best['ram_bytes']:.0f} | "
                f"{best['mcu_latency_ms']:.3f} | {secs:.0f} |"
            )
    print(f"\nPareto front: {len(front)} models, all fit when re-inspected: {all(fits)}")
    summary = {
        "front_size": len(front),
        "front_all_fit": all(fits),
        "ours_best": ours_best,
        "plain_best": plain_best,
        "plain_trials": plain,
        "report_files": report["files"],
    }
    with open(os.path.join(out, "tuning_benchmark.json"), "w") as f:
        json.dump(summary, f, indent=1)
    print(f"Written: {out}/tuning_benchmark.json, {report['files']['png']}")


if __name__ == "__main__":
    main()
