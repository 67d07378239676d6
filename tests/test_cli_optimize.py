import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfslim.cli import main
from tfslim.cli.inputs import parse_size

_ROOT = Path(__file__).resolve().parents[1]


def _run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def files(tmp_path, small_cnn, digits):
    x_train, y_train, x_test, y_test = digits
    model = tmp_path / "model.keras"
    small_cnn.save(model)
    np.savez(tmp_path / "train.npz", x=x_train[:300], y=y_train[:300])
    np.savez(tmp_path / "val.npz", x=x_test[:150], y=y_test[:150])
    return model, tmp_path / "train.npz", tmp_path / "val.npz"


@pytest.mark.parametrize(
    "text, expected",
    [("65536", 65536), ("64KiB", 65536), ("256 KiB", 262144), ("1MB", 10**6), ("2.5kb", 2500)],
)
def test_sizes_parse_with_units(text, expected):
    assert parse_size("--max-flash", text) == expected


def _assert_refused_in_one_line(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith("tfslim optimize: error: ") and message in err
    assert err.count("\n") == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max-flash", "12parsecs"], "--max-flash: expected a size in bytes >= 1"),
        (["--max-ram", "0KiB"], "--max-ram: expected a size in bytes >= 1, such as"),
        (["--max-latency-ms", "-1"], "--max-latency-ms: expected a number > 0, got -1.0"),
        (["--epochs", "0"], "--epochs: expected an int >= 1, got 0"),
        (["--target", "toaster"], "toaster"),
    ],
)
def test_bad_flags_fail_in_one_line(capsys, tmp_path, argv, message):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not checked this early")
    base = ["optimize", str(model), "--data", "a.npz", "--validation", "b.npz"]
    _assert_refused_in_one_line(capsys, [*base, *argv], message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--strategy", "grow", "--techniques", "qat"],
            "--techniques: only --strategy shrink takes levers",
        ),
        (["--strategy", "grow", "--clusters", "8"], "--clusters: only --strategy shrink"),
        (["--clusters", "8"], "--clusters: only used by the cluster lever; add it"),
        (["--techniques", "qat,prune", "--clusters", "8"], "with --techniques qat,prune"),
    ],
)
def test_levers_that_do_not_apply_fail_before_tensorflow(capsys, tmp_path, argv, message):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not checked this early")
    base = ["optimize", str(model), "--data", "a.npz", "--validation", "b.npz"]
    _assert_refused_in_one_line(capsys, [*base, *argv], message)


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["--techniques", "qat,prnue,cluster"],
            "--techniques: unknown 'prnue'; expected comma-separated names from qat, prune, "
            "m_by_n, channels, cluster, got 'qat,prnue,cluster'",
        ),
        (["--techniques", ""], "--techniques: unknown ''; expected comma-separated names"),
        (["--techniques", "qat,,prune"], "unknown ''"),
        (
            ["--techniques", "cluster", "--clusters", "1"],
            "Invalid value for argument `--clusters`. Expected an int in [2, 128]. "
            "Received: --clusters=1",
        ),
        (["--techniques", "cluster", "--clusters", "256"], "Received: --clusters=256"),
    ],
)
def test_bad_levers_are_named_before_the_model_loads(capsys, tmp_path, argv, message):
    # The model file is not a model: the levers are refused before it is read.
    model = tmp_path / "m.keras"
    model.write_bytes(b"never loaded")
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(4, dtype="int32"))
    data = str(tmp_path / "d.npz")
    base = ["optimize", str(model), "--data", data, "--validation", data]
    _assert_refused_in_one_line(capsys, [*base, *argv], message)


def test_levers_reach_shrink_as_its_own_arguments(capsys, tmp_path, monkeypatch, small_cnn):
    import tfslim
    from tfslim.strategies import TECHNIQUES

    # The help lists the levers `shrink(techniques=...)` accepts, in its order.
    with pytest.raises(SystemExit):
        main(["optimize", "--help"])
    assert f"shrink: {', '.join(TECHNIQUES)} (default" in " ".join(capsys.readouterr().out.split())
    model = tmp_path / "m.keras"
    small_cnn.save(model)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(4, dtype="int32"))
    data = str(tmp_path / "d.npz")
    seen = {}

    class Stop(Exception):
        pass

    def fake_shrink(model, train, validation, **kwargs):
        seen.update(kwargs)
        raise Stop

    monkeypatch.setattr(tfslim, "shrink", fake_shrink)
    argv = ["optimize", str(model), "--data", data, "--validation", data]
    with pytest.raises(Stop):
        main([*argv, "--techniques", " qat, cluster ,qat", "--clusters", "8"])
    assert seen["techniques"] == ["qat", "cluster"] and seen["clusters"] == 8
    seen.clear()
    with pytest.raises(Stop):
        main(argv)
    # Not given: shrink's own defaults apply.
    assert "techniques" not in seen and "clusters" not in seen


def test_a_worker_of_a_distributed_run_leaves_the_report_to_the_chief(
    capsys, tmp_path, monkeypatch, small_cnn
):
    import tfslim
    from tfslim.strategies import StrategyResult

    model = tmp_path / "m.keras"
    small_cnn.save(model)
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 1)), y=np.zeros(4, dtype="int32"))
    data = str(tmp_path / "d.npz")

    def worker_shrink(model, train, validation, **kwargs):
        # What `shrink` returns on a worker: its own candidates, no report files.
        return StrategyResult(
            "shrink", "mcu", kwargs["budget"], [], "original", kwargs["directory"]
        )

    monkeypatch.setattr(tfslim, "shrink", worker_shrink)
    out = tmp_path / "run"
    argv = ["optimize", str(model), "--data", data, "--validation", data, "--out", str(out)]
    code, stdout, _ = _run(capsys, *argv)
    assert code == 0
    assert stdout.strip() == f"made none; the chief writes the fronts and the report in {out}"


def test_missing_files_and_bad_data_are_named(capsys, tmp_path):
    code, _, err = _run(capsys, "optimize", "nope.keras", "--data", "a", "--validation", "b")
    assert code == 2 and "model: expected a .keras file, got nope.keras" in err
    model = tmp_path / "m.keras"
    model.write_bytes(b"x")
    np.savez(tmp_path / "x_only.npz", x=np.zeros((4, 8, 8, 1)))
    argv = ["optimize", str(model), "--data", str(tmp_path / "x_only.npz")]
    code, _, err = _run(capsys, *argv, "--validation", str(tmp_path / "x_only.npz"))
    assert code == 2 and "--data:" in err and "needs arrays 'x' and 'y'" in err
    code, _, err = _run(capsys, *argv, "--validation", str(tmp_path / "missing.npz"))
    assert code == 2 and "--validation: no such file" in err


def test_flag_mistakes_load_no_tensorflow(tmp_path):
    code = (
        "import sys; from tfslim.cli import main; "
        "rc = main(['optimize', 'm.keras', '--data', 'a', '--validation', 'b', "
        "'--max-flash', 'lots']); print(rc, 'tensorflow' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT)
    assert done.stdout.split() == ["2", "False"]
    assert "--max-flash: expected a size" in done.stderr


@pytest.mark.parametrize(
    "levers, message",
    [
        (
            ["--techniques", "qat,prnue"],
            "--techniques: unknown 'prnue'; expected comma-separated names from qat, prune, "
            "m_by_n, channels, cluster, got 'qat,prnue'",
        ),
        (
            ["--techniques", "cluster", "--clusters", "300"],
            "Invalid value for argument `--clusters`. Expected an int in [2, 128]. "
            "Received: --clusters=300",
        ),
    ],
)
def test_bad_levers_load_no_tensorflow_or_keras(levers, message):
    # Neither the model nor the data exist: the levers are refused before either is read.
    code = (
        "import sys; from tfslim.cli import main; "
        f"rc = main(['optimize', 'm.keras', '--data', 'a', '--validation', 'b', *{levers!r}]); "
        "print(rc, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=_ROOT)
    assert done.stdout.split() == ["2", "False", "False"]
    assert done.stderr == f"tfslim optimize: error: {message}\n"


@pytest.mark.slow
def test_optimize_prints_candidates_and_front_and_resumes_as_json(capsys, tmp_path, files):
    model, train, val = files
    out = tmp_path / "run"
    argv = [
        "optimize",
        str(model),
        "--data",
        str(train),
        "--validation",
        str(val),
        "--target",
        "nano33ble",
        "--max-flash",
        "256KiB",
        "--max-ram",
        "64KiB",
        "--epochs",
        "1",
        "--max-candidates",
        "1",
        "--out",
        str(out),
    ]
    code, stdout, err = _run(capsys, *argv)
    assert code == 0, err
    lines = stdout.splitlines()
    assert lines[0].startswith("original ") and "fits" in lines[0]
    assert "Pareto front, quality vs flash_bytes:" in lines
    assert any(line.startswith("best within budget: original (quality") for line in lines)
    for name in ("report.md", "report.json", "front.png", "best.tflite", "original.keras"):
        assert (out / name).stat().st_size > 0
    assert (out / "best.tflite").read_bytes() == (out / "original.tflite").read_bytes()
    saved = json.loads((out / "report.json").read_text())
    assert saved["budget"]["max_flash_bytes"] == 256 * 1024
    assert saved["budget"]["max_arena_bytes"] == 64 * 1024
    # A rerun resumes from the manifest; --json keeps stdout machine-readable.
    code, stdout, err = _run(capsys, *argv, "--json")
    assert code == 0 and "(resumed)" in err
    report = json.loads(stdout)
    assert report["best"] == "original" and report["front"]["flash_bytes"] == ["original"]
    assert report["files"]["png"].endswith("front.png")
    # Picking the levers: a rerun with the cluster lever keeps the baseline and adds cluster8,
    # LUT-compressed for the board as `.lut.tflm` beside its uncompressed `.tflite` twin.
    levers = ["--max-candidates", "2", "--techniques", "cluster", "--clusters", "8"]
    code, stdout, err = _run(capsys, *argv, *levers, "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert [r["name"] for r in report["candidates"]] == ["original", "cluster8"]
    clustered = report["candidates"][1]
    assert clustered["spec"]["clusters"] == 8 and clustered["compressed"]
    assert clustered["tflite"] == "cluster8.lut.tflm"
    assert clustered["uncompressed_tflite"] == "cluster8.tflite"
    assert (out / "cluster8.tflite").stat().st_size > (out / "cluster8.lut.tflm").stat().st_size
    assert not (out / "cluster8.uncompressed.tflite").exists()
