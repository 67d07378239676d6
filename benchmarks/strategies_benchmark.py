"""Strategies benchmark: `tfslim.shrink` and `tfslim.grow_improve_shrink` on MNIST-1D.

Run: TF_CPP_MIN_LOG_LEVEL=2 python benchmarks/strategies_benchmark.py [--seeds 3 --epochs 15]
     [--widths 0.3 0.25] [--techniques channels cluster --clusters 16] [--out DIR]
     (a rerun into the same --out resumes every seed)
     python benchmarks/strategies_benchmark.py --strategy grow --seeds 3 --epochs 8
     [--growth 1.5 2.0 w1.5d4 d5] [--out DIR]

Per seed: the baseline `build_mnist1d_cnn(width=48, batch_norm=True)` trains on 3,500 of the
4,000 training sequences (`--baseline-epochs`), is converted to full int8 for `--target`; every
choice is made on the 500 held-out training sequences, and every test accuracy (1,000
sequences) comes from a `.tflite` file in the LiteRT interpreter (`tfslim.evaluate`).

`--strategy shrink` (the default): `tfslim.shrink` with the budget `max_flash_bytes =
baseline flash // 4` (channel-narrowed candidates at `--widths`, each distilled from the
baseline with QAT for `--epochs`; `--techniques` adds levers, e.g. `cluster`: kernels clustered
to `--clusters` values, clustering-preserving QAT, LUT-compressed for TFLite Micro). The verdict:
is the best candidate within budget within 1 point of the baseline, mean over seeds, and per
seed. Every candidate of each seed is listed with its test accuracy too; a LUT-compressed one
runs only in TFLite Micro, so its test accuracy comes from its uncompressed twin (identical
outputs) and its flash and arena from the compressed file.

`--strategy grow`: `tfslim.grow_improve_shrink` with `footprint_of=` the baseline, so the
budget is its measured int8 flash and TFLite Micro arena. Each entry of `--growth` (a width
factor such as `1.5`, or `w<factor>d<depth>` such as `w1.5d4`, or `d<depth>` such as `d5`)
makes `build_mnist1d_cnn(width=round(48 * factor), depth=depth)` (depth 3 by default),
trained like the baseline, then channel-pruned back (to `1 / factor` of its width for a
wider one, to the width that matches the baseline's flash for a deeper one; narrower while
over budget) and distilled from the grown
model with QAT for `--epochs`; the baseline distilled + QAT for as long is shown beside it.
The best grown-then-shrunk model within budget (by validation quality) is compared with the
baseline on test: the margin, and whether its mean over seeds exceeds the seed-to-seed spread
(the std of the baseline's test accuracy; the std of the per-seed margin is shown too).

Every figure of one row comes from the same run; the rows' mean ± std is over seeds.
"""

import argparse
import math
import os
import re
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

# The depth of `build_mnist1d_cnn`, the baseline's.
_BASE_DEPTH = 3
_GROWTH = re.compile(r"(?:w(?P<w>\d+(?:\.\d*)?|\.\d+))?(?:d(?P<d>\d+))?")


def growth_entry(text: str):
    """One `--growth` entry: `1.5` or `w1.5` (a width factor), `w1.5d4` or `d4` (with a
    depth), as `grow_improve_shrink(growth=...)` takes it (a float or a mapping).

    Checked here, before the baseline trains: the entry must grow the baseline (a width
    factor above 1, or a depth above the baseline's 3).
    """
    expected = (
        "expected a width factor above 1 such as 1.5, or w<factor>d<depth> such as w1.5d4 "
        f"or d<depth> such as d5 that grows the baseline (factor >= 1, depth >= {_BASE_DEPTH}, "
        f"one of them above); got {text!r}"
    )
    try:
        factor, depth = float(text), None
    except ValueError:
        match = _GROWTH.fullmatch(text.strip().lower())
        if match is None or not (match["w"] or match["d"]):
            raise argparse.ArgumentTypeError(expected) from None
        factor = float(match["w"] or 1.0)
        depth = None if match["d"] is None else int(match["d"])
    if depth == _BASE_DEPTH:
        depth = None  # The baseline's own depth: the entry grows only in width.
    if not math.isfinite(factor) or factor < 1 or (depth is not None and depth < _BASE_DEPTH):
        raise argparse.ArgumentTypeError(expected)
    if depth is None:
        if factor == 1:
            raise argparse.ArgumentTypeError(expected)
        return factor
    return {"width_multiplier": factor, "depth": depth}


def growth_label(entry) -> str:
    """An entry as `--growth` spells it: `1.5`, `w1.5d4`, `d4`."""
    if not isinstance(entry, dict):
        return f"{entry:g}"
    factor = entry["width_multiplier"]
    return ("" if factor == 1 else f"w{factor:g}") + f"d{entry['depth']}"


def split():
    from tfslim.datasets import load_mnist1d

    x_train, y_train, x_test, y_test = load_mnist1d()
    train, val = (x_train[:3500], y_train[:3500]), (x_train[3500:], y_train[3500:])
    return train, val, (x_test, y_test)


def trained_baseline(seed, args, out_dir, train):
    """The seed's baseline CNN, trained once and kept in `out_dir` (both modes share it)."""
    import keras

    from tfslim.architectures import build_mnist1d_cnn

    # The trained baseline is kept, so a rerun into the same --out resumes each seed's run.
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
    return baseline, time.perf_counter() - start


def accuracy_on(candidate, test):
    """The test accuracy of a candidate's `.tflite` file in the LiteRT interpreter (of the
    same int8 model uncompressed for a LUT-compressed one, which LiteRT cannot run)."""
    import tfslim

    return tfslim.evaluate(candidate.uncompressed_path or candidate.tflite_path, test)["tflite"]


def shrink_seed(seed, args, out_dir):
    import tfslim

    train, val, test = split()
    baseline, trained_s = trained_baseline(seed, args, out_dir, train)
    flash = tfslim.convert(baseline, target=args.target, calibration_data=train[0][:200])
    budget = tfslim.Budget.from_target(args.target, max_flash_bytes=flash.size_bytes // 4)
    start = time.perf_counter()
    result = tfslim.shrink(
        baseline,
        train,
        val,
        target=args.target,
        budget=budget,
        techniques=args.techniques,
        widths=args.widths,
        clusters=args.clusters,
        epochs=args.epochs,
        directory=os.path.join(out_dir, f"seed{seed}"),
        latency_runs=10,
        seed=seed,
        log=lambda line: print(f"  seed {seed}: {line}", flush=True),
    )
    shrink_s = time.perf_counter() - start

    chosen = result.best or result.closest
    row = {
        "seed": seed,
        "baseline_params": baseline.count_params(),
        "baseline_flash": result.baseline_candidate.footprint.flash_bytes,
        "budget": budget.max_flash_bytes,
        "baseline_test": accuracy_on(result.baseline_candidate, test),
        "best": chosen.name,
        "fits": chosen.feasible,
        "best_flash": chosen.footprint.flash_bytes,
        "best_arena": chosen.footprint.arena_bytes,
        "best_test": accuracy_on(chosen, test),
        "train_s": trained_s,
        "shrink_s": shrink_s,
        "report": result.files["png"],
        "candidates": [
            {
                "name": c.name,
                "fits": c.feasible,
                "compressed": c.compressed,
                "flash": c.footprint.flash_bytes,
                "arena": c.footprint.arena_bytes,
                "val": c.quality,
                "test": accuracy_on(c, test),
            }
            for c in result.candidates
        ],
    }
    row["gap_points"] = 100 * (row["baseline_test"] - row["best_test"])
    return row


def grow_seed(seed, args, out_dir):
    import tfslim
    from tfslim.architectures import build_mnist1d_cnn

    train, val, test = split()
    baseline, trained_s = trained_baseline(seed, args, out_dir, train)

    def build(width_multiplier=1.0, depth=_BASE_DEPTH):
        return build_mnist1d_cnn(
            width=round(args.width * width_multiplier), batch_norm=True, depth=depth
        )

    start = time.perf_counter()
    result = tfslim.grow_improve_shrink(
        build,
        train,
        val,
        target=args.target,
        footprint_of=baseline,
        growth=args.growth,
        # A grown model gets the baseline's training; each shrunk one `--epochs` of
        # distillation from it + QAT, as does the baseline itself (original_qat).
        epochs=args.baseline_epochs,
        shrink_epochs=args.epochs,
        directory=os.path.join(out_dir, f"grow_seed{seed}"),
        latency_runs=10,
        seed=seed,
        log=lambda line: print(f"  seed {seed}: {line}", flush=True),
    )
    grow_s = time.perf_counter() - start
    base = result.baseline_candidate
    shrunk = [
        c
        for c in result.candidates
        if (c.spec.get("growth", 1) > 1 or c.spec.get("depth") is not None) and c.spec["width"] < 1
    ]
    fitting = [c for c in shrunk if c.feasible]
    # Chosen on the validation split (the candidates' measured quality), scored on test.
    chosen = max(fitting or shrunk, key=lambda c: c.quality)
    # The grown model is the candidate named as the shrunk one without its `_width` part.
    grown = result[chosen.name.rsplit("_width", 1)[0]]
    row = {
        "seed": seed,
        "baseline_flash": base.footprint.flash_bytes,
        "baseline_arena": base.footprint.arena_bytes,
        "baseline_test": accuracy_on(base, test),
        "qat_test": accuracy_on(result["original_qat"], test),
        "best": chosen.name,
        "growth": chosen.spec["growth"],
        "depth": chosen.spec.get("depth"),
        "width": chosen.spec["width"],
        "fits": chosen.feasible,
        "best_flash": chosen.footprint.flash_bytes,
        "best_arena": chosen.footprint.arena_bytes,
        "best_test": accuracy_on(chosen, test),
        "grown_test": accuracy_on(grown, test),
        "train_s": trained_s,
        "grow_s": grow_s,
    }
    row["margin_points"] = 100 * (row["best_test"] - row["baseline_test"])
    return row


def report_shrink(rows, args):
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
    print(
        "\nevery candidate (LUT: compressed for TFLite Micro, test accuracy of its uncompressed "
        "twin)"
    )
    print(
        f"{'seed':>4} {'candidate':<20} {'fits':>4} {'LUT':>3} {'flash':>8} {'arena':>8} "
        f"{'val':>6} {'test':>6}"
    )
    for r in rows:
        for c in r["candidates"]:
            print(
                f"{r['seed']:>4} {c['name']:<20} {'yes' if c['fits'] else 'NO':>4} "
                f"{'yes' if c['compressed'] else '':>3} {c['flash']:>6} B {c['arena'] or 0:>6} B "
                f"{c['val']:>6.4f} {c['test']:>6.4f}"
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


def report_grow(rows, args):
    print(
        f"\ngrow_improve_shrink on MNIST-1D ({args.target}), budget = the baseline's int8 flash "
        f"and arena; growth {' '.join(growth_label(g) for g in args.growth)}; test accuracy on "
        "1,000 sequences (LiteRT)"
    )
    print(
        f"{'seed':>4} {'base flash':>10} {'arena':>7} {'base test':>9} {'qat test':>8} "
        f"{'best':<16} {'fits':>4} {'flash':>8} {'arena':>7} {'grown test':>10} "
        f"{'best test':>9} {'margin':>7} {'grow s':>7}"
    )
    for r in rows:
        print(
            f"{r['seed']:>4} {r['baseline_flash']:>8} B {r['baseline_arena'] or 0:>5} B "
            f"{r['baseline_test']:>9.4f} {r['qat_test']:>8.4f} {r['best']:<16} "
            f"{'yes' if r['fits'] else 'NO':>4} {r['best_flash']:>6} B {r['best_arena'] or 0:>5} B "
            f"{r['grown_test']:>10.4f} {r['best_test']:>9.4f} {r['margin_points']:>+7.2f} "
            f"{r['grow_s']:>7.0f}"
        )

    def spread(key):
        values = np.array([r[key] for r in rows], dtype=float)
        return values.mean(), values.std()

    print()
    for key, label in (
        ("baseline_flash", "baseline int8 flash (B)"),
        ("baseline_arena", "baseline arena (B)"),
        ("baseline_test", "baseline int8 test"),
        ("qat_test", "baseline distilled + QAT test"),
        ("best_flash", "best grown-then-shrunk flash (B)"),
        ("best_arena", "best grown-then-shrunk arena (B)"),
        ("grown_test", "its grown model's test (over budget)"),
        ("best_test", "best grown-then-shrunk test"),
        ("margin_points", "margin over the baseline (points)"),
    ):
        mean, std = spread(key)
        digits = 0 if key.endswith(("flash", "arena")) else 2 if key == "margin_points" else 4
        print(f"  {label:<38} {mean:>10.{digits}f} ± {std:.{digits}f}")
    margin, margin_std = spread("margin_points")
    base_std = 100 * spread("baseline_test")[1]
    fits = all(r["fits"] for r in rows)
    # Spreads are the standard deviation over seeds (numpy's default, ddof=0).
    print(
        f"\nseed-to-seed spread: baseline test std {base_std:.2f} points; std of the per-seed "
        f"margin {margin_std:.2f} points; {len(rows)} seed(s)"
    )
    beats = fits and margin > base_std
    print(
        "verdict: "
        + (
            f"better than the baseline at <= its flash and arena by {margin:+.2f} points, more "
            f"than the baseline's seed-to-seed std ({base_std:.2f})"
            + (
                f" and than the margin's own std ({margin_std:.2f})"
                if margin > margin_std
                else f", but not more than the margin's own std ({margin_std:.2f})"
            )
            if beats
            else (
                "NOT within the baseline's flash and arena on every seed"
                if not fits
                else f"NOT better by more than the spread: the margin {margin:+.2f} points "
                f"misses the baseline's std ({base_std:.2f}) by {base_std - margin:.2f} points"
            )
        )
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategy", choices=["shrink", "grow"], default="shrink")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--width", type=int, default=48, help="baseline filters")
    parser.add_argument("--baseline-epochs", type=int, default=40, help="also each grown model's")
    parser.add_argument(
        "--epochs", type=int, default=15, help="distillation + QAT per shrunk candidate"
    )
    parser.add_argument("--widths", type=float, nargs="+", default=[0.5, 0.4, 0.3, 0.25])
    parser.add_argument(
        "--growth",
        type=growth_entry,
        nargs="+",
        default=[1.5, 2.0],
        help="width factors (1.5) and/or width-and-depth entries (w1.5d4, d5)",
    )
    parser.add_argument(
        "--techniques",
        nargs="+",
        default=["channels"],
        help="shrink's levers (tfslim.strategies.TECHNIQUES)",
    )
    parser.add_argument("--clusters", type=int, default=16, help="values per kernel of 'cluster'")
    parser.add_argument("--target", default="nano33ble")
    parser.add_argument("--out", default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args()
    if len({growth_label(g) for g in args.growth}) < len(args.growth):
        parser.error(f"argument --growth: expected distinct entries; got {args.growth}")
    out_dir = args.out or tempfile.mkdtemp(prefix="strategies_benchmark_")
    os.makedirs(out_dir, exist_ok=True)
    one_seed = grow_seed if args.strategy == "grow" else shrink_seed
    rows = [one_seed(seed, args, out_dir) for seed in range(args.seeds)]
    (report_grow if args.strategy == "grow" else report_shrink)(rows, args)
    print(f"runs and front.png of each seed under {out_dir}")


if __name__ == "__main__":
    main()
