"""`quantize_model`: turn a float Keras 3 model into a quantization-aware training model.

The model's layer graph is rebuilt node by node: an input quantizer after each model input,
weighted layers replaced by `QuantizeWrapper` (absorbing a following batch norm and activation),
range-preserving layers copied as they are and range-changing layers followed by an
`ActivationQuantizer`. Nested Functional or Sequential sub-models are rebuilt recursively and
stay nested. Weights are copied, so a trained float model starts QAT where it left off.
"""

import math
import re
from collections.abc import Callable, Iterable

import keras

from tfslim import _keras_graph as _graph
from tfslim import _model_facts
from tfslim.errors import UnsupportedOpError
from tfslim.quantization import activations as acts
from tfslim.quantization import registry, skipping
from tfslim.quantization.batch_norm import QuantizeBatchNormalization
from tfslim.quantization.quantize_activation import QuantizeActivation, QuantizePReLU
from tfslim.quantization.quantize_wrapper import QuantizeWrapper
from tfslim.quantization.quantizers import (
    ActivationQuantizer,
    RoundToInputGrid,
    check_ema_decay,
    constant_on_int8_grid,
)
from tfslim.quantization.rescaling import QuantizeRescaling, affine_of
from tfslim.quantization.transformer import (
    QuantizeEinsumDense,
    QuantizeEmbedding,
    QuantizeLayerNormalization,
    QuantizeMultiHeadAttention,
)

_TRANSFORMER_LAYERS = {
    "EinsumDense": QuantizeEinsumDense,
    "Embedding": QuantizeEmbedding,
    "LayerNormalization": QuantizeLayerNormalization,
    "MultiHeadAttention": QuantizeMultiHeadAttention,
}
# MultiHeadAttention call arguments the int8 form computes (masks and scores it does not).
_ATTENTION_ARGUMENTS = {"query", "value", "key", "training"}


def _check_model(model):
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "quantize_model needs the TensorFlow backend of Keras: its fake-quant ops must "
            "lower to the TF ops the TFLite converter turns into int8 kernels. Received: "
            f"keras.backend.backend()={keras.backend.backend()!r}. Set KERAS_BACKEND=tensorflow "
            "before importing keras."
        )
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid value for argument `model`. Expected a keras.Model (Keras 3 Sequential or "
            f"Functional) or a tf_keras model. Received: model={model!r} of type "
            f"{type(model).__name__}"
        )
    return _graph.functional_graph(model, purpose="to rewrite for quantization-aware training")


def _clone(layer, **overrides):
    config = layer.get_config()
    config.update(overrides)
    return type(layer).from_config(config)


def _clone_op(op):
    """A fresh copy of a `keras.ops` operation (they hold no state but their arguments)."""
    try:
        return type(op).from_config(op.get_config())
    except (TypeError, ValueError, NotImplementedError):
        return op


# Activations a copied Keras layer already computes with the ops the converter needs.
_COPIED_ACTIVATIONS = ("relu", "relu6", "sigmoid", "tanh", "softmax", "hard_swish")


def _grid_source(tensor):
    """The tensor of the new graph whose quantizer set `tensor`'s int8 grid: `tensor`
    itself, or the input of the ops before it that keep their input's values on its grid
    (reshapes, padding, dropout, max pooling, ...), which carry no grid mark of their own."""
    while True:
        op, node = _graph.producing_node(tensor)
        inputs = node.input_tensors if node is not None else []
        if (
            len(inputs) != 1
            or registry.role(op) != "passthrough"
            or registry.averages_between_steps(op)
        ):
            return tensor
        tensor = inputs[0]


class _Rewriter:
    def __init__(self, skip_fn, ema_decay):
        self.skip_fn = skip_fn
        self.ema_decay = ema_decay
        self.copies = []  # (new layer, old layer) pairs whose weights to copy once built.
        self.submodels = {}
        self.problems = []  # Every unsupported layer or op, reported together.

    def quantizer(self, name, fixed=None, *, nonnegative=False):
        return ActivationQuantizer(
            ema_decay=self.ema_decay, fixed_range=fixed, nonnegative=nonnegative, name=name
        )

    def rewrite(self, model, *, quantize_inputs, name):
        graph = _check_model(model)
        nodes = _graph.nodes(graph)
        consumers = {}
        for node in nodes:
            for x in node.input_tensors:
                consumers.setdefault(id(x), []).append(node)
        outputs = {id(x) for x in graph.outputs}

        def sole_consumer(tensor):
            users = consumers.get(id(tensor), [])
            if len(users) != 1 or id(tensor) in outputs or len(users[0].input_tensors) != 1:
                return None
            if self.skip_fn(users[0].operation):
                return None
            return users[0]

        def only_concatenated(tensor):
            """Whether one concatenation, quantized right after, is all that reads `tensor`."""
            users = consumers.get(id(tensor), [])
            if len(users) != 1 or id(tensor) in outputs or self.skip_fn(users[0].operation):
                return False
            op = users[0].operation
            return (
                type(op).__name__ == "Concatenate"
                and registry.role(op) == "requantize"
                and not self.fuses_relu(users[0])
            )

        self.sole_consumer = sole_consumer
        self.only_concatenated = only_concatenated
        new_inputs, tensors = [], {}
        for x in graph.inputs:
            input_name = _graph.input_name(x)
            new_x = keras.Input(batch_shape=x.shape, dtype=x.dtype, name=input_name)
            new_inputs.append(new_x)
            if quantize_inputs and "float" in str(x.dtype):
                new_x = self.quantizer(f"{input_name}_quantizer")(new_x)
            tensors[id(x)] = new_x

        absorbed = set()
        for node in nodes:
            if id(node) in absorbed:
                continue
            op = node.operation
            args, kwargs = _graph.node_arguments(node, tensors)
            out, last = self.rewrite_node(node, op, args, kwargs, absorbed)
            for x, y in zip(last.outputs, keras.tree.flatten(out), strict=True):
                tensors[id(x)] = y

        new_outputs = _graph.pack_outputs(graph, [tensors[id(x)] for x in graph.outputs])
        if _graph.single_input(graph):
            new_inputs = new_inputs[0]
        return keras.Model(new_inputs, new_outputs, name=name)

    def float_copy(self, op, args, kwargs):
        """The operation copied as it is (a skipped or unsupported one), computing in float."""
        if not registry.is_layer(op):
            return _clone_op(op)(*args, **kwargs)
        clone = _clone(op)
        self.copies.append((clone, op))
        return clone(*args, **kwargs)

    def rewrite_node(self, node, op, args, kwargs, absorbed):
        """Returns (new output, the last original node it replaces)."""
        if isinstance(op, keras.Model):
            return self.submodel(op)(*args, **kwargs), node
        if self.skip_fn(op):
            # No quantizer after it: the converter keeps it (and what consumes its float
            # output, up to the next quantizer) in float, as it was trained.
            return self.float_copy(op, args, kwargs), node
        kind = registry.role(op)
        if kind == "divide" and len(node.input_tensors) != 1:
            kind = None
            self.problems.append(
                f"keras.ops operation {type(op).__name__} {op.name!r} dividing by a tensor "
                "(TFLite has no int8 DIV kernel; multiply by a reciprocal instead)"
            )
        elif kind == "batch_norm" and op.axis not in (-1, len(args[0].shape) - 1):
            kind = None
            self.problems.append(
                f"BatchNormalization {op.name!r} with axis={op.axis} (only the last axis)"
            )
        elif kind == "transformer" and type(op).__name__ == "MultiHeadAttention":
            used = {k for k, v in kwargs.items() if v is not None and v is not False}
            if used - _ATTENTION_ARGUMENTS or len(args) > 3:
                kind = None
                self.problems.append(
                    f"MultiHeadAttention {op.name!r} called with "
                    f"{sorted(used - _ATTENTION_ARGUMENTS) or 'masks'} (only query, value and "
                    "key: TFLite's int8 attention takes no masks nor returns scores)"
                )
        elif kind is None:
            self.problems.append(registry.reason(op))
        if kind is None:
            # Keep building the graph, so that one call reports every problem.
            return self.float_copy(op, args, kwargs), node
        if kind == "weighted":
            # The wrapper may absorb the following batch norm and activation: its
            # output replaces the last absorbed node's.
            return self.weighted(node, args, absorbed)
        if kind == "affine":
            return self.affine(node, op, args, absorbed)
        if kind == "batch_norm":
            bn = _clone(op)
            self.copies.append((bn, op))
            wrapper = QuantizeBatchNormalization(bn, ema_decay=self.ema_decay, name=op.name)
            return wrapper(args[0]), node
        if kind == "activation":
            return self.activation(node, op, args, kwargs), node
        if kind == "prelu":
            inner = _clone(op)
            self.copies.append((inner, op))
            return QuantizePReLU(inner, ema_decay=self.ema_decay, name=op.name)(args[0]), node
        if kind == "transformer":
            inner = _clone(op)
            self.copies.append((inner, op))
            layer = _TRANSFORMER_LAYERS[type(op).__name__](
                inner, ema_decay=self.ema_decay, name=op.name
            )
            kwargs = {k: v for k, v in kwargs.items() if k in _ATTENTION_ARGUMENTS}
            return layer(*args, **kwargs), node
        return self.copy(node, op, kind, args, kwargs), node

    def affine(self, node, op, args, absorbed):
        """`Rescaling` / `Normalization` (a pair of them composed) as one int8 MUL and ADD."""
        scale, offset = affine_of(op)
        last = node
        user = self.sole_consumer(node.outputs[0])
        if user is not None and registry.role(user.operation) == "affine":
            second_scale, second_offset = affine_of(user.operation)
            scale, offset = scale * second_scale, offset * second_scale + second_offset
            absorbed.add(id(user))
            last = user
        layer = QuantizeRescaling(
            scale=scale, offset=offset, ema_decay=self.ema_decay, name=last.operation.name
        )
        return layer(args[0]), last

    def activation(self, node, op, args, kwargs):
        act = registry.activation_of(op)
        if registry.is_layer(op) and act in _COPIED_ACTIVATIONS:
            cls = type(op).__name__
            if cls in ("Activation", "ReLU", "Softmax"):
                clone = _clone(op)
                self.copies.append((clone, op))
                out = clone(*args, **kwargs)
                fixed = acts.fixed_range(act)
                if fixed is None and self.only_concatenated(node.outputs[0]):
                    return out  # The concatenation's range is its int8 range (see `copy`).
                nonnegative = acts.is_nonnegative(act)
                return self.quantizer(f"{op.name}_quantizer", fixed, nonnegative=nonnegative)(out)
        return QuantizeActivation(act, ema_decay=self.ema_decay, name=op.name)(args[0])

    def copy(self, node, op, kind, args, kwargs):
        """Copies a pass-through or requantizing layer or op, with its quantizer."""
        cls = type(op).__name__
        if not registry.is_layer(op):
            if cls in registry.CONSTANT_OPERAND_OPS:
                # A constant tensor operand is stored as int8: QAT adds what the file adds.
                args = [constant_on_int8_grid(a) for a in args]
                kwargs = {k: constant_on_int8_grid(v) for k, v in kwargs.items()}
            out = _clone_op(op)(*args, **kwargs)
        else:
            clone = _clone(op)
            if cls == "UpSampling2D" and None not in args[0].shape[1:3]:
                # Keras repeats rows and columns (TILE, which TFLite Micro lacks); a
                # nearest/bilinear resize gives the same values as one RESIZE_* kernel.
                height, width = args[0].shape[1:3]
                clone = keras.layers.Resizing(
                    height * op.size[0],
                    width * op.size[1],
                    interpolation=op.interpolation,
                    name=op.name,
                )
            self.copies.append((clone, op))
            out = clone(*args, **kwargs)
            op = clone
        if kind == "passthrough" and registry.averages_between_steps(op):
            # Its int8 kernel keeps the input's grid and rounds onto it.
            ties = type(op).__name__ in registry.AVERAGE_POOLING
            window = None
            if ties:
                size = op.pool_size
                spatial = len(args[0].shape) - 2
                window = math.prod((size,) * spatial if isinstance(size, int) else size)
            rounding = RoundToInputGrid(int8_ties=ties, window=window, name=f"{op.name}_rounding")
            out = rounding([out, _grid_source(args[0])])
        x = args[0] if args else None
        if kind == "requantize" and registry.averages_one_value(op, getattr(x, "shape", None)):
            # The average of one value: the int8 file keeps the input's grid (see
            # `averages_one_value`), so QAT rounds onto that grid, not a range of its own.
            return RoundToInputGrid(name=f"{op.name}_rounding")([out, _grid_source(x)])
        if kind in ("requantize", "divide"):
            fused = self.fuses_relu(node)
            # A tensor read only by a concatenation gets its scale in the int8 file (see
            # `QuantizeWrapper`'s `quantize_output`): its quantizer is the one that counts.
            if not fused and not self.only_concatenated(node.outputs[0]):
                out = self.quantizer(f"{op.name}_quantizer")(out)
        return out

    def fuses_relu(self, node):
        """Whether `node`'s TFLite kernel fuses the ReLU that alone reads its output, so
        the quantizer goes after that ReLU."""
        user = self.sole_consumer(node.outputs[0])
        return (
            type(node.operation).__name__ in registry.FUSES_RELU
            and user is not None
            and registry.role(user.operation) == "activation"
            and registry.activation_of(user.operation) in ("relu", "relu6")
        )

    def submodel(self, model):
        if id(model) not in self.submodels:
            self.submodels[id(model)] = self.rewrite(model, quantize_inputs=False, name=model.name)
        return self.submodels[id(model)]

    def weighted(self, node, args, absorbed):
        layer = node.operation
        activation = acts.activation_name(layer.activation)
        batch_norm = None
        last = node
        user = self.sole_consumer(node.outputs[0])
        if (
            activation == "linear"
            and user is not None
            and type(user.operation).__name__ == "BatchNormalization"
            and user.operation.axis in (-1, len(node.outputs[0].shape) - 1)
        ):
            batch_norm = user.operation
            absorbed.add(id(user))
            last = user
            user = self.sole_consumer(user.outputs[0])
        if (
            activation == "linear"
            and user is not None
            and registry.role(user.operation) == "activation"
        ):
            activation = registry.activation_of(user.operation)
            absorbed.add(id(user))
            last = user
        inner = _clone(layer, activation="linear")
        bn = None if batch_norm is None else _clone(batch_norm)
        wrapper = QuantizeWrapper(
            inner,
            batch_norm=bn,
            activation=activation,
            ema_decay=self.ema_decay,
            quantize_output=not (
                activation in acts.FUSABLE
                and type(layer).__name__ != "Conv1D"
                and self.only_concatenated(last.outputs[0])
            ),
            name=layer.name,
        )
        out = wrapper(args[0])
        self.copies.append((inner, layer))
        if bn is not None:
            self.copies.append((bn, batch_norm))
        return out, last

    def check(self, model):
        """Raises one `UnsupportedOpError` listing every unsupported layer and op."""
        if not self.problems:
            return
        names = [re.search(r"'([^']+)'", p).group(1) for p in self.problems]
        raise UnsupportedOpError(
            f"quantize_model cannot quantize {len(self.problems)} operation(s) of model "
            f"{model.name!r}: none has an int8 TFLite kernel tfslim trains for. "
            + "; ".join(self.problems)
            + f". Supported layers: {', '.join(registry.SUPPORTED_LAYERS)}; keras.ops "
            f"operations: {', '.join(registry.SUPPORTED_OPS)} and the activations "
            f"{', '.join(acts.SUPPORTED)} (also as `activation=` of a layer). Pass "
            f"skip={names!r} to quantize_model to keep them in float (what a skipped "
            "operation computes stays float in the converted model)."
        )


def quantize_model(
    model,
    *,
    skip: str | re.Pattern | Iterable | Callable | None = None,
    ema_decay: float = 0.99,
    preserve: str | None = None,
):
    """Returns a quantization-aware training (QAT) copy of `model`.

    The copy computes, in float, exactly what the fully-int8 TFLite model will compute: weights
    rounded to int8 (per channel for convolutions, per tensor for Dense), batch norms folded
    into the preceding layer (a standalone one becomes an int8 MUL and ADD), ReLU/ReLU6
    fused, every activation rounded to int8 with a fixed or observed range. `keras.ops` calls
    in the graph (`x + 3.0`, `keras.ops.mean`, ...) are rewritten like layers; swish, hard
    swish, hard sigmoid, GELU and leaky ReLU get their int8 kernels' ranges, `PReLU` its
    slopes rounded as the int8 PRELU stores them; ELU an int8 input and output (the converter
    stage turns the float ELU TF's converter writes into an int8 one); `Rescaling` and
    `Normalization` become int8 MUL/ADD after the input quantizer; `Embedding`,
    `LayerNormalization` and `MultiHeadAttention` become the int8 GATHER, MEAN/SUB/MUL/RSQRT
    and FULLY_CONNECTED/BATCH_MATMUL/SOFTMAX ops the converter emits for them (see
    `tfslim.quantization.transformer`); a tensor only a concatenation reads takes the
    concatenation's range, as in the int8 file. Compile and fit it like
    any model, then convert it with `tfslim.convert(qat_model, target="mcu")` (no
    calibration data needed).

    A `tf_keras` model is handed to `tfmot.quantization.keras.quantize_model`.

    Args:
        model: keras.Model. A built Sequential or Functional model (nested Functional or
            Sequential sub-models are quantized too), or a tf_keras model.
        skip: Layers or `keras.ops` operations to leave unquantized: a name or regular
            expression, a list of them, or a callable taking a layer (or operation) and
            returning `True` to skip it. A skipped operation is copied as it is, trains in
            float and gets no quantizer after it, so the converter runs it, and whatever reads
            its float output up to the next quantizer, with float kernels (which TFLite
            Micro refuses); its input stays int8, so an op whose int8 kernel fixes its output
            range (LOGISTIC, TANH, SOFTMAX) is still converted to int8. Defaults to `None`.
        ema_decay: float. Decay of the moving averages of activation ranges. Defaults to
            `0.99`.
        preserve: str or `None`. `"clusters"`: `model` is clustered (by
            `tfslim.cluster_weights`, stripped or not) and QAT keeps every weight on its
            centroid, so int8 kernels keep at most that many values (zeros stay zero); see
            `tfslim.clustering.cluster_preserve`. Defaults to `None`.

    Returns:
        A new keras.Model sharing no state with `model`, with `model`'s weights.

    Raises:
        UnsupportedOpError: layers or operations have no int8 kernel tfslim covers; one
            error lists all of them with the cause (class, name, activation or op) and the
            `skip` value that keeps them in float.
        InvalidModelError: `model` is subclassed or an unbuilt Sequential.
        RuntimeError: the Keras backend is not TensorFlow.

    Example:

    >>> import keras
    >>> import tfslim
    >>> model = keras.Sequential([
    ...     keras.Input((8, 8, 1)),
    ...     keras.layers.Conv2D(4, 3, use_bias=False),
    ...     keras.layers.BatchNormalization(),
    ...     keras.layers.ReLU(),
    ...     keras.layers.Flatten(),
    ...     keras.layers.Dense(10, activation="softmax"),
    ... ])
    >>> qat = tfslim.quantization.quantize_model(model)
    >>> [type(layer).__name__ for layer in qat.layers]
    ['InputLayer', 'ActivationQuantizer', 'QuantizeWrapper', 'Flatten', 'QuantizeWrapper']
    """
    if preserve is not None:
        # Clustering owns the cluster-preserving variant; imported only when asked for.
        from tfslim.clustering import cluster_preserve

        if preserve not in cluster_preserve.PRESERVE_CHOICES:
            raise ValueError(
                "Invalid value for argument `preserve`. Expected one of "
                f"{cluster_preserve.PRESERVE_CHOICES} or None. Received: preserve={preserve!r}"
            )
        return cluster_preserve.quantize_preserving_clusters(model, skip=skip, ema_decay=ema_decay)
    if skipping.is_tf_keras_model(model):
        if ema_decay != 0.99:  # tfmot's quantizers have their own fixed range tracking.
            raise ValueError(
                "Invalid value for argument `ema_decay` with a tf_keras model (quantized by "
                "tfmot, which has no such option). Expected the default 0.99. Received: "
                f"ema_decay={ema_decay}"
            )
        return skipping.quantize_tf_keras(model, skip)
    _check_model(model)
    rewriter = _Rewriter(
        skipping.skip_predicate(skip, skipping.all_layer_names(model)), check_ema_decay(ema_decay)
    )
    qat = rewriter.rewrite(model, quantize_inputs=True, name=model.name)
    rewriter.check(model)
    for new, old in rewriter.copies:
        new.set_weights(old.get_weights())
    return qat


def is_quantized_model(model) -> bool:
    """Returns whether `model` carries fake-quant ranges (a tfslim or tfmot QAT model).

    The converter asks the same question of `tfslim._model_facts`, which answers it
    without importing this package; this is that answer.
    """
    return _model_facts.is_qat_model(model)


def float_layers(model) -> list[str]:
    """Returns the names of the layers of a QAT `model` that were left in float via `skip`.

    When non-empty, the converter must allow float kernels (`TFLITE_BUILTINS` next to
    `TFLITE_BUILTINS_INT8`): a skipped layer has no quantizer after it, so it and whatever
    reads its float output up to the next quantizer run in float; its input is still int8.
    Activation layers and `keras.ops` operations are not listed.
    """
    names = []
    for layer in _graph.sublayers(model, recursive=False):
        if isinstance(layer, keras.Model):
            names.extend(float_layers(layer))
        elif (
            not type(layer).__module__.startswith("tfslim.quantization.")
            # Subclasses elsewhere (clustering's cluster-preserving wrapper) quantize too.
            and not isinstance(layer, QuantizeWrapper)
            and registry.role(layer)
            in (None, "weighted", "affine", "batch_norm", "transformer", "prelu")
            and type(layer).__name__ != "InputLayer"
        ):
            names.append(layer.name)
    return names
