"""TFLite Micro compression: clustered int8 kernels stored as bit-packed indices.

A kernel with few distinct values (clustered, or rounded to few levels) is stored by TFLite
Micro's own LUT compression (`tflite_micro.tensorflow.lite.micro.compression`): a value table
(per tensor, or per channel for per-channel int8 kernels) plus `ceil(log2(values))`-bit
indices, and a DECODE operator that expands it before its consumer runs. Flash shrinks
(4-bit indices: about half of an int8 kernel), but DECODE writes the expanded tensor into the
tensor arena, so RAM grows by up to the largest expanded kernel alive at once. This module
chooses which tensors to compress:

- tensors whose compressed form would not shrink the file stay dense (a 288-byte kernel
  grew to 448 bytes compressed; per-channel tables of a small 1x1 kernel cost more than
  its 4-bit indices save): each candidate is compressed alone once to check;
- with a RAM budget, the arena of the compressed model is measured with the TFLite Micro
  interpreter; while it is over budget, the largest compressed tensor is left dense again
  and a warning names it.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from tfslim.errors import TfslimWarning

__all__ = ["compress_micro", "compression_candidates"]

# Bytes DECODE adds per compressed tensor besides table and indices (the decode metadata
# tensor, the operator and the expanded tensor's entry); measured on TFLite Micro's output.
_DECODE_OVERHEAD_BYTES = 176
_MAX_INDEX_BITS = 7  # TFLite Micro's LUT limit; 8-bit indices would save nothing on int8.


def _lut_layout(array: np.ndarray, axis: int | None) -> tuple[int, int] | None:
    """(index bits, table entries) to LUT-compress `array`, or None if it cannot gain."""
    if axis is None:
        distinct = np.unique(array).size
        tables = 1
    else:
        moved = np.moveaxis(array, axis, 0).reshape(array.shape[axis], -1)
        distinct = max(np.unique(row).size for row in moved)
        tables = moved.shape[0]
    bits = max(1, math.ceil(math.log2(max(distinct, 2))))
    if bits > _MAX_INDEX_BITS:
        return None
    return bits, tables * (1 << bits)


def compression_candidates(flatbuffer: bytes) -> list[dict]:
    """Constant tensors worth LUT compression, largest first.

    Each entry: `subgraph`, `tensor` (indices), `name`, `bytes` (dense size), `bits`,
    `per_channel_axis` (or None) and `estimated_bytes` (indices + tables + overhead).
    """
    from tflite_micro.tensorflow.lite.micro.compression import constant_inputs, model_editor

    model = model_editor.read(bytes(flatbuffer))
    found = []
    for s, subgraph in enumerate(model.subgraphs):
        consumed = {id(t) for op in subgraph.operators for t in op.inputs if t is not None}
        for t, tensor in enumerate(subgraph.tensors):
            buffer = getattr(tensor, "buffer", None)
            if buffer is None or not buffer.data:
                continue  # Activations and graph I/O have no data.
            array = tensor.array
            if array is None or array.size < 2 or id(tensor) not in consumed:
                continue
            if constant_inputs.find_uses(subgraph, tensor):
                continue  # An input the kernel must read as a constant (e.g. a shape).
            axis = None
            quantization = tensor._fb.quantization
            scales = None if quantization is None else quantization.scale
            if scales is not None and len(scales) > 1:
                axis = int(quantization.quantizedDimension)
            if axis is not None and axis not in (0, array.ndim - 1):
                axis = None
            layout = _lut_layout(array, axis)
            if layout is None:
                continue
            bits, entries = layout
            dense = array.nbytes
            estimated = (
                math.ceil(array.size * bits / 8) + entries * array.itemsize + _DECODE_OVERHEAD_BYTES
            )
            if estimated >= dense:
                continue
            found.append(
                {
                    "subgraph": s,
                    "tensor": t,
                    "name": tensor.name,
                    "bytes": int(dense),
                    "bits": bits,
                    "per_channel_axis": axis,
                    "estimated_bytes": int(estimated),
                }
            )
    return sorted(found, key=lambda c: -c["bytes"])


def _compress(flatbuffer: bytes, chosen: list[dict]) -> bytes:
    from tflite_micro.tensorflow.lite.micro.compression import spec
    from tflite_micro.tensorflow.lite.micro.compression.compress import compress

    specs = [
        spec.Tensor(
            subgraph=c["subgraph"],
            tensor=c["tensor"],
            compression=[
                spec.LookUpTableCompression(
                    index_bitwidth=c["bits"],
                    mode=(
                        spec.PerTensor()
                        if c["per_channel_axis"] is None
                        else spec.PerChannel(axis=c["per_channel_axis"])
                    ),
                )
            ],
        )
        for c in chosen
    ]
    with warnings.catch_warnings():
        # Candidates are chosen to shrink; TFLite Micro's expansion warning cannot apply.
        warnings.simplefilter("ignore", UserWarning)
        return bytes(compress(bytes(flatbuffer), specs))


def compress_micro(flatbuffer: bytes, *, ram_budget: int | None = None, measure_arena=None):
    """LUT-compresses a TFLite Micro model's few-valued constant tensors.

    Args:
        flatbuffer: bytes. A .tflite model for TFLite Micro (int8 kernels).
        ram_budget: int or None. The board's RAM for the tensor arena: tensors whose expanded
            copy pushes the measured arena over it stay dense. Defaults to `None` (no limit).
        measure_arena: callable `bytes -> int` or None. Measures the arena of a model in
            TFLite Micro; needed with `ram_budget`. Defaults to `None`.

    Returns:
        (compressed flatbuffer, report dict): `compressed` (tensor names), `left_dense` (names
        kept dense for the RAM budget), `arena_bytes` (measured, or None) and
        `dense_bytes` / `compressed_bytes` (file sizes). With no candidate the input is
        returned unchanged.

    Raises:
        ValueError: for a `ram_budget` that is not a positive int, or one without
            `measure_arena`.
    """
    if ram_budget is not None and (
        not isinstance(ram_budget, int) or isinstance(ram_budget, bool) or ram_budget <= 0
    ):
        raise ValueError(
            "Invalid value for argument `ram_budget`. Expected a positive int (bytes) or "
            f"None. Received: ram_budget={ram_budget!r}"
        )
    if ram_budget is not None and measure_arena is None:
        raise ValueError(
            "Argument `measure_arena` is required with a `ram_budget`. Received: measure_arena=None"
        )
    flatbuffer = bytes(flatbuffer)
    # The estimate cannot see flatbuffer alignment and the DECODE tensors' metadata: each
    # candidate is compressed alone once and kept only if the file really shrinks.
    chosen = [
        c
        for c in compression_candidates(flatbuffer)
        if len(_compress(flatbuffer, [c])) < len(flatbuffer)
    ]
    report = {
        "compressed": [],
        "left_dense": [],
        "arena_bytes": None,
        "dense_bytes": len(flatbuffer),
        "compressed_bytes": len(flatbuffer),
    }
    out = flatbuffer
    while chosen:
        out = _compress(flatbuffer, chosen)
        if ram_budget is None:
            break
        arena = measure_arena(out)
        report["arena_bytes"] = arena
        if arena is not None and arena <= ram_budget:
            break
        report["left_dense"].append(chosen.pop(0)["name"])  # The largest expanded copy.
        out = flatbuffer
    if len(out) >= len(flatbuffer):
        chosen, out = [], flatbuffer
    if report["left_dense"]:
        warnings.warn(
            f"Left {len(report['left_dense'])} tensor(s) uncompressed because their "
            f"decompressed copies in the tensor arena exceed the RAM budget of {ram_budget} "
            f"bytes: {', '.join(report['left_dense'])}",
            TfslimWarning,
            stacklevel=2,
        )
    report["compressed"] = [c["name"] for c in chosen]
    report["compressed_bytes"] = len(out)
    return out, report


def measure_arena(flatbuffer: bytes) -> int | None:
    """The smallest tensor arena in which TFLite Micro runs `flatbuffer`, DECODE outputs
    included (None if it does not run).

    Measured like `tfslim.inspect`'s `micro.arena_bytes`. Decompressed tensors go to the
    main arena (`alt_decompression_memory_size=0`, the interpreter's default), as on a
    board without a separate decompression buffer.
    """
    from tfslim.litert import micro
    from tfslim.litert.flatbuffer import analyze

    return micro.check_micro(bytes(flatbuffer), analyze(bytes(flatbuffer)))["arena_bytes"]
