import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tfslim.cli import main


@pytest.fixture
def tflite_file(mcu_tflite, tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(mcu_tflite)
    return path


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_inspect_json_and_table(capsys, tflite_file):
    code, out, _ = _run(capsys, "inspect", str(tflite_file), "--target", "nano33ble", "--json")
    assert code == 0
    report = json.loads(out)
    assert report["targets"]["nano33ble"]["fits"] is True
    assert report["micro"]["arena_bytes"] > 0
    code, out, _ = _run(capsys, "inspect", str(tflite_file), "--target", "rp2040")
    assert code == 0 and "TFLite Micro: supported" in out and "rp2040" in out


def test_bench_with_data(capsys, tflite_file, digits, tmp_path):
    data = tmp_path / "test.npz"
    np.savez(data, x=digits[2][:50], y=digits[3][:50])
    code, out, _ = _run(
        capsys, "bench", str(tflite_file), "--data", str(data), "--runs", "5", "--json"
    )
    assert code == 0
    result = json.loads(out)
    assert result["accuracy"]["n"] == 50 and 0 <= result["accuracy"]["tflite"] <= 1


def test_convert_and_export_c(capsys, small_cnn, digits, tmp_path):
    model_path = tmp_path / "m.keras"
    small_cnn.save(model_path)
    calib = tmp_path / "calib.npy"
    np.save(calib, digits[0][:32])
    out_path = tmp_path / "m.tflite"
    code, out, err = _run(
        capsys,
        "convert",
        str(model_path),
        "-o",
        str(out_path),
        "--target",
        "mcu",
        "--calibration",
        str(calib),
        "--json",
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["quantization"] == "int8" and summary["size_bytes"] == out_path.stat().st_size
    code, out, _ = _run(capsys, "export-c", str(out_path), "-o", str(tmp_path / "model_data.cc"))
    assert code == 0 and (tmp_path / "model_data.h").exists()


def test_targets_lists_boards_with_sources(capsys):
    code, out, _ = _run(capsys, "targets")
    assert code == 0
    for name in ("mobile", "mcu", "nano33ble", "stm32f746", "nucleo-l4r5zi", "esp32s3", "rp2040"):
        assert name in out
    assert "Sources:" in out
    # The latency model's figures: cycles per MAC beside each board's clock.
    nano = next(line for line in out.splitlines() if line.startswith("nano33ble "))
    assert "64 MHz" in nano and " 2 " in nano and "cycles/MAC" in out
    code, out, _ = _run(capsys, "targets", "--json")
    assert {t["name"] for t in json.loads(out)} >= {"nano33ble", "rp2040"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "{missing}"], "no such file"),
        (["inspect", "{text}"], "not a TFLite model"),
        (["bench", "{empty}"], "not a TFLite model"),
        (["inspect", "{model}", "--target", "toaster"], "argument `--target`"),
        (["export-c", "{model}", "-o", "{dir}/exists.cc"], "overwrite"),
        (["convert", "{text}", "-o", "{dir}/x.tflite"], "argument `model`"),
        (["demo", "--out", "{dir}/no/such/dir"], "--out"),
        (["tune", "--target", "mobile"], "Expected a board or 'mcu'"),
        (["tune", "--max-trials", "0"], "--max-trials"),
        (["bench", "{dir}"], "not a directory"),
    ],
)
def test_user_errors_are_one_line_without_traceback(argv, message, capsys, tflite_file, tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "empty.tflite").write_bytes(b"")
    (tmp_path / "exists.cc").write_text("// keep")
    subs = {
        "missing": tmp_path / "nope.tflite",
        "text": tmp_path / "notes.txt",
        "empty": tmp_path / "empty.tflite",
        "model": tflite_file,
        "dir": tmp_path,
    }
    argv = [a.format(**subs) for a in argv]
    code, _, err = _run(capsys, *argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in err
    assert (tmp_path / "exists.cc").read_text() == "// keep"
    assert not list(tmp_path.glob(".*.tmp"))


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "tfslim.cli", "inspect", str(tmp_path / "absent.tflite")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "no such file" in proc.stderr


def test_a_reader_that_stops_early_ends_the_command_quietly():
    # `tfslim targets | head -1`: the pipe closes under the table; no error line.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tfslim.cli", "targets"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "COLUMNS": "80"},
    )
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) in (0, 141)
    assert stderr == ""


@pytest.mark.slow
def test_console_errors_after_tensorflow_loads_are_one_line(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.save(tmp_path / "m.keras")
    np.save(tmp_path / "bad.npy", np.zeros((3, 5)))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfslim.cli",
            "convert",
            str(tmp_path / "m.keras"),
            "-o",
            str(tmp_path / "m.tflite"),
            "--target",
            "mcu",
            "--calibration",
            str(tmp_path / "bad.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "argument `--calibration`" in lines[0], proc.stderr
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_tune_prints_the_footprint_table(capsys, tmp_path):
    out = tmp_path / "tune"
    code, stdout, err = _run(
        capsys, "tune", "--max-trials", "2", "--epochs", "1", "--out", str(out)
    )
    assert code == 0, err
    saved = json.loads((out / "pareto.json").read_text())
    assert len(saved["trials"]) == 2 and saved["target"] == "nano33ble"
    assert saved["front"] and all(r["feasible"] for r in saved["front"])
    for name in ("pareto.md", "pareto.json", "pareto.png"):
        assert (out / name).stat().st_size > 0
    lines = stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("trial"))
    for column in (
        "flash",
        "RAM (TFLM arena)",
        "host latency ms",
        "nano33ble ms (estimate)",
        "quality",
    ):
        assert column in lines[header]
    # One row per front member, carrying its measured figures.
    rows = lines[header + 2 : header + 2 + len(saved["front"])]
    for row, record in zip(rows, saved["front"], strict=True):
        cells = row.split()
        assert cells[0] == record["trial_id"]
        assert f"{record['flash_bytes']:,}" in cells and f"{record['arena_bytes']:,}" in cells
        assert f"{record['quality']:.4g}" == cells[-1]
        assert f"{record['mcu_latency_estimate_ms']['nano33ble']:.4g}" in cells
    assert "ESTIMATE" in stdout
    # A second run into the same folder is refused without --overwrite.
    code, _, err = _run(capsys, "tune", "--max-trials", "1", "--out", str(out))
    assert code == 2 and "--overwrite" in err
    assert json.loads((out / "pareto.json").read_text()) == saved


_FAST_FAILURE = """
import sys, time
from tfslim.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
heavy = [m for m in ("tensorflow", "keras", "keras_tuner") if m in sys.modules]
print(code, round(time.perf_counter() - start, 2), heavy)
"""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["demo", "--epochs", "0", "--out", "{dir}/new"], "--epochs"),
        (["demo", "--out", "{dir}/full"], "--overwrite"),
        (["demo", "--out", "{dir}/full/keep.txt"], "is a file"),
        (["tune", "--max-flash", "-5"], "--max-flash"),
        (["tune", "--max-arena", "0"], "--max-arena"),
        (["tune", "--max-latency-ms", "-1"], "--max-mcu-latency-ms"),
        (["tune", "--max-mcu-latency-ms", "inf"], "--max-mcu-latency-ms"),
        (["tune", "--out", "{dir}/full"], "--overwrite"),
        (["convert", "{dir}/m.keras", "-o", "{dir}/full/keep.txt"], "--overwrite"),
        (["convert", "{dir}/absent.keras", "-o", "{dir}/new.tflite"], "no such file"),
        (["export-c", "{dir}/m.tflite", "-o", "{dir}/full/keep.txt"], "--overwrite"),
    ],
)
def test_argument_mistakes_fail_before_tensorflow_loads(argv, message, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("keep")
    (tmp_path / "m.keras").write_text("not checked before the output path")
    (tmp_path / "m.tflite").write_text("not checked before the output path")
    argv = [a.format(dir=tmp_path) for a in argv]
    proc = subprocess.run(
        [sys.executable, "-c", _FAST_FAILURE, *argv], capture_output=True, text=True
    )
    code, seconds, heavy = proc.stdout.split(maxsplit=2)
    assert code == "2" and heavy.strip() == "[]", proc.stdout
    assert float(seconds) < 5
    assert len(proc.stderr.strip().splitlines()) == 1 and message in proc.stderr
    assert (tmp_path / "full" / "keep.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full", "m.keras", "m.tflite"]


def test_every_option_has_help_and_a_default():
    import argparse

    from tfslim.cli.parser import HelpFormatter, build

    parser = build()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(sub.choices) == {
        "convert",
        "inspect",
        "bench",
        "export-c",
        "targets",
        "tune",
        "demo",
        "qreport",
        "optimize",
    }
    for name, command in sub.choices.items():
        formatter = HelpFormatter(prog=name)
        for action in command._actions:
            if not action.option_strings or isinstance(action, argparse._HelpAction):
                continue
            assert action.help, (name, action.option_strings)
            assert "(default:" in formatter._get_help_string(action), (name, action.option_strings)
    text = sub.choices["demo"].format_help()
    assert "(default: tflite_models)" in " ".join(text.split())
    assert "(default: tfslim_tune)" in " ".join(sub.choices["tune"].format_help().split())


@pytest.mark.parametrize(
    "argv",
    [["bench", "m.tflite", "--runs", "many"], ["nosuchcommand"], ["convert", "m.keras"], []],
)
def test_usage_mistakes_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error:" in err


def test_errors_are_reworded_in_the_commands_spelling():
    from tfslim.cli import _in_cli_spelling

    message = (
        "Full-integer quantization (quantization='int8') needs `calibration_data`. "
        "Received: calibration_data=None"
    )
    assert _in_cli_spelling(message) == (
        "Full-integer quantization (--quantization='int8') needs `--calibration`. "
        "Received: --calibration=None"
    )
    reworded = _in_cli_spelling("The file exists; pass overwrite=True to replace it.")
    assert reworded == "The file exists; pass --overwrite to replace it."
    # Names inside other words or attribute paths are left alone.
    assert _in_cli_spelling("result.target=x my_target=y") == "result.target=x my_target=y"


@pytest.mark.parametrize("content", [b"hello\n", b"\x80\x04pickled"])
def test_a_file_that_is_not_numpy_is_named_as_such(tmp_path, content):
    from tfslim.cli.inputs import load_npz

    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=r"--data: .*x\.npz is not a NumPy file; expected"):
        load_npz(str(path), "--data")


def test_an_unwritable_output_folder_is_refused_before_any_work(tmp_path, monkeypatch):
    from tfslim import _io

    monkeypatch.setattr(_io.os, "access", lambda p, mode: mode != _io.os.W_OK)
    with pytest.raises(PermissionError, match=r"argument `output_path`.*is not writable"):
        _io.check_output_path(tmp_path / "m.tflite")


def test_main_in_process_turns_ctrl_c_into_exit_130_and_one_line(capsys, monkeypatch):
    """`main(argv)` runs the command in the caller's process (no worker); Ctrl-C in the
    command is still one line and 130."""
    import tfslim.cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(tfslim.cli.commands, "cmd_targets", interrupted)
    code, out, err = _run(capsys, "targets")
    assert (code, out, err) == (130, "", "tfslim targets: interrupted\n")
