"""`tfslim.sensitivity`: per-layer ranking from one float export and one calibration."""

import numpy as np
import pytest

import tfslim
from tests.test_mixed_precision import _broken_model


@pytest.fixture(scope="module")
def case():
    import keras

    keras.utils.set_random_seed(0)
    model = _broken_model()
    x = np.random.default_rng(1).random((64, 8, 8, 1), dtype=np.float32)
    return model, x, model.predict(x, verbose=0).argmax(1)


@pytest.mark.parametrize("mode", ["quantize_alone", "float_alone"])
def test_broken_layer_ranks_first(case, mode):
    model, x, y = case
    ranking = tfslim.sensitivity(model, (x, y), mode=mode, layers=["conv_.*", "broken"])
    assert [r["layer"] for r in ranking][0] == "broken"
    assert sorted(r["layer"] for r in ranking) == ["broken", "conv_a", "conv_b"]
    assert ranking.float_metric == 1.0 and ranking.int8_metric < 0.9
    top = ranking[0]
    assert top["precision"] == ("int8" if mode == "quantize_alone" else "float")
    assert top["drop"] == pytest.approx(ranking.float_metric - top["metric"], abs=1e-6)
    expected = top["drop"] if mode == "quantize_alone" else top["metric"] - ranking.int8_metric
    assert top["sensitivity"] == pytest.approx(expected, abs=1e-6) and top["sensitivity"] > 0.1
    assert ranking.samples == 64 and ranking.seconds > 0
    assert "broken" in ranking.table().splitlines()[2]


def test_invalid_arguments(case):
    model, x, y = case
    with pytest.raises(ValueError, match=r"`mode`.*'quantize_alone', 'float_alone'.*mode='x'"):
        tfslim.sensitivity(model, (x, y), mode="x")
    with pytest.raises(ValueError, match=r"`validation_data`.*len\(x\)=64, len\(y\)=3"):
        tfslim.sensitivity(model, (x, y[:3]))


def test_docstring_example_runs():
    import doctest
    import importlib

    module = importlib.import_module("tfslim.litert.sensitivity")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 4 and result.failed == 0
