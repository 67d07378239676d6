"""The Keras internals tfslim's graph rewrites need, in one place.

`keras.models.clone_model(clone_function=, call_function=)` rebuilds a graph one call at a time,
but tfslim's rewrites must look ahead (a convolution absorbs the batch norm and activation that
consume it, an `Add` fuses a following ReLU, a folded batch norm disappears) and replace
operation nodes (`x + 3.0`) that `clone_function` never sees as layers. That needs the graph's
nodes in order, each node's arguments and the layer behind a symbolic tensor, which Keras keeps
private: `_nodes_by_depth`, `node.arguments.fill_in`, `_keras_history`, `_inputs_struct` /
`_outputs_struct`, a Sequential's `_functional` and the `Functional` class; the quantization
report walks back from a model's outputs through each tensor's node (`_inbound_nodes`), and the
QAT registry tells Keras's own classes from custom ones by where Keras defines them. Clustering
walks every layer inside a model (`_flatten_layers`: `model.layers` misses nested and wrapped
layers) and reads the enclosing `keras.StatelessScope` (Keras exports the class, not the lookup).
The QAT rewrite and registry, batch-norm folding and equalization, the converter's layer names,
the quantization report's layer matching, clustering and the grown models use them through this
module only, so a Keras upgrade that moves them breaks this file alone.
"""

from tfslim.errors import InvalidModelError

__all__ = [
    "call_nodes",
    "functional_class",
    "functional_graph",
    "input_name",
    "is_keras_operation",
    "is_ops_operation",
    "node_arguments",
    "nodes",
    "operations",
    "pack_outputs",
    "producer",
    "producing_node",
    "rebuild",
    "single_input",
    "stateless_scope",
    "sublayers",
    "tracks_layers",
]


def functional_class():
    """Keras's `Functional` model class (Keras exports none; imported on first use, so that
    importing this module loads no Keras: the converter's lean child processes import it)."""
    try:
        from keras.src.models.functional import Functional
    except ImportError:  # pragma: no cover - older layout.
        from keras.src.models import Functional
    return Functional


def functional_graph(model, *, purpose: str, error=InvalidModelError):
    """Returns the Functional graph behind `model` (a built Sequential's inner graph).

    Args:
        model: keras.Model. A Sequential or Functional model.
        purpose: str. What the graph is for, as the refusal of a subclassed model says it
            ("to rewrite for quantization-aware training").
        error: type. The exception class for a subclassed model. Defaults to
            `InvalidModelError`; an unbuilt Sequential always raises `InvalidModelError`.
    """
    import keras

    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise InvalidModelError(
                "Invalid value for argument `model`. Expected a built Sequential model (start "
                "it with keras.Input(shape) or call it on data first). Received: unbuilt "
                f"Sequential model {model.name!r}"
            )
        return model._functional
    if not isinstance(model, functional_class()):
        raise error(
            "Invalid value for argument `model`. Expected a Sequential or Functional model: a "
            f"subclassed model has no layer graph {purpose}. Received: model={model.name!r} of "
            f"class {type(model).__name__}. Rebuild it with the functional API "
            "(keras.Model(inputs, outputs))."
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


def producer(tensor):
    """The operation that produced a symbolic Keras 3 tensor (`None` for any other tensor,
    a tf_keras one included)."""
    return getattr(getattr(tensor, "_keras_history", None), "operation", None)


def producing_node(tensor):
    """(operation, node) of the call that produced a symbolic Keras 3 tensor.

    An operation called in several graphs (a reloaded Sequential is built more than once)
    has one node per call; this is the one behind `tensor`, so a walk back from a model's
    outputs stays inside that model.
    """
    history = tensor._keras_history
    return history.operation, history.operation._inbound_nodes[history.node_index]


def is_keras_operation(operation) -> bool:
    """Whether `operation`'s class is one of Keras's own layers or `keras.ops` operations
    (defined under `keras.src`), not a custom one."""
    return type(operation).__module__.startswith("keras.")


def call_nodes(operation) -> list:
    """The nodes of every call of `operation` (a layer or `keras.ops` operation) in the
    graphs built so far, first call first."""
    return list(operation._inbound_nodes)


def is_ops_operation(operation) -> bool:
    """Whether `operation` is a `keras.ops` call recorded in a functional graph (`x + 1`,
    `keras.ops.concatenate`, ...), not a layer."""
    return type(operation).__module__.startswith("keras.src.ops")


def sublayers(layer, *, include_self: bool = False, recursive: bool = True) -> list:
    """Every layer tracked inside `layer`, each once: nested models, a wrapper's inner layer and
    the layers those own, which `model.layers` (the top level only) misses.

    Args:
        layer: keras.Layer. A layer or model.
        include_self: bool. Whether `layer` itself comes first. Defaults to `False`.
        recursive: bool. Whether to go into the layers `layer` tracks (`False`: only the
            layers it tracks directly). Defaults to `True`.
    """
    return list(layer._flatten_layers(include_self=include_self, recursive=recursive))


def tracks_layers(obj) -> bool:
    """Whether `obj` is a Keras 3 (or tf_keras) layer or model, whose `sublayers` can be
    listed; False for a path, a flatbuffer or any other object."""
    return hasattr(obj, "_flatten_layers")


def stateless_scope():
    """The `keras.StatelessScope` in effect (one the caller or Keras's `stateless_call` opened),
    or `None` outside any."""
    from keras.src.backend.common.stateless_scope import get_stateless_scope

    return get_stateless_scope()


def input_name(tensor) -> str:
    """The name of the `InputLayer` that produces a model input tensor."""
    return producer(tensor).name


def node_arguments(node, tensors: dict):
    """The node's (args, kwargs) with its input tensors replaced via `{id(tensor): new}`."""
    return node.arguments.fill_in(tensors)


def pack_outputs(graph, values: list):
    """`values` (one per graph output) in the structure of the graph's outputs."""
    import keras

    return keras.tree.pack_sequence_as(graph._outputs_struct, values)


def single_input(graph) -> bool:
    """Whether the graph takes one bare tensor (not a list or dict of inputs)."""
    return len(graph.inputs) == 1 and not isinstance(graph._inputs_struct, (list, dict))


def rebuild(graph, new_operation, skip: set = frozenset()):
    """A new Functional model calling `new_operation(op)` for each node of `graph`.

    Nodes whose operation's id is in `skip` pass their first input through (a folded
    batch norm).
    """
    import keras

    tensors = {}
    inputs = []
    for tensor in graph.inputs:
        new = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=input_name(tensor))
        tensors[id(tensor)] = new
        inputs.append(new)
    for node in nodes(graph):
        operation = node.operation
        if id(operation) in skip:
            tensors[id(node.outputs[0])] = tensors[id(node.input_tensors[0])]
            continue
        args, kwargs = node_arguments(node, tensors)
        outputs = new_operation(operation)(*args, **kwargs)
        for old, new in zip(node.outputs, keras.tree.flatten(outputs), strict=True):
            tensors[id(old)] = new
    outputs = pack_outputs(graph, [tensors[id(t)] for t in graph.outputs])
    return keras.Model(inputs[0] if single_input(graph) else inputs, outputs, name=graph.name)
