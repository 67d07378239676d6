"""Tests for tfslim.quantization.callbacks (FreezeQuantization and helpers)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tfslim.quantization import quantize_model  # noqa: E402
from tfslim.quantization.callbacks import (  # noqa: E402
    FreezeQuantization,
    activation_ranges,
    set_batch_norm_frozen,
    set_quantizers_frozen,
)

L = keras.layers


def qat_model():
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            L.Conv2D(4, 3, use_bias=False, name="conv"),
            L.BatchNormalization(),
            L.ReLU(),
            L.Flatten(),
            L.Dense(10, name="head"),
        ]
    )
    qat = quantize_model(model)
    qat.compile(keras.optimizers.SGD(0.01), "mse")
    return qat


def flags(model, suffix):
    return [float(w.numpy()) for w in model.weights if w.path.endswith(suffix)]


def test_epoch_hooks_freeze_at_the_given_epoch():
    qat = qat_model()
    callback = FreezeQuantization(freeze_batch_norm_epoch=1, freeze_ranges_epoch=2)
    callback.set_model(qat)
    callback.on_epoch_begin(0)
    assert set(flags(qat, "frozen")) == {0.0}
    callback.on_epoch_begin(1)
    assert flags(qat, "bn_frozen") == [1.0]
    assert set(flags(qat, "/frozen")) == {0.0}
    callback.on_epoch_begin(2)
    assert set(flags(qat, "/frozen")) == {1.0}


def test_step_hooks_freeze_at_the_given_step():
    qat = qat_model()
    callback = FreezeQuantization(freeze_ranges_step=2)
    callback.set_model(qat)
    callback.on_train_begin()
    for batch in range(3):
        callback.on_train_batch_begin(batch)
        assert set(flags(qat, "/frozen")) == ({1.0} if batch >= 2 else {0.0})
        callback.on_train_batch_end(batch)


def test_fit_with_frozen_ranges_keeps_them(digits):
    x_train, y_train, _, _ = digits
    qat = qat_model()
    y = keras.utils.to_categorical(y_train[:64], 10)
    history = qat.fit(
        x_train[:64],
        y,
        epochs=2,
        batch_size=32,
        verbose=0,
        callbacks=[FreezeQuantization(freeze_ranges_epoch=1, log_ranges=True)],
    )
    ranges = history.history["conv/output_quantizer/max"]
    assert ranges[0] == ranges[1] > 0
    assert activation_ranges(qat)["conv/output_quantizer"][1] == ranges[1]


def test_helpers_toggle_flags():
    qat = qat_model()
    set_quantizers_frozen(qat)
    set_batch_norm_frozen(qat)
    assert set(flags(qat, "frozen")) == {1.0}
    set_quantizers_frozen(qat, False)
    assert set(flags(qat, "/frozen")) == {0.0}


def test_invalid_arguments():
    with pytest.raises(
        ValueError, match=r"`freeze_ranges_epoch`.*Received: freeze_ranges_epoch=-1"
    ):
        FreezeQuantization(freeze_ranges_epoch=-1)
    with pytest.raises(ValueError, match=r"`freeze_batch_norm_step`.*=1.5"):
        FreezeQuantization(freeze_batch_norm_step=1.5)


def test_freezing_batch_norm_mid_fit_retraces_the_step(digits):
    # The flag is read when the step is traced; the callback retraces `fit`'s step, so the
    # frozen epochs train with the moving statistics (they stop changing) and raise nothing.
    x_train, y_train, _, _ = digits
    qat = qat_model()
    y = keras.utils.to_categorical(y_train[:64], 10)

    def moving_mean():
        [mean] = [w.numpy().copy() for w in qat.weights if w.path.endswith("moving_mean")]
        return mean

    means = []
    record = keras.callbacks.LambdaCallback(on_epoch_end=lambda *_: means.append(moving_mean()))
    freeze = FreezeQuantization(freeze_batch_norm_epoch=1)
    qat.fit(x_train[:64], y, epochs=3, batch_size=32, verbose=0, callbacks=[freeze, record])
    assert flags(qat, "bn_frozen") == [1.0]
    assert np.abs(means[0]).max() > 0  # Epoch 0 updated the statistics from zero...
    np.testing.assert_array_equal(means[1], means[0])  # ...frozen epochs keep them.
    np.testing.assert_array_equal(means[2], means[0])
    # Unfreezing with the helper retraces too: statistics move again.
    set_batch_norm_frozen(qat, False)
    qat.fit(x_train[:64], y, epochs=1, batch_size=32, verbose=0)
    assert np.abs(moving_mean() - means[2]).max() > 0
