import csv

import keras
import numpy as np
import pytest

from tfslim.pruning import ConstantSparsity, PolynomialDecay, Pruning, prune_low_magnitude
from tfslim.pruning.constraint import PruningConstraint


def _sequential():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _functional():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu", name="hidden")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv = keras.layers.Conv2D(8, 3, activation="relu", name="conv")
        self.flatten = keras.layers.Flatten()
        self.hidden = keras.layers.Dense(32, activation="relu", name="hidden")
        self.logits = keras.layers.Dense(10, name="logits")

    def call(self, inputs):
        return self.logits(self.hidden(self.flatten(self.conv(inputs))))


def _compile(model):
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    return model


def _kernel_sparsity(model):
    return {
        v.path.split("/")[-2]: float((v.numpy() == 0).mean())
        for v in model.trainable_variables
        if v.name == "kernel"
    }


class ZeroProbe(keras.callbacks.Callback):
    """After each batch, the zeros present at the previous batch must still be zero."""

    def __init__(self):
        super().__init__()
        self.previous, self.ok = None, []

    def on_train_batch_end(self, batch, logs=None):
        kernels = [v.numpy() for v in self.model.trainable_variables if v.name == "kernel"]
        if self.previous is not None:
            self.ok.append(
                all(np.all(k[z] == 0) for k, z in zip(kernels, self.previous, strict=True))
            )
        self.previous = [k == 0 for k in kernels]


@pytest.mark.slow
@pytest.mark.parametrize("make", [_sequential, _functional, Subclassed])
def test_prunes_any_model_and_logs_sparsity(make, digits, tmp_path):
    x, y, _, _ = digits
    model = _compile(make())
    csv_path = tmp_path / "log.csv"
    probe = ZeroProbe()
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=20, frequency=5)
    history = model.fit(
        x[:320],
        y[:320],
        batch_size=32,
        epochs=3,
        verbose=0,
        callbacks=[Pruning(schedule=schedule), keras.callbacks.CSVLogger(csv_path), probe],
    )
    sparsity = _kernel_sparsity(model)
    assert sparsity == pytest.approx({"conv": 58 / 72, "hidden": 0.8, "logits": 0.8}, abs=1e-3)
    assert probe.ok and all(probe.ok)
    assert history.history["sparsity/hidden"][-1] == pytest.approx(0.8, abs=1e-3)
    assert history.history["sparsity"][0] < history.history["sparsity"][-1]
    assert set(history.history) >= {"sparsity", "sparsity/conv", "sparsity/hidden", "loss"}
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert float(rows[-1]["sparsity/logits"]) == pytest.approx(0.8, abs=1e-3)
    # Masks are detached at the end of fit and the train function retraced without them.
    assert all(not isinstance(v.constraint, PruningConstraint) for v in model.variables)
    model.fit(x[:64], y[:64], batch_size=32, epochs=1, verbose=0)
    assert _kernel_sparsity(model)["hidden"] < 0.1


@pytest.mark.slow
def test_default_schedule_ramps_over_fit_and_reaches_target(digits):
    x, y, _, _ = digits
    model = _compile(_sequential())
    callback = Pruning(0.6)
    history = model.fit(x[:320], y[:320], batch_size=32, epochs=4, verbose=0, callbacks=[callback])
    sparsities = history.history["sparsity"]
    assert sparsities == sorted(sparsities)
    assert sparsities[-1] == pytest.approx(0.6, abs=2e-3)
    assert sparsities[0] < 0.6


def test_hooks_called_directly_attach_masks_and_report():
    model = _compile(_sequential())
    callback = Pruning(
        0.5,
        schedule="constant",
        skip_layers=["conv"],
        layer_sparsity={"logits": ConstantSparsity(0.25)},
        log_layers=True,
    )
    callback.set_model(model)
    callback.set_params({"epochs": 2, "steps": 10, "verbose": 0})
    callback.on_train_begin()
    pruned = {c.variable.path: c for c in callback._constraints}
    assert sorted(p.split("/")[-2] for p in pruned) == ["hidden", "logits"]
    assert model.get_layer("hidden").kernel.constraint.schedule == ConstantSparsity(0.5, 0, -1, 2)
    assert model.get_layer("logits").kernel.constraint.schedule == ConstantSparsity(0.25)
    logs = {}
    callback.on_epoch_end(0, logs)
    assert logs == {"sparsity": 0.0, "sparsity/hidden": 0.0, "sparsity/logits": 0.0}
    callback.on_train_end()
    assert model.get_layer("hidden").kernel.constraint is None


@pytest.mark.slow
def test_user_constraint_is_kept_and_restored(digits):
    x, y, _, _ = digits
    max_norm = keras.constraints.MaxNorm(0.5)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(10, kernel_constraint=max_norm, name="d")]
    )
    _compile(model)
    model.fit(
        x[:64].reshape(64, 64),
        y[:64],
        epochs=1,
        verbose=0,
        callbacks=[Pruning(schedule=ConstantSparsity(0.5, frequency=1))],
    )
    kernel = model.get_layer("d").kernel
    assert kernel.constraint is max_norm
    assert float((kernel.numpy() == 0).mean()) == 0.5
    assert np.sqrt((kernel.numpy() ** 2).sum(0)).max() <= 0.5 + 1e-5


@pytest.mark.slow
def test_resume_from_saved_model_keeps_zeros(digits, tmp_path):
    x, y, _, _ = digits
    schedule = PolynomialDecay(0.0, 0.8, 0, 25, frequency=5)  # 30 steps in all
    model = _compile(_functional())
    model.fit(
        x[:320], y[:320], batch_size=32, epochs=1, verbose=0, callbacks=[Pruning(schedule=schedule)]
    )
    path = tmp_path / "mid.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert int(loaded.optimizer.iterations.numpy()) == 10
    zeros = {p: s for p, s in _kernel_sparsity(loaded).items()}
    before = [v.numpy() == 0 for v in loaded.trainable_variables if v.name == "kernel"]
    assert zeros["hidden"] > 0.3
    loaded.fit(
        x[:320],
        y[:320],
        batch_size=32,
        epochs=3,
        initial_epoch=1,
        verbose=0,
        callbacks=[Pruning(schedule=schedule)],
    )
    after = [v.numpy() for v in loaded.trainable_variables if v.name == "kernel"]
    assert all(np.all(a[b] == 0) for a, b in zip(after, before, strict=True))
    assert _kernel_sparsity(loaded)["hidden"] == pytest.approx(0.8, abs=1e-3)


@pytest.mark.slow
def test_weights_only_checkpoint_restart_keeps_zeros(digits, tmp_path):
    x, y, _, _ = digits
    model = _compile(_sequential())
    model.fit(
        x[:160],
        y[:160],
        epochs=1,
        verbose=0,
        callbacks=[Pruning(schedule=ConstantSparsity(0.7, frequency=1))],
    )
    model.save_weights(tmp_path / "w.weights.h5")
    fresh = _sequential()
    fresh.load_weights(tmp_path / "w.weights.h5")
    _compile(fresh)
    zeros = [v.numpy() == 0 for v in fresh.trainable_variables if v.name == "kernel"]
    # The schedule restarts at step 0 with sparsity 0, yet pruned weights stay pruned.
    fresh.fit(
        x[:160],
        y[:160],
        epochs=1,
        verbose=0,
        callbacks=[Pruning(schedule=PolynomialDecay(0.0, 0.7, 0, 10, frequency=2))],
    )
    kernels = [v.numpy() for v in fresh.trainable_variables if v.name == "kernel"]
    assert all(np.all(k[z] == 0) for k, z in zip(kernels, zeros, strict=True))


@pytest.mark.slow
def test_wrapped_model_is_only_logged(digits):
    x, y, _, _ = digits
    pruned = _compile(
        prune_low_magnitude(_sequential(), pruning_schedule=ConstantSparsity(0.5, frequency=2))
    )
    history = pruned.fit(
        x[:64], y[:64], batch_size=32, epochs=1, verbose=0, callbacks=[Pruning(0.9)]
    )
    assert history.history["sparsity/hidden"][-1] == pytest.approx(0.5, abs=1e-3)


@pytest.mark.slow
def test_m_by_n_pattern_during_fit(digits):
    x, y, _, _ = digits
    model = _compile(
        keras.Sequential(
            [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(16, name="d")]
        )
    )
    model.fit(
        x[:64],
        y[:64],
        batch_size=32,
        epochs=1,
        verbose=0,
        callbacks=[Pruning(schedule=ConstantSparsity(0.5, frequency=1), sparsity_m_by_n=(2, 4))],
    )
    groups = model.get_layer("d").kernel.numpy().T.reshape(-1, 4)
    assert np.all((groups == 0).sum(-1) == 2)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (
            {"target_sparsity": 1.0},
            ValueError,
            r"`target_sparsity`.*\[0, 1\).*target_sparsity=1\.0",
        ),
        ({"target_sparsity": -0.2}, ValueError, r"target_sparsity=-0\.2"),
        ({}, ValueError, r"`target_sparsity` is required"),
        ({"target_sparsity": 0.5, "schedule": "cubic"}, ValueError, r"`schedule`.*'cubic'"),
        (
            {"target_sparsity": 0.5, "schedule": ConstantSparsity(0.7)},
            ValueError,
            r"disagree.*target_sparsity=0\.5",
        ),
        ({"target_sparsity": 0.5, "block_size": (1, 0)}, ValueError, r"`block_size`"),
        (
            {"target_sparsity": 0.5, "block_size": 3},
            TypeError,
            r"argument `block_size`\. Expected a pair of ints >= 1, e\.g\. \(1, 16\)\. "
            r"Received: block_size=3 of type int",
        ),
        (
            {"target_sparsity": 0.5, "sparsity_m_by_n": "2:4"},
            TypeError,
            r"`sparsity_m_by_n`\. Expected a pair of ints >= 1, e\.g\. \(2, 4\)",
        ),
        ({"target_sparsity": 0.5, "log_layers": "yes"}, TypeError, r"`log_layers`.*a bool"),
        ({"target_sparsity": 0.5, "skip_layers": [3]}, TypeError, r"`skip_layers`"),
    ],
)
def test_invalid_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Pruning(**kwargs)


def test_model_it_cannot_prune(digits):
    x, y, _, _ = digits
    model = _compile(_sequential())
    with pytest.raises(ValueError, match=r"no prunable layer in model.*'conv' \(Conv2D\)"):
        model.fit(
            x[:32],
            y[:32],
            verbose=0,
            callbacks=[Pruning(0.5, skip_layers=[keras.layers.Conv2D, keras.layers.Dense])],
        )
    with pytest.raises(ValueError, match=r"`skip_layers`: no layer named \['nope'\]"):
        model.fit(x[:32], y[:32], verbose=0, callbacks=[Pruning(0.5, skip_layers=["nope"])])
    with pytest.raises(ValueError, match=r"2:4 needs the input channels of layer 'conv'"):
        model.fit(x[:32], y[:32], verbose=0, callbacks=[Pruning(0.5, sparsity_m_by_n=(2, 4))])


def test_tf_keras_model_is_refused():
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(2, input_shape=(3,))])
    callback = Pruning(0.5)
    callback.set_model(model)
    with pytest.raises(TypeError, match=r"cannot prune tf_keras model.*prune_low_magnitude"):
        callback.on_train_begin()


@pytest.mark.slow
def test_keep_schedule_preserves_existing_zeros_only(digits):
    x, y, _, _ = digits
    model = _compile(_sequential())
    kernel = model.get_layer("hidden").kernel
    value = kernel.numpy()
    value[::2] = 0.0
    kernel.assign(value)
    history = model.fit(
        x[:128], y[:128], batch_size=32, epochs=2, verbose=0, callbacks=[Pruning(schedule="keep")]
    )
    after = model.get_layer("hidden").kernel.numpy()
    np.testing.assert_array_equal(after == 0, value == 0)
    assert history.history["sparsity/hidden"] == [0.5, 0.5]
    assert history.history["sparsity/logits"][-1] == 0.0


def test_log_keys_are_unique_for_repeated_sublayer_names():
    inputs = keras.Input((6, 8))
    x = keras.layers.MultiHeadAttention(2, 4, name="block1")(inputs, inputs)
    x = keras.layers.MultiHeadAttention(2, 4, name="block2")(x, x)
    model = keras.Model(inputs, x)
    callback = Pruning(0.5, schedule="constant")
    callback.set_model(model)
    callback.set_params({"epochs": 1, "steps": 1})
    callback.on_train_begin()
    keys = set(callback.sparsity_logs())
    assert {"sparsity/query", "sparsity/block2/query"} <= keys
    assert len(keys) == 1 + 8
    callback.on_train_end()


@pytest.mark.slow
def test_checkpoints_during_fit_are_plain_and_backup_restore_resumes(digits, tmp_path):
    x, y, _, _ = digits
    schedule = PolynomialDecay(0.0, 0.8, 0, 25, frequency=5)  # 10 steps per epoch

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:
                raise RuntimeError("interrupted")

    model = _compile(_sequential())
    checkpoint = keras.callbacks.ModelCheckpoint(tmp_path / "ckpt.keras")
    backup = keras.callbacks.BackupAndRestore(tmp_path / "backup")
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(
            x[:320],
            y[:320],
            batch_size=32,
            epochs=3,
            verbose=0,
            callbacks=[Pruning(schedule=schedule), backup, checkpoint, Interrupt()],
        )
    saved = keras.saving.load_model(tmp_path / "ckpt.keras")
    assert saved.get_layer("hidden").kernel.constraint is None
    zeros = saved.get_layer("hidden").kernel.numpy() == 0
    assert zeros.mean() > 0.5

    resumed = _compile(_sequential())
    history = resumed.fit(
        x[:320],
        y[:320],
        batch_size=32,
        epochs=3,
        verbose=0,
        callbacks=[Pruning(schedule=schedule), backup],
    )
    assert len(history.history["loss"]) == 1  # only the last epoch ran again
    kernel = resumed.get_layer("hidden").kernel.numpy()
    assert np.all(kernel[zeros] == 0)
    assert float((kernel == 0).mean()) == pytest.approx(0.8, abs=1e-3)


@pytest.mark.slow
def test_tensorboard_gets_sparsity_scalars(digits, tmp_path):
    import tensorflow as tf

    x, y, _, _ = digits
    model = _compile(_sequential())
    model.fit(
        x[:64],
        y[:64],
        batch_size=32,
        epochs=2,
        verbose=0,
        callbacks=[
            Pruning(schedule=ConstantSparsity(0.5, frequency=1)),
            keras.callbacks.TensorBoard(tmp_path),
        ],
    )
    tags = {}
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("epoch_"):  # scalars; the graph is text
                    tags[value.tag] = float(tf.make_ndarray(value.tensor))
    assert tags["epoch_sparsity"] == pytest.approx(0.5, abs=2e-3)
    assert tags["epoch_sparsity/hidden"] == pytest.approx(0.5, abs=1e-3)


def test_next_fit_reuses_the_traced_step_and_a_plain_fit_is_unmasked(digits):
    x, y = digits[0][:64].reshape(64, 64), digits[1][:64]
    model = _compile(keras.Sequential([keras.Input((64,)), keras.layers.Dense(10, name="d")]))
    seen = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda batch, logs: seen.append(model.train_function)
    )

    def fit(*callbacks):
        model.fit(x, y, epochs=1, batch_size=32, verbose=0, callbacks=[*callbacks, record])

    schedule = ConstantSparsity(0.5, frequency=1)
    fit(Pruning(schedule=schedule))
    fit(Pruning(schedule=schedule))
    pruned_step = seen[0]
    assert seen[2] is pruned_step
    kernel = model.get_layer("d").kernel
    assert float((kernel.numpy() == 0).mean()) == 0.5
    fit()  # No callback: the masks are detached, the zeros train again.
    assert seen[4] is not pruned_step
    assert float((kernel.numpy() == 0).mean()) < 0.1
    _compile(model)  # A new optimizer: the old trace is not reused.
    fit(Pruning(schedule=schedule))
    assert seen[6] is not pruned_step
    assert float((kernel.numpy() == 0).mean()) == 0.5
