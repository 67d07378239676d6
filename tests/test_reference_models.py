"""benchmarks/reference_models.py: the command that regenerates tflite_models/reference/."""

import json
import pathlib

import pytest
from _benchmarks import load_benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    return load_benchmark("reference_models")


@pytest.mark.slow
def test_partial_run_writes_file_and_manifest_entry_and_keeps_other_entries(
    script, tmp_path, capsys
):
    committed = json.loads((ROOT / "tflite_models" / "reference" / "manifest.json").read_text())
    existing = dict(committed["models"]["resnet8"], marker=True)
    (tmp_path / "manifest.json").write_text(json.dumps({"models": {"resnet8": existing}}))
    args = ["--models", "ds_cnn", "--no-qat", "--output-dir", str(tmp_path), "--check"]
    assert script.main(args) == 0
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    entry = manifest["models"]["ds_cnn"]
    assert (tmp_path / entry["file"]).stat().st_size == entry["size_bytes"]
    assert entry["keras_params"] == entry["reference_params"] == 24_908
    assert entry["within_tolerance"] and entry["fully_integer"] and entry["micro_supported"]
    assert entry["io_dtypes"] == ["int8"]
    assert entry["arena_bytes"] > 0
    assert entry["ops"]["DEPTHWISE_CONV_2D"] == 4
    assert set(entry["boards"]) == set(manifest["boards"]) and "nano33ble" in entry["boards"]
    assert entry["boards"]["nano33ble"]["fits"]
    assert (
        "| ds_cnn | keyword spotting | 24,908 (24,908) |" in (tmp_path / "manifest.md").read_text()
    )
    assert "ds_cnn" in capsys.readouterr().out
    # The entry of a model this run did not convert is kept as it was, in reference order.
    assert list(manifest["models"]) == ["ds_cnn", "resnet8"]
    assert manifest["models"]["resnet8"] == existing


def test_check_fails_on_a_missed_reference_figure(script):
    entry = {
        "keras_params": 10,
        "reference_params": 10,
        "within_tolerance": True,
        "fully_integer": True,
        "micro_supported": True,
    }
    assert script._passes(entry)
    assert not script._passes(dict(entry, within_tolerance=False))
    assert not script._passes(dict(entry, micro_supported=False))
    assert not script._passes(dict(entry, keras_params=11))


def test_committed_manifest_matches_committed_files():
    directory = ROOT / "tflite_models" / "reference"
    manifest = json.loads((directory / "manifest.json").read_text())
    assert set(manifest["models"]) == {"ds_cnn", "mobilenet_v1", "resnet8", "fc_autoencoder"}
    for entry in manifest["models"].values():
        assert (directory / entry["file"]).stat().st_size == entry["size_bytes"]
