"""Every file made for `mobile` runs in LiteRT's default Interpreter (XNNPACK on).

Also the XNNPACK sparse-inference pattern check (`tfslim.litert.sparsity`).
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

import tfslim
from tfslim.errors import TfslimWarning
from tfslim.litert.sparsity import MICRO_FLASH_NOTE, choose_sparse, xnnpack_sparse

MODES = ("none", "float16", "dynamic", "int8", "int16x8")
# Every shipped .tflite, board files included, loads as a phone app would load it; TFLite
# Micro's LUT-compressed files (DECODE ops, which LiteRT lacks) are `.lut.tflm`.
_SHIPPED = Path(__file__).parents[1] / "tflite_models"
COMMITTED = sorted(_SHIPPED.rglob("*.tflite"))


def _run_default(path) -> np.ndarray:
    """Loads, allocates and invokes `path` exactly as a user would: default options."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    for detail in interp.get_input_details():
        interp.set_tensor(detail["index"], np.ones(detail["shape"], dtype=detail["dtype"]))
    interp.invoke()
    return interp.get_tensor(interp.get_output_details()[0]["index"])


@pytest.fixture(scope="module")
def pruned_cnn(digits):
    """The digits CNN pruned to 80% during fit, stripped."""
    import keras

    from tfslim.architectures.digits import build_digits_cnn

    x, y, _, _ = digits
    keras.utils.set_random_seed(0)
    model = build_digits_cnn(width=8, dense_units=32)
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    callback = tfslim.callbacks.Pruning(0.8, schedule="constant", log_layers=False)
    model.fit(x, y, batch_size=64, epochs=2, verbose=0, callbacks=[callback])
    return tfslim.strip_pruning(model)


@pytest.mark.slow
@pytest.mark.parametrize("quantization", MODES)
def test_every_mobile_mode_of_a_pruned_cnn_runs_in_the_default_interpreter(
    pruned_cnn, digits, quantization, tmp_path
):
    x = digits[0]
    # The default (None) and, for float modes, the explicit dense file: an explicit choice
    # equal to the default converts the same file. Sparse integer files need builtin
    # kernels (see the next test), so integer modes have no other choice here.
    sparse_choices = [None] + ([False] if quantization in ("none", "float16") else [])
    for sparse in sparse_choices:
        result = tfslim.convert(
            pruned_cnn,
            target="mobile",
            quantization=quantization,
            sparse=sparse,
            calibration_data=x[:32],
            output_path=tmp_path / f"{quantization}_{sparse}.tflite",
        )
        # Integer modes stay dense by default; float modes with 80% zeros are encoded sparsely.
        expected = quantization in ("none", "float16") if sparse is None else sparse
        assert result.sparse is expected
        assert result.xnnpack_sparse is False  # the digits CNN has no NCHW-able subgraph
        out = _run_default(result.path)
        assert out.shape == (1, 10) and np.all(np.isfinite(out.astype(np.float32)))


def test_explicit_sparse_int8_warns_and_names_the_runtime_cost(pruned_cnn, digits, tmp_path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    with pytest.warns(TfslimWarning, match=r"cannot allocate sparse integer weights.*builtin"):
        result = tfslim.convert(
            pruned_cnn, quantization="int8", sparse=True, calibration_data=digits[0][:32]
        )
    assert result.sparse is True and result.inspect(micro_check=False)["sparse_tensors"] >= 1
    path = result.save(tmp_path / "sparse_int8.tflite")
    # The consequence the warning states, checked: XNNPACK refuses it, builtin kernels run it.
    with pytest.raises(RuntimeError, match="XNNPack|delegate"):
        _run_default(path)
    interp = Interpreter(
        model_path=path,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interp.allocate_tensors()
    interp.invoke()


@pytest.mark.parametrize("path", COMMITTED, ids=[str(p.relative_to(_SHIPPED)) for p in COMMITTED])
def test_committed_tflite_files_run_in_the_default_interpreter(path):
    out = _run_default(path)
    assert out.shape[0] == 1 and np.all(np.isfinite(out.astype(np.float32)))


def _nchw_model(size, zeros, *, width=16):
    """3x3 stride-2 stem on RGB with explicit padding, two 1x1 convolutions, global pool."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.ZeroPadding2D(1)(inputs)
    x = keras.layers.Conv2D(width, 3, strides=2, padding="valid", activation="relu")(x)
    for _ in range(2):
        x = keras.layers.Conv2D(4 * width, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4)(x))
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D) and layer.kernel.shape[0] == 1:
            w = layer.kernel.numpy()
            w[np.abs(w) < np.quantile(np.abs(w), zeros)] = 0.0
            layer.kernel.assign(w)
    return model


def test_xnnpack_sparse_pattern_is_recognised_and_chosen_automatically(tmp_path):
    model = _nchw_model(16, 0.8)
    result = tfslim.convert(model, quantization="float16", output_path=tmp_path / "m.tflite")
    assert result.sparse is True and result.xnnpack_sparse is True
    check = xnnpack_sparse(result)
    assert check["xnnpack_sparse"] is True
    assert check["zero_fraction"] == pytest.approx(0.8, abs=0.01)
    assert check["nchw_ops"] == 4  # stem, two 1x1 convolutions, MEAN
    x = np.random.rand(2, 16, 16, 3).astype("float32")
    np.testing.assert_allclose(
        tfslim.predict(result, x), model.predict(x, verbose=0), rtol=0.02, atol=0.02
    )
    assert _run_default(result.path).shape == (1, 4)


@pytest.mark.parametrize(
    ("size", "zeros", "quantization", "reason"),
    [
        (16, 0.5, "none", r"hold 50% zeros \(XNNPACK needs >= 67%\)"),
        # An odd input folds the padding into SAME, which XNNPACK's NCHW pass refuses.
        (15, 0.8, "none", "no 3x3 stride-2 convolution"),
        (16, 0.8, "int8", "integer tensors"),
    ],
)
def test_xnnpack_sparse_says_why_not(size, zeros, quantization, reason):
    model = _nchw_model(size, zeros)
    data = np.random.rand(8, size, size, 3).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TfslimWarning)  # sparse int8: tested above
        result = tfslim.convert(
            model, quantization=quantization, sparse=True, calibration_data=data, verify=False
        )
    check = xnnpack_sparse(result.flatbuffer)
    assert check["xnnpack_sparse"] is False and result.xnnpack_sparse is False
    assert re.search(reason, check["reason"])


def test_dense_file_is_never_xnnpack_sparse():
    result = tfslim.convert(_nchw_model(16, 0.8), quantization="none", sparse=False)
    check = xnnpack_sparse(result)
    assert check == {
        "xnnpack_sparse": False,
        "reason": "no sparse-encoded weights (XNNPACK hints sparse inference only then)",
        "zero_fraction": None,
        "nchw_ops": 0,
    }


@pytest.mark.parametrize(
    ("sparse", "quantization", "zeros", "expected"),
    [
        (None, "none", 0.8, True),
        (None, "float16", 0.6, True),
        (None, "none", 0.5, False),
        (None, "int8", 0.9, False),
        (None, "dynamic", 0.9, False),
        (True, "int8", 0.0, True),
        (False, "none", 0.9, False),
    ],
)
def test_choose_sparse(sparse, quantization, zeros, expected):
    assert choose_sparse(sparse, quantization, lambda: zeros) is expected


def test_choose_sparse_leaves_saved_models_dense():
    assert choose_sparse(None, "none", None) is False


@pytest.mark.slow
def test_inspect_explains_flash_and_runtime_of_sparse_files(pruned_cnn, digits):
    import keras

    x = digits[0][:32]
    mcu = tfslim.convert(pruned_cnn, target="mcu", calibration_data=x)
    report = tfslim.inspect(mcu, micro_check=False)
    assert report["sparsity"] > 0.6 and report["sparse_tensors"] == 0
    assert report["xnnpack_sparse"] is False
    assert report["notes"] == [MICRO_FLASH_NOTE]
    assert "not yet implemented" in MICRO_FLASH_NOTE and "ChannelPruning" in MICRO_FLASH_NOTE
    floats = tfslim.convert(pruned_cnn, quantization="none")  # sparse-encoded automatically
    notes = tfslim.inspect(floats, micro_check=False)["notes"]
    assert notes[0] == MICRO_FLASH_NOTE and notes[1].startswith("XNNPACK unpacks the sparse")
    with pytest.warns(TfslimWarning):
        sparse_int8 = tfslim.convert(
            pruned_cnn, quantization="int8", sparse=True, calibration_data=x, verify=False
        )
    notes = tfslim.inspect(sparse_int8, micro_check=False)["notes"]
    assert notes[1].startswith("Sparse integer weights: LiteRT's default Interpreter")
    plain = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    assert (
        tfslim.inspect(tfslim.convert(plain, quantization="none"), micro_check=False)["notes"] == []
    )


def test_docstring_examples_run():
    import doctest

    from tfslim.litert import sparsity

    result = doctest.testmod(sparsity, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 1 and result.failed == 0
