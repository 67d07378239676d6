"""The public API: what `__all__` promises is what the modules define, each lazy name of
`tfslim` comes from the module it names, and public callables are documented."""

import importlib
import inspect
import subprocess
import sys
import types

import pytest

import tfslim

PACKAGES = ["tfslim", *(f"tfslim.{name}" for name in tfslim._SUBMODULES)]

# Public callables whose docstring lacks an `Args:` section today, in modules other engineers
# own. The list may only shrink: a new undocumented callable fails, and so does an entry that
# has been documented (remove it then).
_UNDOCUMENTED_ARGS = {
    "tfslim.ConversionResult",
    "tfslim.activation_ranges",
    "tfslim.float_layers",
    "tfslim.is_quantized_model",
    "tfslim.clustering.distinct_values",
    "tfslim.litert.ConversionResult",
    "tfslim.quantization.activation_ranges",
    "tfslim.quantization.float_layers",
    "tfslim.quantization.is_quantized_model",
    "tfslim.quantization.set_batch_norm_frozen",
    "tfslim.quantization.set_quantizers_frozen",
    "tfslim.tuning.build_digits_search_model",
    "tfslim.tuning.estimate_footprint",
}


def _public_names(module) -> set[str]:
    """Names a package module defines or re-exports itself: everything public but submodules."""
    return {
        name
        for name, value in vars(module).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }


def _public_callables():
    for package in PACKAGES:
        module = importlib.import_module(package)
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not isinstance(obj, types.ModuleType):
                yield f"{package}.{name}", obj


def _parameters(obj) -> list[str]:
    target = obj.__init__ if inspect.isclass(obj) else obj
    try:
        signature = inspect.signature(target)
    except (TypeError, ValueError):
        return []
    skip = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
    return [
        p.name
        for p in signature.parameters.values()
        if p.name not in ("self", "cls") and p.kind not in skip
    ]


def test_tfslim_all_is_the_lazy_table_and_the_subpackages():
    assert tfslim.__all__ == ["__version__", *tfslim._LAZY, *tfslim._SUBMODULES]
    assert len(set(tfslim.__all__)) == len(tfslim.__all__), "a name is listed twice"
    assert not set(tfslim._LAZY) & set(tfslim._SUBMODULES)
    assert dir(tfslim) == sorted(tfslim.__all__)
    assert isinstance(tfslim.__version__, str) and tfslim.__version__.count(".") == 2


@pytest.mark.parametrize("name", sorted(tfslim._LAZY))
def test_each_lazy_name_comes_from_the_module_it_names(name):
    module_name = tfslim._LAZY[name]
    module = importlib.import_module(module_name)
    obj = getattr(tfslim, name)
    assert obj is getattr(module, name)
    # Defined in that module or in one of its submodules, not merely imported from elsewhere.
    defined_in = getattr(obj, "__module__", "")
    assert defined_in == module_name or defined_in.startswith(module_name + "."), defined_in
    assert defined_in.startswith("tfslim.")
    if hasattr(module, "__all__"):
        assert name in module.__all__, f"{name} is not in {module_name}.__all__"


@pytest.mark.parametrize("package", PACKAGES[1:])
def test_subpackage_all_equals_what_it_defines(package):
    module = importlib.import_module(package)
    assert len(set(module.__all__)) == len(module.__all__), "a name is listed twice"
    assert set(module.__all__) == _public_names(module)


@pytest.mark.parametrize("package", PACKAGES[1:])
def test_subpackage_names_are_reachable_from_tfslim(package):
    short = package.split(".", 1)[1]
    assert getattr(tfslim, short) is importlib.import_module(package)


def test_public_callables_are_documented():
    missing_doc, missing_args = [], set()
    for qualname, obj in _public_callables():
        if not getattr(obj, "__module__", "").startswith("tfslim"):
            continue  # Re-exported from Keras (e.g. keras.distillation's losses).
        doc = inspect.getdoc(obj) or ""
        if not doc.strip():
            missing_doc.append(qualname)
            continue
        init_doc = inspect.getdoc(obj.__init__) if inspect.isclass(obj) else ""
        if _parameters(obj) and "Args:" not in doc and "Args:" not in (init_doc or ""):
            missing_args.add(qualname)
    assert missing_doc == []
    assert missing_args - _UNDOCUMENTED_ARGS == set(), "document these with an `Args:` section"
    assert _UNDOCUMENTED_ARGS - missing_args == set(), "documented now: drop from the list"


def test_import_is_light_and_has_no_side_effects():
    code = (
        "import os, sys; before = dict(os.environ); import tfslim; "
        "assert dict(os.environ) == before, 'environment changed'; "
        "heavy = [m for m in ('tensorflow', 'keras', 'tf_keras', 'tensorflow_model_optimization',"
        " 'keras_tuner', 'tflite_micro') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tfslim.nope  # noqa: B018


def test_function_names_are_not_shadowed_by_subpackages():
    for module in ("tfslim.benchmarking", "tfslim.litert", "tfslim.litert.inspection"):
        importlib.import_module(module)
    for name in ("benchmark", "inspect", "convert", "evaluate", "predict", "export_c"):
        assert callable(getattr(tfslim, name)), name
