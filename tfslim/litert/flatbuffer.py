"""Reads a .tflite flatbuffer without running it: ops, tensors, parameters, MACs.

Pure Python over the LiteRT schema, so a corrupted file can raise but never crash the
process. Works on any .tflite file, not only ones tfslim made. The reader is lenient
where LiteRT's flatbuffer verifier is strict: before trusting a file from elsewhere, also
run `interpreter.verify` in a child (`isolation.run`), as `tfslim.inspect` does.
"""

import contextlib
import functools
import os
from pathlib import Path

import numpy as np

from tfslim.errors import InvalidModelError

__all__ = [
    "analyze",
    "check_identifier",
    "expose_tensors",
    "op_name",
    "pack",
    "parse",
    "read_model_bytes",
    "type_name",
]

_FLOAT_TYPES = ("FLOAT32", "FLOAT16", "FLOAT64", "BFLOAT16")
_ALIGNMENT = 16  # Buffers aligned as TF's own writer aligns them (TFLite Micro reads in place).


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


@functools.cache
def _enum_names(enum_cls) -> dict[int, str]:
    return {v: k for k, v in vars(enum_cls).items() if not k.startswith("_") and isinstance(v, int)}


def read_model_bytes(model, *, argument: str = "model") -> tuple[bytes, str]:
    """Returns (flatbuffer bytes, display name) for bytes, a path, or a ConversionResult."""
    if hasattr(model, "flatbuffer") and isinstance(model.flatbuffer, bytes):
        return model.flatbuffer, "<converted model>"
    if isinstance(model, bytes | bytearray | memoryview):
        return bytes(model), "<bytes>"
    if isinstance(model, str | os.PathLike):
        path = Path(model)
        if path.is_dir():
            raise IsADirectoryError(
                f"Invalid value for argument `{argument}`. Expected a .tflite file, not a "
                f"directory. Received: {argument}={str(model)!r}"
            )
        if not path.is_file():
            raise FileNotFoundError(
                f"Invalid value for argument `{argument}`. Expected an existing .tflite file. "
                f"Received: {argument}={str(model)!r} (no such file)"
            )
        with path.open("rb") as f:  # The identifier first: never read a 2 GB video whole.
            check_identifier(f.read(8), str(path))
            f.seek(0)
            return f.read(), str(path)
    raise TypeError(
        f"Invalid type for argument `{argument}`. Expected .tflite bytes, a path to a .tflite "
        f"file, or a tfslim ConversionResult. Received: {argument} of type "
        f"{type(model).__name__}"
    )


def check_identifier(head: bytes, name: str = "<bytes>") -> None:
    """Raises InvalidModelError unless `head` (the first 8 bytes) starts a TFLite file."""
    if len(head) < 8:
        raise InvalidModelError(
            f"{name}: not a TFLite model ({len(head)} bytes; a .tflite file is a flatbuffer "
            "with the identifier 'TFL3')"
        )
    if head[4:8] != b"TFL3":
        raise InvalidModelError(
            f"{name}: not a TFLite model (file identifier {bytes(head[4:8])!r}, expected b'TFL3')"
        )


def parse(data: bytes, name: str = "<bytes>"):
    """Parses and sanity-checks a flatbuffer; raises InvalidModelError naming `name`."""
    check_identifier(data[:8], name)
    schema = _schema()
    try:
        model = schema.ModelT.InitFromPackedBuf(data, 0)
        _check_consistent(model)
    except InvalidModelError as e:
        raise InvalidModelError(f"{name}: corrupted TFLite model ({e})") from None
    except Exception as e:  # The flatbuffer reader raises assorted errors on bad offsets.
        raise InvalidModelError(f"{name}: corrupted or truncated TFLite model ({e})") from None
    return model


def pack(model) -> bytes:
    """Serializes a parsed model (`parse`'s object tree, possibly edited) back to bytes, with
    every buffer aligned as TF's own writer aligns it."""
    import flatbuffers

    schema = _schema()

    class AlignedBuffer(schema.BufferT):
        def Pack(self, builder):  # noqa: N802 (the object API's name)
            data = None
            if self.data is not None and len(self.data):
                raw = np.asarray(self.data, dtype=np.uint8).tobytes()
                builder.StartVector(1, len(raw), _ALIGNMENT)
                builder.head -= len(raw)
                builder.Bytes[builder.head : builder.head + len(raw)] = raw
                data = builder.EndVector()
            schema.BufferStart(builder)
            if data is not None:
                schema.BufferAddData(builder, data)
            schema.BufferAddOffset(builder, self.offset)
            schema.BufferAddSize(builder, self.size)
            return schema.BufferEnd(builder)

    for i, buffer in enumerate(model.buffers or []):
        aligned = AlignedBuffer()
        aligned.data, aligned.offset, aligned.size = buffer.data, buffer.offset, buffer.size
        model.buffers[i] = aligned
    size = sum(0 if b.data is None else len(b.data) for b in model.buffers or [])
    builder = flatbuffers.Builder(size + 65536)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def expose_tensors(data: bytes, indices, name: str = "<bytes>") -> bytes:
    """The model with subgraph 0's `indices` tensors added to its outputs (after the model's
    own, in the order given), so that a delegate which fuses ops (XNNPACK) still hands them
    back: each stays the output of the kernel that computes it. Model inputs and tensors
    already among the outputs are left where they are."""
    model = parse(data, name)
    sg = model.subgraphs[0]
    inputs = [int(i) for i in (sg.inputs if sg.inputs is not None else [])]
    outputs = [int(i) for i in (sg.outputs if sg.outputs is not None else [])]
    for i in indices:
        i = int(i)
        if not 0 <= i < len(sg.tensors):
            raise ValueError(
                f"Invalid value for argument `indices`. Expected tensor indices of subgraph 0 "
                f"(0..{len(sg.tensors) - 1}). Received: {i}"
            )
        if i not in inputs and i not in outputs:
            outputs.append(i)
    sg.outputs = np.array(outputs, np.int32)
    return pack(model)


def _check_consistent(model) -> None:
    if not model.subgraphs:
        raise InvalidModelError("the model has no subgraph")
    n_buffers = len(model.buffers or [])
    n_codes = len(model.operatorCodes or [])
    for sg in model.subgraphs:
        n_tensors = len(sg.tensors or [])
        for t in sg.tensors or []:
            if t.buffer >= n_buffers:
                raise InvalidModelError(f"tensor buffer index {t.buffer} out of range")
        for op in sg.operators or []:
            if op.opcodeIndex >= n_codes:
                raise InvalidModelError(f"opcode index {op.opcodeIndex} out of range")
            for i in list(op.inputs if op.inputs is not None else []) + list(
                op.outputs if op.outputs is not None else []
            ):
                if i >= n_tensors:
                    raise InvalidModelError(f"tensor index {i} out of range")


def op_name(model, opcode_index: int) -> str:
    schema = _schema()
    code = model.operatorCodes[opcode_index]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    names = _enum_names(schema.BuiltinOperator)
    if names.get(builtin) == "CUSTOM":
        custom = code.customCode.decode() if code.customCode else "?"
        return f"CUSTOM:{custom}"
    return names.get(builtin, f"BUILTIN_{builtin}")


def type_name(tensor_type: int) -> str:
    return _enum_names(_schema().TensorType).get(tensor_type, str(tensor_type))


def _np_dtype(tensor_type: int):
    return {
        "FLOAT32": np.float32,
        "FLOAT16": np.float16,
        "FLOAT64": np.float64,
        "INT8": np.int8,
        "UINT8": np.uint8,
        "INT16": np.int16,
        "INT32": np.int32,
        "INT64": np.int64,
        "BOOL": np.bool_,
    }.get(type_name(tensor_type))


def _buffer_values(model, data: bytes, tensor):
    buf = model.buffers[tensor.buffer]
    raw = None
    if buf.data is not None and len(buf.data):
        raw = np.asarray(buf.data, dtype=np.uint8).tobytes()
    elif buf.offset and buf.offset > 1:  # Buffers stored after the flatbuffer (> 2 GB models).
        raw = data[buf.offset : buf.offset + buf.size]
    if raw is None:
        return None
    dtype = _np_dtype(tensor.type)
    if dtype is None or len(raw) % np.dtype(dtype).itemsize:
        return np.frombuffer(raw, dtype=np.uint8)
    return np.frombuffer(raw, dtype=dtype)


def _tensor_name(tensor) -> str:
    return tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)


def _io_details(sg, indices) -> list[dict]:
    out = []
    for i in indices if indices is not None else []:
        t = sg.tensors[i]
        q = t.quantization
        scale = zero_point = None
        if q is not None and q.scale is not None and len(q.scale):
            scale = float(q.scale[0])
            zero_point = int(q.zeroPoint[0]) if q.zeroPoint is not None else 0
        out.append(
            {
                "name": _tensor_name(t),
                "shape": [int(d) for d in (t.shape if t.shape is not None else [])],
                "dtype": type_name(t.type).lower(),
                "scale": scale,
                "zero_point": zero_point,
            }
        )
    return out


def _macs(op: str, sg, op_t) -> int:
    def shape(i):
        return [int(d) for d in sg.tensors[i].shape] if i >= 0 else []

    ins, outs = list(op_t.inputs), list(op_t.outputs)
    out_shape = shape(outs[0]) if outs else []
    n_out = int(np.prod(out_shape)) if out_shape else 0
    if op == "CONV_2D":  # weights [out_c, kh, kw, in_c]
        w = shape(ins[1])
        return n_out * w[1] * w[2] * w[3]
    if op == "DEPTHWISE_CONV_2D":  # weights [1, kh, kw, out_c]
        w = shape(ins[1])
        return n_out * w[1] * w[2]
    if op == "FULLY_CONNECTED":  # weights [units, in]
        w = shape(ins[1])
        return n_out * w[1]
    if op == "TRANSPOSE_CONV":  # inputs: output_shape, weights [out_c, kh, kw, in_c], input
        w, x = shape(ins[1]), shape(ins[2])
        return int(np.prod(x)) * w[0] * w[1] * w[2]
    if op == "BATCH_MATMUL":
        a = shape(ins[0])
        return n_out * (a[-1] if a else 0)
    return 0


def _elements(tensor) -> int:
    shape = tensor.shape if tensor.shape is not None else []
    return int(np.prod([max(int(d), 1) for d in shape])) if len(shape) else 1


def _buffer_bytes(model, tensor) -> int:
    buf = model.buffers[tensor.buffer]
    if buf.data is not None:
        return len(buf.data)
    return int(buf.size or 0)


def analyze(data: bytes, name: str = "<bytes>") -> dict:
    """Static facts about a .tflite model (everything `inspect` reports but `micro`)."""
    model = parse(data, name)
    try:
        return _analyze(model, data)
    except Exception as e:  # Inconsistent tables in a corrupted file.
        raise InvalidModelError(
            f"{name}: corrupted TFLite model ({type(e).__name__}: {e})".replace("\n", " ")
        ) from None


def _analyze(model, data: bytes) -> dict:
    sg_main = model.subgraphs[0]
    ops: dict[str, int] = {}
    op_list = []  # (op name, output tensor name, touches float, hybrid)
    macs = 0
    const_tensors = {}  # buffer index -> (first tensor, its values), for parameter counting
    for sg in model.subgraphs:
        for t in sg.tensors or []:
            if t.buffer > 0 and t.buffer not in const_tensors:
                values = _buffer_values(model, data, t)
                if values is not None:
                    const_tensors[t.buffer] = (t, values)
        for op_t in sg.operators or []:
            op = op_name(model, op_t.opcodeIndex)
            ops[op] = ops.get(op, 0) + 1
            ins = [i for i in (op_t.inputs if op_t.inputs is not None else []) if i >= 0]
            outs = list(op_t.outputs if op_t.outputs is not None else [])
            types = [type_name(sg.tensors[i].type) for i in ins + outs]
            is_const = [
                sg.tensors[i].buffer > 0 and model.buffers[sg.tensors[i].buffer].data is not None
                for i in ins
            ]
            flags = is_const + [False] * len(outs)
            act_types = [t for t, c in zip(types, flags, strict=True) if not c]
            float_act = any(t in _FLOAT_TYPES for t in act_types)
            hybrid = float_act and any(
                c and type_name(sg.tensors[i].type) in ("INT8", "UINT8", "INT4")
                for i, c in zip(ins, is_const, strict=True)
            )
            out_name = _tensor_name(sg.tensors[outs[0]]) if outs else ""
            op_macs = 0
            # An unusual operand layout leaves that op out of the MAC count.
            with contextlib.suppress(IndexError, TypeError):
                op_macs = int(_macs(op, sg, op_t))
            macs += op_macs
            op_list.append(
                {
                    "op": op,
                    "output": out_name,
                    "float": any(t in _FLOAT_TYPES for t in types),
                    "hybrid": hybrid,
                    "macs": op_macs,
                    # Element counts for the per-op MCU cost model (`mcu_latency`).
                    "output_elements": sum(_elements(sg.tensors[i]) for i in outs),
                    "input_elements": sum(
                        _elements(sg.tensors[i])
                        for i, c in zip(ins, is_const, strict=True)
                        if not c
                    ),
                    "weight_bytes": sum(
                        _buffer_bytes(model, sg.tensors[i])
                        for i, c in zip(ins, is_const, strict=True)
                        if c
                    ),
                }
            )
    params = nonzero = 0
    sparse_tensors = 0
    for t, values in const_tensors.values():
        if type_name(t.type) in ("INT32", "INT64") and len(values) <= 8:
            continue  # Shape and axis operands, not parameters.
        dense_size = int(np.prod(t.shape)) if t.shape is not None and len(t.shape) else len(values)
        if t.sparsity is not None:
            sparse_tensors += 1
        params += dense_size
        nonzero += int(np.count_nonzero(values))
    return {
        "size_bytes": len(data),
        "ops": dict(sorted(ops.items())),
        "op_list": op_list,
        "fully_integer": not any(o["float"] for o in op_list),
        "float_ops": sorted({o["op"] for o in op_list if o["float"]}),
        "hybrid_ops": sorted({o["op"] for o in op_list if o["hybrid"]}),
        "params": params,
        "nonzero_params": nonzero,
        "sparse_tensors": sparse_tensors,
        "macs": int(macs),
        "inputs": _io_details(sg_main, sg_main.inputs),
        "outputs": _io_details(sg_main, sg_main.outputs),
        "subgraphs": len(model.subgraphs),
    }
