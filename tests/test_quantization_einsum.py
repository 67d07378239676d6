"""Standalone `EinsumDense` trains as the int8 FULLY_CONNECTED / BATCH_MATMUL it converts to."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import tfslim  # noqa: E402
from tests.test_quantization_constructs import (  # noqa: E402
    _assert_round_trips,
    check_deploys_as_trained,
    data,
    functional,
)
from tfslim.errors import UnsupportedOpError  # noqa: E402
from tfslim.quantization import QuantizeEinsumDense, quantize_model  # noqa: E402

L = keras.layers
SEQUENCE = (8, 6)
# equation, output_shape, bias_axes, activation, input shape
CASES = {
    "matrix": ("ab,bc->ac", 12, "c", None, (6,)),
    "sequence_relu": ("abc,cd->abd", (None, 12), "d", "relu", SEQUENCE),
    "split_heads": ("abc,cde->abde", (None, 2, 4), "de", None, SEQUENCE),
    "transposed_kernel_relu6": ("abc,dc->abd", (None, 10), None, "relu6", SEQUENCE),
    "rank4_input": ("abcd,de->abce", (4, 2, 5), "e", None, (4, 2, 6)),
    "over_the_sequence": ("abc,bd->adc", (5, 6), None, None, SEQUENCE),
}


def _model(case):
    equation, output_shape, bias_axes, activation, shape = CASES[case]

    def make(x):
        y = L.EinsumDense(equation, output_shape, bias_axes=bias_axes, activation=activation)(x)
        return L.Flatten()(y)

    return functional(make, shape), shape


@pytest.mark.parametrize("case", sorted(CASES))
def test_einsum_dense_deploys_as_trained(case):
    model, shape = _model(case)
    _, names = check_deploys_as_trained(model, data(shape=shape))
    assert {"FULLY_CONNECTED", "BATCH_MATMUL"} & set(names), names


def test_einsum_dense_trains_and_round_trips(tmp_path):
    model, shape = _model("sequence_relu")
    qat = quantize_model(model)
    layer = next(la for la in qat.layers if isinstance(la, QuantizeEinsumDense))
    x = data(32, shape=shape)
    qat.compile(keras.optimizers.SGD(0.1), "mse")
    before = layer.layer.kernel.numpy().copy()
    qat.fit(x, np.zeros((32, 8 * 12)), epochs=1, batch_size=16, verbose=0)
    assert not np.array_equal(before, layer.layer.kernel.numpy())
    _assert_round_trips(qat, QuantizeEinsumDense, x, tmp_path)


def test_einsum_dense_with_an_unfused_activation_is_refused_naming_it():
    model = functional(
        lambda x: L.EinsumDense("abc,cd->abd", (None, 4), activation="gelu", name="ffn")(x),
        SEQUENCE,
    )
    with pytest.raises(UnsupportedOpError, match=r"EinsumDense 'ffn' with activation='gelu'"):
        quantize_model(model)
    # Kept float where asked, and deployable for mobile.
    qat = quantize_model(model, skip=["ffn"])
    assert type(qat.get_layer("ffn")).__name__ == "EinsumDense"
    with pytest.raises(ValueError, match=r"activation='gelu'"):
        QuantizeEinsumDense(model.get_layer("ffn"))
    assert tfslim.convert(qat, target="mobile").size_bytes > 0
