"""tfslim: make Keras models smaller, faster and better, and prove it on the device.

`import tfslim` is cheap: TensorFlow, Keras, the converter and the interpreters load
on first use of the name that needs them.

Saved models: a `.keras` file holding tfslim layers (a QAT or pruned model, a distiller)
loads with plain `keras.saving.load_model` in any process that ran `import tfslim`, whether
Keras was imported before or after it. If Keras is already imported, `import tfslim` imports
the modules that register tfslim's serializable classes (`_registration.REGISTERING_MODULES`);
if not, it leaves a one-shot import hook in `sys.meta_path` that registers them right after
`import keras` finishes. Either way `import tfslim` alone never loads TensorFlow.
"""

import importlib

from tfslim import _registration

__version__ = "0.1.0"

# Public name -> module that defines it. Keep in step with `__all__`.
_LAZY = {
    # Converter stage.
    "convert": "tfslim.litert.converter",
    "ConversionResult": "tfslim.litert.converter",
    "equalize_model": "tfslim.litert.equalization",
    "inspect": "tfslim.litert.inspection",
    "export_c": "tfslim.litert.export_c",
    "Target": "tfslim.litert.targets",
    "get_target": "tfslim.litert.targets",
    "list_targets": "tfslim.litert.targets",
    "CostModel": "tfslim.litert.mcu_latency",
    "sensitivity": "tfslim.litert.sensitivity",
    "SensitivityResult": "tfslim.litert.sensitivity",
    # Benchmark.
    "benchmark": "tfslim.benchmarking.benchmark",
    "evaluate": "tfslim.benchmarking.benchmark",
    "predict": "tfslim.benchmarking.benchmark",
    "Footprint": "tfslim.benchmarking.footprint",
    "measure": "tfslim.benchmarking.measure",
    "quantization_report": "tfslim.benchmarking.quantization_report",
    "QuantizationReport": "tfslim.benchmarking.error_report",
    # Quantization-aware training.
    "quantize_model": "tfslim.quantization",
    "is_quantized_model": "tfslim.quantization",
    "quantize_and_finetune": "tfslim.quantization",
    "FreezeQuantization": "tfslim.quantization",
    "activation_ranges": "tfslim.quantization",
    "float_layers": "tfslim.quantization",
    # Pruning.
    "prune_low_magnitude": "tfslim.pruning",
    "strip_pruning": "tfslim.pruning",
    "ConstantSparsity": "tfslim.pruning",
    "PolynomialDecay": "tfslim.pruning",
    "PruningSchedule": "tfslim.pruning",
    "PruneLowMagnitude": "tfslim.pruning",
    "ChannelPruning": "tfslim.pruning",
    "strip_channels": "tfslim.pruning",
    "reestimate_batch_norm": "tfslim.pruning",
    # Clustering.
    "cluster_weights": "tfslim.clustering",
    "strip_clustering": "tfslim.clustering",
    # Distillation.
    "Distiller": "tfslim.distillation",
    "DistillationSchedule": "tfslim.distillation",
    "distill": "tfslim.distillation",
    # Tuning.
    "FootprintTuner": "tfslim.tuning",
    "Budget": "tfslim.tuning",
    "pareto_front": "tfslim.tuning",
    # Strategies.
    "shrink": "tfslim.strategies",
    "grow_improve_shrink": "tfslim.strategies",
    "StrategyResult": "tfslim.strategies",
}
# Sub-packages reachable as attributes (`tfslim.callbacks.Pruning`).
_SUBMODULES = (
    "architectures",
    "datasets",
    "callbacks",
    "clustering",
    "distillation",
    "litert",
    "pruning",
    "quantization",
    "strategies",
    "tuning",
)

__all__ = ["__version__", *_LAZY, *_SUBMODULES]


def __getattr__(name):
    if name in _SUBMODULES:
        value = importlib.import_module(f"tfslim.{name}")
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    else:
        raise AttributeError(f"module 'tfslim' has no attribute '{name}'")
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)


_registration.install()
