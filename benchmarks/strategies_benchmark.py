"""Strategies benchmark: `tfslim.shrink` on MNIST-1D to a quarter of the baseline's int8 flash.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/strategies_benchmark.py [--seeds 3 --epochs 15]
     [--widths 0.3 0.25] [--out DIR]   (a rerun into the same --out resumes every seed)

Per seed: the baseline `build_mnist1d_cnn(width=48, batch_norm=True)` trains on 3,500 of the
4,000 training sequences (`--baseline-epochs`), is converted to full int8 for `--target` and its
flash measured; `tfslim.shrink` then runs with the budget `max_flash_bytes = baseline flash //
4` (channel-narrowed candidates at `--widths`, each distilled from the baseline with QAT
for `--epochs`), choosing on the 500 held-out training sequences. The test accuracy (1,000
sequences) of the baseline's int8 model and of the best candidate within budget comes from
their `.tflite` files in the LiteRT interpreter (`tfslim.evaluate`). The verdict: is the best
candidate within 1 point of the baseline, mean over seeds, and per seed. Every figure of one
row comes from the same run; the rows' mean ± std is over seeds.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_ROOT = str(Path(__file__).resolve().parents[1])
sys.path.insert(0, _ROOT)
# Child processes (the isolated LiteRT runs) import this checkout too, not an installed copy.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))

import numpy as np  # noqa: E402


def one_seed(seed, args, out_dir):
    import keras

    import tfslim
    from tfslim.architectures import build_mnist1d_cnn
    from tfslim.datasets import load_mnist1d

    x_train, y_train, x_test, y_test = load_mnist1d()
    train, val = (x_train[:3500], y_train[:3500]), (x_train[3500:], y_train[3500:])
    # The trained baseline is kept, so a rerun into the same --out resumes each seed's shrink.
    saved = os.path.join(
        out_dir, f"baseline_seed{seed}_w{args.width}_e{args.baseline_epochs}.keras"
    )
    start = time.perf_counter()
    if os.path.exists(saved):
        baseline = keras.saving.load_model(saved)
    else:
        keras.utils.set_random_seed(seed)
        baseline = build_mnist1d_cnn(width=args.width, batch_norm=True)
        baseline.compile(
            keras.optimizers.Adam(1e-3),
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        baseline.fit(*train, epochs=args.baseline_epochs, batch_size=32, verbose=0)
        baseline.save(saved)
    trained_s = time.perf_counter() - start
    flash = tfslim.convert(baseline, target=args.target, calibration_data=train[0][:200])
    budget = tfslim.Budget.from_target(args.target, max_flash_bytes=flash.size_bytes // 4)
    start = time.perf_counter()
    result = tfslim.shrink(
        baseline,
        train,
        val,
        target=args.target,
        budget=budget,
        techniques=["channels"],
        widths=args.widths,
        epochs=args.epochs,
        directory=os.path.join(out_dir, f"seed{seed}"),
        latency_runs=10,
        seed=seed,
        log=lambda line: print(f"  seed {seed}: {line}", flush=True),
    )
    shrink_s = time.perf_counter() - start

    def test_accuracy(candidate):
        return tfslim.evaluate(candidate.tflite_path, (x_test, y_test))["tflite"]

    chosen = result.best or result.closest
    row = {
        "seed": seed,
        "baseline_params": baseline.count_params(),
        "baseline_flash": result.baseline_candidate.footprint.flash_bytes,
        "budget": budget.max_flash_bytes,
        "baseline_test": test_accuracy(result.baseline_candidate),
        "best": chosen.name,
        "fits": chosen.feasible,
        "best_flash": chosen.footprint.flash_bytes,
        "best_arena": chosen.footprint.arena_bytes,
        "best_test": test_accuracy(chosen),
        "train_s": trained_s,
        "shrink_s": shrink_s,
        "report": result.files["png"],
    }
    row["gap_points"] = 100 * (row["baseline_test"] - row["best_test"])
    return row


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--width", type=int, default=48, help="baseline filters")
    parser.add_argument("--baseline-epochs", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=15, help="per candidate")
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.4, 0.3, 0.25])
    parser.add_argument("--target", default="nano33ble")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    out_dir = args.out or tempfile.mkdtemp(prefix="strategies_benchmark_")
    os.makedirs(out_dir, exist_ok=True)
    rows = [one_seed(seed, args, out_dir) for seed in range(args.seeds)]
    header = (
        f"{'seed':>4} {'baseline':>10} {'budget':>8} {'base test':>9} {'best':<10} {'fits':>4} "
        f"{'flash':>7} {'arena':>7} {'best test':>9} {'gap pts':>7} {'shrink s':>8}"
    )
    print(f"\nshrink on MNIST-1D ({args.target}), budget = baseline int8 flash // 4")
    print(header)
    for r in rows:
        print(
            f"{r['seed']:>4} {r['baseline_flash']:>8} B {r['budget']:>6} B "
            f"{r['baseline_test']:>9.4f} {r['best']:<10} {'yes' if r['fits'] else 'NO':>4} "
            f"{r['best_flash']:>5} B {r['best_arena'] or 0:>5} B {r['best_test']:>9.4f} "
            f"{r['gap_points']:>+7.2f} {r['shrink_s']:>8.0f}"
        )
    gaps = np.array([r["gap_points"] for r in rows])
    base = np.array([r["baseline_test"] for r in rows])
    best = np.array([r["best_test"] for r in rows])
    print(
        f"\nbaseline int8 test {base.mean():.4f} ± {base.std():.4f}; best within budget "
        f"{best.mean():.4f} ± {best.std():.4f}; gap {gaps.mean():+.2f} ± {gaps.std():.2f} "
        f"points over {len(rows)} seed(s)"
    )
    within = all(r["fits"] for r in rows) and gaps.mean() <= 1.0
    print(
        "verdict: "
        + (
            "within 1 point of the baseline at <= 1/4 of its flash"
            if within
            else f"NOT within 1 point: the closest misses by {gaps.mean() - 1.0:.2f} points "
            "beyond the 1-point allowance (mean over seeds)"
        )
    )
    print(f"runs and front.png of each seed under {out_dir}")


if __name__ == "__main__":
    main()
