import json
import os

import keras_tuner
import pytest

import tfslim
from tfslim.tuning import build_digits_search_model, run_builtin_search


def test_search_model_follows_its_hyperparameters():
    hp = keras_tuner.HyperParameters()
    hp.Fixed("width_multiplier", 0.5)
    hp.Fixed("depth", 2)
    hp.Fixed("kernel_size", 5)
    hp.Fixed("dense_units", 0)
    model = build_digits_search_model(hp)
    convs = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
    assert [c.filters for c in convs] == [8, 16]
    assert all(c.kernel_size == (5, 5) for c in convs)
    assert model.output_shape == (None, 10)


@pytest.mark.slow
def test_run_builtin_search_writes_a_report(tmp_path):
    report = run_builtin_search(
        target="nano33ble", max_trials=2, out_dir=tmp_path, epochs=1, distillation=False
    )
    assert len(report["trials"]) == 2
    assert report["budget"]["max_mcu_latency_estimate_ms"] == 2.0
    assert report["budget"]["max_flash_bytes"] == tfslim.get_target("nano33ble").flash_bytes
    for name in ("pareto.md", "pareto.json", "pareto.png"):
        assert os.path.getsize(tmp_path / name) > 0
    assert json.loads((tmp_path / "pareto.json").read_text())["target"] == "nano33ble"
    for r in report["front"]:
        assert r["feasible"] and r["mcu_latency_estimate_ms"]["nano33ble"] <= 2.0
