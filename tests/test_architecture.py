"""The data path is one-way: no module imports a higher stage or another package's privates.

Stages, low to high: the tfslim-wide helpers (`tfslim/_*.py`, `errors`, `datasets`,
`architectures`), the techniques (`quantization`, `pruning`, `clustering`, `distillation`)
beside the converter stage (`litert`), then `benchmarking` (measure, report), then `tuning`,
then `strategies` (shrink, grow-improve-shrink), then the entry points (`callbacks`, `demo`,
`cli`, `tfslim/__init__.py`).
"""

import ast
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1] / "tfslim"
_LOW = {"errors", "datasets", "architectures"}
_TECHNIQUES = {"quantization", "pruning", "clustering", "distillation"}
# What each package may import besides the low modules and itself.
_ALLOWED = {
    "architectures": set(),
    "datasets": set(),
    "errors": set(),
    "litert": set(),
    "quantization": {"clustering"},  # preserve="clusters" hands over to clustering.
    "clustering": {"quantization"},
    "pruning": set(),
    "distillation": {"quantization", "pruning"},
    "benchmarking": {"litert"},
    "tuning": {"litert", "benchmarking", *_TECHNIQUES},
    "strategies": {"litert", "benchmarking", "tuning", *_TECHNIQUES},
}


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports():
    """(importing module, imported module) for every tfslim import in the package."""
    for path in sorted(_ROOT.rglob("*.py")):
        module = ".".join(path.relative_to(_ROOT.parent).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name.startswith("tfslim."):
                    yield module, name


def _is_low(package: str) -> bool:
    return package in _LOW or package.startswith("_")


def test_the_walk_sees_the_package():
    pairs = list(_imports())
    assert len(pairs) > 100
    assert any(s == "tfslim.litert.converter" and t.startswith("tfslim.litert.") for s, t in pairs)


@pytest.mark.parametrize("package", sorted(_ALLOWED))
def test_no_import_of_a_higher_stage(package):
    wrong = []
    for source, target in _imports():
        if _package(source) != package:
            continue
        imported = _package(target)
        if imported == package or _is_low(imported):
            continue
        if imported not in _ALLOWED[package]:
            wrong.append(f"{source} imports {target}")
    assert not wrong


def test_low_modules_import_only_low_modules():
    wrong = [
        f"{s} imports {t}"
        for s, t in _imports()
        if _is_low(_package(s)) and not _is_low(_package(t))
    ]
    assert not wrong


def test_no_import_of_another_packages_private_module():
    wrong = []
    for source, target in _imports():
        parts = target.split(".")
        private = [p for p in parts[2:] if p.startswith("_") and not p.startswith("__")]
        if private and _package(target) != _package(source):
            wrong.append(f"{source} imports {target}")
    assert not wrong
