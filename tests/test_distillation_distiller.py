"""Tests for tfslim.distillation.Distiller."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfslim
from tfslim.distillation import Distiller, FeatureDistillation, LogitsDistillation
from tfslim.errors import TfslimWarning


def _cnn(width, name, softmax=True):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(width, 3, activation="relu", name=f"{name}_conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name=f"{name}_hidden"),
            keras.layers.Dense(10, activation="softmax" if softmax else None, name=f"{name}_out"),
        ],
        name=name,
    )


@pytest.fixture(scope="module")
def teacher(digits):
    keras.utils.set_random_seed(1)
    x_train, y_train, _, _ = digits
    model = _cnn(16, "teacher")
    model.compile(
        keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=0)
    return model


def _distiller(teacher, student=None, **kwargs):
    distiller = Distiller(teacher, student or _cnn(4, "student"), **kwargs)
    distiller.compile(
        keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    return distiller


def test_fit_numpy_with_validation_trains_student_only(teacher, digits):
    x_train, y_train, x_test, y_test = digits
    before = [w.copy() for w in teacher.get_weights()]
    distiller = _distiller(teacher)
    history = distiller.fit(
        x_train, y_train, epochs=2, batch_size=64, validation_data=(x_test, y_test), verbose=0
    )
    logs = history.history
    for key in ("student_loss", "distillation_loss", "val_accuracy", "val_distillation_loss"):
        assert len(logs[key]) == 2
    assert logs["distillation_loss"][-1] > 0
    assert logs["accuracy"][-1] > 0.5
    for old, new in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert distiller.stripped_student() is distiller.student


@pytest.mark.slow
def test_pruned_qat_student_converts_to_int8_teacher_untouched(teacher, digits):
    x_train, y_train, x_test, y_test = digits
    before = [w.copy() for w in teacher.get_weights()]
    student = tfslim.quantize_model(_cnn(8, "student"))
    distiller = _distiller(teacher, student)
    history = distiller.fit(
        x_train,
        y_train,
        epochs=2,
        batch_size=64,
        verbose=0,
        callbacks=[tfslim.callbacks.Pruning(0.5, schedule="constant")],
    )
    assert history.history["sparsity"][-1] == pytest.approx(0.5, abs=0.01)
    for old, new in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    exported = distiller.stripped_student()
    assert all(w.path.split("/")[0] != "teacher" for w in exported.weights)
    keras_acc = float(np.mean(np.argmax(exported.predict(x_test, verbose=0), -1) == y_test))
    result = tfslim.convert(exported, target="mcu")
    assert tfslim.inspect(result.flatbuffer)["fully_integer"]
    tflite_acc = tfslim.evaluate(result.flatbuffer, (x_test, y_test))["tflite"]
    assert abs(tflite_acc - keras_acc) <= 0.02


def test_fit_tf_data(teacher, digits):
    x_train, y_train, x_test, y_test = digits
    train = tf.data.Dataset.from_tensor_slices((x_train, y_train)).batch(64)
    val = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(64)
    history = _distiller(teacher).fit(train, validation_data=val, epochs=1, verbose=0)
    assert history.history["val_accuracy"][0] > 0.2


@pytest.mark.slow
def test_checkpoint_resume_and_early_stopping(teacher, digits, tmp_path):
    x_train, y_train, x_test, y_test = digits
    distiller = _distiller(teacher, temperature=4.0)
    path = str(tmp_path / "distiller.keras")
    distiller.fit(
        x_train,
        y_train,
        epochs=3,
        batch_size=64,
        validation_data=(x_test, y_test),
        verbose=0,
        callbacks=[
            keras.callbacks.ModelCheckpoint(path),
            keras.callbacks.EarlyStopping(patience=0, monitor="loss", min_delta=10.0),
        ],
    )
    assert len(distiller.history.history["loss"]) == 2
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, Distiller)
    np.testing.assert_allclose(
        loaded.predict(x_test[:16], verbose=0), distiller.predict(x_test[:16], verbose=0), atol=1e-6
    )
    assert float(loaded.temperature.numpy()) == 4.0
    assert int(loaded.optimizer.iterations.numpy()) == int(distiller.optimizer.iterations.numpy())
    weights = str(tmp_path / "distiller.weights.h5")
    distiller.save_weights(weights)
    fresh = _distiller(teacher)
    fresh.load_weights(weights)
    assert float(fresh.temperature.numpy()) == 4.0
    np.testing.assert_allclose(
        fresh.predict(x_test[:16], verbose=0), distiller.predict(x_test[:16], verbose=0), atol=1e-6
    )
    loaded.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    assert int(loaded.optimizer.iterations.numpy()) > int(distiller.optimizer.iterations.numpy())


def test_sample_weight_scales_student_loss(teacher, digits):
    x, y = digits[0][:64], digits[1][:64]
    distiller = _distiller(teacher)
    distiller.compute_loss(x, y, distiller(x))
    full = float(distiller.student_loss_tracker.result())
    distiller.student_loss_tracker.reset_state()
    distiller.compute_loss(x, y, distiller(x), sample_weight=np.full(64, 0.5, "float32"))
    assert float(distiller.student_loss_tracker.result()) == pytest.approx(full / 2, rel=1e-4)


def test_student_regularization_losses_are_kept(teacher, digits):
    x, y = digits[0][:64], digits[1][:64]
    student = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, "softmax", kernel_regularizer=keras.regularizers.L2(10.0)),
        ]
    )
    distiller = _distiller(teacher, student, student_loss_weight=0.5)
    total = float(distiller.compute_loss(x, y, distiller(x)))
    parts = 0.5 * float(distiller.student_loss_tracker.result()) + 0.5 * float(
        distiller.distillation_loss_tracker.result()
    )
    penalty = 10.0 * float(np.sum(student.layers[-1].kernel.numpy() ** 2))
    assert total == pytest.approx(parts + penalty, rel=1e-4)


def test_get_config_round_trip(teacher):
    distiller = Distiller(teacher, _cnn(4, "student"), student_loss_weight=0.3, temperature=2.0)
    config = distiller.get_config()
    assert config["temperature"] == 2.0 and config["student_loss_weight"] == 0.3
    clone = Distiller.from_config(config)
    assert float(clone.student_loss_weight_variable.numpy()) == pytest.approx(0.3)
    assert float(clone.temperature.numpy()) == 2.0


def _loss_terms(distiller, x, y):
    distiller.compute_loss(x, y, distiller(x))
    return float(distiller.distillation_loss_tracker.result())


def test_softmax_outputs_are_distilled_as_logits(teacher, digits):
    x = digits[0][:64]
    y = digits[1][:64]
    student = _cnn(4, "student")
    kl = _distiller(teacher, student, temperature=2.0)

    def logits(model):
        # The logits behind the softmax, which the distiller reads from Keras's mark on it.
        hidden = keras.Model(model.inputs, model.get_layer(f"{model.name}_hidden").output)
        kernel, bias = model.get_layer(f"{model.name}_out").get_weights()
        return hidden.predict(x, verbose=0) @ kernel + bias

    t, s = logits(teacher) / 2.0, logits(student) / 2.0
    pt = np.exp(t) / np.exp(t).sum(-1, keepdims=True)
    ps = np.exp(s) / np.exp(s).sum(-1, keepdims=True)
    expected = np.mean(np.sum(pt * np.log(pt / ps), -1)) * 4.0
    assert _loss_terms(kl, x, y) == pytest.approx(expected, rel=1e-3)
    forced = _distiller(teacher, student, temperature=2.0, from_logits=False)
    assert _loss_terms(forced, x, y) == pytest.approx(expected, rel=1e-3)


def test_qat_softmax_outputs_are_detected(teacher, digits):
    x, y = digits[0][:64], digits[1][:64]
    student = tfslim.quantize_model(_cnn(4, "student"))
    student(x, training=True)  # Observe activation ranges so outputs are rounded.
    auto = _loss_terms(_distiller(teacher, student), x, y)
    assert auto == pytest.approx(_loss_terms(_distiller(teacher, student, from_logits=False), x, y))


def test_temperature_variable_changes_loss_without_new_distiller(teacher, digits):
    x, y = digits[0][:64], digits[1][:64]
    distiller = _distiller(teacher)
    first = _loss_terms(distiller, x, y)
    distiller.distillation_loss_tracker.reset_state()
    distiller.temperature.assign(4.0)
    assert _loss_terms(distiller, x, y) != pytest.approx(first)


def test_feature_distillation_runs(teacher, digits):
    x_train, y_train, _, _ = digits
    loss = FeatureDistillation("mse", "teacher_hidden", "student_hidden")
    distiller = _distiller(teacher, distillation_losses=[LogitsDistillation(), loss])
    history = distiller.fit(x_train[:256], y_train[:256], epochs=1, batch_size=64, verbose=0)
    assert history.history["distillation_loss"][0] > 0


def test_untrained_compiled_teacher_warns():
    teacher = _cnn(4, "teacher")
    teacher.compile("adam", "sparse_categorical_crossentropy")
    with pytest.warns(TfslimWarning, match="never trained"):
        Distiller(teacher, _cnn(4, "student"))


@pytest.mark.parametrize(
    ("make", "error", "match"),
    [
        (
            lambda t: keras.Sequential(
                [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)]
            ),
            ValueError,
            r"Expected outputs shaped like the teacher's .*Received: student=",
        ),
        (lambda t: t, ValueError, "Expected a model other than the teacher"),
        (
            lambda t: keras.Sequential([keras.Input((8, 8, 1)), t]),
            ValueError,
            "shares no weights with the teacher",
        ),
        (lambda t: "model", TypeError, "argument `student`. Expected a `keras.Model`"),
        (
            lambda t: keras.Sequential([keras.layers.Dense(10)]),
            ValueError,
            "Expected a built model with weights",
        ),
    ],
)
def test_bad_student(teacher, make, error, match):
    with pytest.raises(error, match=match):
        Distiller(teacher, make(teacher))


def test_unbuilt_teacher():
    with pytest.raises(ValueError, match=r"argument `teacher`\. Expected a built model"):
        Distiller(keras.Sequential([keras.layers.Dense(10)]), _cnn(4, "student"))


def test_tf_keras_model_is_refused(teacher):
    import tf_keras

    legacy = tf_keras.Sequential([tf_keras.layers.Dense(10, input_shape=(4,))])
    with pytest.raises(TypeError, match="tf_keras models cannot be distilled"):
        Distiller(legacy, teacher)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"student_loss_weight": 1.5}, r"Expected a float in \[0, 1\]\. Received: student_loss"),
        ({"temperature": 0.0}, r"Expected a float > 0\. Received: temperature=0.0"),
        ({"from_logits": "yes"}, "Received: from_logits='yes'"),
        (
            {"distillation_losses": [LogitsDistillation(2.0), LogitsDistillation(4.0)]},
            r"Received temperatures: \[2.0, 4.0\]",
        ),
    ],
)
def test_bad_arguments(teacher, kwargs, match):
    with pytest.raises(ValueError, match=match):
        Distiller(teacher, _cnn(4, "student"), **kwargs)


def test_prune_low_magnitude_student_is_stripped(teacher, digits):
    student = tfslim.prune_low_magnitude(_cnn(4, "student"))
    distiller = _distiller(teacher, student)
    distiller.fit(digits[0][:128], digits[1][:128], epochs=1, batch_size=64, verbose=0)
    stripped = distiller.stripped_student()
    names = {type(layer).__name__ for layer in stripped.layers}
    assert "PruneLowMagnitude" not in names
    assert stripped.count_params() == _cnn(4, "s").count_params()
