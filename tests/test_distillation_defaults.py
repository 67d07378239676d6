"""Tests for the defaults of tfslim.distill / Distiller: logits and softmax models both train,
argument mistakes are refused in the house format, feature distillation checks layer shapes."""

import keras
import numpy as np
import pytest

import tfslim
from tfslim.distillation import Distiller, FeatureDistillation, LogitsDistillation, distill


def _mlp(hidden, name, softmax):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(name=f"{name}_flatten"),
            keras.layers.Dense(hidden, activation="relu", name=f"{name}_hidden"),
            keras.layers.Dense(10, activation="softmax" if softmax else None, name=f"{name}_out"),
        ],
        name=name,
    )


@pytest.fixture(scope="module")
def logits_teacher(digits):
    keras.utils.set_random_seed(3)
    model = _mlp(64, "teacher", softmax=False)
    model.compile(
        keras.optimizers.Adam(0.01),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(digits[0], digits[1], epochs=4, batch_size=64, verbose=0)
    return model


def _small(digits):
    """600 training images: enough for a learnable task in a few fast epochs."""
    x_train, y_train, x_test, y_test = digits
    return x_train[:600], y_train[:600], x_test, y_test


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def _log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_default_arguments_train_logits_and_softmax_students(logits_teacher, digits, softmax):
    x_train, y_train, x_test, y_test = _small(digits)
    student = _mlp(16, "student", softmax=softmax)
    keras.utils.set_random_seed(0)
    trained = distill(
        logits_teacher,
        student,
        x_train,
        y_train,
        epochs=3,
        batch_size=64,
        optimizer=keras.optimizers.Adam(0.01),
    )
    # Chance is 0.1; Keras's from_logits=False loss on a logits student stays near it.
    assert _accuracy(trained, x_test, y_test) > 0.7
    # The returned student is compiled with a loss that reads its outputs correctly.
    outputs = trained.predict(x_test, verbose=0)
    log_p = np.log(np.clip(outputs, 1e-7, 1)) if softmax else _log_softmax(outputs)
    expected = -np.mean(log_p[np.arange(len(y_test)), y_test])
    loss, _ = trained.evaluate(x_test, y_test, verbose=0)
    assert loss == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize("softmax", [False, True], ids=["logits", "softmax"])
def test_student_loss_is_cross_entropy_of_the_outputs(logits_teacher, digits, softmax):
    x, y = digits[0][:64], digits[1][:64]
    student = _mlp(16, "student", softmax=softmax)
    distiller = Distiller(logits_teacher, student)
    distiller.compile("adam", "sparse_categorical_crossentropy")
    distiller.compute_loss(x, y, distiller(x))
    outputs = student.predict(x, verbose=0)
    log_p = np.log(np.clip(outputs, 1e-7, 1)) if softmax else _log_softmax(outputs)
    expected = -np.mean(log_p[np.arange(64), y])
    assert float(distiller.student_loss_tracker.result()) == pytest.approx(expected, rel=1e-4)


def test_default_temperature_is_one(logits_teacher):
    distiller = Distiller(logits_teacher, _mlp(16, "student", softmax=False))
    assert float(distiller.temperature.numpy()) == 1.0
    assert distiller.distillation_losses[0].temperature == 1.0


def test_teacher_runs_in_inference_mode(digits):
    x, y = digits[0][:64], digits[1][:64]
    teacher = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dropout(0.9),
            keras.layers.Dense(10, name="teacher_out"),
        ],
        name="teacher",
    )
    student = _mlp(16, "student", softmax=False)
    distiller = Distiller(teacher, student, student_loss_weight=0.0)
    distiller.compile("adam", "sparse_categorical_crossentropy")
    # With dropout active the teacher's targets would change from one call to the next.
    first = float(distiller.compute_loss(x, y, distiller(x, training=True)))
    second = float(distiller.compute_loss(x, y, distiller(x, training=True)))
    assert first == pytest.approx(second, rel=1e-6)


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (
            lambda t, s, x, y: distill("t", s, x, y, epochs=1),
            TypeError,
            r"argument `teacher`\. Expected a `keras\.Model`\. Received: teacher='t' of type str",
        ),
        (
            lambda t, s, x, y: distill(t, None, x, y, epochs=1),
            TypeError,
            r"argument `student`\. Expected a `keras\.Model`\. Received: student=None",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, quantize="yes"),
            TypeError,
            r"argument `quantize`\. Expected a bool\. Received: quantize='yes'",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, batch_size=0),
            ValueError,
            r"argument `batch_size`\. Expected an int >= 1\. Received: batch_size=0",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, metrics="accuracy"),
            TypeError,
            r"argument `metrics`\. Expected a list of metrics.*Received: metrics='accuracy'",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, callbacks=keras.callbacks.History()),
            TypeError,
            r"argument `callbacks`\. Expected a list of `keras\.callbacks\.Callback`",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, optimizer=0.01),
            TypeError,
            r"argument `optimizer`\. Expected an optimizer name.*Received: optimizer=0\.01",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, loss=None),
            ValueError,
            r"argument `loss`\. Expected the student's supervised loss.*Received: loss=None",
        ),
        (
            lambda t, s, x, y: distill(t, s, x, y, epochs=1, distillation_losses=["kl"]),
            TypeError,
            r"argument `distillation_losses`\. Expected a `keras\.distillation\.Distillation"
            r"Loss`.*Received: loss 0 = 'kl' of type str",
        ),
        (
            lambda t, s, x, y: Distiller(
                t, s, [LogitsDistillation(), LogitsDistillation()], distillation_loss_weights=[1]
            ),
            ValueError,
            r"argument `distillation_loss_weights`\. Expected a list of 2 floats.*Received: "
            r"distillation_loss_weights=\[1\]",
        ),
        (
            lambda t, s, x, y: Distiller(t, s, [], distillation_loss_weights=None),
            ValueError,
            r"Expected at least one `keras\.distillation\.DistillationLoss`",
        ),
    ],
)
def test_argument_mistakes_name_the_argument(logits_teacher, digits, call, error, match):
    x, y = digits[0][:32], digits[1][:32]
    with pytest.raises(error, match=match):
        call(logits_teacher, _mlp(16, "student", softmax=False), x, y)


def test_feature_distillation_between_layers_of_equal_shape(logits_teacher, digits):
    x_train, y_train, x_test, y_test = _small(digits)
    student = _mlp(64, "student", softmax=False)
    features = FeatureDistillation("mse", "teacher_hidden", "student_hidden")
    keras.utils.set_random_seed(0)
    trained = distill(
        logits_teacher,
        student,
        x_train,
        y_train,
        epochs=3,
        batch_size=64,
        optimizer=keras.optimizers.Adam(0.01),
        distillation_losses=[LogitsDistillation(), features],
        student_loss_weight=0.5,
    )
    assert trained.history.history["distillation_loss"][-1] > 0
    assert _accuracy(trained, x_test, y_test) > 0.7
    # The feature term pulls the student's hidden layer toward the teacher's.
    extract = [
        keras.Model(m.inputs, m.get_layer(f"{n}_hidden").output)
        for m, n in ((logits_teacher, "teacher"), (trained, "student"))
    ]
    t_hidden, s_hidden = (e.predict(x_test, verbose=0) for e in extract)
    keras.utils.set_random_seed(0)
    untrained = _mlp(64, "fresh", softmax=False)
    fresh = keras.Model(untrained.inputs, untrained.get_layer("fresh_hidden").output)
    before = np.mean((fresh.predict(x_test, verbose=0) - t_hidden) ** 2)
    assert np.mean((s_hidden - t_hidden) ** 2) < before


def test_feature_distillation_refuses_layers_of_other_shapes(logits_teacher):
    student = _mlp(16, "student", softmax=False)
    with pytest.raises(
        ValueError,
        match=r"same output shape.*Received: teacher layer 'teacher_hidden' with output "
        r"\(None, 64\) and student layer 'student_hidden' with output \(None, 16\)",
    ):
        Distiller(
            logits_teacher, student, FeatureDistillation("mse", "teacher_hidden", "student_hidden")
        )


def test_feature_distillation_refuses_a_missing_layer(logits_teacher):
    student = _mlp(64, "student", softmax=False)
    with pytest.raises(
        ValueError,
        match=r"`student_layer_name` of loss 1 to name a layer of the student 'student' "
        r"\('student_flatten', 'student_hidden', 'student_out'\)\. Received: "
        r"student_layer_name='hidden'",
    ):
        Distiller(
            logits_teacher,
            student,
            [LogitsDistillation(), FeatureDistillation("mse", "teacher_hidden", "hidden")],
        )


@pytest.mark.slow
def test_qat_softmax_student_distils_through_its_logits(logits_teacher, digits):
    x_train, y_train, x_test, y_test = _small(digits)
    student = tfslim.quantize_model(_mlp(16, "student", softmax=True))
    keras.utils.set_random_seed(0)
    trained = distill(
        logits_teacher,
        student,
        x_train,
        y_train,
        epochs=3,
        batch_size=64,
        optimizer=keras.optimizers.Adam(0.01),
    )
    assert tfslim.is_quantized_model(trained)
    assert _accuracy(trained, x_test, y_test) > 0.7
