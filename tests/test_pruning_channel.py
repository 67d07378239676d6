"""Channel pruning: coupled groups, masks during fit, a physically smaller stripped model."""

import keras
import numpy as np
import pytest

import tfslim
from tfslim.pruning.channel import ChannelPruning, channel_scores, strip_channels
from tfslim.pruning.channel_graph import ChannelGraph, group_weights


def _fit_pruned(model, x, y, fraction=0.5, epochs=1, optimizer=None, **kwargs):
    model.compile(optimizer or keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    callback = ChannelPruning(fraction, schedule="constant", **kwargs)
    history = model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=[callback])
    return callback, history


def _assert_same_predictions(model, small, x):
    np.testing.assert_allclose(
        small.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-4, atol=1e-5
    )


def _residual_se_concat_model():
    """Residual Add, depthwise conv, squeeze-and-excite, Concatenate and Flatten -> Dense."""
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.ReLU()(x)
    branch = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    branch = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(branch)
    gate = keras.layers.GlobalAveragePooling2D(keepdims=True)(branch)
    gate = keras.layers.Conv2D(4, 1, activation="relu", name="se_reduce")(gate)
    gate = keras.layers.Conv2D(16, 1, activation="sigmoid", name="se_expand")(gate)
    branch = keras.layers.Multiply()([branch, gate])
    x = keras.layers.Add()([x, branch])
    other = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="side")(x)
    x = keras.layers.Concatenate()([x, other])
    x = keras.layers.Conv2D(12, 3, activation="relu", name="head")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(24, activation="relu", name="fc")(x)
    outputs = keras.layers.Dense(10, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs)


def test_graph_couples_residual_depthwise_and_squeeze_excite():
    graph = ChannelGraph(_residual_se_concat_model())
    groups = {tuple(sorted(layer.name for layer in g.sources)): g for g in graph.groups()}
    # stem, pw and se_expand write the same 16 channels (Add, Multiply); dw carries them.
    assert set(groups) == {
        ("pw", "se_expand", "stem"),
        ("se_reduce",),
        ("side",),
        ("head",),
        ("fc",),
    }
    coupled = groups[("pw", "se_expand", "stem")]
    layers = {layer.name for layer, _, _ in group_weights(graph, coupled)}
    assert layers == {"stem", "stem_bn", "dw", "pw", "se_expand"}
    assert coupled.size == 16
    # The model's output channels (the 10 classes) are never pruned.
    assert all("logits" not in {la.name for la in g.sources} for g in graph.groups())


@pytest.fixture(scope="module")
def pruned_se_model(digits):
    """`_residual_se_concat_model` fit 2 epochs at 50% channels; shared, so never train it."""
    keras.utils.set_random_seed(0)
    x, y, _, _ = digits
    model = _residual_se_concat_model()
    _, history = _fit_pruned(model, x, y, epochs=2)
    return model, history


@pytest.mark.slow
def test_strip_gives_a_smaller_model_with_the_same_predictions(pruned_se_model, digits):
    x_test = digits[2]
    model, history = pruned_se_model
    assert history.history["channel_fraction"][-1] == pytest.approx(0.5, abs=0.02)
    small = tfslim.strip_pruning(model)
    assert small is not model
    assert small.get_layer("stem").filters == 8 and small.get_layer("pw").filters == 8
    assert small.get_layer("se_reduce").filters == 2 and small.get_layer("side").filters == 4
    assert small.get_layer("head").filters == 6 and small.get_layer("fc").units == 12
    assert small.get_layer("logits").units == 10
    assert small.get_layer("dw").kernel.shape == (3, 3, 8, 1)
    # Concatenate of 8 + 4 kept channels feeds head; Flatten repeats 6 kept channels 36 times.
    assert small.get_layer("head").kernel.shape == (3, 3, 12, 6)
    assert small.get_layer("fc").kernel.shape == (6 * 6 * 6, 12)
    assert small.count_params() < 0.35 * model.count_params()
    _assert_same_predictions(model, small, x_test[:64])
    # The masks are gone: training the small model goes on without the callback.
    assert all(v.constraint is None for v in model.trainable_variables)


@pytest.mark.slow
def test_sequential_digits_cnn_and_l2_and_bn_gamma_criteria(digits):
    from tfslim.architectures.digits import build_digits_cnn

    x, y, x_test, _ = digits
    for criterion in ("l2", "bn_gamma"):
        keras.utils.set_random_seed(0)
        model = build_digits_cnn(width=16, dense_units=32)
        _fit_pruned(model, x, y, fraction=0.25, criterion=criterion)
        small = strip_channels(model)
        convs = [la for la in small.layers if isinstance(la, keras.layers.Conv2D)]
        assert [c.filters for c in convs] == [12, 24]
        _assert_same_predictions(model, small, x_test[:32])
    seq = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    _fit_pruned(seq, x, y)
    small = tfslim.strip_pruning(seq)
    assert isinstance(small, keras.Sequential)
    assert [
        la.get_config().get("filters", la.get_config().get("units")) for la in small.layers
    ] == [4, None, 8, 10]
    _assert_same_predictions(seq, small, x_test[:32])


def test_scores_rank_filters_by_norm():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.layers[0].kernel.assign(np.array([[1, -5, 0.5]] * 4, dtype="float32"))
    graph = ChannelGraph(model)
    (group,) = [g for g in graph.groups()] or [None]
    assert group is None  # the only Dense writes the model output: nothing to prune
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(2)])
    model.layers[0].kernel.assign(np.array([[1, -5, 0.5]] * 4, dtype="float32"))
    graph = ChannelGraph(model)
    (group,) = graph.groups()
    scores = channel_scores(group_weights(graph, group), 3, "l1")
    assert np.argsort(scores).tolist() == [2, 0, 1]


def test_unpruned_model_is_returned_as_is(digits):
    model = _residual_se_concat_model()
    assert strip_channels(model) is model
    assert tfslim.strip_pruning(model) is model


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"target_fraction": 1.0},
            r"`target_fraction`. Expected a float in \[0, 1\). Received: "
            r"target_fraction=1.0",
        ),
        ({"target_fraction": 0.5, "criterion": "l3"}, r"Received: criterion='l3'"),
        ({"target_fraction": 0.5, "schedule": "cubic"}, r"Received: schedule='cubic'"),
        ({"target_fraction": 0.5, "updates": 0}, r"Received: updates=0"),
        ({}, r"needs one target.*Received: target_fraction=None, max_params=None"),
        ({"target_fraction": 0.5, "max_macs": 0.3}, r"needs one target"),
        ({"max_macs": 1.5}, r"`max_macs`. Expected an int >= 1 .*Received: max_macs=1.5"),
        ({"max_params": 0}, r"`max_params`. Expected an int >= 1 .*Received: max_params=0"),
        (
            {"max_latency_ms": -1.0, "target": "nano33ble"},
            r"`max_latency_ms`. Expected a number of milliseconds > 0. Received: "
            r"max_latency_ms=-1.0",
        ),
        (
            {"target_fraction": 0.5, "target": "nano33ble"},
            r"`target` .* only used with `max_latency_ms`. Received: target='nano33ble'",
        ),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChannelPruning(**kwargs)


def test_latency_limit_needs_a_board_object_with_an_estimate():
    with pytest.raises(TypeError, match=r"tfslim.get_target\('nano33ble'\).*target='nano33ble'"):
        ChannelPruning(max_latency_ms=5.0, target="nano33ble")
    phone = tfslim.get_target("mobile")
    with pytest.raises(ValueError, match=r"target 'mobile' has no latency estimate"):
        ChannelPruning(max_latency_ms=5.0, target=phone)


def _small_cnn():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu", name="pw")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, name="logits")(x)
    return keras.Model(inputs, outputs)


def test_cost_counts_params_and_macs_from_the_structure():
    model = _small_cnn()
    graph = ChannelGraph(model)
    full = graph.cost()
    assert full["params"] == model.count_params()
    # stem 9*3*8 per pixel, dw 9*8, pw 8*16 over 64 pixels; logits 256*4 once.
    assert full["macs"] == 64 * (9 * 3 * 8 + 9 * 8 + 8 * 16) + 4 * 4 * 16 * 4
    assert full["int8_bytes"] == 9 * 3 * 8 + 9 * 8 + 8 * 16 + 256 * 4 + 4 * (8 + 8 + 16 + 4)
    stem, pw = sorted(graph.groups(), key=lambda g: g.size)
    half = graph.cost({stem.id: 4, pw.id: 8})
    assert half["macs"] == 64 * (9 * 3 * 4 + 9 * 4 + 4 * 8) + 4 * 4 * 8 * 4
    assert half["params"] == (9 * 3 + 1 + 9 + 1 + 4) * 4 + (4 + 1) * 8 + (16 * 8 + 1) * 4


def _prune_by_hooks(model, callback):
    """One constant-schedule mask update through the callback's hooks, no `fit`."""
    model.compile("sgd", "mse")
    callback.set_model(model)
    callback.set_params({"epochs": 1, "steps": 1})
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    callback.on_train_end()
    return strip_channels(model)


@pytest.mark.parametrize(
    "limits",
    [{"max_macs": 0.3}, {"max_params": 0.3, "max_int8_bytes": 0.25}, {"max_macs": 20_000}],
)
def test_footprint_target_chooses_the_fraction_that_meets_it(limits):
    keras.utils.set_random_seed(0)
    model = _small_cnn()
    full = ChannelGraph(model).cost()
    callback = ChannelPruning(**limits, schedule="constant")
    small = _prune_by_hooks(model, callback)
    reached = ChannelGraph(small).cost()
    assert reached["params"] == small.count_params()
    for name, limit in limits.items():
        figure = name.removeprefix("max_")
        bound = limit * full[figure] if isinstance(limit, float) else limit
        assert reached[figure] <= bound
    # The smallest such fraction: one channel fewer pruned in each group misses a limit.
    graph = ChannelGraph(model)
    groups = graph.groups()
    fewer = {g.id: g.size - max(0, round(callback.planned_fraction * g.size) - 1) for g in groups}
    figures = graph.cost(fewer)
    assert any(
        figures[n.removeprefix("max_")]
        > (v * full[n.removeprefix("max_")] if isinstance(v, float) else v)
        for n, v in limits.items()
    )
    assert 0 < callback.planned_fraction < 1


def test_latency_limit_on_a_board_holds_for_the_converted_file():
    keras.utils.set_random_seed(0)
    model = _small_cnn()
    board = tfslim.get_target("nano33ble")
    calibration = np.random.default_rng(0).random((16, 8, 8, 3), dtype=np.float32)

    def estimate(m):
        file = tfslim.convert(m, target="nano33ble", calibration_data=calibration)
        return tfslim.measure(file, target="nano33ble", latency_runs=0).mcu_latency_estimate_ms

    full = estimate(model)["nano33ble"]
    limit = full / 2
    callback = ChannelPruning(max_latency_ms=limit, target=board, schedule="constant")
    small = _prune_by_hooks(model, callback)
    assert 0 < callback.planned_fraction < 1
    # Counted from the layers: the file adds its reshape, quantize and dispatch costs.
    assert estimate(small)["nano33ble"] <= 1.1 * limit
    with pytest.raises(ValueError, match=r"max_latency_ms=0.001 \(0.001 ms; unpruned"):
        _prune_by_hooks(_small_cnn(), ChannelPruning(max_latency_ms=0.001, target=board))


def _widths_cnn():
    """Groups of 24, 40 and 6 channels (stem, pw, fc) before a frozen output."""
    inputs = keras.Input((6, 6, 3))
    x = keras.layers.Conv2D(24, 3, padding="same", activation="relu", name="stem")(inputs)
    x = keras.layers.Conv2D(40, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def _widths(model):
    return {name: model.get_layer(name).kernel.shape[-1] for name in ("stem", "pw", "fc")}


@pytest.mark.parametrize(
    "multiple, widths",
    [
        (1, {"stem": 12, "pw": 20, "fc": 3}),
        # 12 of 24 and 20 of 40 round half up to 16 and 24; 6 <= 8 channels stay whole.
        (8, {"stem": 16, "pw": 24, "fc": 6}),
        (4, {"stem": 12, "pw": 20, "fc": 4}),
    ],
)
def test_channel_multiple_rounds_each_groups_kept_channels(multiple, widths):
    keras.utils.set_random_seed(0)
    model = _widths_cnn()
    x = np.random.default_rng(0).random((8, 6, 6, 3), dtype=np.float32)
    small = _prune_by_hooks(
        model, ChannelPruning(0.5, schedule="constant", channel_multiple=multiple)
    )
    assert _widths(small) == widths
    _assert_same_predictions(model, small, x)


def test_channel_multiple_with_a_footprint_target_meets_it_in_multiples():
    keras.utils.set_random_seed(0)
    model = _widths_cnn()
    full = ChannelGraph(model).cost()
    callback = ChannelPruning(max_macs=0.4, schedule="constant", channel_multiple=8)
    small = _prune_by_hooks(model, callback)
    assert ChannelGraph(small).cost()["macs"] <= 0.4 * full["macs"]
    widths = _widths(small)
    assert widths["fc"] == 6 and widths["stem"] % 8 == 0 and widths["pw"] % 8 == 0
    assert widths["stem"] < 24 and widths["pw"] < 40
    # Beyond what rounding to multiples of 8 can reach (both groups at 8): refused, saying so.
    with pytest.raises(ValueError, match=r"every prunable group at 8 channels \(channel_multip"):
        _prune_by_hooks(_widths_cnn(), ChannelPruning(max_macs=0.05, channel_multiple=8))


def test_channel_multiple_footprint_gives_back_the_rounding_slack():
    # Four groups of 40: the smallest uniform fraction meeting 0.3x of the parameters (0.51)
    # rounds all four to 16 channels at once, 0.20x. The plan gives channels back, a multiple
    # at a time, while the limit holds: each group at 16 or 24, the multiples around its share.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16,))
    x = inputs
    for i in range(4):
        x = keras.layers.Dense(40, activation="relu", name=f"d{i}")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
    full = model.count_params()
    callback = ChannelPruning(max_params=0.3, schedule="constant", channel_multiple=8)
    small = _prune_by_hooks(model, callback)
    widths = [small.get_layer(f"d{i}").units for i in range(4)]
    assert 0.25 * full < small.count_params() <= 0.3 * full
    assert set(widths) == {16, 24}
    assert sorted(callback.planned_channels.values()) == sorted(widths)
    _assert_same_predictions(model, small, np.random.default_rng(0).random((8, 16), "float32"))


@pytest.mark.parametrize(
    "value, error, message",
    [
        (0, ValueError, r"`channel_multiple`. Expected an int >= 1. Received: channel_multiple=0"),
        (8.0, TypeError, r"`channel_multiple`. Expected an int >= 1. Received: channel_multip"),
        (True, TypeError, r"Received: channel_multiple=True of type bool"),
    ],
)
def test_invalid_channel_multiple(value, error, message):
    with pytest.raises(error, match=message):
        ChannelPruning(0.5, channel_multiple=value)


def test_unreachable_footprint_is_refused():
    model = _small_cnn()
    callback = ChannelPruning(max_params=50, schedule="constant")
    model.compile("sgd", "mse")
    callback.set_model(model)
    callback.set_params({"epochs": 1, "steps": 1})
    with pytest.raises(ValueError, match=r"cannot reach max_params=50 \(50; unpruned 1"):
        callback.on_train_begin()


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(4), keras.layers.Dense(2)

        def call(self, x):
            return self.b(self.a(x))

    model = Net()
    model(np.ones((1, 3)))
    with pytest.raises(ValueError, match="subclassed model"):
        ChannelGraph(model)


def test_reestimate_batch_norm_refreshes_statistics():
    inputs = keras.Input((4,))
    x = keras.layers.Dropout(0.5)(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = keras.Model(inputs, x)
    bn = model.get_layer("bn")
    bn.trainable = False
    data = np.random.default_rng(0).normal(2.0, 3.0, size=(256, 4)).astype("float32")
    kernel_before = [w.numpy().copy() for w in bn.trainable_weights]
    used = tfslim.reestimate_batch_norm(model, (data, np.zeros(256)), steps=4, batch_size=64)
    assert used == 4
    # Cumulative mean over exactly the 4 batches, dropout off (variance is not inflated).
    np.testing.assert_allclose(bn.moving_mean.numpy(), data.mean(0), rtol=1e-5)
    batch_vars = np.stack([data[i : i + 64].var(0) for i in range(0, 256, 64)])
    np.testing.assert_allclose(bn.moving_variance.numpy(), batch_vars.mean(0), rtol=1e-4)
    assert bn.trainable is False and bn.momentum == 0.99
    assert model.layers[1].rate == 0.5
    for before, after in zip(kernel_before, bn.trainable_weights, strict=True):
        np.testing.assert_array_equal(before, after.numpy())
    with pytest.raises(ValueError, match="Expected a model with BatchNormalization"):
        tfslim.reestimate_batch_norm(
            keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), data[:, :2]
        )


def test_docstring_examples_run():
    import doctest

    from tfslim.pruning import batch_norm_adaptation, channel

    for module in (channel, batch_norm_adaptation):
        result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert result.attempted >= 2 and result.failed == 0


def _mlperf(name):
    from tfslim.architectures import mlperf_tiny

    return {
        "resnet8": lambda: (mlperf_tiny.resnet8(), (32, 32, 3)),
        "ds_cnn": lambda: (mlperf_tiny.ds_cnn(), (49, 10, 1)),
        "mobilenet_v1": lambda: (mlperf_tiny.mobilenet_v1(), (96, 96, 3)),
        "mobilenet_v2": lambda: (
            keras.applications.MobileNetV2(
                alpha=0.35, weights=None, input_shape=(32, 32, 3), classes=10
            ),
            (32, 32, 3),
        ),
    }[name]()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8", "ds_cnn", "mobilenet_v1", "mobilenet_v2"])
def test_reference_models_shrink_and_predict_the_same(name):
    model, shape = _mlperf(name)
    classes = model.output_shape[-1]
    rng = np.random.default_rng(0)
    x = rng.random((32, *shape), dtype=np.float32)
    y = rng.integers(0, classes, 32)
    # Plain SGD: the masks act the same under any optimizer, and tracing Adam's update for
    # every variable of these models costs three times the rest of the step.
    _fit_pruned(model, x, y, optimizer=keras.optimizers.SGD(1e-3))
    small = tfslim.strip_pruning(model)
    assert small.count_params() < 0.35 * model.count_params()
    _assert_same_predictions(model, small, x[:8])


@pytest.mark.slow
def test_qat_and_distillation_run_on_the_smaller_model(pruned_se_model, digits):
    x, y, x_test, y_test = digits
    model, _ = pruned_se_model
    small = strip_channels(model, batch_norm_data=x, batch_norm_steps=5)
    qat = tfslim.quantize_model(small)
    qat.compile(
        keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    qat.fit(x, y, batch_size=64, epochs=1, verbose=0)
    result = tfslim.convert(qat, target="mcu")
    assert result.quantization == "int8"
    assert tfslim.evaluate(result, (x_test, y_test))["tflite"] > 0.3
    # A second stripped copy (no batch-norm re-estimation) is the student; `distill` trains
    # it and leaves the teacher as it was.
    student = strip_channels(model)
    assert student is not small and student.count_params() == small.count_params()
    distilled = tfslim.distill(model, student, x, y, epochs=1)
    assert distilled.count_params() == student.count_params()


def test_next_fit_reuses_the_traced_step_and_keeps_the_pruned_channels(digits):
    x, y = digits[0][:64].reshape(64, 64), digits[1][:64]
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(16, name="hidden"), keras.layers.Dense(10)]
    )
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: seen.append(model.train_function)
    )

    def fit(*callbacks):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[*callbacks, record])

    def pruned_units():
        return int((~np.any(model.get_layer("hidden").kernel.numpy(), axis=0)).sum())

    fit(ChannelPruning(0.5, schedule="constant"))
    fit(ChannelPruning(0.75, schedule="constant"))
    masked_step = seen[0]
    assert seen[2] is masked_step
    assert pruned_units() == 12  # The second fit starts from the first one's 8 zero channels.
    fit()  # No callback: the plain step, and the zero channels train again.
    assert seen[4] is not masked_step
    assert pruned_units() == 0
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    fit(ChannelPruning(0.5, schedule="constant"))  # After compile the old trace is not reused.
    assert seen[6] is not masked_step
    assert pruned_units() == 8


def _two_branch_cnn():
    """Two 16-channel branches of the same input, concatenated: groups that cost alike."""
    inputs = keras.Input((6, 6, 3))
    a = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="a")(inputs)
    b = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="b")(inputs)
    x = keras.layers.Concatenate()([a, b])
    x = keras.layers.Conv2D(8, 1, activation="relu", name="mix")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))


def test_importance_allocation_prunes_like_groups_alike_and_weak_channels_first():
    keras.utils.set_random_seed(0)
    model = _two_branch_cnn()
    kernel = np.random.default_rng(0).normal(size=(3, 3, 3, 16)).astype("float32")
    model.get_layer("a").kernel.assign(kernel)
    model.get_layer("b").kernel.assign(kernel)
    full = ChannelGraph(model).cost()
    callback = ChannelPruning(max_macs=0.5, allocation="importance", schedule="constant")
    small = _prune_by_hooks(model, callback)
    assert ChannelGraph(small).cost()["macs"] <= 0.5 * full["macs"]
    widths = {name: small.get_layer(name).kernel.shape[-1] for name in ("a", "b", "mix")}
    # Alike within one step (a 16th of a group): the last step goes to one of them.
    assert abs(widths["a"] - widths["b"]) <= 1 and max(widths["a"], widths["b"]) < 16
    assert callback.planned_channels == widths
    # Branch b's channels 8..15 nearly zero: the same limit now takes them, and keeps a whole.
    keras.utils.set_random_seed(0)
    model = _two_branch_cnn()
    weak = model.get_layer("b").kernel.numpy()
    weak[..., 8:] *= 1e-3
    model.get_layer("b").kernel.assign(weak)
    x = np.random.default_rng(1).random((4, 6, 6, 3), dtype=np.float32)
    callback = ChannelPruning(max_macs=0.5, allocation="importance", schedule="constant")
    small = _prune_by_hooks(model, callback)
    assert small.get_layer("b").kernel.shape[-1] <= 8
    kept = np.abs(small.get_layer("b").kernel.numpy()).sum(axis=(0, 1, 2))
    assert kept.min() > np.abs(weak[..., 8:]).sum(axis=(0, 1, 2)).max()
    assert small.get_layer("a").kernel.shape[-1] > small.get_layer("b").kernel.shape[-1]
    _assert_same_predictions(model, small, x)


def test_importance_allocation_keeps_multiples_and_follows_the_schedule():
    keras.utils.set_random_seed(0)
    model = _widths_cnn()
    full = ChannelGraph(model).cost()
    callback = ChannelPruning(
        max_params=0.4, max_macs=0.4, allocation="importance", channel_multiple=8, updates=4
    )
    model.compile("sgd", "mse")
    callback.set_model(model)
    callback.set_params({"epochs": 1, "steps": 20})
    callback.on_train_begin()
    fractions = []
    for step in range(20):
        callback.on_train_batch_begin(step)
        fractions.append(callback.channel_fraction())
    callback.on_train_end()
    small = strip_channels(model)
    reached = ChannelGraph(small).cost()
    assert reached["params"] <= 0.4 * full["params"] and reached["macs"] <= 0.4 * full["macs"]
    widths = _widths(small)
    assert widths["fc"] == 6 and widths["stem"] % 8 == 0 and widths["pw"] % 8 == 0
    # The polynomial schedule: pruned in steps, reaching the planned share at 70% of the steps.
    assert 0 < fractions[3] < fractions[13] == fractions[-1] == callback.planned_fraction


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_macs": 0.5, "allocation": "greedy"}, r"`allocation`.*Received: allocation='greedy'"),
        ({"target_fraction": 0.5, "allocation": "importance"}, r"needs one.*target_fraction=0.5"),
    ],
)
def test_invalid_allocation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ChannelPruning(**kwargs)
