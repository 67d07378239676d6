import subprocess
import sys

import numpy as np
import pytest

from tfslim.cli import main


@pytest.fixture(scope="module")
def files(small_cnn, digits, tmp_path_factory):
    """The shared digits CNN as a .keras file, test images and calibration images as .npz."""
    folder = tmp_path_factory.mktemp("qreport")
    small_cnn.save(folder / "m.keras")
    np.savez(folder / "x.npz", x=digits[2][:24], y=digits[3][:24])
    np.savez(folder / "c.npz", x=digits[0][:64])
    return folder


def test_table_and_plot(files, capsys, tmp_path):
    model, data, calibration = files / "m.keras", files / "x.npz", files / "c.npz"
    plot = tmp_path / "q.png"
    argv = ["qreport", str(model), "--data", str(data), "--calibration", str(calibration)]
    code = main([*argv, "--top", "2", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 0, err
    lines = out.splitlines()
    assert "int8 for mobile on xnnpack kernels, 24 samples" in lines[0]
    assert "alone ch-SNR dB" in lines[1]
    assert [line.split()[0] for line in lines[3:5]] == ["1", "2"]
    assert len(lines) == 6 and lines[5] == f"wrote {plot}"  # Two rows, nothing unmatched.
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # An existing plot is not replaced without --overwrite, and nothing is converted.
    code = main([*argv, "--json", "--plot", str(plot)])
    out, err = capsys.readouterr()
    assert code == 2 and "--plot" in err and "--overwrite" in err and not out
    code = main([*argv, "--top", "1", "--kernels", "builtin"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "int8 for mobile on builtin kernels, 24 samples" in out.splitlines()[0]


def test_a_library_error_after_loading_is_one_line(files, capsys, tmp_path):
    np.savez(tmp_path / "bad.npz", x=np.zeros((3, 4, 4, 1), "float32"))
    code = main(["qreport", str(files / "m.keras"), "--data", str(tmp_path / "bad.npz")])
    _, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert err.startswith("tfslim qreport: error: Invalid value for argument `data`")
    assert "(N, *(8, 8, 1))" in err and "(3, 4, 4, 1)" in err


_FAST_FAILURE = """
import sys, time
from tfslim.cli import main
start = time.perf_counter()
code = main(sys.argv[1:])
heavy = [m for m in ("tensorflow", "keras") if m in sys.modules]
print(code, round(time.perf_counter() - start, 2), heavy)
"""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["{dir}/absent.keras", "--data", "{dir}/x.npz"], "model: no such file"),
        (["{dir}/m.tflite", "--data", "{dir}/x.npz"], "expected a .keras file"),
        (["{dir}/m.keras", "--data", "{dir}/absent.npz"], "--data: no such file"),
        (["{dir}/m.keras", "--data", "{dir}/m.tflite"], "--data: {dir}/m.tflite is not a NumPy"),
        (["{dir}/m.keras", "--data", "{dir}/x.npz", "--top", "0"], "--top: expected an int >= 1"),
        (["{dir}/m.keras", "--data", "{dir}/x.npz", "--max-samples", "-1"], "--max-samples"),
        (["{dir}/m.keras", "--data", "{dir}/x.npz", "--target", "moon"], "--target='moon'"),
        (["{dir}/m.keras", "--data", "{dir}/x.npz", "--plot", "{dir}/keep.png"], "--overwrite"),
        (["{dir}/m.keras", "--data", "{dir}/x.npz", "--plot", "{dir}/no/q.png"], "does not exist"),
        (["{dir}/m.keras", "--data", "{dir}/x.npz", "--quantization", "float16"], "invalid choice"),
        (
            ["{dir}/m.keras", "--data", "{dir}/x.npz", "--kernels", "gpu"],
            "--kernels: invalid choice",
        ),
    ],
)
def test_argument_mistakes_fail_before_tensorflow_loads(argv, message, tmp_path):
    (tmp_path / "m.keras").write_text("not read before the arguments are checked")
    (tmp_path / "m.tflite").write_text("TFL3")
    (tmp_path / "keep.png").write_text("keep")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8, 1)))
    argv = ["qreport", *(a.format(dir=tmp_path) for a in argv)]
    proc = subprocess.run(
        [sys.executable, "-c", _FAST_FAILURE, *argv], capture_output=True, text=True
    )
    if "invalid choice" in message:  # argparse's own usage error: exit 2 before main returns.
        assert proc.returncode == 2 and message in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
        return
    code, seconds, heavy = proc.stdout.split(maxsplit=2)
    assert code == "2" and heavy.strip() == "[]", proc.stdout + proc.stderr
    assert float(seconds) < 5
    assert len(proc.stderr.strip().splitlines()) == 1
    assert proc.stderr.startswith("tfslim qreport: error: ")
    assert message.format(dir=tmp_path) in proc.stderr
    assert (tmp_path / "keep.png").read_text() == "keep"
