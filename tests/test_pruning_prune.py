import json
import zipfile

import keras
import numpy as np
import pytest

from tfslim.pruning import (
    ConstantSparsity,
    PolynomialDecay,
    PruneLowMagnitude,
    prune_low_magnitude,
    strip_pruning,
)


def _cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _compile(model):
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def _kernels(model):
    return {v.path: v.numpy() for v in model.trainable_variables if v.name == "kernel"}


class ZeroProbe(keras.callbacks.Callback):
    """Records, after every batch, whether the masked kernels are exactly zero."""

    def __init__(self):
        super().__init__()
        self.ok = []

    def on_train_batch_end(self, batch, logs=None):
        for layer in self.model.layers:
            if isinstance(layer, PruneLowMagnitude):
                for c in layer.constraints:
                    w, m = c.variable.numpy(), c.mask.numpy()
                    self.ok.append(bool(np.all(w[m == 0] == 0)))


def test_wraps_prunable_layers_and_leaves_original_untouched():
    model = _cnn()
    before = [w.copy() for w in model.get_weights()]
    pruned = prune_low_magnitude(model, pruning_schedule=ConstantSparsity(0.5, frequency=1))
    assert [type(layer).__name__ for layer in pruned.layers] == [
        "PruneLowMagnitude",
        "MaxPooling2D",
        "Flatten",
        "PruneLowMagnitude",
        "PruneLowMagnitude",
    ]
    assert [layer.layer.name for layer in pruned.layers if hasattr(layer, "layer")] == [
        "conv",
        "hidden",
        "logits",
    ]
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(pruned.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)
    assert all(v.constraint is None for v in model.variables)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_fit_reaches_sparsity_and_keeps_zeros_every_step(digits):
    x, y, _, _ = digits
    pruned = _compile(
        prune_low_magnitude(
            _cnn(),
            pruning_schedule=PolynomialDecay(0.0, 0.75, 0, 20, frequency=5),
            skip_layers=["conv"],
            layer_sparsity={"logits": 0.5},
        )
    )
    probe = ZeroProbe()
    pruned.fit(x[:512], y[:512], batch_size=32, epochs=2, verbose=0, callbacks=[probe])
    assert probe.ok and all(probe.ok)
    kernels = _kernels(pruned)
    sparsity = {path.split("/")[-2]: float((k == 0).mean()) for path, k in kernels.items()}
    assert sparsity["conv"] == 0.0
    assert sparsity["hidden"] == pytest.approx(0.75, abs=1e-3)
    assert sparsity["logits"] == pytest.approx(0.5, abs=1e-3)
    steps = [
        int(c.step.numpy()) for layer in pruned.layers for c in getattr(layer, "constraints", [])
    ]
    assert steps == [32, 32]


def test_existing_zeros_stay_pruned():
    model = _cnn()
    kernel = model.get_layer("hidden").kernel
    value = kernel.numpy()
    value[:10] = 0.0
    kernel.assign(value)
    pruned = prune_low_magnitude(model, pruning_schedule=ConstantSparsity(0.0, frequency=1))
    mask = pruned.layers[3].constraints[0].mask.numpy()
    assert np.all(mask[:10] == 0) and np.all(mask[10:] == 1)


def test_nested_functional_backbone_is_pruned():
    backbone = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(16, name="inner")], name="backbone"
    )
    inputs = keras.Input((8,))
    outputs = keras.layers.Dense(4, name="head")(backbone(inputs))
    model = keras.Model(inputs, outputs)
    pruned = prune_low_magnitude(model)
    names = [
        layer.layer.name
        for layer in pruned._flatten_layers(include_self=False, recursive=True)
        if isinstance(layer, PruneLowMagnitude)
    ]
    assert sorted(names) == ["head", "inner"]


@pytest.mark.slow
def test_save_load_round_trip_and_resume(digits, tmp_path):
    x, y, _, _ = digits
    schedule = PolynomialDecay(0.0, 0.8, 0, 36, frequency=4)
    pruned = _compile(prune_low_magnitude(_cnn(), pruning_schedule=schedule, block_size=(1, 4)))
    pruned.fit(x[:320], y[:320], batch_size=32, epochs=2, verbose=0)  # 20 of 40 steps, mid-pruning
    path = tmp_path / "pruned.keras"
    pruned.save(path)
    with zipfile.ZipFile(path) as archive:
        config = json.loads(archive.read("config.json"))
    assert "tfslim" in json.dumps(config)  # registered wrapper

    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), pruned.predict(x[:8], verbose=0))
    wrappers = [layer for layer in loaded.layers if isinstance(layer, PruneLowMagnitude)]
    assert [int(c.step.numpy()) for w in wrappers for c in w.constraints] == [20, 20, 20]
    assert wrappers[1].pruning_schedule == schedule
    assert wrappers[1].granularity.block_size == (1, 4)
    zeros_before = {p: k == 0 for p, k in _kernels(loaded).items()}

    loaded.fit(x[:320], y[:320], batch_size=32, epochs=2, verbose=0)  # resume: steps 20..40
    for path_, kernel in _kernels(loaded).items():
        assert np.all(kernel[zeros_before[path_]] == 0)
        # Dense kernels divide into 1x4 blocks exactly; the 8x9 conv matrix has edge blocks.
        expected = 0.8 if "conv" not in path_ else 61 / 72
        assert float((kernel == 0).mean()) == pytest.approx(expected, abs=1e-3), path_


def test_wrapper_config_round_trip():
    wrapper = PruneLowMagnitude(
        keras.layers.Dense(8, name="d"),
        pruning_schedule=ConstantSparsity(0.6, frequency=7),
        sparsity_m_by_n=(2, 4),
    )
    config = wrapper.get_config()
    json.dumps(config)
    clone = PruneLowMagnitude.from_config(config)
    assert clone.pruning_schedule == ConstantSparsity(0.6, frequency=7)
    assert clone.granularity == wrapper.granularity
    assert clone.layer.name == "d"


@pytest.mark.slow
def test_strip_pruning_gives_plain_model_with_zeros(digits, tmp_path):
    x, y, _, _ = digits
    pruned = _compile(prune_low_magnitude(_cnn(), pruning_schedule=ConstantSparsity(0.7, 0, 10, 5)))
    pruned.fit(x[:320], y[:320], batch_size=32, epochs=1, verbose=0)
    stripped = strip_pruning(pruned)
    assert [type(layer).__name__ for layer in stripped.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
        "Dense",
    ]
    assert all(v.constraint is None for v in stripped.variables)
    for kernel in _kernels(stripped).values():
        assert float((kernel == 0).mean()) == pytest.approx(0.7, abs=0.01)
    np.testing.assert_allclose(
        stripped.predict(x[:8], verbose=0), pruned.predict(x[:8], verbose=0), rtol=1e-6
    )
    path = tmp_path / "plain.keras"
    stripped.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "tfslim" not in archive.read("config.json").decode()
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(loaded.predict(x[:8], verbose=0), stripped.predict(x[:8], verbose=0))


def test_layer_wrapper_inside_subclassed_model(digits):
    x, y, _, _ = digits

    class Net(keras.Model):
        def __init__(self):
            super().__init__(name="net")  # Keras numbers default names per process.
            self.flatten = keras.layers.Flatten()
            self.hidden = PruneLowMagnitude(
                keras.layers.Dense(32), pruning_schedule=ConstantSparsity(0.6, frequency=2)
            )
            self.out = keras.layers.Dense(10)

        def call(self, inputs):
            return self.out(self.hidden(self.flatten(inputs)))

    model = _compile(Net())
    model.fit(x[:128], y[:128], batch_size=32, epochs=1, verbose=0)
    assert float((model.hidden.layer.kernel.numpy() == 0).mean()) == pytest.approx(0.6, abs=1e-3)
    with pytest.raises(ValueError, match=r"subclassed model 'net' \(Net\) contains"):
        strip_pruning(model)


def test_invalid_inputs():
    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match=r"subclassed model.*Pruning\(\.\.\.\)"):
        prune_low_magnitude(Sub())
    no_kernels = keras.Sequential([keras.Input((4,)), keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match=r"no prunable layer.*BatchNormalization"):
        prune_low_magnitude(no_kernels)
    with pytest.raises(ValueError, match=r"no layer named \['nope'\]"):
        prune_low_magnitude(_cnn(), skip_layers=["nope"])
    with pytest.raises(ValueError, match="already pruned"):
        prune_low_magnitude(prune_low_magnitude(_cnn()))
    with pytest.raises(TypeError, match=r"`to_prune`.*Received: to_prune='model'"):
        prune_low_magnitude("model")
    with pytest.raises(TypeError, match=r"`pruning_schedule`.*Received: pruning_schedule=0\.5"):
        prune_low_magnitude(_cnn(), pruning_schedule=0.5)
    with pytest.raises(ValueError, match=r"layer_sparsity\['logits'\]"):
        prune_low_magnitude(_cnn(), layer_sparsity={"logits": 1.5})
    odd = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, name="odd")])
    with pytest.raises(ValueError, match=r"2:4 needs the input channels of layer 'odd'"):
        prune_low_magnitude(odd, sparsity_m_by_n=(2, 4))
    with pytest.raises(ValueError, match=r"layer 'pool' \(MaxPooling2D\) has no prunable"):
        keras.Sequential(
            [keras.Input((4, 4, 1)), PruneLowMagnitude(keras.layers.MaxPooling2D(name="pool"))]
        )


def test_tf_keras_model_goes_to_tfmot():
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(8, input_shape=(4,))])
    pruned = prune_low_magnitude(model, pruning_schedule=ConstantSparsity(0.5, frequency=1))
    assert type(pruned.layers[0]).__name__ == "PruneLowMagnitude"
    assert type(pruned.layers[0]).__module__.startswith("tensorflow_model_optimization")
    stripped = strip_pruning(pruned)
    assert isinstance(stripped.layers[0], tf_keras.layers.Dense)


def _sequence_model():
    inputs = keras.Input((12,), dtype="int32")
    x = keras.layers.Embedding(50, 16, name="emb")(inputs)
    x = keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = keras.layers.LSTM(16, name="lstm")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="out")(x))


@pytest.mark.slow
def test_embedding_attention_lstm_are_pruned_and_reload(tmp_path):
    x = np.random.default_rng(0).integers(0, 50, (64, 12))
    y = np.random.default_rng(1).integers(0, 2, 64)
    pruned = prune_low_magnitude(
        _sequence_model(), pruning_schedule=ConstantSparsity(0.5, frequency=1)
    )
    pruned.compile("adam", "sparse_categorical_crossentropy")
    pruned.fit(x, y, epochs=1, verbose=0)
    sparsity = {
        v.path: float((v.numpy() == 0).mean())
        for v in pruned.trainable_variables
        if v.name != "bias"
    }
    assert len(sparsity) == 8  # embeddings, q/k/v/output kernels, LSTM kernels, Dense kernel
    assert all(s == pytest.approx(0.5, abs=0.01) for s in sparsity.values()), sparsity
    path = tmp_path / "seq.keras"
    pruned.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        loaded.predict(x[:4], verbose=0), pruned.predict(x[:4], verbose=0), rtol=1e-5
    )
    stripped = strip_pruning(loaded)
    assert "MultiHeadAttention" in [type(layer).__name__ for layer in stripped.layers]
