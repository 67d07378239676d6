"""tfslim: make Keras models smaller, faster and better, and prove it on the device.

`import tfslim` is cheap: TensorFlow, Keras, the converter and the interpreters load
on first use of the name that needs them.
"""

import importlib

__version__ = "0.1.0"

# Public name -> module that defines it. Keep in step with `__all__`.
_LAZY = {
    # Converter stage.
    "convert": "tfslim.litert.converter",
    "ConversionResult": "tfslim.litert.converter",
    "inspect": "tfslim.litert.inspection",
    "export_c": "tfslim.litert.export_c",
    "Target": "tfslim.litert.targets",
    "get_target": "tfslim.litert.targets",
    "list_targets": "tfslim.litert.targets",
    # Benchmark.
    "benchmark": "tfslim.benchmark.benchmark",
    "evaluate": "tfslim.benchmark.benchmark",
    "predict": "tfslim.benchmark.benchmark",
    # Sub-packages.
    "litert": "tfslim.litert",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'tfslim' has no attribute '{name}'")
    module = importlib.import_module(module_name)
    value = module if module_name == f"tfslim.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(__all__)
