"""Tests for tfslim.quantization.quantizers (weight fake-quant, ActivationQuantizer)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tfslim.quantization.quantizers import ActivationQuantizer, fake_quant_weights  # noqa: E402


def test_weights_per_channel_symmetric_narrow_range():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 2, 4)).astype("float32") * np.array([1, 2, 4, 8], "float32")
    q = fake_quant_weights(w, axis=-1).numpy()
    for c in range(4):
        scale = np.abs(w[..., c]).max() / 127.0
        levels = q[..., c] / scale
        np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
        assert levels.min() >= -127 - 1e-3 and levels.max() <= 127 + 1e-3
        np.testing.assert_allclose(q[..., c], np.round(w[..., c] / scale) * scale, atol=1e-5)


def test_weights_per_tensor_and_other_axis():
    w = np.array([[0.5, -1.1], [0.25, 2.0]], "float32")
    q = fake_quant_weights(w).numpy()
    scale = 2.0 / 127
    np.testing.assert_allclose(q, np.round(w / scale) * scale, atol=1e-6)
    # Axis 0 gives each row its own scale.
    q0 = fake_quant_weights(w, axis=0).numpy()
    np.testing.assert_allclose(q0[0], np.round(w[0] / (1.1 / 127)) * (1.1 / 127), atol=1e-6)


def test_first_batch_initialises_then_moving_average():
    q = ActivationQuantizer(ema_decay=0.5)
    q(np.array([[-1.0, 3.0]], "float32"), training=True)
    assert q.get_range() == (-1.0, 3.0)
    q(np.array([[1.0, 5.0]], "float32"), training=True)
    # Ranges always contain zero: the second batch's minimum counts as 0.
    np.testing.assert_allclose(q.get_range(), (-0.5, 4.0))


def test_inference_does_not_update_and_quantizes_to_256_levels():
    q = ActivationQuantizer()
    q(np.array([[0.0, 2.55]], "float32"), training=True)
    x = np.linspace(-1, 4, 101, dtype="float32")[None]
    y = q(x, training=False).numpy()
    assert q.get_range() == pytest.approx((0.0, 2.55))
    np.testing.assert_allclose(y.min(), 0.0)
    np.testing.assert_allclose(y.max(), 2.55, rtol=1e-6)
    np.testing.assert_allclose(y / 0.01, np.round(y / 0.01), atol=1e-3)


def test_frozen_range_stays_fixed_in_training():
    q = ActivationQuantizer()
    q(np.array([[0.0, 1.0]], "float32"), training=True)
    q.frozen.assign(1.0)
    q(np.array([[-7.0, 9.0]], "float32"), training=True)
    assert q.get_range() == (0.0, 1.0)


def test_fixed_range_has_no_observer():
    q = ActivationQuantizer(fixed_range=(0.0, 255 / 256))
    y = q(np.array([[0.3, 2.0]], "float32"), training=True).numpy()
    assert q.get_range() == pytest.approx((0.0, 255 / 256))
    np.testing.assert_allclose(y, [[77 / 256, 255 / 256]], atol=1e-6)


def test_nonnegative_observer_matches_the_general_one_on_relu_outputs():
    # After ReLU the batch minimum is 0 without a reduction: same ranges, same outputs.
    rng = np.random.default_rng(0)
    general, nonnegative = ActivationQuantizer(), ActivationQuantizer(nonnegative=True)
    for _ in range(3):
        x = np.maximum(rng.normal(size=(4, 6)), 0).astype("float32")
        np.testing.assert_array_equal(
            nonnegative(x, training=True).numpy(), general(x, training=True).numpy()
        )
        assert nonnegative.get_range() == general.get_range()
    assert nonnegative.get_range()[0] == 0.0


def test_config_round_trip():
    q = ActivationQuantizer(ema_decay=0.9, fixed_range=(-1.0, 127 / 128), name="q")
    clone = ActivationQuantizer.from_config(q.get_config())
    assert (clone.ema_decay, clone.fixed_range, clone.name) == (0.9, (-1.0, 127 / 128), "q")
    assert ActivationQuantizer.from_config(
        ActivationQuantizer(nonnegative=True).get_config()
    ).nonnegative


def test_save_load_round_trip(tmp_path):
    inputs = keras.Input((3,))
    model = keras.Model(inputs, ActivationQuantizer()(inputs))
    model(np.array([[-1.0, 0.5, 2.0]], "float32"), training=True)
    model.save(tmp_path / "q.keras")
    loaded = keras.saving.load_model(tmp_path / "q.keras")
    x = np.linspace(-2, 3, 12, dtype="float32").reshape(4, 3)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_invalid_ema_decay():
    with pytest.raises(ValueError, match=r"argument `ema_decay`.*Received: ema_decay=1.0"):
        ActivationQuantizer(ema_decay=1.0)


@pytest.mark.parametrize("axis", [None, -1])
def test_weight_gradient_is_straight_through(axis):
    # The range is the largest magnitude, so every weight (the largest included) lies inside
    # it and receives its gradient unchanged; the forward values are TF's fake-quant op's.
    w = tf.Variable(np.random.default_rng(0).normal(size=(3, 4)).astype("float32"))
    upstream = np.random.default_rng(1).normal(size=(3, 4)).astype("float32")
    with tf.GradientTape() as tape:
        q = fake_quant_weights(w, axis=axis, training=True)
        loss = tf.reduce_sum(q * upstream)
    np.testing.assert_array_equal(tape.gradient(loss, w).numpy(), upstream)
    np.testing.assert_array_equal(q.numpy(), fake_quant_weights(w, axis=axis).numpy())
