"""DEQUANTIZE -> ELU -> QUANTIZE islands become one int8 ELU that LiteRT and TFLite Micro run."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

import tfslim  # noqa: E402
from tfslim.litert import flatbuffer as fb  # noqa: E402
from tfslim.litert.integer_islands import close_float_islands  # noqa: E402
from tfslim.quantization import quantize_model  # noqa: E402

L = keras.layers
ELU_FORMS = {
    "layer": lambda x: L.ELU()(x),
    "activation_layer": L.Activation("elu"),
    "argument": None,  # activation="elu" on the convolution
    "op": keras.ops.elu,
}


def _model(form, tail_elu=False):
    inputs = keras.Input((8, 8, 3))
    if ELU_FORMS[form] is None:
        x = L.Conv2D(4, 3, padding="same", activation="elu")(inputs)
    else:
        x = ELU_FORMS[form](L.Conv2D(4, 3, padding="same")(inputs))
    x = L.Conv2D(4, 1)(x)
    if tail_elu:
        x = L.ELU()(x)
    return keras.Model(inputs, x)


def _observed(model):
    qat = quantize_model(model)
    x = np.random.default_rng(0).uniform(-2, 2, (48, 8, 8, 3)).astype("float32")
    for i in range(3):
        qat(x[i * 16 : (i + 1) * 16], training=True)
    return qat, x


def _run(flatbuffer, x, resolver=None):
    from ai_edge_litert.interpreter import Interpreter

    kwargs = {} if resolver is None else {"experimental_op_resolver_type": resolver}
    interpreter = Interpreter(model_content=flatbuffer, **kwargs)
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    if inp["dtype"] == np.int8:
        x = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def _ops(flatbuffer):
    return [(op["op"], op["float"]) for op in fb.analyze(flatbuffer)["op_list"]]


@pytest.mark.parametrize("form", sorted(ELU_FORMS))
def test_every_elu_form_converts_to_an_int8_elu_for_mcu(form):
    qat, x = _observed(_model(form))
    # Refused before: the converter left the ELU float between DEQUANTIZE and QUANTIZE.
    result = tfslim.convert(qat, target="mcu", io_dtype="float32")
    ops = _ops(result.flatbuffer)
    assert [name for name, _ in ops] == ["QUANTIZE", "CONV_2D", "ELU", "CONV_2D", "DEQUANTIZE"]
    assert not any(is_float for name, is_float in ops[1:-1]), ops
    got, reference = _run(result.flatbuffer, x), qat.predict(x, verbose=0)
    step = _step(tfslim.convert(qat, target="mcu").flatbuffer)
    assert np.mean(np.abs(got - reference) > 1.01 * step) <= 0.05
    assert np.max(np.abs(got - reference)) <= 3 * step


def _step(flatbuffer):
    from ai_edge_litert.interpreter import Interpreter

    return Interpreter(model_content=flatbuffer).get_output_details()[0]["quantization"][0]


def test_an_island_file_rewritten_gives_identical_outputs(tmp_path, monkeypatch):
    from tfslim.litert import converter

    qat, x = _observed(_model("op", tail_elu=True))
    monkeypatch.setattr(converter.integer_islands, "close_float_islands", lambda f: (f, {}))
    original = tfslim.convert(qat, target="mobile", quantization="int8", verify=False).flatbuffer
    monkeypatch.undo()
    names = [n for n, _ in _ops(original)]
    assert names.count("DEQUANTIZE") == 3 and names.count("ELU") == 2, names
    rewritten, closed = close_float_islands(original)
    assert closed == {"ELU": 2}
    assert [n for n, _ in _ops(rewritten)].count("DEQUANTIZE") == 1  # the float output's
    assert len(rewritten) < len(original)
    from ai_edge_litert.interpreter import OpResolverType

    builtin = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    for resolver in (None, builtin):  # XNNPACK's int8 ELU and LiteRT's own
        np.testing.assert_array_equal(_run(original, x, resolver), _run(rewritten, x, resolver))
    # Signatures still name the model's input and output tensors.
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(model_content=rewritten).get_signature_runner()
    out = runner(**{next(iter(runner.get_input_details())): x[:1]})
    np.testing.assert_array_equal(next(iter(out.values())), _run(original, x[:1]))


def test_a_model_without_islands_is_returned_unchanged():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, L.Conv2D(4, 3, activation="relu")(inputs))
    qat, _ = _observed(model)
    flatbuffer = tfslim.convert(qat, target="mobile").flatbuffer
    same, closed = close_float_islands(flatbuffer)
    assert same is flatbuffer and closed == {}


def test_the_mcu_elu_file_runs_in_tflite_micro():
    qat, x = _observed(_model("activation_layer"))
    report = tfslim.inspect(tfslim.convert(qat, target="mcu"))
    assert report["micro"]["supported"] and report["micro"]["arena_bytes"] > 0, report["micro"]
