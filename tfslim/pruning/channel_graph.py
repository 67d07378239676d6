"""The channel-dependency graph of a Sequential or Functional Keras 3 model.

Output channels that must be removed together form a *group*: the filters of every layer that
writes the same channel space. A residual `Add` (or `Multiply`, `Subtract`, `Maximum`,
`Minimum`, `Average`) joins the spaces of its inputs, so both branches lose the same channels;
a depthwise convolution, batch normalization, activation, pooling or padding keeps the space of
its input (and its per-channel weights are sliced with it); squeeze-and-excite is the
`Multiply` of a feature map with its gate, so the gate's last convolution joins the feature
map's group; `Concatenate` on the channel axis lays its inputs' spaces side by side; `Flatten`
repeats the channels once per pixel (channel fastest, as Keras lays it out), so the next
`Dense` loses the matching rows. Anything else (a `Reshape`, an unknown layer or op, a
nested model, the model's outputs) is a barrier: the channels flowing into it stay.

A pruned channel is exactly zero at every tensor of its group only when each layer that writes
it outputs zero for it; a tensor whose channel is not zero for a zero input (after a sigmoid, or
`x + 3`) may only meet the rest of the network through a `Multiply` (the gate of
squeeze-and-excite); otherwise its group is frozen too.

The graph walk reads each operation's call nodes through `_keras_graph.call_nodes` (Keras has
no public API for the nodes of a functional graph).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from tfslim import _keras_graph
from tfslim.pruning import policy

# Layers whose output channel c depends only on input channel c.
_PASS_THROUGH = (
    keras.layers.BatchNormalization,
    keras.layers.ReLU,
    keras.layers.LeakyReLU,
    keras.layers.ELU,
    keras.layers.PReLU,
    keras.layers.Activation,
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.MaxPooling1D,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling1D,
    keras.layers.AveragePooling2D,
    keras.layers.ZeroPadding1D,
    keras.layers.ZeroPadding2D,
    keras.layers.Cropping1D,
    keras.layers.Cropping2D,
    keras.layers.UpSampling1D,
    keras.layers.UpSampling2D,
    keras.layers.Identity,
)
_GLOBAL_POOLING = (
    keras.layers.GlobalAveragePooling1D,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling1D,
    keras.layers.GlobalMaxPooling2D,
)
_MERGE = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Maximum,
    keras.layers.Minimum,
    keras.layers.Average,
)
_CONVS = (keras.layers.Conv1D, keras.layers.Conv2D)
_DEPTHWISE = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)
_OP_MERGE = ("Add", "Subtract", "Multiply", "Maximum", "Minimum")
_OP_UNARY_ZERO = ("Relu", "Relu6", "Tanh", "Silu", "HardSilu", "Abs", "Negative", "Square")


@dataclasses.dataclass
class Space:
    """One set of channels written together. `frozen` spaces keep all their channels."""

    id: int
    size: int
    sources: list = dataclasses.field(default_factory=list)  # layers whose filters write it
    frozen: bool = False


@dataclasses.dataclass(frozen=True)
class Layout:
    """A tensor's last axis: spaces side by side, repeated `repeat` times (channel fastest)."""

    spaces: tuple[int, ...]
    repeat: int = 1
    zero_preserving: bool = True


class ChannelGraph:
    """Groups of coupled output channels of `model`, and how each layer's weights index them.

    Args:
        model: a Sequential or Functional Keras 3 model (built).
    """

    def __init__(self, model):
        if isinstance(model, keras.Sequential):
            graph = getattr(model, "_functional", None)
            if graph is None:
                raise ValueError(
                    f"Invalid value for argument `model`: Sequential model '{model.name}' is not "
                    "built. Build it (e.g. with `keras.Input`) before channel pruning."
                )
        elif policy.is_graph_model(model):
            graph = model
        else:
            raise ValueError(
                f"Invalid value for argument `model`: '{model.name}' is a subclassed model "
                f"({type(model).__name__}); channel pruning needs a Sequential or Functional "
                "model, whose graph says which channels are coupled."
            )
        self.model = model
        self._parent: dict[int, int] = {}
        self.spaces: dict[int, Space] = {}
        self.layouts: dict[int, Layout] = {}  # id(KerasTensor) -> layout
        self.layer_io: dict[str, tuple[Layout | None, Layout | None]] = {}
        self.positions: dict[str, int | None] = {}  # output pixels of each layer's first node
        self._cost_cache: list[tuple] | None = None
        for tensor in graph.inputs:
            self.layouts[id(tensor)] = Layout((self._new(tensor.shape[-1], frozen=True),))
        for operation in graph.operations:
            for node in _keras_graph.call_nodes(operation):
                inputs = [t for t in node.input_tensors]
                if not inputs and isinstance(operation, keras.layers.InputLayer):
                    continue
                if any(id(t) not in self.layouts for t in inputs):
                    continue  # a node of another graph that shares this layer
                self._visit(operation, [self.layouts[id(t)] for t in inputs], node.outputs)
        for tensor in graph.outputs:
            self._freeze(self.layouts[id(tensor)])

    # -- union-find over spaces
    def _new(self, size, *, frozen=False, source=None) -> int:
        index = len(self._parent)
        self._parent[index] = index
        self.spaces[index] = Space(index, int(size) if size is not None else 0, frozen=frozen)
        if source is not None:
            self.spaces[index].sources.append(source)
        return index

    def find(self, index: int) -> int:
        while self._parent[index] != index:
            self._parent[index] = self._parent[self._parent[index]]
            index = self._parent[index]
        return index

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a == b:
            return
        sa, sb = self.spaces[a], self.spaces[b]
        if sa.size != sb.size:  # broadcasting a single channel: not coupled, keep both
            sa.frozen = sb.frozen = True
            return
        self._parent[b] = a
        sa.sources.extend(sb.sources)
        sa.frozen = sa.frozen or sb.frozen

    def _freeze(self, layout: Layout | None) -> None:
        if layout is not None:
            for index in layout.spaces:
                self.spaces[self.find(index)].frozen = True

    def _output(self, outputs, layout: Layout) -> None:
        for tensor in outputs:
            self.layouts[id(tensor)] = layout

    def _barrier(self, inputs, outputs) -> None:
        for layout in inputs:
            self._freeze(layout)
        for tensor in outputs:
            self.layouts[id(tensor)] = Layout((self._new(tensor.shape[-1], frozen=True),))

    def _consume(self, layout: Layout) -> None:
        """A layer mixing channels reads `layout`: its channels must be exact zeros."""
        if not layout.zero_preserving:
            self._freeze(layout)

    # -- the rules
    def _visit(self, op, inputs: list[Layout], outputs) -> None:
        name = op.name
        if name not in self.positions and outputs:
            spatial = tuple(outputs[0].shape[1:-1])
            known = all(d is not None for d in spatial)
            self.positions[name] = int(np.prod(spatial)) if known else None
        single = inputs[0] if len(inputs) == 1 else None
        if isinstance(op, keras.Model) or len(outputs) != 1:
            self.layer_io[name] = (None, None)
            return self._barrier(inputs, outputs)
        out = outputs[0]
        if isinstance(op, _DEPTHWISE):
            if op.depth_multiplier != 1 or single is None:
                self.layer_io[name] = (None, None)
                return self._barrier(inputs, outputs)
            layout = dataclasses.replace(single, zero_preserving=_zero_at_zero(op.activation))
            self.layer_io[name] = (single, layout)
            return self._output(outputs, layout)
        if (isinstance(op, _CONVS) and op.groups == 1 and op.data_format == "channels_last") or (
            isinstance(op, keras.layers.Dense) and len(out.shape) == 2
        ):
            self._consume(single)
            space = self._new(out.shape[-1], source=op)
            layout = Layout((space,), 1, _zero_at_zero(op.activation))
            self.layer_io[name] = (single, layout)
            return self._output(outputs, layout)
        if isinstance(op, _PASS_THROUGH) and single is not None:
            zp = single.zero_preserving
            if isinstance(op, keras.layers.BatchNormalization):
                if op.axis not in (-1, len(out.shape) - 1):
                    self.layer_io[name] = (None, None)
                    return self._barrier(inputs, outputs)
            elif isinstance(op, keras.layers.Activation):
                zp = zp and _zero_at_zero(op.activation)
            elif isinstance(op, keras.layers.PReLU):
                self.layer_io[name] = (None, None)
                return self._barrier(inputs, outputs)
            layout = dataclasses.replace(single, zero_preserving=zp)
            self.layer_io[name] = (single, layout)
            return self._output(outputs, layout)
        if isinstance(op, _GLOBAL_POOLING) and single is not None:
            layout = dataclasses.replace(single, repeat=1)
            self.layer_io[name] = (single, layout)
            return self._output(outputs, layout)
        if isinstance(op, keras.layers.Flatten) and single is not None:
            in_shape = [d for d in _keras_graph.call_nodes(op)[0].input_tensors[0].shape[1:-1]]
            if any(d is None for d in in_shape):
                return self._barrier(inputs, outputs)
            layout = dataclasses.replace(single, repeat=single.repeat * int(np.prod(in_shape)))
            self.layer_io[name] = (single, layout)
            return self._output(outputs, layout)
        merge = isinstance(op, _MERGE) or (
            _keras_graph.is_ops_operation(op) and type(op).__name__ in _OP_MERGE
        )
        if merge and len(inputs) >= 2:
            first = inputs[0]
            if any(len(x.spaces) != len(first.spaces) or x.repeat != first.repeat for x in inputs):
                return self._barrier(inputs, outputs)
            for other in inputs[1:]:
                for a, b in zip(first.spaces, other.spaces, strict=True):
                    self._union(a, b)
            multiply = type(op).__name__ == "Multiply"
            zps = [x.zero_preserving for x in inputs]
            layout = dataclasses.replace(first, zero_preserving=any(zps) if multiply else all(zps))
            self.layer_io[name] = (first, layout)
            return self._output(outputs, layout)
        if _keras_graph.is_ops_operation(op) and single is not None:
            # A one-tensor op: `x * 0.5`, `x + 3.0`, `ops.relu(x)`.
            kind = type(op).__name__
            if kind in _OP_MERGE or kind in _OP_UNARY_ZERO or kind in ("Divide", "TrueDivide"):
                zp = single.zero_preserving and kind in ("Multiply", "Divide", "TrueDivide")
                zp = zp or (single.zero_preserving and kind in _OP_UNARY_ZERO)
                layout = dataclasses.replace(single, zero_preserving=zp)
                self.layer_io[name] = (single, layout)
                return self._output(outputs, layout)
        channel_concat = isinstance(op, keras.layers.Concatenate) and op.axis in (
            -1,
            len(out.shape) - 1,
        )
        if channel_concat and all(x.repeat == 1 for x in inputs):
            spaces = tuple(s for x in inputs for s in x.spaces)
            layout = Layout(spaces, 1, all(x.zero_preserving for x in inputs))
            self.layer_io[name] = (None, layout)
            return self._output(outputs, layout)
        self.layer_io[name] = (None, None)
        return self._barrier(inputs, outputs)

    # -- queries
    def groups(self) -> list[Space]:
        """Prunable groups: unfrozen root spaces written by at least one filter layer."""
        roots = {self.find(i) for i in self.spaces}
        return [
            self.spaces[r]
            for r in sorted(roots)
            if not self.spaces[r].frozen and self.spaces[r].sources and self.spaces[r].size > 1
        ]

    def indices(self, layout: Layout, keep: dict[int, np.ndarray]) -> np.ndarray | None:
        """Kept positions of a tensor with `layout` along its last axis (None: all kept)."""
        if layout is None:
            return None
        parts, offset, changed = [], 0, False
        for space in layout.spaces:
            root = self.find(space)
            size = self.spaces[root].size
            kept = keep.get(root)
            if kept is None:
                kept = np.arange(size)
            else:
                changed = True
            parts.append(kept + offset)
            offset += size
        if not changed:
            return None
        channels = np.concatenate(parts)
        if layout.repeat == 1:
            return channels
        return (np.arange(layout.repeat)[:, None] * offset + channels[None, :]).reshape(-1)

    def width(self, layout: Layout, kept: dict[int, int]) -> int:
        """Channels of a tensor with `layout` when space root `r` keeps `kept[r]` of them."""
        total = 0
        for space in layout.spaces:
            root = self.find(space)
            total += kept.get(root, self.spaces[root].size)
        return total * layout.repeat

    def cost(self, kept: dict[int, int] | None = None) -> dict:
        """Params, MACs and estimated int8 weight bytes, counted from the layers' shapes.

        With `kept` (space root -> channels kept), the figures of the model those channels
        leave. Convolutions, depthwise convolutions and `Dense` count
        `kernel pixels x in x out x output pixels` MACs; other layers none (nested models
        count their parameters only). Int8 bytes: one per kernel weight, four per bias
        (int32), batch normalization folded into the layer before it (not counted).
        `macs` is None when a layer's output size is unknown (an input of any size).
        `ops` lists what a latency model costs, one entry per layer with MACs (its TFLite op
        type, `macs`, `output_elements`) and per element-wise merge or pooling layer (`ADD`,
        `MUL`, `SUB`, pooling and `MEAN` with `input_elements`); None with `macs`.
        """
        kept = kept or {}
        params = macs = int8 = 0
        ops = []
        for layer, shapes, in_layout, out_layout, elementwise in self._cost_layers():
            kernel = shapes.get("kernel", shapes.get("depthwise_kernel"))
            positions = self.positions.get(layer.name, 1)
            depthwise = isinstance(layer, _DEPTHWISE)
            if kernel is None or isinstance(layer, keras.Model) or len(shapes) > 2:
                if isinstance(layer, keras.layers.BatchNormalization) and out_layout is not None:
                    params += len(shapes) * self.width(out_layout, kept)
                else:
                    params += sum(int(np.prod(shape)) for shape in shapes.values())
                op = self._elementwise_op(elementwise, in_layout, out_layout, kept)
                if op is not None:
                    ops.append(op)
                continue
            if depthwise:
                c_in, c_out = 1, kernel[-2] * kernel[-1]
                if out_layout is not None:
                    c_out = self.width(out_layout, kept)
            else:
                c_in, c_out = kernel[-2], kernel[-1]
                if in_layout is not None:
                    c_in = self.width(in_layout, kept)
                if out_layout is not None:
                    c_out = self.width(out_layout, kept)
            pixels = int(np.prod(kernel[:-2]))
            n_kernel = pixels * c_in * c_out
            n_bias = c_out if "bias" in shapes else 0
            params += n_kernel + n_bias
            int8 += n_kernel + 4 * n_bias
            if macs is not None:
                macs = None if positions is None else macs + n_kernel * positions
            if positions is not None:
                ops.append(
                    {
                        "op": _op_type(layer),
                        "macs": n_kernel * positions,
                        "output_elements": c_out * positions,
                    }
                )
        return {
            "params": params,
            "macs": macs,
            "int8_bytes": int8,
            "ops": None if macs is None else ops,
        }

    def _cost_layers(self) -> list[tuple]:
        """Per layer, what `cost` reads: (layer, weight shapes, layouts, merge/pool facts).

        Read once: a footprint plan counts the model for many sets of kept channels, and
        reading Keras layers' weights each time would dominate.
        """
        if self._cost_cache is None:
            self._cost_cache = []
            for layer in _keras_graph.sublayers(self.model, recursive=False):
                shapes = {v.name: tuple(v.shape) for v in layer.weights}
                in_layout, out_layout = self.layer_io.get(layer.name, (None, None))
                self._cost_cache.append(
                    (layer, shapes, in_layout, out_layout, self._elementwise(layer))
                )
        return self._cost_cache

    def _elementwise(self, layer) -> tuple | None:
        """(TFLite op, output pixels, input pixels) of a merge or pooling layer, else None."""
        kind = next((k for cls, k in _ELEMENTWISE_OPS if isinstance(layer, cls)), None)
        positions = self.positions.get(layer.name)
        if kind is None or positions is None:
            return None
        if kind in ("ADD", "MUL", "SUB"):
            return kind, positions, None
        spatial = tuple(_keras_graph.call_nodes(layer)[0].input_tensors[0].shape[1:-1])
        if any(d is None for d in spatial):
            return None
        return kind, positions, int(np.prod(spatial))

    def _elementwise_op(self, elementwise, in_layout, out_layout, kept) -> dict | None:
        """The latency-model entry of a merge or pooling layer (None for other layers)."""
        if elementwise is None or out_layout is None:
            return None
        kind, positions, in_positions = elementwise
        if in_positions is None:
            return {
                "op": kind,
                "macs": 0,
                "output_elements": positions * self.width(out_layout, kept),
            }
        if in_layout is None:
            return None
        width = self.width(in_layout, kept)
        return {
            "op": kind,
            "macs": 0,
            "input_elements": in_positions * width,
            "output_elements": positions * width,
        }


_ELEMENTWISE_OPS = (
    (keras.layers.Add, "ADD"),
    (keras.layers.Multiply, "MUL"),
    (keras.layers.Subtract, "SUB"),
    ((keras.layers.MaxPooling1D, keras.layers.MaxPooling2D), "MAX_POOL_2D"),
    ((keras.layers.AveragePooling1D, keras.layers.AveragePooling2D), "AVERAGE_POOL_2D"),
    ((keras.layers.GlobalAveragePooling1D, keras.layers.GlobalAveragePooling2D), "MEAN"),
)


def _op_type(layer) -> str:
    """The TFLite op a layer with a kernel converts to."""
    if isinstance(layer, _DEPTHWISE):
        return "DEPTHWISE_CONV_2D"
    if isinstance(layer, keras.layers.Dense):
        return "FULLY_CONNECTED"
    if isinstance(layer, keras.layers.Conv2DTranspose):
        return "TRANSPOSE_CONV"
    return "CONV_2D"


def _zero_at_zero(activation) -> bool:
    """Whether `activation(0) == 0` (ReLU, ReLU6, swish, tanh...; not sigmoid)."""
    if activation is None:
        return True
    try:
        # Two channels: an axis of one would make softmax warn (and trivially return 1).
        value = keras.ops.convert_to_numpy(activation(keras.ops.zeros((1, 2))))
    except Exception:
        return False
    return bool(np.all(value == 0))


def group_weights(graph: ChannelGraph, group: Space) -> list[tuple]:
    """(variable, axis) of every per-output-channel weight that writes `group`'s channels.

    Filter layers' kernels and biases, and the depthwise convolutions' and batch
    normalizations' trainable per-channel weights along the tensors of the group.
    """
    found = []
    root = group.id
    for layer in _keras_graph.sublayers(graph.model, recursive=False):
        _, out = graph.layer_io.get(layer.name, (None, None))
        if out is None or len(out.spaces) != 1 or graph.find(out.spaces[0]) != root:
            continue
        if out.repeat != 1:
            continue
        for variable in layer.trainable_weights:
            if variable.name in ("kernel", "depthwise_kernel"):
                # A depthwise kernel is (kh, kw, channels, 1): its channels are axis -2.
                axis = -2 if isinstance(layer, _DEPTHWISE) else -1
                found.append((layer, variable, axis))
            elif len(variable.shape) == 1 and variable.shape[0] == group.size:
                found.append((layer, variable, 0))
    return found
