import keras
import numpy as np
import pytest

import tfslim
from tfslim.errors import UnsupportedOpError
from tfslim.litert import equalization

layers = keras.layers


def _all_layers(model):
    for layer in model.layers:
        yield layer
        if isinstance(layer, keras.Model):
            yield from _all_layers(layer)


def _randomize_batch_norms(model, rng):
    for layer in _all_layers(model):
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.2, 3.0, n))
            layer.beta.assign(rng.normal(size=n))
            layer.moving_mean.assign(rng.normal(scale=0.3, size=n))
            layer.moving_variance.assign(rng.uniform(0.01, 4.0, n))


def _separable(nested: bool):
    """Conv -> BN -> ReLU -> [depthwise -> BN -> ReLU -> 1x1 -> BN -> ReLU] -> GAP -> Dense."""
    inner = [
        layers.DepthwiseConv2D(3, padding="same", use_bias=False, depth_multiplier=2),
        layers.BatchNormalization(),
        layers.ReLU(),
        layers.Conv2D(6, 1),
        layers.BatchNormalization(),
        layers.ReLU(),
    ]
    inputs = keras.Input((8, 8, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(6, 3, padding="same")(inputs)))
    block = keras.Sequential([keras.Input((8, 8, 6)), *inner], name="block")
    y = block(x) if nested else keras.Sequential(inner)(x)
    y = y + x  # An operation node, not a layer.
    y = layers.GlobalAveragePooling2D()(y)
    return keras.Model(inputs, layers.Dense(4)(y), name="separable")


@pytest.fixture(scope="module")
def data():
    return np.random.default_rng(1).uniform(0, 1, (48, 8, 8, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    m = _separable(nested=True)
    _randomize_batch_norms(m, np.random.default_rng(0))
    return m


def _run(model, x):
    return np.asarray(model(x, training=False))


def _kinds(model):
    return [type(layer).__name__ for layer in _all_layers(model)]


def test_batch_norm_folding_is_exact_on_nested_functional_models(model, data):
    reference = _run(model, data)
    weights = [w.copy() for w in model.get_weights()]
    folded = equalization.fold_batch_norm(model)
    assert "BatchNormalization" not in _kinds(folded)
    assert _kinds(folded).count("Sequential") == 1  # The nested block stays nested.
    np.testing.assert_allclose(_run(folded, data), reference, rtol=1e-4, atol=1e-5)
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)  # The input model is untouched.


def test_sequential_folds_to_sequential_and_unfoldable_batch_norms_stay(data):
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, activation="relu"),  # Activation first: no fold.
            layers.BatchNormalization(),
            layers.Conv2D(4, 1),
            layers.BatchNormalization(),
            layers.Flatten(),
            layers.Dense(3),
        ]
    )
    _randomize_batch_norms(model, np.random.default_rng(2))
    folded = equalization.fold_batch_norm(model)
    assert isinstance(folded, keras.Sequential)
    assert [type(layer).__name__ for layer in folded.layers] == [
        "Conv2D",
        "BatchNormalization",
        "Conv2D",
        "Flatten",
        "Dense",
    ]
    np.testing.assert_allclose(_run(folded, data), _run(model, data), rtol=1e-4, atol=1e-5)


def _depthwise_ranges(model):
    depthwise = next(
        layer for layer in _all_layers(model) if type(layer).__name__ == "DepthwiseConv2D"
    )
    kernel = depthwise.kernel.numpy()
    return np.abs(kernel.reshape(-1, kernel.shape[-2] * kernel.shape[-1])).max(axis=0)


def test_cross_layer_equalization_keeps_outputs_and_evens_ranges(model, data):
    reference = _run(model, data)
    folded = equalization.fold_batch_norm(model)
    equalized = tfslim.equalize_model(model)
    np.testing.assert_allclose(_run(equalized, data), reference, rtol=1e-4, atol=1e-5)
    before, after = _depthwise_ranges(folded), _depthwise_ranges(equalized)
    assert after.max() / after.min() < 0.5 * before.max() / before.min()


def test_relu6_pairs_are_skipped_unless_replaced(data):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            layers.Conv2D(4, 3, kernel_initializer=keras.initializers.RandomUniform(-3, 3)),
            layers.ReLU(6.0),
            layers.Conv2D(4, 1),
        ]
    )
    kept = tfslim.equalize_model(model)
    np.testing.assert_array_equal(kept.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())
    replaced = tfslim.equalize_model(model, relu6_to_relu=True)
    assert replaced.layers[1].max_value is None
    assert not np.allclose(replaced.layers[0].kernel.numpy(), model.layers[0].kernel.numpy())


def test_bias_correction_cancels_the_mean_int8_weight_error():
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, (200, 32)).astype(np.float32)
    model = keras.Sequential([keras.Input((32,)), layers.Dense(16), layers.ReLU(), layers.Dense(4)])
    kernel = rng.normal(scale=0.1, size=(32, 16))
    kernel[0, 0] = 8.0  # One outlier makes the per-tensor int8 grid coarse.
    model.layers[0].kernel.assign(kernel)
    corrected = tfslim.equalize_model(model, x, bias_correction=True, cross_layer=False)

    def first_layer_error(m):
        dense = m.layers[0]
        q = equalization.quantize_kernel(dense, dense.kernel.numpy())
        return x @ q + dense.bias.numpy() - (x @ kernel + model.layers[0].bias.numpy())

    before, after = first_layer_error(model), first_layer_error(corrected)
    assert np.abs(after.mean(axis=0)).max() < 1e-4 < np.abs(before.mean(axis=0)).max()
    assert np.mean(after**2) < 0.8 * np.mean(before**2)
    assert corrected.layers[0].bias.dtype == "float32"


def test_quantize_kernel_matches_tflite_per_channel_grid():
    conv = layers.Conv2D(3, 1)
    conv.build((None, 4, 4, 2))
    kernel = np.array([[[[1.0, 0.5, -2.0], [0.3, -0.25, 1.0]]]])
    q = equalization.quantize_kernel(conv, kernel)
    scales = np.array([1.0, 0.5, 2.0]) / 127
    np.testing.assert_allclose(q, np.round(kernel / scales) * scales)
    assert np.abs(q - kernel).max() <= scales.max() / 2 + 1e-12


def _micro_outputs(flatbuffer, x):
    from tflite_micro.python.tflite_micro import runtime

    interpreter = runtime.Interpreter.from_bytes(bytes(flatbuffer), arena_size=500_000)
    params = interpreter.get_input_details(0)["quantization_parameters"]
    out_params = interpreter.get_output_details(0)["quantization_parameters"]
    outputs = []
    for sample in x:
        interpreter.set_input(
            np.round(sample[None] / params["scales"][0] + params["zero_points"][0]).astype(np.int8),
            0,
        )
        interpreter.invoke()
        outputs.append(interpreter.get_output(0).astype(np.float32))
    out = np.concatenate(outputs)
    return (out - out_params["zero_points"][0]) * out_params["scales"][0]


@pytest.mark.slow  # 8-18 s: two exports and conversions.
def test_convert_options_make_int8_files_litert_and_tflite_micro_run(model, data):
    reference = _run(model, data)
    result = tfslim.convert(
        model, target="mcu", calibration_data=data, equalize=True, bias_correction=True
    )
    assert result.quantization == "int8" and result.io_dtype == "int8"
    assert result.fidelity["relative_error"] < 0.1
    micro = _micro_outputs(result.flatbuffer, data[:8])
    litert = tfslim.predict(result, data[:8])
    np.testing.assert_allclose(micro, litert, atol=2 * np.abs(reference).max() / 127)
    np.testing.assert_allclose(micro, reference[:8], atol=0.15 * np.abs(reference).max())


def test_refusals(model, data):
    with pytest.raises(ValueError, match=r"`calibration_data`.*Received: calibration_data=None"):
        tfslim.equalize_model(model, bias_correction=True)
    with pytest.raises(ValueError, match=r"`equalize` with quantization='float16'"):
        tfslim.convert(model, quantization="float16", calibration_data=data, equalize=True)
    with pytest.raises(TypeError, match=r"`bias_correction`. Expected a bool. Received: bias_c"):
        tfslim.equalize_model(model, data, bias_correction="yes")

    class Subclassed(keras.Model):
        def call(self, x):
            return x * 2.0

    sub = Subclassed()
    sub(data[:1])
    with pytest.raises(UnsupportedOpError, match=r"subclassed model.*class Subclassed"):
        tfslim.equalize_model(sub)


def test_quantization_aware_models_are_refused(data):
    qat = tfslim.quantize_model(
        keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(2, 3), layers.Flatten()])
    )
    with pytest.raises(ValueError, match=r"Expected a float model.*QAT model"):
        tfslim.equalize_model(qat)
    with pytest.raises(ValueError, match=r"`bias_correction`.*Expected False for a QAT model"):
        tfslim.convert(qat, calibration_data=data, bias_correction=True)


def test_docstring_example_runs():
    import doctest

    result = doctest.testmod(equalization, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 4 and result.failed == 0


def test_shared_layers_stay_shared(data):
    inputs = keras.Input((8, 8, 3))
    shared = layers.Conv2D(3, 1, name="shared")
    x = layers.ReLU()(shared(inputs))
    outputs = layers.Conv2D(2, 1)(shared(x))
    model = keras.Model(inputs, outputs)
    equalized = tfslim.equalize_model(model, data, bias_correction=True)
    assert [layer.name for layer in equalized.layers].count("shared") == 1
    np.testing.assert_allclose(_run(equalized, data), _run(model, data), atol=0.05)
