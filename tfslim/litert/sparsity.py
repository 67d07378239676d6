"""Sparse weight encoding for phones: when it runs, and when XNNPACK runs it sparsely.

Facts measured with `ai_edge_litert` 2.3 (default `Interpreter`, XNNPACK on):

- Float32 and float16 files with sparse-encoded weights (DENSIFY ops) load and run: XNNPACK
  unpacks the weights once when the interpreter is created, then runs its dense kernels,
  except in the one pattern below, where it runs sparse kernels.
- Integer files with sparse weights (`dynamic`, `int8`) do not load: XNNPACK claims the
  CONV_2D / FULLY_CONNECTED node behind an integer DENSIFY and then fails to prepare it
  (`failed to delegate FULLY_CONNECTED node`). They run only with builtin kernels
  (`OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES`), which on the digits CNN are slower
  than XNNPACK's dense int8 kernels (see `SPARSE_INT8_COST`). `int16x8` files are not taken by
  XNNPACK at all and load either way.
- XNNPACK runs sparse weights with sparse kernels only in a float subgraph that it can switch
  to NCHW layout (XNNPACK `xnn_subgraph_rewrite_for_nchw`, enabled only when the delegated
  subgraph holds sparse-encoded weights): it starts at a 3x3 stride-2 convolution on 3 input
  channels with one pixel of explicit padding on each side, runs through 1x1 convolutions,
  3x3/5x5 depthwise convolutions with explicit padding, element-wise ADD/MUL and activations,
  and ends at a global average pool (MEAN over height and width); every tensor inside must be
  consumed inside, and the 1x1 convolutions together must hold at least 2/3 zeros. CHW sparse
  kernels exist for ARM and WebAssembly builds; on x86-64 hosts no speed-up was measured.

`xnnpack_sparse` checks that pattern on a converted file; `choose_sparse` is the converter's
decision, and `warn_if_costly` the warning for an explicit `sparse=True` that costs latency.
"""

from __future__ import annotations

import warnings

import numpy as np

from tfslim.errors import TfslimWarning

__all__ = [
    "SPARSE_INT8_COST",
    "choose_sparse",
    "report_entries",
    "warn_if_costly",
    "xnnpack_sparse",
]

# Below this fraction of zeros the sparse index overhead makes files larger (a 50%-pruned
# int8 CNN grew from 24.8 kB to 34.9 kB).
AUTO_SPARSE_MIN = 0.6
FLOAT_MODES = ("none", "float16")
# Modes whose sparse files the default LiteRT Interpreter (XNNPACK) cannot allocate.
XNNPACK_REFUSES = ("dynamic", "int8")
# Measured side by side by `python benchmarks/pruning_benchmark.py --mobile-runtime`
# (digits CNN pruned to 80%, one thread, median of 7 interleaved rounds): sparse int8 with
# builtin kernels 0.0722 ms vs dense int8 with XNNPACK 0.0339 ms.
SPARSE_INT8_COST = "2.1x the latency of the dense int8 file"

_ELEMENTWISE = {
    "ADD",
    "MUL",
    "RELU",
    "RELU6",
    "RELU_N1_TO_1",
    "LOGISTIC",
    "TANH",
    "HARD_SWISH",
    "LEAKY_RELU",
    "ELU",
    "ABS",
    "NEG",
    "SQUARE",
    "SQRT",
}
_MIN_ZERO_FRACTION = 2.0 / 3.0


def choose_sparse(sparse: bool | None, quantization: str, zero_fraction) -> bool:
    """The mobile converter's sparse-encoding decision.

    Args:
        sparse: the user's `sparse` argument (None: decide).
        quantization: the conversion mode.
        zero_fraction: callable returning the model's fraction of zero kernel weights, or
            None when the model is not a Keras model (then nothing is encoded automatically).

    Returns:
        Whether to sparse-encode. Automatic only for float modes with at least 60% zeros:
        those files load in the default Interpreter and are smaller; integer files stay dense,
        because the default Interpreter cannot allocate sparse integer weights.
    """
    if sparse is not None:
        return bool(sparse)
    if quantization not in FLOAT_MODES or zero_fraction is None:
        return False
    return zero_fraction() >= AUTO_SPARSE_MIN


def warn_if_costly(sparse: bool | None, quantization: str, *, stacklevel: int = 3) -> None:
    """Warns when an explicit `sparse=True` makes a file the default Interpreter refuses."""
    if sparse is True and quantization in XNNPACK_REFUSES:
        warnings.warn(
            f"sparse=True with quantization={quantization!r}: LiteRT's default Interpreter "
            "(XNNPACK on) cannot allocate sparse integer weights (it fails at "
            "allocate_tensors with 'failed to delegate ... node'). The file runs only with "
            "builtin kernels (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), measured at "
            f"{SPARSE_INT8_COST} with XNNPACK. Use sparse=False (the default for integer "
            "modes) for a file that runs everywhere, or a float mode to keep sparse encoding.",
            TfslimWarning,
            stacklevel=stacklevel,
        )


def _schema():
    from ai_edge_litert import schema_py_generated as schema

    return schema


class _Graph:
    """The first subgraph of a flatbuffer: op names, producers, consumers and constants."""

    def __init__(self, data: bytes):
        schema = _schema()
        self.schema = schema
        self.model = schema.ModelT.InitFromPackedBuf(data, 0)
        self.sg = self.model.subgraphs[0]
        names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.types = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
        self.ops = []
        self.producer, self.consumers = {}, {}
        for index, op in enumerate(self.sg.operators or []):
            code = self.model.operatorCodes[op.opcodeIndex]
            name = names.get(max(code.builtinCode, code.deprecatedBuiltinCode), "?")
            ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
            outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
            self.ops.append((name, ins, outs, op))
            for t in outs:
                self.producer[t] = index
            for t in ins:
                if t >= 0:
                    self.consumers.setdefault(t, []).append(index)
        self.outputs = {int(t) for t in self.sg.outputs}

    def tensor(self, index):
        return self.sg.tensors[index]

    def shape(self, index) -> list[int]:
        shape = self.tensor(index).shape
        return [int(d) for d in shape] if shape is not None else []

    def dtype(self, index) -> str:
        return self.types.get(self.tensor(index).type, "?")

    def values(self, index):
        """Stored values of a constant tensor (for a DENSIFY output: its sparse input)."""
        producer = self.producer.get(index)
        if producer is not None:
            name, ins, _, _ = self.ops[producer]
            if name == "DENSIFY":
                return self.values(ins[0])
            if name == "DEQUANTIZE":  # float16 weights are stored as FLOAT16 constants
                return self.values(ins[0])
            return None
        buffer = self.model.buffers[self.tensor(index).buffer]
        if buffer.data is None or not len(buffer.data):
            return None
        raw = np.asarray(buffer.data, dtype=np.uint8).tobytes()
        dtype = {"FLOAT32": np.float32, "FLOAT16": np.float16}.get(self.dtype(index), np.uint8)
        return np.frombuffer(raw, dtype=dtype)

    def is_constant(self, index) -> bool:
        return self.values(index) is not None

    def padding_of(self, op_index) -> tuple[int, int, int, int] | None:
        """(top, bottom, left, right) of a VALID conv fed by a zero PAD, else None."""
        name, ins, _, op = self.ops[op_index]
        if op.builtinOptions is None or op.builtinOptions.padding != self.schema.Padding.VALID:
            return None
        producer = self.producer.get(ins[0])
        if producer is None or self.ops[producer][0] != "PAD":
            return (0, 0, 0, 0)
        pads = self.values(self.ops[producer][1][1])
        if pads is None:
            return None
        pads = np.frombuffer(pads.tobytes(), dtype=np.int32).reshape(-1, 2)
        if len(pads) != 4 or pads[0].any() or pads[3].any():
            return None
        return int(pads[1][0]), int(pads[1][1]), int(pads[2][0]), int(pads[2][1])


def _is_input_conv(graph: _Graph, index: int) -> bool:
    name, ins, _, op = graph.ops[index]
    if name != "CONV_2D":
        return False
    weights = graph.shape(ins[1])  # [out, kh, kw, in]
    options = op.builtinOptions
    return (
        weights[1:] == [3, 3, 3]
        and (options.strideH, options.strideW) == (2, 2)
        and (options.dilationHFactor, options.dilationWFactor) == (1, 1)
        and graph.padding_of(index) == (1, 1, 1, 1)
    )


def _nchw_kind(graph: _Graph, index: int) -> str | None:
    """Returns "inside", "end" or None (XNNPACK would leave the op in NHWC)."""
    name, ins, outs, op = graph.ops[index]
    options = op.builtinOptions
    if name == "CONV_2D":
        weights = graph.shape(ins[1])
        if weights[1:3] != [1, 1] or (options.strideH, options.strideW) != (1, 1):
            return None
        return "inside" if (options.dilationHFactor, options.dilationWFactor) == (1, 1) else None
    if name == "DEPTHWISE_CONV_2D":
        kernel = graph.shape(ins[1])[1:3]
        if kernel not in ([3, 3], [5, 5]) or options.strideH != options.strideW:
            return None
        if options.strideH not in (1, 2) or options.depthMultiplier not in (0, 1):
            return None
        pad = kernel[0] // 2
        return "inside" if graph.padding_of(index) == (pad,) * 4 else None
    if name == "PAD":  # Fused into the depthwise convolution it feeds.
        feeds = graph.consumers.get(outs[0], [])
        return "inside" if feeds and all(_nchw_kind(graph, c) for c in feeds) else None
    if name in _ELEMENTWISE:
        return "inside" if len(graph.shape(outs[0])) == 4 else None
    if name == "MEAN":
        axes = graph.values(ins[1])
        axes = sorted(np.frombuffer(axes.tobytes(), dtype=np.int32)) if axes is not None else []
        return "end" if len(graph.shape(ins[0])) == 4 and axes == [1, 2] else None
    return None


def xnnpack_sparse(model) -> dict:
    """Whether XNNPACK (on ARM phones) runs this file's sparse weights with sparse kernels.

    Mirrors XNNPACK's NCHW rewrite (see the module docstring) on the first subgraph.

    Args:
        model: .tflite bytes or an object with a `flatbuffer` attribute (a `ConversionResult`).

    Returns:
        A dict: `xnnpack_sparse` (bool), `reason` (str, one line), `zero_fraction` of the 1x1
        convolutions in the NCHW subgraph (None when there is none) and `nchw_ops` (ops in it).

    Example:

    >>> import keras, numpy as np, tfslim
    >>> from tfslim.litert.sparsity import xnnpack_sparse
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> xnnpack_sparse(tfslim.convert(model, quantization="none"))["xnnpack_sparse"]
    False
    """
    data = getattr(model, "flatbuffer", model)
    graph = _Graph(bytes(data))

    def result(ok, reason, zero_fraction=None, n_ops=0):
        return {
            "xnnpack_sparse": ok,
            "reason": reason,
            "zero_fraction": zero_fraction,
            "nchw_ops": n_ops,
        }

    if not any(name == "DENSIFY" for name, *_ in graph.ops):
        return result(False, "no sparse-encoded weights (XNNPACK hints sparse inference only then)")
    if any(
        graph.dtype(t) not in ("FLOAT32", "FLOAT16", "INT32")
        for name, ins, outs, _ in graph.ops
        for t in ins + outs
        if t >= 0 and name != "DENSIFY"
    ):
        return result(False, "integer tensors: XNNPACK runs sparse weights for float models only")
    starts = [i for i in range(len(graph.ops)) if _is_input_conv(graph, i)]
    if not starts:
        return result(
            False,
            "no 3x3 stride-2 convolution on 3 input channels with explicit 1-pixel padding "
            "(ZeroPadding2D(1) + padding='valid') to start an NCHW subgraph",
        )
    best = result(False, "no NCHW subgraph ends at a global average pool")
    for start in starts:
        cluster, frontier, ok, ends = {start}, list(graph.ops[start][2]), True, 0
        while frontier and ok:
            tensor = frontier.pop()
            users = graph.consumers.get(tensor, [])
            if tensor in graph.outputs or not users:
                ok = False
                break
            for user in users:
                if user in cluster:
                    continue
                kind = _nchw_kind(graph, user)
                if kind is None:
                    ok = False
                    break
                cluster.add(user)
                if kind == "end":
                    ends += 1
                else:
                    frontier.extend(graph.ops[user][2])
        if not ok or not ends:
            continue
        total = nonzero = 0
        for index in cluster:
            name, ins, _, _ = graph.ops[index]
            if name == "CONV_2D" and index != start:
                values = graph.values(ins[1])
                total += int(np.prod(graph.shape(ins[1])))
                nonzero += int(np.count_nonzero(values)) if values is not None else total
        if not total:
            continue
        zeros = 1.0 - nonzero / total
        if zeros >= _MIN_ZERO_FRACTION:
            return result(
                True,
                f"NCHW subgraph of {len(cluster)} ops, 1x1 convolutions {zeros:.0%} zeros",
                round(zeros, 4),
                len(cluster),
            )
        best = result(
            False,
            f"1x1 convolutions of the NCHW subgraph hold {zeros:.0%} zeros (XNNPACK needs >= 67%)",
            round(zeros, 4),
            len(cluster),
        )
    return best


# A model this sparse was pruned on purpose (trained models hold almost no exact zeros).
_PRUNED_MIN = 0.3
MICRO_FLASH_NOTE = (
    "Zero weights save no microcontroller flash: TFLite Micro stores tensors dense, and the "
    "tflite-micro package compresses only with look-up tables (its pruning and Huffman "
    "compressors are 'not yet implemented', tflite_micro/tensorflow/lite/micro/compression/"
    "pruning.py and huffman.py); flash shrinks with channel pruning "
    "(tfslim.callbacks.ChannelPruning) or clustering + LUT compression, and gzip_bytes is an "
    "over-the-air update size, not flash."
)
INTEGER_SPARSE_NOTE = (
    "Sparse integer weights: LiteRT's default Interpreter (XNNPACK) cannot allocate this file; "
    f"it runs only with builtin kernels, at {SPARSE_INT8_COST} with XNNPACK."
)


def report_entries(data: bytes, report: dict) -> dict:
    """`xnnpack_sparse` and one-line `notes` for `tfslim.inspect`'s report of `data`.

    Args:
        data: the .tflite bytes.
        report: the report so far (needs `sparsity` and `sparse_tensors`).
    """
    notes = []
    if report.get("sparsity", 0.0) >= _PRUNED_MIN:
        notes.append(MICRO_FLASH_NOTE)
    try:
        graph = _Graph(bytes(data))
        integer = any(
            name == "DENSIFY" and graph.dtype(ins[0]) in ("INT8", "UINT8", "INT4")
            for name, ins, _, _ in graph.ops
        )
        check = xnnpack_sparse(data)
    except (AttributeError, IndexError, KeyError, TypeError, ValueError) as e:
        # An unusual but valid file (inspect has verified the flatbuffer already).
        integer = False
        check = {"xnnpack_sparse": False, "reason": f"not analysed ({type(e).__name__})"}
    if integer:
        notes.append(INTEGER_SPARSE_NOTE)
    elif report.get("sparse_tensors"):
        if check["xnnpack_sparse"]:
            notes.append(f"XNNPACK runs the sparse weights with sparse kernels: {check['reason']}.")
        else:
            notes.append(
                "XNNPACK unpacks the sparse weights when the interpreter is created and runs "
                f"dense kernels ({check['reason']})."
            )
    return {"xnnpack_sparse": check["xnnpack_sparse"], "notes": notes}
