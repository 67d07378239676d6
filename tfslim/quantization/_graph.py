"""The Keras internals tfslim's QAT rewrite needs, in one place.

`keras.models.clone_model(clone_function=, call_function=)` rebuilds a graph one call at a time,
but the rewrite must look ahead (a convolution absorbs the batch norm and activation that
consume it, an `Add` fuses a following ReLU) and replace operation nodes (`x + 3.0`) that
`clone_function` never sees as layers. That needs the graph's nodes in order, each node's
consumers and its arguments, which Keras keeps private: `_nodes_by_depth`,
`node.arguments.fill_in`, `_inputs_struct` / `_outputs_struct` and the `Functional` class.
Everything else in `tfslim.quantization` uses public Keras, so a Keras upgrade that moves
these breaks this file only.
"""

import keras

from tfslim.errors import InvalidModelError

try:
    from keras.src.models.functional import Functional
except ImportError:  # pragma: no cover - older layout.
    from keras.src.models import Functional


def functional_graph(model):
    """Returns the Functional graph behind `model` (a built Sequential's inner graph)."""
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise InvalidModelError(
                "Invalid value for argument `model`. Expected a built Sequential model (start "
                "it with keras.Input(shape) or call it on data first). Received: unbuilt "
                f"Sequential model {model.name!r}"
            )
        return model._functional
    if not isinstance(model, Functional):
        raise InvalidModelError(
            "Invalid value for argument `model`. Expected a Sequential or Functional model: a "
            "subclassed model has no layer graph to rewrite for quantization-aware training. "
            f"Received: model={model.name!r} of class {type(model).__name__}. Rebuild it with "
            "the functional API (keras.Model(inputs, outputs))."
        )
    return model


def nodes(graph) -> list:
    """The graph's operation nodes (layer calls and `keras.ops` calls), inputs first."""
    ordered = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        ordered.extend(n for n in graph._nodes_by_depth[depth] if n.operation and not n.is_input)
    return ordered


def operations(graph) -> list:
    """Every operation (layer or `keras.ops` operation) called in the graph."""
    return list(graph.operations)


def input_name(tensor) -> str:
    """The name of the `InputLayer` that produces a model input tensor."""
    return tensor._keras_history.operation.name


def node_arguments(node, tensors: dict):
    """The node's (args, kwargs) with its input tensors replaced via `{id(tensor): new}`."""
    return node.arguments.fill_in(tensors)


def producer(tensor):
    """The operation that produced a symbolic tensor."""
    return tensor._keras_history.operation


def pack_outputs(graph, values: list):
    """`values` (one per graph output) in the structure of the graph's outputs."""
    return keras.tree.pack_sequence_as(graph._outputs_struct, values)


def single_input(graph) -> bool:
    """Whether the graph takes one bare tensor (not a list or dict of inputs)."""
    return len(graph.inputs) == 1 and not isinstance(graph._inputs_struct, (list, dict))
