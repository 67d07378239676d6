"""`PruneLowMagnitude`: a layer wrapper that carries per-layer pruning state in the model.

The wrapper does no work in `call`; it owns one mask and one step counter per prunable weight
of the wrapped layer and attaches a `PruningConstraint` to each, so the masking happens inside
the optimizer update like with the `Pruning` callback. Because the masks and steps are weights of
the wrapper, they are saved in `.keras` files and checkpoints and training resumes exactly.
"""

from __future__ import annotations

import keras

from tfslim import _keras_graph
from tfslim._wrapping import InnerBuildConfig
from tfslim.pruning import schedules as schedules_lib
from tfslim.pruning.constraint import PruningConstraint
from tfslim.pruning.masks import Granularity
from tfslim.pruning.policy import prunable_weights


def default_schedule() -> schedules_lib.PruningSchedule:
    """tfmot's default: 50% from step 0, masks updated every 100 steps."""
    return schedules_lib.ConstantSparsity(0.5, begin_step=0, frequency=100)


@keras.saving.register_keras_serializable(package="tfslim")
class PruneLowMagnitude(InnerBuildConfig, keras.layers.Wrapper):
    """Prunes the kernels of `layer` by magnitude during training.

    Args:
        layer: `keras.Layer` with at least one prunable weight (`Dense`, `Conv*`, `Embedding`,
            `LSTM`, `EinsumDense`, or a layer defining `get_prunable_weights()`).
        pruning_schedule: `PruningSchedule` (or its serialized dict). Defaults to
            `ConstantSparsity(0.5, begin_step=0, frequency=100)`.
        block_size: (rows, cols) of weights pruned together, on the TFLite `(out, in)` layout;
            `(1, 16)` is what the TFLite sparse encoder compresses best. Defaults to `(1, 1)`.
        block_pooling_type: "AVG" or "MAX" magnitude of a block. Defaults to `"AVG"`.
        sparsity_m_by_n: (m, n) for m zeros in every n consecutive input channels, e.g.
            `(2, 4)`; overrides the schedule's sparsity. Defaults to `None`.
        **kwargs: base layer arguments (`name`, ...).

    Raises:
        ValueError: if `layer` has no prunable weight or a weight's shape cannot take the pattern.

    Example:

    >>> import keras
    >>> from tfslim import pruning
    >>> dense = pruning.PruneLowMagnitude(keras.layers.Dense(8))
    >>> model = keras.Sequential([keras.Input((4,)), dense])
    >>> [w.name for w in dense.non_trainable_weights]
    ['kernel_mask', 'kernel_pruning_step']
    """

    def __init__(
        self,
        layer: keras.Layer,
        *,
        pruning_schedule: schedules_lib.PruningSchedule | dict | None = None,
        block_size: tuple[int, int] = (1, 1),
        block_pooling_type: str = "AVG",
        sparsity_m_by_n: tuple[int, int] | None = None,
        **kwargs,
    ):
        if not isinstance(layer, keras.Layer):
            raise TypeError(
                "Invalid value for argument `layer`. Expected a Keras 3 `keras.Layer`. "
                f"Received: layer={layer!r} of type {type(layer).__name__}"
            )
        if isinstance(layer, PruneLowMagnitude):
            raise ValueError(
                f"Invalid value for argument `layer`: layer '{layer.name}' is already wrapped in "
                "PruneLowMagnitude."
            )
        kwargs.setdefault("name", f"prune_low_magnitude_{layer.name}")
        super().__init__(layer, **kwargs)
        if pruning_schedule is None:
            pruning_schedule = default_schedule()
        elif isinstance(pruning_schedule, dict):
            pruning_schedule = schedules_lib.deserialize(pruning_schedule)
        self.pruning_schedule = schedules_lib.check_schedule(pruning_schedule)
        self.granularity = Granularity(block_size, block_pooling_type, sparsity_m_by_n)
        self.constraints: list[PruningConstraint] = []

    def build(self, input_shape=None):
        if not self.layer.built:
            try:
                self.layer.build(input_shape)
            except TypeError as error:
                raise ValueError(
                    f"PruneLowMagnitude cannot build layer '{self.layer.name}' "
                    f"({type(self.layer).__name__}) from one input shape {input_shape} "
                    f"({error}). Build the layer before wrapping it, e.g. by calling it once."
                ) from error
        targets = prunable_weights(self.layer)
        if not targets:
            raise ValueError(
                f"Invalid value for argument `layer`: layer '{self.layer.name}' "
                f"({type(self.layer).__name__}) has no prunable weight. Prunable weights are "
                "trainable kernels of rank >= 2, or those a custom layer returns from "
                "`get_prunable_weights()`."
            )
        for variable in targets:
            where = (
                f"layer '{self.layer.name}' ({type(self.layer).__name__}), weight '{variable.name}'"
            )
            self.granularity.check_weight(variable.shape, where)
            mask = self.add_weight(
                name=f"{variable.name}_mask",
                shape=variable.shape,
                dtype=variable.dtype,
                initializer="ones",
                trainable=False,
            )
            step = self.add_weight(
                name=f"{variable.name}_pruning_step",
                shape=(),
                dtype="int64",
                initializer="zeros",
                trainable=False,
            )
            constraint = PruningConstraint(
                variable, mask, step, self.pruning_schedule, self.granularity
            )
            constraint.attach()
            self.constraints.append(constraint)

    def call(self, inputs, *args, **kwargs):
        return self.layer(inputs, *args, **kwargs)

    def get_config(self) -> dict:
        config = super().get_config()
        config.update(
            {
                "pruning_schedule": schedules_lib.serialize(self.pruning_schedule),
                **self.granularity.get_config(),
            }
        )
        return config


def find_wrappers(model) -> list[PruneLowMagnitude]:
    """Every `PruneLowMagnitude` layer of `model`, nested models included."""
    return [
        layer for layer in _keras_graph.sublayers(model) if isinstance(layer, PruneLowMagnitude)
    ]
