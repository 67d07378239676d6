"""Keras callbacks for shrinking a model during `fit`, gathered in one namespace.

`tfslim.callbacks.Pruning(...)` reads like `keras.callbacks.EarlyStopping(...)`.
"""

from tfslim.distillation.schedule import DistillationSchedule
from tfslim.pruning.callback import Pruning
from tfslim.pruning.channel import ChannelPruning
from tfslim.quantization.callbacks import FreezeQuantization

__all__ = ["ChannelPruning", "DistillationSchedule", "FreezeQuantization", "Pruning"]
