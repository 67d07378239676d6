"""QAT constructs of deployed architectures (keras.ops nodes, activations, preprocessing,
standalone batch norm, squeeze-and-excite, U-Net upsampling paths, Transformer-encoder layers,
skip): each converts to integer-only TFLite ops for `target="mcu"` and the int8 model computes
what the QAT Keras model computes."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

import tfslim  # noqa: E402
from tfslim.errors import UnsupportedOpError  # noqa: E402
from tfslim.quantization import quantize_model  # noqa: E402

L = keras.layers
ops = keras.ops
SHAPE = (8, 8, 3)


def run_tflite(flatbuffer, x):
    """Runs an int8-I/O flatbuffer sample by sample (LiteRT's default kernels); returns
    dequantized outputs and the output scale."""
    from ai_edge_litert.interpreter import OpResolverType

    raw, (scale, zero) = run_int8(flatbuffer, x, OpResolverType.AUTO)
    return (raw.astype("float32") - zero) * scale, scale


def run_int8(flatbuffer, x, resolver):
    """Raw int8 outputs of an int8-I/O flatbuffer on `resolver`'s kernels, sample by sample,
    and the output's (scale, zero point)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    results = []
    for sample in x:
        q = np.clip(np.round(sample[None] / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(inp["index"], q)
        interpreter.invoke()
        results.append(interpreter.get_tensor(out["index"]).astype(np.int32))
    return np.concatenate(results), out["quantization"]


def op_dtypes(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    # Without XNNPACK, which would hide the ops behind one DELEGATE node.
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_content=flatbuffer, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    return [
        (op["op_name"], {tensors[i]["dtype"].__name__ for i in [*op["inputs"], *op["outputs"]]})
        for op in interpreter._get_ops_details()
    ]


def data(n=64, shape=SHAPE, low=-2.0, high=2.0):
    return np.random.default_rng(0).uniform(low, high, (n, *shape)).astype("float32")


def check_deploys_as_trained(
    model,
    x,
    *,
    expected_ops=(),
    steps=3,
    target="mcu",
    off_by_a_step=0.05,
    max_steps=3,
    relative_error=0.05,
):
    """Quantizes `model`, observes ranges on `x`, converts (int8 I/O) and compares: at most
    `off_by_a_step` of the outputs more than one output step away, none more than
    `max_steps`."""
    qat = quantize_model(model)
    for i in range(steps):
        qat(x[i * 16 : (i + 1) * 16], training=True)
    flatbuffer = tfslim.convert(qat, target=target, io_dtype="int8").flatbuffer
    names = []
    for name, dtypes in op_dtypes(flatbuffer):
        assert name != "DEQUANTIZE" and dtypes <= {"int8", "int32"}, (name, dtypes)
        names.append(name)
    for op in expected_ops:
        assert op in names, names
    reference = qat.predict(x, verbose=0)
    got, step = run_tflite(flatbuffer, x)
    reference = reference.reshape(got.shape)
    # Int8 kernels may round an intermediate value to the neighbouring step; more than that
    # (or a drift in many outputs) would mean the QAT model trains something else.
    error = np.abs(got - reference)
    assert np.max(error) <= max_steps * step + 1e-6, (np.max(error) / step, names)
    assert np.mean(error > 1.01 * step) <= off_by_a_step, (np.mean(error > 1.01 * step), names)
    relative = np.linalg.norm(got - reference) / (np.linalg.norm(reference) + 1e-12)
    assert relative <= relative_error, relative
    return qat, names


def functional(make, shape=SHAPE):
    inputs = keras.Input(shape)
    return keras.Model(inputs, make(inputs))


def conv(x, filters=4, **kwargs):
    return L.Conv2D(filters, 3, padding="same", **kwargs)(x)


OP_CASES = {
    "add_constant_relu6_multiply_constant": (
        lambda x: L.ReLU(6.0)(conv(x) + 3.0) * (1.0 / 6.0),
        ["ADD", "MUL"],
    ),
    "hard_swish_as_mobilenet_v3_writes_it": (
        lambda x: (lambda y: y * (L.ReLU(6.0)(y + 3.0) * (1.0 / 6.0)))(conv(x)),
        ["MUL"],
    ),
    "add_tensors": (lambda x: ops.add(conv(x, 3), x), ["ADD"]),
    "subtract_tensors": (lambda x: ops.subtract(x, conv(x, 3)), ["SUB"]),
    "multiply_tensors": (lambda x: ops.multiply(conv(x, 3), x), ["MUL"]),
    "divide_by_constant": (lambda x: conv(x) / 4.0, []),
    "subtract_constant": (lambda x: conv(x) - 0.5, []),
    "mean": (lambda x: ops.mean(conv(x), axis=(1, 2), keepdims=True), ["MEAN"]),
    "reshape_transpose": (
        lambda x: ops.transpose(ops.reshape(conv(x), (-1, 16, 16)), (0, 2, 1)),
        ["TRANSPOSE"],
    ),
    "concatenate": (lambda x: ops.concatenate([conv(x, 2), x], axis=-1), ["CONCATENATION"]),
    "clip": (lambda x: ops.clip(conv(x), -0.5, 2.0), []),
    "sigmoid_op": (lambda x: ops.sigmoid(conv(x)), ["LOGISTIC"]),
    "relu_op_fused": (lambda x: ops.relu(conv(x) + 1.0), ["ADD"]),
    "slice": (lambda x: conv(x)[:, 1:5, :, :2], []),
}


@pytest.mark.parametrize("case", sorted(OP_CASES))
def test_keras_ops_nodes_deploy_as_trained(case):
    make, expected = OP_CASES[case]
    check_deploys_as_trained(functional(make), data(), expected_ops=expected)


ACTIVATIONS = {
    "swish": ["LOGISTIC", "MUL"],
    "silu": ["LOGISTIC", "MUL"],
    "hard_swish": ["HARD_SWISH"],
    "hard_silu": ["HARD_SWISH"],
    "hard_sigmoid": ["ADD", "MUL"],
    "gelu": ["GELU"],
    "leaky_relu": ["LEAKY_RELU"],
}


@pytest.mark.parametrize("form", ["layer", "argument", "op"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_activation_deploys_as_trained(activation, form):
    if form == "layer":
        make = lambda x: L.Activation(activation)(conv(x))  # noqa: E731
    elif form == "argument":
        make = lambda x: conv(x, activation=activation)  # noqa: E731
    else:
        fn = getattr(ops, activation)
        make = lambda x: fn(conv(x))  # noqa: E731
    # TFLite Micro has no GELU kernel (the mcu check refuses it): int8 for LiteRT only.
    target = "mobile" if activation == "gelu" else "mcu"
    _, names = check_deploys_as_trained(
        functional(make), data(), expected_ops=ACTIVATIONS[activation], target=target
    )
    assert names.count("CONV_2D") == 1


@pytest.mark.parametrize(
    "layer, op",
    [
        (lambda: L.LeakyReLU(negative_slope=0.1), "LEAKY_RELU"),
        (lambda: L.ReLU(negative_slope=0.05), "LEAKY_RELU"),
    ],
)
def test_activation_layers_deploy_as_trained(layer, op):
    make = lambda x: layer()(conv(x))  # noqa: E731
    check_deploys_as_trained(functional(make), data(), expected_ops=[op])


def trained_prelu(low=-0.3, high=0.6, **kwargs):
    """A PReLU whose slopes moved away from their zero initialisation (some negative)."""
    layer = L.PReLU(**kwargs)

    def apply(x):
        y = layer(x)
        rng = np.random.default_rng(3)
        layer.set_weights([rng.uniform(low, high, w.shape) for w in layer.get_weights()])
        return y

    return apply


PRELU_CASES = {
    "shared_over_space": lambda x: trained_prelu(shared_axes=[1, 2])(conv(x)),
    "per_element": lambda x: trained_prelu()(conv(x)),
    "after_batch_norm": lambda x: trained_prelu(shared_axes=[1, 2])(
        L.BatchNormalization()(conv(x, use_bias=False))
    ),
    "after_add": lambda x: trained_prelu(shared_axes=[1, 2])(L.Add()([conv(x, 3), x])),
    "dense": lambda x: trained_prelu(0.05, 0.3)(L.Dense(6)(L.Flatten()(conv(x)))),
}


@pytest.mark.parametrize("case", sorted(PRELU_CASES))
def test_prelu_deploys_as_int8_prelu(case):
    qat, names = check_deploys_as_trained(
        functional(PRELU_CASES[case]), data(), expected_ops=["PRELU"]
    )
    assert "QuantizePReLU" in [type(layer).__name__ for layer in qat.layers]
    report = tfslim.inspect(tfslim.convert(qat, target="mcu"))
    assert report["fully_integer"] and report["micro"]["supported"], report["micro"]


def test_prelu_slopes_are_rounded_as_the_int8_file_stores_them():
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    qat = quantize_model(functional(lambda x: trained_prelu(shared_axes=[1, 2])(conv(x))))
    qat(data(16), training=True)
    layer = next(layer for layer in qat.layers if type(layer).__name__ == "QuantizePReLU")
    alpha = layer.layer.alpha.numpy()
    rounded = layer.quantized_alpha().numpy()
    scale = np.abs(alpha).max() / 127
    np.testing.assert_allclose(rounded, np.round(alpha / scale) * scale, atol=1e-7)
    resolver = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(
        model_content=tfslim.convert(qat, target="mcu").flatbuffer,
        experimental_op_resolver_type=resolver,
    )
    interpreter.allocate_tensors()
    tensors = interpreter.get_tensor_details()
    op = next(o for o in interpreter._get_ops_details() if o["op_name"] == "PRELU")
    stored = tensors[op["inputs"][1]]
    (stored_scale, zero) = stored["quantization"]
    assert zero == 0 and np.isclose(stored_scale, scale, rtol=1e-6)
    deployed = interpreter.get_tensor(stored["index"]).astype("float32") * stored_scale
    np.testing.assert_allclose(deployed, rounded, atol=1e-6)


def test_prelu_with_its_initial_zero_slopes_converts_to_integer_ops():
    # Keras initialises the slopes to 0: the rounding must not divide by a zero scale.
    check_deploys_as_trained(
        functional(lambda x: L.PReLU()(conv(x))), data(), expected_ops=["PRELU"]
    )


def _assert_round_trips(qat, cls, x, tmp_path):
    """The `cls` layer of `qat` survives its config, and the model a `.keras` file."""
    layer = next(layer for layer in qat.layers if isinstance(layer, cls))
    assert cls.from_config(layer.get_config()).get_config() == layer.get_config()
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


def test_prelu_round_trips_through_config_and_keras_file(tmp_path):
    from tfslim.quantization import QuantizePReLU

    qat = quantize_model(functional(lambda x: trained_prelu(shared_axes=[1, 2])(conv(x))))
    x = data(16)
    qat(x, training=True)
    _assert_round_trips(qat, QuantizePReLU, x, tmp_path)


def test_prelu_slopes_train_and_keep_their_constraint():
    model = functional(lambda x: L.PReLU(shared_axes=[1, 2], alpha_constraint="non_neg")(conv(x)))
    qat = quantize_model(model)
    x, y = data(32), data(32)[..., :1].repeat(4, -1)
    qat.compile(keras.optimizers.SGD(0.5), "mse")
    layer = next(layer for layer in qat.layers if type(layer).__name__ == "QuantizePReLU")
    before = layer.layer.alpha.numpy().copy()
    qat.fit(x, -np.abs(y), epochs=2, batch_size=16, verbose=0)
    after = layer.layer.alpha.numpy()
    assert not np.array_equal(before, after) and after.min() >= 0.0


def test_skipped_prelu_is_listed_as_float():
    from tfslim.quantization import float_layers

    model = functional(lambda x: L.PReLU(name="kept")(conv(x)))
    qat = quantize_model(model, skip=["kept"])
    assert float_layers(qat) == ["kept"]
    assert type(qat.get_layer("kept")).__name__ == "PReLU"


# ELU in every form: tests/test_integer_islands.py (the converter stage closes its float island).


def test_elu_with_another_alpha_is_refused_naming_it():
    with pytest.raises(UnsupportedOpError, match=r"ELU 'elu_half' with alpha=0.5"):
        quantize_model(functional(lambda x: L.ELU(alpha=0.5, name="elu_half")(conv(x))))


def normalization(mean, variance):
    layer = L.Normalization(mean=mean, variance=variance)
    return layer


@pytest.mark.parametrize(
    "make_preprocessing",
    [
        lambda: [L.Rescaling(1.0 / 255.0)],
        lambda: [L.Rescaling(1.0 / 127.5, offset=-1.0)],
        lambda: [L.Rescaling([0.01, 0.02, 0.03])],
        lambda: [normalization([100.0, 120.0, 90.0], [3000.0, 2500.0, 3500.0])],
        lambda: [L.Rescaling(1 / 255.0), normalization([0.5, 0.4, 0.3], [0.05, 0.06, 0.07])],
    ],
)
def test_preprocessing_at_the_input_is_quantized(make_preprocessing):
    def make(x):
        for layer in make_preprocessing():
            x = layer(x)
        return conv(x, activation="relu")

    model = functional(make)
    qat, names = check_deploys_as_trained(model, data(low=0.0, high=255.0), expected_ops=["MUL"])
    kinds = [type(layer).__name__ for layer in qat.layers]
    assert "Normalization" not in kinds and "Rescaling" not in kinds
    assert kinds.count("QuantizeRescaling") == 1  # Rescaling + Normalization compose.


def test_identity_normalization_leaves_only_the_input_quantizer():
    model = functional(lambda x: conv(normalization([0.0] * 3, [1.0] * 3)(x)))
    qat, names = check_deploys_as_trained(model, data())
    assert "MUL" not in names and "ADD" not in names


@pytest.mark.parametrize(
    "make",
    [
        # Pre-activation residual block: BN follows an Add, not a convolution.
        lambda x: L.ReLU()(L.BatchNormalization()(L.Add()([x, conv(x, 3)]))),
        # Densely connected: BN after a concatenation, then a convolution.
        lambda x: conv(L.BatchNormalization()(L.Concatenate()([x, conv(x, 2)]))),
        # BN right after the input.
        lambda x: conv(L.BatchNormalization()(x)),
    ],
)
def test_standalone_batch_norm_is_int8_mul_add(make):
    model = functional(make)
    for layer in model.layers:  # Non-trivial statistics, as after float training.
        if isinstance(layer, L.BatchNormalization):
            rng = np.random.default_rng(1)
            c = layer.moving_mean.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 2, c),
                    rng.uniform(-1, 1, c),
                    rng.uniform(-1, 1, c),
                    rng.uniform(0.5, 2, c),
                ]
            )
    qat, names = check_deploys_as_trained(model, data(), expected_ops=["MUL", "ADD"])
    assert "QuantizeBatchNormalization" in [type(layer).__name__ for layer in qat.layers]
    # Inference uses the copied moving statistics: the float model's own output.
    x = data(8)
    np.testing.assert_allclose(
        quantize_model(model).predict(x, verbose=0).shape, model.predict(x, verbose=0).shape
    )


def se_mobilenet_v3(x):
    """Squeeze-and-excite as keras.applications.MobileNetV3 writes it."""
    x = conv(x, 8)
    s = L.GlobalAveragePooling2D(keepdims=True)(x)
    s = L.Conv2D(4, 1, padding="same")(s)
    s = L.ReLU()(s)
    s = L.Conv2D(8, 1, padding="same")(s)
    s = L.ReLU(6.0)(s + 3.0) * (1.0 / 6.0)
    return L.Multiply()([x, s])


def se_efficientnet(x):
    """Squeeze-and-excite as keras.applications.EfficientNet writes it."""
    x = L.Activation("swish")(L.BatchNormalization()(conv(x, 8, use_bias=False)))
    s = L.GlobalAveragePooling2D()(x)
    s = L.Reshape((1, 1, 8))(s)
    s = L.Conv2D(2, 1, padding="same", activation="swish")(s)
    s = L.Conv2D(8, 1, padding="same", activation="sigmoid")(s)
    return L.multiply([x, s])


@pytest.mark.parametrize("block", [se_mobilenet_v3, se_efficientnet])
def test_squeeze_and_excite_deploys_as_trained(block):
    check_deploys_as_trained(functional(block), data(), expected_ops=["MEAN", "MUL"])


@pytest.mark.parametrize(
    "op, tflite_op", [("add", "ADD"), ("subtract", "SUB"), ("multiply", "MUL")]
)
def test_a_constant_tensor_operand_is_what_the_int8_file_stores(op, tflite_op):
    """The converter stores a constant tensor operand as int8 on its own range (widened to
    hold zero); QAT computes with those rounded values, not the float ones. With the float
    constant, a sinusoidal position encoding's ADD disagreed with QAT on 19% of its outputs
    (the benchmarks' Transformer encoder)."""
    from tfslim.benchmarking.layer_matching import TfliteGraph
    from tfslim.litert import flatbuffer
    from tfslim.quantization.quantizers import constant_on_int8_grid

    constant = (0.9 * np.sin(np.arange(8 * 8 * 4).reshape(8, 8, 4) / 7.0) + 0.2).astype("float32")
    x = data()
    qat, _ = check_deploys_as_trained(
        functional(lambda t: getattr(ops, op)(conv(t), constant)), x, expected_ops=[tflite_op]
    )
    model = tfslim.convert(qat, target="mcu").flatbuffer
    fb = flatbuffer.parse(model)
    graph = TfliteGraph(fb)
    stored = None
    for name, inputs, _ in graph.ops:
        for i in inputs if name == tflite_op else []:
            buffer = fb.buffers[fb.subgraphs[0].tensors[i].buffer]
            if buffer.data is not None and len(buffer.data) == constant.size:
                raw = np.asarray(buffer.data, np.uint8).view(np.int8).reshape(constant.shape)
                stored = graph.dequantize(i, raw)
    assert stored is not None
    assert np.abs(stored - constant).max() > 1e-3  # The file's rounding is real...
    np.testing.assert_allclose(constant_on_int8_grid(constant), stored, atol=1e-6)  # ...and QAT's.
    report = tfslim.quantization_report(qat, x, converted=model, kernels="xnnpack")
    record = next(r for r in report.layers if r.op == tflite_op)
    assert record.alone_flipped < 0.01, record.alone_flipped


def test_constant_on_int8_grid_leaves_scalars_and_non_float_values():
    from tfslim.quantization.quantizers import constant_on_int8_grid

    assert constant_on_int8_grid(3.0) == 3.0
    ints = np.arange(5)
    assert constant_on_int8_grid(ints) is ints
    zeros = np.zeros((2, 2), "float32")
    assert constant_on_int8_grid(zeros) is zeros
    rounded = constant_on_int8_grid(np.array([0.11, 0.33, 1.0], "float32"))
    step = 1.0 / 255
    np.testing.assert_allclose(
        rounded, np.round(np.array([0.11, 0.33, 1.0]) / step) * step, atol=1e-7
    )


SQUEEZES_OF_ONE_VALUE = {
    "pool_reshape": lambda x: L.Reshape((1, 1, 8))(L.GlobalAveragePooling2D()(x)),
    "pool_keepdims": lambda x: L.GlobalAveragePooling2D(keepdims=True)(x),
    "pool_1d": lambda x: L.Reshape((1, 1, 8))(L.GlobalAveragePooling1D()(L.Reshape((1, 8))(x))),
    "ops_mean": lambda x: ops.mean(x, axis=(1, 2), keepdims=True),
}


@pytest.mark.parametrize("squeeze", sorted(SQUEEZES_OF_ONE_VALUE))
def test_squeeze_of_a_1x1_map_keeps_its_input_grid(squeeze):
    """Squeeze-and-excite on a 1x1 map (EfficientNet's last blocks at small inputs): the
    average of one value is an identity, which the converter drops together with any range of
    its own (the excite convolution then reads the swish's tensor). QAT rounds onto the
    swish's grid too; with a range of its own, the excite input was on another grid than the
    deployed one and EfficientNetB0's blocks 6-7 disagreed on 1-2.7% of their outputs."""

    def make(x):
        x = L.Conv2D(8, 8, activation="swish", name="reduce_to_1x1")(x)
        s = SQUEEZES_OF_ONE_VALUE[squeeze](x)
        s = L.Conv2D(8, 1, activation="sigmoid", name="excite")(s)
        return L.Flatten()(L.multiply([x, s]))

    x = data()
    qat, _ = check_deploys_as_trained(functional(make), x)
    classes = [type(layer).__name__ for layer in qat.layers]
    assert "RoundToInputGrid" in classes
    assert classes.count("ActivationQuantizer") == 2  # The input's and the multiply's only.
    # What the excite convolution trains on is the swish's output itself, as deployed.
    rounding = next(layer for layer in qat.layers if type(layer).__name__ == "RoundToInputGrid")
    probe = keras.Model(qat.input, [qat.get_layer("reduce_to_1x1").output, rounding.output])
    swish, squeezed = probe.predict(x, verbose=0)
    np.testing.assert_array_equal(squeezed.reshape(swish.shape), swish)
    from tfslim.benchmarking.layer_matching import TfliteGraph
    from tfslim.litert import flatbuffer

    graph = TfliteGraph(flatbuffer.parse(tfslim.convert(qat, target="mcu").flatbuffer))
    convs = [(ins, outs) for op, ins, outs in graph.ops if op == "CONV_2D"]
    swish = next(outs[0] for op, ins, outs in graph.ops if op == "MUL" and ins[0] == convs[0][1][0])
    assert graph.quantization(convs[1][0][0])[0] == graph.quantization(swish)[0]


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: L.GlobalAveragePooling2D()(keras.Input((1, 1, 4))), True),
        (lambda: L.GlobalAveragePooling2D()(keras.Input((2, 1, 4))), False),
        (
            lambda: L.GlobalAveragePooling2D(data_format="channels_first")(keras.Input((4, 1, 1))),
            True,
        ),
        (lambda: L.GlobalAveragePooling1D()(keras.Input((1, 4))), True),
        (lambda: ops.mean(keras.Input((1, 1, 4)), axis=(1, 2)), True),
        (lambda: ops.mean(keras.Input((1, 1, 4)), axis=-1), False),
        (lambda: ops.mean(keras.Input((1, 1, 1)), axis=None), False),
    ],
)
def test_averages_one_value(make, expected):
    from tfslim._keras_graph import producing_node
    from tfslim.quantization import registry

    op, node = producing_node(make())
    assert registry.averages_one_value(op, tuple(node.input_tensors[0].shape)) is expected


def transpose(x, **kwargs):
    return L.Conv2DTranspose(4, 3, strides=2, padding="same", **kwargs)(x)


UPSAMPLING_CASES = {
    "conv2d_transpose": (lambda x: transpose(conv(x)), ["TRANSPOSE_CONV"]),
    # No bias (or an all-zero one) with a fused ReLU: an int8 TRANSPOSE_CONV and RELU.
    "conv2d_transpose_relu_no_bias": (
        lambda x: transpose(conv(x), activation="relu", use_bias=False),
        ["TRANSPOSE_CONV", "RELU"],
    ),
    "conv2d_transpose_relu6": (lambda x: transpose(conv(x), activation="relu6"), ["RELU6"]),
    "conv2d_transpose_batch_norm_relu": (
        lambda x: L.ReLU()(L.BatchNormalization()(transpose(conv(x), use_bias=False))),
        ["TRANSPOSE_CONV"],
    ),
    "upsampling_nearest": (
        lambda x: L.UpSampling2D(interpolation="nearest")(conv(x)),
        ["RESIZE_NEAREST_NEIGHBOR"],
    ),
    "upsampling_bilinear": (
        lambda x: L.UpSampling2D((3, 2), interpolation="bilinear")(conv(x)),
        ["RESIZE_BILINEAR"],
    ),
    # Each branch has its own range in Keras; the int8 file gives both the output's scale.
    "concatenate_two_quantized_branches": (
        lambda x: L.Concatenate()([conv(x, 3), conv(x, 5, activation="relu")]),
        ["CONCATENATION"],
    ),
    "concatenate_add_and_upsampled": (
        lambda x: L.Concatenate()(
            [L.Add()([conv(x, 3), x]), L.UpSampling2D()(L.MaxPooling2D()(conv(x, 2)))]
        ),
        ["CONCATENATION", "ADD"],
    ),
    "concatenate_transposed_relu_and_skip": (
        lambda x: L.Concatenate()(
            [transpose(conv(x), activation="relu"), L.UpSampling2D()(conv(x, 3))]
        ),
        ["CONCATENATION", "TRANSPOSE_CONV", "RESIZE_NEAREST_NEIGHBOR"],
    ),
    "concatenate_then_relu": (
        lambda x: L.ReLU()(L.Concatenate()([conv(x, 3), x])),
        ["CONCATENATION"],
    ),
}


@pytest.mark.parametrize("case", sorted(UPSAMPLING_CASES))
def test_upsampling_path_deploys_as_trained(case):
    make, expected = UPSAMPLING_CASES[case]
    check_deploys_as_trained(functional(make), data(), expected_ops=expected)


def unet(interpolation, shape=(16, 16, 3), classes=4):
    """Two down blocks, a bottleneck, one Conv2DTranspose and one UpSampling2D up block with
    concatenated skips, and a 1x1 convolution head (per-pixel class scores)."""

    def block(x, filters):
        x = L.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        return L.ReLU()(L.BatchNormalization()(x))

    inputs = keras.Input(shape)
    down1 = block(inputs, 8)
    down2 = block(L.MaxPooling2D()(down1), 16)
    x = block(L.MaxPooling2D()(down2), 32)
    x = L.Conv2DTranspose(16, 2, strides=2, padding="same", activation="relu")(x)
    x = block(L.Concatenate()([x, down2]), 16)
    x = L.UpSampling2D(interpolation=interpolation)(x)
    x = block(L.Concatenate()([x, down1]), 8)
    return keras.Model(inputs, L.Conv2D(classes, 1)(x))


@pytest.mark.parametrize("interpolation", ["nearest", "bilinear"])
def test_unet_deploys_as_trained(interpolation):
    model = unet(interpolation)
    _, names = check_deploys_as_trained(
        model, data(shape=(16, 16, 3)), expected_ops=["TRANSPOSE_CONV", "CONCATENATION"]
    )
    assert f"RESIZE_{'BILINEAR' if interpolation == 'bilinear' else 'NEAREST_NEIGHBOR'}" in names


@pytest.mark.parametrize(
    "branch",
    [
        lambda x: conv(x, 3),
        lambda x: L.ReLU()(L.Add()([conv(x, 3), x])),
        lambda x: L.LeakyReLU(0.1)(conv(x, 3)),
    ],
)
def test_concatenated_branch_beyond_its_observed_range_deploys_as_trained(branch):
    # Ranges observed on small inputs; the wide branch keeps the concatenation's range large,
    # so the other branch leaves its own range within it: Keras and the int8 file must clip
    # it at the same (the concatenation's) bound.
    wide = L.Conv2D(2, 3, padding="same", kernel_initializer=keras.initializers.Constant(1.0))
    qat = quantize_model(functional(lambda x: L.Concatenate()([branch(x), wide(x)])))
    small = data(48, low=-0.5, high=0.5)
    for i in range(3):
        qat(small[i * 16 : (i + 1) * 16], training=True)
    x = data(64, low=-1.0, high=1.0)
    got, step = run_tflite(tfslim.convert(qat, target="mcu", io_dtype="int8").flatbuffer, x)
    assert np.max(np.abs(got - qat.predict(x, verbose=0))) <= 1.01 * step


def test_only_a_concatenation_reading_a_layer_drops_its_quantizer():
    def make(x):
        a = conv(x, 3, name="only_concatenated")
        b = conv(x, 2, name="also_pooled")
        return L.Concatenate()([a, b, L.MaxPooling2D(1)(b)])

    qat = quantize_model(functional(make))
    assert qat.get_layer("only_concatenated").output_quantizer is None
    assert qat.get_layer("also_pooled").output_quantizer is not None
    config = qat.get_layer("only_concatenated").get_config()
    assert config["quantize_output"] is False


@pytest.mark.parametrize(
    "activation, layer", [("sigmoid", L.Conv2D(2, 1)), ("relu", L.Conv1D(2, 1))]
)
def test_quantize_output_false_is_refused_where_the_kernel_owns_the_range(activation, layer):
    from tfslim.quantization import QuantizeWrapper

    with pytest.raises(ValueError, match=r"quantize_output.*Received: quantize_output=False"):
        QuantizeWrapper(layer, activation=activation, quantize_output=False)


def sinusoid(length, dim):
    """The fixed sinusoidal position encoding, added as a constant (an int8 ADD)."""
    position, i = np.arange(length)[:, None], np.arange(dim)[None]
    angle = position / np.power(10000.0, (2 * (i // 2)) / dim)
    return np.where(i % 2 == 0, np.sin(angle), np.cos(angle)).astype("float32")


def trained_layer_norm(**kwargs):
    """A LayerNormalization with gamma and beta away from their initial 1 and 0."""
    layer = L.LayerNormalization(**kwargs)

    def apply(x):
        y = layer(x)
        rng = np.random.default_rng(2)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in layer.get_weights()])
        return y

    return apply


SEQUENCE = (8, 6)
TRANSFORMER_CASES = {
    "layer_norm": (
        lambda x: trained_layer_norm()(L.Dense(16)(x)),
        ["MEAN", "SUB", "RSQRT", "MUL", "ADD"],
    ),
    "layer_norm_without_center": (
        lambda x: trained_layer_norm(center=False)(L.Dense(16)(x)),
        ["RSQRT", "MUL"],
    ),
    "self_attention": (
        lambda x: (lambda h: L.MultiHeadAttention(2, 8)(h, h))(L.Dense(16)(x)),
        ["FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX"],
    ),
    "cross_attention_value_dim": (
        lambda x: L.MultiHeadAttention(2, 4, value_dim=6, use_bias=False)(
            L.Dense(12)(x), L.Dense(8, activation="relu")(x), key=L.Dense(8)(x)
        ),
        ["BATCH_MATMUL", "SOFTMAX"],
    ),
    "position_encoding": (lambda x: L.Dense(16)(x) + sinusoid(8, 16), ["ADD"]),
}


@pytest.mark.parametrize("case", sorted(TRANSFORMER_CASES))
def test_transformer_part_deploys_as_trained(case):
    make, expected = TRANSFORMER_CASES[case]
    check_deploys_as_trained(
        functional(make, SEQUENCE), data(shape=SEQUENCE), expected_ops=expected
    )


def encoder(x, *, dim=16, heads=2, activation="relu"):
    """A pre-norm Transformer encoder block, pooled into a 4-class Dense head."""
    x = L.Dense(dim)(x) + sinusoid(x.shape[1], dim)
    h = L.LayerNormalization()(x)
    x = L.Add()([x, L.MultiHeadAttention(heads, dim // heads)(h, h)])
    h = L.LayerNormalization()(x)
    h = L.Dense(dim)(L.Dense(2 * dim, activation=activation)(h))
    x = L.Add()([x, h])
    return L.Dense(4)(L.GlobalAveragePooling1D()(x))


# Some 30 int8 ops in a row, each kernel (RSQRT, SOFTMAX's exponential table, MEAN) free to
# round to the neighbouring step: more outputs end a step or two away than after one op.
CHAIN = dict(off_by_a_step=0.3, max_steps=5, relative_error=0.05)


@pytest.mark.slow
def test_transformer_encoder_runs_int8_on_tflite_micro():
    qat, _ = check_deploys_as_trained(
        functional(encoder, SEQUENCE), data(shape=SEQUENCE), expected_ops=["BATCH_MATMUL"], **CHAIN
    )
    report = tfslim.inspect(tfslim.convert(qat, target="mcu"))
    assert report["fully_integer"], report["float_ops"]
    # TFLite Micro allocates and runs it: every op has an int8 kernel there.
    assert report["micro"]["supported"] and report["micro"]["arena_bytes"] > 0, report["micro"]


@pytest.mark.slow
def test_gelu_feed_forward_is_refused_for_mcu_naming_gelu_and_int8_for_mobile():
    qat = quantize_model(functional(lambda x: encoder(x, activation="gelu"), SEQUENCE))
    x = data(shape=SEQUENCE)
    for i in range(3):
        qat(x[i * 16 : (i + 1) * 16], training=True)
    with pytest.raises(UnsupportedOpError, match="GELU"):
        tfslim.convert(qat, target="mcu")
    check_deploys_as_trained(
        functional(lambda x: encoder(x, activation="gelu"), SEQUENCE),
        x,
        expected_ops=["GELU", "BATCH_MATMUL"],
        target="mobile",
        **CHAIN,
    )


def test_embedding_lookup_deploys_as_int8_gather():
    inputs = keras.Input((8,), dtype="int32")
    x = L.Embedding(20, 16)(inputs)
    model = keras.Model(inputs, L.Dense(3)(L.GlobalAveragePooling1D()(L.LayerNormalization()(x))))
    qat = quantize_model(model)
    ids = np.random.default_rng(0).integers(0, 20, (48, 8)).astype("int32")
    for i in range(3):
        qat(ids[i * 16 : (i + 1) * 16], training=True)
    flatbuffer = tfslim.convert(qat, target="mcu").flatbuffer
    dtypes = dict(op_dtypes(flatbuffer))
    assert dtypes["GATHER"] == {"int8", "int32"}, dtypes
    assert all(d <= {"int8", "int32"} for d in dtypes.values()), dtypes
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=flatbuffer)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = out["quantization"]
    got = []
    for sample in ids:
        interpreter.set_tensor(inp["index"], sample[None])
        interpreter.invoke()
        got.append((interpreter.get_tensor(out["index"]).astype("float32") - zero) * scale)
    got, reference = np.concatenate(got), qat.predict(ids, verbose=0)
    assert np.max(np.abs(got - reference)) <= 3 * scale + 1e-6
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) <= 0.05


@pytest.mark.parametrize(
    "make, cause",
    [
        (
            lambda x: (
                lambda h: L.MultiHeadAttention(2, 8, name="att")(h, h, use_causal_mask=True)
            )(L.Dense(16)(x)),
            r"MultiHeadAttention 'att' called with \['use_causal_mask'\]",
        ),
        (
            lambda x: L.LayerNormalization(rms_scaling=True, name="rms")(x),
            r"LayerNormalization 'rms' with rms_scaling=True",
        ),
        (
            lambda x: (lambda h: L.MultiHeadAttention(2, 8, attention_axes=(2,), name="a2")(h, h))(
                L.Reshape((2, 4, 6))(x)
            ),
            r"MultiHeadAttention 'a2' with attention_axes=\(2,\)",
        ),
    ],
)
@pytest.mark.filterwarnings("ignore:You passed `rms_scaling=True`")  # Keras's deprecation.
def test_transformer_layers_without_an_int8_form_are_refused_by_name(make, cause):
    with pytest.raises(UnsupportedOpError, match=cause):
        quantize_model(functional(make, SEQUENCE))


def test_embedding_with_mask_zero_is_refused():
    inputs = keras.Input((8,), dtype="int32")
    model = keras.Model(inputs, L.Embedding(20, 4, mask_zero=True, name="masked")(inputs))
    with pytest.raises(UnsupportedOpError, match=r"Embedding 'masked' with mask_zero=True"):
        quantize_model(model)


def test_transformer_layers_round_trip_through_config_and_keras_file(tmp_path):
    from tfslim.quantization import QuantizeLayerNormalization, QuantizeMultiHeadAttention

    qat = quantize_model(functional(encoder, SEQUENCE))
    x = data(16, shape=SEQUENCE)
    qat(x, training=True)
    for cls in (QuantizeLayerNormalization, QuantizeMultiHeadAttention):
        layer = next(layer for layer in qat.layers if type(layer) is cls)
        assert cls.from_config(layer.get_config()).get_config() == layer.get_config()
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


def test_embedding_round_trips_through_config_and_keras_file(tmp_path):
    from tfslim.quantization import QuantizeEmbedding

    inputs = keras.Input((8,), dtype="int32")
    qat = quantize_model(keras.Model(inputs, L.Embedding(20, 4)(inputs)))
    ids = np.random.default_rng(0).integers(0, 20, (16, 8)).astype("int32")
    qat(ids, training=True)
    _assert_round_trips(qat, QuantizeEmbedding, ids, tmp_path)


def test_all_refusals_in_one_error_naming_the_cause():
    def make(x):
        x = L.Conv2D(4, 3, activation="selu", name="se_reduce")(x)
        x = L.LSTM(4, name="rnn")(L.Reshape((36, 4))(x))
        y = ops.log(ops.abs(x) + 1.0)
        return L.Dense(2)(y)

    model = functional(make)
    with pytest.raises(UnsupportedOpError) as info:
        quantize_model(model)
    message = str(info.value)
    assert "3 operation(s)" in message, message
    assert "Conv2D 'se_reduce' with activation='selu'" in message
    assert "LSTM 'rnn'" in message
    assert "keras.ops operation Log" in message
    log_name = next(op.name for op in model.operations if type(op).__name__ == "Log")
    assert f"skip=['se_reduce', 'rnn', '{log_name}']" in message
    # The names in the message are what `skip` takes.
    qat = quantize_model(model, skip=["se_reduce", "rnn", log_name])
    assert isinstance(qat, keras.Model)


def test_divide_by_a_tensor_is_refused_naming_the_op():
    model = functional(lambda x: conv(x) / (ops.abs(conv(x)) + 1.0))
    with pytest.raises(UnsupportedOpError, match=r"Divide '.*' dividing by a tensor.*skip="):
        quantize_model(model)


@pytest.mark.slow
def test_skipped_layer_runs_in_float_and_mcu_refuses_it():
    model = functional(
        lambda x: L.Dense(3)(L.Flatten()(conv(L.Activation("swish", name="keep")(conv(x)))))
    )
    x = data()
    qat = quantize_model(model, skip=["keep"])
    for i in range(3):
        qat(x[i * 16 : (i + 1) * 16], training=True)
    result = tfslim.convert(qat, target="mobile", io_dtype="float32")
    dtypes = dict(op_dtypes(result.flatbuffer))
    # The skipped swish's MUL and the convolution reading its float output run in float.
    assert dtypes["MUL"] == {"float32"}
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=result.flatbuffer)
    interpreter.allocate_tensors()
    got = []
    for sample in x:
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], sample[None])
        interpreter.invoke()
        got.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
    got = np.concatenate(got)
    reference = qat.predict(x, verbose=0)
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 0.05
    with pytest.raises(UnsupportedOpError, match="MUL"):
        tfslim.convert(qat, target="mcu")


def test_new_layers_round_trip_through_config_and_keras_file(tmp_path):
    from tfslim.quantization import (
        QuantizeActivation,
        QuantizeBatchNormalization,
        QuantizeRescaling,
    )

    def make(x):
        x = L.Rescaling([0.5, 1.0, 2.0], offset=0.25)(x)
        x = L.BatchNormalization()(L.Add()([x, conv(x, 3)]))
        return ops.leaky_relu(x + conv(x, 3), negative_slope=0.1)

    qat = quantize_model(functional(make))
    x = data(16)
    qat(x, training=True)
    kinds = {type(layer).__name__: layer for layer in qat.layers}
    for cls in (QuantizeActivation, QuantizeBatchNormalization, QuantizeRescaling):
        layer = kinds[cls.__name__]
        clone = cls.from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()
    assert kinds["QuantizeRescaling"].scale == [0.5, 1.0, 2.0]
    assert kinds["QuantizeActivation"].activation == "leaky_relu(0.1)"
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), qat.predict(x, verbose=0))


@pytest.mark.slow
def test_mobilenet_v3_small_end_to_end():
    # The smallest input MobileNetV3 accepts; two training steps observe every range.
    model = keras.applications.MobileNetV3Small(
        input_shape=(32, 32, 3), alpha=0.75, weights=None, classes=10
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
    y = (x[..., 0].mean((1, 2)) > x[..., 1].mean((1, 2))).astype("int64")
    qat = quantize_model(model)
    qat.compile("adam", "sparse_categorical_crossentropy")
    qat.fit(x, y, epochs=1, batch_size=16, verbose=0)
    result = tfslim.convert(qat, target="mcu")  # Refuses any op TFLite Micro cannot run.
    report = tfslim.inspect(result, micro_check=False)
    assert report["fully_integer"], report["float_ops"]
    assert report["ops"]["HARD_SWISH"] >= 10
    got, step = run_tflite(result.flatbuffer, x[:16])
    reference = qat.predict(x[:16], verbose=0)
    assert np.mean(got.argmax(1) == reference.argmax(1)) >= 0.9
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) <= 0.05


@pytest.mark.parametrize(
    "pool",
    [
        lambda x: L.AveragePooling2D(2)(x),
        lambda x: L.AveragePooling2D(3, strides=2, padding="same")(x),
        lambda x: L.AveragePooling1D(4, padding="same")(L.Reshape((64, 3))(x)),
        lambda x: ops.average_pool(L.MaxPooling2D(1)(x), 2, strides=2),
        # 1,600 values per average (64 distinct, so 1 in 64 is a tie).
        lambda x: L.AveragePooling2D(40)(L.UpSampling2D(5)(x)),
    ],
    ids=["2x2", "3x3_same_stride_2", "1d_same", "ops_after_max_pooling", "40x40_window"],
)
def test_average_pooling_rounds_as_the_int8_kernels_do(pool, tmp_path):
    # TFLite's int8 AVERAGE_POOL_2D keeps its input's scale and rounds each average onto
    # it, ties half away from the int8 zero: a quarter of all 2x2 averages are ties. The
    # QAT model must compute the same int8 values, on every kernel set.
    from ai_edge_litert.interpreter import OpResolverType

    qat = quantize_model(functional(pool))
    x = data(n=48)
    for i in range(3):
        qat(x[i * 16 : (i + 1) * 16], training=True)
    flatbuffer = tfslim.convert(qat, target="mcu", io_dtype="int8").flatbuffer
    names = [name for name, _ in op_dtypes(flatbuffer)]
    assert "AVERAGE_POOL_2D" in names and not {"QUANTIZE", "SUB", "ADD", "SIGN"} & set(names)
    reference = qat.predict(x, verbose=0)
    values = reference.reshape(len(x), -1)
    kernels = (
        OpResolverType.AUTO,  # XNNPACK
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        OpResolverType.BUILTIN_REF,  # What TFLite Micro computes.
    )
    for resolver in kernels:
        got, (scale, zero) = run_int8(flatbuffer, x, resolver)
        steps = values / scale + zero
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)  # On the int8 grid.
        assert np.array_equal(got.reshape(len(x), -1), np.round(steps).astype(np.int32))
    path = tmp_path / "pooled.keras"
    qat.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path).predict(x, verbose=0), reference)


def test_bilinear_resize_output_is_on_the_int8_grid():
    # RESIZE_BILINEAR keeps its input's scale too: the QAT model passes on rounded values.
    qat = quantize_model(functional(lambda x: L.UpSampling2D(2, interpolation="bilinear")(x)))
    x = data(n=16)
    qat(x, training=True)
    flatbuffer = tfslim.convert(qat, target="mcu", io_dtype="int8").flatbuffer
    assert [name for name, _ in op_dtypes(flatbuffer)] == ["RESIZE_BILINEAR"]
    from ai_edge_litert.interpreter import OpResolverType

    _, (scale, zero) = run_int8(flatbuffer, x[:1], OpResolverType.AUTO)
    steps = qat.predict(x, verbose=0) / scale + zero
    np.testing.assert_allclose(steps, np.round(steps), atol=1e-3)


def test_tie_rounding_moves_only_ties_in_a_large_window():
    # Averages of 1,600 values lie 1/1,600 of a step apart: the tie rule moves a tie by less
    # than that (a fixed 1/1,000 step would round the average just inside a tie wrongly).
    from tfslim.quantization import RoundToInputGrid
    from tfslim.quantization.quantizers import attach_grid

    source = attach_grid(tf.zeros((1, 3)), tf.constant(-1.28), tf.constant(1.27))  # Step 0.01.
    values = tf.constant([[-0.305, -0.305 + 0.01 / 1600, 0.305 - 0.01 / 1600]])
    rounded = RoundToInputGrid(int8_ties=True, window=1600)([values, source])
    np.testing.assert_allclose(rounded.numpy() / 0.01, [[-31.0, -30.0, 30.0]], atol=1e-4)
    with pytest.raises(ValueError, match="window=0"):
        RoundToInputGrid(window=0)


def test_average_pooling_of_an_all_zero_range_stays_finite():
    # A tensor that was zero on every batch so far has the range [0, 0].
    from tfslim.quantization import RoundToInputGrid
    from tfslim.quantization.quantizers import attach_grid

    zeros = tf.zeros((2, 4, 4, 3))
    source = attach_grid(tf.identity(zeros), tf.constant(0.0), tf.constant(0.0))
    pooled = RoundToInputGrid(int8_ties=True)([tf.nn.avg_pool2d(source, 2, 2, "VALID"), source])
    assert np.all(np.isfinite(pooled.numpy()))
