"""Which TFLite tensor holds which Keras layer's output: the matching behind
`tfslim.quantization_report`.

Tensors are matched to Keras layers by the layer names in tensor names (the converter names
a fused op after every layer it absorbed, `model/conv_1/Relu;model/conv_1/convolution`, with
TensorFlow's `_N` name-scope suffixes); a tensor belongs to the latest of the layers it
names. A model output with no name is the Keras output at its position. A layer whose name
appears nowhere is matched by shape and graph order to an unnamed tensor between its
neighbours' tensors, and says so; a QAT activation quantizer never is (it rounds its
producer's output, whose tensor it shares). A batch normalization after a linear convolution
or Dense layer is folded into it by the converter: their shared tensor is reported under the
batch normalization, with the convolution listed as fused. Every layer without a tensor of its own
(fused, folded, identity at inference) is listed with the reason.

Walking a functional graph's operation nodes needs Keras internals (a tensor's history, an
operation's inbound nodes); `tfslim._keras_graph` holds them, so a Keras upgrade breaks that
module alone. This module imports NumPy, tfslim's flatbuffer reader and `_keras_graph` (which
loads Keras only when first asked to); never TensorFlow or Keras itself.
"""

import dataclasses
import re

import numpy as np

from tfslim import _keras_graph
from tfslim.litert import flatbuffer

__all__ = ["KerasGraph", "Row", "TfliteGraph", "boundaries", "match", "rounded"]

# Layers that compute nothing at inference: their output is their input's tensor.
_IDENTITY = frozenset(
    {
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
    }
)
# Layers the converter folds a following batch normalization into, when they are linear.
_FOLDS_BN = frozenset(
    {
        "Conv1D",
        "Conv2D",
        "Conv3D",
        "DepthwiseConv1D",
        "DepthwiseConv2D",
        "SeparableConv1D",
        "SeparableConv2D",
        "Conv2DTranspose",
        "Dense",
    }
)
# Ops that only re-scale a tensor (requantization): never a layer's own computation.
_REQUANTIZE = frozenset({"QUANTIZE", "DEQUANTIZE"})
# QAT layers that only round their input onto an int8 grid: in the int8 file that grid is the
# scale of their producer's tensor, so they have no op of their own. Pairing one with a tensor
# by shape would give it the next op's output (at a hard sigmoid `relu6(x + 3) * (1 / 6)` the
# quantizer after ReLU6 took the MUL's tensor, a 6x false alarm).
_QUANTIZERS = frozenset({"ActivationQuantizer", "RoundToInputGrid"})


class KerasGraph:
    """The Keras model's operations in topological order, with producers and consumers.

    The graph is read back from the model's outputs through each tensor's history (the
    node that made it), not from `layer.output`: a layer called in several graphs (a
    reloaded Sequential is built more than once) has one node per call, and only these
    belong to this model.
    """

    def __init__(self, model):
        self.model = model
        self.ops, self.tensor, self.producers = _walk(model.outputs)
        inputs = [op for op in self.ops if self.is_input(op)]
        if len(inputs) != 1:
            raise ValueError(
                "Invalid value for argument `model`. Expected a model with one input. "
                f"Received: model {model.name!r} with {len(inputs)} inputs"
            )
        self.input = self.tensor[id(inputs[0])]
        self.input_shape = tuple(int(d) for d in self.input.shape[1:] if d is not None)
        if len(self.input_shape) != len(self.input.shape) - 1:
            raise ValueError(
                "Invalid value for argument `model`. Expected an input shape known apart from "
                f"the batch axis. Received: input shape {tuple(self.input.shape)}"
            )
        self.position = {id(op): i for i, op in enumerate(self.ops)}
        self.consumers = {id(op): [] for op in self.ops}
        for op in self.ops:
            for p in self.producers[id(op)]:
                self.consumers[id(p)].append(op)
        self.output_ops = [_keras_graph.producer(t) for t in model.outputs]

    @staticmethod
    def is_input(op) -> bool:
        return type(op).__name__ == "InputLayer"

    def sample_shape(self, op) -> "tuple | None":
        output = self.tensor[id(op)]
        if output is None:  # Several outputs: no single tensor to compare.
            return None
        return tuple(output.shape[1:])


def _walk(outputs):
    """(ops in topological order, op id -> its output KerasTensor or None when it has
    several, op id -> producer ops), walking back from `outputs` through the nodes that
    made each tensor."""
    ops, tensor, producers = [], {}, {}
    stack = [(t, False) for t in reversed(list(outputs))]
    while stack:
        t, expanded = stack.pop()
        op, node = _keras_graph.producing_node(t)
        if id(op) in tensor and not expanded:
            continue
        if not expanded:
            tensor[id(op)] = None  # Visiting: its inputs go first.
            stack.append((t, True))
            stack += [(i, False) for i in reversed(node.input_tensors)]
            continue
        outs = node.output_tensors
        tensor[id(op)] = outs[0] if len(outs) == 1 else None
        found = []
        for i in node.input_tensors:
            producer = _keras_graph.producer(i)
            if producer not in found:
                found.append(producer)
        producers[id(op)] = found
        ops.append(op)
    return ops, tensor, producers


class TfliteGraph:
    """Subgraph 0 of a flatbuffer: ops in execution order, tensors, their quantization."""

    def __init__(self, fb):
        sg = fb.subgraphs[0]
        self.tensors = sg.tensors
        self.inputs = [int(i) for i in (sg.inputs if sg.inputs is not None else [])]
        self.outputs = [int(i) for i in (sg.outputs if sg.outputs is not None else [])]
        self.n_inputs = len(self.inputs)
        self.ops = []  # (op type, inputs, outputs)
        for op in sg.operators or []:
            self.ops.append(
                (
                    flatbuffer.op_name(fb, op.opcodeIndex),
                    [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0],
                    [int(i) for i in (op.outputs if op.outputs is not None else [])],
                )
            )
        self.producer = {o: k for k, (_, _, outs) in enumerate(self.ops) for o in outs}

    def name(self, index) -> str:
        name = self.tensors[index].name
        return name.decode() if isinstance(name, bytes) else str(name)

    def shape(self, index) -> tuple:
        shape = self.tensors[index].shape
        return tuple(int(d) for d in (shape if shape is not None else []))

    def sample_size(self, index) -> int:
        shape = self.shape(index)
        return int(np.prod(shape[1:])) if len(shape) > 1 else int(np.prod(shape))

    def dtype(self, index) -> str:
        return flatbuffer.type_name(self.tensors[index].type).lower()

    def quantization(self, index):
        q = self.tensors[index].quantization
        if q is None or q.scale is None or not len(q.scale):
            return None, None
        zero = q.zeroPoint if q.zeroPoint is not None else np.zeros(len(q.scale))
        return np.asarray(q.scale, np.float64), np.asarray(zero, np.float64)

    def dequantize(self, index, value: np.ndarray) -> np.ndarray:
        scale, zero = self.quantization(index)
        if scale is None or value.dtype.kind not in "iu":
            return value.astype(np.float64)
        if len(scale) > 1:  # Per-axis: broadcast along the quantized dimension.
            axis = self.tensors[index].quantization.quantizedDimension + 1
            shape = [1] * value.ndim
            shape[axis] = len(scale)
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return (value.astype(np.float64) - zero) * scale

    def mode(self) -> str:
        """The quantization mode its activations show (for a model made elsewhere)."""
        kinds = {self.dtype(outs[0]) for _, _, outs in self.ops if outs}
        if "int16" in kinds:
            return "int16x8"
        return "int8" if "int8" in kinds else "float activations"


@dataclasses.dataclass
class Row:
    op: object
    tensor: int
    match: str
    fused: list


def _scope_pattern(name: str):
    return re.compile(re.escape(name) + r"(_\d+)*")


def _name_owners(graph: KerasGraph, tfl: TfliteGraph) -> tuple[dict, set]:
    """Keras op of each TFLite op output, by the layer names in its tensor name, and the
    ids of the ops named anywhere."""
    model_scope = _scope_pattern(graph.model.name)
    by_name = {op.name: op for op in graph.ops}
    components = {}  # tensor -> layer-scope components of its name
    for _, _, outs in tfl.ops:
        for t in outs:
            found = []
            for part in tfl.name(t).split(";"):
                parts = part.split("/")
                if len(parts) > 2 and model_scope.fullmatch(parts[0]):
                    found.append(parts[1])
                elif len(parts) > 1 and not model_scope.fullmatch(parts[0]):
                    found.append(parts[0])
            components[t] = found
    scopes = {c for found in components.values() for c in found}
    resolved = _resolve_scopes(scopes, by_name)
    owners = {}
    for t, found in components.items():
        ops = [resolved[c] for c in found if c in resolved]
        # A quantizer named beside its producer rounds the producer's values: the producer
        # owns the tensor.
        ops = [op for op in ops if type(op).__name__ not in _QUANTIZERS] or ops
        if ops:
            owners[t] = max(ops, key=lambda op: graph.position[id(op)])
    return owners, {id(op) for op in resolved.values()}


def _resolve_scopes(scopes, by_name) -> dict:
    """Name scope (`conv_1`, `conv_1_2`) -> Keras op, each op claimed by one scope.

    TensorFlow suffixes repeated name scopes with `_N`, so `conv_1` may be layer `conv` or
    layer `conv_1`. Scopes with one candidate claim it first; the rest prefer the
    suffixed reading, which is what Keras exports produce.
    """
    candidates = {}
    for scope in scopes:
        options = [
            name
            for name in by_name
            if scope == name or re.fullmatch(re.escape(name) + r"_\d+", scope)
        ]
        if options:
            candidates[scope] = options
    resolved, claimed = {}, set()
    changed = True
    while changed:
        changed = False
        for scope, options in candidates.items():
            left = [n for n in options if n not in claimed]
            if scope not in resolved and len(left) == 1:
                resolved[scope] = left[0]
                claimed.add(left[0])
                changed = True
    for scope in sorted(candidates, key=len):
        if scope in resolved:
            continue
        left = sorted((n for n in candidates[scope] if n not in claimed), key=len)
        if left:
            resolved[scope] = left[0]  # The shortest name: `scope` is it plus a suffix.
            claimed.add(left[0])
    return {scope: by_name[name] for scope, name in resolved.items()}


def match(graph: KerasGraph, tfl: TfliteGraph):
    """Keras op id -> Row (its tensor), and the unmatched layers with reasons."""
    owners, named = _name_owners(graph, tfl)
    # The model's outputs: a trailing DEQUANTIZE's int8 source is the compared tensor.
    outputs = []
    for t in tfl.outputs:
        k = tfl.producer.get(t)
        if k is not None and tfl.ops[k][0] == "DEQUANTIZE":
            t = tfl.ops[k][1][0]
        outputs.append(t)
    origin = {t: "name" for t in owners}
    for t, op in zip(outputs, graph.output_ops, strict=False):
        if t not in owners:
            owners[t], origin[t] = op, "model output"
    rows = {}
    for _, _, outs in tfl.ops:  # Later ops overwrite: a layer's last tensor.
        for t in outs:
            op = owners.get(t)
            shape = None if op is None else graph.sample_shape(op)
            if shape is not None and tfl.sample_size(t) == int(np.prod(shape)):
                rows[id(op)] = Row(op, t, origin[t], [])
    # The model input: the tensor the first ops see (its QUANTIZE output, if any).
    input_op = _keras_graph.producer(graph.input)
    t_in = tfl.inputs[0]
    for kind, ins, outs in tfl.ops:
        if kind == "QUANTIZE" and ins and ins[0] == t_in and outs[0] not in owners:
            t_in = outs[0]
            break
    rows[id(input_op)] = Row(input_op, t_in, "model input", [])
    unmatched = {}
    _fold_batch_norms(graph, rows, named, unmatched)
    _fallback(graph, tfl, rows, named, owners)
    fused_into = {}
    for t, op in owners.items():
        for part in _named_ops(graph, tfl, t, owners):
            if id(part) not in rows:
                fused_into.setdefault(id(part), op)
    for op in graph.ops:
        if id(op) in rows or id(op) in unmatched:
            continue
        cls = type(op).__name__
        if id(op) in fused_into:
            into = fused_into[id(op)]
            reason = f"fused into {into.name}'s op (its own output is not materialized)"
            if id(into) in rows:
                rows[id(into)].fused.append(op.name)
        elif cls in _IDENTITY:
            reason = "identity at inference: no op of its own"
        elif cls in _QUANTIZERS and graph.producers[id(op)]:
            # RoundToInputGrid's first input is the values it rounds, the second their source.
            source = graph.producers[id(op)][0].name
            reason = (
                f"rounds {source}'s output onto its int8 grid: no op of its own (the int8 "
                f"tensor is {source}'s)"
            )
        elif cls in ("Flatten", "Reshape") and _reshape_of(graph, rows, op):
            source = graph.producers[id(op)][0].name
            reason = f"a reshape the converter dropped: the same values as {source}'s tensor"
        elif graph.sample_shape(op) is None:
            reason = "several outputs: no single tensor to compare"
        elif id(op) in named:
            reason = "the tensors carrying its name have another shape"
        else:
            reason = (
                "no TFLite tensor carries its name, and none of its shape lies between its "
                "neighbours' tensors (folded into a neighbouring op)"
            )
        unmatched[id(op)] = {"name": op.name, "class_name": cls, "reason": reason}
    ordered = [unmatched[id(op)] for op in graph.ops if id(op) in unmatched]
    return rows, ordered


def _reshape_of(graph, rows, op) -> bool:
    """Whether `op` only reshapes a matched op's output (same number of values)."""
    producers = graph.producers[id(op)]
    if len(producers) != 1 or id(producers[0]) not in rows:
        return False
    shapes = graph.sample_shape(op), graph.sample_shape(producers[0])
    return None not in shapes and int(np.prod(shapes[0])) == int(np.prod(shapes[1]))


def _named_ops(graph, tfl, t, owners) -> list:
    """Every Keras op named in tensor `t`'s name (not only its owner)."""
    ops = []
    for op in graph.ops:
        scope = _scope_pattern(op.name)
        if any(scope.fullmatch(c) for part in tfl.name(t).split(";") for c in part.split("/")):
            ops.append(op)
    return ops


def _fold_batch_norms(graph, rows, named, unmatched) -> None:
    """A batch norm after a linear conv or Dense: the converter folds it into their op, so
    the op's tensor is the batch norm's output."""
    for op in graph.ops:
        if type(op).__name__ != "BatchNormalization" or id(op) in rows or id(op) in named:
            continue
        producers = graph.producers[id(op)]
        if len(producers) != 1:
            continue
        (p,) = producers
        linear = getattr(getattr(p, "activation", None), "__name__", "linear") == "linear"
        if (
            type(p).__name__ in _FOLDS_BN
            and linear
            and id(p) in rows
            and len(graph.consumers[id(p)]) == 1
            and graph.sample_shape(op) == graph.sample_shape(p)
        ):
            row = rows.pop(id(p))
            rows[id(op)] = Row(op, row.tensor, row.match, [*row.fused, p.name])
            unmatched[id(p)] = {
                "name": p.name,
                "class_name": type(p).__name__,
                "reason": f"{op.name} is folded into it: reported as {op.name}",
            }


def _fallback(graph, tfl, rows, named, owners) -> None:
    """Layers whose name appears nowhere: an unnamed tensor of their shape between the
    tensors of their neighbours, in graph order."""
    op_of = {t: k for k, (_, _, outs) in enumerate(tfl.ops) for t in outs}
    taken = set(owners) | {row.tensor for row in rows.values()}

    def anchor(op, direction, seen):
        """Op indices of the nearest matched ops up (-1) or down (+1) the graph."""
        found = []
        links = graph.producers if direction < 0 else graph.consumers
        for other in links[id(op)]:
            if id(other) in seen:
                continue
            seen.add(id(other))
            if id(other) in rows:
                found.append(op_of.get(rows[id(other)].tensor, -1))
            else:
                found += anchor(other, direction, seen)
        return found

    for op in graph.ops:
        cls = type(op).__name__
        shape = graph.sample_shape(op)
        if id(op) in rows or id(op) in named or cls in _IDENTITY | _QUANTIZERS or shape is None:
            continue
        if cls == "BatchNormalization":
            continue  # Folded into a neighbour when its name is missing.
        lo = max(anchor(op, -1, set()), default=-1)
        hi = min(anchor(op, 1, set()), default=len(tfl.ops))
        size = int(np.prod(shape))
        for k in range(lo + 1, hi):
            kind, _, outs = tfl.ops[k]
            t = outs[0] if outs else None
            if t is None or t in taken or kind in _REQUANTIZE or t in tfl.outputs:
                continue
            if tfl.sample_size(t) == size:
                rows[id(op)] = Row(op, t, "shape+order", [])
                taken.add(t)
                break


def rounded(graph, op):
    """The QAT quantizer that rounds `op`'s output onto the int8 grid of `op`'s tensor (the
    value the int8 op's output stands for), or `op` itself when it rounds its own."""
    for c in graph.consumers[id(op)]:
        if type(c).__name__ in _QUANTIZERS and graph.producers[id(c)][:1] == [op]:
            return c
    return op


def boundaries(graph, rows, op) -> list:
    """The matched ops whose tensors feed `op`'s segment (itself and unmatched ops above)."""
    found, stack, seen = [], list(graph.producers[id(op)]), set()
    while stack:
        p = stack.pop()
        if id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in rows:
            found.append(p)
        else:
            stack += graph.producers[id(p)]
    return sorted(found, key=lambda p: graph.position[id(p)])
