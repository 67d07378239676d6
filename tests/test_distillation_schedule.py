"""Tests for tfslim.distillation.DistillationSchedule (hooks called directly)."""

import keras
import pytest

from tfslim.distillation import DistillationSchedule, Distiller


def _model(name):
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)], name=name)


@pytest.fixture
def distiller():
    return Distiller(_model("teacher"), _model("student"), temperature=5.0)


def _run(schedule, distiller, epoch, epochs=5):
    schedule.set_model(distiller)
    schedule.set_params({"epochs": epochs, "steps": 1})
    schedule.on_train_begin()
    schedule.on_epoch_begin(epoch)
    logs = {}
    schedule.on_epoch_end(epoch, logs)
    return logs


@pytest.mark.parametrize(
    ("temperature", "epoch", "expected"),
    [
        (2.0, 3, 2.0),
        ((6.0, 2.0), 0, 6.0),
        ((6.0, 2.0), 2, 4.0),
        ((6.0, 2.0), 4, 2.0),
        (lambda epoch: 1.0 + epoch, 3, 4.0),
    ],
)
def test_temperature_values_reach_variable_and_logs(distiller, temperature, epoch, expected):
    logs = _run(DistillationSchedule(temperature=temperature), distiller, epoch)
    assert float(distiller.temperature.numpy()) == pytest.approx(expected)
    assert logs["temperature"] == pytest.approx(expected)
    assert logs["student_loss_weight"] == pytest.approx(0.5)


def test_student_loss_weight_schedule(distiller):
    logs = _run(DistillationSchedule(student_loss_weight=(0.0, 0.8)), distiller, 2)
    assert float(distiller.student_loss_weight_variable.numpy()) == pytest.approx(0.4)
    assert logs == {"temperature": 5.0, "student_loss_weight": pytest.approx(0.4)}


def test_none_leaves_values(distiller):
    logs = _run(DistillationSchedule(), distiller, 1)
    assert logs == {"temperature": 5.0, "student_loss_weight": 0.5}


def test_bad_schedule_type():
    with pytest.raises(TypeError, match=r"argument `temperature`.*Received: temperature='hot'"):
        DistillationSchedule(temperature="hot")


def test_out_of_range_values(distiller):
    with pytest.raises(ValueError, match=r"Expected values > 0\. Received: temperature=0.0"):
        _run(DistillationSchedule(temperature=lambda epoch: 0.0), distiller, 0)
    with pytest.raises(ValueError, match=r"Received: student_loss_weight=2.0 at epoch 0"):
        _run(DistillationSchedule(student_loss_weight=2.0), distiller, 0)


def test_needs_a_distiller():
    with pytest.raises(TypeError, match="needs a `tfslim.distillation.Distiller`"):
        _run(DistillationSchedule(temperature=2.0), _model("plain"), 0)


def _fit_counting_traces(digits, callbacks):
    x = digits[0][:128].reshape(128, -1)[:, :4]
    y = digits[1][:128] % 3
    distiller = Distiller(_model("teacher"), _model("student"))
    distiller.compile("adam", "sparse_categorical_crossentropy")
    traces = []
    compute_loss = distiller.compute_loss

    def counting(*args, **kwargs):
        traces.append(1)  # Python runs here only while the step is being traced.
        return compute_loss(*args, **kwargs)

    distiller.compute_loss = counting
    history = distiller.fit(x, y, epochs=3, batch_size=64, verbose=0, callbacks=callbacks)
    return history, len(traces)


def test_fit_logs_schedule_without_retracing(digits):
    import numpy as np

    schedule = DistillationSchedule(temperature=(4.0, 1.0), student_loss_weight=(0.2, 0.6))
    history, traces = _fit_counting_traces(digits, [schedule])
    np.testing.assert_allclose(history.history["temperature"], [4.0, 2.5, 1.0])
    np.testing.assert_allclose(history.history["student_loss_weight"], [0.2, 0.4, 0.6], atol=1e-6)
    # The values are variables read inside the step: no more traces than a fit without them.
    assert traces == _fit_counting_traces(digits, [])[1]
