"""The `tfslim` command: a thin layer over the public API.

Tables for people by default, `--json` for machines. A user mistake is one line on
stderr and exit code 2, never a traceback. Arguments are checked before TensorFlow or
Keras is imported, so a mistake fails in well under a second, not after 20 s of imports.
"""

import argparse
import json
import math
import os
import re
import sys


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


def _table(rows: list[list], header: list[str]) -> str:
    """A plain-text table of ready-made cells, through the one report writer."""
    from tfslim.benchmarking.report import Column, format_table

    columns = [Column(h, lambda r, i=i: r[i], str, "left") for i, h in enumerate(header)]
    return format_table([list(r) for r in rows], columns, markdown=False)


def _check_out_dir(path: str, overwrite: bool) -> None:
    """Refuses an output folder that is a file, has no parent, or holds earlier output."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(f"--out: {path} is a file; expected a directory")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"--out: the parent directory of {path} does not exist")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise FileExistsError(
            f"--out: {path} is not empty; pass --overwrite to replace its earlier output"
        )


def _check_output_file(path: str, overwrite: bool) -> None:
    """Refuses an output file path before any conversion work is done."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"-o/--output: {path} is a directory; expected a file path")
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"-o/--output: directory {parent} does not exist")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"-o/--output: {path} exists; pass --overwrite to replace it")


def _check_number(flag: str, value, *, integer: bool, minimum: float, inclusive: bool) -> None:
    if value is None:
        return
    ok = math.isfinite(value) and (value >= minimum if inclusive else value > minimum)
    if not ok:
        kind = "an int" if integer else "a number"
        op = ">=" if inclusive else ">"
        raise ValueError(f"{flag}: expected {kind} {op} {minimum:g}, got {value}")


def _fmt_bytes(n) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n >= 1024 else f"{n} B"


def _load_npz(path: str, argument: str):
    import numpy as np

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{argument}: no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(6)
    if head != b"\x93NUMPY" and head[:4] != b"PK\x03\x04":
        raise ValueError(
            f"{argument}: {path} is not a NumPy file; expected a .npy array or a .npz archive "
            f"of arrays (np.save / np.savez). Received: a file starting with {head!r}"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):  # .npy: a single array of inputs.
            arrays = {"x": loaded}
        else:
            with loaded as f:
                arrays = {k: f[k] for k in f.files}
    except Exception as e:
        raise ValueError(f"{argument}: {path} is not a readable .npz/.npy file ({e})") from None
    x = arrays.get("x", next(iter(arrays.values()), None))
    y = arrays.get("y")
    if x is None:
        raise ValueError(f"{argument}: {path} holds no arrays")
    return x, y


def _cmd_targets(args) -> None:
    from tfslim.litert.mcu_latency import COST_MODELS
    from tfslim.litert.targets import list_targets

    targets = list_targets()
    if args.json:
        rows = [t.to_dict() for t in targets]
        for row in rows:  # The per-op latency figures beside each board's name of them.
            if row.get("cost_model") in COST_MODELS:
                row["latency_cost_model"] = COST_MODELS[row["cost_model"]].to_dict()
        _print_json(rows)
        return
    rows = [
        [
            t.name,
            t.kind,
            t.quantization,
            _fmt_bytes(t.flash_bytes),
            _fmt_bytes(t.ram_bytes),
            f"{t.clock_hz / 1e6:.0f} MHz" if t.clock_hz else "-",
            t.cost_model or "-",
            "-" if getattr(t, "cycles_per_mac", None) is None else f"{t.cycles_per_mac:g}",
            t.description,
        ]
        for t in targets
    ]
    header = ["target", "kind", "default", "flash", "ram", "clock", "cost model", "MAC-only"]
    print(_table(rows, [*header, "device"]))
    print(
        "\nMCU latency ESTIMATE, per op: sum of (dispatch + macs * cycles/MAC of its type, or "
        "elements * cycles/element) / clock; `tfslim inspect --json` shows the breakdown per "
        "op type. MAC-only (macs * cycles/MAC / clock) where no op list is known."
    )
    kinds = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"]
    elementwise = ["AVERAGE_POOL_2D", "ADD", "SOFTMAX", "RESHAPE"]
    cost_rows = [
        [
            m.name,
            *(f"{m.cycles_per_mac[k]:g}" for k in kinds),
            *(f"{m.cycles_per_element[k]:g}" for k in elementwise),
            f"{m.dispatch_cycles:g}",
            f"{m.default_cycles_per_mac:g} / {m.default_cycles_per_element:g}",
        ]
        for m in COST_MODELS.values()
    ]
    cost_header = [
        "cost model",
        "conv c/MAC",
        "dwconv c/MAC",
        "fc c/MAC",
        "avgpool c/in",
        "add c/el",
        "softmax c/el",
        "reshape c/el",
        "dispatch",
        "other ops (MAC / el)",
    ]
    print()
    print(_table(cost_rows, cost_header))
    print("\nSources:")
    for t in targets:
        print(f"  {t.name}: {t.source}")
    for m in COST_MODELS.values():
        print(f"  {m.name} cost model: {m.source}")


def _cmd_inspect(args) -> None:
    from tfslim.litert.inspection import inspect

    report = inspect(args.file, target=args.target or None, micro_check=not args.no_micro)
    if args.json:
        _print_json(report)
        return
    m = report.get("micro") or {}
    print(
        f"{args.file}: {_fmt_bytes(report['size_bytes'])} "
        f"(gzip {_fmt_bytes(report['gzip_bytes'])}), {report['params']} params "
        f"({report['nonzero_params']} non-zero), {report['macs']} MACs, "
        f"fully integer: {report['fully_integer']}"
    )
    for kind in ("inputs", "outputs"):
        for t in report[kind]:
            print(
                f"  {kind[:-1]} {t['name']}: {t['dtype']}{t['shape']} "
                f"scale={t['scale']} zero_point={t['zero_point']}"
            )
    print("  ops: " + ", ".join(f"{k}x{v}" for k, v in report["ops"].items()))
    if m:
        status = "supported" if m["supported"] else f"unsupported {m['unsupported_ops']}"
        if m.get("error"):  # Ops it has, but the interpreter could not run the model.
            status = m["error"]
        print(
            f"  TFLite Micro: {status}, arena {_fmt_bytes(m['arena_bytes'])} "
            f"(TFLM report {_fmt_bytes(m['arena_reported_bytes'])})"
        )
    if report.get("targets"):
        rows = []
        for name, v in report["targets"].items():
            est = v["latency_estimate"]
            rows.append(
                [
                    name,
                    "yes" if v["fits"] else "NO",
                    f"{_fmt_bytes(v['flash_bytes'])} / {_fmt_bytes(v['flash_budget'])}",
                    f"{_fmt_bytes(v['ram_bytes'])} / {_fmt_bytes(v['ram_budget'])}",
                    f"~{est['value_ms']} ms (estimate)" if est else "-",
                    "; ".join(v["reasons"]),
                ]
            )
        print()
        print(_table(rows, ["target", "fits", "flash", "ram", "latency", "why not"]))


def _cmd_bench(args) -> None:
    from tfslim.benchmarking.benchmark import benchmark

    data = None
    if args.data:
        x, y = _load_npz(args.data, "--data")
        if y is None:
            raise ValueError(f"--data: {args.data} needs arrays 'x' and 'y' for accuracy")
        data = (x, y)
    result = benchmark(
        args.file, data=data, target=args.target, threads=args.threads, runs=args.runs
    )
    if args.json:
        _print_json(result)
        return
    rows = [
        [
            k,
            v["runs"],
            v["latency_ms"]["median"],
            v["latency_ms"]["p90"],
            v["latency_ms"]["min"],
            round(v["init_ms"], 2),
            _fmt_bytes(v["model_memory_bytes"]),
            _fmt_bytes(v["invoke_peak_memory_bytes"]),
        ]
        for k, v in result["latency"].items()
    ]
    print(
        f"{args.file}: {_fmt_bytes(result['size_bytes'])}, {result['macs']} MACs, "
        f"threads={result['threads']}"
    )
    header = ["runtime", "runs", "median ms", "p90 ms", "min ms", "init ms"]
    print(_table(rows, [*header, "interpreter memory", "peak while invoking"]))
    for v in result["latency"].values():
        if v.get("note"):
            print(f"note: {v['note']}")
    if "accuracy" in result:
        a = result["accuracy"]
        print(f"{a['metric']} of the converted model on {a['n']} samples: {a['tflite']:.4f}")
    for name, est in (result.get("mcu_latency_estimate") or {}).items():
        print(f"{name}: ~{est['value_ms']} ms ESTIMATE ({est['formula']})")


def _cmd_convert(args) -> None:
    _check_output_file(args.output, args.overwrite)
    if not os.path.exists(args.model):
        raise FileNotFoundError(f"model: no such file or directory: {args.model}")
    calibration = _load_npz(args.calibration, "--calibration")[0] if args.calibration else None
    from tfslim.litert.converter import convert

    result = convert(
        args.model,
        target=args.target,
        quantization=args.quantization,
        calibration_data=calibration,
        io_dtype=args.io_dtype,
        sparse=args.sparse,
        output_path=args.output,
        overwrite=args.overwrite,
    )
    summary = {
        "output": result.path,
        "target": result.target.name,
        "quantization": result.quantization,
        "io_dtype": result.io_dtype,
        "size_bytes": result.size_bytes,
    }
    if args.json:
        _print_json(summary)
    else:
        print(
            f"wrote {result.path}: {_fmt_bytes(result.size_bytes)} "
            f"({result.quantization}, {result.io_dtype} I/O, target {result.target.name})"
        )


def _cmd_export_c(args) -> None:
    _check_output_file(args.output, args.overwrite)
    from tfslim.litert.export_c import export_c

    source, header = export_c(
        args.file, args.output, variable_name=args.name, overwrite=args.overwrite
    )
    if args.json:
        _print_json({"source": source, "header": header})
    else:
        print(f"wrote {source} and {header}")


def _cmd_demo(args) -> None:
    _check_number("--epochs", args.epochs, integer=True, minimum=1, inclusive=True)
    _check_out_dir(args.out, args.overwrite)
    from tfslim.demo import run_demo

    run_demo(
        out_dir=args.out,
        epochs=args.epochs,
        quick=args.quick,
        overwrite=args.overwrite,
        as_json=args.json,
    )


def _cmd_tune(args) -> None:
    from tfslim.litert.targets import require_micro

    require_micro(args.target, argument="--target")  # Fail fast, before TensorFlow loads.
    for flag, value in (
        ("--max-trials", args.max_trials),
        ("--epochs", args.epochs),
        ("--max-flash", args.max_flash),
        ("--max-arena", args.max_arena),
    ):
        _check_number(flag, value, integer=True, minimum=1, inclusive=True)
    _check_number(
        "--max-mcu-latency-ms", args.max_mcu_latency_ms, integer=False, minimum=0, inclusive=True
    )
    _check_out_dir(args.out, args.overwrite)
    from tfslim.benchmarking.report import format_table
    from tfslim.tuning import run_builtin_search
    from tfslim.tuning.report import trial_columns

    report = run_builtin_search(
        target=args.target,
        max_trials=args.max_trials,
        out_dir=args.out,
        epochs=args.epochs,
        max_mcu_latency_estimate_ms=args.max_mcu_latency_ms or None,
        max_flash_bytes=args.max_flash,
        max_arena_bytes=args.max_arena,
    )
    if args.json:
        _print_json(
            {k: v for k, v in report.items() if k != "trials"} | {"trials": len(report["trials"])}
        )
        return
    print(
        f"{len(report['trials'])} trials, {report['feasible_trials']} within the "
        f"{report['target']} budget; Pareto front of {len(report['front'])}:"
    )
    print(format_table(report["front"], trial_columns(report["target"]), markdown=False))
    print(
        "host latency: LiteRT on this CPU; "
        f"{report['target']} ms: ESTIMATE (per-op cost model, tfslim targets)"
    )
    files = report["files"]
    print(f"wrote {files['markdown']}, {files['json']} and {files['png']}")


_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


def _parse_size(flag: str, text: str | None) -> int | None:
    """`256KiB` -> 262144: a byte count with an optional B, KB, KiB, MB or MiB suffix."""
    if text is None:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match and match.group(2).lower()
    if not match or unit not in _SIZE_UNITS or float(match.group(1)) * _SIZE_UNITS[unit] < 1:
        raise ValueError(
            f"{flag}: expected a size in bytes >= 1, such as 65536, 64KiB or 1MB, got {text!r}"
        )
    return int(float(match.group(1)) * _SIZE_UNITS[unit])


def _levers(args) -> dict:
    """`techniques=` and `clusters=` of `tfslim.shrink` from `--techniques` / `--clusters`.

    Checked by shrink's own rules (`tfslim._levers`, which imports no Keras) before the
    model, the data or TensorFlow load, so a misspelt lever fails in well under a second.
    """
    from tfslim._levers import TECHNIQUES, check_clusters, check_techniques, unknown_techniques

    for flag, value in (("--techniques", args.techniques), ("--clusters", args.clusters)):
        if value is not None and args.strategy == "grow":
            raise ValueError(
                f"{flag}: only --strategy shrink takes levers; grow shrinks back by channel "
                f"pruning, got {flag} {value} with --strategy grow"
            )
    levers = {}
    names = []
    if args.techniques is not None:
        names = [name.strip() for name in args.techniques.split(",")]
        unknown = unknown_techniques(names)
        if unknown:
            raise ValueError(
                f"--techniques: unknown {', '.join(map(repr, unknown))}; expected "
                f"comma-separated names from {', '.join(TECHNIQUES)}, got {args.techniques!r}"
            )
        levers["techniques"] = list(check_techniques(names))
    if args.clusters is not None:
        if "cluster" not in names:
            raise ValueError(
                f"--clusters: only used by the cluster lever; add it, e.g. --techniques "
                f"qat,cluster, got --clusters {args.clusters} with --techniques "
                f"{args.techniques}"
            )
        levers["clusters"] = check_clusters(args.clusters)
    return levers


def _cmd_optimize(args) -> None:
    from tfslim.litert.targets import get_target

    target = get_target(args.target)  # Fail fast, before TensorFlow loads.
    max_flash = _parse_size("--max-flash", args.max_flash)
    max_ram = _parse_size("--max-ram", args.max_ram)
    _check_number(
        "--max-latency-ms", args.max_latency_ms, integer=False, minimum=0, inclusive=False
    )
    for flag, value in (("--epochs", args.epochs), ("--max-candidates", args.max_candidates)):
        _check_number(flag, value, integer=True, minimum=1, inclusive=True)
    levers = _levers(args)
    if not os.path.isfile(args.model) or not args.model.endswith(".keras"):
        raise FileNotFoundError(f"model: expected a .keras file, got {args.model}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise NotADirectoryError(f"--out: {args.out} is a file; expected a directory")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out: the parent directory of {args.out} does not exist")
    train, validation = (
        _load_npz(path, flag)
        for path, flag in ((args.data, "--data"), (args.validation, "--validation"))
    )
    for (_, y), flag, path in (
        (train, "--data", args.data),
        (validation, "--validation", args.validation),
    ):
        if y is None:
            raise ValueError(f"{flag}: {path} needs arrays 'x' and 'y' (integer labels)")
    import keras

    import tfslim
    from tfslim.benchmarking.report import format_table
    from tfslim.strategies.report import candidate_columns

    limits = {"max_flash_bytes": max_flash, "max_arena_bytes": max_ram}
    latency = "max_mcu_latency_estimate_ms" if target.is_micro else "max_latency_ms"
    limits[latency] = args.max_latency_ms
    limits = {k: v for k, v in limits.items() if v}
    budget = tfslim.Budget.from_target(target, **limits)
    if args.strategy == "grow" and not limits:
        budget = None  # grow_improve_shrink holds the grown models to the baseline's footprint
    model = keras.saving.load_model(args.model)
    progress = (lambda line: print(line, file=sys.stderr)) if args.json else print
    strategy = tfslim.shrink if args.strategy == "shrink" else tfslim.grow_improve_shrink
    result = strategy(
        model,
        train,
        validation,
        target=target,
        budget=budget,
        epochs=args.epochs,
        max_candidates=args.max_candidates,
        directory=args.out,
        overwrite=args.overwrite,
        log=progress,
        **levers,
    )
    if args.json:
        _print_json(result.to_dict() | {"files": dict(result.files)})
        return
    if not result.files:  # A worker of KerasTuner's distributed mode: the chief reports.
        made = ", ".join(c.name for c in result.candidates) or "none"
        print(f"\nmade {made}; the chief writes the fronts and the report in {args.out}")
        return
    for axis, front in result.front.items():
        print(f"\nPareto front, quality vs {axis}:")
        rows = [r for r in result.records() if r["name"] in {c.name for c in front}]
        print(format_table(rows, candidate_columns(result, markdown=False), markdown=False))
    best = result.best
    if best is None:
        closest = result.closest
        print(
            f"\nno candidate fits the budget; closest: {closest.name} "
            f"({'; '.join(closest.violations)})"
        )
    else:
        # A LUT-compressed best runs only in TFLite Micro; best.tflite is its uncompressed twin.
        written = result.files.get("best.lut.tflm", result.files["best.tflite"])
        print(
            f"\nbest within budget: {best.name} (quality {best.quality:.4f}, "
            f"{best.footprint.flash_bytes:,} B flash), written to {written}"
        )
    print(f"wrote {result.files['markdown']}, {result.files['json']} and {result.files['png']}")


def _cmd_qreport(args) -> None:
    _check_number("--top", args.top, integer=True, minimum=1, inclusive=True)
    _check_number("--max-samples", args.max_samples, integer=True, minimum=1, inclusive=True)
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model: no such file: {args.model}")
    if not args.model.endswith(".keras"):
        raise ValueError(f"model: expected a .keras file, got {args.model}")
    if args.plot:
        if os.path.isdir(args.plot):
            raise IsADirectoryError(f"--plot: {args.plot} is a directory; expected a .png path")
        parent = os.path.dirname(os.path.abspath(args.plot))
        if not os.path.isdir(parent):
            raise FileNotFoundError(f"--plot: directory {parent} does not exist")
        if os.path.exists(args.plot) and not args.overwrite:
            raise FileExistsError(f"--plot: {args.plot} exists; pass --overwrite to replace it")
    from tfslim.litert.targets import get_target

    get_target(args.target)
    x, _ = _load_npz(args.data, "--data")
    calibration = _load_npz(args.calibration, "--calibration")[0] if args.calibration else None
    from tfslim.benchmarking.quantization_report import quantization_report

    report = quantization_report(
        args.model,
        x,
        target=args.target,
        quantization=args.quantization,
        calibration_data=calibration,
        max_samples=args.max_samples,
    )
    if args.plot:
        report.plot(args.plot, top=args.top, overwrite=args.overwrite)
    if args.json:
        _print_json(report.to_dict())
        return
    print(report.table(top=args.top))
    if args.plot:
        print(f"wrote {args.plot}")


class _Parser(argparse.ArgumentParser):
    """Reports a usage mistake in one line (`tfslim bench: error: ...`), like other errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; a help text that names its own default keeps it."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    from tfslim import __version__

    p = _Parser(
        prog="tfslim",
        description="Make Keras models smaller and "
        "faster, and measure them on phones and microcontrollers.",
        formatter_class=_HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tfslim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_text):
        s = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=_HelpFormatter
        )
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.add_argument("--verbose", action="store_true", help="show TensorFlow's own logs")
        s.set_defaults(func=func)
        return s

    s = add("convert", _cmd_convert, "convert a .keras model or SavedModel to .tflite")
    s.add_argument("model", help=".keras file or SavedModel directory")
    s.add_argument("-o", "--output", required=True, help="output .tflite path (required)")
    s.add_argument("--target", default="mobile", help="mobile, mcu or a board (tfslim targets)")
    s.add_argument(
        "--quantization",
        choices=["none", "float16", "dynamic", "int8", "int16x8"],
        help="conversion mode (default: the target's: dynamic for mobile, int8 for boards)",
    )
    s.add_argument(
        "--calibration",
        help=".npz/.npy with representative inputs (array 'x'); not needed for QAT models "
        "(default: none)",
    )
    s.add_argument(
        "--io-dtype",
        choices=["int8", "float32"],
        help="input/output dtype of an int8 model (default: the target's: int8 for boards)",
    )
    s.add_argument(
        "--sparse",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="TFLite sparse weight encoding (default: the target's: on for mobile when the "
        "weights are mostly zeros, off for boards)",
    )
    s.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    s = add("inspect", _cmd_inspect, "ops, sizes, MACs, TFLite Micro arena and board fit")
    s.add_argument("file", help=".tflite file")
    s.add_argument(
        "--target",
        action="append",
        help="target to check; repeatable (default: none, no board verdicts)",
    )
    s.add_argument("--no-micro", action="store_true", help="skip the TFLite Micro run")

    s = add("qreport", _cmd_qreport, "per-layer int8 error of a .keras model, worst first")
    s.add_argument("model", help=".keras file (float or quantization-aware)")
    s.add_argument("--data", required=True, help=".npz/.npy with input samples 'x' (required)")
    s.add_argument(
        "--calibration",
        help=".npz/.npy with calibration inputs 'x' (default: the --data samples; not needed "
        "for QAT models)",
    )
    s.add_argument("--target", default="mobile", help="mobile, mcu or a board (tfslim targets)")
    s.add_argument(
        "--quantization", choices=["int8", "int16x8"], help="conversion mode (default: int8)"
    )
    s.add_argument("--max-samples", type=int, default=64, help="samples of --data compared")
    s.add_argument("--top", type=int, help="show only the worst N layers (default: all)")
    s.add_argument("--plot", help="also write a PNG bar chart here (default: none)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")

    s = add("bench", _cmd_bench, "LiteRT latency, memory and accuracy of a .tflite model")
    s.add_argument("file", help=".tflite file")
    s.add_argument(
        "--data", help=".npz with arrays 'x' and 'y' for accuracy (default: none, no accuracy)"
    )
    s.add_argument(
        "--target",
        help="microcontroller target for a latency estimate (default: none, no estimate)",
    )
    s.add_argument("--threads", type=int, default=1, help="interpreter threads")
    s.add_argument("--runs", type=int, default=100, help="timed invocations")

    s = add("export-c", _cmd_export_c, "write a .tflite model as a 16-byte aligned C array")
    s.add_argument("file", help=".tflite file")
    s.add_argument(
        "-o", "--output", required=True, help="model_data.cc, header beside it (required)"
    )
    s.add_argument("--name", help="C variable name (default: the file stem)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")

    add("targets", _cmd_targets, "list deployment targets with budgets and sources")

    s = add("tune", _cmd_tune, "footprint-aware search on digits under a board's budget")
    s.add_argument("--target", default="nano33ble", help="board (or mcu) whose budget applies")
    s.add_argument("--max-trials", type=int, default=8, help="trials to run")
    s.add_argument("--epochs", type=int, default=2, help="training epochs per trial")
    s.add_argument(
        "--max-mcu-latency-ms",
        "--max-latency-ms",
        dest="max_mcu_latency_ms",
        type=float,
        default=2.0,
        help="cap on the MCU latency estimate in ms, 0 for none",
    )
    s.add_argument(
        "--max-flash", type=int, help="flash budget in bytes (default: the target's flash)"
    )
    s.add_argument(
        "--max-arena",
        "--max-ram",
        dest="max_arena",
        type=int,
        help="RAM budget for the TFLite Micro arena in bytes (default: the target's RAM)",
    )
    s.add_argument("--out", default="tfslim_tune", help="output directory")
    s.add_argument(
        "--overwrite", action="store_true", help="replace earlier output in a non-empty --out"
    )

    s = add("optimize", _cmd_optimize, "shrink a trained model under a budget: candidates, front")
    s.add_argument("model", help="trained .keras classifier")
    s.add_argument("--data", required=True, help=".npz with arrays 'x', 'y' to fine-tune on")
    s.add_argument("--validation", required=True, help=".npz with 'x', 'y' to measure on")
    s.add_argument("--target", default="mcu", help="mobile, mcu or a board (tfslim targets)")
    s.add_argument("--max-flash", help="flash budget, e.g. 256KiB (default: the target's)")
    s.add_argument(
        "--max-ram", help="TFLite Micro arena budget, e.g. 64KiB (default: the target's)"
    )
    s.add_argument(
        "--max-latency-ms",
        type=float,
        help="latency cap: the MCU estimate for a board, host LiteRT for mobile (default: none)",
    )
    s.add_argument(
        "--strategy",
        choices=["shrink", "grow"],
        default="shrink",
        help="shrink-and-improve, or grow-improve-shrink (held to the model's own measured "
        "flash and arena unless --max-* are given)",
    )
    s.add_argument(
        "--techniques",
        help="comma-separated levers of --strategy shrink: qat, prune, m_by_n, channels, "
        "cluster (default: qat,prune,channels)",
    )
    s.add_argument(
        "--clusters",
        type=int,
        help="values per kernel of the cluster lever, 2 to 128 (default: 16)",
    )
    s.add_argument("--epochs", type=int, default=3, help="training epochs per candidate")
    s.add_argument("--max-candidates", type=int, help="stop after this many (default: all)")
    s.add_argument("--out", default="tfslim_optimize", help="output directory (resumable)")
    s.add_argument("--overwrite", action="store_true", help="recompute an earlier run in --out")

    s = add("demo", _cmd_demo, "train, shrink, convert and measure a digits CNN end to end")
    s.add_argument("--out", default="tflite_models", help="output directory")
    s.add_argument(
        "--epochs", type=int, default=None, help="training epochs (default: 15, 3 with --quick)"
    )
    s.add_argument("--quick", action="store_true", help="fewer epochs (for tests)")
    s.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the demo files of an earlier run in a non-empty --out",
    )
    return p


# The library names its Python arguments; the command's user typed flags. Each error is
# reworded in the command's own spelling before it is printed.
_FLAG_SPELLING = {
    "calibration_data": "--calibration",
    "output_path": "-o/--output",
    "io_dtype": "--io-dtype",
    "quantization": "--quantization",
    "target": "--target",
    "sparse": "--sparse",
    "out_dir": "--out",
    "epochs": "--epochs",
    "max_trials": "--max-trials",
    "threads": "--threads",
    "runs": "--runs",
    "variable_name": "--name",
    "directory": "--out",
    "max_candidates": "--max-candidates",
    "clusters": "--clusters",
    "techniques": "--techniques",
    "max_samples": "--max-samples",
}


def _in_cli_spelling(message: str) -> str:
    """`calibration_data` -> `--calibration`, calibration_data=None -> --calibration=None,
    "pass overwrite=True" -> "pass --overwrite"."""
    message = message.replace("overwrite=True", "--overwrite")
    for name, flag in _FLAG_SPELLING.items():
        message = message.replace(f"`{name}`", f"`{flag}`")
        message = re.sub(rf"(?<![\w.'-]){name}=", f"{flag}=", message)
    return message


def main(argv=None) -> int:
    # Quiet TensorFlow's C++ logging for the command only; the library never does this.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    args = _parser().parse_args(argv)
    from tfslim.errors import TfslimError

    try:
        args.func(args)
    except BrokenPipeError:
        # The reader of our output went away (`tfslim targets | head -3`): stop quietly, as
        # a Unix tool killed by SIGPIPE does, and keep Python's exit-time flush from failing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except (TfslimError, ValueError, TypeError, OSError) as e:
        print(f"tfslim {args.command}: error: {_in_cli_spelling(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfslim {args.command}: interrupted", file=sys.stderr)
        return 130
    return 0


def console_main() -> int:
    """The `tfslim` command: `main` in a forked worker process that a native crash cannot
    take the command down with, and that Ctrl-C ends with exit code 130 and one line (see
    `tfslim._supervisor`). Where the OS cannot fork, `main` runs in this process.
    """
    if hasattr(os, "fork"):
        from tfslim import _supervisor

        return _supervisor.supervise(sys.argv[1:], _main_without_native_logs)
    try:
        return _main_without_native_logs()
    except KeyboardInterrupt:  # Outside the command itself (start-up, exit): no traceback.
        return 130


def _main_without_native_logs() -> int:
    """`main`, minus TensorFlow's C++ start-up logs.

    TensorFlow 2.21 logs through absl before `TF_CPP_MIN_LOG_LEVEL` applies, so the
    command points the C-level stderr at /dev/null (`--verbose` keeps it) while Python's
    own messages, tfslim's errors and warnings among them, still reach the terminal.
    """
    if "--verbose" in sys.argv[1:]:
        return main()
    python_stderr = os.fdopen(os.dup(2), "w", buffering=1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    saved = os.dup(2)
    os.dup2(devnull, 2)
    sys.stderr = python_stderr
    try:
        return main()
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
        sys.stderr = sys.__stderr__


if __name__ == "__main__":
    sys.exit(console_main())
