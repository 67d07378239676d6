"""tfslim._model_facts: what several stages need to know about a model, from the bottom layer."""

import ast
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tfslim import _model_facts

_ROOT = Path(__file__).resolve().parents[1] / "tfslim"


def _model():
    import keras

    return keras.Sequential(
        [
            keras.Input((6, 6, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(3),
        ]
    )


def _tfslim_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        else:
            continue
        found |= {n for n in names if n == "tfslim" or n.startswith("tfslim.")}
    return found


def test_module_imports_no_tfslim_package_and_no_keras_at_import():
    assert _tfslim_imports(_ROOT / "_model_facts.py") == set()
    code = (
        "import sys; import tfslim._model_facts; "
        "heavy = [m for m in ('keras', 'tensorflow', 'tfslim.quantization', 'tfslim.pruning') "
        "if m in sys.modules]; assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_converter_imports_nothing_above_the_converter_stage():
    above = ("quantization", "pruning", "clustering", "distillation", "tuning", "benchmarking")
    imports = _tfslim_imports(_ROOT / "litert" / "converter.py")
    stages = {n.split(".")[1] for n in imports if n != "tfslim"}
    offending = sorted(stages & {*above, "demo", "cli", "recipes"})
    assert offending == []
    source = (_ROOT / "litert" / "converter.py").read_text()
    assert "importlib" not in source, "the converter must not import technique packages lazily"


def test_float_model_is_not_quantization_aware():
    model = _model()
    assert not _model_facts.is_qat_model(model)
    assert _model_facts.tfslim_layers(model) == {}


def test_qat_model_is_recognised_before_and_after_a_keras_round_trip(tmp_path):
    import keras

    from tfslim import quantization

    qat = quantization.quantize_model(_model())
    assert _model_facts.is_qat_model(qat) is True
    assert _model_facts.is_qat_model(qat) == quantization.is_quantized_model(qat)
    layers = _model_facts.tfslim_layers(qat)
    assert layers["tfslim>QuantizeWrapper"] == 2  # Conv2D and Dense
    assert layers["tfslim>ActivationQuantizer"] >= 3  # input, conv and dense outputs
    assert list(layers) == sorted(layers)
    qat.save(tmp_path / "qat.keras")
    loaded = keras.saving.load_model(tmp_path / "qat.keras")
    assert _model_facts.is_qat_model(loaded)
    assert _model_facts.tfslim_layers(loaded) == layers


def test_subclass_of_a_tfslim_quantizer_still_counts():
    import keras

    from tfslim.quantization import ActivationQuantizer

    class MyQuantizer(ActivationQuantizer):
        pass

    model = keras.Sequential([keras.Input((4,)), MyQuantizer(), keras.layers.Dense(2)])
    assert _model_facts.is_qat_model(model)
    assert _model_facts.tfslim_layers(model) == {"tfslim>ActivationQuantizer": 1}


def test_pruned_model_holds_pruning_wrappers_and_is_not_qat():
    from tfslim import pruning

    pruned = pruning.prune_low_magnitude(_model())
    assert _model_facts.tfslim_layers(pruned) == {"tfslim>PruneLowMagnitude": 2}
    assert not _model_facts.is_qat_model(pruned)


def test_non_models_are_not_qat_models():
    for obj in (None, 3, "model.keras", np.zeros(3)):
        assert _model_facts.is_qat_model(obj) is False
        assert _model_facts.layers_of(obj) == []


@pytest.mark.parametrize(
    "arrays, expected",
    [
        ([np.array([0.0, 1.0, 0.0, 2.0])], 0.5),
        ([np.zeros((2, 3)), np.ones(2)], 0.75),
        ([np.ones((4, 4))], 0.0),
        ([], 0.0),
    ],
)
def test_zero_fraction(arrays, expected):
    assert _model_facts.zero_fraction(arrays) == pytest.approx(expected)


def test_kernel_zero_fraction_counts_kernels_only():
    model = _model()
    conv, dense = model.layers[0], model.layers[2]
    kernel = conv.kernel.numpy()
    kernel[..., :2] = 0  # Half of the conv kernel's output channels.
    conv.kernel.assign(kernel)
    dense.kernel.assign(np.zeros(dense.kernel.shape))
    conv.bias.assign(np.ones(conv.bias.shape))  # Biases never count.
    expected = (kernel.size / 2 + dense.kernel.numpy().size) / (
        kernel.size + dense.kernel.numpy().size
    )
    assert _model_facts.kernel_zero_fraction(model) == pytest.approx(expected)


def test_pruning_sparsity_helper_delegates_with_the_same_answer():
    from tfslim.pruning.constraint import sparsity_of

    model = _model()
    assert sparsity_of(model.weights) == _model_facts.zero_fraction(model.weights)


@pytest.mark.slow
def test_tfmot_qat_model_is_recognised_without_importing_tfslim_quantization():
    import tf_keras

    from tfslim._compat import import_tfmot

    base = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2)])
    assert not _model_facts.is_qat_model(base)
    qat = import_tfmot().quantization.keras.quantize_model(base)
    assert _model_facts.is_qat_model(qat)
    assert _model_facts.tfslim_layers(qat) == {}
