import json
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
    code, out, _ = _run(capsys, "targets", "--json")
    assert {t["name"] for t in json.loads(out)} >= {"nano33ble", "rp2040"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["inspect", "{missing}"], "no such file"),
        (["inspect", "{text}"], "not a TFLite model"),
        (["bench", "{empty}"], "not a TFLite model"),
        (["inspect", "{model}", "--target", "toaster"], "argument `target`"),
        (["export-c", "{model}", "-o", "{dir}/exists.cc"], "overwrite"),
        (["convert", "{text}", "-o", "{dir}/x.tflite"], "argument `model`"),
        (["demo", "--out", "{dir}/no/such/dir"], "out_dir"),
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
    assert len(lines) == 1 and "argument `calibration_data`" in lines[0], proc.stderr
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.slow
def test_tune_runs_a_small_search(capsys, tmp_path):
    out = tmp_path / "tune"
    code, stdout, err = _run(
        capsys, "tune", "--max-trials", "2", "--epochs", "1", "--out", str(out), "--json"
    )
    assert code == 0, err
    report = json.loads(stdout)
    assert report["trials"] == 2 and report["target"] == "nano33ble"
    assert report["front"] and all(r["feasible"] for r in report["front"])
    for name in ("pareto.md", "pareto.json", "pareto.png"):
        assert (out / name).stat().st_size > 0


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
