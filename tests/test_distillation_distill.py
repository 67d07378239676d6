"""Tests for tfslim.distillation.distill, the package's public names and docstring examples."""

import doctest

import keras
import numpy as np
import pytest

import tfslim
from tfslim import distillation
from tfslim.distillation import distill


@pytest.fixture(scope="module")
def teacher(digits):
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="teacher",
    )
    model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
    model.fit(digits[0], digits[1], epochs=3, batch_size=64, verbose=0)
    return model


def _student():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ],
        name="student",
    )


def test_distiller_is_a_keras_distiller():
    assert issubclass(distillation.Distiller, keras.distillation.Distiller)


@pytest.mark.parametrize(
    "module",
    [
        "tfslim.distillation.distiller",
        "tfslim.distillation.schedule",
        "tfslim.distillation.distill",
    ],
)
def test_docstring_examples_run(module):
    import importlib

    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.slow
def test_distill_qat_pruned_returns_plain_compiled_student(teacher, digits):
    x_train, y_train, x_test, y_test = digits
    before = [w.copy() for w in teacher.get_weights()]
    student = distill(
        teacher, _student(), x_train, y_train, epochs=2, batch_size=64,
        validation_data=(x_test, y_test), temperature=(4.0, 2.0), quantize=True, pruning=0.5,
        optimizer=keras.optimizers.Adam(0.01),
    )  # fmt: skip
    logs = student.history.history
    assert logs["temperature"] == [4.0, 2.0]
    assert logs["sparsity"][-1] == pytest.approx(0.5, abs=0.01)
    assert tfslim.is_quantized_model(student)
    assert all("teacher" not in w.path for w in student.weights)
    _, acc = student.evaluate(x_test, y_test, verbose=0)
    assert acc > 0.5
    for old, new in zip(before, teacher.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert teacher.trainable


def test_distill_tf_data_with_feature_loss(teacher, digits):
    import tensorflow as tf

    x_train, y_train, x_test, y_test = digits
    data = tf.data.Dataset.from_tensor_slices((x_train[:256], y_train[:256])).batch(64)
    losses = [distillation.LogitsDistillation(), distillation.FeatureDistillation("mse")]
    student = distill(
        teacher, _student(), data, epochs=1, distillation_losses=losses, student_loss_weight=0.2
    )
    assert student.history.history["student_loss_weight"] == [pytest.approx(0.2)]
    assert student.history.history["distillation_loss"][0] > 0


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"epochs": 0},
            ValueError,
            r"argument `epochs`\. Expected an int >= 1\. Received: epochs=0",
        ),
        ({"epochs": 1, "pruning": "half"}, TypeError, r"Received: pruning='half'"),
        ({"epochs": 1, "temperature": "hot"}, TypeError, r"Received: temperature='hot'"),
    ],
)
def test_bad_arguments(teacher, digits, kwargs, error, match):
    with pytest.raises(error, match=match):
        distill(teacher, _student(), digits[0][:64], digits[1][:64], **kwargs)
