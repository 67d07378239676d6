"""Where the gzip bytes of an int8 .tflite file go: per kernel and the rest of the file.

Used by `clustering_benchmark.py --gzip-breakdown`. For every int8 constant tensor of at least
1 kB (the kernels), `print_gzip_breakdown` prints its distinct values (per tensor and per
output channel), its zeroth-order entropy, and the bytes gzip -9 and deflate's Huffman stage
alone (every byte a literal, no LZ77 matches) spend on it; then the rest of the file gzipped
alone, and the file's ratio to a reference gzip size with the kernels coded each way.
"""

import gzip
import math
import zlib

import numpy as np


def gzip9(data: bytes) -> int:
    return len(gzip.compress(data, compresslevel=9, mtime=0))


def huffman_only(data: bytes) -> int:
    """Bytes of a gzip file whose deflate stream codes every byte as a literal (no LZ77)."""
    encoder = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zlib.Z_HUFFMAN_ONLY)
    return len(encoder.compress(data) + encoder.flush()) + 18  # gzip header and trailer


def entropy_bits(values) -> float:
    """Zeroth-order entropy of `values` in bits per value."""
    counts = np.unique(values, return_counts=True)[1]
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def int8_kernels(flatbuffer: bytes, min_bytes: int = 1024) -> list[dict]:
    """The int8 constant tensors of at least `min_bytes`, with their place in the file."""
    from tfslim.litert import flatbuffer as reader

    model = reader.parse(flatbuffer)
    found = []
    for tensor in model.subgraphs[0].tensors:
        buffer = model.buffers[tensor.buffer]
        if reader.type_name(tensor.type) != "INT8" or buffer.data is None:
            continue
        raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
        if len(raw) < min_bytes:
            continue
        quantization = tensor.quantization
        scales = quantization.scale if quantization is not None else None
        name = tensor.name.decode() if isinstance(tensor.name, bytes) else str(tensor.name)
        found.append(
            {
                "name": name.split(";")[0],
                "values": np.frombuffer(raw, np.int8).reshape([int(d) for d in tensor.shape]),
                "offset": flatbuffer.find(raw),  # Kernels this large occur once in a file.
                "axis": None
                if scales is None or len(scales) < 2
                else int(quantization.quantizedDimension),
            }
        )
    return sorted(found, key=lambda k: k["offset"])


def print_gzip_breakdown(label: str, flatbuffer: bytes, reference_gzip: int) -> None:
    """Prints the breakdown of `flatbuffer`, ratios to `reference_gzip` bytes."""
    kernels = int8_kernels(flatbuffer)
    total = gzip9(flatbuffer)
    print(
        f"\n{label}: file {len(flatbuffer):,} B, gzip -9 {total:,} B "
        f"({total / reference_gzip:.3f}x the unclustered int8 gzip)"
    )
    print(
        "| kernel | shape | bytes | distinct | max distinct per channel | entropy (bits per "
        "value) | entropy x values / 8 | gzip -9 alone | Huffman only alone |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    rest, position = bytearray(), 0
    sums = {"gzip": 0, "huffman": 0, "entropy": 0.0}
    for kernel in kernels:
        values = kernel["values"]
        raw = values.tobytes()
        rest += flatbuffer[position : kernel["offset"]]
        position = kernel["offset"] + len(raw)
        per_channel = "-"
        if kernel["axis"] is not None:
            rows = np.moveaxis(values, kernel["axis"], 0).reshape(values.shape[kernel["axis"]], -1)
            per_channel = str(max(np.unique(row).size for row in rows))
        bits = entropy_bits(values)
        measured = {
            "gzip": gzip9(raw),
            "huffman": huffman_only(raw),
            "entropy": bits * values.size / 8,
        }
        for key, value in measured.items():
            sums[key] += value
        print(
            f"| {kernel['name']} | {values.shape} | {len(raw):,} | {np.unique(values).size} | "
            f"{per_channel} | {bits:.2f} | {math.ceil(measured['entropy']):,} | "
            f"{measured['gzip']:,} | {measured['huffman']:,} |"
        )
    rest += flatbuffer[position:]
    rest_gzip = gzip9(bytes(rest))
    print(
        f"rest of the file: {len(rest):,} B, gzip -9 alone {rest_gzip:,} B. Kernels and rest "
        "each gzipped alone: "
        + ", ".join(
            f"{how} {(sums[key] + rest_gzip) / reference_gzip:.3f}x"
            for how, key in (
                ("gzip -9", "gzip"),
                ("kernels Huffman only", "huffman"),
                ("kernels at their entropy", "entropy"),
            )
        )
    )
