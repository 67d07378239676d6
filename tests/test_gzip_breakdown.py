"""benchmarks/gzip_breakdown.py: the per-kernel gzip figures `--gzip-breakdown` prints."""

import gzip
import pathlib

import numpy as np
import pytest
from _benchmarks import load_benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]
CLUSTERED = ROOT / "tflite_models" / "digits_clustered16_qat_mcu.tflite"


@pytest.fixture(scope="module")
def breakdown():
    return load_benchmark("gzip_breakdown")


def test_entropy_bits(breakdown):
    assert breakdown.entropy_bits(np.arange(16).repeat(5)) == pytest.approx(4.0)
    assert breakdown.entropy_bits(np.zeros(10)) == pytest.approx(0.0)


def test_huffman_only_is_a_gzip_size_near_the_entropy(breakdown):
    values = np.random.default_rng(0).integers(-8, 8, 20_000).astype(np.int8).tobytes()
    bits = breakdown.entropy_bits(np.frombuffer(values, np.int8))
    size = breakdown.huffman_only(values)
    # Independent 4-bit values: Huffman codes them at 4 bits, LZ77 matches only add bytes.
    assert bits * len(values) / 8 <= size <= 1.03 * bits * len(values) / 8
    assert size < breakdown.gzip9(values) == len(gzip.compress(values, 9, mtime=0))


def test_int8_kernels_of_the_shipped_clustered_file(breakdown):
    data = CLUSTERED.read_bytes()
    kernels = {k["values"].shape: k for k in breakdown.int8_kernels(data)}
    assert set(kernels) == {(96, 576), (64, 3, 3, 32)}
    dense, conv = kernels[(96, 576)], kernels[(64, 3, 3, 32)]
    assert dense["axis"] is None and conv["axis"] == 0
    assert np.unique(dense["values"]).size <= 16
    assert max(np.unique(channel).size for channel in conv["values"]) <= 16
    for kernel in kernels.values():
        raw = kernel["values"].tobytes()
        assert data[kernel["offset"] : kernel["offset"] + len(raw)] == raw


def test_print_gzip_breakdown(breakdown, capsys):
    data = CLUSTERED.read_bytes()
    breakdown.print_gzip_breakdown("clustered", data, reference_gzip=2 * breakdown.gzip9(data))
    out = capsys.readouterr().out
    assert f"gzip -9 {breakdown.gzip9(data):,} B (0.500x the unclustered int8 gzip)" in out
    assert "| (96, 576) | 55,296 | 16 | - |" in out
    assert "kernels at their entropy" in out
