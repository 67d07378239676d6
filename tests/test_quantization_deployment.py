"""What is deployed computes what was trained, on trained models of the deployed architectures:
an EfficientNet-style network (swish, depthwise, squeeze-and-excite, stochastic-depth dropout,
residual add, preprocessing at the input) converted for `mcu` agrees with its QAT Keras model,
and the `mcu` refusal names the right layer."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tfslim  # noqa: E402
from tfslim.litert.micro import _layer_of  # noqa: E402
from tfslim.quantization import quantize_model  # noqa: E402

L = keras.layers
SHAPE = (16, 16, 3)
CLASSES = 4


def patterns(n, seed):
    """`CLASSES` classes, each a fixed random smooth image (shared by every seed) plus noise,
    in [0, 255] as images arrive."""
    base = np.random.default_rng(0).normal(size=(CLASSES, 4, 4, SHAPE[-1]))
    base = base.repeat(4, axis=1).repeat(4, axis=2)
    rng = np.random.default_rng(seed)
    y = rng.integers(0, CLASSES, n)
    x = base[y] + 0.5 * rng.normal(size=(n, *SHAPE))
    return np.clip((x + 3.0) / 6.0 * 255.0, 0, 255).astype("float32"), y


def mbconv(x, filters, expand, name, drop=0.0):
    """keras.applications.EfficientNet's block: expand, depthwise, SE, project, add."""
    inputs = x
    channels = x.shape[-1] * expand
    x = L.Conv2D(channels, 1, padding="same", use_bias=False, name=f"{name}expand_conv")(x)
    x = L.Activation("swish")(L.BatchNormalization(momentum=0.9)(x))
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}dwconv")(x)
    x = L.Activation("swish")(L.BatchNormalization(momentum=0.9)(x))
    s = L.Reshape((1, 1, channels))(L.GlobalAveragePooling2D()(x))
    s = L.Conv2D(max(1, channels // 4), 1, activation="swish", name=f"{name}se_reduce")(s)
    s = L.Conv2D(channels, 1, activation="sigmoid", name=f"{name}se_expand")(s)
    x = L.multiply([x, s])
    x = L.Conv2D(filters, 1, use_bias=False, name=f"{name}project_conv")(x)
    x = L.BatchNormalization(momentum=0.9)(x)
    if filters == inputs.shape[-1]:
        x = L.Dropout(drop, noise_shape=(None, 1, 1, 1))(x)
        x = L.add([x, inputs])
    return x


def efficientnet_like():
    inputs = keras.Input(SHAPE)
    x = L.Normalization(mean=[127.0] * 3, variance=[64.0**2] * 3)(L.Rescaling(1.0)(inputs))
    x = L.Conv2D(8, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(x)
    x = L.Activation("swish")(L.BatchNormalization(momentum=0.9)(x))
    x = mbconv(x, 8, 2, "block1a_", drop=0.2)
    x = L.Activation("swish")(L.BatchNormalization(momentum=0.9)(L.Conv2D(16, 1)(x)))
    x = L.Dropout(0.2)(L.GlobalAveragePooling2D()(x))
    return keras.Model(inputs, L.Dense(CLASSES, activation="softmax")(x))


@pytest.fixture(scope="module")
def trained_qat():
    keras.utils.set_random_seed(0)
    x, y = patterns(256, seed=0)
    # Trained from scratch with quantization: one training step to trace instead of two.
    qat = quantize_model(efficientnet_like())
    qat.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=3, batch_size=32, verbose=0)
    return qat


@pytest.mark.slow
def test_trained_efficientnet_like_model_deploys_as_trained(trained_qat):
    from ai_edge_litert.interpreter import Interpreter

    x, y = patterns(200, seed=1)
    reference = trained_qat.predict(x, verbose=0)
    # The model has learnt (a near-uniform output would make any agreement figure noise).
    assert np.mean(reference.argmax(1) == y) >= 0.9
    result = tfslim.convert(trained_qat, target="mcu")  # Refuses any float op.
    assert tfslim.inspect(result, micro_check=False)["fully_integer"]
    interpreter = Interpreter(model_content=result.flatbuffer)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    (in_scale, in_zero), (out_scale, out_zero) = inp["quantization"], out["quantization"]
    got = []
    for sample in x:
        q = np.clip(np.round(sample[None] / in_scale + in_zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        got.append((interpreter.get_tensor(out["index"]).astype("float32") - out_zero) * out_scale)
    got = np.concatenate(got)
    assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.99
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) <= 0.02


@pytest.mark.parametrize(
    "tensor, layers, expected",
    [
        # The TF op 'add_1' inside layer 'block_se' is not the layer called 'add_1'.
        ("model/block_se/add_1", {"add_1", "block_se"}, "block_se"),
        ("model/block_se_1/add_1;model/block_se_1/mul", {"add", "block_se"}, "block_se"),
        ("model/add_1/Add", {"add", "add_1"}, "add_1"),
        ("model/my_gelu_1/Erf", {"my_gelu"}, "my_gelu"),
        ("model/backbone/conv_1/Relu", {"backbone", "conv"}, "conv"),
    ],
)
def test_mcu_refusal_names_the_layer_not_a_same_named_op(tensor, layers, expected):
    assert _layer_of(tensor, layers) == expected
