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
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Measure this checkout, not an installed copy of tfslim.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
        # The same measurement the FootprintTuner makes of its own trials.
        footprint = tfslim.measure(result, target=target, data=(x_test, y_test), latency_runs=20)
        violations = budget.violations(footprint) + footprint.board_reasons[target]
        rows.append(
            {
                "trial_id": trial.trial_id,
                "val_accuracy_float": trial.score,
                **footprint.to_dict(),
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
    from tfslim.benchmarking.report import Column, footprint_columns, format_table
    from tfslim.datasets import load_digits_data
    from tfslim.tuning import Budget, run_builtin_search

    out = args.out or tempfile.mkdtemp(prefix="tfslim_tuning_bench_")
    budget = Budget.from_target(args.target, max_mcu_latency_estimate_ms=args.max_mcu_latency_ms)
    t0 = time.time()
    report = run_builtin_search(
        target=args.target,
        max_trials=args.trials,
        out_dir=os.path.join(out, "tfslim"),
        epochs=args.epochs,
        max_mcu_latency_estimate_ms=args.max_mcu_latency_ms,
        seed=args.seed,
    )
    t_ours = time.time() - t0
    front = report["front"]
    # Measure every front model's file again: the claim is that each one fits.
    fits = []
    for r in front:
        path = os.path.join(out, "tfslim", "search", f"trial_{r['trial_id']}", "model.tflite")
        again = tfslim.measure(path, target=args.target, latency_runs=0)
        fits.append(again.fits(args.target) and not budget.violations(again))

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
    best_rows = []
    for name, rows, best, secs in (
        ("tfslim FootprintTuner", report["trials"], ours_best, t_ours),
        ("plain RandomSearch", plain, plain_best, t_plain),
    ):
        n_ok = sum(r["feasible"] for r in rows)
        best_rows.append(
            {**(best or {}), "search": name, "feasible": f"{n_ok}/{len(rows)}", "wall_s": secs}
        )
    columns = [
        Column("search", "search", str, "left"),
        Column("trials feasible", "feasible", str),
        Column("best feasible int8 accuracy", "quality"),
        *footprint_columns([args.target], quality=None, gzip=False),
        Column("wall s", "wall_s", lambda v: f"{v:.0f}"),
    ]
    print(format_table(best_rows, columns))
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
