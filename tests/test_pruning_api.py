import doctest
import importlib

import pytest

import tfslim.pruning

MODULES = [
    "tfslim.pruning.schedules",
    "tfslim.pruning.wrapper",
    "tfslim.pruning.prune",
    "tfslim.pruning.callback",
]


def test_public_names_are_the_pruning_classes_and_functions():
    for name in tfslim.pruning.__all__:
        obj = getattr(tfslim.pruning, name)
        assert obj.__module__.startswith("tfslim.pruning."), (name, obj.__module__)
        assert obj.__name__ == name


def test_top_level_names():
    import tfslim
    import tfslim.callbacks

    assert tfslim.callbacks.Pruning is tfslim.pruning.Pruning
    assert tfslim.prune_low_magnitude is tfslim.pruning.prune_low_magnitude
    assert tfslim.strip_pruning is tfslim.pruning.strip_pruning
    assert tfslim.PolynomialDecay is tfslim.pruning.PolynomialDecay


@pytest.mark.parametrize(
    "name",
    [pytest.param(m, marks=pytest.mark.slow) if m.endswith(".callback") else m for m in MODULES],
)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0
