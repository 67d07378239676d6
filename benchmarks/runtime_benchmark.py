"""Interpreter isolation side by side: inspect, fidelity and memory on MLPerf Tiny models.

    python benchmarks/runtime_benchmark.py [--repeats 3] [--json out.json]

Table 1, `tfslim.inspect` on each file of `tflite_models/reference/`: the TFLite Micro
arena figure and time per call with today's code (first call of a process, which starts
the runtime host, and later calls), beside the previous approach run in the same process:
the old search (bisection from 4x the file size) with one new Python process per probe.
The figure must not change. Table 2, the cost of running a converted model in a child
(`converter._fidelity`, `tfslim.predict`) against running it in the caller's process.
Table 3, `tfslim.benchmark`'s memory figures for each file. Times are medians over
`--repeats`; the host shares 2 cores with other work, so compare within one run.
"""

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "tflite_models" / "reference"

# The previous probe: a fresh Python per arena size.
_OLD_PROBE = """
import sys
import numpy as np
from tflite_micro.python.tflite_micro import runtime
model = open(sys.argv[1], "rb").read()
try:
    interp = runtime.Interpreter.from_bytes(model, arena_size=int(sys.argv[2]))
    d = interp.get_input_details(0)
    interp.set_input(np.zeros(d["shape"], dtype=d["dtype"]), 0)
    interp.invoke()
except RuntimeError:
    sys.exit(3)
sys.stderr.flush()
interp.print_allocations()
"""


def _old_probe(path: Path, arena: int) -> tuple[bool, str]:
    proc = subprocess.run(
        [sys.executable, "-c", _OLD_PROBE, str(path), str(arena)], capture_output=True, text=True
    )
    return proc.returncode == 0, proc.stderr


def old_arena_search(path: Path) -> tuple[int, int]:
    """The search tfslim used before, probe for probe; returns (arena, probes)."""
    probes = 0

    def probe(arena):
        nonlocal probes
        probes += 1
        return _old_probe(path, arena)

    hi = max(16 * 1024, path.stat().st_size * 4)
    ok, log = probe(hi)
    while not ok:
        hi *= 4
        ok, log = probe(hi)
    totals = re.findall(r"Arena allocation total (\d+) bytes", log)
    reported = int(totals[-1]) if totals else 0
    lo, margin = max(0, reported - 16), 512
    while reported and reported + margin < hi:
        ok, _ = probe(reported + margin)
        if ok:
            hi = reported + margin
            break
        lo = reported + margin
        margin *= 4
    while hi - lo > 16:
        mid = (lo + hi) // 2 // 16 * 16
        if mid <= lo:
            break
        ok, _ = probe(mid)
        hi, lo = (mid, lo) if ok else (hi, mid)
    return hi, probes


def _median_time(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _table(rows: list[list], header: list[str]) -> str:
    cells = [header] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    import tfslim
    from tfslim.litert import interpreter, isolation

    files = sorted(REFERENCE.glob("*.tflite"))
    manifest = json.loads((REFERENCE / "manifest.json").read_text())["models"]
    expected = {m["file"]: m["arena_bytes"] for m in manifest.values()}
    out = {"inspect": [], "isolation": [], "memory": []}

    rows = []
    for path in files:
        isolation.stop()
        t = time.perf_counter()
        first = tfslim.inspect(path)["micro"]
        cold = time.perf_counter() - t
        warm, report = _median_time(lambda p=path: tfslim.inspect(p)["micro"], args.repeats)
        t = time.perf_counter()
        old_arena, old_probes = old_arena_search(path)
        old = time.perf_counter() - t
        assert first["arena_bytes"] == report["arena_bytes"] == old_arena, path
        row = {
            "model": path.stem,
            "arena_bytes": report["arena_bytes"],
            "manifest_arena_bytes": expected.get(path.name),
            "first_call_s": round(cold, 3),
            "later_call_s": round(warm, 3),
            "old_s": round(old, 3),
            "old_probes": old_probes,
        }
        out["inspect"].append(row)
        rows.append([*row.values(), f"{old / warm:.1f}x"])
    print("tfslim.inspect, TFLite Micro arena (first call starts the runtime host)")
    header = ["model", "arena B", "manifest B", "first call s", "later calls s"]
    print(_table(rows, [*header, "old s", "old probes", "old / later"]))

    model = (REFERENCE / "ds_cnn_int8.tflite").read_bytes()
    x = np.random.default_rng(0).random((32, 49, 10, 1), dtype=np.float32)

    def in_process():
        interp, _ = interpreter.make_interpreter(model_content=model)
        return interpreter.run_batches(interp, x)[0]

    def isolated():
        return isolation.run(interpreter.predict_task, model, data=x)["outputs"][0]

    local_s, expected_y = _median_time(in_process, args.repeats)
    isolation.stop()
    t = time.perf_counter()
    np.testing.assert_allclose(isolated(), expected_y)
    cold_s = time.perf_counter() - t
    warm_s, _ = _median_time(isolated, args.repeats)
    isolation.stop()
    t = time.perf_counter()
    isolation.run(interpreter.verify_task, model)
    start_s = time.perf_counter() - t
    out["isolation"] = {
        "in_process_s": round(local_s, 4),
        "child_first_call_s": round(cold_s, 4),
        "child_later_call_s": round(warm_s, 4),
        "host_start_and_verify_s": round(start_s, 4),
    }
    print("\nRunning ds_cnn on 32 samples (what converter._fidelity does per convert call)")
    print(
        _table(
            [
                ["in the caller's process (before)", f"{local_s:.4f}"],
                ["in a child, first call (starts the host)", f"{cold_s:.4f}"],
                ["in a child, later calls (fork of the host)", f"{warm_s:.4f}"],
                ["host start + LiteRT verifier only", f"{start_s:.4f}"],
            ],
            ["where", "s"],
        )
    )

    rows = []
    for path in files:
        latency = tfslim.benchmark(path, runs=20, warmup=2)["latency"]
        for runtime, v in latency.items():
            row = {
                "model": path.stem,
                "runtime": runtime,
                "size_bytes": path.stat().st_size,
                "model_memory_bytes": v["model_memory_bytes"],
                "invoke_peak_memory_bytes": v["invoke_peak_memory_bytes"],
                "process_peak_rss_bytes": v["process_peak_rss_bytes"],
            }
            out["memory"].append(row)
            rows.append(list(row.values()))
    source = latency["builtin"]["memory_source"]
    print(f"\ntfslim.benchmark memory ({source}; process peak is the whole child)")
    print(
        _table(
            rows,
            ["model", "runtime", "file B", "model memory B", "invoke peak B", "process peak B"],
        )
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
