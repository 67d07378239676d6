import os

import keras
import numpy as np
import pytest

from tfslim.pruning import ConstantSparsity, PolynomialDecay
from tfslim.pruning import schedules as schedules_lib

STEPS = [0, 1, 5, 9, 10, 11, 20, 37, 50, 99, 100, 101, 150, 1000]


def _evaluate(schedule, steps=STEPS):
    out = [schedule(np.int64(step)) for step in steps]
    return [bool(s) for s, _ in out], [float(v) for _, v in out]


@pytest.mark.parametrize(
    "config",
    [
        {"target_sparsity": 0.8, "begin_step": 0, "end_step": -1, "frequency": 10},
        {"target_sparsity": 0.5, "begin_step": 10, "end_step": 100, "frequency": 3},
    ],
)
def test_constant_sparsity_matches_tfmot(config):
    from tfslim.pruning.tfmot_routing import import_tfmot_sparsity

    before = os.environ.get("TF_USE_LEGACY_KERAS")
    tfmot_schedule = import_tfmot_sparsity().ConstantSparsity(**config)
    assert os.environ.get("TF_USE_LEGACY_KERAS") == before
    ours = _evaluate(ConstantSparsity(**config))
    theirs = _evaluate(tfmot_schedule)
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-6)


@pytest.mark.parametrize(
    "config",
    [
        {"initial_sparsity": 0.0, "final_sparsity": 0.8, "begin_step": 0, "end_step": 100},
        {
            "initial_sparsity": 0.2,
            "final_sparsity": 0.9,
            "begin_step": 10,
            "end_step": 150,
            "power": 2,
            "frequency": 7,
        },
    ],
)
def test_polynomial_decay_matches_tfmot(config):
    from tfslim.pruning.tfmot_routing import import_tfmot_sparsity

    ours = _evaluate(PolynomialDecay(**config))
    theirs = _evaluate(import_tfmot_sparsity().PolynomialDecay(**config))
    assert ours[0] == theirs[0]
    np.testing.assert_allclose(ours[1], theirs[1], rtol=1e-5)


def test_polynomial_values():
    schedule = PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=10)
    should, values = _evaluate(schedule, [0, 50, 100, 200])
    assert should == [True, True, True, False]
    np.testing.assert_allclose(values, [0.0, 0.7, 0.8, 0.8], atol=1e-6)


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: ConstantSparsity(1.0), r"`target_sparsity`.*\[0, 1\).*target_sparsity=1\.0"),
        (lambda: ConstantSparsity(-0.1), r"target_sparsity=-0\.1"),
        (lambda: ConstantSparsity(0.5, begin_step=-1), r"`begin_step`.*begin_step=-1"),
        (lambda: ConstantSparsity(0.5, begin_step=10, end_step=5), r"`end_step`.*end_step=5"),
        (lambda: ConstantSparsity(0.5, frequency=0), r"`frequency`.*frequency=0"),
        (lambda: PolynomialDecay(0.0, 1.2, 0, 10), r"`final_sparsity`.*final_sparsity=1\.2"),
        (lambda: PolynomialDecay(0.0, 0.5, 20, 10), r"begin_step=20\. Received: end_step=10"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, -1), r"`end_step`.*end_step=-1"),
        (lambda: PolynomialDecay(0.0, 0.5, 0, 10, power=0), r"`power`.*power=0"),
    ],
)
def test_invalid_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


@pytest.mark.parametrize(
    "schedule",
    [ConstantSparsity(0.7, 5, 50, 5), PolynomialDecay(0.1, 0.9, 3, 30, power=2, frequency=4)],
)
def test_serialization_round_trip(schedule):
    assert type(schedule).from_config(schedule.get_config()) == schedule
    restored = keras.saving.deserialize_keras_object(schedules_lib.serialize(schedule))
    assert restored == schedule
    assert _evaluate(restored) == _evaluate(schedule)


def test_with_target_keeps_steps():
    schedule = PolynomialDecay(0.0, 0.8, 10, 110, frequency=20)
    other = schedule.with_target(0.5)
    assert (other.begin_step, other.end_step, other.frequency) == (10, 110, 20)
    assert other.target_sparsity == 0.5
    assert ConstantSparsity(0.8, 3).with_target(0.25).get_config()["target_sparsity"] == 0.25


def test_schedule_runs_in_graph():
    import tensorflow as tf

    schedule = PolynomialDecay(0.0, 0.8, 0, 100, frequency=10)
    fn = tf.function(lambda step: schedule(step))
    should, value = fn(tf.constant(50, tf.int64))
    assert bool(should) and abs(float(value) - 0.7) < 1e-6
