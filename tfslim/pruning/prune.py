"""`prune_low_magnitude` and `strip_pruning`: pruning with wrappers, tfmot's API on Keras 3."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import keras

from tfslim._compat import is_tf_keras
from tfslim._wrapping import build_like, copy_layer
from tfslim.pruning import policy, tfmot_routing
from tfslim.pruning.constraint import find_constraints
from tfslim.pruning.masks import Granularity
from tfslim.pruning.schedules import PruningSchedule, check_schedule
from tfslim.pruning.wrapper import PruneLowMagnitude, default_schedule, find_wrappers


def prune_low_magnitude(
    to_prune,
    *,
    pruning_schedule: PruningSchedule | None = None,
    block_size: tuple[int, int] = (1, 1),
    block_pooling_type: str = "AVG",
    sparsity_m_by_n: tuple[int, int] | None = None,
    skip_layers: Iterable[str | type] = (),
    layer_sparsity: Mapping[str, float | PruningSchedule] | None = None,
):
    """Wraps a layer, or every prunable layer of a model, in `PruneLowMagnitude`.

    A Sequential or Functional model (nested ones included) is cloned: prunable layers (those
    with kernels) are wrapped, the others copied, and the trained weights copied over; the
    original model is left untouched. Existing zeros in the weights stay pruned. The returned
    model must be compiled; pruning then happens inside every optimizer update, no callback
    needed (add `tfslim.callbacks.Pruning()` to get sparsity in the logs). For subclassed
    models use the `Pruning` callback. `tf_keras` models and layers are passed to tfmot's
    `prune_low_magnitude`.

    Args:
        to_prune: `keras.Layer`, or Sequential/Functional `keras.Model`.
        pruning_schedule: `PruningSchedule`. Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)` (tfmot's default).
        block_size: (rows, cols) pruned together on the TFLite `(out, in)` weight layout;
            `(1, 16)` gives the smallest sparse TFLite files. Defaults to `(1, 1)`.
        block_pooling_type: "AVG" or "MAX". Defaults to `"AVG"`.
        sparsity_m_by_n: (m, n), m zeros in every n consecutive input channels. Defaults to
            `None`.
        skip_layers: layer names or classes to leave dense (models only). Defaults to `()`.
        layer_sparsity: {layer name: target sparsity or `PruningSchedule`} overriding the
            schedule's target for those layers (models only). Defaults to `None`.

    Returns:
        The wrapped layer, or a new model with wrapped layers.

    Raises:
        TypeError: if `to_prune` is neither a layer nor a model, or an argument has a wrong type.
        ValueError: for a subclassed model, a model with no prunable layer, an already-pruned
            model, an unknown layer name, or a weight whose shape cannot take the pattern.

    Example:

    >>> import keras
    >>> from tfslim import pruning
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16),
    ...                           keras.layers.Dense(4, name="logits")])
    >>> pruned = pruning.prune_low_magnitude(
    ...     model, pruning_schedule=pruning.ConstantSparsity(0.75, frequency=1),
    ...     skip_layers=["logits"])
    >>> [type(layer).__name__ for layer in pruned.layers]
    ['PruneLowMagnitude', 'Dense']
    """
    if pruning_schedule is None:
        pruning_schedule = default_schedule()
    check_schedule(pruning_schedule)
    skip_layers = policy.check_skip_layers(skip_layers)
    layer_sparsity = policy.check_layer_sparsity(layer_sparsity)
    granularity = Granularity(block_size, block_pooling_type, sparsity_m_by_n)
    wrapper_kwargs = granularity.get_config()

    if is_tf_keras(to_prune):
        return tfmot_routing.prune_tf_keras(
            to_prune,
            pruning_schedule=pruning_schedule,
            block_size=granularity.block_size,
            block_pooling_type=block_pooling_type,
            sparsity_m_by_n=granularity.sparsity_m_by_n,
            skip_layers=skip_layers,
            layer_sparsity=layer_sparsity,
        )
    if not isinstance(to_prune, keras.Layer):
        raise TypeError(
            "Invalid value for argument `to_prune`. Expected a Keras 3 layer or model (or a "
            f"tf_keras one). Received: to_prune={to_prune!r} of type {type(to_prune).__name__}"
        )
    if not isinstance(to_prune, keras.Model):
        if skip_layers or layer_sparsity:
            raise ValueError(
                "Arguments `skip_layers` and `layer_sparsity` only apply to models. Received "
                f"layer '{to_prune.name}' with skip_layers={skip_layers!r}, "
                f"layer_sparsity={layer_sparsity!r}"
            )
        return PruneLowMagnitude(to_prune, pruning_schedule=pruning_schedule, **wrapper_kwargs)

    model = to_prune
    if not policy.is_graph_model(model):
        raise ValueError(
            f"Invalid value for argument `to_prune`: model '{model.name}' is a subclassed "
            f"model ({type(model).__name__}), which cannot be cloned with wrappers. Prune it with "
            "the callback instead: `model.fit(..., callbacks=[tfslim.callbacks.Pruning(...)])`."
        )
    if find_wrappers(model):
        raise ValueError(
            f"Invalid value for argument `to_prune`: model '{model.name}' is already pruned "
            "(it contains PruneLowMagnitude layers). Call `tfslim.strip_pruning` first."
        )
    policy.check_names_exist(model, skip_layers, layer_sparsity)

    pairs = []  # (new layer, original layer)
    wrapped = []

    def clone(layer):
        copy = copy_layer(layer)
        pairs.append((copy, layer))
        if policy.is_skipped(layer, skip_layers) or not policy.prunable_weights(layer):
            return copy
        schedule = policy.schedule_for(layer, pruning_schedule, layer_sparsity)
        build_like(copy, layer)
        wrapper = PruneLowMagnitude(copy, pruning_schedule=schedule, **wrapper_kwargs)
        wrapped.append(wrapper)
        return wrapper

    pruned = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not wrapped:
        raise ValueError(
            f"Invalid value for argument `to_prune`: model '{model.name}' has no prunable "
            f"layer (layers with trainable kernels) outside `skip_layers`. Layers: "
            f"{policy.describe_layers(model)}"
        )
    for copy, original in pairs:
        copy.set_weights(original.get_weights())
    for wrapper in wrapped:
        for constraint in wrapper.constraints:
            constraint.init_mask_from_weights()
    return pruned


def strip_pruning(model):
    """Returns the model without pruning machinery, pruned weights baked in as exact zeros.

    `PruneLowMagnitude` wrappers are replaced by copies of the layers they wrap (weights times
    masks), in a new Sequential/Functional model whose saved `.keras` file needs no tfslim.
    A model pruned by the `Pruning` callback holds no wrappers: its variables are already zero
    where pruned; any pruning constraint still attached is removed and `model` itself returned,
    unless whole channels are zero (as `tfslim.callbacks.ChannelPruning` leaves them): then a
    smaller Sequential/Functional model without them (`tfslim.pruning.strip_channels`).
    `tf_keras` models go to tfmot's `strip_pruning`.

    Args:
        model: a Keras 3 (or tf_keras) model, pruned or not.

    Returns:
        A plain Keras model.

    Raises:
        TypeError: if `model` is not a Keras model.
        ValueError: if `model` is a subclassed model containing `PruneLowMagnitude` layers.

    Example:

    >>> import keras
    >>> from tfslim import pruning
    >>> model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
    >>> plain = pruning.strip_pruning(pruning.prune_low_magnitude(model))
    >>> [type(layer).__name__ for layer in plain.layers]
    ['Dense']
    """
    if is_tf_keras(model):
        return tfmot_routing.strip_tf_keras(model)
    if not isinstance(model, keras.Model):
        raise TypeError(
            "Invalid value for argument `model`. Expected a Keras model. "
            f"Received: model={model!r} of type {type(model).__name__}"
        )
    wrappers = find_wrappers(model)
    if not wrappers:
        for constraint in find_constraints(model):
            constraint.bake()
            constraint.detach()
        if policy.is_graph_model(model):
            # Whole channels zeroed by `ChannelPruning` are removed: a smaller model.
            from tfslim.pruning.channel import strip_channels

            return strip_channels(model)
        return model
    if not policy.is_graph_model(model):
        raise ValueError(
            f"Invalid value for argument `model`: subclassed model '{model.name}' "
            f"({type(model).__name__}) contains PruneLowMagnitude layers "
            f"{[w.name for w in wrappers]}, which cannot be removed without cloning. Build the "
            "model from unwrapped layers and prune it with `tfslim.callbacks.Pruning`."
        )
    pairs = []

    def clone(layer):
        if isinstance(layer, PruneLowMagnitude):
            for constraint in layer.constraints:
                constraint.bake()
            source = layer.layer
        else:
            source = layer
        copy = copy_layer(source)
        pairs.append((copy, source))
        return copy

    stripped = keras.models.clone_model(model, clone_function=clone, recursive=True)
    for copy, source in pairs:
        copy.set_weights(source.get_weights())
    return stripped
