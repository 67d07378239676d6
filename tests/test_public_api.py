import subprocess
import sys

import tfslim


def test_every_public_name_imports():
    for name in tfslim.__all__:
        assert getattr(tfslim, name) is not None, name


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
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        tfslim.nope  # noqa: B018


def test_function_names_are_not_shadowed_by_subpackages():
    import importlib

    for module in ("tfslim.benchmarking", "tfslim.litert", "tfslim.litert.inspection"):
        importlib.import_module(module)
    for name in ("benchmark", "inspect", "convert", "evaluate", "predict", "export_c"):
        assert callable(getattr(tfslim, name)), name
