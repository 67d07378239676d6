"""Loads a script of benchmarks/ as a module, for tests of its helpers."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_benchmark(name: str):
    """The module of `benchmarks/<name>.py`, executed (its `main` is not run)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
