"""Batch-norm folding: a convolution or Dense layer followed by a `BatchNormalization` becomes
one layer with the batch norm's inference-mode affine transform in its kernel and bias.

It is the first step of `tfslim.equalize_model` (cross-layer equalization and bias correction
work on folded layers), and the graph facts and weight helpers here are the ones those steps
use. The rewrite walks a Functional graph's nodes through `tfslim._keras_graph`, which holds
the Keras internals that needs.
"""

from typing import TYPE_CHECKING

import numpy as np

from tfslim import _keras_graph
from tfslim.errors import UnsupportedOpError

if TYPE_CHECKING:
    import keras

__all__ = ["fold_batch_norm"]

_WEIGHTED = ("Conv1D", "Conv2D", "DepthwiseConv1D", "DepthwiseConv2D", "Dense")
_DEPTHWISE = ("DepthwiseConv1D", "DepthwiseConv2D")


def _kind(layer) -> str:
    return type(layer).__name__


def _graph(model):
    return _keras_graph.functional_graph(
        model, purpose="to fold or equalize", error=UnsupportedOpError
    )


class _Facts:
    """Who consumes each tensor of one graph, and which operations it calls exactly once."""

    def __init__(self, graph):
        self.nodes = _keras_graph.nodes(graph)
        self.consumers = {}
        calls = {}
        for node in self.nodes:
            calls[id(node.operation)] = calls.get(id(node.operation), 0) + 1
            for tensor in node.input_tensors:
                self.consumers.setdefault(id(tensor), []).append(node)
        self.node_of = {id(n.operation): n for n in self.nodes if calls[id(n.operation)] == 1}
        self.outputs = {id(t) for t in graph.outputs}

    def next_node(self, node):
        """The single node consuming `node`'s single output, or None."""
        if id(node.operation) not in self.node_of or len(node.outputs) != 1:
            return None
        tensor = node.outputs[0]
        consumers = self.consumers.get(id(tensor), [])
        if id(tensor) in self.outputs or len(consumers) != 1:
            return None
        nxt = consumers[0]
        if id(nxt.operation) not in self.node_of or len(nxt.input_tensors) != 1:
            return None
        return nxt


def _channels_last(layer) -> bool:
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _weighted(layer) -> bool:
    return _kind(layer) in _WEIGHTED and _channels_last(layer) and getattr(layer, "groups", 1) == 1


def _activation_name(layer) -> str:
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", str(activation))


def _batch_norm_pairs(facts) -> dict:
    """{id(weighted layer): batch norm} for every batch norm that can be folded into its input."""
    pairs = {}
    for node in facts.nodes:
        layer = node.operation
        if not _weighted(layer) or _activation_name(layer) != "linear":
            continue
        nxt = facts.next_node(node)
        if nxt is None or _kind(nxt.operation) != "BatchNormalization":
            continue
        bn = nxt.operation
        if bn.axis not in (-1, len(node.outputs[0].shape) - 1):
            continue
        pairs[id(layer)] = bn
    return pairs


def _out_channels(layer, kernel: np.ndarray) -> np.ndarray:
    """The kernel viewed with output channels on the last axis (depthwise: (in, mult) flat)."""
    if _kind(layer) in _DEPTHWISE:
        return kernel.reshape(*kernel.shape[:-2], -1)
    return kernel


def _weights(layer):
    """(kernel, bias) as float64 arrays; a zero bias for a layer without one."""
    kernel = np.asarray(layer.kernel.numpy(), np.float64)
    units = _out_channels(layer, kernel).shape[-1]
    bias = layer.bias.numpy() if getattr(layer, "use_bias", False) else np.zeros(units)
    return kernel, np.asarray(bias, np.float64)


def _assign(layer, kernel, bias) -> None:
    """Writes (kernel, bias) into `layer`; the bias is dropped for a layer without one."""
    layer.kernel.assign(kernel.astype(layer.kernel.dtype))
    if getattr(layer, "use_bias", False):
        layer.bias.assign(bias.astype(layer.bias.dtype))


def _fold(layer, bn):
    """(kernel, bias) of `layer` with `bn` (inference mode) folded in."""
    kernel, bias = _weights(layer)
    channels = _out_channels(layer, kernel).shape[-1]
    gamma = bn.gamma.numpy() if bn.scale else np.ones(channels)
    beta = bn.beta.numpy() if bn.center else np.zeros(channels)
    mean, var = bn.moving_mean.numpy(), bn.moving_variance.numpy()
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, np.float64) + bn.epsilon)
    folded = (_out_channels(layer, kernel) * scale).reshape(kernel.shape)
    return folded, (bias - mean) * scale + beta


def _copy(model, *, relu6_to_relu: bool, add_bias: bool):
    """A new model with batch norms folded (and optionally ReLU6 -> ReLU, biases added)."""
    import keras

    graph = _graph(model)
    facts = _Facts(graph)
    pairs = _batch_norm_pairs(facts)
    skip = {id(bn) for bn in pairs.values()}
    made = {}  # id(old layer) -> (old layer, new layer); a shared layer stays shared.

    def new_operation(operation):
        if not isinstance(operation, keras.layers.Layer):
            return operation  # A stateless `keras.ops` operation (`x + 3.0`).
        if id(operation) in made:
            return made[id(operation)][1]
        if isinstance(operation, keras.Model):
            new = _copy(operation, relu6_to_relu=relu6_to_relu, add_bias=add_bias)
            made[id(operation)] = (operation, new)
            return new
        config = operation.get_config()
        if id(operation) in pairs or (add_bias and _weighted(operation)):
            config["use_bias"] = True
        if relu6_to_relu:
            if _kind(operation) == "ReLU" and config.get("max_value") == 6:
                config["max_value"] = None
            if config.get("activation") == "relu6":
                config["activation"] = "relu"
        new = type(operation).from_config(config)
        made[id(operation)] = (operation, new)
        return new

    new_model = _keras_graph.rebuild(graph, new_operation, skip)
    for old, new in made.values():
        if isinstance(old, keras.Model):
            continue  # Copied by its own `_copy`.
        if id(old) in pairs:
            _assign(new, *_fold(old, pairs[id(old)]))
        elif _weighted(old) and new.use_bias and not old.use_bias:
            _assign(new, *_weights(old))
        else:
            new.set_weights(old.get_weights())
    if isinstance(model, keras.Sequential):
        return keras.Sequential(new_model.layers, name=model.name)
    return new_model


def fold_batch_norm(model: "keras.Model") -> "keras.Model":
    """Folds every `BatchNormalization` that follows a convolution or Dense layer into it.

    A Conv1D / Conv2D / DepthwiseConv1D / DepthwiseConv2D / Dense layer without activation
    whose output feeds only a batch norm (on the channel axis) becomes one layer with kernel
    `W * gamma / sqrt(var + eps)` and bias `(b - mean) * gamma / sqrt(var + eps) + beta`; the
    inference-mode outputs are unchanged up to float rounding. Other batch norms stay. Nested
    Sequential and Functional models are folded too.

    Args:
        model: keras.Model. A built Sequential or Functional float model.

    Returns:
        A new model (Sequential for a Sequential input); `model` is not modified.

    Raises:
        UnsupportedOpError: for a subclassed model (no layer graph to rewrite).
    """
    return _copy(model, relu6_to_relu=False, add_bias=False)
