import doctest

import keras
import numpy as np
import pytest

import tfslim
from tfslim.architectures import (
    MLPERF_TINY_MODELS,
    ds_cnn,
    fc_autoencoder,
    mobilenet_v1,
    randomize_weights,
    resnet8,
)
from tfslim.architectures import mlperf_tiny as mlperf_tiny_module

# Small configurations that build and convert in well under a second.
SMALL = {
    "ds_cnn": dict(input_shape=(8, 8, 1), num_classes=10, filters=8, num_blocks=1),
    "mobilenet_v1": dict(input_shape=(32, 32, 3), num_classes=3, alpha=0.25),
    "resnet8": dict(input_shape=(8, 8, 3), num_classes=4, filters=8, num_stacks=2),
    "fc_autoencoder": dict(input_shape=(32,), units=16, bottleneck_units=4, num_layers=1),
}


def _count(model, layer_type):
    return sum(isinstance(layer, layer_type) for layer in model.layers)


def test_reference_models_table_names_each_builder():
    import tfslim.architectures as arch

    assert set(MLPERF_TINY_MODELS) == {"ds_cnn", "mobilenet_v1", "resnet8", "fc_autoencoder"}
    for name, spec in MLPERF_TINY_MODELS.items():
        assert isinstance(spec, arch.ReferenceModel) and spec.name == name
        assert spec.build is getattr(arch, name) is getattr(mlperf_tiny_module, name), name
        assert spec.params > 0 and spec.int8_bytes > 0 and all(d >= 1 for d in spec.input_shape)


def test_docstring_examples_run():
    result = doctest.testmod(mlperf_tiny_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("name", sorted(MLPERF_TINY_MODELS))
def test_defaults_reproduce_the_published_parameter_counts(name):
    spec = MLPERF_TINY_MODELS[name]
    model = spec.build()
    assert model.count_params() == spec.params
    assert model.input_shape == (None, *spec.input_shape)
    assert model.name == name


def test_reference_layer_structure():
    kws = ds_cnn()
    assert _count(kws, keras.layers.DepthwiseConv2D) == 4
    assert kws.output_shape == (None, 12)
    assert kws.get_layer("stem_conv").kernel_size == (10, 4)
    vww = mobilenet_v1()
    assert _count(vww, keras.layers.DepthwiseConv2D) == 13
    assert vww.get_layer("block13_pw_conv").filters == 256  # 1024 * 0.25
    assert vww.output_shape == (None, 2)
    ic = resnet8()
    assert _count(ic, keras.layers.Add) == 3
    assert [ic.get_layer(f"stack{i}_a_conv").filters for i in (1, 2, 3)] == [16, 32, 64]
    ad = fc_autoencoder()
    assert _count(ad, keras.layers.Dense) == 10
    assert ad.get_layer("bottleneck_dense").units == 8
    assert ad.output_shape == (None, 640)


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n == "mobilenet_v1" else n for n in sorted(SMALL)],
)
def test_small_configurations_build_and_predict(name):
    model = MLPERF_TINY_MODELS[name].build(**SMALL[name])
    x = np.random.default_rng(0).random((2, *model.input_shape[1:])).astype("float32")
    y = model.predict(x, verbose=0)
    assert y.shape == (2, *model.output_shape[1:])
    if name != "fc_autoencoder":
        np.testing.assert_allclose(y.sum(axis=-1), 1.0, rtol=1e-5)  # Softmax head.


def test_width_multiplier_scales_every_stage():
    narrow = mobilenet_v1(input_shape=(32, 32, 3), alpha=0.25)
    wide = mobilenet_v1(input_shape=(32, 32, 3), alpha=0.5)
    assert wide.get_layer("stem_conv").filters == 16
    assert wide.get_layer("block13_pw_conv").filters == 512
    assert wide.count_params() > 3 * narrow.count_params()
    assert ds_cnn(alpha=0.5).get_layer("block1_pw_conv").filters == 32
    assert resnet8(alpha=2.0).get_layer("stack3_a_conv").filters == 128


def test_fc_autoencoder_parameter_formula():
    model = fc_autoencoder(input_shape=(32,), units=16, bottleneck_units=4, num_layers=2)
    dense_bn = lambda n_in, n_out: n_in * n_out + n_out + 4 * n_out  # noqa: E731
    expected = (
        dense_bn(32, 16) + dense_bn(16, 16) + dense_bn(16, 4) + dense_bn(4, 16) + dense_bn(16, 16)
    ) + (16 * 32 + 32)
    assert model.count_params() == expected


def test_classifier_activation_none_returns_logits():
    model = resnet8(**SMALL["resnet8"], classifier_activation=None)
    assert model.get_layer("predictions").activation.__name__ == "linear"


@pytest.mark.slow
def test_small_ds_cnn_learns_digits(digits):
    x_train, y_train, x_test, y_test = digits
    model = ds_cnn(
        input_shape=(8, 8, 1),
        num_classes=10,
        filters=16,
        num_blocks=2,
        first_kernel_size=(3, 3),
        first_strides=(1, 1),
        dropout=0.0,
        top_dropout=0.0,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x_train, y_train, epochs=3, batch_size=16, verbose=0)
    _, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    # Chance is 0.1; after 3 epochs the batch-norm moving statistics still lag, so the
    # inference-mode accuracy trails the training accuracy.
    assert test_accuracy > 0.3


def test_saved_reference_model_loads_with_plain_keras(tmp_path):
    model = ds_cnn(**SMALL["ds_cnn"])
    path = tmp_path / "ds_cnn.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    x = np.random.default_rng(1).random((3, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(restored.predict(x, verbose=0), model.predict(x, verbose=0))


@pytest.mark.parametrize(
    "build, kwargs, match",
    [
        (mobilenet_v1, {"alpha": 0}, r"argument `alpha`. Expected a float > 0. Received: alpha=0"),
        (ds_cnn, {"alpha": -1.0}, r"argument `alpha`. Expected a float > 0. Received: alpha=-1.0"),
        (ds_cnn, {"input_shape": (49, 10)}, r"argument `input_shape`. Expected a tuple of 3"),
        (resnet8, {"input_shape": (32, 0, 3)}, r"Received: input_shape=\(32, 0, 3\)"),
        (fc_autoencoder, {"input_shape": (640, 1)}, r"argument `input_shape`. Expected a tuple"),
        (ds_cnn, {"num_classes": 0}, r"argument `num_classes`. Expected an int >= 1"),
        (ds_cnn, {"num_blocks": 0}, r"argument `num_blocks`.*num_blocks=0"),
        (ds_cnn, {"dropout": 1.0}, r"argument `dropout`. Expected a float in \[0, 1\)"),
        (mobilenet_v1, {"dropout": -0.1}, r"argument `dropout`.*dropout=-0.1"),
        (resnet8, {"num_stacks": 0}, r"argument `num_stacks`.*num_stacks=0"),
        (resnet8, {"weight_decay": -1e-4}, r"argument `weight_decay`. Expected a float >= 0"),
        (fc_autoencoder, {"units": 0}, r"argument `units`. Expected an int >= 1"),
        (fc_autoencoder, {"bottleneck_units": -8}, r"argument `bottleneck_units`"),
    ],
)
def test_bad_arguments_are_named_in_the_error(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_bad_argument_types():
    with pytest.raises(TypeError, match=r"argument `num_classes`.*num_classes=2.5"):
        mobilenet_v1(num_classes=2.5)
    with pytest.raises(TypeError, match=r"argument `alpha`.*alpha='wide'"):
        resnet8(alpha="wide")


def test_options_are_keyword_only():
    with pytest.raises(TypeError):
        ds_cnn((49, 10, 1))


def _convert_reference(name):
    spec = MLPERF_TINY_MODELS[name]
    keras.utils.set_random_seed(0)
    model = randomize_weights(spec.build())
    x = np.random.default_rng(0).random((16, *spec.input_shape)).astype("float32")
    result = tfslim.convert(model, target="mcu", calibration_data=x)
    return spec, tfslim.inspect(result.flatbuffer, target="nano33ble")


def _assert_reference_file(spec, report):
    assert report["fully_integer"]
    assert [i["dtype"] for i in report["inputs"]] == ["int8"]
    assert abs(report["size_bytes"] / spec.int8_bytes - 1) <= 0.10, report["size_bytes"]
    assert report["micro"]["supported"], report["micro"]
    assert report["micro"]["arena_bytes"] > 0
    assert report["targets"]["nano33ble"]["fits"]


@pytest.mark.slow
def test_ds_cnn_int8_file_is_within_10_percent_of_the_reference():
    spec, report = _convert_reference("ds_cnn")
    _assert_reference_file(spec, report)
    assert set(report["ops"]) == {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "AVERAGE_POOL_2D",
        "FULLY_CONNECTED",
        "SOFTMAX",
    }


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenet_v1", "resnet8", "fc_autoencoder"])
def test_reference_int8_files_are_within_10_percent(name):
    _assert_reference_file(*_convert_reference(name))


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.slow) if n == "mobilenet_v1" else n
        for n in sorted(MLPERF_TINY_MODELS)
    ],
)
def test_references_are_fully_qat_wrapped(name):
    quantization = pytest.importorskip("tfslim.quantization")
    spec = MLPERF_TINY_MODELS[name]
    qat = quantization.quantize_model(spec.build())
    assert quantization.is_quantized_model(qat)
    assert quantization.float_layers(qat) == []
    x = np.random.default_rng(0).random((2, *spec.input_shape)).astype("float32")
    assert qat.predict(x, verbose=0).shape == (2, *qat.output_shape[1:])


@pytest.mark.slow
def test_qat_reference_converts_to_int8_for_micro():
    quantization = pytest.importorskip("tfslim.quantization")
    spec = MLPERF_TINY_MODELS["ds_cnn"]
    qat = quantization.quantize_model(randomize_weights(spec.build()))
    qat(np.random.default_rng(0).random((8, *spec.input_shape)).astype("float32"), training=True)
    report = tfslim.inspect(tfslim.convert(qat, target="mcu").flatbuffer)
    assert report["fully_integer"]
    assert [i["dtype"] for i in report["inputs"]] == ["int8"]
    assert report["micro"]["supported"], report["micro"]
