import doctest

import keras
import numpy as np
import pytest

import tfslim
from tfslim.architectures import ds_cnn, fc_autoencoder, randomize_weights
from tfslim.architectures import sizing as sizing_module


def _small():
    return ds_cnn(input_shape=(8, 8, 1), num_classes=10, filters=8, num_blocks=2)


def test_docstring_examples_run():
    result = doctest.testmod(sizing_module)
    assert result.attempted > 0 and result.failed == 0


def test_randomizes_biases_and_batch_norm_but_keeps_kernels():
    model = _small()
    kernel = model.get_layer("stem_conv").kernel.numpy().copy()
    assert randomize_weights(model) is model
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), kernel)
    bn = model.get_layer("block1_dw_bn")
    gamma, beta, mean, variance = (w.numpy() for w in bn.weights)
    assert np.all((gamma >= 0.5) & (gamma <= 1.5)) and np.all((variance >= 0.5) & (variance <= 1.5))
    assert np.all(beta != 0) and np.all(mean != 0)
    assert np.all(model.get_layer("predictions").bias.numpy() != 0)


def test_same_seed_same_values_other_seed_other_values():
    a, b, c = _small(), _small(), _small()
    randomize_weights(a, seed=1)
    randomize_weights(b, seed=1)
    randomize_weights(c, seed=2)
    bias = lambda m: m.get_layer("block1_pw_conv").bias.numpy()  # noqa: E731
    np.testing.assert_array_equal(bias(a), bias(b))
    assert not np.array_equal(bias(a), bias(c))


@pytest.mark.slow
def test_untrained_file_size_matches_a_trained_one(digits):
    """Identity batch norms convert to shared all-zero buffers; trained-like ones do not."""
    x_train, y_train, _, _ = digits

    def size(model):
        return tfslim.convert(model, target="mcu", calibration_data=x_train[:16]).size_bytes

    fresh = size(_small())
    sized = size(randomize_weights(_small()))
    trained = _small()
    trained.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    trained.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    assert fresh < sized
    assert abs(size(trained) - sized) <= 0.02 * sized


def test_works_on_dense_models():
    model = randomize_weights(fc_autoencoder(input_shape=(16,), units=8, num_layers=1))
    assert np.all(model.get_layer("reconstruction").bias.numpy() != 0)


def test_rejects_bad_arguments():
    with pytest.raises(TypeError, match=r"argument `model`. Expected a keras.Model"):
        randomize_weights(keras.layers.Dense(2))
    with pytest.raises(ValueError, match=r"argument `seed`. Expected an int >= 0.*seed=-1"):
        randomize_weights(_small(), seed=-1)
