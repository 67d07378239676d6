"""The `tfslim` command's argument parser: one subparser per command, defaults shown."""

import argparse

from tfslim.cli import commands

__all__ = ["HelpFormatter", "Parser", "build"]


class Parser(argparse.ArgumentParser):
    """Reports a usage mistake in one line (`tfslim bench: error: ...`), like other errors."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows every option's default; a help text that names its own default keeps it."""

    def _get_help_string(self, action):
        if "(default:" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build() -> argparse.ArgumentParser:
    from tfslim import __version__

    p = Parser(
        prog="tfslim",
        description="Make Keras models smaller and "
        "faster, and measure them on phones and microcontrollers.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"tfslim {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_text):
        s = sub.add_parser(
            name, help=help_text, description=help_text, formatter_class=HelpFormatter
        )
        s.add_argument("--json", action="store_true", help="machine-readable output")
        s.add_argument("--verbose", action="store_true", help="show TensorFlow's own logs")
        s.set_defaults(func=func)
        return s

    s = add("convert", commands.cmd_convert, "convert a .keras model or SavedModel to .tflite")
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

    s = add("inspect", commands.cmd_inspect, "ops, sizes, MACs, TFLite Micro arena and board fit")
    s.add_argument("file", help=".tflite file")
    s.add_argument(
        "--target",
        action="append",
        help="target to check; repeatable (default: none, no board verdicts)",
    )
    s.add_argument("--no-micro", action="store_true", help="skip the TFLite Micro run")

    s = add("qreport", commands.cmd_qreport, "per-layer int8 error of a .keras model, worst first")
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
    s.add_argument(
        "--kernels",
        choices=["builtin", "xnnpack", "reference"],
        help="LiteRT kernels that run the int8 model: xnnpack (LiteRT's default on phones), "
        "reference (TFLite Micro's arithmetic) or builtin (default: what --target runs, "
        "xnnpack for mobile, reference for mcu and boards)",
    )
    s.add_argument("--top", type=int, help="show only the worst N layers (default: all)")
    s.add_argument("--plot", help="also write a PNG bar chart here (default: none)")
    s.add_argument("--overwrite", action="store_true", help="replace an existing --plot file")

    s = add("bench", commands.cmd_bench, "LiteRT latency, memory and accuracy of a .tflite model")
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

    s = add("export-c", commands.cmd_export_c, "write a .tflite model as a 16-byte aligned C array")
    s.add_argument("file", help=".tflite file")
    s.add_argument(
        "-o", "--output", required=True, help="model_data.cc, header beside it (required)"
    )
    s.add_argument("--name", help="C variable name (default: the file stem)")
    s.add_argument("--overwrite", action="store_true", help="replace existing output files")

    add("targets", commands.cmd_targets, "list deployment targets with budgets and sources")

    s = add("tune", commands.cmd_tune, "footprint-aware search on digits under a board's budget")
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

    s = add(
        "optimize",
        commands.cmd_optimize,
        "shrink a trained model under a budget: candidates, front",
    )
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

    s = add("demo", commands.cmd_demo, "train, shrink, convert and measure a digits CNN end to end")
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
