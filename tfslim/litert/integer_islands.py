"""Closes the float islands TF's converter leaves around ops that have int8 kernels.

TF's converter declares some ops without quantized types, so a full-integer conversion
keeps them float between a DEQUANTIZE and a QUANTIZE (ELU is one: the converter never emits
it as int8, with or without a representative dataset), although LiteRT and TFLite Micro
both run it on int8 tensors with a look-up table. Such an island costs two extra ops and a
float tensor, and TFLite Micro's full-integer check refuses it.

`close_float_islands` rewrites DEQUANTIZE -> OP -> QUANTIZE into one int8 OP that reads the
DEQUANTIZE's int8 input and writes the QUANTIZE's int8 output. The int8 kernel computes
`quantize(op(dequantize(x)))` for every int8 value, which is what the island computed, so
the outputs are the same up to the rounding of its table (at most one step).
"""

import numpy as np

from tfslim.litert import flatbuffer as flatbuffer_reader

__all__ = ["INT8_KERNEL_OPS", "close_float_islands"]

# Ops whose LiteRT and TFLite Micro kernels take int8 at the op version the converter writes.
INT8_KERNEL_OPS = frozenset({"ELU"})


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


def close_float_islands(flatbuffer: bytes) -> tuple[bytes, dict[str, int]]:
    """Returns (the rewritten flatbuffer, {op: islands closed}); the input when none.

    Args:
        flatbuffer: bytes. A converted .tflite model.
    """
    schema = _schema()
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    lazy = schema.Model.GetRootAs(flatbuffer, 0)  # Reads only what is asked: no copy.
    codes = (lazy.OperatorCodes(i) for i in range(lazy.OperatorCodesLength()))
    if not any(
        names.get(max(c.BuiltinCode(), c.DeprecatedBuiltinCode())) in INT8_KERNEL_OPS for c in codes
    ):
        return flatbuffer, {}
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    closed: dict[str, int] = {}
    for sg in model.subgraphs or []:
        ops = list(sg.operators or [])

        def op_name(op):
            return flatbuffer_reader.op_name(model, op.opcodeIndex)

        producer, consumers = {}, {}
        for i, op in enumerate(ops):
            for t in op.outputs if op.outputs is not None else []:
                producer[int(t)] = i
            for t in op.inputs if op.inputs is not None else []:
                consumers.setdefault(int(t), []).append(i)
        graph_outputs = {int(t) for t in (sg.outputs if sg.outputs is not None else [])}
        removed, dropped_tensors = set(), set()
        for i, op in enumerate(ops):
            name = op_name(op)
            if name not in INT8_KERNEL_OPS or len(op.inputs) != 1 or len(op.outputs) != 1:
                continue
            f_in, f_out = int(op.inputs[0]), int(op.outputs[0])
            dq, qs = producer.get(f_in), consumers.get(f_out, [])
            if dq is None or op_name(ops[dq]) != "DEQUANTIZE" or len(qs) != 1:
                continue
            if op_name(ops[qs[0]]) != "QUANTIZE" or consumers.get(f_in) != [i]:
                continue
            if {f_in, f_out} & graph_outputs:
                continue
            q_in, q_out = int(ops[dq].inputs[0]), int(ops[qs[0]].outputs[0])
            if not (_is_int8(sg, q_in, schema) and _is_int8(sg, q_out, schema)):
                continue
            op.inputs, op.outputs = np.array([q_in], np.int32), np.array([q_out], np.int32)
            removed |= {dq, qs[0]}
            dropped_tensors |= {f_in, f_out}
            closed[name] = closed.get(name, 0) + 1
        if removed:
            sg.operators = [op for i, op in enumerate(ops) if i not in removed]
            _drop_tensors(model, sg, dropped_tensors)
    if not closed:
        return flatbuffer, {}
    return flatbuffer_reader.pack(model), closed


def _is_int8(sg, index: int, schema) -> bool:
    tensor = sg.tensors[index]
    q = tensor.quantization
    per_tensor = q is not None and q.scale is not None and len(q.scale) == 1
    return tensor.type == schema.TensorType.INT8 and per_tensor


def _drop_tensors(model, sg, dropped: set[int]) -> None:
    """Removes tensors no op reads or writes any more, renumbering every reference."""
    keep = [i for i in range(len(sg.tensors)) if i not in dropped]
    new_index = {old: new for new, old in enumerate(keep)}
    sg.tensors = [sg.tensors[i] for i in keep]

    def remap(indices):
        if indices is None:
            return None
        return np.array([new_index[int(t)] if int(t) >= 0 else int(t) for t in indices], np.int32)

    for op in sg.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    sg.inputs, sg.outputs = remap(sg.inputs), remap(sg.outputs)
    position = model.subgraphs.index(sg)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex != position:
            continue
        for entry in [*(signature.inputs or []), *(signature.outputs or [])]:
            entry.tensorIndex = new_index[entry.tensorIndex]
