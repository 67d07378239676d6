"""Tests for tfslim.quantization.rescaling (QuantizeRescaling)."""

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tfslim.quantization.rescaling import QuantizeRescaling  # noqa: E402


def test_scale_and_offset_close_to_float():
    layer = QuantizeRescaling(scale=1 / 127.5, offset=-1.0)
    x = np.linspace(0, 255, 64, dtype="float32")[None]
    layer(x, training=True)
    y = layer(x, training=False).numpy()
    np.testing.assert_allclose(y, x / 127.5 - 1.0, atol=2 / 255 + 1e-6)
    assert layer.output_quantizer.get_range() == pytest.approx((-1.0, 1.0))


def test_scale_only_has_no_intermediate_quantizer():
    assert QuantizeRescaling(scale=0.5).scaled_quantizer is None


def test_config_and_save_round_trip(tmp_path):
    layer = QuantizeRescaling(scale=2.0, offset=0.5, name="r")
    clone = QuantizeRescaling.from_config(layer.get_config())
    assert (clone.scale, clone.offset, clone.name) == (2.0, 0.5, "r")
    inputs = keras.Input((4,))
    model = keras.Model(inputs, layer(inputs))
    x = np.random.default_rng(0).uniform(0, 1, (8, 4)).astype("float32")
    model(x, training=True)
    model.save(tmp_path / "r.keras")
    loaded = keras.saving.load_model(tmp_path / "r.keras")
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
