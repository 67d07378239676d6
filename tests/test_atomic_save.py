"""tfslim's own `.keras` saves (tuner trials) survive a SIGKILL in the middle of the save."""

import signal
import subprocess
import sys
import textwrap

import pytest

# Saves version 1, then starts saving version 2 and kills itself (SIGKILL, nothing can
# clean up) as soon as the archive being written receives its first member.
_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, zipfile
    import keras
    from tfslim import _io

    path, how = sys.argv[1], sys.argv[2]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    model.save(path)
    model.get_layer("d").kernel.assign(model.get_layer("d").kernel + 1.0)

    def killed(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    zipfile.ZipFile.writestr = killed
    if how == "atomic":
        _io.save_keras_model(model, path, overwrite=True)
    else:
        model.save(path)
    """
)


def _killed_save(tmp_path, how):
    script = tmp_path / "save.py"
    script.write_text(_SCRIPT)
    path = tmp_path / "model.keras"
    proc = subprocess.run(
        [sys.executable, str(script), str(path), how], capture_output=True, text=True
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    return path


@pytest.mark.slow
def test_sigkill_during_an_atomic_save_keeps_the_previous_file(tmp_path):
    import keras
    import numpy as np

    path = _killed_save(tmp_path, "atomic")
    model = keras.saving.load_model(path)  # Version 1, whole.
    kernel = model.get_layer("d").kernel.numpy()
    assert kernel.shape == (4, 3) and np.all(np.abs(kernel) < 1.0)


@pytest.mark.slow
def test_sigkill_during_keras_own_save_destroys_the_file(tmp_path):
    """The failure the atomic save exists for: Keras writes the archive in place."""
    import keras

    path = _killed_save(tmp_path, "plain")
    with pytest.raises(Exception):  # noqa: B017 - any load error: the archive is truncated
        keras.saving.load_model(path)


def test_a_failing_save_leaves_the_old_file_and_no_temporary(tmp_path):
    from tfslim import _io

    class Broken:
        def save(self, filepath):
            with open(filepath, "wb") as f:
                f.write(b"half")
            raise OSError("disk full")

    path = tmp_path / "model.keras"
    path.write_bytes(b"old model")
    with pytest.raises(OSError, match="disk full"):
        _io.save_keras_model(Broken(), path, overwrite=True)
    assert path.read_bytes() == b"old model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.keras"]
    with pytest.raises(FileExistsError, match="overwrite"):
        _io.save_keras_model(Broken(), path)
