"""benchmarks/strategies_benchmark.py: its `--growth` entries, width factors and depths."""

import os
import pathlib
import subprocess
import sys

import pytest
from _benchmarks import load_benchmark

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "strategies_benchmark.py"


@pytest.fixture
def script(monkeypatch):
    # Loading the script puts the checkout on sys.path and PYTHONPATH: undone after the test.
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", os.environ.get("PYTHONPATH", ""))
    return load_benchmark("strategies_benchmark")


@pytest.mark.parametrize(
    "text, entry",
    [
        ("1.5", 1.5),
        ("w2", 2.0),
        ("w1.5d4", {"width_multiplier": 1.5, "depth": 4}),
        ("d5", {"width_multiplier": 1.0, "depth": 5}),
        ("W2D4", {"width_multiplier": 2.0, "depth": 4}),
        # The baseline's own depth: a width entry.
        ("w1.5d3", 1.5),
    ],
)
def test_growth_entries_are_what_grow_improve_shrink_takes(script, text, entry):
    assert script.growth_entry(text) == entry
    # The report spells each entry back as the command takes it.
    assert script.growth_entry(script.growth_label(entry)) == entry


@pytest.mark.parametrize("text", ["x", "", "w", "d", "1", "d3", "d2", "w0.5d4", "nan", "1.5d"])
def test_a_malformed_or_shrinking_growth_entry_is_named(script, text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=f"w1.5d4.*got {text!r}$"):
        script.growth_entry(text)


def test_the_command_refuses_a_bad_entry_in_one_line_before_training():
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--strategy", "grow", "--growth", "1.5", "w2x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("strategies_benchmark.py: error: argument --growth: expected")
    assert last.endswith("got 'w2x'") and "Traceback" not in done.stderr
