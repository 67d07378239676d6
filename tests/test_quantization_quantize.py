"""Tests for tfslim.quantization.quantize (quantize_model, is_quantized_model, float_layers)."""

import os
import re

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tfslim  # noqa: E402
from tfslim.errors import InvalidModelError, UnsupportedOpError  # noqa: E402
from tfslim.quantization import (  # noqa: E402
    ActivationQuantizer,
    QuantizeWrapper,
    float_layers,
    is_quantized_model,
    quantize_model,
)

L = keras.layers


def to_tflite(model):
    """Converts a QAT model with the converter stage: no calibration data, int8 I/O, checked
    against TFLite Micro's op set."""
    return tfslim.convert(model, target="mcu").flatbuffer


def ops_and_dtypes(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    ops = []
    for op in interpreter._get_ops_details():
        dtypes = {tensors[i]["dtype"].__name__ for i in [*op["inputs"], *op["outputs"]] if i >= 0}
        ops.append((op["op_name"], dtypes))
    io = [d["dtype"].__name__ for d in interpreter.get_input_details()]
    io += [d["dtype"].__name__ for d in interpreter.get_output_details()]
    return ops, io


def assert_fully_int8(flatbuffer):
    ops, io = ops_and_dtypes(flatbuffer)
    assert io == ["int8"] * len(io)
    for name, dtypes in ops:
        # A QUANTIZE between int8 tensors is an integer requantization (e.g. to give the
        # inputs of a concatenation one scale), not a float boundary.
        assert name != "DEQUANTIZE", ops
        assert dtypes <= {"int8", "int32"}, (name, dtypes)
    return [name for name, _ in ops]


def observe(model, shape, steps=2):
    """Runs training-mode forward passes so the range observers see data."""
    rng = np.random.default_rng(0)
    for _ in range(steps):
        model(rng.uniform(0, 1, (8, *shape)).astype("float32"), training=True)


def single_layer_model(make, shape=(8, 8, 3)):
    inputs = keras.Input(shape)
    return keras.Model(inputs, make(inputs))


# Each covered layer, with the TFLite op it must become.
LAYER_CASES = {
    "dense": (lambda x: L.Dense(4)(L.Flatten()(x)), "FULLY_CONNECTED"),
    "conv1d": (lambda x: L.Conv1D(4, 3)(L.Reshape((64, 3))(x)), "CONV_2D"),
    "conv2d_relu": (lambda x: L.Conv2D(4, 3, activation="relu")(x), "CONV_2D"),
    "depthwise_relu6": (lambda x: L.ReLU(6.0)(L.DepthwiseConv2D(3)(x)), "DEPTHWISE_CONV_2D"),
    "separable": (lambda x: L.SeparableConv2D(4, 3)(x), "DEPTHWISE_CONV_2D"),
    "transpose": (lambda x: L.Conv2DTranspose(4, 3, strides=2)(x), "TRANSPOSE_CONV"),
    "conv_bn": (lambda x: L.BatchNormalization()(L.Conv2D(4, 3)(x)), "CONV_2D"),
    "dense_bn": (lambda x: L.BatchNormalization()(L.Dense(4)(L.Flatten()(x))), "FULLY_CONNECTED"),
    "conv1d_bn_relu": (
        lambda x: L.ReLU()(L.BatchNormalization()(L.Conv1D(4, 3)(L.Reshape((64, 3))(x)))),
        "CONV_2D",
    ),
    "avgpool1d": (lambda x: L.AveragePooling1D(2)(L.Reshape((64, 3))(x)), "AVERAGE_POOL_2D"),
    "add": (lambda x: L.Add()([x, L.Conv2D(3, 1)(x)]), "ADD"),
    "multiply_se": (
        lambda x: L.Multiply()(
            [
                x,
                L.Reshape((1, 1, 3))(
                    L.Dense(3, activation="sigmoid")(L.GlobalAveragePooling2D()(x))
                ),
            ]
        ),
        "MUL",
    ),
    "concatenate": (lambda x: L.Concatenate()([x, L.Conv2D(2, 1)(x)]), "CONCATENATION"),
    "maxpool": (lambda x: L.MaxPooling2D()(x), "MAX_POOL_2D"),
    "avgpool": (lambda x: L.AveragePooling2D(2)(x), "AVERAGE_POOL_2D"),
    "gap": (lambda x: L.GlobalAveragePooling2D()(x), "MEAN"),
    "maxpool1d": (lambda x: L.MaxPooling1D()(L.Reshape((64, 3))(x)), "MAX_POOL_2D"),
    "gap1d": (lambda x: L.GlobalAveragePooling1D()(L.Reshape((64, 3))(x)), "MEAN"),
    "zero_padding": (lambda x: L.ZeroPadding2D()(x), "PAD"),
    "upsampling": (lambda x: L.UpSampling2D()(x), "RESIZE_NEAREST_NEIGHBOR"),
    "upsampling_bilinear": (
        lambda x: L.UpSampling2D(interpolation="bilinear")(x),
        "RESIZE_BILINEAR",
    ),
    "rescaling": (lambda x: L.Rescaling(2.0, offset=-1.0)(x), "MUL"),
    "relu": (lambda x: L.ReLU()(x), "RELU"),
    "relu6": (lambda x: L.Activation("relu6")(x), "RELU6"),
    "sigmoid": (lambda x: L.Activation("sigmoid")(x), "LOGISTIC"),
    "tanh": (lambda x: L.Activation("tanh")(x), "TANH"),
    "softmax": (lambda x: L.Softmax()(x), "SOFTMAX"),
    "hard_swish": (lambda x: L.Activation("hard_swish")(x), "HARD_SWISH"),
    "flatten_dropout": (lambda x: L.Dense(4)(L.Dropout(0.5)(L.Flatten()(x))), "FULLY_CONNECTED"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(LAYER_CASES))
def test_each_layer_converts_to_integer_only_op(case):
    make, expected_op = LAYER_CASES[case]
    qat = quantize_model(single_layer_model(make))
    observe(qat, (8, 8, 3))
    ops = assert_fully_int8(to_tflite(qat))
    assert expected_op is None or expected_op in ops


def test_structure_folds_bn_and_fuses_activation():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, use_bias=False, name="conv"),
            L.BatchNormalization(name="bn"),
            L.ReLU(name="relu"),
            L.Flatten(),
            L.Dense(10, activation="softmax", name="head"),
        ]
    )
    qat = quantize_model(model)
    conv, head = qat.get_layer("conv"), qat.get_layer("head")
    assert isinstance(conv, QuantizeWrapper) and conv.batch_norm is not None
    assert conv.activation == "relu"
    assert head.activation == "softmax" and head.pre_activation_quantizer is not None
    assert head.output_quantizer.fixed_range == (0.0, 255.0 / 256.0)
    # A ReLU output's observer knows its minimum is 0; the softmax's input may be negative.
    assert conv.output_quantizer.nonnegative and not head.pre_activation_quantizer.nonnegative
    assert isinstance(qat.layers[1], ActivationQuantizer)  # The input quantizer.
    assert is_quantized_model(qat) and not is_quantized_model(model)
    assert float_layers(qat) == []


def test_predictions_close_to_float_model(digits):
    x_train, y_train, x_test, _ = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(8, 3, padding="same"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(10),
        ]
    )
    model(x_train[:64], training=True)  # Give batch norm non-trivial statistics.
    qat = quantize_model(model)
    observe_data = x_train[:256]
    qat(observe_data, training=True)
    float_out = model.predict(x_test, verbose=0)
    qat_out = qat.predict(x_test, verbose=0)
    scale = np.abs(float_out).max()
    # Only int8 rounding separates the two: well under 5% of the output range.
    assert np.abs(float_out - qat_out).max() < 0.05 * scale


def test_nested_functional_backbone_stays_nested():
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    backbone = keras.Model(inputs, x, name="backbone")
    outer_in = keras.Input((8, 8, 1))
    y = L.GlobalAveragePooling2D()(backbone(outer_in))
    classifier = keras.Model(outer_in, L.Dense(10, activation="softmax")(y))
    qat = quantize_model(classifier)
    nested = qat.get_layer("backbone")
    assert isinstance(nested, keras.Model)
    # Inputs of a nested model are already quantized by the outer graph.
    assert [type(la).__name__ for la in nested.layers] == ["InputLayer", "QuantizeWrapper"]
    observe(qat, (8, 8, 1))
    assert_fully_int8(to_tflite(qat))


def test_weights_are_copied_not_shared():
    model = keras.Sequential([keras.Input((4,)), L.Dense(3, name="d")])
    qat = quantize_model(model)
    np.testing.assert_array_equal(qat.get_layer("d").layer.kernel.numpy(), model.layers[0].kernel)
    qat.get_layer("d").layer.kernel.assign(np.zeros((4, 3)))
    assert np.abs(model.layers[0].kernel.numpy()).sum() > 0


def mobilenet_block(x, filters, expand=4):
    inputs = x
    x = L.Conv2D(x.shape[-1] * expand, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.DepthwiseConv2D(3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = L.Conv2D(filters, 1, use_bias=False)(x)
    x = L.BatchNormalization()(x)
    return L.Add()([inputs, x]) if inputs.shape[-1] == filters else x


def resnet_block(x, filters):
    shortcut = x
    x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
    x = L.BatchNormalization()(x)
    x = L.Add()([shortcut, x])
    return L.ReLU(name="residual_relu")(x)


@pytest.mark.slow
@pytest.mark.parametrize("block", ["mobilenet", "resnet"])
def test_blocks_end_to_end(block, digits):
    x_train, y_train, x_test, y_test = digits
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(8, 3, padding="same", use_bias=False)(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU(6.0)(x)
    x = mobilenet_block(x, 8) if block == "mobilenet" else resnet_block(x, 8)
    x = L.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, L.Dense(10, activation="softmax")(x))
    qat = quantize_model(model)
    qat.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    qat.fit(x_train, y_train, epochs=2, batch_size=32, verbose=0)
    flatbuffer = to_tflite(qat)
    ops = assert_fully_int8(flatbuffer)
    assert ("DEPTHWISE_CONV_2D" if block == "mobilenet" else "ADD") in ops
    # The ReLU after the residual Add is fused into the ADD kernel.
    assert "RELU" not in ops
    if block == "resnet":
        assert qat.get_layer("residual_relu_quantizer").nonnegative
    int8_pred = tfslim.predict(flatbuffer, x_test).argmax(1)
    keras_pred = qat.predict(x_test, verbose=0).argmax(1)
    assert (int8_pred == keras_pred).mean() >= 0.97


@pytest.mark.slow
def test_save_load_round_trip(tmp_path, digits):
    x_train, y_train, x_test, _ = digits
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, use_bias=False),
            L.BatchNormalization(),
            L.ReLU(),
            L.SeparableConv2D(4, 3, activation="relu6"),
            L.Flatten(),
            L.Dense(10, activation="softmax"),
        ]
    )
    qat = quantize_model(model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x_train[:128], y_train[:128], epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "qat.keras"
    qat.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x_test, verbose=0), qat.predict(x_test, verbose=0))
    assert is_quantized_model(loaded)
    ranges = [w.numpy() for w in loaded.weights if "range_" in w.path]
    np.testing.assert_array_equal(ranges, [w.numpy() for w in qat.weights if "range_" in w.path])
    # Resumes training from the checkpoint: the observers keep their state.
    loaded.fit(x_train[:64], y_train[:64], epochs=1, batch_size=32, verbose=0)
    observed = {w.path: w.numpy() for w in loaded.weights if w.path.endswith("observed")}
    # Every observed (non fixed-range) quantizer stays initialised; none restarts from -6..6.
    assert sum(observed.values()) == len(observed) - 1  # Only the softmax output is fixed.
    assert all(
        abs(v) < 6.0
        for k, v in ((w.path, float(w.numpy())) for w in loaded.weights if "range_min" in w.path)
        if "dense" not in k
    )
    config = qat.get_config()
    rebuilt = keras.Model.from_config(config)
    assert [type(la).__name__ for la in rebuilt.layers] == [type(la).__name__ for la in qat.layers]


def test_skip_keeps_layer_in_float():
    model = keras.Sequential(
        [keras.Input((8,)), L.Dense(8, name="keep_float"), L.Dense(4, name="head")]
    )
    for skip in (
        ["keep_float"],
        "keep_.*",
        re.compile("keep_float"),
        lambda la: la.name == "keep_float",
    ):
        qat = quantize_model(model, skip=skip)
        assert type(qat.get_layer("keep_float")).__name__ == "Dense"
        assert isinstance(qat.get_layer("head"), QuantizeWrapper)
        # No quantizer after it: it stays float in the converted model, as trained.
        assert [type(la).__name__ for la in qat.layers] == [
            "InputLayer",
            "ActivationQuantizer",
            "Dense",
            "QuantizeWrapper",
        ]
        assert float_layers(qat) == ["keep_float"]


def test_refuses_unsupported_layer():
    model = keras.Sequential([keras.Input((4, 8)), L.LSTM(4, name="rnn"), L.Dense(2)])
    with pytest.raises(UnsupportedOpError, match=r"LSTM 'rnn'.*skip=\['rnn'\]"):
        quantize_model(model)
    # Skipping it is the documented way out.
    assert float_layers(quantize_model(model, skip="rnn")) == ["rnn"]


def test_refuses_subclassed_model():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = L.Dense(2)

        def call(self, x):
            return self.dense(x)

    model = Custom()
    model(np.zeros((1, 4), "float32"))
    with pytest.raises(InvalidModelError, match="subclassed model.*class Custom"):
        quantize_model(model)


def test_refuses_other_backend(monkeypatch):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    with pytest.raises(RuntimeError, match="TensorFlow backend.*Received: .*'jax'"):
        quantize_model(model)


@pytest.mark.parametrize(
    "kwargs, error, pattern",
    [
        ({"skip": "nope"}, ValueError, r"argument `skip`.*'nope'"),
        ({"skip": [3]}, TypeError, r"argument `skip`.*Received: skip=\[3\]"),
        ({"ema_decay": 1.5}, ValueError, r"argument `ema_decay`.*ema_decay=1.5"),
    ],
)
def test_argument_errors(kwargs, error, pattern):
    model = keras.Sequential([keras.Input((4,)), L.Dense(2)])
    with pytest.raises(error, match=pattern):
        quantize_model(model, **kwargs)


def test_refuses_non_model_and_unbuilt_sequential():
    with pytest.raises(TypeError, match="argument `model`.*Received: model='x'"):
        quantize_model("x")
    with pytest.raises(InvalidModelError, match="unbuilt Sequential"):
        quantize_model(keras.Sequential([L.Dense(2)]))


MIRRORED_SCRIPT = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
import numpy as np
from sklearn.datasets import load_digits
from tfslim.quantization import FreezeQuantization, quantize_model
keras.utils.set_random_seed(0)
data = load_digits()
x = (data.images / 16.0).astype("float32")[..., None][:256]
y = data.target[:256]
L = keras.layers
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
with strategy.scope():
    model = keras.Sequential([keras.Input((8, 8, 1)), L.Conv2D(8, 3, use_bias=False),
        L.BatchNormalization(), L.ReLU(), L.Flatten(), L.Dense(10, activation="softmax")])
    qat = quantize_model(model)
    qat.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
# Freezing batch norm retraces the step mid-fit, under the strategy.
qat.fit(x, y, epochs=3, batch_size=64, verbose=0,
        callbacks=[FreezeQuantization(freeze_ranges_epoch=1, freeze_batch_norm_epoch=2)])
mismatch, values = [], {}
for v in qat.weights:
    local = [np.asarray(t) for t in strategy.experimental_local_results(v.value)]
    if any(not np.array_equal(local[0], t) for t in local[1:]):
        mismatch.append(v.path)
    values[v.path] = np.asarray(local[0]).ravel().tolist()
print("RESULT" + json.dumps({"replicas": strategy.num_replicas_in_sync,
                             "mismatch": mismatch, "values": values}))
"""


@pytest.mark.slow
def test_mirrored_strategy_keeps_replicas_consistent():
    import json
    import os
    import subprocess
    import sys

    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT], capture_output=True, text=True, env=env
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT")]
    assert lines, done.stderr[-2000:]
    result = json.loads(lines[-1][len("RESULT") :])
    assert result["replicas"] == 2
    assert result["mismatch"] == []
    values = result["values"]
    # The input range was reduced over both replicas' batches: digits span [0, 1].
    assert values["input_layer_quantizer/range_max"] == [1.0]
    assert values["input_layer_quantizer/frozen"] == [1.0]
    assert values["conv2d/bn_frozen"] == [1.0]
    assert any(v != 0.0 for v in values["conv2d/batch_normalization/moving_mean"])


def test_tf_keras_model_goes_to_tfmot():
    tf_keras = pytest.importorskip("tf_keras")
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    qat = quantize_model(model)
    assert type(qat).__module__.startswith("tf_keras")
    assert any("Quantize" in type(layer).__name__ for layer in qat.layers)
    assert is_quantized_model(qat)


@pytest.mark.slow
def test_trains_under_xla_with_a_partial_last_batch():
    # XLA sees the last, smaller batch of a tf.data pipeline as a dynamic batch dimension;
    # its dynamic padder rejects TF's fused batch-norm gradient, so the folded batch norm
    # must use plain moments there.
    inputs = keras.Input((8, 8, 1))
    x = L.Conv2D(4, 3, use_bias=False, name="conv")(inputs)
    x = L.BatchNormalization()(x)
    x = L.ReLU()(x)
    outputs = L.Dense(3)(L.GlobalAveragePooling2D()(x))
    qat = quantize_model(keras.Model(inputs, outputs))
    qat.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(37, 8, 8, 1)).astype("float32"), np.arange(37) % 3)
    ).batch(16)
    moving_mean = qat.get_layer("conv").batch_norm.moving_mean
    before = moving_mean.numpy().copy()
    history = qat.fit(data, epochs=2, verbose=0)
    assert np.isfinite(history.history["loss"]).all()
    assert not np.allclose(moving_mean.numpy(), before)


@pytest.mark.slow
def test_tf_keras_route_leaves_the_environment_unchanged():
    # Importing tfmot sets TF_USE_LEGACY_KERAS=1, which would make later `tf.keras` calls in
    # the user's process resolve to tf_keras; tfmot must be imported in a fresh process to
    # see it.
    import subprocess
    import sys

    code = (
        "import os, tf_keras\n"
        "from tfslim.quantization import quantize_model\n"
        "m = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])\n"
        "quantize_model(m)\n"
        "print(repr(os.environ.get('TF_USE_LEGACY_KERAS')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "3"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "None"


@pytest.mark.parametrize("standalone", [False, True])
def test_loss_is_computed_from_the_logits_behind_a_softmax_output(standalone):
    # Like Keras's own softmax, the quantized output carries its logits: cross-entropy is
    # computed from them, so a true-class probability that int8 rounds to zero still gives
    # an exact loss (not the clipped log of zero), while the output values stay quantized.
    inputs = keras.Input((4,))
    if standalone:
        outputs = L.Softmax()(L.Dense(3)(inputs))
    else:
        outputs = L.Dense(3, activation="softmax")(inputs)
    qat = quantize_model(keras.Model(inputs, outputs))
    dense = [layer for layer in qat.layers if "dense" in layer.name][0]
    dense.layer.kernel.assign(np.array([[8.0, 0.0, -8.0]] * 4, "float32"))
    x = np.ones((2, 4), "float32")
    y = np.array([2, 0])
    observe(qat, (4,))

    @tf.function
    def run(x):
        out = qat(x, training=False)
        loss = keras.losses.SparseCategoricalCrossentropy()(y, out)
        return out, out._keras_logits, loss

    out, logits, loss = (t.numpy() for t in run(x))
    exact = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, logits).numpy()
    assert out[0, 2] == 0.0  # The deployed output rounds the true class's probability to 0.
    np.testing.assert_allclose(loss, exact, rtol=1e-6)
    assert loss > 20  # -log(1e-7) = 16.1 would be the clipped loss of the rounded output.
    np.testing.assert_allclose(out.sum(1), 1.0, atol=2 / 256)
