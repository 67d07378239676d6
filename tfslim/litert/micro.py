"""TensorFlow Lite Micro checks: op support and the measured tensor arena.

The supported-op set is the builtin kernels registered by the tflite-micro build this
package is tested with (its all-ops resolver). The arena is measured, not estimated:
the smallest arena (16-byte steps) in which the TFLM interpreter allocates and runs the
model, found by bisection in a child process, next to TFLM's own allocation report.
"""

import re

from tfslim.errors import UnsupportedOpError
from tfslim.litert import _flatbuffer, _worker

__all__ = ["MICRO_OPS", "check_micro", "check_target_ops", "output_layer_names"]

# fmt: off
MICRO_OPS = frozenset((
    "ABS", "ADD", "ADD_N", "ARG_MAX", "ARG_MIN", "ASSIGN_VARIABLE", "AVERAGE_POOL_2D",
    "BATCH_MATMUL", "BATCH_TO_SPACE_ND", "BROADCAST_ARGS", "BROADCAST_TO", "CALL_ONCE", "CAST",
    "CEIL", "CONCATENATION", "CONV_2D", "COS", "CUMSUM", "DEPTHWISE_CONV_2D", "DEPTH_TO_SPACE",
    "DEQUANTIZE", "DIV", "DYNAMIC_UPDATE_SLICE", "ELU", "EMBEDDING_LOOKUP", "EQUAL", "EXP",
    "EXPAND_DIMS", "FILL", "FLOOR", "FLOOR_DIV", "FLOOR_MOD", "FULLY_CONNECTED", "GATHER",
    "GATHER_ND", "GREATER", "GREATER_EQUAL", "HARD_SWISH", "IF", "L2_NORMALIZATION",
    "L2_POOL_2D", "LEAKY_RELU", "LESS", "LESS_EQUAL", "LOG", "LOGICAL_AND", "LOGICAL_NOT",
    "LOGICAL_OR", "LOGISTIC", "LOG_SOFTMAX", "MAXIMUM", "MAX_POOL_2D", "MEAN", "MINIMUM",
    "MIRROR_PAD", "MUL", "NEG", "NOT_EQUAL", "PACK", "PAD", "PADV2", "PRELU", "QUANTIZE",
    "READ_VARIABLE", "REDUCE_ALL", "REDUCE_MAX", "REDUCE_MIN", "RELU", "RELU6", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR", "REVERSE_V2", "ROUND", "RSQRT", "SELECT_V2",
    "SHAPE", "SIN", "SLICE", "SOFTMAX", "SPACE_TO_BATCH_ND", "SPACE_TO_DEPTH", "SPLIT",
    "SPLIT_V", "SQRT", "SQUARE", "SQUARED_DIFFERENCE", "SQUEEZE", "STRIDED_SLICE", "SUB", "SUM",
    "SVDF", "TANH", "TRANSPOSE", "TRANSPOSE_CONV", "UNIDIRECTIONAL_SEQUENCE_LSTM", "UNPACK",
    "VAR_HANDLE", "WHILE", "ZEROS_LIKE",
))
# fmt: on


def unsupported_ops(facts: dict) -> list[dict]:
    """Ops TFLM cannot run, each with the tensor (layer) it produces and the reason.

    Args:
        facts: dict. The output of `_flatbuffer.analyze`.
    """
    problems = []
    for op in facts["op_list"]:
        if op["op"] not in MICRO_OPS:
            problems.append({**op, "reason": "no TFLite Micro kernel"})
        elif op["hybrid"]:
            problems.append({**op, "reason": "hybrid (float activations, int8 weights)"})
    if facts.get("sparse_tensors"):
        problems.append(
            {
                "op": "SPARSE_WEIGHTS",
                "output": "",
                "reason": "TFLite Micro reads dense tensors only",
            }
        )
    return problems


def check_micro(model_bytes: bytes, facts: dict, *, name: str = "<model>") -> dict:
    """Returns the `micro` section of an inspection report.

    Keys: `supported` (bool), `unsupported_ops` (op names), `problems` (op, producing
    tensor, reason), `arena_bytes` (measured minimum, None when unsupported),
    `arena_reported_bytes` (TFLM's RecordingMicroAllocator total at that arena).
    """
    problems = unsupported_ops(facts)
    section = {
        "supported": not problems,
        "unsupported_ops": sorted({p["op"] for p in problems}),
        "problems": problems,
        "arena_bytes": None,
        "arena_reported_bytes": None,
    }
    if problems:
        return section
    try:
        result = _worker.run("micro", model_bytes, name=name)
    except Exception as e:  # The interpreter refused a model our static check allowed.
        section.update(supported=False, error=str(e))
        return section
    section["arena_bytes"] = result["arena_bytes"]
    section["arena_reported_bytes"] = result["arena_reported_bytes"]
    return section


def output_layer_names(keras_model) -> list[str]:
    """Names of the layers producing a Keras model's outputs, in output order."""
    names = []
    for tensor in getattr(keras_model, "outputs", None) or []:
        history = getattr(tensor, "_keras_history", None)
        names.append(getattr(getattr(history, "operation", None), "name", None))
    return names


def layer_names(keras_model) -> set[str]:
    """Every layer name in a model, nested sub-models included."""
    if keras_model is None or not hasattr(keras_model, "_flatten_layers"):
        return set()
    return {layer.name for layer in keras_model._flatten_layers(include_self=False)}


def check_target_ops(flatbuffer: bytes, target, output_layers=(), known_layers=()) -> None:
    """Raises UnsupportedOpError naming each op (and its layer) TFLite Micro can't run."""
    facts = _flatbuffer.analyze(flatbuffer)
    problems = unsupported_ops(facts)
    edge_ops = ("QUANTIZE", "DEQUANTIZE")  # float <-> int at the model's edges is fine.
    problems += [
        {**o, "reason": "float kernel"}
        for o in facts["op_list"]
        if o["float"] and o["op"] not in edge_ops and not o["hybrid"] and o["op"] in MICRO_OPS
    ]
    if problems:
        # The op producing a model output carries a signature name, not the layer's.
        graph_outputs = {o["name"]: i for i, o in enumerate(facts["outputs"])}

        def layer(p):
            i = graph_outputs.get(p["output"])
            if i is not None and i < len(output_layers) and output_layers[i]:
                return output_layers[i]
            return _layer_of(p["output"], known_layers)

        listed = "; ".join(f"{p['op']} from layer '{layer(p)}' ({p['reason']})" for p in problems)
        raise UnsupportedOpError(
            f"The model cannot run on target {target.name!r} (TFLite Micro, full integer): "
            f"{len(problems)} op(s) refused: {listed}. Use only layers with int8 TFLite Micro "
            "kernels, or quantize with quantization='int8'."
        )


def _layer_of(tensor_name: str, known_layers=()) -> str:
    """The Keras layer behind a TFLite tensor name like 'model/conv2d_1/Relu'.

    Export uniquifies name scopes ('my_gelu' becomes 'my_gelu_1'), so each path part is
    matched against the model's layer names, with and without such a suffix.
    """
    parts = [p for p in tensor_name.split(";")[0].split("/") if p]
    for part in reversed(parts):
        for candidate in (part, re.sub(r"_\d+$", "", part)):
            if candidate in known_layers:
                return candidate
    return parts[1] if len(parts) > 2 else parts[0] if parts else tensor_name
