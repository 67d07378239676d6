"""What `tfslim.convert` does with awkward inputs: never-called subclassed models, malformed
shapes, files that are not models, calibration data of the wrong kind or with non-finite
values (which used to crash the TFLite converter)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import tfslim
from tfslim.errors import InvalidModelError
from tfslim.litert.calibration import calibration_samples, check_finite


def _dense():
    import keras

    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


def _subclassed():
    import keras

    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.hidden = keras.layers.Dense(5, activation="relu")
            self.out = keras.layers.Dense(2)

        def call(self, x):
            return self.out(self.hidden(x))

    return Tiny()


def test_never_called_subclassed_model_converts_from_input_shape():
    model = _subclassed()
    assert not model.built
    result = tfslim.convert(model, input_shape=(4,), quantization="none")
    x = np.random.default_rng(0).random((6, 4)).astype("float32")
    np.testing.assert_allclose(tfslim.predict(result, x), model(x), atol=1e-5)


def test_never_called_subclassed_model_takes_its_shape_from_calibration_data():
    model = _subclassed()
    x = np.random.default_rng(1).random((16, 4)).astype("float32")
    result = tfslim.convert(model, target="mcu", calibration_data=x)
    assert (result.quantization, result.io_dtype) == ("int8", "int8")
    assert result.size_bytes > 0


@pytest.mark.parametrize("shape", ["4", 4, (4.0,), ("4",)])
def test_input_shape_of_the_wrong_type_is_refused(shape):
    with pytest.raises(TypeError, match=r"argument `input_shape`\. Expected a tuple of positive"):
        tfslim.convert(_subclassed(), input_shape=shape, quantization="none")


@pytest.mark.parametrize("shape", [(0,), (4, -1), ()])
def test_input_shape_with_bad_dimensions_is_refused(shape):
    with pytest.raises(ValueError, match=r"argument `input_shape`.*Received: input_shape="):
        tfslim.convert(_subclassed(), input_shape=shape, quantization="none")


def test_input_shape_the_model_cannot_take_is_named():
    import keras

    class NeedsImages(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    with pytest.raises(ValueError, match=r"argument `input_shape`: building NeedsImages"):
        tfslim.convert(NeedsImages(), input_shape=(4,), quantization="none")


def test_text_file_named_keras_is_not_a_valid_keras_file(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("this is not a model\n")
    with pytest.raises(InvalidModelError, match=r"model\.keras', which is not a valid \.keras"):
        tfslim.convert(path)


def test_zip_that_is_not_a_keras_model_says_keras_could_not_load_it(tmp_path):
    import zipfile

    path = tmp_path / "other.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(InvalidModelError, match=r"other\.keras', which Keras could not load"):
        tfslim.convert(path)


@pytest.mark.parametrize(
    "data, match",
    [
        ({"x": np.zeros((4, 4))}, r"a dict of named features.*with keys \['x'\]"),
        ("calibration.npy", r"load it first.*calibration_data='calibration\.npy' of type str"),
        (b"raw", r"of type bytes"),
    ],
)
def test_calibration_data_of_the_wrong_kind_names_the_argument(data, match):
    with pytest.raises(TypeError, match=r"argument `calibration_data`\. Expected a NumPy array"):
        tfslim.convert(_dense(), target="mcu", calibration_data=data)
    with pytest.raises(TypeError, match=match):
        tfslim.convert(_dense(), target="mcu", calibration_data=data)


def test_calibration_path_object_is_refused(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.zeros((4, 4)))
    with pytest.raises(TypeError, match=r"`calibration_data`.*np\.load\(path\).*PosixPath"):
        tfslim.convert(_dense(), target="mcu", calibration_data=path)


def test_calibration_generator_of_dicts_is_refused():
    with pytest.raises(TypeError, match=r"`calibration_data`.*dict of named features"):
        calibration_samples(lambda: iter([{"x": np.zeros((2, 4))}]), [(4,)], 10)


def _with(value, *, at, count=1):
    x = np.random.default_rng(0).random((10, 4)).astype("float32")
    x.flat[at * 4 : at * 4 + count] = value
    return x


@pytest.mark.parametrize(
    "x, match",
    [
        (
            _with(np.inf, at=3),
            r"\(\+inf\) in sample 3 \(1 values\); 1 non-finite values in 1 of 10",
        ),
        (_with(np.nan, at=0, count=2), r"\(NaN\) in sample 0 \(2 values\)"),
        (np.full((5, 4), np.nan, "float32"), r"sample 0 \(4 values\); 20 non-finite values in 5"),
        (_with(-np.inf, at=9), r"\(-inf\) in sample 9"),
    ],
)
def test_non_finite_calibration_data_is_refused_before_export(x, match, monkeypatch):
    from tfslim.litert import converter

    def no_export(*args, **kwargs):
        raise AssertionError("exported despite non-finite calibration data")

    monkeypatch.setattr(converter.export, "make_converter", no_export)
    with pytest.raises(ValueError, match=r"argument `calibration_data`\. Expected finite"):
        tfslim.convert(_dense(), target="mcu", calibration_data=x)
    with pytest.raises(ValueError, match=match):
        tfslim.convert(_dense(), target="mcu", calibration_data=x)


def test_float64_values_that_overflow_float32_are_refused():
    x = np.ones((3, 4))
    x[1, 2] = 1e300  # Finite in float64, +inf once cast for the converter.
    with pytest.raises(ValueError, match=r"\(\+inf\) in sample 1 \(1 values\)"):
        calibration_samples(x, [(4,)], 10)


def test_non_finite_values_in_one_input_of_several_are_refused():
    a, b = np.zeros((3, 2), "float32"), np.zeros((3, 5), "float32")
    b[2, 4] = np.nan
    with pytest.raises(ValueError, match=r"\(NaN\) in sample 2 \(1 values\)"):
        calibration_samples([a, b], [(2,), (5,)], 10)


def test_check_finite_accepts_finite_samples():
    samples = [np.full((1, 3), v, "float32") for v in (0.0, -1e30, 3.5)]
    assert check_finite(samples) is None


@pytest.mark.slow
def test_infinite_calibration_data_is_an_error_not_a_crash_in_a_fresh_process():
    """Before the check, +inf made the TFLite converter kill the process with SIGSEGV."""
    code = textwrap.dedent(
        """
        import keras, numpy as np, tfslim
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        for value in (np.inf, np.nan):
            x = np.random.default_rng(0).random((16, 4)).astype("float32")
            x[5, 1] = value
            try:
                tfslim.convert(model, target="mcu", calibration_data=x)
            except ValueError as e:
                print("refused:", e)
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    refused = [line for line in result.stdout.splitlines() if line.startswith("refused:")]
    assert len(refused) == 2, result.stdout
    assert "(+inf) in sample 5 (1 values)" in refused[0]
    assert "(NaN) in sample 5 (1 values)" in refused[1]
