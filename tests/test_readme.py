"""The README's Python block runs as written on a machine with tfslim installed."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

_README = Path(__file__).resolve().parents[1] / "README.md"


def _python_block() -> str:
    text = _README.read_text()
    section = text[text.index("## Python API") :]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README's Python API section has no python block"
    return match.group(1)


def test_readme_python_block_is_self_contained():
    block = _python_block()
    # Every name it uses comes from the block itself: data and models are made in it.
    assert "load_digits_data()" in block and "import tfslim" in block
    compile(block, "README.md", "exec")


@pytest.mark.slow
def test_readme_python_block_runs(tmp_path):
    # This checkout's tfslim, not a copy installed into site-packages by `pip install .`.
    repo = str(_README.parent)
    path = os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p)
    proc = subprocess.run(
        [sys.executable, "-c", _python_block()],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "model.tflite").stat().st_size > 10_000
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].split()[1:3] == ["bytes,", "was"]
    compressed, dense = int(lines[-1].split()[0]), int(lines[-1].split()[-1])
    assert compressed < 0.75 * dense  # 4-bit indices instead of int8 kernels.
