"""The `tfslim` subcommands, each a thin layer over the public API (imported when run)."""

import os
import sys

from tfslim.cli import inputs

__all__ = [
    "cmd_bench",
    "cmd_convert",
    "cmd_demo",
    "cmd_export_c",
    "cmd_inspect",
    "cmd_optimize",
    "cmd_qreport",
    "cmd_targets",
    "cmd_tune",
]


def cmd_targets(args) -> None:
    from tfslim.litert.mcu_latency import COST_MODELS
    from tfslim.litert.targets import list_targets

    targets = list_targets()
    if args.json:
        rows = [t.to_dict() for t in targets]
        for row in rows:  # The per-op latency figures beside each board's name of them.
            if row.get("cost_model") in COST_MODELS:
                row["latency_cost_model"] = COST_MODELS[row["cost_model"]].to_dict()
        inputs.print_json(rows)
        return
    rows = [
        [
            t.name,
            t.kind,
            t.quantization,
            inputs.fmt_bytes(t.flash_bytes),
            inputs.fmt_bytes(t.ram_bytes),
            f"{t.clock_hz / 1e6:.0f} MHz" if t.clock_hz else "-",
            t.cost_model or "-",
            "-" if getattr(t, "cycles_per_mac", None) is None else f"{t.cycles_per_mac:g}",
            t.description,
        ]
        for t in targets
    ]
    header = ["target", "kind", "default", "flash", "ram", "clock", "cost model", "MAC-only"]
    print(inputs.table(rows, [*header, "device"]))
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
    print(inputs.table(cost_rows, cost_header))
    print("\nSources:")
    for t in targets:
        print(f"  {t.name}: {t.source}")
    for m in COST_MODELS.values():
        print(f"  {m.name} cost model: {m.source}")


def cmd_inspect(args) -> None:
    from tfslim.litert.inspection import inspect

    report = inspect(args.file, target=args.target or None, micro_check=not args.no_micro)
    if args.json:
        inputs.print_json(report)
        return
    m = report.get("micro") or {}
    print(
        f"{args.file}: {inputs.fmt_bytes(report['size_bytes'])} "
        f"(gzip {inputs.fmt_bytes(report['gzip_bytes'])}), {report['params']} params "
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
            f"  TFLite Micro: {status}, arena {inputs.fmt_bytes(m['arena_bytes'])} "
            f"(TFLM report {inputs.fmt_bytes(m['arena_reported_bytes'])})"
        )
    if report.get("targets"):
        rows = []
        for name, v in report["targets"].items():
            est = v["latency_estimate"]
            rows.append(
                [
                    name,
                    "yes" if v["fits"] else "NO",
                    f"{inputs.fmt_bytes(v['flash_bytes'])} / {inputs.fmt_bytes(v['flash_budget'])}",
                    f"{inputs.fmt_bytes(v['ram_bytes'])} / {inputs.fmt_bytes(v['ram_budget'])}",
                    f"~{est['value_ms']} ms (estimate)" if est else "-",
                    "; ".join(v["reasons"]),
                ]
            )
        print()
        print(inputs.table(rows, ["target", "fits", "flash", "ram", "latency", "why not"]))


def cmd_bench(args) -> None:
    from tfslim.benchmarking.benchmark import benchmark

    data = None
    if args.data:
        x, y = inputs.load_npz(args.data, "--data")
        if y is None:
            raise ValueError(f"--data: {args.data} needs arrays 'x' and 'y' for accuracy")
        data = (x, y)
    result = benchmark(
        args.file, data=data, target=args.target, threads=args.threads, runs=args.runs
    )
    if args.json:
        inputs.print_json(result)
        return
    rows = [
        [
            k,
            v["runs"],
            v["latency_ms"]["median"],
            v["latency_ms"]["p90"],
            v["latency_ms"]["min"],
            round(v["init_ms"], 2),
            inputs.fmt_bytes(v["model_memory_bytes"]),
            inputs.fmt_bytes(v["invoke_peak_memory_bytes"]),
        ]
        for k, v in result["latency"].items()
    ]
    print(
        f"{args.file}: {inputs.fmt_bytes(result['size_bytes'])}, {result['macs']} MACs, "
        f"threads={result['threads']}"
    )
    header = ["runtime", "runs", "median ms", "p90 ms", "min ms", "init ms"]
    print(inputs.table(rows, [*header, "interpreter memory", "peak while invoking"]))
    for v in result["latency"].values():
        if v.get("note"):
            print(f"note: {v['note']}")
    if "accuracy" in result:
        a = result["accuracy"]
        print(f"{a['metric']} of the converted model on {a['n']} samples: {a['tflite']:.4f}")
    for name, est in (result.get("mcu_latency_estimate") or {}).items():
        print(f"{name}: ~{est['value_ms']} ms ESTIMATE ({est['formula']})")


def cmd_convert(args) -> None:
    inputs.check_output_file(args.output, args.overwrite)
    if not os.path.exists(args.model):
        raise FileNotFoundError(f"model: no such file or directory: {args.model}")
    calibration = (
        inputs.load_npz(args.calibration, "--calibration")[0] if args.calibration else None
    )
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
        inputs.print_json(summary)
    else:
        print(
            f"wrote {result.path}: {inputs.fmt_bytes(result.size_bytes)} "
            f"({result.quantization}, {result.io_dtype} I/O, target {result.target.name})"
        )


def cmd_export_c(args) -> None:
    inputs.check_output_file(args.output, args.overwrite)
    from tfslim.litert.export_c import export_c

    source, header = export_c(
        args.file, args.output, variable_name=args.name, overwrite=args.overwrite
    )
    if args.json:
        inputs.print_json({"source": source, "header": header})
    else:
        print(f"wrote {source} and {header}")


def cmd_demo(args) -> None:
    inputs.check_number("--epochs", args.epochs, integer=True, minimum=1, inclusive=True)
    inputs.check_out_dir(args.out, args.overwrite)
    from tfslim.demo import run_demo

    run_demo(
        out_dir=args.out,
        epochs=args.epochs,
        quick=args.quick,
        overwrite=args.overwrite,
        as_json=args.json,
    )


def cmd_tune(args) -> None:
    from tfslim.litert.targets import require_micro

    require_micro(args.target, argument="--target")  # Fail fast, before TensorFlow loads.
    for flag, value in (
        ("--max-trials", args.max_trials),
        ("--epochs", args.epochs),
        ("--max-flash", args.max_flash),
        ("--max-arena", args.max_arena),
    ):
        inputs.check_number(flag, value, integer=True, minimum=1, inclusive=True)
    inputs.check_number(
        "--max-mcu-latency-ms", args.max_mcu_latency_ms, integer=False, minimum=0, inclusive=True
    )
    inputs.check_out_dir(args.out, args.overwrite)
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
        inputs.print_json(
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


def cmd_optimize(args) -> None:
    from tfslim.litert.targets import get_target

    target = get_target(args.target)  # Fail fast, before TensorFlow loads.
    max_flash = inputs.parse_size("--max-flash", args.max_flash)
    max_ram = inputs.parse_size("--max-ram", args.max_ram)
    inputs.check_number(
        "--max-latency-ms", args.max_latency_ms, integer=False, minimum=0, inclusive=False
    )
    for flag, value in (("--epochs", args.epochs), ("--max-candidates", args.max_candidates)):
        inputs.check_number(flag, value, integer=True, minimum=1, inclusive=True)
    levers = _levers(args)
    if not os.path.isfile(args.model) or not args.model.endswith(".keras"):
        raise FileNotFoundError(f"model: expected a .keras file, got {args.model}")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        raise NotADirectoryError(f"--out: {args.out} is a file; expected a directory")
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise FileNotFoundError(f"--out: the parent directory of {args.out} does not exist")
    train, validation = (
        inputs.load_npz(path, flag)
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
        inputs.print_json(result.to_dict() | {"files": dict(result.files)})
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


def cmd_qreport(args) -> None:
    inputs.check_number("--top", args.top, integer=True, minimum=1, inclusive=True)
    inputs.check_number("--max-samples", args.max_samples, integer=True, minimum=1, inclusive=True)
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
    x, _ = inputs.load_npz(args.data, "--data")
    calibration = (
        inputs.load_npz(args.calibration, "--calibration")[0] if args.calibration else None
    )
    from tfslim.benchmarking.quantization_report import quantization_report

    report = quantization_report(
        args.model,
        x,
        target=args.target,
        quantization=args.quantization,
        calibration_data=calibration,
        max_samples=args.max_samples,
        kernels=args.kernels,
    )
    if args.plot:
        report.plot(args.plot, top=args.top, overwrite=args.overwrite)
    if args.json:
        inputs.print_json(report.to_dict())
        return
    print(report.table(top=args.top))
    if args.plot:
        print(f"wrote {args.plot}")
