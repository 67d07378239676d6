"""The `tfslim` command: a thin layer over the public API.

Tables for people by default, `--json` for machines. A user mistake is one line on
stderr and exit code 2, never a traceback. Arguments are checked before TensorFlow or
Keras is imported, so a mistake fails in well under a second, not after 20 s of imports.
"""

import os
import re
import sys

from tfslim.cli import parser

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
    args = parser.build().parse_args(argv)
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
