"""`quantize_model`: turn a float Keras 3 model into a quantization-aware training model.

The model's layer graph is rebuilt node by node: an input quantizer after each model input,
weighted layers replaced by `QuantizeWrapper` (absorbing a following batch norm and activation),
range-preserving layers copied as they are and range-changing layers followed by an
`ActivationQuantizer`. Nested Functional or Sequential sub-models are rebuilt recursively and
stay nested. Weights are copied, so a trained float model starts QAT where it left off.
"""

import re
from collections.abc import Callable, Iterable

import keras

from tfslim._compat import import_tfmot, is_tf_keras
from tfslim.errors import InvalidModelError, UnsupportedOpError
from tfslim.quantization import activations as acts
from tfslim.quantization import registry
from tfslim.quantization.quantize_wrapper import QuantizeWrapper
from tfslim.quantization.quantizers import ActivationQuantizer, check_ema_decay
from tfslim.quantization.rescaling import QuantizeRescaling


def _is_tf_keras_model(model) -> bool:
    if not is_tf_keras(model):
        return False
    import tf_keras

    return isinstance(model, tf_keras.Model)


def _quantize_tf_keras(model, skip):
    """Routes a legacy tf_keras model to tfmot's `quantize_model` (same call, same converter)."""
    qk = import_tfmot().quantization.keras
    if skip is None:
        return qk.quantize_model(model)
    skip_fn = _skip_predicate(skip, _all_layer_names(model))

    def annotate(layer):
        if skip_fn(layer) or type(layer).__name__ == "InputLayer":
            return layer.__class__.from_config(layer.get_config())
        return qk.quantize_annotate_layer(layer)

    import tf_keras

    annotated = tf_keras.models.clone_model(model, clone_function=annotate)
    return qk.quantize_apply(annotated)


def _all_layer_names(model) -> set[str]:
    names = set()
    for layer in model.layers:
        names.add(layer.name)
        if hasattr(layer, "layers"):
            names |= _all_layer_names(layer)
    return names


def _skip_predicate(skip, names: set[str]) -> Callable:
    if skip is None:
        return lambda layer: False
    if callable(skip) and not isinstance(skip, re.Pattern):
        return lambda layer: bool(skip(layer))
    items = [skip] if isinstance(skip, (str, re.Pattern)) else skip
    if not isinstance(items, Iterable) or not all(isinstance(s, (str, re.Pattern)) for s in items):
        raise TypeError(
            "Invalid value for argument `skip`. Expected layer names, regular expressions or a "
            f"callable taking a layer and returning a bool. Received: skip={skip!r}"
        )
    patterns = [re.compile(re.escape(s) if s in names else s) for s in items]
    for item, pattern in zip(items, patterns, strict=True):
        if not any(pattern.fullmatch(n) for n in names):
            raise ValueError(
                f"Invalid value for argument `skip`. Expected names or patterns matching layers "
                f"of the model. Received: skip entry {item!r}, which matches no layer "
                f"(layers: {sorted(names)})"
            )
    return lambda layer: any(p.fullmatch(layer.name) for p in patterns)


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
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise InvalidModelError(
                "Invalid value for argument `model`. Expected a built Sequential model (start "
                "it with keras.Input(shape) or call it on data first). Received: unbuilt "
                f"Sequential model {model.name!r}"
            )
        return model._functional
    if not isinstance(model, keras.src.models.Functional):
        raise InvalidModelError(
            "Invalid value for argument `model`. Expected a Sequential or Functional model: a "
            "subclassed model has no layer graph to rewrite for quantization-aware training. "
            f"Received: model={model.name!r} of class {type(model).__name__}. Rebuild it with "
            "the functional API (keras.Model(inputs, outputs))."
        )
    return model


def _clone(layer, **overrides):
    config = layer.get_config()
    config.update(overrides)
    return type(layer).from_config(config)


class _Rewriter:
    def __init__(self, skip_fn, ema_decay):
        self.skip_fn = skip_fn
        self.ema_decay = ema_decay
        self.copies = []  # (new layer, old layer) pairs whose weights to copy once built.
        self.submodels = {}

    def quantizer(self, name, fixed=None, *, nonnegative=False):
        return ActivationQuantizer(
            ema_decay=self.ema_decay, fixed_range=fixed, nonnegative=nonnegative, name=name
        )

    def rewrite(self, model, *, quantize_inputs, name):
        graph = _check_model(model)
        nodes = []
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            nodes.extend(n for n in graph._nodes_by_depth[depth] if n.operation and not n.is_input)
        consumers = {}
        for node in nodes:
            for x in node.input_tensors:
                consumers.setdefault(id(x), []).append(node)
        outputs = {id(x) for x in graph.outputs}

        def sole_consumer(tensor):
            users = consumers.get(id(tensor), [])
            if len(users) != 1 or id(tensor) in outputs or len(users[0].input_tensors) != 1:
                return None
            return users[0]

        new_inputs, tensors = [], {}
        for x in graph.inputs:
            input_name = x._keras_history.operation.name
            new_x = keras.Input(batch_shape=x.shape, dtype=x.dtype, name=input_name)
            new_inputs.append(new_x)
            if quantize_inputs and "float" in str(x.dtype):
                new_x = self.quantizer(f"{input_name}_quantizer")(new_x)
            tensors[id(x)] = new_x

        absorbed = set()
        for node in nodes:
            if id(node) in absorbed:
                continue
            layer = node.operation
            last = node
            args, kwargs = node.arguments.fill_in(tensors)
            cls = type(layer).__name__
            if isinstance(layer, keras.Model):
                out = self.submodel(layer)(*args, **kwargs)
            elif self.skip_fn(layer):
                clone = _clone(layer)
                self.copies.append((clone, layer))
                out = self.quantizer(f"{layer.name}_quantizer")(clone(*args, **kwargs))
            else:
                kind = registry.role(layer)
                if kind is None:
                    raise UnsupportedOpError(
                        f"Layer {layer.name!r} of class {cls} is not supported by "
                        "quantize_model: it has no int8 TFLite kernel that tfslim can train "
                        f"for. Supported layers: {', '.join(registry.SUPPORTED_LAYERS)} "
                        "(channels-last, linear/relu/relu6/sigmoid/tanh/softmax/hard_swish "
                        f"activations). Pass skip=[{layer.name!r}] to quantize_model to keep "
                        "it in float."
                    )
                if cls == "Rescaling":
                    out = QuantizeRescaling(
                        scale=float(layer.scale),
                        offset=float(layer.offset),
                        ema_decay=self.ema_decay,
                        name=layer.name,
                    )(*args)
                elif kind == "weighted":
                    # The wrapper may absorb the following batch norm and activation: its
                    # output replaces the last absorbed node's.
                    out, last = self.weighted(node, args, sole_consumer, absorbed)
                else:
                    out = self.copy_layer(node, layer, kind, args, kwargs, sole_consumer)
            for x, y in zip(last.outputs, keras.tree.flatten(out), strict=True):
                tensors[id(x)] = y

        new_outputs = keras.tree.pack_sequence_as(
            graph._outputs_struct, [tensors[id(x)] for x in graph.outputs]
        )
        if len(new_inputs) == 1 and not isinstance(graph._inputs_struct, (list, dict)):
            new_inputs = new_inputs[0]
        return keras.Model(new_inputs, new_outputs, name=name)

    def copy_layer(self, node, layer, kind, args, kwargs, sole_consumer):
        """Copies a pass-through, requantizing or activation layer, with its quantizer."""
        cls = type(layer).__name__
        clone = _clone(layer)
        if cls == "UpSampling2D" and None not in args[0].shape[1:3]:
            # Keras repeats rows and columns (TILE, which TFLite Micro lacks); a
            # nearest/bilinear resize gives the same values as one RESIZE_* kernel.
            height, width = args[0].shape[1:3]
            clone = keras.layers.Resizing(
                height * layer.size[0],
                width * layer.size[1],
                interpolation=layer.interpolation,
                name=layer.name,
            )
        self.copies.append((clone, layer))
        out = clone(*args, **kwargs)
        if kind == "requantize":
            user = sole_consumer(node.outputs[0])
            fused = (
                cls in registry.FUSES_RELU
                and user is not None
                and registry.role(user.operation) == "activation"
                and acts.layer_activation_name(user.operation) in ("relu", "relu6")
                and not self.skip_fn(user.operation)
            )
            if not fused:
                out = self.quantizer(f"{layer.name}_quantizer")(out)
        elif kind == "activation":
            act = acts.layer_activation_name(layer)
            fixed = acts.fixed_range(act)
            nonnegative = act in ("relu", "relu6")
            out = self.quantizer(f"{layer.name}_quantizer", fixed, nonnegative=nonnegative)(out)
        return out

    def submodel(self, model):
        if id(model) not in self.submodels:
            self.submodels[id(model)] = self.rewrite(model, quantize_inputs=False, name=model.name)
        return self.submodels[id(model)]

    def weighted(self, node, args, sole_consumer, absorbed):
        layer = node.operation
        activation = acts.activation_name(layer.activation)
        batch_norm = None
        last = node
        user = sole_consumer(node.outputs[0])
        if (
            activation == "linear"
            and user is not None
            and type(user.operation).__name__ == "BatchNormalization"
            and not self.skip_fn(user.operation)
            and user.operation.axis in (-1, len(node.outputs[0].shape) - 1)
        ):
            batch_norm = user.operation
            absorbed.add(id(user))
            last = user
            user = sole_consumer(user.outputs[0])
        if (
            activation == "linear"
            and user is not None
            and registry.role(user.operation) == "activation"
            and not self.skip_fn(user.operation)
        ):
            activation = acts.layer_activation_name(user.operation)
            absorbed.add(id(user))
            last = user
        inner = _clone(layer, activation="linear")
        bn = None if batch_norm is None else _clone(batch_norm)
        wrapper = QuantizeWrapper(
            inner,
            batch_norm=bn,
            activation=activation,
            ema_decay=self.ema_decay,
            name=layer.name,
        )
        out = wrapper(args[0])
        self.copies.append((inner, layer))
        if bn is not None:
            self.copies.append((bn, batch_norm))
        return out, last


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
    into the preceding layer, ReLU/ReLU6 fused, every activation rounded to int8 with a range
    observed during training. Compile and fit it like any model, then convert it with
    `tfslim.convert(qat_model, target="mcu")` (no calibration data needed).

    A `tf_keras` model is handed to `tfmot.quantization.keras.quantize_model`.

    Args:
        model: keras.Model. A built Sequential or Functional model (nested Functional or
            Sequential sub-models are quantized too), or a tf_keras model.
        skip: Layers to keep in float: a layer name or regular expression, a list of them, or
            a callable taking a layer and returning `True` to skip it. Defaults to `None`.
        ema_decay: float. Decay of the moving averages of activation ranges. Defaults to
            `0.99`.
        preserve: str or `None`. `"clusters"`: `model` is clustered (by
            `tfslim.cluster_weights`, stripped or not) and QAT keeps every weight on its
            centroid, so int8 kernels keep at most that many values (zeros stay zero); see
            `tfslim.clustering.cluster_preserve`. Defaults to `None`.

    Returns:
        A new keras.Model sharing no state with `model`, with `model`'s weights.

    Raises:
        UnsupportedOpError: a layer has no int8 kernel tfslim covers (the message names it
            and the `skip` option).
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
    if _is_tf_keras_model(model):
        if ema_decay != 0.99:  # tfmot's quantizers have their own fixed range tracking.
            raise ValueError(
                "Invalid value for argument `ema_decay` with a tf_keras model (quantized by "
                "tfmot, which has no such option). Expected the default 0.99. Received: "
                f"ema_decay={ema_decay}"
            )
        return _quantize_tf_keras(model, skip)
    _check_model(model)
    rewriter = _Rewriter(_skip_predicate(skip, _all_layer_names(model)), check_ema_decay(ema_decay))
    qat = rewriter.rewrite(model, quantize_inputs=True, name=model.name)
    for new, old in rewriter.copies:
        new.set_weights(old.get_weights())
    return qat


def is_quantized_model(model) -> bool:
    """Returns whether `model` carries fake-quant ranges (a tfslim or tfmot QAT model).

    The converter uses it to convert to int8 without calibration data.
    """
    if _is_tf_keras_model(model):
        return any(
            type(layer).__name__ in ("QuantizeLayer", "QuantizeWrapperV2", "QuantizeWrapper")
            for layer in model.submodules
        )
    if not isinstance(model, keras.Model):
        return False
    return any(isinstance(layer, ActivationQuantizer) for layer in model._flatten_layers())


def float_layers(model) -> list[str]:
    """Returns the names of the layers of a QAT `model` that were left in float via `skip`.

    When non-empty, the converter must allow float kernels (`TFLITE_BUILTINS` next to
    `TFLITE_BUILTINS_INT8`); the tensors around these layers are still int8.
    """
    names = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if isinstance(layer, keras.Model):
            names.extend(float_layers(layer))
        elif (
            not isinstance(layer, (QuantizeWrapper, ActivationQuantizer))
            and (registry.role(layer) in (None, "weighted"))
            and type(layer).__name__ != "InputLayer"
        ):
            names.append(layer.name)
    return names
