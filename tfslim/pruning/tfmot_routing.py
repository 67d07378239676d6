"""Routes legacy `tf_keras` models to tfmot behind tfslim's pruning API.

tfmot 0.8 only prunes `tf_keras` (Keras 2) models. It is imported through
`tfslim._compat.import_tfmot`, which leaves the process environment as it was.
"""

from __future__ import annotations

from tfslim._compat import import_tfmot


def import_tfmot_sparsity():
    """Returns `tfmot.sparsity.keras` without leaving `TF_USE_LEGACY_KERAS` set."""
    return import_tfmot().sparsity.keras


def to_tfmot_schedule(schedule):
    """The tfmot schedule with the same steps and sparsities as a tfslim schedule."""
    from tfslim.pruning.schedules import ConstantSparsity, PolynomialDecay

    sparsity = import_tfmot_sparsity()
    config = schedule.get_config()
    if isinstance(schedule, ConstantSparsity):
        return sparsity.ConstantSparsity(**config)
    if isinstance(schedule, PolynomialDecay):
        return sparsity.PolynomialDecay(**config)
    raise TypeError(
        "Invalid value for argument `pruning_schedule`. tf_keras models are pruned by tfmot, "
        "which accepts ConstantSparsity or PolynomialDecay. "
        f"Received: pruning_schedule={schedule!r}"
    )


def prune_tf_keras(
    to_prune,
    *,
    pruning_schedule,
    block_size,
    block_pooling_type,
    sparsity_m_by_n,
    skip_layers,
    layer_sparsity,
):
    """`tfmot.sparsity.keras.prune_low_magnitude` with tfslim's arguments.

    tfmot lays `block_size` out on the Keras `(in, out)` kernel while tfslim uses the TFLite
    `(out, in)` layout, so the pair is swapped to prune the same weights.
    """
    if skip_layers or layer_sparsity:
        raise ValueError(
            "Arguments `skip_layers` and `layer_sparsity` are not supported for tf_keras models "
            "(they are pruned by tfmot). Wrap individual layers with "
            "`tfslim.prune_low_magnitude(layer, ...)` instead. Received: "
            f"skip_layers={skip_layers!r}, layer_sparsity={layer_sparsity!r}"
        )
    sparsity = import_tfmot_sparsity()
    kwargs = {
        "pruning_schedule": to_tfmot_schedule(pruning_schedule),
        "block_size": (block_size[1], block_size[0]),
        "block_pooling_type": block_pooling_type,
    }
    if sparsity_m_by_n is not None:
        kwargs["sparsity_m_by_n"] = tuple(sparsity_m_by_n)
    return sparsity.prune_low_magnitude(to_prune, **kwargs)


def strip_tf_keras(model):
    return import_tfmot_sparsity().strip_pruning(model)
