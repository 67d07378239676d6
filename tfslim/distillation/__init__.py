"""Teacher-student distillation during `fit`, for students that are quantized and/or pruned.

Built on `keras.distillation`: `Distiller` extends `keras.distillation.Distiller`,
`DistillationSchedule` changes its temperature and loss weight during `fit`, and `distill` runs
the whole recipe (QAT, pruning, distillation) and returns a student ready for `tfslim.convert`.
"""

from keras.distillation import DistillationLoss, FeatureDistillation, LogitsDistillation

from tfslim.distillation.distill import distill
from tfslim.distillation.distiller import Distiller
from tfslim.distillation.schedule import DistillationSchedule

__all__ = [
    "DistillationLoss",
    "DistillationSchedule",
    "Distiller",
    "FeatureDistillation",
    "LogitsDistillation",
    "distill",
]
