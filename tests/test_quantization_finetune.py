"""Tests for tfslim.quantization.finetune (quantize_and_finetune) and the package API."""

import doctest

import pytest

keras = pytest.importorskip("keras")

import tfslim.quantization as quantization  # noqa: E402
from tfslim.quantization import finetune, quantize_and_finetune  # noqa: E402


@pytest.mark.parametrize("module", ["quantize", "quantizers", "callbacks"])
def test_docstring_examples_run(module):
    import importlib

    mod = importlib.import_module(f"tfslim.quantization.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0


@pytest.mark.slow
def test_finetunes_digits_cnn_with_frozen_schedule(digits):
    x_train, y_train, x_test, y_test = digits
    layers = keras.layers
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            layers.Conv2D(8, 3, padding="same", use_bias=False),
            layers.BatchNormalization(),
            layers.ReLU(),
            layers.MaxPooling2D(),
            layers.Flatten(),
            layers.Dropout(0.1),
            layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(x_train, y_train, epochs=3, batch_size=32, verbose=0)
    qat = quantize_and_finetune(model, x_train, y_train, epochs=2)
    assert quantization.is_quantized_model(qat)
    flags = {w.path: float(w.numpy()) for w in qat.weights if w.path.endswith("frozen")}
    assert set(flags.values()) == {1.0}  # BN froze after epoch 0, ranges before the last.
    accuracy = (qat.predict(x_test, verbose=0).argmax(1) == y_test).mean()
    assert accuracy > 0.8


def test_invalid_epochs():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match=r"argument `epochs`.*Received: epochs=0"):
        finetune.quantize_and_finetune(model, None, None, epochs=0)
