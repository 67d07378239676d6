"""Pruned models through the converter: sparse encoding for mobile, dense for microcontrollers,
and pruning-preserving QAT down to the int8 file."""

import keras
import numpy as np
import pytest

import tfslim
from tfslim.pruning import ConstantSparsity, Pruning, strip_pruning

# These tests measure sparse int8 file sizes; that such files need builtin kernels (XNNPACK
# refuses them) is the warning tests/test_mobile_runtime.py checks.
pytestmark = pytest.mark.filterwarnings(
    "ignore:sparse=True with quantization:tfslim.errors.TfslimWarning"
)


def _digits_cnn():
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, activation="relu", name="conv"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(128, activation="relu", name="hidden"),
            keras.layers.Dense(10, name="logits"),
        ]
    )


def _train_pruned(digits, **pruning_kwargs):
    x, y, _, _ = digits
    model = _digits_cnn()
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"]
    )
    schedule = ConstantSparsity(0.8, begin_step=0, frequency=20)
    callback = Pruning(schedule=schedule, skip_layers=["conv"], **pruning_kwargs)
    model.fit(x, y, batch_size=32, epochs=3, verbose=0, callbacks=[callback])
    return strip_pruning(model)


@pytest.fixture(scope="module")
def pruned_cnn(digits):
    """`_train_pruned(digits)`, 80% unstructured; shared by the tests, so never train it."""
    keras.utils.set_random_seed(0)
    return _train_pruned(digits)


@pytest.mark.slow
def test_sparse_encoding_for_mobile_dense_for_mcu(pruned_cnn, digits):
    x, _, x_test, y_test = digits
    model = pruned_cnn
    calibration = x[:64]
    sparse = tfslim.convert(model, quantization="int8", calibration_data=calibration, sparse=True)
    dense = tfslim.convert(model, quantization="int8", calibration_data=calibration, sparse=False)
    mcu = tfslim.convert(model, target="mcu", calibration_data=calibration)
    sparse_report = tfslim.inspect(sparse.flatbuffer, micro_check=False)
    mcu_report = tfslim.inspect(mcu.flatbuffer, micro_check=False)
    assert sparse_report["sparse_tensors"] >= 1
    assert mcu_report["sparse_tensors"] == 0
    assert sparse.size_bytes < 0.7 * dense.size_bytes
    assert mcu_report["gzip_bytes"] < 0.5 * dense.size_bytes
    # The zeros are exact in the int8 weights (conv and biases are dense).
    assert mcu_report["sparsity"] > 0.7
    keras_acc = model.evaluate(x_test, y_test, verbose=0)[1]
    tflite_acc = tfslim.evaluate(sparse.flatbuffer, (x_test, y_test))["tflite"]
    assert abs(tflite_acc - keras_acc) < 0.03


@pytest.mark.slow
def test_block_1x16_is_block_encoded_and_smaller(pruned_cnn, digits):
    x, _, _, _ = digits
    unstructured = pruned_cnn
    block = _train_pruned(digits, block_size=(1, 16))
    # (144, units): 9 blocks of 16 per unit. strip_pruning removes a unit whose kernel
    # column and bias are all zero (its output is exactly 0), so there may be under 128.
    kernel = block.get_layer("hidden").kernel.numpy()
    assert kernel.shape[0] == 144 and kernel.shape[1] <= 128
    blocks = kernel.T.reshape(kernel.shape[1], 9, 16)
    assert np.all((blocks == 0).all(-1) | (blocks != 0).any(-1))
    # 80% of the 128 x 9 blocks are zero, counting the 9 of every removed unit.
    zero_blocks = int((blocks == 0).all(-1).sum()) + 9 * (128 - kernel.shape[1])
    assert zero_blocks / (128 * 9) == pytest.approx(0.8, abs=0.01)
    sizes = [
        tfslim.convert(m, quantization="int8", calibration_data=x[:64], sparse=True).size_bytes
        for m in (unstructured, block)
    ]
    assert sizes[1] < 0.75 * sizes[0]


@pytest.mark.slow
def test_pruning_preserving_qat_keeps_zeros_in_int8_file(pruned_cnn, digits):
    from tfslim.quantization import quantize_model

    x, y, x_test, y_test = digits
    pruned = pruned_cnn
    zeros = {
        v.path.split("/")[-2]: v.numpy() == 0
        for v in pruned.trainable_variables
        if v.name == "kernel"
    }
    qat = quantize_model(pruned)
    qat.compile(
        keras.optimizers.Adam(2e-4),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = qat.fit(
        x, y, batch_size=32, epochs=2, verbose=0, callbacks=[Pruning(schedule="keep")]
    )
    assert history.history["sparsity/hidden"][-1] == pytest.approx(0.8, abs=1e-3)
    kernels = {
        v.path.split("/")[-2]: v.numpy() for v in qat.trainable_variables if v.name == "kernel"
    }
    for name in ("hidden", "logits"):
        np.testing.assert_array_equal(kernels[name] == 0, zeros[name])
    result = tfslim.convert(qat, quantization="int8", sparse=True)
    report = tfslim.inspect(result.flatbuffer, micro_check=False)
    assert report["sparse_tensors"] >= 1
    dense_report = tfslim.inspect(tfslim.convert(qat, target="mcu").flatbuffer, micro_check=False)
    assert dense_report["sparsity"] > 0.7
    assert tfslim.evaluate(result.flatbuffer, (x_test, y_test))["tflite"] > 0.8
