"""The Python API is quiet unless asked: no converter settings dump, no retracing."""

import subprocess
import sys
import textwrap

import pytest

_SCRIPT = textwrap.dedent(
    """
    import numpy as np, keras, tfslim
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="softmax")])
    x = np.random.rand(300, 6).astype("float32")
    y = np.random.randint(0, 4, 300)
    result = tfslim.convert(model, target="mcu", calibration_data=x[:50])
    # Sample counts that used to give every call a new batch shape.
    for n in (7, 33, 64, 100, 128, 257, 300):
        tfslim.evaluate(result, (x[:n], y[:n]), keras_model=model)
    print("done")
    """
)


@pytest.mark.slow
def test_convert_and_evaluate_print_nothing_and_trace_once():
    proc = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        capture_output=True,
        text=True,
        timeout=300,
        env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "done"
    assert "fully_quantize" not in proc.stderr
    assert "retracing" not in proc.stderr
    assert "XNNPACK delegate" not in proc.stderr + proc.stdout


def test_keras_predict_pads_to_one_batch_shape():
    import keras
    import numpy as np

    from tfslim._predict import BATCH_SIZE, keras_predict

    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    for n in (1, BATCH_SIZE - 1, BATCH_SIZE, 2 * BATCH_SIZE + 5):
        x = np.random.rand(n, 3).astype("float32")
        got = keras_predict(model, x)
        assert got.shape == (n, 2)
        np.testing.assert_allclose(got, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
