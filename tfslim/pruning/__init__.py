"""Magnitude pruning for Keras 3 models, with sparse TFLite output.

Two forms: the `Pruning` callback prunes any model (Sequential, Functional, subclassed) during
`fit`; `prune_low_magnitude` wraps layers for per-layer control, like tfmot. Both keep the masks
inside the compiled train step (as weight constraints applied by the optimizer).
`strip_pruning` returns a plain model with the zeros baked in.
"""

from tfslim.pruning.batch_norm_adaptation import reestimate_batch_norm
from tfslim.pruning.callback import Pruning
from tfslim.pruning.channel import ChannelPruning, strip_channels
from tfslim.pruning.masks import Granularity
from tfslim.pruning.prune import prune_low_magnitude, strip_pruning
from tfslim.pruning.schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tfslim.pruning.wrapper import PruneLowMagnitude

__all__ = [
    "ChannelPruning",
    "ConstantSparsity",
    "Granularity",
    "PolynomialDecay",
    "PruneLowMagnitude",
    "Pruning",
    "PruningSchedule",
    "prune_low_magnitude",
    "reestimate_batch_norm",
    "strip_channels",
    "strip_pruning",
]
