import numpy as np
import pytest

import tfslim
from tfslim.errors import InvalidModelError, UnsupportedOpError

MODES = ["none", "float16", "dynamic", "int8", "int16x8"]


def _io(flatbuffer):
    report = tfslim.inspect(flatbuffer, micro_check=False)
    return report["inputs"][0]["dtype"], report["outputs"][0]["dtype"], report


@pytest.mark.parametrize("mode", MODES)
def test_each_quantization_mode_converts_and_stays_accurate(mode, small_cnn, digits):
    x_train, _, x_test, y_test = digits
    result = tfslim.convert(small_cnn, quantization=mode, calibration_data=x_train[:64])
    assert result.quantization == mode
    in_dtype, out_dtype, report = _io(result.flatbuffer)
    assert (in_dtype, out_dtype) == ("float32", "float32")  # mobile keeps float I/O
    ev = tfslim.evaluate(result, (x_test, y_test), keras_model=small_cnn)
    assert abs(ev["delta"]) <= 0.03, ev
    assert ev["agreement"] >= 0.95
    if mode == "int8":
        assert set(report["ops"]) >= {"QUANTIZE", "DEQUANTIZE", "CONV_2D"}


@pytest.mark.slow
def test_fidelity_is_recorded_and_a_broken_conversion_warns(small_cnn, digits, monkeypatch):
    from tfslim.errors import TfslimWarning

    result = tfslim.convert(small_cnn, target="mcu", calibration_data=digits[0][:64])
    assert result.fidelity["samples"] == 32
    assert result.fidelity["agreement"] >= 0.9
    assert result.fidelity["relative_error"] < 0.2
    # A flatbuffer that computes something else (as TF 2.21's per-channel int16x8
    # FULLY_CONNECTED did) must not pass silently.
    from tfslim.litert import isolation

    real = isolation.run

    def reversed_outputs(*args, **kwargs):
        result = real(*args, **kwargs)
        return {**result, "outputs": [y[:, ::-1] for y in result["outputs"]]}

    monkeypatch.setattr(isolation, "run", reversed_outputs)
    with pytest.warns(TfslimWarning, match="converter defect"):
        broken = tfslim.convert(small_cnn, target="mcu", calibration_data=digits[0][:64])
    assert broken.fidelity["agreement"] < 0.5
    unchecked = tfslim.convert(
        small_cnn, target="mcu", calibration_data=digits[0][:64], verify=False
    )
    assert unchecked.fidelity is None


def test_int16x8_mode_on_a_dense_model(digits):
    import keras

    x_train, y_train, x_test, y_test = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=3, verbose=0)
    result = tfslim.convert(
        model, quantization="int16x8", io_dtype="int8", calibration_data=x_train[:64]
    )
    assert _io(result.flatbuffer)[:2] == ("int16", "int16")
    ev = tfslim.evaluate(result, (x_test, y_test), keras_model=model)
    assert ev["agreement"] >= 0.98 and abs(ev["delta"]) <= 0.01


@pytest.mark.slow
def test_weight_storage_shrinks_with_quantization(small_cnn, digits):
    sizes = {
        m: tfslim.convert(small_cnn, quantization=m, calibration_data=digits[0][:32]).size_bytes
        for m in ("none", "float16", "int8")
    }
    assert sizes["int8"] < sizes["float16"] < sizes["none"]


@pytest.mark.parametrize(
    "target", ["mcu", "nano33ble", "stm32f746", "nucleo-l4r5zi", "esp32s3", "rp2040"]
)
def test_microcontroller_targets_give_full_int8_with_int8_io(target, small_cnn, digits):
    result = tfslim.convert(small_cnn, target=target, calibration_data=digits[0][:32])
    in_dtype, out_dtype, report = _io(result.flatbuffer)
    assert (result.quantization, in_dtype, out_dtype) == ("int8", "int8", "int8")
    assert report["fully_integer"]


def test_mobile_int8_can_have_int8_io(small_cnn, digits):
    result = tfslim.convert(
        small_cnn, quantization="int8", io_dtype="int8", calibration_data=digits[0][:32]
    )
    assert _io(result.flatbuffer)[:2] == ("int8", "int8")


@pytest.mark.parametrize(
    "calibration",
    [
        lambda x: (x, np.zeros(len(x))),  # (x, y) tuple
        lambda x: iter([x[:10], x[10:20]]),  # iterator of batches
        lambda x: lambda: iter([x[:5], x[5:10]]),  # generator function
    ],
    ids=["xy-tuple", "iterator-of-batches", "generator"],
)
def test_calibration_data_forms(calibration, small_cnn, digits):
    data = calibration(digits[0][:20])
    result = tfslim.convert(small_cnn, target="mcu", calibration_data=data)
    # Calibrated on real digits, the int8 model must track the Keras model.
    assert result.fidelity["samples"] >= 10
    assert result.fidelity["agreement"] >= 0.9


def test_calibration_from_tf_data(small_cnn, digits):
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices(digits[0][:32]).batch(8)
    assert tfslim.convert(small_cnn, target="mcu", calibration_data=ds).size_bytes > 0


def test_full_int8_without_calibration_data_is_refused(small_cnn):
    with pytest.raises(ValueError, match=r"needs `calibration_data`.*Received: calibration_data"):
        tfslim.convert(small_cnn, target="mcu")


def test_wrong_calibration_shape_is_refused(small_cnn):
    with pytest.raises(ValueError, match=r"shape \(8, 8, 1\).*Received: shape \(4, 7, 7, 1\)"):
        tfslim.convert(small_cnn, target="mcu", calibration_data=np.zeros((4, 7, 7, 1)))


def test_wrong_calibration_dtype_is_refused(small_cnn):
    with pytest.raises(ValueError, match=r"numeric samples.*Received: dtype=<U"):
        tfslim.convert(small_cnn, target="mcu", calibration_data=np.full((4, 8, 8, 1), "a"))


def test_unknown_target_and_mode_are_refused(small_cnn):
    with pytest.raises(ValueError, match="argument `target`"):
        tfslim.convert(small_cnn, target="toaster")
    with pytest.raises(ValueError, match=r"argument `quantization`.*Received: quantization='int4'"):
        tfslim.convert(small_cnn, quantization="int4")
    with pytest.raises(ValueError, match=r"no hybrid or float16 kernels"):
        tfslim.convert(small_cnn, target="mcu", quantization="dynamic")
    with pytest.raises(ValueError, match="reads dense tensors only"):
        tfslim.convert(
            small_cnn, target="mcu", sparse=True, calibration_data=np.zeros((1, 8, 8, 1))
        )


@pytest.mark.parametrize("obj", [42, "not-a-model.txt", np.zeros(3), object()])
def test_non_model_objects_are_refused(obj, tmp_path):
    if isinstance(obj, str):
        (tmp_path / obj).write_text("hi")
        obj = tmp_path / obj
    with pytest.raises((TypeError, ValueError), match="argument `model`"):
        tfslim.convert(obj)


def test_missing_model_file_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        tfslim.convert(tmp_path / "missing.keras")


def test_op_without_tflm_kernel_is_refused_naming_op_and_layer(digits):
    import keras

    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(4, name="proj"),
            keras.layers.Activation("gelu", name="my_gelu"),
            keras.layers.Dense(2),
        ]
    )
    with pytest.raises(
        UnsupportedOpError, match=r"GELU from layer 'my_gelu' \(no TFLite Micro kernel\)"
    ):
        tfslim.convert(model, target="mcu", calibration_data=np.random.rand(16, 8))
    # The same model is fine for a phone.
    assert tfslim.convert(model, target="mobile").size_bytes > 0


@pytest.mark.slow
def test_keras_file_savedmodel_and_subclassed_models(small_cnn, digits, tmp_path):
    import keras
    import tensorflow as tf

    path = tmp_path / "m.keras"
    small_cnn.save(path)
    from_file = tfslim.convert(path, quantization="none")

    export_dir = tmp_path / "saved"
    small_cnn.export(export_dir, verbose=False)
    from_saved = tfslim.convert(export_dir, quantization="none")
    x = digits[2][:20]
    expected = small_cnn.predict(x, verbose=0)
    for result in (from_file, from_saved):
        got = tfslim.predict(result, x)
        np.testing.assert_allclose(got, expected, atol=1e-5)

    class Tiny(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            return tf.nn.relu(self.dense(x))

    sub = Tiny()
    sub(np.zeros((1, 4), "float32"))
    with pytest.raises(ValueError, match="Pass `input_shape`"):
        tfslim.convert(sub)
    result = tfslim.convert(sub, input_shape=(4,), quantization="none")
    xs = np.random.rand(5, 4).astype("float32")
    np.testing.assert_allclose(tfslim.predict(result, xs), sub(xs), atol=1e-5)


def test_tf_keras_model_converts_to_full_int8():
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((6,)), tf_keras.layers.Dense(3, activation="relu")])
    result = tfslim.convert(model, target="mcu", calibration_data=np.random.rand(16, 6))
    assert _io(result.flatbuffer)[2]["fully_integer"]


def test_output_path_is_written_atomically_and_not_clobbered(small_cnn, tmp_path):
    out = tmp_path / "m.tflite"
    result = tfslim.convert(small_cnn, output_path=out)
    assert out.read_bytes() == result.flatbuffer
    assert out.stat().st_mode & 0o044  # readable by others, like any file the user writes
    out.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        tfslim.convert(small_cnn, output_path=out)
    assert out.read_bytes() == b"keep me"
    tfslim.convert(small_cnn, output_path=out, overwrite=True)
    assert out.read_bytes()[4:8] == b"TFL3"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        tfslim.convert(small_cnn, output_path=tmp_path / "nodir" / "m.tflite")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.tflite"]  # no temp files left


def test_failed_conversion_leaves_no_file(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((8,)), keras.layers.Activation("gelu")])
    out = tmp_path / "m.tflite"
    with pytest.raises(UnsupportedOpError):
        tfslim.convert(model, target="mcu", calibration_data=np.ones((4, 8)), output_path=out)
    assert list(tmp_path.iterdir()) == []


def test_sparse_encoding_shrinks_a_pruned_model():
    import keras

    keras.utils.set_random_seed(1)
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256), keras.layers.Dense(4)])
    kernel = model.layers[0].kernel
    w = kernel.numpy()
    w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0.0  # 90% zeros
    kernel.assign(w)
    dense = tfslim.convert(model, quantization="none", sparse=False)
    sparse = tfslim.convert(model, quantization="none", sparse=True)
    assert sparse.size_bytes < 0.5 * dense.size_bytes
    x = np.random.rand(3, 256).astype("float32")
    np.testing.assert_allclose(tfslim.predict(sparse, x), model.predict(x, verbose=0), atol=1e-4)
    report = tfslim.inspect(sparse.flatbuffer, target="mcu")
    assert report["sparse_tensors"] >= 1
    assert not report["micro"]["supported"]


@pytest.mark.slow
def test_mobile_encodes_sparsely_only_when_it_pays(small_cnn):
    import keras

    assert tfslim.convert(small_cnn).sparse is False  # dense model: no index overhead
    model = keras.Sequential([keras.Input((256,)), keras.layers.Dense(256), keras.layers.Dense(4)])
    for layer in model.layers:
        w = layer.kernel.numpy()
        w[np.abs(w) < np.quantile(np.abs(w), 0.9)] = 0.0
        layer.kernel.assign(w)
    # Integer (here the mobile default, dynamic) stays dense: XNNPACK cannot load sparse int8.
    assert tfslim.convert(model).sparse is False
    auto = tfslim.convert(model, quantization="none")
    assert auto.sparse is True
    assert auto.size_bytes < tfslim.convert(model, quantization="none", sparse=False).size_bytes


def test_docstring_examples_run():
    import doctest

    from tfslim.litert import converter

    result = doctest.testmod(converter, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 3 and result.failed == 0


def test_float_output_op_on_mcu_names_the_keras_layer(small_cnn):
    with pytest.raises(UnsupportedOpError, match=r"SOFTMAX from layer 'dense\w*' \(float kernel\)"):
        tfslim.convert(small_cnn, target="mcu", quantization="none")


def test_io_dtype_needs_a_full_integer_mode(small_cnn, digits):
    with pytest.raises(ValueError, match=r"argument `io_dtype`.*Received: io_dtype='int8'"):
        tfslim.convert(small_cnn, quantization="dynamic", io_dtype="int8")
    result = tfslim.convert(
        small_cnn, quantization="int16x8", io_dtype="int8", calibration_data=digits[0][:16]
    )
    assert result.io_dtype == "int16" == _io(result.flatbuffer)[0]
    with pytest.raises(TypeError, match="argument `sparse`"):
        tfslim.convert(small_cnn, sparse="yes")


def test_multi_input_model_calibrates_with_a_list_of_arrays():
    import keras

    a, b = keras.Input((4,), name="a"), keras.Input((3,), name="b")
    out = keras.layers.Dense(2)(keras.layers.Concatenate()([a, b]))
    model = keras.Model([a, b], out)
    xs = [np.random.rand(16, 4).astype("float32"), np.random.rand(16, 3).astype("float32")]
    result = tfslim.convert(model, target="mcu", calibration_data=xs)
    report = tfslim.inspect(result)
    assert [i["dtype"] for i in report["inputs"]] == ["int8", "int8"]
    assert report["fully_integer"] and report["micro"]["supported"]
    with pytest.raises(ValueError, match=r"model has 2 inputs; expected a list of 2 arrays"):
        tfslim.convert(model, target="mcu", calibration_data=xs[0])
    with pytest.raises(ValueError, match=r"Expected input 1 .* shape \(3,\)"):
        tfslim.convert(model, target="mcu", calibration_data=[xs[0], xs[0]])
    with pytest.raises(InvalidModelError, match="single-input"):
        tfslim.predict(result, xs[0])
