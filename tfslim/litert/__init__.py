"""The converter stage: Keras -> TFLite for a target, inspection, TFLite Micro checks."""

from tfslim.litert.converter import ConversionResult, convert
from tfslim.litert.equalization import equalize_model
from tfslim.litert.export_c import export_c
from tfslim.litert.inspection import inspect
from tfslim.litert.mcu_latency import COST_MODELS, CostModel
from tfslim.litert.micro import MICRO_OPS
from tfslim.litert.mixed_precision import MICRO_INT16_OPS
from tfslim.litert.sensitivity import SensitivityResult, sensitivity
from tfslim.litert.targets import Target, get_target, list_targets

__all__ = [
    "COST_MODELS",
    "MICRO_INT16_OPS",
    "MICRO_OPS",
    "ConversionResult",
    "CostModel",
    "SensitivityResult",
    "Target",
    "convert",
    "equalize_model",
    "export_c",
    "get_target",
    "inspect",
    "list_targets",
    "sensitivity",
]
